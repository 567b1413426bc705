// Unit tests of the per-cell math that the CPU and CUDA kernels share
// (native/core/cell_math.h), compiled as plain C++ without LibTorch:
//   g++ -std=c++17 -O1 -Inative/core test/cpp/cell_math_test.cpp -o build/cell_math_test && build/cell_math_test
// (test/cell-math.test.js does this). Prints one line per failed check and
// "N passed, M failed"; exits 1 on failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "cell_math.h"
#include "vec_math.h"

namespace {

int passed = 0, failed = 0;

void check(bool ok, const char* what, double got = 0, double want = 0) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAIL %s (got %.17g, want %.17g)\n", what, got, want);
  }
}

bool close(double a, double b, double rtol, double atol = 0) { return std::fabs(a - b) <= atol + rtol * std::fabs(b); }

// torch.argmax's rule: the first NaN, else the first maximum.
int argmax_ref(const std::vector<float>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) return static_cast<int>(i);
  }
  int best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = static_cast<int>(i);
  }
  return best;
}

int argmax_shared(const std::vector<float>& v) {
  int best = 0;
  float bv = v[0];
  for (size_t i = 1; i < v.size(); ++i) {
    if (yd::argmax_takes(v[i], bv)) {
      bv = v[i];
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace

// |a - b| in units in the last place of b.
double ulps(double a, double b) {
  if (a == b) return 0;
  const double ab = std::fabs(b);
  return std::fabs(a - b) / (std::nextafter(ab, INFINITY) - ab);
}

void vec_math_checks() {
  // vexp against glibc's exp: <= 2 ulp on [-708, 709.78], dense grid plus the ends.
  double worst = 0, at = 0;
  for (int i = 0; i <= 400000; ++i) {
    const double x = -708.0 + (709.78 + 708.0) * i / 400000.0;
    const double u = ulps(yd::vexp(x), std::exp(x));
    if (u > worst) worst = u, at = x;
  }
  for (double x : {-708.0, -1e-300, 0.0, 1e-300, 1e-10, 0.34657359027997264, 0.5, 1.0, 700.0, 709.0, 709.78}) {
    const double u = ulps(yd::vexp(x), std::exp(x));
    if (u > worst) worst = u, at = x;
  }
  std::printf("vexp: worst %.2f ulp (at x = %.17g)\n", worst, at);
  check(worst <= 2.0, "vexp within 2 ulp of exp on [-708, 709.78]", worst, 2.0);
  check(yd::vexp(0.0) == 1.0, "vexp(0) == 1", yd::vexp(0.0), 1.0);
  check(std::isinf(yd::vexp(709.79)) && std::isinf(yd::vexp(INFINITY)), "vexp overflows to +inf above 709.78");
  check(yd::vexp(-708.5) == 0.0 && yd::vexp(-INFINITY) == 0.0 && yd::vexp(-1e300) == 0.0, "vexp is 0 below -708");
  check(std::isnan(yd::vexp(NAN)), "vexp(NaN) is NaN");
  // vlog1p against glibc's log1p: <= 4 ulp on [-0.5, 1] (the centred KL's
  // kl_log1p passes rounding-negative x), tiny arguments of both signs included.
  worst = 0, at = 0;
  for (int i = -100000; i <= 200000; ++i) {
    const double u = i / 200000.0;
    const double e = ulps(yd::vlog1p(u), std::log1p(u));
    if (e > worst) worst = e, at = u;
  }
  for (double u : {5e-324, 1e-300, 1e-20, 1e-16, 1e-8, 1e-3, 0.41421356237309503, 1.0, -5e-324, -1e-300, -1e-20,
                   -1e-16, -1e-8, -1e-5, -1e-3}) {
    const double e = ulps(yd::vlog1p(u), std::log1p(u));
    if (e > worst) worst = e, at = u;
  }
  std::printf("vlog1p: worst %.2f ulp (at u = %.17g)\n", worst, at);
  check(worst <= 4.0, "vlog1p within 4 ulp of log1p on [-0.5, 1]", worst, 4.0);
  check(yd::vlog1p(0.0) == 0.0, "vlog1p(0) == 0");
  // vexpf against glibc's expf: <= 2 ulp on [-86.9, 88.72].
  worst = 0, at = 0;
  for (int i = 0; i <= 400000; ++i) {
    const float x = static_cast<float>(-86.9 + (88.72 + 86.9) * i / 400000.0);
    const float e = std::exp(x);
    const float u = static_cast<float>(std::fabs(static_cast<double>(yd::vexpf(x)) - e) / (std::nextafter(e, INFINITY) - e));
    if (u > worst) worst = u, at = x;
  }
  std::printf("vexpf: worst %.2f ulp (at x = %.9g)\n", worst, at);
  check(worst <= 2.0, "vexpf within 2 ulp of expf on [-86.9, 88.72]", worst, 2.0);
  check(yd::vexpf(0.0f) == 1.0f, "vexpf(0) == 1");
  check(std::isinf(yd::vexpf(88.73f)) && std::isinf(yd::vexpf(INFINITY)), "vexpf overflows to +inf above 88.7228");
  check(yd::vexpf(-87.0f) == 0.0f && yd::vexpf(-INFINITY) == 0.0f, "vexpf is 0 below -86.9");
  check(std::isnan(yd::vexpf(NAN)), "vexpf(NaN) is NaN");
  // vexpf_nonpos (the variants' exp(-|x|), the KL teacher weights) is vexpf
  // without its overflow handling, scaled by 2^k in one product: the same bits
  // for x <= 0, -Inf and NaN wherever the result is over 2.4e-38 (vexpf's
  // 2^(k-1) product is a normal float); below (where that product was rounded
  // to a subnormal), within 2 ulp of exp(x) as a normal float.
  {
    int diff = 0, worse = 0, below = 0;
    auto same = [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; };
    auto one = [&](float x) {
      const float a = yd::vexpf(x), b = yd::vexpf_nonpos(x);
      if (a > 2.4e-38f || a == 0.0f || !(x <= 0.0f)) {
        diff += !same(a, b);
      } else {
        ++below;
        const double e = std::exp(static_cast<double>(x));
        worse += !(std::fabs(static_cast<double>(b) - e) <= 0x1p-22 * e);
      }
    };
    for (int i = 0; i <= 400000; ++i) one(static_cast<float>(-100.0 * i / 400000.0));
    for (const float x : {-0.0f, -INFINITY, -1e30f, -86.9f, -87.0f, -1e-30f, -86.5f, -86.0f}) one(x);
    check(diff == 0 && std::isnan(yd::vexpf_nonpos(NAN)),
          "vexpf_nonpos(x) == vexpf(x), bit for bit, for x <= 0 with results over 2.4e-38; NaN is NaN", diff, 0);
    check(worse == 0 && below > 0, "vexpf_nonpos within 2 ulp (normal spacing) of exp(x) below 2.4e-38", worse, 0);
  }
  // vexpf_bounded (the KL steps' exp(-e), |e| <= 40 on every cell kept) is
  // vexpf_nonpos without any range handling: the same bits on [-86, 86], where
  // every result is over 2.4e-38 (vexpf's own bits above 0, vexpf_nonpos's
  // below); NaN stays NaN.
  {
    int diff = 0;
    auto same = [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; };
    for (int i = -400000; i <= 400000; ++i) {
      const float x = static_cast<float>(86.0 * i / 400000.0);
      const float want = x <= 0.0f ? yd::vexpf_nonpos(x) : yd::vexpf(x);
      diff += !same(yd::vexpf_bounded(x), want);
    }
    check(diff == 0 && std::isnan(yd::vexpf_bounded(NAN)),
          "vexpf_bounded(x) == vexpf(x) (vexpf_nonpos(x) for x <= 0), bit for bit, on [-86, 86]; NaN is NaN", diff, 0);
  }
  check(std::isnan(yd::vlog1p(NAN)), "vlog1p(NaN) is NaN");
  // vlog1pf against the exact log1p (double, rounded to float): <= 3 ulp of the
  // float result on [0, 1], every float of [2^-30, 1] on a dense grid and the
  // tiny ones.
  worst = 0, at = 0;
  auto ulpf = [](float got, double exact) {
    const float e = static_cast<float>(exact);
    const float step = std::nextafter(std::fabs(e), INFINITY) - std::fabs(e);
    return std::fabs(static_cast<double>(got) - exact) / step;
  };
  for (int i = 0; i <= 2000000; ++i) {
    const float u = static_cast<float>(i / 2000000.0);
    const double e = ulpf(yd::vlog1pf(u), std::log1p(static_cast<double>(u)));
    if (e > worst) worst = e, at = u;
  }
  for (float u = 1e-30f; u < 1e-3f; u *= 1.01f) {
    const double e = ulpf(yd::vlog1pf(u), std::log1p(static_cast<double>(u)));
    if (e > worst) worst = e, at = u;
  }
  std::printf("vlog1pf: worst %.2f ulp (at u = %.9g)\n", worst, at);
  check(worst <= 3.0, "vlog1pf within 3 ulp of log1p on [0, 1]", worst, 3.0);
  check(yd::vlog1pf(0.0f) == 0.0f, "vlog1pf(0) == 0");
  // vexpm1f_unit against the exact expm1 (double, rounded to float): <= 3 ulp
  // on [-1, 1], tiny arguments of both signs included.
  worst = 0, at = 0;
  for (int i = -2000000; i <= 2000000; ++i) {
    const float x = static_cast<float>(i / 2000000.0);
    if (x == 0.0f) continue;
    const double e = ulpf(yd::vexpm1f_unit(x), std::expm1(static_cast<double>(x)));
    if (e > worst) worst = e, at = x;
  }
  for (float x = 1e-30f; x < 1e-3f; x *= 1.01f) {
    for (const float y : {x, -x}) {
      const double e = ulpf(yd::vexpm1f_unit(y), std::expm1(static_cast<double>(y)));
      if (e > worst) worst = e, at = y;
    }
  }
  std::printf("vexpm1f_unit: worst %.2f ulp (at x = %.9g)\n", worst, at);
  check(worst <= 3.0, "vexpm1f_unit within 3 ulp of expm1 on [-1, 1]", worst, 3.0);
  check(yd::vexpm1f_unit(0.0f) == 0.0f, "vexpm1f_unit(0) == 0");
  // vexpm1f_near (no clamp): vexpm1f_unit's bits on [-1, 1], the ends included.
  int near_diff = 0;
  for (int i = -2000000; i <= 2000000; ++i) {
    const float x = static_cast<float>(i / 2000000.0);
    near_diff += yd::vexpm1f_near(x) != yd::vexpm1f_unit(x);
  }
  for (const float x : {-1.0f, 1.0f, -0.0f, 1e-38f, -1e-38f}) near_diff += yd::vexpm1f_near(x) != yd::vexpm1f_unit(x);
  check(near_diff == 0, "vexpm1f_near == vexpm1f_unit on [-1, 1]", near_diff, 0);
  check(std::isnan(yd::vexpm1f_near(std::nanf(""))), "vexpm1f_near(NaN) is NaN");
  // vlog_ge1 against glibc's log: <= 4 ulp on [1, 1e300].
  worst = 0, at = 0;
  for (int i = 0; i <= 1000000; ++i) {
    const double x = 1.0 + 200.0 * i / 1000000.0;  // sums of up to 200 exponentials
    const double e = ulps(yd::vlog_ge1(x), std::log(x));
    if (e > worst) worst = e, at = x;
  }
  for (double x = 1.0; x < 1e300; x *= 1.37) {
    const double e = ulps(yd::vlog_ge1(x), std::log(x));
    if (e > worst) worst = e, at = x;
  }
  // kl_gap (cell_math.h, on the host through vexpf) against exp(-e) - 1 + e in long double: relative error on |e| <= 41,
  // a dense grid and tiny arguments of both signs.
  {
    auto gap = [](float e) {
      const long double x = static_cast<long double>(e);
      return std::fabs(x) < 1e-3L ? x * x * (0.5L - x / 6.0L + x * x / 24.0L - x * x * x / 120.0L)
                                  : std::expm1(-x) + x;
    };
    double wrel = 0, wat = 0;
    for (int i = -4100000; i <= 4100000; ++i) {
      const float e = static_cast<float>(i / 100000.0);
      if (e == 0.0f) continue;
      const long double want = gap(e);
      const double rel = static_cast<double>(std::fabs((static_cast<long double>(yd::kl_gap(e)) - want) / want));
      if (rel > wrel) wrel = rel, wat = e;
    }
    for (float x = 1e-18f; x < 1e-2f; x *= 1.01f) {
      for (const float e : {x, -x}) {
        const long double want = gap(e);
        const double rel = static_cast<double>(std::fabs((static_cast<long double>(yd::kl_gap(e)) - want) / want));
        if (rel > wrel) wrel = rel, wat = e;
      }
    }
    std::printf("kl_gap: worst relative error %.3g (at e = %.9g)\n", wrel, wat);
    check(wrel <= 1e-6, "kl_gap within 1e-6 relative of exp(-e) - 1 + e on [-41, 41]", wrel, 1e-6);
    check(yd::kl_gap(0.0f) == 0.0f, "kl_gap(0) == 0");
    // kl_gap_near (the CPU KL steps' pass for groups whose every |e| <= 1) is
    // kl_gap's polynomial branch: the same bits on all of [-1, 1].
    int near_diff = 0;
    for (int i = -200000; i <= 200000; ++i) {
      const float e = static_cast<float>(i) / 200000.0f;
      const float a = yd::kl_gap(e), b = yd::kl_gap_near(e);
      if (std::memcmp(&a, &b, sizeof a) != 0) ++near_diff;
    }
    check(near_diff == 0, "kl_gap_near(e) == kl_gap(e), bit for bit, on [-1, 1]", near_diff, 0);
    check(std::isnan(yd::kl_gap(NAN)), "kl_gap(NaN) is NaN");
  }
  std::printf("vlog_ge1: worst %.2f ulp (at x = %.17g)\n", worst, at);
  check(worst <= 4.0, "vlog_ge1 within 4 ulp of log on [1, 1e300]", worst, 4.0);
  check(yd::vlog_ge1(1.0) == 0.0, "vlog_ge1(1) == 0");
  check(std::isinf(yd::vlog_ge1(INFINITY)) && std::isnan(yd::vlog_ge1(NAN)), "vlog_ge1: +Inf and NaN pass through");
  check(std::isnan(yd::vexpm1f_unit(NAN)), "vexpm1f_unit(NaN) is NaN");
  check(std::isnan(yd::vlog1pf(NAN)), "vlog1pf(NaN) is NaN");
}

int main() {
  using yd::variant_element;
  vec_math_checks();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();

  // teacher_weight: sigmoid in fp32, exact 0/1 limits, NaN stays NaN.
  for (float x : {-20.f, -3.5f, -1.f, 0.f, 0.25f, 2.f, 17.f}) {
    const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(x)));
    check(close(yd::teacher_weight(x), want, 2e-7), "teacher_weight(x) = sigmoid(x)", yd::teacher_weight(x), want);
  }
  check(yd::teacher_weight(-1000.f) == 0.f, "teacher_weight(-1000) = 0");
  check(yd::teacher_weight(1000.f) == 1.f, "teacher_weight(1000) = 1");
  check(std::isnan(yd::teacher_weight(nan)), "teacher_weight(NaN) = NaN");

  // grad_coefs: lambda * g * 2 * gradScale / (n_term * N), rounded once.
  {
    const yd::TermCoefs c = yd::grad_coefs(10.0, 0.5, 2.0, 3.0, 4.0, 80, 1000);
    check(c.box == static_cast<float>(2.0 * 10 * 4 / 1000.0 * 0.5 / 4), "grad_coefs box");
    check(c.obj == static_cast<float>(2.0 * 10 * 4 / 1000.0 * 2.0), "grad_coefs obj");
    check(c.cls == static_cast<float>(2.0 * 10 * 4 / 1000.0 * 3.0 / 80), "grad_coefs cls");
  }
  // coef_fits_fp32: finite normal fp32 or exactly zero.
  check(yd::coef_fits_fp32(0.0), "coef 0 fits");
  check(yd::coef_fits_fp32(1e-3) && yd::coef_fits_fp32(-3e38), "ordinary coefficients fit");
  check(!yd::coef_fits_fp32(1e39), "1e39 does not fit fp32");
  check(!yd::coef_fits_fp32(1e-40), "a subnormal coefficient does not fit");
  check(!yd::coefs_fit_fp32(10, 1, 1, 1, 3e37, 2, 1), "gradScale 3e37, lambda 10, one cell: obj overflows");
  check(yd::coefs_fit_fp32(10, 1, 1, 1, 1, 80, 1 << 20), "default options fit");

  // The normalisers.
  check(yd::box_term(8.0, 2) == 1.0 && yd::obj_term(8.0, 2) == 4.0 && yd::cls_term(8.0, 4, 2) == 1.0, "term normalisers");
  check(yd::total_loss(10, 1, 2, 3, 1, 1, 1) == 60.0, "total_loss");

  // Element math: w*d rounded once in fp32, the square widened before the product.
  {
    const float d = yd::diff(1.5f, -0.25f), wd = yd::weighted_diff(0.5f, d);
    check(d == 1.75f && wd == 0.875f, "diff and weighted_diff");
    check(yd::weighted_sq(wd, d) == 0.875 * 1.75, "weighted_sq in double");
    check(yd::grad_value(2.f, wd) == 1.75f, "grad_value");
  }

  // variant_element: the returned derivative matches a central finite
  // difference of the returned loss, for every kind, in double.
  for (int kind : {yd::kKindLogit, yd::kKindProb, yd::kKindBce}) {
    for (double p : {-4.0, -0.7, 0.0, 0.3, 2.5}) {
      for (double t : {-1.5, 0.0, 3.0}) {
        double l0 = 0, lp = 0, lm = 0;
        const double g = variant_element<double>(kind, p, t, &l0);
        const double h = 1e-6;
        variant_element<double>(kind, p + h, t, &lp);
        variant_element<double>(kind, p - h, t, &lm);
        check(close(g, (lp - lm) / (2 * h), 1e-6, 1e-8), "variant_element derivative = finite difference", g, (lp - lm) / (2 * h));
        check(l0 >= 0 || kind == yd::kKindBce, "squared losses are >= 0", l0, 0);
      }
    }
  }
  // BCE is minimal (gradient 0) where sigma(p) = sigma(t), i.e. p = t.
  {
    double l = 0;
    check(std::fabs(variant_element<double>(yd::kKindBce, 1.25, 1.25, &l)) < 1e-15, "bce gradient 0 at p = t");
  }
  // variant_element in fp32 (what the CPU and CUDA kernels run) against the
  // exact values (long double) on a grid that includes p close to t, both
  // saturated, and opposite extremes: derivative and loss within 1e-6 relative
  // (+ 1e-30 absolute), i.e. no cancellation anywhere.
  {
    auto sig = [](long double x) { return 1.0L / (1.0L + std::exp(-x)); };
    double worst_d = 0, worst_l = 0;
    const float grid[] = {-90.f, -40.f, -17.f, -5.f, -1.f, -0.3f, 0.f, 1e-7f, 0.2f, 0.5f, 1.f, 3.f, 16.f, 30.f, 88.f};
    const float nudges[] = {0.f, 1e-6f, -1e-6f, 3e-4f, 0.01f, -0.5f, 0.999f, 1.001f, -2.f, 7.f};
    for (int kind : {yd::kKindProb, yd::kKindBce}) {
      for (float t : grid) {
        for (float dp : nudges) {
          const float p = t + dp;
          float l = 0;
          const float d = variant_element<float>(kind, p, t, &l);
          // sigma(P) - sigma(T) through an identity that does not cancel in
          // long double either (sigma(30) is 1 - 9e-14: a subtraction of the
          // two would lose the difference of close arguments).
          const long double P = p, T = t, diff = -sig(P) * sig(-T) * std::expm1(T - P);
          long double want_d, want_l;
          if (kind == yd::kKindProb) {
            want_d = 2 * diff * sig(P) * sig(-P);
            want_l = diff * diff;
          } else {
            want_d = diff;
            // log(1 + e^-|P|) + (P >= 0 ? P sigma(-T) : -P sigma(T))
            want_l = std::log1p(std::exp(-std::fabs(P))) + (P >= 0 ? P * sig(-T) : -P * sig(T));
          }
          const double ed = std::fabs(static_cast<double>(d - want_d)) / (std::fabs(static_cast<double>(want_d)) + 1e-30);
          const double el = std::fabs(static_cast<double>(l - want_l)) / (std::fabs(static_cast<double>(want_l)) + 1e-30);
          if (!(ed <= 1e-6) || !(el <= 1e-6)) std::printf("  kind %d p %.9g t %.9g: d %.9g want %.9Lg, loss %.9g want %.9Lg\n", kind, p, t, d, want_d, l, want_l);
          worst_d = std::max(worst_d, ed);
          worst_l = std::max(worst_l, el);
        }
      }
    }
    std::printf("variant_element<float>: worst relative error %.3g (derivative), %.3g (loss)\n", worst_d, worst_l);
    check(worst_d <= 1e-6, "variant_element<float> derivative within 1e-6 relative", worst_d, 1e-6);
    check(worst_l <= 1e-6, "variant_element<float> loss within 1e-6 relative", worst_l, 1e-6);
    float l = 0;
    check(std::isnan(variant_element<float>(yd::kKindBce, nan, 0.f, &l)) && std::isnan(l), "bce: NaN in, NaN out");
    check(std::isnan(variant_element<float>(yd::kKindProb, 0.f, nan, &l)) && std::isnan(l), "prob: NaN in, NaN out");
    check(variant_element<float>(yd::kKindProb, inf, inf, &l) == 0.f && l == 0.f, "prob at (+inf, +inf): 0");
  }

  // argmax_takes: the order of torch.argmax, NaN included.
  const std::vector<std::vector<float>> rows = {
      {1, 3, 2}, {3, 3, 1}, {nan, 1, 2}, {1, nan, nan}, {-inf, -inf}, {0, inf, nan, inf}, {5}, {2, 1, nan}};
  for (const auto& r : rows) check(argmax_shared(r) == argmax_ref(r), "argmax_takes follows torch.argmax", argmax_shared(r), argmax_ref(r));

  // FM-NMS on a 3x3 plane: same class everywhere, the centre has the highest
  // objectness: every other cell is suppressed, the centre is kept.
  {
    const int H = 3, W = 3;
    const float obj[9] = {0, 1, 0, 1, 5, 1, 0, 1, 0};
    const int arg_same[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    auto obj_at = [&](int64_t j) { return obj[j]; };
    auto same = [&](int64_t j) { return arg_same[j]; };
    int kept = 0;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) kept += !yd::fm_nms_suppressed(y, x, H, W, same, obj_at);
    check(kept == 1 && !yd::fm_nms_suppressed(1, 1, H, W, same, obj_at), "FM-NMS keeps the peak only");
    // Different classes do not suppress each other.
    const int arg_diff[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    auto diff_cls = [&](int64_t j) { return arg_diff[j]; };
    kept = 0;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) kept += !yd::fm_nms_suppressed(y, x, H, W, diff_cls, obj_at);
    check(kept == 9, "FM-NMS: other classes never suppress");
    // Ties go to the earlier cell in row-major order.
    const float flat[9] = {2, 2, 2, 2, 2, 2, 2, 2, 2};
    auto flat_at = [&](int64_t j) { return flat[j]; };
    check(!yd::fm_nms_suppressed(0, 0, H, W, same, flat_at) && yd::fm_nms_suppressed(0, 1, H, W, same, flat_at) &&
              yd::fm_nms_suppressed(2, 2, H, W, same, flat_at),
          "FM-NMS ties: the earlier cell wins");
    // A NaN objectness never wins a comparison (as in the reference's > and ==).
    const float withnan[9] = {0, 0, 0, 0, nan, 0, 0, 0, 0};
    auto nan_at = [&](int64_t j) { return withnan[j]; };
    check(!yd::fm_nms_suppressed(1, 1, H, W, same, nan_at), "FM-NMS: a NaN cell is not suppressed by finite ones");
  }

  // variant_coefs: lambda * g * gradScale / (n_term * N); 'kl' per cell.
  {
    const yd::VariantCoefs c = yd::variant_coefs(10, 1, 2, 3, 0.5, 4, 100, false);
    check(c.box == 10 * 1 * 0.5 / 400.0 && c.obj == 10 * 2 * 0.5 / 100.0 && c.cls == 10 * 3 * 0.5 / 400.0, "variant_coefs");
    check(yd::variant_coefs(10, 1, 2, 3, 0.5, 4, 100, true).cls == 10 * 3 * 0.5 / 100.0, "variant_coefs kl");
  }
  // The KL steps: one cell of C classes against a double-precision reference,
  // gradients summing to 0, and huge logits (1e16) where m + log sum would
  // lose log sum: KL 0 for equal distributions.
  {
    auto kl_of = [](const std::vector<double>& x, const std::vector<double>& y, double tau, std::vector<double>* grad) {
      double mp = -INFINITY, mq = -INFINITY, zp = 0, zq = 0, sum = 0;
      for (size_t c = 0; c < x.size(); ++c) mp = std::max(mp, x[c] / tau), mq = std::max(mq, y[c] / tau);
      for (size_t c = 0; c < x.size(); ++c) zp += std::exp(x[c] / tau - mp), zq += std::exp(y[c] / tau - mq);
      const double lsp = std::log(zp), lsq = std::log(zq);
      grad->assign(x.size(), 0);
      for (size_t c = 0; c < x.size(); ++c) {
        const double lp = yd::kl_log_prob(x[c], tau, mp, lsp), lq = yd::kl_log_prob(y[c], tau, mq, lsq);
        const double q = std::exp(lq);
        sum += yd::kl_class_term(q, lq, lp);
        (*grad)[c] = yd::kl_grad(1.0, tau, lp, q);
      }
      return yd::kl_cell_value(sum, tau);
    };
    std::vector<double> g;
    const std::vector<double> x = {0.5, -1.0, 2.0}, y = {1.0, 0.0, -0.5};
    // Direct: sum_c softmax(y/tau)_c * (log softmax(y/tau)_c - log softmax(x/tau)_c) * tau^2.
    const double tau = 2.0;
    double zx = 0, zy = 0;
    for (int c = 0; c < 3; ++c) zx += std::exp(x[c] / tau), zy += std::exp(y[c] / tau);
    double want = 0, gsum = 0;
    for (int c = 0; c < 3; ++c) {
      const double q = std::exp(y[c] / tau) / zy;
      want += q * (std::log(q) - std::log(std::exp(x[c] / tau) / zx));
    }
    want *= tau * tau;
    const double got = kl_of(x, y, tau, &g);
    for (double v : g) gsum += v;
    check(close(got, want, 1e-14), "KL of one cell", got, want);
    check(std::fabs(gsum) < 1e-15, "KL gradient sums to 0 over the classes", gsum, 0);
    const double huge = kl_of({1e16, 1e16}, {0.0, 0.0}, 1.0, &g);
    check(huge == 0.0 && g[0] == 0.0 && g[1] == 0.0, "KL at logits 1e16: 0, not -log 2", huge, 0);
    check(yd::kl_cell_value(-1e-18, 3.0) == 0.0, "KL clamped at 0");
  }

  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
