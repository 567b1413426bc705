'use strict';
// Ground-truth targets and the YOLO loss of the students' labelled arms: the
// rule and the terms of train_teacher.py (assign, yolo_loss), for tfjs heads in
// the nhwc layout [B, G, G, A*(5+C)].
const config = require('./config.json');

/**
 * Dense targets per scale for a batch of labels ([{ cls, box }] per image):
 * { obj: Float32Array [B, G, G, A] (1 at positives), box: Float32Array
 * [B, G, G, A, 4] (offset x, y in the cell; sqrt(w / anchor w), sqrt(h / anchor h)),
 * cls: Float32Array [B, G, G, A, C] one-hot at positives, count }.
 */
function buildTargets(labels) {
  const S = config.imageSize, C = config.numClasses, B = labels.length;
  const out = config.strides.map((stride, s) => {
    const G = S / stride, A = config.anchors[s].length;
    return { G, A, obj: new Float32Array(B * G * G * A), box: new Float32Array(B * G * G * A * 4), cls: new Float32Array(B * G * G * A * C), count: 0 };
  });
  labels.forEach((boxes, b) => {
    for (const { cls, box } of boxes) {
      const [x1, y1, x2, y2] = box;
      const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2, w = x2 - x1, h = y2 - y1;
      const ratios = config.anchors.map((as) => as.map(([aw, ah]) => Math.max(w / aw, aw / w, h / ah, ah / h)));
      let picks = [];
      ratios.forEach((rs, s) => rs.forEach((r, a) => { if (r < config.anchorThreshold) picks.push([s, a]); }));
      if (picks.length === 0) {
        let best = [0, 0];
        ratios.forEach((rs, s) => rs.forEach((r, a) => { if (r < ratios[best[0]][best[1]]) best = [s, a]; }));
        picks = [best];
      }
      for (const [s, a] of picks) {
        const t = out[s], stride = config.strides[s], [aw, ah] = config.anchors[s][a];
        const gx = Math.min(t.G - 1, Math.floor(cx / stride)), gy = Math.min(t.G - 1, Math.floor(cy / stride));
        const i = ((b * t.G + gy) * t.G + gx) * t.A + a;
        if (!t.obj[i]) t.count++;
        t.obj[i] = 1;
        t.box.set([cx / stride - gx, cy / stride - gy, Math.sqrt(w / aw), Math.sqrt(h / ah)], i * 4);
        t.cls.fill(0, i * C, (i + 1) * C);
        t.cls[i * C + cls] = 1;
      }
    }
  });
  return out;
}

/** BCE with logits, elementwise: softplus(x) - z x, written with ops every tfjs backend differentiates. */
function bceWithLogits(tf, x, z) {
  // softplus(x) = max(x, 0) + log(1 + exp(-|x|))
  const absx = tf.sqrt(tf.add(tf.square(x), 1e-12));
  return tf.sub(tf.add(tf.relu(x), tf.log(tf.add(1, tf.exp(tf.neg(absx))))), tf.mul(z, x));
}

const SMOOTH = 0.1; // class label smoothing, as train_teacher.py's SMOOTH

/** IoU of two boxes given as centre x, y and width, height. */
function iouCxcywh(ax, ay, aw, ah, bx, by, bw, bh) {
  const iw = Math.max(0, Math.min(ax + aw / 2, bx + bw / 2) - Math.max(ax - aw / 2, bx - bw / 2));
  const ih = Math.max(0, Math.min(ay + ah / 2, by + bh / 2) - Math.max(ay - ah / 2, by - bh / 2));
  const inter = iw * ih;
  return inter / (aw * ah + bw * bh - inter);
}

/**
 * The YOLO loss of nhwc heads against buildTargets(labels): box + 10 obj + cls,
 * as in train_teacher.py's yolo_loss (objectness target at positives: the IoU of
 * the predicted box with its ground truth, read from the heads' values, so no
 * gradient flows through it; smoothed class targets). Returns a scalar tfjs tensor.
 */
function yoloLoss(tf, heads, labels) {
  const C = config.numClasses, K = 5 + C, B = labels.length;
  const targets = buildTargets(labels);
  const npos = Math.max(1, targets.reduce((n, t) => n + t.count, 0));
  let box = tf.scalar(0), obj = tf.scalar(0), cls = tf.scalar(0);
  heads.forEach((h, s) => {
    const t = targets[s];
    const p = tf.reshape(h, [B, t.G, t.G, t.A, K]);
    const mask = tf.tensor(t.obj, [B, t.G, t.G, t.A, 1]);
    const xy = tf.sub(tf.mul(2, tf.sigmoid(tf.slice(p, [0, 0, 0, 0, 0], [-1, -1, -1, -1, 2]))), 0.5);
    const wh = tf.mul(2, tf.sigmoid(tf.slice(p, [0, 0, 0, 0, 2], [-1, -1, -1, -1, 2])));
    const pbox = tf.concat([xy, wh], 4);
    const tbox = tf.tensor(t.box, [B, t.G, t.G, t.A, 4]);
    box = tf.add(box, tf.sum(tf.mul(mask, tf.square(tf.sub(pbox, tbox)))));
    const objLogit = tf.reshape(tf.slice(p, [0, 0, 0, 0, 4], [-1, -1, -1, -1, 1]), [B, t.G, t.G, t.A]);
    const values = h.dataSync(), tobj = new Float32Array(t.obj.length);
    const sig = (v) => 1 / (1 + Math.exp(-v));
    for (let i = 0; i < t.obj.length; i++) {
      if (!t.obj[i]) continue;
      const a = i % t.A, o = i * K; // cell-major: ((b*G + y)*G + x)*A + a, K values each
      const [aw, ah] = config.anchors[s][a].map((v) => v / config.strides[s]);
      const pw = (2 * sig(values[o + 2])) ** 2 * aw, ph = (2 * sig(values[o + 3])) ** 2 * ah;
      const tb = t.box.subarray(i * 4, i * 4 + 4);
      const v = iouCxcywh(2 * sig(values[o]) - 0.5, 2 * sig(values[o + 1]) - 0.5, pw, ph, tb[0], tb[1], tb[2] ** 2 * aw, tb[3] ** 2 * ah);
      tobj[i] = Math.max(0, v);
    }
    obj = tf.add(obj, tf.mean(bceWithLogits(tf, objLogit, tf.tensor(tobj, [B, t.G, t.G, t.A]))));
    const clsLogit = tf.slice(p, [0, 0, 0, 0, 5], [-1, -1, -1, -1, C]);
    const tcls = t.cls.map((v) => v * (1 - SMOOTH) + SMOOTH / 2);
    cls = tf.add(cls, tf.sum(tf.mul(mask, bceWithLogits(tf, clsLogit, tf.tensor(tcls, [B, t.G, t.G, t.A, C])))));
  });
  return tf.add(tf.add(tf.div(box, npos), tf.mul(10, obj)), tf.div(cls, npos * C));
}

module.exports = { buildTargets, yoloLoss, bceWithLogits };
