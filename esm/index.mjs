// ESM entry: re-exports the CommonJS build, so `import` and `require` share one
// native addon instance.
import cjs from '../dist/index.js';

export const { distillationLoss, distillationLossAsync, Tensor, backendInfo, gradientPool, ErrorCodes } = cjs;
export default cjs;
