#!/usr/bin/env node
'use strict';
// Property-based fuzzer (fast-check) over shapes, layouts, option values and
// input kinds, valid and invalid. Valid calls must agree with the reference path
// (LibTorch ops + autograd); invalid calls must give their documented error class
// and code. The cases are a deterministic function of the seed.
//
//   node test/reliability/fuzz.js [--seed S] [--runs N]        supervisor: runs the
//       cases in a child process and restarts it when it dies, reporting each
//       native crash as a failure with the case that caused it
//   node test/reliability/fuzz.js --child --seed S --runs N --from I   the worker
//
// Prints "fuzz: seed S, N cases: P passed, F failed" (replay with --seed S).
const { spawnSync } = require('child_process');
const fc = require('fast-check');

const argv = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const SEED = arg('--seed', Date.now() % 2147483647);
const RUNS = arg('--runs', 10000);

// Invalid mutations and the [error class, code] each must produce.
const MUTATIONS = {
  numClassesZero: ['RangeError', 'ERR_INVALID_OPTION'],
  numClassesString: ['TypeError', 'ERR_INVALID_ARG_TYPE'],
  numAnchorsFraction: ['RangeError', 'ERR_INVALID_OPTION'],
  badLayout: ['RangeError', 'ERR_INVALID_OPTION'],
  negativeLambda: ['RangeError', 'ERR_INVALID_OPTION'],
  nanGradScale: ['RangeError', 'ERR_INVALID_OPTION'],
  weightsString: ['TypeError', 'ERR_INVALID_ARG_TYPE'],
  threadsTooMany: ['RangeError', 'ERR_INVALID_OPTION'],
  optionsNull: ['TypeError', 'ERR_INVALID_ARG_TYPE'],
  wrongChannels: ['RangeError', 'ERR_CHANNEL_MISMATCH'],
  teacherGrid: ['RangeError', 'ERR_SHAPE_MISMATCH'],
  dropTeacherScale: ['RangeError', 'ERR_SCALE_COUNT'],
  dataShort: ['RangeError', 'ERR_DATA_LENGTH'],
  float64Data: ['TypeError', 'ERR_INVALID_ARG_TYPE'],
  detachedData: ['TypeError', 'ERR_DETACHED_BUFFER'],
  disposedTensor: ['TypeError', 'ERR_TENSOR_DISPOSED'],
  zeroDim: ['RangeError', 'ERR_INVALID_SHAPE'],
  fractionalDim: ['RangeError', 'ERR_INVALID_SHAPE'],
  wrongRank: ['RangeError', 'ERR_INVALID_SHAPE'],
  nullHead: ['TypeError', 'ERR_INVALID_ARG_TYPE'],
  gradOutShort: ['RangeError', 'ERR_GRAD_OUT'],
  gradOutAliasesStudent: ['RangeError', 'ERR_BUFFER_OVERLAP'],
  checkFiniteNaN: ['RangeError', 'ERR_NON_FINITE'],
  cudaDevice: ['Error', 'ERR_NO_CUDA'],
};

