#!/usr/bin/env node
'use strict';
// What a formula costs per value at one thread as its heads grow from L2-sized
// to L3-sized to memory-sized: YOLOv5s-shaped heads (C = 80, 3 anchors) at
// 160x160 B = 1 (1.6 MB for student, teacher and gradient), 320x320 B = 2
// (12.9 MB) and 640x640 B = 4 (103 MB); 50 calls per timing, median of 15,
// caller's gradOut. A cost that stays put is compute bound; one that grows
// with size, memory bound.
//   node bench/by-size.js [--threads N] [--root OTHER_BUILD]
const path = require('path');
const { heads, numel, nsPerValue } = require('./common');

const argv = process.argv.slice(2);
const opt = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const threads = Number(opt('--threads', 1));
const yd = require(path.resolve(opt('--root', path.join(__dirname, '..'))));
const formulas = [['default', {}], ["clsTarget 'kl'", { clsTarget: 'kl' }], ["preset 'paper'", { preset: 'paper' }]];
for (const [size, B] of [[160, 1], [320, 2], [640, 4]]) {
  const shapes = [8, 16, 32].map((s) => [B, 255, size / s, size / s]);
  const { student, teacher, gradOut } = heads(shapes);
  const values = shapes.reduce((n, s) => n + numel(s), 0);
  const cells = [];
  for (const [, extra] of formulas) {
    const o = { numClasses: 80, threads, gradOut, ...extra };
    cells.push(nsPerValue(() => yd.distillationLoss(student, teacher, o), values, 50).toFixed(3));
  }
  console.log(`${size}x${size}, B=${B} (${(values * 12 / 1e6).toFixed(1)} MB), ${threads} thread(s): ` +
    formulas.map(([n], i) => `${n} ${cells[i]}`).join(', ') + ' ns/value');
}
