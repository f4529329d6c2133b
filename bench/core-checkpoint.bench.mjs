/**
 * Checkpoint loading throughput of @mexit/core (built package, packages/core/dist): open a ~100 MB F32
 * safetensors file and read every tensor as F32, and the same for a ~50 MB BF16 file (read + BF16→F32
 * widening). Both files hold the same 25.2 M elements, so each iteration of either task delivers `bytes`
 * of F32 (~100 MB); `bytesByTask` gives the file bytes each task reads. The runner passes tinybench's Bench
 * class and a scratch directory; this returns the bench after it has run.
 */
import fs from 'node:fs';
import path from 'node:path';
import { f32ToBf16, openSafetensors, writeSafetensors } from '../packages/core/dist/index.js';

const TENSORS = 8;
const ROWS = 2048;
const COLS = 1536; // 8 × 2048 × 1536 × 4 B = 100.7 MB of F32

/** Deterministic weight-like values (a cheap LCG mapped to [-0.1, 0.1)), so the data is not all zeros. */
function fillWeights(out, seed) {
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296 - 0.5) * 0.2;
  }
  return out;
}

/** Reads every tensor of `file` as F32; returns a checksum so the work cannot be optimised away. */
function loadAllF32(file) {
  const map = openSafetensors(file);
  let sink = 0;
  try {
    for (const name of map.names) {
      const values = map.getF32(name);
      sink += values[values.length - 1];
    }
  } finally {
    map.close();
  }
  return sink;
}

/**
 * @param {typeof import('tinybench').Bench} Bench
 * @param {string} tmpDir scratch directory (the files are written here and removed after the run)
 */
export async function benchCheckpointLoad(Bench, tmpDir) {
  const f32File = path.join(tmpDir, 'bench-f32.safetensors');
  const bf16File = path.join(tmpDir, 'bench-bf16.safetensors');
  const f32Tensors = {};
  const bf16Tensors = {};
  for (let t = 0; t < TENSORS; t++) {
    const values = fillWeights(new Float32Array(ROWS * COLS), t + 1);
    f32Tensors[`model.layers.${t}.weight`] = { dtype: 'F32', shape: [ROWS, COLS], data: values };
    bf16Tensors[`model.layers.${t}.weight`] = { dtype: 'BF16', shape: [ROWS, COLS], data: f32ToBf16(values) };
  }
  writeSafetensors(f32File, f32Tensors, { format: 'pt' });
  writeSafetensors(bf16File, bf16Tensors, { format: 'pt' });

  const bytes = TENSORS * ROWS * COLS * 4;
  const f32Task = `safetensors load F32 (${(fs.statSync(f32File).size / 1e6).toFixed(1)} MB file)`;
  const bf16Task = `safetensors load BF16→F32 (${(fs.statSync(bf16File).size / 1e6).toFixed(1)} MB file)`;
  const bytesByTask = { [f32Task]: fs.statSync(f32File).size, [bf16Task]: fs.statSync(bf16File).size };

  let sink = 0;
  const bench = new Bench({ name: 'core checkpoint load', time: 1000, iterations: 5 });
  bench.add(f32Task, () => {
    sink += loadAllF32(f32File);
  });
  bench.add(bf16Task, () => {
    sink += loadAllF32(bf16File);
  });
  try {
    await bench.run();
  } finally {
    fs.rmSync(f32File, { force: true });
    fs.rmSync(bf16File, { force: true });
  }
  if (Number.isNaN(sink)) throw new Error('checkpoint bench produced NaN');
  return { bench, bytes, bytesByTask };
}
