// exp and log1p in double precision, written so that the compiler vectorizes
// loops that call them (no calls, no branches: selects, a polynomial, and the
// exponent built from bits). The CPU kernels' transcendental math goes through
// these (cell_math.h exp_/log1p_ for double; the KL steps in fused_cpu.cpp);
// glibc's scalar exp/log1p are calls the vectorizer cannot look into.
//
// Error bounds (checked by test/cpp/cell_math_test.cpp against glibc over a
// dense grid and the special values):
//   vexp(x):   |vexp(x) - exp(x)| <= 2 ulp of exp(x) for -708 <= x <= 709.78;
//              +inf above 709.78 (exp overflows there too); 0 below -708 (exact
//              exp is then below 3.3e-308, a subnormal: the absolute error is
//              under 3.3e-308); NaN stays NaN.
//   vlog1p(u): for -0.5 <= u <= 1 (the kernels use [0, 1], log1p(exp(-|x|)),
//              and the centred KL's x >= -1e-5, cell_math.h kl_log1p),
//              |vlog1p(u) - log1p(u)| <= 4 ulp of log1p(u); NaN stays NaN.
//   vexpf(x):  float, <= 2 ulp of expf on [-86.9, 88.72]; +inf above, 0 below
//              (the exact value is under 1.8e-38 there); NaN stays NaN. For the
//              teacher weight sigmoid(T_obj) of the default kernel and the
//              float element math of the variant kernels. vexpf_nonpos(x): the
//              same value for x <= 0 and NaN (the variants' exp(-|x|), the KL
//              teacher weights), without the overflow handling.
//              vexpf_bounded(x): the same value for |x| <= 87, without any
//              range handling (elsewhere an unspecified value, NaN stays NaN;
//              the KL steps' exp(-e), whose kept cells have |e| <= 40).
//   vlog1pf(u): float, for 0 <= u <= 1, <= 3 ulp of log1p(u) (exact, rounded
//              to float); NaN stays NaN. The variants' softplus.
//   vlog_ge1(x): double, for 1 <= x < 1e308, <= 4 ulp of log(x); +Inf and NaN
//              pass through. The KL steps' log of a sum of exponentials.
//   vexpm1f_unit(x): float, for -1 <= x <= 1, <= 3 ulp of expm1(x); NaN stays
//              NaN. The variants' sigma(p) - sigma(t) when p and t are close.
//              vexpm1f_near(x): the same value on [-1, 1], unspecified
//              elsewhere (no clamp).
// Both are far inside the loss's fp32 tolerances (docs/DESIGN.md §1) and keep
// the kernels' results bit-identical across runs and thread counts (the same
// instructions for every element).
//
// Loops that call them vectorize only with -fno-trapping-math (comparisons on
// NaN may otherwise not be if-converted); CMakeLists.txt and binding.gyp pass it
// for the core. It changes no value, only which instructions may compute it.
#pragma once

#include <cstdint>
#include <cstring>

