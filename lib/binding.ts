// Loads the native addon: a prebuilt binary (prebuilds/<platform>-<arch>/) or a
// local build (build/Release), and explains a failed load in one error.
import * as path from 'path';

/** @internal The native Tensor handle class (see native/addon/tensor_wrap.cpp). */
export interface NativeTensor {
  readonly shape: number[];
  readonly device: string;
  readonly dtype: string;
  readonly disposed: boolean;
  toFloat32Array(): Float32Array;
  toFloat32ArrayAsync(): Promise<Float32Array>;
  dispose(): void;
}

/** @internal */
export interface NativeTensorClass {
  new (...args: never[]): NativeTensor;
  fromFloat32Array(data: Float32Array, shape: readonly number[], opts?: object): NativeTensor;
}

/** @internal What the facade passes to the addon for one scale. */
export type NativeHead = { data: Float32Array | Uint16Array; shape: readonly number[]; dtype?: string } | NativeTensor;

/**
 * @internal The raw result the addon returns: terms = [loss, box, obj, cls, then
 * box, obj, cls of every scale], and the gradients (null when grad is false).
 */
export type NativeResult = [terms: Float64Array, grads: (Float32Array | Uint16Array | NativeTensor)[] | null];

/**
 * @internal The top-level option keys in the order the addon reads them
 * (native/addon/convert.cpp YD_OPTION_KEYS, exported as optionKeys): lib/index.ts
 * callNative passes the options' values in this order after the object.
 */
export const OPTION_KEYS = [
  'numClasses', 'preset', 'numAnchors', 'head', 'regMax', 'boxTemperature', 'layout', 'boxTarget', 'objTarget',
  'clsTarget', 'weighted', 'temperature', 'fmNms', 'lambda', 'weights', 'grad', 'gradScale', 'checkFinite', 'impl',
  'threads', 'device', 'gradOut',
] as const;

/** @internal */
export interface NativeBinding {
  Tensor: NativeTensorClass;
  // After the options object: its values in optionKeys order (lib/index.ts callNative).
  distillationLoss(student: unknown, teacher: unknown, options: unknown, ...values: unknown[]): NativeResult;
  distillationLossAsync(student: unknown, teacher: unknown, options: unknown, ...values: unknown[]): Promise<NativeResult>;
  /** The top-level option keys in the order the addon reads them. */
  readonly optionKeys: readonly string[];
  backendInfo(): {
    libtorch: string;
    cuda: boolean;
    cudaDeviceCount: number;
    threads: number;
    backends: { name: string; device: string; available: boolean; reason?: string }[];
  };
  streamingFloor(a: Float32Array, b: Float32Array, out: Float32Array, threads?: number): void;
  streamingFloor(a: Uint16Array, b: Uint16Array, out: Uint16Array, threads?: number): void;
  cpuKernels(): { klLanes: number; streamLevel: number; klGather: number };
  heapInUse(): number;
  gradientPool(maxBytes?: number | null): unknown;
  configure(hooks: { markAsUntransferable: (o: object) => void; recycleGradients: boolean }): void;
}

const root = path.join(__dirname, '..');

/** Why a load failed and what to do about it, from the loader's error messages. */
function explain(messages: string[]): string {
  const all = messages.join('\n');
  let why: string;
  let fix: string;
  if (/lib(torch|c10)[\w.]*\.so[^:]*: cannot open shared object file/.test(all)) {
    why = 'the LibTorch shared libraries the addon was built against cannot be found';
    fix = 'install LibTorch (Debian/Ubuntu: apt-get install -y libtorch-dev), or rebuild against the one you have: npm run build:native';
  } else if (/GLIBC(XX)?_[\d.]+' not found/.test(all)) {
    why = 'the binary needs a newer glibc/libstdc++ than this system has';
    fix = 'build from source on this machine: npm run build:native';
  } else if (/undefined symbol/.test(all)) {
    why = 'the LibTorch found at run time is not the version the addon was built against';
    fix = 'rebuild against the installed LibTorch: npm run build:native';
  } else if (/No native build was found|Could not locate the bindings file/.test(all)) {
    why = 'no build of the native addon was found (no prebuild for this platform and no local build)';
    fix = 'build it: npm run build:native (needs cmake, g++ and LibTorch: apt-get install -y cmake g++ libtorch-dev)';
  } else {
    why = 'the native addon failed to load';
    fix = 'rebuild it: npm run build:native';
  }
  return `yolo-distill: ${why}.\nTo fix: ${fix}\nLoader messages:\n  ${messages.join('\n  ')}`;
}

function load(): NativeBinding {
  const messages: string[] = [];
  // A specific build, e.g. the AddressSanitizer build of test/reliability/asan.sh.
  const override = process.env.YOLO_DISTILL_ADDON;
  if (override) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      return require(path.resolve(override)) as NativeBinding;
    } catch (e) {
      messages.push(`YOLO_DISTILL_ADDON=${override}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require('node-gyp-build')(root) as NativeBinding;
  } catch (e) {
    messages.push(`node-gyp-build: ${(e as Error).message.split('\n')[0]}`);
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require('bindings')({ bindings: 'yolo_distill', module_root: root }) as NativeBinding;
  } catch (e) {
    messages.push(`bindings: ${(e as Error).message.split('\n')[0]}`);
  }
  const err = new Error(explain(messages)) as Error & { code: string };
  err.code = 'ERR_ADDON_LOAD';
  throw err;
}

/** @internal */
export const native: NativeBinding = load();
// Async calls mark the ArrayBuffers they read and write in place as
// untransferable (RELIABILITY.md "What a caller may do to a buffer"). The
// gradient arrays of calls without gradOut live on recycled memory only where
// a marked buffer cannot be moved to another ArrayBuffer
// (native/addon/grad_pool.h): structured clone copies or refuses it, and
// ArrayBuffer.prototype.transfer() is absent or refuses it.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { markAsUntransferable } = require('worker_threads') as { markAsUntransferable: (o: object) => void };

/** @internal Whether transfer() refuses a marked buffer (or does not exist). */
export function markedBuffersStay(): boolean {
  const transfer = (ArrayBuffer.prototype as { transfer?: () => ArrayBuffer }).transfer;
  if (typeof transfer !== 'function') return true;
  const probe = new ArrayBuffer(8);
  markAsUntransferable(probe);
  try {
    transfer.call(probe);
  } catch {
    return probe.byteLength === 8;
  }
  return false;
}

native.configure({
  markAsUntransferable,
  recycleGradients: markedBuffersStay(),
});

/** @internal Exported for the loader's unit test. */
export const explainLoadFailure = explain;
