'use strict';
// The async API (same answers, event loop free), caller-owned gradient buffers,
// zero-copy views with byteOffset, and Tensor handles on the CPU.
const h = require('./helpers');

const { distillationLoss, distillationLossAsync, Tensor, backendInfo } = h.pkg;
const isF32 = (x) => Object.prototype.toString.call(x) === '[object Float32Array]';

function yoloCase(seed, { B = 1, C = 80, grids = [20, 10, 5], layout = 'nchw', spread = 3 } = {}) {
  const r = h.rng(seed);
  const shapes = grids.map((g) => h.headShape(layout, B, 3, C, g, g));
  return { shapes, opts: { numClasses: C, layout }, ...h.makeHeads(r, shapes, spread) };
}

test('async equals sync, bit for bit', async () => {
  for (const layout of ['nchw', 'nahwc', 'nhwc']) {
    const c = yoloCase(21, { layout, B: 2 });
    const s = distillationLoss(c.student, c.teacher, c.opts);
    const a = await distillationLossAsync(c.student, c.teacher, c.opts);
    expect(a.loss).toBe(s.loss);
    expect(a.scales).toEqual(s.scales);
    a.grads.forEach((g, k) => {
      expect(isF32(g)).toBe(true);
      expect(h.sameBits(g, s.grads[k])).toBe(true);
    });
  }
});

test('the event loop stays free while a large async call runs', async () => {
  // ~17 M values per tensor (YOLOv5s heads at 640, B = 8), one thread: tens of ms of work.
  const c = yoloCase(22, { B: 8, grids: [80, 40, 20], spread: 1 });
  let immediateFired = false;
  let resolvedFirst = false;
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const p = distillationLossAsync(c.student, c.teacher, { ...c.opts, threads: 1 }).then((r) => {
    resolvedFirst = !immediateFired;
    return r;
  });
  setImmediate(() => {
    immediateFired = true;
  });
  const r = await p;
  clearInterval(timer);
  expect(immediateFired).toBe(true);
  expect(resolvedFirst).toBe(false);
  expect(ticks).toBeGreaterThan(0);
  expect(Number.isFinite(r.loss)).toBe(true);
});

test('gradOut buffers are filled in place and returned, sync and async', async () => {
  const c = yoloCase(23);
  const fresh = distillationLoss(c.student, c.teacher, c.opts);
  for (const run of [distillationLoss, distillationLossAsync]) {
    const gradOut = c.shapes.map((s) => new Float32Array(h.numel(s)).fill(123));
    const r = await run(c.student, c.teacher, { ...c.opts, gradOut });
    r.grads.forEach((g, k) => {
      expect(g).toBe(gradOut[k]);
      expect(h.sameBits(gradOut[k], fresh.grads[k])).toBe(true);
    });
  }
  // null entries allocate for that scale only.
  const gradOut = [new Float32Array(h.numel(c.shapes[0])), null, undefined];
  const r = distillationLoss(c.student, c.teacher, { ...c.opts, gradOut });
  expect(r.grads[0]).toBe(gradOut[0]);
  expect(h.sameBits(r.grads[1], fresh.grads[1])).toBe(true);
});

test('Float32Array views are read in place, honouring byteOffset', () => {
  const c = yoloCase(24, { grids: [4, 2] });
  const shifted = (x, pad) => {
    const buf = new Float32Array(x.data.length + 2 * pad).fill(1e6); // poison around the view
    buf.set(x.data, pad);
    return { data: new Float32Array(buf.buffer, pad * 4, x.data.length), shape: x.shape };
  };
  const s = distillationLoss(c.student, c.teacher, c.opts);
  const v = distillationLoss(c.student.map((x) => shifted(x, 3)), c.teacher.map((x) => shifted(x, 5)), c.opts);
  expect(v.loss).toBe(s.loss);
  // The gradOut view is written in place and nothing around it is touched.
  const n = h.numel(c.shapes[0]);
  const backing = new Float32Array(n + 8).fill(-7);
  const view = new Float32Array(backing.buffer, 16, n);
  distillationLoss(c.student, c.teacher, { ...c.opts, gradOut: [view, null] });
  expect(h.sameBits(view, s.grads[0])).toBe(true);
  expect([...backing.slice(0, 4), ...backing.slice(n + 4)].every((x) => x === -7)).toBe(true);
});

test('async keeps its inputs alive when the caller drops them', async () => {
  let c = yoloCase(25, { B: 2 });
  const expected = distillationLoss(c.student, c.teacher, c.opts).loss;
  const p = distillationLossAsync(c.student, c.teacher, c.opts);
  c = null;
  if (global.gc) global.gc();
  expect((await p).loss).toBe(expected);
});

