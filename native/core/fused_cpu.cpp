// The CPU kernel of the loss, one template for every formula. See fused_cpu.h.
#include "fused_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// A CPU feature as the kernels see it (every check of the CPU below goes
// through it): a build with YD_FORCE_AVX2 (CMakeLists.txt, -DYD_FORCE_ISA=
// x86-64-v3) sees no AVX-512 feature, one with YD_FORCE_BASELINE
// (-DYD_FORCE_ISA=x86-64) none at all, so that every kernel runs as on such a
// CPU (test/reliability/isa.sh).
constexpr bool cpu_feature_forced_off(const char* feature) {
#if defined(YD_FORCE_BASELINE)
  return feature != nullptr;
#elif defined(YD_FORCE_AVX2)
  const char* prefix = "avx512";
  for (; *prefix != 0; ++prefix, ++feature) {
    if (*feature != *prefix) return false;
  }
  return true;
#else
  return feature == nullptr;
#endif
}
#define YD_CPU_SUPPORTS(feature) (!cpu_feature_forced_off(feature) && __builtin_cpu_supports(feature))

// The upper halves of the vector registers cleared (vzeroupper) where the CPU
// has AVX. Code compiled for the baseline (SSE) that runs while they hold
// something is slowed down on every instruction (measured here, AMD Zen 5: the
// nahwc default kernel, a baseline loop, 2x its time after a call whose 'logit'
// runs left them dirty: a clone's path that called a baseline function and
// returned without vzeroupper). Every task of the kernels starts and ends with
// it (TaskScope, in run_blocks and cpu_scales), whatever code ran on that
// thread before.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx"), noinline)) void vzeroupper_avx() { _mm256_zeroupper(); }
void clean_upper_state() {
  static const bool avx = YD_CPU_SUPPORTS("avx");
  if (avx) vzeroupper_avx();
}
#else
void clean_upper_state() {}
#endif

// Independent double accumulators per run: enough to hide the add latency and
// let the compiler use full-width vectors. Folded in a fixed order. Inlined
// into the clones that use it (a call from a clone to a baseline function
// ran with the upper halves dirty).
constexpr int kLanes = 16;

__attribute__((always_inline)) inline double fold(const double* acc) {
  double s8[8];
  for (int l = 0; l < 8; ++l) s8[l] = acc[l] + acc[l + 8];
  const double a = (s8[0] + s8[4]) + (s8[2] + s8[6]);
  const double b = (s8[1] + s8[5]) + (s8[3] + s8[7]);
  return a + b;
}

// Streaming stores for the gradient. An ordinary store first reads the line
// it writes into the cache (a read for ownership), so a kernel that reads
// student and teacher and writes the gradient moves 16 bytes per value, not
// 12; non-temporal ("streaming") stores, which bypass the cache, move 12. They
// pay only for arrays too large to stay in cache, which the caller then reads
// from memory either way, and each task ends with an sfence (they are weakly
// ordered). A call streams when its gradient arrays hold at least a third of
// the L3 cache (student, teacher and gradient then cannot all stay there;
// stream_min_bytes) on a CPU with AVX-512 (a 64-byte line from one register)
// or with AVX2 and FMA (two 32-byte stores a line; stream_level);
// YD_STREAM_STORES=0 or 1 in the environment turns it off or on for
// every call (tests, benchmarks). Streamed: the default kernel's runs
// (plane_chunk_nt) and the variant kernels' 'logit' runs on fp32 nchw heads
// (logit_run_nt), and every 16-bit gradient as it is rounded from its fp32
// buffer (narrow_run). The same values either way
// (test/stream-stores.test.js); BENCHMARKS.md, "Streaming stores for the
// gradient".

// The L3 cache of the CPU the process started on, in bytes, from sysfs (one
// instance: glibc's sysconf(_SC_LEVEL3_CACHE_SIZE) read 384 MB on this
// project's 32 MB-L3 virtual machine, the sum over the host's dies); 32 MiB
// where sysfs does not say.
int64_t l3_cache_bytes() {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level(dir + "level"), size(dir + "size");
    int lv = 0;
    std::string sz;
    if (!(level >> lv) || lv != 3 || !(size >> sz) || sz.empty()) continue;
    char* end = nullptr;
    const double v = std::strtod(sz.c_str(), &end);
    const double unit = *end == 'K' ? 1024.0 : *end == 'M' ? 1048576.0 : *end == 'G' ? 1073741824.0 : 1.0;
    if (v > 0) return static_cast<int64_t>(v * unit);
  }
  return int64_t{32} << 20;
}
int64_t stream_min_bytes() {
  static const int64_t bytes = l3_cache_bytes() / 3;
  return bytes;
}
// Whether the calling thread's kernel call streams its gradient stores: set
// for the calling thread by GradientStreaming (fused_cpu.h; cpu_loss in
// loss.cpp, per call), handed to every task by run_blocks and cpu_scales
// (TaskScope).
thread_local bool t_stream = false;
// The run_blocks task the thread is running (TaskScope): task_index().
thread_local int64_t t_task = 0;
#if defined(__x86_64__) && defined(__GNUC__)
bool cpu_avx512f() {
  static const bool yes = YD_CPU_SUPPORTS("avx512f");
  return yes;
}
// Which streamed loops the CPU runs: 2 those for AVX-512, 1 those for AVX2
// with FMA (the same kinds: the default kernel's runs, the 'logit' runs and
// the 16-bit gradients' lines), 0 none.
int stream_level() {
  static const int level = cpu_avx512f()                                                      ? 2
                           : YD_CPU_SUPPORTS("avx2") && YD_CPU_SUPPORTS("fma") ? 1
                                                                                              : 0;
  return level;
}
#else
bool cpu_avx512f() { return false; }
int stream_level() { return 0; }
#endif
bool stream_cpu() { return stream_level() > 0; }
// For a call whose gradient arrays hold `bytes`: YD_STREAM_STORES=0 / 1
// (read once) or bytes >= stream_min_bytes(), on a CPU with AVX-512 or with
// AVX2 and FMA.
bool stream_gradients(int64_t bytes) {
  static const int forced = [] {
    const char* e = std::getenv("YD_STREAM_STORES");
    return e && (e[0] == '0' || e[0] == '1') && e[1] == 0 ? e[0] - '0' : -1;
  }();
  if (!stream_cpu() || bytes == 0) return false;
  return forced >= 0 ? forced == 1 : bytes >= stream_min_bytes();
}
#if defined(__x86_64__) && defined(__GNUC__)
inline void stream_fence() { _mm_sfence(); }
#else
inline void stream_fence() {}
#endif
// One task of a kernel call (run_blocks, cpu_scales): clean_upper_state at its
// start and end, the call's streaming setting (call_streaming() of the thread
// that made the tasks) for its duration, and an sfence at its end where it
// streamed (streaming stores are weakly ordered).
struct TaskScope {
  bool saved;
  int64_t saved_task;
  explicit TaskScope(bool stream, int64_t task = 0) : saved(t_stream), saved_task(t_task) {
    t_stream = stream;
    t_task = task;
    clean_upper_state();
  }
  ~TaskScope() {
    if (t_stream) stream_fence();
    t_stream = saved;
    t_task = saved_task;
    clean_upper_state();
  }
  TaskScope(const TaskScope&) = delete;
  TaskScope& operator=(const TaskScope&) = delete;
};
// Whether the unit being computed writes its gradient to a unit buffer that
// is read back (cell-major layouts, 16-bit heads: StreamUnit) rather than to
// the caller's array.
thread_local bool t_unit_buffer = false;
// Kernel stores into the gradient: streamed where the call streams and the
// unit writes the caller's array.
inline bool streaming() { return t_stream && !t_unit_buffer; }
// A float pointer on a 4-byte boundary, so that some value of its run starts
// a 64-byte line (typed arrays and LibTorch's allocations always are; the
// streamed loops rely on it).
inline bool floats_aligned(const float* g) { return (reinterpret_cast<uintptr_t>(g) & 3) == 0; }
// Whether the call streams (whatever the unit): what its tasks inherit, and
// what rounding to a 16-bit gradient (narrow_run), always into the caller's
// array, follows.
inline bool call_streaming() { return t_stream; }
// The index of the run_blocks task this thread is running (0 in a call of one
// task): task i takes the i-th of the contiguous block ranges.
inline int64_t task_index() { return t_task; }
// The values of a run at p (elements of `size` bytes, n of them) before its
// first 64-byte line boundary, at most n.
inline int64_t line_lead(const void* p, int64_t size, int64_t n) {
  return std::min<int64_t>(n, static_cast<int64_t>(((64 - (reinterpret_cast<uintptr_t>(p) & 63)) & 63)) / size);
}
// For one unit of a variant kernel: in_place, its gradient is written where it
// belongs (fp32 nchw heads), or else to a unit buffer (streaming() off).
struct StreamUnit {
  bool saved;
  explicit StreamUnit(bool in_place) : saved(t_unit_buffer) { t_unit_buffer = !in_place; }
  ~StreamUnit() { t_unit_buffer = saved; }
  StreamUnit(const StreamUnit&) = delete;
  StreamUnit& operator=(const StreamUnit&) = delete;
};

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's avx512fintrin.h warns that the undefined vector its
// _mm512_cvtps_pd and _mm512_extractf64x4_pd pass (for lanes they overwrite)
// "may be used uninitialized".
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The loop the streamed runs share: over n values whose gradient goes to g,
// one(i) for the values before g's first 64-byte line boundary and after its
// last (ordinary stores), block(j, lo, hi) for each 16 values from a line
// boundary on (a line by one streaming store), with lo and hi the kLanes
// double lanes (lanes[(j + l) % kLanes] for l = 0 .. 15, j the block's first
// value: the lane of every value as in the unstreamed loops).
template <typename One, typename Block>
__attribute__((target("avx512f"), always_inline)) inline void streamed_run(const float* g, int64_t n,
                                                                           double* __restrict lanes, One one,
                                                                           Block block) {
  const int64_t lead = line_lead(g, 4, n);
  int64_t j = 0;
  for (; j < lead; ++j) one(j);
  alignas(64) double r[16];
  for (int l = 0; l < 16; ++l) r[l] = lanes[(lead + l) & 15];
  __m512d lo = _mm512_load_pd(r), hi = _mm512_load_pd(r + 8);
  for (; j + 16 <= n; j += 16) block(j, lo, hi);
  _mm512_store_pd(r, lo);
  _mm512_store_pd(r + 8, hi);
  for (int l = 0; l < 16; ++l) lanes[(lead + l) & 15] = r[l];
  for (; j < n; ++j) one(j);
}
// The 16 floats of x as doubles, lanes 0-7 and 8-15.
__attribute__((target("avx512f"), always_inline)) inline __m512d low_pd(__m512 x) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(x));
}
__attribute__((target("avx512f"), always_inline)) inline __m512d high_pd(__m512 x) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
}

// plane_chunk<true>'s element steps on AVX-512 (those of its avx512f clone:
// the same operations and association, so the same bits), the gradient by
// streaming stores (streamed_run).
__attribute__((target("avx512f"), noinline)) void plane_chunk_nt512(const float* __restrict p, const float* __restrict t,
                                                                    float* __restrict g, const float* __restrict w,
                                                                    int64_t n, float coef, double* __restrict lanes) {
  const __m512 cf = _mm512_set1_ps(coef);
  streamed_run(
      g, n, lanes,
      [&](int64_t i) __attribute__((always_inline, target("avx512f"))) {
        const float d = p[i] - t[i];
        const float wd = w[i] * d;
        lanes[i & 15] = std::fma(static_cast<double>(wd), static_cast<double>(d), lanes[i & 15]);
        g[i] = coef * wd;
      },
      [&](int64_t j, __m512d& lo, __m512d& hi) __attribute__((always_inline, target("avx512f"))) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + j), _mm512_loadu_ps(t + j));
        const __m512 wd = _mm512_mul_ps(d, _mm512_loadu_ps(w + j));
        _mm512_stream_ps(g + j, _mm512_mul_ps(wd, cf));
        lo = _mm512_fmadd_pd(low_pd(wd), low_pd(d), lo);
        hi = _mm512_fmadd_pd(high_pd(wd), high_pd(d), hi);
      });
  _mm256_zeroupper();
}

// logit_run<true, true>'s steps (channel_run's 'logit' runs with a
// coefficient that fits fp32: d = P - T, m d^2 added in double to lane j %
// kLanes, g = (cf m) d) on AVX-512 with the operations and association of its
// x86-64-v4 clone (the same bits), the gradient by streaming stores
// (streamed_run). Returns the folded lanes, as logit_run.
__attribute__((target("avx512f"), noinline)) double logit_run_nt512(const float* __restrict p,
                                                                    const float* __restrict t, float* __restrict g,
                                                                    int64_t len, const float* __restrict m, float cf) {
  alignas(64) double acc[16] = {};
  const __m512 cfv = _mm512_set1_ps(cf);
  streamed_run(
      g, len, acc,
      [&](int64_t i) __attribute__((always_inline, target("avx512f"))) {
        const float d = p[i] - t[i];
        const double dd = static_cast<double>(d);
        acc[i & 15] = std::fma(static_cast<double>(m[i]), dd * dd, acc[i & 15]);
        g[i] = (cf * m[i]) * d;
      },
      [&](int64_t j, __m512d& lo, __m512d& hi) __attribute__((always_inline, target("avx512f"))) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p + j), _mm512_loadu_ps(t + j));
        const __m512 mv = _mm512_loadu_ps(m + j);
        _mm512_stream_ps(g + j, _mm512_mul_ps(_mm512_mul_ps(cfv, mv), d));
        lo = _mm512_fmadd_pd(low_pd(mv), _mm512_mul_pd(low_pd(d), low_pd(d)), lo);
        hi = _mm512_fmadd_pd(high_pd(mv), _mm512_mul_pd(high_pd(d), high_pd(d)), hi);
      });
  _mm256_zeroupper();
  return fold(acc);
}

// The same two loops for AVX2 CPUs (stream_level() 1), with four 4-double
// lane vectors, each mirroring the clone that such a CPU runs unstreamed:
// plane_chunk inside nchw_unit_grad's "avx2" clone (YD_MULTIVERSION: no FMA,
// so each product and sum rounded apart, and this function has no FMA to
// contract into; 4-float vectors, as plane_chunk256, a line four 16-byte
// streaming stores), and logit_run inside channel_run's x86-64-v3 clone
// (YD_CLONES: FMA, m d^2 added in one rounding; 8-float vectors, a line two
// 32-byte streaming stores). The same bits as those clones:
// test/reliability/isa.sh runs test/stream-stores.test.js on a build that
// takes the AVX2 paths on this AVX-512 machine.
// (A macro: the loop for target "avx2" and for "avx2,fma", whose callers'
// lambdas must inline into it.)
#define YD_STREAMED_RUN256(NAME, TARGET)                                                                   \
  template <typename One, typename Block>                                                                  \
  __attribute__((target(TARGET), always_inline)) inline void NAME(const float* g, int64_t n,               \
                                                                  double* __restrict lanes, One one,       \
                                                                  Block block) {                           \
    const int64_t lead = line_lead(g, 4, n);                                                               \
    int64_t j = 0;                                                                                         \
    for (; j < lead; ++j) one(j);                                                                          \
    alignas(32) double r[16];                                                                              \
    for (int l = 0; l < 16; ++l) r[l] = lanes[(lead + l) & 15];                                            \
    __m256d a[4] = {_mm256_load_pd(r), _mm256_load_pd(r + 4), _mm256_load_pd(r + 8), _mm256_load_pd(r + 12)}; \
    for (; j + 16 <= n; j += 16) block(j, a);                                                              \
    for (int q = 0; q < 4; ++q) _mm256_store_pd(r + 4 * q, a[q]);                                          \
    for (int l = 0; l < 16; ++l) lanes[(lead + l) & 15] = r[l];                                            \
    for (; j < n; ++j) one(j);                                                                             \
  }
YD_STREAMED_RUN256(streamed_run256, "avx2")
YD_STREAMED_RUN256(streamed_run256_fma, "avx2,fma")
#undef YD_STREAMED_RUN256
// The 8 floats of x as doubles, lanes 0-3 and 4-7.
__attribute__((target("avx2"), always_inline)) inline __m256d low_pd256(__m256 x) {
  return _mm256_cvtps_pd(_mm256_castps256_ps128(x));
}
__attribute__((target("avx2"), always_inline)) inline __m256d high_pd256(__m256 x) {
  return _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
}

// plane_chunk's element steps for the 4 values at j on AVX2, as its "avx2"
// clone computes them (d = p - t, w d in fp32; acc += (double)wd * (double)d,
// each product and sum rounded apart): returns w d, for the gradient. In
// 4-float vectors rather than 8: an 8-float vector's upper half reaches the
// double conversion through a vextractf128, and with the four conversions of
// every 8 values those cost the loop a sixth of its time on a Zen 3 core in
// cache (BENCHMARKS.md "Operations the hot loops did not need"); the
// operations and their order per value are the same.
__attribute__((target("avx2"), always_inline)) inline __m128 plane_quarter256(const float* p, const float* t,
                                                                              const float* w, int64_t j,
                                                                              __m256d& acc) {
  const __m128 d = _mm_sub_ps(_mm_loadu_ps(p + j), _mm_loadu_ps(t + j));
  const __m128 wd = _mm_mul_ps(d, _mm_loadu_ps(w + j));
  acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(wd), _mm256_cvtps_pd(d)));
  return wd;
}

__attribute__((target("avx2"), noinline)) void plane_chunk_nt256(const float* __restrict p, const float* __restrict t,
                                                                 float* __restrict g, const float* __restrict w,
                                                                 int64_t n, float coef, double* __restrict lanes) {
  const __m128 cf = _mm_set1_ps(coef);
  streamed_run256(
      g, n, lanes,
      [&](int64_t i) __attribute__((always_inline, target("avx2"))) {
        const float d = p[i] - t[i];
        const float wd = w[i] * d;
        const double sq = static_cast<double>(wd) * static_cast<double>(d);
        lanes[i & 15] += sq;
        g[i] = coef * wd;
      },
      [&](int64_t j, __m256d* a) __attribute__((always_inline, target("avx2"))) {
        for (int q = 0; q < 4; ++q) {
          _mm_stream_ps(g + j + 4 * q, _mm_mul_ps(plane_quarter256(p, t, w, j + 4 * q, a[q]), cf));
        }
      });
  _mm256_zeroupper();
}

// plane_chunk<kGrad>'s full blocks of kLanes values on the CPUs that run its
// "avx2" clone (plane_chunk dispatches here and finishes the values past the
// returned index itself), with ordinary stores: the same bits as that clone
// (test/reliability/isa.sh runs the suite on an x86-64-v3 build).
template <bool kGrad>
__attribute__((target("avx2"), noinline)) int64_t plane_chunk256(const float* __restrict p, const float* __restrict t,
                                                                float* __restrict g, const float* __restrict w,
                                                                int64_t n, float coef, double* __restrict lanes) {
  const __m128 cf = _mm_set1_ps(coef);
  __m256d a[4] = {_mm256_loadu_pd(lanes), _mm256_loadu_pd(lanes + 4), _mm256_loadu_pd(lanes + 8),
                  _mm256_loadu_pd(lanes + 12)};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int q = 0; q < 4; ++q) {
      const __m128 wd = plane_quarter256(p, t, w, j + 4 * q, a[q]);
      if (kGrad) _mm_storeu_ps(g + j + 4 * q, _mm_mul_ps(wd, cf));
    }
  }
  for (int q = 0; q < 4; ++q) _mm256_storeu_pd(lanes + 4 * q, a[q]);
  _mm256_zeroupper();
  return j;
}
__attribute__((target("avx2,fma"), noinline)) double logit_run_nt256(const float* __restrict p,
                                                                    const float* __restrict t, float* __restrict g,
                                                                    int64_t len, const float* __restrict m, float cf) {
  alignas(32) double acc[16] = {};
  const __m256 cfv = _mm256_set1_ps(cf);
  streamed_run256_fma(
      g, len, acc,
      [&](int64_t i) __attribute__((always_inline, target("avx2,fma"))) {
        const float d = p[i] - t[i];
        const double dd = static_cast<double>(d);
        acc[i & 15] = std::fma(static_cast<double>(m[i]), dd * dd, acc[i & 15]);
        g[i] = (cf * m[i]) * d;
      },
      [&](int64_t j, __m256d* a) __attribute__((always_inline, target("avx2,fma"))) {
        for (int h = 0; h < 2; ++h) {
          const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(p + j + 8 * h), _mm256_loadu_ps(t + j + 8 * h));
          const __m256 mv = _mm256_loadu_ps(m + j + 8 * h);
          _mm256_stream_ps(g + j + 8 * h, _mm256_mul_ps(_mm256_mul_ps(cfv, mv), d));
          a[2 * h] = _mm256_fmadd_pd(low_pd256(mv), _mm256_mul_pd(low_pd256(d), low_pd256(d)), a[2 * h]);
          a[2 * h + 1] = _mm256_fmadd_pd(high_pd256(mv), _mm256_mul_pd(high_pd256(d), high_pd256(d)), a[2 * h + 1]);
        }
      });
  _mm256_zeroupper();
  return fold(acc);
}
#pragma GCC diagnostic pop
// The streamed loops for this CPU (callers stream only where stream_level() > 0).
void plane_chunk_nt(const float* p, const float* t, float* g, const float* w, int64_t n, float coef, double* lanes) {
  if (stream_level() == 2) {
    plane_chunk_nt512(p, t, g, w, n, coef, lanes);
  } else {
    plane_chunk_nt256(p, t, g, w, n, coef, lanes);
  }
}
double logit_run_nt(const float* p, const float* t, float* g, int64_t len, const float* m, float cf) {
  return stream_level() == 2 ? logit_run_nt512(p, t, g, len, m, cf) : logit_run_nt256(p, t, g, len, m, cf);
}
// Whether this CPU runs the "avx2" clones of YD_MULTIVERSION (AVX2, no
// AVX-512F), whose plane_chunk goes to plane_chunk256.
bool avx2_clone_cpu() {
  static const bool yes = !cpu_avx512f() && YD_CPU_SUPPORTS("avx2");
  return yes;
}
#else
void plane_chunk_nt(const float*, const float*, float*, const float*, int64_t, float, double*) {}
double logit_run_nt(const float*, const float*, float*, int64_t, const float*, float) { return 0.0; }
bool avx2_clone_cpu() { return false; }
template <bool kGrad>
int64_t plane_chunk256(const float*, const float*, float*, const float*, int64_t, float, double*) { return 0; }
#endif

// Adds w_j * d_j^2 (d = p - t) over n contiguous elements into the kLanes
// accumulators acc[j % kLanes], writing g_j = coef * w_j * d_j when kGrad.
template <bool kGrad>
inline void plane_chunk(const float* __restrict p, const float* __restrict t,
                        float* __restrict g, const float* __restrict w, int64_t n, float coef,
                        double* __restrict lanes) {
  int64_t j = 0;
  if (n >= kLanes && avx2_clone_cpu()) {
    j = plane_chunk256<kGrad>(p, t, g, w, n, coef, lanes);
  } else if (n >= kLanes) {
    double acc[kLanes];
    for (int l = 0; l < kLanes; ++l) acc[l] = lanes[l];
    for (; j + kLanes <= n; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float d = diff(p[j + l], t[j + l]);
        const float wd = weighted_diff(w[j + l], d);
        acc[l] += weighted_sq(wd, d);
        if (kGrad) g[j + l] = grad_value(coef, wd);
      }
    }
    for (int l = 0; l < kLanes; ++l) lanes[l] = acc[l];
  }
  // The values past the last full block (all of a plane under kLanes values,
  // e.g. a 2x2 grid), lane l taking the l-th of them.
  for (int l = 0; j < n; ++j, ++l) {
    const float d = diff(p[j], t[j]);
    const float wd = weighted_diff(w[j], d);
    lanes[l] += weighted_sq(wd, d);
    if (kGrad) g[j] = grad_value(coef, wd);
  }
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

// Where the nchw body reads and writes a channel run of n values at element
// offset off: fp32 arrays in place (Fp32Runs, here); 16-bit or mixed arrays
// through per-thread fp32 buffers (MixedRuns, with cpu_scale_mixed below).
struct Fp32Runs {
  static constexpr bool kRegisters = false;     // plane_chunk on fp32 views
  static constexpr int64_t kRun = kPlaneChunk;  // the whole run in place
  const float* p;
  const float* t;
  float* g;
  const float* student(int64_t off, int64_t) const { return p + off; }
  const float* teacher(int64_t off, int64_t) const { return t + off; }
  float* grad(int64_t off) const { return g + off; }
  void grad_done(int64_t, int64_t) const {}
};

// Planes of fewer than kLanes cells (grids up to 3 x 5: the 2 x 2 heads of
// the tiny call, YOLOX-style 1 x 1 tails): the unit's channels in groups of 4
// cells, each group's three lane sums (box, obj, cls) kept in a vector
// register across the channels instead of loaded and stored per channel. The
// per-channel store-to-load round trip through the lanes had been most of
// the kernel's time on a 2 x 2 grid (BENCHMARKS.md "The tiny call on a Zen 3
// core"). Each cell's lane adds the same values in the same channel order as
// plane_chunk's small-plane loop, and every operation is element-wise (the
// product of two floats in double is exact, so contracting it into the add
// changes nothing): the same bits. A group's missing cells (n not a multiple
// of 4) read as 0 and are never stored.
using F4 = float __attribute__((vector_size(16)));
using D4 = double __attribute__((vector_size(32)));
template <bool kFull>
__attribute__((always_inline)) inline F4 load_cells(const float* x, int64_t m) {
  F4 v = {0.0f, 0.0f, 0.0f, 0.0f};
  if (kFull) {
    std::memcpy(&v, x, sizeof v);
  } else {
    for (int64_t j = 0; j < m; ++j) v[j] = x[j];
  }
  return v;
}
template <bool kFull>
__attribute__((always_inline)) inline void store_cells(float* x, F4 v, int64_t m) {
  if (kFull) {
    std::memcpy(x, &v, sizeof v);
  } else {
    for (int64_t j = 0; j < m; ++j) x[j] = v[j];
  }
}
template <bool kGrad, bool kFull>
__attribute__((always_inline)) inline void small_plane_group(const float* p, const float* t, float* g, const float* w,
                                                             int64_t hw, int64_t m, int64_t per_anchor,
                                                             const TermCoefs& coefs, double* box, double* obj,
                                                             double* cls) {
  const F4 wv = load_cells<kFull>(w, m);
  const auto channels = [&](int64_t k0, int64_t k1, float coef, double* lanes) __attribute__((always_inline)) {
    D4 a = {0.0, 0.0, 0.0, 0.0};
    for (int64_t j = 0; j < m; ++j) a[j] = lanes[j];
    for (int64_t k = k0; k < k1; ++k) {
      const F4 d = load_cells<kFull>(p + k * hw, m) - load_cells<kFull>(t + k * hw, m);  // diff
      const F4 wd = wv * d;                                                             // weighted_diff
      a += __builtin_convertvector(wd, D4) * __builtin_convertvector(d, D4);            // weighted_sq
      if (kGrad) store_cells<kFull>(g + k * hw, coef * wd, m);                          // grad_value
    }
    for (int64_t j = 0; j < m; ++j) lanes[j] = a[j];
  };
  channels(0, kBoxChannels, coefs.box, box);
  channels(kObjChannel, kObjChannel + 1, coefs.obj, obj);
  channels(kObjChannel + 1, per_anchor, coefs.cls, cls);
}
template <bool kGrad>
__attribute__((always_inline)) inline void small_plane_unit(const float* p, const float* t, float* g, const float* w,
                                                            int64_t hw, int64_t n, int64_t per_anchor,
                                                            const TermCoefs& coefs, double* box, double* obj,
                                                            double* cls) {
  for (int64_t j0 = 0; j0 < n; j0 += 4) {
    const int64_t m = std::min<int64_t>(4, n - j0);
    float* gj = kGrad ? g + j0 : nullptr;
    if (m == 4) {
      small_plane_group<kGrad, true>(p + j0, t + j0, gj, w + j0, hw, m, per_anchor, coefs, box + j0, obj + j0, cls + j0);
    } else {
      small_plane_group<kGrad, false>(p + j0, t + j0, gj, w + j0, hw, m, per_anchor, coefs, box + j0, obj + j0, cls + j0);
    }
  }
}

