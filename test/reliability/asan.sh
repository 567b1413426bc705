#!/usr/bin/env bash
# AddressSanitizer over the adversarial tests: builds the addon and its core
# with -fsanitize=address into build-asan/ (LibTorch and Node stay as they are),
# preloads libasan into node, and runs every memory-safety scenario
# (test/safety/scenarios.js), the recycled-gradient-memory scenarios
# (test/safety/grad-pool.js), the streaming-store calls with the stores forced
# on (test/safety/stream-stores.js), the KL at both group widths
# (test/safety/kl-lanes.js) and the fuzzer's cases, adversarial JavaScript
# included. Counts AddressSanitizer reports, and those with the addon's frames
# on the stack; exits non-zero if there is any. Takes a few minutes (the build).
#   bash test/reliability/asan.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-4000}
logdir=$(mktemp -d /tmp/yd-asan.XXXX)
echo "asan: building the addon with -fsanitize=address into build-asan/"
npx cmake-js build --out build-asan --CDYD_SANITIZE=address >"$logdir/build.log" 2>&1 || { tail -30 "$logdir/build.log"; exit 1; }
libasan=$(g++ -print-file-name=libasan.so)
export YOLO_DISTILL_ADDON="$PWD/build-asan/Release/yolo_distill.node"
# Node and V8 keep allocations until exit by design: leaks are valgrind's
# (test/reliability/memcheck.sh) business here; this run is about invalid accesses.
export ASAN_OPTIONS="detect_leaks=0:log_path=$logdir/asan:abort_on_error=0:allow_user_segv_handler=1"
run() { LD_PRELOAD="$libasan" node --expose-gc "$@"; }
names=$(env -u YOLO_DISTILL_ADDON node test/safety/scenarios.js | node -e 'console.log(JSON.parse(require("fs").readFileSync(0)).names.join(" "))')
crashed=0
for s in $names; do
  if ! out=$(run test/safety/scenarios.js "$s" 2>&1); then crashed=$((crashed + 1)); echo "  $s: exit non-zero"; fi
  echo "  $s: $(echo "$out" | tail -1 | cut -c1-100)"
done
echo "asan: the recycled gradient memory (test/safety/grad-pool.js)"
for s in full_write kept_results_untouched untransferable loop_without_gc async_calls limits cap_follows_calls workers; do
  if ! out=$(run test/safety/grad-pool.js "$s" 2>&1); then crashed=$((crashed + 1)); echo "  $s: exit non-zero"; fi
  echo "  $s: $(echo "$out" | tail -1 | cut -c1-100)"
done
echo "asan: streaming gradient stores forced on (test/safety/stream-stores.js)"
if ! out=$(YD_STREAM_STORES=1 run test/safety/stream-stores.js digests 2>&1); then crashed=$((crashed + 1)); echo "  digests: exit non-zero"; fi
echo "  digests: $(echo "$out" | tail -1 | cut -c1-100)"
echo "asan: the KL in groups of 8 and of 16 cells (test/safety/kl-lanes.js)"
for lanes in 8 16; do
  if ! out=$(YD_KL_LANES=$lanes run test/safety/kl-lanes.js digests 2>&1); then crashed=$((crashed + 1)); echo "  lanes $lanes: exit non-zero"; fi
  echo "  lanes $lanes: $(echo "$out" | tail -1 | cut -c1-100)"
done
# the 8-cell groups with every plane's lines gathered first (kl_groups16_gathered)
if ! out=$(YD_KL_LANES=8 YD_KL_GATHER=1 run test/safety/kl-lanes.js digests 2>&1); then crashed=$((crashed + 1)); echo "  lanes 8, gathered: exit non-zero"; fi
echo "  lanes 8, gathered: $(echo "$out" | tail -1 | cut -c1-100)"
echo "asan: fuzzer, $runs cases (half adversarial)"
LD_PRELOAD="$libasan" node test/reliability/fuzz.js --seed 20261128 --runs "$runs" | tail -2
reports=$(cat "$logdir"/asan.* 2>/dev/null | grep -c "ERROR: AddressSanitizer" || true)
ours=$(cat "$logdir"/asan.* 2>/dev/null | grep -cE "yolo_distill|native/(addon|core)/" || true)
echo "asan: scenarios that crashed: $crashed"
echo "asan: AddressSanitizer reports: $reports; stack frames in the addon within them: $ours (logs: $logdir)"
[ "$reports" -eq 0 ] && [ "$crashed" -eq 0 ]
