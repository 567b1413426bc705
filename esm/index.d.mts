export * from '../dist/index.js';
import * as all from '../dist/index.js';
export default all;
