import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHECKPOINT_FILES, openCheckpoint, writeSafetensors } from '@mexit/core';
import { expectCheckpointError } from './support/helpers.js';

const GOLDENS = fileURLToPath(new URL('../../../fixtures/goldens/', import.meta.url));

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-ckpt-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function newDir(name: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  return dir;
}

describe('openCheckpoint', () => {
  it('opens a safetensors model directory and a .bin model directory', () => {
    const st = openCheckpoint(path.join(GOLDENS, 'llama2-tiny'));
    expect(st.info('lm_head.weight').file).toBe(path.join(GOLDENS, 'llama2-tiny', 'model.safetensors'));
    expect(st.info('model.embed_tokens.weight').shape).toEqual([512, 64]);
    const bin = openCheckpoint(path.join(GOLDENS, 'llama2-tiny-bin'));
    expect(bin.info('lm_head.weight').file).toBe(path.join(GOLDENS, 'llama2-tiny-bin', 'pytorch_model.bin'));
    expect(bin.getF32('model.norm.weight')).toEqual(st.getF32('model.norm.weight'));
    expect([...bin.names].sort()).toEqual([...st.names].sort());
    st.close();
    bin.close();
  });

  it('prefers safetensors when both formats are present', () => {
    const dir = newDir('both');
    fs.copyFileSync(path.join(GOLDENS, 'gpt2-tiny-bin', 'pytorch_model.bin'), path.join(dir, 'pytorch_model.bin'));
    writeSafetensors(path.join(dir, 'model.safetensors'), { only: { dtype: 'F32', shape: [1], data: new Float32Array([9]) } });
    const map = openCheckpoint(dir);
    expect(map.names).toEqual(['only']);
    map.close();
  });

  it('accepts a weights file path directly', () => {
    const file = path.join(GOLDENS, 'gpt2-tiny-bin', 'pytorch_model.bin');
    const map = openCheckpoint(file);
    expect(map.info('transformer.wpe.weight').shape).toEqual([128, 64]);
    map.close();
  });

  it('CHECKPOINT_MISSING lists the files looked for', () => {
    const empty = newDir('empty');
    fs.writeFileSync(path.join(empty, 'config.json'), '{}');
    const err = expectCheckpointError(() => openCheckpoint(empty), 'CHECKPOINT_MISSING', empty);
    for (const name of ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json']) {
      expect(err.message).toContain(name);
    }
    expect(CHECKPOINT_FILES).toContain('pytorch_model.bin.index.json');
    expectCheckpointError(() => openCheckpoint(path.join(tmp, 'no-such-dir')), 'CHECKPOINT_MISSING', 'no-such-dir', 'model.safetensors');
  });

  it('TENSOR_MISSING names the tensor and the checkpoint', () => {
    const dir = path.join(GOLDENS, 'gpt2-tiny');
    const map = openCheckpoint(dir);
    expectCheckpointError(() => map.info('lm_head.weight'), 'TENSOR_MISSING', "'lm_head.weight'", path.join(dir, 'model.safetensors'));
    expectCheckpointError(() => map.getF32('lm_head.weight'), 'TENSOR_MISSING', "'lm_head.weight'");
    map.close();
  });
});

