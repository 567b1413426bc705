'use strict';
// results.svg of the pipeline: mAP per arm as bars (left), mAP@0.5 over
// training steps as curves (right). Plain SVG, no dependencies.
const fs = require('fs');

const COLOURS = ['#7f7f7f', '#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function writeSvg(file, r) {
  const W = 980, H = 450, left = { x: 60, y: 70, w: 430, h: 280 }, right = { x: 580, y: 70, w: 360, h: 280 };
  const arms = r.arms;
  const top = Math.max(0.05, r.teacher.map50, ...arms.flatMap((a) => a.curve.map((c) => c.map50)));
  const ymax = Math.ceil(top * 10) / 10;
  const el = [];
  el.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  el.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15">yolo-distill pipeline: students distilled from an ONNX teacher (seed ${r.seed}, ${r.steps} steps${r.quick ? ', --quick' : ''})</text>`);
  for (const p of [left, right]) {
    for (let i = 0; i <= 5; i++) {
      const v = (ymax * i) / 5, y = p.y + p.h - (p.h * i) / 5;
      el.push(`<line x1="${p.x}" x2="${p.x + p.w}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
      el.push(`<text x="${p.x - 6}" y="${y + 4}" text-anchor="end" font-size="11">${v.toFixed(2)}</text>`);
    }
    el.push(`<line x1="${p.x}" x2="${p.x}" y1="${p.y}" y2="${p.y + p.h}" stroke="black"/>`);
  }
  const yOf = (p, v) => p.y + p.h - (p.h * v) / ymax;
  // Bars: teacher first, then each arm; mAP@0.5 (solid) and mAP@0.5:0.95 (light).
  const bars = [{ label: 'teacher', map50: r.teacher.map50, map5095: r.teacher.map5095, colour: '#000' },
    ...arms.map((a, i) => ({ label: a.label.replace(/^\((\d)\).*/, '($1)'), map50: a.map50, map5095: a.map5095, colour: COLOURS[i % COLOURS.length] }))];
  const slot = left.w / bars.length;
  bars.forEach((b, i) => {
    const x = left.x + i * slot + slot * 0.12, bw = slot * 0.38;
    el.push(`<rect x="${x}" y="${yOf(left, b.map50)}" width="${bw}" height="${left.y + left.h - yOf(left, b.map50)}" fill="${b.colour}"/>`);
    el.push(`<rect x="${x + bw}" y="${yOf(left, b.map5095)}" width="${bw}" height="${left.y + left.h - yOf(left, b.map5095)}" fill="${b.colour}" opacity="0.45"/>`);
    el.push(`<text x="${x + bw}" y="${yOf(left, b.map50) - 4}" text-anchor="middle" font-size="10">${b.map50.toFixed(2)}</text>`);
    el.push(`<text x="${x + bw}" y="${left.y + left.h + 15}" text-anchor="middle" font-size="11">${esc(b.label)}</text>`);
  });
  el.push(`<text x="${left.x + left.w / 2}" y="${left.y - 22}" text-anchor="middle" font-size="12">mAP@0.5 (solid) and mAP@0.5:0.95 (light) on the held-out set</text>`);
  // Curves.
  const xmax = Math.max(1, ...arms.flatMap((a) => a.curve.map((c) => c.step)));
  const xOf = (s) => right.x + (right.w * s) / xmax;
  el.push(`<line x1="${right.x}" x2="${right.x + right.w}" y1="${right.y + right.h}" y2="${right.y + right.h}" stroke="black"/>`);
  for (let i = 0; i <= 4; i++) {
    const s = Math.round((xmax * i) / 4);
    el.push(`<text x="${xOf(s)}" y="${right.y + right.h + 15}" text-anchor="middle" font-size="11">${s}</text>`);
  }
  el.push(`<text x="${right.x + right.w / 2}" y="${right.y + right.h + 30}" text-anchor="middle" font-size="11">training step</text>`);
  el.push(`<text x="${right.x + right.w / 2}" y="${right.y - 22}" text-anchor="middle" font-size="12">mAP@0.5 over training (dashed: teacher)</text>`);
  el.push(`<line x1="${right.x}" x2="${right.x + right.w}" y1="${yOf(right, r.teacher.map50)}" y2="${yOf(right, r.teacher.map50)}" stroke="#000" stroke-dasharray="5,4"/>`);
  arms.forEach((a, i) => {
    const pts = a.curve.map((c) => `${xOf(c.step).toFixed(1)},${yOf(right, c.map50).toFixed(1)}`).join(' ');
    el.push(`<polyline points="${pts}" fill="none" stroke="${COLOURS[i % COLOURS.length]}" stroke-width="2"/>`);
  });
  // Legend.
  arms.forEach((a, i) => {
    const x = 60 + (i % 3) * 300, y = H - 48 + Math.floor(i / 3) * 18;
    el.push(`<rect x="${x}" y="${y - 9}" width="12" height="10" fill="${COLOURS[i % COLOURS.length]}"/>`);
    el.push(`<text x="${x + 18}" y="${y}" font-size="11">${esc(a.label)}</text>`);
  });
  fs.writeFileSync(file, `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">\n${el.join('\n')}\n</svg>\n`);
}

module.exports = { writeSvg };
