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
// the current best, takes its place.
YD_HD bool argmax_takes(float v, float best) {
  return best == best && (v > best || v != v);
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

// fp32 (CUDA kernels): the CUDA math library. double (CPU kernels): vec_math.h's
// branch-free versions, which vectorize (log1p_ is only ever given 0 <= x <= 1,
// the range vlog1p is accurate on: see softplus_).
YD_HD float exp_(float x) { return ::expf(x); }
YD_HD float log1p_(float x) { return ::log1pf(x); }
YD_HD double exp_(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return vexp(x);
#endif
}
YD_HD double log1p_(double x) {
#if defined(__CUDA_ARCH__)
  return ::log1p(x);
#else
  return vlog1p(x);
#endif
}

template <typename S>
YD_HD S sigmoid_(S x) { return S(1) / (S(1) + exp_(-x)); }
// log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|)), without
// branches (NaN: the select gives 0, the log1p term NaN).
template <typename S>
YD_HD S softplus_(S x) {
  const S pos = x > S(0) ? x : S(0);
  const S neg_abs = x < S(0) ? x : -x;
  return pos + log1p_(exp_(neg_abs));
}

// One element of a term with target kind `kind` (not Kl): *loss = its value;
// returns d loss / d p (the derivative with respect to the student logit).
//   logit (p - t)^2; prob (sigma p - sigma t)^2; bce BCE of sigma p against sigma t.
template <typename S>
YD_HD S variant_element(int kind, S p, S t, S* loss) {
  if (kind == kKindProb) {
    const S a = sigmoid_(p), b = sigmoid_(t), d = a - b;
    *loss = d * d;
    return S(2) * d * a * (S(1) - a);
  }
  if (kind == kKindBce) {
    const S b = sigmoid_(t);
    *loss = b * softplus_(-p) + (S(1) - b) * softplus_(p);
    return sigmoid_(p) - b;
  }
  const S d = p - t;
  *loss = d * d;
  return S(2) * d;
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
