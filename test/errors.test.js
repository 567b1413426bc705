'use strict';
// Malformed calls: each gives the documented error class and stable code, with a
// message naming the scale, the tensor, what was expected and what came; the
// process goes on working afterwards.
const h = require('./helpers');

const { distillationLoss, distillationLossAsync, Tensor } = h.pkg;

const C = 2;
const A = 3;
const shape = [1, A * (5 + C), 2, 3]; // nchw
const n = h.numel(shape);
const r = h.rng(31);
const good = () => ({ data: Float32Array.from({ length: n }, () => r.randn()), shape });
const S = [good(), good()];
const T = [good(), good()];
const opts = { numClasses: C };
const call = (student, teacher, options) => () => distillationLoss(student, teacher, options);
const withOpt = (extra) => call(S, T, { ...opts, ...extra });
const withHead = (k, head, which = 'student') =>
  which === 'student' ? call([S[0], head].slice(0, 2).map((x, i) => (i === k ? head : S[i])), T, opts)
                      : call(S, T.map((x, i) => (i === k ? head : x)), opts);

function detached() {
  const data = new Float32Array(n);
  structuredClone(data.buffer, { transfer: [data.buffer] });
  return { data, shape };
}
function disposedTensor() {
  const t = Tensor.fromFloat32Array(new Float32Array(n), shape);
  t.dispose();
  return t;
}

