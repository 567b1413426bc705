#!/usr/bin/env node
'use strict';
// A distillation pipeline in Node, end to end: an ONNX teacher run by
// onnxruntime-node, TensorFlow.js students trained through yolo-distill/tfjs on
// unlabelled images, and mAP on a held-out set, for the arms of the paper's
// ablation in miniature. See README.md, "Does it help?".
//   npm run example:pipeline [-- --quick] [-- --seed 1 --steps 600 --out DIR]
const fs = require('fs');
const path = require('path');
const { performance } = require('perf_hooks');

const config = require('./config.json');
const { namedSet, rng } = require('./data');
const { decode, nms, meanAveragePrecision } = require('./metrics');
const { yoloLoss } = require('./targets');
const { makeStudent } = require('./student');
const { writeSvg } = require('./svg');

const REGENERATE = 'node examples/pipeline/export-data.js teacher /tmp/yd-teacher-set && '
  + '/usr/bin/python3 examples/pipeline/train_teacher.py /tmp/yd-teacher-set';

class UsageError extends Error {}

const ARMS = [
  { id: 'gt-only', label: '(0) ground truth only (small labelled set)', gt: true },
  { id: 'mse-all-cells', label: '(1) unweighted MSE on all cells', distill: { weighted: { box: false, obj: false, cls: false } } },
  { id: 'objectness-scaled', label: '(2) objectness-scaled (default)', distill: {} },
  { id: 'paper', label: "(3) preset 'paper'", distill: { preset: 'paper' } },
  { id: 'paper-fmnms', label: "(4) preset 'paper' + fmNms", distill: { preset: 'paper', fmNms: true } },
  { id: 'gt+distill', label: '(5) ground truth + objectness-scaled', gt: true, distill: {} },
];

