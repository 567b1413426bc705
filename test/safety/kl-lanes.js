'use strict';
// The KL steps' group width (native/core/fused_cpu.cpp, kl_lanes: 16 cells a
// group on AVX-512 CPUs, 8 on others): the same calls under whatever
// YD_KL_LANES this process was started with, one JSON line with the width the
// kernels took and a digest of every result:
//   YD_KL_LANES=8 node test/safety/kl-lanes.js digests
// test/kl-lanes.test.js runs it at 8 and at 16 (and at 8 with YD_KL_GATHER=0
// and =1) and compares the digests: a cell's arithmetic is the same in either
// width and either way of reading the planes, so every bit must be.
const path = require('path');
const yd = require(path.join(__dirname, '..', '..'));
const { native } = require(path.join(__dirname, '..', '..', 'dist', 'binding'));
const h = require(path.join(__dirname, '..', 'helpers'));

const digest = h.resultDigest;

// A student within +-noise of its teacher (as late in training: the KL's near pass).
function nearHeads(r, shapes, spread, noise) {
  const { teacher } = h.makeHeads(r, shapes, spread);
  const student = teacher.map((x) => ({ shape: x.shape, data: x.data.map((v) => v + noise * (2 * r.uniform() - 1)) }));
  return { student, teacher };
}

const scenarios = {
  digests() {
    const out = {};
    const anchor = (B, C, size, layout = 'nchw') => [8, 16, 32].map((s) => {
      const g = size / s;
      return layout === 'nchw' ? [B, 3 * (5 + C), g, g] : layout === 'nhwc' ? [B, g, g, 3 * (5 + C)] : [B, 3, g, g, 5 + C];
    });
    const free = (B, R, C, size, layout = 'nchw') => [8, 16, 32].map((s) => {
      const g = size / s;
      return layout === 'nchw' ? [B, 4 * R + C, g, g] : [B, g, g, 4 * R + C];
    });
    // Planes of 91 and 155 cells: every group width leaves a rest.
    const odd = (C) => [[1, 3 * (5 + C), 13, 7], [2, 3 * (5 + C), 5, 31]];
    const cases = [
      // [name, shapes, options, spread of the logits]
      ['C=80 nchw', anchor(2, 80, 256), { numClasses: 80 }, 3],
      ['C=80 nchw, one thread', anchor(2, 80, 256), { numClasses: 80, threads: 1 }, 3],
      // 64 x 64, 32 x 32 and 16 x 16 planes (512 px): strides of 16, 4 and 1 KB
      ['C=80 nchw 512', anchor(1, 80, 512), { numClasses: 80 }, 3],
      ['C=80 odd planes', odd(80), { numClasses: 80 }, 3],
      ['C=40 odd planes', odd(40), { numClasses: 40 }, 3],
      ['C=39 odd planes', odd(39), { numClasses: 39 }, 3],
      ['C=7 odd planes', odd(7), { numClasses: 7 }, 3],
      ['C=1 odd planes', odd(1), { numClasses: 1 }, 3],
      ['C=80 nhwc', anchor(2, 80, 128, 'nhwc'), { numClasses: 80, layout: 'nhwc' }, 3],
      ['C=80 nahwc', anchor(2, 80, 128, 'nahwc'), { numClasses: 80, layout: 'nahwc' }, 3],
      // spans over 24 (the double steps) among fp32 cells, and every cell over it
      ['C=80 wide logits', odd(80), { numClasses: 80 }, 6],
      ['C=80 tau 0.25', odd(80), { numClasses: 80, temperature: 0.25 }, 3],
      ['C=80 tau 4', anchor(2, 80, 128), { numClasses: 80, temperature: 4 }, 3],
      ['C=80 tau 1e10 (second order)', odd(80), { numClasses: 80, temperature: 1e10 }, 3],
      // factors outside [2^-60, 2^60]: the double gradient path
      ['C=80 lambda 1e25', odd(80), { numClasses: 80, lambda: 1e25 }, 3],
      ['C=80 unweighted, fmNms', anchor(2, 80, 128), { numClasses: 80, weighted: { cls: false }, fmNms: true }, 3],
      ['anchor-free R=16', free(2, 16, 80, 256), { numClasses: 80, head: 'anchorFree' }, 3],
      ['anchor-free R=16 512', free(1, 16, 80, 512), { numClasses: 80, head: 'anchorFree' }, 3],
      ['anchor-free R=17, C=3', free(2, 17, 3, 128), { numClasses: 3, head: 'anchorFree', regMax: 17 }, 3],
      ['anchor-free boxTemperature 1', free(1, 16, 80, 128), { numClasses: 80, head: 'anchorFree', boxTemperature: 1 }, 3],
      ['anchor-free nhwc', free(2, 16, 80, 128, 'nhwc'), { numClasses: 80, head: 'anchorFree', layout: 'nhwc' }, 3],
    ];
    for (const [name, shapes, opts, spread] of cases) {
      const r = h.rng(name.length * 7919 + 17);
      const { student, teacher } = h.makeHeads(r, shapes, spread);
      const anchorFree = opts.head === 'anchorFree';
      const cls = anchorFree ? [{}, { clsTarget: 'kl' }] : [{ clsTarget: 'kl' }];
      for (const extra of cls) {
        out[`${name} ${JSON.stringify(extra)}`] = digest(yd.distillationLoss(student, teacher, { ...opts, ...extra }));
      }
    }
    {
      const r = h.rng(5);
      const { student, teacher } = nearHeads(r, anchor(2, 80, 256), 3, 0.25);
      out['C=80 near'] = digest(yd.distillationLoss(student, teacher, { numClasses: 80, clsTarget: 'kl' }));
      const af = nearHeads(r, free(2, 16, 80, 256), 3, 0.25);
      out['anchor-free near'] = digest(yd.distillationLoss(af.student, af.teacher, { numClasses: 80, head: 'anchorFree' }));
    }
    {
      // NaN in one cell: that cell takes the double steps, its neighbours stay
      const r = h.rng(6);
      const { student, teacher } = h.makeHeads(r, odd(80), 3);
      teacher[0].data[3 * 91 + 40] = NaN;
      out['C=80 a NaN'] = digest(yd.distillationLoss(student, teacher, { numClasses: 80, clsTarget: 'kl' }));
    }
    {
      // 16-bit heads, and an fp32 student with a float16 teacher
      const r = h.rng(7);
      const { student, teacher } = h.makeHeads(r, anchor(2, 80, 128), 3);
      const half = (xs, dtype) => xs.map((x) => h.headOfDtype(x, dtype));
      for (const dtype of ['float16', 'bfloat16']) {
        out[`${dtype} heads`] = digest(yd.distillationLoss(half(student, dtype), half(teacher, dtype), { numClasses: 80, clsTarget: 'kl' }));
      }
      out['float16 teacher'] = digest(yd.distillationLoss(student, half(teacher, 'float16'), { numClasses: 80, clsTarget: 'kl' }));
    }
    const k = native.cpuKernels();
    return { lanes: k.klLanes, gather: k.klGather, digests: out };
  },
};

const name = process.argv[2];
if (!scenarios[name]) throw new Error(`unknown scenario ${name}`);
console.log(JSON.stringify(scenarios[name]()));
