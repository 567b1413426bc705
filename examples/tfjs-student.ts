// Trains a small convolutional student head with TensorFlow.js against a fixed
// teacher, with the addon's fused loss and gradient inside optimizer.minimize.
//   npm run example:tfjs [-- --steps 60]
import * as tf from '@tensorflow/tfjs';
import { tfDistillationLoss } from 'yolo-distill/tfjs';

async function main(): Promise<void> {
  await tf.setBackend('cpu'); // pure-JS backend: tfjs-node cannot be downloaded here
  const stepsArg = process.argv.indexOf('--steps');
  const steps = stepsArg > 0 ? Number(process.argv[stepsArg + 1]) : 60;

  // One scale: B = 2 images, an 8x8 grid, A = 3 anchors, C = 4 classes, 16 input features.
  const [B, H, W, F, A, C] = [2, 8, 8, 16, 3, 4];
  const K = 5 + C;
  const features = tf.randomNormal([B, H, W, F], 0, 1, 'float32', 1) as tf.Tensor4D;
  // A fixed teacher: a frozen random 1x1 conv of the same features, with
  // objectness pushed negative so that most cells are background. Its output is
  // tfjs's own NHWC [B, H, W, A*(5+C)], the package's 'nhwc' layout: no reshape,
  // no transpose.
  const teacherKernel = tf.randomNormal([1, 1, F, A * K], 0, 0.5, 'float32', 2);
  const objShift = tf.tensor1d(Array.from({ length: A * K }, (_, i) => (i % K === 4 ? -2 : 0)));
  const teacher = tf.tidy(() => tf.add(tf.conv2d(features, teacherKernel as tf.Tensor4D, 1, 'same'), objShift) as tf.Tensor4D);

  // The student: a trainable 1x1 conv head (NHWC output, as tfjs convs give).
  const kernel = tf.variable(tf.randomNormal([1, 1, F, A * K], 0, 0.1, 'float32', 3));
  const bias = tf.variable(tf.zeros([A * K]));
  const optimizer = tf.train.adam(0.05);
  const options = { numClasses: C, numAnchors: A, layout: 'nhwc' as const };

  for (let step = 0; step <= steps; step++) {
    const cost = optimizer.minimize(() => {
      const head = tf.add(tf.conv2d(features, kernel as tf.Tensor4D, 1, 'same'), bias) as tf.Tensor4D;
      return tfDistillationLoss([head], [teacher], options);
    }, true);
    if (step % 10 === 0) console.log(`step ${String(step).padStart(3)}  loss ${cost!.dataSync()[0].toExponential(4)}`);
    cost!.dispose();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
