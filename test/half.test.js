'use strict';
// Half-precision arrays (docs/DESIGN.md §1c): heads given as { data: Uint16Array
// (the raw float16 or bfloat16 bits), shape, dtype }, as onnxruntime-node hands
// out fp16 outputs; student and teacher dtypes may differ; a 16-bit student's
// gradient comes back as a Uint16Array in its dtype (round to nearest even).
// Compared with the independent PyTorch implementation (inputs rounded to their
// dtypes, computed in float64): loss within 1e-5, every gradient element within
// one unit in the last place of the reference rounded to the student's dtype.
const h = require('./helpers');

const { distillationLoss, distillationLossAsync, Tensor } = h.pkg;
const torch = h.torchAvailable();
const withTorch = torch.ok ? test : test.skip;
if (!torch.ok) console.log(`PyTorch comparisons skipped: ${torch.reason}`);

const { toHalf, fromHalf, encode16: enc, decode16: dec } = h;
const asHead = h.headOfDtype;
// One unit in the last place of v in a 16-bit dtype.
const ulp = (dtype, v) => {
  const a = Math.abs(v);
  if (dtype === 'float16') return a < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(a)) - 10);
  return a < 2 ** -126 ? 2 ** -133 : 2 ** (Math.floor(Math.log2(a)) - 7);
};

function makeCases() {
  const r = h.rng(0xf16);
  const cases = [];
  const pairs = [['float16', 'float16'], ['bfloat16', 'bfloat16'], ['float32', 'float16'], ['float16', 'float32'],
    ['bfloat16', 'float16'], ['float32', 'bfloat16']];
  let i = 0;
  for (const [sd, td] of pairs) {
    for (const layout of ['nchw', 'nahwc', 'nhwc']) {
      i++;
      const C = r.pick([1, 3, 8]);
      const A = r.int(1, 3);
      const shapes = [h.headShape(layout, r.int(1, 2), A, C, r.int(1, 6), r.int(1, 7)), h.headShape(layout, 1, A, C, 1, 1)];
      const c = { id: `half${i}`, layout, numAnchors: A, numClasses: C, shapes, studentDtype: sd, teacherDtype: td, compute: 'float64' };
      if (i % 4 === 0) c.variant = { clsTarget: 'kl', temperature: 2 };
      if (i % 5 === 0) c.variant = { preset: 'paper', fmNms: true };
      if (i % 3 === 0) c.lambda = 3;
      Object.assign(c, h.makeHeads(r, shapes, 2));
      cases.push(c);
    }
  }
  return cases;
}

const cases = makeCases();

withTorch(`${cases.length} configurations of half-precision arrays (fp16, bf16, mixed, every layout) agree with PyTorch`, () => {
  expect(cases.length).toBeGreaterThanOrEqual(18);
  const want = h.runTorchReference(cases);
  for (const c of cases) {
    const opts = { numClasses: c.numClasses, numAnchors: c.numAnchors, layout: c.layout, ...(c.variant || {}) };
    if (c.lambda) opts.lambda = c.lambda;
    const got = distillationLoss(c.student.map((x) => asHead(x, c.studentDtype)), c.teacher.map((x) => asHead(x, c.teacherDtype)), opts);
    const w = want[c.id];
    h.expectRelClose(got.loss, w.loss, 1e-5, `${c.id} loss`, 1e-12);
    got.grads.forEach((g, k) => {
      if (c.studentDtype === 'float32') {
        expect(Object.prototype.toString.call(g)).toBe('[object Float32Array]');
        h.expectArraysClose(g, w.grads[k], 1e-6, 1e-5, `${c.id} grad ${k}`);
        return;
      }
      expect(Object.prototype.toString.call(g)).toBe('[object Uint16Array]');
      expect(g.length).toBe(w.grads[k].length);
      for (let j = 0; j < g.length; j++) {
        const ref = dec[c.studentDtype](enc[c.studentDtype](w.grads[k][j]));
        const mine = dec[c.studentDtype](g[j]);
        if (!(Math.abs(mine - ref) <= ulp(c.studentDtype, ref))) {
          throw new Error(`${c.id} grad ${k}[${j}]: ${mine} vs ${ref} (${c.studentDtype}, ${c.layout}, teacher ${c.teacherDtype})`);
        }
      }
    });
  }
});

