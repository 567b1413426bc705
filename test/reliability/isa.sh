#!/usr/bin/env bash
# The CPU kernels as a CPU without AVX-512 runs them, on any CPU with AVX2 and
# FMA: builds the addon with -DYD_FORCE_ISA=x86-64-v3 into build-avx2/ (every
# kernel compiled for x86-64-v3 alone, the AVX-512 paths off, the AVX2 loops
# that stream the gradient; CMakeLists.txt) and runs on that build the
# streaming-store test (streamed and unstreamed stores: the same bits) and the
# kernels' tests against the PyTorch reference. On an AVX-512 machine this is
# the only way to check the clones and streamed loops that AVX2 servers run.
#   bash test/reliability/isa.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then
  echo "isa: skipped: this CPU has no AVX2 and FMA"
  exit 0
fi
log=$(mktemp /tmp/yd-isa-build.XXXX)
echo "isa: building the addon for x86-64-v3 into build-avx2/"
npx cmake-js build --out build-avx2 --CDYD_FORCE_ISA=x86-64-v3 >"$log" 2>&1 || { tail -30 "$log"; exit 1; }
addon="$PWD/build-avx2/Release/yolo_distill.node"
# No AVX-512 clone in it, and it is the build the tests load.
if objdump -d "$addon" | grep -qE "arch_x86_64_v4|\.avx512f"; then echo "isa: build-avx2 has AVX-512 clones"; exit 1; fi
export YOLO_DISTILL_ADDON="$addon"
loaded=$(node -e "require('./dist'); console.log(Object.keys(require.cache).find((k) => k.endsWith('.node')))")
[ "$loaded" = "$addon" ] || { echo "isa: the tests would load $loaded, not $addon"; exit 1; }
npx jest test/stream-stores.test.js test/variants.test.js test/gradient.test.js test/half.test.js \
  test/numerics-edge.test.js test/anchor-free.test.js 2>&1 | tail -6
