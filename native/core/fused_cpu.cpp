// Fused CPU kernel. See fused_cpu.h.
#include "fused_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace yd {

namespace {

// Cells per work unit in the nchw layout (a unit never crosses a (b, a) plane).
// Measured: the kernel is fastest when a unit spans a whole H*W plane, because
// then the 5 + C channel planes of one (b, a) are read as one contiguous run
// per array; shorter runs (1024..4096 cells) restart the hardware prefetcher
// per channel and were 1.5-2x slower on workload (a). 16384 cells (64 KB of
// teacher weights on the stack) covers grids up to 128x128 in one run.
constexpr int64_t kPlaneChunk = 16384;
// Cells per block in the cell-major layouts (nahwc, nhwc: each cell's 5 + C
// values are contiguous, and the cells tile the tensor in memory order).
constexpr int64_t kCellChunk = 256;

// The calling thread's OpenMP team size is per thread (libgomp keeps it in the
// thread's ICV), so set it once per calling thread and thread count.
void ensure_team_size(int threads) {
  thread_local int configured = 0;
  if (configured != threads) {
    at::set_num_threads(threads);
    configured = threads;
  }
}

// Independent double accumulators per run: enough to hide the add latency and
// let the compiler use full-width vectors. Folded in a fixed order.
constexpr int kLanes = 16;

inline double fold(const double* acc) {
  double s8[8];
  for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
  const double a = (s8[0] + s8[4]) + (s8[2] + s8[6]);
  const double b = (s8[1] + s8[5]) + (s8[3] + s8[7]);
  return a + b;
}

// Adds w_j * d_j^2 (d = p - t) over n contiguous elements into the kLanes
// accumulators acc[j % kLanes], writing g_j = coef * w_j * d_j when kGrad.
template <bool kGrad>
inline void plane_chunk(const float* __restrict p, const float* __restrict t,
                        float* __restrict g, const float* __restrict w, int64_t n, float coef,
                        double* __restrict lanes) {
  if (n < kLanes) {  // tiny planes (e.g. 2x2 grids): no lane copies
    for (int64_t j = 0; j < n; ++j) {
      const float d = diff(p[j], t[j]);
      const float wd = weighted_diff(w[j], d);
      lanes[j] += weighted_sq(wd, d);
      if (kGrad) g[j] = grad_value(coef, wd);
    }
    return;
  }
  double acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = lanes[l];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float d = diff(p[j + l], t[j + l]);
      const float wd = weighted_diff(w[j + l], d);
      acc[l] += weighted_sq(wd, d);
      if (kGrad) g[j + l] = grad_value(coef, wd);
    }
  }
  for (int l = 0; j < n; ++j, ++l) {
    const float d = diff(p[j], t[j]);
    const float wd = weighted_diff(w[j], d);
    acc[l] += weighted_sq(wd, d);
    if (kGrad) g[j] = grad_value(coef, wd);
  }
  for (int l = 0; l < kLanes; ++l) lanes[l] = acc[l];
}

// sum_k d_k^2 over n contiguous values of one cell, g_k = coef * w * d_k when kGrad.
template <bool kGrad>
inline double cell_run(const float* __restrict p, const float* __restrict t, float* __restrict g,
                       int64_t n, float w, float coef) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    const float d0 = diff(p[k], t[k]), d1 = diff(p[k + 1], t[k + 1]);
    const float d2 = diff(p[k + 2], t[k + 2]), d3 = diff(p[k + 3], t[k + 3]);
    s0 += static_cast<double>(d0) * d0;
    s1 += static_cast<double>(d1) * d1;
    s2 += static_cast<double>(d2) * d2;
    s3 += static_cast<double>(d3) * d3;
    if (kGrad) {
      g[k] = grad_value(coef, weighted_diff(w, d0));
      g[k + 1] = grad_value(coef, weighted_diff(w, d1));
      g[k + 2] = grad_value(coef, weighted_diff(w, d2));
      g[k + 3] = grad_value(coef, weighted_diff(w, d3));
    }
  }
  for (; k < n; ++k) {
    const float d = diff(p[k], t[k]);
    s0 += static_cast<double>(d) * d;
    if (kGrad) g[k] = grad_value(coef, weighted_diff(w, d));
  }
  return (s0 + s1) + (s2 + s3);
}

// One nchw work unit: (b, a) plane chunk [c0, c0 + n) of every channel.
// For a fixed (b, a) the 5 + C channel planes are consecutive: three
// contiguous streams (student, teacher, gradient) per unit.
template <bool kGrad>
__attribute__((always_inline)) inline void nchw_unit_body(const float* p, const float* t, float* g,
                                                          int64_t base, int64_t hw, int64_t n,
                                                          int64_t per_anchor, const TermCoefs& coefs,
                                                          RawSums& acc) {
  float w[kPlaneChunk];
  const float* tobj = t + base + kObjChannel * hw;
  for (int64_t j = 0; j < n; ++j) w[j] = teacher_weight(tobj[j]);
  double box[kLanes] = {}, obj[kLanes] = {}, cls[kLanes] = {};
  for (int64_t k = 0; k < per_anchor; ++k) {
    const int64_t off = base + k * hw;
    const float coef = k < kBoxChannels ? coefs.box : k == kObjChannel ? coefs.obj : coefs.cls;
    double* lanes = k < kBoxChannels ? box : k == kObjChannel ? obj : cls;
    plane_chunk<kGrad>(p + off, t + off, kGrad ? g + off : nullptr, w, n, coef, lanes);
  }
  acc.box += fold(box);
  acc.obj += fold(obj);
  acc.cls += fold(cls);
}

