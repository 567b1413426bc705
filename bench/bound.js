#!/usr/bin/env node
'use strict';
// How far each formula can go against the memory floor on this machine: its
// arithmetic alone (the call on heads that fit the L3 cache) next to its call on
// the full workload and the package's floor (12 bytes per value), per value, in
// rounds (this machine's memory swings between slow and fast moments within
// seconds: each round's figures share one). 2 threads, caller's gradOut.
//   node bench/bound.js [--rounds N] [ROWS]   (ROWS: letters of d p n k b f K F; default dpnkbf;
//   K, F: 'kl' and (f) with the student near its teacher, bench/common.js nearHeads)
// Columns per row and round: cache = ns per value with the heads in cache
// (YOLOv5s at 320, B = 2, 12.9 MB for student, teacher and gradient;
// anchor-free YOLOv8s at 320, B = 2); full = ns per value on workload (a)
// (YOLOv5s 640, B = 16, C = 80) or (f) (YOLOv8s 640, B = 16); floor = the
// floor's ns per value on the same full arrays, timed alternately with the
// full call. cache / floor is what "x floor" would read if memory cost nothing
// beyond the floor's own time (the arithmetic fully hidden behind it, or the
// memory behind the arithmetic): a formula whose cache / floor exceeds a
// target cannot meet it in that moment, however its memory accesses are
// arranged; full / floor is what it reads.
const path = require('path');
const m = require(path.join(__dirname, '..'));
const { native } = require('../dist/binding'); // streamingFloor: internal, for benchmarks
const { numel, heads, nearHeads, median, timeMs, nsPerValue } = require('./common');

const argv = process.argv.slice(2);
const at = argv.indexOf('--rounds');
const ROUNDS = at >= 0 ? Number(argv[at + 1]) : 3;
const rows = argv.find((a, i) => !a.startsWith('--') && argv[i - 1] !== '--rounds') || 'dpnkbf';
const yolo = (B, size) => [8, 16, 32].map((s) => [B, 3 * 85, size / s, size / s]);
const free = (B, size) => [8, 16, 32].map((s) => [B, 144, size / s, size / s]);
const W = {
  d: ['default formula', {}],
  p: ["preset 'paper'", { preset: 'paper' }],
  n: ["preset 'paper' + fmNms", { preset: 'paper', fmNms: true }],
  k: ["clsTarget 'kl'", { clsTarget: 'kl' }],
  b: ["objTarget 'bce'", { objTarget: 'bce' }],
  f: ['anchor-free (f)', { head: 'anchorFree' }],
  K: ["'kl', student near", { clsTarget: 'kl' }, 0.5],
  F: ['anchor-free, student near', { head: 'anchorFree' }, 0.5],
};
for (const r of rows) if (!W[r]) throw new Error(`unknown row ${r}: use letters of ${Object.keys(W).join('')}`);

function set(shapes, noise) {
  const h = noise ? nearHeads(shapes, noise) : heads(shapes);
  return { ...h, values: shapes.reduce((n, s) => n + numel(s), 0) };
}
// The heads each row needs, made once: small (in cache) and full, by kind and noise.
const made = new Map();
const heads2 = (kind, noise) => {
  const key = `${kind} ${noise || 0}`;
  if (!made.has(key)) {
    const shapes = kind === 'free' ? [free(2, 320), free(16, 640)] : [yolo(2, 320), yolo(16, 640)];
    made.set(key, shapes.map((s) => set(s, noise)));
  }
  return made.get(key);
};
const call = (h, extra) => () => m.distillationLoss(h.student, h.teacher, { numClasses: 80, threads: 2, gradOut: h.gradOut, ...extra });
const floorOf = (h) => () => {
  for (let s = 0; s < h.student.length; s++) native.streamingFloor(h.student[s].data, h.teacher[s].data, h.gradOut[s], 2);
};

console.log('row                        round  cache ns  full ns  floor ns  cache/floor  full/floor');
for (let round = 0; round < ROUNDS; round++) {
  for (const r of rows) {
    const [name, extra, noise] = W[r];
    const [s, f] = heads2(extra.head === 'anchorFree' ? 'free' : 'yolo', noise);
    const nc = nsPerValue(call(s, extra), s.values, 10);
    const fused = call(f, extra), floor = floorOf(f);
    for (let i = 0; i < 3; i++) { fused(); floor(); }  // the full arrays resident again
    const a = [], b = [];
    for (let i = 0; i < 7; i++) { a.push(timeMs(fused) * 1e6 / f.values); b.push(timeMs(floor) * 1e6 / f.values); }
    const na = median(a), nb = median(b);
    console.log(`${name.padEnd(26)} ${String(round).padStart(5)}  ${nc.toFixed(3).padStart(8)}  ${na.toFixed(3).padStart(7)}  ` +
      `${nb.toFixed(3).padStart(8)}  ${(nc / nb).toFixed(2).padStart(11)}  ${(na / nb).toFixed(2).padStart(10)}`);
  }
}
