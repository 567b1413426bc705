'use strict';
// The KL steps' group width (native/core/fused_cpu.cpp, kl_lanes): 16 cells a
// group where the CPU has AVX-512, 8 elsewhere. The same calls at either width
// (YD_KL_LANES=8 and =16, each in a child process running
// test/safety/kl-lanes.js) must give the same bits: every gradient element,
// the loss and the terms, over class KLs of 1 to 80 classes, planes whose
// cells leave rests, cell-major layouts, cells that take the double or the
// second-order steps, the box KL of anchor-free heads and 16-bit heads.
const path = require('path');
const { runScenario } = require('./helpers');

const script = path.join(__dirname, 'safety', 'kl-lanes.js');
const run = (lanes) => runScenario(script, 'digests', 300000, { YD_KL_LANES: lanes });

test('the KL gives the same bits in groups of 8 and of 16 cells', () => {
  const narrow = run('8');
  const wide = run('16');
  // each child ran the width it was asked for
  expect(narrow.lanes).toBe(8);
  expect(wide.lanes).toBe(16);
  expect(Object.keys(narrow.digests).length).toBeGreaterThan(25);
  for (const name of Object.keys(narrow.digests)) {
    expect({ name, ...wide.digests[name] }).toEqual({ name, ...narrow.digests[name] });
  }
  // the digests tell the cases apart (a digest of nothing would be equal everywhere)
  expect(new Set(Object.values(narrow.digests).map((d) => d.grads)).size).toBeGreaterThan(20);
});
