#!/usr/bin/env node
'use strict';
// CUDA checks, runnable without jest (the GPU machine has no npm): agreement of
// the fused CUDA kernels with PyTorch on the GPU for float32, float16 and
// bfloat16 in both layouts; bit-identical repeats; CUDA handles; Float32Array
// heads with options.device; coded errors; the async API leaves the event loop
// free. Prints one line per check and "N passed, M failed"; exits 1 on failure.
// On a machine without CUDA it prints why and exits 0 (nothing to check), unless
// YD_REQUIRE_CUDA=1 (scripts/gpu-check.sh sets it): then a build or machine
// without CUDA fails, so that a CPU-only build cannot pass the GPU check.
const h = require('./helpers');

const { distillationLoss, distillationLossAsync, Tensor, backendInfo } = h.pkg;
const info = backendInfo();

// fp32: docs/DESIGN.md §2 tolerances. fp16/bf16: inputs are rounded identically on both
// sides, math is fp32; gradients are rounded to the dtype on output (2^-11 and
// 2^-8 relative), the loss is summed in fp32 per thread then in double.
const TOL = {
  float32: { loss: 1e-5, gradAtol: 1e-6, gradRtol: 1e-5 },
  float16: { loss: 1e-4, gradAtol: 1e-7, gradRtol: 1e-3 },
  bfloat16: { loss: 1e-4, gradAtol: 1e-30, gradRtol: 8e-3 },
};

