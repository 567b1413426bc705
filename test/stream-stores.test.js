'use strict';
// Streaming gradient stores (native/core/fused_cpu.cpp, "Streaming stores for
// the gradient"; BENCHMARKS.md): the same calls with the stores forced off
// (YD_STREAM_STORES=0), forced on (=1) and left to the call's size (unset),
// each in a child process (test/safety/stream-stores.js), must give the same
// bits: every gradient element and the loss and terms, on aligned and
// misaligned views, every kernel that streams and some that do not.
const path = require('path');
const os = require('os');
const fs = require('fs');
const { runScenario } = require('./helpers');

const script = path.join(__dirname, 'safety', 'stream-stores.js');
const run = (value) => {
  // runScenario merges its env into process.env's: an unset variable must stay unset.
  const saved = process.env.YD_STREAM_STORES;
  delete process.env.YD_STREAM_STORES;
  try {
    return runScenario(script, 'digests', 300000, value === undefined ? {} : { YD_STREAM_STORES: value });
  } finally {
    if (saved !== undefined) process.env.YD_STREAM_STORES = saved;
  }
};
// The CPUs whose calls stream (native/core/fused_cpu.cpp, stream_level): AVX-512, or AVX2 and FMA.
const flags = os.platform() === 'linux' ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
const streams = /\bavx512f\b/.test(flags) || (/\bavx2\b/.test(flags) && /\bfma\b/.test(flags));

test('streaming stores change no bit: forced off, forced on and by size give the same results', () => {
  if (!streams) console.log('stream-stores: this CPU has neither AVX-512 nor AVX2 with FMA, so no call streams; the three settings are compared all the same');
  const off = run('0');
  const on = run('1');
  const auto = run(undefined);
  expect(Object.keys(off).length).toBeGreaterThan(40);
  for (const name of Object.keys(off)) {
    expect({ name, ...on[name] }).toEqual({ name, ...off[name] });
    expect({ name, ...auto[name] }).toEqual({ name, ...off[name] });
  }
  // the digests tell the cases apart (a digest of nothing would be equal everywhere)
  expect(new Set(Object.values(off).map((d) => d.grads)).size).toBeGreaterThan(10);
});
