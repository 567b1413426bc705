// Validation and dispatch of the distillation loss to the fused kernel or the
// autograd reference. See loss.h.
#include "loss.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/api/include/torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "cell_math.h"
#include "fused_cpu.h"
#include "names.h"
#include "reference.h"
#ifdef YD_WITH_CUDA
#include "fused_cuda_dispatch.h"
#endif

namespace yd {

namespace {

std::string shape_str(at::IntArrayRef shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

std::string where(size_t scale, const char* tensor) {
  std::ostringstream os;
  os << "scale " << scale << ", " << tensor;
  return os.str();
}

// Messages are built only on failure: validation runs on every call.
template <typename Msg>
void check_option(bool ok, const Msg& msg) {
  if (!ok) throw_range(code::kInvalidOption, msg());
}

// The ranges of every option (their types are the addon's business): the one
// place that checks them.
void validate_options(const Options& o) {
  auto in_range = [](const char* name, int64_t v, int64_t lo, int64_t hi) {
    check_option(v >= lo && v <= hi, [&] {
      return std::string("options.") + name + ": expected an integer in [" + std::to_string(lo) + ", " +
             std::to_string(hi) + "], got number " + std::to_string(v);
    });
  };
  // Dimensions up to 2^31 keep A * (5 + C) and the element counts in int64.
  constexpr int64_t kMaxDim = int64_t{1} << 31;
  in_range("numClasses", o.num_classes, 1, kMaxDim);
  in_range("numAnchors", o.num_anchors, 1, kMaxDim);
  in_range("threads", o.threads, 0, 1024);
  if (o.head == Head::AnchorFree) {
    check_option(!o.num_anchors_given || o.num_anchors == 1, [&] {
      return "options.numAnchors: an anchor-free head predicts once per cell (numAnchors 1 or absent), got " +
             std::to_string(o.num_anchors);
    });
    check_option(o.layout != Layout::NAHWC, [&] {
      return std::string("options.layout: 'nahwc' is for anchor heads; an anchor-free head is 'nchw' "
                         "[B, 4*regMax+C, H, W] or 'nhwc' [B, H, W, 4*regMax+C]");
    });
    in_range("regMax", o.reg_max, 1, int64_t{1} << 20);
    check_option(o.box_temperature >= kMinTemperature && o.box_temperature <= kMaxTemperature, [&] {
      std::ostringstream os;
      os << "options.boxTemperature must be a number in [1.1754944e-38, 3.4028235e38] (> 0, finite), got "
         << o.box_temperature;
      return os.str();
    });
    check_option(o.variant.box == BoxTarget::Logit, [&] {
      return std::string("options.boxTarget 'paper' (or preset 'paper') is for anchor heads; an anchor-free "
                         "head's box term is the distribution KL (regMax > 1) or squared differences");
    });
    check_option(o.variant.obj == Target::Logit, [&] {
      return std::string("options.objTarget: an anchor-free head has no objectness channel");
    });
  }
  auto finite_nonneg = [](double v) { return std::isfinite(v) && v >= 0.0; };
  auto bad = [](const char* name, double v, const char* want) {
    std::ostringstream os;
    os << "options." << name << " must be " << want << ", got " << v;
    return os.str();
  };
  check_option(finite_nonneg(o.lambda), [&] { return bad("lambda", o.lambda, "a finite number >= 0"); });
  check_option(finite_nonneg(o.w_box), [&] { return bad("weights.box", o.w_box, "a finite number >= 0"); });
  check_option(finite_nonneg(o.w_obj), [&] { return bad("weights.obj", o.w_obj, "a finite number >= 0"); });
  check_option(finite_nonneg(o.w_cls), [&] { return bad("weights.cls", o.w_cls, "a finite number >= 0"); });
  check_option(std::isfinite(o.grad_scale), [&] { return bad("gradScale", o.grad_scale, "a finite number"); });
  // A subnormal temperature makes 1/tau overflow (NaN from finite inputs); the
  // range is fp32's normal numbers, so the CUDA kernels' fp32 tau is exact too.
  check_option(o.variant.temperature >= kMinTemperature && o.variant.temperature <= kMaxTemperature,
               [&] {
                 return bad("temperature", o.variant.temperature,
                            "a number in [1.1754944e-38, 3.4028235e38] (a normal fp32 number, so "
                            "that 1/temperature is finite)");
               });
  check_option(o.variant.obj != Target::Kl, [&] {
    return std::string("options.objTarget: 'kl' is for classes only; use 'logit', 'prob' or 'bce'");
  });

}

// An anchor-free head: nchw [B, 4R+C, H, W] or nhwc [B, H, W, 4R+C].
ScaleGeom anchor_free_geom(const at::Tensor& x, size_t s, const char* name, const Options& o) {
  const int64_t R = o.reg_max, C = o.num_classes, K = 4 * R + C;
  const char* shape = o.layout == Layout::NCHW ? "[B, 4*regMax+C, H, W]" : "[B, H, W, 4*regMax+C]";
  if (x.dim() != 4) {
    throw_range(code::kInvalidShape, where(s, name) + ": expected a 4-D " + layout_name(o.layout) +
                                         " anchor-free head " + shape + ", got shape " + shape_str(x.sizes()));
  }
  for (int64_t d = 0; d < 4; ++d) {
    if (x.size(d) < 1) {
      throw_range(code::kInvalidShape, where(s, name) + ": every dimension must be >= 1, got shape " +
                                           shape_str(x.sizes()));
    }
  }
  const int64_t dim = o.layout == Layout::NCHW ? 1 : 3, got = x.size(dim);
  if (got != K) {
    std::string hint;
    if (got > C && (got - C) % 4 == 0) {
      hint += "; it fits regMax = " + std::to_string((got - C) / 4) + " with numClasses " + std::to_string(C);
    }
    if (got % (5 + C) == 0) {
      hint += std::string(hint.empty() ? "; " : ", or ") + "an anchor head ('anchor') with numAnchors = " +
              std::to_string(got / (5 + C));
    }
    throw_range(code::kChannelMismatch,
                where(s, name) + ": expected 4*regMax + C = 4*" + std::to_string(R) + " + " + std::to_string(C) +
                    " = " + std::to_string(K) + " channels in dim " + std::to_string(dim) + ", got " +
                    std::to_string(got) + " in shape " + shape_str(x.sizes()) + hint);
  }
  return o.layout == Layout::NCHW
             ? make_geom(o.layout, x.size(0), 1, x.size(2), x.size(3), C, Head::AnchorFree, R)
             : make_geom(o.layout, x.size(0), 1, x.size(1), x.size(2), C, Head::AnchorFree, R);
}

// Checks one head's rank, dims and channels against the options; returns its geometry.
ScaleGeom head_geom(const at::Tensor& x, size_t s, const char* name, const Options& o) {
  if (!x.defined()) throw_type(code::kInvalidArgType, where(s, name) + ": tensor is undefined");
  const auto dtype = x.scalar_type();
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    throw_type(code::kUnsupportedDtype, where(s, name) +
                                            ": expected dtype float32, float16 or bfloat16, got " +
                                            dtype_name(dtype));
  }
  if (o.head == Head::AnchorFree) return anchor_free_geom(x, s, name, o);
  const int64_t per_anchor = 5 + o.num_classes;
  const int64_t want_rank = o.layout == Layout::NAHWC ? 5 : 4;
  if (x.dim() != want_rank) {
    throw_range(code::kInvalidShape,
                where(s, name) + ": expected a " + std::to_string(want_rank) + "-D " +
                    layout_name(o.layout) + " tensor " + layout_shape(o.layout) + ", got shape " +
                    shape_str(x.sizes()) + " (" + std::to_string(x.dim()) + "-D)");
  }
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (x.size(d) < 1) {
      throw_range(code::kInvalidShape, where(s, name) + ": every dimension must be >= 1, got shape " +
                                           shape_str(x.sizes()));
    }
  }
  switch (o.layout) {
    case Layout::NCHW:
    case Layout::NHWC: {
      const int64_t dim = o.layout == Layout::NCHW ? 1 : 3;
      const int64_t want = o.num_anchors * per_anchor;
      if (x.size(dim) != want) {
        throw_range(code::kChannelMismatch,
                    where(s, name) + ": expected " + std::to_string(want) +
                        " channels (A*(5+C) = " + std::to_string(o.num_anchors) + "*(5+" +
                        std::to_string(o.num_classes) + ")), got " + std::to_string(x.size(dim)) +
                        " in dim " + std::to_string(dim) + " of shape " + shape_str(x.sizes()));
      }
      return o.layout == Layout::NCHW
                 ? make_geom(o.layout, x.size(0), o.num_anchors, x.size(2), x.size(3), o.num_classes)
                 : make_geom(o.layout, x.size(0), o.num_anchors, x.size(1), x.size(2), o.num_classes);
    }
    case Layout::NAHWC:
      if (x.size(1) != o.num_anchors) {
        throw_range(code::kChannelMismatch,
                    where(s, name) + ": expected A = " + std::to_string(o.num_anchors) +
                        " anchors in dim 1, got " + std::to_string(x.size(1)) + " in shape " +
                        shape_str(x.sizes()));
      }
      if (x.size(4) != per_anchor) {
        throw_range(code::kChannelMismatch,
                    where(s, name) + ": expected 5+C = " + std::to_string(per_anchor) +
                        " values per anchor in dim 4, got " + std::to_string(x.size(4)) +
                        " in shape " + shape_str(x.sizes()));
      }
      return make_geom(o.layout, x.size(0), o.num_anchors, x.size(2), x.size(3), o.num_classes);
  }
  throw_range(code::kInternal, "unknown layout");
}

bool overlaps(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || !b.defined() || a.device() != b.device()) return false;
  const auto* a0 = static_cast<const char*>(a.data_ptr());
  const auto* b0 = static_cast<const char*>(b.data_ptr());
  const auto* a1 = a0 + a.numel() * a.element_size();
  const auto* b1 = b0 + b.numel() * b.element_size();
  return a0 < b1 && b0 < a1;
}

