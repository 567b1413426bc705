'use strict';
// Agreement with an independent PyTorch implementation of docs/DESIGN.md §1
// (test/reference/torch_reference.py, run by Debian's /usr/bin/python3), on
// random configurations: loss, terms, per-scale terms and every gradient element.
const h = require('./helpers');

const torch = h.torchAvailable();
if (!torch.ok) {
  if (process.env.CI) throw new Error(`CI needs the PyTorch reference: ${torch.reason}`);
  console.warn(`PyTorch reference tests skipped: ${torch.reason}`);
}
const maybe = torch.ok ? describe : describe.skip;

// docs/DESIGN.md §2 tolerances for fp32 inputs.
const LOSS_RTOL = 1e-5;
const GRAD_ATOL = 1e-6;
const GRAD_RTOL = 1e-5;

/** 40 configurations that together cover every required range. */
function makeCases() {
  const r = h.rng(0x5eed);
  const classes = [1, 2, 3, 5, 8, 13, 20, 37, 64, 80, 90];
  const cases = [];
  for (let i = 0; i < 40; i++) {
    const layout = ['nchw', 'nahwc', 'nhwc'][i % 3];
    const S = 1 + (i % 4);
    const A = 1 + (Math.floor(i / 2) % 5);
    const C = i < classes.length ? classes[i] : r.pick(classes);
    const B = 1 + (Math.floor(i / 3) % 4);
    const shapes = [];
    for (let s = 0; s < S; s++) {
      let H = r.int(1, 7);
      let W = r.int(1, 9);
      if (i % 5 === 0 && s === S - 1) H = W = 1; // a 1x1 grid
      if (i % 7 === 0 && s === 0) { H = 2; W = 5; } // non-square
      shapes.push(h.headShape(layout, B, A, C, H, W));
    }
    const c = { id: `case${i}`, layout, numAnchors: A, numClasses: C, shapes };
    if (i % 3 === 1) c.lambda = r.pick([0.5, 1, 3.25, 25]);
    if (i % 4 === 2) c.weights = { box: r.pick([0, 0.05, 2]), obj: r.pick([1, 0.7, 4]), cls: r.pick([0.5, 1.5, 0]) };
    if (i % 5 === 3) c.gradScale = r.pick([0.5, 128, 65536, 1 / 3]);
    // Logit spread: mostly moderate, some up to +-30 (saturated teacher objectness).
    const spread = i % 4 === 3 ? 15 : r.pick([0.5, 2, 4]);
    Object.assign(c, h.makeHeads(r, shapes, spread));
    cases.push(c);
  }
  return cases;
}

maybe('agreement with the PyTorch reference', () => {
  const cases = makeCases();
  let expected;
  beforeAll(() => {
    expected = h.runTorchReference(cases);
  });

  test('the cases cover the required ranges', () => {
    const seen = (f) => new Set(cases.map(f));
    expect(seen((c) => c.layout)).toEqual(new Set(['nchw', 'nahwc', 'nhwc']));
    expect(seen((c) => c.shapes.length)).toEqual(new Set([1, 2, 3, 4]));
    expect(seen((c) => c.numAnchors)).toEqual(new Set([1, 2, 3, 4, 5]));
    expect(seen((c) => c.shapes[0][0])).toEqual(new Set([1, 2, 3, 4]));
    const Cs = [...seen((c) => c.numClasses)];
    expect(Math.min(...Cs)).toBe(1);
    expect(Math.max(...Cs)).toBe(90);
    const grids = cases.flatMap((c) => c.shapes.map((s) => (c.layout === 'nchw' ? [s[2], s[3]] : [s[2], s[3]])));
    expect(grids.some(([H, W]) => H === 1 && W === 1)).toBe(true);
    expect(grids.some(([H, W]) => H !== W)).toBe(true);
    const maxAbs = Math.max(...cases.flatMap((c) => c.teacher.map((t) => t.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0))));
    expect(maxAbs).toBe(30);
    expect(cases.some((c) => c.lambda !== undefined)).toBe(true);
    expect(cases.some((c) => c.weights !== undefined)).toBe(true);
    expect(cases.some((c) => c.gradScale !== undefined)).toBe(true);
  });

  for (const impl of ['fused', 'reference']) {
    test.each(makeCases().map((c) => [c.id, c]))(`${impl}: %s matches PyTorch`, (id) => {
      const c = cases.find((x) => x.id === id);
      const want = expected[id];
      const got = h.pkg.distillationLoss(c.student, c.teacher, { ...h.optionsOf(c), impl });
      h.expectRelClose(got.loss, want.loss, LOSS_RTOL, `${id} loss`, 1e-12);
      for (const t of ['box', 'obj', 'cls']) {
        h.expectRelClose(got[t], want[t], LOSS_RTOL, `${id} ${t}`, 1e-12);
      }
      expect(got.scales).toHaveLength(c.shapes.length);
      got.scales.forEach((s, k) => {
        for (const t of ['box', 'obj', 'cls']) {
          h.expectRelClose(s[t], want.scales[k][t], LOSS_RTOL, `${id} scale ${k} ${t}`, 1e-12);
        }
      });
      expect(got.grads).toHaveLength(c.shapes.length);
      got.grads.forEach((g, k) => {
        expect(Object.prototype.toString.call(g)).toBe('[object Float32Array]');
        h.expectArraysClose(g, want.grads[k], GRAD_ATOL, GRAD_RTOL, `${id} grad of scale ${k}`);
      });
    });
  }

  test('the comparison can fail: a perturbed teacher does not match', () => {
    const c = cases[0];
    const teacher = c.teacher.map((t) => ({ data: t.data.map((v) => v + 0.01), shape: t.shape }));
    const got = h.pkg.distillationLoss(c.student, teacher, h.optionsOf(c));
    expect(() => h.expectRelClose(got.loss, expected[c.id].loss, LOSS_RTOL, 'perturbed')).toThrow();
  });
});
