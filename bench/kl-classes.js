#!/usr/bin/env node
'use strict';
// clsTarget 'kl' by class count, two builds side by side: YOLOv5s-shaped heads
// at 640x640 (B = 16, three anchors, nchw; B = 4 from 200 classes on), 2
// threads, caller's gradOut, the two builds' calls alternated; medians and
// the median of the per-pair ratios, and whether the losses are identical.
// For choosing from which class count the KL steps take four cell groups side
// by side (native/core/fused_cpu.cpp, kKlSideClasses): time a build with
// another threshold against this one.
//   node bench/kl-classes.js BEFORE_ROOT [AFTER_ROOT] [--classes 20,32,40,48,64,80,100] [--runs 15]
const path = require('path');
const { heads, median, timeMs } = require('./common');

const argv = process.argv.slice(2);
const opt = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const roots = argv.filter((a, i) => !a.startsWith('--') && !['--classes', '--runs'].includes(argv[i - 1]));
const before = require(path.resolve(roots[0]));
const after = require(path.resolve(roots[1] || path.join(__dirname, '..')));
const classes = opt('--classes', '20,32,40,48,64,80,100').split(',').map(Number);
const runs = Number(opt('--runs', 15));

console.log('C     before ms  after ms  after/before (median of pairs)  identical loss');
for (const C of classes) {
  const B = C >= 200 ? 4 : 16;
  const shapes = [8, 16, 32].map((s) => [B, 3 * (5 + C), 640 / s, 640 / s]);
  const { student, teacher, gradOut } = heads(shapes);
  const o = { numClasses: C, threads: 2, gradOut, clsTarget: 'kl' };
  for (let i = 0; i < 3; i++) before.distillationLoss(student, teacher, o), after.distillationLoss(student, teacher, o);
  const tb = [], ta = [], ratio = [];
  for (let i = 0; i < runs; i++) {
    tb.push(timeMs(() => before.distillationLoss(student, teacher, o)));
    ta.push(timeMs(() => after.distillationLoss(student, teacher, o)));
    ratio.push(ta[i] / tb[i]);
  }
  const same = before.distillationLoss(student, teacher, o).loss === after.distillationLoss(student, teacher, o).loss;
  console.log(`${String(C).padEnd(5)} ${median(tb).toFixed(2).padStart(9)} ${median(ta).toFixed(2).padStart(9)}  ` +
    `${median(ratio).toFixed(3).padStart(8)}${' '.repeat(24)}${same ? 'yes' : 'NO'}`);
}
