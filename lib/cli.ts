#!/usr/bin/env node
// yolo-distill CLI: `demo` (the built-in default workload) and `info`.
import { backendInfo, distillationLoss, DistillationOptions, HeadArray } from './index';

const USAGE = `usage: yolo-distill <command> [options]

commands:
  demo   distil a synthetic YOLOv5s-shaped teacher into a student's head outputs
         by gradient descent with the loss's own gradient, and time the fused kernel
           --steps N     descent steps (default 10)
           --batch B     images per batch (default 8)
           --classes C   classes (default 80)
           --size S      input size in pixels, a multiple of 32 (default 640)
           --threads T   kernel threads (default: backendInfo().threads)
           --layout L    nchw | nahwc | nhwc (default nchw)
           --head H      anchor (YOLOv5s-shaped, default) | anchorFree (YOLOv8s-shaped, regMax 16)
  info   print the backend: LibTorch version, CUDA, threads
`;

/** Deterministic normal samples (xorshift32 + Box-Muller). */
function makeRandn(seed: number): () => number {
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const th = 2 * Math.PI * uniform();
    spare = r * Math.sin(th);
    return r * Math.cos(th);
  };
}

interface DemoArgs {
  steps: number;
  batch: number;
  classes: number;
  size: number;
  threads: number;
  layout: 'nchw' | 'nahwc' | 'nhwc';
  head: 'anchor' | 'anchorFree';
}

function parseArgs(argv: string[]): DemoArgs {
  const a: DemoArgs = { steps: 10, batch: 8, classes: 80, size: 640, threads: 0, layout: 'nchw', head: 'anchor' };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    const val = argv[i + 1];
    const int = (name: string, min: number) => {
      const n = Number(val);
      if (!Number.isInteger(n) || n < min) throw new Error(`${name} expects an integer >= ${min}, got ${val}`);
      i++;
      return n;
    };
    switch (key) {
      case '--steps': a.steps = int('--steps', 1); break;
      case '--batch': a.batch = int('--batch', 1); break;
      case '--classes': a.classes = int('--classes', 1); break;
      case '--size': a.size = int('--size', 32); break;
      case '--threads': a.threads = int('--threads', 0); break;
      case '--layout':
        if (val !== 'nchw' && val !== 'nahwc' && val !== 'nhwc') throw new Error(`--layout expects nchw, nahwc or nhwc, got ${val}`);
        a.layout = val;
        i++;
        break;
      case '--head':
        if (val !== 'anchor' && val !== 'anchorFree') throw new Error(`--head expects anchor or anchorFree, got ${val}`);
        a.head = val;
        i++;
        break;
      default: throw new Error(`unknown option ${key}`);
    }
  }
  if (a.head === 'anchorFree' && a.layout === 'nahwc') throw new Error('--head anchorFree takes --layout nchw or nhwc');
  if (a.size % 32 !== 0) throw new Error(`--size must be a multiple of 32, got ${a.size}`);
  return a;
}

/** A live line on a terminal; plain lines otherwise (logs, pipes, CI). */
function progress(msg: string, done = false): void {
  if (process.stdout.isTTY) process.stdout.write(`\r\x1b[K${msg}${done ? '\n' : ''}`);
  else console.log(msg);
}

function fmt(x: number): string {
  return x.toExponential(4);
}