const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push([name, null]);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push([name, e]);
    console.log(`FAIL ${name}: ${e.message}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function makeCases() {
  const r = h.rng(0xc0da);
  const cases = [];
  let i = 0;
  for (const dtype of ['float32', 'float16', 'bfloat16']) {
    for (const layout of ['nchw', 'nahwc', 'nhwc']) {
      // The last entry is large enough that every kernel's grid-stride or
      // multi-tile loop runs more than once (1.2 M cells: more than the 2048
      // blocks x 256 threads of one pass; odd width: 1-wide loads).
      for (const [B, C, grids] of [[2, 80, [[20, 20], [10, 10], [5, 5]]], [3, 7, [[9, 13], [1, 1]]], [1, 1, [[6, 5]]], [64, 1, [[81, 79]]]]) {
        const shapes = grids.map(([H, W]) => h.headShape(layout, B, 3, C, H, W));
        const c = { id: `cuda${i++}`, layout, numAnchors: 3, numClasses: C, shapes, dtype, device: 'cuda', lambda: 10 };
        if (i % 3 === 0) c.gradScale = 1024;
        Object.assign(c, h.makeHeads(r, shapes, i % 2 ? 8 : 2));
        cases.push(c);
      }
    }
  }
  return cases;
}

async function main() {
  if (!info.cuda) {
    const why = `no CUDA device or no CUDA kernels in this build (LibTorch ${info.libtorch}, cudaDeviceCount ${info.cudaDeviceCount})`;
    if (process.env.YD_REQUIRE_CUDA === '1') {
      console.log(`FAIL CUDA required (YD_REQUIRE_CUDA=1): ${why}`);
      console.log('0 passed, 1 failed');
      return 1;
    }
    console.log(`CUDA tests skipped: ${why}`);
    return 0;
  }
  const cases = makeCases();
  const want = h.runTorchReference(cases);
  const toCuda = (heads, dtype) => heads.map((x) => Tensor.fromFloat32Array(x.data, x.shape, { device: 'cuda', dtype }));

  for (const c of cases) {
    await check(`${c.id} ${c.dtype} ${c.layout} C=${c.numClasses} agrees with PyTorch on the GPU`, () => {
      const tol = TOL[c.dtype];
      const st = toCuda(c.student, c.dtype);
      const te = toCuda(c.teacher, c.dtype);
      const r = distillationLoss(st, te, h.optionsOf(c));
      const w = want[c.id];
      h.expectRelClose(r.loss, w.loss, tol.loss, 'loss', 1e-12);
      for (const t of ['box', 'obj', 'cls']) h.expectRelClose(r[t], w[t], tol.loss, t, 1e-12);
      r.scales.forEach((sc, k) => {
        for (const t of ['box', 'obj', 'cls']) h.expectRelClose(sc[t], w.scales[k][t], tol.loss, `scale ${k} ${t}`, 1e-12);
      });
      r.grads.forEach((g, k) => {
        assert(g instanceof Tensor && g.device.startsWith('cuda') && g.dtype === c.dtype, `grad ${k} is a ${c.dtype} CUDA handle`);
        h.expectArraysClose(g.toFloat32Array(), w.grads[k], tol.gradAtol, tol.gradRtol, `grad ${k}`);
      });
      // Deterministic: a repeat is bit-identical.
      const again = distillationLoss(st, te, h.optionsOf(c));
      assert(Object.is(again.loss, r.loss), 'repeat loss bit-identical');
      again.grads.forEach((g, k) => assert(h.sameBits(g.toFloat32Array(), r.grads[k].toFloat32Array()), `repeat grad ${k} bit-identical`));
      [...st, ...te, ...r.grads, ...again.grads].forEach((t) => t.dispose());
    });
  }

  // Loss variants on the CUDA variant kernel, against the same PyTorch reference
  // (fp32 math with transcendental terms on both sides: 1e-4 relative).
  const r = h.rng(0xc0db);
  const vcases = [
    { preset: 'paper' }, { objTarget: 'bce', clsTarget: 'bce' }, { clsTarget: 'kl', temperature: 2 },
    { fmNms: true }, { fmNms: true, weighted: { box: false, cls: false }, boxTarget: 'paper' },
  ].flatMap((api, i) => ['nchw', 'nahwc', 'nhwc'].flatMap((layout) => ['float32', 'float16', 'bfloat16'].map((dtype) => {
    const shapes = [h.headShape(layout, 2, 3, 6, 7, 5), h.headShape(layout, 2, 3, 6, 4, 4)];
    // The PyTorch reference resolves presets itself (test/reference/torch_reference.py).
    return { id: `cv${i}${layout}${dtype}`, layout, numAnchors: 3, numClasses: 6, shapes, dtype, device: 'cuda', variant: { ...api }, api, ...h.makeHeads(r, shapes, 3) };
  })));
  const vwant = h.runTorchReference(vcases);
  for (const c of vcases) {
    await check(`${c.id} ${c.dtype} ${c.layout} variant ${JSON.stringify(c.api)} agrees with PyTorch on the GPU`, () => {
      const st = toCuda(c.student, c.dtype);
      const te = toCuda(c.teacher, c.dtype);
      const opts = { numClasses: c.numClasses, layout: c.layout, ...c.api };
      const got = distillationLoss(st, te, opts);
      const w = vwant[c.id];
      const tol = TOL[c.dtype];
      h.expectRelClose(got.loss, w.loss, Math.max(1e-4, tol.loss), 'loss', 1e-12);
      got.scales.forEach((sc, k) => {
        for (const t of ['box', 'obj', 'cls']) h.expectRelClose(sc[t], w.scales[k][t], Math.max(1e-4, tol.loss), `scale ${k} ${t}`, 1e-12);
      });
      got.grads.forEach((g, k) => h.expectArraysClose(g.toFloat32Array(), w.grads[k], 1e-6, Math.max(1e-4, tol.gradRtol), `grad ${k}`));
      const again = distillationLoss(st, te, opts);
      assert(Object.is(again.loss, got.loss), 'repeat bit-identical');
      [...st, ...te, ...got.grads, ...again.grads].forEach((t) => t.dispose());
    });
  }

  // Anchor-free heads on CUDA handles (the fused anchor-free kernel, af_kernel in fused_cuda.cu).
  const ra = h.rng(0xc0dc);
  const afCases = ['nchw', 'nhwc'].flatMap((layout) => [1, 16].map((R) => {
    const shapes = [layout === 'nchw' ? [2, 4 * R + 5, 6, 7] : [2, 6, 7, 4 * R + 5]];
    return { id: `af${layout}${R}`, layout, numClasses: 5, numAnchors: 1, shapes, head: 'anchorFree', regMax: R, variant: R === 16 ? { fmNms: true } : { clsTarget: 'kl', temperature: 2 }, compute: 'float64', ...h.makeHeads(ra, shapes, 2) };
  }));
  const afWant = h.runTorchReference(afCases.map((c) => ({ ...c, device: 'cpu' })));
  for (const c of afCases) {
    await check(`${c.id} anchor-free on the GPU agrees with PyTorch`, () => {
      const st = toCuda(c.student, 'float32');
      const te = toCuda(c.teacher, 'float32');
      const got = distillationLoss(st, te, { numClasses: 5, layout: c.layout, head: 'anchorFree', regMax: c.regMax, ...c.variant });
      h.expectRelClose(got.loss, afWant[c.id].loss, 1e-5, 'loss', 1e-12);
      got.grads.forEach((g, k) => h.expectArraysClose(g.toFloat32Array(), afWant[c.id].grads[k], 1e-6, 1e-5, `grad ${k}`));
      const again = distillationLoss(st, te, { numClasses: 5, layout: c.layout, head: 'anchorFree', regMax: c.regMax, ...c.variant });
      assert(Object.is(again.loss, got.loss), 'repeat bit-identical');
      [...st, ...te, ...got.grads, ...again.grads].forEach((t) => t.dispose());
    });
  }

  // The KL where a log-softmax cancels (nearly equal heads; huge temperatures):
  // the GPU against the CPU kernel, which runs the same centred steps
  // (native/core/cell_math.h) and is checked against PyTorch float64 and the
  // float64 limit in test/numerics-edge.test.js (PyTorch itself cancels here).
  const rk = h.rng(0xc0dd);
  const klCases = [
    ['nearly equal heads, tau 2', { clsTarget: 'kl', temperature: 2 }, true],
    ['tau 1e12', { clsTarget: 'kl', temperature: 1e12 }, false],
    ['anchor-free, boxTemperature 1e15', { head: 'anchorFree', regMax: 16, clsTarget: 'kl', temperature: 3, boxTemperature: 1e15 }, false],
    ['anchor-free, nearly equal heads', { head: 'anchorFree', regMax: 16, clsTarget: 'kl', temperature: 1 }, true],
  ];
  for (const [label, api, near] of klCases) {
    await check(`KL, ${label}: the GPU equals the CPU kernel`, () => {
      const shape = api.head === 'anchorFree' ? [2, 4 * 16 + 5, 6, 7] : [2, 3 * (5 + 5), 6, 7];
      const n = h.numel(shape);
      const t = new Float32Array(n).map(() => 2.5 * rk.randn());
      const p = near ? t.map((v) => Math.fround(v + 1e-3 * rk.randn())) : new Float32Array(n).map(() => 2.5 * rk.randn());
      const opts = { numClasses: 5, ...(api.head ? {} : { numAnchors: 3 }), ...api };
      const cpu = distillationLoss([{ data: p, shape }], [{ data: t, shape }], opts);
      const st = toCuda([{ data: p, shape }], 'float32');
      const te = toCuda([{ data: t, shape }], 'float32');
      const got = distillationLoss(st, te, opts);
      for (const k of ['box', 'obj', 'cls']) h.expectRelClose(got[k], cpu[k], 1e-5, k, 1e-12);
      h.expectArraysClose(got.grads[0].toFloat32Array(), cpu.grads[0], 1e-6, 1e-5, 'grad');
      [...st, ...te, ...got.grads].forEach((x) => x.dispose());
    });
  }

  const c0 = cases[0];
  await check('grad: false on the GPU, default and variant kernels: no gradients, same terms', () => {
    for (const extra of [{}, { clsTarget: 'kl', fmNms: true }]) {
      const st = toCuda(c0.student, 'float32');
      const te = toCuda(c0.teacher, 'float32');
      const full = distillationLoss(st, te, { ...h.optionsOf(c0), ...extra });
      const none = distillationLoss(st, te, { ...h.optionsOf(c0), ...extra, grad: false });
      assert(none.grads === null, 'grads null');
      h.expectRelClose(none.loss, full.loss, 1e-12, 'same loss');
      [...st, ...te, ...full.grads].forEach((t) => t.dispose());
    }
  });

  await check('Float32Array heads with options.device cuda: gradients come back as Float32Arrays', () => {
    const cpu = distillationLoss(c0.student, c0.teacher, h.optionsOf(c0));
    const gpu = distillationLoss(c0.student, c0.teacher, { ...h.optionsOf(c0), device: 'cuda' });
    h.expectRelClose(gpu.loss, cpu.loss, 1e-5, 'loss');
    gpu.grads.forEach((g, k) => {
      assert(Object.prototype.toString.call(g) === '[object Float32Array]', 'Float32Array grads');
      h.expectArraysClose(g, cpu.grads[k], 1e-6, 1e-5, `grad ${k}`);
    });
  });

  await check('gradOut CUDA handles are filled in place', () => {
    const st = toCuda(c0.student, 'float32');
    const te = toCuda(c0.teacher, 'float32');
    const outs = c0.shapes.map((s) => Tensor.fromFloat32Array(new Float32Array(h.numel(s)), s, { device: 'cuda' }));
    const r = distillationLoss(st, te, { ...h.optionsOf(c0), gradOut: outs });
    r.grads.forEach((g, k) => assert(g === outs[k], 'same handle'));
    const fresh = distillationLoss(st, te, h.optionsOf(c0));
    fresh.grads.forEach((g, k) => assert(h.sameBits(g.toFloat32Array(), outs[k].toFloat32Array()), 'same values'));
  });

  await check('mixed devices and dtypes give coded errors', () => {
    const s = Tensor.fromFloat32Array(c0.student[0].data, c0.shapes[0], { device: 'cuda' });
    const tCpu = Tensor.fromFloat32Array(c0.teacher[0].data, c0.shapes[0]);
    const tHalf = Tensor.fromFloat32Array(c0.teacher[0].data, c0.shapes[0], { device: 'cuda', dtype: 'float16' });
    const codeOf = (fn) => { try { fn(); } catch (e) { return e.code; } return 'no error'; };
    const opts = { numClasses: c0.numClasses };
    assert(codeOf(() => distillationLoss([s], [tCpu], opts)) === 'ERR_DEVICE_MISMATCH', 'device mismatch');
    // Mixed dtypes compute (both widened to fp32), equal to the CPU's result.
    const mixed = distillationLoss([s], [tHalf], opts);
    const sCpu = Tensor.fromFloat32Array(c0.student[0].data, c0.shapes[0]);
    const tCpuHalf = Tensor.fromFloat32Array(c0.teacher[0].data, c0.shapes[0], { dtype: 'float16' });
    const onCpu = distillationLoss([sCpu], [tCpuHalf], opts);
    h.expectRelClose(mixed.loss, onCpu.loss, 1e-5, 'mixed dtypes on the GPU vs the CPU');
    assert(mixed.grads[0].dtype === 'float32', 'gradient in the student dtype');
    assert(codeOf(() => Tensor.fromFloat32Array(new Float32Array(1), [1], { device: `cuda:${info.cudaDeviceCount}` })) === 'ERR_NO_CUDA', 'device index past the count');
  });

  await check('the async API leaves the event loop free while the GPU works', async () => {
    const big = c0.shapes.map((s) => [16, ...s.slice(1)]).map((s) => s.map((d, i) => (i >= 2 && c0.layout === 'nchw' ? d * 4 : d)));
    const st = big.map((s) => Tensor.fromFloat32Array(new Float32Array(h.numel(s)).fill(0.5), s, { device: 'cuda' }));
    const te = big.map((s) => Tensor.fromFloat32Array(new Float32Array(h.numel(s)).fill(-0.5), s, { device: 'cuda' }));
    let immediate = false;
    const p = distillationLossAsync(st, te, { numClasses: c0.numClasses });
    setImmediate(() => { immediate = true; });
    const r = await p;
    assert(immediate, 'setImmediate fired before the promise resolved');
    assert(Number.isFinite(r.loss), 'finite loss');
  });

  const failed = results.filter(([, e]) => e).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then((code) => { process.exitCode = code; }, (e) => { console.error(e); process.exitCode = 1; });
