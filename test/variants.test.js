'use strict';
// Loss variants (boxTarget, objTarget, clsTarget, weighted, temperature, presets,
// FM-NMS): the fused CPU kernel and the LibTorch reference against an independent
// PyTorch implementation, finite differences, determinism and option errors.
const h = require('./helpers');

const { distillationLoss } = h.pkg;
const torch = h.torchAvailable();
if (!torch.ok) {
  if (process.env.CI) throw new Error(`CI needs the PyTorch reference: ${torch.reason}`);
  console.warn(`PyTorch variant tests skipped: ${torch.reason}`);
}
const maybe = torch.ok ? describe : describe.skip;

// [API options, resolved variant for the PyTorch reference, lambda]
const VARIANTS = [
  [{ boxTarget: 'paper' }, { boxTarget: 'paper' }],
  [{ objTarget: 'prob' }, { objTarget: 'prob' }],
  [{ objTarget: 'bce' }, { objTarget: 'bce' }],
  [{ clsTarget: 'prob' }, { clsTarget: 'prob' }],
  [{ clsTarget: 'bce' }, { clsTarget: 'bce' }],
  [{ clsTarget: 'kl' }, { clsTarget: 'kl' }],
  [{ clsTarget: 'kl', temperature: 2.5 }, { clsTarget: 'kl', temperature: 2.5 }],
  [{ weighted: { box: false } }, { weighted: { box: false } }],
  [{ weighted: { obj: false, cls: false } }, { weighted: { obj: false, cls: false } }],
  [{ fmNms: true }, { fmNms: true }],
  [{ preset: 'paper' }, { boxTarget: 'paper', objTarget: 'prob', clsTarget: 'prob', weighted: { obj: false } }, 1],
  [{ preset: 'paper', lambda: 4, objTarget: 'bce' }, { boxTarget: 'paper', objTarget: 'bce', clsTarget: 'prob', weighted: { obj: false } }, 4],
  [{ preset: 'yolov5', fmNms: true, clsTarget: 'kl', temperature: 0.5, weighted: { box: false } },
    { fmNms: true, clsTarget: 'kl', temperature: 0.5, weighted: { box: false } }],
  [{ boxTarget: 'paper', objTarget: 'bce', clsTarget: 'bce', fmNms: true, weighted: { cls: false } },
    { boxTarget: 'paper', objTarget: 'bce', clsTarget: 'bce', fmNms: true, weighted: { cls: false } }],
];

function makeCases() {
  const r = h.rng(0x7a41);
  const cases = [];
  VARIANTS.forEach(([api, variant, lambda], i) => {
    for (const layout of ['nchw', 'nahwc', 'nhwc']) {
      const C = r.pick([1, 3, 7, 20]);
      const A = r.int(1, 3);
      const B = r.int(1, 2);
      const shapes = [h.headShape(layout, B, A, C, r.int(1, 7), r.int(1, 9)), h.headShape(layout, B, A, C, r.int(2, 6), r.int(2, 6))];
      // The variants' transcendental terms are compared with PyTorch in float64:
      // in float32, PyTorch's own rounding of sigmoid near saturation and of KL
      // cancellation is of the order of the tolerance (docs/DESIGN.md §2).
      const c = { id: `v${i}${layout}`, layout, numAnchors: A, numClasses: C, shapes, api, variant, lambda: lambda ?? 10, compute: 'float64' };
      if (i % 3 === 1) c.gradScale = 64;
      Object.assign(c, h.makeHeads(r, shapes, i % 4 === 3 ? 12 : 2.5));
      cases.push(c);
    }
  });
  return cases;
}

maybe('agreement with the PyTorch reference', () => {
  const cases = makeCases();
  let want;
  beforeAll(() => {
    want = h.runTorchReference(cases);
  });
  for (const impl of ['fused', 'reference']) {
    test.each(makeCases().map((c) => [`${c.id} ${JSON.stringify(c.api)}`, c.id]))(`${impl}: %s`, (_name, id) => {
      const c = cases.find((x) => x.id === id);
      const opts = { numClasses: c.numClasses, numAnchors: c.numAnchors, layout: c.layout, ...c.api, impl };
      if (c.gradScale) opts.gradScale = c.gradScale;
      const got = distillationLoss(c.student, c.teacher, opts);
      const w = want[id];
      h.expectRelClose(got.loss, w.loss, 1e-5, `${id} loss`, 1e-12);
      for (const t of ['box', 'obj', 'cls']) h.expectRelClose(got[t], w[t], 1e-5, `${id} ${t}`, 1e-12);
      got.scales.forEach((s, k) => {
        for (const t of ['box', 'obj', 'cls']) h.expectRelClose(s[t], w.scales[k][t], 1e-5, `${id} scale ${k} ${t}`, 1e-12);
      });
      got.grads.forEach((g, k) => h.expectArraysClose(g, w.grads[k], 1e-6, 1e-5, `${id} grad ${k}`));
    });
  }
});

