/**
 * config.json / generation_config.json → one normalised ModelConfig. Each architecture's field names
 * (n_embd vs hidden_size, ...) are read here and nowhere else.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, FILE_SIZE_LIMITS, formatValue, readTextFile, KV_MAX_LAYERS, TokenizerError, type TensorMap } from '@mexit/core';

export const SUPPORTED_MODEL_TYPES = ['llama', 'gpt2', 'gpt_neo'] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export interface RopeConfig {
  theta: number;
  /** Per-pair inverse frequencies (length headDim/2), llama3 scaling already applied. */
  invFreq: Float64Array;
}

export interface ModelConfig {
  modelType: ModelType;
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositions: number;
  normEps: number;
  tieWordEmbeddings: boolean;
  /** llama only. */
  rope?: RopeConfig;
  /** gpt_neo only: per layer. */
  attentionLayers?: ('global' | 'local')[];
  windowSize?: number;
  /** End-of-sequence ids from generation_config.json (falling back to config.json). */
  eosTokenIds: number[];
  bosTokenId?: number;
  /** Recommended self-speculative settings recorded with the model (generation_config.json). */
  recommendedExitLayer?: number;
  recommendedNumSpeculations?: number;
  /** How the drafts' layers are stored ('none' = the model's exact weights on the shared cache). */
  recommendedDraftQuantization?: 'none' | 'int8' | 'int4';
  /** The parsed config.json as found. */
  raw: Record<string, unknown>;
}

/**
 * Upper bounds on config.json sizes, far above any real model, checked before anything is sized by them (a
 * typo or a hostile file must not allocate or loop by a billion). The checkpoint's tensors bound them again.
 */
export const CONFIG_LIMITS = {
  numLayers: KV_MAX_LAYERS,
  hiddenSize: 2 ** 16,
  numHeads: 2 ** 12,
  headDim: 2 ** 12,
  intermediateSize: 2 ** 20,
  vocabSize: 2 ** 22,
  maxPositions: 2 ** 24,
} as const;

/** Most drafts per self-spec round (option numSpeculations, generation_config.json mexit_num_speculations). */
export const MAX_NUM_SPECULATIONS = 64;

/** A user value for a message, cut short (a hostile file may hold megabytes in one field). */
const show = (v: unknown): string => formatValue(v, 100, 'js');

function readJson(path: string, what: string): Record<string, unknown> {
  // a regular file under the size limit (not a FIFO, a device or a directory), else a typed ConfigError
  const text = readTextFile(path, { what, maxBytes: FILE_SIZE_LIMITS.config, error: ConfigError, missingCode: 'CONFIG_MISSING' });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('CONFIG_JSON', `${what} is not valid JSON: ${path} (${(e as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('CONFIG_JSON', `${what} must hold a JSON object: ${path}`);
  }
  return parsed as Record<string, unknown>;
}

class FieldReader {
  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly path: string,
  ) {}

  /** A positive integer up to `max` (the fallback, when used, is the caller's to check). */
  int(name: string, fallback?: number, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.raw[name];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" is missing in ${this.path}`);
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > max) {
      throw new ConfigError(
        'CONFIG_FIELD',
        `config field "${name}" must be a positive integer up to ${max}, got ${show(v)} in ${this.path}`,
      );
    }
    return v;
  }

  num(name: string, fallback?: number): number {
    const v = this.raw[name];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" is missing in ${this.path}`);
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" must be a positive number, got ${show(v)} in ${this.path}`);
    }
    return v;
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw[name];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean')
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" must be a boolean, got ${show(v)} in ${this.path}`);
    return v;
  }

  str(name: string, fallback: string): string {
    const v = this.raw[name];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'string')
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" must be a string, got ${show(v)} in ${this.path}`);
    return v;
  }

  fail(message: string): never {
    throw new ConfigError('CONFIG_CONTRADICTION', `${message} (${this.path})`);
  }
}

