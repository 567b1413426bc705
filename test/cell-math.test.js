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
