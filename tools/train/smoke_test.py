#!/usr/bin/python3
"""Smoke test of the training tool (a few seconds on two cores). Exits non-zero on failure.

  /usr/bin/python3 tools/train/smoke_test.py --out <tmpdir>

Checks, using only files in the repository (fixtures/):
  1. The model code equals HF Llama: logits and every exit's logits of the llama2-tiny and llama32-tiny goldens
     (HF transformers outputs, incl. GQA and untied/tied heads) are reproduced.
  2. `train` (llama3-earlyexit, tiny preset) lowers the validation loss at the final and the early exits.
  3. Stop at step k + `--resume` gives bit-identical weights to an uninterrupted run (model, optimizer, RNG, data).
  4. `export` writes config.json, model.safetensors (F16, tied head not stored), tokenizer files and
     generation_config.json, and the directory loads back with the same outputs (to F16 precision).
  5. `--mode exit-heads` trains heads on the frozen exported base and exports them under IBM's names.
The exported model directory is left at <out>/model (and <out>/model-exitheads) for further checks.
"""
import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.stderr.write('smoke_test: PyTorch is missing. Install it: apt-get install python3-torch libopenblas0-pthread '
                     '(use /usr/bin/python3).\n')
    sys.exit(3)

import train as T  # noqa: E402

FAILURES = []


def check(cond, msg):
    print(('ok   ' if cond else 'FAIL ') + msg, flush=True)
    if not cond:
        FAILURES.append(msg)


