'use strict';
// A small workload for valgrind memcheck (test/reliability/memcheck.sh):
// sync/async calls on arrays and handles, errors, dispose and GC'd handles.
const yd = require('../..');

async function main() {
  const shape = [1, 3 * 8, 4, 5];
  const n = shape.reduce((a, b) => a * b);
  const P = [{ data: new Float32Array(n).map((_, i) => Math.sin(i)), shape }];
  const T = [{ data: new Float32Array(n).map((_, i) => Math.cos(i)), shape }];
  const opts = { numClasses: 3 };
  let sum = 0;
  for (let i = 0; i < 50; i++) {
    sum += yd.distillationLoss(P, T, opts).loss;
    sum += (await yd.distillationLossAsync(P, T, { ...opts, layout: 'nchw', threads: 1 })).loss;
    const t = yd.Tensor.fromFloat32Array(P[0].data, shape, { dtype: i % 2 ? 'float16' : 'float32' });
    const te = yd.Tensor.fromFloat32Array(T[0].data, shape, { dtype: i % 2 ? 'float16' : 'float32' });
    const r = yd.distillationLoss([t], [te], opts);
    r.grads[0].toFloat32Array();
    r.grads[0].dispose();
    t.dispose();
    if (i % 5 === 0) sum += yd.distillationLoss(P, T, { ...opts, impl: 'reference' }).loss;
    try {
      yd.distillationLoss(P, T, { numClasses: 4 });
    } catch (e) {
      if (e.code !== 'ERR_CHANNEL_MISMATCH') throw e;
    }
    yd.Tensor.fromFloat32Array(P[0].data, shape); // left to the GC
  }
  global.gc && global.gc();
  await new Promise((r) => setImmediate(r));
  console.log('memcheck workload done', sum.toFixed(6));
}
main();
