#!/usr/bin/env node
// Finds LibTorch for the node-gyp build (binding.gyp), in the order of docs/DESIGN.md §5:
// LIBTORCH / Torch_DIR from the environment, the torch of a Python on PATH, the
// system (Debian/Ubuntu libtorch-dev). Prints what binding.gyp asks for:
//   include  include directories      cflags  TORCH_CXX_FLAGS (the ABI flag)
//   libs     linker flags (with an rpath to LibTorch's lib folder)
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

function configDir() {
  const candidates = [];
  if (process.env.Torch_DIR) candidates.push(process.env.Torch_DIR);
  if (process.env.LIBTORCH) candidates.push(path.join(process.env.LIBTORCH, 'share', 'cmake', 'Torch'));
  if (!process.env.Torch_DIR && !process.env.LIBTORCH) {
    for (const py of ['python3', 'python']) {
      const r = spawnSync(py, ['-c', 'import torch.utils; print(torch.utils.cmake_prefix_path)'], { encoding: 'utf8' });
      if (r.status === 0 && r.stdout.trim()) {
        candidates.push(path.join(r.stdout.trim(), 'Torch'));
        break;
      }
    }
    candidates.push('/usr/lib/x86_64-linux-gnu/cmake/Torch', '/usr/lib/aarch64-linux-gnu/cmake/Torch', '/usr/lib/cmake/Torch');
  }
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'TorchConfig.cmake'))) return dir;
  }
  process.stderr.write(
    'yolo-distill: LibTorch was not found. Install it (apt-get install -y libtorch-dev), ' +
      'or set LIBTORCH to an unpacked LibTorch, or Torch_DIR to the folder holding TorchConfig.cmake.\n',
  );
  process.exit(1);
}

function describe() {
  const dir = configDir();
  const text = fs.readFileSync(path.join(dir, 'TorchConfig.cmake'), 'utf8');
  // TorchConfig.cmake derives its prefix from its own folder, e.g. "${CMAKE_CURRENT_LIST_DIR}/../../../".
  const up = /get_filename_component\(TORCH_INSTALL_PREFIX "\$\{CMAKE_CURRENT_LIST_DIR\}([./]*)"/.exec(text);
  const prefix = path.resolve(dir, up ? `.${up[1]}` : '../../..');
  const flags = /set\(TORCH_CXX_FLAGS "([^"]*)"\)/.exec(text);
  const include = [path.join(prefix, 'include'), path.join(prefix, 'include', 'torch', 'csrc', 'api', 'include')];
  const libdir = [path.join(prefix, 'lib'), path.resolve(dir, '..', '..')].find((d) =>
    fs.existsSync(path.join(d, 'libtorch_cpu.so')),
  );
  return { include, cflags: flags ? flags[1] : '', libdir };
}

const what = process.argv[2];
const t = describe();
if (what === 'include') {
  process.stdout.write(t.include.join(' '));
} else if (what === 'cflags') {
  process.stdout.write(t.cflags);
} else if (what === 'libs') {
  const dir = t.libdir ? [`-L${t.libdir}`, `-Wl,-rpath,${t.libdir}`] : [];
  process.stdout.write([...dir, '-ltorch', '-ltorch_cpu', '-lc10'].join(' '));
} else {
  process.stdout.write(JSON.stringify(t, null, 2) + '\n');
}
