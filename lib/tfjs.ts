// TensorFlow.js adapter: the distillation loss as a differentiable tfjs op.
// `import { tfDistillationLoss } from 'yolo-distill/tfjs'` with @tensorflow/tfjs
// installed (an optional peer dependency; this module loads it lazily).
import type * as tfTypes from '@tensorflow/tfjs';

import { distillationLoss, DistillationOptions, HeadArray } from './index';

type Tf = typeof tfTypes;

let tfModule: Tf | undefined;
function tf(): Tf {
  if (!tfModule) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      tfModule = require('@tensorflow/tfjs') as Tf;
    } catch (e) {
      const err = new Error(
        "yolo-distill/tfjs needs @tensorflow/tfjs: npm install @tensorflow/tfjs (" + (e as Error).message.split('\n')[0] + ')',
      ) as Error & { code: string };
      err.code = 'ERR_TFJS_MISSING';
      throw err;
    }
  }
  return tfModule;
}

/** Options of {@link tfDistillationLoss}: those of distillationLoss without gradOut/device. */
export type TfDistillationOptions = Omit<DistillationOptions, 'gradOut' | 'grad' | 'device'>;

/**
 * The distillation loss of tfjs student heads against tfjs teacher heads, as a
 * scalar tfjs tensor whose gradient (with respect to the student heads) is the
 * addon's fused gradient, through `tf.customGrad`: use it inside
 * `optimizer.minimize(() => ...)` or `tf.grads`. The teacher is a constant.
 *
 * Heads must be float32 tfjs tensors in one of the package's layouts. A tfjs
 * conv head is NHWC `[B, H, W, A*(5+C)]`: pass it as it is with
 * `layout: 'nhwc'` (no reshape or transpose); `nchw` `[B, A*(5+C), H, W]` and
 * `nahwc` `[B, A, H, W, 5+C]` work as well.
 */
export function tfDistillationLoss(
  student: tfTypes.Tensor[],
  teacher: tfTypes.Tensor[],
  options: TfDistillationOptions,
): tfTypes.Scalar {
  const T = tf();
  if (!Array.isArray(student) || !Array.isArray(teacher)) {
    const err = new TypeError('tfDistillationLoss: student and teacher must be arrays of tfjs tensors') as TypeError & { code: string };
    err.code = 'ERR_INVALID_ARG_TYPE';
    throw err;
  }
  const teacherHeads: HeadArray[] = teacher.map((t) => ({ data: t.dataSync() as Float32Array, shape: t.shape }));
  const op = T.customGrad((...args: unknown[]) => {
    const inputs = args.slice(0, student.length) as tfTypes.Tensor[];
    const studentHeads: HeadArray[] = inputs.map((t) => ({ data: t.dataSync() as Float32Array, shape: t.shape }));
    // Object.assign rather than { ...options, grad: true }: in Node 20 the
    // latter gets a new hidden class per call, and reading the options from
    // it costs microseconds (BENCHMARKS.md "The tiny call").
    const r = distillationLoss(studentHeads, teacherHeads, Object.assign({}, options, { grad: true }));
    const grads = r.grads as Float32Array[];
    return {
      value: T.scalar(r.loss),
      gradFunc: (dy: tfTypes.Tensor) => grads.map((g, s) => T.mul(T.tensor(g, inputs[s].shape, 'float32'), dy)),
    };
  });
  return (op as unknown as (...x: tfTypes.Tensor[]) => tfTypes.Scalar)(...student);
}
