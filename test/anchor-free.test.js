'use strict';
// Anchor-free heads (YOLOv8, YOLO11, YOLO26; docs/DESIGN.md §1b): per cell 4*regMax
// box-distribution logits then C class logits, weighted by the teacher's top
// class probability. Compared with the independent PyTorch implementation
// (test/reference/torch_reference.py, float64): loss, terms and every gradient
// element; finite differences of the box KL; determinism; coded errors.
const h = require('./helpers');

const { distillationLoss } = h.pkg;
const torch = h.torchAvailable();
const withTorch = torch.ok ? test : test.skip;
if (!torch.ok) console.log(`PyTorch comparisons skipped: ${torch.reason}`);

const shapeOf = (layout, B, R, C, H, W) => (layout === 'nchw' ? [B, 4 * R + C, H, W] : [B, H, W, 4 * R + C]);

function makeCases() {
  const r = h.rng(0xaf);
  const cases = [];
  const clsTargets = ['logit', 'prob', 'bce', 'kl'];
  for (let i = 0; i < 32; i++) {
    const layout = i % 2 ? 'nhwc' : 'nchw';
    const R = [16, 1, 17, 4][i % 4];
    const C = [1, 3, 7, 20][(i >> 2) % 4];
    const B = 1 + (i % 3 === 0 ? 1 : 0);
    const grids = i % 5 === 0 ? [[1, 1]] : [[r.int(1, 5), r.int(1, 6)], [1, 2]];
    const shapes = grids.map(([H, W]) => shapeOf(layout, B, R, C, H, W));
    const variant = { clsTarget: clsTargets[(i >> 1) % 4] };
    if (variant.clsTarget === 'kl') variant.temperature = [1, 2.5][i % 2];
    if (i % 3 === 1) variant.weighted = { box: i % 2 === 0, cls: false };
    if (i % 4 === 2) variant.fmNms = true;
    const c = { id: `af${i}`, layout, numClasses: C, numAnchors: 1, shapes, head: 'anchorFree', regMax: R, variant, compute: 'float64' };
    if (i % 6 === 5) c.boxTemperature = 2;
    if (i % 7 === 3) c.lambda = 2.5;
    if (i % 5 === 4) c.weights = { box: 0.5, cls: 3 };
    Object.assign(c, h.makeHeads(r, shapes, 2.5));
    cases.push(c);
  }
  return cases;
}

const cases = makeCases();
const optionsOf = (c) => {
  const o = { numClasses: c.numClasses, layout: c.layout, head: 'anchorFree', regMax: c.regMax, ...c.variant };
  if (c.boxTemperature) o.boxTemperature = c.boxTemperature;
  if (c.lambda) o.lambda = c.lambda;
  if (c.weights) o.weights = c.weights;
  return o;
};

describe('anchor-free heads agree with the PyTorch reference (float64)', () => {
  let want;
  beforeAll(() => {
    if (torch.ok) want = h.runTorchReference(cases);
  });
  test('the cases cover regMax 1/16/17, every clsTarget, weighting off, fmNms, both layouts, C = 1, 1x1 grids', () => {
    const seen = (f) => new Set(cases.map(f));
    expect(cases.length).toBeGreaterThanOrEqual(30);
    for (const R of [1, 16, 17]) expect(seen((c) => c.regMax).has(R)).toBe(true);
    for (const k of ['logit', 'prob', 'bce', 'kl']) expect(seen((c) => c.variant.clsTarget).has(k)).toBe(true);
    expect(seen((c) => c.layout)).toEqual(new Set(['nchw', 'nhwc']));
    expect(cases.some((c) => c.variant.fmNms)).toBe(true);
    expect(cases.some((c) => c.variant.weighted)).toBe(true);
    expect(cases.some((c) => c.numClasses === 1)).toBe(true);
    expect(cases.some((c) => c.shapes.some((s) => (c.layout === 'nchw' ? s[2] * s[3] : s[1] * s[2]) === 1))).toBe(true);
  });
  for (const impl of ['fused', 'reference']) {
    withTorch.each(cases.map((c) => [c.id, c]))(`${impl}: %s`, (id, c) => {
      const got = distillationLoss(c.student, c.teacher, { ...optionsOf(c), impl });
      const w = want[id];
      h.expectRelClose(got.loss, w.loss, 1e-5, `${id} loss`, 1e-12);
      expect(got.obj).toBe(0);
      for (const t of ['box', 'cls']) h.expectRelClose(got[t], w[t], 1e-5, `${id} ${t}`, 1e-12);
      got.scales.forEach((sc, k) => {
        for (const t of ['box', 'cls']) h.expectRelClose(sc[t], w.scales[k][t], 1e-5, `${id} scale ${k} ${t}`, 1e-12);
      });
      got.grads.forEach((g, k) => h.expectArraysClose(g, w.grads[k], 1e-6, 1e-5, `${id} grad ${k}`));
    });
  }
});

