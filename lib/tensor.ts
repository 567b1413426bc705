// The Tensor handle: a LibTorch tensor owned by native code (CPU, or CUDA in a
// CUDA build), passed to the loss without copying.
import { native, NativeTensor } from './binding';

/** Where a tensor lives. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
/** Element type of a tensor. */
export type DType = 'float32' | 'float16' | 'bfloat16';

/**
 * A handle on a LibTorch tensor. Its memory is freed by {@link Tensor.dispose}
 * (idempotent) or, failing that, when the handle is garbage-collected. Supports
 * `using t = Tensor.fromFloat32Array(...)` where `Symbol.dispose` exists.
 */
const INTERNAL = Symbol('yolo-distill.Tensor');

export class Tensor {
  readonly #h: NativeTensor;

  private constructor(token: symbol, h: NativeTensor) {
    if (token !== INTERNAL) {
      const err = new TypeError('Tensor cannot be constructed directly; use Tensor.fromFloat32Array()') as TypeError & {
        code: string;
      };
      err.code = 'ERR_INVALID_ARG_TYPE';
      throw err;
    }
    this.#h = h;
  }

  /** Copies `data` (laid out as `shape`) into a new tensor on `device` with `dtype`. */
  static fromFloat32Array(
    data: Float32Array,
    shape: readonly number[],
    opts?: { device?: Device; dtype?: DType },
  ): Tensor {
    return new Tensor(INTERNAL, native.Tensor.fromFloat32Array(data, shape, opts));
  }

  /** @internal Wraps a native handle returned by the addon. */
  static _wrap(h: NativeTensor): Tensor {
    return new Tensor(INTERNAL, h);
  }

  /** @internal The native handle, for the addon. */
  static _native(t: Tensor): NativeTensor {
    if (!(#h in t)) {
      // Object.create(Tensor.prototype), or a class that borrowed the prototype.
      const err = new TypeError(
        'not a live Tensor handle: an object that only inherits Tensor\'s prototype; create handles with Tensor.fromFloat32Array()',
      ) as TypeError & { code: string };
      err.code = 'ERR_INVALID_ARG_TYPE';
      throw err;
    }
    return t.#h;
  }

  /** The tensor's dimensions. Throws `ERR_TENSOR_DISPOSED` after dispose(). */
  get shape(): number[] {
    return this.#h.shape;
  }
  /** 'cpu' or 'cuda:N'. */
  get device(): Device {
    return this.#h.device as Device;
  }
  get dtype(): DType {
    return this.#h.dtype as DType;
  }
  /** True once dispose() was called. */
  get disposed(): boolean {
    return this.#h.disposed;
  }
  /** Copies the values out as fp32 (a new array). */
  toFloat32Array(): Float32Array {
    return this.#h.toFloat32Array();
  }
  /** Like toFloat32Array, with the copy done off the event loop. */
  toFloat32ArrayAsync(): Promise<Float32Array> {
    return this.#h.toFloat32ArrayAsync();
  }
  /** Frees the native memory now. Calling it again does nothing. */
  dispose(): void {
    this.#h.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}
