'use strict';
// Reliability: leaks, concurrency, handle lifetimes under async work, worker
// threads (context awareness, env cleanup, termination mid-call).
const { spawnSync } = require('child_process');
const path = require('path');
const { Worker } = require('worker_threads');
const h = require('./helpers');

const { distillationLoss, distillationLossAsync, Tensor } = h.pkg;

test('leak check: 100k sync, 20k async, 100k handle cycles, 100k handles to the GC; memory levels off', () => {
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'reliability', 'leak.js')], {
    encoding: 'utf8',
    timeout: 120000,
  });
  console.log(r.stdout);
  expect(r.stdout).toMatch(/4 passed, 0 failed/);
  expect(r.status).toBe(0);
});

function randomCall(r, i) {
  const layout = i % 2 ? 'nchw' : 'nahwc';
  const C = r.pick([1, 3, 20, 80]);
  const A = r.int(1, 4);
  const S = r.int(1, 3);
  const B = r.int(1, 2);
  const shapes = Array.from({ length: S }, () => h.headShape(layout, B, A, C, r.int(1, 12), r.int(1, 12)));
  const opts = { numClasses: C, numAnchors: A, layout };
  if (i % 3 === 0) opts.lambda = r.pick([1, 5, 20]);
  if (i % 4 === 1) opts.weights = { box: 0.5, cls: 2 };
  if (i % 5 === 2) opts.gradScale = 8;
  if (i % 7 === 3) opts.grad = false;
  if (i % 6 === 4) opts.threads = 1;
  return { ...h.makeHeads(r, shapes, 3), opts };
}

test('200 concurrent async calls of mixed shapes and options equal their sync results; sync calls interleaved stay right', async () => {
  const r = h.rng(77);
  const calls = Array.from({ length: 200 }, (_, i) => randomCall(r, i));
  const expected = calls.map((c) => distillationLoss(c.student, c.teacher, c.opts));
  const pending = calls.map((c) => distillationLossAsync(c.student, c.teacher, c.opts));
  // Sync calls while the async ones are in flight.
  for (let i = 0; i < 50; i++) {
    const c = calls[(i * 7) % calls.length];
    expect(distillationLoss(c.student, c.teacher, c.opts).loss).toBe(expected[(i * 7) % calls.length].loss);
  }
  const got = await Promise.all(pending);
  got.forEach((g, i) => {
    expect(g.loss).toBe(expected[i].loss);
    if (expected[i].grads) g.grads.forEach((x, s) => expect(h.sameBits(x, expected[i].grads[s])).toBe(true));
    else expect(g.grads).toBeNull();
  });
});

test('disposing a handle while an async call uses it is safe: the call finishes on its own reference', async () => {
  const r = h.rng(78);
  const shapes = [[2, 3 * 85, 40, 40]];
  const c = h.makeHeads(r, shapes, 2);
  const expected = distillationLoss(c.student, c.teacher, { numClasses: 80 });
  const st = Tensor.fromFloat32Array(c.student[0].data, shapes[0]);
  const te = Tensor.fromFloat32Array(c.teacher[0].data, shapes[0]);
  const p = distillationLossAsync([st], [te], { numClasses: 80, impl: 'reference' });
  st.dispose();
  te.dispose();
  const got = await p;
  h.expectRelClose(got.loss, expected.loss, 1e-5, 'loss');
  expect(() => st.shape).toThrow(expect.objectContaining({ code: 'ERR_TENSOR_DISPOSED' }));
});

function startWorker(workerData) {
  return new Worker(path.join(__dirname, 'reliability', 'worker.js'), { workerData });
}
const once = (w, pred) => new Promise((resolve, reject) => {
  w.on('message', (m) => { if (pred(m)) resolve(m); });
  w.on('error', reject);
});

