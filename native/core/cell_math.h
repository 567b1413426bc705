// Per-cell math of the objectness-scaled distillation loss (docs/DESIGN.md §1).
//
// Everything here is shared by the fused CPU kernel and the CUDA kernels, so it
// is written once as inline __host__ __device__ functions on plain scalars: no
// LibTorch, no N-API, no allocation. The CPU unit tests exercise it directly.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "vec_math.h"

#if defined(__CUDACC__)
#define YD_HD __host__ __device__ __forceinline__
#else
#define YD_HD inline
#endif
// The same, and on the host always inlined as vec_math.h's helpers are (one used
// in the CPU kernels' vectorized loops, where a call would keep the loop scalar).
#if defined(__CUDACC__)
#define YD_HD_INLINE YD_HD
#else
#define YD_HD_INLINE YD_VEC_INLINE
#endif

namespace yd {

// Channel roles inside one anchor's 5 + C values.
constexpr int kBoxChannels = 4;  // k = 0..3
constexpr int kObjChannel = 4;   // k = 4
constexpr int kClsOffset = 5;    // k = 5..4+C

// Teacher objectness weight w_i = sigmoid(T[i,4]), in fp32 like PyTorch's.
// exp(-x) overflows to +inf for very negative x, giving w = 0 exactly, which is
// what torch.sigmoid returns there too; NaN stays NaN.
// On the host the exponential is vec_math.h's vexpf (within 2 ulp of expf), so
// that the kernels' weight loops vectorize.
YD_HD float teacher_weight(float t_obj) {
#if defined(__CUDA_ARCH__)
  return 1.0f / (1.0f + ::expf(-t_obj));
#else
  return 1.0f / (1.0f + vexpf(-t_obj));
#endif
}

// The three gradient coefficients of one scale: dloss/dP[i,k] = coef_term * w_i * (P - T).
// coef_term = lambda * g_term * 2 * gradScale / (n_term * N_s), computed in double and
// rounded once.
struct TermCoefs {
  float box;
  float obj;
  float cls;
};

YD_HD TermCoefs grad_coefs(double lambda, double g_box, double g_obj, double g_cls,
                           double grad_scale, int64_t num_classes, int64_t cells) {
  const double base = 2.0 * lambda * grad_scale / static_cast<double>(cells);
  TermCoefs c;
  c.box = static_cast<float>(base * g_box / 4.0);
  c.obj = static_cast<float>(base * g_obj);
  c.cls = static_cast<float>(base * g_cls / static_cast<double>(num_classes));
  return c;
}

// Whether a gradient coefficient survives its rounding to fp32: zero, or a
// finite normal fp32 number. When one does not (gradScale or lambda near the
// ends of the fp32 range, e.g. gradScale 3e37 with lambda 10 on a small grid),
// the fused fp32 kernels would turn a finite gradient into Inf (or Inf * 0 into
// NaN); callers then take the variant kernels, which multiply by the
// coefficient in double and round each gradient element once, so that only a
// gradient that really overflows fp32 comes out as Inf.
YD_HD bool coef_fits_fp32(double c) {
  const float f = static_cast<float>(c);
  const bool finite = (f - f) == 0.0f;  // false for Inf and NaN, host and device alike
  return c == 0.0 || (finite && (f >= FLT_MIN || f <= -FLT_MIN));
}
YD_HD bool coefs_fit_fp32(double lambda, double g_box, double g_obj, double g_cls,
                          double grad_scale, int64_t num_classes, int64_t cells) {
  const double base = 2.0 * lambda * grad_scale / static_cast<double>(cells);
  return coef_fits_fp32(base * g_box / 4.0) && coef_fits_fp32(base * g_obj) &&
         coef_fits_fp32(base * g_cls / static_cast<double>(num_classes));
}

// The smallest and largest temperature (clsTarget 'kl'): fp32 normal numbers,
// so tau converts to fp32 (the CUDA kernels) as neither 0 nor Inf, and 1/tau is
// finite in fp32 and fp64 alike.
constexpr double kMinTemperature = FLT_MIN;
constexpr double kMaxTemperature = FLT_MAX;

// Argmax in the order torch.argmax uses: NaN counts as the largest value (the
// first NaN wins), otherwise the first maximum. Returns whether v, seen after
// the current best, takes its place: unless best is NaN, when v > best or v is
// NaN, which is !(v <= best) (false only when both are numbers and v <= best).
// Written so, the vectorized argmax loops compile to two compares per value
// (best ordered, v not-less-equal-unordered) instead of four.
YD_HD bool argmax_takes(float v, float best) {
  return (best == best) & !(v <= best);
}

// Normalisers turning the raw weighted sums of squares into the per-scale terms:
// box_s = S_box / (4 N_s), obj_s = S_obj / N_s, cls_s = S_cls / (C N_s).
YD_HD double box_term(double sum, int64_t cells) { return sum / (4.0 * static_cast<double>(cells)); }
YD_HD double obj_term(double sum, int64_t cells) { return sum / static_cast<double>(cells); }
YD_HD double cls_term(double sum, int64_t num_classes, int64_t cells) {
  return sum / (static_cast<double>(num_classes) * static_cast<double>(cells));
}

// One element's contribution: returns w * d^2 (accumulated by the caller in
// double) and the difference d = P - T in fp32, the same rounding PyTorch uses.
YD_HD float diff(float p, float t) { return p - t; }
// w * d in fp32 (one rounding), shared by the sum and the gradient.
YD_HD float weighted_diff(float w, float d) { return w * d; }
// (w d) * d, widened to double before the product.
YD_HD double weighted_sq(float wd, float d) { return static_cast<double>(wd) * static_cast<double>(d); }
YD_HD float grad_value(float coef, float wd) { return coef * wd; }

// The loss from the three (unweighted, summed over scales) terms.
YD_HD double total_loss(double lambda, double g_box, double g_obj, double g_cls, double box,
                        double obj, double cls) {
  return lambda * (g_box * box + g_obj * obj + g_cls * cls);
}

// ---- loss variants (README "Loss variants"), shared by the CPU variant kernel
// (S = double) and the CUDA variant kernel (S = float). ----

// Target kinds of an obj/cls term, and as plain ints for variant_element.
// obj: Logit | Prob | Bce; cls: all four.
constexpr int kKindLogit = 0, kKindProb = 1, kKindBce = 2, kKindKl = 3;
enum class Target : int { Logit = kKindLogit, Prob = kKindProb, Bce = kKindBce, Kl = kKindKl };
// boxTarget: paper = sigmoid(tx), sigmoid(ty); raw tw, th.
enum class BoxTarget : int { Logit, Paper };

// On the GPU the CUDA math library; on the CPU vec_math.h's branch-free
// versions, which vectorize (log1p_ is only ever given 0 <= x <= 1, the range
// vlog1p and vlog1pf are accurate on: log1p(exp(-|x|)) in variant_element).
YD_HD float exp_(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return vexpf(x);
#endif
}
YD_HD float log1p_(float x) {
#if defined(__CUDA_ARCH__)
  return ::log1pf(x);
#else
  return vlog1pf(x);
#endif
}
YD_HD double exp_(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return vexp(x);
#endif
}
// exp_ for x <= 0 or NaN (exp(-|x|), exp(T - max T)): the same value, on the
// host without vexpf's overflow handling.
YD_HD float exp_nonpos_(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return vexpf_nonpos(x);
#endif
}
YD_HD double exp_nonpos_(double x) { return exp_(x); }
YD_HD double log1p_(double x) {
#if defined(__CUDA_ARCH__)
  return ::log1p(x);
#else
  return vlog1p(x);
#endif
}

// exp(x) - 1, used only where |x| <= 1 (vexpm1f_unit's range) and selected
// away elsewhere.
YD_HD float expm1_(float x) {
#if defined(__CUDA_ARCH__)
  return ::expm1f(x);
#else
  return vexpm1f_unit(x);
#endif
}
YD_HD double expm1_(double x) { return ::expm1(x); }

template <typename S>
YD_HD S sigmoid_(S x) { return S(1) / (S(1) + exp_(-x)); }
// One element of a term with target kind `kind` (not Kl): *loss = its value;
// returns d loss / d p (the derivative with respect to the student logit).
//   logit (p - t)^2; prob (sigma p - sigma t)^2; bce BCE of sigma p against sigma t.
// One exponential per logit, e = exp(-|x|) in (0, 1], and one division per
// element: sigma(x) = (x >= 0 ? 1 : e) / (1 + e) and sigma(-x) likewise, so
// neither sigma nor 1 - sigma is formed by a subtraction that cancels;
// sigma(p)(1 - sigma(p)) = sigma(p) sigma(-p); the BCE b softplus(-p) +
// (1 - b) softplus(p) = log1p(e_p) + (p >= 0 ? p (1 - b) : -p b), 1 - b =
// sigma(-t), a sum of terms >= 0. Accurate to a few ulp in fp32 (the CPU and
// CUDA kernels compute it in fp32). NaN propagates through every branch.
template <typename S>
YD_HD S variant_element_e(int kind, S p, S t, S ep, S et, S* loss, const S* em = nullptr);
template <typename S>
YD_HD S variant_element(int kind, S p, S t, S* loss) {
  if (kind == kKindProb || kind == kKindBce) {
    return variant_element_e(kind, p, t, exp_nonpos_(-std::fabs(p)), exp_nonpos_(-std::fabs(t)), loss);
  }
  const S d = p - t;
  *loss = d * d;
  return S(2) * d;
}
// 'prob' and 'bce' from ep = exp(-|p|) and et = exp(-|t|) (computed first by
// variant_element, or a block at a time by the CPU kernel).
template <typename S>
YD_HD S variant_element_e(int kind, S p, S t, S ep, S et, S* loss, const S* em) {
  // kind: kKindProb or kKindBce
  // 1 / (1 + e_p) and 1 / (1 + e_t) from one division (each factor in [1, 2]).
  const S np = S(1) + ep, nt = S(1) + et, r = S(1) / (np * nt);
  const S dp = nt * r, dt = np * r;
  const S sp = p >= S(0) ? dp : ep * dp;  // sigma(p)
  const S sp_neg = p >= S(0) ? ep * dp : dp;  // sigma(-p)
  const S st = t >= S(0) ? dt : et * dt;  // sigma(t)
  const S st_neg = t >= S(0) ? et * dt : dt;  // sigma(-t)
  // sigma(p) - sigma(t) without cancellation: for |p - t| <= 1 as
  // -sigma(p) sigma(-t) expm1(t - p); else from the smaller pair
  // (sigma(-t) - sigma(-p) when both lean positive).
  const S gap = t - p;
  const S near = -(sp * st_neg) * (em ? *em : expm1_(gap));
  const S far = p + t > S(0) ? st_neg - sp_neg : sp - st;
  const S d = std::fabs(gap) <= S(1) ? near : far;  // NaN: far
  if (kind == kKindProb) {
    *loss = d * d;
    return S(2) * d * (sp * sp_neg);
  }
  *loss = log1p_(ep) + (p >= S(0) ? p * st_neg : -p * st);
  return d;
}

// The variant kernels' coefficients: d loss / d (element derivative) per term,
// lambda * g_term * gradScale / (n_term * N), n_term = 4 (box), 1 (obj),
// C (cls) or 1 (cls 'kl', normalised per cell). Kept in double.
struct VariantCoefs {
  double box, obj, cls;
};
YD_HD VariantCoefs variant_coefs(double lambda, double g_box, double g_obj, double g_cls,
                                 double grad_scale, int64_t num_classes, int64_t cells, bool cls_kl) {
  const double n = static_cast<double>(cells);
  return VariantCoefs{lambda * g_box * grad_scale / (4.0 * n), lambda * g_obj * grad_scale / n,
                      lambda * g_cls * grad_scale / (cls_kl ? n : static_cast<double>(num_classes) * n)};
}

// clsTarget 'kl', tau^2 KL(softmax(T/tau) || softmax(P/tau)) of one cell, in
// three steps over its classes (the callers loop over the classes; the CPU
// kernel many cells at a time, the CUDA kernel one cell per thread):
//   1. m = max_c x_c / tau and 2. ls = log sum_c exp(x_c / tau - m), for the
//      student and the teacher;
//   3. per class: log p = kl_log_prob(x, tau, m, ls) (grouped as log_softmax:
//      (x/tau - m) - ls; m + ls first would lose ls to rounding when |x/tau|
//      is huge), q = exp(log q), the cell's sum += kl_class_term(q, log q,
//      log p), and the gradient kl_grad(...);
//   then kl_cell_value(sum, tau): clamped at 0 (KL >= 0; a sum of terms of both
//   signs can round below), times tau^2.
template <typename S>
YD_HD S kl_log_prob(S x, S tau, S m, S ls) { return (x / tau - m) - ls; }
template <typename S>
YD_HD S kl_class_term(S q, S logq, S logp) { return q * (logq - logp); }
// d (tau^2 KL) / d P_c = tau * (p_c - q_c), times the coefficient and mask.
template <typename S>
YD_HD S kl_grad(S coef_mask, S tau, S logp, S q) { return coef_mask * tau * (exp_(logp) - q); }
// The same with the student probability p_c already at hand (exp kept from step 2).
template <typename S>
YD_HD S kl_grad_p(S coef_mask, S tau, S p, S q) { return coef_mask * tau * (p - q); }
template <typename S>
YD_HD S kl_cell_value(S sum, S tau) { return (sum < S(0) ? S(0) : sum) * tau * tau; }

// ---- The centred KL steps (docs/DESIGN.md §2): the CPU kernel's fp32 path
// (fused_cpu.cpp, kl_group) and the CUDA kernels (fused_cuda.cu, kl_cell) ----
// Per cell, with d_c = ((T_c - max T) - (P_c - max P)) / tau, teacher weights
// w_c = exp((T_c - max T) / tau), S = sum w, mu = sum w d / S, e_c = d_c - mu:
//   tau^2 KL = tau^2 (r / S + log1p(x)),  x = (G - r) / S,
//   G = sum w_c kl_gap(e_c),  r = sum w_c e_c (~ 0),
//   d(tau^2 KL)/dP_c = tau (p_c - q_c) = tau (w_c / S) (kl_gap(e_c) - e_c - x) / (1 + x).
// The identities hold for d shifted by any constant and for any centre in
// place of mu (r takes up the difference): the CPU's kl_group uses
// d = (T - P) / tau, carried exactly as two floats, and an fp32 centre.
// For cells whose d spans at most kKlSpread; a span of at most kKlTiny takes
// kl_taylor_cell instead (e^2 would leave float's range at huge temperatures).
constexpr double kKlSpread = 40.0;
constexpr double kKlTiny = 1e-9;
// The centred fp32 steps keep only cells whose d spans at most kKlSpreadF32
// (the CPU's kl_group and the CUDA kl_cell; wider ones take the log-softmax
// steps, in double on the CPU and in fp32 on CUDA): each e_c is rounded
// relative to itself (|e_c| up to the span), and that rounding reaches
// tau (p_c - q_c) magnified where p_c and q_c are close. A cell spanning 35.6
// (fuzzer seed 1207101, case 11879: logits of +-30 at tau = 2.64, student and
// teacher agreeing on their top class and apart on others) had that class's
// gradient 5.1e-5 relative off float64 on the CPU, 2.0e-5 under the CUDA
// emulation (PyTorch float32: 2.3e-6; the design allows 1e-6 + 1e-5
// relative); random heads of +-3 logits at tau = 1, as the benchmarks' (spans
// under 12), heads near their teacher, and class logits of trained and
// untrained YOLO heads at tau >= 1 (differences within about +-10) stay on the
// centred steps (test/numerics-edge.test.js 'KL cells of wide spans',
// test/cuda-emu.test.js). 16 at first: heads spanning up to ~24 then took the
// CPU's double steps at 2.6x their time (BENCHMARKS.md).
constexpr double kKlSpreadF32 = 24.0;

// e^(-e) - 1 + e (>= 0, about e^2 / 2 near 0) without cancelling its first-order
// parts: |e| <= 1: e^2 times expm1_tail_poly(-e) (vec_math.h: (e^(-e) - 1 + e) / e^2
// within 1.0e-8 relative);
// else (exp(-e) - 1) + e, where the result is >= 0.36 and exp's error and two
// roundings stay under 1e-6 of it (worst near e = -1: e^1 / gap = 3.8). Within
// 1e-6 relative on [-41, 41] with vexpf (2.9e-7 measured against long double,
// test/cpp/cell_math_test.cpp); NaN stays NaN.
// kl_gap_near: the |e| <= 1 branch alone, for callers that know every e of a
// loop is there (the CPU KL steps skip the exponential then: same bits).
YD_HD float kl_gap_near(float e) {
  return (e * e) * expm1_tail_poly(-e);  // (e^(-e) - 1 + e) / e^2
}
YD_HD float kl_gap(float e) {
  const float small = kl_gap_near(e);
  const float large = (exp_(-e) - 1.0f) + e;
  return std::fabs(e) <= 1.0f ? small : large;  // NaN: large, which is NaN
}

// log(1 + x) for the centred KL's x >= -1e-5 (G >= 0; |r| / S is rounding): on
// the host vlog1p (its series holds on [-0.5, 1]) and, above 1, the log of
// 1 + x (KL >= log 2 there: the rounding of 1 + x is negligible), both
// vectorizable; the CUDA math library's log1p on the device.
// Its x <= 1 branch is log1p_ (a caller that knows every x is there may call
// that alone: the same value).
YD_HD_INLINE double kl_log1p(double x) {
#if defined(__CUDA_ARCH__)
  return ::log1p(x);
#else
  return x <= 1.0 ? vlog1p(x) : vlog_ge1(1.0 + x);
#endif
}

// tau^2 KL of one centred cell from r, x and 1 / S (clamped at 0 like kl_cell_value).
YD_HD double kl_centred_value(double r, double x, double inv_s, double tau) {
  return kl_cell_value(r * inv_s + kl_log1p(x), tau);
}
// The factor of a centred cell's gradient, coef * m * tau / (S (1 + x)):
// element c's gradient is factor * w_c * ((kl_gap(e_c) - e_c) - x).
YD_HD double kl_centred_factor(double coef_mask, double tau, double inv_s, double x) {
  return coef_mask * tau * inv_s / (1.0 + x);
}

// tau^2 KL of one cell whose scaled differences span at most kKlTiny, by its
// second-order expansion: with D_c = (T_c - max T) - (P_c - max P), q the
// teacher's softmax(T / tau) and E = D - sum q D,
//   tau^2 KL = Var_q(D) / 2 = (sum q E^2 - (sum q E)^2) / 2   (relative error ~ max |e|),
//   d(tau^2 KL)/dP_c = tau (p_c - q_c) = q_c (sum q E - E_c).
// Returns m * tau^2 KL; writes coef * m * the derivative through cell.put(c, v)
// when grad. cell.p(c), cell.t(c): the student's and teacher's value c as float.
// In double; it runs only at huge temperatures (and for distributions equal up
// to a shift), where the centred fp32 steps would underflow e^2 and the
// log-softmax steps cancel (tau = 1e10: PyTorch float64 gave 216 for a true 1.5).
template <typename Cell>
YD_HD double kl_taylor_cell(const Cell& cell, int64_t n, double tau, double m, double coef, bool grad) {
  double mt = -INFINITY, mp = -INFINITY;
  for (int64_t c = 0; c < n; ++c) {
    mt = fmax(mt, static_cast<double>(cell.t(c)));
    mp = fmax(mp, static_cast<double>(cell.p(c)));
  }
  auto weight = [&](int64_t c) { return exp_((static_cast<double>(cell.t(c)) - mt) / tau); };
  auto diff_d = [&](int64_t c) {
    return (static_cast<double>(cell.t(c)) - mt) - (static_cast<double>(cell.p(c)) - mp);
  };
  double s = 0.0, sd = 0.0;
  for (int64_t c = 0; c < n; ++c) {
    const double w = weight(c);
    s += w;
    sd += w * diff_d(c);
  }
  const double mean = sd / s;
  double se = 0.0, se2 = 0.0;
  for (int64_t c = 0; c < n; ++c) {
    const double w = weight(c), e = diff_d(c) - mean;
    se += w * e;
    se2 += w * e * e;
  }
  const double ebar = se / s;  // ~ 0: centred
  if (grad) {
    const double f = coef * m / s;
    for (int64_t c = 0; c < n; ++c) cell.put(c, f * weight(c) * (ebar - (diff_d(c) - mean)));
  }
  const double var = se2 / s - ebar * ebar;
  return m * (var > 0.0 ? 0.5 * var : 0.0);
}

// FM-NMS: whether cell (y, x) of an H x W plane is suppressed: another cell of
// its 3x3 neighbourhood has the same teacher class argmax (arg_at(j)) and a
// higher teacher objectness logit (obj_at(j)), ties going to the earlier cell
// in row-major order. j = y * W + x indexes the plane.
template <typename ArgAt, typename ObjAt>
YD_HD bool fm_nms_suppressed(int64_t y, int64_t x, int64_t H, int64_t W, const ArgAt& arg_at,
                             const ObjAt& obj_at) {
  const int64_t j = y * W + x;
  const auto o = obj_at(j);  // the score's own type (fp32 objectness, or a double weight)
  for (int64_t dy = -1; dy <= 1; ++dy) {
    for (int64_t dx = -1; dx <= 1; ++dx) {
      const int64_t yy = y + dy, xx = x + dx;
      if ((dy == 0 && dx == 0) || yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
      const int64_t jj = yy * W + xx;
      if (arg_at(jj) != arg_at(j)) continue;
      const auto oo = obj_at(jj);
      if (oo > o || (oo == o && jj < j)) return true;
    }
  }
  return false;
}

}  // namespace yd
