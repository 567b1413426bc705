// Fused CUDA kernels for the objectness-scaled distillation loss: forward and
// gradient in one pass, fp32/fp16/bf16 inputs, fp32 math, double partial sums,
// deterministic (fixed grid for a given input, fixed-order reductions).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "cell_math.h"
#include "fused_cuda.h"

// kernel<<<grid, block, 0, stream>>>(args), written YD_LAUNCH(grid, block,
// stream, kernel)(args) so that the test emulation (test/cuda-emu/cuda_emu.h)
// can run the same source on the host.
#ifndef YD_LAUNCH
#define YD_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#endif

namespace yd {
namespace cuda {

namespace {

constexpr int kThreads = 256;
// The CUDA emulation of the tests (test/cuda-emu/) builds with a tiny grid so
// that the grid-stride and multi-tile loops really loop.
#ifndef YD_CUDA_MAX_GRID
#define YD_CUDA_MAX_GRID 2048
#endif
constexpr int64_t kMaxGrid = YD_CUDA_MAX_GRID;
constexpr int kTileCells = 32;  // nahwc: cells whose weights one block stages in shared memory

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// N consecutive values moved with one aligned load/store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Sums the three per-thread values over the block in a fixed tree order;
// thread 0 writes them to out[0..2].
__device__ void block_reduce3(double a, double b, double c, double* out) {
  __shared__ double sh[3][kThreads];
  sh[0][threadIdx.x] = a;
  sh[1][threadIdx.x] = b;
  sh[2][threadIdx.x] = c;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      sh[0][threadIdx.x] += sh[0][threadIdx.x + stride];
      sh[1][threadIdx.x] += sh[1][threadIdx.x + stride];
      sh[2][threadIdx.x] += sh[2][threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[0] = sh[0][0];
    out[1] = sh[1][0];
    out[2] = sh[2][0];
  }
}

// nchw: one work item = VEC consecutive cells of one (b, a) plane; the thread
// computes their teacher weights once and walks the 5 + C channel planes
// (coalesced across the warp: neighbouring threads read neighbouring cells).
template <typename T, int VEC, bool GRAD>
__global__ void __launch_bounds__(kThreads)
nchw_kernel(const T* __restrict__ p, const T* __restrict__ t, T* __restrict__ g, int64_t planes,
            int64_t hw, int per_anchor, TermCoefs coefs, double* __restrict__ partials) {
  const int64_t groups = hw / VEC;
  const int64_t items = planes * groups;
  double box = 0.0, obj = 0.0, cls = 0.0;
  for (int64_t it = blockIdx.x * int64_t{kThreads} + threadIdx.x; it < items;
       it += int64_t{gridDim.x} * kThreads) {
    const int64_t plane = it / groups;
    const int64_t base = plane * per_anchor * hw + (it - plane * groups) * VEC;
    float w[VEC];
    const Pack<T, VEC> tw = *reinterpret_cast<const Pack<T, VEC>*>(t + base + kObjChannel * hw);
#pragma unroll
    for (int v = 0; v < VEC; ++v) w[v] = teacher_weight(to_f(tw.v[v]));
    float sb = 0.f, so = 0.f, sc = 0.f;
    for (int k = 0; k < per_anchor; ++k) {
      const int64_t off = base + k * hw;
      const Pack<T, VEC> pv = *reinterpret_cast<const Pack<T, VEC>*>(p + off);
      const Pack<T, VEC> tv = *reinterpret_cast<const Pack<T, VEC>*>(t + off);
      const float coef = k < kBoxChannels ? coefs.box : (k == kObjChannel ? coefs.obj : coefs.cls);
      float s = 0.f;
      Pack<T, VEC> gv;
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const float d = diff(to_f(pv.v[v]), to_f(tv.v[v]));
        const float wd = weighted_diff(w[v], d);
        s = fmaf(wd, d, s);
        if (GRAD) gv.v[v] = from_f<T>(grad_value(coef, wd));
      }
      if (GRAD) *reinterpret_cast<Pack<T, VEC>*>(g + off) = gv;
      if (k < kBoxChannels) sb += s; else if (k == kObjChannel) so += s; else sc += s;
    }
    box += sb;
    obj += so;
    cls += sc;
  }
  block_reduce3(box, obj, cls, partials + 3 * int64_t{blockIdx.x});
}

// nahwc: a block takes kTileCells consecutive cells (kTileCells * (5 + C)
// contiguous values), stages their teacher weights in shared memory once, then
// its threads stride over the tile's values: coalesced loads and stores.
template <typename T, bool GRAD>
__global__ void __launch_bounds__(kThreads)
nahwc_kernel(const T* __restrict__ p, const T* __restrict__ t, T* __restrict__ g, int64_t cells,
             int per_anchor, TermCoefs coefs, double* __restrict__ partials) {
  __shared__ float w[kTileCells];
  const int64_t tiles = (cells + kTileCells - 1) / kTileCells;
  double box = 0.0, obj = 0.0, cls = 0.0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t c0 = tile * kTileCells;
    const int n_cells = static_cast<int>(min(int64_t{kTileCells}, cells - c0));
    __syncthreads();  // the previous tile's weights are no longer read
    if (threadIdx.x < n_cells) {
      w[threadIdx.x] = teacher_weight(to_f(t[(c0 + threadIdx.x) * per_anchor + kObjChannel]));
    }
    __syncthreads();
    const int n_values = n_cells * per_anchor;
    const int64_t off0 = c0 * per_anchor;
    float sb = 0.f, so = 0.f, sc = 0.f;
    for (int e = threadIdx.x; e < n_values; e += kThreads) {
      const int cell = e / per_anchor;
      const int k = e - cell * per_anchor;
      const float d = diff(to_f(p[off0 + e]), to_f(t[off0 + e]));
      const float wd = weighted_diff(w[cell], d);
      const float s = wd * d;
      const float coef = k < kBoxChannels ? coefs.box : (k == kObjChannel ? coefs.obj : coefs.cls);
      if (GRAD) g[off0 + e] = from_f<T>(grad_value(coef, wd));
      if (k < kBoxChannels) sb += s; else if (k == kObjChannel) so += s; else sc += s;
    }
    box += sb;
    obj += so;
    cls += sc;
  }
  block_reduce3(box, obj, cls, partials + 3 * int64_t{blockIdx.x});
}

// One block: thread i sums partials i, i + kThreads, ... in order, then a tree.
__global__ void __launch_bounds__(kThreads)
finish_kernel(const double* __restrict__ partials, int blocks, double* __restrict__ out) {
  double a = 0.0, b = 0.0, c = 0.0;
  for (int i = threadIdx.x; i < blocks; i += kThreads) {
    a += partials[3 * i];
    b += partials[3 * i + 1];
    c += partials[3 * i + 2];
  }
  block_reduce3(a, b, c, out);
}

// ---- loss variants --------------------------------------------------------

// FM-NMS, step 1: the teacher's class argmax per cell (first maximum).
template <typename T>
__global__ void argmax_kernel(const T* __restrict__ t, int64_t cells, int64_t hw, int per_anchor,
                              int classes, bool nchw, int* __restrict__ arg) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < cells; i += int64_t{gridDim.x} * kThreads) {
    const int64_t plane = i / hw, j = i - plane * hw;
    const int64_t base = nchw ? plane * per_anchor * hw + j : i * per_anchor;
    const int64_t step = nchw ? hw : 1;
    int best = 0;
    float bv = to_f(t[base + kClsOffset * step]);
    for (int c = 1; c < classes; ++c) {
      const float v = to_f(t[base + (kClsOffset + c) * step]);
      if (argmax_takes(v, bv)) {  // NaN counts as the largest, as in torch.argmax
        bv = v;
        best = c;
      }
    }
    arg[i] = best;
  }
}

