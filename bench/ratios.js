#!/usr/bin/env node
'use strict';
// The fused call against the package's streaming floor (12 bytes per value),
// timed alternately call by call, 2 threads, caller's gradOut: a quick read of
// "× floor" for some of `npm run bench`'s rows without the whole run. Both
// medians and the median of the per-pair ratios (this machine's memory swings
// between slow and fast moments within seconds: the pairs see the same one).
//   node bench/ratios.js [--runs N] [ROWS]   (ROWS: letters of a b c f k p n; default all)
// a: YOLOv5s 640, B = 16, C = 80; b: C = 8; c: one image at 320 (50 calls a
// timing); f: anchor-free YOLOv8s 640, B = 16; k: (a) with clsTarget 'kl';
// p: (a) with preset 'paper'; n: (a) with preset 'paper' and fmNms; K and F:
// (a) with clsTarget 'kl' and (f), each with the student near its teacher
// (within +-0.25 of it, as late in training: bench/common.js nearHeads).
const path = require('path');
const m = require(path.join(__dirname, '..'));
const { native } = require('../dist/binding'); // streamingFloor: internal, for benchmarks
const { heads, nearHeads, median, timeMs } = require('./common');

const argv = process.argv.slice(2);
const runsAt = argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(argv[runsAt + 1]) : 15;
const rowsArg = argv.find((a, i) => !a.startsWith('--') && argv[i - 1] !== '--runs') || 'abcfkpn';
const yolo = (B, C, size) => [8, 16, 32].map((s) => [B, 3 * (5 + C), size / s, size / s]);
const W = {
  a: ['a: YOLOv5s 640, B=16, C=80', yolo(16, 80, 640), 80, {}],
  b: ['b: C=8', yolo(16, 8, 640), 8, {}],
  c: ['c: one image 320', yolo(1, 80, 320), 80, {}],
  f: ['f: anchor-free YOLOv8s 640, B=16', [80, 40, 20].map((g) => [16, 144, g, g]), 80, { head: 'anchorFree' }],
  k: ["(a), clsTarget 'kl'", yolo(16, 80, 640), 80, { clsTarget: 'kl' }],
  p: ["(a), preset 'paper'", yolo(16, 80, 640), 80, { preset: 'paper' }],
  n: ["(a), preset 'paper' + fmNms", yolo(16, 80, 640), 80, { preset: 'paper', fmNms: true }],
  K: ["(a), clsTarget 'kl', student near", yolo(16, 80, 640), 80, { clsTarget: 'kl' }, 0.5],
  F: ['(f), student near', [80, 40, 20].map((g) => [16, 144, g, g]), 80, { head: 'anchorFree' }, 0.5],
};
for (const key of rowsArg) {
  if (!W[key]) throw new Error(`unknown row ${key}: use letters of ${Object.keys(W).join('')}`);
  const [name, shapes, C, extra, noise] = W[key];
  const { student, teacher, gradOut } = noise ? nearHeads(shapes, noise) : heads(shapes);
  const opt = { numClasses: C, gradOut, threads: 2, ...extra };
  const inner = key === 'c' ? 50 : 1;
  const fused = () => { for (let i = 0; i < inner; i++) m.distillationLoss(student, teacher, opt); };
  const floor = () => {
    for (let i = 0; i < inner; i++) {
      for (let s = 0; s < shapes.length; s++) native.streamingFloor(student[s].data, teacher[s].data, gradOut[s], 2);
    }
  };
  for (let i = 0; i < 5; i++) { fused(); floor(); }
  const tf = [], tl = [], ratio = [];
  for (let r = 0; r < RUNS; r++) {
    const a = timeMs(fused) / inner, b = timeMs(floor) / inner;
    tf.push(a); tl.push(b); ratio.push(a / b);
  }
  console.log(`${name.padEnd(34)} fused ${median(tf).toFixed(3).padStart(7)} ms  floor ${median(tl).toFixed(3).padStart(7)} ms  ` +
    `ratio of medians ${(median(tf) / median(tl)).toFixed(2)}  median ratio ${median(ratio).toFixed(2)}`);
}
