#!/usr/bin/env node
'use strict';
// npm run bench: the fused kernel side by side with the LibTorch reference (ops +
// autograd), PyTorch eager in Python, a plain TypeScript loop, and the memory-
// bandwidth floor (a native pass reading two arrays and writing one, 12 bytes per
// value; next to it the same as a plain OpenMP C loop, bench/floor.c, built with
// -O3 -march=native), forward + gradient each time, at 1 and 2 threads.
//
//   node bench/run.js [--quick] [--only a,b,...] [--runs N] [--threads 1,2]
//
// Prints a table and writes bench/results.json and bench/results.svg.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const yd = require('../dist');
const { distillationLossJS } = require('./js-loss');
const { native } = require('../dist/binding'); // streamingFloor: internal, for benchmarks
const { cFloorMs } = require('./common');

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const QUICK = flag('--quick');
const RUNS = Number(value('--runs', QUICK ? 3 : 7));
const THREADS = value('--threads', '1,2').split(',').map(Number);
const ONLY = value('--only', 'a,b,c,d,e,v,f,h').split(',');
const PYTHON = '/usr/bin/python3';
const tty = process.stdout.isTTY;

const A = 3;
const yolo = (B, C, size, layout) =>
  [8, 16, 32].map((stride) => {
    const g = size / stride;
    return layout === 'nchw' ? [B, A * (5 + C), g, g] : [B, A, g, g, 5 + C];
  });
const WORKLOADS = [
  { id: 'a', name: 'YOLOv5s 640x640, B=16, C=80, nchw', C: 80, layout: 'nchw', shapes: yolo(QUICK ? 4 : 16, 80, 640, 'nchw') },
  { id: 'b', name: 'YOLOv5s 640x640, B=16, C=8, nchw', C: 8, layout: 'nchw', shapes: yolo(QUICK ? 4 : 16, 8, 640, 'nchw') },
  { id: 'c', name: 'one image 320x320, C=80, nchw (latency)', C: 80, layout: 'nchw', shapes: yolo(1, 80, 320, 'nchw') },
  { id: 'd', name: 'YOLOv5s 640x640, B=16, C=80, nahwc', C: 80, layout: 'nahwc', shapes: yolo(QUICK ? 4 : 16, 80, 640, 'nahwc') },
  { id: 'e', name: 'tiny call: 1 scale, 2x2 grid, C=80 (N-API fixed cost)', C: 80, layout: 'nchw', shapes: [[1, A * 85, 2, 2]], tiny: true },
  {
    id: 'v', name: 'loss variants on workload (a), 2 threads (fused only)', C: 80, layout: 'nchw', shapes: yolo(QUICK ? 4 : 16, 80, 640, 'nchw'),
    variants: [
      ['default (docs/DESIGN.md §1)', {}],
      ["preset 'paper'", { preset: 'paper' }],
      ["objTarget 'bce'", { objTarget: 'bce' }],
      ["clsTarget 'kl'", { clsTarget: 'kl' }],
      ['fmNms', { fmNms: true }],
      ["preset 'paper' + fmNms", { preset: 'paper', fmNms: true }],
    ],
  },
  {
    // Anchor-free heads (YOLOv8s at 640x640): 4 * 16 box-bin logits + 80 class
    // logits per cell, no anchors, nchw.
    id: 'f', name: 'anchor-free YOLOv8s 640x640, B=16, C=80, regMax 16, nchw, 2 threads (fused only)', C: 80, layout: 'nchw',
    shapes: [8, 16, 32].map((s) => [QUICK ? 4 : 16, 4 * 16 + 80, 640 / s, 640 / s]),
    opts: { numClasses: 80, head: 'anchorFree', layout: 'nchw' },
    variants: [
      ['anchor-free, default', {}],
      ["anchor-free, clsTarget 'kl'", { clsTarget: 'kl' }],
      ['anchor-free, fmNms', { fmNms: true }],
    ],
  },
  {
    // 16-bit heads (workload (a) shapes, default formula, gradOut in the
    // student's dtype) against a 2-byte floor: the same native pass over
    // Uint16Arrays (6 bytes per value).
    id: 'h', name: 'workload (a) as 16-bit heads, default formula, 2 threads (fused only; × a 2-byte floor, 6 B/value)', C: 80,
    layout: 'nchw', shapes: yolo(QUICK ? 4 : 16, 80, 640, 'nchw'),
    half: [['float16 student + teacher', 'float16', 'float16'], ['bfloat16 student + teacher', 'bfloat16', 'bfloat16'],
      ['float32 student, float16 teacher (× the 4-byte floor)', 'float32', 'float16']],
  },
].filter((w) => ONLY.includes(w.id));

