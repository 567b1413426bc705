'use strict';
// Streaming gradient stores (native/core/fused_cpu.cpp, "Streaming stores for
// the gradient"): the same calls under whatever YD_STREAM_STORES this process
// was started with (0: never, 1: always where the CPU has AVX-512, or AVX2 and FMA; unset: by
// the call's size), one JSON line of digests:
//   YD_STREAM_STORES=1 node test/safety/stream-stores.js digests
// test/stream-stores.test.js runs it under each setting and compares the
// digests: the stores must not change a single bit.
const path = require('path');
const yd = require(path.join(__dirname, '..', '..'));
const h = require(path.join(__dirname, '..', 'helpers'));

const C = 80;
const digest = h.resultDigest;

// A copy of x at `shift` floats into a larger buffer: a view whose data is
// not 64-byte aligned (as the streaming stores need their lines to be).
function shifted(x, shift) {
  const buf = new Float32Array(x.length + 16);
  const v = buf.subarray(shift, shift + x.length);
  v.set(x);
  return v;
}

function heads(shapes, seed) {
  const { student, teacher } = h.makeHeads(h.rng(seed), shapes, 3);
  return { student, teacher };
}

const scenarios = {
  digests() {
    const out = {};
    const anchor = [8, 16, 32].map((s) => [2, 3 * (5 + C), 256 / s, 256 / s]); // 32, 16, 8 grids
    const free = [8, 16, 32].map((s) => [2, 4 * 16 + C, 256 / s, 256 / s]);
    const odd = [[1, 3 * (5 + C), 13, 7], [2, 3 * (5 + C), 5, 31]]; // planes of 91 and 155 cells
    const cases = [
      ['default', anchor, {}],
      ['default, one thread', anchor, { threads: 1 }],
      ['default, odd planes', odd, {}],
      ['bce', anchor, { objTarget: 'bce' }],
      ['weighted cls false', anchor, { weighted: { cls: false } }],
      ['fmNms', anchor, { fmNms: true }],
      ['paper', anchor, { preset: 'paper' }],
      ['kl', anchor, { clsTarget: 'kl' }],
      ['nhwc', anchor.map(([b, k, hh, w]) => [b, hh, w, k]), { layout: 'nhwc' }],
      ['anchor-free', free, { head: 'anchorFree' }],
      ['anchor-free unweighted', free, { head: 'anchorFree', weighted: { box: false, cls: false } }],
      ['anchor-free fmNms', free, { head: 'anchorFree', fmNms: true }],
    ];
    for (const [name, shapes, extra] of cases) {
      const { student, teacher } = heads(shapes, 11);
      const opts = { numClasses: C, threads: 2, ...extra };
      out[name] = digest(yd.distillationLoss(student, teacher, opts));
      // Every array a view at an odd offset, the gradients into caller-owned
      // views at other offsets: the streamed lines start after a lead of
      // ordinary stores.
      for (const shift of [1, 5, 13]) {
        const s2 = student.map((x, k) => ({ ...x, data: shifted(x.data, (shift + k) % 16) }));
        const t2 = teacher.map((x, k) => ({ ...x, data: shifted(x.data, (shift + 3 * k) % 16) }));
        const gradOut = student.map((x, k) => shifted(new Float32Array(x.data.length), (shift + 7 * k) % 16));
        out[`${name}, views at ${shift}`] = digest(yd.distillationLoss(s2, t2, { ...opts, gradOut }));
      }
    }
    // 16-bit students, whose 16-bit gradients are streamed as they are rounded
    // (narrow_run), default formula and variants, into their own arrays and
    // into Uint16Array views at odd offsets; and an fp32 student with a
    // float16 or bfloat16 teacher (an fp16 ONNX teacher), whose fp32 gradient
    // is not streamed (16-bit heads go through per-thread buffers; streaming it
    // read 1.02x the time, BENCHMARKS.md): the same results under every setting.
    {
      const { student, teacher } = heads(anchor, 12);
      const half = (xs, dtype) => xs.map((x) => h.headOfDtype(x, dtype));
      out['float16 student'] = digest(yd.distillationLoss(half(student, 'float16'), teacher, { numClasses: C }));
      for (const dtype of ['float16', 'bfloat16']) {
        for (const extra of [{}, { preset: 'paper' }, { clsTarget: 'kl' }]) {
          const s16 = half(student, dtype), t16 = half(teacher, dtype);
          const key = `${dtype} heads ${JSON.stringify(extra)}`;
          out[key] = digest(yd.distillationLoss(s16, t16, { numClasses: C, ...extra }));
          const gradOut = s16.map((x, k) => {
            const buf = new Uint16Array(x.data.length + 64);
            return buf.subarray(1 + 2 * k, 1 + 2 * k + x.data.length);
          });
          out[`${key}, views`] = digest(yd.distillationLoss(s16, t16, { numClasses: C, gradOut, ...extra }));
        }
      }
      for (const dtype of ['float16', 'bfloat16']) {
        out[`${dtype} teacher`] = digest(yd.distillationLoss(student, half(teacher, dtype), { numClasses: C }));
        const gradOut = student.map((x, k) => shifted(new Float32Array(x.data.length), 3 + k));
        out[`${dtype} teacher, views`] = digest(yd.distillationLoss(student, half(teacher, dtype), { numClasses: C, gradOut }));
      }
    }
    // A call large enough to stream by its size where YD_STREAM_STORES is
    // unset (4 images at 512: 5.5 M gradient values, 22 MB, over a third of
    // a 32 MB L3 cache).
    {
      const big = [8, 16, 32].map((s) => [4, 3 * (5 + C), 512 / s, 512 / s]);
      const { student, teacher } = heads(big, 13);
      out.large = digest(yd.distillationLoss(student, teacher, { numClasses: C }));
      out['large bce'] = digest(yd.distillationLoss(student, teacher, { numClasses: C, objTarget: 'bce' }));
    }
    return out;
  },
};

const name = process.argv[2];
if (!scenarios[name]) throw new Error(`unknown scenario ${name}`);
console.log(JSON.stringify(scenarios[name]()));
