/**
 * evaluate(): perplexity rows against NLL computed here from HF's own logits (fixtures/goldens), the ACD
 * row against IBM's contrast log-probs, the teacher-forced CALM rows against a selection made here from
 * the golden exit logits, windowing, the last-word task against the generator, the report, and bad input.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OptionsError, openSafetensors, type TensorMap } from '@mexit/core';
import { ModelRuntime } from '@mexit/model';
import { SelfSpeculativeGenerator, type GenerateOptions } from '@mexit/speculative';
import {
  cutText,
  DEFAULT_EVAL_DATA_PATH,
  evaluate,
  PASSAGE_CHARS,
  firstWord,
  lastWordExample,
  splitStories,
  type EvalReport,
  type PerplexityRow,
} from '@mexit/speculative/eval';

const fixtures = fileURLToPath(new URL('../../../fixtures/', import.meta.url));
const goldenDir = (name: string) => `${fixtures}goldens/${name}`;
const V = 512;
const L = 4;

const goldens = new Map<string, TensorMap>();
const runtimes = new Map<string, ModelRuntime>();
beforeAll(async () => {
  for (const name of ['gpt2-multiexit-tiny', 'llama2-tiny']) {
    goldens.set(name, openSafetensors(`${goldenDir(name)}/goldens.safetensors`));
    runtimes.set(name, await ModelRuntime.load(goldenDir(name), { threads: 1 }));
  }
});
afterAll(async () => {
  for (const r of runtimes.values()) await r.dispose();
});

const ids = (model: string, name: string) => Array.from(goldens.get(model)!.get(name).data as BigInt64Array, Number);

/** −log softmax(row)[target] in float64, written here independently of the engine. */
function nll(logits: Float32Array, row: number, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[row * V + i]);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[row * V + i] - max);
  return max + Math.log(sum) - logits[row * V + target];
}

function maxProb(logits: Float32Array, row: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[row * V + i]);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(logits[row * V + i] - max);
  return 1 / sum;
}

/** Summed NLL of every next token of `tokens` under per-row logits [tokens.length, V]. */
function sequenceNll(logits: Float32Array, tokens: number[]): number {
  let total = 0;
  for (let r = 0; r + 1 < tokens.length; r++) total += nll(logits, r, tokens[r + 1]);
  return total;
}

const byLabel = (report: EvalReport, label: string): PerplexityRow => {
  const row = report.perplexity.find((r) => r.label === label);
  if (!row) throw new Error(`no perplexity row "${label}" in ${report.perplexity.map((r) => r.label).join(', ')}`);
  return row;
};

const pplOnly = { lambadaExamples: 0, speedTokens: 0 } as const;

