// A small emulation of the CUDA launch model, for the tests only: compiles the
// kernels of native/core/fused_cuda.cu, unchanged, as host C++ (g++ -include
// this file) and runs them on the CPU. Scope and limits: RELIABILITY.md
// "CUDA kernels under emulation".
//
// - A launch runs its blocks one after another; each block runs blockDim host
//   threads at once, and __syncthreads() is a barrier of that block's threads.
// - __shared__ variables are function-local statics: one instance, used by the
//   one block that runs at a time, as shared memory is per block.
// - threadIdx, blockIdx, blockDim, gridDim are per host thread.
// - __half and __nv_bfloat16 are the host types of the CUDA headers (their
//   conversions round as on the device).
// Not emulated: warp intrinsics (the kernels use none), timing, the memory
// model (host threads see each other's writes after a barrier, as a block does).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#undef __shared__
#define __shared__ static
#undef __global__
#define __global__
#ifndef __launch_bounds__
#define __launch_bounds__(n)
#endif

namespace yd_emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const long gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  long gen_ = 0;
};

inline thread_local Dim3 tl_thread, tl_block, tl_block_dim, tl_grid;
inline thread_local Barrier* tl_barrier = nullptr;
// Launches made so far (the runner reports them).
inline int64_t launches = 0;
inline int64_t launches_made() { return launches; }

template <typename... Params>
struct Launch {
  void (*kernel)(Params...);
  int64_t grid;
  int block;
  template <typename... Args>
  void operator()(Args&&... args) const {
    ++launches;
    for (int64_t b = 0; b < grid; ++b) {
      Barrier barrier(block);
      std::vector<std::thread> threads;
      threads.reserve(block);
      for (int i = 0; i < block; ++i) {
        threads.emplace_back([&, i] {
          tl_thread.x = static_cast<unsigned>(i);
          tl_block.x = static_cast<unsigned>(b);
          tl_block_dim.x = static_cast<unsigned>(block);
          tl_grid.x = static_cast<unsigned>(grid);
          tl_barrier = &barrier;
          kernel(static_cast<Params>(args)...);
        });
      }
      for (std::thread& t : threads) t.join();
    }
  }
};

template <typename... Params>
Launch<Params...> launch(int64_t grid, int block, void (*kernel)(Params...)) {
  return Launch<Params...>{kernel, grid, block};
}

inline void syncthreads() { tl_barrier->wait(); }

}  // namespace yd_emu

#define threadIdx (::yd_emu::tl_thread)
#define blockIdx (::yd_emu::tl_block)
#define blockDim (::yd_emu::tl_block_dim)
#define gridDim (::yd_emu::tl_grid)
#define __syncthreads() ::yd_emu::syncthreads()
#define YD_LAUNCH(grid, block, stream, ...) ::yd_emu::launch((grid), (block), &__VA_ARGS__)

// The device's min/max overloads that the kernels call unqualified.
using std::max;
using std::min;
