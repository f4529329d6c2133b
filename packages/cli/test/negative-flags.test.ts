/**
 * Negative numbers in the usual form (`--seed -1`, `--temperature -1`) reach the option checks and give their
 * typed errors (exit 2), instead of parseArgs' "argument is ambiguous"; values that do not read as numbers
 * are left as they were.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runCli, type CliIo } from '../src/main.js';
import { parseGenerateArgs } from '../src/commands/generate.js';

const GPT2 = fileURLToPath(new URL('../../../fixtures/goldens/gpt2-tiny', import.meta.url));
const FLAGS = ['--model', GPT2, '--threads', '1', '--json'];
const BASE = ['generate', ...FLAGS];

async function errorCode(argv: string[]): Promise<{ status: number; code: string; message: string }> {
  let stdout = '';
  const io: CliIo = { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: () => true }, isTTY: false, env: {} };
  const status = await runCli(argv, io);
  const { error } = JSON.parse(stdout) as { error: { code: string; message: string } };
  return { status, ...error };
}

describe('negative flag values', () => {
  it('are parsed as values: --seed -1, --temperature -0.5, --top-p -.5, --prompt-ids -1,2', () => {
    const request = parseGenerateArgs([...FLAGS, '--prompt-ids', '-1,2', '--seed', '-1', '--temperature', '-0.5', '--top-p', '-.5']);
    if (request === 'help') throw new Error('unexpected help');
    expect(request.prompt).toEqual([-1, 2]);
    expect(request.options).toMatchObject({ seed: -1, temperature: -0.5, topP: -0.5 });
    // --flag=-1 keeps working; after `--` nothing is joined.
    const joined = parseGenerateArgs([...FLAGS, '--seed=-2', '--', '--prompt']);
    if (joined === 'help') throw new Error('unexpected help');
    expect(joined.options.seed).toBe(-2);
    expect(joined.prompt).toBe('--prompt');
  });

  it('reach the option checks: typed errors with exit 2', async () => {
    const cases: [string[], string, RegExp][] = [
      [['--prompt-ids', '1', '--seed', '-1'], 'INVALID_OPTION', /^seed must be a non-negative/],
      [['--prompt-ids', '1', '--do-sample', '--temperature', '-1'], 'INVALID_OPTION', /temperature/],
      [['--prompt-ids', '1', '--max-new-tokens', '-5'], 'INVALID_OPTION', /maxNewTokens/],
      [['--prompt-ids', '1', '--num-speculations', '-3'], 'INVALID_OPTION', /numSpeculations must be an integer in 1\.\.64/],
      [['--prompt-ids', '1', '--num-speculations', '1000000000'], 'INVALID_OPTION', /numSpeculations/],
      [['--prompt-ids', '-1'], 'TOKEN_ID_RANGE', /token id -1/],
      [['--prompt-ids', '1', '--top-k', '-.5'], 'INVALID_FLAG', /--top-k must be an integer/],
    ];
    for (const [argv, code, message] of cases) {
      const error = await errorCode([...BASE, ...argv]);
      expect([error.status, error.code], argv.join(' ')).toEqual([2, code]);
      expect(error.message).toMatch(message);
    }
  });

  it('a missing value is still a usage error, and a dash word is not taken for a number', async () => {
    expect((await errorCode([...BASE, '--prompt-ids', '1', '--max-new-tokens'])).code).toBe('INVALID_FLAG');
    expect((await errorCode([...BASE, '--prompt-ids', '1', '--stop', '-x'])).code).toBe('INVALID_FLAG');
  });
});
