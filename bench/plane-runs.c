// How the order of reads and writes across many planes bounds a kernel that
// reads every class of a cell at once (the KL steps, native/core/fused_cpu.cpp
// kl_group): student, teacher and gradient of 80 class planes of 6,400 cells
// (YOLOv5s' 80x80 grid), 64 such units, 393 MB in all. Each row times one
// pass, in ns per value per thread, alternated with the others, and prints
// its median over the rounds next to the plain loop c[i] = a[i] - b[i]
// (bench/floor.c's) in the same run.
//   gcc -O3 -march=native -fopenmp bench/plane-runs.c -o build/plane-runs
//   OMP_NUM_THREADS=2 build/plane-runs [rounds]
// Rows (c = t - p in every pass; "arith": 24 dependent fused multiply-adds on
// each 16 values before the store, about the KL's cost per value):
//   floor                  the plain loop
//   runs of 1 line         for each 16 cells: every class's line of t, p, g
//   runs of 4 lines        for each 64 cells: every class's 4 lines
//   arith in L1            the arithmetic alone, on 20 KB that stay in L1
//   arith, runs of 1       runs of 1 line, the lines two groups on prefetched
//                          into L1 (the KL's scheme before four groups)
//   arith, runs of 4       runs of 4 lines, the next 64 cells' 4 lines of each
//                          class prefetched as the classes go (the KL's scheme)
//   arith, runs of 4, none runs of 4 lines, no prefetch
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { kC = 80, kHW = 6400, kUnits = 64, kRows = 7 };
static const char* kNames[kRows] = {"floor", "runs of 1 line", "runs of 4 lines", "arith in L1",
                                    "arith, runs of 1", "arith, runs of 4", "arith, runs of 4, none"};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static int cmp(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static inline __m512 arith(__m512 a, __m512 b) {
  const __m512 x = _mm512_sub_ps(a, b);
  __m512 y = x;
  for (int k = 0; k < 24; ++k) y = _mm512_fmadd_ps(y, x, a);
  return y;
}

// One 16-cell group's lines of every class, or (lines = 4) 64 cells' runs.
static void unit(int row, const float* t, const float* p, float* g) {
  const int lines = row == 1 || row == 4 ? 1 : 4, cells = 16 * lines;
  for (int j0 = 0; j0 < kHW; j0 += cells) {
    for (int c = 0; c < kC; ++c) {
      const long o = (long)c * kHW + j0;
      if (row == 4 && j0 + 2 * cells < kHW) {
        _mm_prefetch((const char*)(t + o + 2 * cells), _MM_HINT_T0);
        _mm_prefetch((const char*)(p + o + 2 * cells), _MM_HINT_T0);
        _mm_prefetch((const char*)(g + o + 2 * cells), _MM_HINT_T0);
      }
      if (row == 5 && j0 + cells < kHW) {
        for (int q = 0; q < lines; ++q) {
          _mm_prefetch((const char*)(t + o + cells + 16 * q), _MM_HINT_T0);
          _mm_prefetch((const char*)(p + o + cells + 16 * q), _MM_HINT_T0);
          _mm_prefetch((const char*)(g + o + cells + 16 * q), _MM_HINT_T0);
        }
      }
      for (int q = 0; q < lines; ++q) {
        const __m512 a = _mm512_loadu_ps(t + o + 16 * q), b = _mm512_loadu_ps(p + o + 16 * q);
        _mm512_storeu_ps(g + o + 16 * q, row >= 4 ? arith(a, b) : _mm512_sub_ps(a, b));
      }
    }
  }
}

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? atoi(argv[1]) : 5;
  const long n = (long)kUnits * kC * kHW;
  float* t = aligned_alloc(64, n * 4);
  float* p = aligned_alloc(64, n * 4);
  float* g = aligned_alloc(64, n * 4);
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) t[i] = (float)(i % 7), p[i] = (float)(i % 5), g[i] = 0.0f;
  double* ns = calloc((size_t)kRows * rounds, sizeof(double));
  const int threads = omp_get_max_threads();
  for (int r = 0; r < rounds; ++r) {
    for (int row = 0; row < kRows; ++row) {
      const double t0 = now();
      if (row == 0) {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; ++i) g[i] = t[i] - p[i];
      } else if (row == 3) {
        // the same arithmetic on one unit's first 64 cells of each class, in L1
#pragma omp parallel for schedule(dynamic, 1)
        for (int u = 0; u < kUnits; ++u) {
          float* gu = g + (long)u * kC * kHW;
          for (int rep = 0; rep < kHW / 64; ++rep)
            for (int c = 0; c < kC; ++c)
              for (int q = 0; q < 4; ++q) {
                const long o = (long)c * 64 + 16 * q;
                _mm512_storeu_ps(gu + o, arith(_mm512_loadu_ps(t + o), _mm512_loadu_ps(p + o)));
              }
        }
      } else {
#pragma omp parallel for schedule(dynamic, 1)
        for (int u = 0; u < kUnits; ++u) {
          const long b = (long)u * kC * kHW;
          unit(row, t + b, p + b, g + b);
        }
      }
      ns[row * rounds + r] = (now() - t0) * 1e9 / n * threads;
    }
  }
  printf("%d thread(s), %d rounds, ns per value per thread (median) and x the floor:\n", threads, rounds);
  qsort(ns, rounds, sizeof(double), cmp);
  const double floor = ns[rounds / 2];
  for (int row = 0; row < kRows; ++row) {
    qsort(ns + row * rounds, rounds, sizeof(double), cmp);
    const double m = ns[row * rounds + rounds / 2];
    printf("  %-24s %.3f  %.2fx\n", kNames[row], m, m / floor);
  }
  free(ns);
  free(t);
  free(p);
  free(g);
  return 0;
}
