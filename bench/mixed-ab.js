#!/usr/bin/env node
'use strict';
// One dtype pair of anchor-free YOLOv8s-shaped heads through two builds,
// alternated call by call (A B A B ...: both see the same moments of this
// shared machine), 2 threads, caller's gradOut; the medians, their ratio, and
// whether the two builds' first results (loss and every gradient bit) are
// identical. For the mixed-dtype changes of BENCHMARKS.md (an fp32 student
// with a 16-bit teacher, and the 16-bit students), where bench/mixed.js's
// smaller heads do not stream their gradients.
//   node bench/mixed-ab.js BEFORE_ROOT [AFTER_ROOT] [--student float32] [--teacher float16]
//                          [--batch 8] [--grids 80,40,20] [--runs 15]
// (roots: a package directory with its built addon; AFTER_ROOT defaults to this one)
const path = require('path');
const { heads, median, timeMs } = require('./common');
const h = require('../test/helpers');

const argv = process.argv.slice(2);
const flags = ['--student', '--teacher', '--batch', '--grids', '--runs'];
const opt = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const roots = argv.filter((a, i) => !a.startsWith('--') && !flags.includes(argv[i - 1]));
if (!roots.length) throw new Error('usage: node bench/mixed-ab.js BEFORE_ROOT [AFTER_ROOT] [--student D] [--teacher D] [--batch B] [--grids G,G] [--runs N]');
const A = require(path.resolve(roots[0]));
const B = require(path.resolve(roots[1] || path.join(__dirname, '..')));
const sd = opt('--student', 'float32'), td = opt('--teacher', 'float16');
const batch = Number(opt('--batch', 8)), runs = Number(opt('--runs', 15));
const shapes = opt('--grids', '80,40,20').split(',').map(Number).map((g) => [batch, 144, g, g]);
const numel = (s) => s.reduce((x, y) => x * y, 1);
const { student, teacher } = heads(shapes);
const s = student.map((x) => h.headOfDtype(x, sd));
const t = teacher.map((x) => h.headOfDtype(x, td));
const grads = () => shapes.map((d) => (sd === 'float32' ? new Float32Array(numel(d)) : new Uint16Array(numel(d))).fill(1));
const ga = grads(), gb = grads();
const o = { numClasses: 80, head: 'anchorFree', threads: 2 };
const fa = () => A.distillationLoss(s, t, { ...o, gradOut: ga });
const fb = () => B.distillationLoss(s, t, { ...o, gradOut: gb });
const ra = fa(), rb = fb();
const same = ra.loss === rb.loss && ga.every((g, k) => h.sameBits(g, gb[k]));
const ta = [], tb = [];
for (let i = 0; i < runs; i++) { ta.push(timeMs(fa)); tb.push(timeMs(fb)); }
console.log(`${sd}/${td} B=${batch}: before ${median(ta).toFixed(2)} ms, after ${median(tb).toFixed(2)} ms, after/before ${(median(tb) / median(ta)).toFixed(3)}, identical: ${same ? 'yes' : 'NO'}`);