describe.each(['nchw', 'nahwc', 'nhwc'])('%s', (layout) => {
  // Student values on a 1/256 grid, so that p +- h (h = 1/128) is exact in fp32.
  const small = (seed, C = 3) => {
    const r = h.rng(seed);
    const shapes = [h.headShape(layout, 2, 2, C, 3, 4)];
    const c = h.makeHeads(r, shapes, 2);
    c.student.forEach((x) => x.data.forEach((v, i) => { x.data[i] = Math.round(v * 256) / 256; }));
    return { ...c, shapes, opts: { numClasses: C, numAnchors: 2, layout } };
  };

  test.each(VARIANTS.map(([api]) => [JSON.stringify(api), api]))('gradient matches central finite differences: %s', (_n, api) => {
    const c = small(5);
    const opts = { ...c.opts, ...api };
    const base = distillationLoss(c.student, c.teacher, opts);
    const p = c.student[0].data;
    const step = 1 / 128;
    let checked = 0;
    for (let j = 0; j < p.length; j += 3) {
      const orig = p[j];
      p[j] = orig + step;
      const up = distillationLoss(c.student, c.teacher, { ...opts, grad: false }).loss;
      p[j] = orig - step;
      const down = distillationLoss(c.student, c.teacher, { ...opts, grad: false }).loss;
      p[j] = orig;
      const fd = (up - down) / (2 * step);
      const g = base.grads[0][j];
      // Central differences err by O(step^2) on these smooth (non-quadratic) terms.
      expect(Math.abs(fd - g)).toBeLessThanOrEqual(2e-5 + 2e-3 * Math.abs(g));
      checked++;
    }
    expect(checked).toBeGreaterThan(30);
  });

  test('variants are bit-identical across repeat calls and 1 vs 2 threads', () => {
    const r = h.rng(6);
    const shapes = [h.headShape(layout, 2, 3, 20, 30, 30)];
    const c = h.makeHeads(r, shapes, 3);
    const opts = { numClasses: 20, layout, preset: 'paper', fmNms: true, clsTarget: 'kl' };
    const one = distillationLoss(c.student, c.teacher, { ...opts, threads: 1 });
    const two = distillationLoss(c.student, c.teacher, { ...opts, threads: 2 });
    expect(Object.is(one.loss, two.loss)).toBe(true);
    expect(h.sameBits(one.grads[0], two.grads[0])).toBe(true);
  });

  test('FM-NMS suppresses cells: suppressed cells get zero gradient, kept cells the plain one (to rounding)', () => {
    const c = small(7, 2);
    const plain = distillationLoss(c.student, c.teacher, c.opts);
    const nms = distillationLoss(c.student, c.teacher, { ...c.opts, fmNms: true });
    expect(nms.loss).toBeLessThan(plain.loss);
    let zeroed = 0;
    let same = 0;
    nms.grads[0].forEach((g, i) => {
      const q = plain.grads[0][i];
      if (g === 0 && q !== 0) zeroed++;
      else if (Math.abs(g - q) <= 1e-9 + 1e-6 * Math.abs(q)) same++;
    });
    expect(zeroed).toBeGreaterThan(0);
    expect(same).toBeGreaterThan(0);
    expect(zeroed + same).toBe(nms.grads[0].length);
  });
});

test('the default path is docs/DESIGN.md §1 exactly: preset yolov5 and explicit defaults change nothing', () => {
  const r = h.rng(8);
  const shapes = [h.headShape('nchw', 1, 3, 5, 4, 4)];
  const c = h.makeHeads(r, shapes, 2);
  const base = distillationLoss(c.student, c.teacher, { numClasses: 5 });
  const same = distillationLoss(c.student, c.teacher, {
    numClasses: 5, preset: 'yolov5', boxTarget: 'logit', objTarget: 'logit', clsTarget: 'logit',
    weighted: { box: true, obj: true, cls: true }, fmNms: false,
  });
  expect(same.loss).toBe(base.loss);
  expect(h.sameBits(same.grads[0], base.grads[0])).toBe(true);
});

