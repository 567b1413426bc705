'use strict';
// examples/pipeline: the students' ground-truth targets and YOLO loss agree with
// the teacher's training script (train_teacher.py, PyTorch); bad input gives one
// clear message, not a stack trace; results.json checks catch malformed files.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const tf = require('@tensorflow/tfjs');

const { buildTargets, yoloLoss } = require('../examples/pipeline/targets');
const { namedSet, config } = require('../examples/pipeline/data');
const { check } = require('../examples/pipeline/check-results');

const ROOT = path.join(__dirname, '..');
const RUN = path.join(ROOT, 'examples', 'pipeline', 'run.js');
const PY = '/usr/bin/python3';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'yd-pipeline-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function py(code, input) {
  const r = spawnSync(PY, ['-c', code], { input, encoding: 'utf8', cwd: path.join(ROOT, 'examples', 'pipeline'), maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout;
}

function run(args) {
  return spawnSync(process.execPath, [RUN, ...args], { encoding: 'utf8', cwd: ROOT, timeout: 60000 });
}

const noStack = (s) => expect(s).not.toMatch(/^\s+at /m);

describe('ground-truth loss: tfjs (targets.js) against PyTorch (train_teacher.py)', () => {
  const set = namedSet('labelled', 24);
  const labels = set.labels;
  const K = 5 + config.numClasses;
  const grids = config.strides.map((s) => config.imageSize / s);
  const A = config.anchors[0].length;
  // Random heads, nhwc for tfjs; nahwc for PyTorch.
  let seed = 5;
  const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  const heads = grids.map((G) => Float32Array.from({ length: labels.length * G * G * A * K }, () => (rand() - 0.5) * 6));
  const nahwc = heads.map((h, s) => {
    const G = grids[s], out = [];
    for (let b = 0; b < labels.length; b++) for (let a = 0; a < A; a++) for (let y = 0; y < G; y++) for (let x = 0; x < G; x++) {
      for (let k = 0; k < K; k++) out.push(h[(((b * G + y) * G + x) * A + a) * K + k]);
    }
    return out;
  });
  const pyInput = JSON.stringify({ labels: labels.map((bs) => bs.map((b) => [b.cls, ...b.box])), heads: nahwc, grids, A, K });

  test('the same positives and box targets', () => {
    const got = JSON.parse(py(`
import json, sys, train_teacher as t
d = json.load(sys.stdin)
print(json.dumps([[list(k) + list(v) for k, v in sorted(s.items())] for s in t.assign(d['labels'])]))`, pyInput));
    const targets = buildTargets(labels);
    targets.forEach((t, s) => {
      const mine = [];
      for (let b = 0; b < labels.length; b++) for (let y = 0; y < t.G; y++) for (let x = 0; x < t.G; x++) for (let a = 0; a < t.A; a++) {
        const i = ((b * t.G + y) * t.G + x) * t.A + a;
        if (t.obj[i]) mine.push([b, a, y, x, ...t.box.subarray(i * 4, i * 4 + 4), t.cls.subarray(i * config.numClasses, (i + 1) * config.numClasses).indexOf(1)]);
      }
      mine.sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2] || p[3] - q[3]);
      expect(mine.length).toBe(got[s].length);
      expect(mine.length).toBeGreaterThan(0);
      mine.forEach((row, r) => row.forEach((v, k) => expect(v).toBeCloseTo(got[s][r][k], 5)));
    });
  });

  test('the same loss value', () => {
    const want = Number(py(`
import json, sys, torch, train_teacher as t
d = json.load(sys.stdin)
preds = [torch.tensor(h, dtype=torch.float64).view(len(d['labels']), d['A'], g, g, d['K']) for h, g in zip(d['heads'], d['grids'])]
print(repr(t.yolo_loss(preds, d['labels'])[0].item()))`, pyInput));
    const got = tf.tidy(() => yoloLoss(tf, heads.map((h, s) => tf.tensor4d(h, [labels.length, grids[s], grids[s], A * K])), labels).dataSync()[0]);
    expect(want).toBeGreaterThan(0);
    expect(Math.abs(got - want) / want).toBeLessThan(2e-5);
  });
});

describe("the student's layers with their own gradients (student.js) against tfjs' conv2d and matMul", () => {
  const { conv3x3, dense } = require('../examples/pipeline/student');
  test('a 3x3 convolution: value and both gradients', () => {
    const x = tf.randomNormal([2, 5, 4, 3], 0, 1, 'float32', 11);
    const W = tf.randomNormal([27, 6], 0, 1, 'float32', 12);
    const bias = tf.zeros([6]);
    const mine = tf.grads((a, w) => tf.sum(tf.mul(conv3x3(tf, a, w, bias), tf.range(0, 6).reshape([1, 1, 1, 6]))));
    const ref = tf.grads((a, w) => tf.sum(tf.mul(tf.conv2d(a, tf.reshape(w, [3, 3, 3, 6]), 1, 'same'), tf.range(0, 6).reshape([1, 1, 1, 6]))));
    const close = (p, q) => {
      expect(p.shape).toEqual(q.shape);
      const a = p.dataSync(), b = q.dataSync();
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])));
      expect(worst).toBeLessThan(1e-5);
    };
    close(conv3x3(tf, x, W, bias), tf.conv2d(x, tf.reshape(W, [3, 3, 3, 6]), 1, 'same'));
    const [gx, gw] = mine([x, W]), [rx, rw] = ref([x, W]);
    close(gx, rx);
    close(gw, rw);
    expect(tf.max(tf.abs(gx)).dataSync()[0]).toBeGreaterThan(0.1);
  });

  test('a dense layer: both gradients', () => {
    const x = tf.randomNormal([3, 4, 7], 0, 1, 'float32', 13), W = tf.randomNormal([7, 5], 0, 1, 'float32', 14), bias = tf.ones([5]);
    const [gx, gw] = tf.grads((a, w) => tf.sum(tf.square(dense(tf, a, w, bias))))([x, W]);
    const [rx, rw] = tf.grads((a, w) => tf.sum(tf.square(tf.add(tf.matMul(tf.reshape(a, [12, 7]), w), bias))))([x, W]);
    expect(Array.from(gx.dataSync())).toEqual(Array.from(tf.reshape(rx, [3, 4, 7]).dataSync()).map((v, i) => expect.closeTo(v, 4)));
    expect(Array.from(gw.dataSync())).toEqual(Array.from(rw.dataSync()).map((v) => expect.closeTo(v, 4)));
  });
});