function parseArgs(argv) {
  const a = { quick: false, seed: 1, steps: undefined, batch: 32, lr: 3e-3, evals: undefined,
    teacher: path.join(__dirname, 'teacher.onnx'), out: __dirname, arms: ARMS.map((x) => x.id) };
  const num = (flag, v, min) => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min || (min >= 1 && !Number.isInteger(n))) {
      throw new UsageError(`${flag} needs a number >= ${min}, got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    switch (f) {
      case '--quick': a.quick = true; break;
      case '--seed': a.seed = num(f, argv[++i], 0); break;
      case '--steps': a.steps = num(f, argv[++i], 1); break;
      case '--batch': a.batch = num(f, argv[++i], 1); break;
      case '--lr': a.lr = num(f, argv[++i], 0); break;
      case '--evals': a.evals = num(f, argv[++i], 1); break;
      case '--teacher': a.teacher = argv[++i]; if (!a.teacher) throw new UsageError('--teacher needs a path'); break;
      case '--out': a.out = argv[++i]; if (!a.out) throw new UsageError('--out needs a directory'); break;
      case '--arms': {
        const v = argv[++i] || '';
        a.arms = v.split(',').filter(Boolean);
        const bad = a.arms.filter((x) => !ARMS.some((arm) => arm.id === x));
        if (bad.length || !a.arms.length) throw new UsageError(`--arms takes a comma-separated list of ${ARMS.map((x) => x.id).join(', ')}; got ${JSON.stringify(v)}`);
        break;
      }
      case '--help': case '-h':
        throw new UsageError('');
      default:
        throw new UsageError(`unknown flag ${JSON.stringify(f)}`);
    }
  }
  a.steps = a.steps ?? (a.quick ? 60 : 600);
  a.evals = a.evals ?? (a.quick ? 2 : 6);
  a.sizes = a.quick ? { unlabelled: 512, test: 200 } : { unlabelled: undefined, test: undefined };
  return a;
}

const USAGE = `usage: npm run example:pipeline [-- options]
  --quick            a short run (CI): ${60} steps per arm, smaller unlabelled and test sets
  --seed N           seed of the students' initial weights and batch order (default 1)
  --steps N          training steps per arm (default 600)
  --batch N          images per step (default 32)
  --lr X             Adam learning rate (default 0.003)
  --evals N          test-set evaluations per arm, for the curves (default 6)
  --arms a,b         a subset of: ${ARMS.map((x) => x.id).join(', ')}
  --teacher FILE     the ONNX teacher (default examples/pipeline/teacher.onnx)
  --out DIR          where results.json and results.svg go (default examples/pipeline)`;

/** Loads the ONNX teacher and checks its outputs against config.json's heads. */
async function loadTeacher(ort, file) {
  if (!fs.existsSync(file)) {
    throw new UsageError(`teacher model not found: ${file}\n  It ships in the repository as examples/pipeline/teacher.onnx; to regenerate it run:\n  ${REGENERATE}`);
  }
  let session;
  try {
    session = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  } catch (e) {
    throw new UsageError(`teacher model ${file} cannot be loaded by onnxruntime-node (${String(e.message).split('\n')[0]})\n  Restore it (git checkout examples/pipeline/teacher.onnx) or regenerate it:\n  ${REGENERATE}`);
  }
  const S = config.imageSize, K = 5 + config.numClasses;
  const expected = config.strides.map((st, s) => [1, config.anchors[s].length, S / st, S / st, K]);
  if (session.inputNames.length !== 1 || session.outputNames.length !== expected.length) {
    throw new UsageError(`teacher model ${file} has inputs [${session.inputNames}] and outputs [${session.outputNames}]; `
      + `expected one input (images [B, 3, ${S}, ${S}]) and ${expected.length} outputs, one per scale (nahwc ${expected.map((e) => '[' + e.join(', ') + ']').join(', ')})`);
  }
  let out;
  try {
    out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', new Float32Array(3 * S * S), [1, 3, S, S]) });
  } catch (e) {
    throw new UsageError(`teacher model ${file} does not run on images [1, 3, ${S}, ${S}] (${String(e.message).split('\n')[0]})`);
  }
  session.outputNames.forEach((name, s) => {
    const dims = Array.from(out[name].dims);
    if (dims.join() !== expected[s].join() || out[name].type !== 'float32') {
      throw new UsageError(`teacher output '${name}' (scale ${s}, stride ${config.strides[s]}) is ${out[name].type} [${dims.join(', ')}]; `
        + `the declared head is float32 nahwc [${expected[s].join(', ')}] (config.json: anchors, numClasses, strides)`);
    }
  });
  return session;
}

/** NHWC images [n, S, S, 3] (a slice) -> NCHW Float32Array, as a PyTorch-exported model takes them. */
function toNchw(images, from, count, S) {
  const out = new Float32Array(count * 3 * S * S);
  for (let b = 0; b < count; b++) {
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) for (let c = 0; c < 3; c++) {
      out[((b * 3 + c) * S + y) * S + x] = images[(((from + b) * S + y) * S + x) * 3 + c];
    }
  }
  return out;
}

/** nahwc [B, A, G, G, K] -> nhwc [B, G, G, A*K]: the teacher's heads in the students' layout. */
function nahwcToNhwc(src, B, A, G, K) {
  const dst = new Float32Array(src.length);
  for (let b = 0; b < B; b++) for (let a = 0; a < A; a++) for (let y = 0; y < G; y++) for (let x = 0; x < G; x++) {
    const i = (((b * A + a) * G + y) * G + x) * K, o = (((b * G + y) * G + x) * A + a) * K;
    for (let k = 0; k < K; k++) dst[o + k] = src[i + k];
  }
  return dst;
}

/** Runs the teacher over a set: per scale one Float32Array in nahwc and one in nhwc, and seconds per image. */
async function runTeacher(ort, session, set, batch = 64) {
  const S = config.imageSize, K = 5 + config.numClasses;
  const scales = config.strides.map((st, s) => ({ G: S / st, A: config.anchors[s].length }));
  const nahwc = scales.map(({ G, A }) => new Float32Array(set.n * A * G * G * K));
  let seconds = 0;
  for (let from = 0; from < set.n; from += batch) {
    const count = Math.min(batch, set.n - from);
    const input = new ort.Tensor('float32', toNchw(set.images, from, count, S), [count, 3, S, S]);
    const t0 = performance.now();
    const out = await session.run({ [session.inputNames[0]]: input });
    seconds += (performance.now() - t0) / 1000;
    session.outputNames.forEach((name, s) => { nahwc[s].set(out[name].data, from * out[name].data.length / count); });
  }
  const nhwc = nahwc.map((d, s) => nahwcToNhwc(d, set.n, scales[s].A, scales[s].G, K));
  return { nahwc, nhwc, secondsPerImage: seconds / set.n };
}

/**
 * mAP on a set, and the share of all anchor cells whose objectness is above 0.5
 * (the teacher's share is the reference: a student far above it fires on
 * background, far below it misses objects).
 */
function evaluate(heads, layout, set) {
  const dets = decode(heads, layout, set.n, config).map((d) => nms(d));
  const r = meanAveragePrecision(dets, set.labels, config.numClasses);
  const K = 5 + config.numClasses;
  let on = 0, cells = 0;
  for (const h of heads) {
    for (let i = 4; i < h.length; i += K) { cells++; if (h[i] > 0) on++; }
  }
  return { map50: r.map50, map5095: r.map5095, objectnessAboveHalf: on / cells };
}

function studentHeads(tf, student, set) {
  const S = config.imageSize, K = 5 + config.numClasses;
  const heads = config.strides.map((st, s) => new Float32Array(set.n * (S / st) ** 2 * config.anchors[s].length * K));
  for (let from = 0; from < set.n; from += 100) {
    const count = Math.min(100, set.n - from);
    tf.tidy(() => {
      const x = tf.tensor4d(set.images.subarray(from * S * S * 3, (from + count) * S * S * 3), [count, S, S, 3]);
      student.forward(x).forEach((h, s) => heads[s].set(h.dataSync(), from * h.size / count));
    });
  }
  return heads;
}

/** Gathers rows (images, or per-image head blocks) of `src` for the batch `idx`. */
function gather(src, idx, per) {
  const out = new Float32Array(idx.length * per);
  idx.forEach((j, b) => out.set(src.subarray(j * per, (j + 1) * per), b * per));
  return out;
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let ort, tf;
  try {
    ort = require('onnxruntime-node');
    tf = require('@tensorflow/tfjs');
    require('@tensorflow/tfjs-backend-wasm');
  } catch (e) {
    throw new UsageError(`the pipeline needs onnxruntime-node, @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm (dev dependencies): run npm ci (${String(e.message).split('\n')[0]})`);
  }
  const { distillationLoss } = require('../../dist');
  const { tfDistillationLoss } = require('../../dist/tfjs');
  const t0 = performance.now();
  const log = (...m) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s]`, ...m);

  const session = await loadTeacher(ort, args.teacher);
  await tf.setBackend('wasm');
  await tf.ready();
  const S = config.imageSize, K = 5 + config.numClasses, A = config.anchors[0].length;
  const grids = config.strides.map((st) => S / st);
  const perImage = grids.map((G, s) => G * G * config.anchors[s].length * K);

  const labelled = namedSet('labelled');
  const unlabelled = namedSet('unlabelled', args.sizes.unlabelled);
  const test = namedSet('test', args.sizes.test);
  log(`data: ${labelled.n} labelled, ${unlabelled.n} unlabelled, ${test.n} test images (${S}x${S}, ${config.numClasses} classes)`);

  const tTest = await runTeacher(ort, session, test);
  const teacherMap = evaluate(tTest.nahwc, 'nahwc', test);
  const tUnl = await runTeacher(ort, session, unlabelled);
  log(`teacher (onnxruntime-node): mAP@0.5 ${teacherMap.map50.toFixed(3)}, mAP@0.5:0.95 ${teacherMap.map5095.toFixed(3)}; `
    + `${(tUnl.secondsPerImage * 1e3).toFixed(2)} ms per image`);

  const baseOptions = { numClasses: config.numClasses, numAnchors: A, layout: 'nhwc' };
  const evalAt = new Set(Array.from({ length: args.evals }, (_, i) => Math.round(((i + 1) * args.steps) / args.evals)));
  const results = [];
  let profile = null;
  let studentParameters = 0;
  for (const arm of ARMS.filter((x) => args.arms.includes(x.id))) {
    const student = makeStudent(tf, args.seed);
    studentParameters = student.parameters; // the same model in every arm
    const optimizer = tf.train.adam(args.lr);
    const order = rng(args.seed * 1000 + 7);
    const pick = (n) => Array.from({ length: args.batch }, () => Math.floor(order() * n));
    const curve = [{ step: 0, ...evaluate(studentHeads(tf, student, test), 'nhwc', test) }];
    const distillLosses = [];
    const ta = performance.now();
    for (let step = 1; step <= args.steps; step++) {
      const gtIdx = arm.gt ? pick(labelled.n) : null;
      const unIdx = arm.distill ? pick(unlabelled.n) : null;
      let distillValue = null;
      tf.tidy(() => {
        optimizer.minimize(() => {
          let loss = tf.scalar(0);
          if (gtIdx) {
            const x = tf.tensor4d(gather(labelled.images, gtIdx, S * S * 3), [args.batch, S, S, 3]);
            loss = tf.add(loss, yoloLoss(tf, student.forward(x), gtIdx.map((j) => labelled.labels[j])));
          }
          if (unIdx) {
            const x = tf.tensor4d(gather(unlabelled.images, unIdx, S * S * 3), [args.batch, S, S, 3]);
            const teacher = tUnl.nhwc.map((d, s) => tf.tensor4d(gather(d, unIdx, perImage[s]), [args.batch, grids[s], grids[s], A * K]));
            const d = tfDistillationLoss(student.forward(x), teacher, { ...baseOptions, ...arm.distill });
            distillValue = d.dataSync()[0]; // computed already: the adapter's forward is the fused call
            loss = tf.add(loss, d);
          }
          return loss;
        });
        if (distillValue !== null) distillLosses.push(distillValue);
      });
      if (evalAt.has(step)) {
        const m = evaluate(studentHeads(tf, student, test), 'nhwc', test);
        curve.push({ step, ...m });
        log(`${arm.id.padEnd(18)} step ${String(step).padStart(4)}: mAP@0.5 ${m.map50.toFixed(3)}, mAP@0.5:0.95 ${m.map5095.toFixed(3)}`
          + (distillLosses.length ? `, distillation loss ${distillLosses[distillLosses.length - 1].toExponential(3)}` : ''));
      }
    }
    const seconds = (performance.now() - ta) / 1000;
    const last = curve[curve.length - 1];
    const tail = distillLosses.slice(-20);
    results.push({
      id: arm.id, label: arm.label, options: arm.distill ? { ...baseOptions, ...arm.distill } : null, groundTruth: !!arm.gt,
      map50: last.map50, map5095: last.map5095, objectnessAboveHalf: last.objectnessAboveHalf,
      finalDistillationLoss: tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : null,
      wallSeconds: Number(seconds.toFixed(2)), steps: args.steps, curve,
    });
    if (arm.id === 'objectness-scaled') profile = profileStep(tf, student, optimizer, tUnl, unlabelled, args, baseOptions, perImage, grids, distillationLoss, tfDistillationLoss);
    student.dispose();
    optimizer.dispose();
  }

  const out = {
    command: 'npm run example:pipeline' + (process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''),
    seed: args.seed, quick: args.quick, steps: args.steps, batch: args.batch, lr: args.lr,
    data: { imageSize: S, numClasses: config.numClasses, labelled: labelled.n, unlabelled: unlabelled.n, test: test.n },
    teacher: { file: path.relative(process.cwd(), args.teacher), ...teacherMap, msPerImage: Number((tUnl.secondsPerImage * 1e3).toFixed(3)) },
    student: { parameters: studentParameters, backend: tf.getBackend() },
    arms: results,
    profile,
    node: process.version, wallSeconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
  };
  fs.mkdirSync(args.out, { recursive: true });
  fs.writeFileSync(path.join(args.out, 'results.json'), JSON.stringify(out, null, 2) + '\n');
  writeSvg(path.join(args.out, 'results.svg'), out);
  log(`wrote ${path.join(args.out, 'results.json')} and results.svg`);
  const pct = (v) => (100 * v).toFixed(1) + ' %';
  console.log('\n| arm | mAP@0.5 | mAP@0.5:0.95 | cells with objectness > 0.5 | final distillation loss | s |');
  console.log('|---|---|---|---|---|---|');
  console.log(`| teacher (ONNX) | ${teacherMap.map50.toFixed(3)} | ${teacherMap.map5095.toFixed(3)} | ${pct(teacherMap.objectnessAboveHalf)} | | |`);
  for (const r of results) {
    console.log(`| ${r.label} | ${r.map50.toFixed(3)} | ${r.map5095.toFixed(3)} | ${pct(r.objectnessAboveHalf)} | ${r.finalDistillationLoss === null ? '' : r.finalDistillationLoss.toExponential(3)} | ${r.wallSeconds} |`);
  }
  if (profile) console.log('\nstep profile:', JSON.stringify(out.profile));
}

