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
const run = (lanes, gather) =>
  runScenario(script, 'digests', 300000, { YD_KL_LANES: lanes, ...(gather === undefined ? {} : { YD_KL_GATHER: gather }) });

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

// The 8-cell groups read their planes straight or gather each 16-cell line of
// them first (kl_groups16_gathered: by default for class KLs of 32 or more
// classes where a plane's stride is a multiple of 4 KB, as the 32 x 32 and
// 64 x 64 planes here; YD_KL_GATHER=1 everywhere, the box KL too; =0
// nowhere). Where the CPU does not run the 8-cell AVX2 groups (kl8_usable)
// the three runs take the same path and agree trivially.
test('the 8-cell KL groups give the same bits with their planes gathered or read straight', () => {
  const auto = run('8');
  const always = run('8', '1');
  const never = run('8', '0');
  expect([auto.gather, always.gather, never.gather]).toEqual([-1, 1, 0]);
  for (const name of Object.keys(auto.digests)) {
    expect({ name, ...always.digests[name] }).toEqual({ name, ...auto.digests[name] });
    expect({ name, ...never.digests[name] }).toEqual({ name, ...auto.digests[name] });
  }
});
