#!/usr/bin/env node
'use strict';
// Where the anchor-free call's time goes at full size, and whether its
// memory-bound phases can hide under the box KL's arithmetic: needs a build
// with bench/experiments/anchor-free-phases.patch applied (it adds two
// environment switches to anchor_free_scale, read at every unit):
//   git apply bench/experiments/anchor-free-phases.patch && npx cmake-js build
//   node bench/experiments/anchor-free-phases.js [--batch B] [--rounds N]
//   git apply -R bench/experiments/anchor-free-phases.patch && npx cmake-js build
// YD_AF_PHASES: 1 the teacher weights, 2 the box KL, 4 the class runs (7 all;
// fewer phases give wrong results: timing only). YD_AF_IL: 0 the shipped
// order (weights, box KL, class runs); 1 each box side's KL followed by a
// quarter of the class runs; 3 also those class planes' student and teacher
// lines prefetched into L2 by the side's KL steps; 11 the same into L1; 19
// two lines a step; 7 the gradient's lines too (written without streaming
// stores); 32 the class runs before the box KL. Orders 1, 32 and 3 keep the
// sums' order: their loss must equal order 0's to the bit (checked).
// Anchor-free YOLOv8s-640 heads (C = 80, R = 16, nchw), 2 threads (the last
// row 1), caller's gradOut; every row and the floor alternated round by
// round, medians.
const m = require('../../dist');
const { native } = require('../../dist/binding');
const { heads, median, timeMs: time } = require('../common');

const argv = process.argv.slice(2);
const arg = (k, d) => (argv.includes(k) ? Number(argv[argv.indexOf(k) + 1]) : d);
const B = arg('--batch', 16), ROUNDS = arg('--rounds', 11);
const C = 80, R = 16, K = 4 * R + C;
const shapes = [80, 40, 20].map((g) => [B, K, g, g]);
const { student: st, teacher: te, gradOut: g } = heads(shapes);
const callWith = (threads) => () => m.distillationLoss(st, te, { numClasses: C, head: 'anchorFree', gradOut: g, threads });
const call = callWith(2);
const floor = () => { for (let s = 0; s < 3; s++) native.streamingFloor(st[s].data, te[s].data, g[s], 2); };
const rows = [
  ['all phases (shipped order)', { YD_AF_PHASES: '7', YD_AF_IL: '0' }],
  ['weights only', { YD_AF_PHASES: '1', YD_AF_IL: '0' }],
  ['box KL only', { YD_AF_PHASES: '2', YD_AF_IL: '0' }],
  ['class runs only', { YD_AF_PHASES: '4', YD_AF_IL: '0' }],
  ['order 1: sides interleaved', { YD_AF_PHASES: '7', YD_AF_IL: '1' }],
  ['order 3: + class lines into L2', { YD_AF_PHASES: '7', YD_AF_IL: '3' }],
  ['order 11: + class lines into L1', { YD_AF_PHASES: '7', YD_AF_IL: '11' }],
  ['order 19: + two lines a step', { YD_AF_PHASES: '7', YD_AF_IL: '19' }],
  ['order 7: + gradient lines', { YD_AF_PHASES: '7', YD_AF_IL: '7' }],
  ['order 32: class runs first', { YD_AF_PHASES: '7', YD_AF_IL: '32' }],
  ['shipped order, 1 thread', { YD_AF_PHASES: '7', YD_AF_IL: '0' }, 1],
];
const run = (env, threads = 2) => { Object.assign(process.env, env); return callWith(threads)(); };
const loss = rows.map(([, env, threads]) => run(env, threads).loss);
floor();
const bitsKept = [4, 5, 9].every((i) => Object.is(loss[i], loss[0]));
if (Object.is(loss[1], loss[0])) {
  console.log('the phase switches had no effect: is bench/experiments/anchor-free-phases.patch applied and built?');
}
const times = rows.map(() => []), floors = [];
for (let r = 0; r < ROUNDS; r++) {
  rows.forEach(([, env, threads = 2], i) => { Object.assign(process.env, env); times[i].push(time(callWith(threads))); });
  floors.push(time(floor));
}
const base = median(times[0]), fl = median(floors);
console.log(`anchor-free YOLOv8s-640, B = ${B}, ${ROUNDS} rounds; floor ${fl.toFixed(2)} ms`);
rows.forEach(([name], i) => {
  const t = median(times[i]);
  console.log(`${name.padEnd(34)} ${t.toFixed(2).padStart(7)} ms  ${(t / base).toFixed(3)} of the first row  ${(t / fl).toFixed(2)}x floor`);
});
console.log(`orders 1, 3 and 32 give the shipped order's loss to the bit: ${bitsKept}`);
