export * from './config.js';
export * from './exits.js';
export * from './stages.js';
export * from './runtime.js';
export * from './tokenizer.js';
export * from './incremental-decoder.js';
export * from './hub.js';
export type { LinearQuantization } from './onnx/builder.js';
