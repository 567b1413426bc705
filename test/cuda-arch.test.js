'use strict';
// CMake applies the CUDA architectures we choose, not the ones a CUDA torch's
// config forces (it sets CMAKE_CUDA_ARCHITECTURES to OFF and adds -gencode
// flags), and links the shared CUDA runtime. Configure only (no build), against
// test/cmake/faketorch: a stand-in config that does what torch's cuda.cmake
// does. Needs nvcc (CMake's CUDA compiler check).
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.join(__dirname, '..');
const nvcc = process.env.NVCC || '/usr/local/cuda/bin/nvcc';
const have = fs.existsSync(nvcc) && spawnSync('cmake', ['--version']).status === 0;
if (!have) console.log(`CUDA architecture tests skipped: no nvcc at ${nvcc} (set NVCC) or no cmake`);
const maybe = have ? test : test.skip;

function configure(extraArgs, env = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'yd-arch-'));
  try {
    const r = spawnSync('cmake', ['-S', root, '-B', dir, `-DCMAKE_CUDA_COMPILER=${nvcc}`, ...extraArgs], {
      encoding: 'utf8', env: { ...process.env, Torch_DIR: path.join(__dirname, 'cmake', 'faketorch'), LIBTORCH: '', CUDAARCHS: '', ...env },
    });
    if (r.status !== 0) throw new Error(`cmake failed:\n${r.stdout}\n${r.stderr}`);
    const flags = fs.readFileSync(path.join(dir, 'CMakeFiles', 'yd_core.dir', 'flags.make'), 'utf8');
    const link = fs.readFileSync(path.join(dir, 'CMakeFiles', 'yolo_distill.dir', 'link.txt'), 'utf8');
    const archs = [...new Set([...flags.matchAll(/arch=compute_(\d+),code=\[?(\w+)\]?/g)].map((m) => `${m[1]}:${m[2]}`))].sort();
    return { out: r.stdout, flags, link, archs };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

maybe('default architectures 80, 90 + PTX replace the -gencode flags of torch\'s config; shared cudart', () => {
  const c = configure([]);
  expect(c.out).toMatch(/yd_core CUDA_ARCHITECTURES = 80-real;90-real;90-virtual/);
  expect(c.out).toMatch(/ignoring torch's -gencode flags/);
  expect(c.archs).toEqual(['80:sm_80', '90:compute_90', '90:sm_90']);
  expect(c.flags).not.toMatch(/compute_75|compute_86/);
  expect(c.link).not.toMatch(/cudart_static/);
});

maybe('-DCMAKE_CUDA_ARCHITECTURES and CUDAARCHS override the default', () => {
  expect(configure(['-DCMAKE_CUDA_ARCHITECTURES=90-real']).archs).toEqual(['90:sm_90']);
  expect(configure([], { CUDAARCHS: '89-real' }).archs).toEqual(['89:sm_89']);
});