const caseArb = fc.record({
  layout: fc.constantFrom('nchw', 'nahwc', 'nhwc'),
  A: fc.integer({ min: 1, max: 4 }),
  C: fc.integer({ min: 1, max: 12 }),
  B: fc.integer({ min: 1, max: 3 }),
  grids: fc.array(fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 })), { minLength: 1, maxLength: 3 }),
  lambda: fc.option(fc.double({ min: 0, max: 50, noNaN: true })),
  gradScale: fc.option(fc.double({ min: -1e3, max: 1e3, noNaN: true })),
  weights: fc.option(fc.record({ box: fc.double({ min: 0, max: 5, noNaN: true }), obj: fc.double({ min: 0, max: 5, noNaN: true }) })),
  grad: fc.option(fc.boolean()),
  threads: fc.option(fc.integer({ min: 0, max: 4 })),
  kind: fc.constantFrom('array', 'tensor', 'mixed'),
  gradOut: fc.boolean(),
  spread: fc.constantFrom(0.5, 3, 30),
  variant: fc.option(fc.record({
    preset: fc.constantFrom('yolov5', 'paper'),
    boxTarget: fc.constantFrom('logit', 'paper'),
    objTarget: fc.constantFrom('logit', 'prob', 'bce'),
    clsTarget: fc.constantFrom('logit', 'prob', 'bce', 'kl'),
    // ordinary temperatures, and ones whose logit differences span over 40
    // (the double KL steps) or under 1e-3 (the fp32 steps' polynomial branch)
    temperature: fc.oneof({ weight: 3, arbitrary: fc.double({ min: 0.25, max: 4, noNaN: true }) },
      { weight: 1, arbitrary: fc.constantFrom(0.01, 0.05, 1000) }),
    weighted: fc.record({ box: fc.boolean(), obj: fc.boolean(), cls: fc.boolean() }),
    fmNms: fc.boolean(),
  }, { requiredKeys: [] }), { freq: 3 }),
  // Adversarial JavaScript (RELIABILITY.md "What a caller may do to a buffer"):
  // a getter, Proxy trap or concurrent transfer at one read point of the call
  // that detaches one of the call's arrays, or an array over a resizable buffer.
  adv: fc.oneof({ weight: 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.record({
    point: fc.constantFrom('dataGetter', 'shapeGetter', 'shapeElement', 'optionGetter', 'gradOutGetter',
      'gradOutElement', 'proxyHead', 'proxyOptions', 'harmlessGetters', 'resizable', 'transferAsync'),
    target: fc.constantFrom('student', 'teacher', 'gradOut'),
    scale: fc.integer({ min: 0, max: 2 }),
    async: fc.boolean(),
  }) }),
  // Anchor-free heads (layouts nchw/nhwc; nahwc cases stay anchor heads).
  afHead: fc.oneof({ weight: 3, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.record({ regMax: fc.constantFrom(1, 2, 4, 16), boxTemperature: fc.constantFrom(1, 10, 0.05, 1000) }) }),
  // Half-precision arrays (valid 'array' cases): student and teacher dtypes.
  dtypes: fc.oneof({ weight: 3, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom('float32', 'float16', 'bfloat16'), fc.constantFrom('float32', 'float16', 'bfloat16')) }),
  mutation: fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.constantFrom(...Object.keys(MUTATIONS)) }),
  valueSeed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
});

async function child() {
  const yd = require('../..');
  const h = require('../helpers');
  const FROM = arg('--from', 0);
  const cases = fc.sample(caseArb, { seed: SEED, numRuns: RUNS });
  const failures = [];
  const crashAt = arg('--inject-crash-at', -1); // for the supervisor's own test
  for (let i = FROM; i < cases.length; i++) {
    process.stdout.write(`case ${i}\n`);
    if (i === crashAt) process.abort();
    const c = cases[i];
    const err = c.adv ? await runAdversarial(yd, h, c) : runCase(yd, h, c);
    if (err) {
      failures.push({ index: i, case: c, error: err });
      process.stdout.write(`FAIL case ${i}: ${err}\n  ${JSON.stringify(c)}\n`);
    }
  }
  const adversarial = cases.slice(FROM).filter((c) => c.adv).length;
  const anchorFree = cases.slice(FROM).filter((c) => !c.adv && c.afHead && c.layout !== 'nahwc').length;
  const half = cases.slice(FROM).filter((c) => !c.adv && c.dtypes && c.kind === 'array' && !c.mutation).length;
  process.stdout.write(`done ${JSON.stringify({ failures: failures.length, adversarial, anchorFree, half })}\n`);
}

