#!/usr/bin/env node
'use strict';
// The plain call (no gradOut: the addon hands out new gradient arrays every
// call, and the caller drops them) against the call with a caller-owned
// gradOut, on workload (a) (YOLOv5s heads at 640x640, B = 16, C = 80, nchw),
// 2 threads, timed back to back in one run, with the gradient memory recycled
// and without; then RSS over many plain calls.
//   node bench/plain-call.js [--calls N] [--batch B] [--pool-mb M]
// --pool-mb: the pool's cap (gradientPool maxBytes) in MiB for the recycled
// phase and the RSS loop (default: the package's default cap).
// YOLO_DISTILL_V8_BUFFERS=0 in the environment: Node-API's external buffers
// instead of V8 buffers (native/addon/grad_pool.cpp), for a side-by-side run.
const m = require('../dist');
const { heads, median, timeMs: time } = require('./common');

const argv = process.argv.slice(2);
const CALLS = Number(argv[argv.indexOf('--calls') + 1]) || 1000;
const B = Number(argv[argv.indexOf('--batch') + 1]) || 16, C = 80, K = 3 * (5 + C);
const POOL = argv.includes('--pool-mb') ? Number(argv[argv.indexOf('--pool-mb') + 1]) * 2 ** 20 : null;
const shapes = [80, 40, 20].map((g) => [B, K, g, g]);
const { student, teacher, gradOut } = heads(shapes);

// Two phases, each 20 rounds of (gradOut call, plain call) back to back: the
// gradient arrays on recycled memory (the default), then recycling off
// (gradientPool({ maxBytes: 0 }): fresh arrays every call, as before it).
const o = { numClasses: C, threads: 2 };
function phase(label) {
  const withOut = [], plain = [];
  // Ten rounds first: the pool grows to what the loop needs (a new block is
  // fresh memory, slow to fault in) before the timed ones.
  for (let i = 0; i < 10; i++) { m.distillationLoss(student, teacher, { ...o, gradOut }); m.distillationLoss(student, teacher, o); }
  const p0 = m.gradientPool();
  for (let i = 0; i < 20; i++) {
    withOut.push(time(() => m.distillationLoss(student, teacher, { ...o, gradOut })));
    plain.push(time(() => m.distillationLoss(student, teacher, o)));
  }
  const p1 = m.gradientPool();
  const a = median(withOut), b = median(plain);
  // The mean too: a collection lands on some calls only (one in three or so
  // with the pool's buffers uncounted by V8), which the median leaves out.
  const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const am = mean(withOut), bm = mean(plain);
  console.log(`workload (a)${B === 16 ? '' : ` at B = ${B}`}, ${label}: gradOut ${a.toFixed(2)} ms, plain call ${b.toFixed(2)} ms, plain / gradOut ${(b / a).toFixed(2)}; means ${am.toFixed(2)} and ${bm.toFixed(2)} ms, ${(bm / am).toFixed(2)} (blocks reused ${p1.reused - p0.reused}, allocated ${p1.allocated - p0.allocated}; buffers: ${p1.buffers})`);
}
m.gradientPool({ maxBytes: POOL });
phase(`recycled gradient memory${POOL === null ? '' : ` (cap ${POOL / 2 ** 20} MiB)`}`);
m.gradientPool({ maxBytes: 0 });
phase('recycling off');
m.gradientPool({ maxBytes: POOL });
const rss = () => process.memoryUsage().rss / 2 ** 20;
const samples = [];
const t0 = Date.now();
for (let i = 1; i <= CALLS; i++) {
  m.distillationLoss(student, teacher, o);
  if (i % (CALLS / 5) === 0) samples.push(rss().toFixed(0));
}
console.log(`RSS over ${CALLS} plain calls (MB, at each fifth): ${samples.join(' → ')} (${((Date.now() - t0) / CALLS).toFixed(2)} ms per call)`);
