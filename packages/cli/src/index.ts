/** @mexit/cli: the `mexit` command line, callable in-process. */
export { runCli, runProgram, processIo, type CliIo } from './main.js';
export { UsageError } from './args.js';
