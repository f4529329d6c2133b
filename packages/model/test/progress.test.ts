/**
 * RuntimeOptions.onProgress: the events of a load and of stage builds, in order, on real models (the gpt2-tiny
 * golden, and the bundled model for a tokenizer), and what a listener that throws does to the runtime.
 */
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '@mexit/core';
import { ModelRuntime, type ProgressInfo } from '@mexit/model';

const GPT2 = fileURLToPath(new URL('../../../fixtures/goldens/gpt2-tiny', import.meta.url));
const BUNDLED = fileURLToPath(new URL('../../../fixtures/models/tinystories-ee', import.meta.url));

/** The events without their timings (checked apart: they vary run to run). */
function shapes(events: ProgressInfo[]): Omit<ProgressInfo, 'elapsedMs'>[] {
  return events.map(({ elapsedMs: _, ...rest }) => rest);
}

describe('RuntimeOptions.onProgress', () => {
  it('reports each file of a load, then ready, then initiate → progress → done for each stage built', async () => {
    const events: ProgressInfo[] = [];
    const rt = await ModelRuntime.load(GPT2, { threads: 1, onProgress: (info) => events.push(info) });
    try {
      expect(shapes(events)).toEqual([
        { status: 'initiate', name: GPT2, file: 'config.json' },
        { status: 'done', name: GPT2, file: 'config.json' },
        { status: 'initiate', name: GPT2, file: 'model.safetensors' },
        { status: 'done', name: GPT2, file: 'model.safetensors' },
        { status: 'ready', name: GPT2 },
      ]);
      events.length = 0;
      const L = rt.numLayers;
      const stage = await rt.stage({ from: 0, to: L, exits: [{ layer: L }] });
      const key = `layers[0,${L})+shared@${L}`;
      expect(shapes(events)).toEqual([
        { status: 'initiate', name: GPT2, stage: key },
        { status: 'progress', name: GPT2, stage: key, progress: 50, loaded: 1, total: 2 },
        { status: 'done', name: GPT2, stage: key },
      ]);
      const [, graph, done] = events;
      expect(Number.isFinite(graph.elapsedMs)).toBe(true); // reported; its size is the bench's business
      expect(done.elapsedMs).toBe(stage.buildMs); // the whole build, graph included

      events.length = 0;
      await rt.stage({ from: 0, to: L, exits: [{ layer: L }] }); // cached: nothing is built
      expect(events).toEqual([]);
    } finally {
      await rt.dispose();
    }
  });

  it('reports the tokenizer of a model that has one', async () => {
    const files: string[] = [];
    const rt = await ModelRuntime.load(BUNDLED, { threads: 1, onProgress: (info) => files.push(`${info.status} ${info.file ?? ''}`) });
    await rt.dispose();
    expect(files).toEqual([
      'initiate config.json',
      'done config.json',
      'initiate model.safetensors',
      'done model.safetensors',
      'initiate tokenizer.json',
      'done tokenizer.json',
      'ready ',
    ]);
  });

  it('refuses an onProgress that is not a function, before reading anything', async () => {
    const load = ModelRuntime.load(GPT2, { onProgress: 'stderr' as never });
    await expect(load).rejects.toThrow(ConfigError);
    await expect(load).rejects.toMatchObject({
      code: 'RUNTIME_OPTIONS',
      message: expect.stringContaining('onProgress must be a function'),
    });
  });

  it('a listener that throws fails that load or build; a failed build holds no session and is rebuilt on request', async () => {
    const boom = new Error('listener failed');
    await expect(
      ModelRuntime.load(GPT2, {
        onProgress: (info) => {
          if (info.status === 'ready') throw boom;
        },
      }),
    ).rejects.toBe(boom);

    let fail = true;
    const rt = await ModelRuntime.load(GPT2, {
      threads: 1,
      onProgress: (info) => {
        if (fail && info.status === 'done' && info.stage) throw boom;
      },
    });
    try {
      const spec = { from: 0, to: 1, exits: [{ layer: 1 }] };
      await expect(rt.stage(spec)).rejects.toBe(boom);
      expect(rt.liveStages).toBe(0);
      fail = false;
      const stage = await rt.stage(spec);
      expect(stage.released).toBe(false);
      expect(rt.liveStages).toBe(1);
    } finally {
      await rt.dispose();
    }
  });
});