test('Uint16Array heads equal Tensor handles of the same dtype, bit for bit; async = sync; gradOut Uint16Array filled in place', async () => {
  const c = cases[0]; // float16 / float16
  const opts = { numClasses: c.numClasses, numAnchors: c.numAnchors, layout: c.layout };
  const st = c.student.map((x) => asHead(x, 'float16'));
  const te = c.teacher.map((x) => asHead(x, 'float16'));
  const a = distillationLoss(st, te, opts);
  const handles = [...c.student, ...c.teacher].map((x) => Tensor.fromFloat32Array(x.data, x.shape, { dtype: 'float16' }));
  const b = distillationLoss(handles.slice(0, 2), handles.slice(2), opts);
  expect(a.loss).toBe(b.loss);
  b.grads.forEach((g, k) => {
    expect(g.dtype).toBe('float16');
    const bits = Uint16Array.from(g.toFloat32Array(), toHalf);
    expect(h.sameBits(bits, a.grads[k])).toBe(true);
  });
  const async = await distillationLossAsync(st, te, opts);
  expect(async.loss).toBe(a.loss);
  async.grads.forEach((g, k) => expect(h.sameBits(g, a.grads[k])).toBe(true));
  const outs = st.map((x) => new Uint16Array(x.data.length));
  const r = distillationLoss(st, te, { ...opts, gradOut: outs });
  r.grads.forEach((g, k) => {
    expect(g).toBe(outs[k]);
    expect(h.sameBits(g, a.grads[k])).toBe(true);
  });
  handles.forEach((x) => x.dispose());
});

test('mixed dtypes: an fp16 teacher with an fp32 student equals the fp32 call on the teacher rounded to fp16', () => {
  const c = cases[6]; // float32 student, float16 teacher
  expect([c.studentDtype, c.teacherDtype]).toEqual(['float32', 'float16']);
  const opts = { numClasses: c.numClasses, numAnchors: c.numAnchors, layout: c.layout };
  const mixed = distillationLoss(c.student.map((x) => asHead(x, 'float32')), c.teacher.map((x) => asHead(x, 'float16')), opts);
  const rounded = c.teacher.map((x) => ({ data: Float32Array.from(x.data, (v) => fromHalf(toHalf(v))), shape: x.shape }));
  const plain = distillationLoss(c.student.map((x) => asHead(x, 'float32')), rounded, opts);
  expect(mixed.loss).toBe(plain.loss);
  mixed.grads.forEach((g, k) => expect(h.sameBits(g, plain.grads[k])).toBe(true));
  // Tensor handles of different dtypes likewise.
  const ts = Tensor.fromFloat32Array(c.student[0].data, c.shapes[0]);
  const tt = Tensor.fromFloat32Array(c.teacher[0].data, c.shapes[0], { dtype: 'float16' });
  const hr = distillationLoss([ts], [tt], opts);
  const ar = distillationLoss([asHead(c.student[0], 'float32')], [asHead(c.teacher[0], 'float16')], opts);
  expect(hr.loss).toBe(ar.loss);
  expect(hr.grads[0].dtype).toBe('float32');
  ts.dispose();
  tt.dispose();
  hr.grads[0].dispose();
});

