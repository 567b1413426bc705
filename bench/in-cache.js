#!/usr/bin/env node
'use strict';
// The arithmetic cost of a formula with its data in cache: YOLOv5s heads at
// 320x320, B = 2, C = 80 (1.07 M values per tensor, 12.9 MB for student, teacher
// and gradient: inside the 32 MB L3), 20 calls per timing, median of 15, caller's
// gradOut; ns per value. What a compute-bound formula costs whatever memory does
// (workload (a) has 34.3 M values per tensor: multiply). Anchor-free rows use
// YOLOv8s heads at 320 (B = 2, 0.6 M values).
//   node bench/in-cache.js [--threads N] [--root OTHER_BUILD] [--compare BEFORE_BUILD [--rounds R]] [ROW ...]
// rows: default paper fmNms paperNms bce kl anchorFree nahwc (all when none given; nahwc: the
// default formula on the same heads in the nahwc layout)
// --compare: BEFORE_BUILD (a built checkout: build/ and dist/) and this one (or
// --root) in one process, timed in alternation (R rounds, default 9, each a
// median of 5 timings of 20 calls per build), so that both see the same
// moments of this shared machine; prints both medians and the median of the
// rounds' after / before ratios.
const path = require('path');
const { numel, heads, median, nsPerValue } = require('./common');

const argv = process.argv.slice(2);
const opt = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const threads = Number(opt('--threads', 2));
const root = path.resolve(opt('--root', path.join(__dirname, '..')));
const yd = require(root);
const named = argv.filter((a, i) => !a.startsWith('--') && !['--threads', '--root', '--compare', '--rounds'].includes(argv[i - 1]));
const beforeRoot = argv.includes('--compare') ? path.resolve(opt('--compare')) : null;
const before = beforeRoot ? require(beforeRoot) : null;
const rounds = Number(opt('--rounds', 9));
const yolo = [8, 16, 32].map((s) => [2, 3 * 85, 320 / s, 320 / s]);
const af = [40, 20, 10].map((g) => [2, 144, g, g]);
const yoloNahwc = [8, 16, 32].map((s) => [2, 3, 320 / s, 320 / s, 85]);
const rows = {
  default: [yolo, {}],
  paper: [yolo, { preset: 'paper' }],
  fmNms: [yolo, { fmNms: true }],
  paperNms: [yolo, { preset: 'paper', fmNms: true }],
  bce: [yolo, { objTarget: 'bce' }],
  kl: [yolo, { clsTarget: 'kl' }],
  anchorFree: [af, { head: 'anchorFree' }],
  nahwc: [yoloNahwc, { layout: 'nahwc' }],
};
console.log(`in cache, ${threads} thread(s), ${root}${before ? ` against ${beforeRoot}, ${rounds} rounds alternated` : ''}`);
for (const name of named.length ? named : Object.keys(rows)) {
  const [shapes, extra] = rows[name];
  const { student, teacher, gradOut } = heads(shapes);
  const options = { numClasses: 80, threads, gradOut, ...extra };
  const values = shapes.reduce((n, s) => n + numel(s), 0);
  if (!before) {
    const ns = nsPerValue(() => yd.distillationLoss(student, teacher, options), values, 20);
    console.log(`${name.padEnd(12)} ${ns.toFixed(3)} ns/value`);
    continue;
  }
  const a = [], b = [], ratio = [];
  for (let r = 0; r < rounds; r++) {
    const x = nsPerValue(() => before.distillationLoss(student, teacher, options), values, 20, 5);
    const y = nsPerValue(() => yd.distillationLoss(student, teacher, options), values, 20, 5);
    a.push(x), b.push(y), ratio.push(y / x);
  }
  console.log(`${name.padEnd(12)} before ${median(a).toFixed(3)}, after ${median(b).toFixed(3)} ns/value; after / before ${median(ratio).toFixed(3)} (rounds ${Math.min(...ratio).toFixed(2)}-${Math.max(...ratio).toFixed(2)})`);
}
