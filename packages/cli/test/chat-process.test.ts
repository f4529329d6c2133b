/**
 * `mexit chat` as a real process (node packages/cli/dist/main.js) with piped stdin: Ctrl-C (SIGINT) stops
 * the answer being streamed and the session goes on; Ctrl-C at the prompt and /exit end it with 0. EOS is
 * switched off (--eos-ids '') so an answer can only end at --max-new-tokens or by the signal: an answer that
 * finished before the signal prints its stats line and no marker, and fails the test instead of passing it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const MAX = 400;
const children: ChildProcessWithoutNullStreams[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** A chat process, its output collected, with a way to wait until the output says something. */
function startChat(args: string[]) {
  const child = spawn(process.execPath, ['packages/cli/dist/main.js', 'chat', ...args], {
    cwd: root,
    env: { ...process.env, NO_COLOR: '1' },
  });
  children.push(child);
  const out = { stdout: '', stderr: '' };
  const waiters: (() => void)[] = [];
  const poke = () => {
    for (const w of waiters.splice(0)) w();
  };
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    out.stdout += s;
    poke();
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    out.stderr += s;
    poke();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      poke();
      resolve(code);
    }),
  );
  /** Resolves once `ready(out)` holds; rejects if the process exits first (the test timeout catches a hang). */
  const until = (ready: (o: typeof out) => boolean) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (ready(out)) resolve();
        else if (child.exitCode !== null || child.signalCode !== null)
          reject(
            new Error(
              `chat exited (${child.exitCode ?? child.signalCode}) first; stdout ${JSON.stringify(out.stdout)}, stderr ${JSON.stringify(out.stderr)}`,
            ),
          );
        else waiters.push(check);
      };
      check();
    });
  return { child, out, until, exited };
}

describe('mexit chat process', () => {
  // In a worker the main loop is free; in-process the signal is handled between stage calls.
  it.each([
    ['worker', []],
    ['--in-process', ['--in-process']],
  ])('Ctrl-C cuts the answer and keeps it out of the history; the next line gets a full answer; /exit → 0 (%s)', async (_, flags) => {
    const chat = startChat(['--max-new-tokens', String(MAX), '--eos-ids', '', '--stats', ...flags]);
    chat.child.stdin.write('Once upon a time\n');
    await chat.until((o) => o.stdout.length > 0); // the answer has started
    chat.child.kill('SIGINT');
    await chat.until((o) => o.stdout.includes('[interrupted]\n'));
    const partial = chat.out.stdout.slice(0, chat.out.stdout.indexOf('[interrupted]\n')).replace(/\n$/, '');
    expect(chat.out.stdout.endsWith('[interrupted]\n')).toBe(true);
    expect(chat.out.stderr).toBe(''); // no stats line: the answer did not complete
    expect(chat.child.exitCode).toBe(null);

    // The same line again: with the interrupted exchange not kept, this is the fresh answer in full.
    const before = chat.out.stdout.length;
    chat.child.stdin.write('Once upon a time\n');
    await chat.until((o) => o.stderr.includes('stop: max-new-tokens'));
    expect(chat.out.stderr).toMatch(new RegExp(`^${MAX} tokens · .* · stop: max-new-tokens\\n$`));
    const full = chat.out.stdout.slice(before).replace(/\n$/, '');
    expect(full.startsWith(partial)).toBe(true);
    expect(partial.length).toBeLessThan(full.length);

    chat.child.stdin.write('/exit\n'); // stdin stays open: /exit alone must end the process
    expect(await chat.exited).toBe(0);
  });

  it('Ctrl-C at the prompt ends the session with 0', async () => {
    const chat = startChat(['--max-new-tokens', '4']);
    chat.child.stdin.write('/help\n');
    await chat.until((o) => o.stdout.includes('/exit'));
    chat.child.kill('SIGINT');
    expect(await chat.exited).toBe(0);
    expect(chat.out.stderr).toBe('');
  });

  it('printf ... | mexit chat: one answer per line, exit 0 at EOF', async () => {
    const chat = startChat(['--max-new-tokens', '8']);
    chat.child.stdin.end('Once upon a time\nThe dog\n');
    expect(await chat.exited).toBe(0);
    expect(chat.out.stdout.split('\n').filter(Boolean)).toHaveLength(2);
    expect(chat.out.stderr).toBe('');
  });
});
