#!/usr/bin/env node
'use strict';
// clsTarget 'kl' on one scale of YOLOv5s-shaped heads [16, 3 (5 + C), g, g]
// for each grid g given, ns per value (2 threads unless TH is set; two passes
// over the grids). For checks that depend on the plane size alone, e.g.
// whether an 80x80 plane (400 cache lines, so the lines of many planes share
// a few L1 sets) costs more per value than an 81x81 one.
//   [TH=1] node bench/kl-grid.js [--root OTHER_BUILD] [--classes C] GRID ...
const path = require('path');
const { heads, numel, nsPerValue } = require('./common');

const argv = process.argv.slice(2);
const opt = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const yd = require(path.resolve(opt('--root', path.join(__dirname, '..'))));
const C = Number(opt('--classes', 80));
const grids = argv.filter((a, i) => !a.startsWith('--') && !['--root', '--classes'].includes(argv[i - 1])).map(Number);
const threads = Number(process.env.TH || 2);
for (let pass = 0; pass < 2; pass++) {
  for (const g of grids) {
    const shapes = [[16, 3 * (5 + C), g, g]];
    const { student, teacher, gradOut } = heads(shapes);
    const o = { numClasses: C, threads, gradOut, clsTarget: 'kl' };
    const ns = nsPerValue(() => yd.distillationLoss(student, teacher, o), numel(shapes[0]), 5);
    console.log(`C=${C}, grid ${g}x${g}, ${threads} thread(s): ${ns.toFixed(3)} ns/value`);
  }
}
