// Per-cell math of the objectness-scaled distillation loss (DESIGN.md §1).
//
// Everything here is shared by the fused CPU kernel and the CUDA kernels, so it
// is written once as inline __host__ __device__ functions on plain scalars: no
// LibTorch, no N-API, no allocation. The CPU unit tests exercise it directly.
#pragma once

#include <cmath>
#include <cstdint>

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
YD_HD float teacher_weight(float t_obj) { return 1.0f / (1.0f + ::expf(-t_obj)); }

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

}  // namespace yd
