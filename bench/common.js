'use strict';
// Shared by the side-by-side benchmark scripts (compare, safety, plain-call,
// anchor-free, floors, in-cache): the same deterministic inputs and the same
// timing helpers; and the C-loop floor (run, floors).
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const numel = (s) => s.reduce((a, b) => a * b, 1);

/**
 * n values in [-3, 3) from a linear congruential generator mod 2^32 seeded with `seed`.
 * (Math.imul: before the evening session of 2026-12-07 the product was taken in double precision,
 * which rounds above 2^53, and the sequence fell into a cycle of 419 values after 15,176;
 * BENCHMARKS.md, "KL planes whose stride is a multiple of 4 KB".)
 */
function fill(n, seed) {
  const a = new Float32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    a[i] = (x / 4294967296 - 0.5) * 6;
  }
  return a;
}

/** Student and teacher heads of the given shapes, and resident gradOut arrays (already touched). */
function heads(shapes) {
  return {
    student: shapes.map((s, k) => ({ data: fill(numel(s), 1 + k), shape: s })),
    teacher: shapes.map((s, k) => ({ data: fill(numel(s), 11 + k), shape: s })),
    gradOut: shapes.map((s) => new Float32Array(numel(s)).fill(1)),
  };
}

/**
 * heads(shapes) with every student value moved to within +-noise / 2 of its
 * teacher's (the noise from the student's own fill): a student near its
 * teacher, as late in training.
 */
function nearHeads(shapes, noise) {
  const hs = heads(shapes);
  hs.student.forEach((s, k) => {
    const t = hs.teacher[k].data;
    for (let i = 0; i < t.length; i++) s.data[i] = t[i] + (s.data[i] * noise) / 6;
  });
  return hs;
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];

/** Milliseconds one synchronous call of fn takes. */
function timeMs(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

// A plain OpenMP C loop c[i] = a[i] - b[i] (bench/floor.c, -O3 -march=native),
// built once per process; null when no C compiler with OpenMP is there.
let cFloorExe;
function cFloorBinary() {
  if (cFloorExe !== undefined) return cFloorExe;
  const exe = path.join(__dirname, '..', 'build', 'bench-floor');
  fs.mkdirSync(path.dirname(exe), { recursive: true });
  const r = spawnSync('gcc', ['-O3', '-march=native', '-fopenmp', path.join(__dirname, 'floor.c'), '-o', exe], { encoding: 'utf8' });
  cFloorExe = r.status === 0 ? exe : null;
  if (!cFloorExe) console.log(`C-loop floor skipped: gcc -O3 -march=native -fopenmp failed (${(r.stderr || r.error || '').toString().split('\n')[0]})`);
  return cFloorExe;
}

/**
 * The C loop over `values` floats in its own process: ms per pass of each of `runs` runs, or null (no
 * compiler); streaming: its streaming-store form (bench/floor.c nt).
 */
function cFloorMs(values, runs, threads, inner, streaming = false) {
  const exe = cFloorBinary();
  if (!exe) return null;
  const args = [String(values), String(runs), String(threads), String(inner)].concat(streaming ? ['nt'] : []);
  const r = spawnSync(exe, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench-floor failed: ${r.stderr}`);
  return JSON.parse(r.stdout).ms;
}

/** Median ns per value of fn() over `values` values: 20 warm-up calls, then `timings` (15) timings of `calls` calls. */
function nsPerValue(fn, values, calls, timings = 15) {
  for (let i = 0; i < 20; i++) fn();
  const ns = [];
  for (let r = 0; r < timings; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) fn();
    ns.push(Number(process.hrtime.bigint() - t0) / calls / values);
  }
  return median(ns);
}

// The number after `--name` on the command line, or dflt when it is absent.
const numberArg = (name, dflt) => {
  const argv = process.argv.slice(2);
  return argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : dflt;
};

module.exports = { numel, fill, heads, nearHeads, median, timeMs, cFloorMs, nsPerValue, numberArg };
