/**
 * Progress on long work: MexitGenerator.fromPretrained's onProgress over a load and a first generation, and the
 * CLI's stderr: the in-place status line on a terminal (absent with --json and off a terminal), and the
 * --verbose / MEXIT_LOG=debug lines. Runs the CLI in-process on the gpt2-tiny golden.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProgressInfo } from '@mexit/model';
import { MexitGenerator } from '@mexit/speculative';
import type { CliIo } from '../src/main.js';
import { cli } from './support/run-cli.js';

const GPT2 = fileURLToPath(new URL('../../../fixtures/goldens/gpt2-tiny', import.meta.url));
/** eval tokenizes its data: the bundled model has a tokenizer. */
const BUNDLED = fileURLToPath(new URL('../../../fixtures/models/tinystories-ee', import.meta.url));
/** gpt2-tiny has 4 layers: ar builds the one full stage. */
const FULL = 'layers[0,4)+shared@4';
const ERASE = '\r\x1b[K';
const GENERATE = ['generate', '--model', GPT2, '--prompt-ids', '1,2,3', '--mode', 'ar', '--max-new-tokens', '3', '--threads', '1'];
const tmpDirs: string[] = [];

afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

describe('onProgress through MexitGenerator.fromPretrained', () => {
  it('receives the load (files, ready), then the first generation builds its stage: initiate → progress → done', async () => {
    const events: ProgressInfo[] = [];
    const generator = await MexitGenerator.fromPretrained(GPT2, { threads: 1, onProgress: (info) => events.push(info) });
    try {
      await generator.generate([1, 2, 3], { mode: 'ar', maxNewTokens: 2 });
      await generator.generate([1, 2, 3], { mode: 'ar', maxNewTokens: 2 }); // the stage is cached: no more events
    } finally {
      await generator.dispose();
    }
    expect(events.map((e) => `${e.status} ${e.file ?? e.stage ?? ''}`)).toEqual([
      'initiate config.json',
      'done config.json',
      'initiate model.safetensors',
      'done model.safetensors',
      'ready ',
      `initiate ${FULL}`,
      `progress ${FULL}`,
      `done ${FULL}`,
    ]);
    for (const e of events) expect(e.name).toBe(GPT2);
  });
});

