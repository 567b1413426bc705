'use strict';
// CUDA: on a machine with a GPU and a CUDA build, runs test/cuda-check.js (the
// same checks scripts/gpu-check.sh runs); everywhere, checks that CUDA requests
// give ERR_NO_CUDA with the reason when CUDA is not available.
const { spawnSync } = require('child_process');
const path = require('path');
const h = require('./helpers');

const { distillationLoss, Tensor, backendInfo } = h.pkg;
const info = backendInfo();

const codeOf = (fn) => {
  try {
    fn();
  } catch (e) {
    return { code: e.code, message: e.message };
  }
  return { code: 'no error' };
};

if (info.cuda) {
  test('CUDA checks (test/cuda-check.js)', () => {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'cuda-check.js')], { encoding: 'utf8' });
    console.log(r.stdout);
    expect(r.status).toBe(0);
  });
} else {
  console.warn(`CUDA tests skipped: no CUDA device (LibTorch ${info.libtorch}, ${info.cudaDeviceCount} device(s)); checking ERR_NO_CUDA instead`);
  test('without CUDA every CUDA request gives ERR_NO_CUDA saying why', () => {
    const shape = [1, 18, 1, 1];
    const head = { data: new Float32Array(18), shape };
    for (const fn of [
      () => Tensor.fromFloat32Array(new Float32Array(4), [4], { device: 'cuda' }),
      () => Tensor.fromFloat32Array(new Float32Array(4), [4], { device: 'cuda:1' }),
      () => distillationLoss([head], [head], { numClasses: 1, device: 'cuda' }),
    ]) {
      const e = codeOf(fn);
      expect(e.code).toBe('ERR_NO_CUDA');
      expect(e.message).toMatch(/CPU-only LibTorch|no CUDA device/);
    }
    expect(codeOf(() => distillationLoss([head], [head], { numClasses: 1, device: 'tpu' })).code).toBe('ERR_INVALID_OPTION');
    expect(codeOf(() => distillationLoss([head], [head], { numClasses: 1, device: 3 })).code).toBe('ERR_INVALID_ARG_TYPE');
    // options.device 'cpu' is accepted and changes nothing.
    expect(distillationLoss([head], [head], { numClasses: 1, device: 'cpu' }).loss).toBe(0);
  });
}
