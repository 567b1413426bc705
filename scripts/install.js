#!/usr/bin/env node
// npm install hook: keep a prebuilt binary or an existing build when it loads;
// otherwise build from source with cmake-js (needs cmake, a C++17 compiler and LibTorch).
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.join(__dirname, '..');

function loads() {
  try {
    require('node-gyp-build')(root);
    return true;
  } catch {
    return false;
  }
}

if (process.env.YOLO_DISTILL_SKIP_BUILD) {
  console.log('yolo-distill: YOLO_DISTILL_SKIP_BUILD is set, not building the addon');
} else if (loads()) {
  console.log('yolo-distill: using the existing native binary');
} else {
  console.log('yolo-distill: no loadable prebuilt binary, building from source with cmake-js');
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  const r = spawnSync(process.execPath, [cmakeJs, 'rebuild'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(
      'yolo-distill: building the native addon failed. It needs cmake, g++ (C++17) and LibTorch:\n' +
        '  apt-get install -y cmake g++ libtorch-dev   (or set LIBTORCH / Torch_DIR)\n' +
        'then run: npm rebuild yolo-distill',
    );
    process.exit(r.status || 1);
  }
}
