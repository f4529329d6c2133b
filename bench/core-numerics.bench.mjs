/**
 * Hot-path numerics of @mexit/core at GPT-2 vocabulary size (50,257): softmax, the HF logits warper
 * (top-p and top-k) and categorical sampling. Runs against the built package (packages/core/dist).
 * The runner passes tinybench's Bench class; this returns the bench after it has run.
 */
import { LogitsWarper, Rng, sampleCategorical, softmax } from '../packages/core/dist/index.js';

const VOCAB = 50_257;

/** LM-like logits: Gaussian (std 3) with a handful of strongly preferred tokens, fixed seed. */
function makeLogits(seed) {
  const rng = new Rng(seed);
  const logits = new Float32Array(VOCAB);
  for (let i = 0; i < VOCAB; i++) {
    // Box-Muller; 1 - u keeps the log argument in (0, 1].
    const u = 1 - rng.nextFloat();
    const v = rng.nextFloat();
    logits[i] = 3 * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  for (let j = 0; j < 8; j++) logits[rng.nextU32() % VOCAB] += 12 - j;
  return logits;
}

/** @param {typeof import('tinybench').Bench} Bench */
export async function benchCoreNumerics(Bench) {
  const logits = makeLogits(1);
  const out = new Float32Array(VOCAB);
  const history = Int32Array.from({ length: 64 }, (_, i) => (i * 7919) % VOCAB);
  const topPWarper = new LogitsWarper(VOCAB, { topP: 0.9 });
  const topKWarper = new LogitsWarper(VOCAB, { topK: 50 });
  const probs = softmax(logits, new Float32Array(VOCAB));
  const rng = new Rng(2);
  // Consumed after the run so the work cannot be optimised away.
  let sink = 0;

  const bench = new Bench({ name: `core numerics (vocab ${VOCAB})`, time: 500 });
  bench
    .add(`softmax ${VOCAB}`, () => {
      sink += softmax(logits, out)[0];
    })
    .add(`LogitsWarper.probs topP=0.9 ${VOCAB}`, () => {
      sink += topPWarper.probs(logits, history, out)[0];
    })
    .add(`LogitsWarper.probs topK=50 ${VOCAB}`, () => {
      sink += topKWarper.probs(logits, history, out)[0];
    })
    .add(`sampleCategorical ${VOCAB}`, () => {
      sink += sampleCategorical(probs, rng);
    });
  await bench.run();
  if (Number.isNaN(sink)) throw new Error('core numerics bench produced NaN');
  return bench;
}
