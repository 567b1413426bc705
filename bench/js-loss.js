'use strict';
// A plain JavaScript implementation of the default formula and its gradient
// (docs/DESIGN.md §1), for the benchmark's "why native" row only (not shipped:
// it ignores the loss variants). Float32Array heads, nchw or nahwc.
function distillationLossJS(student, teacher, options) {
  const C = options.numClasses;
  const A = options.numAnchors ?? 3;
  const K = 5 + C;
  const lambda = options.lambda ?? 10;
  const gb = options.weights?.box ?? 1;
  const go = options.weights?.obj ?? 1;
  const gc = options.weights?.cls ?? 1;
  const gradScale = options.gradScale ?? 1;
  const wantGrad = options.grad ?? true;
  const nchw = (options.layout ?? 'nchw') === 'nchw';
  const scales = [];
  const grads = [];
  for (let s = 0; s < student.length; s++) {
    const p = student[s].data;
    const t = teacher[s].data;
    const shape = student[s].shape;
    const HW = shape[2] * shape[3]; // H and W are dims 2 and 3 in both layouts
    const B = shape[0];
    const N = B * A * HW;
    const g = wantGrad ? new Float32Array(p.length) : null;
    const base = (2 * lambda * gradScale) / N;
    const coef = [(base * gb) / 4, base * go, (base * gc) / C];
    let box = 0;
    let obj = 0;
    let cls = 0;
    for (let cell = 0; cell < N; cell++) {
      // Offset of value k of this cell: nchw strides channels by HW; nahwc is contiguous.
      const ba = Math.floor(cell / HW);
      const yx = cell - ba * HW;
      const start = nchw ? ba * K * HW + yx : cell * K;
      const step = nchw ? HW : 1;
      const w = 1 / (1 + Math.exp(-t[start + 4 * step]));
      for (let k = 0; k < K; k++) {
        const i = start + k * step;
        const d = p[i] - t[i];
        const wd2 = w * d * d;
        const term = k < 4 ? 0 : k === 4 ? 1 : 2;
        if (term === 0) box += wd2;
        else if (term === 1) obj += wd2;
        else cls += wd2;
        if (g) g[i] = coef[term] * w * d;
      }
    }
    scales.push({ box: box / (4 * N), obj: obj / N, cls: cls / (C * N) });
    if (g) grads.push(g);
  }
  const box = scales.reduce((a, x) => a + x.box, 0);
  const obj = scales.reduce((a, x) => a + x.obj, 0);
  const cls = scales.reduce((a, x) => a + x.cls, 0);
  return { loss: lambda * (gb * box + go * obj + gc * cls), box, obj, cls, scales, grads: wantGrad ? grads : null };
}

module.exports = { distillationLossJS };
