#!/usr/bin/env node
'use strict';
// The floors side by side, in rounds: the fused default call on workload (a)
// (YOLOv5s 640, B = 16, C = 80, nchw, caller's gradOut, 2 threads), the
// package's floor (streamingFloor over the same arrays, interleaved with the
// fused call) and the plain OpenMP C loop (bench/floor.c, -O3 -march=native, in
// its own process right after), and that loop with streaming stores (bench/floor.c
// nt: no read for ownership of the written lines, 64-byte aligned arrays; the
// floor for a call that streams its gradient, as workload (a)'s does where the
// CPU has AVX-512: native/core/fused_cpu.cpp). Memory on these shared machines swings between
// slow and fast moments (floor 8-11 ms against 4.7-5 ms on (a)); rounds show
// each moment's three figures together, which the full bench's separate rows
// cannot.
//   node bench/floors.js [ROUNDS]
const { numel, heads, median, timeMs, cFloorMs } = require('./common');
const yd = require('..');
const { native } = require('../dist/binding'); // streamingFloor: internal, for benchmarks

const ROUNDS = Number(process.argv[2] || 8);
const shapes = [8, 16, 32].map((s) => [16, 3 * 85, 640 / s, 640 / s]);
const { student, teacher, gradOut } = heads(shapes);
const values = shapes.reduce((n, s) => n + numel(s), 0);
const opts = { numClasses: 80, threads: 2, gradOut };
const floor = () => { for (let s = 0; s < shapes.length; s++) native.streamingFloor(student[s].data, teacher[s].data, gradOut[s], 2); };
const fused = () => yd.distillationLoss(student, teacher, opts);
for (let i = 0; i < 3; i++) { fused(); floor(); }
console.log('round  fused ms  floor ms  C loop ms  C nt ms  fused/floor  fused/C loop  floor/C loop  fused/C nt');
for (let r = 0; r < ROUNDS; r++) {
  const a = [], b = [];
  for (let i = 0; i < 9; i++) { a.push(timeMs(fused)); b.push(timeMs(floor)); }
  const cMs = cFloorMs(values, 9, 2, 1);
  if (!cMs) throw new Error('bench/floors.js needs gcc with OpenMP for the C loop');
  const c = median(cMs);
  const cn = median(cFloorMs(values, 9, 2, 1, true));
  const fa = median(a), fb = median(b);
  console.log(`${String(r).padStart(5)}  ${fa.toFixed(2).padStart(8)}  ${fb.toFixed(2).padStart(8)}  ${c.toFixed(2).padStart(9)}  ${cn.toFixed(2).padStart(7)}  ` +
    `${(fa / fb).toFixed(2).padStart(11)}  ${(fa / c).toFixed(2).padStart(12)}  ${(fb / c).toFixed(2).padStart(12)}  ${(fa / cn).toFixed(2).padStart(10)}`);
}
