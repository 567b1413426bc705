'use strict';
// A seeded generator of a small detection dataset: 64x64 RGB images with 1-5
// objects of four shape classes (disc, box, triangle, ring) in random colours
// and sizes, on a gradient background with clutter (lines, small blobs that are
// not objects), pixel noise, and occlusion (later objects are drawn over earlier
// ones). The class is the shape, never the colour, so a model has to look at
// the outline. Same seed, same images, on every machine: one integer PRNG and
// only basic float arithmetic.

const config = require('./config.json');

/** mulberry32: a small, well-mixed 32-bit PRNG; returns floats in [0, 1). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Box IoU of [x1, y1, x2, y2] boxes. */
function iou(a, b) {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}

// Is pixel centre (px, py) inside the shape of class cls with box [x1,y1,x2,y2]?
function inside(cls, box, px, py) {
  const [x1, y1, x2, y2] = box;
  const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2, rx = (x2 - x1) / 2, ry = (y2 - y1) / 2;
  const dx = (px - cx) / rx, dy = (py - cy) / ry;
  switch (cls) {
    case 0: return dx * dx + dy * dy <= 1; // disc (ellipse)
    case 1: return Math.abs(dx) <= 1 && Math.abs(dy) <= 1; // box
    case 2: { // triangle, apex up: |dx| <= (dy + 1) / 2 for dy in [-1, 1]
      return dy >= -1 && dy <= 1 && Math.abs(dx) <= (dy + 1) / 2;
    }
    case 3: { // ring: an ellipse outline, a third of the radius thick
      const r = dx * dx + dy * dy;
      return r <= 1 && r >= 0.42;
    }
    default: throw new Error('unknown class ' + cls);
  }
}

/**
 * One image: { image: Float32Array [S*S*3] (HWC, values in [0, 1]),
 * boxes: [{ cls, box: [x1, y1, x2, y2] }] } in pixels.
 */
function makeImage(r, S = config.imageSize) {
  const img = new Float32Array(S * S * 3);
  // Background: a linear gradient between two random colours.
  const c0 = [r(), r(), r()], c1 = [r(), r(), r()];
  const gx = r() * 2 - 1, gy = r() * 2 - 1;
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      const t = Math.min(1, Math.max(0, 0.5 + (gx * (x / S - 0.5) + gy * (y / S - 0.5))));
      for (let k = 0; k < 3; k++) img[(y * S + x) * 3 + k] = c0[k] * (1 - t) + c1[k] * t;
    }
  }
  const paint = (test, colour) => {
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        if (!test(x + 0.5, y + 0.5)) continue;
        for (let k = 0; k < 3; k++) img[(y * S + x) * 3 + k] = colour[k];
      }
    }
  };
  const colourOn = (box) => {
    // A colour that differs from the background under the box by at least 0.35 in one channel.
    const cx = Math.min(S - 1, Math.max(0, Math.floor((box[0] + box[2]) / 2)));
    const cy = Math.min(S - 1, Math.max(0, Math.floor((box[1] + box[3]) / 2)));
    const bg = [0, 1, 2].map((k) => img[(cy * S + cx) * 3 + k]);
    for (;;) {
      const c = [r(), r(), r()];
      if (Math.max(...c.map((v, k) => Math.abs(v - bg[k]))) >= 0.35) return c;
    }
  };
  // Clutter under the objects: 0-3 thin lines.
  const lines = Math.floor(r() * 4);
  for (let i = 0; i < lines; i++) {
    const ax = r() * S, ay = r() * S, bx = r() * S, by = r() * S;
    const len = Math.hypot(bx - ax, by - ay) || 1;
    const colour = [r(), r(), r()];
    paint((px, py) => {
      const t = ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / (len * len);
      if (t < 0 || t > 1) return false;
      return Math.abs((px - ax) * (by - ay) - (py - ay) * (bx - ax)) / len < 0.8;
    }, colour);
  }
  // Objects: 1-5, sizes 8-30 px, aspect ratio 0.65-1.55, overlapping at most IoU 0.3.
  const count = 1 + Math.floor(r() * 5);
  const boxes = [];
  for (let tries = 0; boxes.length < count && tries < 50; tries++) {
    const size = 8 + r() * 22;
    const aspect = 0.65 + r() * 0.9;
    const w = size * Math.sqrt(aspect), h = size / Math.sqrt(aspect);
    const x1 = r() * (S - w), y1 = r() * (S - h);
    const box = [x1, y1, x1 + w, y1 + h];
    const cls = Math.floor(r() * config.numClasses);
    if (boxes.some((b) => iou(b.box, box) > 0.3)) continue;
    paint((px, py) => inside(cls, box, px, py), colourOn(box));
    boxes.push({ cls, box });
  }
  // Clutter over the objects: 0-3 small blobs (not objects: under 5 px).
  const blobs = Math.floor(r() * 4);
  for (let i = 0; i < blobs; i++) {
    const cx = r() * S, cy = r() * S, rad = 1 + r() * 1.5;
    paint((px, py) => (px - cx) ** 2 + (py - cy) ** 2 <= rad * rad, [r(), r(), r()]);
  }
  // Pixel noise: uniform, amplitude 0.06-0.16 (Irwin-Hall of two uniforms).
  const amp = 0.06 + r() * 0.1;
  for (let i = 0; i < img.length; i++) img[i] = Math.min(1, Math.max(0, img[i] + amp * (r() + r() - 1)));
  return { image: img, boxes };
}

/** A dataset: n images from one seed. images: Float32Array [n, S, S, 3]; labels: per image boxes. */
function makeSet(seed, n) {
  const S = config.imageSize;
  const r = rng(seed * 7919 + 17);
  const images = new Float32Array(n * S * S * 3);
  const labels = [];
  for (let i = 0; i < n; i++) {
    const { image, boxes } = makeImage(r, S);
    images.set(image, i * S * S * 3);
    labels.push(boxes);
  }
  return { images, labels, n, size: S };
}

/** The named sets of config.json, optionally smaller (quick runs take a prefix: same images). */
function namedSet(name, limit) {
  const { seed, size } = config.sets[name];
  return makeSet(seed, limit ? Math.min(limit, size) : size);
}

module.exports = { rng, iou, makeImage, makeSet, namedSet, config };
