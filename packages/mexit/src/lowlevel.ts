/** mexit/lowlevel: the generator's building blocks for tools and tests, as `@mexit/speculative/lowlevel`. */
export * from '@mexit/speculative/lowlevel';