// One nchw work unit: (b, a) plane chunk [c0, c0 + n) of every channel.
// For a fixed (b, a) the 5 + C channel planes are consecutive: three
// contiguous streams (student, teacher, gradient) per unit. keep (FM-NMS, the
// unit's n cells; null without FM-NMS): a suppressed cell's weight is 0.
template <bool kGrad, typename Runs>
__attribute__((always_inline)) inline void nchw_unit_body(const Runs& runs, int64_t base, int64_t hw, int64_t n,
                                                          int64_t per_anchor, const TermCoefs& coefs,
                                                          const unsigned char* keep, RawSums& acc) {
  float w[kPlaneChunk];
  for (int64_t r0 = 0; r0 < n; r0 += Runs::kRun) {
    const int64_t m = std::min(Runs::kRun, n - r0);
    const float* tobj = runs.teacher(base + kObjChannel * hw + r0, m);
    for (int64_t j = 0; j < m; ++j) w[r0 + j] = teacher_weight(tobj[j]);
  }
  if (keep) {
    for (int64_t j = 0; j < n; ++j) w[j] = keep[j] ? w[j] : 0.0f;
  }
  double box[kLanes] = {}, obj[kLanes] = {}, cls[kLanes] = {};
  if constexpr (std::is_same_v<Runs, Fp32Runs>) {
    if (n < kLanes) {  // small planes (above); the same bits as the loop below
      small_plane_unit<kGrad>(runs.p + base, runs.t + base, kGrad ? runs.g + base : nullptr, w, hw, n, per_anchor,
                              coefs, box, obj, cls);
      acc.box += fold(box);
      acc.obj += fold(obj);
      acc.cls += fold(cls);
      return;
    }
  }
  for (int64_t k = 0; k < per_anchor; ++k) {
    const int64_t off = base + k * hw;
    const float coef = k < kBoxChannels ? coefs.box : k == kObjChannel ? coefs.obj : coefs.cls;
    double* lanes = k < kBoxChannels ? box : k == kObjChannel ? obj : cls;
    if constexpr (Runs::kRegisters) {  // the arrays as they are (RegsRuns below)
      runs.template plane<kGrad>(off, w, n, coef, lanes);
    } else {
      // Runs::kRun values at a time (lane j % kLanes of every value is the same
      // as in one pass over the n values: kRun is a multiple of kLanes).
      for (int64_t r0 = 0; r0 < n; r0 += Runs::kRun) {
        const int64_t m = std::min(Runs::kRun, n - r0);
        const float* pk = runs.student(off + r0, m);
        const float* tk = runs.teacher(off + r0, m);
        const bool stream = kGrad && std::is_same_v<Runs, Fp32Runs> && m >= kLanes && streaming();
        if (stream && floats_aligned(runs.grad(off + r0))) {
          plane_chunk_nt(pk, tk, runs.grad(off + r0), w + r0, m, coef, lanes);  // fp32 in place (Fp32Runs)
        } else {
          plane_chunk<kGrad>(pk, tk, kGrad ? runs.grad(off + r0) : nullptr, w + r0, m, coef, lanes);
        }
        if (kGrad) runs.grad_done(off + r0, m);
      }
    }
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
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(YD_FORCE_BASELINE)
#define YD_MULTIVERSION
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(YD_FORCE_AVX2)
#define YD_MULTIVERSION __attribute__((target("avx2")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define YD_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define YD_MULTIVERSION
#endif

YD_MULTIVERSION void nchw_unit_grad(const float* p, const float* t, float* g, int64_t base,
                                    int64_t hw, int64_t n, int64_t per_anchor,
                                    const TermCoefs& coefs, const unsigned char* keep, RawSums& acc) {
  nchw_unit_body<true>(Fp32Runs{p, t, g}, base, hw, n, per_anchor, coefs, keep, acc);
}

YD_MULTIVERSION void nchw_unit_nograd(const float* p, const float* t, int64_t base, int64_t hw,
                                      int64_t n, int64_t per_anchor, const TermCoefs& coefs,
                                      const unsigned char* keep, RawSums& acc) {
  nchw_unit_body<false>(Fp32Runs{p, t, nullptr}, base, hw, n, per_anchor, coefs, keep, acc);
}

// The nchw units of a scale of hw cells per plane: (b, a, chunk), each at
// most kPlaneChunk cells of one (b, a) plane (run_nchw, cpu_scales).
struct NchwUnits {
  int64_t hw, per_anchor, chunks_per_plane, count;
  explicit NchwUnits(const ScaleGeom& geom)
      : hw(geom.height * geom.width),
        per_anchor(geom.per_anchor()),
        chunks_per_plane((hw + kPlaneChunk - 1) / kPlaneChunk),
        count(geom.batch * geom.anchors * chunks_per_plane) {}
  // The default formula over unit u, added to acc (g null: no gradient).
  void run(const float* p, const float* t, float* g, int64_t u, const TermCoefs& coefs,
           const unsigned char* keep, RawSums& acc) const {
    const int64_t plane = u / chunks_per_plane;  // (b, a)
    const int64_t c0 = (u % chunks_per_plane) * kPlaneChunk;
    const int64_t n = std::min(kPlaneChunk, hw - c0);
    const int64_t base = plane * per_anchor * hw + c0;  // channel 0 of this (b, a)
    const unsigned char* k = keep ? keep + plane * hw + c0 : nullptr;  // cell index of (b, a, c0)
    if (g) {
      nchw_unit_grad(p, t, g, base, hw, n, per_anchor, coefs, k, acc);
    } else {
      nchw_unit_nograd(p, t, base, hw, n, per_anchor, coefs, k, acc);
    }
  }
};

template <bool kGrad>
RawSums run_nchw(const float* p, const float* t, float* g, const ScaleGeom& geom,
                 const TermCoefs& coefs, const unsigned char* keep, int threads) {
  const NchwUnits units(geom);
  return reduce_units(units.count, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    units.run(p, t, kGrad ? g : nullptr, unit, coefs, keep, acc);
  });
}

// The default formula over n contiguous cells (cell-major layouts): cell i's
// 5 + C values at p + i * per_anchor; keep (FM-NMS) indexed like the cells, or null.
template <bool kGrad>
inline void cells_body(const float* p, const float* t, float* g, int64_t n, int64_t per_anchor, int64_t classes,
                       const TermCoefs& coefs, const unsigned char* keep, RawSums& acc) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = i * per_anchor;
    const float* pc = p + off;
    const float* tc = t + off;
    float* gc = kGrad ? g + off : nullptr;
    const float w = keep && !keep[i] ? 0.0f : teacher_weight(tc[kObjChannel]);
    acc.box += static_cast<double>(w) * cell_run<kGrad>(pc, tc, gc, kBoxChannels, w, coefs.box);
    const float d4 = diff(pc[kObjChannel], tc[kObjChannel]);
    const float wd4 = weighted_diff(w, d4);
    acc.obj += weighted_sq(wd4, d4);
    if (kGrad) gc[kObjChannel] = grad_value(coefs.obj, wd4);
    acc.cls += static_cast<double>(w) * cell_run<kGrad>(pc + kClsOffset, tc + kClsOffset,
                                                       kGrad ? gc + kClsOffset : nullptr, classes, w, coefs.cls);
  }
}

template <bool kGrad>
RawSums run_cells(const float* p, const float* t, float* g, const ScaleGeom& geom,
                  const TermCoefs& coefs, const unsigned char* keep, int threads) {
  const int64_t cells = geom.cells();
  const int64_t per_anchor = geom.per_anchor();
  const int64_t classes = geom.classes;
  const int64_t units = (cells + kCellChunk - 1) / kCellChunk;

  return reduce_units(units, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    const int64_t i0 = unit * kCellChunk;
    const int64_t i1 = std::min(cells, i0 + kCellChunk);
    const int64_t off = i0 * per_anchor;
    cells_body<kGrad>(p + off, t + off, kGrad ? g + off : nullptr, i1 - i0, per_anchor, classes, coefs,
                      keep ? keep + i0 : nullptr, acc);
  });
}

// ---- 16-bit heads read and written in place (the default formula) ----
// Each unit's values are widened to fp32 in a per-thread buffer (in cache), the
// fp32 bodies above run on it, and the gradient is rounded to its dtype on the
// way out (round to nearest even, as at::Tensor::to). Memory sees 2 bytes per
// 16-bit value; the units, and so the sums, are the fp32 kernel's: results are
// bit-identical to widening the whole tensors first.

void widen_f16_soft(const uint16_t* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = c10::detail::fp16_ieee_to_fp32_value(s[i]);
}
void narrow_f16_soft(const float* s, uint16_t* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = c10::detail::fp16_ieee_from_fp32_value(s[i]);
}
void narrow_bf16_soft(const float* s, uint16_t* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = c10::detail::round_to_nearest_even(s[i]);
}
#if defined(__x86_64__) && defined(__GNUC__)
// F16C: 8 values per instruction, the same IEEE round to nearest even.
__attribute__((target("avx,f16c"))) void widen_f16_hw(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  }
  widen_f16_soft(s + i, d + i, n - i);
}
__attribute__((target("avx,f16c"))) void narrow_f16_hw(const float* s, uint16_t* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
  }
  narrow_f16_soft(s + i, d + i, n - i);
}
bool have_f16c() {
  static const bool yes = YD_CPU_SUPPORTS("f16c") && YD_CPU_SUPPORTS("avx");
  return yes;
}
// Each lane's bfloat16 bits in the low half of its 32 bits, rounded as
// c10::detail::round_to_nearest_even (bias 0x7FFF plus the kept half's lowest
// bit; NaN -> 0x7FC0): the same bits.
__attribute__((target("avx2"), always_inline)) inline __m256i bf16_rounded_avx2(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i bias =
      _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7FFF));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}
// bfloat16 gradient runs rounded on AVX2, 16 values a step, packed and
// stored: the baseline loop over c10's function (its NaN branch) took 4.9
// instructions a value, this 1.4 (callgrind); bfloat16 pairs through the
// variant and anchor-free kernels 0.92-0.99x their time (bench/mixed.js,
// BENCHMARKS.md). Widening stays the baseline loop, which GCC
// vectorizes with SSE2 unpacks: an AVX2 form (zero-extension and shift) made
// an fp32 student with a bfloat16 teacher 1.12-1.17x slower through the
// anchor-free kernel.
__attribute__((target("avx2"))) void narrow_bf16_avx2(const float* s, uint16_t* d, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i r0 = bf16_rounded_avx2(_mm256_loadu_ps(s + i));
    const __m256i r1 = bf16_rounded_avx2(_mm256_loadu_ps(s + i + 8));
    // packus joins the two within each 128-bit half: values 0-3, 8-11, 4-7, 12-15; the permute orders them
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                        _mm256_permute4x64_epi64(_mm256_packus_epi32(r0, r1), 0xD8));
  }
  narrow_bf16_soft(s + i, d + i, n - i);
}
bool have_avx2() {
  static const bool yes = YD_CPU_SUPPORTS("avx2");
  return yes;
}
#else
bool have_f16c() { return false; }
bool have_avx2() { return false; }
void widen_f16_hw(const uint16_t* s, float* d, int64_t n) { widen_f16_soft(s, d, n); }
void narrow_f16_hw(const float* s, uint16_t* d, int64_t n) { narrow_f16_soft(s, d, n); }
void narrow_bf16_avx2(const float* s, uint16_t* d, int64_t n) { narrow_bf16_soft(s, d, n); }
#endif

// n values of src (from element off) as fp32 into dst.
void widen_run(const void* src, ElemType e, int64_t off, int64_t n, float* dst) {
  switch (e) {
    case ElemType::F32:
      std::memcpy(dst, static_cast<const float*>(src) + off, static_cast<size_t>(n) * sizeof(float));
      return;
    case ElemType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + off;
      if (have_f16c()) widen_f16_hw(s, dst, n); else widen_f16_soft(s, dst, n);
      return;
    }
    case ElemType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + off;
      for (int64_t i = 0; i < n; ++i) {  // bfloat16 is the top half of a float32
        const uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
        std::memcpy(dst + i, &bits, sizeof bits);
      }
      return;
    }
  }
}

// n fp32 values of src into dst (from element off), rounded to its type.
void narrow_plain(const float* src, ElemType e, void* dst, int64_t off, int64_t n) {
  switch (e) {
    case ElemType::F32:
      std::memcpy(static_cast<float*>(dst) + off, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case ElemType::F16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + off;
      if (have_f16c()) narrow_f16_hw(src, d, n); else narrow_f16_soft(src, d, n);
      return;
    }
    case ElemType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + off;
      if (have_avx2()) narrow_bf16_avx2(src, d, n); else narrow_bf16_soft(src, d, n);
      return;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// bytes (a multiple of 64) from src to dst, dst 64-byte aligned, by streaming stores.
__attribute__((target("avx512f"), noinline)) void stream_lines512(void* dst, const void* src, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(static_cast<char*>(dst) + b),
                        _mm512_loadu_si512(static_cast<const char*>(src) + b));
  }
  _mm256_zeroupper();
}
// The same with two 32-byte streaming stores a line (AVX2 CPUs, stream_level() 1).
__attribute__((target("avx2"), noinline)) void stream_lines256(void* dst, const void* src, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 32) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(static_cast<char*>(dst) + b),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const char*>(src) + b)));
  }
  _mm256_zeroupper();
}
void stream_lines(void* dst, const void* src, int64_t bytes) {
  if (stream_level() == 2) {
    stream_lines512(dst, src, bytes);
  } else {
    stream_lines256(dst, src, bytes);
  }
}
#else
void stream_lines(void*, const void*, int64_t) {}
#endif

// narrow_plain, for the gradient arrays; a 16-bit run where the call streams
// its gradient (call_streaming): its whole 64-byte lines rounded 256 values at
// a time into a buffer in L1 and written by streaming stores, the values
// outside them by ordinary ones (the same rounding, so the same bits).
void narrow_run(const float* src, ElemType e, void* dst, int64_t off, int64_t n) {
  if (e == ElemType::F32 || n < 64 || !call_streaming()) {
    narrow_plain(src, e, dst, off, n);
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst) + off;
  if (reinterpret_cast<uintptr_t>(d) & 1) {  // not 2-byte aligned: no line boundary falls between values
    narrow_plain(src, e, dst, off, n);
    return;
  }
  const int64_t lead = line_lead(d, 2, n);
  narrow_plain(src, e, dst, off, lead);
  int64_t j = lead;
  alignas(64) uint16_t line[256];
  for (; j + 32 <= n;) {
    const int64_t m = std::min<int64_t>(256, (n - j) / 32 * 32);
    narrow_plain(src + j, e, line, 0, m);
    stream_lines(d + j, line, m * 2);
    j += m;
  }
  narrow_plain(src + j, e, dst, off + j, n - j);
}


// The nchw body's runs on 16-bit (or mixed) arrays: each run widened into a
// per-thread fp32 buffer, the gradient rounded to its type when done. The body,
// and so the math and its order, is the fp32 one.
struct MixedRuns {
  // Values widened at a time: three buffers of 4 KB stay in L1 (whole runs of
  // up to kPlaneChunk values went through L2: 2.26x the 2-byte floor).
  static constexpr bool kRegisters = false;
  static constexpr int64_t kRun = 1024;
  static_assert(kRun % kLanes == 0, "the lanes of a run are those of the whole run");
  const MixedArrays& a;
  float* bp;
  float* bt;
  float* bg;
  // fp32 arrays (of a mixed pair) are read and written in place.
  const float* student(int64_t off, int64_t n) const {
    if (a.p_type == ElemType::F32) return static_cast<const float*>(a.p) + off;
    widen_run(a.p, a.p_type, off, n, bp);
    return bp;
  }
  const float* teacher(int64_t off, int64_t n) const {
    if (a.t_type == ElemType::F32) return static_cast<const float*>(a.t) + off;
    widen_run(a.t, a.t_type, off, n, bt);
    return bt;
  }
  float* grad(int64_t off) const { return a.g_type == ElemType::F32 ? static_cast<float*>(a.g) + off : bg; }
  void grad_done(int64_t off, int64_t n) const {
    if (a.g_type != ElemType::F32) narrow_run(bg, a.g_type, a.g, off, n);
  }
};

MixedRuns mixed_runs(const MixedArrays& a) {
  thread_local std::vector<float> buf;
  constexpr int64_t r = MixedRuns::kRun;
  if (buf.size() < static_cast<size_t>(3 * r)) buf.resize(static_cast<size_t>(3 * r));
  return MixedRuns{a, buf.data(), buf.data() + r, buf.data() + 2 * r};
}

YD_MULTIVERSION void nchw_unit_mixed_grad(const MixedArrays& a, int64_t base, int64_t hw, int64_t n,
                                          int64_t per_anchor, const TermCoefs& coefs, const unsigned char* keep,
                                          RawSums& acc) {
  nchw_unit_body<true>(mixed_runs(a), base, hw, n, per_anchor, coefs, keep, acc);
}
YD_MULTIVERSION void nchw_unit_mixed_nograd(const MixedArrays& a, int64_t base, int64_t hw, int64_t n,
                                            int64_t per_anchor, const TermCoefs& coefs, const unsigned char* keep,
                                            RawSums& acc) {
  nchw_unit_body<false>(mixed_runs(a), base, hw, n, per_anchor, coefs, keep, acc);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define YD_F16_IN_REGISTERS 1
// float16 or bfloat16 student and teacher (the same type), or an fp32 student
// with an fp16 teacher (gradient of the student's type or none), under the
// default formula, nchw, on AVX-512F machines:
// plane_chunk written out with intrinsics, the values converted in registers
// instead of through buffers (float16: 2.19x its 2-byte floor buffered, 1.17x
// so). The arithmetic is the avx512f clone's of plane_chunk, as GCC compiles
// it: d = p - t and w * d in fp32, the lanes' sums as FMAs in double
// (acc += (double)wd * (double)d, 8 lanes per register), the gradient coef * wd
// rounded to nearest even; the tail (and planes under 16 cells) in scalar code
// with the same FMA. test/half.test.js checks every loss and gradient bit
// against widening first. Masked intrinsics with every lane set are the same
// instructions as the unmasked ones, without GCC 12's -Wmaybe-uninitialized on
// the latter's undefined sources.

// float16: vcvtph2ps / vcvtps2ph (round to nearest even), as at::Tensor::to.
struct F16Regs {
  using Elem = uint16_t;
  static constexpr ElemType kType = ElemType::F16;
  __attribute__((target("avx512f"))) static __m512 widen(const uint16_t* s) {
    return _mm512_mask_cvtph_ps(_mm512_setzero_ps(), 0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
  }
  __attribute__((target("avx512f"))) static void narrow(__m512 v, uint16_t* d) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d),
                        _mm512_mask_cvtps_ph(_mm256_setzero_si256(), 0xFFFF, v, _MM_FROUND_TO_NEAREST_INT));
  }
  static float value(uint16_t h) { return c10::detail::fp16_ieee_to_fp32_value(h); }
  static uint16_t bits(float f) { return c10::detail::fp16_ieee_from_fp32_value(f); }
};
// bfloat16: the top half of a float32; narrowed as c10::detail::
// round_to_nearest_even (bias 0x7FFF plus the kept half's lowest bit; NaN -> 0x7FC0).
struct Bf16Regs {
  using Elem = uint16_t;
  static constexpr ElemType kType = ElemType::BF16;
  __attribute__((target("avx512f"))) static __m512 widen(const uint16_t* s) {
    const __m512i u = _mm512_maskz_cvtepu16_epi32(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, u, 16));
  }
  __attribute__((target("avx512f"))) static void narrow(__m512 v, uint16_t* d) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i bias = _mm512_add_epi32(_mm512_and_si512(_mm512_maskz_srli_epi32(0xFFFF, u, 16), _mm512_set1_epi32(1)),
                                          _mm512_set1_epi32(0x7FFF));
    __m512i r = _mm512_maskz_srli_epi32(0xFFFF, _mm512_add_epi32(u, bias), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm512_mask_cvtepi32_epi16(_mm256_setzero_si256(), 0xFFFF, r));
  }
  static float value(uint16_t h) {
    const uint32_t b = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  }
  static uint16_t bits(float f) { return c10::detail::round_to_nearest_even(f); }
};

// float32 (the student of an fp16 teacher, the onnxruntime case): as it is.
struct F32Regs {
  using Elem = float;
  static constexpr ElemType kType = ElemType::F32;
  __attribute__((target("avx512f"))) static __m512 widen(const float* s) { return _mm512_loadu_ps(s); }
  __attribute__((target("avx512f"))) static void narrow(__m512 v, float* d) { _mm512_storeu_ps(d, v); }
  static float value(float f) { return f; }
  static float bits(float f) { return f; }
};

// Lanes 0-7 (kHalf 0) or 8-15 (kHalf 1) of a float vector as doubles.
template <int kHalf>
__attribute__((target("avx512f"))) inline __m512d widen_half(__m512 v) {
  const __m256d h = _mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, _mm512_castps_pd(v), kHalf);
  return _mm512_mask_cvtps_pd(_mm512_setzero_pd(), 0xFF, _mm256_castpd_ps(h));
}

// S: the student's (and gradient's) element type, T: the teacher's.
template <bool kGrad, typename S, typename T>
__attribute__((target("avx512f"))) inline void plane_chunk_16(const typename S::Elem* __restrict p,
                                                              const typename T::Elem* __restrict t,
                                                              typename S::Elem* __restrict g,
                                                              const float* __restrict w, int64_t n, float coef,
                                                              double* __restrict lanes) {
  int64_t j = 0;
  if (n >= kLanes) {
    __m512d lo = _mm512_loadu_pd(lanes), hi = _mm512_loadu_pd(lanes + 8);
    const __m512 vc = _mm512_set1_ps(coef);
    for (; j + kLanes <= n; j += kLanes) {
      const __m512 d = _mm512_sub_ps(S::widen(p + j), T::widen(t + j));
      const __m512 wd = _mm512_mul_ps(d, _mm512_loadu_ps(w + j));
      if (kGrad) S::narrow(_mm512_mul_ps(vc, wd), g + j);
      lo = _mm512_fmadd_pd(widen_half<0>(wd), widen_half<0>(d), lo);
      hi = _mm512_fmadd_pd(widen_half<1>(wd), widen_half<1>(d), hi);
    }
    _mm512_storeu_pd(lanes, lo);
    _mm512_storeu_pd(lanes + 8, hi);
  }
  for (int l = 0; j < n; ++j, ++l) {
    const float d = diff(S::value(p[j]), T::value(t[j]));
    const float wd = weighted_diff(w[j], d);
    lanes[l] = std::fma(static_cast<double>(wd), static_cast<double>(d), lanes[l]);
    if (kGrad) g[j] = S::bits(grad_value(coef, wd));
  }
}

// nchw_unit_body's runs for the register kernel: each channel's n values by
// plane_chunk_16 on the arrays themselves; the teacher's objectness (for the
// weights) widened kRun values at a time into a per-thread buffer. RegsArrays:
// what this AVX-512 form (RegsRuns) and the AVX2 one (RegsRuns256) share.
template <typename S, typename T>
struct RegsArrays {
  static constexpr bool kRegisters = true;
  static constexpr int64_t kRun = MixedRuns::kRun;
  const typename S::Elem* p;
  const typename T::Elem* t;
  typename S::Elem* g;
  float* bt;
  const float* teacher(int64_t off, int64_t n) const {
    widen_run(t, T::kType, off, n, bt);
    return bt;
  }
};
template <typename S, typename T>
struct RegsRuns : RegsArrays<S, T> {
  using RegsArrays<S, T>::p, RegsArrays<S, T>::t, RegsArrays<S, T>::g;
  template <bool kGrad>
  __attribute__((target("avx512f"))) void plane(int64_t off, const float* w, int64_t n, float coef,
                                                double* lanes) const {
    plane_chunk_16<kGrad, S, T>(p + off, t + off, kGrad ? g + off : nullptr, w, n, coef, lanes);
  }
};

template <bool kGrad, typename S, typename T>
__attribute__((target("avx512f"))) void nchw_unit_16(const MixedArrays& a, int64_t base, int64_t hw, int64_t n,
                                                     int64_t per_anchor, const TermCoefs& coefs,
                                                     const unsigned char* keep, RawSums& acc) {
  thread_local std::vector<float> bt(static_cast<size_t>(MixedRuns::kRun));
  using SE = typename S::Elem;
  const RegsRuns<S, T> runs{{static_cast<const SE*>(a.p), static_cast<const typename T::Elem*>(a.t),
                             static_cast<SE*>(a.g), bt.data()}};
  nchw_unit_body<kGrad>(runs, base, hw, n, per_anchor, coefs, keep, acc);
}

// The same register kernel for CPUs with AVX2 and F16C but no AVX-512 (most
// AMD EPYC before Zen 4): 8-float vectors, and the arithmetic of the "avx2"
// clone of plane_chunk that such a CPU runs on fp32 heads (nchw_unit_grad,
// YD_MULTIVERSION: no FMA, so each lane's product and sum rounded apart; these
// functions have no FMA to contract into), so the bits of widening first
// (test/half.test.js, on the x86-64-v3 build of test/reliability/isa.sh).
struct F16Regs256 {
  using Elem = uint16_t;
  static constexpr ElemType kType = ElemType::F16;
  __attribute__((target("avx2,f16c"))) static __m256 widen(const uint16_t* s) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
  }
  __attribute__((target("avx2,f16c"))) static void narrow(__m256 v, uint16_t* d) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static float value(uint16_t h) { return F16Regs::value(h); }
  static uint16_t bits(float f) { return F16Regs::bits(f); }
};
struct Bf16Regs256 {
  using Elem = uint16_t;
  static constexpr ElemType kType = ElemType::BF16;
  __attribute__((target("avx2,f16c"))) static __m256 widen(const uint16_t* s) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  // No narrow(): a bfloat16 gradient goes only with a bfloat16 pair, whose own
  // loop in plane_chunk_16_256 rounds two vectors at a time (bf16_rounded_avx2).
  static float value(uint16_t h) { return Bf16Regs::value(h); }
  static uint16_t bits(float f) { return Bf16Regs::bits(f); }
};
struct F32Regs256 {
  using Elem = float;
  static constexpr ElemType kType = ElemType::F32;
  __attribute__((target("avx2,f16c"))) static __m256 widen(const float* s) { return _mm256_loadu_ps(s); }
  __attribute__((target("avx2,f16c"))) static void narrow(__m256 v, float* d) { _mm256_storeu_ps(d, v); }
  static float value(float f) { return f; }
  static float bits(float f) { return f; }
};

