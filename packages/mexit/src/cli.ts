/** mexit/cli: the command line, callable in-process, as `@mexit/cli`. */
export * from '@mexit/cli';
