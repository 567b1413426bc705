#!/usr/bin/env node
'use strict';
// GPU benchmark: YOLOv5s heads at 640x640, C = 80, nchw, B = 16 and B = 64. The
// fused CUDA kernels (forward + gradient, on resident CUDA handles, gradients
// into gradOut handles) side by side with PyTorch eager forward + backward, the
// same under torch.compile, a device-to-device floor of 12 bytes per fp32 value
// (torch.sub) and the card's device-to-device copy bandwidth, measured in the
// same run. Float32Array heads with options.device: 'cuda' (the round trip)
// are timed next to the resident handles.
//
// Every row is timed the same way: host wall-clock of one call, until its
// results are on the host (the fused call returns its three sums; the PyTorch
// rows end with torch.cuda.synchronize()); medians. The fixed host cost of a
// fused call (a 1x1 grid) is reported on its own line.
//
// Results are written after every row ($OUT/gpu-bench.json and .md when OUT
// is set), so a timeout loses nothing measured. torch.compile runs last, one
// process per configuration, each with its own time limit.
// With YD_REQUIRE_CUDA=1 (scripts/gpu-check.sh) a build without CUDA fails.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const yd = require('../dist');

const PYTHON = process.env.YD_PYTHON || 'python3';
const COMPILE_LIMIT_MS = Number(process.env.YD_COMPILE_LIMIT_MS || 90000);
const info = yd.backendInfo();
if (!info.cuda) {
  const why = `no CUDA device or no CUDA kernels in this build (LibTorch ${info.libtorch})`;
  console.log(`GPU benchmark ${process.env.YD_REQUIRE_CUDA === '1' ? 'FAILED' : 'skipped'}: ${why}`);
  process.exit(process.env.YD_REQUIRE_CUDA === '1' ? 1 : 0);
}
const C = 80;
const numel = (s) => s.reduce((x, y) => x * y, 1);
const shapesOf = (B) => [80, 40, 20].map((g) => [B, 3 * (5 + C), g, g]);
const median = (xs) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];

function timeCalls(fn, runs = 30, warmup = 5) {
  for (let i = 0; i < warmup; i++) fn();
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { median: median(ms), min: Math.min(...ms), max: Math.max(...ms) };
}

function fill(n, v) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * v);
  return a;
}

function fusedTimings(B, dtype) {
  const shapes = shapesOf(B);
  const hostSt = shapes.map((s) => fill(numel(s), 0.37));
  const hostTe = shapes.map((s) => fill(numel(s), 1.3));
  const st = shapes.map((s, k) => yd.Tensor.fromFloat32Array(hostSt[k], s, { device: 'cuda', dtype }));
  const te = shapes.map((s, k) => yd.Tensor.fromFloat32Array(hostTe[k], s, { device: 'cuda', dtype }));
  const gradOut = shapes.map((s) => yd.Tensor.fromFloat32Array(new Float32Array(numel(s)), s, { device: 'cuda', dtype }));
  const out = { resident: timeCalls(() => yd.distillationLoss(st, te, { numClasses: C, gradOut })) };
  [...st, ...te, ...gradOut].forEach((t) => t.dispose());
  if (dtype === 'float32') {
    // Float32Array heads, copied to the GPU and the gradients back, every call.
    const heads = (xs) => xs.map((data, k) => ({ data, shape: shapes[k] }));
    const grads = shapes.map((s) => new Float32Array(numel(s)));
    out.roundTrip = timeCalls(() => yd.distillationLoss(heads(hostSt), heads(hostTe), { numClasses: C, device: 'cuda', gradOut: grads }), 10, 2);
  }
  return out;
}

function hostOverhead() {
  const s = [1, 3 * (5 + C), 1, 1];
  const st = [yd.Tensor.fromFloat32Array(fill(numel(s), 0.3), s, { device: 'cuda' })];
  const te = [yd.Tensor.fromFloat32Array(fill(numel(s), 0.7), s, { device: 'cuda' })];
  const gradOut = [yd.Tensor.fromFloat32Array(new Float32Array(numel(s)), s, { device: 'cuda' })];
  const r = timeCalls(() => yd.distillationLoss(st, te, { numClasses: C, gradOut }), 2000, 100);
  [...st, ...te, ...gradOut].forEach((t) => t.dispose());
  return r;
}