describe('perplexity against HF logits (goldens, prompt 2: 40 tokens)', () => {
  it('full model, every shared exit and every exit head of gpt2-multiexit-tiny', async () => {
    const model = 'gpt2-multiexit-tiny';
    const golden = goldens.get(model)!;
    const tokens = ids(model, 'input_ids_2');
    const report = await evaluate(runtimes.get(model)!, { ids: tokens, calmThresholds: [], acdPairs: [], ...pplOnly });
    const check = (row: PerplexityRow, logits: Float32Array) => {
      const expected = Math.exp(sequenceNll(logits, tokens) / (tokens.length - 1));
      expect(row.tokens).toBe(tokens.length - 1);
      expect(Math.abs(row.perplexity - expected) / expected).toBeLessThan(1e-4);
    };
    expect(report.perplexity[0].label).toBe('original');
    check(report.perplexity[0], golden.getF32('logits_2'));
    for (let l = 1; l < L; l++) check(byLabel(report, `exit ${l} (shared)`), golden.getF32(`exit_logits_2_${l}`));
    for (const l of [2, 4]) check(byLabel(report, `exit ${l} (layer-specific)`), golden.getF32(`exitheads_logits_2_${l}`));
    expect(report.perplexity).toHaveLength(L + 2);
    expect(report.lambada).toEqual([]);
    expect(report.speed).toEqual([]);
  });

  it('llama2-tiny full model and exits', async () => {
    const model = 'llama2-tiny';
    const golden = goldens.get(model)!;
    const tokens = ids(model, 'input_ids_2');
    const report = await evaluate(runtimes.get(model)!, { ids: tokens, calmThresholds: [], ...pplOnly });
    const expected = (logits: Float32Array) => Math.exp(sequenceNll(logits, tokens) / (tokens.length - 1));
    expect(byLabel(report, 'original').perplexity / expected(golden.getF32('logits_2')) - 1).toBeLessThan(1e-4);
    for (let l = 1; l < L; l++) {
      expect(Math.abs(byLabel(report, `exit ${l} (shared)`).perplexity / expected(golden.getF32(`exit_logits_2_${l}`)) - 1)).toBeLessThan(
        1e-4,
      );
    }
    // Default ACD pairs: original vs ⌊L/2⌋ and vs ⌊L/4⌋, shared heads.
    expect(report.perplexity.filter((r) => r.kind === 'acd').map((r) => r.label)).toEqual([
      'ACD original/2 (shared)',
      'ACD original/1 (shared)',
    ]);
  });

  it('the ACD row uses the contrast: the NLL of one more token equals −IBM acd_logprobs_2[token]', async () => {
    const model = 'gpt2-multiexit-tiny';
    const acdLogProbs = goldens.get(model)!.getF32('acd_logprobs_2');
    const tokens = ids(model, 'input_ids_2');
    const options = { acdPairs: [[4, 2]] as [number, number][], calmThresholds: [], ...pplOnly };
    const runtime = runtimes.get(model)!;
    const base = byLabel(await evaluate(runtime, { ids: tokens, ...options }), 'ACD 4/2 (layer-specific)');
    let best = 0;
    for (let x = 1; x < V; x++) if (acdLogProbs[x] > acdLogProbs[best]) best = x;
    let worst = 0;
    for (let x = 1; x < V; x++) if (acdLogProbs[x] < acdLogProbs[worst]) worst = x;
    for (const target of [best, worst, 17]) {
      const extended = byLabel(await evaluate(runtime, { ids: [...tokens, target], ...options }), 'ACD 4/2 (layer-specific)');
      expect(extended.tokens).toBe(base.tokens + 1);
      expect(extended.nll - base.nll).toBeCloseTo(-acdLogProbs[target], 4);
    }
  });

  it('teacher-forced CALM picks, per token, the first exit whose top probability reaches λ', async () => {
    const model = 'llama2-tiny';
    const golden = goldens.get(model)!;
    const tokens = ids(model, 'input_ids_2');
    const thresholds = [0.05, 0.1, 0.2, 1e-6, 1];
    const report = await evaluate(runtimes.get(model)!, { ids: tokens, calmThresholds: thresholds, acdPairs: [], ...pplOnly });
    const exitLogits = Array.from({ length: L }, (_, l) => golden.getF32(`exit_logits_2_${l + 1}`));
    for (const threshold of thresholds) {
      let total = 0;
      let layers = 0;
      for (let r = 0; r + 1 < tokens.length; r++) {
        let exit = L;
        for (let l = 1; l < L; l++) {
          if (maxProb(exitLogits[l - 1], r) >= threshold) {
            exit = l;
            break;
          }
        }
        total += nll(exitLogits[exit - 1], r, tokens[r + 1]);
        layers += exit;
      }
      const row = byLabel(report, `CALM λ=${threshold}`);
      expect(row.perplexity / Math.exp(total / (tokens.length - 1)) - 1).toBeCloseTo(0, 4);
      expect(row.meanExitLayer).toBeCloseTo(layers / (tokens.length - 1), 12);
    }
    expect(byLabel(report, 'CALM λ=0.000001').meanExitLayer).toBe(1);
    expect(byLabel(report, 'CALM λ=1').meanExitLayer).toBe(L);
  });

  it('non-overlapping windows of max_position_embeddings: a second window starts from scratch', async () => {
    const model = 'gpt2-multiexit-tiny'; // 128 positions
    const runtime = runtimes.get(model)!;
    const prompt2 = ids(model, 'input_ids_2');
    const first: number[] = [];
    for (let i = 0; first.length < 128; i++) first.push((i * 37 + 11) % V);
    const options = { calmThresholds: [], acdPairs: [], ...pplOnly };
    // Window 1 = `first` (its last row predicts prompt2[0]); window 2 = prompt2 alone.
    const both = await evaluate(runtime, { ids: [...first, ...prompt2], ...options });
    const windowOne = await evaluate(runtime, { ids: [...first, prompt2[0]], ...options });
    expect(both.json.perplexity.windows).toBe(2);
    expect(windowOne.json.perplexity.windows).toBe(1);
    const original = (r: EvalReport) => byLabel(r, 'original');
    expect(original(both).tokens).toBe(128 + 39);
    const secondWindow = sequenceNll(goldens.get(model)!.getF32('logits_2'), prompt2);
    expect(original(both).nll - original(windowOne).nll).toBeCloseTo(secondWindow, 3);
    // maxTokens cuts the sequence.
    const cut = await evaluate(runtime, { ids: [...first, ...prompt2], maxTokens: 20, ...options });
    expect(original(cut).tokens).toBe(19);
  });
});