test('the box KL gradient matches central finite differences; results are deterministic', () => {
  const R = 16, C = 3, shape = [1, 4 * R + C, 2, 3];
  const r = h.rng(0xfd);
  // Values on a 1/256 grid so that p +- 1/64 is exact in fp32.
  const grid = () => Math.round(2.5 * r.randn() * 256) / 256;
  const p = new Float32Array(h.numel(shape)).map(grid), t = new Float32Array(h.numel(shape)).map(grid);
  const opts = { numClasses: C, head: 'anchorFree', regMax: R, boxTemperature: 3, lambda: 2 };
  const base = distillationLoss([{ data: p, shape }], [{ data: t, shape }], opts);
  const again = distillationLoss([{ data: p, shape }], [{ data: t, shape }], opts);
  expect(again.loss).toBe(base.loss);
  expect(h.sameBits(again.grads[0], base.grads[0])).toBe(true);
  const step = 1 / 64;
  let checked = 0;
  for (let j = 0; j < 4 * R * 6; j += 11) { // box channels of every cell (nchw: channel-major)
    const orig = p[j];
    p[j] = orig + step;
    const up = distillationLoss([{ data: p, shape }], [{ data: t, shape }], { ...opts, grad: false }).loss;
    p[j] = orig - step;
    const down = distillationLoss([{ data: p, shape }], [{ data: t, shape }], { ...opts, grad: false }).loss;
    p[j] = orig;
    const fd = (up - down) / (2 * step);
    expect(Math.abs(base.grads[0][j] - fd)).toBeLessThanOrEqual(2e-3 * Math.abs(fd) + 2e-5);
    checked++;
  }
  expect(checked).toBeGreaterThan(30);
});

test.each(['nchw', 'nhwc'])('every thread count gives the same bits, whichever order a task runs a unit\'s phases in (%s)', (layout) => {
  // On fp32 nchw heads odd tasks of the CPU kernel run a unit's class terms
  // before its box KL, even tasks after it (fused_cpu.cpp anchor_free_scale):
  // the box and class sums must stay apart, each in its own order. Six images
  // of 16 x 16 cells (84 channels): 1, 2 and 3 tasks, each with units of its
  // own (nhwc: one order, the cell-major units).
  const R = 16, C = 20, shape = shapeOf(layout, 6, R, C, 16, 16);
  const r = h.rng(0x7a5c);
  const { student, teacher } = h.makeHeads(r, [shape], 2.5);
  for (const clsTarget of ['logit', 'prob', 'bce', 'kl']) {
    for (const fmNms of [false, true]) {
      const opts = { numClasses: C, head: 'anchorFree', regMax: R, layout, clsTarget, fmNms };
      const one = distillationLoss(student, teacher, { ...opts, threads: 1 });
      for (const threads of [2, 3]) {
        const many = distillationLoss(student, teacher, { ...opts, threads });
        expect([clsTarget, fmNms, threads, Object.is(many.loss, one.loss)]).toEqual([clsTarget, fmNms, threads, true]);
        expect(Object.is(many.box, one.box) && Object.is(many.cls, one.cls)).toBe(true);
        expect(h.sameBits(many.grads[0], one.grads[0])).toBe(true);
      }
    }
  }
});