template <bool kGrad, typename S, typename T>
__attribute__((target("avx2,f16c"))) inline void plane_chunk_16_256(const typename S::Elem* __restrict p,
                                                                    const typename T::Elem* __restrict t,
                                                                    typename S::Elem* __restrict g,
                                                                    const float* __restrict w, int64_t n,
                                                                    float coef, double* __restrict lanes) {
  int64_t j = 0;
  if (n >= kLanes) {
    __m256d a[4] = {_mm256_loadu_pd(lanes), _mm256_loadu_pd(lanes + 4), _mm256_loadu_pd(lanes + 8),
                    _mm256_loadu_pd(lanes + 12)};
    const __m256 vc = _mm256_set1_ps(coef);
    if constexpr (std::is_same_v<S, Bf16Regs256> && std::is_same_v<T, Bf16Regs256>) {
      // bfloat16 pairs, 16 values in the order of the in-lane unpacks: vector
      // h holds values 4h..4h+3 and 8+4h..8+4h+3, each widened by one unpack
      // with zero (its bits into the top half), the weights loaded in that
      // order, and each quarter summed into its own lanes as below; the two
      // gradient vectors' roundings pack (in-lane) back into the values' order,
      // one 32-byte store. The same operations on every value as the other
      // pairs' loop: the same bits (test/half.test.js). No cross-lane zero-extensions
      // or permutes: 5 % fewer instructions (callgrind), the bfloat16 pair
      // 0.89-0.90x its time (bench/half.js, BENCHMARKS.md).
      const __m256i zero = _mm256_setzero_si256();
      for (; j + kLanes <= n; j += kLanes) {
        const __m256i pv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j));
        const __m256i tv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + j));
        const __m256 ps[2] = {_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, pv)),
                              _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, pv))};
        const __m256 ts[2] = {_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, tv)),
                              _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, tv))};
        __m256i r[2];
        for (int h = 0; h < 2; ++h) {
          const __m256 d = _mm256_sub_ps(ps[h], ts[h]);
          const __m256 wv = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(w + j + 4 * h)),
                                                 _mm_loadu_ps(w + j + 8 + 4 * h), 1);
          const __m256 wd = _mm256_mul_ps(d, wv);
          if (kGrad) r[h] = bf16_rounded_avx2(_mm256_mul_ps(vc, wd));
          a[h] = _mm256_add_pd(a[h], _mm256_mul_pd(low_pd256(wd), low_pd256(d)));
          a[2 + h] = _mm256_add_pd(a[2 + h], _mm256_mul_pd(high_pd256(wd), high_pd256(d)));
        }
        if (kGrad) _mm256_storeu_si256(reinterpret_cast<__m256i*>(g + j), _mm256_packus_epi32(r[0], r[1]));
      }
    } else {
      for (; j + kLanes <= n; j += kLanes) {
        for (int h = 0; h < 2; ++h) {
          const int64_t at = j + 8 * h;
          const __m256 d = _mm256_sub_ps(S::widen(p + at), T::widen(t + at));
          const __m256 wd = _mm256_mul_ps(d, _mm256_loadu_ps(w + at));
          if (kGrad) S::narrow(_mm256_mul_ps(vc, wd), g + at);
          a[2 * h] = _mm256_add_pd(a[2 * h], _mm256_mul_pd(low_pd256(wd), low_pd256(d)));
          a[2 * h + 1] = _mm256_add_pd(a[2 * h + 1], _mm256_mul_pd(high_pd256(wd), high_pd256(d)));
        }
      }
    }
    for (int q = 0; q < 4; ++q) _mm256_storeu_pd(lanes + 4 * q, a[q]);
  }
  for (int l = 0; j < n; ++j, ++l) {
    const float d = diff(S::value(p[j]), T::value(t[j]));
    const float wd = weighted_diff(w[j], d);
    lanes[l] += weighted_sq(wd, d);
    if (kGrad) g[j] = S::bits(grad_value(coef, wd));
  }
}

template <typename S, typename T>
struct RegsRuns256 : RegsArrays<S, T> {
  using RegsArrays<S, T>::p, RegsArrays<S, T>::t, RegsArrays<S, T>::g;
  template <bool kGrad>
  __attribute__((target("avx2,f16c"))) void plane(int64_t off, const float* w, int64_t n, float coef,
                                                  double* lanes) const {
    plane_chunk_16_256<kGrad, S, T>(p + off, t + off, kGrad ? g + off : nullptr, w, n, coef, lanes);
  }
};

template <bool kGrad, typename S, typename T>
__attribute__((target("avx2,f16c"))) void nchw_unit_16_256(const MixedArrays& a, int64_t base, int64_t hw,
                                                           int64_t n, int64_t per_anchor, const TermCoefs& coefs,
                                                           const unsigned char* keep, RawSums& acc) {
  thread_local std::vector<float> bt(static_cast<size_t>(MixedRuns::kRun));
  using SE = typename S::Elem;
  const RegsRuns256<S, T> runs{{static_cast<const SE*>(a.p), static_cast<const typename T::Elem*>(a.t),
                                static_cast<SE*>(a.g), bt.data()}};
  nchw_unit_body<kGrad>(runs, base, hw, n, per_anchor, coefs, keep, acc);
}

// Which register kernel a pair of arrays takes (the gradient, if any, of the
// student's type): float16 or bfloat16 pairs, and an fp32 student with an
// fp16 or bfloat16 teacher (the latter through the buffered runs until the
// second Zen 3 session of 2026-12-07; here it takes 0.91-0.96x their time,
// bench/half.js, BENCHMARKS.md); None where none applies (the buffered runs
// above). Its AVX-512 form where the CPU has AVX-512 and F16C, else its AVX2
// form where it has AVX2 and F16C (regs_avx512).
enum class RegsPair { None, F16, Bf16, F32F16, F32Bf16 };
bool regs_avx512() {
  static const bool yes = cpu_avx512f() && YD_CPU_SUPPORTS("f16c");
  return yes;
}
RegsPair regs_pair(const MixedArrays& a) {
  static const bool cpu = regs_avx512() || (YD_CPU_SUPPORTS("avx2") && YD_CPU_SUPPORTS("f16c"));
  if (!cpu || (a.g && a.g_type != a.p_type)) return RegsPair::None;
  if (a.p_type == ElemType::F16 && a.t_type == ElemType::F16) return RegsPair::F16;
  if (a.p_type == ElemType::BF16 && a.t_type == ElemType::BF16) return RegsPair::Bf16;
  if (a.p_type == ElemType::F32 && a.t_type == ElemType::F16) return RegsPair::F32F16;
  if (a.p_type == ElemType::F32 && a.t_type == ElemType::BF16) return RegsPair::F32Bf16;
  return RegsPair::None;
}

// S, T: the AVX-512 element types, S2, T2 their AVX2 forms.
template <typename S, typename T, typename S2, typename T2>
void nchw_unit_16_call(const MixedArrays& a, bool grad, int64_t base, int64_t hw, int64_t n, int64_t per_anchor,
                       const TermCoefs& coefs, const unsigned char* keep, RawSums& acc) {
  if (regs_avx512()) {
    if (grad) {
      nchw_unit_16<true, S, T>(a, base, hw, n, per_anchor, coefs, keep, acc);
    } else {
      nchw_unit_16<false, S, T>(a, base, hw, n, per_anchor, coefs, keep, acc);
    }
  } else if (grad) {
    nchw_unit_16_256<true, S2, T2>(a, base, hw, n, per_anchor, coefs, keep, acc);
  } else {
    nchw_unit_16_256<false, S2, T2>(a, base, hw, n, per_anchor, coefs, keep, acc);
  }
}
#endif

// One cell-major unit (kCellChunk contiguous cells) of the default formula on
// 16-bit (or mixed) arrays: the block widened, cells_body, the gradient narrowed.
template <bool kGrad>
__attribute__((always_inline)) inline void cells_mixed_body(const MixedArrays& a, int64_t i0, int64_t n,
                                                            int64_t per_anchor, int64_t classes,
                                                            const TermCoefs& coefs, const unsigned char* keep,
                                                            RawSums& acc) {
  thread_local std::vector<float> buf;
  const size_t block = static_cast<size_t>(kCellChunk * per_anchor);
  if (buf.size() < 3 * block) buf.resize(3 * block);
  float* bp = buf.data();
  float* bt = bp + block;
  float* bg = bt + block;
  const int64_t off = i0 * per_anchor, len = n * per_anchor;
  widen_run(a.p, a.p_type, off, len, bp);
  widen_run(a.t, a.t_type, off, len, bt);
  cells_body<kGrad>(bp, bt, kGrad ? bg : nullptr, n, per_anchor, classes, coefs, keep, acc);
  if (kGrad) narrow_run(bg, a.g_type, a.g, off, len);
}

// Not multiversioned: compiled like run_cells (no FMA contraction in the
// baseline build), so its sums are bit-identical to the fp32 path's.
void cells_mixed_grad(const MixedArrays& a, int64_t i0, int64_t n, int64_t per_anchor, int64_t classes,
                      const TermCoefs& coefs, const unsigned char* keep, RawSums& acc) {
  cells_mixed_body<true>(a, i0, n, per_anchor, classes, coefs, keep, acc);
}
void cells_mixed_nograd(const MixedArrays& a, int64_t i0, int64_t n, int64_t per_anchor, int64_t classes,
                        const TermCoefs& coefs, const unsigned char* keep, RawSums& acc) {
  cells_mixed_body<false>(a, i0, n, per_anchor, classes, coefs, keep, acc);
}


// Cells per unit of the general instantiations: in nchw each channel of a
// unit is a contiguous run, and long runs keep the hardware prefetcher going
// (256-cell runs were 1.3-1.6x slower on workload (a) with the fp32 element
// math; 8192, a whole 80 x 80 plane, 0.93-0.96x the time of 4096 for preset
// 'paper', objTarget 'bce' and anchor-free heads, bench/compare.js, as the
// default kernel's whole-plane units; the per-unit arrays on the stack are
// then ~170 KB); in the cell-major layouts a unit is transposed into channel-major
// buffers that must stay in L2 with it (4096 cells x 85 values thrashed it,
// 1.23x slower than 256, when the kernels read it in place; with the
// transposed buffers 1024 cells were still 1.03-1.06x slower than 256).
constexpr int64_t kVariantChunk = 8192;
constexpr int64_t kCellMajorChunk = 256;

// The work units of the general and anchor-free kernels: runs of up to
// kVariantChunk cells (kCellMajorChunk in nahwc and nhwc), within one (b, a)
// plane in nchw. Value k of a unit's cell j is at base + k * step_k + j * step_c:
// channels outer, cells inner, so nchw reads contiguous runs; nahwc and nhwc
// cells are K contiguous values.
struct VariantUnits {
  struct Span {
    int64_t i0, len, base;  // first cell index, cell count, offset of (cell i0, k = 0)
  };
  bool nchw;
  int64_t hw, K, cells, chunk, chunks_per_plane, count, step_k, step_c;
  // nchw_chunk: cells per unit in nchw (at most kVariantChunk).
  VariantUnits(const ScaleGeom& g, int64_t nchw_chunk)
      : nchw(!g.cell_major()),
        hw(g.height * g.width),
        K(g.per_anchor()),
        cells(g.cells()),
        chunk(nchw ? nchw_chunk : kCellMajorChunk),
        chunks_per_plane(nchw ? (hw + chunk - 1) / chunk : 0),
        count(nchw ? g.batch * g.anchors * chunks_per_plane : (cells + chunk - 1) / chunk),
        step_k(nchw ? hw : 1),
        step_c(nchw ? 1 : K) {}
  Span at(int64_t unit) const {
    if (nchw) {
      const int64_t plane = unit / chunks_per_plane, first = (unit % chunks_per_plane) * chunk;
      return Span{plane * hw + first, std::min(chunk, hw - first), plane * K * hw + first};
    }
    const int64_t i0 = unit * chunk;
    return Span{i0, std::min(chunk, cells - i0), i0 * K};
  }
};

// Where a variant unit's values are read and its gradient written. A view:
// value k of the unit's cell j at base + k * step_k + j * step_c of p and t, its
// gradient at the same place of g (null without a gradient).
struct UnitView {
  const float* p;
  const float* t;
  float* g;
  int64_t base, step_k, step_c;
};

// The FM-NMS keep mask of an fp32 anchor-free head (defined below).
void anchor_free_keep(const float* t, const ScaleGeom& g, unsigned char* keep, int threads);

// What a channel run prefetches as it goes, 16 values at a time, when its
// arrays are not those of the next run (16-bit heads widened a channel at a
// time, MixedSource::open_channel): array i's next run from at[i] (null:
// none; p, t, then the gradient, prefetched for writing), bytes[i] per 16
// values (64 for fp32, 32 for 16-bit).
struct RunAhead {
  const char* at[3];
  int64_t bytes[3];
};

// The raw runs of the next unit of 16-bit (or mixed) nchw heads, which its
// widening reads (and its rounding writes) first, prefetched into L2 a 64-byte
// line per array per one() call by the KL steps of this unit, a compute-bound
// loop that leaves the memory idle (MixedSource::next_unit_streams). Array i:
// rows channels of cols lines, row r at row[i] + r * stride[i].
struct UnitStreams {
  const char* row[3] = {nullptr, nullptr, nullptr};
  int64_t stride[3] = {0, 0, 0}, cols[3] = {0, 0, 0}, col[3] = {0, 0, 0}, rows_left[3] = {0, 0, 0};
  bool write[3] = {false, false, false};
  int per = 1;  // lines per array per one() call
  bool any() const { return row[0] || row[1] || row[2]; }
  void one() {
    for (int i = 0; i < 3; ++i) {
      for (int k = 0; k < per && rows_left[i] > 0; ++k) {
        const char* at = row[i] + col[i] * 64;
        if (write[i]) {
          __builtin_prefetch(at, 1, 1);
        } else {
          __builtin_prefetch(at, 0, 1);
        }
        if (++col[i] == cols[i]) col[i] = 0, row[i] += stride[i], --rows_left[i];
      }
    }
  }
};

// Block blk (16 values) of each of a's runs into L2 (channel_run, logit_run).
__attribute__((always_inline)) inline void prefetch_ahead(const RunAhead& a, int64_t blk) {
  if (a.at[0]) __builtin_prefetch(a.at[0] + blk * a.bytes[0], 0, 1);
  if (a.at[1]) __builtin_prefetch(a.at[1] + blk * a.bytes[1], 0, 1);
  if (a.at[2]) __builtin_prefetch(a.at[2] + blk * a.bytes[2], 1, 1);
}

// A per-thread fp32 buffer of at least n floats; kSlot tells apart the
// buffers one unit uses at once (the sources below: student, teacher and
// gradient copies of a unit, the cell-major staging of a 16-bit unit, a
// plane-shaped teacher). Contents are left from earlier units.
enum ScratchSlot : int { kScratchP, kScratchT, kScratchG, kScratchCellMajor, kScratchPlane };
template <int kSlot>
float* scratch(size_t n) {
  thread_local std::vector<float> b;
  if (b.size() < n) b.resize(n);
  return b.data();
}

// ---- cell-major units in channel-major buffers ----
// In nahwc and nhwc a unit's len cells hold K contiguous values each, and the
// variant kernels go through them channel by channel: with stride K those
// loops ran scalar, at twice the time of the same work in nchw (anchor-free
// YOLOv8s nhwc 46 ms against 21 ms nchw, bench/compare.js). Fp32Source
// transposes each cell-major unit into per-thread channel-major buffers, the
// kernels run on them as on an nchw unit (contiguous runs, the same element
// math in the same order: the same bits), and the gradient is transposed back.

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols.
void transpose_scalar(const float* __restrict src, int64_t ld_src, float* __restrict dst, int64_t ld_dst,
                      int64_t rows, int64_t cols) {
  constexpr int64_t kB = 16;  // in cache-friendly tiles
  for (int64_t r0 = 0; r0 < rows; r0 += kB) {
    for (int64_t c0 = 0; c0 < cols; c0 += kB) {
      const int64_t r1 = std::min(rows, r0 + kB), c1 = std::min(cols, c0 + kB);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
      }
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The 128-bit lanes of a and b picked by kImm (vshuff32x4). As the masked form
// with every lane set: the same instruction, without GCC 12's
// -Wmaybe-uninitialized on the unmasked intrinsics' undefined sources (also
// why the unpacks below are written masked).
constexpr __mmask16 kAll16 = 0xFFFF;
constexpr __mmask8 kAll8 = 0xFF;
template <int kImm>
__attribute__((target("avx512f"))) inline __m512 shuffle_lanes(__m512 a, __m512 b) {
  return _mm512_mask_shuffle_f32x4(a, kAll16, a, b, kImm);
}

// transpose_scalar in 16 x 16 tiles held in AVX-512 registers (within-lane
// unpacks of 32- then 64-bit pairs, then two rounds of 128-bit lane
// shuffles); the edges scalar. Moves only: the same values as transpose_scalar.
__attribute__((target("avx512f"))) void transpose_avx512(const float* __restrict src, int64_t ld_src,
                                                         float* __restrict dst, int64_t ld_dst, int64_t rows,
                                                         int64_t cols) {
  const int64_t rows16 = rows & ~int64_t{15}, cols16 = cols & ~int64_t{15};
  for (int64_t r0 = 0; r0 < rows16; r0 += 16) {
    // The next 16 source rows into L2, a column tile at a time as this row
    // group goes (with cells for rows, the unit's next 16 cells from memory).
    const int64_t ahead = std::min<int64_t>(16, rows - (r0 + 16));
    for (int64_t c0 = 0; c0 < cols16; c0 += 16) {
      for (int64_t i = 0; i < ahead; ++i) _mm_prefetch(reinterpret_cast<const char*>(src + (r0 + 16 + i) * ld_src + c0), _MM_HINT_T1);
      __m512 a[16], b[16];
      for (int i = 0; i < 16; ++i) a[i] = _mm512_loadu_ps(src + (r0 + i) * ld_src + c0);
      for (int i = 0; i < 8; ++i) {  // per 128-bit lane L: rows 2i, 2i+1 of columns 4L..4L+3 interleaved
        b[2 * i] = _mm512_mask_unpacklo_ps(a[2 * i], kAll16, a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm512_mask_unpackhi_ps(a[2 * i], kAll16, a[2 * i], a[2 * i + 1]);
      }
      for (int g = 0; g < 4; ++g) {  // a[4g + c], lane L: rows 4g..4g+3 of column 4L + c
        const __m512d lo0 = _mm512_castps_pd(b[4 * g]), hi0 = _mm512_castps_pd(b[4 * g + 1]);
        const __m512d lo1 = _mm512_castps_pd(b[4 * g + 2]), hi1 = _mm512_castps_pd(b[4 * g + 3]);
        a[4 * g + 0] = _mm512_castpd_ps(_mm512_mask_unpacklo_pd(lo0, kAll8, lo0, lo1));
        a[4 * g + 1] = _mm512_castpd_ps(_mm512_mask_unpackhi_pd(lo0, kAll8, lo0, lo1));
        a[4 * g + 2] = _mm512_castpd_ps(_mm512_mask_unpacklo_pd(hi0, kAll8, hi0, hi1));
        a[4 * g + 3] = _mm512_castpd_ps(_mm512_mask_unpackhi_pd(hi0, kAll8, hi0, hi1));
      }
      for (int c = 0; c < 4; ++c) {  // column 4L + c = lane L of a[c], a[4 + c], a[8 + c], a[12 + c]
        const __m512 v0 = shuffle_lanes<0x88>(a[c], a[4 + c]), w0 = shuffle_lanes<0xDD>(a[c], a[4 + c]);
        const __m512 v1 = shuffle_lanes<0x88>(a[8 + c], a[12 + c]), w1 = shuffle_lanes<0xDD>(a[8 + c], a[12 + c]);
        _mm512_storeu_ps(dst + (c0 + c) * ld_dst + r0, shuffle_lanes<0x88>(v0, v1));
        _mm512_storeu_ps(dst + (c0 + 4 + c) * ld_dst + r0, shuffle_lanes<0x88>(w0, w1));
        _mm512_storeu_ps(dst + (c0 + 8 + c) * ld_dst + r0, shuffle_lanes<0xDD>(v0, v1));
        _mm512_storeu_ps(dst + (c0 + 12 + c) * ld_dst + r0, shuffle_lanes<0xDD>(w0, w1));
      }
    }
    for (int64_t i = 0; i < ahead; ++i) _mm_prefetch(reinterpret_cast<const char*>(src + (r0 + 16 + i) * ld_src + cols - 1), _MM_HINT_T1);
  }
  // The edges: the last cols % 16 columns of the full row tiles, then the last rows % 16 rows.
  if (cols16 < cols) transpose_scalar(src + cols16, ld_src, dst + cols16 * ld_dst, ld_dst, rows16, cols - cols16);
  if (rows16 < rows) transpose_scalar(src + rows16 * ld_src, ld_src, dst + rows16, ld_dst, rows - rows16, cols);
}

// The same in 8 x 8 tiles of AVX2 registers, for CPUs without AVX-512 (on the
// x86-64-v3 build the scalar loops had the cell-major variant rows at 1.3-2.2x
// this one's time, bench/compare.js): 32-bit then 64-bit unpacks within
// 128-bit lanes, then the lanes swapped; the edges scalar. Moves only: the
// same values.
__attribute__((target("avx2"))) void transpose_avx2(const float* __restrict src, int64_t ld_src,
                                                    float* __restrict dst, int64_t ld_dst, int64_t rows,
                                                    int64_t cols) {
  const int64_t rows8 = rows & ~int64_t{7}, cols8 = cols & ~int64_t{7};
  for (int64_t r0 = 0; r0 < rows8; r0 += 8) {
    const int64_t ahead = std::min<int64_t>(8, rows - (r0 + 8));  // the next 8 rows into L2, as transpose_avx512
    for (int64_t c0 = 0; c0 < cols8; c0 += 8) {
      for (int64_t i = 0; i < ahead; ++i) _mm_prefetch(reinterpret_cast<const char*>(src + (r0 + 8 + i) * ld_src + c0), _MM_HINT_T1);
      __m256 a[8], b[8];
      for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_ps(src + (r0 + i) * ld_src + c0);
      for (int i = 0; i < 4; ++i) {  // per 128-bit lane L: rows 2i, 2i+1 of columns 4L..4L+3 interleaved
        b[2 * i] = _mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]);
      }
      for (int g = 0; g < 2; ++g) {  // a[4g + c], lane L: rows 4g..4g+3 of column 4L + c
        const __m256d lo0 = _mm256_castps_pd(b[4 * g]), hi0 = _mm256_castps_pd(b[4 * g + 1]);
        const __m256d lo1 = _mm256_castps_pd(b[4 * g + 2]), hi1 = _mm256_castps_pd(b[4 * g + 3]);
        a[4 * g + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(lo0, lo1));
        a[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(lo0, lo1));
        a[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(hi0, hi1));
        a[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(hi0, hi1));
      }
      for (int c = 0; c < 4; ++c) {  // column 4L + c: lane L of a[c] (rows 0-3) and of a[4 + c] (rows 4-7)
        _mm256_storeu_ps(dst + (c0 + c) * ld_dst + r0, _mm256_permute2f128_ps(a[c], a[4 + c], 0x20));
        _mm256_storeu_ps(dst + (c0 + 4 + c) * ld_dst + r0, _mm256_permute2f128_ps(a[c], a[4 + c], 0x31));
      }
    }
    for (int64_t i = 0; i < ahead; ++i) _mm_prefetch(reinterpret_cast<const char*>(src + (r0 + 8 + i) * ld_src + cols - 1), _MM_HINT_T1);
  }
  if (cols8 < cols) transpose_scalar(src + cols8, ld_src, dst + cols8 * ld_dst, ld_dst, rows8, cols - cols8);
  if (rows8 < rows) transpose_scalar(src + rows8 * ld_src, ld_src, dst + rows8, ld_dst, rows - rows8, cols);
}
#endif

void transpose(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows, int64_t cols) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_avx512f()) {
    transpose_avx512(src, ld_src, dst, ld_dst, rows, cols);
    return;
  }
  if (have_avx2()) {
    transpose_avx2(src, ld_src, dst, ld_dst, rows, cols);
    return;
  }
#endif
  transpose_scalar(src, ld_src, dst, ld_dst, rows, cols);
}

// fp32 arrays, read and written in place (nchw), or through channel-major
// buffers (the cell-major layouts, above).
struct Fp32Source {
  static constexpr bool kInPlace = true;
  static constexpr int64_t kNchwChunk = kVariantChunk;
  const float* p;
  const float* t;
  float* g;
  void nms_mask(const ScaleGeom& geom, unsigned char* keep, int threads) const {
    if (geom.head == Head::AnchorFree) {
      anchor_free_keep(t, geom, keep, threads);
    } else {
      fm_nms_mask(t, geom, keep, threads);
    }
  }
  UnitView open(const VariantUnits& u, const VariantUnits::Span& s, bool /*defer*/ = false) const {
    if (u.nchw) return UnitView{p, t, g, s.base, u.step_k, u.step_c};
    const size_t n = static_cast<size_t>(u.K * s.len);
    float* bp = scratch<kScratchP>(n);
    float* bt = scratch<kScratchT>(n);
    transpose(p + s.base, u.K, bp, s.len, s.len, u.K);  // cell j's value k to bp[k * len + j]
    transpose(t + s.base, u.K, bt, s.len, s.len, u.K);
    return UnitView{bp, bt, g ? scratch<kScratchG>(n) : nullptr, 0, s.len, 1};
  }
  void teacher_channels(const VariantUnits&, const VariantUnits::Span&, int64_t, int64_t) const {}  // in place
  void close(const VariantUnits& u, const VariantUnits::Span& s, const UnitView& v) const {
    if (u.nchw || !g) return;
    transpose(v.g, s.len, g + s.base, u.K, u.K, s.len);  // every value of the unit was written
  }
  // A cell-major unit's K * len contiguous values of each array, which the
  // next unit's transposes read (and write), streamed into L2 by this unit's
  // KL steps (UnitStreams); nchw units are read in place: none.
  void next_unit_streams(const VariantUnits& u, const VariantUnits::Span& nx, UnitStreams* st) const {
    if (u.nchw) return;
    const void* arrays[3] = {p, t, g};
    for (int i = 0; i < 3; ++i) {
      if (!arrays[i]) continue;
      const char* at = static_cast<const char*>(arrays[i]) + nx.base * 4;
      const char* line = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(at) & ~uintptr_t{63});
      st->row[i] = line;
      st->stride[i] = 0;
      st->cols[i] = (at + nx.len * u.K * 4 - line + 63) / 64;
      st->rows_left[i] = 1;
      st->write[i] = i == 2;
    }
  }
};

