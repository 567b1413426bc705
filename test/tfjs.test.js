'use strict';
// The TensorFlow.js adapter: its loss and gradient (through tf.customGrad) equal
// the direct call's; it trains under optimizer.minimize; the example runs.
const { spawnSync } = require('child_process');
const path = require('path');
const h = require('./helpers');

let tf;
try {
  tf = require('@tensorflow/tfjs');
} catch (e) {
  if (process.env.CI) throw e;
  console.warn('tfjs tests skipped: @tensorflow/tfjs is not installed (npm install)');
}
const maybe = tf ? describe : describe.skip;

maybe('yolo-distill/tfjs', () => {
  const { tfDistillationLoss } = require('../dist/tfjs');
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  test.each(['nchw', 'nahwc', 'nhwc'])('%s: loss and gradients equal the direct call', (layout) => {
    const r = h.rng(91);
    const shapes = [h.headShape(layout, 2, 3, 4, 5, 6), h.headShape(layout, 2, 3, 4, 3, 2)];
    const c = h.makeHeads(r, shapes, 3);
    const opts = { numClasses: 4, layout, lambda: 7 };
    const direct = h.pkg.distillationLoss(c.student, c.teacher, opts);
    const st = c.student.map((x) => tf.tensor(x.data, x.shape));
    const te = c.teacher.map((x) => tf.tensor(x.data, x.shape));
    const value = tfDistillationLoss(st, te, opts);
    h.expectRelClose(value.dataSync()[0], direct.loss, 1e-6, 'loss');
    const grads = tf.grads((a, b) => tfDistillationLoss([a, b], te, opts))(st);
    grads.forEach((g, s) => {
      expect(g.shape).toEqual(shapes[s]);
      h.expectArraysClose(g.dataSync(), direct.grads[s], 0, 1e-6, `grad ${s}`);
    });
    // Upstream gradients scale the result (chain rule through customGrad).
    const g3 = tf.grads((a, b) => tf.mul(tfDistillationLoss([a, b], te, opts), 3))(st);
    h.expectArraysClose(g3[0].dataSync(), direct.grads[0].map((v) => 3 * v), 0, 1e-6, 'upstream x3');
  });

  test('anchor-free heads (nhwc, as tfjs convs give them): loss and gradients equal the direct call', () => {
    const r = h.rng(92);
    const R = 4, C = 3;
    const shapes = [[2, 5, 6, 4 * R + C], [2, 3, 2, 4 * R + C]];
    const c = h.makeHeads(r, shapes, 2);
    const opts = { numClasses: C, layout: 'nhwc', head: 'anchorFree', regMax: R };
    const direct = h.pkg.distillationLoss(c.student, c.teacher, opts);
    const st = c.student.map((x) => tf.tensor(x.data, x.shape));
    const te = c.teacher.map((x) => tf.tensor(x.data, x.shape));
    h.expectRelClose(tfDistillationLoss(st, te, opts).dataSync()[0], direct.loss, 1e-6, 'loss');
    const grads = tf.grads((a, b) => tfDistillationLoss([a, b], te, opts))(st);
    grads.forEach((g, s) => h.expectArraysClose(g.dataSync(), direct.grads[s], 0, 1e-6, `grad ${s}`));
  });

  test('a conv student head trains with optimizer.minimize: the loss falls', () => {
    const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.examples.json'], {
      cwd: path.join(__dirname, '..'), encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    const run = spawnSync(process.execPath, [path.join(__dirname, '..', 'build-examples', 'tfjs-student.js'), '--steps', '30'], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    const losses = [...run.stdout.matchAll(/loss ([\d.e+-]+)/g)].map((m) => Number(m[1]));
    expect(losses.length).toBe(4);
    expect(losses[3]).toBeLessThan(losses[0] / 5);
  });
});
