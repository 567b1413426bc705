// yolo-distill: the objectness-scaled distillation loss for YOLO detectors and
// its gradient, fused in one native pass (LibTorch, CPU; CUDA builds too).
import { native, NativeResult, NativeTensor } from './binding';
import { Device, DType, Tensor } from './tensor';

export { Tensor } from './tensor';
export type { Device, DType } from './tensor';

/**
 * One scale given as a flat typed array and its shape (nothing is copied): a
 * Float32Array, or a Uint16Array holding the raw bits of float16 or bfloat16
 * values (what onnxruntime-node hands out for fp16 outputs) with `dtype` saying
 * which. Student and teacher dtypes may differ; the gradient of a student comes
 * in its own dtype (a Uint16Array for 16-bit students, rounded to nearest even).
 */
export interface HeadArray {
  data: Float32Array | Uint16Array;
  shape: readonly number[];
  /** 'float32' (default; a Float32Array), 'float16' or 'bfloat16' (a Uint16Array). */
  dtype?: DType;
}
/** One scale's head outputs: a Float32Array with its shape, or a Tensor handle. */
export type Head = HeadArray | Tensor;

export interface DistillationOptions {
  /** C, the number of classes (>= 1). */
  numClasses: number;
  /** A, anchors per grid cell. Default 3 (anchor heads); 1 or absent for anchor-free heads. */
  numAnchors?: number;
  /**
   * 'anchor' (default): YOLOv3/v5/v7 heads, 5 + C values per anchor with an objectness channel.
   * 'anchorFree': YOLOv8/YOLO11/YOLO26 heads, 4 * regMax box-distribution logits then C class
   * logits per cell, weighted by the teacher's top class probability (README "Anchor-free heads").
   */
  head?: 'anchor' | 'anchorFree';
  /** Anchor-free heads: bins per box side (DFL reg_max). Default 16; 1 = four direct box values (YOLO26). */
  regMax?: number;
  /** Anchor-free heads with regMax > 1: the temperature of the box distributions' KL. Default 10. */
  boxTemperature?: number;
  /**
   * 'nchw': [B, A*(5+C), H, W] (default, a conv output); 'nahwc': [B, A, H, W, 5+C]
   * (YOLOv5's Detect in training mode); 'nhwc': [B, H, W, A*(5+C)] (a channels-last
   * conv output: TensorFlow.js, TF, NHWC ONNX models). No transpose needed.
   */
  layout?: 'nchw' | 'nahwc' | 'nhwc';
  /** Overall multiplier of the loss. Default 10. */
  lambda?: number;
  /** Per-term multipliers g_box, g_obj, g_cls. Default 1 each. */
  weights?: { box?: number; obj?: number; cls?: number };
  /** Compute the gradient with respect to the student. Default true. */
  grad?: boolean;
  /** Multiplies the gradient (upstream gradient or AMP loss scale). Default 1. */
  gradScale?: number;
  /** Throw ERR_NON_FINITE on NaN/Inf in any input instead of propagating it. Default false. */
  checkFinite?: boolean;
  /**
   * Loss variants (README "Loss variants"). 'yolov5' (default): docs/DESIGN.md §1.
   * 'paper': Mehta & Ozturk 2018 as published (boxTarget 'paper', objTarget 'prob'
   * not weighted, clsTarget 'prob' weighted, lambda 1). Explicit options override it.
   */
  preset?: 'yolov5' | 'paper';
  /** 'logit': (P - T)^2 on tx, ty, tw, th; 'paper': sigmoid(tx), sigmoid(ty), raw tw, th. */
  boxTarget?: 'logit' | 'paper';
  /** 'logit': (P4 - T4)^2; 'prob': (sigma(P4) - sigma(T4))^2; 'bce': BCE of sigma(P4) against sigma(T4). */
  objTarget?: 'logit' | 'prob' | 'bce';
  /** As objTarget, per class; 'kl': tau^2 KL(softmax(T/tau) || softmax(P/tau)) per cell, over N_s. */
  clsTarget?: 'logit' | 'prob' | 'bce' | 'kl';
  /** Which terms are multiplied by the teacher weight w_i. Default: all three. */
  weighted?: { box?: boolean; obj?: boolean; cls?: boolean };
  /** tau of clsTarget 'kl' (> 0). Default 1. */
  temperature?: number;
  /** Feature-map NMS of the teacher (Mehta & Ozturk 2018): suppressed cells teach nothing. Default false. */
  fmNms?: boolean;
  /** 'fused' (default): the fused kernel; 'reference': LibTorch ops + autograd. */
  impl?: 'fused' | 'reference';
  /** Threads for the fused CPU kernel; 0 or absent: backendInfo().threads. */
  threads?: number;
  /**
   * Where to compute. Absent: where the heads are. 'cuda' / 'cuda:N' with
   * Float32Array heads copies them to the GPU and the gradients back.
   */
  device?: Device;
  /**
   * Caller-owned gradient buffers, one per scale (Float32Array of the student's
   * length, or a Tensor of its shape/dtype/device; null to allocate). Filled in
   * place and returned in `grads`, so a training loop allocates nothing per step.
   */
  gradOut?: (Float32Array | Uint16Array | Tensor | null | undefined)[];
}

