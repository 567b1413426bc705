// ESM entry of yolo-distill/tfjs.
import cjs from '../dist/tfjs.js';

export const { tfDistillationLoss } = cjs;
export default cjs;
