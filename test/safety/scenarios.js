'use strict';
// Adversarial JavaScript against the addon, one scenario per process:
//   node --expose-gc test/safety/scenarios.js NAME
// Prints one JSON line {ok, ...} describing what happened (an error's class and
// code, or the result), then exits 0. A crash (signal, abort) is a non-zero exit
// that test/memory-safety.test.js reports as a failure. Each scenario is what an
// adversarial caller can do from plain JavaScript; none may make the addon touch
// memory it does not own.
const path = require('path');
const { MessageChannel } = require('worker_threads');
const { distillationLoss, distillationLossAsync, Tensor } = require(path.join(__dirname, '..', '..'));

const C = 2, A = 3, K = A * (5 + C);
const shapeOf = (H, W) => [1, K, H, W];
const numel = (s) => s.reduce((a, b) => a * b, 1);
function filled(n, seed) {
  const a = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    a[i] = (x / 4294967296 - 0.5) * 4;
  }
  return a;
}
const big = shapeOf(160, 160); // 1.8 M values: an async call takes long enough to interfere with
const small = shapeOf(4, 4);
const opts = { numClasses: C };
const gcNow = () => { if (global.gc) { global.gc(); global.gc(); } };
const settle = (ms) => new Promise((r) => setTimeout(r, ms));
const detach = (buf) => structuredClone(buf, { transfer: [buf] }); // the clone is dropped by the caller

function describe(e) {
  return { ok: false, name: e && e.constructor && e.constructor.name, code: e && e.code, message: String(e && e.message) };
}
function summary(r) {
  return { ok: true, loss: r.loss, grads: r.grads ? r.grads.map((g) => (ArrayBuffer.isView(g) ? g.length : 'tensor')) : null };
}
async function run(fn) {
  try { return summary(await fn()); } catch (e) { return describe(e); }
}
// Which user-visible read points exist: each scenario hooks one of them.
function headWithGetters(data, shape, hooks = {}) {
  const h = {};
  Object.defineProperty(h, 'data', { get() { hooks.data && hooks.data(); return data; }, enumerable: true });
  Object.defineProperty(h, 'shape', { get() { hooks.shape && hooks.shape(); return shape; }, enumerable: true });
  return h;
}

