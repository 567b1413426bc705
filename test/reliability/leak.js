#!/usr/bin/env node
'use strict';
// Leak check (run with node --expose-gc): many sync and async loss calls,
// handle create/dispose cycles, and handles left to the garbage collector.
// RSS and V8 external memory are sampled after each phase's first fifth and at
// its end (after GC); the script fails when either keeps growing.
//   node --expose-gc test/reliability/leak.js [--scale 1]   (scale 0.1 for a quick run)
const yd = require('../..');
const { native } = require('../../dist/binding');

if (!global.gc) {
  console.error('run with node --expose-gc');
  process.exit(2);
}
const scaleArg = process.argv.indexOf('--scale');
const SCALE = scaleArg > 0 ? Number(process.argv[scaleArg + 1]) : 1;
const MB = 2 ** 20;
// Allowed RSS growth between a phase's warm point and its end: a loose bound,
// as RSS keeps the high-water mark of freed memory (the tight bounds are on the
// C heap and the JS heap, below).
const RSS_SLACK_MB = 64;
const EXT_SLACK_MB = 4;

const shape = [2, 3 * 25, 4, 5];
const n = shape.reduce((a, b) => a * b);
const P = [{ data: new Float32Array(n).map((_, i) => Math.sin(i)), shape }];
const T = [{ data: new Float32Array(n).map((_, i) => Math.cos(i)), shape }];
const opts = { numClasses: 20 };

async function settle() {
  for (let i = 0; i < 3; i++) {
    global.gc();
    await new Promise((r) => setImmediate(r));
  }
  const m = process.memoryUsage();
  return { rss: m.rss / MB, ext: m.external / MB, heap: native.heapInUse() / MB, js: m.heapUsed / MB };
}

const report = [];
// Node-API runs finalizers (of handles the GC collected) when the event loop
// turns, so the loop yields every 1000 iterations, as any server does.
async function run(body, from, to) {
  for (let i = from; i < to; i++) {
    await body(i);
    if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
  }
}

// Memory is sampled after a fifth of the phase (warm), after three fifths (mid)
// and at the end, each after GC and a turn of the event loop. It has levelled
// off when the last two fifths add less than the slack: a leak grows linearly
// and shows there as much as anywhere, while warm-up settles early. The C heap
// in use (glibc mallinfo2, all native memory: the addon's and LibTorch's) is
// the precise measure; RSS, which keeps the high-water mark of memory already
// freed, only has to stay within a loose bound.
const NATIVE_SLACK_MB = 2; // 50 bytes per iteration over 40,000 iterations
const JS_SLACK_MB = 4;
async function phase(name, count, body) {
  const warm = Math.max(1, Math.floor(count / 5));
  const mid = Math.max(warm + 1, Math.floor((count * 3) / 5));
  await run(body, 0, warm);
  const before = await settle();
  await run(body, warm, mid);
  const middle = await settle();
  await run(body, mid, count);
  const after = await settle();
  const row = { name, count, before, middle, after };
  const nativeOk = before.heap < 0 || after.heap - middle.heap < NATIVE_SLACK_MB;
  row.ok = nativeOk && after.js - middle.js < JS_SLACK_MB && after.rss - before.rss < RSS_SLACK_MB &&
    after.ext - before.ext < EXT_SLACK_MB;
  report.push(row);
  const f = (k) => `${before[k].toFixed(1)} -> ${middle[k].toFixed(1)} -> ${after[k].toFixed(1)} MB`;
  console.log(`${row.ok ? 'ok  ' : 'FAIL'} ${name}: ${count} — C heap in use ${f('heap')}, JS heap ${f('js')}, RSS ${f('rss')}`);
}

async function main() {
  const N = (k) => Math.round(k * SCALE);
  const t0 = Date.now();
  await phase('sync calls', N(100000), () => {
    yd.distillationLoss(P, T, opts);
  });
  // Async calls in batches of 100 in flight at once.
  await phase('async calls (batches of 100 in flight)', N(20000) / 100, () => Promise.all(Array.from({ length: 100 }, () => yd.distillationLossAsync(P, T, opts))));
  await phase('handle create/dispose', N(100000), () => {
    const t = yd.Tensor.fromFloat32Array(P[0].data, shape);
    yd.distillationLoss([t], T, { ...opts, grad: true }).grads[0].dispose();
    t.dispose();
  });
  await phase('handles left to the GC', N(100000), () => {
    yd.Tensor.fromFloat32Array(P[0].data, shape);
  });
  const failed = report.filter((r) => !r.ok).length;
  console.log(`leak check: ${((Date.now() - t0) / 1000).toFixed(1)} s; ${report.length - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main();