// Throws ERR_NON_FINITE naming the first non-finite element of x, if any.
void check_finite(const at::Tensor& x, size_t s, const char* name, const ScaleGeom& g) {
  int64_t bad = -1;
  double value = 0.0;
  if (x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous()) {
    const float* d = x.data_ptr<float>();
    const int64_t n = x.numel();
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(d[i])) {
        bad = i;
        value = d[i];
        break;
      }
    }
  } else {
    const at::Tensor flat = x.reshape({-1});
    const at::Tensor idx = at::logical_not(at::isfinite(flat)).nonzero();
    if (idx.numel() > 0) {
      bad = idx[0][0].item<int64_t>();
      value = flat[bad].item<double>();
    }
  }
  if (bad < 0) return;
  // Decompose the flat index into (b, a, y, x, k) by the layout's strides,
  // largest first (they are a permutation of a mixed radix).
  int64_t idx[5] = {0, 0, 0, 0, 0};  // b, a, y, x, k
  {
    const int64_t strides[5] = {g.stride_b, g.stride_a, g.stride_y, g.stride_x, g.stride_k};
    int order[5] = {0, 1, 2, 3, 4};
    std::sort(order, order + 5, [&](int l, int r) { return strides[l] > strides[r]; });
    int64_t rest = bad;
    for (int d : order) {
      idx[d] = rest / strides[d];
      rest %= strides[d];
    }
  }
  const int64_t b = idx[0], a = idx[1], y = idx[2], xx = idx[3], k = idx[4];
  std::ostringstream os;
  os << where(s, name) << ": non-finite value " << value << " at flat index " << bad
     << " (b=" << b << ", a=" << a << ", y=" << y << ", x=" << xx << ", k=" << k
     << ") and checkFinite is set";
  throw_range(code::kNonFinite, os.str());
}

}  // namespace

