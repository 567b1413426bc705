'use strict';
// The CLI: `demo` on a small workload (the loss and its terms fall, the fused vs
// reference check passes), `info`, and usage errors. Also the loader's messages.
const { spawnSync } = require('child_process');
const path = require('path');

const CLI = path.join(__dirname, '..', 'dist', 'cli.js');
const run = (...args) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('demo: the loss and all three terms fall step by step; the cross-check passes', () => {
  const r = run('demo', '--steps', '4', '--batch', '1', '--size', '128', '--classes', '7');
  expect(r.status).toBe(0);
  const rows = r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length === 6 && /^\d+$/.test(f[0]))
    .map((f) => f.slice(1, 5).map(Number));
  expect(rows).toHaveLength(5);
  for (let i = 1; i < rows.length; i++) {
    for (let t = 0; t < 4; t++) expect(rows[i][t]).toBeLessThan(rows[i - 1][t]);
  }
  expect(r.stdout).toMatch(/throughput: fused loss \+ gradient, [\d.]+ G values\/s, [\d.]+ GB\/s effective/);
  expect(r.stdout).toMatch(/check: fused vs reference .*: OK/);
});

test('demo in nahwc layout', () => {
  const r = run('demo', '--steps', '2', '--batch', '1', '--size', '64', '--classes', '3', '--layout', 'nahwc');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/check: fused vs reference .*: OK/);
});

test('demo --head anchorFree (YOLOv8s-shaped, nhwc): the loss falls and fused = reference', () => {
  const r = run('demo', '--head', 'anchorFree', '--steps', '3', '--batch', '1', '--size', '64', '--classes', '3', '--layout', 'nhwc');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/YOLOv8s-shaped anchor-free heads/);
  const losses = [...r.stdout.matchAll(/^\s+\d+\s+([\d.e+-]+)/gm)].map((m) => Number(m[1]));
  expect(losses.length).toBe(4);
  expect(losses[3]).toBeLessThan(losses[0]);
  expect(r.stdout).toMatch(/check: fused vs reference .*: OK/);
});

test('info prints the backend', () => {
  const r = run('info');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/libtorch: \d+\.\d+/);
  expect(r.stdout).toMatch(/cuda: (true|false)/);
  expect(r.stdout).toMatch(/threads: \d+/);
});

test('bad usage exits 2 with a message', () => {
  expect(run('frobnicate').status).toBe(2);
  const r = run('demo', '--steps', 'x');
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/--steps expects an integer/);
});

test('the loader explains why loading failed and what to do', () => {
  const { explainLoadFailure } = require('../dist/binding');
  expect(explainLoadFailure(['node-gyp-build: libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory']))
    .toMatch(/LibTorch shared libraries .* cannot be found[\s\S]*apt-get install -y libtorch-dev/);
  expect(explainLoadFailure(["x: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found"])).toMatch(/newer glibc/);
  expect(explainLoadFailure(['x: undefined symbol: _ZN3c10...'])).toMatch(/not the version the addon was built against/);
  expect(explainLoadFailure(['node-gyp-build: No native build was found for platform=linux'])).toMatch(/no build of the native addon[\s\S]*npm run build:native/);
});