/**
 * Where a distillation step's time goes (medians over 15 steps, after 3 warm-up):
 * the whole step; the student's forward/backward alone (a loss that costs
 * nothing); the loss through the tfjs adapter (forward + gradient, copies
 * included); the fused call alone on Float32Arrays.
 */
function profileStep(tf, student, optimizer, tUnl, unlabelled, args, options, perImage, grids, distillationLoss, tfDistillationLoss) {
  const S = config.imageSize, K = 5 + config.numClasses, A = config.anchors[0].length, B = args.batch;
  const idx = Array.from({ length: B }, (_, i) => i % unlabelled.n);
  const x = tf.tensor4d(gather(unlabelled.images, idx, S * S * 3), [B, S, S, 3]);
  const tArrays = tUnl.nhwc.map((d, s) => gather(d, idx, perImage[s]));
  const teacher = tArrays.map((d, s) => tf.tensor4d(d, [B, grids[s], grids[s], A * K]));
  const time = (fn) => {
    const ts = [];
    for (let i = 0; i < 18; i++) { const t = performance.now(); fn(); if (i >= 3) ts.push(performance.now() - t); }
    return median(ts);
  };
  const sgd = tf.train.sgd(0); // a zero step: the weights stay as they are
  const step = time(() => tf.tidy(() => { sgd.minimize(() => tfDistillationLoss(student.forward(x), teacher, options)); }));
  const studentOnly = time(() => tf.tidy(() => {
    sgd.minimize(() => student.forward(x).reduce((acc, h) => tf.add(acc, tf.sum(tf.mul(h, 0))), tf.scalar(0)));
  }));
  const heads = tf.tidy(() => student.forward(x));
  const lossGrad = tf.grads((...h) => tfDistillationLoss(h, teacher, options));
  const adapter = time(() => tf.tidy(() => { lossGrad(heads).forEach((g) => g.dataSync()); }));
  const hArrays = heads.map((h) => h.dataSync());
  const shapes = heads.map((h) => h.shape);
  const direct = time(() => distillationLoss(hArrays.map((d, s) => ({ data: d, shape: shapes[s] })), tArrays.map((d, s) => ({ data: d, shape: shapes[s] })), options));
  [x, ...teacher, ...heads].forEach((t) => t.dispose());
  sgd.dispose();
  const r = (v) => Number(v.toFixed(3));
  return {
    batch: B, stepMs: r(step), studentForwardBackwardMs: r(studentOnly), lossThroughAdapterMs: r(adapter), fusedCallMs: r(direct),
    lossShareOfStep: r(adapter / step), adapterOverMs: r(adapter - direct),
  };
}

main().catch((e) => {
  if (e instanceof UsageError) {
    console.error(e.message === '' ? USAGE : `example:pipeline: ${e.message}${/flag|needs a|--arms/.test(e.message) ? '\n\n' + USAGE : ''}`);
    process.exit(2);
  }
  console.error(e);
  process.exit(1);
});