const char* layout_name(Layout layout) { return name_of(kLayoutNames, layout); }

const char* layout_shape(Layout layout) {
  switch (layout) {
    case Layout::NCHW: return "[B, A*(5+C), H, W]";
    case Layout::NAHWC: return "[B, A, H, W, 5+C]";
    case Layout::NHWC: return "[B, H, W, A*(5+C)]";
  }
  return "?";
}

ScaleGeom make_geom(Layout layout, int64_t batch, int64_t anchors, int64_t height, int64_t width,
                    int64_t classes, Head head, int64_t reg_max) {
  ScaleGeom g;
  g.layout = layout;
  g.head = head;
  g.reg_max = reg_max;
  g.batch = batch;
  g.anchors = anchors;
  g.height = height;
  g.width = width;
  g.classes = classes;
  const int64_t K = g.per_anchor(), hw = height * width;
  switch (layout) {
    case Layout::NCHW:  // b, (a k), y, x
      g.stride_x = 1, g.stride_y = width, g.stride_k = hw, g.stride_a = K * hw, g.stride_b = anchors * K * hw;
      break;
    case Layout::NAHWC:  // b, a, y, x, k
      g.stride_k = 1, g.stride_x = K, g.stride_y = width * K, g.stride_a = hw * K, g.stride_b = anchors * hw * K;
      break;
    case Layout::NHWC:  // b, y, x, (a k)
      g.stride_k = 1, g.stride_a = K, g.stride_x = anchors * K, g.stride_y = width * anchors * K,
      g.stride_b = hw * anchors * K;
      break;
  }
  return g;
}

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    default: return c10::toString(t);
  }
}