function torchRows(B, dtype, compile) {
  const spec = { shapes: shapesOf(B), layout: 'nchw', numClasses: C, numAnchors: 3, dtype };
  const args = [path.join(__dirname, 'torch_gpu.py'), JSON.stringify(spec), ...(compile ? ['--compile'] : [])];
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', maxBuffer: 1 << 22, timeout: compile ? COMPILE_LIMIT_MS : 0 });
  if (r.error && r.error.code === 'ETIMEDOUT') return { error: `over ${COMPILE_LIMIT_MS / 1000} s (cold compile)` };
  if (r.status !== 0) return { error: (r.stderr || '').trim().split('\n').pop() };
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const report = { libtorch: info.libtorch, device: '', torch: '', timing: 'host wall-clock per call until results are on the host; medians', rows: [] };
const f = (x) => (x && x.median !== undefined ? `${x.median.toFixed(3)} ms` : x && x.error ? `error: ${x.error}` : '–');
function write() {
  const lines = [
    `GPU benchmark: YOLOv5s heads at 640x640, C = 80, nchw; ${report.device}; torch ${report.torch}; LibTorch ${report.libtorch}`,
    `All rows: ${report.timing}. Fused host overhead (1x1 grid): ${f(report.overhead)}.`,
    '',
    '| B | dtype | fused (resident) | Float32Array round trip | eager | torch.compile | floor (a-b) | D2D copy | fused GB/s | of copy GB/s | vs eager | vs compile |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...report.rows.map((r) => `| ${r.B} | ${r.dtype} | ${f(r.fused)} | ${f(r.roundTrip)} | ${f(r.eager)} | ${f(r.compile)} | ${f(r.floor)} | ${f(r.copy)} | ${r.fusedGBs ?? '–'} | ${r.ofCopy ? (100 * r.ofCopy).toFixed(0) + ' %' : '–'} | ${r.vsEager ? r.vsEager.toFixed(1) + '×' : '–'} | ${r.vsCompile ? r.vsCompile.toFixed(2) + '×' : '–'} |`),
  ];
  console.log(lines[lines.length - 1]);
  if (process.env.OUT) {
    fs.writeFileSync(path.join(process.env.OUT, 'gpu-bench.json'), JSON.stringify(report, null, 2));
    fs.writeFileSync(path.join(process.env.OUT, 'gpu-bench.md'), lines.join('\n') + '\n');
  }
  return lines;
}

report.overhead = hostOverhead();
const configs = [[16, 'float32'], [16, 'bfloat16'], [16, 'float16'], [64, 'float32'], [64, 'bfloat16']];
for (const [B, dtype] of configs) {
  const values = numel(shapesOf(B)[0]) + numel(shapesOf(B)[1]) + numel(shapesOf(B)[2]);
  const bytes = dtype === 'float32' ? 4 : 2;
  const fused = fusedTimings(B, dtype);
  const t = torchRows(B, dtype, false);
  report.device = t.device || report.device;
  report.torch = t.torch ? `${t.torch} (CUDA ${t.cuda})` : report.torch;
  const row = { B, dtype, fused: fused.resident, roundTrip: fused.roundTrip, eager: t.eager, floor: t.floor, copy: t.copy, error: t.error };
  row.fusedGBs = ((3 * bytes * values) / (fused.resident.median / 1e3) / 1e9).toFixed(0);
  if (t.copy) row.ofCopy = Number(row.fusedGBs) / ((2 * bytes * values) / (t.copy.median / 1e3) / 1e9);
  if (t.eager) row.vsEager = t.eager.median / fused.resident.median;
  report.rows.push(row);
  write();
}
for (const row of report.rows) {
  const t = torchRows(row.B, row.dtype, true);
  row.compile = t.compile || { error: t.error };
  if (row.compile.median) row.vsCompile = row.compile.median / row.fused.median;
  write();
}
console.log(write().join('\n'));