const numel = (s) => s.reduce((a, b) => a * b, 1);

/** Deterministic pseudo-random fill (xorshift32), values in about [-3, 3]. */
function fill(n, seed) {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (x / 4294967296) * 6 - 3;
  }
  return out;
}

function stats(ms) {
  const s = [...ms].sort((a, b) => a - b);
  return { median: s[s.length >> 1], min: s[0], max: s[s.length - 1], runs: s.length };
}

/** Times fn: `warmup` untimed calls, then `runs` timed calls of `inner` calls each (ms per call). */
function time(fn, { warmup = 1, runs = RUNS, inner = 1 } = {}) {
  for (let i = 0; i < warmup; i++) fn();
  const ms = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < inner; i++) fn();
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6 / inner);
  }
  return stats(ms);
}

/** Times a and b alternately, so both see the same machine load. */
function timePair(a, b, opts = {}) {
  const { warmup = 2, runs = RUNS, inner = 1 } = opts;
  // At least `warmup` untimed pairs, and up to 200 within half a second: V8
  // optimizes the facade's JavaScript only after some hundred calls, and a
  // call of tens of microseconds (workload c) timed before that measured the
  // interpreter (94 µs after 2 warm-up calls, 53 µs after 300, in one process).
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < warmup || (i < 200 && Number(process.hrtime.bigint() - t0) < 5e8); i++) {
    a();
    b();
  }
  const ta = [];
  const tb = [];
  for (let r = 0; r < runs; r++) {
    for (const [fn, out] of [[a, ta], [b, tb]]) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < inner; i++) fn();
      out.push(Number(process.hrtime.bigint() - t0) / 1e6 / inner);
    }
  }
  return [stats(ta), stats(tb)];
}

// The plain OpenMP C loop (bench/common.js cFloorMs); null without a C compiler.
// streaming: the loop with streaming stores (bench/floor.c nt).
function cFloor(values, threads, inner, streaming = false) {
  const ms = cFloorMs(values, RUNS, threads, inner, streaming);
  return ms && stats(ms);
}

function torchAvailable() {
  return spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
}

