import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url));

// Tests run against package sources, so `pnpm test` needs no build step.
export default defineConfig({
  resolve: {
    alias: {
      '@mexit/core': src('core'),
      '@mexit/model': src('model'),
      '@mexit/speculative': src('speculative'),
    },
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'bench/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
