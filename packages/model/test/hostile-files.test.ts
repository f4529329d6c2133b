/**
 * Model-directory files that are not regular files, or are absurdly large (issue 14): config.json,
 * generation_config.json, tokenizer.json, tokenizer_config.json and the chat template files must each be
 * refused with a typed error before anything is read (a FIFO must not hang, /dev/zero must not be read
 * until memory runs out, a sparse 20 GiB file must not be allocated).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, FILE_SIZE_LIMITS, type MexitError, TokenizerError } from '@mexit/core';
import { MexitTokenizer, ModelRuntime, loadModelConfig } from '@mexit/model';

const GOLDEN = fileURLToPath(new URL('../../../fixtures/goldens/gpt2-tiny', import.meta.url));

let tmp: string;
let fifo = '';
let fifoUnblocker: ChildProcess | undefined;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-hostile-files-'));
  try {
    execFileSync('mkfifo', [path.join(tmp, 'fifo')]);
    fifo = path.join(tmp, 'fifo');
    // should a reader ever block on the FIFO, this writer releases it (EOF) after 5 s instead of hanging the suite
    fifoUnblocker = spawn('sh', ['-c', `sleep 5; while :; do : > '${fifo}'; done`], { stdio: 'ignore' });
  } catch {
    fifo = '';
  }
});
afterAll(() => {
  fifoUnblocker?.kill();
  fs.rmSync(tmp, { recursive: true, force: true });
});

type Make = (file: string) => void;
const BAD_FILES: [string, Make, string][] = [
  ['a directory', (f) => fs.mkdirSync(f), 'FILE_NOT_REGULAR'],
  ['/dev/zero', (f) => fs.symlinkSync('/dev/zero', f), 'FILE_NOT_REGULAR'],
  ['/dev/null', (f) => fs.symlinkSync('/dev/null', f), 'FILE_NOT_REGULAR'],
  ['a FIFO', (f) => fs.symlinkSync(fifo, f), 'FILE_NOT_REGULAR'],
  [
    'a sparse 20 GiB file',
    (f) => {
      fs.writeFileSync(f, '');
      fs.truncateSync(f, 20 * 2 ** 30);
    },
    'FILE_TOO_LARGE',
  ],
];

let dirs = 0;
/** A copy of the golden model's config files plus `extra` files, with `name` replaced by a bad file. */
function modelDir(name: string, make: Make, extra: Record<string, string> = {}): string {
  const dir = path.join(tmp, `m${dirs++}`);
  fs.mkdirSync(dir);
  for (const file of ['config.json', 'generation_config.json']) fs.copyFileSync(path.join(GOLDEN, file), path.join(dir, file));
  for (const [file, text] of Object.entries(extra)) fs.writeFileSync(path.join(dir, file), text);
  fs.rmSync(path.join(dir, name), { force: true });
  make(path.join(dir, name));
  return dir;
}

/** The error `fn` throws, which must be a MexitError of `type`, within a second. */
function typedError(fn: () => unknown, type: typeof ConfigError | typeof TokenizerError): MexitError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(type);
  return caught as MexitError;
}

describe('config and tokenizer files must be regular files of sane size', () => {
  for (const [what, make, code] of BAD_FILES) {
    it(`${what} → ${code}`, () => {
      if (what === 'a FIFO' && !fifo) return;
      for (const name of ['config.json', 'generation_config.json']) {
        const err = typedError(() => loadModelConfig(modelDir(name, make)), ConfigError);
        expect(err.code).toBe(code);
        expect(err.message).toContain(name);
      }
      const tokenizer = '{}';
      const cases: [string, Record<string, string>][] = [
        ['tokenizer.json', {}],
        ['tokenizer_config.json', { 'tokenizer.json': tokenizer }],
        ['chat_template.jinja', { 'tokenizer.json': tokenizer }],
        ['chat_template.json', { 'tokenizer.json': tokenizer }],
      ];
      for (const [name, extra] of cases) {
        const err = typedError(() => MexitTokenizer.load(modelDir(name, make, extra)), TokenizerError);
        expect(err.code).toBe(code);
        expect(err.message).toContain(name);
      }
    });
  }

  it('the runtime refuses a FIFO config.json before loading anything', async () => {
    if (!fifo) return;
    const dir = modelDir('config.json', (f) => fs.symlinkSync(fifo, f));
    await expect(ModelRuntime.load(dir)).rejects.toMatchObject({ code: 'FILE_NOT_REGULAR' });
  });

  it('files just over their limit are refused, at the limit they are read', () => {
    const over = modelDir('config.json', (f) => {
      fs.writeFileSync(f, '{}');
      fs.truncateSync(f, FILE_SIZE_LIMITS.config + 1);
    });
    expect(typedError(() => loadModelConfig(over), ConfigError).code).toBe('FILE_TOO_LARGE');
    const tokenizerOver = modelDir('tokenizer.json', (f) => {
      fs.writeFileSync(f, '{}');
      fs.truncateSync(f, FILE_SIZE_LIMITS.tokenizer + 1);
    });
    expect(typedError(() => MexitTokenizer.load(tokenizerOver), TokenizerError).code).toBe('FILE_TOO_LARGE');
    // at the limit the file is read: NUL padding after the JSON is then a JSON error, with the old code
    const atLimit = modelDir('config.json', (f) => {
      fs.writeFileSync(f, '{}');
      fs.truncateSync(f, FILE_SIZE_LIMITS.config);
    });
    expect(typedError(() => loadModelConfig(atLimit), ConfigError).code).toBe('CONFIG_JSON');
  });
});
