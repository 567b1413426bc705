#!/usr/bin/env node
'use strict';
// The fixed cost of one call across N-API, alone in a loop: one scale, 2x2 grid,
// C = 80, gradients into gradOut. Median of 9 batches of 20,000 calls.
//   node bench/tiny.js
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
