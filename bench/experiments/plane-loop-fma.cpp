// The default kernel's AVX2 plane loop (plane_chunk256 in
// native/core/fused_cpu.cpp: 4-float steps, double lane sums) in two forms,
// timed in L2 (1,600 cells x 20 channels, best of 300, five repetitions):
// the product and the sum apart, as shipped, against one fused multiply-add
// (which would change the loss's last bits). BENCHMARKS.md "Anchor-free tasks
// out of phase; the default kernel's tail loop once".
//   g++ -O3 -march=x86-64-v3 -o /tmp/plane-loop-fma bench/experiments/plane-loop-fma.cpp && /tmp/plane-loop-fma
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
template <bool kFma>
__attribute__((noinline)) void run(const float* p, const float* t, const float* w, float* g, int64_t n, float coef, double* lanes) {
  const __m128 cf = _mm_set1_ps(coef);
  __m256d a[4] = {_mm256_loadu_pd(lanes), _mm256_loadu_pd(lanes + 4), _mm256_loadu_pd(lanes + 8), _mm256_loadu_pd(lanes + 12)};
  for (int64_t j = 0; j + 16 <= n; j += 16) {
    for (int q = 0; q < 4; ++q) {
      const __m128 d = _mm_sub_ps(_mm_loadu_ps(p + j + 4 * q), _mm_loadu_ps(t + j + 4 * q));
      const __m128 wd = _mm_mul_ps(d, _mm_loadu_ps(w + j + 4 * q));
      if (kFma) a[q] = _mm256_fmadd_pd(_mm256_cvtps_pd(wd), _mm256_cvtps_pd(d), a[q]);
      else a[q] = _mm256_add_pd(a[q], _mm256_mul_pd(_mm256_cvtps_pd(wd), _mm256_cvtps_pd(d)));
      _mm_storeu_ps(g + j + 4 * q, _mm_mul_ps(wd, cf));
    }
  }
  for (int q = 0; q < 4; ++q) _mm256_storeu_pd(lanes + 4 * q, a[q]);
}
int main() {
  const int64_t n = 1600 * 20;
  std::vector<float> p(n), t(n), w(n), g(n);
  for (int64_t i = 0; i < n; ++i) { p[i] = (i % 97) * 0.01f; t[i] = (i % 89) * 0.011f; w[i] = (i % 13) * 0.1f; }
  double lanes[16] = {};
  for (int rep = 0; rep < 5; ++rep) {
    double best[2] = {1e9, 1e9};
    for (int it = 0; it < 300; ++it) {
      for (int k = 0; k < 2; ++k) {
        auto t0 = std::chrono::steady_clock::now();
        if (k) run<true>(p.data(), t.data(), w.data(), g.data(), n, 0.5f, lanes); else run<false>(p.data(), t.data(), w.data(), g.data(), n, 0.5f, lanes);
        double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
        best[k] = std::min(best[k], ns);
      }
    }
    printf("mul+add %.4f ns/value, fma %.4f ns/value, ratio %.3f  (%g)\n", best[0], best[1], best[1] / best[0], lanes[0]);
  }
}