describe('bad half-precision arguments get coded errors naming the scale and tensor', () => {
  const shape = [1, 21, 1, 1];
  const u = new Uint16Array(21);
  const f = new Float32Array(21);
  const cases = [
    ['a Uint16Array without dtype', () => distillationLoss([{ data: u, shape }], [{ data: f, shape }], { numClasses: 2 }), 'TypeError', 'ERR_INVALID_ARG_TYPE', /scale 0, student: a Uint16Array head needs dtype/],
    ['a Float32Array with dtype float16', () => distillationLoss([{ data: f, shape }], [{ data: f, shape, dtype: 'float16' }], { numClasses: 2 }), 'TypeError', 'ERR_DTYPE_MISMATCH', /scale 0, teacher: dtype 'float16' needs a Uint16Array/],
    ['a Uint16Array with dtype float32', () => distillationLoss([{ data: u, shape, dtype: 'float32' }], [{ data: f, shape }], { numClasses: 2 }), 'TypeError', 'ERR_DTYPE_MISMATCH', /scale 0, student: dtype 'float32' needs a Float32Array/],
    ['an unknown dtype', () => distillationLoss([{ data: u, shape, dtype: 'float8' }], [{ data: f, shape }], { numClasses: 2 }), 'RangeError', 'ERR_INVALID_OPTION', /scale 0, student\.dtype: expected 'float32' \| 'float16' \| 'bfloat16', got "float8"/],
    ['an Int16Array', () => distillationLoss([{ data: new Int16Array(21), shape, dtype: 'float16' }], [{ data: f, shape }], { numClasses: 2 }), 'TypeError', 'ERR_INVALID_ARG_TYPE', /scale 0, student\.data: expected a Float32Array, or a Uint16Array/],
    ['a Float32Array gradOut for a float16 student', () => distillationLoss([{ data: u, shape, dtype: 'float16' }], [{ data: f, shape }], { numClasses: 2, gradOut: [new Float32Array(21)] }), 'TypeError', 'ERR_GRAD_OUT', /scale 0, gradOut: expected a Uint16Array .*float16/],
    ['a Uint16Array gradOut for a float32 student', () => distillationLoss([{ data: f, shape }], [{ data: u, shape, dtype: 'bfloat16' }], { numClasses: 2, gradOut: [new Uint16Array(21)] }), 'TypeError', 'ERR_GRAD_OUT', /scale 0, gradOut: expected a Float32Array .*float32/],
    ['a Uint16Array gradOut of the wrong length', () => distillationLoss([{ data: u, shape, dtype: 'bfloat16' }], [{ data: f, shape }], { numClasses: 2, gradOut: [new Uint16Array(20)] }), 'RangeError', 'ERR_GRAD_OUT', /expected a Uint16Array of 21 elements/],
  ];
  test.each(cases)('%s', (_name, fn, cls, code, pattern) => {
    let err;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err && err.constructor.name).toBe(cls);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(pattern);
  });
});

// Random heads of case c (c.shape, student dtype c.sd, teacher dtype c.td)
// against the same values widened to float32 arrays by hand (widening is
// exact): every gradient element bit for bit (the float32 gradient rounded to
// nearest even in the student's dtype), the loss bit for bit (exactLoss) or to
// 1e-12; and gradOut in the student's dtype with one thread: the same bits.
function expectInPlaceEqualsWidened(r, c, opts, exactLoss) {
  const n = h.numel(c.shape);
  const p = new Float32Array(n).map(() => 3 * r.randn());
  const t = new Float32Array(n).map(() => 3 * r.randn());
  const ph = asHead({ data: p, shape: c.shape }, c.sd);
  const th = asHead({ data: t, shape: c.shape }, c.td);
  const wide = (head, dtype) => ({ data: Float32Array.from(h.valuesOf(head.data, dtype)), shape: c.shape });
  const ref = distillationLoss([wide(ph, c.sd)], [wide(th, c.td)], opts);
  const got = distillationLoss([ph], [th], opts);
  if (exactLoss) expect(Object.is(got.loss, ref.loss)).toBe(true);
  else h.expectRelClose(got.loss, ref.loss, 1e-12, 'loss');
  const want = c.sd === 'float32' ? ref.grads[0] : Uint16Array.from(ref.grads[0], enc[c.sd]);
  expect(Object.prototype.toString.call(got.grads[0])).toBe(Object.prototype.toString.call(want));
  expect(h.sameBits(got.grads[0], want)).toBe(true);
  const out = c.sd === 'float32' ? new Float32Array(n) : new Uint16Array(n);
  const one = distillationLoss([ph], [th], { ...opts, gradOut: [out], threads: 1 });
  expect(Object.is(one.loss, got.loss)).toBe(true);
  expect(h.sameBits(out, want)).toBe(true);
  return { ref, ph, th, opts };
}

