'use strict';
// How the options and heads reach the addon: the facade reads the options
// object's values, and every head's data, dtype and shape, in JavaScript, in
// the addon's order, and passes them after the object (lib/index.ts
// callNative; native/addon/convert.cpp YD_OPTION_KEYS, read_head_record).
// These tests check that the facade and the addon agree on that order, that
// every option and head property is read exactly once and in it, and that the
// addon reading the objects itself (a direct call) gives the same results and
// the same errors.
const h = require('./helpers');
const { native, OPTION_KEYS } = require('../dist/binding');

const { distillationLoss, distillationLossAsync } = h.pkg;

const C = 2;
const A = 3;
const shape = [1, A * (5 + C), 2, 3];
const n = h.numel(shape);
const r = h.rng(7);
const head = () => ({ data: Float32Array.from({ length: n }, () => r.randn()), shape });
const S = [head(), head()];
const T = [head(), head()];

// The result of a call, or the error it threw as { name, code, message }.
function outcome(thunk) {
  try {
    const res = thunk();
    return { ok: res };
  } catch (e) {
    return { name: e.name, code: e.code, message: e.message };
  }
}

test("the facade's option keys are the addon's, in its order", () => {
  expect(Array.isArray(native.optionKeys)).toBe(true);
  expect([...OPTION_KEYS]).toEqual(native.optionKeys);
});

test('each option is read once, in the order of the keys (sync and async)', async () => {
  for (const fn of [distillationLoss, distillationLossAsync]) {
    const reads = [];
    const target = { numClasses: C, lambda: 2, fmNms: true, gradOut: S.map((s) => new Float32Array(s.data.length)) };
    const options = new Proxy(target, {
      get(t, key, recv) {
        if (typeof key === 'string') reads.push(key);
        return Reflect.get(t, key, recv);
      },
    });
    await fn(S, T, options);
    // The facade reads gradOut once more afterwards, to hand back the caller's
    // own Tensor objects (fromNative).
    expect(reads.slice(0, OPTION_KEYS.length)).toEqual([...OPTION_KEYS]);
    expect(reads.slice(OPTION_KEYS.length).every((k) => k === 'gradOut')).toBe(true);
  }
});

test('options read by the facade and by the addon itself give the same bits', () => {
  const cases = [
    { numClasses: C },
    { numClasses: C, preset: 'paper', fmNms: true },
    { numClasses: C, weighted: { obj: false }, weights: { box: 2, cls: 0.5 }, lambda: 3, gradScale: 0.25 },
    { numClasses: C, clsTarget: 'kl', temperature: 3, layout: 'nchw', threads: 1 },
    Object.create({ numClasses: C, objTarget: 'bce' }), // inherited options are read as before
  ];
  for (const options of cases) {
    const viaFacade = distillationLoss(S, T, options);
    const [terms, grads] = native.distillationLoss(S, T, options); // the object alone
    expect(Array.from(terms)).toEqual([viaFacade.loss, viaFacade.box, viaFacade.obj, viaFacade.cls,
      ...viaFacade.scales.flatMap((s) => [s.box, s.obj, s.cls])]);
    grads.forEach((g, s) => expect(h.sameBits(g, viaFacade.grads[s])).toBe(true));
  }
});

test('a bad option gives the same error through the facade and from the addon reading the object', () => {
  const bad = [
    {},
    { numClasses: '2' },
    { numClasses: 2.5 },
    { numClasses: C, preset: 'yolov9' },
    { numClasses: C, numAnchors: 'three' },
    { numClasses: C, head: 7 },
    { numClasses: C, regMax: 'x' },
    { numClasses: C, boxTemperature: '1' },
    { numClasses: C, layout: 'nchwc' },
    { numClasses: C, boxTarget: 1 },
    { numClasses: C, objTarget: 'kl' },
    { numClasses: C, clsTarget: 'softmax' },
    { numClasses: C, weighted: true },
    { numClasses: C, weighted: { box: 1 } },
    { numClasses: C, temperature: 'hot' },
    { numClasses: C, fmNms: 1 },
    { numClasses: C, lambda: '10' },
    { numClasses: C, weights: [] },
    { numClasses: C, weights: { obj: 'x' } },
    { numClasses: C, grad: 'yes' },
    { numClasses: C, gradScale: null },
    { numClasses: C, checkFinite: 0 },
    { numClasses: C, impl: 'fast' },
    { numClasses: C, threads: 1.5 },
    { numClasses: C, device: 0 },
    { numClasses: C, gradOut: 'x' },
    { numClasses: C, gradOut: [new Float32Array(1)] },
  ];
  for (const options of bad) {
    const viaFacade = outcome(() => distillationLoss(S, T, options));
    const direct = outcome(() => native.distillationLoss(S, T, options));
    expect(viaFacade.ok).toBeUndefined();
    expect(viaFacade.code).toMatch(/^ERR_/);
    expect(direct).toEqual(viaFacade);
  }
});