// Options, scale counts, ranks, shapes, channels, dtypes and devices of the
// heads; returns the geometry of every scale.
std::vector<ScaleGeom> check_heads(const std::vector<at::Tensor>& student,
                                   const std::vector<at::Tensor>& teacher, const Options& opts) {
  validate_options(opts);
  if (student.empty()) {
    throw_range(code::kScaleCount, "expected at least one scale, got 0 student heads");
  }
  if (student.size() != teacher.size()) {
    throw_range(code::kScaleCount, "expected as many teacher heads as student heads (" +
                                       std::to_string(student.size()) + "), got " +
                                       std::to_string(teacher.size()));
  }
  std::vector<ScaleGeom> geoms;
  geoms.reserve(student.size());
  for (size_t s = 0; s < student.size(); ++s) {
    const ScaleGeom g = head_geom(student[s], s, "student", opts);
    head_geom(teacher[s], s, "teacher", opts);
    if (teacher[s].sizes() != student[s].sizes()) {
      throw_range(code::kShapeMismatch, where(s, "teacher") + ": expected the student's shape " +
                                            shape_str(student[s].sizes()) + ", got " +
                                            shape_str(teacher[s].sizes()));
    }
    // Student and teacher dtypes may differ (docs/DESIGN.md §1c: an fp16 teacher
    // from onnxruntime, an fp32 student): both are widened to fp32.
    if (teacher[s].device() != student[s].device()) {
      throw_type(code::kDeviceMismatch, where(s, "teacher") + ": expected the student's device " +
                                            student[s].device().str() + ", got " +
                                            teacher[s].device().str());
    }
    if (!student[s].device().is_cpu() && !student[s].device().is_cuda()) {
      throw_type(code::kDeviceMismatch, where(s, "student") + ": device " + student[s].device().str() +
                                            " is not supported (cpu or cuda)");
    }
    if (s > 0 && student[s].device() != student[0].device()) {
      throw_type(code::kDeviceMismatch, where(s, "student") + ": expected scale 0's device " +
                                            student[0].device().str() + ", got " +
                                            student[s].device().str());
    }
    geoms.push_back(g);
  }
  return geoms;
}

// The optional gradOut tensors: count, shape, dtype, device, overlaps.
void check_grad_out(const std::vector<at::Tensor>& student, const std::vector<at::Tensor>& teacher,
                    const std::vector<at::Tensor>& grad_out) {
  if (!grad_out.empty() && grad_out.size() != student.size()) {
    throw_range(code::kGradOut, "options.gradOut must have one entry per scale (" +
                                    std::to_string(student.size()) + "), got " +
                                    std::to_string(grad_out.size()));
  }
  for (size_t s = 0; s < grad_out.size(); ++s) {
    if (grad_out[s].defined()) {
      const at::Tensor& go = grad_out[s];
      if (go.sizes() != student[s].sizes()) {
        throw_range(code::kGradOut, where(s, "gradOut") + ": expected the student's shape " +
                                        shape_str(student[s].sizes()) + ", got " +
                                        shape_str(go.sizes()));
      }
      if (go.scalar_type() != student[s].scalar_type() || go.device() != student[s].device()) {
        throw_type(code::kGradOut, where(s, "gradOut") + ": expected dtype " +
                                       dtype_name(student[s].scalar_type()) + " on " +
                                       student[s].device().str() + ", got " +
                                       dtype_name(go.scalar_type()) + " on " + go.device().str());
      }
      for (size_t r = 0; r < student.size(); ++r) {
        if (overlaps(go, student[r]) || overlaps(go, teacher[r])) {
          throw_range(code::kBufferOverlap,
                      where(s, "gradOut") + ": its memory overlaps the " +
                          (overlaps(go, student[r]) ? "student" : "teacher") + " head of scale " +
                          std::to_string(r) + "; gradients need their own buffers");
        }
      }
      for (size_t r = 0; r < s; ++r) {
        if (grad_out[r].defined() && overlaps(go, grad_out[r])) {
          throw_range(code::kBufferOverlap, where(s, "gradOut") +
                                                ": its memory overlaps gradOut of scale " +
                                                std::to_string(r));
        }
      }
  }
  }
}