describe('text helpers', () => {
  it('splits stories on <|endoftext|> lines', () => {
    expect(splitStories('One.\n<|endoftext|>\n Two two.\n\n<|endoftext|>\n\n<|endoftext|>\nThree')).toEqual(['One.', 'Two two.', 'Three']);
    expect(splitStories('a <|endoftext|> b')).toEqual(['a <|endoftext|> b']); // only whole lines separate
  });

  it('cuts a story before its last word and strips the word of punctuation and quotes', () => {
    expect(lastWordExample('The cat sat on the mat.')).toEqual({ context: 'The cat sat on the', target: 'mat' });
    expect(lastWordExample('He said "thank you, mom!"\n')).toEqual({ context: 'He said "thank you,', target: 'mom' });
    expect(lastWordExample("It was Tom's.")).toEqual({ context: 'It was', target: "Tom's" });
    expect(lastWordExample('She smiled and said "Yes!"')).toBeNull(); // the word follows a quote
    expect(lastWordExample('Hello')).toBeNull(); // no context
  });

  it('takes the first whole word of a continuation', () => {
    expect(firstWord(' dog, and')).toBe('dog');
    expect(firstWord('\n\nHello world')).toBe('Hello');
    expect(firstWord(" Tom's hat")).toBe("Tom's");
    expect(firstWord(' "Hi"')).toBe('');
    expect(firstWord('')).toBe('');
  });

  it('the bundled stories file exists', () => {
    expect(existsSync(DEFAULT_EVAL_DATA_PATH)).toBe(true);
    expect(splitStories(readFileSync(DEFAULT_EVAL_DATA_PATH, 'utf8')).length).toBeGreaterThan(100);
  });
});

