/**
 * Graph-building helpers over the protobuf encoder: named values, initializers, constants and one
 * method per ONNX operator mexit uses. Architectures compose these; nothing here knows about models.
 */
import {
  encodeModel,
  OnnxType,
  type AttributeValue,
  type NodeProtoData,
  type OnnxElemType,
  type TensorProtoData,
  type ValueInfoData,
} from './encoder.js';

// Opset 23 brings fused Attention (with GQA), RotaryEmbedding and RMSNormalization: far fewer nodes per
// layer, which matters because per-node overhead dominates small models on CPU.
export const OPSET = 23;
const IR_VERSION = 10;
const INT64_MAX = 9223372036854775807n;

type Attrs = Record<string, AttributeValue>;
export const attr = {
  int: (value: number): AttributeValue => ({ kind: 'int', value }),
  float: (value: number): AttributeValue => ({ kind: 'float', value }),
  ints: (value: readonly number[]): AttributeValue => ({ kind: 'ints', value }),
};

function bytesOf(data: Float32Array | BigInt64Array | Int32Array | Uint8Array): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Weight quantization of a graph's linear layers (MatMulNBits, com.microsoft): 8 or 4 bits. */
export type LinearQuantization = 'int8' | 'int4';

/** Weights are quantized in blocks of this many input features, one F32 scale per block. */
export const QUANT_BLOCK = 32;

/** A weight's block-quantized copy in MatMulNBits layout (see quantizeBlocks). */
export interface QuantizedBlocks {
  /** [N, K / QUANT_BLOCK, QUANT_BLOCK · bits / 8] */
  data: Uint8Array;
  /** [N · K / QUANT_BLOCK] */
  scales: Float32Array;
}

/**
 * Supplies the quantized copy of an [N, K] graph weight: quantizeBlocks unless the graph is given another
 * (the runtime's on-disk cache, which returns stored blocks equal to quantizeBlocks' result). `sources` are
 * the names of the weights it is made of, in row order: one, or several for a linearsT join.
 */
export type BlockQuantizer = (w: Float32Array, N: number, K: number, bits: 4 | 8, sources: readonly string[]) => QuantizedBlocks;

/**
 * Symmetric block quantization of an [N, K] weight in MatMulNBits layout: q = round(w / s) + 2^(bits−1)
 * per block of QUANT_BLOCK values along K, s = absmax / (2^(bits−1) − 1); 4-bit values are packed two per
 * byte, low nibble first. No zero-point tensor: the op's default is 2^(bits−1).
 */
export function quantizeBlocks(w: Float32Array, N: number, K: number, bits: 4 | 8): QuantizedBlocks {
  const blocks = K / QUANT_BLOCK;
  const blob = (QUANT_BLOCK * bits) / 8;
  const data = new Uint8Array(N * blocks * blob);
  const scales = new Float32Array(N * blocks);
  const zero = 1 << (bits - 1);
  const qmax = (1 << bits) - 1;
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const base = n * K + b * QUANT_BLOCK;
      let absmax = 0;
      for (let i = 0; i < QUANT_BLOCK; i++) absmax = Math.max(absmax, Math.abs(w[base + i]));
      const scale = absmax > 0 ? absmax / (zero - 1) : 1;
      scales[n * blocks + b] = scale;
      const out = (n * blocks + b) * blob;
      for (let i = 0; i < QUANT_BLOCK; i++) {
        const q = Math.min(qmax, Math.max(0, Math.round(w[base + i] / scale) + zero));
        if (bits === 8) data[out + i] = q;
        else data[out + (i >> 1)] |= i & 1 ? q << 4 : q;
      }
    }
  }
  return { data, scales };
}

export class GraphBuilder {
  private readonly nodes: NodeProtoData[] = [];
  private readonly initializers: TensorProtoData[] = [];
  private readonly inputs: ValueInfoData[] = [];
  private readonly outputs: ValueInfoData[] = [];
  private readonly constCache = new Map<string, string>();
  private readonly constNames = new Set<string>();
  private readonly initializerNames = new Set<string>();
  private counter = 0;
  /** F32 data of the weights added so far, for linear layers that quantize them. */
  private readonly weightData = new Map<string, { data: Float32Array; dims: readonly number[] }>();
  private usesMicrosoftOps = false;
  /** Weights joined by linearsT → the weights they are made of, in row order. */
  private readonly joinedSources = new Map<string, readonly string[]>();
  /** Values renamed to a graph output's name by output(); later references to them must use the new name. */
  private readonly renamed = new Map<string, string>();
  /** Bytes of weights used by this graph (for memory reports). */
  weightBytes = 0;
  /**
   * Weights are not copied into the protobuf: each is an external-data "file" whose bytes are handed to
   * ORT at session creation. This avoids serialising (and transiently copying) the weights.
   */
  readonly externalData: { path: string; data: Uint8Array }[] = [];