// FM-NMS, step 2: keep (1) unless a 3x3 neighbour of the same plane has the same
// argmax and a higher objectness logit (ties: the earlier cell in row-major order).
template <typename T>
__global__ void keep_kernel(const T* __restrict__ t, const int* __restrict__ arg, int64_t cells,
                            int64_t H, int64_t W, int per_anchor, bool nchw, int64_t anchors, bool nhwc,
                            unsigned char* __restrict__ keep) {
  const int64_t hw = H * W;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < cells; i += int64_t{gridDim.x} * kThreads) {
    // Cell i in the order the kernels visit cells: (b, a, y, x) for nchw and
    // nahwc, (b, y, x, a) for nhwc. `at(jj)` maps a cell jj = y * W + x of the
    // same (b, a) plane to its index in that order.
    int64_t b, a, j;
    if (nhwc) {
      a = i % anchors;
      const int64_t byx = i / anchors;
      b = byx / hw;
      j = byx - b * hw;
    } else {
      const int64_t plane = i / hw;
      b = plane / anchors;
      a = plane - b * anchors;
      j = i - plane * hw;
    }
    const int64_t y = j / W, x = j - y * W;
    auto at = [&](int64_t jj) { return nhwc ? (b * hw + jj) * anchors + a : (b * anchors + a) * hw + jj; };
    auto obj = [&](int64_t jj) {
      return to_f(t[nchw ? ((b * anchors + a) * per_anchor + kObjChannel) * hw + jj
                         : at(jj) * per_anchor + kObjChannel]);
    };
    const bool suppressed = fm_nms_suppressed(
        y, x, H, W, [&](int64_t jj) { return arg[at(jj)]; }, obj);
    keep[i] = suppressed ? 0 : 1;
  }
}

