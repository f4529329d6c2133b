/**
 * The CLI in-process (runCli with collecting streams) against the HF goldens in fixtures/goldens:
 * logits of the full model, of a shared exit and of an IBM exit head, ACD log-probs, greedy generations
 * (HF's and IBM's ids), and the error contract (codes, exit status, exactly one JSON document).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSafetensors, type TensorMap } from '@mexit/core';
import { cli, type Run } from './support/run-cli.js';
import { parseGenerateArgs, GENERATE_FLAGS } from '../src/commands/generate.js';
import { LOGITS_FLAGS } from '../src/commands/logits.js';
import { GREEN } from '../src/render.js';

const goldensDir = fileURLToPath(new URL('../../../fixtures/goldens/', import.meta.url));
const GPT2 = `${goldensDir}gpt2-tiny`;
const MULTI = `${goldensDir}gpt2-multiexit-tiny`;
const goldens = {
  gpt2: openSafetensors(join(GPT2, 'goldens.safetensors')),
  multi: openSafetensors(join(MULTI, 'goldens.safetensors')),
};
const tmpDirs: string[] = [];

afterAll(() => {
  goldens.gpt2.close();
  goldens.multi.close();
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

/** Parses stdout as exactly one JSON document on one line. */
function oneJson(run: Run): Record<string, unknown> {
  expect(run.stdout.endsWith('\n')).toBe(true);
  expect(run.stdout.trimEnd().split('\n')).toHaveLength(1);
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

function ids(golden: TensorMap, name: string): number[] {
  return Array.from(golden.get(name).data as BigInt64Array, Number);
}

/** Last row of a [L, V] golden. */
function lastRow(golden: TensorMap, name: string): Float32Array {
  const t = golden.get(name);
  const [rows, vocab] = t.shape;
  return (t.data as Float32Array).subarray((rows - 1) * vocab, rows * vocab);
}

function maxAbsDiff(actual: number[], expected: Float32Array): number {
  expect(actual).toHaveLength(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  return Number.isNaN(worst) ? Infinity : worst;
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

const prompt0 = ids(goldens.gpt2, 'input_ids_0').join(',');
const T1 = ['--threads', '1'];

describe('mexit logits', () => {
  it('full-model logits of the last position equal HF logits_0', async () => {
    const run = await cli(['logits', '--model', GPT2, '--prompt-ids', prompt0, '--json', ...T1]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const { logits } = oneJson(run) as { logits: number[] };
    expect(maxAbsDiff(logits, lastRow(goldens.gpt2, 'logits_0'))).toBeLessThan(1e-4);
  });

  it('--exit-layer 2 equals the shared exit exit_logits_0_2', async () => {
    const run = await cli(['logits', '--model', GPT2, '--prompt-ids', prompt0, '--exit-layer', '2', '--json', ...T1]);
    expect(run.code).toBe(0);
    const { logits } = oneJson(run) as { logits: number[] };
    const expected = lastRow(goldens.gpt2, 'exit_logits_0_2');
    expect(maxAbsDiff(logits, expected)).toBeLessThan(1e-4);
    // The exit really differs from the full model (so the flag is not ignored).
    expect(maxAbsDiff(logits, lastRow(goldens.gpt2, 'logits_0'))).toBeGreaterThan(1e-2);
  });

  it("--exit-head 2 reads IBM's lm_head_2 (exitheads_logits_0_2); 'original' is the full model", async () => {
    const p = ids(goldens.multi, 'input_ids_0').join(',');
    const head = await cli(['logits', '--model', MULTI, '--prompt-ids', p, '--exit-head', '2', '--json', ...T1]);
    expect(head.code).toBe(0);
    const headLogits = (oneJson(head) as { logits: number[] }).logits;
    expect(maxAbsDiff(headLogits, lastRow(goldens.multi, 'exitheads_logits_0_2'))).toBeLessThan(1e-4);
    expect(maxAbsDiff(headLogits, lastRow(goldens.multi, 'exit_logits_0_2'))).toBeGreaterThan(1e-2);

    const original = await cli(['logits', '--model', MULTI, '--prompt-ids', p, '--exit-head', 'original', '--json', ...T1]);
    expect(original.code).toBe(0);
    expect(maxAbsDiff((oneJson(original) as { logits: number[] }).logits, lastRow(goldens.multi, 'logits_0'))).toBeLessThan(1e-4);
  });

  it('--contrast 4,2 prints IBM ACD log-probs (acd_logprobs_0)', async () => {
    const p = ids(goldens.multi, 'input_ids_0').join(',');
    const run = await cli(['logits', '--model', MULTI, '--prompt-ids', p, '--contrast', '4,2', '--json', ...T1]);
    expect(run.code).toBe(0);
    const doc = oneJson(run) as { logprobs: number[] };
    expect(Object.keys(doc)).toEqual(['logprobs']);
    expect(maxAbsDiff(doc.logprobs, goldens.multi.getF32('acd_logprobs_0'))).toBeLessThan(1e-4);
  });

  it('without --json prints the top-10 table, the argmax first', async () => {
    const run = await cli(['logits', '--model', GPT2, '--prompt-ids', prompt0, ...T1]);
    expect(run.code).toBe(0);
    const rows = run.stdout.split('\n').filter((l) => /^\s+\d+\s+\d+\s+-?\d/.test(l));
    expect(rows).toHaveLength(10);
    const [rank, id] = rows[0].trim().split(/\s+/);
    expect(rank).toBe('1');
    expect(Number(id)).toBe(argmax(lastRow(goldens.gpt2, 'logits_0')));
  });

  it('rejects an exit head the checkpoint lacks and an out-of-vocabulary id (exit 2)', async () => {
    const noHead = await cli(['logits', '--model', GPT2, '--prompt-ids', '1,2', '--exit-head', '2', ...T1]);
    expect(noHead.code).toBe(2);
    expect(noHead.stderr).toMatch(/^error \[EXIT_NOT_IN_CHECKPOINT\]: /);
    const badId = await cli(['logits', '--model', GPT2, '--prompt-ids', '1,512', '--json', ...T1]);
    expect(badId.code).toBe(2);
    expect((oneJson(badId) as { error: { code: string } }).error.code).toBe('TOKEN_ID_RANGE');
  });
});

describe('mexit generate', () => {
  const greedy0 = ids(goldens.gpt2, 'greedy_0');

  it('ar and self-spec give identical ids, equal to HF greedy_0, with valid stats', async () => {
    const common = ['generate', '--model', GPT2, '--prompt-ids', prompt0, '--max-new-tokens', String(greedy0.length), '--json', ...T1];
    const ar = await cli([...common, '--mode', 'ar']);
    const spec = await cli([...common, '--mode', 'self-spec', '--exit-layer', '2', '--num-speculations', '3']);
    expect(ar.code).toBe(0);
    expect(spec.code).toBe(0);
    expect(ar.stderr).toBe('');
    const a = oneJson(ar) as { ids: number[]; text: string; stats: Record<string, unknown> };
    const s = oneJson(spec) as { ids: number[]; text: string; stats: Record<string, number | string | string[]> };
    expect(Object.keys(s).sort()).toEqual(['ids', 'stats', 'text']);
    expect(a.ids).toEqual(greedy0);
    expect(s.ids).toEqual(greedy0);
    expect(s.text).toBe(''); // no tokenizer
    expect(s.stats.mode).toBe('self-spec');
    expect(s.stats.exitLayer).toBe(2);
    expect(s.stats.numSpeculations).toBe(3);
    expect(s.stats.newTokens).toBe(greedy0.length);
    expect(s.stats.promptTokens).toBe(prompt0.split(',').length);
    expect(s.stats.tokenSources).toHaveLength(greedy0.length);
    const rate = s.stats.acceptanceRate as number;
    expect(rate).toBeGreaterThanOrEqual(0);
    expect(rate).toBeLessThanOrEqual(1);
    expect(s.stats.accepted).toBe((s.stats.tokenSources as string[]).filter((x) => x === 'draft').length);
    expect(s.stats.stopReason).toBe('max-new-tokens');
    expect(a.stats.mode).toBe('ar');
  });

  it("acd mode reproduces IBM's contrast-mode greedy ids (acd_greedy_0)", async () => {
    const expected = ids(goldens.multi, 'acd_greedy_0');
    const p = ids(goldens.multi, 'input_ids_0').join(',');
    const run = await cli([
      'generate',
      '--model',
      MULTI,
      '--prompt-ids',
      p,
      '--mode',
      'acd',
      '--contrast',
      '4,2',
      '--max-new-tokens',
      String(expected.length),
      '--json',
      ...T1,
    ]);
    expect(run.code).toBe(0);
    expect((oneJson(run) as { ids: number[] }).ids).toEqual(expected);
  });

  it('early-exit --exit-head 2 reads lm_head_2: first token = argmax of exitheads_logits_0_2', async () => {
    const p = ids(goldens.multi, 'input_ids_0').join(',');
    const run = await cli([
      'generate',
      '--model',
      MULTI,
      '--prompt-ids',
      p,
      '--mode',
      'early-exit',
      '--exit-head',
      '2',
      '--max-new-tokens',
      '1',
      '--json',
      ...T1,
    ]);
    expect(run.code).toBe(0);
    const doc = oneJson(run) as { ids: number[]; stats: { exitLayer: number } };
    expect(doc.stats.exitLayer).toBe(2);
    expect(doc.ids).toEqual([argmax(lastRow(goldens.multi, 'exitheads_logits_0_2'))]);
    // The shared exit at layer 2 picks differently on this prompt, so the head choice is visible.
    expect(argmax(lastRow(goldens.multi, 'exit_logits_0_2'))).not.toBe(doc.ids[0]);
  });

  it('maps flags onto GenerateOptions', () => {
    const req = parseGenerateArgs([
      '--model',
      GPT2,
      '--prompt-ids',
      '1,2',
      '--exit-head',
      '2',
      '--num-speculations',
      '5',
      '--max-new-tokens',
      '7',
      '--do-sample',
      '--temperature',
      '0.7',
      '--top-k',
      '40',
      '--top-p',
      '0.9',
      '--min-p',
      '0.05',
      '--repetition-penalty',
      '1.2',
      '--seed',
      '9',
      '--stop',
      'a',
      '--stop',
      'b',
      '--eos-ids',
      '3,4',
      '--draft-threshold',
      '0.3',
      '--adaptive-draft',
      '--no-bonus-token',
      '--draft-quantization',
      'int8',
    ]);
    if (req === 'help') throw new Error('unexpected help');
    expect(req.prompt).toEqual([1, 2]);
    expect(req.options).toEqual({
      exitLayer: 2,
      exitHead: 'layer-specific',
      numSpeculations: 5,
      maxNewTokens: 7,
      doSample: true,
      temperature: 0.7,
      topK: 40,
      topP: 0.9,
      minP: 0.05,
      repetitionPenalty: 1.2,
      seed: 9,
      stop: ['a', 'b'],
      eosTokenIds: [3, 4],
      draftConfidenceThreshold: 0.3,
      adaptiveDraftLength: true,
      bonusToken: false,
      draftQuantization: 'int8',
    });
    const calm = parseGenerateArgs([
      '--model',
      GPT2,
      'Once',
      'upon',
      '--chat',
      '--system',
      'be brief',
      '--mode',
      'calm',
      '--calm-threshold',
      '0.8',
      '--calm-confidence',
      'top-gap',
      '--calm-min-exit-layer',
      '2',
      '--calm-exit-interval',
      '1',
      '--exit-head',
      'shared',
    ]);
    if (calm === 'help') throw new Error('unexpected help');
    expect(calm.prompt).toEqual([
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'Once upon' },
    ]);
    expect(calm.options).toEqual({
      mode: 'calm',
      exitHead: 'shared',
      calmThreshold: 0.8,
      calmConfidence: 'top-gap',
      calmMinExitLayer: 2,
      calmExitInterval: 1,
    });
  });

  it('streams ids (no tokenizer) with the stats line on stderr; colours drafts only on a TTY without NO_COLOR', async () => {
    const args = [
      'generate',
      '--model',
      GPT2,
      '--prompt-ids',
      prompt0,
      '--max-new-tokens',
      '12',
      '--exit-layer',
      '3',
      '--num-speculations',
      '2',
      ...T1,
    ];
    const plain = await cli(args);
    expect(plain.code).toBe(0);
    expect(plain.stdout.trim().split(/\s+/).map(Number)).toEqual(greedy0.slice(0, 12));
    expect(plain.stdout).not.toContain('\x1b[');
    expect(plain.stderr).toMatch(
      /^12 tokens · [\d.]+ tok\/s · mode self-spec E=3 d=2 · \d+% accepted · layer bound [\d.]+× · stop: max-new-tokens\n$/,
    );
    const int8 = await cli([...args, '--draft-quantization', 'int8']);
    expect(int8.stdout).toEqual(plain.stdout);
    expect(int8.stderr).toMatch(/ · mode self-spec E=3 d=2 int8 drafts · /);

    const json = oneJson(await cli([...args, '--json'])) as { stats: { tokenSources: string[] } };
    const drafted = json.stats.tokenSources.filter((s) => s === 'draft').length;
    const tty = await cli(args, { isTTY: true });
    expect(tty.stdout.split(GREEN).length - 1).toBe(drafted);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: strips the ANSI colour codes the CLI writes
    expect(tty.stdout.replace(/\x1b\[\d+m/g, '')).toBe(plain.stdout);
    const noColour = await cli(args, { isTTY: true, env: { NO_COLOR: '1' } });
    expect(noColour.stdout).toBe(plain.stdout);
  });
});

describe('errors and usage', () => {
  it('a text prompt on a model without a tokenizer → exit 2, NO_TOKENIZER', async () => {
    for (const cmd of ['generate', 'logits']) {
      const run = await cli([cmd, '--model', GPT2, '--prompt', 'hello', ...T1]);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^error \[NO_TOKENIZER\]: /);
      expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
    const json = await cli(['generate', '--model', GPT2, 'hello', '--json', ...T1]);
    expect(json.code).toBe(2);
    expect((oneJson(json) as { error: { code: string } }).error.code).toBe('NO_TOKENIZER');
  });

  it('an unknown model_type → exit 2, UNSUPPORTED_MODEL_TYPE listing the supported types', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-cli-'));
    tmpDirs.push(dir);
    const config = JSON.parse(readFileSync(join(GPT2, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'bert' }));
    copyFileSync(join(GPT2, 'model.safetensors'), join(dir, 'model.safetensors'));
    const run = await cli(['logits', '--model', dir, '--prompt-ids', '1,2', '--json', ...T1]);
    expect(run.code).toBe(2);
    const { error } = oneJson(run) as { error: { code: string; message: string } };
    expect(error.code).toBe('UNSUPPORTED_MODEL_TYPE');
    for (const t of ['llama', 'gpt2', 'gpt_neo']) expect(error.message).toContain(t);
    expect(run.stderr).toContain('error [UNSUPPORTED_MODEL_TYPE]: ');
  });

  it('bad flag values and unknown flags → exit 2 usage errors', async () => {
    const cases: [string[], string][] = [
      [['generate', '--model', GPT2, '--prompt-ids', '1', '--top-k', 'abc'], 'INVALID_FLAG'],
      [['generate', '--model', GPT2, '--prompt-ids', '1', '--temperature', '1e'], 'INVALID_FLAG'],
      [['generate', '--model', GPT2, '--prompt-ids', '1,x'], 'INVALID_FLAG'],
      [['generate', '--model', GPT2, '--prompt-ids', '1', '--mode', 'fast'], 'INVALID_FLAG'],
      [['generate', '--model', GPT2, '--prompt-ids', '1', '--frobnicate'], 'UNKNOWN_FLAG'],
      [['generate', '--model', GPT2, '--prompt-ids', '1', '--max-new-tokens'], 'INVALID_FLAG'],
      [['generate', '--model', GPT2, '--prompt-ids', '1', '--exit-layer', '2', '--exit-head', '3'], 'CONTRADICTION'],
      [['generate', '--model', GPT2, '--prompt-ids', '1', '--calm-threshold', '0.5'], 'CONTRADICTION'],
      [['generate', '--model', GPT2], 'MISSING_PROMPT'],
      [['logits', '--model', GPT2, '--prompt-ids', '1', '--contrast', '4'], 'INVALID_FLAG'],
      [['logits', '--model', GPT2, 'stray'], 'UNEXPECTED_ARGUMENT'],
      [['frobnicate'], 'UNKNOWN_COMMAND'],
    ];
    for (const [argv, code] of cases) {
      const run = await cli(argv);
      expect(run.code, argv.join(' ')).toBe(2);
      expect(run.stderr, argv.join(' ')).toMatch(new RegExp(`^error \\[${code}\\]: .*\\nrun \`mexit .*--help\` for usage\\n$`));
      expect(run.stdout).toBe('');
      const json = await cli([...argv, '--json']);
      expect(json.code).toBe(2);
      expect((oneJson(json) as { error: { code: string } }).error.code).toBe(code);
    }
  });

  it('option ranges are checked against the model (exit 2, no stack)', async () => {
    const run = await cli(['generate', '--model', GPT2, '--prompt-ids', '1', '--exit-layer', '4', ...T1]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error \[INVALID_OPTION\]: exitLayer/);
    const topP = await cli(['generate', '--model', GPT2, '--prompt-ids', '1', '--top-p', '0', ...T1]);
    expect(topP.code).toBe(2);
    expect(topP.stderr).toMatch(/^error \[INVALID_OPTION\]: .*topP/);
  });

  it('an unexpected failure → exit 1 with message and stack', async () => {
    const run = await cli(['logits', '--model', GPT2, '--prompt-ids', '1', '--json', ...T1], {
      stdout: {
        write: () => {
          throw new Error('disk on fire');
        },
      },
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error: disk on fire\nError: disk on fire\n\s+at /);
  });

  it('--help lists every option with its default', async () => {
    const root = await cli(['--help']);
    expect(root.code).toBe(0);
    for (const c of ['generate', 'logits', 'eval']) expect(root.stdout).toContain(c);
    for (const [cmd, flags] of [
      ['generate', GENERATE_FLAGS],
      ['logits', LOGITS_FLAGS],
    ] as const) {
      const run = await cli([cmd, '--help']);
      expect(run.code).toBe(0);
      for (const f of flags) {
        expect(run.stdout).toContain(`--${f.name}`);
        if (f.default) expect(run.stdout).toContain(`(default: ${f.default})`);
      }
    }
    const generate = (await cli(['generate', '--help'])).stdout;
    expect(generate).toMatch(/--max-new-tokens N\s+.*\(default: 64\)/);
    expect(generate).toMatch(/--mode self-spec\|ar\|early-exit\|acd\|calm\s+.*\(default: self-spec\)/);
    const evalHelp = await cli(['eval', '--help']);
    expect(evalHelp.stdout).toContain('--data FILE');
    expect((await cli([])).code).toBe(2);
  });

  it('eval prints one JSON report on the bundled model (perplexity per exit, last-word task, speed)', async () => {
    const run = await cli(['eval', '--max-tokens', '200', '--lambada-examples', '2', '--json', ...T1]);
    expect(run.code, run.stderr).toBe(0);
    type Rows = { rows: Record<string, unknown>[] };
    const report = oneJson(run) as { perplexity: Rows & { tokens: number }; lambada: Rows & { examples: number }; speed: Rows };
    expect(report.perplexity.tokens).toBe(200);
    expect(report.perplexity.rows.length).toBeGreaterThan(12); // full model + every exit + ACD + CALM rows
    for (const row of report.perplexity.rows) expect(Number.isFinite(row.perplexity) && (row.perplexity as number) > 1).toBe(true);
    expect(report.lambada.examples).toBe(2);
    expect(report.speed.rows.length).toBeGreaterThan(0);
  });

  it('eval --data takes any text file: 1 MB on one line without <|endoftext|> separators, progress on stderr', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-cli-eval-'));
    tmpDirs.push(dir);
    const path = join(dir, 'one-line.txt');
    const sentences = ['The cat sat on the mat.', 'A dog ran to the park.', 'Sam had a big red ball.'];
    let text = '';
    for (let i = 0; text.length < 1_050_000; i++) text += `${sentences[i % 3]} `;
    writeFileSync(path, text);
    const run = await cli(['eval', '--data', path, '--max-tokens', '256', '--lambada-examples', '2', '--json', ...T1]);
    expect(run.code, run.stderr).toBe(0);
    const report = oneJson(run) as { perplexity: { tokens: number }; lambada: { examples: number } };
    expect(report.perplexity.tokens).toBe(256);
    expect(report.lambada.examples).toBe(2);
    expect(run.stderr).toMatch(/^eval: perplexity over 256 tokens\n/);
  });

  it('generate --help groups its flags under headings', async () => {
    const help = (await cli(['generate', '--help'])).stdout;
    const headings = [...help.matchAll(/^(\S[^\n]*):$/gm)].map((m) => m[1]);
    expect(headings).toEqual([
      'Prompt',
      'Sampling (greedy unless --do-sample)',
      'Self-speculative decoding (--mode self-spec) and exits (early-exit)',
      'Auto-contrastive decoding (--mode acd)',
      'CALM per-token exit (--mode calm)',
      'Model, runtime and output',
    ]);
    expect(help.indexOf('--top-p')).toBeGreaterThan(help.indexOf('Sampling'));
    expect(help.indexOf('--top-p')).toBeLessThan(help.indexOf('Self-speculative'));
  });

  it('generate --drafter prompt-lookup gives the ar ids and names the drafter in the stats line', async () => {
    const p = '1,5,9,242,1,5,9,242,1,5';
    const base = ['generate', '--model', GPT2, '--prompt-ids', p, '--max-new-tokens', '10', '--eos-ids', '', ...T1];
    const ar = oneJson(await cli([...base, '--mode', 'ar', '--json'])) as { ids: number[] };
    const lookup = await cli([...base, '--drafter', 'prompt-lookup', '--json']);
    expect(lookup.code, lookup.stderr).toBe(0);
    const result = oneJson(lookup) as { ids: number[]; stats: { drafter: string } };
    expect(result.ids).toEqual(ar.ids);
    expect(result.stats.drafter).toBe('prompt-lookup');
    const plain = await cli([...base, '--drafter', 'prompt-lookup']);
    expect(plain.stderr).toMatch(/mode self-spec d=\d+ prompt-lookup drafter/);
    const wrong = await cli([...base, '--mode', 'ar', '--drafter', 'prompt-lookup']);
    expect([wrong.code, wrong.stderr]).toEqual([
      2,
      expect.stringMatching(/^error \[CONTRADICTION\]: --drafter only applies to --mode self-spec/),
    ]);
  });
});
