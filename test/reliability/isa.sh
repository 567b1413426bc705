#!/usr/bin/env bash
# The CPU kernels as a CPU without AVX-512 runs them, on this machine: builds
# the addon with -DYD_FORCE_ISA=ISA (CMakeLists.txt) into build-ISA/ and runs
# on that build the streaming-store test (streamed and unstreamed stores: the
# same bits) and the kernels' tests against the PyTorch reference.
#   x86-64-v3 (default): every kernel compiled for x86-64-v3 alone, the
#     AVX-512 paths off: the clones, streamed loops, 16-bit register kernel
#     and transposes that AVX2 servers run. Needs a CPU with AVX2 and FMA.
#   x86-64: the baseline clones alone and every CPU feature check false, as on
#     a CPU (or a VM) that shows no AVX.
# On an AVX-512 machine this is the only way to check those paths.
#   bash test/reliability/isa.sh [x86-64-v3|x86-64]
set -euo pipefail
cd "$(dirname "$0")/../.."
isa=${1:-x86-64-v3}
case "$isa" in
  x86-64-v3)
    if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then
      echo "isa: $isa skipped: this CPU has no AVX2 and FMA"
      exit 0
    fi
    clones="arch_x86_64_v4|\.avx512f" ;;  # none may be left
  x86-64) clones="arch_x86_64_v|\.avx512f|\.avx2" ;;
  *) echo "isa: x86-64-v3 or x86-64, not $isa"; exit 2 ;;
esac
out="build-$isa"
log=$(mktemp /tmp/yd-isa-build.XXXX)
echo "isa: building the addon for $isa into $out/"
npx cmake-js build --out "$out" --CDYD_FORCE_ISA="$isa" >"$log" 2>&1 || { tail -30 "$log"; exit 1; }
addon="$PWD/$out/Release/yolo_distill.node"
# No clone for a wider instruction set in it, and it is the build the tests load.
if objdump -d "$addon" | grep -qE "$clones"; then echo "isa: $out has clones for wider instruction sets"; exit 1; fi
export YOLO_DISTILL_ADDON="$addon"
loaded=$(node -e "require('./dist'); console.log(Object.keys(require.cache).find((k) => k.endsWith('.node')))")
[ "$loaded" = "$addon" ] || { echo "isa: the tests would load $loaded, not $addon"; exit 1; }
npx jest test/stream-stores.test.js test/kl-lanes.test.js test/variants.test.js test/gradient.test.js test/half.test.js \
  test/numerics-edge.test.js test/anchor-free.test.js 2>&1 | tail -6
