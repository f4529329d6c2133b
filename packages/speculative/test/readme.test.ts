/**
 * The README's TypeScript examples run as written: each ```ts block is written to a module beside this
 * test and imported (vitest resolves the package names to the sources), from the repository root, where
 * the README's relative paths point.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
const dir = join(root, 'packages/speculative/test/.readme-examples');

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(join(root, '.mexit-cache'), { recursive: true, force: true });
});

describe('README examples', () => {
  it('there are examples to run', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(4);
  });

  blocks.forEach((code, i) => {
    const title = code.split('\n').find((l) => l.startsWith('import'))!;
    it(`example ${i + 1} runs (${title})`, async () => {
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `example-${i + 1}.ts`);
      writeFileSync(file, code);
      const cwd = process.cwd();
      process.chdir(root);
      const log = console.log;
      const lines: unknown[][] = [];
      console.log = (...args: unknown[]) => void lines.push(args);
      try {
        await import(file);
      } finally {
        console.log = log;
        process.chdir(cwd);
      }
      // Every example prints what it computed.
      expect(lines.length).toBeGreaterThan(0);
    });
  });
});
