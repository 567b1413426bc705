'use strict';
// The recycled memory behind the gradient arrays of calls without gradOut
// (native/addon/grad_pool.h), one scenario per process:
//   node --expose-gc test/safety/grad-pool.js NAME
// Prints one JSON line with what it found, then exits 0; a crash is a non-zero
// exit that test/grad-pool.test.js reports as a failure.
const path = require('path');
const { Worker } = require('worker_threads');
const yd = require(path.join(__dirname, '..', '..'));
const h = require(path.join(__dirname, '..', 'helpers'));

const { distillationLoss, distillationLossAsync, gradientPool } = yd;
const gcNow = () => { global.gc(); global.gc(); };

// Heads whose gradient is over 1 MiB (the pool's threshold), for each head
// kind and element type the loss supports.
const C = 80;
function configs() {
  const anchor = [2, 3 * (5 + C), 32, 32]; // 2.1 MB of fp32 gradient
  const nhwc = [2, 32, 32, 3 * (5 + C)];
  const af = [2, 4 * 16 + C, 40, 40]; // anchor-free, regMax 16
  const base = { numClasses: C };
  return [
    ['default', anchor, 'float32', base],
    ['default nhwc', nhwc, 'float32', { ...base, layout: 'nhwc' }],
    ['paper', anchor, 'float32', { ...base, preset: 'paper' }],
    ['bce', anchor, 'float32', { ...base, objTarget: 'bce', clsTarget: 'bce' }],
    ['kl', anchor, 'float32', { ...base, clsTarget: 'kl', temperature: 2 }],
    ['fmNms', anchor, 'float32', { ...base, fmNms: true }],
    ['paper + fmNms', anchor, 'float32', { ...base, preset: 'paper', fmNms: true }],
    ['anchor-free', af, 'float32', { ...base, head: 'anchorFree' }],
    ['anchor-free kl fmNms', af, 'float32', { ...base, head: 'anchorFree', clsTarget: 'kl', fmNms: true }],
    ['float16 default', [2, 3 * (5 + C), 48, 48], 'float16', base],
    ['bfloat16 paper', [2, 3 * (5 + C), 48, 48], 'bfloat16', { ...base, preset: 'paper' }],
    ['float16 anchor-free', [2, 4 * 16 + C, 56, 56], 'float16', { ...base, head: 'anchorFree' }],
  ];
}

function heads(shape, dtype, seed) {
  const r = h.rng(seed);
  const { student, teacher } = h.makeHeads(r, [shape], 3);
  if (dtype === 'float32') return { student, teacher };
  return { student: [h.headOfDtype(student[0], dtype)], teacher };
}

const sameBits = (a, b) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

