'use strict';
// Shared test helpers: a seeded PRNG, random cases, the PyTorch reference runner
// and tolerance checks. Tests run against the built package (dist/).
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const pkg = require('..');

/** mulberry32: a small seeded PRNG returning uniforms in [0, 1). */
function rng(seed) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    uniform,
    int: (lo, hi) => lo + Math.floor(uniform() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(uniform() * list.length)],
    randn: () => Math.sqrt(-2 * Math.log(uniform() + 1e-12)) * Math.cos(2 * Math.PI * uniform()),
  };
}

function headShape(layout, B, A, C, H, W) {
  return layout === 'nchw' ? [B, A * (5 + C), H, W] : [B, A, H, W, 5 + C];
}

function numel(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/** Random student/teacher heads for a case: logits ~ spread * N(0, 1), clipped to +-30. */
function makeHeads(r, shapes, spread) {
  const gen = () => Math.max(-30, Math.min(30, spread * r.randn()));
  const student = shapes.map((shape) => ({ data: Float32Array.from({ length: numel(shape) }, gen), shape }));
  const teacher = shapes.map((shape) => ({ data: Float32Array.from({ length: numel(shape) }, gen), shape }));
  return { student, teacher };
}

/** Distillation options of a case (as the public API takes them). */
function optionsOf(c) {
  const o = { numClasses: c.numClasses, numAnchors: c.numAnchors, layout: c.layout };
  if (c.lambda !== undefined) o.lambda = c.lambda;
  if (c.weights) o.weights = c.weights;
  if (c.gradScale !== undefined) o.gradScale = c.gradScale;
  return o;
}

const PYTHON = '/usr/bin/python3';

/** Whether Debian's python3-torch is usable; the reason when it is not. */
function torchAvailable() {
  const r = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  if (r.error) return { ok: false, reason: `${PYTHON} not found` };
  if (r.status !== 0) return { ok: false, reason: `${PYTHON} cannot import torch (apt-get install python3-torch)` };
  return { ok: true, reason: '' };
}

/**
 * Runs test/reference/torch_reference.py on the given cases. Each case:
 * { id, layout, numAnchors, numClasses, lambda, weights, gradScale, shapes, student, teacher }.
 * Returns per case { loss, box, obj, cls, scales, grads: Float32Array[] }.
 */
function runTorchReference(cases) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'yd-ref-'));
  try {
    const manifest = { cases: [] };
    for (const c of cases) {
      manifest.cases.push({
        id: c.id, layout: c.layout, numAnchors: c.numAnchors, numClasses: c.numClasses,
        lambda: c.lambda ?? 10, weights: c.weights ?? {}, gradScale: c.gradScale ?? 1,
        shapes: c.shapes, grad: true,
      });
      c.shapes.forEach((_, k) => {
        fs.writeFileSync(path.join(dir, `${c.id}.s${k}.student.f32`), Buffer.from(c.student[k].data.buffer));
        fs.writeFileSync(path.join(dir, `${c.id}.s${k}.teacher.f32`), Buffer.from(c.teacher[k].data.buffer));
      });
    }
    fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
    const script = path.join(__dirname, 'reference', 'torch_reference.py');
    const r = spawnSync(PYTHON, [script, dir], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (r.status !== 0) throw new Error(`torch reference failed: ${r.stderr || r.error}`);
    const out = {};
    for (const c of cases) {
      const res = JSON.parse(fs.readFileSync(path.join(dir, `${c.id}.result.json`), 'utf8'));
      res.grads = c.shapes.map((_, k) => {
        const b = fs.readFileSync(path.join(dir, `${c.id}.s${k}.grad.f32`));
        return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
      });
      out[c.id] = res;
    }
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Largest violation of |a - b| <= atol + rtol * |b| over two arrays (<= 0 means all pass). */
function worstViolation(a, b, atol, rtol) {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = -Infinity;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i] - b[i]) - (atol + rtol * Math.abs(b[i]));
    if (!(v <= worst)) {
      worst = v;
      at = i;
    }
  }
  return { worst, at };
}

function expectArraysClose(a, b, atol, rtol, label) {
  const { worst, at } = worstViolation(a, b, atol, rtol);
  if (!(worst <= 0)) {
    throw new Error(`${label}: element ${at}: ${a[at]} vs ${b[at]} (atol ${atol}, rtol ${rtol})`);
  }
}

function expectRelClose(a, b, rtol, label, atol = 0) {
  if (!(Math.abs(a - b) <= atol + rtol * Math.abs(b))) {
    throw new Error(`${label}: ${a} vs ${b} (rtol ${rtol}, atol ${atol})`);
  }
}

function sameBits(a, b) {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

module.exports = {
  pkg, rng, headShape, numel, makeHeads, optionsOf, torchAvailable, runTorchReference,
  expectArraysClose, expectRelClose, sameBits, worstViolation,
};
