/**
 * @mexit/model/onnx: the ONNX graph builder and encoder the stages are made with, and block quantization,
 * for tools that build their own graphs.
 */
export {
  GraphBuilder,
  quantizeBlocks,
  QUANT_BLOCK,
  type BlockQuantizer,
  type LinearQuantization,
  type QuantizedBlocks,
} from './onnx/builder.js';
export { encodeModel, ProtoWriter, OnnxType } from './onnx/encoder.js';
export { QuantizedBlockCache, QUANT_CACHE_FORMAT } from './quantized-cache.js';
