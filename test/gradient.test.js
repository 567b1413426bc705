'use strict';
// The gradient against finite differences, fused vs reference, determinism
// (repeat calls and 1 vs 2 threads, bit-identical) and invariants of the loss.
const h = require('./helpers');

const { distillationLoss } = h.pkg;

function smallCase(seed, layout, { B = 2, A = 3, C = 4, H = 3, W = 5, S = 2, spread = 2 } = {}) {
  const r = h.rng(seed);
  const shapes = Array.from({ length: S }, (_, s) => h.headShape(layout, B, A, C, Math.max(1, H - s), W + s));
  return { r, shapes, opts: { numClasses: C, numAnchors: A, layout }, ...h.makeHeads(r, shapes, spread) };
}

describe.each(['nchw', 'nahwc', 'nhwc'])('%s', (layout) => {
  test('gradient matches central finite differences of the loss', () => {
    const c = smallCase(11, layout);
    const opts = { ...c.opts, lambda: 3, weights: { box: 0.5, obj: 2, cls: 1.5 } };
    const base = distillationLoss(c.student, c.teacher, opts);
    // The loss is quadratic in the student, so a central difference with a wide
    // step is exact up to rounding; the step is taken on the fp32 values actually stored.
    let checked = 0;
    for (let s = 0; s < c.shapes.length; s++) {
      const p = c.student[s].data;
      for (let j = 0; j < p.length; j += 7) {
        const orig = p[j];
        p[j] = orig + 0.25;
        const up = p[j];
        const lp = distillationLoss(c.student, c.teacher, { ...opts, grad: false }).loss;
        p[j] = orig - 0.25;
        const down = p[j];
        const lm = distillationLoss(c.student, c.teacher, { ...opts, grad: false }).loss;
        p[j] = orig;
        const fd = (lp - lm) / (up - down);
        const g = base.grads[s][j];
        expect(Math.abs(fd - g)).toBeLessThanOrEqual(1e-7 + 1e-5 * Math.abs(g));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(40);
  });

  test('fused equals the LibTorch reference (loss, terms, gradients)', () => {
    const c = smallCase(12, layout, { B: 3, A: 2, C: 17, H: 9, W: 7, S: 3, spread: 6 });
    const opts = { ...c.opts, lambda: 7, gradScale: 256 };
    const f = distillationLoss(c.student, c.teacher, opts);
    const r = distillationLoss(c.student, c.teacher, { ...opts, impl: 'reference' });
    h.expectRelClose(f.loss, r.loss, 1e-5, 'loss');
    for (const t of ['box', 'obj', 'cls']) h.expectRelClose(f[t], r[t], 1e-5, t);
    f.grads.forEach((g, s) => h.expectArraysClose(g, r.grads[s], 1e-6, 1e-5, `grad ${s}`));
  });

  test('bit-identical across repeat calls and across 1 vs 2 threads', () => {
    // Large enough that the kernel really splits the work across threads.
    const c = smallCase(13, layout, { B: 2, A: 3, C: 80, H: 40, W: 40, S: 2, spread: 3 });
    const one = distillationLoss(c.student, c.teacher, { ...c.opts, threads: 1 });
    const two = distillationLoss(c.student, c.teacher, { ...c.opts, threads: 2 });
    const again = distillationLoss(c.student, c.teacher, { ...c.opts, threads: 2 });
    for (const r of [two, again]) {
      expect(Object.is(r.loss, one.loss)).toBe(true);
      expect(r.scales).toEqual(one.scales);
      r.grads.forEach((g, s) => expect(h.sameBits(g, one.grads[s])).toBe(true));
    }
  });

  test('each scale computed as if alone: any scale order and thread count gives its bits', () => {
    // The CPU runs all scales of a call in one parallel region (native/core/
    // fused_cpu.cpp cpu_scales); a scale's sums and gradient must not depend on
    // the other scales, their order or the number of threads.
    const r = h.rng(21);
    const shapes = [[2, 40, 40], [2, 20, 20], [2, 10, 10], [1, 3, 5]].map(([B, H, W]) => h.headShape(layout, B, 3, 6, H, W));
    const c = h.makeHeads(r, shapes, 3);
    const opts = { numClasses: 6, layout };
    const alone = shapes.map((_, s) => distillationLoss([c.student[s]], [c.teacher[s]], { ...opts, threads: 1 }));
    for (const order of [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]) {
      for (const threads of [1, 2, 3]) {
        const res = distillationLoss(order.map((s) => c.student[s]), order.map((s) => c.teacher[s]), { ...opts, threads });
        order.forEach((s, i) => {
          expect(res.scales[i]).toEqual(alone[s].scales[0]);
          expect(h.sameBits(res.grads[i], alone[s].grads[0])).toBe(true);
        });
      }
    }
  });

  test('invariants: zero loss and gradient when student equals teacher', () => {
    const c = smallCase(14, layout);
    const teacher = c.student.map((p) => ({ data: p.data.slice(), shape: p.shape }));
    const r = distillationLoss(c.student, teacher, c.opts);
    expect(r.loss).toBe(0);
    r.grads.forEach((g) => expect(g.every((v) => v === 0)).toBe(true));
  });

  test('invariants: lambda, term weights, gradScale and grad:false', () => {
    const c = smallCase(15, layout);
    const base = distillationLoss(c.student, c.teacher, c.opts);
    // Default lambda is 10 and weights are 1: loss = 10 * (box + obj + cls).
    h.expectRelClose(base.loss, 10 * (base.box + base.obj + base.cls), 1e-12, 'default loss');
    const l2 = distillationLoss(c.student, c.teacher, { ...c.opts, lambda: 2.5 });
    h.expectRelClose(l2.loss, base.loss / 4, 1e-12, 'lambda scaling');
    // The terms themselves do not depend on lambda or weights.
    expect(l2.box).toBe(base.box);
    const w = distillationLoss(c.student, c.teacher, { ...c.opts, weights: { box: 0, obj: 2 } });
    h.expectRelClose(w.loss, 10 * (2 * base.obj + base.cls), 1e-12, 'weights');
    // With weight 0 on box, box channels get a zero gradient; others do not.
    const K = 5 + c.opts.numClasses;
    const g = w.grads[0];
    const shape = c.shapes[0];
    const chanOf = (i) => h.channelOf(layout, shape, K, i);
    let boxNonZero = 0;
    let otherNonZero = 0;
    g.forEach((v, i) => {
      if (chanOf(i) < 4) boxNonZero += v !== 0;
      else otherNonZero += v !== 0;
    });
    expect(boxNonZero).toBe(0);
    expect(otherNonZero).toBeGreaterThan(0);
    const gs = distillationLoss(c.student, c.teacher, { ...c.opts, gradScale: 1024 });
    gs.grads.forEach((g2, s) => h.expectArraysClose(g2, base.grads[s].map((v) => v * 1024), 0, 1e-6, 'gradScale'));
    const ng = distillationLoss(c.student, c.teacher, { ...c.opts, grad: false });
    expect(ng.grads).toBeNull();
    expect(ng.loss).toBe(base.loss);
  });

  test('per-scale terms sum to the totals; the sum is order-independent of scales', () => {
    const c = smallCase(16, layout, { S: 3 });
    const r = distillationLoss(c.student, c.teacher, c.opts);
    for (const t of ['box', 'obj', 'cls']) {
      h.expectRelClose(r.scales.reduce((a, s) => a + s[t], 0), r[t], 1e-14, t);
    }
    const rev = distillationLoss([...c.student].reverse(), [...c.teacher].reverse(), c.opts);
    h.expectRelClose(rev.loss, r.loss, 1e-14, 'reversed scales');
    expect(rev.scales[0]).toEqual(r.scales[2]);
  });

  test('teacher objectness weights the cells: a background teacher teaches nothing', () => {
    const c = smallCase(17, layout, { S: 1 });
    const K = 5 + c.opts.numClasses;
    const t = c.teacher[0];
    const shape = c.shapes[0];
    const chanOf = (i) => h.channelOf(layout, shape, K, i);
    const bg = t.data.map((v, i) => (chanOf(i) === 4 ? -200 : v)); // sigmoid(-200) == 0 in fp32
    const r = distillationLoss(c.student, [{ data: bg, shape }], c.opts);
    expect(r.loss).toBe(0);
    expect(r.grads[0].every((v) => v === 0)).toBe(true);
  });
});
