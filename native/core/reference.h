// The reference loss: docs/DESIGN.md §1 built step by step from LibTorch ops and
// differentiated by autograd. Slow, simple, and independent of the fused kernels.
#pragma once

#include <vector>

#include "loss.h"

namespace yd {

// Inputs come from a plan (yd::make_plan): checked, geoms per scale.
Result reference_loss(const std::vector<at::Tensor>& student, const std::vector<at::Tensor>& teacher,
                      const std::vector<ScaleGeom>& geoms, const Options& opts,
                      const std::vector<at::Tensor>& grad_out);

}  // namespace yd