Plan make_plan(const std::vector<at::Tensor>& student, const std::vector<at::Tensor>& teacher,
               const Options& opts) {
  Plan plan;
  plan.geoms = check_heads(student, teacher, opts);
  plan.student = student;
  plan.teacher = teacher;
  plan.opts = opts;
  if (opts.head == Head::AnchorFree) plan.opts.num_anchors = 1;
  plan.threads = opts.threads > 0 ? static_cast<int>(opts.threads) : default_threads();
  // Where to compute: options.device, else where the heads are.
  plan.device = opts.device.empty() ? student[0].device() : resolve_device(opts.device, "options.device");
  plan.backend = opts.impl == Impl::Reference ? BackendId::Reference
                 : plan.device.is_cuda()      ? BackendId::CudaFused
                                              : BackendId::CpuFused;
  if (plan.backend == BackendId::CudaFused && !(cuda_compiled() && cuda_device_count() > 0)) {
    for (const BackendDesc& b : backends()) {  // (the CPU backends are always there)
      if (b.id == plan.backend) throw Error(ErrorKind::Generic, code::kNoCuda, "CUDA tensors given, but " + b.why);
    }
  }
  return plan;
}

void attach_grad_out(Plan& plan, const std::vector<at::Tensor>& grad_out) {
  check_grad_out(plan.student, plan.teacher, grad_out);
  plan.grad_out = grad_out;
}

namespace {

ElemType elem_type(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return ElemType::F16;
    case at::kBFloat16: return ElemType::BF16;
    default: return ElemType::F32;
  }
}

// One scale of cpu_loss: the heads contiguous (as they are when they already
// are), and the contiguous buffer the kernel writes the gradient into:
// gradOut itself when it is contiguous (attach_grad_out made it the student's
// dtype), else a new array of the student's dtype (copied into gradOut after).
struct CpuScaleIo {
  at::Tensor p, t, out, gw;
};

CpuScaleIo cpu_scale_io(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& out, bool grad) {
  CpuScaleIo io;
  io.p = student.contiguous();
  io.t = teacher.contiguous();
  io.out = out;
  if (grad) io.gw = out.defined() && out.is_contiguous() ? out : at::empty(io.p.sizes(), io.p.options());
  return io;
}

// The raw sums of one scale, its heads read in place in their dtypes
// (cpu_scale_mixed when either is 16-bit: no widened copies).
RawSums cpu_scale_raw(const CpuScaleIo& io, const ScaleGeom& g, const Options& opts, int threads) {
  if (io.p.scalar_type() == at::kFloat && io.t.scalar_type() == at::kFloat) {
    return cpu_scale(io.p.data_ptr<float>(), io.t.data_ptr<float>(), opts.grad ? io.gw.data_ptr<float>() : nullptr,
                     g, opts, threads);
  }
  MixedArrays a;
  a.p = io.p.data_ptr();
  a.p_type = elem_type(io.p.scalar_type());
  a.t = io.t.data_ptr();
  a.t_type = elem_type(io.t.scalar_type());
  if (opts.grad) {
    a.g = io.gw.data_ptr();
    a.g_type = elem_type(io.gw.scalar_type());
  }
  return cpu_scale_mixed(a, g, opts, threads);
}