describe('last-word task and speed (gpt2-multiexit-tiny with a 512-entry byte-level BPE tokenizer)', () => {
  let dir: string;
  let runtime: ModelRuntime;
  const STORIES = [
    'Once upon a time, there was a little cat. The cat liked to sit on the mat.',
    'Tom had a red ball. He threw the ball to his friend Sam.',
    'Lily saw a bird in the sky. She waved at the bird and said "hello!"',
    'The sun was hot. The kids went to the sea.',
  ];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mexit-eval-'));
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(goldenDir('gpt2-multiexit-tiny'), f), join(dir, f));
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 511, bos_token_id: 511 }));
    // GPT-2's 256 byte symbols, its first 255 merges (ids 256..510 as in GPT-2) and <|endoftext|> at 511.
    const gpt2 = JSON.parse(readFileSync(`${fixtures}tokenizers/gpt2/tokenizer.json`, 'utf8'));
    const vocab: Record<string, number> = {};
    for (const [token, id] of Object.entries(gpt2.model.vocab as Record<string, number>)) if (id < 511) vocab[token] = id;
    vocab['<|endoftext|>'] = 511;
    const eos = { id: 511, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({ ...gpt2, added_tokens: [eos], model: { ...gpt2.model, vocab, merges: gpt2.model.merges.slice(0, 255) } }),
    );
    writeFileSync(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ tokenizer_class: 'GPT2Tokenizer', bos_token: '<|endoftext|>', eos_token: '<|endoftext|>' }),
    );
    runtime = await ModelRuntime.load(dir, { threads: 1 });
  });
  afterAll(async () => {
    await runtime?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('scores each mode by the first word of its greedy continuation; reports speed and markdown', async () => {
    const text = STORIES.join('\n<|endoftext|>\n');
    const report = await evaluate(runtime, { text, lambadaExamples: 3, speedTokens: 8, calmThresholds: [0.05] });
    const tokenizer = runtime.tokenizer!;

    // Perplexity ran over the stories joined by EOS.
    const joined = STORIES.flatMap((s) => [...tokenizer.encode(s), 511]);
    expect(byLabel(report, 'original').tokens).toBe(joined.length - 1);
    const direct = await evaluate(runtime, { ids: joined, calmThresholds: [0.05], ...pplOnly });
    expect(byLabel(report, 'original').nll).toBeCloseTo(byLabel(direct, 'original').nll, 6);

    // Examples: the first three stories whose last word is not quoted.
    expect(report.lambadaExamples.map((e) => e.target)).toEqual(['mat', 'Sam', 'sea']);
    expect(report.lambadaExamples[0].context).toBe('Once upon a time, there was a little cat. The cat liked to sit on the');

    // Every prediction is the first word of the mode's own greedy continuation.
    const generator = new SelfSpeculativeGenerator(runtime);
    const labels = report.lambada.map((r) => r.label);
    expect(labels).toEqual([
      'original',
      'exit 1 (shared)',
      'exit 2 (shared)',
      'exit 3 (shared)',
      'exit 2 (layer-specific)',
      'exit 4 (layer-specific)',
      'ACD original/2 (layer-specific)',
      'ACD original/1 (shared)',
      'CALM λ=0.05',
      'self-spec E=2 d=4 (layer-specific)',
    ]);
    const modeOptions: Record<string, GenerateOptions> = {
      original: { mode: 'ar' },
      'exit 3 (shared)': { mode: 'early-exit', exitLayer: 3, exitHead: 'shared' },
      'exit 2 (layer-specific)': { mode: 'early-exit', exitLayer: 2, exitHead: 'layer-specific' },
      'ACD original/2 (layer-specific)': { mode: 'acd', contrastLayers: ['original', 2], exitHead: 'layer-specific' },
      'CALM λ=0.05': { mode: 'calm', calmThreshold: 0.05, exitHead: 'layer-specific' },
    };
    for (const [label, options] of Object.entries(modeOptions)) {
      let correct = 0;
      for (const ex of report.lambadaExamples) {
        const result = await generator.generate(ex.context, { ...options, maxNewTokens: 6 });
        // The spec's word: letters / digits, joined by inner apostrophes or hyphens.
        const word = /^[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/u.exec(result.text.trimStart())?.[0] ?? '';
        expect(ex.predictions[label]).toBe(word);
        if (word === ex.target) correct++;
      }
      const row = report.lambada.find((r) => r.label === label)!;
      expect([row.examples, row.correct, row.accuracy]).toEqual([3, correct, correct / 3]);
    }
    // Greedy self-speculation is lossless: the same predictions as the original head.
    const selfSpec = labels[labels.length - 1];
    for (const ex of report.lambadaExamples) expect(ex.predictions[selfSpec]).toBe(ex.predictions.original);

    // Speed: one row per decoded mode, positive throughput, the full decode run.
    expect(report.speed.map((r) => r.label)).toEqual(labels);
    for (const row of report.speed) {
      expect(row.newTokens).toBeGreaterThan(0);
      expect(Number.isFinite(row.tokensPerSecond) && row.tokensPerSecond > 0).toBe(true); // measured, not a speed claim
      expect(row.decodeTokens).toBe(8);
      expect(Number.isFinite(row.decodeTokensPerSecond) && row.decodeTokensPerSecond! > 0).toBe(true);
    }
    const calm = report.speed.find((r) => r.kind === 'calm')!;
    expect(calm.meanLayersPerToken).toBeGreaterThanOrEqual(2);
    expect(calm.meanLayersPerToken).toBeLessThanOrEqual(L);
    expect(report.speed.find((r) => r.kind === 'self-spec')!.acceptanceRate).toBeGreaterThanOrEqual(0);

    // Markdown: three tables naming every mode; JSON holds the same rows.
    const md = report.markdown;
    for (const heading of ['## Perplexity', '## LAMBADA-style last word', '## Speed (tokens/s)']) expect(md).toContain(heading);
    expect(md.match(/^\|---/gm)).toHaveLength(3);
    for (const label of labels) expect(md).toContain(`| ${label} |`);
    expect(md).toContain('teacher-forced');
    expect(md).toContain(`| original | original | ${byLabel(report, 'original').perplexity.toFixed(3)} |`);
    expect(report.json.lambada.rows).toBe(report.lambada);
    expect(JSON.parse(JSON.stringify(report.json)).perplexity.rows).toHaveLength(report.perplexity.length);
  });

  it('skips stories whose context does not fit the context window', async () => {
    const long = `${'The cat sat on a mat and '.repeat(40)}then it slept.`;
    const report = await evaluate(runtime, {
      text: `${long}\n<|endoftext|>\nThe dog ran home.`,
      lambadaExamples: 5,
      speedTokens: 0,
      calmThresholds: [],
      acdPairs: [],
    });
    expect(report.lambadaExamples.map((e) => e.target)).toEqual(['home']);
  });
});

describe('any text file (no <|endoftext|> lines, one line, CRLF, ≥ 1 MB)', () => {
  let dir: string;
  let runtime: ModelRuntime;
  // Prose without story separators: varied sentences so the BPE and the last-word task have real words.
  const words = ['cat', 'dog', 'sun', 'tree', 'ball', 'boat', 'bird', 'hat', 'cake', 'frog'];
  const sentence = (i: number) => `The ${words[i % 10]} saw a ${words[(i * 7 + 3) % 10]} near the ${words[(i * 3 + 1) % 10]}.`;
  const prose = (chars: number, join: (i: number) => string) => {
    const parts: string[] = [];
    let length = 0;
    for (let i = 0; length < chars; i++) {
      const piece = sentence(i) + join(i);
      parts.push(piece);
      length += piece.length;
    }
    return parts.join('');
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mexit-eval-text-'));
    runtime = await ModelRuntime.load(`${fixtures}models/tinystories-ee`, { threads: 1 });
  });
  afterAll(async () => {
    await runtime?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const small = { maxTokens: 300, lambadaExamples: 2, speedTokens: 0, calmThresholds: [], acdPairs: [] };
  for (const [name, text] of [
    ['LF lines, 1.1 MB', prose(1_100_000, (i) => (i % 5 === 4 ? '\n\n' : i % 2 ? '\n' : ' '))],
    ['one line, 1.1 MB', prose(1_100_000, () => ' ')],
    ['CRLF lines, 1.1 MB', prose(1_100_000, (i) => (i % 5 === 4 ? '\r\n\r\n' : '\r\n'))],
  ] as const) {
    it(`${name}: perplexity over the text's own tokens, last-word examples from its passages`, async () => {
      expect(text.length).toBeGreaterThanOrEqual(1_000_000);
      const path = join(dir, 'text.txt');
      writeFileSync(path, text);
      const report = await evaluate(runtime, { dataPath: path, ...small });
      // The first tokens are the text's own encoding (cut long before any piece boundary).
      const ids = runtime.tokenizer!.encode(text.slice(0, 5000)).slice(0, 300);
      const direct = await evaluate(runtime, { ids, ...small, lambadaExamples: 0 });
      expect(byLabel(report, 'original').tokens).toBe(299);
      expect(byLabel(report, 'original').nll).toBeCloseTo(byLabel(direct, 'original').nll, 6);
      expect(report.lambadaExamples).toHaveLength(2);
      for (const ex of report.lambadaExamples) {
        // A passage may end mid-sentence: the target is one of the text's words.
        expect([...words, 'The', 'saw', 'a', 'near', 'the']).toContain(ex.target);
        expect(ex.context.length).toBeLessThanOrEqual(PASSAGE_CHARS);
        expect(text.replace(/\r/g, '')).toContain(ex.context.replace(/\r/g, ''));
      }
    });
  }

  it('cutText: pieces within the limit that join back to the text, cut at line or word ends, never inside a surrogate pair', () => {
    const cases = [prose(50_000, (i) => (i % 3 ? '\r\n' : ' ')), prose(50_000, () => ' '), '😀'.repeat(20_000), 'x'.repeat(40_001)];
    for (const text of cases) {
      const pieces = [...cutText(text, 1000)];
      expect(pieces.join('')).toBe(text);
      for (const piece of pieces) {
        expect(piece.length).toBeGreaterThan(0);
        expect(piece.length).toBeLessThanOrEqual(1000);
        const last = piece.charCodeAt(piece.length - 1);
        expect(last >= 0xd800 && last < 0xdc00).toBe(false);
      }
      if (/\s/.test(text)) for (const piece of pieces.slice(0, -1)) expect(piece).toMatch(/\s$/);
    }
  });
});

describe('bad input', () => {
  it('throws OptionsError with a code', async () => {
    const runtime = runtimes.get('llama2-tiny')!; // no tokenizer
    await expect(evaluate(runtime, { text: 'One story.' })).rejects.toMatchObject({ code: 'NO_TOKENIZER' });
    await expect(evaluate(runtime, {})).rejects.toMatchObject({ code: 'NO_TOKENIZER' });
    const bad = async (options: Parameters<typeof evaluate>[1], code: string) => {
      const error = await evaluate(runtime, options).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OptionsError);
      expect((error as OptionsError).code).toBe(code);
    };
    await bad({ ids: [1, 2, 3], maxTokens: 1 }, 'INVALID_OPTION');
    await bad({ ids: [1] }, 'INVALID_OPTION');
    await bad({ ids: [1, 2, V] }, 'TOKEN_ID_RANGE');
    await bad({ ids: [1, 2, 3], acdPairs: [[2, 4]] }, 'INVALID_OPTION');
    await bad({ ids: [1, 2, 3], calmThresholds: [0] }, 'INVALID_OPTION');
    await bad({ ids: [1, 2, 3], lambadaExamples: -1 }, 'INVALID_OPTION');
    await bad({ ids: [1, 2, 3], speedTokens: 1.5 }, 'INVALID_OPTION');
    await bad({ dataPath: '/nonexistent/stories.txt' }, 'DATA_MISSING');
    // Not regular files: a device never ends, a directory is not text.
    await bad({ dataPath: '/dev/zero' }, 'FILE_NOT_REGULAR');
    await bad({ dataPath: tmpdir() }, 'FILE_NOT_REGULAR');
  });
});
