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
// stores); 32 the class runs before the box KL. None of the orders changes
// the sums' order (the box and class sums stay apart): each must give order
// 0's loss to the bit, at 1 thread as at 2 (checked).
// Anchor-free YOLOv8s-640 heads (C = 80, R = 16, nchw), 2 threads (the last
// row 1), caller's gradOut; every row and the floor alternated round by
// round, medians.
const m = require('../../dist');
const { native } = require('../../dist/binding');
const { heads, median, timeMs: time, numberArg } = require('../common');

const B = numberArg('--batch', 16), ROUNDS = numberArg('--rounds', 11);
const C = 80, R = 16, K = 4 * R + C;
const shapes = [80, 40, 20].map((g) => [B, K, g, g]);
const { student: st, teacher: te, gradOut: g } = heads(shapes);
const floor = () => { for (let s = 0; s < 3; s++) native.streamingFloor(st[s].data, te[s].data, g[s], 2); };
// phases: YD_AF_PHASES, order: YD_AF_IL; a row that runs every phase must give the first row's loss.
const row = (name, phases, order, threads = 2) => ({ name, env: { YD_AF_PHASES: phases, YD_AF_IL: order }, threads });
const rows = [
  row('all phases (shipped order)', '7', '0'),
  row('weights only', '1', '0'),
  row('box KL only', '2', '0'),
  row('class runs only', '4', '0'),
  row('order 1: sides interleaved', '7', '1'),
  row('order 3: + class lines into L2', '7', '3'),
  row('order 11: + class lines into L1', '7', '11'),
  row('order 19: + two lines a step', '7', '19'),
  row('order 7: + gradient lines', '7', '7'),
  row('order 32: class runs first', '7', '32'),
  row('shipped order, 1 thread', '7', '0', 1),
];
const run = ({ env, threads }) => {
  Object.assign(process.env, env);
  return () => m.distillationLoss(st, te, { numClasses: C, head: 'anchorFree', gradOut: g, threads });
};
const loss = rows.map((r) => run(r)().loss);
floor();
const bitsKept = rows.every((r, i) => r.env.YD_AF_PHASES !== '7' || Object.is(loss[i], loss[0]));
if (Object.is(loss[1], loss[0])) {
  console.log('the phase switches had no effect: is bench/experiments/anchor-free-phases.patch applied and built?');
}
const times = rows.map(() => []), floors = [];
for (let r = 0; r < ROUNDS; r++) {
  rows.forEach((x, i) => times[i].push(time(run(x))));
  floors.push(time(floor));
}
const base = median(times[0]), fl = median(floors);
console.log(`anchor-free YOLOv8s-640, B = ${B}, ${ROUNDS} rounds; floor ${fl.toFixed(2)} ms`);
rows.forEach(({ name }, i) => {
  const t = median(times[i]);
  console.log(`${name.padEnd(34)} ${t.toFixed(2).padStart(7)} ms  ${(t / base).toFixed(3)} of the first row  ${(t / fl).toFixed(2)}x floor`);
});
console.log(`every order and thread count gives the shipped order's loss to the bit: ${bitsKept}`);
