export * from './config.js';
export * from './exits.js';
export * from './stages.js';
export * from './runtime.js';
export * from './tokenizer.js';
export { GraphBuilder, quantizeBlocks, QUANT_BLOCK, type LinearQuantization } from './onnx/builder.js';
export { encodeModel, ProtoWriter, OnnxType } from './onnx/encoder.js';
