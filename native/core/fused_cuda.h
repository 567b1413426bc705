// The fused CUDA kernels' host interface. Plain C++ with no LibTorch and no CUDA
// headers, so the .cu file compiles with nvcc alone (CI does that on machines
// without a GPU) and the dispatch code needs no CUDA types.
#pragma once

#include <cstdint>

#include "cell_math.h"

namespace yd {
namespace cuda {

enum class DType { F32, F16, BF16 };

struct ScaleLaunch {
  const void* p = nullptr;  // student, contiguous, in the layout below
  const void* t = nullptr;  // teacher, same shape and dtype
  void* g = nullptr;        // gradient output of the same dtype, or nullptr for none
  int64_t batch = 0, anchors = 0, height = 0, width = 0, classes = 0;
  // Cell-major (nahwc or nhwc: each anchor's 5 + C values contiguous, cells in
  // memory order); nhwc additionally has the anchors innermost, which only the
  // FM-NMS neighbourhood needs to know.
  bool nahwc = false;
  bool nhwc = false;
  // An anchor-free head (docs/DESIGN.md §1b): anchors == 1, per cell 4 * reg_max
  // box-bin logits then `classes` class logits, no objectness channel.
  bool anchor_free = false;
  int64_t reg_max = 0;
  TermCoefs coefs{};
  DType dtype = DType::F32;
};

// Loss variants (README "Loss variants") for the CUDA variant kernel.
// Coefficients are variant_coefs() of cell_math.h.
struct VariantParams {
  // Compile-time parameters of the variant kernel (fused_cuda.cu dispatches).
  BoxTarget box = BoxTarget::Logit;
  Target obj = Target::Logit, cls = Target::Logit;
  int weighted_box = 1, weighted_obj = 1, weighted_cls = 1;
  int fm_nms = 0;
  float temperature = 1.0f;
  float box_temperature = 10.0f;  // anchor-free heads: the box distributions' temperature
  double cb = 0.0, co = 0.0, cc = 0.0;
  bool coefs_fit = true;  // ScaleLaunch::coefs represent the coefficients in fp32
};

// The one entry of a scale: the kernel template's instantiation for the kinds
// of v (fused_cuda.cu). For the default formula (every term 'logit' and
// weighted, no FM-NMS, coefficients that fit fp32) that is the fused default
// kernels; for an anchor-free head the anchor-free kernel; otherwise the
// variant kernel. Each is followed by a one-block,
// fixed-order reduction of its per-block partials, on `stream` (a
// cudaStream_t); no atomics: repeated launches give bit-identical results.
// Raw sums (box, obj, cls) to d_sums[0..2], before their normalisers
// (scale_terms). Returns a cudaError_t.
int launch_scale(const ScaleLaunch& l, const VariantParams& v, void* d_workspace, double* d_sums,
                 void* stream);
// Bytes of device workspace launch_scale needs.
int64_t scale_workspace_bytes(const ScaleLaunch& l, const VariantParams& v);

// The CUDA runtime's message for an error code.
const char* error_string(int err);

}  // namespace cuda
}  // namespace yd
