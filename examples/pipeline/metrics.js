'use strict';
// Detection metrics for the pipeline: decoding raw YOLO anchor heads, NMS, and
// COCO-style mAP (101-point interpolated AP, greedy matching by score, IoU
// thresholds 0.50:0.05:0.95, classes without ground truth left out).
// Tested against hand-computed cases in test/pipeline-metrics.test.js.

const { iou } = require('./data');

const sigmoid = (x) => 1 / (1 + Math.exp(-x));

/**
 * Decodes raw heads into per-image detections { cls, score, box: [x1, y1, x2, y2] }.
 * heads: one Float32Array per scale, in layout 'nahwc' [B, A, G, G, 5+C] or
 * 'nhwc' [B, G, G, A*(5+C)]; config: strides, anchors, imageSize, numClasses.
 * The box decode is YOLOv5's: centre (2 sigma(t) - 0.5 + cell) * stride, size
 * (2 sigma(t))^2 * anchor; score sigma(obj) * max_c sigma(cls_c).
 */
function decode(heads, layout, B, config, { confThreshold = 0.001 } = {}) {
  const C = config.numClasses, K = 5 + C, S = config.imageSize;
  const out = Array.from({ length: B }, () => []);
  config.strides.forEach((stride, s) => {
    const G = S / stride, anchors = config.anchors[s], A = anchors.length;
    const data = heads[s];
    if (data.length !== B * A * G * G * K) {
      throw new RangeError(`decode: scale ${s} has ${data.length} values, expected ${B * A * G * G * K} ([${B}, ${A}, ${G}, ${G}, ${K}])`);
    }
    for (let b = 0; b < B; b++) {
      for (let a = 0; a < A; a++) {
        for (let gy = 0; gy < G; gy++) {
          for (let gx = 0; gx < G; gx++) {
            const o = layout === 'nahwc'
              ? (((b * A + a) * G + gy) * G + gx) * K
              : ((b * G + gy) * G + gx) * A * K + a * K;
            const obj = sigmoid(data[o + 4]);
            if (obj < confThreshold) continue;
            let best = 0, cls = 0;
            for (let c = 0; c < C; c++) {
              const p = data[o + 5 + c];
              if (c === 0 || p > best) { best = p; cls = c; }
            }
            const score = obj * sigmoid(best);
            if (score < confThreshold) continue;
            const cx = (2 * sigmoid(data[o]) - 0.5 + gx) * stride;
            const cy = (2 * sigmoid(data[o + 1]) - 0.5 + gy) * stride;
            const w = (2 * sigmoid(data[o + 2])) ** 2 * anchors[a][0];
            const h = (2 * sigmoid(data[o + 3])) ** 2 * anchors[a][1];
            out[b].push({ cls, score, box: [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] });
          }
        }
      }
    }
  });
  return out;
}

/** Class-aware greedy NMS: keeps at most maxDet boxes, highest score first. */
function nms(dets, { iouThreshold = 0.6, maxDet = 100, maxCandidates = 1000 } = {}) {
  const order = dets.map((d, i) => i).sort((i, j) => dets[j].score - dets[i].score || i - j).slice(0, maxCandidates);
  const keep = [];
  for (const i of order) {
    const d = dets[i];
    if (keep.some((k) => k.cls === d.cls && iou(k.box, d.box) > iouThreshold)) continue;
    keep.push(d);
    if (keep.length >= maxDet) break;
  }
  return keep;
}

/** The IoU thresholds of mAP@0.5:0.95, as exact decimals (50/100, 55/100, ...). */
const IOU_THRESHOLDS = Array.from({ length: 10 }, (_, i) => (50 + 5 * i) / 100);

/**
 * AP of one class at one IoU threshold. dets: [{ image, score, box }], gts: per
 * image an array of boxes. Detections are matched in order of score (ties: by
 * image, then by position in the input); each takes the unmatched ground truth
 * of highest IoU in its image if that IoU >= threshold, else it is a false
 * positive. AP: the mean over recall 0, 0.01, ..., 1 of the interpolated
 * precision (the highest precision at any recall >= r; 0 where r is not reached).
 * Returns null when the class has no ground truth.
 */
function averagePrecision(dets, gts, threshold) {
  const nGt = gts.reduce((n, g) => n + g.length, 0);
  if (nGt === 0) return null;
  const order = dets.map((d, i) => i).sort((i, j) => dets[j].score - dets[i].score || dets[i].image - dets[j].image || i - j);
  const used = gts.map((g) => new Uint8Array(g.length));
  const precision = [], recall = [];
  let tp = 0, fp = 0;
  for (const i of order) {
    const d = dets[i];
    const g = gts[d.image] || [];
    let best = -1, bestIou = threshold;
    for (let k = 0; k < g.length; k++) {
      if (used[d.image][k]) continue;
      const v = iou(d.box, g[k]);
      if (v >= bestIou) { bestIou = v; best = k; }
    }
    if (best >= 0) { used[d.image][best] = 1; tp++; } else fp++;
    precision.push(tp / (tp + fp));
    recall.push(tp / nGt);
  }
  for (let i = precision.length - 2; i >= 0; i--) precision[i] = Math.max(precision[i], precision[i + 1]);
  let sum = 0, j = 0;
  for (let r = 0; r <= 100; r++) {
    const level = r / 100;
    while (j < recall.length && recall[j] < level) j++;
    sum += j < recall.length ? precision[j] : 0;
  }
  return sum / 101;
}

/**
 * mAP of per-image detections against per-image ground truth
 * ([{ cls, box }] each): { map50, map5095, perClass: [{ cls, ap50, ap5095 }] }.
 */
function meanAveragePrecision(detections, groundTruth, numClasses) {
  const perClass = [];
  for (let c = 0; c < numClasses; c++) {
    const gts = groundTruth.map((g) => g.filter((x) => x.cls === c).map((x) => x.box));
    const dets = [];
    detections.forEach((ds, image) => ds.forEach((d) => { if (d.cls === c) dets.push({ image, score: d.score, box: d.box }); }));
    const aps = IOU_THRESHOLDS.map((t) => averagePrecision(dets, gts, t));
    if (aps[0] === null) continue;
    perClass.push({ cls: c, ap50: aps[0], ap5095: aps.reduce((a, b) => a + b, 0) / aps.length });
  }
  const mean = (k) => (perClass.length ? perClass.reduce((a, p) => a + p[k], 0) / perClass.length : 0);
  return { map50: mean('ap50'), map5095: mean('ap5095'), perClass };
}

module.exports = { sigmoid, decode, nms, averagePrecision, meanAveragePrecision, IOU_THRESHOLDS };
