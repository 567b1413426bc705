'use strict';
// The pipeline's metric (examples/pipeline/metrics.js) against cases computed by
// hand: AP interpolation, matching, IoU thresholds, NMS, and the head decode.
const { decode, nms, averagePrecision, meanAveragePrecision, IOU_THRESHOLDS, sigmoid } = require('../examples/pipeline/metrics');
const { iou } = require('../examples/pipeline/data');

const logit = (p) => Math.log(p / (1 - p));

describe('pipeline metrics', () => {
  test('IoU thresholds are 0.50, 0.55, ..., 0.95', () => {
    expect(IOU_THRESHOLDS).toEqual([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]);
  });

  test('IoU of known boxes', () => {
    expect(iou([0, 0, 10, 10], [0, 0, 10, 6])).toBe(0.6);
    expect(iou([0, 0, 10, 10], [5, 0, 15, 10])).toBeCloseTo(50 / 150, 15);
    expect(iou([0, 0, 10, 10], [10, 0, 20, 10])).toBe(0);
  });

  test('perfect detections: AP 1; no detections: AP 0; no ground truth: null', () => {
    const gts = [[[0, 0, 10, 10]], [[5, 5, 20, 20]]];
    const dets = [{ image: 0, score: 0.9, box: [0, 0, 10, 10] }, { image: 1, score: 0.8, box: [5, 5, 20, 20] }];
    expect(averagePrecision(dets, gts, 0.5)).toBe(1);
    expect(averagePrecision([], gts, 0.5)).toBe(0);
    expect(averagePrecision(dets, [[], []], 0.5)).toBeNull();
  });

  test('a false positive ranked above the true positive halves the precision: AP 0.5', () => {
    const gts = [[[0, 0, 10, 10]]];
    const dets = [{ image: 0, score: 0.9, box: [30, 30, 40, 40] }, { image: 0, score: 0.5, box: [0, 0, 10, 10] }];
    expect(averagePrecision(dets, gts, 0.5)).toBeCloseTo(0.5, 15);
    // Ranked below instead: the envelope keeps precision 1 up to recall 1.
    dets[0].score = 0.1;
    expect(averagePrecision(dets, gts, 0.5)).toBe(1);
  });

  test('half the ground truth found: recall 0.5, AP 51/101 (points 0.00 ... 0.50)', () => {
    const gts = [[[0, 0, 10, 10], [20, 20, 30, 30]]];
    expect(averagePrecision([{ image: 0, score: 1, box: [0, 0, 10, 10] }], gts, 0.5)).toBeCloseTo(51 / 101, 15);
  });

  test('precision envelope: TP, FP, TP over 2 ground truths', () => {
    // recall 0.5 @ p 1, then 0.5 @ 0.5, then 1.0 @ 2/3: r 0..0.5 -> 1 (51 pts), r 0.51..1 -> 2/3 (50 pts)
    const gts = [[[0, 0, 10, 10]], [[0, 0, 10, 10]]];
    const dets = [
      { image: 0, score: 0.9, box: [0, 0, 10, 10] },
      { image: 0, score: 0.8, box: [50, 50, 60, 60] },
      { image: 1, score: 0.7, box: [0, 0, 10, 10] },
    ];
    expect(averagePrecision(dets, gts, 0.5)).toBeCloseTo((51 + 50 * (2 / 3)) / 101, 14);
  });

  test('a duplicate detection of a matched box is a false positive', () => {
    const gts = [[[0, 0, 10, 10]]];
    const dets = [{ image: 0, score: 0.9, box: [0, 0, 10, 10] }, { image: 0, score: 0.8, box: [0, 0, 10, 9] }];
    // TP then FP: precision 1 at recall 1 -> AP 1; the FP after full recall costs nothing.
    expect(averagePrecision(dets, gts, 0.5)).toBe(1);
    // Ranked first, the looser duplicate (IoU 0.9) takes the match at 0.5 but not at 0.95, where it is an
    // FP ranked above the exact box's TP: AP 0.5.
    dets[1].score = 0.95;
    expect(averagePrecision(dets, gts, 0.95)).toBeCloseTo(0.5, 15);
  });

  test('a detection matches the unmatched ground truth of highest IoU', () => {
    const gts = [[[0, 0, 10, 10], [0, 0, 10, 8]]];
    // The first detection overlaps both; it takes [0,0,10,8] (IoU 1), leaving [0,0,10,10] for the second.
    const dets = [{ image: 0, score: 0.9, box: [0, 0, 10, 8] }, { image: 0, score: 0.8, box: [0, 0, 10, 10] }];
    expect(averagePrecision(dets, gts, 0.9)).toBe(1);
  });

  test('mAP@0.5:0.95 of one detection at IoU 0.6: true positive at 0.50, 0.55, 0.60 only -> 0.3', () => {
    const r = meanAveragePrecision([[{ cls: 1, score: 0.9, box: [0, 0, 10, 6] }]], [[{ cls: 1, box: [0, 0, 10, 10] }]], 3);
    expect(r.map50).toBe(1);
    expect(r.map5095).toBeCloseTo(0.3, 15);
    expect(r.perClass.map((p) => p.cls)).toEqual([1]); // classes without ground truth are left out
  });

  test('a detection of the wrong class matches nothing; mAP averages the classes', () => {
    const gt = [[{ cls: 0, box: [0, 0, 10, 10] }, { cls: 1, box: [20, 20, 30, 30] }]];
    const dets = [[{ cls: 1, score: 0.9, box: [0, 0, 10, 10] }, { cls: 1, score: 0.8, box: [20, 20, 30, 30] }]];
    const r = meanAveragePrecision(dets, gt, 2);
    // class 0: AP 0; class 1: FP then TP -> 0.5
    expect(r.perClass).toEqual([{ cls: 0, ap50: 0, ap5095: 0 }, expect.objectContaining({ cls: 1 })]);
    expect(r.map50).toBeCloseTo(0.25, 15);
  });

  test('NMS keeps the best of overlapping boxes per class, and boxes of other classes', () => {
    const dets = [
      { cls: 0, score: 0.5, box: [0, 0, 10, 10] },
      { cls: 0, score: 0.9, box: [1, 0, 11, 10] }, // IoU with the first 0.818 > 0.6
      { cls: 1, score: 0.7, box: [0, 0, 10, 10] },
      { cls: 0, score: 0.3, box: [5, 0, 15, 10] }, // IoU with the kept one 60/140: kept
    ];
    const kept = nms(dets, { iouThreshold: 0.6 });
    expect(kept.map((d) => d.score)).toEqual([0.9, 0.7, 0.3]);
    expect(nms(dets, { iouThreshold: 0.6, maxDet: 2 }).length).toBe(2);
  });

  test('decode inverts the YOLOv5 box parametrization in both layouts', () => {
    const config = { imageSize: 16, numClasses: 2, strides: [8], anchors: [[[4, 4], [8, 8]]] };
    const B = 1, A = 2, G = 2, K = 7;
    const nahwc = new Float32Array(B * A * G * G * K).fill(-20); // everything off...
    // ...except anchor 1 at cell (gy 1, gx 0): centre (0.75 + 0) * 8 = 6, (0.5 + 1) * 8 = 12; size 8 * 1.5^2 = 18 by 8 * 1^2 = 8
    const o = ((0 * A + 1) * G + 1) * G * K + 0 * K;
    const v = [logit(0.625), logit(0.5), logit(0.75), logit(0.5), logit(0.8), logit(0.1), logit(0.9)];
    v.forEach((x, k) => { nahwc[o + k] = x; });
    const nhwc = new Float32Array(nahwc.length);
    for (let a = 0; a < A; a++) for (let y = 0; y < G; y++) for (let x = 0; x < G; x++) for (let k = 0; k < K; k++) {
      nhwc[((y * G + x) * A + a) * K + k] = nahwc[((a * G + y) * G + x) * K + k];
    }
    for (const [layout, head] of [['nahwc', nahwc], ['nhwc', nhwc]]) {
      const d = decode([head], layout, B, config, { confThreshold: 0.01 });
      expect(d[0].length).toBe(1);
      expect(d[0][0].cls).toBe(1);
      expect(d[0][0].score).toBeCloseTo(0.8 * 0.9, 6);
      const want = [6 - 9, 12 - 4, 6 + 9, 12 + 4];
      d[0][0].box.forEach((x, i) => expect(x).toBeCloseTo(want[i], 4));
    }
    expect(sigmoid(0)).toBe(0.5);
  });

  test('decode refuses heads of the wrong size', () => {
    const config = { imageSize: 16, numClasses: 2, strides: [8], anchors: [[[4, 4]]] };
    expect(() => decode([new Float32Array(5)], 'nhwc', 1, config)).toThrow(/expected 28/);
  });
});
