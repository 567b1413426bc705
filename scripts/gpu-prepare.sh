#!/usr/bin/env bash
# Run here (on the CPU machine) before scripts/gpu-check.sh is sent to a GPU
# machine that has no Node.js and no network: packs this machine's node binary
# (xz) into .gpu/ and builds dist/. Then run, with the device tool, carrying:
#   .gpu dist node_modules/node-api-headers node_modules/node-addon-api
#   node_modules/node-gyp-build node_modules/bindings node_modules/file-uri-to-path
# the command: bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu
if [ ! -f .gpu/node.xz ] || [ "$(command -v node)" -nt .gpu/node.xz ]; then
  xz -T2 -9 -c "$(readlink -f "$(command -v node)")" > .gpu/node.xz
fi
npx tsc -p tsconfig.json
ls -la .gpu