function runCase(yd, h, c) {
  const r = h.rng(c.valueSeed);
  const af = c.afHead && c.layout !== 'nahwc' ? c.afHead : null;
  const afK = af ? 4 * af.regMax + c.C : 0;
  const shapes = c.grids.map(([H, W]) => (af ? (c.layout === 'nchw' ? [c.B, afK, H, W] : [c.B, H, W, afK])
    : h.headShape(c.layout, c.B, c.A, c.C, H, W)));
  const heads = h.makeHeads(r, shapes, c.spread);
  let student = heads.student;
  let teacher = heads.teacher;
  const half = c.dtypes && c.kind === 'array' && !c.mutation ? c.dtypes : null;
  if (half) {
    student = heads.student.map((x) => h.headOfDtype(x, half[0]));
    teacher = heads.teacher.map((x) => h.headOfDtype(x, half[1]));
  }
  const made = [];
  const asTensor = (x) => {
    const t = yd.Tensor.fromFloat32Array(x.data, x.shape);
    made.push(t);
    return t;
  };
  if (c.kind === 'tensor') {
    student = student.map(asTensor);
    teacher = teacher.map(asTensor);
  } else if (c.kind === 'mixed') {
    student = student.map((x, s) => (s % 2 ? asTensor(x) : x));
  }
  const opts = { numClasses: c.C, numAnchors: c.A, layout: c.layout };
  if (c.lambda !== null) opts.lambda = c.lambda;
  if (c.gradScale !== null) opts.gradScale = c.gradScale;
  if (c.weights !== null) opts.weights = c.weights;
  if (c.grad !== null) opts.grad = c.grad;
  if (c.threads !== null) opts.threads = c.threads;
  if (c.variant !== null) Object.assign(opts, c.variant);
  if (af) {
    delete opts.numAnchors;
    for (const k of ['preset', 'boxTarget', 'objTarget']) delete opts[k];
    Object.assign(opts, { head: 'anchorFree', regMax: af.regMax, boxTemperature: af.boxTemperature });
  }
  if (c.gradOut) opts.gradOut = heads.student.map((x) => (x === heads.student[0] && student[0] === x ? new Float32Array(x.data.length) : null));

  const m = c.mutation;
  const firstArray = heads.student[0];
  switch (m) {
    case 'numClassesZero': opts.numClasses = 0; break;
    case 'numClassesString': opts.numClasses = String(c.C); break;
    case 'numAnchorsFraction': opts.numAnchors = c.A + 0.5; break;
    case 'badLayout': opts.layout = 'nchwc'; break;
    case 'negativeLambda': opts.lambda = -1 - c.spread; break;
    case 'nanGradScale': opts.gradScale = NaN; break;
    case 'weightsString': opts.weights = { cls: 'x' }; break;
    case 'threadsTooMany': opts.threads = 4096; break;
    case 'wrongChannels': opts.numClasses = c.C + 1; break;
    case 'teacherGrid': {
      const s = heads.teacher[0].shape.slice();
      s[2] += 1;
      teacher = [{ data: new Float32Array(h.numel(s)), shape: s }, ...teacher.slice(1)];
      break;
    }
    case 'dropTeacherScale': teacher = teacher.slice(1).concat(teacher.length === 1 ? [teacher[0], teacher[0]] : []); break;
    case 'dataShort': student = [{ data: firstArray.data.subarray(1), shape: firstArray.shape }, ...student.slice(1)]; break;
    case 'float64Data': student = [{ data: Float64Array.from(firstArray.data), shape: firstArray.shape }, ...student.slice(1)]; break;
    case 'detachedData': {
      const d = firstArray.data.slice();
      structuredClone(d.buffer, { transfer: [d.buffer] });
      student = [{ data: d, shape: firstArray.shape }, ...student.slice(1)];
      break;
    }
    case 'disposedTensor': {
      const t = asTensor(firstArray);
      t.dispose();
      student = [t, ...student.slice(1)];
      break;
    }
    case 'zeroDim': student = [{ data: new Float32Array(0), shape: firstArray.shape.map((d, k) => (k === 2 ? 0 : d)) }, ...student.slice(1)]; break;
    case 'fractionalDim': student = [{ data: firstArray.data, shape: firstArray.shape.map((d, k) => (k === 0 ? d + 0.5 : d)) }, ...student.slice(1)]; break;
    case 'wrongRank': student = [{ data: firstArray.data, shape: [h.numel(firstArray.shape)] }, ...student.slice(1)]; break;
    case 'nullHead': student = [null, ...student.slice(1)]; break;
    case 'optionsNull': break;
    case 'gradOutShort': opts.grad = true; opts.gradOut = shapes.map((s) => new Float32Array(h.numel(s) - 1)); break;
    case 'gradOutAliasesStudent':
      opts.grad = true;
      student = [firstArray, ...heads.student.slice(1)];
      opts.gradOut = [firstArray.data, ...shapes.slice(1).map(() => null)];
      break;
    case 'checkFiniteNaN': {
      const d = heads.teacher[0].data.slice();
      d[d.length >> 1] = NaN;
      teacher = [{ data: d, shape: heads.teacher[0].shape }, ...teacher.slice(1)];
      opts.checkFinite = true;
      break;
    }
    case 'cudaDevice': opts.device = 'cuda'; break;
    default: break;
  }
  const finalOpts = m === 'optionsNull' ? null : opts;
  try {
    if (m) {
      try {
        yd.distillationLoss(student, teacher, finalOpts);
      } catch (e) {
        const [cls, code] = MUTATIONS[m];
        if (e.constructor.name !== cls || e.code !== code) return `${m}: expected ${cls} ${code}, got ${e.constructor.name} ${e.code}: ${e.message}`;
        return null;
      }
      if (m === 'cudaDevice' && yd.backendInfo().cuda) return null;
      return `${m}: expected ${MUTATIONS[m][1]}, the call succeeded`;
    }
    const f = yd.distillationLoss(student, teacher, finalOpts);
    const ref = yd.distillationLoss(student, teacher, { ...finalOpts, gradOut: undefined, impl: 'reference' });
    const scale = Math.max(Math.abs(ref.loss), 1e-30);
    if (!(Math.abs(f.loss - ref.loss) <= 1e-5 * scale + 1e-12)) return `loss ${f.loss} vs reference ${ref.loss}`;
    if ((f.grads === null) !== (ref.grads === null)) return 'grads null mismatch';
    if (f.grads) {
      for (let s = 0; s < f.grads.length; s++) {
        const sd = half ? half[0] : 'float32';
        const a = f.grads[s] instanceof yd.Tensor ? f.grads[s].toFloat32Array() : h.valuesOf(f.grads[s], sd);
        const b = ref.grads[s] instanceof yd.Tensor ? ref.grads[s].toFloat32Array() : h.valuesOf(ref.grads[s], sd);
        // 16-bit gradients: each side rounds its fp32/fp64 value once (2 units in the last place).
        const rtol = sd === 'float16' ? 2 ** -9 : sd === 'bfloat16' ? 2 ** -6 : 1e-5;
        const atol = (sd === 'float16' ? 1.2e-7 : 1e-6) * Math.max(1, Math.abs(c.gradScale ?? 1));
        const { worst, at } = h.worstViolation(a, b, atol, rtol);
        if (!(worst <= 0)) return `grad ${s}[${at}]: ${a[at]} vs reference ${b[at]}`;
        if (opts.gradOut && opts.gradOut[s] && f.grads[s] !== opts.gradOut[s]) return 'gradOut not returned';
      }
      for (const g of [...f.grads, ...ref.grads]) if (g instanceof yd.Tensor) g.dispose();
    }
    return null;
  } catch (e) {
    return `valid call threw ${e.constructor.name} ${e.code}: ${e.message}`;
  } finally {
    made.forEach((t) => t.dispose());
  }
}

