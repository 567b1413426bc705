#!/usr/bin/env node
'use strict';
// The fixed cost of one call across N-API, alone in a loop: one scale, 2x2 grid,
// C = 80, gradients into gradOut. Median of 9 batches of 20,000 calls.
//   node bench/tiny.js [OTHER_ROOT]   (OTHER_ROOT: see the end of this file)
const m = require('../dist');
const { native } = require('../dist/binding'); // streamingFloor: internal, for benchmarks

const shape = [1, 255, 2, 2];
const n = 1020;
const p = { data: new Float32Array(n).fill(0.1), shape };
const t = { data: new Float32Array(n).fill(0.2), shape };
const g = [new Float32Array(n)];
const T = (f, k = 20000) => {
  for (let i = 0; i < 2000; i++) f();
  const r = [];
  for (let j = 0; j < 9; j++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < k; i++) f();
    r.push(Number(process.hrtime.bigint() - t0) / k / 1000);
  }
  r.sort((a, b) => a - b);
  return r[4];
};
const bench = T(() => m.distillationLoss([p], [t], { numClasses: 80, numAnchors: 3, layout: 'nchw', threads: 2, gradOut: g }));
const minimal = T(() => m.distillationLoss([p], [t], { numClasses: 80, gradOut: g }));
const floor = T(() => native.streamingFloor(p.data, t.data, g[0], 1));
console.log(`tiny call: ${bench.toFixed(2)} µs with the bench's options, ${minimal.toFixed(2)} µs with numClasses + gradOut; streamingFloor call ${floor.toFixed(2)} µs`);

// With another build's root (a checkout with its own build/ and dist/), the two
// builds' tiny calls alternated in this process, 15 rounds of 20,000 calls each,
// one options object per build (BENCHMARKS.md "The tiny call on a Zen 3 core"):
//   node bench/tiny.js [OTHER_ROOT]
if (process.argv[2]) {
  const path = require('path');
  const other = require(path.resolve(process.argv[2]));
  const mine = { numClasses: 80, numAnchors: 3, layout: 'nchw', threads: 2, gradOut: g };
  const theirs = { ...mine };
  const batch = (mod, o, k) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < k; i++) mod.distillationLoss([p], [t], o);
    return Number(process.hrtime.bigint() - t0) / k / 1000;
  };
  for (let i = 0; i < 3; i++) {
    batch(other, theirs, 5000);
    batch(m, mine, 5000);
  }
  const a = [];
  const b = [];
  for (let r = 0; r < 15; r++) {
    // Alternate which build goes first.
    if (r % 2) {
      b.push(batch(m, mine, 20000));
      a.push(batch(other, theirs, 20000));
    } else {
      a.push(batch(other, theirs, 20000));
      b.push(batch(m, mine, 20000));
    }
  }
  const med = (x) => [...x].sort((u, v) => u - v)[x.length >> 1];
  const ratio = med(a.map((x, i) => b[i] / x));
  console.log(`alternated: ${process.argv[2]} ${med(a).toFixed(2)} µs, this build ${med(b).toFixed(2)} µs; ` +
    `this / that, median of the rounds' ratios, ${ratio.toFixed(3)}`);
}