test('bad variant options give coded errors', () => {
  const shape = [1, 3 * 7, 2, 2];
  const head = { data: new Float32Array(84), shape };
  const codeOf = (extra) => {
    try {
      distillationLoss([head], [head], { numClasses: 2, ...extra });
    } catch (e) {
      return `${e.constructor.name} ${e.code}`;
    }
    return 'no error';
  };
  expect(codeOf({ preset: 'v8' })).toBe('RangeError ERR_INVALID_OPTION');
  expect(codeOf({ objTarget: 'kl' })).toBe('RangeError ERR_INVALID_OPTION');
  expect(codeOf({ clsTarget: 'mse' })).toBe('RangeError ERR_INVALID_OPTION');
  expect(codeOf({ boxTarget: 1 })).toBe('TypeError ERR_INVALID_ARG_TYPE');
  expect(codeOf({ temperature: 0 })).toBe('RangeError ERR_INVALID_OPTION');
  expect(codeOf({ temperature: 'hot' })).toBe('TypeError ERR_INVALID_ARG_TYPE');
  expect(codeOf({ weighted: 5 })).toBe('TypeError ERR_INVALID_ARG_TYPE');
  expect(codeOf({ weighted: { obj: 'no' } })).toBe('TypeError ERR_INVALID_ARG_TYPE');
  expect(codeOf({ fmNms: 'yes' })).toBe('TypeError ERR_INVALID_ARG_TYPE');
});

// The cell-major layouts run the variant and anchor-free kernels on each unit
// transposed to channel-major (native/core/fused_cpu.cpp, 16 x 16 register
// tiles with scalar edges): every gradient element must be the bit-for-bit
// value of the same element in nchw (the same element math), the loss within
// summation order. Units of 256 cells: 2 images of 17 x 19 cells leave a
// partial last unit; K = 85 and 23 leave partial channel tiles, 144 none.
// The 'prob' element loop (native/core/fused_cpu.cpp, channel_run) runs 64
// values a block, then 16, then one at a time: planes of 63 to 135 cells take
// every mix of them (the shapes above have at most 63 cells a plane), against
// PyTorch float64, nchw, preset 'paper' (box x/y and obj and classes by 'prob')
// and clsTarget 'prob' with FM-NMS.
maybe("'prob' blocks of 64, 16 and 1 against the PyTorch reference", () => {
  const r = h.rng(0x64b);
  const grids = [[1, 63], [8, 8], [1, 65], [9, 9], [1, 79], [8, 16], [13, 10], [9, 15]];
  const cases = [];
  for (const [api, variant] of [[{ preset: 'paper' }, { boxTarget: 'paper', objTarget: 'prob', clsTarget: 'prob', weighted: { obj: false } }],
    [{ clsTarget: 'prob', fmNms: true }, { clsTarget: 'prob', fmNms: true }]]) {
    grids.forEach(([H, W], i) => {
      const shapes = [h.headShape('nchw', 2, 1, 3, H, W)];
      const c = { id: `blk${cases.length}`, layout: 'nchw', numAnchors: 1, numClasses: 3, shapes, api, variant,
        lambda: api.preset ? 1 : 10, compute: 'float64' };
      Object.assign(c, h.makeHeads(r, shapes, 2.5 + i));
      cases.push(c);
    });
  }
  let want;
  beforeAll(() => {
    want = h.runTorchReference(cases);
  });
  test.each(cases.map((c) => [`${c.id} ${JSON.stringify(c.api)} ${c.shapes[0].join('x')}`, c.id]))('%s', (_name, id) => {
    const c = cases.find((x) => x.id === id);
    const got = distillationLoss(c.student, c.teacher, { numClasses: 3, numAnchors: 1, ...c.api });
    const w = want[id];
    h.expectRelClose(got.loss, w.loss, 1e-5, `${id} loss`, 1e-12);
    got.grads.forEach((g, k) => h.expectArraysClose(g, w.grads[k], 1e-6, 1e-5, `${id} grad ${k}`));
  });
});

