'use strict';
// Writes one named set of config.json to files for the teacher's training
// script (train_teacher.py): <out>.u8 (uint8 images, [n, S, S, 3]) and
// <out>.json (per image [[cls, x1, y1, x2, y2], ...]).
//   node examples/pipeline/export-data.js teacher /tmp/yd-teacher-set [limit]
const fs = require('fs');
const { namedSet } = require('./data');

const [name, out, limit] = process.argv.slice(2);
if (!name || !out) {
  console.error('usage: node examples/pipeline/export-data.js <set name> <output prefix> [limit]');
  process.exit(2);
}
const set = namedSet(name, limit ? Number(limit) : undefined);
const bytes = Buffer.alloc(set.images.length);
for (let i = 0; i < set.images.length; i++) bytes[i] = Math.round(set.images[i] * 255);
fs.writeFileSync(out + '.u8', bytes);
fs.writeFileSync(out + '.json', JSON.stringify({
  n: set.n, size: set.size,
  labels: set.labels.map((boxes) => boxes.map((b) => [b.cls, ...b.box])),
}));
console.log(`wrote ${set.n} images of set '${name}' to ${out}.u8 and ${out}.json`);