describe('16-bit heads under the default formula are read and written in place (no widened copies)', () => {
  // The in-place path (cpu_scale_mixed) must give exactly what widening the
  // arrays to float32 first gives: the same loss bits, and the float32 gradient
  // rounded to nearest even in the student's dtype.
  // (float32 student, bfloat16 teacher: the register kernel since the second Zen 3 session of 2026-12-07)
  const pairs = [['float16', 'float16'], ['bfloat16', 'bfloat16'], ['float32', 'float16'], ['float16', 'float32'], ['bfloat16', 'float16'],
    ['float32', 'bfloat16']];
  const r = h.rng(0x16b17);
  const cases = [];
  for (const [sd, td] of pairs) {
    for (const layout of ['nchw', 'nahwc', 'nhwc']) {
      const C = r.pick([1, 6, 80]);
      const shape = h.headShape(layout, 2, 3, C, r.int(1, 13), r.int(1, 21));
      cases.push([`${sd} student, ${td} teacher, ${layout} ${JSON.stringify(shape)}`, { sd, td, layout, C, shape }]);
    }
    // nchw planes of more cells than one widened run (MixedRuns::kRun = 1024
    // in native/core/fused_cpu.cpp), not a multiple of 16: runs of a plane
    // are widened and summed in pieces.
    const big = h.headShape('nchw', 1, 3, 2, r.int(33, 60), r.int(33, 60));
    cases.push([`${sd} student, ${td} teacher, nchw ${JSON.stringify(big)} (planes over 1024 cells)`, { sd, td, layout: 'nchw', C: 2, shape: big }]);
  }
  test.each(cases)('%s', (_id, c) => {
    // The default kernel: the same loss bits too, and grad: false as well.
    const { ref, ph, th, opts } = expectInPlaceEqualsWidened(r, c, { numClasses: c.C, layout: c.layout }, true);
    expect(distillationLoss([ph], [th], { ...opts, grad: false }).loss).toBe(ref.loss);
  });
});

test.each(['float16', 'bfloat16'])('%s default-formula heads with NaN and Inf (nchw, the register kernel): NaN where the widened call has NaN, every other gradient element bit for bit', (dtype) => {
  // Planes of 23 x 19 cells: 16-value vectors and a scalar tail in every channel.
  const r = h.rng(0x7a7 + dtype.length);
  const shape = h.headShape('nchw', 1, 3, 4, 23, 19);
  const n = h.numel(shape);
  const p = new Float32Array(n).map(() => 3 * r.randn());
  const t = new Float32Array(n).map(() => 3 * r.randn());
  for (const k of [5, 77, 400, 1310, n - 3]) p[k] = NaN;
  for (const k of [33, 901]) p[k] = Infinity;
  for (const k of [60, 1500]) t[k] = -Infinity;
  const ph = asHead({ data: p, shape }, dtype), th = asHead({ data: t, shape }, dtype);
  const wide = (head) => ({ data: Float32Array.from(h.valuesOf(head.data, dtype)), shape });
  const ref = distillationLoss([wide(ph)], [wide(th)], { numClasses: 4 });
  const got = distillationLoss([ph], [th], { numClasses: 4 });
  expect(Number.isNaN(got.loss)).toBe(Number.isNaN(ref.loss));
  const g = got.grads[0], rg = ref.grads[0];
  let nans = 0;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(rg[i])) {
      nans++;
      expect(Number.isNaN(dec[dtype](g[i]))).toBe(true);
    } else if (g[i] !== enc[dtype](rg[i])) {
      throw new Error(`element ${i}: ${g[i]} vs ${enc[dtype](rg[i])} (${rg[i]})`);
    }
  }
  expect(nans).toBeGreaterThan(0);
});

