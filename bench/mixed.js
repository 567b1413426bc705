#!/usr/bin/env node
'use strict';
// 16-bit and mixed-dtype heads through the variant and anchor-free kernels:
// two builds side by side (timings interleaved, medians of 7, 2 threads,
// caller's gradOut), whether their results are identical bit for bit; then an
// fp32 student with an fp16 teacher on anchor-free YOLOv8s heads at B = 8 in
// both builds, next to the fp32 pair in the AFTER build.
//   node bench/mixed.js [BEFORE_ROOT [AFTER_ROOT]]   (roots: a package directory with its built addon)
const path = require('path');
const { heads, median, timeMs } = require('./common');
const h = require('../test/helpers');

const roots = process.argv.slice(2);
const before = require(path.resolve(roots[0] || path.join(__dirname, '..')));  // none: this package twice
const after = require(path.resolve(roots[1] || path.join(__dirname, '..')));
const sameBits = (a, b) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
const numel = (s) => s.reduce((x, y) => x * y, 1);

const cases = [
  ['anchor-free, nchw', [80, 40, 20].map((g) => [4, 144, g, g]), { numClasses: 80, head: 'anchorFree' }],
  ["anchor-free, nchw, 'kl' + fmNms", [40, 20].map((g) => [2, 144, g, g]), { numClasses: 80, head: 'anchorFree', clsTarget: 'kl', fmNms: true }],
  ["anchor, nchw, 'paper'", [80, 40, 20].map((g) => [2, 255, g, g]), { numClasses: 80, preset: 'paper' }],
  ["anchor, nchw, 'kl', obj unweighted", [40, 20].map((g) => [2, 255, g, g]), { numClasses: 80, clsTarget: 'kl', weighted: { obj: false } }],
  ['anchor-free, nhwc', [80, 40, 20].map((g) => [4, g, g, 144]), { numClasses: 80, head: 'anchorFree', layout: 'nhwc' }],
  ["anchor, nahwc, 'kl'", [40, 20].map((g) => [2, 3, g, g, 85]), { numClasses: 80, clsTarget: 'kl', layout: 'nahwc' }],
];
const pairs = [['float32', 'float16'], ['float32', 'bfloat16'], ['float16', 'float32'], ['bfloat16', 'bfloat16']];
console.log(`${'case'.padEnd(36)} ${'student/teacher'.padEnd(18)} ${'before ms'.padStart(10)} ${'after ms'.padStart(9)}  after/before  identical`);
for (const [name, shapes, o] of cases) {
  const { student, teacher } = heads(shapes);
  for (const [sd, td] of pairs) {
    const s = student.map((x) => h.headOfDtype(x, sd));
    const t = teacher.map((x) => h.headOfDtype(x, td));
    const out = () => shapes.map((sh) => (sd === 'float32' ? new Float32Array(numel(sh)) : new Uint16Array(numel(sh))));
    const ga = out(), gb = out();
    const fa = () => before.distillationLoss(s, t, { ...o, threads: 2, gradOut: ga });
    const fb = () => after.distillationLoss(s, t, { ...o, threads: 2, gradOut: gb });
    const ra = fa(), rb = fb();
    const identical = ra.loss === rb.loss && ga.every((g, k) => sameBits(g, gb[k]));
    const ta = [], tb = [];
    for (let i = 0; i < 7; i++) { ta.push(timeMs(fa)); tb.push(timeMs(fb)); }
    console.log(`${name.padEnd(36)} ${`${sd}/${td}`.padEnd(18)} ${median(ta).toFixed(2).padStart(10)} ${median(tb).toFixed(2).padStart(9)}  ${(median(tb) / median(ta)).toFixed(3).padStart(12)}  ${identical ? 'yes' : 'NO'}`);
  }
}
// The ONNX-teacher case on full-size heads (gradients streamed): an fp32
// student with an fp16 teacher in both builds, and the fp32 pair in the AFTER
// build, alternated (medians of 15).
const shapes = [80, 40, 20].map((g) => [8, 144, g, g]);
const { student, teacher, gradOut } = heads(shapes);
const t16 = teacher.map((x) => h.headOfDtype(x, 'float16'));
const gradOut2 = shapes.map((s) => new Float32Array(numel(s)).fill(1));
const o = { numClasses: 80, head: 'anchorFree', gradOut, threads: 2 };
const rows = {
  'fp32 student, fp16 teacher, before': () => before.distillationLoss(student, t16, { ...o, gradOut: gradOut2 }),
  'fp32 student, fp16 teacher, after': () => after.distillationLoss(student, t16, o),
  'fp32 pair, after': () => after.distillationLoss(student, teacher, o),
};
for (const f of Object.values(rows)) f();
const same = rows['fp32 student, fp16 teacher, before']().loss === rows['fp32 student, fp16 teacher, after']().loss && gradOut.every((g, k) => sameBits(g, gradOut2[k]));
const times = Object.fromEntries(Object.keys(rows).map((k) => [k, []]));
for (let i = 0; i < 15; i++) for (const [k, f] of Object.entries(rows)) times[k].push(timeMs(f));
const ms = Object.fromEntries(Object.keys(rows).map((k) => [k, median(times[k])]));
for (const k of Object.keys(rows)) console.log(`anchor-free YOLOv8s B=8, ${k}: ${ms[k].toFixed(2)} ms`);
const mixed = ms['fp32 student, fp16 teacher, after'];
console.log(`  fp32/fp16 after/before ${(mixed / ms['fp32 student, fp16 teacher, before']).toFixed(3)} (identical: ${same ? 'yes' : 'NO'}); after, against the fp32 pair: ${(mixed / ms['fp32 pair, after']).toFixed(3)}`);

// Every dtype pair against the fp32 pair in the AFTER build, anchor-free
// YOLOv8s-shaped heads in cache (B = 1, grids 40 and 20: medians of 101 calls)
// and full size (B = 8: medians of 15), alternated.
const allPairs = [['float32', 'float32'], ['float32', 'float16'], ['float32', 'bfloat16'], ['float16', 'float32'], ['float16', 'float16'], ['bfloat16', 'bfloat16']];
for (const [label, sh, n] of [['in cache, B=1, grids 40/20', [40, 20].map((g) => [1, 144, g, g]), 101], ['B=8, grids 80/40/20', shapes, 15]]) {
  const hs = heads(sh);
  const calls = allPairs.map(([sd, td]) => {
    const s = hs.student.map((x) => h.headOfDtype(x, sd));
    const t = hs.teacher.map((x) => h.headOfDtype(x, td));
    const g = sh.map((d) => (sd === 'float32' ? new Float32Array(numel(d)) : new Uint16Array(numel(d))));
    return () => after.distillationLoss(s, t, { numClasses: 80, head: 'anchorFree', threads: 2, gradOut: g });
  });
  calls.forEach((f) => f());
  const ts = calls.map(() => []);
  for (let i = 0; i < n; i++) calls.forEach((f, k) => ts[k].push(timeMs(f)));
  const m = ts.map(median);
  console.log(`anchor-free, ${label}, each pair against the fp32 pair (${m[0].toFixed(3)} ms): ${allPairs.slice(1).map(([a, b], k) => `${a}/${b} ${(m[k + 1] / m[0]).toFixed(3)}`).join(', ')}`);
}