describe('example:pipeline bad input: one clear message, exit code 2', () => {
  test('an unknown flag and a bad value', () => {
    let r = run(['--frobnicate']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown flag "--frobnicate"/);
    expect(r.stderr).toMatch(/usage: npm run example:pipeline/);
    noStack(r.stderr);
    r = run(['--steps', 'many']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--steps needs a number >= 1, got "many"/);
    r = run(['--arms', 'gt-only,bogus']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--arms takes a comma-separated list/);
  });

  test('a missing teacher model says how to regenerate it', () => {
    const r = run(['--teacher', path.join(tmp, 'nope.onnx')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/teacher model not found: .*nope\.onnx/);
    expect(r.stderr).toMatch(/train_teacher\.py/);
    noStack(r.stderr);
  });

  test('a corrupt teacher model', () => {
    const f = path.join(tmp, 'corrupt.onnx');
    fs.writeFileSync(f, Buffer.from('this is not an onnx model'.repeat(10)));
    const r = run(['--teacher', f]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/cannot be loaded by onnxruntime-node/);
    expect(r.stderr).toMatch(/git checkout examples\/pipeline\/teacher\.onnx/);
    noStack(r.stderr);
  });

  test('a teacher whose outputs do not match the declared heads', () => {
    const f = path.join(tmp, 'wrong.onnx');
    // Two outputs, as declared, but with 5 classes instead of 4 at stride 8.
    py(`
import torch
class M(torch.nn.Module):
    def forward(self, x):
        b = x.shape[0]
        return x.mean() + torch.zeros(b, 3, 8, 8, 10), x.mean() + torch.zeros(b, 3, 4, 4, 9)
torch.onnx.export(M(), torch.zeros(1, 3, 64, 64), ${JSON.stringify(f)}, input_names=['images'], output_names=['p8', 'p16'], opset_version=13)`);
    const r = run(['--teacher', f]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/teacher output 'p8' \(scale 0, stride 8\) is float32 \[1, 3, 8, 8, 10\]; the declared head is float32 nahwc \[1, 3, 8, 8, 9\]/);
    noStack(r.stderr);
  });
});

describe('example:pipeline is deterministic', () => {
  test('two short runs with the same seed give the same metrics, losses and curves', () => {
    const runOnce = (dir) => {
      const r = spawnSync(process.execPath, [RUN, '--quick', '--steps', '4', '--evals', '1', '--arms', 'gt-only,paper', '--out', dir],
        { encoding: 'utf8', cwd: ROOT, timeout: 110000 });
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(r.status).toBe(0);
      const res = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
      expect(check(res)).toEqual([]);
      return res;
    };
    const a = runOnce(path.join(tmp, 'run-a')), b = runOnce(path.join(tmp, 'run-b'));
    const strip = (r) => ({ teacher: [r.teacher.map50, r.teacher.map5095], arms: r.arms.map((x) => [x.id, x.map50, x.map5095, x.objectnessAboveHalf, x.finalDistillationLoss, x.curve]) });
    expect(strip(b)).toEqual(strip(a));
    expect(a.arms.map((x) => x.id)).toEqual(['gt-only', 'paper']);
    expect(a.arms[1].finalDistillationLoss).toBeGreaterThan(0);
  }, 240000);
});

describe('check-results.js', () => {
  const good = {
    teacher: { map50: 0.5, map5095: 0.3 }, steps: 10,
    arms: [{ id: 'a', label: 'A', options: {}, map50: 0.2, map5095: 0.1, wallSeconds: 1, steps: 10, finalDistillationLoss: 0.5, curve: [{ step: 0, map50: 0 }, { step: 10, map50: 0.2 }] }],
  };
  test('accepts a well-formed file and names what is wrong in a malformed one', () => {
    expect(check(good)).toEqual([]);
    const bad = JSON.parse(JSON.stringify(good));
    bad.arms[0].map50 = NaN;
    bad.arms[0].curve.pop();
    bad.teacher.map5095 = 2;
    const p = check(bad);
    expect(p.join('\n')).toMatch(/arms\[0\] \(a\)\.map50/);
    expect(p.join('\n')).toMatch(/curve: expected points from step 0 to step 10/);
    expect(p.join('\n')).toMatch(/teacher\.map5095/);
  });
});