// The log-softmax steps of cell_math.h in fp32, for the cells kl_cell leaves:
// differences spanning over kKlSpreadF32 (wide spans: tiny temperatures, huge logits) and
// NaN/Inf logits.
template <typename T>
__device__ __forceinline__ float kl_cell_logsoftmax(const T* __restrict__ p, const T* __restrict__ t, T* __restrict__ g,
                                         int64_t base, int64_t step, int k0, int n, float tau, float m, double coef) {
  float mp = -INFINITY, mq = -INFINITY;
  for (int c = 0; c < n; ++c) {
    const int64_t e = base + (k0 + c) * step;
    mp = fmaxf(mp, to_f(p[e]) / tau);
    mq = fmaxf(mq, to_f(t[e]) / tau);
  }
  float zp = 0.f, zq = 0.f;
  for (int c = 0; c < n; ++c) {
    const int64_t e = base + (k0 + c) * step;
    zp += expf(to_f(p[e]) / tau - mp);
    zq += expf(to_f(t[e]) / tau - mq);
  }
  // (x/tau - m) - log z, grouped as log_softmax does (see cell_math.h).
  const float lsp = logf(zp), lsq = logf(zq);
  float sum = 0.f;
  for (int c = 0; c < n; ++c) {
    const int64_t e = base + (k0 + c) * step;
    const float logp = kl_log_prob<float>(to_f(p[e]), tau, mp, lsp);
    const float logq = kl_log_prob<float>(to_f(t[e]), tau, mq, lsq);
    const float q = expf(logq);
    sum += kl_class_term(q, logq, logp);
    if (g) g[e] = from_f<T>(static_cast<float>(coef * static_cast<double>(kl_grad(m, tau, logp, q))));
  }
  return kl_cell_value(sum, tau);
}

// kl_taylor_cell's view of one cell: value c at base + (k0 + c) * step.
template <typename T>
struct KlCellView {
  const T* p_;
  const T* t_;
  T* g_;
  int64_t base, step;
  int k0;
  __device__ float p(int64_t c) const { return to_f(p_[base + (k0 + c) * step]); }
  __device__ float t(int64_t c) const { return to_f(t_[base + (k0 + c) * step]); }
  __device__ void put(int64_t c, double v) const { g_[base + (k0 + c) * step] = from_f<T>(static_cast<float>(v)); }
};

// tau^2 KL(softmax(T/tau) || softmax(P/tau)) of one cell over its n values
// k0 .. k0+n-1 (value k at base + k * step): the classes of clsTarget 'kl', or
// one side's bins of an anchor-free box. Writes g = coef * m * tau * (p - q)
// when g is not null; returns the value clamped at 0 and times tau^2. The
// centred steps of cell_math.h (those of the CPU kernel): d and the sums in
// double, the teacher weights and kl_gap in fp32, each value read three or
// four times instead of keeping n values per thread; kl_taylor_cell for spans
// under kKlTiny, the log-softmax steps for spans over kKlSpreadF32 or NaN/Inf.
template <typename T>
__device__ __forceinline__ float kl_cell(const T* __restrict__ p, const T* __restrict__ t, T* __restrict__ g,
                                         int64_t base, int64_t step, int k0, int n, float tau, float m, double coef) {
  float mt = -INFINITY, mp = -INFINITY;
  for (int c = 0; c < n; ++c) {
    const int64_t e = base + (k0 + c) * step;
    mt = fmaxf(mt, to_f(t[e]));
    mp = fmaxf(mp, to_f(p[e]));
  }
  const double inv_tau = 1.0 / static_cast<double>(tau);
  auto ts_of = [&](int64_t e) { return static_cast<double>(to_f(t[e])) - static_cast<double>(mt); };
  auto d_of = [&](int64_t e, double ts) {
    return (ts - (static_cast<double>(to_f(p[e])) - static_cast<double>(mp))) * inv_tau;
  };
  double s = 0.0, sd = 0.0, lo = INFINITY, hi = -INFINITY;
  for (int c = 0; c < n; ++c) {
    const int64_t e = base + (k0 + c) * step;
    const double ts = ts_of(e), d = d_of(e, ts);
    const double w = static_cast<double>(expf(static_cast<float>(ts * inv_tau)));
    s += w;
    sd += w * d;
    lo = fmin(lo, d);
    hi = fmax(hi, d);
  }
  // fmax/fmin drop NaN: a NaN or infinite logit shows in s or sd instead.
  const double span = hi - lo;
  if (!(span <= kKlSpreadF32) || !(fabs(sd) <= DBL_MAX) || !(s <= DBL_MAX)) {
    return kl_cell_logsoftmax(p, t, g, base, step, k0, n, tau, m, coef);
  }
  if (span <= kKlTiny) {
    const KlCellView<T> cell{p, t, g, base, step, k0};
    return static_cast<float>(kl_taylor_cell(cell, n, static_cast<double>(tau), 1.0, coef * static_cast<double>(m),
                                             g != nullptr));
  }
  const double mu = sd / s;
  double gs = 0.0, rs = 0.0;
  for (int c = 0; c < n; ++c) {
    const int64_t e = base + (k0 + c) * step;
    const double ts = ts_of(e);
    const float w = expf(static_cast<float>(ts * inv_tau));
    const float ec = static_cast<float>(d_of(e, ts) - mu);
    gs += static_cast<double>(w) * static_cast<double>(kl_gap(ec));
    rs += static_cast<double>(w) * static_cast<double>(ec);
  }
  const double inv_s = 1.0 / s, x = (gs - rs) * inv_s;
  if (g) {
    const double f = kl_centred_factor(coef * static_cast<double>(m), static_cast<double>(tau), inv_s, x);
    for (int c = 0; c < n; ++c) {
      const int64_t e = base + (k0 + c) * step;
      const double ts = ts_of(e);
      const float w = expf(static_cast<float>(ts * inv_tau));
      const float ec = static_cast<float>(d_of(e, ts) - mu);
      const float h = kl_gap(ec) - ec;
      g[e] = from_f<T>(static_cast<float>(f * static_cast<double>(w) * (static_cast<double>(h) - x)));
    }
  }
  return static_cast<float>(kl_centred_value(rs, x, inv_s, static_cast<double>(tau)));
}

