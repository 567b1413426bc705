#!/usr/bin/env node
'use strict';
// Whether a call slows the next one down through the CPU's vector state: the
// default formula on nahwc heads (workload (d): YOLOv5s 640, B = 16, C = 80;
// its kernel is a baseline x86-64 loop) timed alone, and timed right after a
// call whose 'logit' runs go through the variant kernel (nchw heads, weighted
// { cls: false }). Code built for the baseline (SSE) is slowed down while the
// upper halves of the vector registers are dirty; the kernels clear them at the
// start and end of every task (native/core/fused_cpu.cpp clean_upper_state).
// Medians of 11, 2 threads, caller's gradOut; ratio after / alone. Each build
// in its own process: builds loaded side by side share the threads, so one
// build's dirty state would be timed in the other's calls.
//   node bench/upper-state.js [OTHER_ROOT ...]
const path = require('path');
const { spawnSync } = require('child_process');
const { heads, median, timeMs } = require('./common');

if (!process.env.YD_UPPER_STATE_ROOT) {
  console.log('nahwc default formula (workload d), ms: alone, after a weighted { cls: false } nchw call, ratio');
  for (const root of [path.join(__dirname, '..'), ...process.argv.slice(2).map((r) => path.resolve(r))]) {
    const r = spawnSync(process.execPath, [__filename], { env: { ...process.env, YD_UPPER_STATE_ROOT: root }, encoding: 'utf8' });
    process.stdout.write(r.status === 0 ? r.stdout : `failed: ${root}\n${r.stderr}`);
  }
  process.exit(0);
}
const roots = [process.env.YD_UPPER_STATE_ROOT];
const A = 3, C = 80;
const shapes = (layout) => [8, 16, 32].map((s) => {
  const g = 640 / s;
  return layout === 'nchw' ? [16, A * (5 + C), g, g] : [16, A, g, g, 5 + C];
});
const data = { nchw: heads(shapes('nchw')), nahwc: heads(shapes('nahwc')) };
const call = (yd, layout, extra) => {
  const d = data[layout];
  return yd.distillationLoss(d.student, d.teacher, { numClasses: C, layout, threads: 2, gradOut: d.gradOut, ...extra });
};

for (const root of roots) {
  const yd = require(root);
  const alone = [], after = [];
  for (let i = 0; i < 3; i++) call(yd, 'nahwc', {});
  for (let r = 0; r < 11; r++) alone.push(timeMs(() => call(yd, 'nahwc', {})));
  for (let r = 0; r < 11; r++) {
    call(yd, 'nchw', { weighted: { cls: false } });
    after.push(timeMs(() => call(yd, 'nahwc', {})));
  }
  const a = median(alone), b = median(after);
  console.log(`${a.toFixed(2).padStart(8)} ${b.toFixed(2).padStart(8)} ${(b / a).toFixed(2).padStart(6)}  ${root}`);
}
