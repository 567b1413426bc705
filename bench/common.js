'use strict';
// Shared by the side-by-side benchmark scripts (compare, safety, plain-call,
// anchor-free): the same deterministic inputs and the same timing helpers.
const numel = (s) => s.reduce((a, b) => a * b, 1);

/** n values in [-3, 3) from a linear congruential generator seeded with `seed`. */
function fill(n, seed) {
  const a = new Float32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    a[i] = (x / 4294967296 - 0.5) * 6;
  }
  return a;
}

/** Student and teacher heads of the given shapes, and resident gradOut arrays (already touched). */
function heads(shapes) {
  return {
    student: shapes.map((s, k) => ({ data: fill(numel(s), 1 + k), shape: s })),
    teacher: shapes.map((s, k) => ({ data: fill(numel(s), 11 + k), shape: s })),
    gradOut: shapes.map((s) => new Float32Array(numel(s)).fill(1)),
  };
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];

/** Milliseconds one synchronous call of fn takes. */
function timeMs(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

module.exports = { numel, fill, heads, median, timeMs };
