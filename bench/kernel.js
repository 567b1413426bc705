#!/usr/bin/env node
'use strict';
// Quick kernel check used while optimising: workload (a)-shaped heads, the fused
// call with gradOut, the same with grad: false, and the streaming floor, timed
// alternately (median of 11), at 1 and 2 threads.
//   node bench/kernel.js [B=16] [layout=nchw] [C=80]
const m = require('../dist');
const { native } = require('../dist/binding'); // streamingFloor: internal, for benchmarks

const B = +(process.argv[2] || 16);
const layout = process.argv[3] || 'nchw';
const C = +(process.argv[4] || 80);
const shapes = [80, 40, 20].map((g) => (layout === 'nchw' ? [B, 3 * (5 + C), g, g] : [B, 3, g, g, 5 + C]));
const mk = (f) => shapes.map((s) => {
  const n = s.reduce((a, b) => a * b);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = f(i);
  return { data: d, shape: s };
});
const P = mk((i) => Math.sin(i));
const T = mk((i) => Math.cos(i * 1.3) * 3);
const G = shapes.map((s) => new Float32Array(s.reduce((a, b) => a * b)));
const time = (f) => {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
};
for (const th of [1, 2]) {
  const rows = { fused: [], nograd: [], floor: [] };
  const fns = {
    fused: () => m.distillationLoss(P, T, { numClasses: C, layout, threads: th, gradOut: G }),
    nograd: () => m.distillationLoss(P, T, { numClasses: C, layout, threads: th, grad: false }),
    floor: () => { for (let s = 0; s < 3; s++) native.streamingFloor(P[s].data, T[s].data, G[s], th); },
  };
  for (let i = 0; i < 13; i++) for (const k of Object.keys(fns)) { const t = time(fns[k]); if (i >= 2) rows[k].push(t); }
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
  const f = med(rows.fused);
  const fl = med(rows.floor);
  console.log(`threads=${th} ${layout} C=${C}: fused ${f.toFixed(1)} ms, grad:false ${med(rows.nograd).toFixed(1)} ms, floor ${fl.toFixed(1)} ms, fused/floor ${(f / fl).toFixed(2)}`);
}
