import { afterAll, describe, expect, test } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelRuntime } from '@mexit/model';

// The early-exit training tool (tools/train, PyTorch) must keep producing directories the engine loads.
// tools/train/smoke_test.py trains a tiny model for a few seconds and checks (in Python) that the loss
// falls, resume is exact, the HF goldens are reproduced and export/exit-heads work.
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const PYTHON = '/usr/bin/python3';
const workDir = mkdtempSync(join(tmpdir(), 'mexit-train-smoke-'));

afterAll(() => {
  rmSync(workDir, { recursive: true, force: true });
});

/** Fails with an actionable message when the Debian PyTorch the tool needs is not installed. */
function requireTorch(): void {
  const probe = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error(
      `PyTorch is required by tools/train (the training tool): ${PYTHON} -c "import torch" failed ` +
        `(${probe.error?.message ?? probe.stderr.trim()}). Install it: apt-get install python3-torch libopenblas0-pthread`,
    );
  }
}

describe('training tool smoke test', () => {
  test('trains a tiny early-exit model and exports an HF Llama directory the engine loads', async () => {
    requireTorch();
    const result = spawnSync(PYTHON, ['tools/train/smoke_test.py', '--out', workDir], {
      cwd: REPO,
      encoding: 'utf8',
      // Two threads at most: the machine is shared.
      env: { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1' },
      timeout: 280_000,
    });
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
    expect(result.error, output).toBeUndefined();
    expect(result.status, output).toBe(0);
    expect(output).toContain('smoke_test: all checks passed');

    const modelDir = join(workDir, 'model');
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      expect(existsSync(join(modelDir, file)), file).toBe(true);
    }
    const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config.model_type).toBe('llama');
    expect(config.architectures).toEqual(['LlamaForCausalLM']);

    // safetensors header: 8-byte little-endian length, then JSON naming the HF Llama tensors in F16.
    const bytes = readFileSync(join(modelDir, 'model.safetensors'));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[] }>;
    const hidden = config.hidden_size as number;
    const vocab = config.vocab_size as number;
    expect(header['model.embed_tokens.weight']).toMatchObject({ dtype: 'F16', shape: [vocab, hidden] });
    expect(header['model.layers.0.self_attn.q_proj.weight']?.dtype).toBe('F16');
    expect(header['lm_head.weight']).toBeUndefined(); // tied embeddings: HF does not store the head

    const headsConfig = JSON.parse(readFileSync(join(workDir, 'model-exitheads', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(headsConfig.lm_head_layer_indices).toEqual([2, 4]);

    // The engine loads both exports through the ordinary Llama path and runs them from text.
    const runtime = await ModelRuntime.load(modelDir, { threads: 1 });
    try {
      const ids = runtime.tokenizer!.encode('Once upon a time');
      expect(ids.length).toBeGreaterThan(0);
      const L = runtime.numLayers;
      const stage = await runtime.stage({ from: 0, to: L, exits: [{ layer: 1 }, { layer: L }] });
      const out = await stage.run(runtime.createCache(), ids, ids.length - 1);
      for (const logits of out.logits) {
        expect(logits.length).toBe(vocab);
        expect(logits.every(Number.isFinite)).toBe(true);
      }
    } finally {
      await runtime.dispose();
    }
    const heads = await ModelRuntime.load(join(workDir, 'model-exitheads'), { threads: 1 });
    try {
      expect(heads.availableExits().layerSpecific).toEqual([2, 4]);
      const stage = await heads.stage({ from: 0, to: 2, exits: [{ layer: 2, head: 'layer-specific' }] });
      const out = await stage.run(heads.createCache(), [1, 2, 3], 2);
      expect(out.logits[0].every(Number.isFinite)).toBe(true);
    } finally {
      await heads.dispose();
    }
  }, 300_000);
});
