#!/usr/bin/env bash
# Runs a small workload under valgrind memcheck and reports invalid accesses and
# definite leaks whose stacks go through the addon (yolo_distill.node). V8 and
# LibTorch keep global allocations alive until exit by design, so only the
# addon's own frames count. Takes a few minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."
log=${1:-/tmp/yd-memcheck.log}
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --num-callers=40 --log-file="$log" node --expose-gc test/reliability/memcheck-script.js
echo "valgrind exit: $?"
grep -E "ERROR SUMMARY|definitely lost" "$log" | tail -3
invalid=$(grep -cE "Invalid (read|write)|uninitialised" "$log" || true)
# Loss records whose stack mentions the addon.
ours=$(awk '/definitely lost in loss record/{rec=$0; inrec=1; next} inrec && /^==[0-9]+== $/{inrec=0} inrec && /yolo_distill/{print rec; inrec=0}' "$log" | wc -l)
echo "invalid accesses / uninitialised uses reported: $invalid"
echo "definite leaks with the addon on the stack: $ours"
[ "$ours" -eq 0 ]