// One adversarial case: the expected outcome is known up front (a coded error,
// or the result of the same call on untouched copies); the output must be that.
async function runAdversarial(yd, h, c) {
  const adv = c.adv;
  const r = h.rng(c.valueSeed);
  const shapes = c.grids.map(([H, W]) => h.headShape(c.layout, c.B, c.A, c.C, H, W));
  const heads = h.makeHeads(r, shapes, c.spread);
  const S = shapes.length;
  const s = Math.min(adv.scale, S - 1);
  const opts = { numClasses: c.C, numAnchors: c.A, layout: c.layout, grad: true };
  if (c.variant !== null) Object.assign(opts, c.variant);
  opts.gradOut = shapes.map((sh) => new Float32Array(h.numel(sh)));
  // What an untouched call gives (copies: the adversarial call may detach the originals).
  const copy = (x) => ({ data: x.data.slice(), shape: x.shape.slice() });
  const expected = yd.distillationLoss(heads.student.map(copy), heads.teacher.map(copy), { ...opts, gradOut: undefined });

  const targetArray = () => (adv.target === 'student' ? heads.student[s].data : adv.target === 'teacher' ? heads.teacher[s].data : opts.gradOut[s]);
  const detach = () => {
    const buf = targetArray().buffer;
    if (buf.byteLength > 0) structuredClone(buf, { transfer: [buf] });
  };
  let student = heads.student.slice();
  let teacher = heads.teacher.slice();
  let options = opts;
  let want = 'ok';
  const getterHead = (x, hooks) => {
    const o = {};
    Object.defineProperty(o, 'data', { get() { hooks.data?.(); return x.data; }, enumerable: true });
    Object.defineProperty(o, 'shape', { get() { hooks.shape?.(); return x.shape; }, enumerable: true });
    return o;
  };
  const other = S > 1 ? (s + 1) % S : s; // a head read before or after the target's
  switch (adv.point) {
    case 'dataGetter': student[other] = getterHead(heads.student[other], { data: detach }); want = 'ERR_DETACHED_BUFFER'; break;
    case 'shapeGetter': teacher[other] = getterHead(heads.teacher[other], { shape: detach }); want = 'ERR_DETACHED_BUFFER'; break;
    case 'shapeElement': {
      const sh = heads.teacher[other].shape.slice();
      const d0 = sh[0];
      Object.defineProperty(sh, 0, { get() { detach(); return d0; } });
      teacher[other] = { data: heads.teacher[other].data, shape: sh };
      want = 'ERR_DETACHED_BUFFER';
      break;
    }
    case 'optionGetter': {
      options = { ...opts };
      Object.defineProperty(options, 'lambda', { get() { detach(); return 10; }, enumerable: true });
      want = 'ERR_DETACHED_BUFFER';
      break;
    }
    case 'gradOutGetter': {
      options = { ...opts };
      delete options.gradOut;
      const go = opts.gradOut;
      Object.defineProperty(options, 'gradOut', { get() { detach(); return go; }, enumerable: true });
      want = 'ERR_DETACHED_BUFFER';
      break;
    }
    case 'gradOutElement': {
      const list = opts.gradOut.slice();
      const last = list[S - 1];
      Object.defineProperty(list, S - 1, { get() { detach(); return last; } });
      options = { ...opts, gradOut: list };
      want = 'ERR_DETACHED_BUFFER';
      break;
    }
    case 'proxyHead':
      student[other] = new Proxy(heads.student[other], { get(t, k) { if (k === 'shape') detach(); return t[k]; } });
      want = 'ERR_DETACHED_BUFFER';
      break;
    case 'proxyOptions':
      options = new Proxy(opts, { get(t, k) { if (k === 'weights') detach(); return t[k]; } });
      want = 'ERR_DETACHED_BUFFER';
      break;
    case 'harmlessGetters':
      student = heads.student.map((x) => getterHead(x, {}));
      teacher = heads.teacher.map((x) => new Proxy(x, {}));
      break;
    case 'resizable': {
      const a = targetArray();
      const ab = new ArrayBuffer(a.byteLength, { maxByteLength: a.byteLength * 2 });
      const b = new Float32Array(ab);
      b.set(a);
      if (adv.target === 'student') student[s] = { data: b, shape: heads.student[s].shape };
      else if (adv.target === 'teacher') teacher[s] = { data: b, shape: heads.teacher[s].shape };
      else options = { ...opts, gradOut: opts.gradOut.map((g, k) => (k === s ? b : g)) };
      want = 'ERR_RESIZABLE_BUFFER';
      break;
    }
    case 'transferAsync': break; // below
    default: break;
  }
  let got;
  try {
    if (adv.point === 'transferAsync') {
      const pending = yd.distillationLossAsync(student, teacher, options);
      detach(); // marked untransferable for the call: the transfer copies
      if (global.gc) global.gc();
      got = await pending;
    } else if (adv.async) {
      got = await yd.distillationLossAsync(student, teacher, options);
    } else {
      got = yd.distillationLoss(student, teacher, options);
    }
  } catch (e) {
    if (want === 'ok') return `${adv.point}: valid call threw ${e.constructor.name} ${e.code}: ${e.message}`;
    if (e.code !== want || e.constructor.name !== 'TypeError') return `${adv.point}: expected TypeError ${want}, got ${e.constructor.name} ${e.code}: ${e.message}`;
    return null;
  }
  if (want !== 'ok') return `${adv.point}: expected ${want}, the call succeeded`;
  if (got.loss !== expected.loss) return `${adv.point}: loss ${got.loss} vs untouched ${expected.loss}`;
  for (let k = 0; k < S; k++) {
    if (!h.sameBits(got.grads[k], expected.grads[k])) return `${adv.point}: grad ${k} differs from the untouched call`;
    if (got.grads[k] !== opts.gradOut[k] && adv.point !== 'resizable') return `${adv.point}: gradOut ${k} not returned`;
  }
  return null;
}

