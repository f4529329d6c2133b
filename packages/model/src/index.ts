export * from './config.js';
export * from './exits.js';
export * from './stages.js';
export * from './runtime.js';
export * from './tokenizer.js';
export * from './incremental-decoder.js';
export { QuantizedBlockCache, QUANT_CACHE_FORMAT } from './quantized-cache.js';
export { GraphBuilder, quantizeBlocks, QUANT_BLOCK, type BlockQuantizer, type LinearQuantization, type QuantizedBlocks } from './onnx/builder.js';
export { encodeModel, ProtoWriter, OnnxType } from './onnx/encoder.js';