def run_cli(*args):
    cmd = [sys.executable, os.path.join(HERE, 'train.py'), *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit(f'smoke_test: command failed: {" ".join(cmd)}')
    return res.stdout


def check_goldens():
    for name in ('llama2-tiny', 'llama32-tiny'):
        d = os.path.join(REPO, 'fixtures', 'goldens', name)
        model, cfg = T.load_hf_dir(d)  # applies llama3 rope scaling (llama32-tiny)
        model.eval()
        g = T.load_safetensors(os.path.join(d, 'goldens.safetensors'))
        n = cfg['num_hidden_layers']
        worst = 0.0
        with torch.no_grad():
            for k in range(3):
                ids = g[f'input_ids_{k}'].long()[None]
                final, hs = model(ids, None, collect=set(range(1, n)))
                logits = model.head(final)[0]
                worst = max(worst, (logits - g[f'logits_{k}']).abs().max().item())
                for l in range(1, n):
                    ex = model.head(model.model.norm(hs[l]))[0]
                    worst = max(worst, (ex - g[f'exit_logits_{k}_{l}']).abs().max().item())
        check(worst < 1e-4, f'{name}: logits and exit logits equal HF goldens (max |diff| {worst:.2e})')


def state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def exit_kl(model, val_ids, seq_len, windows):
    """Mean KL(full-model distribution || exit-1 distribution) per token on validation windows."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        n = min(windows, (len(val_ids) - 1) // seq_len)
        x = torch.stack([val_ids[w * seq_len:(w + 1) * seq_len] for w in range(n)])
        final, hs = model(x, None, collect={1})
        full = F.log_softmax(model.head(final), -1)
        exit1 = F.log_softmax(model.head(model.model.norm(hs[1])), -1)
        total += F.kl_div(exit1, full, log_target=True, reduction='sum').item()
        count += x.shape[0] * x.shape[1]
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True, help='scratch directory (created)')
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)

    check_goldens()

    # Data: the repo's validation slice, tokenized by node + @huggingface/tokenizers with the shipped tokenizer.
    tok_dir = os.path.join(REPO, 'fixtures', 'models', 'tinystories-ee')
    data_dir = os.path.join(out, 'data')
    os.makedirs(data_dir, exist_ok=True)
    all_bin = os.path.join(data_dir, 'all.bin')
    info = T.tokenize_file(tok_dir, os.path.join(REPO, 'fixtures', 'data', 'valid-small.txt'), all_bin)
    ids = T.load_ids(all_bin)
    check(info['stories'] >= 100 and len(ids) > 20000, f'tokenized {info["stories"]} stories, {len(ids)} ids')
    eot = len(json.load(open(os.path.join(tok_dir, 'tokenizer.json')))['model']['vocab']) - 1
    check(int(ids[0]) == eot and int(ids[-1]) == eot, 'stories are delimited by <|endoftext|>')
    cut = int(len(ids) * 0.85)
    train_bin, val_bin = os.path.join(data_dir, 'train.bin'), os.path.join(data_dir, 'val.bin')
    for path, part in ((train_bin, ids[:cut]), (val_bin, ids[cut:])):
        with open(path, 'wb') as f:
            f.write(T.tensor_bytes(part.to(torch.int16)))

    common = ['train', '--preset', 'smoke', '--tokenizer-dir', tok_dir, '--train-bin', train_bin,
              '--val-bin', val_bin, '--batch-size', '8', '--steps', '60', '--lr', '3e-3', '--seed', '7',
              '--exit-token-frac', '0.5', '--val-windows', '16', '--log-every', '20']
    run_a, run_b = os.path.join(out, 'run-a'), os.path.join(out, 'run-b')
    run_cli(*common, '--run-dir', run_a)

    # Loss falls: validation CE of the untrained model (same seed => same init) vs after training.
    state_a = torch.load(os.path.join(run_a, 'ckpt-latest.pt'))
    cfg = state_a['config']
    torch.manual_seed(7)
    untrained = T.LlamaEE(cfg)
    val_ids = T.load_ids(val_bin)
    before = T.evaluate(untrained, val_ids, 64, 16)
    trained = T.LlamaEE(cfg)
    trained.load_state_dict(state_a['model'])
    after = T.evaluate(trained, val_ids, 64, 16)
    n = cfg['num_hidden_layers']
    check(abs(before['ce'][-1] - math.log(cfg['vocab_size'])) < 0.5, f'untrained CE ≈ ln V ({before["ce"][-1]:.3f})')
    check(after['ce'][-1] < before['ce'][-1] - 1.0,
          f'final-exit val CE falls: {before["ce"][-1]:.3f} -> {after["ce"][-1]:.3f}')
    check(all(after['ce'][l] < before['ce'][l] - 0.5 for l in range(n - 1)),
          f'early-exit val CE falls: {T.fmt_list(before["ce"])} -> {T.fmt_list(after["ce"])}')

    # Self-distillation (KL of each exit to the full model) trains the exits to agree with the full model:
    # the shallowest exit agrees more often than under the plain recipe, and the loss still falls.
    run_d = os.path.join(out, 'run-distill')
    run_cli(*common, '--run-dir', run_d, '--ee-scale', '2', '--ee-distill', '1', '--exit-weights', 'uniform')
    distilled = T.LlamaEE(cfg)
    distilled.load_state_dict(torch.load(os.path.join(run_d, 'ckpt-latest.pt'))['model'])
    after_d = T.evaluate(distilled, val_ids, 64, 16)
    check(after_d['ce'][-1] < before['ce'][-1] - 1.0, f'distilled final-exit val CE falls ({after_d["ce"][-1]:.3f})')
    kl_plain, kl_distilled = exit_kl(trained, val_ids, 64, 16), exit_kl(distilled, val_ids, 64, 16)
    check(kl_distilled < kl_plain,
          f'distillation brings exit 1 closer to the full model: KL {kl_plain:.4f} -> {kl_distilled:.4f}')

    # Resume: stop at step 25, resume to 60 => bit-identical to the uninterrupted run.
    run_cli(*common, '--run-dir', run_b, '--stop-at-step', '25')
    check(torch.load(os.path.join(run_b, 'ckpt-latest.pt'))['step'] == 25, 'stopped at step 25')
    run_cli(*common, '--run-dir', run_b, '--resume')
    state_b = torch.load(os.path.join(run_b, 'ckpt-latest.pt'))
    check(state_b['step'] == 60 and state_equal(state_a['model'], state_b['model']),
          'stop + resume gives bit-identical weights')

    # Export and load back.
    model_dir = os.path.join(out, 'model')
    run_cli('export', '--run', run_a, '--out', model_dir)
    for fn in ('config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json',
               'generation_config.json'):
        check(os.path.exists(os.path.join(model_dir, fn)), f'export wrote {fn}')
    xcfg = json.load(open(os.path.join(model_dir, 'config.json')))
    check(xcfg['model_type'] == 'llama' and xcfg['architectures'] == ['LlamaForCausalLM']
          and xcfg['torch_dtype'] == 'float16', 'config.json is an HF Llama config')
    tensors = T.load_safetensors(os.path.join(model_dir, 'model.safetensors'))
    check(all(t.dtype == torch.float16 for t in tensors.values()), 'weights stored as F16')
    expected = {'model.embed_tokens.weight', 'model.norm.weight'} | {
        f'model.layers.{i}.{m}' for i in range(n) for m in (
            'self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight',
            'self_attn.o_proj.weight', 'mlp.gate_proj.weight', 'mlp.up_proj.weight', 'mlp.down_proj.weight',
            'input_layernorm.weight', 'post_attention_layernorm.weight')}
    check(set(tensors) == expected, 'HF LlamaForCausalLM tensor names (tied lm_head not stored)')
    gen = json.load(open(os.path.join(model_dir, 'generation_config.json')))
    check(gen['eos_token_id'] == eot and 'mexit_exit_layer' in gen and 'mexit_num_speculations' in gen,
          'generation_config.json has eos and the mexit draft settings')
    loaded, _ = T.load_hf_dir(model_dir)
    reloaded = T.evaluate(loaded, val_ids, 64, 16)
    check(abs(reloaded['ce'][-1] - after['ce'][-1]) < 0.02,
          f'exported model reloads (val CE {reloaded["ce"][-1]:.4f} vs {after["ce"][-1]:.4f})')

    # Exit heads on the frozen exported base.
    run_h = os.path.join(out, 'run-heads')
    run_cli('train', '--mode', 'exit-heads', '--base', model_dir, '--exit-layers', '2,4', '--preset', 'smoke',
            '--head-init', 'random',
            '--tokenizer-dir', tok_dir, '--train-bin', train_bin, '--val-bin', val_bin, '--batch-size', '8',
            '--steps', '30', '--lr', '3e-3', '--seed', '7', '--val-windows', '8', '--run-dir', run_h)
    heads_dir = os.path.join(out, 'model-exitheads')
    run_cli('export', '--run', run_h, '--out', heads_dir)
    hcfg = json.load(open(os.path.join(heads_dir, 'config.json')))
    ht = T.load_safetensors(os.path.join(heads_dir, 'model.safetensors'))
    d, vocab = hcfg['hidden_size'], hcfg['vocab_size']
    check(hcfg.get('lm_head_layer_indices') == [2, 4], 'config.json lists lm_head_layer_indices [2, 4]')
    check(all(list(ht[f'name_to_lm_exit_head.lm_head_{l}.weight'].shape) == [vocab, d] for l in (2, 4)),
          'exit heads stored as name_to_lm_exit_head.lm_head_<l>.weight [V, d]')
    check(all(torch.equal(ht[k], tensors[k]) for k in tensors), 'base weights unchanged by exit-head training')
    # Heads start random (CE ≈ ln V); after training their CE must approach the shared head's (logit lens).
    with torch.no_grad():
        x = val_ids[:8 * 65].reshape(8, 65)
        final, hs = loaded(x[:, :-1], None, collect={2})
        tgt = x[:, 1:].reshape(-1)
        normed2 = loaded.model.norm(hs[2]).reshape(-1, d)
        ce_shared = torch.nn.functional.cross_entropy(loaded.head(normed2), tgt).item()
        w2 = ht['name_to_lm_exit_head.lm_head_2.weight'].float()
        ce_head = torch.nn.functional.cross_entropy(normed2 @ w2.t(), tgt).item()
    check(ce_head < math.log(vocab) - 0.8 and ce_head < ce_shared + 0.8,
          f'exit head 2 trained from random: val CE {ce_head:.3f} (ln V {math.log(vocab):.3f}, shared head {ce_shared:.3f})')

    if FAILURES:
        print(f'smoke_test: {len(FAILURES)} check(s) failed', flush=True)
        sys.exit(1)
    print('smoke_test: all checks passed', flush=True)


if __name__ == '__main__':
    main()
