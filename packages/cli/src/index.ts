/** @mexit/cli: the `mexit` command line, callable in-process. */
export { runCli, processIo, type CliIo } from './main.js';
export { UsageError } from './args.js';