test.each(['float16', 'bfloat16'])('%s gradients on exact rounding ties (nchw, the register kernel): rounded to nearest even, as the widened call', (dtype) => {
  // The class gradient is coef w (P - T) with w = sigmoid(T_obj) = 1 (T_obj =
  // 100) and coef = 2 lambda gradScale / (cells C) = 1 (lambda 1, 3 anchors of 4 x 8
  // cells, C = 3, gradScale 144), so for P = +-(1 or 1 + one unit) and T = -+(half
  // a unit) it is exactly halfway between two 16-bit values: half of the ties
  // round down to an even last bit, half up. Round-half-up (or truncation) in
  // the kernel's narrowing gets half of them wrong. Planes of 32 cells: two
  // 16-value vectors a channel.
  const unit = dtype === 'float16' ? 2 ** -10 : 2 ** -7;
  const C = 3, shape = h.headShape('nchw', 1, 3, C, 4, 8), hw = 32, K = 5 + C;
  const n = h.numel(shape);
  const r = h.rng(0x71e5 + dtype.length);
  const p = new Float32Array(n).map(() => r.randn());
  const t = new Float32Array(n).map(() => r.randn());
  let ties = 0;
  for (let a = 0; a < 3; a++) {
    for (let j = 0; j < hw; j++) t[(a * K + 4) * hw + j] = 100;
    for (let c = 0; c < C; c++) {
      for (let j = 0; j < hw; j++) {
        const i = (a * K + 5 + c) * hw + j, sign = (j + c) % 3 === 0 ? -1 : 1;
        p[i] = sign * (j % 2 === 0 ? 1 : 1 + unit);
        t[i] = -sign * unit / 2;
        ties++;
      }
    }
  }
  const ph = asHead({ data: p, shape }, dtype), th = asHead({ data: t, shape }, dtype);
  const wide = (head) => ({ data: Float32Array.from(h.valuesOf(head.data, dtype)), shape });
  const opts = { numClasses: C, lambda: 1, gradScale: 144 };
  const ref = distillationLoss([wide(ph)], [wide(th)], opts);
  const got = distillationLoss([ph], [th], opts);
  let checked = 0;
  for (let a = 0; a < 3; a++) {
    for (let c = 0; c < C; c++) {
      for (let j = 0; j < hw; j++) {
        const i = (a * K + 5 + c) * hw + j;
        // the float32 gradient is the tie itself: +-(1 + unit / 2) or +-(1 + 3 unit / 2)
        expect(Math.abs(ref.grads[0][i])).toBe(j % 2 === 0 ? 1 + unit / 2 : 1 + 1.5 * unit);
        checked++;
      }
    }
  }
  expect(checked).toBe(ties);
  for (let i = 0; i < n; i++) {
    if (got.grads[0][i] !== enc[dtype](ref.grads[0][i])) {
      throw new Error(`element ${i}: ${got.grads[0][i]} vs ${enc[dtype](ref.grads[0][i])} (${ref.grads[0][i]})`);
    }
  }
});

test.each([
  ['default formula (the register kernel)', 'nchw', {}],
  ["preset 'paper' (the variant kernel's units)", 'nchw', { preset: 'paper' }],
  ["objTarget 'bce', nahwc", 'nahwc', { objTarget: 'bce' }],
  ["clsTarget 'kl'", 'nchw', { clsTarget: 'kl' }],
  ['anchor-free', 'nchw', { head: 'anchorFree' }],
  ['anchor-free, nhwc', 'nhwc', { head: 'anchorFree' }],
])('bfloat16 gradients that are NaN have the bits 0x7FC0, as at::Tensor::to(kBFloat16) rounds every NaN: %s', (_name, layout, extra) => {
  // Every kernel's narrowing (the AVX-512 and AVX2 register kernels, the AVX2
  // rounding of gradient runs, the baseline loop over c10's function) maps a
  // NaN of any sign and payload to the one quiet NaN 0x7FC0.
  const r = h.rng(0x7fc0 + layout.length + JSON.stringify(extra).length);
  const C = 4, H = 7, W = 37;
  const af = extra.head === 'anchorFree';
  const shape = af ? (layout === 'nchw' ? [1, 64 + C, H, W] : [1, H, W, 64 + C]) : h.headShape(layout, 1, 3, C, H, W);
  const n = h.numel(shape);
  const p = new Float32Array(n).map(() => 2 * r.randn());
  const t = new Float32Array(n).map(() => 2 * r.randn());
  for (let k = 3; k < n; k += 97) p[k] = NaN;
  const ph = asHead({ data: p, shape }, 'bfloat16'), th = asHead({ data: t, shape }, 'bfloat16');
  const got = distillationLoss([ph], [th], { numClasses: C, layout, ...extra });
  const g = got.grads[0];
  let nans = 0;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(dec.bfloat16(g[i]))) {
      nans++;
      if (g[i] !== 0x7fc0) throw new Error(`element ${i}: NaN as 0x${g[i].toString(16)}, not 0x7fc0`);
    }
  }
  expect(nans).toBeGreaterThan(0);
});

