// The CPU kernel: one pass over student and teacher per scale that accumulates
// the three term sums and writes the gradient.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cell_math.h"
#include "loss.h"

namespace yd {

// Raw (un-normalised) masked sums of one scale's element terms, e.g. for the
// default formula box = sum_i w_i sum_{k<4} d^2, obj = sum_i w_i d_4^2,
// cls = sum_i w_i sum_{k>=5} d^2.
struct RawSums {
  double box = 0.0, obj = 0.0, cls = 0.0;
};

// One scale through the CPU kernel (fused_cpu.cpp: one template whose
// compile-time parameters are the term kinds and FM-NMS; the default formula
// is its all-logit instantiation). p, t: contiguous fp32 student and teacher in
// geom's layout; g: contiguous fp32 gradient output of the same size, or
// nullptr for none. Returns the raw sums (see scale_terms). Bit-identical for
// every thread count: the work is cut into blocks that do not depend on
// `threads`, and block partials are summed in order.
RawSums cpu_scale(const float* p, const float* t, float* g, const ScaleGeom& geom, const Options& opts,
                  int threads);

// One fp32 scale of a call for cpu_scales: arrays as for cpu_scale.
struct Fp32Scale {
  const float* p;
  const float* t;
  float* g;  // nullptr for none
  const ScaleGeom* geom;
};

// cpu_scale on every scale of a call. Where every scale takes the default nchw
// kernel (the default formula, no FM-NMS), the work units of all scales run in
// one parallel region, each thread taking the next block when it is free,
// the largest blocks first: a one-image call has 3 planes per scale, which two
// threads split 2:1 scale by scale, the last scale on one thread only. The
// blocks are each scale's as cpu_scale cuts them and their partials are added
// in the same order: the same bits.
std::vector<RawSums> cpu_scales(const std::vector<Fp32Scale>& scales, const Options& opts, int threads);

// Element types the CPU kernel reads and writes in place.
enum class ElemType { F32, F16, BF16 };
struct MixedArrays {
  const void* p = nullptr;  // student
  ElemType p_type = ElemType::F32;
  const void* t = nullptr;  // teacher
  ElemType t_type = ElemType::F32;
  void* g = nullptr;  // gradient output, or nullptr for none
  ElemType g_type = ElemType::F32;
};

// cpu_scale for contiguous arrays of any element types (float16 and bfloat16
// heads, an fp16 teacher with an fp32 student, a 16-bit gradient), read and
// written in place: no widened copies in memory. Every gradient element is
// bit-identical to cpu_scale on the arrays widened to fp32 (the gradient
// rounded to nearest even); the default kernel's loss too, the variant
// kernels' loss within rounding (their units are smaller in nchw).
RawSums cpu_scale_mixed(const MixedArrays& arrays, const ScaleGeom& geom, const Options& opts, int threads);

// fm_nms_mask for a 16-bit (or mixed) teacher: each (b, a) plane widened into a
// per-thread buffer first (no widened copy of the whole head).
void fm_nms_mask_mixed(const MixedArrays& arrays, const ScaleGeom& geom, unsigned char* keep, int threads);

// The per-scale terms from cpu_scale's raw sums: box / (4 N), obj / N,
// cls / (C N), or cls / N for 'kl'.
Terms scale_terms(const RawSums& raw, const ScaleGeom& geom, const Variant& v);

// FM-NMS keep mask (1 keep, 0 suppressed) per cell of one scale, indexed by
// ScaleGeom::cell_index: a cell is suppressed when another cell of its 3x3
// neighbourhood (same image and anchor) has the same teacher class argmax and
// a higher teacher objectness logit, ties going to the earlier cell in
// row-major order.
void fm_nms_mask(const float* t, const ScaleGeom& geom, unsigned char* keep, int threads);

// For one kernel call on the calling thread, while it lives: whether the
// kernels write gradients by streaming (non-temporal) stores, decided by the
// call's gradient bytes (a third of the L3 cache or more, on a CPU with
// AVX-512; the environment's YD_STREAM_STORES=0 or 1 overrides: tests,
// benchmarks). The same values either way; fused_cpu.cpp, "Streaming stores
// for the gradient".
class GradientStreaming {
 public:
  explicit GradientStreaming(int64_t grad_bytes);
  ~GradientStreaming();
  GradientStreaming(const GradientStreaming&) = delete;
  GradientStreaming& operator=(const GradientStreaming&) = delete;

 private:
  bool saved_;
};

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