export interface TermValues {
  box: number;
  obj: number;
  cls: number;
}

export interface DistillationResult {
  /** lambda * (g_box*box + g_obj*obj + g_cls*cls) */
  loss: number;
  /** Unweighted terms summed over scales. */
  box: number;
  obj: number;
  cls: number;
  /** Per-scale terms. */
  scales: TermValues[];
  /**
   * Per scale, same kind, shape, layout and dtype as the student (a Uint16Array
   * for a float16/bfloat16 array student); null when grad is false.
   */
  grads: (Float32Array | Uint16Array | Tensor)[] | null;
}

export interface BackendInfo {
  /** LibTorch version the addon was built against. */
  libtorch: string;
  /** CUDA kernels built and a device present. */
  cuda: boolean;
  cudaDeviceCount: number;
  /** Default thread count of the fused CPU kernel. */
  threads: number;
  /** The backends of this build: cpu, cuda, reference; why one is unavailable. */
  backends: { name: string; device: string; available: boolean; reason?: string }[];
}

/** Stable `code` values of the errors this package throws. */
export const ErrorCodes = {
  INVALID_ARG_TYPE: 'ERR_INVALID_ARG_TYPE',
  INVALID_OPTION: 'ERR_INVALID_OPTION',
  INVALID_SHAPE: 'ERR_INVALID_SHAPE',
  DATA_LENGTH: 'ERR_DATA_LENGTH',
  SCALE_COUNT: 'ERR_SCALE_COUNT',
  SHAPE_MISMATCH: 'ERR_SHAPE_MISMATCH',
  CHANNEL_MISMATCH: 'ERR_CHANNEL_MISMATCH',
  DTYPE_MISMATCH: 'ERR_DTYPE_MISMATCH',
  DEVICE_MISMATCH: 'ERR_DEVICE_MISMATCH',
  UNSUPPORTED_DTYPE: 'ERR_UNSUPPORTED_DTYPE',
  DETACHED_BUFFER: 'ERR_DETACHED_BUFFER',
  RESIZABLE_BUFFER: 'ERR_RESIZABLE_BUFFER',
  TENSOR_DISPOSED: 'ERR_TENSOR_DISPOSED',
  GRAD_OUT: 'ERR_GRAD_OUT',
  BUFFER_OVERLAP: 'ERR_BUFFER_OVERLAP',
  NON_FINITE: 'ERR_NON_FINITE',
  NO_CUDA: 'ERR_NO_CUDA',
  LIBTORCH: 'ERR_LIBTORCH',
  OUT_OF_MEMORY: 'ERR_OUT_OF_MEMORY',
  INTERNAL: 'ERR_INTERNAL',
  ADDON_LOAD: 'ERR_ADDON_LOAD',
  TFJS_MISSING: 'ERR_TFJS_MISSING',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

function toNative(h: unknown): unknown {
  return h instanceof Tensor ? Tensor._native(h) : h;
}

function heads(list: unknown): unknown {
  return Array.isArray(list) ? list.map(toNative) : list;
}

function nativeGradOut(go: unknown): unknown {
  return Array.isArray(go) && go.some((g) => g instanceof Tensor) ? go.map(toNative) : go;
}

/**
 * One head as the addon reads it (native/addon/convert.cpp read_head_record):
 * [data, dtype, shape, shape.length, shape[0], ...] for an object with data,
 * the dimensions up to the first that is not a positive integer (the one the
 * addon reports); [undefined, head] for anything else (a Tensor's native
 * handle, a non-object, an object without data), which the addon reads and
 * reports as it reads a head passed to it directly.
 */
function pushHead(args: unknown[], h: unknown): void {
  if (h instanceof Tensor) {
    args.push(undefined, Tensor._native(h));
    return;
  }
  if (h === null || typeof h !== 'object' || Array.isArray(h) || ArrayBuffer.isView(h)) {
    args.push(undefined, h);
    return;
  }
  const o = h as { data?: unknown; dtype?: unknown; shape?: unknown };
  const data = o.data;
  if (data === undefined) {
    args.push(undefined, h);
    return;
  }
  const dtype = o.dtype;
  const shape = o.shape;
  args.push(data, dtype, shape);
  if (!Array.isArray(shape)) return;
  const n = shape.length;
  args.push(n);
  if (n < 1 || n > 8) return;
  for (let i = 0; i < n; i++) {
    const d: unknown = shape[i];
    args.push(d);
    if (!Number.isSafeInteger(d) || (d as number) < 1) return;
  }
}

/** A list's length and its heads' records. */
function pushHeads(args: unknown[], list: unknown[]): void {
  args.push(list.length);
  for (let i = 0; i < list.length; i++) pushHead(args, list[i]);
}

/** The options object's values in the addon's order (lib/binding.ts OPTION_KEYS): gradOut last. */
function optionValues(o: Record<string, unknown>): unknown[] {
  return [
    o.numClasses, o.preset, o.numAnchors, o.head, o.regMax, o.boxTemperature, o.layout, o.boxTarget, o.objTarget,
    o.clsTarget, o.weighted, o.temperature, o.fmNms, o.lambda, o.weights, o.grad, o.gradScale, o.checkFinite, o.impl,
    o.threads, o.device, o.gradOut,
  ];
}

/** What a loss call gave back: the terms, how many scales they hold, the gradients. */
interface NativeCall {
  terms: Float64Array;
  scales: number;
  grads: NativeResult[1];
}

// The sync calls' terms (callNative): one array, read (fromNative) before any
// other JavaScript runs. A call of more than kMaxSyncScales scales (today's
// heads have 3 or 4) gets no array: the addon makes one, and a list whose
// length is absurd gets the addon's error, not a failed allocation here.
const kMaxSyncScales = 64;
let syncTerms = new Float64Array(4 + 3 * 8);

/**
 * A loss call into the addon. The lists' elements, the options object's
 * values, the heads' properties and gradOut's entries are read here, in
 * JavaScript, in the addon's order (lib/binding.ts OPTION_KEYS; getters and
 * Proxy traps run as they would in the addon, before it takes any pointer),
 * and passed after the object, each as an argument: no Node-API call per property or element, which had been
 * most of a small call's time (BENCHMARKS.md "The tiny call" and "The tiny
 * call on a Zen 3 core"). A sync call passes a Float64Array the addon writes
 * the terms into, and gets the gradients alone back. Anything but a plain
 * options object, or heads that are not arrays, go as they are, for the
 * addon's error.
 */
function callNative(student: unknown, teacher: unknown, options: unknown, sync: true): NativeCall;
function callNative(student: unknown, teacher: unknown, options: unknown, sync: false): Promise<NativeCall>;
function callNative(student: unknown, teacher: unknown, options: unknown, sync: boolean): NativeCall | Promise<NativeCall> {
  const fn = (sync ? native.distillationLoss : native.distillationLossAsync) as (...args: unknown[]) => unknown;
  if (options === null || typeof options !== 'object' || Array.isArray(options) ||
      !Array.isArray(student) || !Array.isArray(teacher)) {
    const s = heads(student);
    const t = heads(teacher);
    let raw: unknown;
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      raw = fn(s, t, options);
    } else {
      const values = optionValues(options as Record<string, unknown>);
      values[values.length - 1] = nativeGradOut(values[values.length - 1]);
      raw = fn(s, t, options, ...values);
    }
    const unpack = ([terms, grads]: NativeResult): NativeCall => ({ terms, scales: (terms.length - 4) / 3, grads });
    return sync ? unpack(raw as NativeResult) : (raw as Promise<NativeResult>).then(unpack);
  }
  // The addon's order: the lists' elements, the options, then each head's
  // properties (read_head) and gradOut's entries.
  const s = student.slice();
  const t = teacher.slice();
  const values = optionValues(options as Record<string, unknown>);
  const scales = s.length;
  let terms: Float64Array | undefined;
  if (sync && scales <= kMaxSyncScales) {
    if (syncTerms.length < 4 + 3 * scales) syncTerms = new Float64Array(4 + 3 * scales);
    terms = syncTerms;
  }
  const args: unknown[] = [student, teacher, options, ...values, terms];
  pushHeads(args, s);
  pushHeads(args, t);
  const go = values[values.length - 1]; // gradOut, the last key
  if (Array.isArray(go)) {
    const n = go.length;
    args.push(n);
    for (let i = 0; i < n; i++) args.push(toNative(go[i]));
  }
  const out = fn(...args);
  if (!sync) return (out as Promise<NativeResult>).then(([tr, grads]) => ({ terms: tr, scales, grads }));
  if (terms === undefined) {
    const [tr, grads] = out as NativeResult; // no terms array passed (see kMaxSyncScales)
    return { terms: tr, scales, grads };
  }
  return { terms, scales, grads: out as NativeResult[1] };
}

