/* The memory-bandwidth floor as a plain OpenMP C loop, c[i] = a[i] - b[i] over n
 * floats (read two, write one: 12 bytes per value), built by bench/run.js with
 * gcc -O3 -march=native -fopenmp and run next to the package's own floor so that
 * the table shows both (the package's floor must not be slower than this).
 *   bench-floor N RUNS THREADS INNER [nt]  ->  one JSON line: {"ms": [per-call ms of each run]}
 * nt: c written by non-temporal (streaming) stores, 64-byte aligned arrays: no
 * read for ownership of c's lines (12 bytes of memory traffic per value where
 * the plain loop moves 16), the stronger floor for kernels that stream their
 * gradient (bench/floors.js). Needs AVX-512, AVX or SSE at -march=native.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* c[i] = a[i] - b[i] for i in [i0, i1), i0 and i1 multiples of 16, by streaming stores. */
static void sub_nt(const float* a, const float* b, float* c, long i0, long i1) {
  for (long i = i0; i < i1; i += 16) {
#if defined(__AVX512F__)
    _mm512_stream_ps(c + i, _mm512_sub_ps(_mm512_load_ps(a + i), _mm512_load_ps(b + i)));
#elif defined(__AVX__)
    _mm256_stream_ps(c + i, _mm256_sub_ps(_mm256_load_ps(a + i), _mm256_load_ps(b + i)));
    _mm256_stream_ps(c + i + 8, _mm256_sub_ps(_mm256_load_ps(a + i + 8), _mm256_load_ps(b + i + 8)));
#else
    for (int q = 0; q < 16; q += 4) _mm_stream_ps(c + i + q, _mm_sub_ps(_mm_load_ps(a + i + q), _mm_load_ps(b + i + q)));
#endif
  }
}

/* One pass: the plain loop, or (nt) 16-value blocks by streaming stores split
 * evenly among the threads, then the rest of n. */
static void pass(const float* a, const float* b, float* c, long n, int nt) {
  if (!nt) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; ++i) c[i] = a[i] - b[i];
    return;
  }
  const long blocks = n / 16;
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), k = omp_get_num_threads();
    sub_nt(a, b, c, 16 * (blocks * t / k), 16 * (blocks * (t + 1) / k));
    _mm_sfence();
  }
  for (long i = 16 * blocks; i < n; ++i) c[i] = a[i] - b[i];
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: bench-floor N RUNS THREADS INNER\n");
    return 2;
  }
  const long n = atol(argv[1]);
  const int runs = atoi(argv[2]), threads = atoi(argv[3]), inner = atoi(argv[4]);
  const int nt = argc > 5 && strcmp(argv[5], "nt") == 0;
  const size_t bytes = (sizeof(float) * n + 63) / 64 * 64;
  float* a = nt ? aligned_alloc(64, bytes) : malloc(sizeof(float) * n);
  float* b = nt ? aligned_alloc(64, bytes) : malloc(sizeof(float) * n);
  float* c = nt ? aligned_alloc(64, bytes) : malloc(sizeof(float) * n);
  if (!a || !b || !c) return 1;
  omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) a[i] = (float)(i % 7), b[i] = (float)(i % 5), c[i] = 0.0f;
  for (int w = 0; w < 2 * inner; ++w) pass(a, b, c, n, nt);
  printf("{\"ms\": [");
  for (int r = 0; r < runs; ++r) {
    const double t0 = omp_get_wtime();
    for (int k = 0; k < inner; ++k) pass(a, b, c, n, nt);
    printf("%s%.6f", r ? ", " : "", (omp_get_wtime() - t0) * 1e3 / inner);
  }
  printf("], \"check\": %.1f}\n", (double)c[n / 2]);
  return 0;
}
