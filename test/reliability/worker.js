'use strict';
// Runs inside a worker_thread: loads the addon (a context-aware module, one
// instance per env) and computes losses it is sent, sync and async.
const { parentPort, workerData } = require('worker_threads');
const yd = require('../..');

parentPort.on('message', async (msg) => {
  if (msg.type === 'compute') {
    const opts = msg.opts;
    const sync = yd.distillationLoss(msg.student, msg.teacher, opts);
    const asyncR = await yd.distillationLossAsync(msg.student, msg.teacher, opts);
    const t = msg.student.map((x) => yd.Tensor.fromFloat32Array(x.data, x.shape));
    const viaHandle = yd.distillationLoss(t, msg.teacher, opts);
    viaHandle.grads.forEach((g) => g.dispose());
    t.forEach((x) => x.dispose());
    parentPort.postMessage({ sync: sync.loss, async: asyncR.loss, handle: viaHandle.loss, grad0: sync.grads[0] });
  } else if (msg.type === 'big-async') {
    // A long call, so the parent can terminate this worker while it runs.
    const n = msg.shape.reduce((a, b) => a * b);
    const head = { data: new Float32Array(n).fill(0.25), shape: msg.shape };
    const teacher = { data: new Float32Array(n).fill(-0.5), shape: msg.shape };
    parentPort.postMessage({ started: true });
    await yd.distillationLossAsync([head], [teacher], { numClasses: msg.numClasses, impl: 'reference' });
    parentPort.postMessage({ finished: true });
  }
});
if (workerData && workerData.ready) parentPort.postMessage({ ready: true });