function eager(w, threads, inner) {
  const spec = {
    shapes: w.shapes, layout: w.layout, numClasses: w.C, numAnchors: A, threads,
    warmup: w.tiny ? 50 : 1, runs: w.tiny ? RUNS : Math.min(RUNS, 5), inner,
  };
  const r = spawnSync(PYTHON, [path.join(__dirname, 'torch_eager.py'), JSON.stringify(spec)], {
    encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(threads) }, maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`PyTorch eager failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  return { ...stats(out.ms), peakRssMb: out.peakRssMb, torch: out.torch };
}

function progress(msg) {
  if (tty) process.stdout.write(`\r\x1b[K${msg}`);
  else console.log(msg);
}

/** Student and teacher heads of the given shapes (fixed seeds) and gradOut arrays. */
function makeHeads(shapes) {
  return {
    student: shapes.map((shape, s) => ({ data: fill(numel(shape), 11 + s), shape })),
    teacher: shapes.map((shape, s) => ({ data: fill(numel(shape), 101 + s), shape })),
    gradOut: shapes.map((s) => new Float32Array(numel(s))),
  };
}

function runWorkload(w) {
  const values = w.shapes.reduce((a, s) => a + numel(s), 0);
  const { student, teacher, gradOut } = makeHeads(w.shapes);
  const opts = w.opts || { numClasses: w.C, numAnchors: A, layout: w.layout };
  const inner = w.tiny ? 2000 : 1;
  const rows = [];
  const add = (impl, threads, st, extra = {}) => rows.push({ workload: w.id, impl, threads, ...st, ...extra });

  if (w.half) {
    // Each 16-bit pairing against the floor of its element size, timed alternately.
    const { encode16 } = require('../test/helpers'); // round to nearest even, tested there
    const threads = Math.max(...THREADS);
    const as = (x, dtype) => (dtype === 'float32' ? { data: x.data, shape: x.shape } : { data: Uint16Array.from(x.data, encode16[dtype]), shape: x.shape, dtype });
    const f16 = w.shapes.map((s) => [new Uint16Array(numel(s)).fill(3), new Uint16Array(numel(s)).fill(1), new Uint16Array(numel(s))]);
    const floor2 = () => { for (const [a, b, c] of f16) native.streamingFloor(a, b, c, threads); };
    const floor4 = () => { for (let s = 0; s < w.shapes.length; s++) native.streamingFloor(student[s].data, teacher[s].data, gradOut[s], threads); };
    for (const [label, sd, td] of w.half) {
      progress(`[${w.id}] ${label}`);
      const st = student.map((x) => as(x, sd)), te = teacher.map((x) => as(x, td));
      const g = w.shapes.map((s) => (sd === 'float32' ? new Float32Array(numel(s)) : new Uint16Array(numel(s))));
      const callOpts = { ...opts, threads, gradOut: g };  // one options object per row (see fusedFn below)
      const [fused, floor] = timePair(() => yd.distillationLoss(st, te, callOpts), sd === td ? floor2 : floor4, { runs: Math.min(RUNS, 5) });
      add(`fused, ${label}`, threads, fused, { floorMedian: floor.median, bytes: sd === td ? 6 : 12 });
    }
    if (tty) process.stdout.write('\r\x1b[K');
    for (const r of rows) {
      r.gbPerS = (r.bytes * values) / (r.median / 1e3) / 1e9;
      r.vsFloor = r.median / r.floorMedian;
      r.speedupVsEager = null;
    }
    return { id: w.id, name: w.name, values, shapes: w.shapes, peakRssMb: process.resourceUsage().maxRSS / 1024, rows };
  }

  if (w.variants) {
    // Each variant's cost next to the default path, all against the same floor.
    const threads = Math.max(...THREADS);
    const floorFn = () => {
      for (let s = 0; s < w.shapes.length; s++) native.streamingFloor(student[s].data, teacher[s].data, gradOut[s], threads);
    };
    // The same formula's arithmetic: its call on heads of the same kind that fit
    // in cache (B = 2 at 320x320: 12.9 MB for student, teacher and gradient),
    // per value, right after the row's timed pairs. Over the row's floor per
    // value it is what "x floor" would read if memory cost nothing beyond the
    // floor (bench/bound.js, round by round): the compute-bound rows' bound in
    // this run's memory moment.
    const smallShapes = w.shapes.map((s) => [2, s[1], s[2] / 2, s[3] / 2]);
    const smallValues = smallShapes.reduce((a, s) => a + numel(s), 0);
    const small = makeHeads(smallShapes);
    for (const [label, extra] of w.variants) {
      progress(`[${w.id}] ${label}`);
      const callOpts = { ...opts, ...extra, threads, gradOut };
      const [fused, floor] = timePair(() => yd.distillationLoss(student, teacher, callOpts), floorFn, { runs: Math.min(RUNS, 5) });
      const smallOpts = { ...opts, ...extra, threads, gradOut: small.gradOut };
      const inCache = time(() => yd.distillationLoss(small.student, small.teacher, smallOpts), { warmup: 20, runs: 9, inner: 10 });
      const arithVsFloor = (inCache.median / smallValues) / (floor.median / values);
      add(`fused, ${label}`, threads, fused, { floorMedian: floor.median, arithVsFloor });
    }
    if (tty) process.stdout.write('\r\x1b[K');
    for (const r of rows) {
      r.gbPerS = (12 * values) / (r.median / 1e3) / 1e9;
      r.vsFloor = r.median / r.floorMedian;
      r.speedupVsEager = null;
    }
    return { id: w.id, name: w.name, values, shapes: w.shapes, peakRssMb: process.resourceUsage().maxRSS / 1024, rows };
  }

  for (const threads of THREADS) {
    progress(`[${w.id}] ${threads} thread(s): fused + floor`);
    // One options object for all the row's calls, as a training loop keeps its
    // options: in Node 20 (V8 11.3) an object made per call by spreading
    // another and adding keys ({ ...opts, threads, gradOut }) gets a new hidden
    // class every time, after warm-up: making it cost 0.8-1.2 µs and reading
    // its options (the facade's 22 property reads) 2.4 µs (bench/options-object.js), half the tiny call
    // (BENCHMARKS.md "The tiny call").
    const callOpts = { ...opts, threads, gradOut };
    const fusedFn = () => yd.distillationLoss(student, teacher, callOpts);
    const floorFn = () => {
      for (let s = 0; s < w.shapes.length; s++) native.streamingFloor(student[s].data, teacher[s].data, gradOut[s], threads);
    };
    // RSS growth across the timed fused calls (with gradOut): after one call, so
    // that the caller's gradOut pages are already resident. A kernel that
    // allocated temporaries proportional to the input would show here.
    fusedFn();
    const rss0 = process.memoryUsage().rss;
    const [fused, floor] = timePair(fusedFn, floorFn, { inner, warmup: w.tiny ? 200 : 2 });
    const rssGrowthMb = (process.memoryUsage().rss - rss0) / 2 ** 20;
    add('fused', threads, fused, { rssGrowthMb });
    add('floor', threads, floor);
    // The plain C loop right after: the package's floor must be at least as fast.
    const c = cFloor(values, threads, inner);
    if (c) add('c-loop floor', threads, c);
    // And with streaming stores (no read for ownership of the written lines):
    // the floor of a call that streams its gradient (README "Large calls").
    const cn = cFloor(values, threads, inner, true);
    if (cn) add('c-loop nt floor', threads, cn);
    progress(`[${w.id}] ${threads} thread(s): LibTorch reference`);
    add('reference', threads, time(() => yd.distillationLoss(student, teacher, { ...opts, threads, impl: 'reference' }),
      { runs: w.tiny ? RUNS : Math.min(RUNS, 5), inner: w.tiny ? 200 : 1, warmup: 1 }));
    if (torchAvailable()) {
      progress(`[${w.id}] ${threads} thread(s): PyTorch eager`);
      add('eager', threads, eager(w, threads, w.tiny ? 200 : 1));
    }
  }
  progress(`[${w.id}] TypeScript loop`);
  add('ts-loop', 1, time(() => distillationLossJS(student, teacher, opts), { runs: Math.min(RUNS, 5), inner: w.tiny ? 200 : 1 }));
  if (tty) process.stdout.write('\r\x1b[K');

  for (const r of rows) {
    const same = (impl) => rows.find((x) => x.impl === impl && x.threads === r.threads);
    const eagerRow = same('eager') || rows.find((x) => x.impl === 'eager');
    const floorRow = same('floor') || rows.find((x) => x.impl === 'floor');
    r.gbPerS = (12 * values) / (r.median / 1e3) / 1e9;
    r.vsFloor = r.median / floorRow.median;
    r.speedupVsEager = eagerRow ? eagerRow.median / r.median : null;
  }
  return { id: w.id, name: w.name, values, shapes: w.shapes, peakRssMb: process.resourceUsage().maxRSS / 1024, rows };
}

function fmtMs(ms) {
  if (ms < 0.1) return `${(ms * 1000).toFixed(2)} µs`;
  if (ms < 10) return `${ms.toFixed(3)} ms`;
  return `${ms.toFixed(1)} ms`;
}

function table(results) {
  const lines = [];
  lines.push('| workload | impl | threads | median | spread (min–max) | GB/s (12 B/value; h: 6 for 16-bit pairs) | × floor | speedup vs eager | notes |');
  lines.push('|---|---|---|---|---|---|---|---|---|');
  for (const w of results.workloads) {
    for (const r of w.rows) {
      lines.push(
        `| ${w.id} | ${r.impl} | ${r.threads} | ${fmtMs(r.median)} | ${fmtMs(r.min)} – ${fmtMs(r.max)} | ` +
          `${r.gbPerS.toFixed(2)} | ${r.vsFloor.toFixed(2)} | ${r.speedupVsEager ? r.speedupVsEager.toFixed(1) + '×' : '–'} | ` +
          `${r.rssGrowthMb !== undefined ? `RSS growth over timed calls ${r.rssGrowthMb.toFixed(1)} MB` : ''}${r.peakRssMb !== undefined ? `Python peak RSS ${r.peakRssMb.toFixed(0)} MB` : ''}` +
          `${r.arithVsFloor !== undefined ? `arithmetic ${r.arithVsFloor.toFixed(2)}× floor` : ''} |`,
      );
    }
  }
  return lines.join('\n');
}

/** A horizontal log-scale bar chart of median time per call, one group per workload. */
function svg(results) {
  const colors = { fused: '#1b9e77', floor: '#7f7f7f', 'c-loop floor': '#bdbdbd', 'c-loop nt floor': '#e0e0e0', reference: '#7570b3', eager: '#d95f02', 'ts-loop': '#e7298a' };
  const colorOf = (impl) => colors[impl] || (impl.startsWith('fused') ? colors.fused : '#999999');
  const groups = results.workloads.map((w) => ({
    title: `(${w.id}) ${w.name}`,
    rows: w.rows.filter((r) => r.threads === Math.max(...THREADS) || r.impl === 'ts-loop'),
  }));
  const all = groups.flatMap((g) => g.rows.map((r) => r.median));
  const lo = Math.log10(Math.min(...all)) - 0.2;
  const hi = Math.log10(Math.max(...all)) + 0.2;
  const W = 900;
  const left = 170;
  const barW = W - left - 150;
  const rowH = 18;
  let y = 50;
  const parts = [];
  parts.push(`<text x="10" y="24" font-size="16" font-weight="bold">yolo-distill: forward + gradient, median time per call (log scale, shorter is faster; ${Math.max(...THREADS)} threads)</text>`);
  for (const g of groups) {
    parts.push(`<text x="10" y="${y + 12}" font-size="13" font-weight="bold">${g.title}</text>`);
    y += 20;
    for (const r of g.rows) {
      const len = Math.max(2, ((Math.log10(r.median) - lo) / (hi - lo)) * barW);
      const label = `${r.impl}${r.impl === 'ts-loop' ? ' (1 thread)' : ''}`;
      parts.push(`<text x="${left - 8}" y="${y + 13}" font-size="12" text-anchor="end">${label}</text>`);
      parts.push(`<rect x="${left}" y="${y + 2}" width="${len.toFixed(1)}" height="${rowH - 4}" fill="${colorOf(r.impl)}"/>`);
      const note = r.impl.startsWith('fused') ? ` (${r.vsFloor.toFixed(2)}× floor${r.speedupVsEager ? `, ${r.speedupVsEager.toFixed(0)}× eager` : ''})` : '';
      parts.push(`<text x="${left + len + 6}" y="${y + 13}" font-size="12">${fmtMs(r.median)}${note}</text>`);
      y += rowH;
    }
    y += 12;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 10}" font-family="sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>${parts.join('')}</svg>\n`;
}

function main() {
  const info = yd.backendInfo();
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`yolo-distill bench: LibTorch ${info.libtorch}, ${os.cpus().length} cores (${cpu}), runs ${RUNS}, threads ${THREADS.join('/')}${QUICK ? ', QUICK (smaller batches)' : ''}`);
  if (!torchAvailable()) console.log(`PyTorch eager rows skipped: ${PYTHON} cannot import torch (apt-get install python3-torch)`);
  const results = {
    date: new Date().toISOString(),
    machine: { cpu, cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30) },
    libtorch: info.libtorch,
    node: process.version,
    command: `node bench/run.js ${args.join(' ')}`.trim(),
    quick: QUICK,
    workloads: [],
  };
  for (const w of WORKLOADS) {
    const r = runWorkload(w);
    results.workloads.push(r);
    const f = r.rows.filter((x) => x.impl === 'fused').map((x) => `${x.threads}t ${fmtMs(x.median)} (${x.vsFloor.toFixed(2)}× floor${x.speedupVsEager ? `, ${x.speedupVsEager.toFixed(1)}× eager` : ''})`);
    console.log(`[${w.id}] ${w.name}: ${(r.values / 1e6).toFixed(2)} M values per tensor; fused ${f.join(', ')}`);
  }
  console.log();
  console.log(table(results));
  const outDir = __dirname;
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2) + '\n');
  fs.writeFileSync(path.join(outDir, 'results.svg'), svg(results));
  console.log(`\nwrote bench/results.json and bench/results.svg`);
}

main();