function supervise() {
  const t0 = Date.now();
  let from = 0;
  let failed = 0;
  let crashes = 0;
  const notes = [];
  while (from < RUNS) {
    const extra = argv.includes('--inject-crash-at') ? ['--inject-crash-at', String(arg('--inject-crash-at', -1))] : [];
    const r = spawnSync(process.execPath, ['--expose-gc', __filename, '--child', '--seed', String(SEED), '--runs', String(RUNS), '--from', String(from), ...extra], {
      encoding: 'utf8', maxBuffer: 1 << 26,
    });
    const lines = r.stdout.split('\n');
    failed += lines.filter((l) => l.startsWith('FAIL')).length;
    notes.push(...lines.filter((l) => l.startsWith('FAIL') || l.startsWith('  {')).slice(0, 20));
    const done = lines.find((l) => l.startsWith('done'));
    if (done) {
      const d = JSON.parse(done.slice(5));
      notes.push(`adversarial JavaScript cases (getters, Proxies, transfers, resizable buffers): ${d.adversarial}`);
      notes.push(`anchor-free head cases: ${d.anchorFree}; half-precision array cases: ${d.half}`);
      break;
    }
    // The child died (a native crash or an abort): the case it was on fails.
    const last = lines.filter((l) => l.startsWith('case ')).pop();
    const at = last ? Number(last.slice(5)) : from;
    crashes++;
    failed++;
    notes.push(`CRASH at case ${at} (signal ${r.signal}, status ${r.status}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
    from = at + 1;
  }
  for (const n of notes) console.log(n);
  console.log(`fuzz: seed ${SEED} (replay: node test/reliability/fuzz.js --seed ${SEED} --runs ${RUNS}), ${RUNS} cases in ${((Date.now() - t0) / 1000).toFixed(1)} s, native crashes ${crashes}`);
  console.log(`${RUNS - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

if (argv.includes('--child')) child();
else supervise();
