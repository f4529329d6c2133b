/** mexit/drafters: the Drafter interface and its implementations, as `@mexit/speculative/drafters`. */
export * from '@mexit/speculative/drafters';