// The variants: a thread per cell (values at base + k * step), fp32 math,
// double per-thread sums, block partials like the fused kernels. The term
// kinds are compile-time parameters (launch_variant_typed dispatches); FM-NMS
// is the keep map (null when off), weighting per term a flag.
template <typename T, BoxTarget kBox, Target kObj, Target kCls>
__global__ void __launch_bounds__(kThreads)
variant_kernel(const T* __restrict__ p, const T* __restrict__ t, T* __restrict__ g, int64_t cells,
               int64_t hw, int per_anchor, bool nchw, VariantParams v,
               const unsigned char* __restrict__ keep, double* __restrict__ partials) {
  const int classes = per_anchor - kClsOffset;
  const float tau = v.temperature;
  double box = 0.0, obj = 0.0, cls = 0.0;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < cells; i += int64_t{gridDim.x} * kThreads) {
    const int64_t plane = i / hw, j = i - plane * hw;
    const int64_t base = nchw ? plane * per_anchor * hw + j : i * per_anchor;
    const int64_t step = nchw ? hw : 1;
    const float kp = keep ? static_cast<float>(keep[i]) : 1.f;
    const float w = teacher_weight(to_f(t[base + kObjChannel * step]));
    const float mb = (v.weighted_box ? w : 1.f) * kp;
    const float mo = (v.weighted_obj ? w : 1.f) * kp;
    const float mc = (v.weighted_cls ? w : 1.f) * kp;
    float s = 0.f, sum = 0.f;
    for (int k = 0; k < kBoxChannels; ++k) {
      const int64_t e = base + k * step;
      const float d = variant_element<float>(kBox == BoxTarget::Paper && k < 2 ? kKindProb : kKindLogit, to_f(p[e]),
                                             to_f(t[e]), &s);
      sum += s;
      if (g) g[e] = from_f<T>(static_cast<float>(v.cb * static_cast<double>(mb * d)));
    }
    box += static_cast<double>(mb) * sum;
    {
      const int64_t e = base + kObjChannel * step;
      const float d = variant_element<float>(static_cast<int>(kObj), to_f(p[e]), to_f(t[e]), &s);
      obj += static_cast<double>(mo) * s;
      if (g) g[e] = from_f<T>(static_cast<float>(v.co * static_cast<double>(mo * d)));
    }
    sum = 0.f;
    if (kCls == Target::Kl) {
      sum = kl_cell(p, t, g, base, step, kClsOffset, classes, tau, mc, v.cc);
    } else {
      for (int c = 0; c < classes; ++c) {
        const int64_t e = base + (kClsOffset + c) * step;
        const float d = variant_element<float>(static_cast<int>(kCls), to_f(p[e]), to_f(t[e]), &s);
        sum += s;
        if (g) g[e] = from_f<T>(static_cast<float>(v.cc * static_cast<double>(mc * d)));
      }
    }
    cls += static_cast<double>(mc) * sum;
  }
  block_reduce3(box, obj, cls, partials + 3 * int64_t{blockIdx.x});
}

int64_t variant_grid(const ScaleLaunch& l) {
  const int64_t cells = l.batch * l.anchors * l.height * l.width;
  return std::max<int64_t>(1, std::min<int64_t>((cells + kThreads - 1) / kThreads, kMaxGrid));
}