function fromNative(call: NativeCall, options: DistillationOptions): DistillationResult {
  // The terms first: reading options.gradOut below may run a getter, which may
  // call the loss again and overwrite a sync call's terms.
  const { terms, scales: count } = call;
  const scales: TermValues[] = [];
  for (let i = 4; i < 4 + 3 * count; i += 3) scales.push({ box: terms[i], obj: terms[i + 1], cls: terms[i + 2] });
  const loss = terms[0], box = terms[1], obj = terms[2], cls = terms[3];
  // A gradOut handle comes back as the caller's own Tensor object.
  const given = (s: number) => {
    const g = options.gradOut?.[s];
    return g instanceof Tensor ? g : undefined;
  };
  const grads = call.grads
    ? call.grads.map((g, s) => {
        if (ArrayBuffer.isView(g)) return g as Float32Array | Uint16Array;
        const mine = given(s);
        return mine && Tensor._native(mine) === g ? mine : Tensor._wrap(g as NativeTensor);
      })
    : null;
  return { loss, box, obj, cls, scales, grads };
}

/**
 * The objectness-scaled distillation loss of `student` against `teacher` (one
 * head per scale) and, unless `grad: false`, its gradient with respect to the
 * student. Runs on the calling thread.
 */
export function distillationLoss(
  student: readonly Head[],
  teacher: readonly Head[],
  options: DistillationOptions,
): DistillationResult {
  return fromNative(callNative(student, teacher, options, true), options);
}