/** HF `_compute_llama3_parameters` applied to the default inverse frequencies. */
function ropeInvFreq(raw: Record<string, unknown>, headDim: number, theta: number, f: FieldReader): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  // HF computes inv_freq in float32: 1 / theta^(arange(0, d, 2).float() / d)
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / headDim)));
  const scaling = raw.rope_scaling;
  if (scaling === undefined || scaling === null) return inv;
  if (typeof scaling !== 'object' || Array.isArray(scaling)) f.fail(`rope_scaling must be an object or null, got ${show(scaling)}`);
  const s = scaling as Record<string, unknown>;
  const type = s.rope_type ?? s.type;
  if (type === 'default') return inv;
  if (type !== 'llama3') f.fail(`unsupported rope_scaling type ${show(type)}; supported: none, "default", "llama3"`);
  // Numbers only: "8" or [8] must not pass as 8.
  const [factor, lowFreqFactor, highFreqFactor, orig] = [
    'factor',
    'low_freq_factor',
    'high_freq_factor',
    'original_max_position_embeddings',
  ].map((k) => (typeof s[k] === 'number' ? (s[k] as number) : Number.NaN));
  if (![factor, lowFreqFactor, highFreqFactor, orig].every((x) => Number.isFinite(x) && x > 0) || highFreqFactor <= lowFreqFactor) {
    f.fail('rope_scaling llama3 needs positive factor, low_freq_factor < high_freq_factor, original_max_position_embeddings');
  }
  const lowFreqWavelen = orig / lowFreqFactor;
  const highFreqWavelen = orig / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    if (wavelen < highFreqWavelen) continue;
    if (wavelen > lowFreqWavelen) {
      inv[i] = inv[i] / factor;
    } else {
      const smooth = (orig / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      inv[i] = (1 - smooth) * (inv[i] / factor) + smooth * inv[i];
    }
    inv[i] = Math.fround(inv[i]);
  }
  return inv;
}

/**
 * An id field (eos_token_id, lm_head_layer_indices, ...): an integer or a list of integers (each ≥ `min`);
 * absent or null → undefined. Anything else (a string "2", a float, a hole) is a ConfigError naming the field.
 */
function intList(source: Record<string, unknown>, key: string, path: string, min = 0): number[] | undefined {
  const v = source[key];
  if (v === undefined || v === null) return undefined;
  const ok = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= min;
  if (ok(v)) return [v];
  if (Array.isArray(v)) {
    const out: number[] = [];
    for (let i = 0; i < v.length; i++) {
      if (!ok(v[i])) break;
      out.push(v[i]);
    }
    if (out.length === v.length) return out;
  }
  throw new ConfigError('CONFIG_FIELD', `field "${key}" must be an integer ≥ ${min} or a list of them, got ${show(v)} in ${path}`);
}