// The variant kernel for the kinds of v: runtime kinds to compile-time
// parameters, a switch per kind with no default (a kind missing here does
// not build with -Werror=switch). objTarget 'kl' is refused by make_plan.
template <typename T, BoxTarget kBox, Target kObj>
void launch_cls(const VariantParams& v, int64_t grid, cudaStream_t stream, const T* p, const T* t, T* g,
                int64_t cells, int64_t hw, int per_anchor, bool nchw, const unsigned char* keep, double* partials) {
  switch (v.cls) {
    case Target::Logit:
      YD_LAUNCH(grid, kThreads, stream, variant_kernel<T, kBox, kObj, Target::Logit>)(p, t, g, cells, hw, per_anchor, nchw, v, keep, partials);
      return;
    case Target::Prob:
      YD_LAUNCH(grid, kThreads, stream, variant_kernel<T, kBox, kObj, Target::Prob>)(p, t, g, cells, hw, per_anchor, nchw, v, keep, partials);
      return;
    case Target::Bce:
      YD_LAUNCH(grid, kThreads, stream, variant_kernel<T, kBox, kObj, Target::Bce>)(p, t, g, cells, hw, per_anchor, nchw, v, keep, partials);
      return;
    case Target::Kl:
      YD_LAUNCH(grid, kThreads, stream, variant_kernel<T, kBox, kObj, Target::Kl>)(p, t, g, cells, hw, per_anchor, nchw, v, keep, partials);
      return;
  }
}

template <typename T, BoxTarget kBox>
void launch_obj(const VariantParams& v, int64_t grid, cudaStream_t stream, const T* p, const T* t, T* g,
                int64_t cells, int64_t hw, int per_anchor, bool nchw, const unsigned char* keep, double* partials) {
  switch (v.obj) {
    case Target::Logit: return launch_cls<T, kBox, Target::Logit>(v, grid, stream, p, t, g, cells, hw, per_anchor, nchw, keep, partials);
    case Target::Prob: return launch_cls<T, kBox, Target::Prob>(v, grid, stream, p, t, g, cells, hw, per_anchor, nchw, keep, partials);
    case Target::Bce: return launch_cls<T, kBox, Target::Bce>(v, grid, stream, p, t, g, cells, hw, per_anchor, nchw, keep, partials);
    case Target::Kl: return;  // unreachable: refused by make_plan
  }
}

template <typename T>
void launch_variant_typed(const ScaleLaunch& l, const VariantParams& v, char* ws, cudaStream_t stream) {
  const int64_t cells = l.batch * l.anchors * l.height * l.width;
  const int64_t hw = l.height * l.width;
  const int per_anchor = static_cast<int>(5 + l.classes);
  const int64_t grid = variant_grid(l);
  double* partials = reinterpret_cast<double*>(ws);
  unsigned char* keep = nullptr;
  const T* t = static_cast<const T*>(l.t);
  if (v.fm_nms) {
    int* arg = reinterpret_cast<int*>(ws + 3 * grid * sizeof(double));
    keep = reinterpret_cast<unsigned char*>(arg + cells);
    YD_LAUNCH(grid, kThreads, stream, argmax_kernel<T>)(t, cells, hw, per_anchor, static_cast<int>(l.classes), !l.nahwc, arg);
    YD_LAUNCH(grid, kThreads, stream, keep_kernel<T>)(t, arg, cells, l.height, l.width, per_anchor, !l.nahwc,
                                                      l.anchors, l.nhwc, keep);
  }
  const T* p = static_cast<const T*>(l.p);
  T* g = static_cast<T*>(l.g);
  switch (v.box) {
    case BoxTarget::Logit:
      return launch_obj<T, BoxTarget::Logit>(v, grid, stream, p, t, g, cells, hw, per_anchor, !l.nahwc, keep, partials);
    case BoxTarget::Paper:
      return launch_obj<T, BoxTarget::Paper>(v, grid, stream, p, t, g, cells, hw, per_anchor, !l.nahwc, keep, partials);
  }
}