describe('16-bit heads under the other formulas, FM-NMS and anchor-free heads are read in place too', () => {
  // The variant kernels on 16-bit arrays (MixedSource in native/core/fused_cpu.cpp:
  // each unit widened in cache) against widening the whole arrays first: every
  // gradient element bit for bit (the same element math), the loss to 1e-12
  // (nchw units group the per-unit sums differently). FM-NMS masks widen one
  // teacher plane at a time.
  const pairs = [['float16', 'float16'], ['bfloat16', 'bfloat16'], ['float32', 'float16'], ['float16', 'float32'], ['bfloat16', 'float16']];
  const variants = [
    ['paper', { preset: 'paper' }],
    ['bce', { objTarget: 'bce', clsTarget: 'bce' }],
    ['kl', { clsTarget: 'kl', temperature: 2 }],
    ['weighted cls off', { weighted: { cls: false } }],
    ['anchor-free regMax 16', { head: 'anchorFree' }],
    ['anchor-free regMax 1, kl', { head: 'anchorFree', regMax: 1, clsTarget: 'kl' }],
    ['anchor-free regMax 17, prob', { head: 'anchorFree', regMax: 17, clsTarget: 'prob' }],
    ['default + fmNms', { fmNms: true }],
    ['paper + fmNms', { preset: 'paper', fmNms: true }],
    ['anchor-free fmNms, kl', { head: 'anchorFree', fmNms: true, clsTarget: 'kl' }],
  ];
  const r = h.rng(0x16b18);
  const cases = [];
  variants.forEach(([name, extra], i) => {
    const [sd, td] = pairs[i % pairs.length];
    const af = extra.head === 'anchorFree';
    for (const layout of af ? ['nchw', 'nhwc'] : ['nchw', 'nahwc', 'nhwc']) {
      const C = r.pick([1, 6, 80]);
      const H = r.int(1, 40), W = r.int(1, 60);
      const R = af ? (extra.regMax || 16) : 0;
      const shape = af ? (layout === 'nchw' ? [2, 4 * R + C, H, W] : [2, H, W, 4 * R + C]) : h.headShape(layout, 2, 3, C, H, W);
      cases.push([`${name}: ${sd} student, ${td} teacher, ${layout} ${JSON.stringify(shape)}`, { sd, td, layout, C, shape, extra }]);
    }
  });
  test.each(cases)('%s', (_id, c) => {
    expectInPlaceEqualsWidened(r, c, { numClasses: c.C, layout: c.layout, ...c.extra }, false);
  });
});

describe('16-bit nchw heads under the channel-wise formulas: whole-plane units, the loss bits of the float32 call too', () => {
  // Without the KL, the variant kernel takes 16-bit (or mixed) nchw heads a
  // channel at a time in the fp32 heads' units (MixedSource::open_channel in
  // native/core/fused_cpu.cpp), so its sums group as the widened call's: the
  // same loss bits, every gradient element bit for bit, also where a plane
  // spans two units (over 8,192 cells) and at 1 thread.
  const pairs = [['float16', 'float16'], ['bfloat16', 'bfloat16'], ['float32', 'float16'], ['float16', 'float32'], ['bfloat16', 'float16']];
  const variants = [
    ['paper', { preset: 'paper' }],
    ['bce', { objTarget: 'bce', clsTarget: 'bce' }],
    ['prob, boxTarget paper', { objTarget: 'prob', clsTarget: 'prob', boxTarget: 'paper' }],
    ['weighted cls off', { weighted: { cls: false } }],
    ['paper + fmNms', { preset: 'paper', fmNms: true }],
  ];
  const r = h.rng(0x16b19);
  const cases = [];
  variants.forEach(([name, extra], i) => {
    const [sd, td] = pairs[i % pairs.length];
    const C = r.pick([1, 3]);
    for (const [H, W] of [[r.int(1, 30), r.int(1, 40)], [91, 97]]) {
      const shape = h.headShape('nchw', 1, 3, C, H, W);
      cases.push([`${name}: ${sd} student, ${td} teacher ${JSON.stringify(shape)}`, { sd, td, layout: 'nchw', C, shape, extra }]);
    }
  });
  test.each(cases)('%s', (_id, c) => {
    expectInPlaceEqualsWidened(r, c, { numClasses: c.C, layout: c.layout, ...c.extra }, true);
  });
});

