#!/usr/bin/env node
// prebuildify runs "<node-gyp> rebuild --target=... --devdir=... --release".
// This stands in for node-gyp so that prebuilds are made by cmake-js
// (CMakeLists.txt, an N-API build: the target and devdir arguments do not apply).
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const r = spawnSync(process.execPath, [cmakeJs, 'rebuild'], { cwd: path.join(__dirname, '..'), stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