// ---- anchor-free heads (docs/DESIGN.md §1b) ----
// A thread per cell (anchors == 1, so cell i = b * H * W + y * W + x in both
// nchw and nhwc): w = sigmoid(max_c T_c); the box term is per side the tau_b^2
// KL of the teacher's bin distribution against the student's (regMax > 1) or
// the squared difference of the 4 values (regMax 1); the class term of the
// kind kCls; no objectness term. Weights per term as the variant kernel;
// FM-NMS is the keep map (null when off). fp32 math, double per-thread sums,
// block partials. The CPU's anchor_free_scale (fused_cpu.cpp) is the same
// formula; test/cuda-emu.test.js holds them to each other.
template <typename T, Target kCls>
__global__ void __launch_bounds__(kThreads)
af_kernel(const T* __restrict__ p, const T* __restrict__ t, T* __restrict__ g, int64_t cells, int64_t hw,
          int per_cell, int reg_max, bool nchw, VariantParams v, const unsigned char* __restrict__ keep,
          double* __restrict__ partials) {
  const int c0 = 4 * reg_max, classes = per_cell - c0;
  double box = 0.0, cls = 0.0;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < cells; i += int64_t{gridDim.x} * kThreads) {
    const int64_t plane = i / hw, j = i - plane * hw;
    const int64_t base = nchw ? plane * per_cell * hw + j : i * per_cell;
    const int64_t step = nchw ? hw : 1;
    // w = max_c sigmoid(T_c) = sigmoid(max_c T_c); NaN propagates, as in torch.max.
    float best = to_f(t[base + c0 * step]);
    for (int c = 1; c < classes; ++c) {
      const float x = to_f(t[base + (c0 + c) * step]);
      if (argmax_takes(x, best)) best = x;
    }
    const float w = sigmoid_<float>(best);
    const float kp = keep ? static_cast<float>(keep[i]) : 1.f;
    const float mb = (v.weighted_box ? w : 1.f) * kp;
    const float mc = (v.weighted_cls ? w : 1.f) * kp;
    float s = 0.f, sum = 0.f;
    if (reg_max > 1) {
      for (int side = 0; side < 4; ++side) sum += kl_cell(p, t, g, base, step, side * reg_max, reg_max, v.box_temperature, mb, v.cb);
    } else {
      for (int k = 0; k < 4; ++k) {
        const int64_t e = base + k * step;
        const float d = variant_element<float>(kKindLogit, to_f(p[e]), to_f(t[e]), &s);
        sum += s;
        if (g) g[e] = from_f<T>(static_cast<float>(v.cb * static_cast<double>(mb * d)));
      }
    }
    box += static_cast<double>(mb) * sum;
    sum = 0.f;
    if (kCls == Target::Kl) {
      sum = kl_cell(p, t, g, base, step, c0, classes, v.temperature, mc, v.cc);
    } else {
      for (int c = 0; c < classes; ++c) {
        const int64_t e = base + (c0 + c) * step;
        const float d = variant_element<float>(static_cast<int>(kCls), to_f(p[e]), to_f(t[e]), &s);
        sum += s;
        if (g) g[e] = from_f<T>(static_cast<float>(v.cc * static_cast<double>(mc * d)));
      }
    }
    cls += static_cast<double>(mc) * sum;
  }
  block_reduce3(box, 0.0, cls, partials + 3 * int64_t{blockIdx.x});
}

// FM-NMS of an anchor-free scale, step 1: per cell the class argmax (torch's
// order: NaN first, then the first maximum) and the score w in double, as the
// CPU kernel compares them (anchor_free_keep, fused_cpu.cpp).
template <typename T>
__global__ void af_argmax_kernel(const T* __restrict__ t, int64_t cells, int64_t hw, int per_cell, int c0,
                                 bool nchw, int* __restrict__ arg, double* __restrict__ score) {
  const int classes = per_cell - c0;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < cells; i += int64_t{gridDim.x} * kThreads) {
    const int64_t plane = i / hw, j = i - plane * hw;
    const int64_t base = nchw ? plane * per_cell * hw + j : i * per_cell;
    const int64_t step = nchw ? hw : 1;
    float best = to_f(t[base + c0 * step]);
    int a = 0;
    for (int c = 1; c < classes; ++c) {
      const float x = to_f(t[base + (c0 + c) * step]);
      if (argmax_takes(x, best)) best = x, a = c;
    }
    arg[i] = a;
    score[i] = sigmoid_<double>(static_cast<double>(best));
  }
}

// Step 2: a cell is kept unless a 3x3 neighbour with the same argmax has a
// higher score (fm_nms_suppressed, cell_math.h).
__global__ void af_keep_kernel(const int* __restrict__ arg, const double* __restrict__ score, int64_t cells,
                               int64_t H, int64_t W, unsigned char* __restrict__ keep) {
  const int64_t hw = H * W;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < cells; i += int64_t{gridDim.x} * kThreads) {
    const int64_t b = i / hw, j = i - b * hw;
    const int* ab = arg + b * hw;
    const double* sb = score + b * hw;
    const bool suppressed = fm_nms_suppressed(
        j / W, j % W, H, W, [&](int64_t jj) { return ab[jj]; }, [&](int64_t jj) { return sb[jj]; });
    keep[i] = suppressed ? 0 : 1;
  }
}

int64_t af_cells(const ScaleLaunch& l) { return l.batch * l.height * l.width; }
int64_t af_grid(const ScaleLaunch& l) {
  return std::max<int64_t>(1, std::min<int64_t>((af_cells(l) + kThreads - 1) / kThreads, kMaxGrid));
}

