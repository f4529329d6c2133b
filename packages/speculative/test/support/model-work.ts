import type { MexitGenerator } from '@mexit/speculative';

/** Stages built and session runs so far on the generator's runtime: both stay 0 while only bad input is given. */
export async function modelWork(gen: MexitGenerator): Promise<{ stages: number; calls: number }> {
  const stages = await gen.runtime.builtStages();
  return { stages: stages.length, calls: stages.reduce((n, s) => n + s.calls, 0) };
}
