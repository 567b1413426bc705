'use strict';
// The CUDA kernels of native/core/fused_cuda.cu, run on the CPU under a test-only
// emulation of the launch model (test/cuda-emu/cuda_emu.h; scope and limits in
// RELIABILITY.md), against the CPU kernels of the addon on the same inputs:
// every dtype, both layouts, the default formula and the variants (FM-NMS
// included), grad on and off, 1x1 grids, odd widths, aligned (4-wide loads) and
// misaligned (1-wide) buffers, with a maximum grid of 3 blocks so that the
// grid-stride and multi-tile loops loop.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./helpers');

const { distillationLoss, Tensor } = h.pkg;
const root = path.join(__dirname, '..');
const cudaInclude = path.join(process.env.CUDA_HOME || '/usr/local/cuda', 'include');
const haveHeaders = fs.existsSync(path.join(cudaInclude, 'cuda_fp16.h'));
if (!haveHeaders) console.log(`CUDA emulation tests skipped: no CUDA headers at ${cudaInclude} (set CUDA_HOME)`);
const maybe = haveHeaders ? describe : describe.skip;

const runner = path.join(root, 'build', 'cuda-emu', 'runner');
const sources = ['native/core/fused_cuda.cu', 'native/core/fused_cuda.h', 'native/core/cell_math.h', 'native/core/vec_math.h',
  'test/cuda-emu/cuda_emu.h', 'test/cuda-emu/runner.cpp', 'test/cuda-emu/include/cuda_runtime.h'].map((f) => path.join(root, f));

