/**
 * `mexit chat` in-process: runCli with a PassThrough stdin and collecting stdout/stderr, against the bundled
 * model. Every answer is checked exactly against the generator's own greedy answer for the same messages (the
 * history, the system message, a reset, trimmed context); commands, EOF, /exit, typed errors mid-session,
 * colours and flag errors. Ctrl-C needs a real process: chat-process.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { MexitError } from '@mexit/core';
import type { ChatMessage } from '@mexit/model';
import { MexitGenerator, type GenerateOptions } from '@mexit/speculative';
import { modelDir } from '@mexit/tinystories-ee';
import type { CliIo } from '../src/main.js';
import { cli, type Run } from './support/run-cli.js';
import { GREEN, RESET } from '../src/render.js';

const MAX = 12;
const OPTIONS: GenerateOptions = { maxNewTokens: MAX };
const ARGS = ['--model', modelDir, '--max-new-tokens', String(MAX)];
let generator: MexitGenerator;
const tmpDirs: string[] = [];

beforeAll(async () => {
  generator = await MexitGenerator.fromPretrained(modelDir);
});

afterAll(async () => {
  await generator.dispose();
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

/** `mexit chat ARGV...` with `lines` on stdin, then EOF. */
function chat(argv: string[], lines: string[], extra: Partial<CliIo> = {}): Promise<Run> {
  const stdin = new PassThrough();
  stdin.end(
    lines
      .map(
        (l) => `${l}
`,
      )
      .join(''),
  );
  return cli(['chat', ...argv], { stdin, ...extra });
}

/** How the transcript shows one answer: its text, ended by a newline. */
const shown = (text: string) => (text.endsWith('\n') ? text : `${text}\n`);
const user = (content: string): ChatMessage => ({ role: 'user', content });
const assistant = (content: string): ChatMessage => ({ role: 'assistant', content });
const answer = async (messages: ChatMessage[], options = OPTIONS) => (await generator.generate(messages, options)).text;