// The variant and anchor-free kernels read an fp32 student (and write its
// gradient) in place when only the teacher is 16-bit (native/core/fused_cpu.cpp
// MixedSource): the gradient must be that of the fp32 call on the teacher
// rounded to its dtype, bit for bit, also where a plane spans several units
// (40 x 40 = 1,600 cells: units of 1,024 and 576).
describe('an fp32 student with a 16-bit teacher in the variant and anchor-free kernels (nchw)', () => {
  const round = { float16: (v) => h.fromHalf(h.toHalf(v)), bfloat16: (v) => h.fromBf16(h.toBf16(v)) };
  const cases = [
    ['anchor, clsTarget kl', [2, 3 * 9, 40, 40], { numClasses: 4, clsTarget: 'kl' }],
    ['anchor, preset paper + fmNms', [1, 3 * 9, 40, 40], { numClasses: 4, preset: 'paper', fmNms: true }],
    ['anchor-free, regMax 16', [2, 64 + 5, 40, 40], { numClasses: 5, head: 'anchorFree' }],
    ['anchor-free, regMax 4, clsTarget bce, grad false', [1, 16 + 3, 40, 40], { numClasses: 3, head: 'anchorFree', regMax: 4, clsTarget: 'bce', grad: false }],
    // Box values as 'logit' runs: their teacher channels widened on their own.
    ['anchor-free, regMax 1, clsTarget kl', [2, 4 + 3, 40, 40], { numClasses: 3, head: 'anchorFree', regMax: 1, clsTarget: 'kl' }],
  ];
  for (const dtype of ['float16', 'bfloat16']) {
    test.each(cases)(`%s, ${dtype} teacher`, (_name, shape, opts) => {
      const r = h.rng(shape[1] * 7 + shape[0]);
      const n = h.numel(shape);
      const student = [{ data: Float32Array.from({ length: n }, () => 3 * r.randn()), shape }];
      const t = Float32Array.from({ length: n }, () => 3 * r.randn());
      const mixed = distillationLoss(student, [{ data: Uint16Array.from(t, h.encode16[dtype]), shape, dtype }], opts);
      const plain = distillationLoss(student, [{ data: Float32Array.from(t, round[dtype]), shape }], opts);
      // The loss within summation order (16-bit heads run in units of 1,024
      // cells in nchw, fp32 ones in units of 4,096), every gradient bit equal.
      expect(Math.abs(mixed.loss - plain.loss)).toBeLessThanOrEqual(1e-12 * Math.abs(plain.loss));
      if (opts.grad === false) expect(mixed.grads).toBeNull();
      else expect(h.sameBits(mixed.grads[0], plain.grads[0])).toBe(true);
    });
  }
  // Three scales of different plane sizes in one call at 2 threads: the
  // teacher's buffer (the same lines for every unit of a plane, whatever its
  // offset) serves planes of 6,400 cells (seven units, the last of 256),
  // 1,600 and 400, each thread's units in turn.
  test('anchor-free YOLOv8-shaped scales 80, 40 and 20 with an fp16 teacher, 2 threads', () => {
    const r = h.rng(0x80f16);
    const shapes = [80, 40, 20].map((g) => [2, 64 + 3, g, g]);
    const student = shapes.map((shape) => ({ data: Float32Array.from({ length: h.numel(shape) }, () => 3 * r.randn()), shape }));
    const t = shapes.map((shape) => Float32Array.from({ length: h.numel(shape) }, () => 3 * r.randn()));
    const opts = { numClasses: 3, head: 'anchorFree', threads: 2 };
    const mixed = distillationLoss(student, t.map((x, k) => ({ data: Uint16Array.from(x, h.encode16.float16), shape: shapes[k], dtype: 'float16' })), opts);
    const plain = distillationLoss(student, t.map((x, k) => ({ data: Float32Array.from(x, round.float16), shape: shapes[k] })), opts);
    expect(Math.abs(mixed.loss - plain.loss)).toBeLessThanOrEqual(1e-12 * Math.abs(plain.loss));
    shapes.forEach((_s, k) => expect(h.sameBits(mixed.grads[k], plain.grads[k])).toBe(true));
  });
});