describe('Tensor handles (CPU)', () => {
  test('fromFloat32Array, properties, toFloat32Array(Async), dispose', async () => {
    const data = Float32Array.from({ length: 24 }, (_, i) => i - 3.5);
    const t = Tensor.fromFloat32Array(data, [2, 3, 4]);
    expect(t.shape).toEqual([2, 3, 4]);
    expect(t.device).toBe('cpu');
    expect(t.dtype).toBe('float32');
    expect(t.disposed).toBe(false);
    data[0] = 99; // the tensor owns a copy
    const back = t.toFloat32Array();
    expect(back[0]).toBe(-3.5);
    expect(h.sameBits(await t.toFloat32ArrayAsync(), back)).toBe(true);
    t.dispose();
    t.dispose(); // idempotent
    expect(t.disposed).toBe(true);
    expect(() => t.toFloat32Array()).toThrow(expect.objectContaining({ code: 'ERR_TENSOR_DISPOSED' }));
  });

  test('the loss on handles equals the loss on arrays and returns handle gradients', async () => {
    const c = yoloCase(26, { layout: 'nahwc' });
    const ref = distillationLoss(c.student, c.teacher, c.opts);
    const st = c.student.map((x) => Tensor.fromFloat32Array(x.data, x.shape));
    const te = c.teacher.map((x) => Tensor.fromFloat32Array(x.data, x.shape));
    for (const run of [distillationLoss, distillationLossAsync]) {
      const r = await run(st, te, c.opts);
      expect(r.loss).toBe(ref.loss);
      r.grads.forEach((g, k) => {
        expect(g).toBeInstanceOf(Tensor);
        expect(g.shape).toEqual(c.shapes[k]);
        expect(h.sameBits(g.toFloat32Array(), ref.grads[k])).toBe(true);
        g.dispose();
      });
    }
    // A handle as gradOut is filled and returned.
    const out = Tensor.fromFloat32Array(new Float32Array(h.numel(c.shapes[0])), c.shapes[0]);
    const r = distillationLoss(st, te, { ...c.opts, gradOut: [out, null, null] });
    expect(r.grads[0]).toBe(out);
    expect(h.sameBits(out.toFloat32Array(), ref.grads[0])).toBe(true);
    // Mixed kinds per scale: arrays keep arrays, handles keep handles.
    const mixed = distillationLoss([c.student[0], st[1], c.student[2]], [te[0], c.teacher[1], te[2]], c.opts);
    expect(isF32(mixed.grads[0])).toBe(true);
    expect(mixed.grads[1]).toBeInstanceOf(Tensor);
    expect(mixed.loss).toBe(ref.loss);
    [...st, ...te, out].forEach((t) => t.dispose());
  });

  test('float16 and bfloat16 handles compute in fp32 and return gradients in their dtype', () => {
    const c = yoloCase(27, { grids: [6, 3] });
    for (const dtype of ['float16', 'bfloat16']) {
      const st = c.student.map((x) => Tensor.fromFloat32Array(x.data, x.shape, { dtype }));
      const te = c.teacher.map((x) => Tensor.fromFloat32Array(x.data, x.shape, { dtype }));
      expect(st[0].dtype).toBe(dtype);
      // The same values, rounded to the dtype, as fp32 arrays.
      const sa = st.map((t, k) => ({ data: t.toFloat32Array(), shape: c.shapes[k] }));
      const ta = te.map((t, k) => ({ data: t.toFloat32Array(), shape: c.shapes[k] }));
      const want = distillationLoss(sa, ta, c.opts);
      const got = distillationLoss(st, te, c.opts);
      expect(got.loss).toBe(want.loss);
      got.grads.forEach((g, k) => {
        expect(g.dtype).toBe(dtype);
        h.expectArraysClose(g.toFloat32Array(), want.grads[k], dtype === 'float16' ? 1.2e-7 : 1e-30, dtype === 'float16' ? 1e-3 : 8e-3, dtype);
        // float16's atol: its subnormal spacing is 6e-8.
      });
      [...st, ...te, ...got.grads].forEach((t) => t.dispose());
    }
  });

  test('Symbol.dispose disposes', () => {
    const t = Tensor.fromFloat32Array(new Float32Array(4), [4]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
  });
});

test('backendInfo describes this build', () => {
  const info = backendInfo();
  expect(typeof info.libtorch).toBe('string');
  expect(info.libtorch).toMatch(/^\d+\.\d+/);
  expect(typeof info.cuda).toBe('boolean');
  expect(info.cudaDeviceCount).toBeGreaterThanOrEqual(0);
  expect(info.threads).toBeGreaterThanOrEqual(1);
});