const scenarios = {
  // 1. resizable ArrayBuffers: refused up front (sync and async), wherever they appear.
  async resizable_input_sync() {
    const ab = new ArrayBuffer(numel(small) * 4, { maxByteLength: numel(small) * 8 });
    const p = new Float32Array(ab);
    return run(() => distillationLoss([{ data: p, shape: small }], [{ data: filled(numel(small), 2), shape: small }], opts));
  },
  async resizable_shrunk_during_async() {
    const n = numel(big);
    const ab = new ArrayBuffer(n * 4, { maxByteLength: n * 4 });
    const p = new Float32Array(ab);
    p.set(filled(n, 1));
    const t = filled(n, 2);
    const pending = run(() => distillationLossAsync([{ data: p, shape: big }], [{ data: t, shape: big }], opts));
    ab.resize(0);
    return pending;
  },
  async resizable_gradout_async() {
    const n = numel(big);
    const ab = new ArrayBuffer(n * 4, { maxByteLength: n * 4 });
    const g = new Float32Array(ab);
    const pending = run(() => distillationLossAsync([{ data: filled(n, 1), shape: big }], [{ data: filled(n, 2), shape: big }], { ...opts, gradOut: [g] }));
    ab.resize(0);
    return pending;
  },
  async growable_shared_ok() {
    const n = numel(small);
    const sab = new SharedArrayBuffer(n * 4, { maxByteLength: n * 8 });
    const p = new Float32Array(sab);
    p.set(filled(n, 1));
    const t = filled(n, 2);
    const r1 = distillationLoss([{ data: p, shape: small }], [{ data: t, shape: small }], opts);
    const pending = distillationLossAsync([{ data: p, shape: small }], [{ data: t, shape: small }], opts);
    sab.grow(n * 8); // a growable SharedArrayBuffer never shrinks: fine
    const r2 = await pending;
    const r3 = distillationLoss([{ data: filled(n, 1), shape: small }], [{ data: t, shape: small }], opts);
    return { ok: r1.loss === r2.loss && r1.loss === r3.loss, loss: r1.loss };
  },
  // 2. transfer during an async call; the clone is dropped and collected.
  async transfer_gradout_during_async() {
    const n = numel(big);
    const g = new Float32Array(n);
    const pending = run(() => distillationLossAsync([{ data: filled(n, 1), shape: big }], [{ data: filled(n, 2), shape: big }], { ...opts, gradOut: [g] }));
    let threw = null;
    try { detach(g.buffer); } catch (e) { threw = e.name; }
    gcNow();
    const out = await pending;
    // Allocate and free to give a corrupted heap every chance to show.
    for (let i = 0; i < 50; i++) new Float32Array(1 << 16).fill(i);
    gcNow();
    return { ...out, transferThrew: threw, detachedAfter: g.length === 0 };
  },
  async transfer_input_during_async() {
    const n = numel(big);
    const p = filled(n, 1), t = filled(n, 2);
    const expected = distillationLoss([{ data: p, shape: big }], [{ data: t, shape: big }], opts).loss;
    const pending = run(() => distillationLossAsync([{ data: p, shape: big }], [{ data: t, shape: big }], opts));
    let threw = null;
    try { detach(p.buffer); detach(t.buffer); } catch (e) { threw = e.name; }
    gcNow();
    const out = await pending;
    return { ...out, sameAsSync: out.loss === expected, transferThrew: threw };
  },
  async postmessage_gradout_during_async() {
    const n = numel(big);
    const g = new Float32Array(n);
    const { port1, port2 } = new MessageChannel();
    const pending = run(() => distillationLossAsync([{ data: filled(n, 1), shape: big }], [{ data: filled(n, 2), shape: big }], { ...opts, gradOut: [g] }));
    let threw = null;
    try { port1.postMessage(g.buffer, [g.buffer]); } catch (e) { threw = e.name; }
    port1.close(); port2.close();
    gcNow();
    const out = await pending;
    gcNow();
    return { ...out, transferThrew: threw };
  },
  // 3. user JavaScript between reading an array and using it (sync calls too).
  async shape_getter_detaches_own_data() {
    const n = numel(big);
    const p = filled(n, 1);
    const h = headWithGetters(p, big, { shape: () => detach(p.buffer) });
    const r = await run(() => distillationLoss([h], [{ data: filled(n, 2), shape: big }], opts));
    gcNow();
    return r;
  },
  async later_head_detaches_earlier() {
    const n = numel(big);
    const p0 = filled(n, 1);
    const t0 = filled(n, 2);
    const h1 = headWithGetters(filled(numel(small), 3), small, { data: () => detach(p0.buffer) });
    const r = await run(() => distillationLoss([{ data: p0, shape: big }, h1], [{ data: t0, shape: big }, { data: filled(numel(small), 4), shape: small }], opts));
    gcNow();
    return r;
  },
  async teacher_getter_detaches_student() {
    const n = numel(big);
    const p0 = filled(n, 1);
    const t = headWithGetters(filled(n, 2), big, { data: () => detach(p0.buffer) });
    return run(() => distillationLoss([{ data: p0, shape: big }], [t], opts));
  },
  async gradout_getter_detaches_input() {
    const n = numel(big);
    const p0 = filled(n, 1);
    const o = { numClasses: C };
    Object.defineProperty(o, 'gradOut', { get() { detach(p0.buffer); return undefined; } });
    return run(() => distillationLoss([{ data: p0, shape: big }], [{ data: filled(n, 2), shape: big }], o));
  },
  async gradout_element_getter_detaches_gradout() {
    const n = numel(big);
    const g0 = new Float32Array(numel(small));
    const g1 = new Float32Array(n);
    const list = [g0];
    Object.defineProperty(list, 1, { get() { detach(g0.buffer); return g1; } });
    return run(() => distillationLoss(
      [{ data: filled(numel(small), 1), shape: small }, { data: filled(n, 3), shape: big }],
      [{ data: filled(numel(small), 2), shape: small }, { data: filled(n, 4), shape: big }],
      { numClasses: C, gradOut: list }));
  },
  async option_getter_detaches_async() {
    const n = numel(big);
    const p0 = filled(n, 1);
    const o = { numClasses: C };
    Object.defineProperty(o, 'lambda', { get() { detach(p0.buffer); return 10; } });
    return run(() => distillationLossAsync([{ data: p0, shape: big }], [{ data: filled(n, 2), shape: big }], o));
  },
  async proxy_head_detaches() {
    const n = numel(big);
    const p0 = filled(n, 1);
    const proxy = new Proxy({ data: filled(n, 2), shape: big }, {
      get(target, key) { if (key === 'shape') detach(p0.buffer); return target[key]; },
    });
    return run(() => distillationLoss([{ data: p0, shape: big }], [proxy], opts));
  },
  async proxy_options_detaches() {
    const n = numel(big);
    const p0 = filled(n, 1);
    const proxy = new Proxy({ numClasses: C }, {
      get(target, key) { if (key === 'checkFinite') detach(p0.buffer); return target[key]; },
    });
    return run(() => distillationLoss([{ data: p0, shape: big }], [{ data: filled(n, 2), shape: big }], proxy));
  },
  // the same rules for Uint16Array (float16/bfloat16) heads and gradOut
  async uint16_dtype_getter_detaches_student() {
    const n = numel(big);
    const p0 = new Uint16Array(n).fill(0x3c00); // 1.0 in float16
    const t = { data: new Uint16Array(n).fill(0x3800), shape: big };
    Object.defineProperty(t, 'dtype', { get() { detach(p0.buffer); return 'float16'; } });
    return run(() => distillationLoss([{ data: p0, shape: big, dtype: 'float16' }], [t], opts));
  },
  async uint16_transfer_gradout_during_async() {
    const n = numel(big);
    const g = new Uint16Array(n);
    const pending = run(() => distillationLossAsync([{ data: new Uint16Array(n).fill(0x3c00), shape: big, dtype: 'float16' }],
      [{ data: new Uint16Array(n).fill(0x3800), shape: big, dtype: 'float16' }], { ...opts, gradOut: [g] }));
    let threw = null;
    try { detach(g.buffer); } catch (e) { threw = e.name; }
    gcNow();
    const out = await pending;
    return { ...out, transferThrew: threw, detachedAfter: g.length === 0 };
  },
  async from_float32array_dtype_getter_detaches() {
    const n = 1 << 20;
    const data = filled(n, 1);
    const o = {};
    Object.defineProperty(o, 'dtype', { get() { detach(data.buffer); gcNow(); return 'float32'; } });
    let r;
    try {
      const t = Tensor.fromFloat32Array(data, [n], o);
      const back = t.toFloat32Array();
      r = { ok: true, length: back.length, nonZero: back.some((v) => v !== 0) };
    } catch (e) { r = describe(e); }
    return r;
  },
  async from_float32array_device_getter_detaches() {
    const n = 1 << 20;
    const data = filled(n, 1);
    const o = {};
    Object.defineProperty(o, 'device', { get() { detach(data.buffer); gcNow(); return 'cpu'; } });
    try { Tensor.fromFloat32Array(data, [n], o); return { ok: true }; } catch (e) { return describe(e); }
  },
  async from_float32array_shape_getter_detaches() {
    const n = 1 << 20;
    const data = filled(n, 1);
    const shape = [1];
    Object.defineProperty(shape, 0, { get() { detach(data.buffer); gcNow(); return n; } });
    try { Tensor.fromFloat32Array(data, shape); return { ok: true }; } catch (e) { return describe(e); }
  },
};

(async () => {
  const name = process.argv[2];
  if (!scenarios[name]) {
    console.log(JSON.stringify({ names: Object.keys(scenarios) }));
    return;
  }
  const r = await scenarios[name]();
  console.log(JSON.stringify(r));
})();
