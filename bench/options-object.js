#!/usr/bin/env node
'use strict';
// What an options object costs to make and to read, by how it is made: the
// facade reads 22 options from it (lib/index.ts callNative). In Node 20 an
// object made per call by spreading another and adding keys gets a new hidden
// class each time after warm-up. Nanoseconds per object, 100,000 objects.
//   node bench/options-object.js
const g = [1];
const opts = { numClasses: 80, numAnchors: 3, layout: 'nchw', threads: 2 };
const read = (o) => [o.numClasses, o.preset, o.numAnchors, o.head, o.regMax, o.boxTemperature, o.layout, o.boxTarget,
  o.objTarget, o.clsTarget, o.weighted, o.temperature, o.fmNms, o.lambda, o.weights, o.grad, o.gradScale,
  o.checkFinite, o.impl, o.threads, o.device, o.gradOut];
let sink;
const T = (name, f, k = 100000) => {
  for (let i = 0; i < k; i++) f();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < k; i++) f();
  console.log(`${name.padEnd(48)} ${(Number(process.hrtime.bigint() - t0) / k).toFixed(1).padStart(8)} ns`);
};
const kept = { ...opts, gradOut: g };
T('make { ...opts, gradOut }', () => { sink = { ...opts, gradOut: g }; });
T('make and read { ...opts, gradOut }', () => { sink = read({ ...opts, gradOut: g }); });
T('make and read Object.assign({}, opts, { gradOut })', () => { sink = read(Object.assign({}, opts, { gradOut: g })); });
T('make and read an object literal', () => { sink = read({ numClasses: 80, numAnchors: 3, layout: 'nchw', threads: 2, gradOut: g }); });
T('read one object kept across calls', () => { sink = read(kept); });
