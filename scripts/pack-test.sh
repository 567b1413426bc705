#!/usr/bin/env bash
# Proves the package installs: makes the prebuild, packs the tarball, installs it
# into a fresh project, and computes a loss there from CommonJS and from ESM.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
tmp=$(mktemp -d)
npm run --silent prebuilds >/tmp/yd-prebuild.log 2>&1 || { tail -30 /tmp/yd-prebuild.log; exit 1; }
ls prebuilds/*/
tgz=$(npm pack --silent --pack-destination "$tmp" | tail -1)
echo "packed $tgz ($(du -h "$tmp/$tgz" | cut -f1))"
tar -tzf "$tmp/$tgz" | grep -E "prebuilds/|dist/index.js|esm/index.mjs" 
proj="$tmp/project"
mkdir -p "$proj" && cd "$proj"
npm init -y >/dev/null
npm install --no-audit --no-fund "$tmp/$tgz" 2>&1 | tail -3
cat > check.cjs <<'JS'
const { distillationLoss, backendInfo } = require('yolo-distill');
const shape = [1, 3 * 7, 2, 2];
const n = 84;
const r = distillationLoss([{ data: new Float32Array(n).fill(0.5), shape }], [{ data: new Float32Array(n).fill(-0.5), shape }], { numClasses: 2 });
if (!(r.loss > 0) || r.grads[0].length !== n) throw new Error('wrong result');
console.log('CJS: loss', r.loss, backendInfo());
JS
cat > check.mjs <<'JS'
import { distillationLoss } from 'yolo-distill';
import yd from 'yolo-distill';
const shape = [1, 3 * 7, 2, 2];
const n = 84;
const r = distillationLoss([{ data: new Float32Array(n).fill(0.5), shape }], [{ data: new Float32Array(n).fill(-0.5), shape }], { numClasses: 2 });
if (!(r.loss > 0) || typeof yd.distillationLossAsync !== 'function') throw new Error('wrong result');
console.log('ESM: loss', r.loss);
JS
node check.cjs
node check.mjs
node -e "require.resolve('yolo-distill/tfjs'); console.log('yolo-distill/tfjs resolves')"
echo "pack test: OK"
rm -rf "$tmp"
