/**
 * Hugging Face `tokenizer.json` + `tokenizer_config.json` loading, encode/decode and chat
 * templates. Tokenization itself is delegated to `@huggingface/tokenizers` (pure JS port of the Rust library);
 * this module adds the transformers-level behaviour on top: config-driven special tokens, the Llama-family
 * `add_bos_token` / `add_eos_token` override, `clean_up_tokenization_spaces` resolution and typed errors.
 * Streaming decode (text deltas while tokens arrive) lives in incremental-decoder.ts.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import type { Template } from '@huggingface/jinja';
import { FILE_SIZE_LIMITS, TokenizerError, readJsonFile as readCheckedJson, readTextFile, formatValue } from '@mexit/core';
import {
  type ChatTemplateLimits,
  MAX_CHAT_TEMPLATES,
  checkChatTemplateSource,
  compileChatTemplate,
  renderChatTemplate,
  resolveChatTemplateLimits,
} from './chat-template.js';
import { TOKENIZER_JSON_LIMITS, checkTokenizerJson } from './tokenizer-json.js';

export { CHAT_TEMPLATE_LIMITS, MAX_CHAT_TEMPLATE_CHARS, type ChatTemplateLimits } from './chat-template.js';
export { TOKENIZER_JSON_LIMITS } from './tokenizer-json.js';

/** One chat turn. Extra fields (e.g. `name`, `tool_calls`) are passed through to the template untouched. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
  [key: string]: unknown;
}

export interface EncodeOptions {
  /** Add the tokenizer's special tokens (e.g. Llama's BOS). Default true, like HF `add_special_tokens`. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS/EOS/chat markers) from the text. Default false. */
  skipSpecialTokens?: boolean;
  /**
   * Apply transformers' `clean_up_tokenization_spaces` (" ." → ".", " n't" → "n't", ...). Default: the
   * tokenizer_config value, ignored for BPE models as transformers v5 does (it corrupts BPE output).
   */
  cleanUpTokenizationSpaces?: boolean;
}

export interface ChatTemplateOptions {
  /** Append the assistant header so the model answers next. Default true. */
  addGenerationPrompt?: boolean;
  /** Which named template to use when tokenizer_config holds a list of them. Default 'default'. */
  templateName?: string;
  /** Extra template variables (e.g. `tools`, `documents`, `date_string`). */
  context?: Record<string, unknown>;
  /** Raise (or lower) the rendering limits of CHAT_TEMPLATE_LIMITS for this call. */
  limits?: Partial<ChatTemplateLimits>;
}

/** Model types the underlying library implements. */
export const SUPPORTED_TOKENIZER_MODELS = ['BPE', 'Unigram', 'WordPiece'] as const;

/** transformers' tokenizer classes whose fast tokenizer rebuilds the post-processor from add_bos/eos_token. */
const BOS_EOS_FLAG_CLASSES = new Set([
  'LlamaTokenizer',
  'LlamaTokenizerFast',
  'CodeLlamaTokenizer',
  'CodeLlamaTokenizerFast',
  'GemmaTokenizer',
  'GemmaTokenizerFast',
]);

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const;
type SpecialTokenKey = (typeof SPECIAL_TOKEN_KEYS)[number];

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** tokenizer_config stores special tokens as plain strings or as serialized AddedToken objects. */
function tokenString(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (isObject(value) && typeof value.content === 'string') return value.content;
  return undefined;
}