template <typename T>
void launch_af_typed(const ScaleLaunch& l, const VariantParams& v, char* ws, cudaStream_t stream) {
  const int64_t cells = af_cells(l), hw = l.height * l.width, grid = af_grid(l);
  const int per_cell = static_cast<int>(4 * l.reg_max + l.classes), reg_max = static_cast<int>(l.reg_max);
  const bool nchw = !l.nahwc;
  double* partials = reinterpret_cast<double*>(ws);
  const T* p = static_cast<const T*>(l.p);
  const T* t = static_cast<const T*>(l.t);
  T* g = static_cast<T*>(l.g);
  unsigned char* keep = nullptr;
  if (v.fm_nms) {
    double* score = partials + 3 * grid;
    int* arg = reinterpret_cast<int*>(score + cells);
    keep = reinterpret_cast<unsigned char*>(arg + cells);
    YD_LAUNCH(grid, kThreads, stream, af_argmax_kernel<T>)(t, cells, hw, per_cell, 4 * reg_max, nchw, arg, score);
    YD_LAUNCH(grid, kThreads, stream, af_keep_kernel)(arg, score, cells, l.height, l.width, keep);
  }
  switch (v.cls) {
    case Target::Logit:
      YD_LAUNCH(grid, kThreads, stream, af_kernel<T, Target::Logit>)(p, t, g, cells, hw, per_cell, reg_max, nchw, v, keep, partials);
      return;
    case Target::Prob:
      YD_LAUNCH(grid, kThreads, stream, af_kernel<T, Target::Prob>)(p, t, g, cells, hw, per_cell, reg_max, nchw, v, keep, partials);
      return;
    case Target::Bce:
      YD_LAUNCH(grid, kThreads, stream, af_kernel<T, Target::Bce>)(p, t, g, cells, hw, per_cell, reg_max, nchw, v, keep, partials);
      return;
    case Target::Kl:
      YD_LAUNCH(grid, kThreads, stream, af_kernel<T, Target::Kl>)(p, t, g, cells, hw, per_cell, reg_max, nchw, v, keep, partials);
      return;
  }
}

// Bytes of device workspace an anchor-free launch needs (partials, and the
// FM-NMS score, argmax and keep maps when fm_nms).
int64_t af_workspace_bytes(const ScaleLaunch& l, const VariantParams& v) {
  const int64_t cells = af_cells(l);
  return 3 * af_grid(l) * static_cast<int64_t>(sizeof(double)) +
         (v.fm_nms ? cells * static_cast<int64_t>(sizeof(double) + sizeof(int) + 1) : 0);
}

int launch_af_scale(const ScaleLaunch& l, const VariantParams& v, void* d_workspace, double* d_sums,
                    void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  char* ws = static_cast<char*>(d_workspace);
  switch (l.dtype) {
    case DType::F32: launch_af_typed<float>(l, v, ws, stream); break;
    case DType::F16: launch_af_typed<__half>(l, v, ws, stream); break;
    case DType::BF16: launch_af_typed<__nv_bfloat16>(l, v, ws, stream); break;
  }
  YD_LAUNCH(1, kThreads, stream, finish_kernel)(reinterpret_cast<double*>(ws), static_cast<int>(af_grid(l)), d_sums);
  return static_cast<int>(cudaGetLastError());
}

