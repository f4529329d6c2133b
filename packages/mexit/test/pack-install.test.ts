/**
 * The packages as users get them: the six workspace packages packed with pnpm (`workspace:*` becomes a version,
 * as on publish), installed with npm into a fresh project outside the repository, then `npx mexit` and both
 * import paths run there. The default model and eval stories must come from the installed data package, not
 * from the repository. Third-party dependencies come from npm's cache or the registry; without either the
 * install fails, and so does this test, with npm's message.
 */
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { delimiter, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = realpathSync(fileURLToPath(new URL('../../../', import.meta.url)));
const PACKAGES = ['core', 'model', 'speculative', 'server', 'cli', 'tinystories-ee', 'mexit'];
const NAMES = ['@mexit/core', '@mexit/model', '@mexit/speculative', '@mexit/server', '@mexit/cli', '@mexit/tinystories-ee', 'mexit'];
const PROMPT = 'Once upon a time';

// Nothing of the repository or of the runner that started this test reaches the fresh project: no repo bins on
// PATH, no pnpm/npm script variables (npm's registry, cache and proxy settings stay). onnxruntime-node's install
// script would fetch CUDA binaries from an unreachable host; the CPU binaries ship in its package.
const keep = /^npm_config_(registry|cache|userconfig|cafile|strict_ssl|(https?_|no_)?proxy)$/i;
const ENV: NodeJS.ProcessEnv = {
  ...Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => (!/^(npm|pnpm)_/i.test(k) || keep.test(k)) && !/^(VITEST|NODE_OPTIONS$|NODE_PATH$|INIT_CWD$)/.test(k),
    ),
  ),
  PATH: (process.env.PATH ?? '')
    .split(delimiter)
    .filter((p) => !`${p}${sep}`.startsWith(`${REPO}${sep}`))
    .join(delimiter),
  ONNXRUNTIME_NODE_INSTALL: 'skip',
  NO_COLOR: '1',
};

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = ENV): Run {
  const r = spawnSync(command, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${command} could not start in ${cwd}: ${r.error.message}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `run`, failing with the command's own output unless it exits 0. */
function ok(what: string, command: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv): Run {
  const r = run(command, args, cwd, env);
  if (r.status !== 0) throw new Error(`${what}: \`${command} ${args.join(' ')}\` in ${cwd} exited ${r.status}\n${r.stderr.slice(-4000)}`);
  return r;
}

let packs = '';
let project = '';
const installed = (...path: string[]) => join(project, 'node_modules', ...path);

beforeAll(() => {
  ok('build', 'pnpm', ['build'], REPO, process.env);
  packs = mkdtempSync(join(tmpdir(), 'mexit-packs-'));
  for (const dir of PACKAGES)
    ok(`pnpm pack of packages/${dir}`, 'pnpm', ['pack', '--pack-destination', packs], join(REPO, 'packages', dir));
  const tarballs = readdirSync(packs).filter((f) => f.endsWith('.tgz'));
  expect(tarballs).toHaveLength(PACKAGES.length);

  project = realpathSync(mkdtempSync(join(tmpdir(), 'mexit-install-')));
  expect(`${project}${sep}`.startsWith(`${REPO}${sep}`)).toBe(false);
  writeFileSync(join(project, 'package.json'), `${JSON.stringify({ name: 'mexit-install-check', private: true, type: 'module' })}\n`);
  const r = run(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...tarballs.map((f) => join(packs, f))],
    project,
  );
  if (r.status !== 0) {
    throw new Error(
      `npm install of the packed packages failed (exit ${r.status}); their third-party dependencies come from npm's cache ` +
        `or its registry (${process.env.npm_config_registry ?? 'https://registry.npmjs.org'}), so this test needs one of them:\n` +
        r.stderr.slice(-4000),
    );
  }
}, 900_000);

afterAll(() => {
  for (const dir of [packs, project]) if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('pnpm pack + npm install into a fresh project', () => {
  it('installs every package with its metadata and LICENSE, no workspace: ranges, the model as real files', () => {
    const license = readFileSync(join(REPO, 'LICENSE'), 'utf8');
    for (const name of NAMES) {
      const pkg = JSON.parse(readFileSync(installed(name, 'package.json'), 'utf8'));
      expect(pkg.name).toBe(name);
      expect(pkg.engines).toEqual({ node: '>=20' });
      expect(pkg.license).toMatch(/^MIT\b/);
      expect(pkg.description).toEqual(expect.any(String));
      expect(pkg.repository.url).toEqual(expect.any(String));
      expect(pkg.keywords.length).toBeGreaterThan(0);
      expect(JSON.stringify(pkg.dependencies ?? {})).not.toContain('workspace:');
      expect(readFileSync(installed(name, 'LICENSE'), 'utf8')).toBe(license);
    }
    for (const file of ['model/config.json', 'model/model.safetensors', 'model/tokenizer.json', 'data/valid-small.txt']) {
      const copy = installed('@mexit', 'tinystories-ee', file);
      expect(lstatSync(copy).isFile(), file).toBe(true);
      expect(statSync(copy).size, file).toBe(statSync(join(REPO, 'packages', 'tinystories-ee', file)).size);
    }
    // The command is the mexit package's (the one users install), not some other package's.
    expect(realpathSync(installed('.bin', 'mexit'))).toBe(realpathSync(installed('mexit', 'dist', 'bin.js')));
  });

  it('npx mexit generate runs the bundled model and prints what the workspace prints', () => {
    const args = ['generate', PROMPT, '--max-new-tokens', '8'];
    const r = ok('installed mexit generate', 'npx', ['mexit', ...args], project);
    expect(r.stdout.trim().length).toBeGreaterThan(0);
    const workspace = ok('workspace mexit generate', process.execPath, [join(REPO, 'packages', 'cli', 'dist', 'main.js'), ...args], REPO);
    expect(r.stdout).toBe(workspace.stdout);
  }, 300_000);

  it('npx mexit eval --json prints one JSON document, from the installed model and stories', () => {
    const r = ok('installed mexit eval', 'npx', ['mexit', 'eval', '--max-tokens', '64', '--lambada-examples', '1', '--json'], project);
    const report = JSON.parse(r.stdout);
    expect(realpathSync(report.model)).toBe(realpathSync(installed('@mexit', 'tinystories-ee', 'model')));
    expect(report.perplexity.tokens).toBe(64);
    expect(report.lambada.examples).toBe(1);
  }, 300_000);

  it("imports from 'mexit' and '@mexit/speculative' resolve to one copy and generate", () => {
    const script = `
import { MexitGenerator, SelfSpeculativeGenerator, ModelRuntime, OptionsError, MexitError, bundledModelDir, loadGenerator, WorkerGenerator } from 'mexit';
import { MexitGenerator as G } from '@mexit/speculative';
import { DEFAULT_EVAL_DATA_PATH, evaluate } from 'mexit/eval';
import { runCli } from 'mexit/cli';
import { startServer } from 'mexit/server';
const viaMexit = await SelfSpeculativeGenerator.fromPretrained(bundledModelDir, { threads: 1 });
const a = await viaMexit.generate(${JSON.stringify(PROMPT)}, { maxNewTokens: 6 });
await viaMexit.dispose();
const viaSpeculative = new G(await ModelRuntime.load(bundledModelDir, { threads: 1 }));
const b = await viaSpeculative.generate(${JSON.stringify(PROMPT)}, { maxNewTokens: 6 });
await viaSpeculative.dispose();
const inWorker = await loadGenerator(bundledModelDir, { threads: 1 });
const c = await inWorker.generate(${JSON.stringify(PROMPT)}, { maxNewTokens: 6 });
const worker = inWorker instanceof WorkerGenerator;
await inWorker.dispose();
let refused = '';
try { await MexitGenerator.fromPretrained(bundledModelDir, { maxNewTokens: -1 }); } catch (e) { refused = e instanceof OptionsError && e instanceof MexitError ? e.code : String(e); }
console.log(JSON.stringify({
  same: G === MexitGenerator && SelfSpeculativeGenerator === MexitGenerator,
  a: a.ids, b: b.ids, c: c.ids, worker, text: a.text, refused, bundledModelDir, DEFAULT_EVAL_DATA_PATH,
  functions: [typeof evaluate, typeof runCli, typeof startServer],
}));
`;
    writeFileSync(join(project, 'check.mjs'), script);
    const out = JSON.parse(ok('library script', process.execPath, ['check.mjs'], project).stdout);
    expect(out.same).toBe(true);
    expect(out.a).toHaveLength(6);
    expect(out.b).toEqual(out.a);
    expect(out.c).toEqual(out.a); // the worker entry resolves inside the installed package
    expect(out.worker).toBe(true);
    expect(out.text.length).toBeGreaterThan(0);
    expect(out.refused).toBe('INVALID_OPTION');
    expect(realpathSync(out.bundledModelDir)).toBe(realpathSync(installed('@mexit', 'tinystories-ee', 'model')));
    expect(realpathSync(out.DEFAULT_EVAL_DATA_PATH)).toBe(realpathSync(installed('@mexit', 'tinystories-ee', 'data', 'valid-small.txt')));
    expect(out.functions).toEqual(['function', 'function', 'function']);
  }, 300_000);

  it('TypeScript resolves mexit, its subpaths and @mexit/speculative through the installed exports maps', () => {
    writeFileSync(
      join(project, 'check.ts'),
      `import { MexitGenerator, ModelRuntime, OptionsError, bundledModelDir, type GenerationResult } from 'mexit';
import { evaluate, type EvalReport } from 'mexit/eval';
import type { Drafter } from 'mexit/drafters';
import { TokenSink } from 'mexit/lowlevel';
import { runCli } from 'mexit/cli';
import { MexitGenerator as G } from '@mexit/speculative';
export const same: typeof G = MexitGenerator;
export const parts = [ModelRuntime.load, OptionsError, bundledModelDir satisfies string, evaluate, TokenSink, runCli] as const;
export type Types = [GenerationResult['text'], EvalReport, Drafter];
`,
    );
    const tsconfig = {
      compilerOptions: {
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2022',
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: [],
      },
      files: ['check.ts'],
    };
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify(tsconfig));
    const tsc = createRequire(join(REPO, 'package.json')).resolve('typescript/bin/tsc');
    const r = run(process.execPath, [tsc, '-p', 'tsconfig.json'], project);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 300_000);
});