// The fused CPU backend: per scale, the default kernel or the variant kernel;
// fp32 scales all at once (cpu_scales: one parallel region where every scale
// takes the default nchw kernel).
Result cpu_loss(const Plan& plan) {
  const std::vector<at::Tensor>& student = plan.student;
  const std::vector<at::Tensor>& teacher = plan.teacher;
  const std::vector<at::Tensor>& grad_out = plan.grad_out;
  const std::vector<ScaleGeom>& geoms = plan.geoms;
  const Options& opts = plan.opts;
  const int threads = plan.threads;
  const size_t S = student.size();
  bool all_fp32 = true;
  for (size_t s = 0; s < S; ++s) {
    all_fp32 = all_fp32 && student[s].scalar_type() == at::kFloat && teacher[s].scalar_type() == at::kFloat;
  }
  // Streaming gradient stores for a call with large gradient arrays (fused_cpu.h).
  int64_t grad_bytes = 0;
  for (size_t s = 0; s < S && opts.grad; ++s) {
    const at::Tensor& g = grad_out.empty() || !grad_out[s].defined() ? student[s] : grad_out[s];
    grad_bytes += student[s].numel() * static_cast<int64_t>(g.element_size());
  }
  const GradientStreaming streaming(grad_bytes);
  Result r;
  r.scales.reserve(S);
  auto finish = [&](const CpuScaleIo& io, const RawSums& raw, const ScaleGeom& g) {
    if (opts.grad) {
      if (io.out.defined() && !io.gw.is_same(io.out)) io.out.copy_(io.gw);
      r.grads.push_back(io.out.defined() ? io.out : io.gw);
    }
    const Terms terms = scale_terms(raw, g, opts.variant);
    r.scales.push_back(terms);
    r.total.box += terms.box;
    r.total.obj += terms.obj;
    r.total.cls += terms.cls;
  };
  auto out_of = [&](size_t s) { return grad_out.empty() ? at::Tensor() : grad_out[s]; };
  if (all_fp32 && S > 1) {
    std::vector<CpuScaleIo> io(S);
    std::vector<Fp32Scale> arrays(S);
    for (size_t s = 0; s < S; ++s) {
      io[s] = cpu_scale_io(student[s], teacher[s], out_of(s), opts.grad);
      arrays[s] = Fp32Scale{io[s].p.data_ptr<float>(), io[s].t.data_ptr<float>(),
                            opts.grad ? io[s].gw.data_ptr<float>() : nullptr, &geoms[s]};
    }
    const std::vector<RawSums> raw = cpu_scales(arrays, opts, threads);
    for (size_t s = 0; s < S; ++s) finish(io[s], raw[s], geoms[s]);
  } else {
    for (size_t s = 0; s < S; ++s) {
      const CpuScaleIo io = cpu_scale_io(student[s], teacher[s], out_of(s), opts.grad);
      finish(io, cpu_scale_raw(io, geoms[s], opts, threads), geoms[s]);
    }
  }
  r.loss = total_loss(opts.lambda, opts.w_box, opts.w_obj, opts.w_cls, r.total.box, r.total.obj,
                      r.total.cls);
  return r;
}

// The backend a plan names, on the plan's tensors (already on plan.device).
Result compute(const Plan& plan) {
  switch (plan.backend) {
    case BackendId::Reference:
      return reference_loss(plan.student, plan.teacher, plan.geoms, plan.opts, plan.grad_out);
    case BackendId::CudaFused:
#ifdef YD_WITH_CUDA
      return fused_cuda_loss(plan.student, plan.teacher, plan.geoms, plan.opts, plan.grad_out);
#else
      throw Error(ErrorKind::Generic, code::kNoCuda,
                  "CUDA tensors given, but this build of yolo-distill has no CUDA kernels");
#endif
    case BackendId::CpuFused:
      return cpu_loss(plan);
  }
  throw Error(ErrorKind::Generic, code::kInternal, "unknown backend");
}

}  // namespace

