// See fused_cuda_dispatch.h.
#include "fused_cuda_dispatch.h"

#include <ATen/Functions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "fused_cuda.h"
#include "fused_cpu.h"  // RawSums, scale_terms

namespace yd {

namespace {

cuda::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return cuda::DType::F16;
    case at::kBFloat16: return cuda::DType::BF16;
    default: return cuda::DType::F32;
  }
}

cuda::VariantParams variant_params(const Options& o, const ScaleGeom& g) {
  const Variant& v = o.variant;
  cuda::VariantParams p;
  p.box = v.box;
  p.obj = v.obj;
  p.cls = v.cls;
  p.weighted_box = v.weighted_box;
  p.weighted_obj = v.weighted_obj;
  p.weighted_cls = v.weighted_cls;
  p.fm_nms = v.fm_nms;
  p.temperature = static_cast<float>(v.temperature);
  p.box_temperature = static_cast<float>(o.box_temperature);
  const VariantCoefs vc = variant_coefs(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, g.classes,
                                        g.cells(), v.cls == Target::Kl);
  p.cb = vc.box;
  p.co = vc.obj;
  p.cc = vc.cls;
  // The default kernels multiply by fp32 coefficients; where one does not fit
  // fp32 (cell_math.h, coef_fits_fp32) the variant kernel, which multiplies in
  // double, computes the default formula instead.
  p.coefs_fit = coefs_fit_fp32(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, g.classes, g.cells());
  return p;
}

}  // namespace

Result fused_cuda_loss(const std::vector<at::Tensor>& student, const std::vector<at::Tensor>& teacher,
                       const std::vector<ScaleGeom>& geoms, const Options& opts,
                       const std::vector<at::Tensor>& grad_out) {
  const c10::cuda::CUDAGuard guard(student[0].device());
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(student[0].device().index());
  const size_t S = student.size();
  for (const ScaleGeom& g : geoms) {
    // The kernels index a tile's values (kTileCells cells of 5 + C, or 4R + C) with 32-bit ints.
    if (g.per_anchor() >= (int64_t{1} << 31) / 32) {
      // Values per cell besides the classes: 5 (anchor heads) or 4 * regMax.
      const int64_t other = g.per_anchor() - g.classes;
      throw_range(code::kInvalidOption,
                  "options.numClasses: at most " + std::to_string((int64_t{1} << 26) - 1 - other) +
                      " classes on CUDA" + (g.head == Head::AnchorFree ? " with regMax " + std::to_string(g.reg_max) : "") +
                      ", got " + std::to_string(g.classes));
    }
  }
  const auto dev_double = at::TensorOptions().dtype(at::kDouble).device(student[0].device());

  std::vector<at::Tensor> ps(S), ts(S), gs(S);
  std::vector<cuda::ScaleLaunch> launches(S);
  std::vector<cuda::VariantParams> params(S);
  int64_t ws_size = 1;
  for (size_t s = 0; s < S; ++s) {
    const ScaleGeom& g = geoms[s];
    // Same dtype: the kernels read it in place. Mixed dtypes (an fp16 teacher,
    // an fp32 student): both widened to fp32, the gradient rounded to the
    // student's dtype afterwards.
    const bool mixed = student[s].scalar_type() != teacher[s].scalar_type();
    ps[s] = mixed ? student[s].to(at::kFloat).contiguous() : student[s].contiguous();
    ts[s] = mixed ? teacher[s].to(at::kFloat).contiguous() : teacher[s].contiguous();
    if (opts.grad) {
      const at::Tensor out = grad_out.empty() ? at::Tensor() : grad_out[s];
      gs[s] = out.defined() && out.is_contiguous() && out.scalar_type() == ps[s].scalar_type()
                  ? out
                  : at::empty(ps[s].sizes(), ps[s].options());
    }
    cuda::ScaleLaunch& l = launches[s];
    l.p = ps[s].data_ptr();
    l.t = ts[s].data_ptr();
    l.g = opts.grad ? gs[s].data_ptr() : nullptr;
    l.batch = g.batch;
    l.anchors = g.anchors;
    l.height = g.height;
    l.width = g.width;
    l.classes = g.classes;
    l.nahwc = g.cell_major();
    l.nhwc = g.layout == Layout::NHWC;
    l.anchor_free = g.head == Head::AnchorFree;
    l.reg_max = g.reg_max;
    l.coefs = grad_coefs(opts.lambda, opts.w_box, opts.w_obj, opts.w_cls, opts.grad_scale, g.classes,
                         g.cells());
    l.dtype = dtype_of(ps[s]);
    params[s] = variant_params(opts, g);
    ws_size = std::max(ws_size, (cuda::scale_workspace_bytes(l, params[s]) + 7) / 8);
  }
  // Scales run one after another on one stream, so they can share a workspace.
  at::Tensor workspace = at::empty({ws_size}, dev_double);
  at::Tensor sums = at::empty({static_cast<int64_t>(3 * S)}, dev_double);
  for (size_t s = 0; s < S; ++s) {
    const int err = cuda::launch_scale(launches[s], params[s], workspace.data_ptr<double>(),
                                       sums.data_ptr<double>() + 3 * s, stream.stream());
    if (err != 0) {
      throw Error(ErrorKind::Generic, code::kLibTorch,
                  std::string("CUDA kernel launch failed: ") + cuda::error_string(err));
    }
  }
  const at::Tensor host = sums.cpu();  // the one synchronisation: 3 doubles per scale
  const double* h = host.data_ptr<double>();

  Result r;
  for (size_t s = 0; s < S; ++s) {
    const Terms terms = scale_terms(RawSums{h[3 * s], h[3 * s + 1], h[3 * s + 2]}, geoms[s], opts.variant);
    r.scales.push_back(terms);
    r.total.box += terms.box;
    r.total.obj += terms.obj;
    r.total.cls += terms.cls;
    if (opts.grad) {
      const at::Tensor out = grad_out.empty() ? at::Tensor() : grad_out[s];
      if (out.defined() && !gs[s].is_same(out)) out.copy_(gs[s]);  // copy_ rounds to out's dtype
      r.grads.push_back(out.defined() ? out
                        : gs[s].scalar_type() == student[s].scalar_type() ? gs[s]
                                                                          : gs[s].to(student[s].scalar_type()));
    }
  }
  r.loss = total_loss(opts.lambda, opts.w_box, opts.w_obj, opts.w_cls, r.total.box, r.total.obj,
                      r.total.cls);
  return r;
}

}  // namespace yd