function buildRunner() {
  const newest = Math.max(...sources.map((f) => fs.statSync(f).mtimeMs));
  if (fs.existsSync(runner) && fs.statSync(runner).mtimeMs > newest) return;
  fs.mkdirSync(path.dirname(runner), { recursive: true });
  const r = spawnSync('g++', ['-std=c++17', '-O1', '-pthread', '-DYD_CUDA_MAX_GRID=3', '-DYD_CUDA_MIN_BLOCKS_FOR_VEC=1',
    '-x', 'c++', '-include', 'test/cuda-emu/cuda_emu.h', '-Itest/cuda-emu/include', `-I${cudaInclude}`, '-Inative/core',
    'native/core/fused_cuda.cu', '-x', 'none', 'test/cuda-emu/runner.cpp', '-o', runner], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the CUDA emulation runner failed:\n${r.stderr}`);
}

const KINDS = { logit: 0, prob: 1, bce: 2, kl: 3 };

// Runs one scale through the emulated kernels; returns { sums, launches, grad }.
function emulate(c, p, t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'yd-emu-'));
  try {
    const N = c.B * (c.af ? 1 : c.A) * c.H * c.W;
    const lam = c.lambda ?? 10, gs = c.gradScale ?? 1;
    const base = (2 * lam * gs) / N;
    const v = c.variant;
    const kv = {
      dtype: { float32: 'f32', float16: 'f16', bfloat16: 'bf16' }[c.dtype], nahwc: c.layout === 'nchw' ? 0 : 1, nhwc: c.layout === 'nhwc' ? 1 : 0,
      batch: c.B, anchors: c.A, height: c.H, width: c.W, classes: c.C, grad: c.grad === false ? 0 : 1,
      misalign: c.misalign ? 1 : 0, variant: v || c.af ? 1 : 0,
      coef_box: Math.fround(base / 4), coef_obj: Math.fround(base), coef_cls: Math.fround(base / c.C),
    };
    if (v || c.af) {
      const w = v || {};
      const kl = w.clsTarget === 'kl';
      Object.assign(kv, {
        box_paper: w.boxTarget === 'paper' ? 1 : 0, obj_kind: KINDS[w.objTarget ?? 'logit'], cls_kind: KINDS[w.clsTarget ?? 'logit'],
        weighted_box: w.weighted?.box === false ? 0 : 1, weighted_obj: w.weighted?.obj === false ? 0 : 1,
        weighted_cls: w.weighted?.cls === false ? 0 : 1, fm_nms: w.fmNms ? 1 : 0, temperature: w.temperature ?? 1,
        cb: (lam * gs) / (4 * N), co: (lam * gs) / N, cc: (lam * gs) / (kl ? N : c.C * N),
      });
      if (c.af) Object.assign(kv, { anchor_free: 1, reg_max: c.regMax, box_temperature: w.boxTemperature ?? 10, anchors: 1 });
    }
    fs.writeFileSync(path.join(dir, 'case.txt'), Object.entries(kv).map(([k, x]) => `${k} ${x}`).join('\n') + '\n');
    fs.writeFileSync(path.join(dir, 'p.f32'), Buffer.from(p.buffer));
    fs.writeFileSync(path.join(dir, 't.f32'), Buffer.from(t.buffer));
    const r = spawnSync(runner, [dir], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`runner failed (${r.status}, ${r.signal}): ${r.stderr}`);
    const [s0, s1, s2, launches, err] = fs.readFileSync(path.join(dir, 'out.txt'), 'utf8').trim().split(/\s+/).map(Number);
    let grad = null;
    if (kv.grad) {
      const b = fs.readFileSync(path.join(dir, 'g.f32'));
      grad = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
    return { sums: [s0, s1, s2], launches, err, grad, N, kl: v?.clsTarget === 'kl' };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Gradient tolerance: fp32 as docs/DESIGN.md §2; half dtypes: one unit in the last place.
const rtolOf = (dtype) => (dtype === 'float16' ? 2 ** -10 : dtype === 'bfloat16' ? 2 ** -7 : 1e-5);

// Runs case c through the emulated kernels and the addon's CPU kernels on the
// same heads (opts: the call's options without grad/lambda/gradScale) and
// compares per-scale terms and every gradient element. Returns the emulation's
// result and the CPU's per-scale terms.
function compareWithCpu(id, c, shape, p, t, baseOpts) {
  const emu = emulate(c, p, t);
  expect(emu.err).toBe(0);
  const opts = { ...baseOpts };
  if (c.grad === false) opts.grad = false;
  if (c.lambda !== undefined) opts.lambda = c.lambda;
  if (c.gradScale !== undefined) opts.gradScale = c.gradScale;
  const made = [];
  const headOf = (data) => {
    if (c.dtype === 'float32') return { data, shape };
    const tt = Tensor.fromFloat32Array(data, shape, { dtype: c.dtype });
    made.push(tt);
    return tt;
  };
  try {
    const cpu = distillationLoss([headOf(p)], [headOf(t)], opts);
    const terms = [emu.sums[0] / (4 * emu.N), emu.sums[1] / emu.N, emu.sums[2] / ((emu.kl ? 1 : c.C) * emu.N)];
    ['box', 'obj', 'cls'].forEach((k, j) => h.expectRelClose(terms[j], cpu.scales[0][k], 1e-5, `${id}: ${k}`, 1e-9));
    if (c.grad === false) {
      expect(emu.grad).toBeNull();
      expect(cpu.grads).toBeNull();
      return { emu, scales: cpu.scales };
    }
    const g = cpu.grads[0];
    const cg = g instanceof Tensor ? g.toFloat32Array() : g;
    if (g instanceof Tensor) g.dispose();
    emu.grad.forEach((x, k) => {
      if (!Number.isFinite(x)) throw new Error(`${id}: gradient element ${k} not written (${x})`);
    });
    h.expectArraysClose(emu.grad, cg, 1e-6, rtolOf(c.dtype), `${id}: gradient`);
    return { emu, scales: cpu.scales };
  } finally {
    made.forEach((x) => x.dispose());
  }
}

function cases() {
  const list = [];
  const variants = [
    null,
    { objTarget: 'bce', clsTarget: 'prob' },
    { boxTarget: 'paper', objTarget: 'prob', clsTarget: 'bce', weighted: { obj: false } },
    { clsTarget: 'kl', temperature: 2 },
    { fmNms: true },
    { clsTarget: 'kl', temperature: 0.5, fmNms: true, weighted: { box: false, cls: false } },
  ];
  const grids = [[1, 1], [5, 3], [12, 12], [16, 16]];
  let i = 0;
  for (const dtype of ['float32', 'float16', 'bfloat16']) {
    for (const layout of ['nchw', 'nahwc', 'nhwc']) {
      for (const variant of variants) {
        for (const [H, W] of grids) {
          if (variant && H === 16) continue; // the variant kernel's loops are covered by 12x12
          i++;
          const B = H === 16 ? 4 : H === 1 ? 1 : 2;
          list.push({
            id: `${dtype} ${layout} ${variant ? JSON.stringify(variant) : 'default'} ${B}x${H}x${W}` + (i % 3 === 0 ? ' misaligned' : '') + (i % 5 === 0 ? ' grad:false' : ''),
            dtype, layout, variant, B, A: 3, C: H === 1 ? 1 : (i % 2 ? 4 : 7), H, W,
            misalign: i % 3 === 0, grad: i % 5 === 0 ? false : undefined, lambda: i % 4 === 0 ? 3 : undefined, gradScale: i % 7 === 0 ? 0.5 : undefined,
          });
        }
      }
    }
  }
  return list;
}

maybe('CUDA kernels under emulation agree with the CPU kernels', () => {
  beforeAll(buildRunner, 120000);
  test.each(cases().map((c) => [c.id, c]))('%s', (id, c) => {
    const shape = h.headShape(c.layout, c.B, c.A, c.C, c.H, c.W);
    const r = h.rng(id.length * 7919 + c.H * 31 + c.W);
    const p = new Float32Array(h.numel(shape)).map(() => 2.5 * r.randn());
    const t = new Float32Array(h.numel(shape)).map(() => 2.5 * r.randn());
    compareWithCpu(id, c, shape, p, t, { numClasses: c.C, numAnchors: c.A, layout: c.layout, ...(c.variant || {}) });
  });

  // Anchor-free heads (the anchor-free kernel, and its FM-NMS maps) against the CPU's anchor_free_scale.
  const afCases = [];
  {
    const variants = [
      {}, { clsTarget: 'prob' }, { clsTarget: 'bce', weighted: { box: false } }, { clsTarget: 'kl', temperature: 2 },
      { fmNms: true }, { clsTarget: 'kl', temperature: 0.5, fmNms: true, weighted: { cls: false }, boxTemperature: 3 },
    ];
    let i = 0;
    for (const dtype of ['float32', 'float16', 'bfloat16']) {
      for (const layout of ['nchw', 'nhwc']) {
        for (const variant of variants) {
          i++;
          const regMax = [16, 1, 17, 4][i % 4];
          const [H, W] = [[1, 1], [5, 3], [9, 9], [12, 7]][i % 4];
          const B = H === 1 ? 1 : 2, C = H === 1 ? 1 : i % 2 ? 3 : 6;
          afCases.push({
            id: `anchor-free ${dtype} ${layout} regMax ${regMax} ${JSON.stringify(variant)} ${B}x${H}x${W} C=${C}` + (i % 3 === 0 ? ' misaligned' : '') + (i % 5 === 0 ? ' grad:false' : ''),
            af: true, dtype, layout, variant, regMax, B, A: 1, C, H, W, misalign: i % 3 === 0, grad: i % 5 === 0 ? false : undefined,
            lambda: i % 4 === 0 ? 3 : undefined, gradScale: i % 7 === 0 ? 0.5 : undefined,
          });
        }
      }
    }
  }
  test.each(afCases.map((c) => [c.id, c]))('%s', (id, c) => {
    const K = 4 * c.regMax + c.C;
    const shape = c.layout === 'nchw' ? [c.B, K, c.H, c.W] : [c.B, c.H, c.W, K];
    const r = h.rng(id.length * 7919 + c.H * 31 + c.W + c.regMax);
    const p = new Float32Array(h.numel(shape)).map(() => 2.5 * r.randn());
    const t = new Float32Array(h.numel(shape)).map(() => 2.5 * r.randn());
    if (c.variant.fmNms) {
      // Ties in the teacher's best class make FM-NMS compare equal scores: give a few cells the same values.
      for (let k = 0; k + 2 * K <= t.length && k < 4 * K; k += 2 * K) t.copyWithin(k + K, k, k + K);
    }
    const { boxTemperature, ...variant } = c.variant;
    const opts = { numClasses: c.C, layout: c.layout, head: 'anchorFree', regMax: c.regMax, ...variant };
    if (boxTemperature !== undefined) opts.boxTemperature = boxTemperature;
    const { emu, scales } = compareWithCpu(id, c, shape, p, t, opts);
    expect(emu.sums[1]).toBe(0); // no objectness term
    expect(scales[0].obj).toBe(0);
  });

  test('the grid-stride loops ran: a 16x16 nchw scale needs more than the 3 blocks the emulation allows', () => {
    // 4 x 3 x 16 x 16 cells in 4-wide items: 768 items = 3 blocks of 256, and
    // the 1-wide path 3072 items = 12 blocks' worth on a grid of 3.
    const c = { dtype: 'float32', layout: 'nchw', B: 4, A: 3, C: 2, H: 16, W: 16, misalign: true };
    const shape = [4, 21, 16, 16];
    const p = new Float32Array(h.numel(shape)).fill(1), t = new Float32Array(h.numel(shape)).fill(0);
    const emu = emulate(c, p, t);
    const cpu = distillationLoss([{ data: p, shape }], [{ data: t, shape }], { numClasses: 2 });
    h.expectRelClose(emu.sums[0] / (4 * emu.N), cpu.scales[0].box, 1e-6, 'box');
    expect(emu.launches).toBe(2); // the fused kernel and the one-block finish
  });

  // The KL steps where a log-softmax in fp32 cancels: nearly equal student and
  // teacher (KL ~ 1e-8 per cell), huge temperatures (tau^2 KL tends to half a
  // variance while each log-probability moves by 1e-12), and a span of logit
  // differences over 40 (the log-softmax steps). The CUDA kernel's kl_cell and
  // the CPU's kl_group run cell_math.h's centred steps, so they agree here at
  // the fp32 tolerances of every other case.
  const klCases = [
    ['near-equal, tau 2', { clsTarget: 'kl', temperature: 2 }, 'near', false],
    ['near-equal, anchor-free box and classes', { clsTarget: 'kl', temperature: 1, boxTemperature: 10 }, 'near', true],
    ['tau 1e12', { clsTarget: 'kl', temperature: 1e12 }, 'ordinary', false],
    ['boxTemperature 1e15, anchor-free', { clsTarget: 'kl', temperature: 3, boxTemperature: 1e15 }, 'ordinary', true],
    ['differences spanning over 40: tau 0.01', { clsTarget: 'kl', temperature: 0.01 }, 'ordinary', false],
  ];
  test.each(klCases)('KL: %s', (id, variant, data, af) => {
    const C = 5, H = 4, W = 3, regMax = 16;
    const c = af
      ? { af: true, dtype: 'float32', layout: 'nchw', variant, regMax, B: 1, A: 1, C, H, W }
      : { dtype: 'float32', layout: 'nchw', variant, B: 1, A: 2, C, H, W };
    const K = af ? 4 * regMax + C : 5 + C;
    const shape = [1, (af ? 1 : 2) * K, H, W];
    const r = h.rng(0x6b1 + id.length);
    const t = new Float32Array(h.numel(shape)).map(() => 2.5 * r.randn());
    const p = data === 'near' ? t.map((v) => Math.fround(v + 1e-3 * r.randn())) : new Float32Array(t.length).map(() => 2.5 * r.randn());
    const { boxTemperature, ...rest } = variant;
    const opts = af
      ? { numClasses: C, layout: 'nchw', head: 'anchorFree', regMax, boxTemperature, ...rest }
      : { numClasses: C, numAnchors: 2, layout: 'nchw', ...rest };
    compareWithCpu(`KL: ${id}`, c, shape, p, t, opts);
  });

  // A cell spanning 35.6 whose student and teacher agree on their top class
  // (the fuzzer's seed 1207101, case 11879: logits of +-30 at tau 2.64, scale 0
  // of its heads, lambda 50, gradScale 1000): on the centred fp32 steps the
  // emulated kernel had that class's gradient 2.0e-5 relative off float64 (the
  // CPU, in double here, is exact to 7e-8): spans over kKlSpreadF32 (24) take
  // the log-softmax steps (native/core/cell_math.h), 5e-6 off.
  test('KL: a wide span whose classes agree (fuzzer seed 1207101)', () => {
    const shapes = [[2, 2 * 16, 6, 1], [2, 2 * 16, 5, 1]];
    const { student, teacher } = h.makeHeads(h.rng(1989635211), shapes, 30);
    const variant = { clsTarget: 'kl', temperature: 2.6433266676323766, weighted: { cls: false } };
    const c = { dtype: 'float32', layout: 'nchw', variant, B: 2, A: 2, C: 11, H: 6, W: 1, lambda: 50, gradScale: 1000 };
    compareWithCpu('KL: wide span', c, shapes[0], student[0].data, teacher[0].data, { numClasses: 11, numAnchors: 2, layout: 'nchw', ...variant });
  });
});