// 16-bit (or mixed) arrays: each unit's values widened to fp32 in per-thread
// buffers (the unit's K channel runs in nchw; in the cell-major layouts its
// K * len contiguous values, then transposed to channel-major; an fp32 student
// of a 16-bit teacher in nchw stays in place, see student_in_place), the fp32 body
// run on them, the gradient rounded to
// its type on the way out (round to nearest even). Memory sees the arrays'
// own element sizes; 1024-cell units in nchw keep the three buffers in L2
// (K = 85: 1 MB). Without the KL, nchw units go a channel at a time instead
// (open_channel below). FM-NMS masks widen one teacher plane at a time.
struct MixedSource {
  static constexpr bool kInPlace = false;
  static constexpr int64_t kNchwChunk = 1024;
  MixedArrays a;
  void nms_mask(const ScaleGeom& geom, unsigned char* keep, int threads) const {
    fm_nms_mask_mixed(a, geom, keep, threads);
  }
  // defer: the teacher's channels of a plane-shaped buffer (below) are
  // widened by teacher_channels, each just before a step reads it, rather than
  // all here.
  UnitView open(const VariantUnits& u, const VariantUnits::Span& s, bool defer = false) const {
    const size_t n = static_cast<size_t>(u.K * s.len);
    if (u.nchw && student_in_place(u)) {
      // The fp32 student and gradient of the unit's plane in place; the
      // teacher widened into a plane-shaped buffer (plane_buffer), laid out as
      // the plane, so that one (base, step) addresses all three.
      const int64_t first = s.i0 % u.hw, plane = s.base - first;
      const float* tp = plane_buffer(u, first);
      if (!defer) teacher_channels(u, s, 0, u.K);
      return UnitView{static_cast<const float*>(a.p) + plane, tp, a.g ? static_cast<float*>(a.g) + plane : nullptr,
                      first, u.hw, 1};
    }
    float* bp = scratch<kScratchP>(n);
    float* bt = scratch<kScratchT>(n);
    float* bg = a.g ? scratch<kScratchG>(n) : nullptr;
    if (u.nchw) {
      for (int64_t k = 0; k < u.K; ++k) {
        widen_run(a.p, a.p_type, s.base + k * u.step_k, s.len, bp + k * s.len);
        widen_run(a.t, a.t_type, s.base + k * u.step_k, s.len, bt + k * s.len);
      }
      return UnitView{bp, bt, bg, 0, s.len, 1};
    }
    // Cell-major: widened as they lie, then transposed to channel-major (as
    // Fp32Source does).
    // An fp32 array is transposed straight from where it lies.
    float* cm = scratch<kScratchCellMajor>(n);
    auto to_channel_major = [&](const void* src, ElemType type, float* dst) {
      const float* from = cm;
      if (type == ElemType::F32) {
        from = static_cast<const float*>(src) + s.base;
      } else {
        widen_run(src, type, s.base, u.K * s.len, cm);
      }
      transpose(from, u.K, dst, s.len, s.len, u.K);
    };
    to_channel_major(a.p, a.p_type, bp);
    to_channel_major(a.t, a.t_type, bt);
    return UnitView{bp, bt, bg, 0, s.len, 1};
  }
  // The plane-shaped teacher buffer of a unit whose cells start at `first` in
  // their plane: element first + k hw + j (channel k, cell j of the unit) at
  // the same place for every unit, so that each unit writes the lines the one
  // before wrote (in cache), where a buffer of the plane's own offsets put
  // each unit of a large plane on lines last written units ago, evicted.
  float* plane_buffer(const VariantUnits& u, int64_t first) const {
    return scratch<kScratchPlane>(static_cast<size_t>((u.K + 1) * u.hw)) + (u.hw - first);
  }
  // Channels k0 .. k0 + count - 1 of the teacher widened into the unit's
  // plane-shaped buffer (open with defer); nothing where open widened the unit.
  void teacher_channels(const VariantUnits& u, const VariantUnits::Span& s, int64_t k0, int64_t count) const {
    if (!(u.nchw && student_in_place(u))) return;
    const int64_t first = s.i0 % u.hw;
    float* tp = plane_buffer(u, first);
    // Each channel's raw run prefetched two channels before it is widened,
    // so that the widening has several runs on their way from memory, not one
    // at a time (with next_unit_streams' stream dropped for these units:
    // anchor-free heads with an fp32 student and a 16-bit teacher 0.89-0.92x
    // their time, anchor 'kl' 0.93-0.96x; bench/mixed.js).
    constexpr int64_t kAhead = 2;
    const RawArray t = raw_array(1);
    auto prefetch_run = [&](int64_t k) {
      const char* from = t.data + (s.base + k * u.step_k) * t.size;
      const char* line = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(from) & ~uintptr_t{63});
      for (; line < from + s.len * t.size; line += 64) __builtin_prefetch(line, 0, 3);
    };
    const int64_t k1 = k0 + count;
    for (int64_t k = k0 + 1; k < std::min(k1, k0 + kAhead); ++k) prefetch_run(k);
    for (int64_t k = k0; k < k1; ++k) {
      if (k + kAhead < k1) prefetch_run(k + kAhead);
      widen_run(a.t, a.t_type, s.base + k * u.step_k, s.len, tp + k * u.hw + first);
    }
  }
  void close(const VariantUnits& u, const VariantUnits::Span& s, const UnitView& v) const {
    if (!a.g || (u.nchw && student_in_place(u))) return;  // in place: written where it belongs
    if (u.nchw) {
      for (int64_t k = 0; k < u.K; ++k) narrow_run(v.g + k * s.len, a.g_type, a.g, s.base + k * u.step_k, s.len);
    } else if (a.g_type == ElemType::F32) {
      transpose(v.g, s.len, static_cast<float*>(a.g) + s.base, u.K, u.K, s.len);
    } else {
      float* cm = scratch<kScratchCellMajor>(static_cast<size_t>(u.K * s.len));
      transpose(v.g, s.len, cm, u.K, u.K, s.len);
      narrow_run(cm, a.g_type, a.g, s.base, u.K * s.len);
    }
  }
  // Channel-wise units (the variant kernels without the KL, nchw; general_scale
  // `lazy`): whole-plane units as for fp32 heads, each channel's runs widened
  // just before that channel is computed (into per-thread buffers of one run:
  // 32 KB each, in L2) and its gradient rounded right after, while the next
  // channel's raw runs are prefetched into L2 so that memory works during the
  // element math. Widening a 1,024-cell unit's 85 channels first, then
  // computing them, left the two in turn: float16 preset 'paper' took 1.65x
  // the time of the same values in float32 (node bench/half.js). fp32 arrays
  // of a mixed pair are used in place.
  struct ChannelRun {
    const float* p;
    const float* t;
    float* g;
    RunAhead ahead;  // the next channel's raw runs (at[i] null: none)
  };
  ChannelRun open_channel(const VariantUnits& u, const VariantUnits::Span& s, int64_t k, int64_t next) const {
    const int64_t off = s.base + k * u.step_k;
    const size_t n = static_cast<size_t>(s.len);
    ChannelRun r{nullptr, teacher_channel(u, s, k), nullptr, RunAhead{{nullptr, nullptr, nullptr}, {0, 0, 0}}};
    if (a.p_type == ElemType::F32) {
      r.p = static_cast<const float*>(a.p) + off;
    } else {
      float* b = scratch<kScratchP>(n);
      widen_run(a.p, a.p_type, off, s.len, b);
      r.p = b;
    }
    if (a.g) r.g = a.g_type == ElemType::F32 ? static_cast<float*>(a.g) + off : scratch<kScratchG>(n);
    if (next >= 0) {
      const int64_t noff = s.base + next * u.step_k;
      for (int i = 0; i < 3; ++i) {
        const RawArray raw = raw_array(i);
        if (!raw.data) continue;
        r.ahead.at[i] = raw.data + noff * raw.size;
        r.ahead.bytes[i] = 16 * raw.size;
      }
    }
    return r;
  }
  // Array i (0 student, 1 teacher, 2 gradient) as it lies in memory: its
  // first byte (null: none) and element size. What the prefetches of the next
  // channel (open_channel) and of the next unit (next_unit_streams) address.
  struct RawArray {
    const char* data;
    int64_t size;
  };
  RawArray raw_array(int i) const {
    const void* arrays[3] = {a.p, a.t, a.g};
    const ElemType types[3] = {a.p_type, a.t_type, a.g_type};
    return RawArray{static_cast<const char*>(arrays[i]), types[i] == ElemType::F32 ? 4 : 2};
  }
  // The teacher's channel k of the unit as fp32 (in place, or widened into its buffer).
  const float* teacher_channel(const VariantUnits& u, const VariantUnits::Span& s, int64_t k) const {
    const int64_t off = s.base + k * u.step_k;
    if (a.t_type == ElemType::F32) return static_cast<const float*>(a.t) + off;
    float* b = scratch<kScratchT>(static_cast<size_t>(s.len));
    widen_run(a.t, a.t_type, off, s.len, b);
    return b;
  }
  void close_channel(const VariantUnits& u, const VariantUnits::Span& s, int64_t k, const ChannelRun& r) const {
    if (a.g && a.g_type != ElemType::F32) narrow_run(r.g, a.g_type, a.g, s.base + k * u.step_k, s.len);
  }
  // An fp32 student (and gradient) with a 16-bit teacher in nchw, whose
  // plane-shaped teacher buffer stays within kMaxPlaneBuffer floats (8 MB): the
  // student is read, and its gradient written, in place (an fp32 student with
  // an fp16 teacher: 0.76-0.95x the time of copying it, node bench/mixed.js).
  static constexpr int64_t kMaxPlaneBuffer = int64_t{1} << 21;
  bool student_in_place(const VariantUnits& u) const {
    return a.p_type == ElemType::F32 && (!a.g || a.g_type == ElemType::F32) && u.K * u.hw <= kMaxPlaneBuffer;
  }
  // What open() and close() of unit nx read and write in memory (nchw): the
  // teacher's runs, and the student's and gradient's unless they are used in place.
  void next_unit_streams(const VariantUnits& u, const VariantUnits::Span& nx, UnitStreams* st) const {
    if (!u.nchw) return;
    // In place: only the teacher is widened, each run as it is used
    // (teacher_channels, which prefetches its runs itself). Streaming the next
    // unit's runs through the KL steps, as before, cost those steps more than
    // it saved (see teacher_channels).
    if (student_in_place(u)) return;
    for (int i = 0; i < 3; ++i) {
      const RawArray raw = raw_array(i);
      if (!raw.data) continue;
      st->row[i] = raw.data + nx.base * raw.size;
      st->stride[i] = u.step_k * raw.size;
      st->cols[i] = (nx.len * raw.size + 63) / 64;
      st->rows_left[i] = u.K;
      st->write[i] = i == 2;
    }
  }
};

// sum_j m_j * loss_j over one channel of a unit's cells (stride `step` between
// cells), writing g_j = coef * m_j * d loss_j / d p_j when g is not null.
// The variant kernels' element loops, compiled for x86-64-v4 (AVX-512),
// x86-64-v3 (AVX2 + FMA) and the baseline, one chosen at load time as for
// YD_MULTIVERSION above; with vec_math.h's exp/log1p they vectorize (8, 4 or 2
// doubles per instruction).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(YD_FORCE_BASELINE)
#define YD_CLONES
#define YD_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(YD_FORCE_AVX2)
#define YD_CLONES __attribute__((target("arch=x86-64-v3")))
#define YD_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define YD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
// No fused multiply-adds in a function: its clones round each product and sum
// as the baseline build (no FMA) does (variant_masks).
#define YD_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define YD_CLONES
#define YD_NO_FP_CONTRACT
#endif

// 'logit' in one pass, as plane_chunk does for the default kernel: d = P - T in
// fp32, m d^2 added in double to lane j % kLanes (the association of the
// two-pass loop below, so the sums are the same bits), the gradient written in
// the same loop. kFloatGrad: the coefficient fits fp32.
// kAhead: prefetch `ahead`'s runs as it goes, as channel_run does (16-bit heads
// a channel at a time).
template <bool kGrad, bool kFloatGrad, bool kAhead = false>
__attribute__((always_inline)) inline double logit_run(const float* __restrict p, const float* __restrict t,
                                                       float* __restrict g, int64_t step, int64_t len,
                                                       const float* __restrict m, double gcoef,
                                                       const RunAhead* ahead = nullptr) {
  const float cf = static_cast<float>(gcoef);
  double acc[kLanes] = {};
  auto one = [&](int64_t j, int l) {
    const float d = p[j * step] - t[j * step];
    const double dd = static_cast<double>(d);
    acc[l] += static_cast<double>(m[j]) * (dd * dd);
    if constexpr (kGrad) {
      g[j * step] = kFloatGrad ? (cf * m[j]) * d : static_cast<float>(gcoef * static_cast<double>(m[j]) * dd);
    }
  };
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes) {
    if constexpr (kAhead) prefetch_ahead(*ahead, j / kLanes);
    for (int l = 0; l < kLanes; ++l) one(j + l, l);
  }
  for (int l = 0; j < len; ++j, ++l) one(j, l);
  return fold(acc);
}

template <Target kKind>
YD_CLONES __attribute__((noinline)) double channel_run(const float* __restrict p, const float* __restrict t,
                                                       float* __restrict g, int64_t step, int64_t len,
                                                       const float* __restrict m, double coef, int64_t pf,
                                                       const RunAhead* ahead = nullptr,
                                                       const float* next_run = nullptr, int64_t next_len = 0) {
  // Element math first (vectorized: no reduction in the loop), then the sum in
  // double. In fp32 as PyTorch's float32 ops, the CUDA kernels and the default
  // kernel compute it (8 or 16 floats per instruction): 'prob' and 'bce' by
  // variant_element; 'logit' as the default kernel does, d = P - T in fp32 and
  // its square in double (where it overflows fp32 the loss is the double
  // value). With a coefficient that fits fp32 the gradient is formed in fp32
  // (coef * mask, then times the derivative: Inf only where the true value
  // exceeds fp32); otherwise in double, rounded once.
  constexpr bool kLogit = kKind == Target::Logit;
  if (kLogit && step == 1) {  // contiguous runs (nchw); strided runs vectorize better in two passes
    const double gcoef = 2.0 * coef;  // d (P - T)^2 / dP = 2 d
    if (ahead) {
      if (!g) return logit_run<false, true, true>(p, t, g, step, len, m, gcoef, ahead);
      return coef_fits_fp32(gcoef) ? logit_run<true, true, true>(p, t, g, step, len, m, gcoef, ahead)
                                   : logit_run<true, false, true>(p, t, g, step, len, m, gcoef, ahead);
    }
    if (!g) return logit_run<false, true>(p, t, g, step, len, m, gcoef);
    // Streaming stores where the call and the unit stream (GradientStreaming, StreamUnit).
    if (len >= kLanes && coef_fits_fp32(gcoef) && streaming() && floats_aligned(g)) {
      return logit_run_nt(p, t, g, len, m, static_cast<float>(gcoef));
    }
    return coef_fits_fp32(gcoef) ? logit_run<true, true>(p, t, g, step, len, m, gcoef)
                                 : logit_run<true, false>(p, t, g, step, len, m, gcoef);
  }
  float s[kVariantChunk];  // per element: the loss, or d for 'logit'
  auto element = [&](int64_t j) -> float {  // d loss / d p, or d for 'logit'
    if constexpr (kLogit) {
      s[j] = p[j * step] - t[j * step];
      return s[j];
    } else {
      return variant_element<float>(static_cast<int>(kKind), p[j * step], t[j * step], &s[j]);
    }
  };
  const double gcoef = kLogit ? 2.0 * coef : coef;  // d (P - T)^2 / dP = 2 d
  // 'prob' and 'bce' are compute bound (three exponentials and a division per
  // element) and leave the memory idle while they work, so on contiguous runs
  // with a gradient the next channel's run (pf values on, 0: none) is
  // prefetched into L2, 16 values at a time as this one goes: preset 'paper'
  // 0.87-0.90x its time (bench/compare.js); the hardware prefetcher alone
  // starts each channel's run cold. The blocks' loops are the same element
  // math as the plain loops (identical bits). next_run: a run of next_len
  // values that a later step reads (the next unit's teacher classes, for its
  // FM-NMS class argmax), prefetched alongside.
  if (g) {
    if (coef_fits_fp32(gcoef)) {
      const float cf = static_cast<float>(gcoef);
      int64_t j0 = 0;
      // kN (width) contiguous values from j0: for 'prob', the two exponentials of
      // the kN values first, then expm1(t - p), then the rest (variant_element's
      // own operations and bits): each loop keeps its polynomial's constants
      // in registers, where the one loop reloaded a dozen a value group
      // (preset 'paper' 0.94-0.97x its time, bench/compare.js).
      auto blockn = [&](int64_t j0, auto width) __attribute__((always_inline)) {
        constexpr int kN = decltype(width)::value;
        if constexpr (kKind != Target::Prob) {
          for (int64_t j = j0; j < j0 + kN; ++j) {
            const float d = element(j);
            g[j] = (cf * m[j]) * d;
          }
        } else {
          float ep[kN], et[kN], em[kN];
          for (int j = 0; j < kN; ++j) {
            ep[j] = exp_nonpos_(-std::fabs(p[j0 + j]));
            et[j] = exp_nonpos_(-std::fabs(t[j0 + j]));
          }
          // expm1(t - p), used only where |t - p| <= 1 (variant_element_e selects
          // the far form elsewhere, NaN included): unclamped.
          for (int j = 0; j < kN; ++j) em[j] = vexpm1f_near(t[j0 + j] - p[j0 + j]);
          for (int j = 0; j < kN; ++j) {
            const float d = variant_element_e<float>(static_cast<int>(kKind), p[j0 + j], t[j0 + j], ep[j], et[j],
                                                     &s[j0 + j], &em[j]);
            g[j0 + j] = (cf * m[j0 + j]) * d;
          }
        }
      };
      // 'prob' 64 values a block: each pass then runs over four independent
      // vectors, whose exponentials' dependency chains overlap (with 16, one
      // vector's chain of some 40 dependent operations per pass left the core
      // waiting: preset 'paper' 0.91-0.94x its time, paper + fmNms
      // 0.93-0.96x, bench/compare.js, and 0.85-0.88x in cache,
      // bench/in-cache.js; 32 took half that gain, 128 (arrays of 1.5 KB) was
      // 13x slower: GCC no longer kept the block inline).
      constexpr int kBlock = kKind == Target::Prob ? 64 : 16;
      // The contiguous run from j0 on, kBlock values a block then 16 (the same
      // element math either way), calling prefetch(j, blk) for each 16 values
      // at j, the blk-th such group of the run.
      auto each_block = [&](auto prefetch) __attribute__((always_inline)) {
        int64_t blk = 0;
        if constexpr (kBlock > 16) {
          for (; j0 + kBlock <= len; j0 += kBlock) {
            for (int q = 0; q < kBlock; q += 16, ++blk) prefetch(j0 + q, blk);
            blockn(j0, std::integral_constant<int, kBlock>{});
          }
        }
        for (; j0 + 16 <= len; j0 += 16, ++blk) {
          prefetch(j0, blk);
          blockn(j0, std::integral_constant<int, 16>{});
        }
      };
      // The next channel's run (and next_run when kNext: a loop of its own, so
      // that the other calls' loop stays as it was).
      auto next_channel = [&](auto next) __attribute__((always_inline)) {
        constexpr bool kNext = decltype(next)::value;
        each_block([&](int64_t j, int64_t) __attribute__((always_inline)) {
          __builtin_prefetch(p + j + pf, 0, 1);
          __builtin_prefetch(t + j + pf, 0, 1);
          __builtin_prefetch(g + j + pf, 1, 1);
          if constexpr (kNext) {
            if (j < next_len) __builtin_prefetch(next_run + j, 0, 1);
          }
        });
      };
      if (pf != 0 && step == 1) {
        if (next_run) {
          next_channel(std::true_type{});
        } else {
          next_channel(std::false_type{});
        }
      } else if (ahead && step == 1) {
        each_block([&](int64_t, int64_t blk) __attribute__((always_inline)) { prefetch_ahead(*ahead, blk); });
      } else if (step == 1) {
        each_block([](int64_t, int64_t) __attribute__((always_inline)) {});
      }
      for (int64_t j = j0; j < len; ++j) {
        const float d = element(j);
        g[j * step] = (cf * m[j]) * d;
      }
    } else {
      for (int64_t j = 0; j < len; ++j) {
        const float d = element(j);
        g[j * step] = static_cast<float>(gcoef * static_cast<double>(m[j]) * static_cast<double>(d));
      }
    }
  } else {
    for (int64_t j = 0; j < len; ++j) element(j);
  }
  // kLanes independent accumulators (acc[j % kLanes]), folded in a fixed order:
  // one chain would wait on the add latency for every element.
  auto term = [&](int64_t j) {
    const double v = static_cast<double>(s[j]);
    return static_cast<double>(m[j]) * (kLogit ? v * v : v);
  };
  double acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += term(j + l);
  }
  for (int l = 0; j < len; ++j, ++l) acc[l] += term(j);
  return fold(acc);
}

// tau^2 KL(softmax(T/tau) || softmax(P/tau)) per cell over the n values
// k0 .. k0+n-1 (stride step_k) of the len cells of a unit (cell j's value k at
// base + k * step_k + j * step_c): the classes of clsTarget 'kl', or the bins
// of one side of an anchor-free box. Returns sum_j m_j * KL_j and writes
// g = coef * m_j * d(tau^2 KL)/dP when g is not null. The steps of cell_math.h
// (maxima; sums of exponentials, kept per thread and reused for the
// probabilities; value and gradients), in double.
// Cells per block of the KL steps: the exponentials of a block's n values per
// cell are kept (n * kKlBlock doubles per array: in L2 for n = 80).
constexpr int64_t kKlBlock = 256;

YD_CLONES double kl_block(const float* __restrict p, const float* __restrict t, float* __restrict g, int64_t base,
                int64_t len, int64_t k0, int64_t n, int64_t step_k, int64_t step_c, double tau,
                const float* m, double coef) {
  thread_local std::vector<double> ep, eq;
  if (ep.size() < static_cast<size_t>(n * kKlBlock)) {
    ep.resize(static_cast<size_t>(n * kKlBlock));
    eq.resize(static_cast<size_t>(n * kKlBlock));
  }
  // Division by tau as a product with 1 / tau: within an ulp of the quotient in
  // double (1/tau is a normal double for every allowed tau), exact for tau = 1,
  // and no division per value (the divisions were a sixth of the KL time).
  const double inv_tau = 1.0 / tau;
  double mp[kKlBlock], mq[kKlBlock], lsp[kKlBlock], lsq[kKlBlock], kl[kKlBlock];
  double sp[kKlBlock], sq[kKlBlock];  // 1 / sum of exponentials, student and teacher
  for (int64_t j = 0; j < len; ++j) {
    mp[j] = mq[j] = -INFINITY;
    lsp[j] = lsq[j] = kl[j] = 0.0;
  }
  // Maxima of the logits themselves; each shifted value is (x - max) / tau,
  // computed as (x - max) * (1 / tau): the difference of two fp32 values is
  // exact in double (or rounds toward a value still <= 0), so every argument of
  // the exponentials is <= 0 and the largest is exactly 0 (a product x * (1/tau)
  // minus its maximum could be contracted into an FMA that keeps the product's
  // rounding error: +1e21 at tau = 1.2e-38, and exp overflowed).
  for (int64_t c = 0; c < n; ++c) {
    const int64_t off = base + (k0 + c) * step_k;
    for (int64_t j = 0; j < len; ++j) {
      mp[j] = std::max(mp[j], static_cast<double>(p[off + j * step_c]));
      mq[j] = std::max(mq[j], static_cast<double>(t[off + j * step_c]));
    }
  }
  for (int64_t c = 0; c < n; ++c) {
    const int64_t off = base + (k0 + c) * step_k;
    double* epc = ep.data() + c * kKlBlock;
    double* eqc = eq.data() + c * kKlBlock;
    for (int64_t j = 0; j < len; ++j) {
      // In double: with fp32 exponentials the log of their sum moves every
      // log-probability by ~1e-8, and a KL of nearly equal distributions
      // (3.6e-9 in test/numerics-edge.test.js) came out 8x too large.
      epc[j] = vexp((p[off + j * step_c] - mp[j]) * inv_tau);
      eqc[j] = vexp((t[off + j * step_c] - mq[j]) * inv_tau);
      lsp[j] += epc[j];
      lsq[j] += eqc[j];
    }
  }
  for (int64_t j = 0; j < len; ++j) {
    // Reciprocals of the sums: one division per cell, a product per class.
    sp[j] = 1.0 / lsp[j], sq[j] = 1.0 / lsq[j];
    lsp[j] = vlog_ge1(lsp[j]), lsq[j] = vlog_ge1(lsq[j]);  // sums >= 1: the largest term is exp(0)
  }
  for (int64_t c = 0; c < n; ++c) {
    const int64_t off = base + (k0 + c) * step_k;
    const double* epc = ep.data() + c * kKlBlock;
    const double* eqc = eq.data() + c * kKlBlock;
    for (int64_t j = 0; j < len; ++j) {
      const int64_t e = off + j * step_c;
      // kl_log_prob's grouping, (shifted value) - ls, the shifted value as above.
      const double logp = (p[e] - mp[j]) * inv_tau - lsp[j];
      const double logq = (t[e] - mq[j]) * inv_tau - lsq[j];
      const double q = eqc[j] * sq[j];
      kl[j] += kl_class_term(q, logq, logp);
      if (g) g[e] = static_cast<float>(kl_grad_p(coef * static_cast<double>(m[j]), tau, epc[j] * sp[j], q));
    }
  }
  double sum = 0.0;
  for (int64_t j = 0; j < len; ++j) sum += static_cast<double>(m[j]) * kl_cell_value(kl[j], tau);  // tau^2 KL >= 0
  return sum;
}

// The same KL in fp32: cell_math.h's centred steps (the formulas and
// docs/DESIGN.md §2), vectorized over groups of 16 cells. No term is a
// difference of nearly equal first-order quantities: T_c - P_c is carried
// exactly as two floats (a_c + al_c, two-sum) and centred on mid, an fp32
// weighted mean of the a_c, as (a_c - mid) + al_c (exact where a_c and mid
// are within a factor of 2, as near-equal heads and common logit offsets make
// them; else rounded relative to the result), so e_c is within ~3 eps of
// itself; G and S are sums of non-negative terms (kl_gap within 1e-6
// relative; fp32 partials of kKlChunk classes, then double); r = sum w e
// enters the KL only at second order (tau^2 (r / S + log1p((G - r) / S))),
// so mid may be any value near the weighted mean and r may carry fp32
// rounding. A student near its teacher keeps its KL and gradients within
// 1e-6 of float64 (test/numerics-edge.test.js 'KL of a student near its
// teacher'; 'kl_near_equal', 'kl_common_offset'). Cells whose d spans over
// kKlSpread (e^(+-e) would leave float's range; tiny temperatures land here)
// or hold NaN/Inf go to kl_block (double), those spanning at most kKlTiny
// (huge temperatures) to kl_taylor_cell.
// What kl_block_f32 did with a cell (its ok[] entries): the span limits
// kKlSpread, kKlSpreadF32 (the fp32 steps keep only cells within it) and
// kKlTiny are cell_math.h's.
constexpr unsigned char kKlDouble = 0, kKlDone = 1, kKlTaylor = 2;