bool aligned(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

constexpr int kVec = 4;
// Blocks below which an nchw scale uses 1-wide items (4x the threads) rather
// than 4-wide ones: enough to cover two waves of a 132-SM card. (The test
// emulation sets it to 1 so that small shapes take the 4-wide path too.)
#ifndef YD_CUDA_MIN_BLOCKS_FOR_VEC
#define YD_CUDA_MIN_BLOCKS_FOR_VEC 264
#endif
constexpr int64_t kMinBlocksForVec = YD_CUDA_MIN_BLOCKS_FOR_VEC;

// Whether an nchw launch reads 4 cells per thread (aligned, H*W a multiple of
// 4, and enough work to keep the card busy with 4x fewer threads).
bool use_vec(const ScaleLaunch& l, size_t elem) {
  const int64_t hw = l.height * l.width;
  const int64_t items = l.batch * l.anchors * (hw / kVec);
  return hw % kVec == 0 && aligned(l.p, elem * kVec) && aligned(l.t, elem * kVec) &&
         (!l.g || aligned(l.g, elem * kVec)) && (items + kThreads - 1) / kThreads >= kMinBlocksForVec;
}

size_t elem_size(const ScaleLaunch& l) { return l.dtype == DType::F32 ? 4 : 2; }

// The grid of a fused launch, sized by the work its blocks really do: nahwc
// tiles of kTileCells cells, nchw items of kVec or 1 cells per thread. A
// function of shape, dtype and alignment only: the same inputs always get the
// same grid, so the fixed-order reduction stays deterministic.
int64_t grid_for(const ScaleLaunch& l) {
  const int64_t cells = l.batch * l.anchors * l.height * l.width;
  int64_t blocks;
  if (l.nahwc) {
    blocks = (cells + kTileCells - 1) / kTileCells;
  } else {
    const int64_t items = use_vec(l, elem_size(l)) ? cells / kVec : cells;
    blocks = (items + kThreads - 1) / kThreads;
  }
  return std::max<int64_t>(1, std::min<int64_t>(blocks, kMaxGrid));
}

template <typename T, bool GRAD>
void launch_typed(const ScaleLaunch& l, double* ws, cudaStream_t stream) {
  const int64_t grid = grid_for(l);
  const T* p = static_cast<const T*>(l.p);
  const T* t = static_cast<const T*>(l.t);
  T* g = static_cast<T*>(l.g);
  const int per_anchor = static_cast<int>(5 + l.classes);
  if (l.nahwc) {
    const int64_t cells = l.batch * l.anchors * l.height * l.width;
    YD_LAUNCH(grid, kThreads, stream, nahwc_kernel<T, GRAD>)(p, t, g, cells, per_anchor, l.coefs, ws);
    return;
  }
  const int64_t hw = l.height * l.width;
  const int64_t planes = l.batch * l.anchors;
  if (use_vec(l, sizeof(T))) {
    YD_LAUNCH(grid, kThreads, stream, nchw_kernel<T, kVec, GRAD>)(p, t, g, planes, hw, per_anchor, l.coefs, ws);
  } else {
    YD_LAUNCH(grid, kThreads, stream, nchw_kernel<T, 1, GRAD>)(p, t, g, planes, hw, per_anchor, l.coefs, ws);
  }
}

template <typename T>
void launch_dtype(const ScaleLaunch& l, double* ws, cudaStream_t stream) {
  if (l.g) {
    launch_typed<T, true>(l, ws, stream);
  } else {
    launch_typed<T, false>(l, ws, stream);
  }
}

// Doubles of device workspace a fused default launch needs (per-block partials).
int64_t workspace_doubles(const ScaleLaunch& l) { return 3 * grid_for(l); }

// The default formula's fused kernel, then the one-block finish.
int launch_fused_scale(const ScaleLaunch& l, double* d_workspace, double* d_sums, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  switch (l.dtype) {
    case DType::F32: launch_dtype<float>(l, d_workspace, stream); break;
    case DType::F16: launch_dtype<__half>(l, d_workspace, stream); break;
    case DType::BF16: launch_dtype<__nv_bfloat16>(l, d_workspace, stream); break;
  }
  YD_LAUNCH(1, kThreads, stream, finish_kernel)(d_workspace, static_cast<int>(grid_for(l)), d_sums);
  return static_cast<int>(cudaGetLastError());
}

// Bytes of device workspace a variant launch needs (partials, and the FM-NMS
// argmax and keep maps when fm_nms).
int64_t variant_workspace_bytes(const ScaleLaunch& l, const VariantParams& v) {
  const int64_t cells = l.batch * l.anchors * l.height * l.width;
  return 3 * variant_grid(l) * static_cast<int64_t>(sizeof(double)) +
         (v.fm_nms ? cells * static_cast<int64_t>(sizeof(int) + 1) : 0);
}

// The variant kernel for the kinds of v (and FM-NMS's maps), then the finish.
int launch_variant_scale(const ScaleLaunch& l, const VariantParams& v, void* d_workspace, double* d_sums,
                         void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  char* ws = static_cast<char*>(d_workspace);
  switch (l.dtype) {
    case DType::F32: launch_variant_typed<float>(l, v, ws, stream); break;
    case DType::F16: launch_variant_typed<__half>(l, v, ws, stream); break;
    case DType::BF16: launch_variant_typed<__nv_bfloat16>(l, v, ws, stream); break;
  }
  YD_LAUNCH(1, kThreads, stream, finish_kernel)(reinterpret_cast<double*>(ws), static_cast<int>(variant_grid(l)), d_sums);
  return static_cast<int>(cudaGetLastError());
}

bool default_formula(const VariantParams& v) {
  return v.box == BoxTarget::Logit && v.obj == Target::Logit && v.cls == Target::Logit && v.weighted_box &&
         v.weighted_obj && v.weighted_cls && !v.fm_nms && v.coefs_fit;
}

}  // namespace

int launch_scale(const ScaleLaunch& l, const VariantParams& v, void* d_workspace, double* d_sums, void* stream) {
  if (l.anchor_free) return launch_af_scale(l, v, d_workspace, d_sums, stream);
  return default_formula(v) ? launch_fused_scale(l, static_cast<double*>(d_workspace), d_sums, stream)
                            : launch_variant_scale(l, v, d_workspace, d_sums, stream);
}

int64_t scale_workspace_bytes(const ScaleLaunch& l, const VariantParams& v) {
  if (l.anchor_free) return af_workspace_bytes(l, v);
  return default_formula(v) ? workspace_doubles(l) * static_cast<int64_t>(sizeof(double))
                            : variant_workspace_bytes(l, v);
}

const char* error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // namespace cuda
}  // namespace yd
