#!/usr/bin/env node
'use strict';
// One workload, two builds, alternated call batch by call batch in this
// process (before, after, before each round; the round's ratio is after over
// the mean of its two befores), for a change whose effect is a few percent
// and would drown in the noise of bench/compare.js's few timings per row.
// Prints both medians and the median of the rounds' ratios, and whether the
// two builds' results (loss and every gradient bit) are identical.
//   node bench/ab.js BEFORE_ROOT [AFTER_ROOT] [--row ROW] [--rounds N] [--threads T]
// BEFORE_ROOT, AFTER_ROOT: built checkouts (build/ and dist/; AFTER_ROOT
// defaults to this one). ROW (default c):
//   a  YOLOv5s 640, B = 16, C = 80 (one call a batch)
//   b  the same with C = 8 (2 calls)
//   c  one image at 320, C = 80 (50 calls: in cache)
//   s  two images at 320 (10 calls)
//   f  anchor-free YOLOv8s 640, B = 16 (one call)
//   f512  anchor-free at 512 px, B = 16 (one call)
//   kl, paper  (a) with clsTarget 'kl', with preset 'paper' (one call)
//   fkl  (f) with clsTarget 'kl' (one call)
// Rounds default to 41, threads to 2; caller's gradOut, default formula
// unless the row says otherwise.
const path = require('path');
const { heads, median, numberArg } = require('./common');

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const roots = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1].startsWith('--')));
if (roots.length < 1) {
  console.error('usage: node bench/ab.js BEFORE_ROOT [AFTER_ROOT] [--row a|b|c|s|f|f512|kl|paper|fkl] [--rounds N] [--threads T]');
  process.exit(2);
}
const before = require(path.resolve(roots[0]));
const after = require(path.resolve(roots[1] || path.join(__dirname, '..')));
const row = opt('--row', 'c');
const rounds = numberArg('--rounds', 41);
const threads = numberArg('--threads', 2);

const yolo = (B, C, size) => [8, 16, 32].map((s) => [B, 3 * (5 + C), size / s, size / s]);
const free = (B, size) => [8, 16, 32].map((s) => [B, 144, size / s, size / s]);
const rows = {
  a: [yolo(16, 80, 640), 80, 1, {}],
  b: [yolo(16, 8, 640), 8, 2, {}],
  c: [yolo(1, 80, 320), 80, 50, {}],
  s: [yolo(2, 80, 320), 80, 10, {}],
  f: [free(16, 640), 80, 1, { head: 'anchorFree' }],
  f512: [free(16, 512), 80, 1, { head: 'anchorFree' }],
  kl: [yolo(16, 80, 640), 80, 1, { clsTarget: 'kl' }],
  paper: [yolo(16, 80, 640), 80, 1, { preset: 'paper' }],
  fkl: [free(16, 640), 80, 1, { head: 'anchorFree', clsTarget: 'kl' }],
};
if (!rows[row]) throw new Error(`unknown row ${row}: one of ${Object.keys(rows).join(', ')}`);
const [shapes, C, inner, extra] = rows[row];
const { student, teacher, gradOut } = heads(shapes);
const options = { numClasses: C, gradOut, threads, ...extra };

// The two builds' results first (the last call of each is what gradOut holds).
const digest = (mod) => {
  const r = mod.distillationLoss(student, teacher, options);
  return { loss: r.loss, grads: gradOut.map((g) => Buffer.from(g.buffer, g.byteOffset, g.byteLength).toString('base64')) };
};
const da = digest(before), db = digest(after);
const identical = da.loss === db.loss && da.grads.every((g, i) => g === db.grads[i]);

const batch = (mod) => {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < inner; i++) mod.distillationLoss(student, teacher, options);
  return Number(process.hrtime.bigint() - t0) / 1e6 / inner;
};
for (let i = 0; i < 10; i++) { batch(before); batch(after); }
const tb = [], ta = [], ratio = [];
for (let r = 0; r < rounds; r++) {
  const b1 = batch(before), a = batch(after), b2 = batch(before);
  tb.push((b1 + b2) / 2); ta.push(a); ratio.push(a / ((b1 + b2) / 2));
}
console.log(`row ${row}, ${threads} thread(s), ${rounds} rounds of ${inner} call(s): before ${median(tb).toFixed(4)} ms, ` +
  `after ${median(ta).toFixed(4)} ms, median ratio ${median(ratio).toFixed(3)}; identical results: ${identical ? 'yes' : 'NO'}`);