function demo(args: DemoArgs): void {
  // Anchor heads: YOLOv5s-shaped (A = 3, 5 + C values per anchor). Anchor-free:
  // YOLOv8s-shaped (one prediction per cell, 4 * 16 box bins + C class logits).
  const af = args.head === 'anchorFree';
  const R = 16;
  const A = af ? 1 : 3;
  const C = args.classes;
  const K = af ? 4 * R + C : 5 + C;
  const grids = [8, 16, 32].map((stride) => args.size / stride);
  const shapes = grids.map((g) =>
    args.layout === 'nchw' ? [args.batch, A * K, g, g] : args.layout === 'nhwc' ? [args.batch, g, g, A * K] : [args.batch, A, g, g, K],
  );
  const sizes = shapes.map((s) => s.reduce((x, y) => x * y, 1));
  const total = sizes.reduce((x, y) => x + y, 0);
  const info = backendInfo();
  const threads = args.threads || info.threads;
  console.log(
    `yolo-distill demo: ${af ? 'YOLOv8s-shaped anchor-free' : 'YOLOv5s-shaped'} heads at ${args.size}x${args.size}, B=${args.batch}, ${af ? `regMax=${R}` : `A=${A}`}, C=${C}, ` +
      `${args.layout}, grids ${grids.join('/')}, ${(total / 1e6).toFixed(1)} M values per tensor, ` +
      `LibTorch ${info.libtorch}, ${threads} thread(s)`,
  );

  // A fixed synthetic teacher: most cells background (objectness logit ~ N(-4, 3)),
  // box logits ~ N(0, 1), class logits ~ N(-3, 2). The student starts at N(0, 1).
  const randn = makeRandn(20181022);
  const teacher: HeadArray[] = [];
  const student: HeadArray[] = [];
  const gradOut: Float32Array[] = [];
  // Channel k of every element, for the per-term step sizes below.
  const kOf = (s: number, i: number): number => {
    const shape = shapes[s];
    if (args.layout !== 'nchw') return i % K; // nahwc, nhwc: K contiguous values per anchor
    const hw = shape[2] * shape[3];
    return Math.floor(i / hw) % K;
  };
  for (let s = 0; s < shapes.length; s++) {
    progress(`generating the synthetic teacher and student: scale ${s + 1}/${shapes.length} (${shapes[s].join('x')})`, s === shapes.length - 1);
    const t = new Float32Array(sizes[s]);
    const p = new Float32Array(sizes[s]);
    for (let i = 0; i < sizes[s]; i++) {
      const k = kOf(s, i);
      const z = randn();
      if (af) t[i] = k < 4 * R ? 2 * z : -3 + 2 * z; // box-bin logits; class logits mostly background
      else t[i] = k < 4 ? z : k === 4 ? -4 + 3 * z : -3 + 2 * z;
      p[i] = randn();
    }
    teacher.push({ data: t, shape: shapes[s] });
    student.push({ data: p, shape: shapes[s] });
    gradOut.push(new Float32Array(sizes[s]));
  }
  const opts: DistillationOptions = af
    ? { numClasses: C, head: 'anchorFree', regMax: R, layout: args.layout, threads, gradOut }
    : { numClasses: C, numAnchors: A, layout: args.layout, threads, gradOut };
  const lambda = 10;

  // Preconditioned gradient descent on the head outputs: each element's step is
  // its term's normaliser n_term * N_s / (2 lambda) times eta, so every cell's
  // error shrinks by (1 - eta * w_i) per step whatever its term.
  const eta = 0.5;
  const step = (s: number, g: Float32Array, p: Float32Array) => {
    const cells = sizes[s] / K;
    const base = (eta * cells) / (2 * lambda);
    const perK = new Float64Array(K).map((_, k) =>
      af ? base * (k < 4 * R ? 4 : C) : base * (k < 4 ? 4 : k === 4 ? 1 : C));
    for (let i = 0; i < p.length; i++) p[i] -= perK[kOf(s, i)] * g[i];
  };

  let kernelMs = 0;
  console.log('step        loss         box          obj          cls    kernel ms');
  for (let it = 0; it <= args.steps; it++) {
    const t0 = process.hrtime.bigint();
    const r = distillationLoss(student, teacher, opts);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (it > 0) kernelMs += ms;
    console.log(
      `${String(it).padStart(4)}  ${fmt(r.loss)}  ${fmt(r.box)}  ${fmt(r.obj)}  ${fmt(r.cls)}  ${ms.toFixed(1).padStart(9)}`,
    );
    if (it < args.steps) {
      for (let s = 0; s < shapes.length; s++) step(s, r.grads![s] as Float32Array, student[s].data as Float32Array);
    }
  }
  const perCall = kernelMs / args.steps / 1000;
  console.log(
    `throughput: fused loss + gradient, ${(total / perCall / 1e9).toFixed(2)} G values/s, ` +
      `${((12 * total) / perCall / 1e9).toFixed(2)} GB/s effective (12 bytes/value: student, teacher, gradient), ` +
      `${(perCall * 1000).toFixed(1)} ms per call (mean of ${args.steps})`,
  );

  // Cross-check the fused kernel against the LibTorch reference (ops + autograd).
  progress('cross-checking against the LibTorch reference (ops + autograd)...');
  const fused = distillationLoss(student, teacher, { ...opts, gradOut: undefined });
  const t0 = process.hrtime.bigint();
  const ref = distillationLoss(student, teacher, { ...opts, gradOut: undefined, impl: 'reference' });
  const refMs = Number(process.hrtime.bigint() - t0) / 1e6;
  let maxDiff = 0;
  let maxGrad = 0;
  for (let s = 0; s < shapes.length; s++) {
    const a = fused.grads![s] as Float32Array;
    const b = ref.grads![s] as Float32Array;
    for (let i = 0; i < a.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
      maxGrad = Math.max(maxGrad, Math.abs(b[i]));
    }
  }
  const rel = Math.abs(fused.loss - ref.loss) / Math.abs(ref.loss);
  const ok = rel <= 1e-5 && maxDiff <= 1e-6 + 1e-5 * maxGrad;
  if (process.stdout.isTTY) process.stdout.write('\r\x1b[K');
  console.log(
    `check: fused vs reference (LibTorch ops + autograd, ${refMs.toFixed(0)} ms): loss rel diff ${rel.toExponential(2)}, ` +
      `max |grad diff| ${maxDiff.toExponential(2)} (max |grad| ${maxGrad.toExponential(2)}): ${ok ? 'OK' : 'MISMATCH'}`,
  );
  if (!ok) process.exitCode = 1;
}

function main(argv: string[]): void {
  const [cmd, ...rest] = argv;
  if (cmd === 'demo') {
    demo(parseArgs(rest));
  } else if (cmd === 'info') {
    const info = backendInfo();
    for (const [k, v] of Object.entries(info)) console.log(`${k}: ${v}`);
  } else if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
  } else {
    process.stderr.write(`unknown command: ${cmd}\n${USAGE}`);
    process.exitCode = 2;
  }
}

try {
  main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`yolo-distill: ${(e as Error).message}\n`);
  process.exitCode = 2;
}