test('a nested option is named by its path in errors', () => {
  expect(() => distillationLoss(S, T, { numClasses: C, weighted: { cls: 'no' } })).toThrow(
    expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(/^options\.weighted\.cls: expected a boolean, got string "no"/) }),
  );
  expect(() => distillationLoss(S, T, { numClasses: C, weights: { box: 'x' } })).toThrow(
    expect.objectContaining({ message: expect.stringMatching(/^options\.weights\.box: expected a number/) }),
  );
});

test('options that are not a plain object go to the addon as they are', () => {
  for (const options of [null, undefined, 3, 'numClasses', [C], () => C]) {
    expect(() => distillationLoss(S, T, options)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(/^options: expected an object/) }),
    );
  }
});

// ---- heads: the facade reads every head's data, dtype and shape (and
// gradOut's entries) and passes them as arguments (lib/index.ts pushHead;
// native/addon/convert.cpp read_head_record). The addon reading the lists
// itself must give the same bits and the same errors.

const { Tensor } = h.pkg;

// A direct call's result in the facade's form, for comparison.
function directOutcome(student, teacher, options) {
  const nat = (x) => (x instanceof Tensor ? Tensor._native(x) : x);
  const opts = options.gradOut ? { ...options, gradOut: options.gradOut.map(nat) } : options;
  const o = outcome(() => native.distillationLoss(student.map(nat), teacher.map(nat), opts));
  if (!o.ok) return o;
  const [terms, grads] = o.ok;
  return { ok: { terms: Array.from(terms), grads } };
}
function facadeOutcome(student, teacher, options) {
  const o = outcome(() => distillationLoss(student, teacher, options));
  if (!o.ok) return o;
  const v = o.ok;
  return { ok: { terms: [v.loss, v.box, v.obj, v.cls, ...v.scales.flatMap((s) => [s.box, s.obj, s.cls])], grads: v.grads } };
}
// A gradient's values: an array as it is, a Tensor's (or a native handle's) copied out.
function valuesOfGrad(g) {
  return ArrayBuffer.isView(g) ? g : g.toFloat32Array();
}

test('heads read by the facade and by the addon itself give the same bits', () => {
  const half = (x) => h.headOfDtype(x, 'float16');
  const bf = (x) => h.headOfDtype(x, 'bfloat16');
  const cases = [
    [S, T, { numClasses: C }],
    [S, T, { numClasses: C, grad: false }],
    [S.map(half), T.map(bf), { numClasses: C }],
    [S, T.map(half), { numClasses: C, clsTarget: 'kl' }],
    [S.map((x) => Tensor.fromFloat32Array(x.data, x.shape)), T, { numClasses: C }],
    [S, T.map((x) => Tensor.fromFloat32Array(x.data, x.shape)), { numClasses: C, gradOut: [null, new Float32Array(n)] }],
    [S, T, { numClasses: C, gradOut: [Tensor.fromFloat32Array(new Float32Array(n), shape), undefined] }],
    [[{ data: S[0].data, shape: [...shape] }], [{ data: T[0].data, shape: [...shape] }], { numClasses: C, layout: 'nchw' }],
    [[{ data: S[0].data, shape: [1, A, 2, 3, 5 + C] }], [{ data: T[0].data, shape: [1, A, 2, 3, 5 + C] }], { numClasses: C, layout: 'nahwc' }],
  ];
  for (const [st, te, options] of cases) {
    const viaFacade = facadeOutcome(st, te, options);
    const direct = directOutcome(st, te, options);
    if (!viaFacade.ok) throw new Error(`${viaFacade.code}: ${viaFacade.message}`);
    if (!direct.ok) throw new Error(`direct: ${direct.code}: ${direct.message}`);
    expect(viaFacade.ok.terms).toEqual(direct.ok.terms);
    if (options.grad === false) {
      expect(viaFacade.ok.grads).toBeNull();
      expect(direct.ok.grads).toBeNull();
      continue;
    }
    expect(viaFacade.ok.grads.length).toBe(direct.ok.grads.length);
    viaFacade.ok.grads.forEach((g, s) => expect(h.sameBits(valuesOfGrad(g), valuesOfGrad(direct.ok.grads[s]))).toBe(true));
  }
});

