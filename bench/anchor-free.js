#!/usr/bin/env node
'use strict';
// Anchor-free heads (YOLOv8s-640: 3 scales 80/40/20, C = 80, regMax 16, nchw) on
// the CPU: the fused kernel, the LibTorch-ops path (impl: 'reference') and the
// streaming floor of the same arrays (12 bytes per value), interleaved in one
// run, medians, 2 threads, caller's gradOut.
//   node bench/anchor-free.js [--batch B] [--runs N]
const m = require('../dist');
const { native } = require('../dist/binding'); // streamingFloor: internal, for benchmarks
const { numel, heads, median, timeMs: time, numberArg } = require('./common');

const B = numberArg('--batch', 2), RUNS = numberArg('--runs', 9);
const R = 16, C = 80, K = 4 * R + C;
const shapes = [80, 40, 20].map((g) => [B, K, g, g]);
const { student: st, teacher: te, gradOut: g } = heads(shapes);
const rows = {
  'fused (default options)': () => m.distillationLoss(st, te, { numClasses: C, head: 'anchorFree', gradOut: g, threads: 2 }),
  "fused, clsTarget 'kl'": () => m.distillationLoss(st, te, { numClasses: C, head: 'anchorFree', clsTarget: 'kl', gradOut: g, threads: 2 }),
  'fused, fmNms': () => m.distillationLoss(st, te, { numClasses: C, head: 'anchorFree', fmNms: true, gradOut: g, threads: 2 }),
  "LibTorch ops (impl: 'reference')": () => m.distillationLoss(st, te, { numClasses: C, head: 'anchorFree', impl: 'reference', gradOut: g, threads: 2 }),
  'floor (a - b, 12 B/value)': () => { for (let s = 0; s < 3; s++) native.streamingFloor(st[s].data, te[s].data, g[s], 2); },
};
const times = Object.fromEntries(Object.keys(rows).map((k) => [k, []]));
for (const f of Object.values(rows)) f();
for (let i = 0; i < RUNS; i++) for (const [k, f] of Object.entries(rows)) times[k].push(time(f));
const floor = median(times['floor (a - b, 12 B/value)']);
console.log(`anchor-free YOLOv8s-640, B=${B}, C=${C}, regMax ${R}, nchw: ${(numel(shapes[0]) + numel(shapes[1]) + numel(shapes[2])) / 1e6} M values per tensor`);
for (const k of Object.keys(rows)) console.log(`${k.padEnd(36)} ${median(times[k]).toFixed(2).padStart(9)} ms  ${(median(times[k]) / floor).toFixed(1).padStart(6)}x floor`);