test('loads and computes correctly in 4 worker threads at once and in the main thread', async () => {
  const r = h.rng(79);
  const c = randomCall(r, 1);
  const expected = distillationLoss(c.student, c.teacher, c.opts);
  const workers = Array.from({ length: 4 }, () => startWorker({ ready: true }));
  await Promise.all(workers.map((w) => once(w, (m) => m.ready)));
  const replies = workers.map((w) => once(w, (m) => m.sync !== undefined));
  workers.forEach((w) => w.postMessage({ type: 'compute', student: c.student, teacher: c.teacher, opts: c.opts }));
  // The main thread computes meanwhile.
  for (let i = 0; i < 20; i++) expect(distillationLoss(c.student, c.teacher, c.opts).loss).toBe(expected.loss);
  for (const m of await Promise.all(replies)) {
    expect(m.sync).toBe(expected.loss);
    expect(m.async).toBe(expected.loss);
    expect(m.handle).toBe(expected.loss);
    expect(h.sameBits(m.grad0, expected.grads[0])).toBe(true);
  }
  await Promise.all(workers.map((w) => w.terminate()));
});

test('terminating a worker mid-call does not crash the process; the addon keeps working', async () => {
  const workers = Array.from({ length: 3 }, () => startWorker({ ready: true }));
  await Promise.all(workers.map((w) => once(w, (m) => m.ready)));
  const started = workers.map((w) => once(w, (m) => m.started));
  workers.forEach((w) => w.postMessage({ type: 'big-async', shape: [4, 3 * 85, 40, 40], numClasses: 80 }));
  await Promise.all(started);
  await Promise.all(workers.map((w) => w.terminate()));
  // A new worker after the terminated ones, and the main thread, still compute.
  const c = randomCall(h.rng(80), 2);
  const expected = distillationLoss(c.student, c.teacher, c.opts);
  const w = startWorker({ ready: true });
  await once(w, (m) => m.ready);
  const reply = once(w, (m) => m.sync !== undefined);
  w.postMessage({ type: 'compute', student: c.student, teacher: c.teacher, opts: c.opts });
  expect((await reply).sync).toBe(expected.loss);
  await w.terminate();
  // Give the terminated workers' in-flight calls time to finish in the pool.
  await new Promise((res) => setTimeout(res, 1500));
  expect(distillationLoss(c.student, c.teacher, c.opts).loss).toBe(expected.loss);
});

describe('fuzzing (fast-check, cases run in a restartable child process)', () => {
  const fuzz = (...args) => spawnSync(process.execPath, [path.join(__dirname, 'reliability', 'fuzz.js'), ...args], {
    encoding: 'utf8',
    timeout: 300000,
  });

  test('20k cases (half adversarial JavaScript): valid ones agree with the reference, invalid ones give their coded errors, no crash', () => {
    const seed = process.env.FUZZ_SEED || '20261128';
    const r = fuzz('--seed', seed, '--runs', '20000');
    console.log(r.stdout.split('\n').slice(-25).join('\n'));
    expect(r.stdout).toMatch(/20000 passed, 0 failed/);
    const adv = Number((r.stdout.match(/adversarial JavaScript cases[^:]*: (\d+)/) || [])[1]);
    expect(adv).toBeGreaterThanOrEqual(9000);
    const [, af, half] = r.stdout.match(/anchor-free head cases: (\d+); half-precision array cases: (\d+)/) || [];
    expect(Number(af)).toBeGreaterThanOrEqual(1000);
    expect(Number(half)).toBeGreaterThanOrEqual(300);
    expect(r.status).toBe(0);
  });

  test('a native crash in the child is caught, reported as a failure with its case, and the run goes on', () => {
    const r = fuzz('--seed', '7', '--runs', '40', '--inject-crash-at', '10');
    expect(r.stdout).toMatch(/CRASH at case 10/);
    expect(r.stdout).toMatch(/native crashes 1/);
    expect(r.stdout).toMatch(/39 passed, 1 failed/);
    expect(r.status).toBe(1);
  });
});
