// yolo-distill core: the objectness-scaled distillation loss as a function of
// LibTorch tensors. Plain C++17 on LibTorch; knows nothing of N-API.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cell_math.h"
#include "errors.h"

namespace yd {

// Memory layouts of a head (docs/DESIGN.md §1): nchw [B, A*(5+C), H, W],
// nahwc [B, A, H, W, 5+C], nhwc [B, H, W, A*(5+C)]. A scale's ScaleGeom turns
// its layout into strides; kernels read strides (and cell_major()), not names.
enum class Layout { NCHW, NAHWC, NHWC };
enum class Impl { Fused, Reference };
// Named sets of defaults (README "Loss variants"): yolov5 is docs/DESIGN.md §1;
// paper is Mehta & Ozturk 2018 as published. Rules: preset_options().
enum class Preset { Yolov5, Paper };
// Anchor heads (YOLOv3/v5/v7, YOLOX as A = 1): 5 + C values per anchor, with an
// objectness channel. Anchor-free heads (YOLOv8, YOLO11, YOLO26; docs/DESIGN.md
// §1b): 4 * regMax box-distribution logits then C class logits per cell.
enum class Head { Anchor, AnchorFree };

// Loss variants (README "Loss variants"). The defaults are docs/DESIGN.md §1.
// BoxTarget and Target (the term kinds) are in cell_math.h, which the CUDA
// kernels share.
struct Variant {
  BoxTarget box = BoxTarget::Logit;
  Target obj = Target::Logit;
  Target cls = Target::Logit;
  bool weighted_box = true, weighted_obj = true, weighted_cls = true;  // times w_i
  double temperature = 1.0;                                           // cls 'kl'
  bool fm_nms = false;                                                // feature-map NMS
  // Whether this is the default formula, which the fused default kernels
  // compute; every other combination goes to the variant kernels.
  bool is_default() const {
    return box == BoxTarget::Logit && obj == Target::Logit && cls == Target::Logit &&
           weighted_box && weighted_obj && weighted_cls && !fm_nms;
  }
};
// A new field of Variant must be read by is_default() above (else calls that
// set it would take the default kernels, which ignore it): this assertion
// fails when the struct changes, as a reminder to update is_default(), the
// kernels' dispatch and native/core/README.md.
static_assert(sizeof(Variant) == 32, "Variant changed: update is_default() and the kernel dispatch");

const char* layout_name(Layout layout);
// The layout's shape in the API's notation, e.g. "[B, A*(5+C), H, W]".
const char* layout_shape(Layout layout);
// The API's name of a dtype ("float32", "float16", "bfloat16"; LibTorch's otherwise).
const char* dtype_name(at::ScalarType t);

// Every option of a call, resolved (defaults and preset applied). The defaults
// of the API are the initialisers here and preset_options().
struct Options {
  int64_t num_classes = 0;  // C, required (>= 1)
  int64_t num_anchors = 3;  // A (anchor heads; an anchor-free head has 1)
  bool num_anchors_given = false;  // whether the caller set numAnchors
  Head head = Head::Anchor;
  int64_t reg_max = 16;            // anchor-free: bins per box side (1: direct values)
  double box_temperature = 10.0;   // anchor-free, regMax > 1: tau of the box KL
  Layout layout = Layout::NCHW;
  double lambda = 10.0;
  double w_box = 1.0, w_obj = 1.0, w_cls = 1.0;
  bool grad = true;
  double grad_scale = 1.0;
  bool check_finite = false;
  Impl impl = Impl::Fused;
  int64_t threads = 0;  // 0: default_threads()
  Variant variant;
  // Where to compute: "" (where the inputs are), "cpu", "cuda" or "cuda:N".
  // CPU inputs with a CUDA device are copied there, and gradients copied back.
  std::string device;
};

// The options a preset starts from (the caller's explicit options then
// override any of them): yolov5 = the defaults above; paper = boxTarget
// 'paper', objTarget 'prob' not weighted, clsTarget 'prob', lambda 1.
Options preset_options(Preset preset);

struct Terms {
  double box = 0.0, obj = 0.0, cls = 0.0;
};

struct Result {
  double loss = 0.0;
  Terms total;
  std::vector<Terms> scales;
  // One gradient per scale when Options::grad, same shape, dtype, device and
  // layout as the student; empty otherwise. Where the caller passed a grad_out
  // tensor for a scale, that very tensor is returned, filled.
  std::vector<at::Tensor> grads;
};

// The geometry of one scale, read off a validated student tensor: sizes, and
// the strides (in elements) of b, a, y, x and of the value index k.
struct ScaleGeom {
  int64_t batch = 0, anchors = 0, height = 0, width = 0, classes = 0;
  Layout layout = Layout::NCHW;
  Head head = Head::Anchor;
  int64_t reg_max = 0;  // anchor-free only
  int64_t stride_b = 0, stride_a = 0, stride_y = 0, stride_x = 0, stride_k = 0;
  int64_t cells() const { return batch * anchors * height * width; }
  // Values per anchor (anchor head, 5 + C) or per cell (anchor-free, 4R + C).
  int64_t per_anchor() const { return head == Head::AnchorFree ? 4 * reg_max + classes : 5 + classes; }
  int64_t numel() const { return cells() * per_anchor(); }
  // Each anchor's 5 + C values contiguous (nahwc, nhwc): the tensor is a run of
  // cells of 5 + C values each, in memory order.
  bool cell_major() const { return stride_k == 1; }
  int64_t offset(int64_t b, int64_t a, int64_t y, int64_t x, int64_t k) const {
    return b * stride_b + a * stride_a + y * stride_y + x * stride_x + k * stride_k;
  }
  // The index of cell (b, a, y, x) in the order the kernels visit cells: memory
  // order of the cells for cell-major layouts, (b, a, y, x) for nchw.
  int64_t cell_index(int64_t b, int64_t a, int64_t y, int64_t x) const {
    return cell_major() ? offset(b, a, y, x, 0) / per_anchor()
                        : ((b * anchors + a) * height + y) * width + x;
  }
};

// The strides of a layout for the given sizes (the one place that knows them).
ScaleGeom make_geom(Layout layout, int64_t batch, int64_t anchors, int64_t height, int64_t width,
                    int64_t classes, Head head = Head::Anchor, int64_t reg_max = 0);

// The backends that compute a plan, listed once: backendInfo() and device
// resolution read this list (native/core/README.md: adding a device).
enum class BackendId { CpuFused, CudaFused, Reference };
struct BackendDesc {
  BackendId id;
  const char* name;    // "cpu", "cuda", "reference"
  const char* device;  // where it computes
  bool available;      // built and usable on this machine
  std::string why;     // why not, when not
};
std::vector<BackendDesc> backends();

// A checked, ready-to-run call (docs/DESIGN.md §4): every check of a call runs
// once, in make_plan and attach_grad_out, with the coded errors of errors.h;
// run() and the backends take only a plan.
struct Plan {
  std::vector<at::Tensor> student, teacher;
  std::vector<at::Tensor> grad_out;  // empty, or one per scale (undefined: allocate)
  std::vector<ScaleGeom> geoms;      // per scale: sizes and strides
  Options opts;                      // resolved
  at::Device device = at::Device(at::kCPU);  // where the kernels run
  BackendId backend = BackendId::CpuFused;
  int threads = 1;                   // CPU threads
};

// Checks options, scale counts, ranks, shapes, channels, dtypes and devices
// (throws yd::Error naming the scale and tensor on the first problem).
Plan make_plan(const std::vector<at::Tensor>& student, const std::vector<at::Tensor>& teacher,
               const Options& opts);
// Checks and attaches the caller's gradient buffers (count, shape, dtype,
// device, overlaps).
void attach_grad_out(Plan& plan, const std::vector<at::Tensor>& grad_out);
// Computes loss, terms and (when opts.grad) gradients. checkFinite's data scan
// runs here (off the event loop for async calls).
Result run(const Plan& plan);

// make_plan + attach_grad_out + run.
Result distillation_loss(const std::vector<at::Tensor>& student,
                         const std::vector<at::Tensor>& teacher, const Options& opts,
                         const std::vector<at::Tensor>& grad_out = {});

// The thread count used when Options::threads is 0: OMP_NUM_THREADS if set
// (read once, at the first call), otherwise the hardware concurrency.
int default_threads();

// LibTorch's version string; whether this build has the CUDA kernels; how many
// CUDA devices LibTorch sees.
std::string libtorch_version();
bool cuda_compiled();
int cuda_device_count();

// Parses "cpu", "cuda" or "cuda:N" (what is the option's name, for messages).
// Throws ERR_INVALID_OPTION for a malformed string and ERR_NO_CUDA, saying
// why, when CUDA is asked of a CPU-only build, a machine without a device, or
// an index past the device count.
at::Device resolve_device(const std::string& device, const std::string& what);

// Benchmark floor: a streaming pass reading a and b and writing out
// (out = a - b, 12 bytes per value), parallel like the fused kernel.
void streaming_floor(const float* a, const float* b, float* out, int64_t n, int threads);
// The same for 2-byte values (out = a - b on uint16): the floor of a kernel on
// float16/bfloat16 arrays (6 bytes per value).
void streaming_floor16(const uint16_t* a, const uint16_t* b, uint16_t* out, int64_t n, int threads);

// Which forms of the CPU kernels this process runs, for tests and benchmarks
// (the same values either way): the KL's cells per group (16 with AVX-512, 8
// otherwise; YD_KL_LANES=8 or 16 overrides) and the streamed loops (2: those
// for AVX-512, 1: for AVX2 with FMA, 0: none), and whether the 8-cell KL
// groups gather their planes' lines first (-1: where the planes' stride asks
// for it, 0: never, 1: always; YD_KL_GATHER=0 or 1). fused_cpu.cpp, kl_lanes,
// stream_level and kl_gather_mode.
struct CpuKernelChoices {
  int kl_lanes;
  int stream_level;
  int kl_gather;
};
CpuKernelChoices cpu_kernel_choices();

}  // namespace yd
