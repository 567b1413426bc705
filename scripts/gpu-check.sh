#!/usr/bin/env bash
# One script for a GPU machine with python3 + a CUDA torch, nvcc, cmake and ninja,
# but no Node.js and no network (see scripts/gpu-prepare.sh for what to bring).
# Builds the addon against that torch (CUDA kernels on), runs the CUDA checks
# (test/cuda-check.js) and the GPU benchmark (bench/gpu.js), prints a summary and
# writes it under $OUT when set. Meant to finish well under 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/yd-gpu-out}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "=== $* ($(( $(date +%s) - start )) s)"; }

# Without CUDA the checks and the benchmark fail here instead of skipping.
export YD_REQUIRE_CUDA=1

step "node"
if ! command -v node >/dev/null 2>&1; then
  mkdir -p /tmp/yd-node/bin
  if command -v xz >/dev/null 2>&1; then
    xz -dc .gpu/node.xz > /tmp/yd-node/bin/node
  else  # no xz on the machine: Python's lzma reads the same file
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      .gpu/node.xz /tmp/yd-node/bin/node
  fi
  chmod +x /tmp/yd-node/bin/node
  export PATH=/tmp/yd-node/bin:$PATH
fi
node --version
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
export YD_PYTHON=$(command -v python3)
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'

step "toolchain (what the configure below needs)"
{
  echo "cmake: $(cmake --version | head -1)"
  echo "ninja: $(ninja --version 2>/dev/null || echo missing)"
  echo "nvcc: $( (command -v nvcc >/dev/null && nvcc --version | tail -2 | tr '\n' ' ') || echo "not on PATH (CUDACXX=${CUDACXX:-unset})")"
  echo "CUDA toolkit: ${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}} $(cat "${CUDA_HOME:-/usr/local/cuda}/version.json" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["cuda"]["version"])' 2>/dev/null || true)"
  python3 - <<'PY'
import torch, torch.utils
print("torch", torch.__version__, "built with CUDA", torch.version.cuda, "| cmake prefix", torch.utils.cmake_prefix_path)
print("TORCH_CUDA_ARCH_LIST in the environment:", __import__("os").environ.get("TORCH_CUDA_ARCH_LIST"))
PY
} 2>&1 | tee "$OUT/toolchain.txt"

step "build (cmake + ninja against the torch of python3)"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/build/Release" > "$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
grep -E "yolo-distill" "$OUT/cmake.log" || true
cmake --build build-gpu -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
node -e "console.log(require('./dist').backendInfo())" | tee "$OUT/backend.txt"
grep -q "cuda: true" "$OUT/backend.txt" || { echo "the build has no CUDA kernels or sees no GPU: failing"; exit 1; }

step "CUDA checks"
set +e
node test/cuda-check.js 2>&1 | tee "$OUT/cuda-check.txt"
check_rc=${PIPESTATUS[0]}
step "GPU benchmark"
OUT="$OUT" timeout 240 node bench/gpu.js 2>&1 | tee "$OUT/gpu-bench.txt"
bench_rc=${PIPESTATUS[0]}
set -e

step "summary"
{
  echo "GPU: $(cat "$OUT/gpu.txt" 2>/dev/null)"
  echo "CUDA checks: $(tail -1 "$OUT/cuda-check.txt") (exit $check_rc)"
  cat "$OUT/gpu-bench.md" 2>/dev/null || echo "GPU benchmark: exit $bench_rc"
} | tee "$OUT/summary.txt"
[ "$check_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
