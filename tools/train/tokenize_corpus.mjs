// Tokenizes a TinyStories-style text file (stories separated by lines "<|endoftext|>") with the exact
// @huggingface/tokenizers implementation the engine uses, so training ids equal engine ids by construction.
// Usage: node tools/train/tokenize_corpus.mjs <tokenizer-dir> <input.txt> <output.bin> [maxStories]
// Output: little-endian uint16 ids: [eot, story1..., eot, story2..., ..., eot].
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
// The package is a dependency of packages/model; resolve it from there.
const requireFromModel = createRequire(path.join(here, '../../packages/model/package.json'));
const { Tokenizer } = requireFromModel('@huggingface/tokenizers');

const [tokDir, inputPath, outputPath, maxStoriesArg] = process.argv.slice(2);
if (!tokDir || !inputPath || !outputPath) {
  console.error('usage: tokenize_corpus.mjs <tokenizer-dir> <input.txt> <output.bin> [maxStories]');
  process.exit(2);
}
const tokenizerJson = JSON.parse(readFileSync(path.join(tokDir, 'tokenizer.json'), 'utf8'));
const tokenizerConfig = JSON.parse(readFileSync(path.join(tokDir, 'tokenizer_config.json'), 'utf8'));
const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
// Story separator id: <|endoftext|> when the tokenizer has it (the shipped tokenizer), else the tokenizer's
// eos_token (e.g. Llama's </s> or <|end_of_text|>, for `--init` checkpoints).
const eosOf = (c) => (typeof c.eos_token === 'string' ? c.eos_token : c.eos_token?.content);
const idOf = (content) =>
  (tokenizerJson.added_tokens ?? []).find((t) => t.content === content)?.id ?? tokenizerJson.model?.vocab?.[content];
const eotId = idOf('<|endoftext|>') ?? (eosOf(tokenizerConfig) !== undefined ? idOf(eosOf(tokenizerConfig)) : undefined);
if (!Number.isInteger(eotId)) {
  console.error(`${tokDir}: no <|endoftext|> token and no eos_token in tokenizer_config.json to separate stories with`);
  process.exit(2);
}

const maxStories = maxStoriesArg ? Number(maxStoriesArg) : Infinity;
const text = readFileSync(inputPath, 'utf8');
const stories = text
  .split(/^<\|endoftext\|>$/m)
  .map((s) => s.trim())
  .filter((s) => s.length > 0);
const ids = [eotId];
let count = 0;
for (const story of stories) {
  if (count >= maxStories) break;
  const storyIds = tokenizer.encode(story, { add_special_tokens: false }).ids;
  for (const id of storyIds) {
    if (id < 0 || id > 65535) throw new Error(`id ${id} does not fit uint16`);
    ids.push(id);
  }
  ids.push(eotId);
  count++;
}
const out = new Uint16Array(ids);
writeFileSync(outputPath, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
console.log(JSON.stringify({ stories: count, tokens: out.length, bytes: text.length, output: outputPath }));
