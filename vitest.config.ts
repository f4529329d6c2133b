import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (file: string) => fileURLToPath(new URL(`./packages/${file}`, import.meta.url));

// Tests run against package sources; the global setup builds the packages once (cached) for what runs
// built JavaScript (worker threads, CLI processes, the packed install). Subpaths come before their
// package root, which would otherwise swallow them.
export default defineConfig({
  resolve: {
    alias: [
      { find: /^@mexit\/core$/, replacement: src('core/src/index.ts') },
      { find: /^@mexit\/model\/onnx$/, replacement: src('model/src/onnx.ts') },
      { find: /^@mexit\/model$/, replacement: src('model/src/index.ts') },
      { find: /^@mexit\/speculative\/eval$/, replacement: src('speculative/src/eval/index.ts') },
      { find: /^@mexit\/speculative\/drafters$/, replacement: src('speculative/src/drafters/index.ts') },
      { find: /^@mexit\/speculative\/lowlevel$/, replacement: src('speculative/src/lowlevel.ts') },
      { find: /^@mexit\/speculative$/, replacement: src('speculative/src/index.ts') },
      { find: /^@mexit\/server$/, replacement: src('server/src/index.ts') },
      { find: /^@mexit\/cli$/, replacement: src('cli/src/index.ts') },
      { find: /^mexit\/(eval|drafters|lowlevel|cli|server)$/, replacement: src('mexit/src/$1.ts') },
      { find: /^mexit$/, replacement: src('mexit/src/index.ts') },
    ],
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'bench/**/*.test.ts', 'examples/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    globalSetup: ['tools/test/build-once.ts'],
  },
});