const scenarios = {
  // Recycled memory holds an earlier gradient: poison it with NaN, then every
  // formula must overwrite every element (equal to the call with a gradOut
  // filled with 123).
  full_write() {
    const out = [];
    for (const [name, shape, dtype, opts] of configs()) {
      const { student, teacher } = heads(shape, dtype, 7);
      // Empty the pool, so that the one block it holds next is the poisoned one.
      gcNow();
      gradientPool({ maxBytes: 0 });
      gradientPool({ maxBytes: 512 * 2 ** 20 });
      const poison = () => {
        distillationLoss(student, teacher, opts).grads[0].fill(dtype === 'float32' ? NaN : 0x7e00); // NaN in fp16 and bf16 too
      };
      poison();
      gcNow();
      const before = gradientPool();
      const r = distillationLoss(student, teacher, opts);
      const after = gradientPool();
      const n = r.grads[0].length;
      const gradOut = [dtype === 'float32' ? new Float32Array(n).fill(123) : new Uint16Array(n).fill(123)];
      const ref = distillationLoss(student, teacher, { ...opts, gradOut });
      out.push({ name, reused: after.reused - before.reused, same: sameBits(r.grads[0], ref.grads[0]), loss: r.loss === ref.loss });
    }
    return out;
  },

  // A caller keeps a result (or only its buffer): later calls never write it.
  kept_results_untouched() {
    const [, shape, , opts] = configs()[0];
    const a = heads(shape, 'float32', 1);
    const kept = distillationLoss(a.student, a.teacher, opts);
    const copy = kept.grads[0].slice();
    const keptBuffer = distillationLoss(a.student, a.teacher, opts).grads[0].buffer;
    const bufferCopy = new Float32Array(keptBuffer).slice();
    let reused = 0;
    for (let i = 0; i < 6; i++) {
      gcNow();
      const b = heads(shape, 'float32', 100 + i);
      const before = gradientPool().reused;
      distillationLoss(b.student, b.teacher, opts);
      reused += gradientPool().reused - before;
    }
    return { reused, kept: sameBits(kept.grads[0], copy), buffer: sameBits(new Float32Array(keptBuffer), bufferCopy) };
  },

  // The buffers handed out over recycled memory cannot be moved to another
  // ArrayBuffer (the copy made instead, or the refusal, keeps them attached).
  untransferable() {
    const [, shape, , opts] = configs()[0];
    const a = heads(shape, 'float32', 2);
    gcNow();
    distillationLoss(a.student, a.teacher, opts);
    gcNow();
    const before = gradientPool().reused;
    const g = distillationLoss(a.student, a.teacher, opts).grads[0];
    const recycled = gradientPool().reused - before;
    const copy = g.slice();
    let outcome;
    try {
      const clone = structuredClone(g.buffer, { transfer: [g.buffer] });
      outcome = clone === g.buffer ? 'same' : 'copied';
    } catch (e) {
      outcome = e.name;
    }
    let transferred = 'absent';
    if (typeof ArrayBuffer.prototype.transfer === 'function') {
      try { g.buffer.transfer(); transferred = 'moved'; } catch (e) { transferred = e.name; }
    }
    return { recycled, outcome, transferred, attached: g.buffer.byteLength > 0, intact: sameBits(g, copy) };
  },

  // A loop of calls that never yields and never calls gc(): the collector's own
  // collections bring blocks back, so memory stays bounded.
  async loop_without_gc() {
    const shape = [4, 3 * (5 + C), 80, 80]; // 26 MB of gradient per call
    const a = heads(shape, 'float32', 3);
    const opts = { numClasses: C };
    // Full collections during the loop, counted by Node's 'gc' performance
    // entries (delivered once the loop is over and the event loop turns).
    const { PerformanceObserver, constants } = require('perf_hooks');
    let majors = 0;
    const seen = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (e.detail && e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors += 1;
    });
    seen.observe({ entryTypes: ['gc'] });
    const start = gradientPool();
    let maxOut = 0;
    const calls = 60;
    for (let i = 0; i < calls; i++) {
      distillationLoss(a.student, a.teacher, opts);
      maxOut = Math.max(maxOut, gradientPool().outstandingBlocks);
    }
    const end = gradientPool();
    await new Promise((resolve) => setTimeout(resolve, 100));
    seen.disconnect();
    return {
      calls, bytes: h.numel(shape) * 4, maxBytes: end.maxBytes, buffers: end.buffers, majors,
      maxOutstanding: maxOut, allocated: end.allocated - start.allocated, reused: end.reused - start.reused,
    };
  },

  // Async calls without gradOut use the pool too and equal the sync call.
  async async_calls() {
    const [, shape, , opts] = configs()[2];
    const a = heads(shape, 'float32', 4);
    const sync = distillationLoss(a.student, a.teacher, opts).grads[0].slice();
    let same = true;
    const before = gradientPool().reused;
    for (let i = 0; i < 5; i++) {
      gcNow();
      const r = await distillationLossAsync(a.student, a.teacher, opts);
      same = same && sameBits(r.grads[0], sync);
    }
    return { same, reused: gradientPool().reused - before };
  },

  // maxBytes: 0 frees what is kept and turns recycling off; bad values are
  // refused with codes.
  limits() {
    const [, shape, , opts] = configs()[0];
    const a = heads(shape, 'float32', 5);
    distillationLoss(a.student, a.teacher, opts);
    gcNow();
    const kept = gradientPool(); // takes the call's block back
    const off = gradientPool({ maxBytes: 0 });
    const before = gradientPool();
    const r = distillationLoss(a.student, a.teacher, opts);
    const zeroAllocated = gradientPool().allocated - before.allocated;
    const back = gradientPool({ maxBytes: 512 * 2 ** 20 });
    const errors = [];
    for (const bad of ['x', null, 3]) {
      try { gradientPool(bad); errors.push(null); } catch (e) { errors.push([e.constructor.name, e.code, e.message]); }
    }
    for (const bad of [-1, 1.5, NaN, Infinity, 'big']) {
      try { gradientPool({ maxBytes: bad }); errors.push(null); } catch (e) { errors.push([e.constructor.name, e.code, e.message]); }
    }
    return { keptBytes: kept.pooledBytes, off, zeroAllocated, plainOk: r.grads[0].length > 0, back: back.maxBytes, enabled: back.enabled, errors };
  },

  // The default cap follows the largest call (4x its new gradient arrays,
  // when over 512 MiB); a cap set by the caller holds until maxBytes: null;
  // a block no call has taken for 100 calls is freed.
  cap_follows_calls() {
    const start = gradientPool().maxBytes;
    const bigShape = [1, 3 * (5 + C), 400, 400]; // 163 MB of fp32 gradient: 4x is 653 MB
    const n = h.numel(bigShape);
    const big = { s: [{ data: new Float32Array(n).fill(0.25), shape: bigShape }], t: [{ data: new Float32Array(n).fill(-0.25), shape: bigShape }] };
    let r = distillationLoss(big.s, big.t, { numClasses: C });
    const bigBytes = r.grads[0].byteLength;
    const followed = gradientPool().maxBytes;
    r = null;
    gcNow();
    const pooledBig = gradientPool().pooledBytes; // the big block back in the pool
    const set = gradientPool({ maxBytes: 100 * 2 ** 20 }); // under it: freed at once
    distillationLoss(big.s, big.t, { numClasses: C }); // a call does not move a cap the caller set
    const afterSet = gradientPool().maxBytes;
    const back = gradientPool({ maxBytes: null }).maxBytes;
    r = distillationLoss(big.s, big.t, { numClasses: C }); // reuses nothing (freed), allocates
    r = null;
    gcNow();
    const pooledAgain = gradientPool().pooledBytes;
    // Small calls (2.1 MB blocks) while the big block waits: still kept after
    // 50, freed once over 100 calls have passed it by.
    const [, shape, , opts] = configs()[0];
    const a = heads(shape, 'float32', 8);
    const small = (k) => { for (let i = 0; i < k; i++) { distillationLoss(a.student, a.teacher, opts); if (i % 10 === 9) gcNow(); } };
    small(50);
    const after50 = gradientPool().pooledBytes;
    small(60);
    const after110 = gradientPool().pooledBytes;
    return { start, bigBytes, followed, pooledBig, set: set.maxBytes, setPooled: set.pooledBytes, afterSet, back, pooledAgain, after50, after110 };
  },

  // Workers hand out blocks and exit (or are terminated) while theirs are
  // still reachable: no crash, and the main thread goes on recycling.
  async workers() {
    const code = `
      const { parentPort, workerData } = require('worker_threads');
      const yd = require(workerData.root);
      const n = 3 * 85 * 32 * 32 * 2, s = new Float32Array(n).fill(0.5), t = new Float32Array(n).fill(-0.5);
      const keep = [];
      for (let i = 0; i < 6; i++) keep.push(yd.distillationLoss([{ data: s, shape: [2, 255, 32, 32] }], [{ data: t, shape: [2, 255, 32, 32] }], { numClasses: 80 }));
      parentPort.postMessage(keep.length);
      if (workerData.spin) for (;;) yd.distillationLoss([{ data: s, shape: [2, 255, 32, 32] }], [{ data: t, shape: [2, 255, 32, 32] }], { numClasses: 80 });
    `;
    const root = path.join(__dirname, '..', '..');
    const one = (spin) => new Promise((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { root, spin } });
      w.once('message', () => { if (spin) setTimeout(() => w.terminate(), 50); });
      w.once('error', reject);
      w.once('exit', resolve);
    });
    await one(false);
    await one(true);
    await one(true);
    const [, shape, , opts] = configs()[0];
    const a = heads(shape, 'float32', 6);
    const ref = distillationLoss(a.student, a.teacher, { ...opts, gradOut: [new Float32Array(h.numel(shape))] }).grads[0];
    let same = true;
    for (let i = 0; i < 4; i++) {
      gcNow();
      same = same && sameBits(distillationLoss(a.student, a.teacher, opts).grads[0], ref);
    }
    return { same };
  },
};

(async () => {
  const name = process.argv[2];
  if (!scenarios[name]) throw new Error(`unknown scenario ${name}`);
  console.log(JSON.stringify(await scenarios[name]()));
})();