// The KL steps take four 16-cell groups side by side where a cell has 40 or
// more classes (a class read and written across 64 cells at once), single
// groups after them and a padded group for a unit's last cells; every cell's
// results must be what a lone group gives. Planes of 63 to 225 cells (every mix
// of the three), with 40 classes (side by side) and 20 (single groups), some
// cells' teacher objectness at -80 (a gradient factor under 2^-60: the
// per-lane double path inside a side-by-side block) and some students far off.
maybe('KL groups side by side, alone and padded against the PyTorch reference', () => {
  const r = h.rng(0x4b4c);
  const grids = [[1, 63], [8, 8], [9, 9], [1, 130], [12, 12], [15, 15]];
  const cases = [];
  for (const [C, tau] of [[40, 1.5], [20, 0.7]]) {
    grids.forEach(([H, W], i) => {
      const shapes = [h.headShape('nchw', 2, 1, C, H, W)];
      const c = { id: `klq${cases.length}`, layout: 'nchw', numAnchors: 1, numClasses: C, shapes,
        api: { clsTarget: 'kl', temperature: tau }, variant: { clsTarget: 'kl', temperature: tau },
        lambda: 10, compute: 'float64' };
      Object.assign(c, h.makeHeads(r, shapes, 2.5 + i));
      const P = c.student[0].data, T = c.teacher[0].data, cells = H * W, K = 5 + C;
      for (let b = 0; b < 2; b++) {
        for (let j = i % 5; j < cells; j += 13) T[(b * K + 4) * cells + j] = -80;
        for (let j = 3; j < cells; j += 17) for (let k = 5; k < K; k++) P[(b * K + k) * cells + j] += 25;
      }
      cases.push(c);
    });
  }
  let want;
  beforeAll(() => {
    want = h.runTorchReference(cases);
  });
  test.each(cases.map((c) => [`${c.id} C=${c.numClasses} ${c.shapes[0].join('x')}`, c.id]))('%s', (_name, id) => {
    const c = cases.find((x) => x.id === id);
    const got = distillationLoss(c.student, c.teacher, { numClasses: c.numClasses, numAnchors: 1, ...c.api });
    const w = want[id];
    h.expectRelClose(got.loss, w.loss, 1e-5, `${id} loss`, 1e-12);
    got.grads.forEach((g, k) => h.expectArraysClose(g, w.grads[k], 1e-6, 1e-5, `${id} grad ${k}`));
  });
});