test('a bad head gives the same error through the facade and from the addon reading the lists', () => {
  const f = (k) => new Float32Array(k);
  const detached = () => {
    const d = f(n);
    structuredClone(d.buffer, { transfer: [d.buffer] });
    return d;
  };
  const withStudent = (head) => [[head, S[1]], T];
  const bad = [
    ['x', T],
    [S, 7],
    [[], []],
    [[S[0]], T],
    [S, [T[0], T[1], T[0]]],
    withStudent(null),
    withStudent(undefined),
    withStudent(3),
    withStudent('head'),
    withStudent([S[0].data, shape]),
    withStudent(S[0].data),
    withStudent({}),
    withStudent({ shape }),
    withStudent({ data: S[0].data }),
    withStudent({ data: S[0].data, shape: 'x' }),
    withStudent({ data: S[0].data, shape: [] }),
    withStudent({ data: S[0].data, shape: [1, 1, 1, 1, 1, 1, 1, 1, n] }),
    withStudent({ data: S[0].data, shape: [1, 0, 2, 3] }),
    withStudent({ data: S[0].data, shape: [1, A * (5 + C), 2.5, 3] }),
    withStudent({ data: S[0].data, shape: [1, '21', 2, 3] }),
    withStudent({ data: S[0].data, shape: [1, NaN, 2, 3] }),
    withStudent({ data: S[0].data, shape: [-1, A * (5 + C), 2, 3] }),
    withStudent({ data: S[0].data, shape: [2 ** 53, A * (5 + C), 2, 3] }),
    withStudent({ data: S[0].data, shape: [2 ** 40, 2 ** 40, 2, 3] }),
    withStudent({ data: S[0].data, shape: [1, A * (5 + C), 2, 4] }),
    withStudent({ data: S[0].data, shape: [1, A * (5 + C), 3, 2] }),
    withStudent({ data: new Int8Array(n), shape }),
    withStudent({ data: new Float64Array(n), shape }),
    withStudent({ data: new Uint16Array(n), shape }),
    withStudent({ data: new Uint16Array(n), shape, dtype: 'float64' }),
    withStudent({ data: new Uint16Array(n), shape, dtype: 3 }),
    withStudent({ data: new Uint16Array(n), shape, dtype: 'float32' }),
    withStudent({ data: S[0].data, shape, dtype: 'float16' }),
    withStudent({ data: f(n - 1), shape }),
    withStudent({ data: detached(), shape }),
    withStudent(Object.create({ data: S[0].data, shape })), // inherited: read as before
    [[S[0], , ], T], // eslint-disable-line no-sparse-arrays
  ];
  for (const [st, te] of bad) {
    for (const options of [{ numClasses: C }, { numClasses: C, gradOut: [f(n), f(n)] }]) {
      const viaFacade = facadeOutcome(st, te, options);
      const direct = Array.isArray(st) && Array.isArray(te) ? directOutcome(st, te, options) : outcome(() => native.distillationLoss(st, te, options));
      if (viaFacade.ok) {
        // Only the inherited head is fine.
        expect(direct.ok).toBeDefined();
        expect(viaFacade.ok.terms).toEqual(direct.ok.terms);
        continue;
      }
      expect(viaFacade.code).toMatch(/^ERR_/);
      expect(direct).toEqual(viaFacade);
    }
  }
  const badGradOut = [[f(n)], [f(n), 'x'], [f(n), new Uint16Array(n)], [f(n), f(n - 1)], [f(n), detached()], [f(n), Tensor.fromFloat32Array(f(n - 1), [n - 1])]];
  for (const gradOut of badGradOut) {
    const viaFacade = facadeOutcome(S, T, { numClasses: C, gradOut });
    expect(viaFacade.code).toMatch(/^ERR_/);
    expect(directOutcome(S, T, { numClasses: C, gradOut })).toEqual(viaFacade);
  }
});

