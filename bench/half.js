#!/usr/bin/env node
'use strict';
// Half-precision arrays on the CPU (workload (a) shapes: YOLOv5s 640, B = 16,
// C = 80, nchw, 34.3 M values per tensor; 2 threads; caller's gradOut), timed
// interleaved with medians: float16 student + teacher with a Uint16Array
// gradOut; the same in bfloat16; a float32 student with a float16 teacher (the onnxruntime-node
// case), and with a bfloat16 teacher; the same heads widened to float32 (the fp32 default path); float16
// and widened float32 under preset 'paper' and objTarget 'bce' (the variant
// kernel: its element math, and its 'logit' runs); and the
// floors: 2-byte (uint16 c = a - b, 6 bytes per value) and 4-byte (12 bytes).
// --kl adds clsTarget 'kl' rows (float16 pair, float32 student with a float16
// teacher, widened float32: the KL reads a unit's every class at once).
//   node bench/half.js [--runs N] [--batch B] [--compare OTHER_ROOT] [--kl]
// --compare also times another build (a git worktree with its build/ and dist/)
// on the same 16-bit rows, for before/after.
const path = require('path');
const { fill, median, timeMs } = require('./common');

const argv = process.argv.slice(2);
const arg = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const RUNS = Number(arg('--runs', 11));
const B = Number(arg('--batch', 16));
const other = arg('--compare', null);
const mine = require('../dist');
const { native } = require('../dist/binding');
const theirs = other ? require(path.resolve(other, 'dist')) : null;

const A = 3, C = 80, K = 5 + C;
const shapes = [8, 16, 32].map((s) => [B, A * K, 640 / s, 640 / s]);
const numel = (s) => s.reduce((a, b) => a * b, 1);
const total = shapes.reduce((n, s) => n + numel(s), 0);
const { toHalf, fromHalf, toBf16 } = require('../test/helpers'); // round to nearest even, tested there
const heads = shapes.map((s, k) => {
  const p = fill(numel(s), 1 + k), t = fill(numel(s), 11 + k);
  const ph = Uint16Array.from(p, toHalf), th = Uint16Array.from(t, toHalf);
  return {
    shape: s, ph, th, pw: Float32Array.from(ph, fromHalf), tw: Float32Array.from(th, fromHalf),
    pb: Uint16Array.from(p, toBf16), tb: Uint16Array.from(t, toBf16),
    g16: new Uint16Array(numel(s)).fill(1), g32: new Float32Array(numel(s)).fill(1),
  };
});
const opts = { numClasses: C, threads: 2 };
// The pairs each row calls with (extra: the formula's options): float16 or
// bfloat16 student and teacher with a Uint16Array gradOut, an fp32 student
// with an fp16 (or bfloat16) teacher, and the same values widened to float32.
const pair16 = (dtype, extra = {}) => (m) => m.distillationLoss(
  heads.map((x) => ({ data: dtype === 'float16' ? x.ph : x.pb, shape: x.shape, dtype })),
  heads.map((x) => ({ data: dtype === 'float16' ? x.th : x.tb, shape: x.shape, dtype })),
  { ...opts, ...extra, gradOut: heads.map((x) => x.g16) });
const fp32Student = (extra = {}, dtype = 'float16') => (m) => m.distillationLoss(
  heads.map((x) => ({ data: x.pw, shape: x.shape })),
  heads.map((x) => ({ data: dtype === 'float16' ? x.th : x.tb, shape: x.shape, dtype })),
  { ...opts, ...extra, gradOut: heads.map((x) => x.g32) });
const widened = (extra = {}) => (m) => m.distillationLoss(
  heads.map((x) => ({ data: x.pw, shape: x.shape })), heads.map((x) => ({ data: x.tw, shape: x.shape })),
  { ...opts, ...extra, gradOut: heads.map((x) => x.g32) });
const rows = {
  'float16 student + teacher, Uint16Array gradOut': pair16('float16'),
  'bfloat16 student + teacher, Uint16Array gradOut': pair16('bfloat16'),
  'float32 student, float16 teacher': fp32Student(),
  'float32 student, bfloat16 teacher': fp32Student({}, 'bfloat16'),
  'float32 (the same values widened)': widened(),
  "float16 student + teacher, preset 'paper'": pair16('float16', { preset: 'paper' }),
  "float32 (widened), preset 'paper'": widened({ preset: 'paper' }),
  "float16 student + teacher, objTarget 'bce'": pair16('float16', { objTarget: 'bce' }),
  "float32 (widened), objTarget 'bce'": widened({ objTarget: 'bce' }),
};
if (argv.includes('--kl')) {
  Object.assign(rows, {
    "float16 student + teacher, clsTarget 'kl'": pair16('float16', { clsTarget: 'kl' }),
    "float32 student, float16 teacher, clsTarget 'kl'": fp32Student({ clsTarget: 'kl' }),
    "float32 (widened), clsTarget 'kl'": widened({ clsTarget: 'kl' }),
  });
}
const a16 = new Uint16Array(total).fill(3), b16 = new Uint16Array(total).fill(1), c16 = new Uint16Array(total);
const a32 = new Float32Array(total).fill(3), b32 = new Float32Array(total).fill(1), c32 = new Float32Array(total);
const floors = {
  'floor, 2 bytes (uint16 c = a - b, 6 B/value)': () => native.streamingFloor(a16, b16, c16, 2),
  'floor, 4 bytes (float c = a - b, 12 B/value)': () => native.streamingFloor(a32, b32, c32, 2),
};
const timed = [];
for (const [name, fn] of Object.entries(rows)) {
  timed.push([name, () => fn(mine)]);
  if (theirs && !name.startsWith('float32 (')) timed.push([`${name} [${other}]`, () => fn(theirs)]);
}
for (const [name, fn] of Object.entries(floors)) timed.push([name, fn]);
const times = new Map(timed.map(([n]) => [n, []]));
for (const [, fn] of timed) fn(); // warm every array before the timed runs
for (let r = 0; r < RUNS; r++) for (const [n, fn] of timed) times.get(n).push(timeMs(fn));
const med = new Map([...times].map(([n, ts]) => [n, median(ts)]));
const f2 = med.get('floor, 2 bytes (uint16 c = a - b, 6 B/value)'), f4 = med.get('floor, 4 bytes (float c = a - b, 12 B/value)');
console.log(`half-precision arrays, workload (a) shapes, B=${B}: ${(total / 1e6).toFixed(2)} M values per tensor, 2 threads, medians of ${RUNS}`);
console.log(`${'row'.padEnd(64)} ${'time'.padStart(10)}  × 2-byte floor  × 4-byte floor`);
for (const [n, t] of med) console.log(`${n.padEnd(64)} ${(t.toFixed(2) + ' ms').padStart(10)}  ${(t / f2).toFixed(2).padStart(13)}  ${(t / f4).toFixed(2).padStart(13)}`);
