'use strict';
// The student: a small TensorFlow.js detector with channels-last heads, built
// from ops that the tfjs WebAssembly backend runs and differentiates
// (space-to-depth reshapes, matMul, pad/slice/concat for 3x3 convolutions;
// tfjs' conv2d has no gradient kernel on wasm and a slow one on cpu).
//   image [B, 64, 64, 3] -> 16x16x16 -> 3x3 -> 8x8x32 -> 3x3 -> head p8 [B, 8, 8, A*(5+C)]
//                                              -> 4x4x48 -> 3x3 -> head p16 [B, 4, 4, A*(5+C)]
// About 1.0 M multiply-adds per image, 33 k parameters (the teacher: 0.8 M parameters).
const config = require('./config.json');
const { rng } = require('./data');

/** Space-to-depth: [B, H, W, C] -> [B, H/k, W/k, k*k*C]. */
function spaceToDepth(tf, x, k) {
  const [b, h, w, c] = x.shape;
  return tf.reshape(tf.transpose(tf.reshape(x, [b, h / k, k, w / k, k, c]), [0, 1, 3, 2, 4, 5]), [b, h / k, w / k, k * k * c]);
}

// x [M, K] times W [K, N], with a gradient that transposes explicitly before
// each matMul: tfjs-wasm's matMul with a transposed operand is 2-4x slower than
// a transpose followed by a plain matMul at these shapes (measured).
let matMulFast = null;
function matMul(tf, x, W) {
  if (!matMulFast) {
    matMulFast = tf.customGrad((a, b, save) => {
      save([a, b]);
      return {
        value: tf.matMul(a, b),
        gradFunc: (dy, [sa, sb]) => [tf.matMul(dy, tf.transpose(sb)), tf.matMul(tf.transpose(sa), dy)],
      };
    });
  }
  return matMulFast(x, W);
}

function dense(tf, x, W, bias) {
  const s = x.shape;
  const y = tf.add(matMul(tf, tf.reshape(x, [-1, s[s.length - 1]]), W), bias);
  return tf.reshape(y, [...s.slice(0, -1), W.shape[1]]);
}

/**
 * A 3x3 'same' convolution as im2col (pad, 9 slices, concat) and a matMul, with
 * its own gradient (im2col and matMuls again): tfjs-wasm's gradient of concat
 * (SplitV) took more time than all the matMuls together (measured).
 */
const conv3x3Ops = new Map();
function conv3x3(tf, x, W, bias) {
  const [b, h, w, c] = x.shape;
  const key = [b, h, w, c].join();
  if (!conv3x3Ops.has(key)) {
    const im2col = (t, ch) => {
      const p = tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]]);
      const parts = [];
      for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) parts.push(tf.slice(p, [0, i, j, 0], [b, h, w, ch]));
      return tf.reshape(tf.concat(parts, 3), [b * h * w, 9 * ch]);
    };
    conv3x3Ops.set(key, tf.customGrad((xi, Wi, save) => {
      const cols = im2col(xi, c);
      save([cols, Wi]);
      return {
        value: tf.reshape(tf.matMul(cols, Wi), [b, h, w, Wi.shape[1]]),
        gradFunc: (dy, [scols, sW]) => {
          // dx: the 'same' 3x3 convolution of dy with the kernel flipped in space and
          // transposed in channels (im2col again); dW: cols^T dy.
          const cout = sW.shape[1];
          const flipped = tf.reshape(tf.transpose(tf.reverse(tf.reshape(sW, [3, 3, c, cout]), [0, 1]), [0, 1, 3, 2]), [9 * cout, c]);
          const dy2 = tf.reshape(dy, [b * h * w, cout]);
          const dx = tf.reshape(tf.matMul(im2col(dy, cout), flipped), [b, h, w, c]);
          return [dx, tf.matMul(tf.transpose(scols), dy2)];
        },
      };
    }));
  }
  return tf.add(conv3x3Ops.get(key)(x, W), bias);
}

/** A student with weights drawn from `seed` (He-normal; the objectness bias starts at -4). */
function makeStudent(tf, seed, widths = [16, 32, 48]) {
  const r = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const A = config.anchors[0].length, K = 5 + config.numClasses;
  const weight = (fanIn, fanOut, name) => {
    const v = new Float32Array(fanIn * fanOut);
    const sd = Math.sqrt(2 / fanIn);
    for (let i = 0; i < v.length; i++) v[i] = normal() * sd;
    return tf.variable(tf.tensor2d(v, [fanIn, fanOut]), true, name);
  };
  const bias = (n, name, objBias = 0) => {
    const v = new Float32Array(n);
    if (objBias) for (let a = 0; a < A; a++) v[a * K + 4] = objBias;
    return tf.variable(tf.tensor1d(v), true, name);
  };
  const [w0, w1, w2] = widths;
  const p = {
    e0: weight(48, w0, 'e0'), e0b: bias(w0, 'e0b'), c0: weight(9 * w0, w0, 'c0'), c0b: bias(w0, 'c0b'),
    e1: weight(4 * w0, w1, 'e1'), e1b: bias(w1, 'e1b'), c1: weight(9 * w1, w1, 'c1'), c1b: bias(w1, 'c1b'),
    e2: weight(4 * w1, w2, 'e2'), e2b: bias(w2, 'e2b'), c2: weight(9 * w2, w2, 'c2'), c2b: bias(w2, 'c2b'),
    h8: weight(w1, A * K, 'h8'), h8b: bias(A * K, 'h8b', -4), h16: weight(w2, A * K, 'h16'), h16b: bias(A * K, 'h16b', -4),
  };
  // Head weights start small, like the usual detection-head init.
  for (const k of ['h8', 'h16']) p[k].assign(tf.mul(p[k], 0.1));
  const forward = (x) => {
    let a = tf.relu(dense(tf, spaceToDepth(tf, x, 4), p.e0, p.e0b));
    a = tf.relu(conv3x3(tf, a, p.c0, p.c0b));
    let b = tf.relu(dense(tf, spaceToDepth(tf, a, 2), p.e1, p.e1b));
    b = tf.relu(conv3x3(tf, b, p.c1, p.c1b));
    let c = tf.relu(dense(tf, spaceToDepth(tf, b, 2), p.e2, p.e2b));
    c = tf.relu(conv3x3(tf, c, p.c2, p.c2b));
    return [dense(tf, b, p.h8, p.h8b), dense(tf, c, p.h16, p.h16b)];
  };
  const variables = Object.values(p);
  const parameters = variables.reduce((n, v) => n + v.size, 0);
  return { forward, variables, parameters, dispose: () => variables.forEach((v) => v.dispose()) };
}

module.exports = { makeStudent, spaceToDepth, conv3x3, dense };