describe('mexit chat: conversation', () => {
  it.each([
    ['worker', []],
    ['--in-process', ['--in-process']],
  ])('answers each line with the whole history as the prompt; EOF ends with 0 (%s)', async (_, flags) => {
    const first = await answer([user('Once upon a time')]);
    const second = await answer([user('Once upon a time'), assistant(first), user('The dog')]);
    // The history must matter, or this test could not tell a REPL with history from one without.
    expect(second).not.toBe(await answer([user('The dog')]));
    const run = await chat([...ARGS, ...flags], ['Once upon a time', 'The dog']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(shown(first) + shown(second));
    expect(run.stderr).toBe('');
  });

  it('puts --system first, and keeps it through /reset', async () => {
    const system = 'Sue was sad.';
    const withSystem = await answer([{ role: 'system', content: system }, user('One day')]);
    expect(withSystem).not.toBe(await answer([user('One day')]));
    const run = await chat([...ARGS, '--system', system], ['One day', '/reset', 'One day']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(shown(withSystem) + shown(withSystem));
  });

  it('/reset: the next answer is a fresh single-turn answer', async () => {
    const first = await answer([user('Once upon a time')]);
    const fresh = await answer([user('The dog')]);
    const run = await chat(ARGS, ['Once upon a time', '/reset', 'The dog']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(shown(first) + shown(fresh));
    expect(run.stderr).toContain('conversation reset');
  });

  it('/exit ends the session with 0; later lines are not answered', async () => {
    const first = await answer([user('Once upon a time')]);
    const run = await chat(ARGS, ['Once upon a time', '/exit', 'The dog']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(shown(first));
  });

  it('ignores empty lines; /help lists the commands; an unknown /command is a message, not a crash', async () => {
    const first = await answer([user('Once upon a time')]);
    const run = await chat(ARGS, ['', '   ', '/bogus', '/help', 'Once upon a time']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('mexit: unknown command /bogus; /help lists the commands\n');
    for (const command of ['/reset', '/exit', '/help']) expect(run.stdout).toContain(command);
    expect(run.stdout.endsWith(shown(first))).toBe(true);
    expect(run.stdout.startsWith('/reset')).toBe(true); // nothing answered before /help
  });

  it('a line starting with // is sent with one / removed', async () => {
    const run = await chat(ARGS, ['//Once upon a time']);
    expect(run.stdout).toBe(shown(await answer([user('/Once upon a time')])));
  });

  it('a message too long on its own: error line, the session continues (and the message is not kept)', async () => {
    const first = await answer([user('Once upon a time')]);
    const run = await chat(ARGS, ['word '.repeat(600), 'Once upon a time']);
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/^error \[CONTEXT_OVERFLOW\]: the message does not fit the context even without the earlier turns: /);
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(run.stdout).toBe(shown(first));
  });

  it('drops the oldest exchanges (never the system message) when the history outgrows the context, and says so once', async () => {
    const system = 'A story.';
    const long = (word: string) => `${word} ${'and then the dog ran to the park '.repeat(20)}`;
    const lines = [long('One'), long('Two'), long('Three'), long('Four')];
    // The reference: each turn on the history that fits, dropping whole exchanges oldest first.
    let turns: ChatMessage[] = [];
    let transcript = '';
    let drops = 0;
    for (const line of lines) {
      let candidate = [...turns, user(line)];
      for (;;) {
        try {
          const text = await answer([{ role: 'system', content: system }, ...candidate]);
          turns = [...candidate, assistant(text)];
          transcript += shown(text);
          break;
        } catch (error) {
          expect((error as MexitError).code).toBe('CONTEXT_OVERFLOW');
          candidate = candidate.slice(2);
          drops++;
        }
      }
    }
    expect(drops).toBeGreaterThanOrEqual(2); // the trimming path ran, on more than one turn
    const run = await chat([...ARGS, '--system', system], lines);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(transcript);
    expect(run.stderr).toBe('mexit: the conversation outgrew the context (512 positions): its oldest exchanges are dropped to fit\n');
  });

  it('--stats prints one stats line per answer on stderr', async () => {
    const run = await chat([...ARGS, '--stats'], ['Once upon a time', 'The dog']);
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines)
      expect(line).toMatch(new RegExp(`^${MAX} tokens · .* tok/s · mode self-spec .*% accepted.* · stop: max-new-tokens$`));
  });
});

describe('mexit chat: generation flags', () => {
  it("passes generate's flags on: mode, stop strings, sampling with a seed", async () => {
    const options: GenerateOptions = { maxNewTokens: MAX, mode: 'ar', stop: ['girl'], doSample: true, temperature: 0.9, seed: 7 };
    const expected = await generator.generate([user('Once upon a time')], options);
    expect(expected.stats.stopReason).toBe('stop-string'); // so a --stop that was not passed on would show
    const flags = ['--mode', 'ar', '--stop', 'girl', '--do-sample', '--temperature', '0.9', '--seed', '7', '--stats'];
    const run = await chat([...ARGS, ...flags], ['Once upon a time']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(shown(expected.text));
    expect(run.stderr).toMatch(new RegExp(`^${expected.stats.newTokens} tokens? · .* · mode ar · stop: ${expected.stats.stopReason}\\n$`));
  });
});

describe('mexit chat: colour', () => {
  it('colours draft-accepted tokens green on a terminal, and nothing with NO_COLOR', async () => {
    const first = await answer([user('Once upon a time')]);
    const coloured = await chat(ARGS, ['Once upon a time'], { isTTY: true });
    expect(coloured.stdout).toContain(GREEN);
    expect(coloured.stdout.replaceAll(GREEN, '').replaceAll(RESET, '')).toBe(shown(first));
    const plain = await chat(ARGS, ['Once upon a time'], { isTTY: true, env: { NO_COLOR: '1' } });
    expect(plain.stdout).toBe(shown(first));
  });
});

describe('mexit chat: bad input', () => {
  it('--help shows the usage with the commands', async () => {
    const run = await chat(['--help'], []);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Usage: mexit chat /);
    expect(run.stdout).toContain('/reset');
    expect(run.stdout).toContain('--system TEXT');
    expect(run.stdout).not.toContain('--prompt-ids');
  });

  it('refuses flags that are not chat flags, and contradictions, naming mexit chat', async () => {
    const prompt = await chat(['--prompt', 'hi'], []);
    expect(prompt.code).toBe(2);
    expect(prompt.stderr).toMatch(/^error \[UNKNOWN_FLAG\]: mexit chat: /);
    expect(prompt.stderr).toContain('run `mexit chat --help` for usage');
    const contradiction = await chat(['--mode', 'ar', '--drafter', 'prompt-lookup'], []);
    expect(contradiction.code).toBe(2);
    expect(contradiction.stderr).toMatch(/^error \[CONTRADICTION\]: --drafter only applies to --mode self-spec, not ar\n/);
    expect(contradiction.stderr).toContain('run `mexit chat --help` for usage');
    const value = await chat(['--max-new-tokens', 'many'], []);
    expect(value.code).toBe(2);
    expect(value.stderr).toMatch(/^error \[INVALID_FLAG\]: --max-new-tokens must be an integer/);
  });

  it('checks generation options against the model before reading a line', async () => {
    const run = await chat(['--exit-layer', '99'], ['Once upon a time']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error \[[A-Z_]+\]: .*exit/i);
    expect(run.stdout).toBe('');
  });

  it('a model without a chat template: NO_CHAT_TEMPLATE before the REPL starts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-chat-'));
    tmpDirs.push(dir);
    for (const f of ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json'])
      copyFileSync(join(modelDir, f), join(dir, f));
    const config = JSON.parse(readFileSync(join(modelDir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    delete config.chat_template;
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    const run = await chat(['--model', dir], ['Once upon a time']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^error \[NO_CHAT_TEMPLATE\]: .* has no chat template/);
    expect(run.stdout).toBe('');
  });
});