test("each head's data, dtype and shape, and each dimension, are read once, in the addon's order (sync and async)", async () => {
  for (const fn of [distillationLoss, distillationLossAsync]) {
    const reads = [];
    const watch = (x, name) => new Proxy(x, {
      get(t, key, recv) {
        if (typeof key === 'string' && key !== 'length') reads.push(`${name}.${key}`);
        return Reflect.get(t, key, recv);
      },
    });
    // (A Proxy of an array is no array to the addon: getters on the indices instead.)
    const watchedShape = (sh, name) => {
      const a = [...sh];
      sh.forEach((d, i) => Object.defineProperty(a, i, { get() { reads.push(`${name}.${i}`); return d; } }));
      return a;
    };
    const st = S.map((x, s) => watch({ data: x.data, shape: watchedShape(x.shape, `student${s}.shape`) }, `student${s}`));
    const te = T.map((x, s) => watch({ ...x }, `teacher${s}`));
    await fn(st, te, { numClasses: C });
    const dims = (s) => [0, 1, 2, 3].map((i) => `student${s}.shape.${i}`);
    expect(reads).toEqual([
      'student0.data', 'student0.dtype', 'student0.shape', ...dims(0),
      'student1.data', 'student1.dtype', 'student1.shape', ...dims(1),
      'teacher0.data', 'teacher0.dtype', 'teacher0.shape',
      'teacher1.data', 'teacher1.dtype', 'teacher1.shape',
    ]);
  }
});

test("a getter that calls the loss again while the facade reads a sync call's result leaves that result whole", () => {
  const plain = distillationLoss(S, T, { numClasses: C, gradOut: S.map((x) => Tensor.fromFloat32Array(new Float32Array(x.data.length), x.shape)) });
  const gradOut = S.map((x) => Tensor.fromFloat32Array(new Float32Array(x.data.length), x.shape));
  let reads = 0;
  const options = {
    numClasses: C,
    get gradOut() {
      // The first read is the facade's read of the options; later ones come
      // after the call (fromNative): a nested call then writes its own terms.
      if (reads++ > 0) distillationLoss(T, S, { numClasses: C, lambda: 7 });
      return gradOut;
    },
  };
  const r = distillationLoss(S, T, options);
  expect(reads).toBeGreaterThan(1);
  expect([r.loss, r.box, r.obj, r.cls]).toEqual([plain.loss, plain.box, plain.obj, plain.cls]);
  expect(r.scales).toEqual(plain.scales);
  expect(r.grads[0]).toBe(gradOut[0]);
});

test("the facade reads the lists' elements, then the options, then the heads, as the addon reads a direct call (sync and async)", async () => {
  for (const fn of [distillationLoss, distillationLossAsync]) {
    const reads = [];
    const watchedList = (heads, name) => {
      const a = [...heads];
      heads.forEach((x, i) => Object.defineProperty(a, i, { get() { reads.push(`${name}.${i}`); return x; } }));
      return a;
    };
    const watchedHead = (x, name) => new Proxy({ ...x }, {
      get(t, key, recv) {
        if (typeof key === 'string') reads.push(`${name}.${key}`);
        return Reflect.get(t, key, recv);
      },
    });
    const options = new Proxy({ numClasses: C }, {
      get(t, key, recv) {
        if (typeof key === 'string') reads.push(`options.${key}`);
        return Reflect.get(t, key, recv);
      },
    });
    await fn(watchedList(S.map((x, s) => watchedHead(x, `student${s}`)), 'student'),
      watchedList(T.map((x, s) => watchedHead(x, `teacher${s}`)), 'teacher'), options);
    const props = (name) => [`${name}.data`, `${name}.dtype`, `${name}.shape`];
    expect(reads).toEqual([
      'student.0', 'student.1', 'teacher.0', 'teacher.1',
      ...OPTION_KEYS.map((k) => `options.${k}`),
      ...props('student0'), ...props('student1'), ...props('teacher0'), ...props('teacher1'),
    ]);
  }
});