// The unit compiled for several instruction sets, chosen once at load time by
// the CPU's features (GCC function multiversioning). The baseline x86-64 build
// has only 2-wide double vectors, and on workload (a) with one thread the
// kernel was compute bound (1.8x the streaming floor). A given machine always
// runs the same clone, so results stay bit-identical run to run.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define YD_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define YD_MULTIVERSION
#endif

YD_MULTIVERSION void nchw_unit_grad(const float* p, const float* t, float* g, int64_t base,
                                    int64_t hw, int64_t n, int64_t per_anchor,
                                    const TermCoefs& coefs, RawSums& acc) {
  nchw_unit_body<true>(p, t, g, base, hw, n, per_anchor, coefs, acc);
}

YD_MULTIVERSION void nchw_unit_nograd(const float* p, const float* t, int64_t base, int64_t hw,
                                      int64_t n, int64_t per_anchor, const TermCoefs& coefs,
                                      RawSums& acc) {
  nchw_unit_body<false>(p, t, nullptr, base, hw, n, per_anchor, coefs, acc);
}

template <bool kGrad>
RawSums run_nchw(const float* p, const float* t, float* g, const ScaleGeom& geom,
                 const TermCoefs& coefs, int threads) {
  const int64_t hw = geom.height * geom.width;
  const int64_t per_anchor = geom.per_anchor();
  const int64_t chunks_per_plane = (hw + kPlaneChunk - 1) / kPlaneChunk;
  const int64_t units = geom.batch * geom.anchors * chunks_per_plane;  // (b, a, chunk)

  return reduce_units(units, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    const int64_t plane = unit / chunks_per_plane;  // (b, a)
    const int64_t c0 = (unit % chunks_per_plane) * kPlaneChunk;
    const int64_t n = std::min(kPlaneChunk, hw - c0);
    const int64_t base = plane * per_anchor * hw + c0;  // channel 0 of this (b, a)
    if (kGrad) {
      nchw_unit_grad(p, t, g, base, hw, n, per_anchor, coefs, acc);
    } else {
      nchw_unit_nograd(p, t, base, hw, n, per_anchor, coefs, acc);
    }
  });
}

template <bool kGrad>
RawSums run_cells(const float* p, const float* t, float* g, const ScaleGeom& geom,
                  const TermCoefs& coefs, int threads) {
  const int64_t cells = geom.cells();
  const int64_t per_anchor = geom.per_anchor();
  const int64_t classes = geom.classes;
  const int64_t units = (cells + kCellChunk - 1) / kCellChunk;

  return reduce_units(units, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    const int64_t i0 = unit * kCellChunk;
    const int64_t i1 = std::min(cells, i0 + kCellChunk);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t off = i * per_anchor;
      const float* pc = p + off;
      const float* tc = t + off;
      float* gc = kGrad ? g + off : nullptr;
      const float w = teacher_weight(tc[kObjChannel]);
      acc.box += static_cast<double>(w) * cell_run<kGrad>(pc, tc, gc, kBoxChannels, w, coefs.box);
      const float d4 = diff(pc[kObjChannel], tc[kObjChannel]);
      const float wd4 = weighted_diff(w, d4);
      acc.obj += weighted_sq(wd4, d4);
      if (kGrad) gc[kObjChannel] = grad_value(coefs.obj, wd4);
      acc.cls += static_cast<double>(w) * cell_run<kGrad>(pc + kClsOffset, tc + kClsOffset,
                                                         kGrad ? gc + kClsOffset : nullptr,
                                                         classes, w, coefs.cls);
    }
  });
}

}  // namespace

void run_blocks(int64_t blocks, int threads, int64_t values_per_block,
                const std::function<void(int64_t, int64_t)>& fn) {
  if (blocks <= 0) return;
  // Waking a thread team costs microseconds: give each task at least
  // kMinValuesPerTask values, so small calls stay on the calling thread.
  constexpr int64_t kMinValuesPerTask = int64_t{1} << 16;
  const int64_t by_work = std::max<int64_t>(1, blocks * values_per_block / kMinValuesPerTask);
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>({int64_t{threads}, blocks, by_work}));
  if (tasks == 1) {
    fn(0, blocks);
    return;
  }
  ensure_team_size(static_cast<int>(tasks));
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      fn(blocks * task / tasks, blocks * (task + 1) / tasks);
    }
  });
}

RawSums fused_scale_cpu(const float* p, const float* t, float* g, const ScaleGeom& geom,
                        const TermCoefs& coefs, int threads) {
  if (!geom.cell_major()) {
    return g ? run_nchw<true>(p, t, g, geom, coefs, threads)
             : run_nchw<false>(p, t, nullptr, geom, coefs, threads);
  }
  return g ? run_cells<true>(p, t, g, geom, coefs, threads)
           : run_cells<false>(p, t, nullptr, geom, coefs, threads);
}

void streaming_floor(const float* a, const float* b, float* out, int64_t n, int threads) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t blocks = (n + kChunk - 1) / kChunk;
  run_blocks(blocks, threads, kChunk, [&](int64_t first, int64_t last) {
    const int64_t i0 = first * kChunk;
    const int64_t i1 = std::min(n, last * kChunk);
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] - b[i];
  });
}

}  // namespace yd
