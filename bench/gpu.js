#!/usr/bin/env node
'use strict';
// GPU benchmark, workload (a): YOLOv5s heads at 640x640, B = 16, C = 80, nchw.
// The fused CUDA kernels (forward + gradient, on CUDA handles, gradients into
// gradOut handles) side by side with PyTorch eager forward + backward, the same
// under torch.compile, and a device-to-device floor of 12 bytes per value, for
// float32, bfloat16 and float16. Prints one table; writes $OUT/gpu-bench.json
// and $OUT/gpu-bench.md when OUT is set.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const yd = require('../dist');

const PYTHON = process.env.YD_PYTHON || 'python3';
const info = yd.backendInfo();
if (!info.cuda) {
  console.log(`GPU benchmark skipped: no CUDA device (LibTorch ${info.libtorch})`);
  process.exit(0);
}
const B = 16;
const C = 80;
const shapes = [80, 40, 20].map((g) => [B, 3 * (5 + C), g, g]);
const values = shapes.reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);

function fusedTiming(dtype) {
  const mk = (v) => shapes.map((s) => yd.Tensor.fromFloat32Array(new Float32Array(s.reduce((x, y) => x * y, 1)).map((_, i) => Math.sin(i * v)), s, { device: 'cuda', dtype }));
  const st = mk(0.37);
  const te = mk(1.3);
  const gradOut = shapes.map((s) => yd.Tensor.fromFloat32Array(new Float32Array(s.reduce((x, y) => x * y, 1)), s, { device: 'cuda', dtype }));
  const opts = { numClasses: C, gradOut };
  for (let i = 0; i < 5; i++) yd.distillationLoss(st, te, opts);
  const ms = [];
  for (let i = 0; i < 30; i++) {
    const t0 = process.hrtime.bigint();
    yd.distillationLoss(st, te, opts); // returns after the 3 scalars reach the host
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  [...st, ...te, ...gradOut].forEach((t) => t.dispose());
  ms.sort((a, b) => a - b);
  return { median: ms[ms.length >> 1], min: ms[0], max: ms[ms.length - 1] };
}

function torchTimings(dtype) {
  const spec = { shapes, layout: 'nchw', numClasses: C, numAnchors: 3, dtype };
  const r = spawnSync(PYTHON, [path.join(__dirname, 'torch_gpu.py'), JSON.stringify(spec)], { encoding: 'utf8', maxBuffer: 1 << 22 });
  if (r.status !== 0) return { error: (r.stderr || '').trim().split('\n').pop() };
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const rows = [];
let device = '';
for (const dtype of ['float32', 'bfloat16', 'float16']) {
  const fused = fusedTiming(dtype);
  const t = torchTimings(dtype);
  device = t.device || device;
  const bytes = dtype === 'float32' ? 12 : 6;
  const gbs = (ms) => ((bytes * values) / (ms / 1e3) / 1e9).toFixed(0);
  const row = { dtype, fused, eager: t.eager, compile: t.compile, floor: t.floor, error: t.error };
  row.fusedGBs = gbs(fused.median);
  if (t.floor) row.vsFloor = fused.median / t.floor.median;
  if (t.eager) row.vsEager = t.eager.median / fused.median;
  if (t.compile && t.compile.median) row.vsCompile = t.compile.median / fused.median;
  rows.push(row);
}
const f = (x) => (x && x.median !== undefined ? `${x.median.toFixed(3)} ms` : x && x.error ? `error: ${x.error}` : '–');
const lines = [
  `GPU benchmark, workload (a): ${(values / 1e6).toFixed(1)} M values per tensor, ${device}, LibTorch ${info.libtorch}`,
  '',
  '| dtype | fused | eager | torch.compile | floor (a-b, out) | fused GB/s | fused / floor | speedup vs eager | speedup vs compile |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.dtype} | ${f(r.fused)} | ${f(r.eager)} | ${f(r.compile)} | ${f(r.floor)} | ${r.fusedGBs} | ${r.vsFloor ? r.vsFloor.toFixed(2) : '–'} | ${r.vsEager ? r.vsEager.toFixed(1) + '×' : '–'} | ${r.vsCompile ? r.vsCompile.toFixed(2) + '×' : '–'} |`),
];
console.log(lines.join('\n'));
if (process.env.OUT) {
  fs.writeFileSync(path.join(process.env.OUT, 'gpu-bench.json'), JSON.stringify({ device, libtorch: info.libtorch, values, rows }, null, 2));
  fs.writeFileSync(path.join(process.env.OUT, 'gpu-bench.md'), lines.join('\n') + '\n');
}
