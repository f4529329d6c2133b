/**
 * The README's two commands against what runs them. tools/fresh-machine-check.sh (which CI runs on a fresh clone)
 * extracts exactly two from the README's first ```sh block; both install exactly package.json's pinned pnpm (a looser
 * `pnpm@10` installs the newest 10.x, which then refuses to switch to the pinned one); command 2 sets up what the tests
 * need; .ci/run runs command 2 verbatim; and tools/setup-test-env.sh is a no-op once PyTorch is installed, needing
 * nothing on PATH (so neither apt-get nor sudo). The check itself runs the whole suite, so it is not run from here.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (file: string) => readFileSync(join(root, file), 'utf8');
const packageJson = JSON.parse(read('package.json')) as { packageManager: string; scripts: Record<string, string> };
const pinned = /^pnpm@(\d+\.\d+\.\d+)$/.exec(packageJson.packageManager)?.[1];
const tmpDirs: string[] = [];

afterAll(() => {
  for (const dir of tmpDirs) rmSync(dir, { recursive: true, force: true });
});

function printCommands(script = join(root, 'tools/fresh-machine-check.sh')) {
  return spawnSync('bash', [script, '--print-commands'], { encoding: 'utf8' });
}

function readmeCommands(): string[] {
  const run = printCommands();
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  return run.stdout.trimEnd().split('\n');
}

describe("the README's commands", () => {
  it('are two, and both install exactly the pnpm that package.json pins', () => {
    expect(pinned).toMatch(/^\d+\.\d+\.\d+$/);
    const commands = readmeCommands();
    expect(commands).toHaveLength(2);
    for (const command of commands) expect(command.startsWith(`npm install -g pnpm@${pinned} && pnpm install && `)).toBe(true);
    expect(commands[0]).toMatch(/&& pnpm build && pnpm mexit generate "[^"]+"$/);
  });

  it('name no other pnpm version anywhere in README.md or .ci/run', () => {
    for (const file of ['README.md', '.ci/run']) {
      const versions = [...read(file).matchAll(/pnpm@([^\s`'"]+)/g)].map((match) => match[1]);
      expect(versions.length).toBeGreaterThan(0);
      expect(new Set(versions)).toEqual(new Set([pinned]));
    }
  });

  it('set up the test environment before the tests, with the script CI and the README share', () => {
    const [, tests] = readmeCommands();
    expect(tests).toMatch(/&& pnpm run setup:test && pnpm test$/);
    expect(packageJson.scripts['setup:test']).toBe('bash tools/setup-test-env.sh');
  });

  it('are what .ci/run runs: command 2 verbatim, then the linters, then the fresh-machine check', () => {
    const [, tests] = readmeCommands();
    const lines = read('.ci/run')
      .split('\n')
      .filter((line) => line.trim() !== '' && !line.startsWith('#'));
    const at = lines.indexOf(tests!);
    expect(at).toBeGreaterThan(-1);
    expect(lines.slice(at + 1)).toEqual(['pnpm lint', 'tools/fresh-machine-check.sh']);
  });
});

describe('tools/fresh-machine-check.sh reading a README', () => {
  function withReadme(readme: string) {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-readme-'));
    tmpDirs.push(dir);
    mkdirSync(join(dir, 'tools'));
    copyFileSync(join(root, 'tools/fresh-machine-check.sh'), join(dir, 'tools/fresh-machine-check.sh'));
    writeFileSync(join(dir, 'README.md'), readme);
    return printCommands(join(dir, 'tools/fresh-machine-check.sh'));
  }

  it("takes the first ```sh block's command lines, skipping comments, blank lines and later blocks", () => {
    const run = withReadme(
      '# x\n\n```ts\nnot this\n```\n\n```sh\n# 1. one\necho one\n\n# 2. two\necho two\n```\n\n```sh\necho three\n```\n',
    );
    expect(run.status).toBe(0);
    expect(run.stdout).toBe('echo one\necho two\n');
  });

  it('refuses a block that does not hold exactly two commands, naming the README', () => {
    const run = withReadme('```sh\necho one\necho two\necho three\n```\n');
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('expected 2 commands');
    expect(run.stderr).toContain('found 3');
    expect(run.stderr).toContain('README.md');
    expect(run.stdout).toBe('');
  });
});

describe('tools/setup-test-env.sh', () => {
  it('does nothing, and needs nothing on PATH, when PyTorch and OpenBLAS are installed (as `pnpm run setup:test` leaves them)', () => {
    const run = spawnSync('/bin/bash', [join(root, 'tools/setup-test-env.sh')], { encoding: 'utf8', env: { PATH: '/nonexistent' } });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toBe('setup-test-env: PyTorch (/usr/bin/python3) and OpenBLAS are already installed\n');
  });
});
