#!/usr/bin/env node
'use strict';
// Two builds side by side in one process, timings interleaved (A B A B ...),
// medians, 2 threads, caller-owned gradOut: every workload of `npm run bench`
// (a, b, c, d, e, v, f) plus nhwc (the default and clsTarget 'kl'), clsTarget 'kl' at 20 classes and
// two KL rows with the student near its teacher ('near'), and whether the two builds' results (loss and
// every gradient bit) are identical. For "no slowdown, same results" checks of
// a kernel change:
//   node bench/compare.js BEFORE_ROOT [AFTER_ROOT] [--runs N] [--only TEXT]
// (--only: just the rows whose name contains TEXT)
// BEFORE_ROOT is a built checkout of the earlier commit (a git worktree with
// its own build/ and dist/); AFTER_ROOT defaults to this checkout.
const path = require('path');
const { heads, nearHeads, median } = require('./common');

const argv = process.argv.slice(2);
const runsAt = argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(argv[runsAt + 1]) : 11;
const onlyAt = argv.indexOf('--only');
const ONLY = onlyAt >= 0 ? argv[onlyAt + 1] : '';  // rows whose name contains this text
const roots = argv.filter((a, i) => !a.startsWith('--') && argv[i - 1] !== '--runs' && argv[i - 1] !== '--only');
const before = require(path.resolve(roots[0]));
const after = require(path.resolve(roots[1] || path.join(__dirname, '..')));

const A = 3;
const yolo = (B, C, size, layout) => [8, 16, 32].map((s) => {
  const g = size / s;
  return layout === 'nchw' ? [B, A * (5 + C), g, g] : layout === 'nhwc' ? [B, g, g, A * (5 + C)] : [B, A, g, g, 5 + C];
});
// YOLOv8s-shaped anchor-free heads (strides 8/16/32: grids 80/40/20 at 640 px; regMax 16, C = 80: 144 channels).
const anchorFree = (B, layout, size = 640) =>
  [8, 16, 32].map((s) => size / s).map((g) => (layout === 'nchw' ? [B, 144, g, g] : [B, g, g, 144]));
const sameBits = (a, b) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

