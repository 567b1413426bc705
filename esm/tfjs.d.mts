export * from '../dist/tfjs.js';