  /**
   * `quantize`: linear layers (`linearT`) read block-quantized copies of their weights (MatMulNBits), made
   * by `quantizer`.
   */
  constructor(
    private readonly graphName: string,
    private readonly quantize?: LinearQuantization,
    private readonly quantizer: BlockQuantizer = quantizeBlocks,
  ) {}

  private fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }

  input(name: string, elemType: OnnxElemType, dims: (number | string)[]): string {
    this.inputs.push({ name, elemType, dims });
    return name;
  }

  /**
   * Marks `value` as a graph output under `name`: the producing node's output is renamed (and its readers
   * updated), or, for graph inputs and values already output under another name, an Identity is added.
   */
  output(value: string, name: string, elemType: OnnxElemType, dims: (number | string)[]): void {
    const source = this.renamed.get(value) ?? value;
    if (source !== name) {
      const producer = source === value ? this.nodes.find((n) => n.outputs.includes(value)) : undefined;
      if (producer) {
        (producer.outputs as string[])[producer.outputs.indexOf(value)] = name;
        for (const n of this.nodes) {
          const inputs = n.inputs as string[];
          for (let i = 0; i < inputs.length; i++) if (inputs[i] === value) inputs[i] = name;
        }
        this.renamed.set(value, name);
      } else {
        this.nodes.push({ opType: 'Identity', inputs: [source], outputs: [name], name: this.fresh('out') });
      }
    }
    this.outputs.push({ name, elemType, dims });
  }

  /** Adds a weight once per graph; a second call with the same name reuses it (tied heads share one copy). */
  weight(name: string, data: Float32Array, dims: readonly number[]): string {
    if (!this.initializerNames.has(name)) {
      this.initializerNames.add(name);
      this.weightData.set(name, { data, dims });
    }
    return name;
  }

  /** Initializers go in at toBytes() time, only those some node reads (a quantized layer reads its copy). */
  private materialize(name: string, elemType: OnnxElemType, data: Float32Array | Uint8Array, dims: readonly number[]): void {
    const location = `w${this.externalData.length}.bin`;
    this.externalData.push({ path: location, data: bytesOf(data) });
    this.initializers.push({ name, elemType, dims, external: { location, offset: 0, length: data.byteLength } });
    this.weightBytes += data.byteLength;
  }

  hasWeight(name: string): boolean {
    return this.initializerNames.has(name);
  }

  constF32(values: readonly number[], dims: readonly number[] = [values.length]): string {
    return this.constant('f', OnnxType.FLOAT, Float32Array.from(values), values, dims);
  }

  constI64(values: readonly (number | bigint)[], dims: readonly number[] = [values.length]): string {
    return this.constant(
      'i',
      OnnxType.INT64,
      BigInt64Array.from(values, (v) => BigInt(v)),
      values,
      dims,
    );
  }

  private constant(
    tag: string,
    elemType: OnnxElemType,
    data: Float32Array | BigInt64Array,
    values: readonly (number | bigint)[],
    dims: readonly number[],
  ): string {
    const key = `${tag}:${dims.join('x')}:${values.join(',')}`;
    const cached = this.constCache.get(key);
    if (cached) return cached;
    const name = this.fresh(`const_${tag}`);
    this.initializers.push({ name, elemType, dims, raw: bytesOf(data).slice() });
    this.constCache.set(key, name);
    this.constNames.add(name);
    return name;
  }

  private resolve(inputs: string[]): string[] {
    return this.renamed.size ? inputs.map((v) => this.renamed.get(v) ?? v) : inputs;
  }

  /** Generic node with one output. */
  op(opType: string, inputs: string[], attributes?: Attrs, hint = opType.toLowerCase()): string {
    const out = this.fresh(hint);
    this.nodes.push({ opType, inputs: this.resolve(inputs), outputs: [out], name: this.fresh(opType), attributes });
    return out;
  }

  /** Generic node with several outputs. */
  opMulti(opType: string, inputs: string[], numOutputs: number, attributes?: Attrs): string[] {
    const outs = Array.from({ length: numOutputs }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({ opType, inputs: this.resolve(inputs), outputs: outs, name: this.fresh(opType), attributes });
    return outs;
  }

  // ---- operators ---------------------------------------------------------------------------
  add(a: string, b: string): string {
    return this.op('Add', [a, b]);
  }
  sub(a: string, b: string): string {
    return this.op('Sub', [a, b]);
  }
  mul(a: string, b: string): string {
    return this.op('Mul', [a, b]);
  }
  tanh(a: string): string {
    return this.op('Tanh', [a]);
  }
  sigmoid(a: string): string {
    return this.op('Sigmoid', [a]);
  }
  cos(a: string): string {
    return this.op('Cos', [a]);
  }
  sin(a: string): string {
    return this.op('Sin', [a]);
  }
  matmul(a: string, b: string): string {
    return this.op('MatMul', [a, b]);
  }
  /**
   * y = a · bᵀ (+ c): for [out, in] weights stored as in nn.Linear, without a transposed copy. In a quantized
   * graph a weight whose input width is a multiple of QUANT_BLOCK is read as a block-quantized copy.
   */
  linearT(a: string, weightT: string, bias?: string): string {
    const w = this.quantize ? this.weightData.get(weightT) : undefined;
    if (w?.dims.length !== 2 || w.dims[1] % QUANT_BLOCK !== 0) {
      return this.op('Gemm', bias ? [a, weightT, bias] : [a, weightT], { transB: attr.int(1) }, 'linear');
    }
    const [N, K] = w.dims;
    const bits = this.quantize === 'int4' ? 4 : 8;
    const qName = `${weightT}.q${bits}`;
    if (!this.initializerNames.has(qName)) {
      this.initializerNames.add(qName);
      const { data, scales } = this.quantizer(w.data, N, K, bits, this.joinedSources.get(weightT) ?? [weightT]);
      this.materialize(qName, OnnxType.UINT8, data, [N, K / QUANT_BLOCK, (QUANT_BLOCK * bits) / 8]);
      this.materialize(`${qName}.scales`, OnnxType.FLOAT, scales, [N * (K / QUANT_BLOCK)]);
    }
    this.usesMicrosoftOps = true;
    const out = this.fresh('qlinear');
    this.nodes.push({
      opType: 'MatMulNBits',
      domain: 'com.microsoft',
      inputs: this.resolve(bias ? [a, qName, `${qName}.scales`, '', '', bias] : [a, qName, `${qName}.scales`]),
      outputs: [out],
      name: this.fresh('MatMulNBits'),
      // accuracy_level 4: int8 activations (VNNI kernels); the draft tolerates it, exactness is the verifier's job.
      attributes: { K: attr.int(K), N: attr.int(N), bits: attr.int(bits), block_size: attr.int(QUANT_BLOCK), accuracy_level: attr.int(4) },
    });
    return out;
  }
  /**
   * Several linear layers over one input as one: y = a · [w₀; w₁; …]ᵀ, the weights joined by rows at build
   * time. Each output column is the same dot product as in its own layer; one larger kernel costs less
   * than several small ones (dispatch, and in a quantized graph the activation quantization, happen once).
   * Split the result with split().
   */
  linearsT(a: string, weightsT: readonly string[]): string {
    if (weightsT.length === 1) return this.linearT(a, weightsT[0]);
    const name = weightsT.join('+');
    if (!this.initializerNames.has(name)) {
      const parts = weightsT.map((n) => {
        const w = this.weightData.get(n);
        if (w?.dims.length !== 2) throw new Error(`linearsT: ${n} is not a 2-D weight of this graph`);
        return w;
      });
      const K = parts[0].dims[1];
      if (parts.some((w) => w.dims[1] !== K)) throw new Error(`linearsT: ${name} have different input widths`);
      const N = parts.reduce((sum, w) => sum + w.dims[0], 0);
      const data = new Float32Array(N * K);
      let offset = 0;
      for (const w of parts) {
        data.set(w.data, offset);
        offset += w.data.length;
      }
      this.weight(name, data, [N, K]);
      this.joinedSources.set(
        name,
        weightsT.flatMap((n) => this.joinedSources.get(n) ?? [n]),
      );
    }
    return this.linearT(a, name);
  }
  split(a: string, axis: number, sizes: readonly number[]): string[] {
    return this.opMulti('Split', [a, this.constI64(sizes)], sizes.length, { axis: attr.int(axis) });
  }
  gather(data: string, indices: string, axis = 0): string {
    return this.op('Gather', [data, indices], { axis: attr.int(axis) });
  }
  reshape(a: string, shape: readonly number[]): string {
    return this.op('Reshape', [a, this.constI64(shape)]);
  }
  concat(inputs: string[], axis: number): string {
    return this.op('Concat', inputs, { axis: attr.int(axis) });
  }
  unsqueeze(a: string, axes: readonly number[]): string {
    return this.op('Unsqueeze', [a, this.constI64(axes)]);
  }
  squeeze(a: string, axes: readonly number[]): string {
    return this.op('Squeeze', [a, this.constI64(axes)]);
  }
  shape(a: string): string {
    return this.op('Shape', [a]);
  }
  cast(a: string, to: OnnxElemType): string {
    return this.op('Cast', [a], { to: attr.int(to) });
  }
  less(a: string, b: string): string {
    return this.op('Less', [a, b]);
  }
  greater(a: string, b: string): string {
    return this.op('Greater', [a, b]);
  }
  or(a: string, b: string): string {
    return this.op('Or', [a, b]);
  }
  where(cond: string, a: string, b: string): string {
    return this.op('Where', [cond, a, b]);
  }
  range(start: string, limit: string, delta: string): string {
    return this.op('Range', [start, limit, delta]);
  }
  /** Slice along one axis; `end` omitted = to the end. Bounds may be constants or graph values. */
  slice(a: string, axis: number, start: number | string, end?: number | string): string {
    const s = typeof start === 'number' ? this.constI64([start]) : start;
    const e = end === undefined ? this.constI64([INT64_MAX]) : typeof end === 'number' ? this.constI64([end]) : end;
    return this.op('Slice', [a, s, e, this.constI64([axis])]);
  }
  layerNorm(x: string, scale: string, bias: string, eps: number): string {
    return this.op('LayerNormalization', [x, scale, bias], { axis: attr.int(-1), epsilon: attr.float(eps) });
  }
  rmsNorm(x: string, scale: string, eps: number): string {
    return this.op('RMSNormalization', [x, scale], { axis: attr.int(-1), epsilon: attr.float(eps) });
  }

  /**
   * Each RMSNormalization of an Add's output becomes one SkipSimplifiedLayerNormalization (com.microsoft)
   * at the Add's place, which outputs the norm and the sum: a residual add and the next norm in one kernel.
   */
  private fuseResidualNorms(): void {
    const adds = new Map<string, number>();
    this.nodes.forEach((n, i) => {
      if (n.opType === 'Add' && !n.domain) adds.set(n.outputs[0], i);
    });
    const removed = new Set<number>();
    this.nodes.forEach((n, i) => {
      const at = n.opType === 'RMSNormalization' ? adds.get(n.inputs[0]) : undefined;
      if (at !== undefined) adds.delete(n.inputs[0]); // one norm per add
      // Both addends must be computed rows (a constant operand could broadcast).
      if (at === undefined || this.nodes[at].inputs.some((x) => this.initializerNames.has(x) || this.constNames.has(x))) return;
      const add = this.nodes[at];
      this.nodes[at] = {
        opType: 'SkipSimplifiedLayerNormalization',
        domain: 'com.microsoft',
        inputs: [add.inputs[0], add.inputs[1], n.inputs[1]],
        outputs: [n.outputs[0], '', '', add.outputs[0]],
        name: this.fresh('SkipSimplifiedLayerNormalization'),
        attributes: { epsilon: n.attributes!.epsilon },
      };
      this.usesMicrosoftOps = true;
      removed.add(i);
    });
    if (removed.size) this.nodes.splice(0, this.nodes.length, ...this.nodes.filter((_, i) => !removed.has(i)));
  }

  toBytes(): Uint8Array {
    this.fuseResidualNorms();
    const read = new Set(this.nodes.flatMap((n) => n.inputs));
    for (const [name, w] of this.weightData) {
      if (read.has(name)) this.materialize(name, OnnxType.FLOAT, w.data, w.dims);
    }
    this.weightData.clear();
    return encodeModel({
      irVersion: IR_VERSION,
      opsets: this.usesMicrosoftOps
        ? [
            { domain: '', version: OPSET },
            { domain: 'com.microsoft', version: 1 },
          ]
        : [{ domain: '', version: OPSET }],
      graphName: this.graphName,
      nodes: this.nodes,
      initializers: this.initializers,
      inputs: this.inputs,
      outputs: this.outputs,
    });
  }
}