// [description, thunk, error class, code, message pattern]
const cases = [
  ['student is not an array', call(42, T, opts), TypeError, 'ERR_INVALID_ARG_TYPE', /student: expected an array.*got number 42/],
  ['teacher is an object', call(S, { a: 1 }, opts), TypeError, 'ERR_INVALID_ARG_TYPE', /teacher: expected an array/],
  ['options missing', call(S, T, undefined), TypeError, 'ERR_INVALID_ARG_TYPE', /options: expected an object.*got undefined/],
  ['numClasses missing', call(S, T, {}), TypeError, 'ERR_INVALID_ARG_TYPE', /numClasses is required/],
  ['numClasses 0', withOpt({ numClasses: 0 }), RangeError, 'ERR_INVALID_OPTION', /numClasses.*got number 0/],
  ['numClasses 2.5', withOpt({ numClasses: 2.5 }), RangeError, 'ERR_INVALID_OPTION', /numClasses.*integer/],
  ['numClasses as a string', withOpt({ numClasses: '2' }), TypeError, 'ERR_INVALID_ARG_TYPE', /numClasses.*got string "2"/],
  ['numAnchors negative', withOpt({ numAnchors: -1 }), RangeError, 'ERR_INVALID_OPTION', /numAnchors/],
  ['unknown layout', withOpt({ layout: 'nchwc' }), RangeError, 'ERR_INVALID_OPTION', /layout.*'nchw' \| 'nahwc' \| 'nhwc'.*"nchwc"/],
  ['nhwc: wrong channel count', call([{ data: new Float32Array(40), shape: [1, 2, 1, 20] }], [{ data: new Float32Array(40), shape: [1, 2, 1, 20] }], { numClasses: 2, layout: 'nhwc' }), RangeError, 'ERR_CHANNEL_MISMATCH', /expected 21 channels .* got 20 in dim 3/],
  ['nhwc: wrong rank', call([{ data: new Float32Array(42), shape: [1, 3, 2, 1, 7] }], [{ data: new Float32Array(42), shape: [1, 3, 2, 1, 7] }], { numClasses: 2, layout: 'nhwc' }), RangeError, 'ERR_INVALID_SHAPE', /4-D nhwc tensor \[B, H, W, A\*\(5\+C\)\]/],
  ['lambda NaN', withOpt({ lambda: NaN }), RangeError, 'ERR_INVALID_OPTION', /lambda/],
  ['lambda negative', withOpt({ lambda: -1 }), RangeError, 'ERR_INVALID_OPTION', /lambda/],
  ['weights.box a string', withOpt({ weights: { box: 'x' } }), TypeError, 'ERR_INVALID_ARG_TYPE', /weights\.box/],
  ['weights a number', withOpt({ weights: 5 }), TypeError, 'ERR_INVALID_ARG_TYPE', /weights/],
  ['gradScale Infinity', withOpt({ gradScale: Infinity }), RangeError, 'ERR_INVALID_OPTION', /gradScale/],
  ['grad a string', withOpt({ grad: 'yes' }), TypeError, 'ERR_INVALID_ARG_TYPE', /grad: expected a boolean/],
  ['checkFinite a number', withOpt({ checkFinite: 1 }), TypeError, 'ERR_INVALID_ARG_TYPE', /checkFinite/],
  ['unknown impl', withOpt({ impl: 'fast' }), RangeError, 'ERR_INVALID_OPTION', /impl/],
  ['threads negative', withOpt({ threads: -2 }), RangeError, 'ERR_INVALID_OPTION', /threads/],
  ['no scales', call([], [], opts), RangeError, 'ERR_SCALE_COUNT', /at least one scale/],
  ['scale counts differ', call(S, [T[0]], opts), RangeError, 'ERR_SCALE_COUNT', /teacher heads.*\(2\), got 1/],
  ['data is a Float64Array', withHead(1, { data: new Float64Array(n), shape }), TypeError, 'ERR_INVALID_ARG_TYPE', /scale 1, student\.data: expected a Float32Array, or a Uint16Array with dtype 'float16' \| 'bfloat16', got Float64Array/],
  ['data is a plain array', withHead(0, { data: [1, 2, 3], shape }, 'teacher'), TypeError, 'ERR_INVALID_ARG_TYPE', /scale 0, teacher\.data.*got Array/],
  ['data too short', withHead(1, { data: new Float32Array(n - 1), shape }), RangeError, 'ERR_DATA_LENGTH', /scale 1, student: data has 125 elements but shape \[1, 21, 2, 3\] needs 126/],
  ['a zero dimension', withHead(0, { data: new Float32Array(0), shape: [1, 21, 0, 3] }), RangeError, 'ERR_INVALID_SHAPE', /scale 0, student\.shape\[2\]: expected a positive integer, got number 0/],
  ['a negative dimension', withHead(0, { data: new Float32Array(n), shape: [1, 21, -2, -3] }), RangeError, 'ERR_INVALID_SHAPE', /shape\[2\]/],
  ['a fractional dimension', withHead(0, { data: new Float32Array(n), shape: [1, 21, 2.5, 3] }), RangeError, 'ERR_INVALID_SHAPE', /2\.5/],
  ['shape is a string', withHead(0, { data: new Float32Array(n), shape: '1,21,2,3' }), TypeError, 'ERR_INVALID_ARG_TYPE', /shape: expected an array/],
  ['rank 3 for nchw', withHead(0, { data: new Float32Array(n), shape: [21, 2, 3] }), RangeError, 'ERR_INVALID_SHAPE', /scale 0, student: expected a 4-D nchw tensor.*got shape \[21, 2, 3\]/],
  ['channels do not match A and C', call(S, T, { numClasses: 3 }), RangeError, 'ERR_CHANNEL_MISMATCH', /scale 0, student: expected 24 channels \(A\*\(5\+C\) = 3\*\(5\+3\)\), got 21/],
  ['numAnchors does not divide', call(S, T, { numClasses: C, numAnchors: 2 }), RangeError, 'ERR_CHANNEL_MISMATCH', /expected 14 channels/],
  ['nahwc: wrong values per anchor', call([{ data: new Float32Array(36), shape: [1, 3, 2, 1, 6] }], [{ data: new Float32Array(36), shape: [1, 3, 2, 1, 6] }], { numClasses: C, layout: 'nahwc' }), RangeError, 'ERR_CHANNEL_MISMATCH', /5\+C = 7 values per anchor in dim 4, got 6/],
  ['nahwc: wrong anchor count', call([{ data: new Float32Array(28), shape: [1, 2, 2, 1, 7] }], [{ data: new Float32Array(28), shape: [1, 2, 2, 1, 7] }], { numClasses: C, layout: 'nahwc' }), RangeError, 'ERR_CHANNEL_MISMATCH', /A = 3 anchors in dim 1, got 2/],
  ['student vs teacher grids differ', call([S[0]], [{ data: new Float32Array(2 * n), shape: [1, 21, 4, 3] }], opts), RangeError, 'ERR_SHAPE_MISMATCH', /scale 0, teacher: expected the student's shape \[1, 21, 2, 3\], got \[1, 21, 4, 3\]/],
  ['a detached buffer', withHead(1, detached()), TypeError, 'ERR_DETACHED_BUFFER', /scale 1, student\.data.*detached/],
  ['a disposed Tensor', withHead(0, disposedTensor(), 'teacher'), TypeError, 'ERR_TENSOR_DISPOSED', /scale 0, teacher: the Tensor has been disposed/],
  ['a null head', withHead(1, null), TypeError, 'ERR_INVALID_ARG_TYPE', /scale 1, student: expected a head.*got null/],
  ['a typed array as a head', withHead(0, new Float32Array(n)), TypeError, 'ERR_INVALID_ARG_TYPE', /got Float32Array/],
  ['gradOut count', withOpt({ gradOut: [new Float32Array(n)] }), RangeError, 'ERR_GRAD_OUT', /one entry per scale \(2\), got 1/],
  ['gradOut length', withOpt({ gradOut: [new Float32Array(n), new Float32Array(n + 1)] }), RangeError, 'ERR_GRAD_OUT', /scale 1, gradOut: expected a Float32Array of 126 elements.*got 127/],
  ['gradOut kind', withOpt({ gradOut: [new Float64Array(n), null] }), TypeError, 'ERR_INVALID_ARG_TYPE', /scale 0, gradOut: expected a Float32Array \(a Uint16Array for a float16 or bfloat16 student\) or a Tensor, got Float64Array/],
  ['gradOut is not an array', withOpt({ gradOut: new Float32Array(n) }), TypeError, 'ERR_INVALID_ARG_TYPE', /gradOut: expected an array/],
  ['gradOut aliases the student', withOpt({ gradOut: [null, S[1].data] }), RangeError, 'ERR_BUFFER_OVERLAP', /scale 1, gradOut: its memory overlaps the student head of scale 1/],
  ['gradOut scales share memory', () => { const b = new Float32Array(n); return distillationLoss(S, T, { ...opts, gradOut: [b, b] }); }, RangeError, 'ERR_BUFFER_OVERLAP', /gradOut of scale 0/],
  ['checkFinite and a NaN', () => { const t = good(); t.data[17] = NaN; return distillationLoss(S, [T[0], t], { ...opts, checkFinite: true }); }, RangeError, 'ERR_NON_FINITE', /scale 1, teacher: non-finite value nan at flat index 17 \(b=0, a=0, y=1, x=2, k=2\)/i],
  ['checkFinite and an Inf (nahwc)', () => { const d = new Float32Array(42); d[40] = -Infinity; const h5 = { data: d, shape: [1, 3, 2, 1, 7] }; return distillationLoss([h5], [{ data: new Float32Array(42), shape: h5.shape }], { numClasses: C, layout: 'nahwc', checkFinite: true }); }, RangeError, 'ERR_NON_FINITE', /scale 0, student: non-finite value -inf at flat index 40 \(b=0, a=2, y=1, x=0, k=5\)/],
  ['Tensor on cuda in a CPU build', () => Tensor.fromFloat32Array(new Float32Array(4), [4], { device: 'cuda' }), Error, 'ERR_NO_CUDA', /cuda.*CPU-only LibTorch|no CUDA device/],
  ['Tensor with an unknown dtype', () => Tensor.fromFloat32Array(new Float32Array(4), [4], { dtype: 'int8' }), RangeError, 'ERR_INVALID_OPTION', /dtype.*"int8"/],
  ['Tensor with a bad device string', () => Tensor.fromFloat32Array(new Float32Array(4), [4], { device: 'gpu' }), RangeError, 'ERR_INVALID_OPTION', /device/],
  ['Tensor data/shape mismatch', () => Tensor.fromFloat32Array(new Float32Array(4), [5]), RangeError, 'ERR_DATA_LENGTH', /4 elements but the shape \[5\] needs 5/],
  // (student and teacher dtypes may differ: test/half.test.js)
  ['a float16 Tensor gradOut for a float32 student', () => {
    const s = Tensor.fromFloat32Array(S[0].data, shape);
    const t = Tensor.fromFloat32Array(T[0].data, shape, { dtype: 'float16' });
    const g = Tensor.fromFloat32Array(new Float32Array(S[0].data.length), shape, { dtype: 'float16' });
    return distillationLoss([s], [t], { ...opts, gradOut: [g] });
  }, TypeError, 'ERR_GRAD_OUT', /scale 0, gradOut: expected dtype float32 on cpu, got float16 on cpu/],
];

describe('malformed calls give coded errors', () => {
  test(`there are at least 25 distinct malformed calls (${cases.length})`, () => {
    expect(cases.length).toBeGreaterThanOrEqual(25);
  });

  test.each(cases)('%s', (_name, thunk, Cls, code, pattern) => {
    let err;
    try {
      thunk();
    } catch (e) {
      err = e;
    }
    expect(err).toBeDefined();
    expect(err.constructor.name).toBe(Cls.name); // cross-realm safe instanceof
    expect(err.code).toBe(code);
    expect(err.message).toMatch(pattern);
  });

  test('async calls reject with the same codes', async () => {
    await expect(distillationLossAsync(S, [T[0]], opts)).rejects.toMatchObject({ code: 'ERR_SCALE_COUNT' });
    await expect(distillationLossAsync(S, T, { numClasses: 3 })).rejects.toMatchObject({ code: 'ERR_CHANNEL_MISMATCH' });
    await expect(distillationLossAsync(42, T, opts)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    const t = good();
    t.data[3] = Infinity;
    await expect(distillationLossAsync([t, S[1]], T, { ...opts, checkFinite: true })).rejects.toMatchObject({ code: 'ERR_NON_FINITE' });
  });

  test('the Tensor constructor is not public', () => {
    const Ctor = Object.getPrototypeOf(Tensor.fromFloat32Array(new Float32Array(1), [1])).constructor;
    expect(() => new Ctor()).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new Ctor({})).toThrow(TypeError);
  });

  test('the process goes on working after every malformed call', async () => {
    const before = distillationLoss(S, T, opts);
    for (const [, thunk] of cases) {
      try {
        thunk();
      } catch {
        /* expected */
      }
    }
    const after = distillationLoss(S, T, opts);
    const afterAsync = await distillationLossAsync(S, T, opts);
    expect(after.loss).toBe(before.loss);
    expect(afterAsync.loss).toBe(before.loss);
  });

  test('NaN and Inf propagate without checkFinite, as in PyTorch', () => {
    const s = good();
    s.data[0] = NaN;
    const res = distillationLoss([s, S[1]], T, opts);
    expect(Number.isNaN(res.loss)).toBe(true);
    expect(Number.isNaN(res.grads[0][0])).toBe(true);
    expect(Number.isFinite(res.grads[1][0])).toBe(true);
  });
});
