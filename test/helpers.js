'use strict';
// Shared test helpers: a seeded PRNG, random cases, the PyTorch reference runner
// and tolerance checks. Tests run against the built package (dist/).
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const pkg = require('..');

/**
 * A small seeded PRNG (xorshift32) returning uniforms in [0, 1). Only shifts and
 * xors: Math.* calls are slow inside jest's sandbox. randn is an Irwin-Hall
 * approximation of N(0, 1) (sum of 4 uniforms), bounded by +-3.46.
 */
function rng(seed) {
  let x = (seed >>> 0) || 0x9e3779b9;
  const uniform = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
  const SQRT3 = 1.7320508075688772;
  return {
    uniform,
    int: (lo, hi) => lo + ((uniform() * (hi - lo + 1)) | 0),
    pick: (list) => list[(uniform() * list.length) | 0],
    randn: () => (uniform() + uniform() + uniform() + uniform() - 2) * SQRT3,
  };
}

function headShape(layout, B, A, C, H, W) {
  if (layout === 'nchw') return [B, A * (5 + C), H, W];
  if (layout === 'nhwc') return [B, H, W, A * (5 + C)];
  return [B, A, H, W, 5 + C];
}

/** The value index k (0 .. 4+C) of flat element i of a head of `shape` in `layout`. */
function channelOf(layout, shape, K, i) {
  if (layout === 'nchw') return Math.floor(i / (shape[2] * shape[3])) % K;
  return i % K; // nahwc and nhwc: each anchor's K values are contiguous
}

function numel(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/** Random student/teacher heads for a case: logits ~ spread * N(0, 1), clipped to +-30. */
function makeHeads(r, shapes, spread) {
  const fill = (shape) => {
    const data = new Float32Array(numel(shape));
    for (let i = 0; i < data.length; i++) {
      const v = spread * r.randn();
      data[i] = v > 30 ? 30 : v < -30 ? -30 : v;
    }
    return { data, shape };
  };
  return { student: shapes.map(fill), teacher: shapes.map(fill) };
}

/** Distillation options of a case (as the public API takes them). */
function optionsOf(c) {
  const o = { numClasses: c.numClasses, numAnchors: c.numAnchors, layout: c.layout };
  if (c.lambda !== undefined) o.lambda = c.lambda;
  if (c.weights) o.weights = c.weights;
  if (c.gradScale !== undefined) o.gradScale = c.gradScale;
  return o;
}

// Debian's python3-torch; YD_PYTHON overrides (the GPU machine's python3 has a CUDA torch).
const PYTHON = process.env.YD_PYTHON || '/usr/bin/python3';

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
        lambda: c.lambda ?? null, weights: c.weights ?? {}, gradScale: c.gradScale ?? 1,
        shapes: c.shapes, grad: true, device: c.device ?? 'cpu', dtype: c.dtype ?? 'float32',
        variant: c.variant ?? null, compute: c.compute ?? 'float32',
        studentDtype: c.studentDtype ?? null, teacherDtype: c.teacherDtype ?? null,
        head: c.head ?? 'anchor', regMax: c.regMax ?? 16, boxTemperature: c.boxTemperature ?? 10,
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
      const res = JSON.parse(fs.readFileSync(path.join(dir, `${c.id}.result.json`), 'utf8'), (k, v) =>
        v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v === 'nan' ? NaN : v);
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


// float32 -> float16 / bfloat16 bits (round to nearest even) and back.
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
function toHalf(x) {
  f32buf[0] = x;
  const b = u32buf[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) { // subnormal half
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = 14 - e;
    let r = man >>> shift;
    const rem = man & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++;
  return sign | r;
}
function fromHalf(hb) {
  const s = hb & 0x8000 ? -1 : 1, e = (hb >>> 10) & 0x1f, m = hb & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
function toBf16(x) {
  f32buf[0] = x;
  const b = u32buf[0];
  if (((b >>> 23) & 0xff) === 0xff && (b & 0x7fffff)) return (b >>> 16) | 0x40;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}
function fromBf16(hb) {
  u32buf[0] = hb << 16;
  return f32buf[0];
}
const encode16 = { float16: toHalf, bfloat16: toBf16 };
const decode16 = { float16: fromHalf, bfloat16: fromBf16 };
/** A head array of `dtype`: the Float32Array as it is, or a Uint16Array of its rounded bits. */
function headOfDtype(x, dtype) {
  if (!dtype || dtype === 'float32') return { data: x.data, shape: x.shape };
  return { data: Uint16Array.from(x.data, encode16[dtype]), shape: x.shape, dtype };
}
/** Values of an array as numbers: a Float32Array as is, a Uint16Array decoded as `dtype`. */
function valuesOf(a, dtype) {
  return Object.prototype.toString.call(a) === '[object Uint16Array]' ? Float64Array.from(a, decode16[dtype]) : a;
}

/**
 * A call's result as compared bit for bit across processes: a hash of every
 * gradient's bytes, and the loss and per-scale terms as strings (so that NaN
 * and -0 survive JSON).
 */
function resultDigest(r) {
  const hash = require('crypto').createHash('sha256');
  for (const g of r.grads) hash.update(Buffer.from(g.buffer, g.byteOffset, g.byteLength));
  const terms = r.scales.map((s) => [s.box, s.obj, s.cls].map((v) => Object.is(v, -0) ? '-0' : String(v)));
  return { grads: hash.digest('hex'), loss: Object.is(r.loss, -0) ? '-0' : String(r.loss), terms };
}

/**
 * Runs `node --expose-gc script name` in a child process (a crash fails the
 * caller's test instead of killing jest) and returns the JSON of its last
 * stdout line. A non-zero exit, a signal or glibc heap-check output fails.
 */
function runScenario(script, name, timeout = 120000, env = {}) {
  const { spawnSync } = require('child_process');
  const r = spawnSync(process.execPath, ['--expose-gc', script, name], { encoding: 'utf8', timeout, env: { ...process.env, ...env } });
  if (r.status !== 0 || r.signal) {
    throw new Error(`scenario ${name} failed: status ${r.status}, signal ${r.signal}\n${r.stdout}\n${r.stderr}`);
  }
  // glibc's heap checks print before aborting; even a clean exit must not show them.
  if (/free\(\)|malloc|tcache|double free|corrupted/.test(r.stderr)) {
    throw new Error(`scenario ${name}: heap-check output\n${r.stderr}`);
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

module.exports = {
  toHalf, fromHalf, toBf16, fromBf16, encode16, decode16, headOfDtype, valuesOf, runScenario, resultDigest,
  pkg, rng, headShape, channelOf, numel, makeHeads, optionsOf, torchAvailable, runTorchReference,
  expectArraysClose, expectRelClose, sameBits, worstViolation,
};
