#!/usr/bin/env bash
# Installs what yolo-distill needs on Debian/Ubuntu (idempotent, quick when all
# is there), then brings the native addon and the TypeScript output up to date.
#   apt: libtorch-dev (LibTorch), python3-torch (the test reference), cmake, g++, make
#   npm: the project's packages (npm ci)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
if [ -z "${LIBTORCH:-}" ] && [ -z "${Torch_DIR:-}" ] && ! ls /usr/lib/*/cmake/Torch/TorchConfig.cmake >/dev/null 2>&1; then
  need+=(libtorch-dev)
fi
/usr/bin/python3 -c 'import torch' >/dev/null 2>&1 || need+=(python3-torch)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "bootstrap: need root to run: apt-get install -y ${need[*]}" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: npm ci"
  npm ci --no-audit --no-fund
fi

# Incremental: a no-op when nothing changed.
if [ ! -f build/CMakeCache.txt ]; then
  npx cmake-js rebuild >/dev/null
else
  npx cmake-js build >/dev/null
fi
npx tsc -p tsconfig.json
