'use strict';
// Builds and runs the C++ unit tests of native/core/cell_math.h (the per-cell
// math shared by the CPU and CUDA kernels): test/cpp/cell_math_test.cpp.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');

test('C++ unit tests of native/core/cell_math.h', () => {
  const exe = path.join(root, 'build', 'cell_math_test');
  fs.mkdirSync(path.dirname(exe), { recursive: true });
  const c = spawnSync('g++', ['-std=c++17', '-O1', '-Wall', '-Wextra', '-Inative/core', 'test/cpp/cell_math_test.cpp', '-o', exe], { cwd: root, encoding: 'utf8' });
  expect(c.stderr).toBe('');
  expect(c.status).toBe(0);
  const r = spawnSync(exe, { encoding: 'utf8' });
  console.log(r.stdout.trim().split('\n').slice(-5).join('\n'));
  expect(r.stdout).toMatch(/\d+ passed, 0 failed/);
  expect(r.status).toBe(0);
});

// vec_math.h's error bounds again as the kernels compile it: -O3, vectorized,
// with FMA contraction (x86-64-v3), where this CPU runs AVX2.
const avx2 = process.arch === 'x64' && /\bavx2\b/.test(fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '');
(avx2 ? test : test.skip)('C++ unit tests at -O3 -march=x86-64-v3 -fno-trapping-math (vectorized exp/log1p with FMA)', () => {
  const exe = path.join(root, 'build', 'cell_math_test_v3');
  const c = spawnSync('g++', ['-std=c++17', '-O3', '-march=x86-64-v3', '-fno-trapping-math', '-Wall', '-Wextra', '-Inative/core', 'test/cpp/cell_math_test.cpp', '-o', exe], { cwd: root, encoding: 'utf8' });
  expect(c.stderr).toBe('');
  expect(c.status).toBe(0);
  const r = spawnSync(exe, { encoding: 'utf8' });
  expect(r.stdout).toMatch(/\d+ passed, 0 failed/);
  expect(r.status).toBe(0);
});
if (!avx2) console.log('x86-64-v3 unit test skipped: this CPU has no AVX2');