const rows = [
  ['a: YOLOv5s 640, B=16, C=80, nchw', 80, 'nchw', yolo(16, 80, 640, 'nchw'), {}],
  ['b: B=16, C=8, nchw', 8, 'nchw', yolo(16, 8, 640, 'nchw'), {}],
  ['c: one image 320, C=80', 80, 'nchw', yolo(1, 80, 320, 'nchw'), {}],
  ['d: B=16, C=80, nahwc', 80, 'nahwc', yolo(16, 80, 640, 'nahwc'), {}],
  ['nhwc: B=16, C=80', 80, 'nhwc', yolo(16, 80, 640, 'nhwc'), {}],
  ['e: tiny call (2000 calls)', 80, 'nchw', [[1, 255, 2, 2]], {}, 2000],
  ["v: preset 'paper'", 80, 'nchw', yolo(16, 80, 640, 'nchw'), { preset: 'paper' }],
  ["v: objTarget 'bce'", 80, 'nchw', yolo(16, 80, 640, 'nchw'), { objTarget: 'bce' }],
  ["v: clsTarget 'kl'", 80, 'nchw', yolo(16, 80, 640, 'nchw'), { clsTarget: 'kl' }],
  ['v: fmNms', 80, 'nchw', yolo(16, 80, 640, 'nchw'), { fmNms: true }],
  ["v: preset 'paper' + fmNms", 80, 'nchw', yolo(16, 80, 640, 'nchw'), { preset: 'paper', fmNms: true }],
  ["v: weighted {cls: false}, nahwc", 80, 'nahwc', yolo(16, 80, 640, 'nahwc'), { weighted: { cls: false } }],
  ["v: clsTarget 'kl', nhwc", 80, 'nhwc', yolo(16, 80, 640, 'nhwc'), { clsTarget: 'kl' }],
  // 20 classes (Pascal VOC): the KL's single groups (under 40 classes), most of them not near at tau 1.
  ["v: clsTarget 'kl', C=20", 20, 'nchw', yolo(16, 20, 640, 'nchw'), { clsTarget: 'kl' }],
  ['f: anchor-free YOLOv8s 640, B=16', 80, 'nchw', anchorFree(16, 'nchw'), { head: 'anchorFree' }],
  ["f: anchor-free, clsTarget 'kl'", 80, 'nchw', anchorFree(16, 'nchw'), { head: 'anchorFree', clsTarget: 'kl' }],
  ['f: anchor-free, fmNms', 80, 'nchw', anchorFree(16, 'nchw'), { head: 'anchorFree', fmNms: true }],
  ['f: anchor-free, nhwc', 80, 'nhwc', anchorFree(16, 'nhwc'), { head: 'anchorFree' }],
  // The student near its teacher (late training): teacher + noise in [-0.25, 0.25).
  ['f near: anchor-free, student near', 80, 'nchw', anchorFree(16, 'nchw'), { head: 'anchorFree' }, 1, 0.5],
  ["v near: clsTarget 'kl', student near", 80, 'nchw', yolo(16, 80, 640, 'nchw'), { clsTarget: 'kl' }, 1, 0.5],
  // 512 and 1024 px inputs: class planes of 64 x 64, 32 x 32, 16 x 16 (128 x 128 ...) cells, whose
  // strides are multiples of 4 KB (the KL's gathered lines, native/core/fused_cpu.cpp kl_gather).
  ["v: clsTarget 'kl', 512 px", 80, 'nchw', yolo(16, 80, 512, 'nchw'), { clsTarget: 'kl' }],
  ["v: clsTarget 'kl', 1024 px, B=4", 80, 'nchw', yolo(4, 80, 1024, 'nchw'), { clsTarget: 'kl' }],
  ['f: anchor-free 512 px, B=16', 80, 'nchw', anchorFree(16, 'nchw', 512), { head: 'anchorFree' }],
  ["f: anchor-free 512 px, clsTarget 'kl'", 80, 'nchw', anchorFree(16, 'nchw', 512), { head: 'anchorFree', clsTarget: 'kl' }],
  ['f: anchor-free 1024 px, B=4', 80, 'nchw', anchorFree(4, 'nchw', 1024), { head: 'anchorFree' }],
];
console.log(`${'row'.padEnd(36)} ${'before ms'.padStart(10)} ${'after ms'.padStart(10)}  after/before  identical`);
for (const [name, C, layout, shapes, extra, reps = 1, noise = 0] of rows) {
  if (ONLY && !name.includes(ONLY)) continue;
  const { student, teacher, gradOut: gA } = noise ? nearHeads(shapes, noise) : heads(shapes);
  const gB = gA.map((g) => new Float32Array(g.length).fill(1));
  const opts = (g) => ({ numClasses: C, layout, threads: 2, gradOut: g, ...extra });
  let ra;
  try {
    ra = before.distillationLoss(student, teacher, opts(gA));
  } catch (e) {
    console.log(`${name.padEnd(36)} before: ${e.code} (not in that build)`);
    continue;
  }
  const rb = after.distillationLoss(student, teacher, opts(gB));
  const identical = ra.loss === rb.loss && gA.every((g, k) => sameBits(g, gB[k]));
  const ta = [], tb = [];
  for (let i = 0; i < RUNS; i++) {
    let t0 = process.hrtime.bigint();
    for (let r = 0; r < reps; r++) before.distillationLoss(student, teacher, opts(gA));
    ta.push(Number(process.hrtime.bigint() - t0) / 1e6);
    t0 = process.hrtime.bigint();
    for (let r = 0; r < reps; r++) after.distillationLoss(student, teacher, opts(gB));
    tb.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const a = median(ta), b = median(tb);
  console.log(`${name.padEnd(36)} ${a.toFixed(2).padStart(10)} ${b.toFixed(2).padStart(10)}  ${(b / a).toFixed(3).padStart(12)}  ${identical ? 'yes' : `NO (loss ${ra.loss} vs ${rb.loss})`}`);
}
