/** The CLI run in-process with collecting streams (not a TTY, empty environment unless `extra` says otherwise). */
import { runCli, type CliIo } from '../../src/main.js';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export async function cli(argv: string[], extra: Partial<CliIo> = {}): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    isTTY: false,
    env: {},
    ...extra,
  };
  const code = await runCli(argv, io);
  return { code, stdout, stderr };
}
