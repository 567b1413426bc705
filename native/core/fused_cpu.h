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

// At most this many partial sums per scale, whatever the input size: work
// units (plane chunks or cell chunks) are grouped into at most kMaxBlocks
// consecutive blocks. The grouping depends on the geometry only, never on the
// thread count, and block partials are added in block order, so the result is
// bit-identical for any number of threads.
constexpr int64_t kMaxBlocks = 1024;

template <typename UnitFn>
RawSums reduce_units(int64_t units, int64_t values, int threads, const UnitFn& unit) {
  const int64_t per_block = (units + kMaxBlocks - 1) / kMaxBlocks;
  const int64_t blocks = (units + per_block - 1) / per_block;
  double partial[kMaxBlocks * 3];  // box, obj, cls per block; no zeroing needed
  const int64_t values_per_block = (values + blocks - 1) / blocks;
  run_blocks(blocks, threads, values_per_block, [&](int64_t first, int64_t last) {
    for (int64_t blk = first; blk < last; ++blk) {
      RawSums acc;
      const int64_t u1 = std::min(units, (blk + 1) * per_block);
      for (int64_t u = blk * per_block; u < u1; ++u) unit(u, acc);
      partial[blk * 3 + 0] = acc.box;
      partial[blk * 3 + 1] = acc.obj;
      partial[blk * 3 + 2] = acc.cls;
    }
  });
  RawSums sums;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    sums.box += partial[blk * 3 + 0];
    sums.obj += partial[blk * 3 + 1];
    sums.cls += partial[blk * 3 + 2];
  }
  return sums;
}

}  // namespace yd
