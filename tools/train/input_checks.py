#!/usr/bin/python3
"""Checks of --init reading and of bad input (a few seconds; run by packages/speculative/test/train-init.test.ts).

  /usr/bin/python3 tools/train/input_checks.py --out <tmpdir>

  1. read_hf_dir: a sharded (model.safetensors.index.json) BF16 / F16 copy of a golden Llama directory reads
     back as exactly the rounded tensors, and the model built from it reproduces the golden logits (to the
     precision of the storage dtype).
  2. Bad input, each refused with a clear message before any training step (the CLI is run; no step line is
     logged and no checkpoint is written): --init on a non-Llama / malformed directory, a tokenizer whose
     vocabulary does not match the checkpoint, a token file smaller than one batch, ids outside the vocabulary,
     a resume from a checkpoint of another config.
  3. The curricula's schedules (layer dropout S(t)·D(l)·p_max, early-exit loss scales, rotational and gradual
     exit curricula) at unit level.
Exits non-zero on failure.
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import train as T  # noqa: E402

FAILURES = []


def check(cond, msg):
    print(('ok   ' if cond else 'FAIL ') + msg, flush=True)
    if not cond:
        FAILURES.append(msg)


def refused(fn, needle):
    """fn() raises SystemExit whose message contains needle."""
    try:
        fn()
    except SystemExit as e:
        return needle in str(e), str(e)
    return False, 'no error'


def run_cli(*args):
    res = subprocess.run([sys.executable, os.path.join(HERE, 'train.py'), *args], capture_output=True, text=True)
    return res.returncode, res.stdout + res.stderr


def cli_refused(name, needle, run_dir, *args):
    code, out = run_cli(*args, '--run-dir', run_dir)
    no_step = 'step 1/' not in out and ' step 1 ' not in out and 'checkpoint step' not in out
    check(code != 0 and needle in out and no_step and not os.path.exists(os.path.join(run_dir, 'ckpt-latest.pt')),
          f'{name}: refused before any step ({out.strip().splitlines()[-1] if out.strip() else "no output"})')


def write_sharded(src, dst, dtype, shards=3):
    cfg, tensors = T.read_hf_dir(src)
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, 'config.json'), os.path.join(dst, 'config.json'))
    names = sorted(tensors)
    weight_map = {}
    for k in range(shards):
        part = {n: tensors[n].to(dtype) for n in names[k::shards]}
        fn = f'model-{k + 1:05d}-of-{shards:05d}.safetensors'
        T.save_safetensors(part, os.path.join(dst, fn), metadata={'format': 'pt'})
        weight_map.update({n: fn for n in part})
    with open(os.path.join(dst, 'model.safetensors.index.json'), 'w') as f:
        json.dump({'metadata': {}, 'weight_map': weight_map}, f)
    return tensors


def check_reader(out):
    for name in ('llama2-tiny', 'llama32-tiny'):
        src = os.path.join(REPO, 'fixtures', 'goldens', name)
        g = T.load_safetensors(os.path.join(src, 'goldens.safetensors'))
        for dtype, tol in ((torch.bfloat16, 0.5), (torch.float16, 0.05)):
            dst = os.path.join(out, f'{name}-sharded-{str(dtype).split(".")[-1]}')
            orig = write_sharded(src, dst, dtype)
            cfg, back = T.read_hf_dir(dst)
            check(back.keys() == orig.keys() and all(torch.equal(back[k], orig[k].to(dtype).float()) for k in orig),
                  f'{name}: sharded {dtype} copy reads back as the rounded tensors ({len(back)} tensors, 3 shards)')
            model, _ = T.load_hf_dir(dst)
            model.eval()
            with torch.no_grad():
                ids = g['input_ids_0'].long()[None]
                final, _ = model(ids)
                diff = (model.head(final)[0] - g['logits_0']).abs().max().item()
            check(diff < tol, f'{name}: {dtype} sharded model reproduces the golden logits (max |diff| {diff:.3g} < {tol})')


def check_bad_input(out):
    llama = os.path.join(REPO, 'fixtures', 'goldens', 'llama2-tiny')
    bad = os.path.join(out, 'bad')
    os.makedirs(bad, exist_ok=True)

    def mk(name, files):
        d = os.path.join(bad, name)
        os.makedirs(d, exist_ok=True)
        for fn, content in files.items():
            with open(os.path.join(d, fn), 'wb' if isinstance(content, bytes) else 'w') as f:
                f.write(content)
        return d

    cfg_text = open(os.path.join(llama, 'config.json')).read()
    weights = open(os.path.join(llama, 'model.safetensors'), 'rb').read()
    cases = [
        ('not a directory', os.path.join(bad, 'missing'), 'not a directory'),
        ('no config.json', mk('noconfig', {'model.safetensors': weights}), 'no config.json'),
        ('config.json not JSON', mk('badjson', {'config.json': '{"model_type": "llama",'}), 'not valid JSON'),
        ('non-Llama (GPT-2)', os.path.join(REPO, 'fixtures', 'goldens', 'gpt2-tiny'), 'not a Llama checkpoint'),
        ('missing hidden_size', mk('nohidden', {'config.json': json.dumps({k: v for k, v in json.loads(cfg_text).items()
                                                                          if k != 'hidden_size'})}), 'hidden_size'),
        ('no weights', mk('noweights', {'config.json': cfg_text}), 'no model.safetensors'),
        ('truncated safetensors', mk('truncated', {'config.json': cfg_text, 'model.safetensors': weights[:1000]}),
         'not a readable safetensors'),
        ('index naming a missing shard', mk('badindex', {'config.json': cfg_text, 'model.safetensors.index.json':
                                                         json.dumps({'weight_map': {'a': 'model-00001-of-00002.safetensors'}})}),
         'is missing'),
        ('malformed index', mk('badindex2', {'config.json': cfg_text, 'model.safetensors.index.json': '[1, 2]'}),
         'malformed model.safetensors.index.json'),
    ]
    for name, d, needle in cases:
        ok, msg = refused(lambda: T.read_hf_dir(d), needle)
        check(ok, f'--init {name}: {msg}')
    # Weights of another shape than config.json implies.
    wrong = json.loads(cfg_text)
    wrong['intermediate_size'] = 128
    d = mk('wrongshape', {'config.json': json.dumps(wrong), 'model.safetensors': weights})
    ok, msg = refused(lambda: T.load_hf_dir(d), 'has shape')
    check(ok, f'--init weights that do not match config.json: {msg}')

    # Through the CLI: nothing trains.
    tok = os.path.join(REPO, 'fixtures', 'models', 'tinystories-ee')
    ids = T.load_ids(os.path.join(out, 'ids512.bin'))
    small = os.path.join(out, 'small.bin')
    with open(small, 'wb') as f:
        f.write(T.tensor_bytes(ids[:3 * 65].to(torch.int16)))
    big_ids = os.path.join(out, 'ids2048.bin')
    with open(big_ids, 'wb') as f:
        f.write(T.tensor_bytes((ids + 1536).to(torch.int16)))
    base = ['train', '--train-bin', os.path.join(out, 'ids512.bin'), '--seq-len', '64', '--batch-size', '4',
            '--steps', '3', '--threads', '1']
    cli_refused('--init GPT-2 directory', 'not a Llama checkpoint', os.path.join(bad, 'r1'), *base, '--init',
                os.path.join(REPO, 'fixtures', 'goldens', 'gpt2-tiny'))
    cli_refused('tokenizer of another vocabulary', 'does not belong to this checkpoint', os.path.join(bad, 'r2'), *base,
                '--init', llama, '--tokenizer-dir', tok)
    cli_refused('token file smaller than one batch', 'fewer than one batch', os.path.join(bad, 'r3'),
                *[a if a != os.path.join(out, 'ids512.bin') else small for a in base], '--init', llama)
    cli_refused('ids outside the vocabulary', 'outside the model\'s vocabulary', os.path.join(bad, 'r4'),
                *[a if a != os.path.join(out, 'ids512.bin') else big_ids for a in base], '--init', llama)
    # Resume from a checkpoint of another config.
    r5 = os.path.join(bad, 'r5')
    code, log = run_cli(*base, '--init', llama, '--run-dir', r5)
    check(code == 0 and os.path.exists(os.path.join(r5, 'ckpt-latest.pt')), 'a 3-step run from --init trains')
    for name, extra, needle in (
            ('another model', ['--preset', 'smoke', '--tokenizer-dir', tok], "--init None (checkpoint:"),
            ('another batch size', ['--init', llama, '--batch-size', '8'], '--batch-size 8 (checkpoint: 4)'),
            ('another --init', ['--init', os.path.join(REPO, 'fixtures', 'goldens', 'llama32-tiny')], '--init')):
        args = base[:base.index('--batch-size')] + base[base.index('--batch-size') + 2:] if '--batch-size' in extra else base
        code, log = run_cli(*args, *extra, '--run-dir', r5, '--resume')
        check(code != 0 and 'another config' in log and needle in log and 'step 4/' not in log,
              f'resume with {name}: refused ({log.strip().splitlines()[-1] if log.strip() else ""})')


def make_tokenized_init(out):
    """<out>/llama2-tiny-tok: the llama2-tiny golden with a 512-id tokenizer (the shipped tokenizer cut to its first
    255 merges, <|endoftext|> = 511 = eos), and the validation slice tokenized with it (<out>/tok512.bin): a
    Llama directory with tokenizer files, for continual pretraining on text."""
    src = os.path.join(REPO, 'fixtures', 'goldens', 'llama2-tiny')
    dst = os.path.join(out, 'llama2-tiny-tok')
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, 'model.safetensors'), os.path.join(dst, 'model.safetensors'))
    cfg = json.load(open(os.path.join(src, 'config.json')))
    cfg['bos_token_id'] = cfg['eos_token_id'] = 511
    json.dump(cfg, open(os.path.join(dst, 'config.json'), 'w'), indent=2)
    tok_src = os.path.join(REPO, 'fixtures', 'models', 'tinystories-ee')
    tj = json.load(open(os.path.join(tok_src, 'tokenizer.json'), encoding='utf-8'))
    n = 255
    tj['model']['merges'] = tj['model']['merges'][:n]
    tj['model']['vocab'] = {t: i for t, i in tj['model']['vocab'].items() if i < 256 + n}
    tj['model']['vocab'][T.EOT] = 256 + n
    tj['added_tokens'] = [{**t, 'id': 256 + n} for t in tj['added_tokens'] if t['content'] == T.EOT]
    json.dump(tj, open(os.path.join(dst, 'tokenizer.json'), 'w', encoding='utf-8'), ensure_ascii=False)
    tc = json.load(open(os.path.join(tok_src, 'tokenizer_config.json'), encoding='utf-8'))
    tc['added_tokens_decoder'] = {str(256 + n): tc['added_tokens_decoder'][next(iter(tc['added_tokens_decoder']))]}
    json.dump(tc, open(os.path.join(dst, 'tokenizer_config.json'), 'w', encoding='utf-8'), ensure_ascii=False, indent=2)
    all_bin = os.path.join(out, 'tok512-all.bin')
    T.tokenize_file(dst, os.path.join(REPO, 'fixtures', 'data', 'valid-small.txt'), all_bin)
    ids = T.load_ids(all_bin)
    cut = int(len(ids) * 0.85)
    for name, part in (('tok512-train.bin', ids[:cut]), ('tok512-val.bin', ids[cut:])):
        with open(os.path.join(out, name), 'wb') as f:
            f.write(T.tensor_bytes(part.to(torch.int16)))
    check(int(ids.max()) == 511 and len(ids) > 40000, f'llama2-tiny-tok: 512-id tokenizer, {len(ids)} ids of text')


def check_devices(out):
    """--grad-accum, --activation-checkpointing and --precision bf16 (CPU autocast here; GPU untested)."""
    tok = os.path.join(REPO, 'fixtures', 'models', 'tinystories-ee')
    data = os.path.join(out, 'ids512-train.bin')
    # Without layer dropout and with every exit position, a step uses no random draws: N micro-batches of
    # B/N rows must give the full batch's update (up to float rounding of the summed gradients).
    base = ['train', '--preset', 'smoke', '--tokenizer-dir', tok, '--train-bin', data, '--batch-size', '8',
            '--steps', '10', '--lr', '3e-3', '--seed', '9', '--layer-drop-max', '0', '--log-every', '5', '--threads', '1']
    states = {}
    for name, extra in (('plain', []), ('accum', ['--grad-accum', '4']), ('ckpt', ['--activation-checkpointing']),
                        ('ckpt-drop', ['--activation-checkpointing', '--layer-drop-max', '0.5', '--exit-token-frac', '0.5']),
                        ('drop', ['--layer-drop-max', '0.5', '--exit-token-frac', '0.5']),
                        ('bf16', ['--precision', 'bf16'])):
        run = os.path.join(out, f'dev-{name}')
        code, log = run_cli(*base, *extra, '--run-dir', run)
        check(code == 0, f'--{name}: trains ({log.strip().splitlines()[-1] if log.strip() else ""})')
        states[name] = torch.load(os.path.join(run, 'ckpt-latest.pt'))['model'] if code == 0 else None
        if name == 'accum':
            check('batch 8 (world 1 × accum 4 × micro 2)' in log and ' tok/s ' in log and ' rss ' in log,
                  'log lines show world × accum × micro, tok/s and rss')
    if all(states.values()):
        diff = max((states['plain'][k] - states['accum'][k]).abs().max().item() for k in states['plain'])
        check(diff < 1e-4, f'--grad-accum 4 equals the full batch up to rounding (max |Δw| {diff:.2e})')
        same = all(torch.equal(states['plain'][k], states['ckpt'][k]) for k in states['plain'])
        check(same, '--activation-checkpointing gives bit-identical weights')
        same = all(torch.equal(states['drop'][k], states['ckpt-drop'][k]) for k in states['drop'])
        check(same, '--activation-checkpointing with layer dropout gives bit-identical weights')
        diff = max((states['plain'][k] - states['bf16'][k]).abs().max().item() for k in states['plain'])
        dtypes = {v.dtype for v in states['bf16'].values()}
        check(dtypes == {torch.float32} and 0 < diff < 0.05,
              f'--precision bf16 keeps f32 master weights, close to f32 training (max |Δw| {diff:.2e})')
    code, log = run_cli(*base, '--grad-accum', '3', '--run-dir', os.path.join(out, 'dev-bad'))
    check(code != 0 and 'not divisible by world size 1 × --grad-accum 3' in log, '--grad-accum that does not divide the batch: refused')


def close(a, b, tol=1e-12):
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def check_curricula(out):
    """The LayerSkip / torchtune schedules, value by value."""
    L = 8
    # D(l) exponential: e^{l ln2/(L-1)} - 1, 0 at the first block, 1 at the last; S(t) constant = 1.
    p = T.layer_drop_probs(L, 0.2, 'exponential', 'constant', 0.37)
    want = [0.2 * (2 ** (l / (L - 1)) - 1) for l in range(L)]
    check(close(p, want) and p[0] == 0.0 and abs(p[-1] - 0.2) < 1e-12 and all(a < b for a, b in zip(p, p[1:])),
          f'layer dropout D(l) exponential, S constant: {T.fmt_list(p)}')
    # S(t) exponential: 2^p - 1 from 0 (start) to 1 (end); at p = 1/2, √2 - 1.
    for prog, s in ((0.0, 0.0), (0.5, math.sqrt(2) - 1), (1.0, 1.0)):
        q = T.layer_drop_probs(L, 0.2, 'exponential', 'exponential', prog)
        check(close(q, [s * w for w in want]), f'layer dropout S(t) exponential at progress {prog}: S = {s:.4f}')
    # The seed recipe is unchanged: (l/L)², last block never drops.
    check(close(T.layer_drop_probs(4, 0.5), [0.0, 0.5 / 16, 0.5 / 4, 0.0]), 'seed recipe: p_l = 0.5·(l/L)², last block 0')
    check(close(T.layer_drop_probs(5, 0.3, 'linear'), [0.0, 0.075, 0.15, 0.225, 0.3]) and
          close(T.layer_drop_probs(3, 0.3, 'uniform'), [0.3] * 3), 'layer dropout D(l) linear and uniform')
    # Early-exit loss scales, normalised over the active exits.
    ex = [1, 2, 3]
    check(close(list(T.exit_weights(ex, 'uniform').values()), [1 / 3] * 3), 'exit scales uniform: 1/3 each')
    check(close(list(T.exit_weights(ex, 'linear').values()), [1 / 6, 2 / 6, 3 / 6]), 'exit scales linear: l / Σ l')
    check(close(list(T.exit_weights(ex, 'sum-l').values()), [1 / 10, 3 / 10, 6 / 10]),
          'exit scales sum-l: (1+…+l) / Σ = 1/10, 3/10, 6/10')
    w = T.exit_weights([1, 2, 3, 4], 'sum-l', focus=2, focus_weight=0.5)
    check(abs(w[2] - 0.5) < 1e-12 and abs(sum(w.values()) - 1) < 1e-12, 'exit focus combines with sum-l')
    # Rotational: every R-th exit, rotating; over R consecutive steps each exit trains exactly once.
    R = 3
    seen = [T.active_exits(L, t, R, 'rotational') for t in range(R)]
    check(sorted(sum(seen, [])) == list(range(1, L)) and all(len(s) >= 2 for s in seen),
          f'rotational R = 3: {seen} covers every exit once per 3 steps')
    check(T.active_exits(L, 5, 1, 'all') == list(range(1, L)), 'all: every exit every step')
    # Gradual: last exit first, one more every 1/(2L) of training, all from progress ≈ 1/2.
    g = [T.active_exits(L, 0, 1, 'gradual', k / (2 * L)) for k in range(L + 1)]
    check(g[0] == [L - 1] and g[1] == [L - 2, L - 1] and g[L - 2] == list(range(1, L)) and g[L] == list(range(1, L))
          and all(set(a) <= set(b) for a, b in zip(g, g[1:])),
          f'gradual: {[len(x) for x in g]} exits on at progress k/(2L), last exit first')
    # Through the CLI: a pretraining-style run (exponential S(t), D(l)) with the gradual curriculum, sum-l
    # scales and self-distillation trains, and the log shows the schedule moving.
    tok = os.path.join(REPO, 'fixtures', 'models', 'tinystories-ee')
    run = os.path.join(out, 'curriculum')
    code, log = run_cli('train', '--preset', 'smoke', '--tokenizer-dir', tok, '--train-bin',
                        os.path.join(out, 'ids512-train.bin'), '--batch-size', '8', '--steps', '16', '--log-every', '4',
                        '--threads', '1', '--layer-drop-depth', 'exponential', '--layer-drop-time', 'exponential',
                        '--layer-drop-max', '0.2', '--exit-curriculum', 'gradual', '--exit-weights', 'sum-l',
                        '--ee-scale', '1', '--ee-distill', '1', '--run-dir', run)
    ons = [int(m) for m in re.findall(r'exits_on (\d+)', log)]
    drops = [float(m) for m in re.findall(r'drop_max_now ([0-9.]+)', log)]
    # logged at steps 4, 8, 12, 16 (the exits of step indices 3, 7, 11, 15: progress 0.2 → 1 + ⌊8·0.2⌋ = 2 on)
    check(code == 0 and ons == [2, 3, 3, 3] and drops == sorted(drops) and drops[0] < drops[-1] <= 0.2,
          f'CLI: gradual + exponential S(t) + sum-l + distillation trains (exits on {ons}, max p {drops})')
    code, log = run_cli('train', '--preset', 'smoke', '--tokenizer-dir', tok, '--train-bin',
                        os.path.join(out, 'ids512-train.bin'), '--batch-size', '8', '--steps', '2', '--threads', '1',
                        '--exit-curriculum', 'rotational', '--run-dir', os.path.join(out, 'curriculum-bad'))
    check(code != 0 and 'needs --exit-rotation' in log, 'rotational without --exit-rotation: refused')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--only', choices=['reader', 'bad-input', 'devices', 'curricula'])
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    if not os.path.exists(os.path.join(out, 'ids512-val.bin')):
        # Learnable ids below 512 (the goldens' vocabulary): TinyStories ids of the validation slice, mod 512.
        all_bin = os.path.join(out, 'all.bin')
        T.tokenize_file(os.path.join(REPO, 'fixtures', 'models', 'tinystories-ee'),
                        os.path.join(REPO, 'fixtures', 'data', 'valid-small.txt'), all_bin)
        ids = T.load_ids(all_bin) % 512
        cut = int(len(ids) * 0.85)
        for name, part in (('ids512.bin', ids), ('ids512-train.bin', ids[:cut]), ('ids512-val.bin', ids[cut:])):
            with open(os.path.join(out, name), 'wb') as f:
                f.write(T.tensor_bytes(part.to(torch.int16)))
    if args.only in (None, 'reader'):
        make_tokenized_init(out)
        check_reader(out)
    if args.only in (None, 'bad-input'):
        check_bad_input(out)
    if args.only in (None, 'devices'):
        check_devices(out)
    if args.only in (None, 'curricula'):
        check_curricula(out)
    if FAILURES:
        print(f'input_checks: {len(FAILURES)} check(s) failed', flush=True)
        sys.exit(1)
    print('input_checks: all checks passed', flush=True)


if __name__ == '__main__':
    main()
