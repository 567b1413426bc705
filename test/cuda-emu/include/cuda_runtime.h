// Test-only stand-in for <cuda_runtime.h> when native/core/fused_cuda.cu is
// compiled as host C++ under the launch-model emulation (cuda_emu.h): the
// runtime API's declarations only; test/cuda-emu/runner.cpp defines the two
// functions fused_cuda.cu calls (no CUDA runtime, no device).
#pragma once
#include <cuda_runtime_api.h>
