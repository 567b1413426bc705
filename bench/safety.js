#!/usr/bin/env node
'use strict';
// The cost of the memory-safety mechanisms (RELIABILITY.md "What a caller may do
// to a buffer"), measured side by side with a build of the code before them, in
// one process, timings interleaved (A B A B ...):
//   node --expose-gc bench/safety.js BEFORE_ROOT [AFTER_ROOT]
// BEFORE_ROOT is a built checkout of the earlier commit (e.g. a git worktree
// with its own build/ and dist/); AFTER_ROOT defaults to this checkout.
// Rows: workload (a) (YOLOv5s heads at 640x640, B = 16, C = 80, nchw) sync
// with gradOut, async with gradOut, and the tiny call (e) (one 2x2 scale).
const path = require('path');
const { fill, heads, median } = require('./common');

const before = require(path.resolve(process.argv[2]));
const after = require(path.resolve(process.argv[3] || path.join(__dirname, '..')));

const B = 16, C = 80, A = 3, K = A * (5 + C);
const shapes = [80, 40, 20].map((g) => [B, K, g, g]);
const { student, teacher, gradOut } = heads(shapes); // gradOut resident
const opts = { numClasses: C, threads: 2, gradOut };
const tiny = { p: [{ data: fill(1020, 3), shape: [1, 255, 2, 2] }], t: [{ data: fill(1020, 4), shape: [1, 255, 2, 2] }], g: [new Float32Array(1020)] };

async function timeOnce(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
async function pair(label, mk, reps) {
  const fa = mk(before), fb = mk(after);
  await fa(); await fb(); // warm
  const ta = [], tb = [];
  for (let i = 0; i < reps; i++) {
    ta.push(await timeOnce(fa));
    tb.push(await timeOnce(fb));
  }
  const a = median(ta), b = median(tb);
  return { label, before: a, after: b, ratio: b / a };
}

(async () => {
  const same = before.distillationLoss(student, teacher, opts).loss === after.distillationLoss(student, teacher, opts).loss;
  const rows = [];
  rows.push(await pair('workload (a), sync, gradOut (ms)', (m) => () => m.distillationLoss(student, teacher, opts), 21));
  rows.push(await pair('workload (a), async, gradOut (ms)', (m) => () => m.distillationLossAsync(student, teacher, opts), 21));
  const k = 20000;
  rows.push(await pair(`tiny call (e), ${k} calls (ms)`, (m) => () => {
    for (let i = 0; i < k; i++) m.distillationLoss(tiny.p, tiny.t, { numClasses: 80, gradOut: tiny.g });
  }, 9));
  console.log(`same loss before and after: ${same}`);
  for (const r of rows) {
    console.log(`${r.label.padEnd(40)} before ${r.before.toFixed(3).padStart(9)}  after ${r.after.toFixed(3).padStart(9)}  after/before ${r.ratio.toFixed(3)}`);
  }
})();
