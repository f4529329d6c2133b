/** mexit/server: the OpenAI-compatible HTTP server behind `mexit serve`, as `@mexit/server`. */
export * from '@mexit/server';