// kl_taylor_cell (cell_math.h) on a cell of fp32 arrays: value c at base + c * step_k.
struct Fp32KlCell {
  const float* student;
  const float* teacher;
  float* grad;
  int64_t base, step_k;
  float p(int64_t c) const { return student[base + c * step_k]; }
  float t(int64_t c) const { return teacher[base + c * step_k]; }
  void put(int64_t c, double v) const { grad[base + c * step_k] = static_cast<float>(v); }
};

// kl_gap for the centred steps, its exponential by vexpf_bounded (no range
// clamps or selects): every cell whose results are kept has |e_c| <= kKlSpread
// plus rounding, inside its range; elsewhere (cells kl_cells hands to
// kl_block) the value is of no use but every operation is defined, and NaN
// stays NaN.
__attribute__((always_inline)) inline float kl_gap_bounded(float e) {
  const float large = (vexpf_bounded(-e) - 1.0f) + e;  // kl_gap's |e| > 1 branch
  return std::fabs(e) <= 1.0f ? kl_gap_near(e) : large;
}

// Classes summed in fp32 before their sum goes into a double one: each
// partial of at most kKlChunk non-negative terms (S, G) is within 7 eps of
// its exact value, where one fp32 sum over 80 classes could be 79 eps off.
constexpr int64_t kKlChunk = 8;

// acc[l] += part[l] widened to double, for l < kL, in vector registers (a
// plain loop of it compiled to lane extractions and scalar conversions on
// AVX2: with the box KL's 16 bins, a quarter of the centred pass's
// instructions). The same values.
template <int kL>
__attribute__((always_inline)) inline void add_widened(double* __restrict acc, const float* __restrict part) {
#pragma GCC unroll 1
  for (int l = 0; l < kL; ++l) acc[l] += static_cast<double>(part[l]);
}

// Step 3 of kl_group for its kL cells: e_c = ((a_c - mid) + al_c) / tau, G and r, and
// h_c = kl_gap(e_c) - e_c kept; kNear: every |e_c| <= 1 (kl_gap_near alone,
// the same bits).
template <int kL, bool kNear>
__attribute__((always_inline)) inline void kl_centred_pass(int64_t n, const float* __restrict mid, float itau,
                                                           const float* __restrict wb, float* __restrict ub,
                                                           const float* __restrict lb, double* __restrict gs,
                                                           double* __restrict rs) {
  for (int64_t c0 = 0; c0 < n; c0 += kKlChunk) {
    const int64_t c1 = std::min(n, c0 + kKlChunk);
    float g8[kL], r8[kL];
    for (int l = 0; l < kL; ++l) g8[l] = r8[l] = 0.0f;
    for (int64_t c = c0; c < c1; ++c) {
      for (int l = 0; l < kL; ++l) {
        const float e = ((ub[c * kL + l] - mid[l]) + lb[c * kL + l]) * itau;
        const float gap = kNear ? kl_gap_near(e) : kl_gap_bounded(e);
        const float w = wb[c * kL + l];
        ub[c * kL + l] = gap - e;  // h_c in a_c's place
        g8[l] += w * gap;
        r8[l] += w * e;
      }
    }
    add_widened<kL>(gs, g8);
    add_widened<kL>(rs, r8);
  }
}

// The steps for kQ groups of kL cells (lanes) at once, cell l of group q's
// value c at base + c * step_k + (q kL + l) * step_c (step_c == 1 when
// kUnit): every per-cell quantity stays in registers while the classes go
// by (a block-wide array of each was loaded and stored once per class: a
// third of the time; with four groups GCC keeps some in the stack frame).
// wbq, ubq, lbq: kQ * n * kL values each, group q's n * kL from q n kL on
// (teacher weights, a then expm1(-e), al); m, xo, ro, so: kQ * kL cells'
// weights, and per cell x, r / S and the span of d with its margin (step
// 2). avail (kUnit): cells of the unit from this group's first on, for the
// prefetches of step 2, which stay within them. itau: 1 / tau as a float
// (where it is not a normal one, kl_block_f32_body keeps no cell's results).
constexpr int64_t kKlAhead = 128;  // cells ahead that step 2 prefetches into L2 (kQ == 1)
// Cells per group (kl_group's kL): 16 where the CPU has AVX-512 (a group's
// per-cell values one 16-float register), 8 elsewhere (one AVX2 register; 16
// took two each, and four groups' running values no longer fitted 16
// registers: on a Zen 3 core, 'kl' 0.63-0.71x its time with 8, the box KL
// of anchor-free heads 0.83x in cache; BENCHMARKS.md). A lane's arithmetic is
// the same at either width: the same bits (test/kl-lanes.test.js).
// YD_KL_LANES=8 or 16 in the environment chooses (tests, benchmarks).
constexpr int kKlLanes = 16;
constexpr int kKlLanesNarrow = 8;
int kl_lanes() {
  static const int lanes = [] {
    const char* e = std::getenv("YD_KL_LANES");
    if (e && std::strcmp(e, "8") == 0) return kKlLanesNarrow;
    if (e && std::strcmp(e, "16") == 0) return kKlLanes;
    return cpu_avx512f() ? kKlLanes : kKlLanesNarrow;
  }();
  return lanes;
}
// Whether kl_groups8's cells go through kl_groups16_gathered (below):
// YD_KL_GATHER=0 / 1 (read once) never / always (tests, benchmarks); else for
// the class KL (n >= kKlGatherMin values a cell) on planes whose stride is a
// multiple of 4 KB: then a cell's lines of all n planes fall in one set of the
// L1 cache (its 64 sets span 4 KB of addresses), more lines than its 8 ways
// hold, and neither the second half of each line nor the lines step 2
// prefetches survive until they are read. On a Zen 3 core 'kl' on 64 x 64
// planes took 1.6x the time per value of 64 x 65 ones (32 x 32 and 128 x 128:
// 1.3x); gathered, YOLOv5s-shaped heads at 512 px took 0.83x their time and
// at 1024 px 0.94x, the same arrays alternated in one process. Not where
// the gather has nothing to fix: at other strides (640 px: 80 x 80, 40 x 40)
// it cost up to 1.1-1.3x (one scale), its loads waiting with no arithmetic
// beside them; and the box KL's 16 bins (3 x 16 lines a group) gained
// nothing at 512 px and took 1.09x at 1024 (BENCHMARKS.md, "KL planes whose
// stride is a multiple of 4 KB").
constexpr int64_t kKlGatherMin = 32;
int kl_gather_mode() {
  static const int mode = [] {
    const char* e = std::getenv("YD_KL_GATHER");
    return e && (e[0] == '0' || e[0] == '1') && e[1] == 0 ? e[0] - '0' : -1;
  }();
  return mode;
}
bool kl_gather(int64_t step_k, int64_t n) {
  const int mode = kl_gather_mode();
  if (mode >= 0) return mode == 1;
  const int64_t bytes = step_k * static_cast<int64_t>(sizeof(float));
  return n >= kKlGatherMin && bytes >= 4096 && bytes % 4096 == 0;
}
// f(std::integral_constant<int, q>) for q = 0 .. kQ - 1, each call inlined with
// its q a constant (so that arrays indexed by q can stay in registers).
template <typename F, int... kIs>
__attribute__((always_inline)) inline void for_each_index(F&& f, std::integer_sequence<int, kIs...>) {
  (f(std::integral_constant<int, kIs>{}), ...);
}
template <int kQ, typename F>
__attribute__((always_inline)) inline void for_each_q(F&& f) {
  for_each_index(f, std::make_integer_sequence<int, kQ>{});
}
template <int kL, int kQ, bool kUnit>
__attribute__((always_inline)) inline void kl_group(const float* __restrict p, const float* __restrict t,
                                                    float* __restrict g, int64_t base, int64_t n, int64_t step_k,
                                                    int64_t step_c, double tau, float itau,
                                                    const float* __restrict m, double coef, float* __restrict wbq,
                                                    float* __restrict ubq, float* __restrict lbq,
                                                    double* __restrict xo, double* __restrict ro,
                                                    float* __restrict so, int64_t avail, UnitStreams* later) {
  // kQ groups of kL cells side by side (kQ > 1: kUnit only), their classes
  // read and their gradients written a class at a time across all kQ * kL
  // cells: runs of kQ lines per class plane, where one group alone reads and
  // writes a line per plane and moves on (at 2 threads the memory system takes
  // 1.1-1.2x the floor's time for 4-line runs across 240 planes, 1.4x for
  // 1-line runs: bench/plane-runs.c). Every cell's arithmetic is the same as
  // in a group alone: the same bits.
  static_assert(kQ == 1 || kUnit, "side-by-side groups need unit-stride cells");
  const int64_t sc = kUnit ? 1 : step_c;
  const int64_t qn = n * kL;  // each group's share of wbq, ubq, lbq
  // 1. The teacher's maximum.
  float mt[kQ][kL];
  if constexpr (kUnit) {
    // In GCC's vector extension: GCC 12 leaves a loop of 16 independent max
    // chains scalar (16 loads and maxss per class).
    typedef float V __attribute__((vector_size(kL * sizeof(float))));
    V mv[kQ];
    for_each_q<kQ>([&](auto q) __attribute__((always_inline)) {
      mv[q] = V{};
      mv[q] -= INFINITY;
    });
    for (int64_t c = 0; c < n; ++c) {
      const float* tc = t + base + c * step_k;
      for_each_q<kQ>([&](auto q) __attribute__((always_inline)) {
        V v;
        std::memcpy(&v, tc + q * kL, sizeof v);
        mv[q] = mv[q] < v ? v : mv[q];  // std::max's select
      });
    }
    for_each_q<kQ>([&](auto q) __attribute__((always_inline)) { std::memcpy(mt[q], &mv[q], sizeof mv[q]); });
  } else {
    for (int l = 0; l < kL; ++l) mt[0][l] = -INFINITY;
    for (int64_t c = 0; c < n; ++c) {
      const float* tc = t + base + c * step_k;
      for (int l = 0; l < kL; ++l) mt[0][l] = std::max(mt[0][l], tc[l * sc]);
    }
  }
  // 2. Teacher weights w_c = exp((T_c - max T) / tau), their sum S, and
  //    T_c - P_c = a_c + al_c exactly (tau (d_c + a constant)); the weighted
  //    sum of the a_c (for the centre) and their range. NaN / Inf anywhere
  //    make S, mid or G non-finite, and x below with them.
  double sw[kQ][kL];
  float mu[kQ][kL], lo[kQ][kL], hi[kQ][kL];
  for (int q = 0; q < kQ; ++q) {
    for (int l = 0; l < kL; ++l) sw[q][l] = 0.0, mu[q][l] = 0.0f, lo[q][l] = INFINITY, hi[q][l] = -INFINITY;
  }
  for (int64_t c0 = 0; c0 < n; c0 += kKlChunk) {
    const int64_t c1 = std::min(n, c0 + kKlChunk);
    float s8[kQ][kL];
    for (int q = 0; q < kQ; ++q) {
      for (int l = 0; l < kL; ++l) s8[q][l] = 0.0f;
    }
    for (int64_t c = c0; c < c1; ++c) {
      const float* tc = t + base + c * step_k;
      const float* pc = p + base + c * step_k;
      if constexpr (kUnit && kQ == 1) {
        // Per class, a line at a time as the steps go (nchw: this class's
        // values of the next cells follow these): the student and teacher
        // lines of the group after the next into L1, for its step 1 (the next
        // group's: 1.04x the time; four on: no better than two); this group's
        // gradient line, for step 4's writes; and the lines kKlAhead cells on
        // into L2. A burst of the next 256-cell block's lines at each block's
        // start (48 n lines at once) did this before: every KL row 0.87-0.90x
        // its time with this.
        if (avail >= 3 * kL) {
          __builtin_prefetch(tc + 2 * kL, 0, 3);
          __builtin_prefetch(pc + 2 * kL, 0, 3);
        }
        if (g) __builtin_prefetch(g + base + c * step_k, 1, 3);
        if (avail >= kKlAhead + kL) {
          __builtin_prefetch(tc + kKlAhead, 0, 1);
          __builtin_prefetch(pc + kKlAhead, 0, 1);
          if (g) __builtin_prefetch(g + base + c * step_k + kKlAhead, 1, 1);
        }
        if (later) later->one();  // the next 16-bit unit's raw runs
      } else if constexpr (kUnit) {
        // The next kQ groups' lines of this class, student, teacher and
        // gradient, into L1 as runs of kQ lines (bench/plane-runs.c: with the
        // arithmetic between, the runs come no sooner unasked).
        float* gn = g ? g + base + c * step_k + kQ * kL : nullptr;
        for_each_q<kQ>([&](auto q) __attribute__((always_inline)) {
          if (avail >= (kQ + q + 1) * kL) {
            __builtin_prefetch(tc + (kQ + q) * kL, 0, 3);
            __builtin_prefetch(pc + (kQ + q) * kL, 0, 3);
            if (gn) __builtin_prefetch(gn + q * kL, 1, 3);
          }
        });
        if (later) later->one();
      }
      for_each_q<kQ>([&](auto q) __attribute__((always_inline)) {
        float* __restrict wb = wbq + q * qn;
        float* __restrict ub = ubq + q * qn;
        float* __restrict lb = lbq + q * qn;
        for (int l = 0; l < kL; ++l) {
          const float tv = tc[(q * kL + l) * sc], pv = pc[(q * kL + l) * sc];
          // a + al = T - P exactly (Knuth's two-sum: no product, so nothing
          // for the compiler to contract)
          const float a = tv - pv;
          const float bb = a - tv;
          const float al = (tv - (a - bb)) - (pv + bb);
          const float w = vexpf_nonpos((tv - mt[q][l]) * itau);  // tv - mt <= 0 or NaN
          wb[c * kL + l] = w;
          ub[c * kL + l] = a;
          lb[c * kL + l] = al;
          s8[q][l] += w;
          mu[q][l] += w * a;
          lo[q][l] = std::min(lo[q][l], a);
          hi[q][l] = std::max(hi[q][l], a);
        }
      });
    }
    for (int q = 0; q < kQ; ++q) {
      add_widened<kL>(sw[q], s8[q]);
    }
  }
  // The centre mid = sum w a / S: any value gives the same KL (r below takes
  //    up the difference); this one keeps every e_c within the span of d, off
  //    by at most (n + 1) 2^-24 max |a|. kNear: where every cell's reach (the
  //    farthest a_c from mid, over tau) is at most kNearSpan, every |e_c| <= 1,
  //    so kl_gap takes its polynomial branch for all of them and its
  //    exponential is skipped: the same bits, a third less work in step 3
  //    (heads whose student is near its teacher, and the box KL's bins at
  //    boxTemperature 10: on bench/common.js's heads 100 % of the groups, where
  //    a span of at most kNearSpan took 16 %; anchor-free YOLOv8s 0.92-0.96x
  //    its time, bench/compare.js). The span so of a cell's d and the reach
  //    are taken with a margin for mid's rounding ((n + 2) 2^-24 max |a|, a
  //    bound on the fp32 sum's error and the quotient's, and on al_c), so that
  //    every |e_c| <= reach <= so: <= 1 where kNear, <= kKlSpread (far inside
  //    kl_gap_bounded's range) on every cell kl_cells keeps.
  constexpr float kNearSpan = 0.99f;
  const float margin = static_cast<float>(n + 2) * 0x1p-24f;
  double inv_s[kQ][kL];  // 1 / S per cell (x and r / S here, the gradient factor below)
  for (int q = 0; q < kQ; ++q) {
    float mid[kL];
    int32_t near_l[kL];  // per lane, then and-ed: a && chain over the lanes kept this loop scalar
    // (Per-cell loops here and below: `unroll 1` leaves them to GCC's loop
    // vectorizer; unrolled first, as by default, they compiled to lane
    // extractions and scalar arithmetic on AVX2. Same values.)
#pragma GCC unroll 1
    for (int l = 0; l < kL; ++l) {
      mid[l] = mu[q][l] / static_cast<float>(sw[q][l]);
      const float slack = margin * std::max(std::fabs(lo[q][l]), std::fabs(hi[q][l]));
      so[q * kL + l] = ((hi[q][l] - lo[q][l]) + slack) * itau;
      // |a_c - mid| <= max(|hi - mid|, |mid - lo|) for every class (each fp32
      // difference and product rounds by at most 2^-24 of itself: inside
      // kNearSpan's 1 % slack); about half the span where mid is mid-range.
      const float reach = (std::max(std::fabs(hi[q][l] - mid[l]), std::fabs(mid[l] - lo[q][l])) + slack) * itau;
      near_l[l] = reach <= kNearSpan ? 1 : 0;  // NaN: 0
    }
    int32_t near_all = 1;
    for (int l = 0; l < kL; ++l) near_all &= near_l[l];
    // 3. Centred differences e_c, G and r; h_c = gap(e_c) - e_c = expm1(-e_c) kept.
    double gs[kL], rs[kL];
    for (int l = 0; l < kL; ++l) gs[l] = rs[l] = 0.0;
    float* wb = wbq + q * qn;
    float* ub = ubq + q * qn;
    float* lb = lbq + q * qn;
    if (near_all != 0) {
      kl_centred_pass<kL, true>(n, mid, itau, wb, ub, lb, gs, rs);
    } else {
      kl_centred_pass<kL, false>(n, mid, itau, wb, ub, lb, gs, rs);
    }
    // 4. Per cell: x and r / S (the KL from them: kl_block_f32_body, over the
    //    block), the gradient factor coef * m * tau / (S (1 + x)).
#pragma GCC unroll 1
    for (int l = 0; l < kL; ++l) {
      inv_s[q][l] = 1.0 / sw[q][l];
      const double x = (gs[l] - rs[l]) * inv_s[q][l];
      xo[q * kL + l] = x;
      ro[q * kL + l] = rs[l] * inv_s[q][l];
    }
  }
  if (g) {
    double fs[kQ][kL];
    int64_t fits[kQ][kL];  // the factor is 0 or within [2^-60, 2^60] (below); as wide as a double
    float ff[kQ][kL], xf[kQ][kL];
    int64_t in_all = 1;
    for (int q = 0; q < kQ; ++q) {
#pragma GCC unroll 1
      for (int l = 0; l < kL; ++l) {
        const double x = xo[q * kL + l];
        fs[q][l] = kl_centred_factor(coef * static_cast<double>(m[q * kL + l]), tau, inv_s[q][l], x);
        // In this loop: a loop of its own (or a && chain) compiled to a chain of
        // scalar compares, 7 % of the box KL's time (perf).
        const double a = std::fabs(fs[q][l]);
        fits[q][l] =
            static_cast<int64_t>(a == 0.0) | (static_cast<int64_t>(a >= 0x1p-60) & static_cast<int64_t>(a <= 0x1p60));
        ff[q][l] = static_cast<float>(fs[q][l]);
        xf[q][l] = static_cast<float>(x);
      }
      for (int l = 0; l < kL; ++l) in_all &= fits[q][l];
    }
    // In fp32 for a cell whose factor is 0 or within [2^-60, 2^60]: f (w
    // (h - x)) has its products' rounding (w (h - x) rounded where it is a
    // normal float, which it is unless the element is below 2^-66 f: an
    // absolute error under 2^-150 f), and the element is as small as the
    // double path would round it. Otherwise (NaN / Inf cells, extreme
    // coefficients or weights) in double. One loop for a group whose every
    // factor fits, the usual case.
    if (in_all != 0) {
      for (int64_t c = 0; c < n; ++c) {
        float* gc = g + base + c * step_k;
        for_each_q<kQ>([&](auto q) __attribute__((always_inline)) {
          const float* __restrict wb = wbq + q * qn;
          const float* __restrict ub = ubq + q * qn;
          for (int l = 0; l < kL; ++l) gc[(q * kL + l) * sc] = ff[q][l] * (wb[c * kL + l] * (ub[c * kL + l] - xf[q][l]));
        });
      }
    } else {
      // Each lane by its own factor: a cell in range gets the fp32 expression
      // above (the same bits as in a group whose every factor fits), so that a
      // neighbour's factor (a teacher weight of 1e-30 makes one under 2^-60)
      // cannot change a cell's gradient (test/numerics-edge.test.js 'a neighbour
      // whose gradient factor leaves [2^-60, 2^60]').
      for (int64_t c = 0; c < n; ++c) {
        float* gc = g + base + c * step_k;
        for (int q = 0; q < kQ; ++q) {
          const float* wb = wbq + q * qn;
          const float* ub = ubq + q * qn;
          for (int l = 0; l < kL; ++l) {
            const float w = wb[c * kL + l], u = ub[c * kL + l];
            const float single = ff[q][l] * (w * (u - xf[q][l]));
            const float twice =
                static_cast<float>(fs[q][l] * static_cast<double>(w) * (static_cast<double>(u) - xo[q * kL + l]));
            gc[(q * kL + l) * sc] = fits[q][l] != 0 ? single : twice;
          }
        }
      }
    }
  }
}

// kl_group<8, 1, true> in AVX2 intrinsics: the KL steps of 8-cell groups of
// unit-stride cells (the box KL's 16 bins a side, 'kl' up to kKl8MaxBins
// classes), one group at a time. Each lane sees the operations kl_group's
// lanes see, in the same order and with the same fused multiply-adds (GCC
// contracts x * y + z there under its default -ffp-contract=fast, as the
// x86-64-v3 and v4 clones of kl_block_f32_narrow compiled it): the same bits
// (test/kl-lanes.test.js compares it with 16-lane groups, which do not come
// here; test/numerics-edge.test.js, test/anchor-free.test.js and the variants'
// tests with the reference). What differs is what GCC made of the template at
// 8 lanes: its steps took 131 instructions per 8 values of the box KL
// (callgrind), with the pointer arithmetic of every class step, the prefetch
// conditions tested per step and per-group set-up; here the prefetch offsets
// are chosen once per group (offset 0 where kl_group skips the prefetch: a
// line the step reads anyway) and the constants are loaded once per call.
// BENCHMARKS.md has the measurements and the forms that were no faster. Only
// called where the CPU runs the x86-64-v3 or v4 clones (kl8_usable): a
// baseline build's template rounds each product. GCC only (clang fuses
// within an expression only, so its template would round differently).
constexpr int64_t kKl8MaxBins = 128;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
bool kl8_usable() {
  // where the x86-64-v3 (or v4) clones run: kl_group's lanes fused as here
  static const bool yes = YD_CPU_SUPPORTS("x86-64-v3");
  return yes;
}
__attribute__((target("avx2,fma"), always_inline)) inline __m256d kl8_widen_lo(__m256 v) {
  return _mm256_cvtps_pd(_mm256_castps256_ps128(v));
}
__attribute__((target("avx2,fma"), always_inline)) inline __m256d kl8_widen_hi(__m256 v) {
  return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}