describe('cell-major layouts against nchw, element by element', () => {
  // value (b, a, y, x, k) of a head in each layout
  const index = {
    nchw: (B, A, H, W, K) => (b, a, y, x, k) => ((b * A * K + a * K + k) * H + y) * W + x,
    nahwc: (B, A, H, W, K) => (b, a, y, x, k) => (((b * A + a) * H + y) * W + x) * K + k,
    nhwc: (B, A, H, W, K) => (b, a, y, x, k) => ((b * H + y) * W + x) * A * K + a * K + k,
  };
  const shapeOf = (layout, B, A, H, W, K) =>
    (layout === 'nchw' ? [B, A * K, H, W] : layout === 'nhwc' ? [B, H, W, A * K] : [B, A, H, W, K]);
  function relayout(data, from, to, B, A, H, W, K) {
    const out = new Float32Array(data.length);
    const f = index[from](B, A, H, W, K), t = index[to](B, A, H, W, K);
    for (let b = 0; b < B; b++) for (let a = 0; a < A; a++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      for (let k = 0; k < K; k++) out[t(b, a, y, x, k)] = data[f(b, a, y, x, k)];
    }
    return out;
  }
  const B = 2, H = 17, W = 19;
  const cases = [
    ['anchor, C = 80, clsTarget prob', 3, 85, { numClasses: 80, clsTarget: 'prob' }, null],
    ['anchor, C = 18, one anchor, preset paper + fmNms', 1, 23, { numClasses: 18, numAnchors: 1, preset: 'paper', fmNms: true }, null],
    ['anchor, C = 80, clsTarget kl, weighted { cls: false }', 3, 85, { numClasses: 80, clsTarget: 'kl', weighted: { cls: false } }, null],
    ['anchor-free, regMax 16, C = 80', 1, 144, { numClasses: 80, head: 'anchorFree' }, null],
    ['anchor-free, regMax 16, C = 80, clsTarget bce', 1, 144, { numClasses: 80, head: 'anchorFree', clsTarget: 'bce' }, null],
    // Cells whose KL gradient factor leaves [2^-60, 2^60] (teacher objectness -80)
    // or whose student is far off (+30 on its classes), scattered so that they
    // share KL groups with ordinary cells differently in each layout.
    ['anchor, C = 80, clsTarget kl, some cells with weight 1e-35 or a far student', 3, 85,
      { numClasses: 80, clsTarget: 'kl' }, (P, T, at) => {
        for (let c = 0; c < B * 3 * H * W; c += 7) T[at(c, 4)] = -80;
        for (let c = 3; c < B * 3 * H * W; c += 11) for (let k = 5; k < 85; k++) P[at(c, k)] += 30;
      }],
  ];
  // every row has five entries (for a missing one jest would pass its done callback)
  test.each(cases)('%s', (_name, A, K, opts, alter) => {
    const r = h.rng(K + A);
    const n = B * A * H * W * K;
    const P = Float32Array.from({ length: n }, () => 3 * r.randn());
    const T = Float32Array.from({ length: n }, () => 3 * r.randn());
    if (alter) {
      // value k of cell c = ((b * A + a) * H + y) * W + x, in nchw
      const at = (c, k) => {
        const x = c % W, y = Math.floor(c / W) % H, ba = Math.floor(c / (W * H));
        return index.nchw(B, A, H, W, K)(Math.floor(ba / A), ba % A, y, x, k);
      };
      alter(P, T, at);
    }
    const ref = distillationLoss([{ data: P, shape: shapeOf('nchw', B, A, H, W, K) }],
      [{ data: T, shape: shapeOf('nchw', B, A, H, W, K) }], { ...opts, layout: 'nchw' });
    for (const layout of opts.head === 'anchorFree' ? ['nhwc'] : ['nahwc', 'nhwc']) {
      const shape = shapeOf(layout, B, A, H, W, K);
      const res = distillationLoss([{ data: relayout(P, 'nchw', layout, B, A, H, W, K), shape }],
        [{ data: relayout(T, 'nchw', layout, B, A, H, W, K), shape }], { ...opts, layout });
      expect(Math.abs(res.loss - ref.loss)).toBeLessThanOrEqual(1e-10 * Math.abs(ref.loss));
      const back = relayout(res.grads[0], layout, 'nchw', B, A, H, W, K);
      expect(h.sameBits(back, ref.grads[0])).toBe(true);
    }
  });
});