/**
 * Like {@link distillationLoss}, computed on a worker thread: the event loop
 * stays free. Inputs are kept alive until the promise settles; do not mutate
 * them before it does.
 */
export async function distillationLossAsync(
  student: readonly Head[],
  teacher: readonly Head[],
  options: DistillationOptions,
): Promise<DistillationResult> {
  return fromNative(await callNative(student, teacher, options, false), options);
}

/** The state of the recycled memory behind the gradient arrays of calls without `gradOut`. */
export interface GradientPoolInfo {
  /** Whether calls of this thread hand out recycled memory (false: plain new arrays). */
  enabled: boolean;
  /**
   * Most bytes kept for reuse (all threads together): the cap in force. Until
   * one is set, the larger of 512 MiB and four times the largest call's new
   * gradient arrays.
   */
  maxBytes: number;
  /** Bytes kept for reuse now, and in how many blocks. */
  pooledBytes: number;
  pooledBlocks: number;
  /** Gradient arrays of this thread still reachable, as far as the last collection knows. */
  outstandingBlocks: number;
  /** Blocks handed out again, and blocks newly allocated, since the process started. */
  reused: number;
  allocated: number;
  /**
   * How gradient buffers are made: `'v8'`, through V8's API so that V8 does
   * not count each one as new memory (the pool reports what is out past half
   * its cap itself: a full collection every few calls instead of after every
   * call of 64 MB or more); `'node-api'`, Node-API's external buffers (where
   * the addon was built without Node's headers, the running Node is not the
   * one built against, or YOLO_DISTILL_V8_BUFFERS=0). README "Calls without gradOut".
   */
  buffers: 'v8' | 'node-api';
}

/**
 * The memory behind the gradient arrays of calls without `gradOut` is
 * recycled: once the garbage collector finds such an array's buffer
 * unreachable, a later call of the same size reuses its memory (no page
 * faults, no zeroing). Arrays under 1 MiB are plain new arrays; a block no
 * call has taken for 100 calls is freed. Returns the pool's state; `maxBytes`
 * caps the memory kept for reuse (all threads together; by default the larger
 * of 512 MiB and four times the largest call's new gradient arrays), 0 turns
 * recycling off and frees what is kept, and `null` goes back to the default.
 * README "Calls without gradOut".
 */
export function gradientPool(options?: { maxBytes?: number | null }): GradientPoolInfo {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    const err = new TypeError(`gradientPool: expected an options object or nothing, got ${options === null ? 'null' : typeof options}`) as TypeError & { code: string };
    err.code = 'ERR_INVALID_ARG_TYPE';
    throw err;
  }
  return native.gradientPool(options?.maxBytes) as GradientPoolInfo;
}

/** What this build can do: LibTorch version, CUDA, default thread count. */
export function backendInfo(): BackendInfo {
  return native.backendInfo();
}
