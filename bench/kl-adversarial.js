#!/usr/bin/env node
'use strict';
// The KL's gradient against PyTorch float64 on cells built to cancel: teacher
// and student agree on a top class (p = q there, so its gradient tau (p - q)
// is a small difference of large terms), and each puts a mass of 2-32 % on a
// different other class, the two classes `span` apart in d = (T - P) / tau.
// A relative error of the student's normalizer then reaches that top class's
// gradient as an absolute one: for fp32 arithmetic about eps * coef * tau
// times the mass and the span, where coef = lambda * gradScale / cells. Per
// span and temperature: the largest |error| / tolerance over every gradient
// element (tolerance: the fuzzer's 1e-6 * gradScale + 1e-5 relative, > 1 fails
// it) for this checkout's fused kernel and for PyTorch float32 (the
// reference run in float32: what eager code gets), 4 random cases each.
//   node bench/kl-adversarial.js [--lambda 50] [--grid 2x3] [--batch 1] [--seed 11]
const h = require('../test/helpers');
const yd = require('..');

const argv = process.argv.slice(2);
const opt = (k, d) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const lambda = Number(opt('--lambda', 50));
const [H, W] = opt('--grid', '2x3').split('x').map(Number);
const B = Number(opt('--batch', 1));
const r = h.rng(Number(opt('--seed', 11)));
const C = 20, A = 1, K = 5 + C, gradScale = 1000;
const cases = [];
for (const span of [4, 8, 12, 16, 20, 28, 36]) for (const tau of [1, 2.64]) for (let rep = 0; rep < 4; rep++) {
  const s = new Float32Array(B * K * H * W), t = new Float32Array(B * K * H * W);
  for (let b = 0; b < B; b++) for (let cell = 0; cell < H * W; cell++) {
    const at = (k) => (b * K + k) * H * W + cell;
    for (let k = 0; k < 5; k++) { s[at(k)] = r.randn(); t[at(k)] = r.randn(); }
    const mass = 0.02 + 0.3 * r.uniform();
    const pick = (not) => { let c; do c = 5 + Math.floor(r.uniform() * C); while (not.includes(c)); return c; };
    const top = pick([]), ca = pick([top]), cb = pick([top, ca]);
    const lm = Math.log(mass / (1 - mass)) * tau, half = (span / 2) * tau;
    for (let k = 5; k < K; k++) { // the other classes: low for both, a little apart
      t[at(k)] = lm - half + 0.5 * tau * r.randn();
      s[at(k)] = t[at(k)] + 0.3 * tau * r.randn();
    }
    t[at(top)] = 0; s[at(top)] = 1e-3 * r.randn();
    t[at(ca)] = lm; s[at(ca)] = lm - half; // the teacher's mass, the student far below
    t[at(cb)] = lm - half; s[at(cb)] = lm; // the student's mass, the teacher far below
  }
  cases.push({ id: `s${span}_t${tau}_${rep}`, span, tau, student: [{ data: s, shape: [B, K, H, W] }],
    teacher: [{ data: t, shape: [B, K, H, W] }] });
}
const variantOf = (c) => ({ clsTarget: 'kl', temperature: c.tau, weighted: { box: false, obj: true, cls: false } });
const refs = (compute) => h.runTorchReference(cases.map((c) => ({
  id: c.id, layout: 'nchw', numAnchors: A, numClasses: C, lambda, gradScale, shapes: [c.student[0].shape],
  student: c.student, teacher: c.teacher, variant: variantOf(c), compute,
})));
const r64 = refs('float64'), r32 = refs('float32');
const ratio = (got, ref) => got.reduce((w, g, i) => Math.max(w, Math.abs(g - ref[i]) / (1e-6 * gradScale + 1e-5 * Math.abs(ref[i]))), 0);
const rows = {};
for (const c of cases) {
  const got = yd.distillationLoss(c.student, c.teacher, { numClasses: C, numAnchors: A, lambda, gradScale, ...variantOf(c) });
  const key = `${c.span}`.padStart(4) + `${c.tau}`.padStart(6);
  const row = rows[key] || (rows[key] = [0, 0]);
  row[0] = Math.max(row[0], ratio(got.grads[0], r64[c.id].grads[0]));
  row[1] = Math.max(row[1], ratio(r32[c.id].grads[0], r64[c.id].grads[0]));
}
console.log(`lambda ${lambda}, ${B} x ${H} x ${W} cells, gradScale ${gradScale}: coef tau / gradScale = ${(lambda / (B * H * W)).toFixed(3)} tau`);
console.log('span   tau   fused err/tol   PyTorch float32 err/tol');
for (const [k, [a, b]] of Object.entries(rows)) console.log(`${k}   ${a.toFixed(3).padStart(13)}   ${b.toFixed(3).padStart(23)}`);