describe('mexit progress on stderr', () => {
  it('a terminal gets a status line rewritten in place, erased before the stats line', async () => {
    const run = await cli(GENERATE, { stderrIsTTY: true });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain(`${ERASE}loading model: config.json…`);
    expect(run.stderr).toContain(`${ERASE}loading model: model.safetensors…`);
    expect(run.stderr).toContain(`${ERASE}building stage 1: ${FULL}…`);
    expect(run.stderr).toContain(`${ERASE}building stage 1: ${FULL}, creating its session…`);
    // Every status line is erased: after the last erase comes only the stats line, on a line of its own.
    const tail = run.stderr.slice(run.stderr.lastIndexOf(ERASE) + ERASE.length);
    expect(tail).toMatch(/^3 tokens · .* tok\/s · mode ar · stop: max-new-tokens\n$/);
    expect(run.stdout).toMatch(/^\d+ \d+ \d+\n$/); // the ids (no tokenizer), untouched by the status line
  });

  it('is silent with --json, and off a terminal', async () => {
    const json = await cli([...GENERATE, '--json'], { stderrIsTTY: true });
    expect(json.code, json.stderr).toBe(0);
    expect(json.stderr).toBe('');
    expect(JSON.parse(json.stdout)).toMatchObject({ ids: expect.any(Array) });

    const pipe = await cli(GENERATE, { stderrIsTTY: false });
    expect(pipe.code, pipe.stderr).toBe(0);
    expect(pipe.stderr).toMatch(/^3 tokens · [^\n]*\n$/); // the stats line alone
  });

  it('--verbose prints the load, each stage build and the session count, one line each, off a terminal too', async () => {
    const run = await cli([...GENERATE, '--verbose'], { stderrIsTTY: false });
    expect(run.code, run.stderr).toBe(0);
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(new RegExp(`^mexit: loaded ${GPT2} in \\d+ ms \\(config\\.json \\d+ ms, model\\.safetensors \\d+ ms\\)$`));
    // The build line comes as the stage is built, before the generation's stats line.
    expect(lines[1]).toMatch(/^mexit: built stage layers\[0,4\)\+shared@4 in \d+ ms \(graph \d+ ms, session \d+ ms\)$/);
    expect(lines[2]).toMatch(/^3 tokens · /);
    expect(lines[3]).toMatch(/^mexit: 1 session, \d+\.\d MiB of weights: layers\[0,4\)\+shared@4$/);
  });

  it('MEXIT_LOG=debug is --verbose; other MEXIT_LOG values are not', async () => {
    const debug = await cli(GENERATE, { env: { MEXIT_LOG: 'debug' } });
    expect(debug.stderr).toContain(`mexit: built stage ${FULL} in `);
    expect(debug.stderr).toContain('mexit: 1 session, ');
    const info = await cli(GENERATE, { env: { MEXIT_LOG: 'info' } });
    expect(info.stderr).not.toContain('mexit:');
  });

  it('with --json and --verbose the debug lines still go to stderr and stdout stays one document', async () => {
    const run = await cli([...GENERATE, '--json', '--verbose'], { stderrIsTTY: true });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toContain('\r');
    expect(run.stderr).toContain(`mexit: built stage ${FULL} in `);
    expect(run.stdout.trimEnd().split('\n')).toHaveLength(1);
  });

  it('eval on a terminal: its own progress lines start on a fresh line, the status line erased first', async () => {
    const run = await cli(
      ['eval', '--model', BUNDLED, '--data', fileURLToPath(new URL('../../../fixtures/data/valid-small.txt', import.meta.url))].concat([
        '--max-tokens',
        '32',
        '--lambada-examples',
        '0',
        '--threads',
        '1',
      ]),
      { stderrIsTTY: true },
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain(`${ERASE}building stage 1: `);
    // An eval line follows either the start of stderr, a newline, or an erase — never a status text.
    for (const m of run.stderr.matchAll(/eval: /g)) {
      const before = run.stderr.slice(0, m.index);
      expect(before === '' || before.endsWith('\n') || before.endsWith(ERASE), JSON.stringify(before.slice(-80))).toBe(true);
    }
    const tail = run.stderr.slice(run.stderr.lastIndexOf(ERASE) + ERASE.length);
    expect(tail === '' || tail.endsWith('\n')).toBe(true);
  });

  it('a load that fails erases the status line before the error is printed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-progress-'));
    tmpDirs.push(dir);
    writeFileSync(join(dir, 'config.json'), '{"model_type": "gpt2", "n_layer": "four"}');
    const run = await cli(['generate', '--model', dir, '--prompt-ids', '1'], { stderrIsTTY: true });
    expect(run.code).toBe(2);
    expect(run.stderr.startsWith(`${ERASE}loading model: config.json…${ERASE}error [`)).toBe(true);
  });
});

describe('hub downloads on the status line', () => {
  it('a download event shows the file and its share; the line is erased afterwards', async () => {
    const { ProgressReporter } = await import('../src/progress.js');
    let stderr = '';
    const io: CliIo = { stdout: { write: () => true }, stderr: { write: (s: string) => (stderr += s) }, isTTY: true, env: {} };
    const reporter = new ProgressReporter(io, true, false);
    const total = 3 * 2 ** 20;
    reporter.onProgress({ status: 'download', name: 'org/tiny', file: 'model.safetensors', loaded: total / 2, total });
    expect(stderr).toContain('downloading org/tiny: model.safetensors 50% of 3.0 MiB…');
    reporter.onProgress({ status: 'ready', name: 'org/tiny', elapsedMs: 1 });
    expect(stderr.endsWith(ERASE)).toBe(true);
  });
});
