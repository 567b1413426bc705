'use strict';
// How the options reach the addon: the facade reads the options object's values
// in JavaScript, in the addon's order, and passes them after the object
// (lib/index.ts callNative; native/addon/convert.cpp YD_OPTION_KEYS). These
// tests check that the facade and the addon agree on that order, that every
// option is read exactly once and in it, and that the addon reading the
// object itself (a direct call) gives the same results and the same errors.
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
