/**
 * config.json / generation_config.json → one normalised ModelConfig. Each architecture's field names
 * (n_embd vs hidden_size, ...) are read here and nowhere else.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '@mexit/core';

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

function readJson(path: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError('CONFIG_MISSING', `${what} not found: ${path}`, { cause: e });
  }
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

  int(name: string, fallback?: number): number {
    const v = this.raw[name];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" is missing in ${this.path}`);
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" must be a positive integer, got ${JSON.stringify(v)} in ${this.path}`);
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
      throw new ConfigError('CONFIG_FIELD', `config field "${name}" must be a positive number, got ${JSON.stringify(v)} in ${this.path}`);
    }
    return v;
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw[name];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new ConfigError('CONFIG_FIELD', `config field "${name}" must be a boolean in ${this.path}`);
    return v;
  }

  str(name: string, fallback: string): string {
    const v = this.raw[name];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'string') throw new ConfigError('CONFIG_FIELD', `config field "${name}" must be a string in ${this.path}`);
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
  const scaling = raw.rope_scaling as Record<string, unknown> | null | undefined;
  if (scaling === undefined || scaling === null) return inv;
  const type = scaling.rope_type ?? scaling.type;
  if (type === 'default') return inv;
  if (type !== 'llama3') f.fail(`unsupported rope_scaling type ${JSON.stringify(type)}; supported: none, "default", "llama3"`);
  const factor = Number(scaling.factor);
  const lowFreqFactor = Number(scaling.low_freq_factor);
  const highFreqFactor = Number(scaling.high_freq_factor);
  const orig = Number(scaling.original_max_position_embeddings);
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

function idList(v: unknown): number[] {
  if (typeof v === 'number' && Number.isInteger(v)) return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number' && Number.isInteger(x));
  return [];
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
      `model_type ${JSON.stringify(modelType)} is not supported (${path}); supported: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  }
  let cfg: Omit<ModelConfig, 'eosTokenIds' | 'raw'>;
  if (modelType === 'llama') {
    const hiddenSize = f.int('hidden_size');
    const numHeads = f.int('num_attention_heads');
    const numKvHeads = f.int('num_key_value_heads', numHeads);
    const headDim = f.int('head_dim', hiddenSize / numHeads);
    if (numHeads % numKvHeads !== 0) f.fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
    if (headDim % 2 !== 0) f.fail(`head_dim ${headDim} must be even for RoPE`);
    if (raw.head_dim === undefined && hiddenSize % numHeads !== 0)
      f.fail(`hidden_size ${hiddenSize} not divisible by num_attention_heads ${numHeads}`);
    const act = f.str('hidden_act', 'silu');
    if (act !== 'silu') f.fail(`hidden_act "${act}" is not supported for llama (expected "silu")`);
    if (f.bool('attention_bias', false) || f.bool('mlp_bias', false)) f.fail('attention_bias / mlp_bias = true is not supported');
    const theta = f.num('rope_theta', 10000);
    cfg = {
      modelType,
      numLayers: f.int('num_hidden_layers'),
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      intermediateSize: f.int('intermediate_size'),
      vocabSize: f.int('vocab_size'),
      maxPositions: f.int('max_position_embeddings'),
      normEps: f.num('rms_norm_eps', 1e-6),
      tieWordEmbeddings: f.bool('tie_word_embeddings', false),
      rope: { theta, invFreq: ropeInvFreq(raw, headDim, theta, f) },
    };
  } else if (modelType === 'gpt2') {
    const hiddenSize = f.int('n_embd');
    const numHeads = f.int('n_head');
    if (hiddenSize % numHeads !== 0) f.fail(`n_embd ${hiddenSize} not divisible by n_head ${numHeads}`);
    const act = f.str('activation_function', 'gelu_new');
    if (act !== 'gelu_new') f.fail(`activation_function "${act}" is not supported (expected "gelu_new")`);
    if (f.bool('scale_attn_by_inverse_layer_idx', false) || f.bool('reorder_and_upcast_attn', false)) {
      f.fail('scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported');
    }
    if (!f.bool('scale_attn_weights', true)) f.fail('scale_attn_weights = false is not supported');
    cfg = {
      modelType,
      numLayers: f.int('n_layer'),
      hiddenSize,
      numHeads,
      numKvHeads: numHeads,
      headDim: hiddenSize / numHeads,
      intermediateSize: f.int('n_inner', 4 * hiddenSize),
      vocabSize: f.int('vocab_size'),
      maxPositions: f.int('n_positions'),
      normEps: f.num('layer_norm_epsilon', 1e-5),
      tieWordEmbeddings: true,
    };
  } else {
    const hiddenSize = f.int('hidden_size');
    const numHeads = f.int('num_heads');
    const numLayers = f.int('num_layers');
    if (hiddenSize % numHeads !== 0) f.fail(`hidden_size ${hiddenSize} not divisible by num_heads ${numHeads}`);
    const act = f.str('activation_function', 'gelu_new');
    if (act !== 'gelu_new') f.fail(`activation_function "${act}" is not supported (expected "gelu_new")`);
    const attentionLayers = expandAttentionTypes(raw.attention_types, f);
    if (attentionLayers.length !== numLayers) {
      f.fail(`attention_types expand to ${attentionLayers.length} layers but num_layers is ${numLayers}`);
    }
    cfg = {
      modelType,
      numLayers,
      hiddenSize,
      numHeads,
      numKvHeads: numHeads,
      headDim: hiddenSize / numHeads,
      intermediateSize: f.int('intermediate_size', 4 * hiddenSize),
      vocabSize: f.int('vocab_size'),
      maxPositions: f.int('max_position_embeddings'),
      normEps: f.num('layer_norm_epsilon', 1e-5),
      tieWordEmbeddings: true,
      attentionLayers,
      windowSize: f.int('window_size', 256),
    };
  }

  // Multi-exit checkpoints (IBM layout) list the layers with their own `lm_head_<l>` (1-based). The exits
  // themselves are found from the tensors (exits.ts); an out-of-range entry still means a broken config.
  for (const l of idList(raw.lm_head_layer_indices)) {
    if (l < 1 || l > cfg.numLayers) f.fail(`lm_head_layer_indices entry ${l} is outside 1..${cfg.numLayers}`);
  }

  const genPath = join(dir, 'generation_config.json');
  const gen = existsSync(genPath) ? readJson(genPath, 'generation_config.json') : {};
  let eosTokenIds = idList(gen.eos_token_id);
  if (eosTokenIds.length === 0) eosTokenIds = idList(raw.eos_token_id);
  const bos = idList(gen.bos_token_id ?? raw.bos_token_id)[0];
  // Recorded self-speculative settings: absent keys fall back to the engine's defaults; a present but
  // invalid one is an error (a typo must not silently change how the model decodes).
  const recorded = (key: string, valid: (v: unknown) => boolean, expected: string): unknown => {
    const v = gen[key];
    if (v === undefined || v === null) return undefined;
    if (!valid(v))
      throw new ConfigError(
        'CONFIG_FIELD',
        `generation_config.json field "${key}" must be ${expected}, got ${JSON.stringify(v)} in ${genPath}`,
      );
    return v;
  };
  const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
  const recommendedExitLayer = recorded(
    'mexit_exit_layer',
    (v) => isInt(v) && v >= 1 && v < cfg.numLayers,
    `an integer in 1..${cfg.numLayers - 1}`,
  ) as number | undefined;
  const recommendedNumSpeculations = recorded('mexit_num_speculations', (v) => isInt(v) && v >= 1, 'a positive integer') as
    | number
    | undefined;
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

/** GPT-Neo's `[[["global","local"], 2]]` → ['global','local','global','local']. */
function expandAttentionTypes(v: unknown, f: FieldReader): ('global' | 'local')[] {
  if (!Array.isArray(v)) f.fail('gpt_neo config needs "attention_types"');
  const out: ('global' | 'local')[] = [];
  for (const entry of v) {
    if (!Array.isArray(entry) || entry.length !== 2 || !Array.isArray(entry[0]) || !Number.isInteger(entry[1])) {
      f.fail(`malformed attention_types entry ${JSON.stringify(entry)}`);
    }
    for (let r = 0; r < entry[1]; r++) {
      for (const t of entry[0]) {
        if (t !== 'global' && t !== 'local') f.fail(`attention type ${JSON.stringify(t)} is not "global" or "local"`);
        out.push(t);
      }
    }
  }
  return out;
}