// vexpf_impl's steps (vec_math.h) for x <= 0, as its fused multiply-adds:
// tt = x log2e + magic (k = round(x / ln 2) in its low bits), 2^k from tt's
// bits, and the polynomial of r = x - k ln 2. For kl_groups8's two
// exponentials (step 2's weights, step 3's e^-e).
__attribute__((target("avx2,fma"), always_inline)) inline __m256 kl8_exp_scale(__m256 tt) {
  const __m256i bias = _mm256_set1_epi32(static_cast<int32_t>(uint32_t{127} - uint32_t{0x4B400000}));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(tt), bias), 23));
}
__attribute__((target("avx2,fma"), always_inline)) inline __m256 kl8_exp_poly(__m256 r) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(0x1.6ac74ep-10f), r, _mm256_set1_ps(0x1.123de0p-7f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0x1.555858p-5f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0x1.55548cp-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0x1.fffffcp-2f));
  q = _mm256_fmadd_ps(q, r, one);
  return _mm256_fmadd_ps(q, r, one);
}
// Lanes (bits 0-3) whose factor f is 0 or within [2^-60, 2^60] (NaN: none).
__attribute__((target("avx2,fma"), always_inline)) inline int kl8_fits(__m256d f) {
  const __m256d a = _mm256_and_pd(f, _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFll)));
  const __m256d in = _mm256_and_pd(_mm256_cmp_pd(a, _mm256_set1_pd(0x1p-60), _CMP_GE_OQ),
                                   _mm256_cmp_pd(a, _mm256_set1_pd(0x1p60), _CMP_LE_OQ));
  return _mm256_movemask_pd(_mm256_or_pd(in, _mm256_cmp_pd(a, _mm256_setzero_pd(), _CMP_EQ_OQ)));
}
// v / tau as kl_group computes it, v * (1 / tau) in fp32; kUnitTau: tau = 1,
// where that product is v itself (NaN included) and is left out (the
// default temperature of clsTarget 'kl': two products of about 26 per class
// step on the FMA pipes).
template <bool kUnitTau>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 kl8_over_tau(__m256 v, __m256 vitau) {
  if constexpr (kUnitTau) {
    return v;
  } else {
    return _mm256_mul_ps(v, vitau);
  }
}
// Step 3 of kl_group for one 8-cell group (kl_centred_pass): e_c, G and r
// (fp32 partials of kKlChunk values, then double), h_c in a_c's place.
// kNear: every |e_c| <= 1, kl_gap_near alone; else kl_gap_bounded, whose
// exponential's last product GCC fuses with the subtraction of 1 (as here).
template <bool kNear, bool kUnitTau>
__attribute__((target("avx2,fma"), always_inline)) inline void kl8_centred(
    int64_t n, __m256 mid, __m256 vitau, const float* __restrict wb, float* __restrict ub, const float* __restrict lb,
    __m256d& gs_lo, __m256d& gs_hi, __m256d& rs_lo, __m256d& rs_hi) {
  constexpr int kL = 8;
  const __m256 k0 = _mm256_set1_ps(0x1.7416f2p-19f), k1 = _mm256_set1_ps(0x1.a9622ap-16f),
               k2 = _mm256_set1_ps(0x1.a028cap-13f), k3 = _mm256_set1_ps(0x1.6bffb0p-10f),
               k4 = _mm256_set1_ps(0x1.1110e0p-7f), k5 = _mm256_set1_ps(0x1.55557ap-5f),
               k6 = _mm256_set1_ps(0x1.555556p-3f), k7 = _mm256_set1_ps(0.5f);
  gs_lo = gs_hi = rs_lo = rs_hi = _mm256_setzero_pd();
  for (int64_t c0 = 0; c0 < n; c0 += kKlChunk) {
    const int64_t c1 = std::min(n, c0 + kKlChunk);
    __m256 g8 = _mm256_setzero_ps(), r8 = _mm256_setzero_ps();
    for (int64_t c = c0; c < c1; ++c) {
      const __m256 e = kl8_over_tau<kUnitTau>(
          _mm256_add_ps(_mm256_sub_ps(_mm256_load_ps(ub + c * kL), mid), _mm256_load_ps(lb + c * kL)), vitau);
      // kl_gap_near: e^2 expm1_tail_poly(-e), its steps q * (-e) + k as -(q e) + k
      __m256 q = _mm256_fnmadd_ps(k0, e, k1);
      q = _mm256_fnmadd_ps(q, e, k2);
      q = _mm256_fnmadd_ps(q, e, k3);
      q = _mm256_fnmadd_ps(q, e, k4);
      q = _mm256_fnmadd_ps(q, e, k5);
      q = _mm256_fnmadd_ps(q, e, k6);
      q = _mm256_fnmadd_ps(q, e, k7);
      __m256 gap = _mm256_mul_ps(_mm256_mul_ps(e, e), q);
      if constexpr (!kNear) {
        // (vexpf_bounded(-e) - 1) + e where |e| > 1 (NaN too): -e in the FMAs' signs
        const __m256 magic = _mm256_set1_ps(12582912.0f);
        const __m256 tt = _mm256_fnmadd_ps(e, _mm256_set1_ps(1.44269504088896341f), magic);
        const __m256 kd = _mm256_sub_ps(tt, magic);
        const __m256 r = _mm256_fnmadd_ps(kd, _mm256_set1_ps(1.428606765330187e-06f),
                                          _mm256_fnmsub_ps(kd, _mm256_set1_ps(0.693145751953125f), e));
        const __m256 large =
            _mm256_add_ps(_mm256_fmadd_ps(kl8_exp_poly(r), kl8_exp_scale(tt), _mm256_set1_ps(-1.0f)), e);
        const __m256 small = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), e), _mm256_set1_ps(1.0f), _CMP_LE_OQ);
        gap = _mm256_blendv_ps(large, gap, small);
      }
      const __m256 w = _mm256_load_ps(wb + c * kL);
      _mm256_store_ps(ub + c * kL, _mm256_sub_ps(gap, e));
      g8 = _mm256_fmadd_ps(w, gap, g8);
      r8 = _mm256_fmadd_ps(w, e, r8);
    }
    gs_lo = _mm256_add_pd(gs_lo, kl8_widen_lo(g8));
    gs_hi = _mm256_add_pd(gs_hi, kl8_widen_hi(g8));
    rs_lo = _mm256_add_pd(rs_lo, kl8_widen_lo(r8));
    rs_hi = _mm256_add_pd(rs_hi, kl8_widen_hi(r8));
  }
}
// The full groups from cell j of a kl_block_f32_body block (its arguments);
// returns the first cell after them. kUnitTau: itau is 1 (kl8_over_tau).
template <bool kPf, bool kUnitTau>
__attribute__((target("avx2,fma"), noinline)) int64_t kl_groups8_tau(
    const float* __restrict p, const float* __restrict t, float* __restrict g, int64_t b0, int64_t j, int64_t len,
    int64_t n, int64_t step_k, double tau, float itau, const float* __restrict m, double coef,
    double* __restrict xb, double* __restrict rb, float* __restrict sb, int64_t next) {
  constexpr int kL = 8;
  alignas(32) float wb[kKl8MaxBins * kL], ub[kKl8MaxBins * kL], lb[kKl8MaxBins * kL];
  const __m256 vitau = _mm256_set1_ps(itau);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  // vexpf_nonpos (vec_math.h): its range reduction's constants
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), magic = _mm256_set1_ps(12582912.0f);
  const __m256 ln2_hi = _mm256_set1_ps(0.693145751953125f), ln2_lo = _mm256_set1_ps(1.428606765330187e-06f);
  const __m256 low = _mm256_set1_ps(-86.9f);
  const float margin = static_cast<float>(n + 2) * 0x1p-24f;
  const __m256 vmargin = _mm256_set1_ps(margin), near_span = _mm256_set1_ps(0.99f);
  const int64_t sk = step_k;
  for (; j + kL <= len; j += kL) {
    const float* t0 = t + b0 + j;
    const float* p0 = p + b0 + j;
    float* g0 = g ? g + b0 + j : nullptr;
    const float* gp = g0 ? g0 : t0;  // prefetched for writing
    const int64_t avail = len + next - j;
    // kl_group's prefetches (step 2): its conditions once per group
    const int64_t near_pf = avail >= 3 * kL ? 2 * kL : 0;
    const int64_t far_pf = avail >= kKlAhead + kL ? kKlAhead : 0;
    // 1. The teacher's maximum.
    __m256 mt = _mm256_set1_ps(-INFINITY);
    for (int64_t c = 0; c < n; ++c) mt = _mm256_max_ps(_mm256_loadu_ps(t0 + c * sk), mt);
    // 2. Weights, a + al, S, sum w a, range of a.
    __m256d sw_lo = _mm256_setzero_pd(), sw_hi = _mm256_setzero_pd();
    __m256 mu = _mm256_setzero_ps(), lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY);
    for (int64_t c0 = 0; c0 < n; c0 += kKlChunk) {
      const int64_t c1 = std::min(n, c0 + kKlChunk);
      __m256 s8 = _mm256_setzero_ps();
      for (int64_t c = c0; c < c1; ++c) {
        const float* tc = t0 + c * sk;
        const float* pc = p0 + c * sk;
        // (offset 0: the line this step reads or writes anyway; no gradient: the teacher's)
        if constexpr (kPf) {
          __builtin_prefetch(tc + near_pf, 0, 3);
          __builtin_prefetch(pc + near_pf, 0, 3);
          __builtin_prefetch(gp + c * sk, 1, 3);
          __builtin_prefetch(gp + c * sk + far_pf, 1, 1);
          __builtin_prefetch(tc + far_pf, 0, 1);
          __builtin_prefetch(pc + far_pf, 0, 1);
        }
        const __m256 tv = _mm256_loadu_ps(tc), pv = _mm256_loadu_ps(pc);
        const __m256 a = _mm256_sub_ps(tv, pv);
        const __m256 bb = _mm256_sub_ps(a, tv);
        const __m256 al = _mm256_sub_ps(_mm256_sub_ps(tv, _mm256_sub_ps(a, bb)), _mm256_add_ps(pv, bb));
        const __m256 x = kl8_over_tau<kUnitTau>(_mm256_sub_ps(tv, mt), vitau);
        // vexpf_nonpos(x): 0 below -86.9 (the clamped argument's value is then unused)
        const __m256 tt = _mm256_fmadd_ps(x, log2e, magic);
        const __m256 kd = _mm256_sub_ps(tt, magic);
        const __m256 r = _mm256_fnmadd_ps(kd, ln2_lo, _mm256_fnmadd_ps(kd, ln2_hi, x));
        const __m256 q = kl8_exp_poly(r), scale = kl8_exp_scale(tt);
        const __m256 w = _mm256_and_ps(_mm256_cmp_ps(x, low, _CMP_NLT_UQ), _mm256_mul_ps(q, scale));
        _mm256_store_ps(wb + c * kL, w);
        _mm256_store_ps(ub + c * kL, a);
        _mm256_store_ps(lb + c * kL, al);
        s8 = _mm256_add_ps(s8, w);
        mu = _mm256_fmadd_ps(w, a, mu);
        lo = _mm256_min_ps(a, lo);
        hi = _mm256_max_ps(a, hi);
      }
      sw_lo = _mm256_add_pd(sw_lo, kl8_widen_lo(s8));
      sw_hi = _mm256_add_pd(sw_hi, kl8_widen_hi(s8));
    }
    // The centre, the span of d and the reach (kl_group's comments).
    const __m256 swf = _mm256_set_m128(_mm256_cvtpd_ps(sw_hi), _mm256_cvtpd_ps(sw_lo));
    const __m256 mid = _mm256_div_ps(mu, swf);
    const __m256 absmax = _mm256_max_ps(_mm256_andnot_ps(sign, hi), _mm256_andnot_ps(sign, lo));
    const __m256 so = _mm256_mul_ps(_mm256_fmadd_ps(absmax, vmargin, _mm256_sub_ps(hi, lo)), vitau);
    const __m256 far = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(mid, lo)),
                                     _mm256_andnot_ps(sign, _mm256_sub_ps(hi, mid)));
    const __m256 reach = _mm256_mul_ps(_mm256_fmadd_ps(absmax, vmargin, far), vitau);
    const bool near = _mm256_movemask_ps(_mm256_cmp_ps(reach, near_span, _CMP_LE_OQ)) == 0xFF;  // kl_group's
    _mm256_storeu_ps(sb + j, so);
    // 3. Centred differences e_c, G and r; h_c = kl_gap(e_c) - e_c.
    __m256d gs_lo, gs_hi, rs_lo, rs_hi;
    if (near) {
      kl8_centred<true, kUnitTau>(n, mid, vitau, wb, ub, lb, gs_lo, gs_hi, rs_lo, rs_hi);
    } else {
      kl8_centred<false, kUnitTau>(n, mid, vitau, wb, ub, lb, gs_lo, gs_hi, rs_lo, rs_hi);
    }
    // 4. x, r / S; the gradient factor coef m tau / (S (1 + x)).
    const __m256d one_d = _mm256_set1_pd(1.0);
    const __m256d inv_lo = _mm256_div_pd(one_d, sw_lo), inv_hi = _mm256_div_pd(one_d, sw_hi);
    const __m256d x_lo = _mm256_mul_pd(_mm256_sub_pd(gs_lo, rs_lo), inv_lo);
    const __m256d x_hi = _mm256_mul_pd(_mm256_sub_pd(gs_hi, rs_hi), inv_hi);
    _mm256_storeu_pd(xb + j, x_lo);
    _mm256_storeu_pd(xb + j + 4, x_hi);
    _mm256_storeu_pd(rb + j, _mm256_mul_pd(rs_lo, inv_lo));
    _mm256_storeu_pd(rb + j + 4, _mm256_mul_pd(rs_hi, inv_hi));
    if (!g0) continue;
    const __m256d ct = _mm256_set1_pd(coef), vt = _mm256_set1_pd(tau);
    const __m256 mv = _mm256_loadu_ps(m + j);
    // kl_centred_factor(coef m, tau, inv_s, x) = coef m tau inv_s / (1 + x)
    const __m256d f_lo = _mm256_div_pd(
        _mm256_mul_pd(_mm256_mul_pd(_mm256_mul_pd(ct, kl8_widen_lo(mv)), vt), inv_lo), _mm256_add_pd(one_d, x_lo));
    const __m256d f_hi = _mm256_div_pd(
        _mm256_mul_pd(_mm256_mul_pd(_mm256_mul_pd(ct, kl8_widen_hi(mv)), vt), inv_hi), _mm256_add_pd(one_d, x_hi));
    // 0 or within [2^-60, 2^60]: the fp32 expression (kl_group)
    const int fit_lo = kl8_fits(f_lo), fit_hi = kl8_fits(f_hi);
    const __m256 ff = _mm256_set_m128(_mm256_cvtpd_ps(f_hi), _mm256_cvtpd_ps(f_lo));
    const __m256 xf = _mm256_set_m128(_mm256_cvtpd_ps(x_hi), _mm256_cvtpd_ps(x_lo));
    if ((fit_lo & fit_hi) == 0xF) {
      for (int64_t c = 0; c < n; ++c) {
        const __m256 d = _mm256_sub_ps(_mm256_load_ps(ub + c * kL), xf);
        _mm256_storeu_ps(g0 + c * sk, _mm256_mul_ps(ff, _mm256_mul_ps(_mm256_load_ps(wb + c * kL), d)));
      }
    } else {
      // Each lane by its own factor (kl_group's second loop)
      alignas(32) double fs[kL], xo[kL];
      alignas(32) float ffl[kL], xfl[kL];
      _mm256_store_pd(fs, f_lo), _mm256_store_pd(fs + 4, f_hi);
      _mm256_store_pd(xo, x_lo), _mm256_store_pd(xo + 4, x_hi);
      _mm256_store_ps(ffl, ff), _mm256_store_ps(xfl, xf);
      const int fit = fit_lo | (fit_hi << 4);
      for (int64_t c = 0; c < n; ++c) {
        for (int l = 0; l < kL; ++l) {
          const float w = wb[c * kL + l], u = ub[c * kL + l];
          g0[c * sk + l] = (fit >> l) & 1 ? ffl[l] * (w * (u - xfl[l]))
                                          : static_cast<float>(fs[l] * static_cast<double>(w) *
                                                               (static_cast<double>(u) - xo[l]));
        }
      }
    }
  }
  return j;
}
template <bool kPf>
__attribute__((target("avx2,fma"), noinline)) int64_t kl_groups8(
    const float* __restrict p, const float* __restrict t, float* __restrict g, int64_t b0, int64_t j, int64_t len,
    int64_t n, int64_t step_k, double tau, float itau, const float* __restrict m, double coef,
    double* __restrict xb, double* __restrict rb, float* __restrict sb, int64_t next) {
  return itau == 1.0f ? kl_groups8_tau<kPf, true>(p, t, g, b0, j, len, n, step_k, tau, itau, m, coef, xb, rb, sb, next)
                      : kl_groups8_tau<kPf, false>(p, t, g, b0, j, len, n, step_k, tau, itau, m, coef, xb, rb, sb, next);
}
// kl_groups8 over lines of 16 cells gathered first (where kl_gather says): each
// 16-cell line of every class plane is copied (student and teacher) into a
// contiguous buffer, the two 8-cell groups run from it (kl_groups8 without
// prefetches: the same operations, the same bits; test/kl-lanes.test.js), and
// their gradient lines are written back a whole line per class. Reading the
// planes straight, a group reads half a line of each of n planes and the next
// group the other half, 3 n lines later; where the stride is a multiple of
// 4 KB all those lines fall in one L1 set and are evicted in between, as are
// the lines step 2 prefetches.
__attribute__((target("avx2,fma"), noinline)) int64_t kl_groups16_gathered(
    const float* __restrict p, const float* __restrict t, float* __restrict g, int64_t b0, int64_t j, int64_t len,
    int64_t n, int64_t step_k, double tau, float itau, const float* __restrict m, double coef,
    double* __restrict xb, double* __restrict rb, float* __restrict sb, int64_t next) {
  constexpr int kW = 16;
  alignas(64) float tb[kKl8MaxBins * kW], pb[kKl8MaxBins * kW], gb[kKl8MaxBins * kW];
  const int64_t sk = step_k;
  for (; j + kW <= len; j += kW) {
    const float* t0 = t + b0 + j;
    const float* p0 = p + b0 + j;
    float* g0 = g ? g + b0 + j : nullptr;
    const float* gp = g0 ? g0 : t0;  // prefetched for writing
    const int64_t avail = len + next - j;
    const int64_t far_pf = avail >= kKlAhead + kW ? kKlAhead : 0;
    for (int64_t c = 0; c < n; ++c) {
      const float* tc = t0 + c * sk;
      const float* pc = p0 + c * sk;
      __builtin_prefetch(tc + far_pf, 0, 1);
      __builtin_prefetch(pc + far_pf, 0, 1);
      __builtin_prefetch(gp + c * sk + far_pf, 1, 1);
      _mm256_store_ps(tb + c * kW, _mm256_loadu_ps(tc));
      _mm256_store_ps(tb + c * kW + 8, _mm256_loadu_ps(tc + 8));
      _mm256_store_ps(pb + c * kW, _mm256_loadu_ps(pc));
      _mm256_store_ps(pb + c * kW + 8, _mm256_loadu_ps(pc + 8));
    }
    kl_groups8<false>(pb, tb, g0 ? gb : nullptr, 0, 0, kW, n, kW, tau, itau, m + j, coef, xb + j, rb + j, sb + j, 0);
    if (g0) {
      for (int64_t c = 0; c < n; ++c) {
        _mm256_storeu_ps(g0 + c * sk, _mm256_load_ps(gb + c * kW));
        _mm256_storeu_ps(g0 + c * sk + 8, _mm256_load_ps(gb + c * kW + 8));
      }
    }
  }
  return j;
}
#else
bool kl8_usable() { return false; }
template <bool kPf>
int64_t kl_groups8(const float*, const float*, float*, int64_t, int64_t j, int64_t, int64_t, int64_t, double, float,
                   const float*, double, double*, double*, float*, int64_t) {
  return j;
}
int64_t kl_groups16_gathered(const float*, const float*, float*, int64_t, int64_t j, int64_t, int64_t, int64_t,
                             double, float, const float*, double, double*, double*, float*, int64_t) {
  return j;
}
#endif

constexpr int kKlSide = 4;  // groups side by side (kl_group's kQ)
constexpr int64_t kKlSideClasses = 40;
template <int kL, int kQ, bool kUnit>
__attribute__((always_inline)) inline double kl_block_f32_body(
    const float* __restrict p, const float* __restrict t, float* __restrict g, int64_t base, int64_t len,
    int64_t k0, int64_t n, int64_t step_k, int64_t step_c, double tau, const float* __restrict m, double coef,
    unsigned char* __restrict ok, int64_t next, UnitStreams* later) {
  // next: cells of the unit after this block (prefetched by the groups' step 2).
  thread_local std::vector<float> wbuf, ubuf, lbuf;
  if (wbuf.size() < static_cast<size_t>(n * kL * kQ)) {
    wbuf.resize(static_cast<size_t>(n * kL * kQ));
    ubuf.resize(static_cast<size_t>(n * kL * kQ));
    lbuf.resize(static_cast<size_t>(n * kL * kQ));
  }
  const double inv_tau = 1.0 / tau;
  // 1 / tau as a float for the steps; outside [2^-100, 2^100] (temperatures
  // under 1e-30 or over 1e30) the cells go to kl_block or kl_taylor_cell.
  const bool f32 = inv_tau >= 0x1p-100 && inv_tau <= 0x1p100;
  const float itau = static_cast<float>(inv_tau);
  const int64_t b0 = base + k0 * step_k;  // value 0 of cell 0
  // Per cell: x, r / S and the span of d (kl_group), for the KL and ok below.
  double xb[kKlBlock], rb[kKlBlock];
  float sb[kKlBlock];
  int64_t j = 0;
  // 8-cell groups of unit-stride cells with up to kKl8MaxBins values each,
  // where the CPU runs the x86-64-v3 (or v4) clones, and no 16-bit or
  // cell-major unit's runs are streamed by the steps: kl_groups8, one group
  // at a time, all of them (the same bits as kl_group).
  if (kL == 8 && kUnit && !later && n <= kKl8MaxBins && kl8_usable()) {
    if (kl_gather(step_k, n)) {
      j = kl_groups16_gathered(p, t, g, b0, j, len, n, step_k, tau, itau, m, coef, xb, rb, sb, next);
    }
    j = kl_groups8<true>(p, t, g, b0, j, len, n, step_k, tau, itau, m, coef, xb, rb, sb, next);
  }
  if constexpr (kUnit) {
    // Four groups side by side where a cell has 40 classes or more: on YOLOv5s
    // heads at 640 (B = 16, 2 threads) C = 80 took 0.87-0.91x its time so, C =
    // 56 to 365 0.93-1.0x, C = 40-48 1.0-1.03x, C = 32 1.03-1.07x and C =
    // 20-24 1.11x; the box KL's 16 bins a side 1.07-1.08x (BENCHMARKS.md, the
    // KL's reads in runs of four lines). (kl_groups8's single groups, where
    // they run, took 0.92-0.95x the time of these at C = 80.)
    if (n >= kKlSideClasses) {
      for (; j + kQ * kL <= len; j += kQ * kL) {
        kl_group<kL, kQ, true>(p, t, g, b0 + j, n, step_k, step_c, tau, itau, m + j, coef, wbuf.data(),
                               ubuf.data(), lbuf.data(), xb + j, rb + j, sb + j, len + next - j, later);
      }
    }
  }
  for (; j + kL <= len; j += kL) {
    kl_group<kL, 1, kUnit>(p, t, g, b0 + j * step_c, n, step_k, step_c, tau, itau, m + j, coef, wbuf.data(),
                           ubuf.data(), lbuf.data(), xb + j, rb + j, sb + j, len + next - j, later);
  }
  if (j < len) {
    // The last rest < 16 cells as a group of 16 in a unit-stride copy, the
    // last cell repeated in the lanes past them: every cell's results are
    // the bits it would have in a full group (a one-lane version of the
    // steps rounds differently: its fp32 sums over the classes vectorize as
    // in-order additions of rounded products, where the 16 lanes fuse them),
    // so a cell's results do not depend on where a unit's groups fall
    // (test/variants.test.js, cell-major layouts against nchw).
    const int64_t rest = len - j;
    thread_local std::vector<float> cp, ct, cg;
    if (cp.size() < static_cast<size_t>(n * kL)) {
      cp.resize(static_cast<size_t>(n * kL));
      ct.resize(static_cast<size_t>(n * kL));
      cg.resize(static_cast<size_t>(n * kL));
    }
    float ml[kL], sl[kL];
    double xl[kL], rl[kL];
    for (int l = 0; l < kL; ++l) ml[l] = m[j + std::min<int64_t>(l, rest - 1)];
    for (int64_t c = 0; c < n; ++c) {
      for (int l = 0; l < kL; ++l) {
        const int64_t at = b0 + c * step_k + (j + std::min<int64_t>(l, rest - 1)) * step_c;
        cp[c * kL + l] = p[at];
        ct[c * kL + l] = t[at];
      }
    }
    kl_group<kL, 1, true>(cp.data(), ct.data(), g ? cg.data() : nullptr, 0, n, kL, 1, tau, itau, ml, coef,
                          wbuf.data(), ubuf.data(), lbuf.data(), xl, rl, sl, 0, later);
    for (int64_t l = 0; l < rest; ++l) {
      xb[j + l] = xl[l], rb[j + l] = rl[l], sb[j + l] = sl[l];
      if (g) {
        for (int64_t c = 0; c < n; ++c) g[b0 + c * step_k + (j + l) * step_c] = cg[c * kL + l];
      }
    }
  }
  // Per cell, what it needs: a span of d over kKlSpreadF32 (within kKlSpread,
  // e^(+-e) stays in float's range, but the gradient of a class on which
  // student and teacher agree can lose digits; tiny temperatures land here)
  // or a non-finite x (NaN or Inf in the cell) goes to kl_block, a span under
  // kKlTiny (huge temperatures: e^2 would leave float's range) to
  // kl_taylor_cell; the others are done, tau^2 (r / S + log1p(x)) their KL.
  for (int64_t i = 0; i < len; ++i) {
    const bool fine = std::isfinite(xb[i]) && sb[i] <= static_cast<float>(kKlSpreadF32);
    ok[i] = !fine ? kKlDouble : sb[i] <= static_cast<float>(kKlTiny) ? kKlTaylor : f32 ? kKlDone : kKlDouble;
  }
  // kl_log1p's two branches are both computed in a vectorized loop; where
  // every x of the block is at most 1 (a student near its teacher, the box
  // KL's bins) its first, log1p_, alone gives the same values: on anchor-free
  // YOLOv8s heads the two had taken a tenth of the kernel's time (perf).
  double kv[kKlBlock];
  int32_t small = 1;
  for (int64_t i = 0; i < len; ++i) small &= xb[i] <= 1.0 ? 1 : 0;  // NaN: 0
  if (small != 0) {
    for (int64_t i = 0; i < len; ++i) {  // vectorized
      const double kl = kl_cell_value(rb[i] + log1p_(xb[i]), tau);
      kv[i] = ok[i] == kKlDone ? static_cast<double>(m[i]) * kl : 0.0;
    }
  } else {
    for (int64_t i = 0; i < len; ++i) {  // vectorized
      const double kl = kl_cell_value(rb[i] + kl_log1p(xb[i]), tau);
      kv[i] = ok[i] == kKlDone ? static_cast<double>(m[i]) * kl : 0.0;
    }
  }
  // Four partial sums in a fixed order (one chain of dependent additions per
  // cell was a twentieth of the steps' time).
  double s4[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= len; i += 4) {
    for (int l = 0; l < 4; ++l) s4[l] += kv[i + l];
  }
  for (; i < len; ++i) s4[0] += kv[i];
  return (s4[0] + s4[1]) + (s4[2] + s4[3]);
}

// kl_block_f32_body for kL-cell groups, unit-stride cells (side by side) or strided ones.
template <int kL>
__attribute__((always_inline)) inline double kl_block_f32_lanes(
    const float* __restrict p, const float* __restrict t, float* __restrict g, int64_t base, int64_t len,
    int64_t k0, int64_t n, int64_t step_k, int64_t step_c, double tau, const float* __restrict m, double coef,
    unsigned char* __restrict ok, int64_t next, UnitStreams* later) {
  return step_c == 1
             ? kl_block_f32_body<kL, kKlSide, true>(p, t, g, base, len, k0, n, step_k, step_c, tau, m, coef, ok,
                                                     next, later)
             : kl_block_f32_body<kL, 1, false>(p, t, g, base, len, k0, n, step_k, step_c, tau, m, coef, ok, next,
                                               later);
}
// One clone set per group width (kl_lanes picks): a function's target cannot
// be a template parameter.
#define YD_KL_BLOCK(name, lanes)                                                                                \
  YD_CLONES double name(const float* __restrict p, const float* __restrict t, float* __restrict g, int64_t base, \
                        int64_t len, int64_t k0, int64_t n, int64_t step_k, int64_t step_c, double tau,        \
                        const float* __restrict m, double coef, unsigned char* __restrict ok, int64_t next,    \
                        UnitStreams* later) {                                                                  \
    return kl_block_f32_lanes<lanes>(p, t, g, base, len, k0, n, step_k, step_c, tau, m, coef, ok, next, later); \
  }
YD_KL_BLOCK(kl_block_f32, kKlLanes)
YD_KL_BLOCK(kl_block_f32_narrow, kKlLanesNarrow)
#undef YD_KL_BLOCK

