'use strict';
// binding.gyp (the node-gyp fallback build) must compile the same sources as
// CMakeLists.txt (the cmake-js build), less the CUDA ones that only CMake builds.
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');

test('binding.gyp and CMakeLists.txt list the same C++ sources', () => {
  const cmake = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
  const core = cmake.match(/set\(YD_CORE_SOURCES([^)]*)\)/)[1].trim().split(/\s+/);
  const addon = cmake.match(/add_library\(\$\{PROJECT_NAME\} SHARED([^)]*)\)/)[1].trim().split(/\s+/)
    .filter((f) => f.startsWith('native/'));
  const gyp = JSON.parse(fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8')).targets[0].sources;
  expect(core.length).toBeGreaterThan(2);
  expect(addon.length).toBeGreaterThan(2);
  expect([...gyp].sort()).toEqual([...core, ...addon].sort());
  for (const f of gyp) expect(fs.existsSync(path.join(root, f))).toBe(true);
});

test('npm run build builds once: no npm pre-hook script of build', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  for (const hook of ['prebuild', 'prebuild:native', 'prebuild:ts']) expect(pkg.scripts[hook]).toBeUndefined();
  expect(pkg.scripts.prebuilds).toMatch(/prebuildify/);
});

test('bench-only code is not part of the public package surface', () => {
  const pkg = require('..');
  expect(pkg.streamingFloor).toBeUndefined();
  expect(pkg.heapInUse).toBeUndefined();
  expect(fs.existsSync(path.join(root, 'lib', 'js-loss.ts'))).toBe(false);
});