test.each(['nchw', 'nhwc'])('KL groups whose cells all span under 1 (the polynomial-only pass) give the same bits as mixed groups (%s)', (layout) => {
  // The CPU KL steps take 16 cells at a time and skip kl_gap's exponential when
  // every cell's scaled differences span at most 0.99 (fused_cpu.cpp
  // kl_centred_pass). A cell's results must not depend on its neighbours: cells
  // 0-15 and 16-31 are two such groups (one unit, one block). A student near its
  // teacher (spans ~0.1 at boxTemperature 10) is all-near; moving one bin of one
  // cell by 30 (span 3) makes its group take the full pass, and every other cell
  // must keep its bits. Then cell 20 spans 2.5 (an |e| > 2: the full pass) in a
  // group that is otherwise near, against the same with cell 21 spanning 6: a
  // threshold of 2.5 to 6 (the polynomial where |e| > 2) fails it.
  const R = 16, C = 2, H = 4, W = 8, K = 4 * R + C, cells = H * W;
  const shape = shapeOf(layout, 1, R, C, H, W);
  const at = (cell, k) => (layout === 'nchw' ? k * cells + cell : cell * K + k);
  const r = h.rng(0x4ea7);
  const t = new Float32Array(h.numel(shape)).map(() => 2 * r.randn());
  const near = t.map((v) => v + 0.1 * r.randn());
  const opts = { numClasses: C, head: 'anchorFree', regMax: R, layout };
  const run = (p) => distillationLoss([{ data: p, shape }], [{ data: t, shape }], opts).grads[0];
  const sameExcept = (a, b, skip) => {
    let diff = 0;
    for (let cell = 0; cell < cells; cell++) {
      if (cell === skip) continue;
      for (let k = 0; k < K; k++) if (!Object.is(a[at(cell, k)], b[at(cell, k)])) diff++;
    }
    return diff;
  };
  const shifted = (base, cell, k, by) => { const p = base.slice(); p[at(cell, k)] += by; return p; };
  const g0 = run(near);
  const g1 = run(shifted(near, 5, 3, 30)); // side 0 of cell 5 spans 3: group 0 takes the full pass
  expect(g1[at(5, 3)]).not.toBe(g0[at(5, 3)]);
  expect(sameExcept(g0, g1, 5)).toBe(0);
  const x = shifted(near, 20, R + 7, 25); // side 1 of cell 20 spans 2.5
  const gx = run(x);
  const gy = run(shifted(x, 21, R + 2, 60)); // and side 1 of cell 21 spans 6
  expect(sameExcept(gx, gy, 21)).toBe(0);
});

describe('bad anchor-free calls get coded errors', () => {
  const R = 16, C = 3;
  const ok = [1, 4 * R + C, 2, 2];
  const head = (shape) => ({ data: new Float32Array(h.numel(shape)), shape });
  const call = (shape, opts) => () => distillationLoss([head(shape)], [head(shape)], { numClasses: C, head: 'anchorFree', ...opts });
  test.each([
    ['channels of another regMax', call([1, 4 * 8 + C, 2, 2], {}), 'ERR_CHANNEL_MISMATCH', /expected 4\*regMax \+ C = 4\*16 \+ 3 = 67 channels in dim 1, got 35 .*fits regMax = 8/],
    ['channels of an anchor head', call([1, 3 * (5 + C), 2, 2], {}), 'ERR_CHANNEL_MISMATCH', /got 24 .*an anchor head \('anchor'\) with numAnchors = 3/],
    ['nhwc channels', call([1, 2, 2, 66], { layout: 'nhwc' }), 'ERR_CHANNEL_MISMATCH', /67 channels in dim 3, got 66/],
    ['numAnchors 3', call(ok, { numAnchors: 3 }), 'ERR_INVALID_OPTION', /numAnchors: an anchor-free head predicts once per cell/],
    ['layout nahwc', call(ok, { layout: 'nahwc' }), 'ERR_INVALID_OPTION', /'nahwc' is for anchor heads/],
    ['regMax 0', call(ok, { regMax: 0 }), 'ERR_INVALID_OPTION', /regMax/],
    ['regMax 2.5', call(ok, { regMax: 2.5 }), 'ERR_INVALID_OPTION', /regMax.*integer/],
    ['boxTemperature 0', call(ok, { boxTemperature: 0 }), 'ERR_INVALID_OPTION', /boxTemperature/],
    ['boxTemperature Infinity', call(ok, { boxTemperature: Infinity }), 'ERR_INVALID_OPTION', /boxTemperature/],
    ["boxTarget 'paper'", call(ok, { boxTarget: 'paper' }), 'ERR_INVALID_OPTION', /boxTarget 'paper' \(or preset 'paper'\) is for anchor heads/],
    ["objTarget 'bce'", call(ok, { objTarget: 'bce' }), 'ERR_INVALID_OPTION', /no objectness channel/],
    ['unknown head', call(ok, { head: 'anchorless' }), 'ERR_INVALID_OPTION', /head.*'anchor' \| 'anchorFree'/],
    ['a 5-D head', call([1, 1, 2, 2, 67], {}), 'ERR_INVALID_SHAPE', /4-D nchw anchor-free head/],
  ])('%s', (_name, fn, code, pattern) => {
    let err;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err && err.code).toBe(code);
    expect(err.message).toMatch(pattern);
  });
});