// The KL steps over a unit's len cells, kKlBlock cells at a time: kl_block_f32,
// then for the cells it leaves kl_block (double log-softmax: wide spans,
// NaN/Inf) or kl_taylor_cell (huge temperatures), which overwrite those cells'
// gradients. Sums in a fixed order: the block's fp32 cells, then the others.
// later: the next 16-bit unit's raw runs, streamed by the steps (null: none).
double kl_cells(const float* p, const float* t, float* g, int64_t base, int64_t len, int64_t k0, int64_t n,
                int64_t step_k, int64_t step_c, double tau, const float* m, double coef, UnitStreams* later = nullptr) {
  double sum = 0.0;
  for (int64_t j0 = 0; j0 < len; j0 += kKlBlock) {
    const int64_t bl = std::min(kKlBlock, len - j0);
    const int64_t b0 = base + j0 * step_c;
    unsigned char ok[kKlBlock];
    const int64_t next = std::min(kKlBlock, len - j0 - bl);  // cells of the next block
    const auto block = kl_lanes() == kKlLanes ? kl_block_f32 : kl_block_f32_narrow;
    sum += block(p, t, g, b0, bl, k0, n, step_k, step_c, tau, m + j0, coef, ok, next, later);
    // The double steps over each run of consecutive cells that take them (a
    // cell's values are its own, vectorized across the run: per cell, heads
    // whose every cell spanned over kKlSpreadF32, 16 then, took 17x their fp32
    // time; BENCHMARKS.md).
    for (int64_t j = 0; j < bl;) {
      const int64_t cell = b0 + j * step_c;
      if (ok[j] == kKlDouble) {
        int64_t j1 = j + 1;
        while (j1 < bl && ok[j1] == kKlDouble) ++j1;
        sum += kl_block(p, t, g, cell, j1 - j, k0, n, step_k, step_c, tau, m + j0 + j, coef);
        j = j1;
        continue;
      }
      if (ok[j] == kKlTaylor) {
        sum += kl_taylor_cell(Fp32KlCell{p, t, g, cell + k0 * step_k, step_k}, n, tau, m[j0 + j], coef, g != nullptr);
      }
      ++j;
    }
  }
  return sum;
}

}  // namespace

namespace {

// How many tasks (threads) `blocks` blocks of `values` values in all get.
// Waking a thread team costs microseconds: give each task at least
// kMinValuesPerTask values, so small calls stay on the calling thread. 32 K
// (was 64 K) lets the middle scale of a one-image call (c) use both threads:
// 0.95x its time, measured interleaved (bench/compare.js); 16 K gained no more.
int64_t task_count(int64_t blocks, int threads, int64_t values) {
  constexpr int64_t kMinValuesPerTask = int64_t{1} << 15;
  const int64_t by_work = std::max<int64_t>(1, values / kMinValuesPerTask);
  return std::max<int64_t>(1, std::min<int64_t>({int64_t{threads}, blocks, by_work}));
}

}  // namespace

GradientStreaming::GradientStreaming(int64_t grad_bytes) : saved_(t_stream) {
  t_stream = stream_gradients(grad_bytes);
}
GradientStreaming::~GradientStreaming() { t_stream = saved_; }

void run_blocks(int64_t blocks, int threads, int64_t values_per_block,
                const std::function<void(int64_t, int64_t)>& fn) {
  if (blocks <= 0) return;
  const int64_t tasks = task_count(blocks, threads, blocks * values_per_block);
  const bool stream = call_streaming();
  if (tasks == 1) {
    const TaskScope task(stream);
    fn(0, blocks);
    return;
  }
  ensure_team_size(static_cast<int>(tasks));
  at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const TaskScope scope(stream, task);
      fn(blocks * task / tasks, blocks * (task + 1) / tasks);
    }
  });
}


namespace {

// The default formula's fast kernel: fp32 element math (the rounding PyTorch
// uses), double accumulation, gradient coefficients in fp32.
// keep: the FM-NMS mask by cell index (fm_nms_mask), or null.
RawSums default_scale(const float* p, const float* t, float* g, const ScaleGeom& geom,
                      const TermCoefs& coefs, const unsigned char* keep, int threads) {
  if (!geom.cell_major()) {
    return g ? run_nchw<true>(p, t, g, geom, coefs, keep, threads)
             : run_nchw<false>(p, t, nullptr, geom, coefs, keep, threads);
  }
  return g ? run_cells<true>(p, t, g, geom, coefs, keep, threads)
           : run_cells<false>(p, t, nullptr, geom, coefs, keep, threads);
}

// FM-NMS keep flags of the cells [c_first, c_first + len) of one nchw plane
// (channel 0 at tplane, hw cells per channel; the classes from channel cls0),
// from the class argmax of the rows those cells and their neighbours span: the
// variant kernels' units, and the default kernel's plane units, compute their
// own mask from the teacher values they are about to read (defined below). kAnchorFree: the score is sigma(max class
// logit) in double, else the objectness logit. arg (whole-plane units only:
// c_first 0, len H * W; null: computed here): the plane's class argmax,
// already computed (NextArgmax below).
template <bool kAnchorFree>
void nchw_unit_keep(const float* tplane, int64_t H, int64_t W, int64_t classes, int64_t cls0, int64_t c_first,
                    int64_t len, unsigned char* keep, const int32_t* arg = nullptr);

// Class c's step of the class argmax of n cells (tc: their class-c values):
// c = 0 starts it; after it, cell j's best value and class (NaN wins, then
// the first maximum: argmax_takes). Inlined into its cloned callers.
__attribute__((always_inline)) inline void argmax_class(const float* __restrict tc, int64_t n, int64_t c,
                                                        float* __restrict best, int32_t* __restrict arg) {
  if (c == 0) {
    for (int64_t j = 0; j < n; ++j) {
      best[j] = tc[j];
      arg[j] = 0;
    }
    return;
  }
  const int32_t c32 = static_cast<int32_t>(c);
  for (int64_t j = 0; j < n; ++j) {
    const float v = tc[j];
    const bool take = argmax_takes(v, best[j]);
    best[j] = take ? v : best[j];
    arg[j] = take ? c32 : arg[j];
  }
}

// One class of a plane's class argmax, on its own (NextArgmax below): the
// steps of contiguous_class_argmax, the same comparisons.
YD_CLONES void argmax_class_step(const float* __restrict tc, int64_t n, int64_t c, float* __restrict best,
                                 int32_t* __restrict arg) {
  argmax_class(tc, n, c, best, arg);
}

// FM-NMS with whole-plane units under compute-bound class formulas: the next
// unit's class argmax, built by this thread a class at a time right after
// each class run of the unit before it (the run that prefetched that class's
// values into L2), so that the unit finds its argmax done instead of reading
// its 80 class planes again first. Valid for one kernel call (call) and unit.
struct NextArgmax {
  uint64_t call = 0;
  int64_t unit = -1;  // the unit it is complete for; -1 while being built
  std::vector<float> best;
  std::vector<int32_t> arg;
};
NextArgmax& next_argmax() {
  thread_local NextArgmax state;
  return state;
}
std::atomic<uint64_t> g_kernel_calls{0};

// m[j] = (weighted ? w[j] : 1) * keep_j (keep null: 1) for the cells of a
// unit, inlined into the cloned callers. The choice between w and 1 is made
// per loop, not per element: a loop-invariant bool select inside the loop
// kept GCC 12 from vectorizing it at all ("bad operation": no vector form of
// a select on a scalar bool), and the masks ran scalar, 6 % of preset
// 'paper''s kernel time (perf). The same products, so the same bits.
__attribute__((always_inline)) inline void fill_mask(const float* __restrict w, const unsigned char* __restrict keep,
                                                     int64_t len, bool weighted, float* __restrict m) {
  if (keep) {
    if (weighted) {
      for (int64_t j = 0; j < len; ++j) m[j] = w[j] * static_cast<float>(keep[j]);
    } else {
      for (int64_t j = 0; j < len; ++j) m[j] = 1.0f * static_cast<float>(keep[j]);
    }
  } else if (weighted) {
    for (int64_t j = 0; j < len; ++j) m[j] = w[j] * 1.0f;
  } else {
    for (int64_t j = 0; j < len; ++j) m[j] = 1.0f;
  }
}

// The per-cell masks of a variant unit from its teacher objectness (cell j's
// at tobj[j * step]): m = (weighted ? teacher_weight : 1) * keep_j (keep null:
// 1), for the box, obj and cls terms, len <= kVariantChunk. Cloned: inline in
// general_scale (a baseline x86-64 function) this ran on scalars, a fifth of
// objTarget 'bce''s time (perf). fp-contract off: each clone rounds every
// product and sum of teacher_weight as the baseline build did (no fused
// multiply-adds), so the masks, and every result, keep their bits.
YD_CLONES YD_NO_FP_CONTRACT __attribute__((noinline)) void variant_masks(
    const float* __restrict tobj, int64_t step, int64_t len, const unsigned char* __restrict keep, bool wb, bool wo,
    bool wc, float* __restrict mb, float* __restrict mo, float* __restrict mc) {
  float w[kVariantChunk];
  for (int64_t j = 0; j < len; ++j) w[j] = teacher_weight(tobj[j * step]);
  fill_mask(w, keep, len, wb, mb);
  fill_mask(w, keep, len, wo, mo);
  fill_mask(w, keep, len, wc, mc);
}

// Every instantiation but the default formula's (and the default formula when
// a term is not weighted or its fp32 coefficients do not fit): element math in
// fp32 with double sums (channel_run: variant_element, 'logit' as the default
// kernel), the KL by kl_cells. Term kinds and FM-NMS are compile-time;
// weighting is a per-cell mask.
template <BoxTarget kBox, Target kObj, Target kCls, bool kNms, typename Src>
RawSums general_scale(const Src& src, const ScaleGeom& geom, const Options& o, int threads) {
  static_assert(kObj != Target::Kl, "'kl' is for classes only");
  const Variant& v = o.variant;
  const int64_t cells = geom.cells();
  const int64_t C = geom.classes;
  // d loss / d (per-element derivative): lambda * g_term * gradScale / (n_term * N).
  const VariantCoefs vc = variant_coefs(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, C, cells,
                                        kCls == Target::Kl);
  const double cb = vc.box, co = vc.obj, cc = vc.cls;
  const double tau = v.temperature;

  // FM-NMS: fp32 nchw heads make each unit's mask in the unit (the teacher
  // plane read once from memory); other layouts and 16-bit heads first.
  const bool unit_masks = kNms && Src::kInPlace && !geom.cell_major();
  std::vector<unsigned char> keep;
  if (kNms && !unit_masks) {
    keep.resize(static_cast<size_t>(cells));
    src.nms_mask(geom, keep.data(), threads);
  }
  // 16-bit (or mixed) nchw heads without the KL (which reads every class of a
  // cell at once): a channel at a time (MixedSource::open_channel), in
  // whole-plane units as fp32 heads.
  bool lazy = false;
  if constexpr (!Src::kInPlace && kCls != Target::Kl) lazy = !geom.cell_major();
  const VariantUnits units(geom, lazy ? kVariantChunk : Src::kNchwChunk);
  const int64_t hw = geom.height * geom.width;
  // FM-NMS on fp32 nchw heads with compute-bound class runs ('prob', 'bce'):
  // those runs prefetch the next unit's teacher classes (next_cls below), and
  // with whole-plane units build its class argmax (NextArgmax).
  constexpr bool kBoundCls = kCls == Target::Prob || kCls == Target::Bce;
  const bool fold_argmax = unit_masks && kBoundCls && units.chunks_per_plane == 1;
  const uint64_t call = fold_argmax ? ++g_kernel_calls : 0;

  return reduce_units(units.count, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    const StreamUnit stream_unit(Src::kInPlace && !geom.cell_major());
    const VariantUnits::Span span = units.at(unit);
    const UnitView view = lazy ? UnitView{nullptr, nullptr, nullptr, 0, span.len, 1} : src.open(units, span);
    const float* p = view.p;
    const float* t = view.t;
    float* g = view.g;
    const int64_t i0 = span.i0, len = span.len, base = view.base, step_k = view.step_k, step_c = view.step_c;
    unsigned char unit_keep[kVariantChunk];
    const unsigned char* kp = kNms && !unit_masks ? keep.data() + i0 : nullptr;  // the unit's cells' flags
    if (unit_masks) {
      // Its argmax built during the unit before (same thread, same call), if it was.
      const NextArgmax* pre = fold_argmax ? &next_argmax() : nullptr;
      const bool ready = pre && pre->call == call && pre->unit == unit;
      nchw_unit_keep<false>(t + (span.base - i0 % hw), geom.height, geom.width, C, kClsOffset, i0 % hw, len,
                            unit_keep, ready ? pre->arg.data() : nullptr);
      kp = unit_keep;
    }
    // Per-cell masks: the teacher weight (fp32) or 1, times the FM-NMS keep (0 or 1).
    float mb[kVariantChunk], mo[kVariantChunk], mc[kVariantChunk];
    const float* tobj = lazy ? nullptr : t + base + kObjChannel * step_k;
    if constexpr (!Src::kInPlace) {
      if (lazy) tobj = src.teacher_channel(units, span, kObjChannel);
    }
    variant_masks(tobj, step_c, len, kNms ? kp : nullptr, v.weighted_box, v.weighted_obj, v.weighted_cls, mb, mo,
                  mc);
    // FM-NMS on fp32 nchw heads: the next unit's class argmax (its first
    // step) reads its teacher class planes from memory while the cores wait;
    // the class runs of this unit, compute bound under 'prob' and 'bce',
    // prefetch them as they go (class c's run of the next unit during class
    // c's run of this one), so that the argmax finds them in cache.
    const float* next_cls = nullptr;
    int64_t next_len = 0;
    if (unit_masks && kBoundCls && unit + 1 < units.count) {
      const VariantUnits::Span nx = units.at(unit + 1);
      next_cls = t + nx.base + kClsOffset * step_k;
      next_len = nx.len;
    }
    // Whole-plane units: the next unit's argmax built as the class runs go.
    NextArgmax* fold = fold_argmax && next_cls ? &next_argmax() : nullptr;
    if (fold) {
      fold->unit = -1;
      fold->call = call;
      if (fold->arg.size() < static_cast<size_t>(next_len)) {
        fold->best.resize(static_cast<size_t>(next_len));
        fold->arg.resize(static_cast<size_t>(next_len));
      }
    }
    // One channel k of kind kKind over the unit's cells: adds m_j * loss to
    // *sum, writes gradients.
    auto channel = [&](auto kind, int64_t k, const float* m, double coef, double* sum) {
      constexpr Target kKind = decltype(kind)::value;
      if constexpr (!Src::kInPlace) {
        if (lazy) {
          const auto r = src.open_channel(units, span, k, k + 1 < kClsOffset + C ? k + 1 : -1);
          *sum += channel_run<kKind>(r.p, r.t, r.g, 1, len, m, coef, 0, &r.ahead);
          src.close_channel(units, span, k, r);
          return;
        }
      }
      const int64_t off = base + k * step_k;
      const int64_t pf = k + 1 < kClsOffset + C ? step_k : 0;  // the next channel's run, into L2
      const bool cls = next_cls && k >= kClsOffset;
      *sum += channel_run<kKind>(p + off, t + off, g ? g + off : nullptr, step_c, len, m, coef, pf, nullptr,
                                 cls ? next_cls + (k - kClsOffset) * step_k : nullptr, cls ? next_len : 0);
      if (fold && cls) {
        argmax_class_step(next_cls + (k - kClsOffset) * step_k, next_len, k - kClsOffset, fold->best.data(),
                          fold->arg.data());
        if (k + 1 == kClsOffset + C) fold->unit = unit + 1;  // complete
      }
    };
    using LogitK = std::integral_constant<Target, Target::Logit>;
    // boxTarget 'paper': sigmoids on tx, ty (as 'prob'); tw, th as logits.
    using XyK = std::integral_constant<Target, kBox == BoxTarget::Paper ? Target::Prob : Target::Logit>;
    for (int64_t k = 0; k < 2; ++k) channel(XyK{}, k, mb, cb, &acc.box);
    for (int64_t k = 2; k < kBoxChannels; ++k) channel(LogitK{}, k, mb, cb, &acc.box);
    channel(std::integral_constant<Target, kObj>{}, kObjChannel, mo, co, &acc.obj);
    if constexpr (kCls != Target::Kl) {
      for (int64_t c = 0; c < C; ++c) channel(std::integral_constant<Target, kCls>{}, kClsOffset + c, mc, cc, &acc.cls);
    } else {
      // The next unit's raw runs (16-bit nchw heads) or its cell-major values
      // (fp32 nahwc / nhwc, which its transposes read), streamed by the KL steps.
      UnitStreams later;
      if (unit + 1 < units.count) src.next_unit_streams(units, units.at(unit + 1), &later);
      if (Src::kInPlace) later.per = 2;
      acc.cls += kl_cells(p, t, g, base, len, kClsOffset, C, step_k, step_c, tau, mc, cc, later.any() ? &later : nullptr);
    }
    if (!lazy) src.close(units, span, view);
  });
}


// The default formula with FM-NMS on nchw heads whose planes fit one unit:
// each unit computes its own plane's keep mask right before its body, so the
// teacher plane is read from memory once and again from cache (defined below).
bool nms_fused_applies(const ScaleGeom& geom);
RawSums default_scale_nms_fused(const float* p, const float* t, float* g, const ScaleGeom& geom,
                                const TermCoefs& coefs, int threads);

// The one CPU kernel: term kinds and FM-NMS are its compile-time parameters.
// Its all-'logit' instantiations are the fused default kernel whenever every
// term is weighted and the fp32 gradient coefficients fit (cell_math.h,
// coef_fits_fp32), with FM-NMS as a keep mask (a suppressed cell's weight is 0;
// the default formula's fp32 element rounding), made per plane by the unit that
// reads it in nchw, computed first otherwise; everything else runs the general
// body.
template <BoxTarget kBox, Target kObj, Target kCls, bool kNms, typename Src>
RawSums scale_kernel(const Src& src, const ScaleGeom& geom, const Options& o, int threads) {
  if constexpr (Src::kInPlace && kBox == BoxTarget::Logit && kObj == Target::Logit && kCls == Target::Logit) {
    const float* p = src.p;
    const float* t = src.t;
    float* g = src.g;
    const Variant& v = o.variant;
    if (v.weighted_box && v.weighted_obj && v.weighted_cls &&
        coefs_fit_fp32(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, geom.classes, geom.cells())) {
      const TermCoefs coefs =
          grad_coefs(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, geom.classes, geom.cells());
      if constexpr (kNms) {
        if (nms_fused_applies(geom)) return default_scale_nms_fused(p, t, g, geom, coefs, threads);
        std::vector<unsigned char> keep(static_cast<size_t>(geom.cells()));
        fm_nms_mask(t, geom, keep.data(), threads);
        return default_scale(p, t, g, geom, coefs, keep.data(), threads);
      } else {
        return default_scale(p, t, g, geom, coefs, nullptr, threads);
      }
    }
  }
  return general_scale<kBox, kObj, kCls, kNms>(src, geom, o, threads);
}

// Runtime kinds to the kernel's compile-time parameters. No default: branches
// (-Werror=switch): a new kind that is not listed here does not build.
template <BoxTarget kBox, Target kObj, Target kCls, typename Src>
RawSums with_nms(const Src& src, const ScaleGeom& geom, const Options& o, int threads) {
  return o.variant.fm_nms ? scale_kernel<kBox, kObj, kCls, true>(src, geom, o, threads)
                          : scale_kernel<kBox, kObj, kCls, false>(src, geom, o, threads);
}

template <BoxTarget kBox, Target kObj, typename Src>
RawSums with_cls(const Src& src, const ScaleGeom& geom, const Options& o, int threads) {
  switch (o.variant.cls) {
    case Target::Logit: return with_nms<kBox, kObj, Target::Logit>(src, geom, o, threads);
    case Target::Prob: return with_nms<kBox, kObj, Target::Prob>(src, geom, o, threads);
    case Target::Bce: return with_nms<kBox, kObj, Target::Bce>(src, geom, o, threads);
    case Target::Kl: return with_nms<kBox, kObj, Target::Kl>(src, geom, o, threads);
  }
  throw Error(ErrorKind::Generic, code::kInternal, "unknown clsTarget");
}

template <BoxTarget kBox, typename Src>
RawSums with_obj(const Src& src, const ScaleGeom& geom, const Options& o, int threads) {
  switch (o.variant.obj) {
    case Target::Logit: return with_cls<kBox, Target::Logit>(src, geom, o, threads);
    case Target::Prob: return with_cls<kBox, Target::Prob>(src, geom, o, threads);
    case Target::Bce: return with_cls<kBox, Target::Bce>(src, geom, o, threads);
    case Target::Kl: break;  // refused by make_plan (objTarget 'kl')
  }
  throw Error(ErrorKind::Generic, code::kInternal, "objTarget 'kl' reached the kernel");
}

}  // namespace

namespace {

// plane_class_argmax (below) for n contiguous cells (nchw), compiled per instruction
// set like the kernels (the template below is baseline SSE2 where it is not
// inlined into a clone), in blocks of up to 8192 cells: each class is then one
// long run of the plane for the hardware prefetcher, with best and arg in L2
// (blocks of 1024 cells kept those in L1 but read 80 short runs at once:
// FM-NMS on workload (a) 0.95x the time with 8192, 2048 in between, bench/compare.js).
// The same comparisons in the same class order per cell.
YD_CLONES void contiguous_class_argmax(const float* __restrict t0, int64_t step_k, int64_t classes, int64_t n,
                                       float* __restrict best, int32_t* __restrict arg) {
  constexpr int64_t kBlock = 8192;
  for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const int64_t len = std::min(kBlock, n - j0);
    for (int64_t c = 0; c < classes; ++c) argmax_class(t0 + c * step_k + j0, len, c, best + j0, arg + j0);
  }
}

// best[j] = max over the classes of cell j's teacher logits (NaN wins, as in
// torch.max; argmax_takes), cells at t0 + j * step_c, class c at + c * step_k;
// and the anchor-free weights of cell j from it: w = sigmoid(best) (fp32, as
// teacher_weight), mb[j] / mc[j] = (weighted box / cls ? w : 1) * keep[j]
// (keep null: every cell kept). Cloned: the baseline build ran this on
// 4-wide vectors, a quarter of the anchor-free kernel's time (perf, YOLOv8s B=8).
YD_CLONES void anchor_free_weights(const float* __restrict t0, int64_t step_k, int64_t step_c, int64_t classes,
                                   int64_t len, bool weighted_box, bool weighted_cls,
                                   const unsigned char* __restrict keep, float* __restrict best,
                                   float* __restrict mb, float* __restrict mc) {
  if (step_c == 1) {  // nchw: contiguous runs
    for (int64_t j = 0; j < len; ++j) best[j] = t0[j];
    for (int64_t c = 1; c < classes; ++c) {
      const float* tc = t0 + c * step_k;
      for (int64_t j = 0; j < len; ++j) {
        const float v = tc[j];
        best[j] = argmax_takes(v, best[j]) ? v : best[j];
      }
    }
  } else {
    for (int64_t j = 0; j < len; ++j) {
      const float* tc = t0 + j * step_c;
      float b = tc[0];
      for (int64_t c = 1; c < classes; ++c) {
        const float v = tc[c * step_k];
        b = argmax_takes(v, b) ? v : b;
      }
      best[j] = b;
    }
  }
  float w[kVariantChunk];  // len <= kVariantChunk
  for (int64_t j = 0; j < len; ++j) w[j] = teacher_weight(best[j]);  // sigmoid in fp32, as for anchor heads
  fill_mask(w, keep, len, weighted_box, mb);
  fill_mask(w, keep, len, weighted_cls, mc);
}

// The cell offsets of an nchw plane: cell j at j.
struct IdentityOff {
  int64_t operator()(int64_t j) const { return j; }
};

// FM-NMS's test (cell_math.h fm_nms_suppressed) for the cells [x0, x1) of the
// row starting at plane cell r, 1 <= x0 and x1 <= W - 1 (each has a left and a
// right neighbour), with a row above (kUp) and below (kDown) or not: the same
// comparisons, no bounds tests, so the loop vectorizes. A neighbour earlier in
// row-major order wins a tie (>=, false for NaN as > and == are), a later one
// needs >. keep[x - x0]. arg, sc: the class argmax and score by plane cell.
template <bool kUp, bool kDown, typename Score>
__attribute__((always_inline)) inline void nms_row_interior(const int32_t* __restrict arg,
                                                            const Score* __restrict sc, int64_t r, int64_t W,
                                                            int64_t x0, int64_t x1, unsigned char* __restrict keep) {
  for (int64_t x = x0; x < x1; ++x) {
    const int64_t j = r + x;
    const int32_t a = arg[j];
    const Score o = sc[j];
    bool s = (arg[j - 1] == a) & (sc[j - 1] >= o);
    s |= (arg[j + 1] == a) & (sc[j + 1] > o);
    if constexpr (kUp) {
      s |= (arg[j - W - 1] == a) & (sc[j - W - 1] >= o);
      s |= (arg[j - W] == a) & (sc[j - W] >= o);
      s |= (arg[j - W + 1] == a) & (sc[j - W + 1] >= o);
    }
    if constexpr (kDown) {
      s |= (arg[j + W - 1] == a) & (sc[j + W - 1] > o);
      s |= (arg[j + W] == a) & (sc[j + W] > o);
      s |= (arg[j + W + 1] == a) & (sc[j + W + 1] > o);
    }
    keep[x - x0] = s ? 0 : 1;
  }
}

// keep[c - c_first] for the cells c in [c_first, c_first + len) of an H x W
// plane: each row's first and last cells by fm_nms_suppressed itself, the
// cells between by nms_row_interior (a scalar loop with a division and nine
// bounds tests per cell was a quarter of fmNms's kernel time, perf).
template <typename Score>
__attribute__((always_inline)) inline void nms_keep_cells(const int32_t* arg, const Score* sc, int64_t H, int64_t W,
                                                          int64_t c_first, int64_t len, unsigned char* keep) {
  auto edge = [&](int64_t c) {
    keep[c - c_first] = fm_nms_suppressed(
        c / W, c % W, H, W, [&](int64_t jj) { return arg[jj]; }, [&](int64_t jj) { return sc[jj]; }) ? 0 : 1;
  };
  const int64_t end = c_first + len;
  for (int64_t c = c_first; c < end;) {
    const int64_t y = c / W, r = y * W;
    const int64_t row_end = std::min(end, r + W);
    const int64_t x0 = c - r, x1 = row_end - r;
    if (x0 == 0) edge(r);
    const int64_t i0 = std::max<int64_t>(x0, 1), i1 = std::min<int64_t>(x1, W - 1);
    if (i0 < i1) {
      unsigned char* k = keep + (r + i0 - c_first);
      const bool up = y > 0, down = y + 1 < H;
      if (up && down) {
        nms_row_interior<true, true>(arg, sc, r, W, i0, i1, k);
      } else if (up) {
        nms_row_interior<true, false>(arg, sc, r, W, i0, i1, k);
      } else if (down) {
        nms_row_interior<false, true>(arg, sc, r, W, i0, i1, k);
      } else {
        nms_row_interior<false, false>(arg, sc, r, W, i0, i1, k);
      }
    }
    if (x1 == W && W > 1) edge(r + W - 1);
    c = row_end;
  }
}

// nms_keep_cells, compiled per instruction set like the kernels: the
// objectness score (anchor heads), and the anchor-free score sigma(best) in
// double (anchor_free_keep's) computed into score for the cells [e0, e1),
// without fused multiply-adds as in that baseline function (the same bits).
YD_CLONES void nms_keep_obj(const int32_t* arg, const float* tobj, int64_t H, int64_t W, int64_t c_first, int64_t len,
                            unsigned char* keep) {
  nms_keep_cells(arg, tobj, H, W, c_first, len, keep);
}
YD_CLONES YD_NO_FP_CONTRACT void nms_keep_anchor_free(const int32_t* arg, const float* __restrict best, double* __restrict score,
                                    int64_t e0, int64_t e1, int64_t H, int64_t W, int64_t c_first, int64_t len,
                                    unsigned char* keep) {
  for (int64_t k = 0; k < e1 - e0; ++k) score[k] = sigmoid_<double>(best[k]);
  nms_keep_cells(arg, score - e0, H, W, c_first, len, keep);
}