namespace yd {

#if defined(__GNUC__)
#define YD_VEC_INLINE inline __attribute__((always_inline))
#else
#define YD_VEC_INLINE inline
#endif

YD_VEC_INLINE double vexp(double x) {
  // exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 (ln 2 in two parts,
  // Cody-Waite: k ln2_hi is exact for |k| < 2^11), |r| <= ln2 / 2; exp(r) by its
  // Taylor polynomial of degree 13 (remainder < 0.347^14 / 14! < 5e-18).
  double xc = x < -708.0 ? -708.0 : x;  // NaN passes both selects
  xc = xc > 709.79 ? 709.79 : xc;
  const double kMagic = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer in the low bits
  const double t = xc * 1.4426950408889634 + kMagic;
  const double kd = t - kMagic;
  uint64_t tb;  // unsigned: a NaN's bits wrap around instead of overflowing (the select below discards them)
  std::memcpy(&tb, &t, sizeof tb);
  const uint64_t sb = (tb - uint64_t{0x4338000000000000} + 1022) << 52;  // 2^(k-1)'s bits (k reaches 1024)
  double scale;
  std::memcpy(&scale, &sb, sizeof scale);
  const double r = (xc - kd * 6.93147180369123816490e-01) - kd * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  double y = 2.0 * (p * scale);  // exact doubling
  y = x > 709.782712893384 ? __builtin_inf() : y;
  y = x < -708.0 ? 0.0 : y;
  return y;  // NaN: p is NaN, so y is
}

// vexpf below; kPositive = false: for x <= 0 (or NaN) only, the overflow
// clamp and select left out (they never apply there): the same value, two
// selects fewer (vexpf_nonpos). kBounded (with kPositive false): for
// |x| <= 87 only, no clamp or select at all (vexpf_bounded).
template <bool kPositive, bool kBounded = false>
YD_VEC_INLINE float vexpf_impl(float x) {
  // The float version of vexp: k = round(x / ln 2) from the magic-number trick,
  // r = x - k ln 2 (ln 2 in two parts), exp(r) by a polynomial of degree 6 on
  // |r| <= ln 2 / 2 (minimax in relative error with its constant and linear
  // coefficients 1 and its others rounded to float one by one, each refitted
  // after: 3.2e-9 relative, a twentieth of float's epsilon; the degree-7
  // Taylor polynomial it replaces, with its float coefficients, 7.3e-9 and one
  // product more; in float with FMAs 1.04 ulp against 1.07: scripts/minimax.py
  // fits both of this file's fitted polynomials and measures them),
  // 2^(k-1) built from bits and doubled (2^k for x <= 0). +Inf above 88.7228, 0 below -86.9
  // (the exact value there is under 1.8e-38); NaN stays NaN.
  float xc = kBounded ? x : x < -86.9f ? -86.9f : x;  // k >= -125: 2^(k-1) and 2^k stay normal floats
  if constexpr (kPositive) xc = xc > 88.73f ? 88.73f : xc;
  const float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float t = xc * 1.44269504088896341f + kMagic;
  const float kd = t - kMagic;
  uint32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  // 2^(k-1)'s bits where k reaches 128 (kPositive), else 2^k's (-125 <= k <= 0)
  const uint32_t sb = (tb - uint32_t{0x4B400000} + (kPositive ? 126 : 127)) << 23;
  float scale;
  std::memcpy(&scale, &sb, sizeof scale);
  const float r = (xc - kd * 0.693145751953125f) - kd * 1.428606765330187e-06f;
  float p = 0x1.6ac74ep-10f;  // 0.0013838903
  p = p * r + 0x1.123de0p-7f;  // 0.0083691925
  p = p * r + 0x1.555858p-5f;  // 0.041668102
  p = p * r + 0x1.55548cp-3f;  // 0.16666517
  p = p * r + 0x1.fffffcp-2f;  // 0.49999994
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // For x <= 0, p 2^k: one product fewer than 2 (p 2^(k-1)) and the same
  // bits wherever p 2^(k-1) is a normal float (scaling by a power of two is
  // exact), i.e. for every result over 2.4e-38; below, p 2^k is the exact
  // scaling where the other had been rounded to a subnormal.
  float y = kPositive ? 2.0f * (p * scale) : p * scale;
  if constexpr (kPositive) y = x > 88.7228394f ? __builtin_inff() : y;
  if constexpr (!kBounded) y = x < -86.9f ? 0.0f : y;
  return y;
}
YD_VEC_INLINE float vexpf(float x) { return vexpf_impl<true>(x); }
YD_VEC_INLINE float vexpf_nonpos(float x) { return vexpf_impl<false>(x); }
YD_VEC_INLINE float vexpf_bounded(float x) { return vexpf_impl<false, true>(x); }

YD_VEC_INLINE double vlog1p(double u) {
  // log(1 + u) = 2 atanh(s), s = u / (2 + u) (no 1 + u is formed, so tiny u keep
  // their digits); for -0.5 <= u <= 1, |s| <= 1/3 and the series
  // 2 s (1 + z/3 + z^2/5 + ...), z = s^2 <= 1/9, to z^16 leaves < 2e-17.
  const double s = u / (2.0 + u);
  const double z = s * s;
  double p = 1.0 / 33.0;
  p = p * z + 1.0 / 31.0;
  p = p * z + 1.0 / 29.0;
  p = p * z + 1.0 / 27.0;
  p = p * z + 1.0 / 25.0;
  p = p * z + 1.0 / 23.0;
  p = p * z + 1.0 / 21.0;
  p = p * z + 1.0 / 19.0;
  p = p * z + 1.0 / 17.0;
  p = p * z + 1.0 / 15.0;
  p = p * z + 1.0 / 13.0;
  p = p * z + 1.0 / 11.0;
  p = p * z + 1.0 / 9.0;
  p = p * z + 1.0 / 7.0;
  p = p * z + 1.0 / 5.0;
  p = p * z + 1.0 / 3.0;
  p = p * z + 1.0;
  return 2.0 * s * p;
}

YD_VEC_INLINE float vlog1pf(float u) {
  // The float version of vlog1p: 2 atanh(s), s = u / (2 + u); for 0 <= u <= 1,
  // z = s^2 <= 1/9 and the series to z^7 leaves < (1/9)^8 / 17 < 1.4e-9, under
  // a tenth of float's epsilon.
  const float s = u / (2.0f + u);
  const float z = s * s;
  float p = 1.0f / 15.0f;
  p = p * z + 1.0f / 13.0f;
  p = p * z + 1.0f / 11.0f;
  p = p * z + 1.0f / 9.0f;
  p = p * z + 1.0f / 7.0f;
  p = p * z + 1.0f / 5.0f;
  p = p * z + 1.0f / 3.0f;
  p = p * z + 1.0f;
  return 2.0f * s * p;
}

YD_VEC_INLINE double vlog_ge1(double x) {
  // log(x) for x >= 1 (a sum of exponentials whose largest term is 1): x =
  // 2^k m with 1 <= m < 2 from the bits, log x = k ln 2 + vlog1p(m - 1) (m - 1
  // is exact); ln 2 in two parts so k ln2_hi is exact. +Inf and NaN pass
  // through.
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  const int64_t k = static_cast<int64_t>((b >> 52) & 0x7ff) - 1023;
  const uint64_t mb = (b & uint64_t{0x000fffffffffffff}) | uint64_t{0x3ff0000000000000};
  double m;
  std::memcpy(&m, &mb, sizeof m);
  const double kd = static_cast<double>(k);
  const double y = kd * 6.93147180369123816490e-01 + (vlog1p(m - 1.0) + kd * 1.90821492927058770002e-10);
  return x < 1.0e308 ? y : x;  // +Inf and NaN (the comparison is false) as they came
}

// (exp(x) - 1 - x) / x^2 = sum_{k>=0} x^k / (k + 2)! for -1 <= x <= 1, by a
// polynomial of degree 7 (minimax in relative error, coefficients rounded to
// float: within 1.0e-8 relative before the rounding of its evaluation; the
// degree-9 Taylor polynomial it replaces, with its float coefficients, 1.65e-8
// and two products more; evaluated in float with FMAs, 1.15 ulp over [-1, 1]
// against 1.37 for the Taylor one: scripts/minimax.py). The tail of vexpm1f_unit below,
// and of cell_math.h kl_gap (e^(-e) - 1 + e), host and device alike.
#if defined(__CUDACC__)
__host__ __device__ __forceinline__
#else
YD_VEC_INLINE
#endif
float expm1_tail_poly(float x) {
  float p = 0x1.7416f2p-19f;   // 2.7722838e-06
  p = p * x + 0x1.a9622ap-16f;  // 2.535483e-05
  p = p * x + 0x1.a028cap-13f;  // 0.00019844023
  p = p * x + 0x1.6bffb0p-10f;  // 0.0013885451
  p = p * x + 0x1.1110e0p-7f;   // 0.0083333105
  p = p * x + 0x1.55557ap-5f;   // 0.041666735
  p = p * x + 0x1.555556p-3f;   // 0.16666667
  p = p * x + 0.5f;
  return p;
}

// exp(x) - 1 for -1 <= x <= 1: x (1 + x expm1_tail_poly(x)), where the
// tail's 1.0e-8 relative error scales by x^2 t(x) / expm1(x) <= 0.59 into
// under 6e-9 of the result, a tenth of float's epsilon. No 1 is subtracted,
// so tiny x keep their digits. Elsewhere an unspecified value (it may be Inf
// or NaN), for callers that select those lanes away: the CPU's 'prob' element
// (fused_cpu.cpp channel_run), whose clamp had cost 8 of its loop's 27
// instructions on AVX2 (GCC's compares, masks and blends).
YD_VEC_INLINE float vexpm1f_near(float x) {
  const float p = expm1_tail_poly(x) * x + 1.0f;
  return x * p;
}
YD_VEC_INLINE float vexpm1f_unit(float x) {
  // vexpm1f_near with arguments outside [-1, 1] clamped.
  float xc = x < -1.0f ? -1.0f : x;
  xc = xc > 1.0f ? 1.0f : xc;
  return vexpm1f_near(xc);
}

}  // namespace yd
