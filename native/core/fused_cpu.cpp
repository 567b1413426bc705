// Fused CPU kernel. See fused_cpu.h.
#include "fused_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace yd {

namespace {

// Cells per block in the nchw layout (one block never crosses a (b, a) plane).
// 1024 cells keep a block's working set (the teacher weights plus one chunk of
// each channel plane) in L1/L2 while the planes stream through.
constexpr int64_t kPlaneChunk = 8192;
// Cells per block in the nahwc layout (each cell's 5 + C values are contiguous).
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

// sum_j w_j * d_j^2 over n contiguous elements, with d = p - t, writing
// g_j = coef * w_j * d_j when kGrad.
template <bool kGrad>
inline double plane_chunk(const float* __restrict p, const float* __restrict t,
                          float* __restrict g, const float* __restrict w, int64_t n,
                          float coef) {
  double acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float d = diff(p[j + l], t[j + l]);
      acc[l] += weighted_sq(w[j + l], d);
      if (kGrad) g[j + l] = grad_value(coef, w[j + l], d);
    }
  }
  for (int l = 0; j < n; ++j, ++l) {
    const float d = diff(p[j], t[j]);
    acc[l] += weighted_sq(w[j], d);
    if (kGrad) g[j] = grad_value(coef, w[j], d);
  }
  return fold(acc);
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
      g[k] = grad_value(coef, w, d0);
      g[k + 1] = grad_value(coef, w, d1);
      g[k + 2] = grad_value(coef, w, d2);
      g[k + 3] = grad_value(coef, w, d3);
    }
  }
  for (; k < n; ++k) {
    const float d = diff(p[k], t[k]);
    s0 += static_cast<double>(d) * d;
    if (kGrad) g[k] = grad_value(coef, w, d);
  }
  return (s0 + s1) + (s2 + s3);
}

template <bool kGrad>
RawSums run_nchw(const float* p, const float* t, float* g, const ScaleGeom& geom,
                 const TermCoefs& coefs, int threads) {
  const int64_t hw = geom.height * geom.width;
  const int64_t per_anchor = geom.per_anchor();
  const int64_t chunks_per_plane = (hw + kPlaneChunk - 1) / kPlaneChunk;
  const int64_t planes = geom.batch * geom.anchors;  // (b, a) pairs
  const int64_t blocks = planes * chunks_per_plane;
  std::vector<double> partial(static_cast<size_t>(blocks) * 3);

  run_blocks(blocks, threads, [&](int64_t first, int64_t last) {
    float w[kPlaneChunk];
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t plane = blk / chunks_per_plane;
      const int64_t c0 = (blk % chunks_per_plane) * kPlaneChunk;
      const int64_t n = std::min(kPlaneChunk, hw - c0);
      const int64_t base = plane * per_anchor * hw + c0;  // channel 0 of this (b, a)
      const float* tobj = t + base + kObjChannel * hw;
      for (int64_t j = 0; j < n; ++j) w[j] = teacher_weight(tobj[j]);

      double box = 0.0, cls = 0.0;
      for (int64_t k = 0; k < kBoxChannels; ++k) {
        const int64_t off = base + k * hw;
        box += plane_chunk<kGrad>(p + off, t + off, kGrad ? g + off : nullptr, w, n, coefs.box);
      }
      const int64_t off4 = base + kObjChannel * hw;
      const double obj =
          plane_chunk<kGrad>(p + off4, t + off4, kGrad ? g + off4 : nullptr, w, n, coefs.obj);
      for (int64_t k = kClsOffset; k < per_anchor; ++k) {
        const int64_t off = base + k * hw;
        cls += plane_chunk<kGrad>(p + off, t + off, kGrad ? g + off : nullptr, w, n, coefs.cls);
      }
      partial[blk * 3 + 0] = box;
      partial[blk * 3 + 1] = obj;
      partial[blk * 3 + 2] = cls;
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

template <bool kGrad>
RawSums run_nahwc(const float* p, const float* t, float* g, const ScaleGeom& geom,
                  const TermCoefs& coefs, int threads) {
  const int64_t cells = geom.cells();
  const int64_t per_anchor = geom.per_anchor();
  const int64_t classes = geom.classes;
  const int64_t blocks = (cells + kCellChunk - 1) / kCellChunk;
  std::vector<double> partial(static_cast<size_t>(blocks) * 3);

  run_blocks(blocks, threads, [&](int64_t first, int64_t last) {
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t i0 = blk * kCellChunk;
      const int64_t i1 = std::min(cells, i0 + kCellChunk);
      double box = 0.0, obj = 0.0, cls = 0.0;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t off = i * per_anchor;
        const float* pc = p + off;
        const float* tc = t + off;
        float* gc = kGrad ? g + off : nullptr;
        const float w = teacher_weight(tc[kObjChannel]);
        box += static_cast<double>(w) * cell_run<kGrad>(pc, tc, gc, kBoxChannels, w, coefs.box);
        const float d4 = diff(pc[kObjChannel], tc[kObjChannel]);
        obj += weighted_sq(w, d4);
        if (kGrad) gc[kObjChannel] = grad_value(coefs.obj, w, d4);
        cls += static_cast<double>(w) * cell_run<kGrad>(pc + kClsOffset, tc + kClsOffset,
                                                        kGrad ? gc + kClsOffset : nullptr,
                                                        classes, w, coefs.cls);
      }
      partial[blk * 3 + 0] = box;
      partial[blk * 3 + 1] = obj;
      partial[blk * 3 + 2] = cls;
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

}  // namespace

void run_blocks(int64_t blocks, int threads, const std::function<void(int64_t, int64_t)>& fn) {
  if (blocks <= 0) return;
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
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
  if (geom.layout == Layout::NCHW) {
    return g ? run_nchw<true>(p, t, g, geom, coefs, threads)
             : run_nchw<false>(p, t, nullptr, geom, coefs, threads);
  }
  return g ? run_nahwc<true>(p, t, g, geom, coefs, threads)
           : run_nahwc<false>(p, t, nullptr, geom, coefs, threads);
}

void streaming_floor(const float* a, const float* b, float* out, int64_t n, int threads) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t blocks = (n + kChunk - 1) / kChunk;
  run_blocks(blocks, threads, [&](int64_t first, int64_t last) {
    const int64_t i0 = first * kChunk;
    const int64_t i1 = std::min(n, last * kChunk);
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] - b[i];
  });
}

}  // namespace yd
