// The fused CPU kernel: one pass over student and teacher per scale that
// accumulates the three weighted sums of squares and writes the gradient.
#pragma once

#include <cstdint>
#include <functional>

#include "cell_math.h"
#include "loss.h"

namespace yd {

// Raw (un-normalised) weighted sums of squares of one scale:
// box = sum_i w_i sum_{k<4} d^2, obj = sum_i w_i d_4^2, cls = sum_i w_i sum_{k>=5} d^2.
struct RawSums {
  double box = 0.0, obj = 0.0, cls = 0.0;
};

// p, t: contiguous fp32 student and teacher of one scale in geom's layout.
// g: contiguous fp32 gradient output of the same size, or nullptr for no gradient.
// The result is bit-identical for every thread count: the work is cut into
// blocks that do not depend on `threads`, and block partials are summed in order.
RawSums fused_scale_cpu(const float* p, const float* t, float* g, const ScaleGeom& geom,
                        const TermCoefs& coefs, int threads);

// Runs fn(first_block, end_block) over [0, blocks) on up to `threads` threads of
// LibTorch's intra-op pool (at::parallel_for), contiguous ranges per thread;
// fewer threads when there is too little work (values_per_block * blocks) to pay
// for waking them.
void run_blocks(int64_t blocks, int threads, int64_t values_per_block,
                const std::function<void(int64_t, int64_t)>& fn);

}  // namespace yd
