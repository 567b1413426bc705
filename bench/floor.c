/* The memory-bandwidth floor as a plain OpenMP C loop, c[i] = a[i] - b[i] over n
 * floats (read two, write one: 12 bytes per value), built by bench/run.js with
 * gcc -O3 -march=native -fopenmp and run next to the package's own floor so that
 * the table shows both (the package's floor must not be slower than this).
 *   bench-floor N RUNS THREADS INNER  ->  one JSON line: {"ms": [per-call ms of each run]}
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: bench-floor N RUNS THREADS INNER\n");
    return 2;
  }
  const long n = atol(argv[1]);
  const int runs = atoi(argv[2]), threads = atoi(argv[3]), inner = atoi(argv[4]);
  float* a = malloc(sizeof(float) * n);
  float* b = malloc(sizeof(float) * n);
  float* c = malloc(sizeof(float) * n);
  if (!a || !b || !c) return 1;
  omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) a[i] = (float)(i % 7), b[i] = (float)(i % 5), c[i] = 0.0f;
  for (int w = 0; w < 2 * inner; ++w) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; ++i) c[i] = a[i] - b[i];
  }
  printf("{\"ms\": [");
  for (int r = 0; r < runs; ++r) {
    const double t0 = omp_get_wtime();
    for (int k = 0; k < inner; ++k) {
#pragma omp parallel for schedule(static)
      for (long i = 0; i < n; ++i) c[i] = a[i] - b[i];
    }
    printf("%s%.6f", r ? ", " : "", (omp_get_wtime() - t0) * 1e3 / inner);
  }
  printf("], \"check\": %.1f}\n", (double)c[n / 2]);
  return 0;
}