/** transformers' `clean_up_tokenization` (tokenization_utils_base.py), same replacements in the same order. */
export function cleanUpTokenizationSpaces(text: string): string {
  return text
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Rust tokenizers' ByteFallback decoder: a run of <0xXX> tokens becomes its UTF-8 text when the run is valid,
 * otherwise one U+FFFD per byte token. (The JS port decodes leniently and strips a leading BOM, so it
 * disagrees with transformers on invalid runs, which untrained or tiny models emit often.)
 */
function byteFallbackChainLikeRust(tokens: string[]): string[] {
  const out: string[] = [];
  const bytes: number[] = [];
  const flushBytes = (): void => {
    if (bytes.length === 0) return;
    let text: string;
    try {
      text = strictUtf8.decode(Uint8Array.from(bytes));
    } catch {
      text = '\uFFFD'.repeat(bytes.length);
    }
    out.push(text);
    bytes.length = 0;
  };
  for (const token of tokens) {
    const match = BYTE_TOKEN.exec(token);
    if (match !== null) {
      bytes.push(parseInt(match[1], 16));
    } else {
      flushBytes();
      out.push(token);
    }
  }
  flushBytes();
  return out;
}

/** The parts of the library's decoder objects we touch (its Decoder types do not resolve under NodeNext). */
interface LibDecoder {
  config?: { type?: string };
  decoders?: LibDecoder[];
  decode_chain: (tokens: string[]) => string[];
}

/** The ByteFallback steps anywhere in the decoder tree (walked with a stack: the nesting comes from the file). */
function byteFallbackDecoders(root: LibDecoder | null | undefined): LibDecoder[] {
  const found: LibDecoder[] = [];
  const stack = root == null ? [] : [root];
  while (stack.length > 0) {
    const decoder = stack.pop()!;
    if (decoder.config?.type === 'ByteFallback') found.push(decoder);
    else if (decoder.config?.type === 'Sequence') for (const child of decoder.decoders ?? []) if (child != null) stack.push(child);
  }
  return found;
}

/** The library's Unigram model spreads each word's pieces into push(), which overflows the stack on a long word. */
function patchUnigramEncode(inner: Tokenizer): void {
  const model = (inner as unknown as { model: { tokenize?: (word: string) => string[]; encode: (words: string[]) => string[] } }).model;
  const tokenize = model.tokenize;
  if (typeof tokenize !== 'function') return;
  model.encode = (words) => {
    const pieces: string[] = [];
    for (const word of words) for (const piece of tokenize.call(model, word)) pieces.push(piece);
    return pieces;
  };
}

/**
 * Lookup of a token's id in the model's own vocabulary (BPE/WordPiece: object, Unigram: list of [piece, score],
 * indexed on first use so that many lookups stay linear).
 */
function modelVocabLookup(model: JsonObject): (token: string) => number | undefined {
  const vocab = model.vocab;
  if (Array.isArray(vocab)) {
    let index: Map<string, number> | undefined;
    return (token) => {
      if (index === undefined) {
        index = new Map();
        for (let i = vocab.length - 1; i >= 0; i--) index.set((vocab[i] as unknown[])[0] as string, i);
      }
      return index.get(token);
    };
  }
  return (token) =>
    isObject(vocab) && Object.hasOwn(vocab, token) && Number.isInteger(vocab[token]) ? (vocab[token] as number) : undefined;
}

/** A regular file under `maxBytes` (not a FIFO, a device or a directory) holding JSON, else TokenizerError. */
function readJsonFile(path: string, code: string, what: string, maxBytes: number = FILE_SIZE_LIMITS.tokenizerConfig): unknown {
  return readCheckedJson(path, { what, maxBytes, error: TokenizerError, missingCode: code, jsonCode: code });
}

/** Where a tokenizer came from, for error messages. */
interface Sources {
  tokenizerJson: string;
  tokenizerConfig: string;
}

/**
 * A Hugging Face tokenizer as transformers' fast tokenizer behaves: ids agree with Rust `tokenizers`, special
 * tokens follow tokenizer_config.json. Build with load(dir) or fromObjects(json, config).
 */
export class MexitTokenizer {
  /** Special-token strings from tokenizer_config (absent ones are undefined). */
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly unkToken?: string;
  readonly padToken?: string;
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  /** Number of ids the tokenizer can produce: 1 + the largest id in the vocabulary and added tokens. */
  readonly vocabSize: number;
  readonly hasChatTemplate: boolean;
  /** `model.type` from tokenizer.json. */
  readonly modelType: string;
  /** Resolved default of `clean_up_tokenization_spaces` for decode(). */
  readonly cleanUpByDefault: boolean;

  private readonly inner: Tokenizer;
  private readonly sources: Sources;
  private readonly chatTemplates: Map<string, string>;
  private readonly compiledTemplates = new Map<string, Template>();
  /** Llama-family override of the post-processor: [bos?] + ids + [eos?] when adding special tokens. */
  private readonly flagWrap: { bos: number | undefined; eos: number | undefined } | null;
  /** Ids dropped by skipSpecialTokens: added tokens flagged special (as in Rust tokenizers / transformers). */
  private readonly specialIds: Set<number>;
  /** Ids of <0xXX> tokens when the decoder has a ByteFallback step, else empty. */
  private readonly byteFallbackIds: Set<number>;

  private constructor(inner: Tokenizer, tokenizerJson: JsonObject, config: JsonObject, chatTemplate: unknown, sources: Sources) {
    this.inner = inner;
    this.sources = sources;
    this.modelType = String((tokenizerJson.model as JsonObject).type);

    const tokens: Partial<Record<SpecialTokenKey, string>> = {};
    for (const key of SPECIAL_TOKEN_KEYS) tokens[key] = tokenString(config[key]);
    this.bosToken = tokens.bos_token;
    this.eosToken = tokens.eos_token;
    this.unkToken = tokens.unk_token;
    this.padToken = tokens.pad_token;
    this.bosTokenId = this.bosToken === undefined ? undefined : this.tokenToId(this.bosToken);
    this.eosTokenId = this.eosToken === undefined ? undefined : this.tokenToId(this.eosToken);

    let maxId = -1;
    const vocab = inner.get_vocab(true);
    for (const id of vocab.values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    const cleanUp = config.clean_up_tokenization_spaces === true;
    const forceForBpe = config.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output === true;
    this.cleanUpByDefault = cleanUp && (this.modelType !== 'BPE' || forceForBpe);

    this.chatTemplates = MexitTokenizer.parseChatTemplates(chatTemplate, sources.tokenizerConfig);
    this.hasChatTemplate = this.chatTemplates.size > 0;

    this.specialIds = new Set<number>();
    for (const added of tokenizerJson.added_tokens as JsonObject[]) {
      if (added.special === true) this.specialIds.add(added.id as number);
    }
    this.byteFallbackIds = new Set<number>();
    if (byteFallbackDecoders(inner.decoder as unknown as LibDecoder | null).length > 0) {
      for (let byte = 0; byte < 256; byte++) {
        const hex = byte.toString(16).padStart(2, '0');
        for (const token of [`<0x${hex.toUpperCase()}>`, `<0x${hex}>`]) {
          const id = inner.token_to_id(token);
          if (id !== undefined) this.byteFallbackIds.add(id);
        }
      }
    }

    this.flagWrap = null;
    const tokenizerClass = typeof config.tokenizer_class === 'string' ? config.tokenizer_class : '';
    if (BOS_EOS_FLAG_CLASSES.has(tokenizerClass)) {
      // LlamaTokenizerFast.update_post_processor(): add_bos_token defaults to true, add_eos_token to false.
      const addBos = config.add_bos_token === undefined ? true : config.add_bos_token === true;
      const addEos = config.add_eos_token === true;
      if (addBos && this.bosTokenId === undefined) {
        throw new TokenizerError(
          'TOKENIZER_CONFIG',
          `${sources.tokenizerConfig}: add_bos_token is set but bos_token ${formatValue(this.bosToken, 100, 'js')} is not in the vocabulary`,
        );
      }
      if (addEos && this.eosTokenId === undefined) {
        throw new TokenizerError(
          'TOKENIZER_CONFIG',
          `${sources.tokenizerConfig}: add_eos_token is set but eos_token ${formatValue(this.eosToken, 100, 'js')} is not in the vocabulary`,
        );
      }
      this.flagWrap = { bos: addBos ? this.bosTokenId : undefined, eos: addEos ? this.eosTokenId : undefined };
    }
  }

  /**
   * Load `dir/tokenizer.json` plus the optional `tokenizer_config.json` and chat template files
   * (`chat_template.jinja` or `chat_template.json` override tokenizer_config's `chat_template`, as in
   * transformers). Returns null when the directory has no tokenizer.json; throws TokenizerError when malformed.
   */
  static load(dir: string): MexitTokenizer | null {
    const tokenizerPath = join(dir, 'tokenizer.json');
    if (!existsSync(tokenizerPath)) return null;
    const tokenizerJson = readJsonFile(tokenizerPath, 'TOKENIZER_JSON', 'tokenizer.json', FILE_SIZE_LIMITS.tokenizer);
    const configPath = join(dir, 'tokenizer_config.json');
    let config: unknown = {};
    if (existsSync(configPath)) config = readJsonFile(configPath, 'TOKENIZER_CONFIG', 'tokenizer_config.json');

    let chatTemplate: unknown = isObject(config) ? config.chat_template : undefined;
    let templateSource = configPath;
    const jinjaPath = join(dir, 'chat_template.jinja');
    const templateJsonPath = join(dir, 'chat_template.json');
    if (existsSync(jinjaPath)) {
      chatTemplate = readTextFile(jinjaPath, {
        what: 'chat_template.jinja',
        maxBytes: FILE_SIZE_LIMITS.tokenizerConfig,
        error: TokenizerError,
        missingCode: 'TOKENIZER_CONFIG',
      });
      templateSource = jinjaPath;
    } else if (existsSync(templateJsonPath)) {
      const parsed = readJsonFile(templateJsonPath, 'TOKENIZER_CONFIG', 'chat_template.json');
      if (!isObject(parsed) || !('chat_template' in parsed)) {
        throw new TokenizerError('TOKENIZER_CONFIG', `${templateJsonPath} must be an object with a "chat_template" field`);
      }
      chatTemplate = parsed.chat_template;
      templateSource = templateJsonPath;
    }
    return MexitTokenizer.fromObjects(tokenizerJson, config, {
      chatTemplate,
      tokenizerJsonName: tokenizerPath,
      tokenizerConfigName: templateSource === configPath ? configPath : `${configPath} / ${templateSource}`,
    });
  }

  /**
   * Build from already-parsed tokenizer.json and tokenizer_config.json contents. `chatTemplate` overrides
   * the config's `chat_template`; the names are only used in error messages.
   */
  static fromObjects(
    tokenizerJson: unknown,
    tokenizerConfig: unknown = {},
    options: { chatTemplate?: unknown; tokenizerJsonName?: string; tokenizerConfigName?: string } = {},
  ): MexitTokenizer {
    const sources: Sources = {
      tokenizerJson: options.tokenizerJsonName ?? 'tokenizer.json',
      tokenizerConfig: options.tokenizerConfigName ?? 'tokenizer_config.json',
    };
    if (!isObject(tokenizerJson)) {
      throw new TokenizerError(
        'TOKENIZER_JSON',
        `${sources.tokenizerJson} must hold a JSON object, found ${Array.isArray(tokenizerJson) ? 'an array' : typeof tokenizerJson}`,
      );
    }
    const model = tokenizerJson.model;
    if (!isObject(model)) {
      throw new TokenizerError('TOKENIZER_JSON', `${sources.tokenizerJson} has no "model" object`);
    }
    const modelType = model.type;
    if (typeof modelType !== 'string' || !(SUPPORTED_TOKENIZER_MODELS as readonly string[]).includes(modelType)) {
      throw new TokenizerError(
        'TOKENIZER_UNSUPPORTED',
        `${sources.tokenizerJson}: model.type ${formatValue(modelType, 100, 'js')} is not supported (supported: ${SUPPORTED_TOKENIZER_MODELS.join(', ')})`,
      );
    }
    if (!('vocab' in model)) {
      throw new TokenizerError('TOKENIZER_JSON', `${sources.tokenizerJson}: model has no "vocab"`);
    }
    if (modelType === 'BPE' && !Array.isArray(model.merges)) {
      throw new TokenizerError('TOKENIZER_JSON', `${sources.tokenizerJson}: BPE model has no "merges" list`);
    }
    const addedTokens = tokenizerJson.added_tokens ?? [];
    if (!Array.isArray(addedTokens) || !addedTokens.every((t) => isObject(t) && typeof t.content === 'string' && Number.isInteger(t.id))) {
      throw new TokenizerError('TOKENIZER_JSON', `${sources.tokenizerJson}: "added_tokens" must be a list of {id, content, ...}`);
    }
    if (!isObject(tokenizerConfig)) {
      throw new TokenizerError('TOKENIZER_CONFIG', `${sources.tokenizerConfig} must hold a JSON object`);
    }
    checkTokenizerJson(tokenizerJson, sources.tokenizerJson);
    const additional = tokenizerConfig.additional_special_tokens;
    if (Array.isArray(additional) && additional.length > TOKENIZER_JSON_LIMITS.maxAddedTokens) {
      throw new TokenizerError(
        'TOKENIZER_CONFIG',
        `${sources.tokenizerConfig}: additional_special_tokens has ${additional.length} entries, more than the limit of ${TOKENIZER_JSON_LIMITS.maxAddedTokens}`,
      );
    }

    // transformers registers the config's special tokens as special added tokens when tokenizer.json does not
    // list them; mirror that for those already in the model vocabulary (so they are matched whole when encoding
    // and dropped by skipSpecialTokens). Tokens missing from the vocabulary entirely are not invented.
    const augmentedAdded = [...(addedTokens as JsonObject[])];
    const listed = new Set(augmentedAdded.map((t) => t.content as string));
    const configSpecials = SPECIAL_TOKEN_KEYS.map((key) => tokenString(tokenizerConfig[key]));
    if (Array.isArray(additional)) for (const token of additional) configSpecials.push(tokenString(token));
    const modelVocabId = modelVocabLookup(model);
    for (const content of configSpecials) {
      if (content === undefined || listed.has(content)) continue;
      const id = modelVocabId(content);
      if (id === undefined) continue;
      augmentedAdded.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
      listed.add(content);
    }

    // The library requires these keys to be present (null allowed); Rust tokenizers treats absent as null.
    const normalizedJson: JsonObject = {
      ...tokenizerJson,
      normalizer: tokenizerJson.normalizer ?? null,
      pre_tokenizer: tokenizerJson.pre_tokenizer ?? null,
      post_processor: tokenizerJson.post_processor ?? null,
      decoder: tokenizerJson.decoder ?? null,
      added_tokens: augmentedAdded,
    };
    // The library reads token strings from the config; give it plain strings, not AddedToken objects. Special
    // tokens are skipped by this module (decode), so the library gets no additional_special_tokens list.
    const libConfig: JsonObject = { ...tokenizerConfig, additional_special_tokens: [] };
    for (const key of SPECIAL_TOKEN_KEYS) {
      const value = tokenString(tokenizerConfig[key]);
      if (value === undefined) delete libConfig[key];
      else libConfig[key] = value;
    }

    let inner: Tokenizer;
    try {
      inner = new Tokenizer(normalizedJson, libConfig);
    } catch (err) {
      const message = errorText(err);
      let code = 'TOKENIZER_JSON';
      if (/^Unknown /.test(message)) code = 'TOKENIZER_UNSUPPORTED';
      else if (/regular expression/i.test(message)) code = 'TOKENIZER_REGEX';
      throw new TokenizerError(code, `${sources.tokenizerJson}: cannot build tokenizer: ${message}`, { cause: err });
    }
    // Swap in the Rust-faithful ByteFallback behaviour anywhere in the decoder tree.
    const libDecoder = inner.decoder as unknown as LibDecoder | null;
    for (const decoder of byteFallbackDecoders(libDecoder)) decoder.decode_chain = byteFallbackChainLikeRust;
    if (modelType === 'Unigram') patchUnigramEncode(inner);
    const chatTemplate = options.chatTemplate !== undefined ? options.chatTemplate : tokenizerConfig.chat_template;
    return new MexitTokenizer(inner, normalizedJson, tokenizerConfig, chatTemplate, sources);
  }

  private static parseChatTemplates(value: unknown, source: string): Map<string, string> {
    const templates = new Map<string, string>();
    if (value === undefined || value === null) return templates;
    if (typeof value === 'string') {
      checkChatTemplateSource(value, `${source}: chat_template`);
      templates.set('default', value);
      return templates;
    }
    if (Array.isArray(value)) {
      if (value.length > MAX_CHAT_TEMPLATES) {
        throw new TokenizerError(
          'CHAT_TEMPLATE_LIMIT',
          `${source}: chat_template lists ${value.length} templates, more than the limit of ${MAX_CHAT_TEMPLATES}`,
        );
      }
      for (const entry of value) {
        if (!isObject(entry) || typeof entry.name !== 'string' || typeof entry.template !== 'string') {
          throw new TokenizerError('TOKENIZER_CONFIG', `${source}: chat_template list entries must be {name, template} strings`);
        }
        checkChatTemplateSource(entry.template, `${source}: chat_template ${formatValue(entry.name.slice(0, 100), 100, 'js')}`);
        templates.set(entry.name, entry.template);
      }
      return templates;
    }
    throw new TokenizerError(
      'TOKENIZER_CONFIG',
      `${source}: chat_template must be a string or a list of {name, template}, found ${typeof value}`,
    );
  }

  /**
   * Text → token ids. `addSpecialTokens` (default true) adds what the model expects around a sequence
   * (Llama: BOS; GPT-2: nothing). An empty string gives [] (HF would give [BOS] for Llama). For a rendered
   * chat prompt use encodeChat(), which passes addSpecialTokens false because the template writes BOS itself.
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') {
      throw new TokenizerError('TOKENIZER_INPUT', `encode() expects a string, got ${typeof text}`);
    }
    if (text.length === 0) return [];
    const addSpecialTokens = options.addSpecialTokens ?? true;
    const libAddsSpecials = addSpecialTokens && this.flagWrap === null;
    let ids: number[];
    try {
      ids = this.inner.encode(text, { add_special_tokens: libAddsSpecials }).ids;
    } catch (err) {
      throw new TokenizerError('TOKENIZER_ENCODE', `${this.sources.tokenizerJson}: cannot encode text: ${errorText(err)}`, { cause: err });
    }
    // A piece the vocabulary cannot spell comes back without an id when the model has no unk token.
    const missing = ids.findIndex((id) => !Number.isInteger(id));
    if (missing >= 0) {
      throw new TokenizerError(
        'TOKENIZER_ENCODE',
        `${this.sources.tokenizerJson}: token ${missing} of the text is not in the vocabulary and the model has no unk_token`,
      );
    }
    if (addSpecialTokens && this.flagWrap !== null) {
      if (this.flagWrap.bos !== undefined) ids.unshift(this.flagWrap.bos);
      if (this.flagWrap.eos !== undefined) ids.push(this.flagWrap.eos);
    }
    return ids;
  }

  /** Token ids → text. TokenizerError TOKEN_ID_RANGE for an id the tokenizer does not know. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const count = ids.length;
    if (count === 0) return '';
    const list = new Array<number>(count);
    for (let i = 0; i < count; i++) list[i] = this.checkId(ids[i], i);
    const kept = options.skipSpecialTokens === true ? list.filter((id) => !this.specialIds.has(id)) : list;
    if (kept.length === 0) return '';
    let text: string;
    try {
      text = this.inner.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    } catch (err) {
      throw new TokenizerError('TOKENIZER_DECODE', `${this.sources.tokenizerJson}: cannot decode ids: ${errorText(err)}`, { cause: err });
    }
    return (options.cleanUpTokenizationSpaces ?? this.cleanUpByDefault) ? cleanUpTokenizationSpaces(text) : text;
  }

  /** Throws TOKEN_ID_RANGE unless `id` names a token; returns it. */
  checkId(id: number, position = 0): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.inner.id_to_token(id) === undefined) {
      throw new TokenizerError(
        'TOKEN_ID_RANGE',
        `token id ${id} at position ${position} is not in the vocabulary of ${this.sources.tokenizerJson} (size ${this.vocabSize})`,
      );
    }
    return id;
  }

  /** True for the ids that decode(..., {skipSpecialTokens: true}) drops. */
  isSpecialTokenId(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** True for SentencePiece byte-fallback tokens (<0xXX>) of a tokenizer whose decoder reassembles them. */
  isByteFallbackTokenId(id: number): boolean {
    return this.byteFallbackIds.has(id);
  }

  /** Vocabulary lookup including added tokens; undefined when absent. */
  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  /** Token string for an id (raw vocabulary form, e.g. 'Ġworld' or '▁world'); undefined when absent. */
  idToToken(id: number): string | undefined {
    if (!Number.isInteger(id) || id < 0) return undefined;
    return this.inner.id_to_token(id);
  }

  /**
   * Render the chat template (tokenizer_config `chat_template`) with transformers' variables: messages,
   * add_generation_prompt, bos/eos/unk/pad_token. TokenizerError NO_CHAT_TEMPLATE when there is none,
   * CHAT_TEMPLATE when the template fails to parse or render (including its own raise_exception()),
   * CHAT_TEMPLATE_LIMIT when it outgrows a limit of CHAT_TEMPLATE_LIMITS (options.limits overrides them).
   */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    const name = options.templateName ?? 'default';
    const source = this.chatTemplates.get(name);
    if (source === undefined) {
      const names = [...this.chatTemplates.keys()];
      throw new TokenizerError(
        'NO_CHAT_TEMPLATE',
        names.length === 0
          ? `${this.sources.tokenizerConfig} has no chat_template; pass a plain prompt instead`
          : `${this.sources.tokenizerConfig} has no chat template named ${formatValue(name, 100, 'js')} (has: ${names.join(', ')})`,
      );
    }
    if (!Array.isArray(messages)) {
      throw new TokenizerError('CHAT_TEMPLATE', 'applyChatTemplate() expects an array of {role, content} messages');
    }
    const limits = resolveChatTemplateLimits(options.limits);
    const where = `chat template ${formatValue(name, 100, 'js')} from ${this.sources.tokenizerConfig}`;
    let template = this.compiledTemplates.get(name);
    if (template === undefined) {
      template = compileChatTemplate(source, where);
      this.compiledTemplates.set(name, template);
    }
    const variables: Record<string, unknown> = { ...options.context };
    const specials: [string, string | undefined][] = [
      ['bos_token', this.bosToken],
      ['eos_token', this.eosToken],
      ['unk_token', this.unkToken],
      ['pad_token', this.padToken],
    ];
    for (const [key, value] of specials) if (value !== undefined) variables[key] = value;
    variables.messages = messages;
    variables.add_generation_prompt = options.addGenerationPrompt ?? true;
    return renderChatTemplate(template, variables, where, limits);
  }

  /**
   * Render the chat template and encode it without adding special tokens: templates already write the BOS
   * token themselves, and HF's apply_chat_template(tokenize=True) likewise encodes with add_special_tokens=False.
   */
  encodeChat(messages: ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }
}