// The FM-NMS masks of the fused kernels (nchw: each row's first and last cell
// by the scalar test, the cells between by a vectorized loop without bounds
// tests) against the LibTorch reference's (padded shifted copies), on teachers
// made of ties: class logits and objectness in {0, 1, 2} (many equal argmaxes
// and scores, so the row-major tie rule decides), some NaN class logits (NaN
// is the argmax) and NaN objectness, on every grid shape that has edges only,
// and planes that span two kernel units (100 x 90 cells: split mid-row); nchw
// and nhwc.
describe('FM-NMS masks on tied and NaN teachers, every grid shape: fused = reference', () => {
  const grids = [[1, 1], [1, 7], [7, 1], [2, 2], [3, 5], [17, 19], [100, 90]];
  const forms = [
    // [name, C, A, channels per anchor, first class channel, options]
    ['anchor, default formula', 2, 1, 7, 5, { fmNms: true }],
    ["anchor, preset 'paper'", 2, 2, 7, 5, { preset: 'paper', fmNms: true }],
    ['anchor-free, regMax 1', 3, 1, 7, 4, { head: 'anchorFree', regMax: 1, fmNms: true }],
  ];
  const cases = [];
  for (const [form, C, A, K, cls0, opts] of forms) {
    for (const [H, W] of grids) cases.push([`${form}, ${H}x${W}`, C, A, K, opts, cls0, H, W]);
  }
  test.each(cases)('%s', (_name, C, A, K, opts, cls0, H, W) => {
    const r = h.rng(H * 131 + W * 7 + C + A);
    const B = 2, n = B * A * K * H * W;
    const P = Float32Array.from({ length: n }, () => r.randn());
    const T = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const k = Math.floor(i / (H * W)) % K;
      const tie = r.int(0, 2);
      if (k >= cls0) T[i] = r.uniform() < 0.03 ? NaN : tie;  // class logits
      else if (!opts.head && k === 4) T[i] = r.uniform() < 0.03 ? NaN : tie;  // objectness
      else T[i] = r.randn();
    }
    const all = { numClasses: C, numAnchors: opts.head ? undefined : A, ...opts };
    const shape = [B, A * K, H, W];
    const ref = distillationLoss([{ data: P, shape }], [{ data: T, shape }], { ...all, impl: 'reference' });
    // nhwc as well (its masks: plane-ordered copies, the same row test).
    const AK = A * K;
    const toNhwc = (x) => {
      const out = new Float32Array(n);
      for (let b = 0; b < B; b++) for (let c = 0; c < AK; c++) for (let j = 0; j < H * W; j++) out[(b * H * W + j) * AK + c] = x[(b * AK + c) * H * W + j];
      return out;
    };
    const fromNhwc = (x) => {
      const out = new Float32Array(n);
      for (let b = 0; b < B; b++) for (let c = 0; c < AK; c++) for (let j = 0; j < H * W; j++) out[(b * AK + c) * H * W + j] = x[(b * H * W + j) * AK + c];
      return out;
    };
    const nhwcShape = [B, H, W, AK];
    const viaNhwc = distillationLoss([{ data: toNhwc(P), shape: nhwcShape }], [{ data: toNhwc(T), shape: nhwcShape }],
      { ...all, layout: 'nhwc' });
    for (const g of [distillationLoss([{ data: P, shape }], [{ data: T, shape }], all).grads[0], fromNhwc(viaNhwc.grads[0])]) {
      expectSameMask(g, ref.grads[0], n, H * W);
    }
  });
  function expectSameMask(g, q, n, cells) {
    let zero = 0, kept = 0;
    for (let i = 0; i < n; i++) {
      const kind = (x) => (Number.isNaN(x) ? 'NaN' : x === 0 ? 'zero' : 'value');
      if (kind(g[i]) !== kind(q[i])) expect(`element ${i}: ${g[i]}`).toBe(`element ${i}: ${q[i]}`);
      if (kind(q[i]) === 'zero') zero++;
      if (kind(q[i]) === 'value') {
        kept++;
        expect(Math.abs(g[i] - q[i])).toBeLessThanOrEqual(1e-12 + 1e-5 * Math.abs(q[i]));
      }
    }
    // The cases must suppress cells and keep cells (a grid of one cell keeps it).
    if (cells > 1) expect(zero).toBeGreaterThan(0);
    expect(kept).toBeGreaterThan(0);
  }
});

// With FM-NMS under compute-bound class formulas, each unit's class argmax is
// built by the thread that ran the unit before it (fused_cpu.cpp NextArgmax).
// It must never outlive its call: the same thread's last state names a unit
// that a later call's task may start with (6 planes, then 10: the second
// task's first unit is 3, then 5), so calls of alternating sizes, 1 and 2
// threads, each against a reference made from scratch. A build that matched
// the state by unit alone fails here.
test('FM-NMS argmax built ahead: same results whatever ran before, 1 or 2 threads', () => {
  const C = 3, A = 2, H = 40, W = 40, K = 5 + C;
  const opts = { numClasses: C, numAnchors: A, preset: 'paper', fmNms: true };
  const r = h.rng(99);
  for (const B of [3, 5, 3, 5, 5]) {
    const n = B * A * K * H * W;
    const P = new Float32Array(n), T = new Float32Array(n);
    const shape = [B, A * K, H, W];
    for (let i = 0; i < n; i++) {
      P[i] = r.randn();
      T[i] = Math.floor(i / (H * W)) % K >= 4 ? r.int(0, 2) : r.randn();  // tied classes and objectness
    }
    const ref = distillationLoss([{ data: P, shape }], [{ data: T, shape }], { ...opts, impl: 'reference' });
    for (const threads of [2, 1, 2]) {
      const got = distillationLoss([{ data: P, shape }], [{ data: T, shape }], { ...opts, threads });
      expect(Math.abs(got.loss - ref.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(ref.loss));
      const g = got.grads[0], q = ref.grads[0];
      let differ = 0;
      for (let i = 0; i < n; i++) if ((g[i] === 0) !== (q[i] === 0)) differ++;
      expect(`B=${B}, ${threads} threads: ${differ} elements suppressed differently`).toBe(`B=${B}, ${threads} threads: 0 elements suppressed differently`);
    }
  }
});