Result run(const Plan& plan) {
  if (plan.opts.check_finite) {
    for (size_t s = 0; s < plan.student.size(); ++s) {
      check_finite(plan.student[s], s, "student", plan.geoms[s]);
      check_finite(plan.teacher[s], s, "teacher", plan.geoms[s]);
    }
  }
  if (plan.device == plan.student[0].device()) return compute(plan);
  // options.device: copy the inputs there, compute, and copy the gradients
  // back (into the caller's gradOut buffers where given). Same plan, moved
  // tensors: nothing is checked again.
  Plan moved = plan;
  moved.grad_out.clear();
  for (size_t s = 0; s < plan.student.size(); ++s) {
    moved.student[s] = plan.student[s].to(plan.device);
    moved.teacher[s] = plan.teacher[s].to(plan.device);
  }
  Result r = compute(moved);
  for (size_t s = 0; s < r.grads.size(); ++s) {
    const at::Tensor home = r.grads[s].to(plan.student[s].device());
    if (!plan.grad_out.empty() && plan.grad_out[s].defined()) {
      plan.grad_out[s].copy_(home);
      r.grads[s] = plan.grad_out[s];
    } else {
      r.grads[s] = home;
    }
  }
  return r;
}

Result distillation_loss(const std::vector<at::Tensor>& student,
                         const std::vector<at::Tensor>& teacher, const Options& opts,
                         const std::vector<at::Tensor>& grad_out) {
  Plan plan = make_plan(student, teacher, opts);
  attach_grad_out(plan, grad_out);
  return run(plan);
}

std::vector<BackendDesc> backends() {
  std::vector<BackendDesc> list;
  list.push_back({BackendId::CpuFused, "cpu", "cpu", true, ""});
  BackendDesc cuda{BackendId::CudaFused, "cuda", "cuda", false, ""};
  if (!cuda_compiled()) {
    cuda.why = "this build of yolo-distill has no CUDA kernels (LibTorch " + libtorch_version() +
               " without CUDA)";
  } else if (cuda_device_count() == 0) {
    cuda.why = "no CUDA device is visible";
  } else {
    cuda.available = true;
  }
  list.push_back(cuda);
  list.push_back({BackendId::Reference, "reference", "cpu or cuda", true, ""});
  return list;
}

Options preset_options(Preset preset) {
  Options o;
  switch (preset) {
    case Preset::Yolov5:
      break;
    case Preset::Paper:
      o.lambda = 1.0;
      o.variant.box = BoxTarget::Paper;
      o.variant.obj = Target::Prob;
      o.variant.weighted_obj = false;
      o.variant.cls = Target::Prob;
      break;
  }
  return o;
}

int default_threads() {
  // Read once: hardware_concurrency() costs system calls (microseconds), and
  // this runs on every call that does not name a thread count.
  static const int threads = [] {
    if (const char* env = std::getenv("OMP_NUM_THREADS")) {
      const int n = std::atoi(env);
      if (n > 0) return n;
    }
    const unsigned hc = std::thread::hardware_concurrency();
    return hc > 0 ? static_cast<int>(hc) : 1;
  }();
  return threads;
}

std::string libtorch_version() {
#ifdef TORCH_VERSION
  return TORCH_VERSION;
#else
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
#endif
}

bool cuda_compiled() {
#ifdef YD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
  static const int count = [] {
    try {
      return static_cast<int>(at::detail::getCUDAHooks().getNumGPUs());
    } catch (...) {
      return 0;
    }
  }();
  return count;
}

at::Device resolve_device(const std::string& device, const std::string& what) {
  if (device == "cpu") return at::Device(at::kCPU);
  int index = -1;
  if (device == "cuda") {
    index = 0;
  } else if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() < 9 &&
             device.find_first_not_of("0123456789", 5) == std::string::npos) {
    index = std::stoi(device.substr(5));
  } else {
    throw_range(code::kInvalidOption,
                what + ": expected 'cpu', 'cuda' or 'cuda:N', got \"" + device + "\"");
  }
  if (!cuda_compiled()) {
    throw Error(ErrorKind::Generic, code::kNoCuda,
                what + ": \"" + device + "\" requested, but this build of yolo-distill uses a CPU-only LibTorch (" +
                    libtorch_version() + "); build it against a CUDA LibTorch to use the GPU");
  }
  const int count = cuda_device_count();
  if (count == 0) {
    throw Error(ErrorKind::Generic, code::kNoCuda,
                what + ": \"" + device + "\" requested, but no CUDA device is available");
  }
  if (index >= count) {
    throw Error(ErrorKind::Generic, code::kNoCuda,
                what + ": \"" + device + "\" requested, but only " + std::to_string(count) +
                    " CUDA device(s) are available");
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace yd