/** Reads and validates `dir/config.json` (+ optional generation_config.json). */
export function loadModelConfig(dir: string): ModelConfig {
  const path = join(dir, 'config.json');
  const raw = readJson(path, 'config.json');
  const f = new FieldReader(raw, path);
  const modelType = raw.model_type as ModelType;
  if (typeof modelType !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new ConfigError(
      'UNSUPPORTED_MODEL_TYPE',
      `model_type ${formatValue(modelType, 100, 'js')} is not supported (${path}); supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  }
  let cfg: Omit<ModelConfig, 'eosTokenIds' | 'raw'>;
  if (modelType === 'llama') {
    const hiddenSize = f.int('hidden_size', undefined, CONFIG_LIMITS.hiddenSize);
    const numHeads = f.int('num_attention_heads', undefined, CONFIG_LIMITS.numHeads);
    const numKvHeads = f.int('num_key_value_heads', numHeads, CONFIG_LIMITS.numHeads);
    // Without head_dim it is hidden_size / heads, which must then be whole (an explicit one is checked by int()).
    const headDim = f.int('head_dim', hiddenSize / numHeads, CONFIG_LIMITS.headDim);
    if (!Number.isInteger(headDim)) f.fail(`hidden_size ${hiddenSize} not divisible by num_attention_heads ${numHeads}`);
    if (numHeads % numKvHeads !== 0) f.fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
    if (headDim % 2 !== 0) f.fail(`head_dim ${headDim} must be even for RoPE`);
    const act = f.str('hidden_act', 'silu');
    if (act !== 'silu') f.fail(`hidden_act "${act}" is not supported for llama (expected "silu")`);
    if (f.bool('attention_bias', false) || f.bool('mlp_bias', false)) f.fail('attention_bias / mlp_bias = true is not supported');
    const theta = f.num('rope_theta', 10000);
    cfg = {
      modelType,
      numLayers: f.int('num_hidden_layers', undefined, CONFIG_LIMITS.numLayers),
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      intermediateSize: f.int('intermediate_size', undefined, CONFIG_LIMITS.intermediateSize),
      vocabSize: f.int('vocab_size', undefined, CONFIG_LIMITS.vocabSize),
      maxPositions: f.int('max_position_embeddings', undefined, CONFIG_LIMITS.maxPositions),
      normEps: f.num('rms_norm_eps', 1e-6),
      tieWordEmbeddings: f.bool('tie_word_embeddings', false),
      rope: { theta, invFreq: ropeInvFreq(raw, headDim, theta, f) },
    };
  } else if (modelType === 'gpt2') {
    const hiddenSize = f.int('n_embd', undefined, CONFIG_LIMITS.hiddenSize);
    const numHeads = f.int('n_head', undefined, CONFIG_LIMITS.numHeads);
    if (hiddenSize % numHeads !== 0) f.fail(`n_embd ${hiddenSize} not divisible by n_head ${numHeads}`);
    const act = f.str('activation_function', 'gelu_new');
    if (act !== 'gelu_new') f.fail(`activation_function "${act}" is not supported (expected "gelu_new")`);
    if (f.bool('scale_attn_by_inverse_layer_idx', false) || f.bool('reorder_and_upcast_attn', false)) {
      f.fail('scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported');
    }
    if (!f.bool('scale_attn_weights', true)) f.fail('scale_attn_weights = false is not supported');
    cfg = {
      modelType,
      numLayers: f.int('n_layer', undefined, CONFIG_LIMITS.numLayers),
      hiddenSize,
      numHeads,
      numKvHeads: numHeads,
      headDim: hiddenSize / numHeads,
      intermediateSize: f.int('n_inner', 4 * hiddenSize, CONFIG_LIMITS.intermediateSize),
      vocabSize: f.int('vocab_size', undefined, CONFIG_LIMITS.vocabSize),
      maxPositions: f.int('n_positions', undefined, CONFIG_LIMITS.maxPositions),
      normEps: f.num('layer_norm_epsilon', 1e-5),
      tieWordEmbeddings: true,
    };
  } else {
    const hiddenSize = f.int('hidden_size', undefined, CONFIG_LIMITS.hiddenSize);
    const numHeads = f.int('num_heads', undefined, CONFIG_LIMITS.numHeads);
    const numLayers = f.int('num_layers', undefined, CONFIG_LIMITS.numLayers);
    if (hiddenSize % numHeads !== 0) f.fail(`hidden_size ${hiddenSize} not divisible by num_heads ${numHeads}`);
    const act = f.str('activation_function', 'gelu_new');
    if (act !== 'gelu_new') f.fail(`activation_function "${act}" is not supported (expected "gelu_new")`);
    const attentionLayers = expandAttentionTypes(raw.attention_types, numLayers, f);
    cfg = {
      modelType,
      numLayers,
      hiddenSize,
      numHeads,
      numKvHeads: numHeads,
      headDim: hiddenSize / numHeads,
      intermediateSize: f.int('intermediate_size', 4 * hiddenSize, CONFIG_LIMITS.intermediateSize),
      vocabSize: f.int('vocab_size', undefined, CONFIG_LIMITS.vocabSize),
      maxPositions: f.int('max_position_embeddings', undefined, CONFIG_LIMITS.maxPositions),
      normEps: f.num('layer_norm_epsilon', 1e-5),
      tieWordEmbeddings: true,
      attentionLayers,
      windowSize: f.int('window_size', 256, CONFIG_LIMITS.maxPositions),
    };
  }

  // Multi-exit checkpoints (IBM layout) list the layers with their own `lm_head_<l>` (1-based). The exits
  // themselves are found from the tensors (exits.ts); an out-of-range entry still means a broken config.
  for (const l of intList(raw, 'lm_head_layer_indices', path, Number.MIN_SAFE_INTEGER) ?? []) {
    if (l < 1 || l > cfg.numLayers) f.fail(`lm_head_layer_indices entry ${l} is outside 1..${cfg.numLayers}`);
  }

  const genPath = join(dir, 'generation_config.json');
  const gen = existsSync(genPath) ? readJson(genPath, 'generation_config.json') : {};
  // Ids are checked in both files, used or not; pad_token_id is unused but -1 ("none") is common in the wild.
  const genEos = intList(gen, 'eos_token_id', genPath);
  const cfgEos = intList(raw, 'eos_token_id', path);
  const eosTokenIds = genEos?.length ? genEos : (cfgEos ?? []);
  const genBos = intList(gen, 'bos_token_id', genPath);
  const cfgBos = intList(raw, 'bos_token_id', path);
  const bos = (genBos ?? cfgBos)?.[0];
  intList(gen, 'pad_token_id', genPath, -1);
  intList(raw, 'pad_token_id', path, -1);
  // Recorded self-speculative settings: absent keys fall back to the engine's defaults; a present but
  // invalid one is an error (a typo must not silently change how the model decodes).
  const recorded = (key: string, valid: (v: unknown) => boolean, expected: string): unknown => {
    const v = gen[key];
    if (v === undefined || v === null) return undefined;
    if (!valid(v))
      throw new ConfigError('CONFIG_FIELD', `generation_config.json field "${key}" must be ${expected}, got ${show(v)} in ${genPath}`);
    return v;
  };
  const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
  const recommendedExitLayer = recorded(
    'mexit_exit_layer',
    (v) => isInt(v) && v >= 1 && v < cfg.numLayers,
    `an integer in 1..${cfg.numLayers - 1}`,
  ) as number | undefined;
  const recommendedNumSpeculations = recorded(
    'mexit_num_speculations',
    (v) => isInt(v) && v >= 1 && v <= MAX_NUM_SPECULATIONS,
    `a positive integer up to ${MAX_NUM_SPECULATIONS}`,
  ) as number | undefined;
  const recommendedDraftQuantization = recorded(
    'mexit_draft_quantization',
    (v) => v === 'none' || v === 'int8' || v === 'int4',
    '"none", "int8" or "int4"',
  ) as ModelConfig['recommendedDraftQuantization'];
  return {
    ...cfg,
    eosTokenIds,
    bosTokenId: bos,
    recommendedExitLayer,
    recommendedNumSpeculations,
    recommendedDraftQuantization,
    raw,
  };
}

/**
 * GPT-Neo's `[[["global","local"], 2]]` → ['global','local','global','local']. The total is counted and
 * compared with num_layers before anything is expanded, so `[[["global"], 1e9]]` costs nothing.
 */
function expandAttentionTypes(v: unknown, numLayers: number, f: FieldReader): ('global' | 'local')[] {
  if (!Array.isArray(v)) f.fail('gpt_neo config needs "attention_types"');
  let total = 0;
  for (let i = 0; i < v.length; i++) {
    const entry: unknown = v[i];
    if (!Array.isArray(entry) || entry.length !== 2 || !Array.isArray(entry[0]) || !Number.isSafeInteger(entry[1]) || entry[1] < 0) {
      f.fail(`malformed attention_types entry ${show(entry)} (expected [["global" | "local", ...], repeats ≥ 0])`);
    }
    const types = entry[0] as unknown[];
    for (let j = 0; j < types.length; j++) {
      const t = types[j];
      if (t !== 'global' && t !== 'local') f.fail(`attention type ${show(t)} is not "global" or "local"`);
    }
    total += types.length * (entry[1] as number);
  }
  if (total !== numLayers) f.fail(`attention_types expand to ${total} layers but num_layers is ${numLayers}`);
  const out: ('global' | 'local')[] = [];
  for (const [types, repeats] of v as [('global' | 'local')[], number][]) {
    for (let r = 0; r < repeats; r++) for (const t of types) out.push(t);
  }
  return out;
}

/** config.json's own names for the sizes checked against the tensors, per architecture. */
const FIELD_NAMES: Record<ModelType, Record<'layers' | 'hidden' | 'positions' | 'intermediate', string>> = {
  llama: { layers: 'num_hidden_layers', hidden: 'hidden_size', positions: 'max_position_embeddings', intermediate: 'intermediate_size' },
  gpt2: { layers: 'n_layer', hidden: 'n_embd', positions: 'n_positions', intermediate: 'n_inner' },
  gpt_neo: { layers: 'num_layers', hidden: 'hidden_size', positions: 'max_position_embeddings', intermediate: 'intermediate_size' },
};

/**
 * The config's sizes against what the checkpoint holds, before anything is built from them: the number of
 * layers (missing or extra), the embedding (vocab_size × hidden size), position embeddings, the MLP width and
 * (llama) the attention heads: ConfigError CONFIG_CHECKPOINT naming the config.json field. A tokenizer that can
 * produce ids the embedding lacks: TokenizerError TOKENIZER_VOCAB with both sizes. Tensors that are absent
 * are left to the per-tensor check (CheckpointError TENSOR_MISSING).
 */
export function checkConfigAgainstCheckpoint(
  dir: string,
  cfg: ModelConfig,
  tensors: TensorMap,
  tokenizer: { readonly vocabSize: number } | null,
): void {
  const path = join(dir, 'config.json');
  const names = FIELD_NAMES[cfg.modelType];
  const gpt2Prefix = tensors.has('transformer.wte.weight') || !tensors.has('wte.weight') ? 'transformer.' : '';
  const [layerPrefix, embedding, positions] =
    cfg.modelType === 'llama'
      ? ['model.layers.', 'model.embed_tokens.weight', undefined]
      : cfg.modelType === 'gpt2'
        ? [`${gpt2Prefix}h.`, `${gpt2Prefix}wte.weight`, `${gpt2Prefix}wpe.weight`]
        : ['transformer.h.', 'transformer.wte.weight', 'transformer.wpe.weight'];

  let layersPresent = 0;
  for (const name of tensors.names) {
    if (!name.startsWith(layerPrefix)) continue;
    const index = /^(\d+)\./.exec(name.slice(layerPrefix.length));
    if (index) layersPresent = Math.max(layersPresent, Number(index[1]) + 1);
  }
  if (layersPresent !== cfg.numLayers) {
    throw new ConfigError(
      'CONFIG_CHECKPOINT',
      `config field "${names.layers}" is ${cfg.numLayers} but the checkpoint in ${dir} holds ${layersPresent} layers ` +
        `(${layerPrefix}0 ..) in ${path}`,
    );
  }

  const d = cfg.hiddenSize;
  const l0 = `${layerPrefix}0.`;
  // [tensor, axis, config value, config field]
  const checks: [string, number, number, string][] = [
    [embedding, 0, cfg.vocabSize, 'vocab_size'],
    [embedding, 1, d, names.hidden],
  ];
  if (positions) checks.push([positions, 0, cfg.maxPositions, names.positions]);
  if (cfg.modelType === 'llama') {
    checks.push(
      [`${l0}mlp.up_proj.weight`, 0, cfg.intermediateSize, names.intermediate],
      [`${l0}self_attn.q_proj.weight`, 0, cfg.numHeads * cfg.headDim, 'num_attention_heads × head_dim'],
      [`${l0}self_attn.k_proj.weight`, 0, cfg.numKvHeads * cfg.headDim, 'num_key_value_heads × head_dim'],
    );
  } else {
    // GPT-2's Conv1D stores [in, out]; GPT-Neo's Linear [out, in].
    checks.push([`${l0}mlp.c_fc.weight`, cfg.modelType === 'gpt2' ? 1 : 0, cfg.intermediateSize, names.intermediate]);
  }
  for (const [tensor, axis, value, field] of checks) {
    if (!tensors.has(tensor)) continue;
    const shape = tensors.info(tensor).shape;
    if (shape[axis] !== value) {
      throw new ConfigError(
        'CONFIG_CHECKPOINT',
        `config field "${field}" is ${value} but tensor "${tensor}" of the checkpoint has shape [${shape.join(', ')}] in ${path}`,
      );
    }
  }

  if (tokenizer && tokenizer.vocabSize > cfg.vocabSize) {
    throw new TokenizerError(
      'TOKENIZER_VOCAB',
      `the tokenizer in ${dir} has ${tokenizer.vocabSize} ids (0..${tokenizer.vocabSize - 1}) but config.json vocab_size is ` +
        `${cfg.vocabSize}: ids ≥ ${cfg.vocabSize} have no embedding (${path})`,
    );
  }
}
