// Runs the fused CUDA kernels on LibTorch CUDA tensors (built only when the
// LibTorch found has CUDA: YD_WITH_CUDA).
#pragma once

#include <vector>

#include "loss.h"

namespace yd {

// Inputs from a plan (yd::make_plan), all on one CUDA device. Kernels run on the current LibTorch
// CUDA stream of that device; only the scalar sums are copied to the host.
Result fused_cuda_loss(const std::vector<at::Tensor>& student, const std::vector<at::Tensor>& teacher,
                       const std::vector<ScaleGeom>& geoms, const Options& opts,
                       const std::vector<at::Tensor>& grad_out);

}  // namespace yd