template <bool kAnchorFree>
void nchw_unit_keep(const float* tplane, int64_t H, int64_t W, int64_t classes, int64_t cls0, int64_t c_first,
                    int64_t len, unsigned char* keep, const int32_t* arg_done) {
  const int64_t hw = H * W;
  const int64_t y0 = c_first / W, y1 = (c_first + len - 1) / W;
  const int64_t e0 = std::max<int64_t>(0, y0 - 1) * W, e1 = std::min<int64_t>(H, y1 + 2) * W;  // cells [e0, e1)
  thread_local std::vector<float> best;
  thread_local std::vector<int32_t> arg;
  thread_local std::vector<double> score;
  if (best.size() < static_cast<size_t>(e1 - e0)) {
    best.resize(static_cast<size_t>(e1 - e0));
    arg.resize(static_cast<size_t>(e1 - e0));
    score.resize(static_cast<size_t>(e1 - e0));
  }
  const int32_t* a = arg_done;  // a whole plane's (e0 = 0), or:
  if (!a || kAnchorFree || e0 != 0 || e1 != hw) {
    contiguous_class_argmax(tplane + cls0 * hw + e0, hw, classes, e1 - e0, best.data(), arg.data());
    a = arg.data() - e0;  // indexed by plane cell
  }
  if constexpr (kAnchorFree) {  // anchor_free_keep's score
    nms_keep_anchor_free(a, best.data(), score.data(), e0, e1, H, W, c_first, len, keep);
  } else {  // fm_nms_planes' objectness
    nms_keep_obj(a, tplane + kObjChannel * hw, H, W, c_first, len, keep);
  }
}

// The class argmax of each cell j of a plane (torch.argmax's order: NaN first,
// then the first maximum) and its value: class c of cell j at
// t0 + c * step_k + cell_off(j). Classes outer, cells inner (contiguous runs in
// nchw); 32-bit indices, as wide as the values, so that the selects vectorize.
template <typename CellOff>
void plane_class_argmax(const float* t0, int64_t step_k, int64_t classes, int64_t hw, const CellOff& cell_off,
                        float* best, int32_t* arg) {
  if constexpr (std::is_same_v<CellOff, IdentityOff>) {
    contiguous_class_argmax(t0, step_k, classes, hw, best, arg);
    return;
  }
  for (int64_t j = 0; j < hw; ++j) {
    arg[j] = 0;
    best[j] = t0[cell_off(j)];
  }
  for (int64_t c = 1; c < classes; ++c) {
    const float* tc = t0 + c * step_k;
    const int32_t c32 = static_cast<int32_t>(c);
    for (int64_t j = 0; j < hw; ++j) {
      const float v = tc[cell_off(j)];
      const bool take = argmax_takes(v, best[j]);
      best[j] = take ? v : best[j];
      arg[j] = take ? c32 : arg[j];
    }
  }
}

// The FM-NMS keep mask of an anchor-free scale, indexed by cell_index: the score
// is w (in double, as compared by the reference) and the class argmax follows
// torch.argmax (NaN first).
void anchor_free_keep(const float* t, const ScaleGeom& g, unsigned char* keep, int threads) {
  const int64_t H = g.height, W = g.width, hw = H * W, C = g.classes, c0 = 4 * g.reg_max;
  run_blocks(g.batch, threads, hw * g.per_anchor(), [&](int64_t b0, int64_t b1) {
    std::vector<double> score(static_cast<size_t>(hw));
    std::vector<int32_t> arg(static_cast<size_t>(hw));
    std::vector<float> best(static_cast<size_t>(hw));
    std::vector<unsigned char> plane_keep(static_cast<size_t>(hw));
    // Cell j = y * W + x of image b at b * stride_b + j * stride_x (nchw and nhwc,
    // one anchor: stride_y == W * stride_x). Classes outer, cells inner.
    const int64_t cs = g.stride_x;
    for (int64_t b = b0; b < b1; ++b) {
      plane_class_argmax(t + b * g.stride_b + c0 * g.stride_k, g.stride_k, C, hw, [cs](int64_t j) { return j * cs; },
                         best.data(), arg.data());
      nms_keep_anchor_free(arg.data(), best.data(), score.data(), 0, hw, H, W, 0, hw, plane_keep.data());
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) keep[g.cell_index(b, 0, y, x)] = plane_keep[y * W + x];
      }
    }
  });
}

// Anchor-free heads (docs/DESIGN.md §1b): per cell 4R box-bin logits (side-major)
// then C class logits; weight w = max_c sigmoid(T_c). The box term's KL by
// kl_cells, the class terms as in the general body.
template <typename Src>
RawSums anchor_free_scale(const Src& src, const ScaleGeom& geom, const Options& o, int threads) {
  const Variant& v = o.variant;
  const int64_t cells = geom.cells();
  const int64_t C = geom.classes, R = geom.reg_max, c0 = 4 * R;
  const VariantCoefs vc = variant_coefs(o.lambda, o.w_box, 0.0, o.w_cls, o.grad_scale, C, cells, v.cls == Target::Kl);
  const double cb = vc.box, cc = vc.cls, tau = v.temperature, tb = o.box_temperature;
  const bool unit_masks = v.fm_nms && Src::kInPlace && !geom.cell_major();  // as in general_scale
  std::vector<unsigned char> keep;
  if (v.fm_nms && !unit_masks) {
    keep.resize(static_cast<size_t>(cells));
    src.nms_mask(geom, keep.data(), threads);
  }
  const int64_t hw = geom.height * geom.width;
  // The units of general_scale (one anchor: a unit stays within one image's plane in nchw).
  const VariantUnits units(geom, Src::kNchwChunk);

  return reduce_units(units.count, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    // (An fp32 student's gradient written in place from a 16-bit teacher's
    // units, MixedSource, is not streamed: no gain measured, BENCHMARKS.md.)
    const StreamUnit stream_unit(Src::kInPlace && !geom.cell_major());
    const VariantUnits::Span span = units.at(unit);
    // A teacher widened into a plane-shaped buffer (MixedSource): the class
    // channels here, each side's bins just before its KL.
    const UnitView view = src.open(units, span, true);
    src.teacher_channels(units, span, 4 * geom.reg_max, geom.classes);
    const float* p = view.p;
    const float* t = view.t;
    float* g = view.g;
    const int64_t i0 = span.i0, len = span.len, base = view.base, step_k = view.step_k, step_c = view.step_c;
    float mb[kVariantChunk], mc[kVariantChunk], best[kVariantChunk];
    unsigned char unit_keep[kVariantChunk];
    const unsigned char* kp = v.fm_nms && !unit_masks ? keep.data() + i0 : nullptr;
    if (unit_masks) {
      nchw_unit_keep<true>(t + (span.base - i0 % hw), geom.height, geom.width, C, c0, i0 % hw, len, unit_keep);
      kp = unit_keep;
    }
    // w = max_c sigmoid(T_c) = sigmoid(max_c T_c) (NaN propagates, as in torch.max).
    anchor_free_weights(t + base + c0 * step_k, step_k, step_c, C, len, v.weighted_box, v.weighted_cls, kp, best,
                        mb, mc);
    auto channel = [&](auto kind, int64_t k, const float* m, double coef, double* sum) {
      constexpr Target kKind = decltype(kind)::value;
      const int64_t off = base + k * step_k;
      const int64_t pf = k + 1 < c0 + C ? step_k : 0;  // the next channel's run, into L2
      *sum += channel_run<kKind>(p + off, t + off, g ? g + off : nullptr, step_c, len, m, coef, pf);
    };
    // 16-bit (or mixed) nchw heads: the KL steps stream the next unit's raw
    // runs (two lines per class step: the box KL has 4R class steps per
    // group for the unit's 4R + C channels); fp32 cell-major (nhwc) heads:
    // the next unit's values, which its transposes read from memory while the
    // cores wait (anchor-free nhwc 0.93-0.98x its time, bench/compare.js;
    // one line per class step 0.97-0.98x, three 0.96-0.98x).
    UnitStreams later;
    if (unit + 1 < units.count) src.next_unit_streams(units, units.at(unit + 1), &later);
    later.per = 2;
    UnitStreams* lp = later.any() ? &later : nullptr;
    auto box_terms = [&]() {
      if (R > 1) {
        double box = 0.0;
        for (int64_t side = 0; side < 4; ++side) {
          src.teacher_channels(units, span, side * R, R);
          box += kl_cells(p, t, g, base, len, side * R, R, step_k, step_c, tb, mb, cb, lp);
        }
        acc.box += box;
      } else {
        src.teacher_channels(units, span, 0, 4);
        for (int64_t k = 0; k < 4; ++k) channel(std::integral_constant<Target, Target::Logit>{}, k, mb, cb, &acc.box);
      }
    };
    auto cls_terms = [&]() {
      auto class_runs = [&](auto kind) {
        for (int64_t c = 0; c < C; ++c) channel(kind, c0 + c, mc, cc, &acc.cls);
      };
      switch (v.cls) {
        case Target::Kl: acc.cls += kl_cells(p, t, g, base, len, c0, C, step_k, step_c, tau, mc, cc, lp); break;
        case Target::Logit: class_runs(std::integral_constant<Target, Target::Logit>{}); break;
        case Target::Prob: class_runs(std::integral_constant<Target, Target::Prob>{}); break;
        case Target::Bce: class_runs(std::integral_constant<Target, Target::Bce>{}); break;
      }
    };
    // The weights pass and the class runs wait on memory, the box KL on its
    // arithmetic (BENCHMARKS.md "Can the anchor-free phases overlap?"). The
    // tasks start together and their units take about the same time, so with
    // one order of phases every thread would wait on memory at the same
    // moments, sharing the bandwidth: on fp32 nchw heads (read in place, one
    // unit per image plane) odd tasks run the class terms before the box KL,
    // so that more of one thread's memory phases meet the other's arithmetic.
    // (Cell-major and 16-bit units, which read through buffers, measured no
    // gain.) The box and class sums stay apart, each in its own order: the
    // same bits in either order. BENCHMARKS.md "Anchor-free tasks out of
    // phase".
    if (Src::kInPlace && units.nchw && (task_index() & 1)) {
      cls_terms();
      box_terms();
    } else {
      box_terms();
      cls_terms();
    }
    src.close(units, span, view);
  });
}

}  // namespace

namespace {

// The default kernel runs the default formula when every term is weighted and
// its fp32 coefficients fit; otherwise the general body (scale_kernel).
bool default_kernel_case(const ScaleGeom& geom, const Options& o) {
  return geom.head == Head::Anchor && o.variant.is_default() &&
         coefs_fit_fp32(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, geom.classes, geom.cells());
}

template <typename Src>
RawSums variant_scale(const Src& src, const ScaleGeom& geom, const Options& o, int threads) {
  if (geom.head == Head::AnchorFree) return anchor_free_scale(src, geom, o, threads);
  switch (o.variant.box) {
    case BoxTarget::Logit: return with_obj<BoxTarget::Logit>(src, geom, o, threads);
    case BoxTarget::Paper: return with_obj<BoxTarget::Paper>(src, geom, o, threads);
  }
  throw Error(ErrorKind::Generic, code::kInternal, "unknown boxTarget");
}

}  // namespace

RawSums cpu_scale_mixed(const MixedArrays& a, const ScaleGeom& geom, const Options& o, int threads) {
  // The default formula (with or without FM-NMS): the default kernel's units on
  // widened runs, as in scale_kernel for fp32 heads, so the results are those
  // of widening first; everything else: the variant kernels on MixedSource.
  Options plain = o;
  plain.variant.fm_nms = false;
  if (!default_kernel_case(geom, plain)) return variant_scale(MixedSource{a}, geom, o, threads);
  std::vector<unsigned char> keep_mask;
  if (o.variant.fm_nms) {
    keep_mask.resize(static_cast<size_t>(geom.cells()));
    fm_nms_mask_mixed(a, geom, keep_mask.data(), threads);
  }
  const unsigned char* keep = o.variant.fm_nms ? keep_mask.data() : nullptr;
  const TermCoefs coefs = grad_coefs(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, geom.classes, geom.cells());
  const int64_t per_anchor = geom.per_anchor();
  const bool grad = a.g != nullptr;
  if (!geom.cell_major()) {  // the units of run_nchw
    const int64_t hw = geom.height * geom.width;
    const int64_t chunks_per_plane = (hw + kPlaneChunk - 1) / kPlaneChunk;
    const int64_t units = geom.batch * geom.anchors * chunks_per_plane;
#ifdef YD_F16_IN_REGISTERS
    const RegsPair regs = regs_pair(a);
#endif
    return reduce_units(units, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
      const int64_t plane = unit / chunks_per_plane;
      const int64_t c0 = (unit % chunks_per_plane) * kPlaneChunk;
      const int64_t n = std::min(kPlaneChunk, hw - c0);
      const int64_t base = plane * per_anchor * hw + c0;
      const unsigned char* k = keep ? keep + plane * hw + c0 : nullptr;  // cell index of (b, a, c0)
#ifdef YD_F16_IN_REGISTERS
      switch (regs) {
        case RegsPair::F16:
          return nchw_unit_16_call<F16Regs, F16Regs, F16Regs256, F16Regs256>(a, grad, base, hw, n, per_anchor, coefs,
                                                                             k, acc);
        case RegsPair::Bf16:
          return nchw_unit_16_call<Bf16Regs, Bf16Regs, Bf16Regs256, Bf16Regs256>(a, grad, base, hw, n, per_anchor,
                                                                                 coefs, k, acc);
        case RegsPair::F32F16:
          return nchw_unit_16_call<F32Regs, F16Regs, F32Regs256, F16Regs256>(a, grad, base, hw, n, per_anchor, coefs,
                                                                             k, acc);
        case RegsPair::F32Bf16:
          return nchw_unit_16_call<F32Regs, Bf16Regs, F32Regs256, Bf16Regs256>(a, grad, base, hw, n, per_anchor,
                                                                               coefs, k, acc);
        case RegsPair::None: break;
      }
#endif
      if (grad) {
        nchw_unit_mixed_grad(a, base, hw, n, per_anchor, coefs, k, acc);
      } else {
        nchw_unit_mixed_nograd(a, base, hw, n, per_anchor, coefs, k, acc);
      }
    });
  }
  const int64_t cells = geom.cells();  // the units of run_cells
  const int64_t units = (cells + kCellChunk - 1) / kCellChunk;
  return reduce_units(units, geom.numel(), threads, [&](int64_t unit, RawSums& acc) {
    const int64_t i0 = unit * kCellChunk;
    const int64_t n = std::min(cells, i0 + kCellChunk) - i0;
    const unsigned char* k = keep ? keep + i0 : nullptr;
    if (grad) {
      cells_mixed_grad(a, i0, n, per_anchor, geom.classes, coefs, k, acc);
    } else {
      cells_mixed_nograd(a, i0, n, per_anchor, geom.classes, coefs, k, acc);
    }
  });
}

RawSums cpu_scale(const float* p, const float* t, float* g, const ScaleGeom& geom, const Options& o,
                  int threads) {
  return variant_scale(Fp32Source{p, t, g}, geom, o, threads);
}

std::vector<RawSums> cpu_scales(const std::vector<Fp32Scale>& scales, const Options& o, int threads) {
  const size_t S = scales.size();
  std::vector<RawSums> out(S);
  const bool stream = call_streaming();  // the call's (GradientStreaming)
  bool together = S > 1;
  for (const Fp32Scale& sc : scales) together = together && default_kernel_case(*sc.geom, o) && !sc.geom->cell_major();
  if (!together) {
    for (size_t s = 0; s < S; ++s) out[s] = cpu_scale(scales[s].p, scales[s].t, scales[s].g, *scales[s].geom, o, threads);
    return out;
  }
  // Each scale's units and blocks exactly as run_nchw and reduce_units cut
  // them; the blocks of all scales numbered one after another, the scales with
  // the most values per block first (so that the small blocks come last and
  // even out the threads' ends).
  struct Cut {
    size_t scale;
    NchwUnits units;
    int64_t per_block, first_block, end_block;
    TermCoefs coefs;
  };
  std::vector<Cut> cuts;
  cuts.reserve(S);
  for (size_t s = 0; s < S; ++s) {
    const ScaleGeom& g = *scales[s].geom;
    const NchwUnits units(g);
    const int64_t per_block = (units.count + kMaxBlocks - 1) / kMaxBlocks;  // as reduce_units
    const int64_t n = (units.count + per_block - 1) / per_block;
    cuts.push_back(Cut{s, units, per_block, 0, n,
                       grad_coefs(o.lambda, o.w_box, o.w_obj, o.w_cls, o.grad_scale, g.classes, g.cells())});
  }
  auto block_values = [&](const Cut& c) { return scales[c.scale].geom->numel() / c.end_block; };
  std::stable_sort(cuts.begin(), cuts.end(), [&](const Cut& a, const Cut& b) { return block_values(a) > block_values(b); });
  int64_t blocks = 0, values = 0;
  for (Cut& c : cuts) {
    c.first_block = blocks;
    c.end_block += blocks;
    blocks = c.end_block;
    values += scales[c.scale].geom->numel();
  }
  std::vector<double> partial(static_cast<size_t>(blocks) * 3);
  // Block blk of the call: its scale's units, summed into the block's own
  // partials (run_nchw's unit body).
  auto block = [&](int64_t blk) {
    size_t i = 0;
    while (cuts[i].end_block <= blk) ++i;
    const Cut& c = cuts[i];
    const Fp32Scale& sc = scales[c.scale];
    const int64_t b = blk - c.first_block;
    const int64_t u1 = std::min(c.units.count, (b + 1) * c.per_block);
    RawSums acc;
    for (int64_t u = b * c.per_block; u < u1; ++u) c.units.run(sc.p, sc.t, sc.g, u, c.coefs, nullptr, acc);
    partial[blk * 3 + 0] = acc.box;
    partial[blk * 3 + 1] = acc.obj;
    partial[blk * 3 + 2] = acc.cls;
  };
  // One parallel region; each thread takes the next block when it is free (a
  // one-image call has 3 planes per scale: two threads split each scale 2:1,
  // and the last scale, too small for two, ran on one).
  const int64_t tasks = task_count(blocks, threads, values);
  if (tasks == 1) {
    const TaskScope task(stream);
    for (int64_t blk = 0; blk < blocks; ++blk) block(blk);
  } else {
    ensure_team_size(static_cast<int>(tasks));
    std::atomic<int64_t> next{0};
    at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
      const TaskScope task(stream);
      for (int64_t blk = next.fetch_add(1, std::memory_order_relaxed); blk < blocks;
           blk = next.fetch_add(1, std::memory_order_relaxed)) {
        block(blk);
      }
    });
  }
  // Each scale's partials in block order, as reduce_units adds them.
  for (const Cut& c : cuts) {
    RawSums& r = out[c.scale];
    for (int64_t blk = c.first_block; blk < c.end_block; ++blk) {
      r.box += partial[blk * 3 + 0];
      r.obj += partial[blk * 3 + 1];
      r.cls += partial[blk * 3 + 2];
    }
  }
  return out;
}

Terms scale_terms(const RawSums& raw, const ScaleGeom& g, const Variant& v) {
  const int64_t n = g.cells();
  return Terms{box_term(raw.box, n), obj_term(raw.obj, n),
               v.cls == Target::Kl ? obj_term(raw.cls, n) : cls_term(raw.cls, g.classes, n)};
}


namespace {

// The FM-NMS keep mask of planes [p0, p1); cell j = y * W + x of a plane is at
// plane_base + cell_off(j) + k * stride_k.
template <typename CellOff>
void fm_nms_planes(const float* t, const ScaleGeom& g, unsigned char* keep, int64_t p0, int64_t p1,
                   const CellOff& cell_off) {
  const int64_t H = g.height, W = g.width, hw = H * W, sk = g.stride_k;
  std::vector<int32_t> arg(static_cast<size_t>(hw));
  std::vector<float> best(static_cast<size_t>(hw)), obj(static_cast<size_t>(hw));
  std::vector<unsigned char> plane_keep(static_cast<size_t>(hw));
  for (int64_t plane = p0; plane < p1; ++plane) {
    const int64_t b = plane / g.anchors, a = plane % g.anchors;
    const float* tp = t + b * g.stride_b + a * g.stride_a;
    plane_class_argmax(tp + kClsOffset * sk, sk, g.classes, hw, cell_off, best.data(), arg.data());
    const float* tobj = tp + kObjChannel * sk;
    for (int64_t j = 0; j < hw; ++j) obj[j] = tobj[cell_off(j)];  // in plane order
    nms_keep_obj(arg.data(), obj.data(), H, W, 0, hw, plane_keep.data());
    for (int64_t y = 0; y < H; ++y) {
      // Indexed as the kernel visits cells (ScaleGeom::cell_index).
      for (int64_t x = 0; x < W; ++x) keep[g.cell_index(b, a, y, x)] = plane_keep[y * W + x];
    }
  }
}

bool nms_fused_applies(const ScaleGeom& geom) {
  return !geom.cell_major() && geom.height * geom.width <= kPlaneChunk;
}

RawSums default_scale_nms_fused(const float* p, const float* t, float* g, const ScaleGeom& geom,
                                const TermCoefs& coefs, int threads) {
  const int64_t H = geom.height, W = geom.width, hw = H * W;
  const int64_t per_anchor = geom.per_anchor();
  const int64_t planes = geom.batch * geom.anchors;  // one unit per (b, a) plane, as run_nchw's
  return reduce_units(planes, geom.numel(), threads, [&](int64_t plane, RawSums& acc) {
    thread_local std::vector<unsigned char> keep;
    if (keep.size() < static_cast<size_t>(hw)) keep.resize(static_cast<size_t>(hw));
    const int64_t base = plane * per_anchor * hw;  // channel 0 of this (b, a)
    nchw_unit_keep<false>(t + base, H, W, geom.classes, kClsOffset, 0, hw, keep.data());  // the whole plane
    if (g) {
      nchw_unit_grad(p, t, g, base, hw, hw, per_anchor, coefs, keep.data(), acc);
    } else {
      nchw_unit_nograd(p, t, base, hw, hw, per_anchor, coefs, keep.data(), acc);
    }
  });
}

}  // namespace

void fm_nms_mask(const float* t, const ScaleGeom& g, unsigned char* keep, int threads) {
  const int64_t W = g.width, hw = g.height * W;
  const int64_t planes = g.batch * g.anchors;
  if (g.stride_x == 1 && g.stride_y == W) {  // nchw: a plane's cells are contiguous
    run_blocks(planes, threads, hw * g.per_anchor(), [&](int64_t p0, int64_t p1) {
      fm_nms_planes(t, g, keep, p0, p1, IdentityOff{});
    });
    return;
  }
  // Other layouts: the offset of each cell of a plane, once per scale.
  std::vector<int64_t> off(static_cast<size_t>(hw));
  for (int64_t j = 0; j < hw; ++j) off[j] = (j / W) * g.stride_y + (j % W) * g.stride_x;
  run_blocks(planes, threads, hw * g.per_anchor(), [&](int64_t p0, int64_t p1) {
    fm_nms_planes(t, g, keep, p0, p1, [&](int64_t j) { return off[j]; });
  });
}

void fm_nms_mask_mixed(const MixedArrays& a, const ScaleGeom& g, unsigned char* keep, int threads) {
  const int64_t H = g.height, W = g.width, hw = H * W, K = g.per_anchor();
  // One (b, a) plane of the teacher as an nchw head of batch 1: the masks of
  // fp32 heads (fm_nms_planes, anchor_free_keep) run on it unchanged.
  const ScaleGeom one = make_geom(Layout::NCHW, 1, 1, H, W, g.classes, g.head, g.reg_max);
  run_blocks(g.batch * g.anchors, threads, hw * K, [&](int64_t p0, int64_t p1) {
    thread_local std::vector<float> plane_values, cell_values;
    thread_local std::vector<unsigned char> plane_keep;
    if (plane_values.size() < static_cast<size_t>(K * hw)) plane_values.resize(static_cast<size_t>(K * hw));
    if (cell_values.size() < static_cast<size_t>(K)) cell_values.resize(static_cast<size_t>(K));
    if (plane_keep.size() < static_cast<size_t>(hw)) plane_keep.resize(static_cast<size_t>(hw));
    float* pv = plane_values.data();
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t b = plane / g.anchors, an = plane % g.anchors;
      if (!g.cell_major()) {  // nchw: each channel of the plane is one contiguous run
        for (int64_t k = 0; k < K; ++k) widen_run(a.t, a.t_type, g.offset(b, an, 0, 0, k), hw, pv + k * hw);
      } else {  // each cell's K values contiguous: widened, then placed channel-major
        for (int64_t y = 0; y < H; ++y) {
          for (int64_t x = 0; x < W; ++x) {
            widen_run(a.t, a.t_type, g.offset(b, an, y, x, 0), K, cell_values.data());
            for (int64_t k = 0; k < K; ++k) pv[k * hw + y * W + x] = cell_values[k];
          }
        }
      }
      if (g.head == Head::AnchorFree) {
        anchor_free_keep(pv, one, plane_keep.data(), 1);
      } else {
        fm_nms_planes(pv, one, plane_keep.data(), 0, 1, IdentityOff{});
      }
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) keep[g.cell_index(b, an, y, x)] = plane_keep[y * W + x];
      }
    }
  });
}

namespace {

// The floors' loop, compiled for AVX-512 / AVX2 / baseline as the kernels are
// (YD_CLONES): the baseline build's SSE2 loop was slower than bench/floor.c's
// -march=native loop when memory was fast (5.4-6.5 against 4.8-5.0 ms on
// workload (a); with the clones 4.8-5.1: node bench/floors.js, by rounds), and
// a weaker floor flatters the kernel.
template <typename T>
YD_CLONES __attribute__((noinline)) void floor_run(const T* __restrict a, const T* __restrict b, T* __restrict out,
                                                   int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(a[i] - b[i]);
}

template <typename T>
void floor_pass(const T* a, const T* b, T* out, int64_t n, int threads) {
  constexpr int64_t kChunk = (int64_t{1} << 18) / static_cast<int64_t>(sizeof(T));  // 256 KB of each array
  const int64_t blocks = (n + kChunk - 1) / kChunk;
  run_blocks(blocks, threads, kChunk, [&](int64_t first, int64_t last) {
    const int64_t i0 = first * kChunk;
    floor_run(a + i0, b + i0, out + i0, std::min(n, last * kChunk) - i0);
  });
}

}  // namespace

void streaming_floor(const float* a, const float* b, float* out, int64_t n, int threads) {
  floor_pass(a, b, out, n, threads);
}

void streaming_floor16(const uint16_t* a, const uint16_t* b, uint16_t* out, int64_t n, int threads) {
  floor_pass(a, b, out, n, threads);
}

CpuKernelChoices cpu_kernel_choices() { return {kl_lanes(), stream_level(), kl_gather_mode()}; }

}  // namespace yd
