#!/usr/bin/env node
'use strict';
// The KL's precision near its teacher against PyTorch float64 (the test
// suite's independent reference, test/reference/torch_reference.py): YOLO
// heads with 80 classes, student = teacher + delta * noise (+ an offset common
// to the classes), teacher logits in [-8, -2), clsTarget 'kl'; per case the
// relative error of the cls term and the largest gradient error over the
// largest gradient element, for each build given (default: this checkout).
//   node bench/kl-precision.js [ROOT ...]
// (test/numerics-edge.test.js asserts 1e-6 on cases of this kind.)
const path = require('path');
const h = require('../test/helpers');

const roots = process.argv.slice(2);
const builds = (roots.length ? roots : [path.join(__dirname, '..')]).map((r) => [r, require(path.resolve(r))]);
const C = 80, A = 3, K = 5 + C, H = 4, W = 9;
const head = (f) => ({ data: Float32Array.from({ length: A * K * H * W }, (_, i) => f(i)), shape: [1, A * K, H, W] });
const isCls = (i) => Math.floor(i / (H * W)) % K >= 5;
const r = h.rng(7);
const cases = [];
for (const tau of [1, 4]) for (const delta of [1e-2, 1e-3, 1e-4, 1e-5]) for (const offset of [0, 37.5]) {
  const teacher = head(() => 6 * r.uniform() - 8);
  const student = head((i) => teacher.data[i] + delta * r.randn() + (isCls(i) ? offset : 0));
  cases.push({ id: `tau ${tau}, delta ${delta}, offset ${offset}`, tau, student, teacher });
}
const refs = h.runTorchReference(cases.map((c) => ({
  id: c.id, layout: 'nchw', numAnchors: A, numClasses: C, shapes: [c.student.shape], student: [c.student],
  teacher: [c.teacher], variant: { clsTarget: 'kl', temperature: c.tau }, compute: 'float64',
})));
console.log(`against PyTorch float64: cls relative error / largest gradient error over the largest element`);
console.log(['case'.padEnd(34), ...builds.map(([root]) => root.padEnd(28))].join(' '));
for (const c of cases) {
  const ref = refs[c.id];
  const cols = builds.map(([, yd]) => {
    const got = yd.distillationLoss([c.student], [c.teacher], { numClasses: C, clsTarget: 'kl', temperature: c.tau });
    let worst = 0, scale = 0;
    ref.grads[0].forEach((v, i) => {
      worst = Math.max(worst, Math.abs(got.grads[0][i] - v));
      scale = Math.max(scale, Math.abs(v));
    });
    return `${(Math.abs(got.cls - ref.cls) / ref.cls).toExponential(1)} / ${(worst / scale).toExponential(1)}`.padEnd(28);
  });
  console.log([c.id.padEnd(34), ...cols].join(' '));
}