describe('sharded checkpoints', () => {
  const a = new Float32Array([1, 2, 3, 4]);
  const b = new Uint16Array([0x3f80, 0xc000]); // BF16 1, -2
  const c = new Int32Array([-7]);

  function writeShards(dir: string): void {
    writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), {
      'layer.0.w': { dtype: 'F32', shape: [2, 2], data: a },
      'layer.0.b': { dtype: 'BF16', shape: [2], data: b },
    });
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), { 'layer.1.n': { dtype: 'I32', shape: [1], data: c } });
  }
  function writeIndex(dir: string, weightMap: Record<string, unknown>, name = 'model.safetensors.index.json'): void {
    fs.writeFileSync(path.join(dir, name), JSON.stringify({ metadata: { total_size: 28 }, weight_map: weightMap }));
  }
  const goodMap = {
    'layer.0.w': 'model-00001-of-00002.safetensors',
    'layer.0.b': 'model-00001-of-00002.safetensors',
    'layer.1.n': 'model-00002-of-00002.safetensors',
  };

  it('reads two safetensors shards through the index', () => {
    const dir = newDir('sharded');
    writeShards(dir);
    writeIndex(dir, goodMap);
    const map = openCheckpoint(dir);
    expect(map.names).toEqual(['layer.0.w', 'layer.0.b', 'layer.1.n']);
    expect(map.has('layer.1.n')).toBe(true);
    expect(map.has('layer.2.n')).toBe(false);
    expect([...map.getF32('layer.0.w')]).toEqual([1, 2, 3, 4]);
    expect([...map.getF32('layer.0.b')]).toEqual([1, -2]);
    expect(map.get('layer.1.n')).toEqual({ dtype: 'I32', shape: [1], data: new Int32Array([-7]) });
    expect(map.info('layer.1.n').file).toBe(path.join(dir, 'model-00002-of-00002.safetensors'));
    expectCheckpointError(() => map.get('layer.2.n'), 'TENSOR_MISSING', "'layer.2.n'", 'model.safetensors.index.json');
    map.close();
    expectCheckpointError(() => map.get('layer.0.w'), 'CHECKPOINT_CLOSED');
  });

  it('opens shards lazily: a corrupt shard only fails when one of its tensors is read', () => {
    const dir = newDir('lazy');
    writeShards(dir);
    fs.writeFileSync(path.join(dir, 'model-00002-of-00002.safetensors'), Buffer.from('garbage!garbage!'));
    writeIndex(dir, goodMap);
    const map = openCheckpoint(dir);
    expect([...map.getF32('layer.0.w')]).toEqual([1, 2, 3, 4]);
    expectCheckpointError(() => map.get('layer.1.n'), 'SAFETENSORS_HEADER_LENGTH', 'model-00002-of-00002.safetensors');
    map.close();
  });

  it('validates the index', () => {
    const missing = newDir('missing-shard');
    writeShards(missing);
    writeIndex(missing, { ...goodMap, 'layer.2.n': 'model-00003-of-00003.safetensors' });
    expectCheckpointError(() => openCheckpoint(missing), 'CHECKPOINT_SHARD_MISSING', 'model-00003-of-00003.safetensors', "'layer.2.n'");

    const escaping = newDir('escape');
    writeShards(escaping);
    writeIndex(escaping, { ...goodMap, 'layer.1.n': '../both/model.safetensors' });
    expectCheckpointError(() => openCheckpoint(escaping), 'CHECKPOINT_INDEX', '../both/model.safetensors');

    const notJson = newDir('not-json');
    fs.writeFileSync(path.join(notJson, 'model.safetensors.index.json'), '{"weight_map": ');
    expectCheckpointError(() => openCheckpoint(notJson), 'CHECKPOINT_INDEX', 'model.safetensors.index.json');

    const noMap = newDir('no-map');
    fs.writeFileSync(path.join(noMap, 'model.safetensors.index.json'), '{"metadata": {}}');
    expectCheckpointError(() => openCheckpoint(noMap), 'CHECKPOINT_INDEX', 'weight_map');

    const wrongShard = newDir('wrong-shard');
    writeShards(wrongShard);
    writeIndex(wrongShard, { ...goodMap, 'layer.1.n': 'model-00001-of-00002.safetensors' });
    const map = openCheckpoint(wrongShard);
    expectCheckpointError(() => map.get('layer.1.n'), 'TENSOR_MISSING', "'layer.1.n'", 'model-00001-of-00002.safetensors');
    map.close();
  });

  it('reads a sharded pytorch_model.bin index', () => {
    const dir = newDir('bin-sharded');
    const shard = 'pytorch_model-00001-of-00001.bin';
    fs.copyFileSync(path.join(GOLDENS, 'gpt-neo-tiny-bin', 'pytorch_model.bin'), path.join(dir, shard));
    const reference = openCheckpoint(path.join(GOLDENS, 'gpt-neo-tiny'));
    writeIndex(dir, Object.fromEntries(reference.names.map((n) => [n, shard])), 'pytorch_model.bin.index.json');
    const map = openCheckpoint(dir);
    expect([...map.names].sort()).toEqual([...reference.names].sort());
    for (const name of ['transformer.wte.weight', 'transformer.h.1.attn.attention.out_proj.bias']) {
      expect(map.getF32(name)).toEqual(reference.getF32(name));
    }
    map.close();
    reference.close();
  });
});
