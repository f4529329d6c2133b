#!/usr/bin/python3
"""Early-exit training tool for mexit (PyTorch 1.13+: CPU or CUDA, one process or torchrun DDP).

Sub-commands:
  prepare  build the restricted GPT-2 BPE tokenizer files and tokenize the corpus (via node, see tokenize_corpus.mjs)
  train    train a Llama model with the "llama3-earlyexit" recipe (layer dropout + early-exit loss; from scratch
           or --init from an HF Llama directory; LayerSkip curricula), or (--mode exit-heads) train
           layer-specific exit heads on a frozen base (IBM multi-exit recipe). Under torchrun: DDP.
  export   write an HF-style directory (config.json, model.safetensors F16, tokenizer files,
           generation_config.json) from a run's latest checkpoint; --sweep measures (E, d) in the engine

See tools/train/README.md.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import time


def _threads_from_argv(argv):
    for i, a in enumerate(argv):
        if a == '--threads' and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith('--threads='):
            return a.split('=', 1)[1]
    return '1'


# OpenBLAS (Debian's torch) ignores torch.set_num_threads and spin-waits on its own pthreads, which is several
# times slower when the two cores are shared; pin it to --threads before torch loads it.
os.environ.setdefault('OPENBLAS_NUM_THREADS', _threads_from_argv(sys.argv))
os.environ.setdefault('OMP_NUM_THREADS', _threads_from_argv(sys.argv))

import torch  # noqa: E402
import torch.distributed as dist
import torch.nn as nn
import torch.utils.checkpoint
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EOT = '<|endoftext|>'

# ----------------------------------------------------------------------------------------------------------
# Tokenizer files


def build_tokenizer(gpt2_dir, num_merges, out_dir, model_max_length):
    """Writes tokenizer.json / tokenizer_config.json for GPT-2's BPE restricted to its first num_merges merges.

    Ids 0..255 are GPT-2's byte symbols and id 256+k is merge k, so the ids equal GPT-2's; <|endoftext|> gets
    id 256+num_merges (the last id)."""
    with open(os.path.join(gpt2_dir, 'vocab.json'), encoding='utf-8') as f:
        full_vocab = json.load(f)
    with open(os.path.join(gpt2_dir, 'merges.txt'), encoding='utf-8') as f:
        merge_lines = [ln.rstrip('\n') for ln in f if ln.strip() and not ln.startswith('#version')]
    merges = merge_lines[:num_merges]
    vocab_size = 256 + num_merges + 1
    vocab = {tok: i for tok, i in full_vocab.items() if i < 256 + num_merges}
    if len(vocab) != 256 + num_merges:
        raise SystemExit('unexpected GPT-2 vocab layout')
    for k, m in enumerate(merges):
        a, b = m.split(' ')
        if vocab.get(a + b) != 256 + k or a not in vocab or b not in vocab:
            raise SystemExit(f'merge {k} ({m}) does not produce id {256 + k}')
    eot_id = 256 + num_merges
    vocab[EOT] = eot_id
    tokenizer = {
        'version': '1.0',
        'truncation': None,
        'padding': None,
        'added_tokens': [{'id': eot_id, 'content': EOT, 'single_word': False, 'lstrip': False, 'rstrip': False,
                          'normalized': False, 'special': True}],
        'normalizer': None,
        'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True},
        'post_processor': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': False, 'use_regex': True},
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': '',
                  'end_of_word_suffix': '', 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': merges},
    }
    # Plain concatenation: TinyStories is not a chat corpus; a system message becomes a preamble paragraph.
    chat_template = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
                     "{{ message['content'] + '\\n\\n' }}{% else %}{{ message['content'] }}{% endif %}{% endfor %}")
    tok_config = {
        'add_bos_token': False,
        'add_prefix_space': False,
        'bos_token': EOT,
        'eos_token': EOT,
        'unk_token': EOT,
        'pad_token': None,
        'clean_up_tokenization_spaces': False,
        'model_max_length': model_max_length,
        'tokenizer_class': 'GPT2Tokenizer',
        'chat_template': chat_template,
        'added_tokens_decoder': {str(eot_id): {'content': EOT, 'lstrip': False, 'normalized': False,
                                               'rstrip': False, 'single_word': False, 'special': True}},
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'tokenizer.json'), 'w', encoding='utf-8') as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
    with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(tok_config, f, ensure_ascii=False, indent=2)
    return vocab_size, eot_id


def tokenize_file(tok_dir, text_path, bin_path, max_stories=None):
    """Tokenizes with node + @huggingface/tokenizers (the engine's own tokenizer) into a uint16 file."""
    cmd = ['node', os.path.join(HERE, 'tokenize_corpus.mjs'), tok_dir, text_path, bin_path]
    if max_stories:
        cmd.append(str(max_stories))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_ids(bin_path):
    with open(bin_path, 'rb') as f:
        raw = f.read()
    # uint16 little-endian; ids < 32768 so int16 reinterpretation is exact.
    t = torch.frombuffer(bytearray(raw), dtype=torch.int16).to(torch.long)
    if (t < 0).any():
        raise SystemExit(f'{bin_path}: ids >= 32768 not supported')
    return t


# ----------------------------------------------------------------------------------------------------------
# Model (HF Llama semantics)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg['num_attention_heads']
        self.n_kv = cfg['num_key_value_heads']
        self.head_dim = cfg['hidden_size'] // self.n_heads
        d = cfg['hidden_size']
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin  # RoPE before repeat_kv, as HF
        k = k * cos + rotate_half(k) * sin
        group = self.n_heads // self.n_kv
        if group > 1:  # query head h uses kv head h // group
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)) + mask
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, ff = cfg['hidden_size'], cfg['intermediate_size']
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg['hidden_size'], cfg['rms_norm_eps'])
        self.post_attention_layernorm = RMSNorm(cfg['hidden_size'], cfg['rms_norm_eps'])

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg['vocab_size'], cfg['hidden_size'])
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg['num_hidden_layers'])])
        self.norm = RMSNorm(cfg['hidden_size'], cfg['rms_norm_eps'])


class LlamaEE(nn.Module):
    """LlamaForCausalLM with per-sample layer dropout and access to every exit's hidden state."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg['hidden_size'], cfg['vocab_size'], bias=False)
        if cfg['tie_word_embeddings']:
            self.lm_head.weight = self.model.embed_tokens.weight
        hd = cfg['hidden_size'] // cfg['num_attention_heads']
        inv_freq = 1.0 / (cfg['rope_theta'] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        rs = cfg.get('rope_scaling')
        if rs and (rs.get('rope_type') or rs.get('type')) == 'llama3':
            inv_freq = llama3_inv_freq(inv_freq, rs)
        self.register_buffer('inv_freq', inv_freq, persistent=False)
        self.activation_checkpointing = False
        self._init_weights()

    def run_block(self, layer, x, cos, sin, mask):
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Recompute the block in backward instead of storing its activations (non-reentrant: DDP-safe).
            return torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
        return layer(x, cos, sin, mask)

    def _init_weights(self):
        std = 0.02
        n_layers = self.cfg['num_hidden_layers']
        for name, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * n_layers) if name.endswith(('o_proj.weight', 'down_proj.weight')) else std
                nn.init.normal_(p, 0.0, s)

    def rope(self, t):
        pos = torch.arange(t, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def forward(self, ids, drop_probs=None, collect=None):
        """Returns (final normed hidden, {layer l (1-based): raw hidden after block l} for l in collect)."""
        b, t = ids.shape
        x = self.model.embed_tokens(ids)
        cos, sin = self.rope(t)
        mask = torch.full((t, t), float('-inf'), device=ids.device).triu(1)
        collected = {}
        n_layers = len(self.model.layers)
        for i, layer in enumerate(self.model.layers):
            p = drop_probs[i] if drop_probs is not None else 0.0
            if p > 0.0:
                keep = torch.rand(b) >= p  # CPU generator on every device: the same draws on CPU and GPU
                idx = keep.nonzero().squeeze(1).to(x.device)
                if idx.numel() == b:
                    x = self.run_block(layer, x, cos, sin, mask)
                elif idx.numel() > 0:  # dropped samples skip the block's residual update entirely
                    x = x.index_copy(0, idx, self.run_block(layer, x.index_select(0, idx), cos, sin, mask))
            else:
                x = self.run_block(layer, x, cos, sin, mask)
            if collect is not None and (i + 1) in collect and (i + 1) < n_layers:
                collected[i + 1] = x
        return self.model.norm(x), collected

    def head(self, normed):
        return self.lm_head(normed)


def layer_drop_probs(n_layers, p_max, depth='quadratic', time='constant', progress=0.0):
    """Per-block layer-dropout probabilities p_{l,t} = S(t)·D(l)·p_max, l = 0..L-1 (block index).

    depth D(l): 'quadratic' (the llama3-earlyexit seed recipe: D = (l/L)², and the last block never drops),
    'exponential' (LayerSkip: D = e^{l·ln2/(L−1)} − 1, from 0 at the first block to 1 at the last), 'linear'
    (l/(L−1)) or 'uniform' (1 for every block). time S(t): 'constant' (1: LayerSkip's finetuning / continual
    pretraining setting) or 'exponential' (LayerSkip's pretraining from scratch: S = e^{t·ln2/(T−1)} − 1 = 2^p − 1
    with p = t/(T−1) the training progress, from 0 to 1)."""
    L = n_layers
    if depth == 'quadratic':
        dl = [(l / L) ** 2 for l in range(L)]
    elif depth == 'exponential':
        dl = [math.exp(l * math.log(2) / (L - 1)) - 1 if L > 1 else 0.0 for l in range(L)]
    elif depth == 'linear':
        dl = [l / (L - 1) if L > 1 else 0.0 for l in range(L)]
    elif depth == 'uniform':
        dl = [1.0] * L
    else:
        raise ValueError(f'layer-drop depth {depth!r}')
    st = 1.0 if time == 'constant' else 2.0 ** min(1.0, max(0.0, progress)) - 1.0
    probs = [min(1.0, st * d * p_max) for d in dl]
    if depth == 'quadratic':
        probs[-1] = 0.0
    return probs


def active_exits(n_layers, step, rotation, curriculum='all', progress=0.0):
    """Early exits (1-based block outputs, < L) trained at this step.

    'all' (rotation <= 1): every exit every step. 'rotational' (or 'all' with rotation R > 1, as before): every
    R-th exit, the offset moving each step (LayerSkip's C_rot: exit l at step t iff (l + t) mod R = 0).
    'gradual' (LayerSkip's C_grad): exits are switched on from the last to the first, one more every 1/(2L) of
    training (p = progress in [0, 1]): at p the exits l ≥ L − min(L−1, 1 + ⌊2L·p⌋) train, all of them from p ≈ ½."""
    exits = list(range(1, n_layers))
    if curriculum == 'gradual':
        n_on = min(n_layers - 1, 1 + int(2 * n_layers * min(1.0, max(0.0, progress))))
        return [l for l in exits if l >= n_layers - n_on]
    if rotation <= 1:
        return exits
    return [l for l in exits if (l + step) % rotation == 0]


def exit_weights(exits, scheme='linear', focus=0, focus_weight=0.0):
    """Normalised to sum 1 over the exits trained at the step. 'linear' (the seed recipe): w_l ∝ (l+1) with l the 0-based block index, i.e. ∝ the
    1-based exit number. 'uniform': every exit alike (more weight on the shallow exits drafts come from).
    focus > 0: exit `focus` (the draft exit) gets `focus_weight` of the total, the others share the rest."""
    if focus and focus in exits and focus_weight > 0:
        rest = exit_weights([l for l in exits if l != focus], scheme) if len(exits) > 1 else {}
        return {**{l: (1 - focus_weight) * w for l, w in rest.items()}, focus: focus_weight if rest else 1.0}
    if scheme == 'uniform':
        return {l: 1.0 / len(exits) for l in exits}
    if scheme == 'sum-l':  # torchtune's SUM_L: the cumulative sum of the exit numbers, s_l = 1 + 2 + … + l
        raw = {l: l * (l + 1) / 2.0 for l in exits}
        total = sum(raw.values())
        return {l: v / total for l, v in raw.items()}
    total = float(sum(exits))
    return {l: l / total for l in exits}


# ----------------------------------------------------------------------------------------------------------
# Data


class Windows:
    """Non-overlapping windows of seq_len+1 tokens over the id stream, shuffled per epoch (seeded)."""

    def __init__(self, ids, seq_len, seed):
        self.ids, self.seq_len, self.seed = ids, seq_len, seed
        self.n = (len(ids) - 1) // seq_len
        if self.n < 1:
            raise SystemExit('corpus shorter than one window')
        self._epoch, self._perm = None, None

    def batch(self, step, batch_size, rank=0, world=1):
        """The rows of global batch `step` that belong to `rank` of `world` processes.

        The sample stream (one seeded permutation of the windows per epoch) does not depend on the world size:
        global batch s is samples s·B .. s·B+B−1 and rank r reads its contiguous B/W of them — its own shard
        of the token file for that step (DistributedSampler-style), so the data position is the step alone and
        a resume at another world size continues the same stream."""
        per = batch_size // world
        return self.rows(step * batch_size + rank * per, per)

    def rows(self, start, count):
        rows = []
        for j in range(start, start + count):
            epoch, k = divmod(j, self.n)
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
                self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
            w = int(self._perm[k]) * self.seq_len
            rows.append(self.ids[w:w + self.seq_len + 1])
        x = torch.stack(rows)
        return x[:, :-1], x[:, 1:]


# ----------------------------------------------------------------------------------------------------------
# safetensors (written/read by hand: torch 1.13 has no safetensors package)

_ST_DTYPES = {torch.float16: 'F16', torch.float32: 'F32', torch.bfloat16: 'BF16'}
_ST_FROM = {'F16': torch.float16, 'F32': torch.float32, 'BF16': torch.bfloat16, 'I64': torch.int64, 'I32': torch.int32}


def tensor_bytes(t):
    """Raw little-endian bytes of a tensor, without numpy."""
    t = t.detach().contiguous().cpu().reshape(-1)
    buf = bytearray(t.numel() * t.element_size())
    if buf:
        torch.frombuffer(buf, dtype=torch.uint8).copy_(t.view(torch.uint8))
    return bytes(buf)


def save_safetensors(tensors, path, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header['__metadata__'] = metadata
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = tensor_bytes(t)
        header[name] = {'dtype': _ST_DTYPES[t.dtype], 'shape': list(t.shape),
                        'data_offsets': [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(',', ':')).encode('utf-8')
    hjson += b' ' * ((8 - len(hjson) % 8) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def load_safetensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    (hlen,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        a, b = info['data_offsets']
        buf = bytearray(data[base + a:base + b])
        out[name] = torch.frombuffer(buf, dtype=_ST_FROM[info['dtype']]).reshape(info['shape']).clone() \
            if b > a else torch.zeros(info['shape'], dtype=_ST_FROM[info['dtype']])
    return out


# ----------------------------------------------------------------------------------------------------------
# Configs

PRESETS = {
    # The shipped TinyStories model (see README for why these sizes).
    'default': dict(num_hidden_layers=12, hidden_size=256, num_attention_heads=8, num_key_value_heads=4,
                    intermediate_size=704, num_merges=1791, max_position_embeddings=512, seq_len=256),
    # A few seconds on two cores: used by smoke_test.py.
    'smoke': dict(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=160, num_merges=1791, max_position_embeddings=128, seq_len=64),
}


def make_config(preset, args, vocab_size, eot_id):
    p = dict(PRESETS[preset])
    for key in ('num_hidden_layers', 'hidden_size', 'num_attention_heads', 'num_key_value_heads',
                'intermediate_size'):
        v = getattr(args, key, None)
        if v:
            p[key] = v
    return {
        'architectures': ['LlamaForCausalLM'],
        'model_type': 'llama',
        'hidden_size': p['hidden_size'],
        'intermediate_size': p['intermediate_size'],
        'num_hidden_layers': p['num_hidden_layers'],
        'num_attention_heads': p['num_attention_heads'],
        'num_key_value_heads': p['num_key_value_heads'],
        'head_dim': p['hidden_size'] // p['num_attention_heads'],
        'hidden_act': 'silu',
        'max_position_embeddings': p['max_position_embeddings'],
        'rms_norm_eps': 1e-5,
        'rope_theta': 10000.0,
        'rope_scaling': None,
        'attention_bias': False,
        'mlp_bias': False,
        'vocab_size': vocab_size,
        'tie_word_embeddings': True,
        'bos_token_id': eot_id,
        'eos_token_id': eot_id,
        'initializer_range': 0.02,
        'torch_dtype': 'float16',
        'use_cache': True,
    }


# ----------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model, val_ids, seq_len, max_windows, batch_size=16):
    """Validation CE (nats/token) at every exit 1..L through the shared norm + head, and how often each exit's
    argmax equals the final layer's argmax (= greedy draft acceptance per token, roughly)."""
    model.eval()
    n_layers = model.cfg['num_hidden_layers']
    n = min(max_windows, (len(val_ids) - 1) // seq_len)
    ce_sum = [0.0] * (n_layers + 1)
    agree = [0.0] * (n_layers + 1)
    count = 0
    for s in range(0, n, batch_size):
        rows = [val_ids[w * seq_len:w * seq_len + seq_len + 1] for w in range(s, min(n, s + batch_size))]
        x = torch.stack(rows).to(model.inv_freq.device)
        inp, tgt = x[:, :-1], x[:, 1:]
        final, hs = model(inp, None, collect=set(range(1, n_layers)))
        final_logits = model.head(final)
        final_arg = final_logits.argmax(-1)
        for l in range(1, n_layers + 1):
            logits = final_logits if l == n_layers else model.head(model.model.norm(hs[l]))
            ce_sum[l] += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                         reduction='sum').item()
            agree[l] += (logits.argmax(-1) == final_arg).sum().item()
        count += tgt.numel()
    model.train()
    return {'ce': [c / count for c in ce_sum[1:]], 'agree': [a / count for a in agree[1:]], 'tokens': count}


def fmt_list(xs, nd=3):
    return '[' + ' '.join(f'{x:.{nd}f}' for x in xs) + ']'


# ----------------------------------------------------------------------------------------------------------
# Training


def training_data(args, cfg):
    """Sequence length, train / validation ids, the window sampler, and the step count + warmup of the schedule.
    Refuses (before any step) a token file smaller than one batch or with ids outside the model's vocabulary."""
    if args.seq_len:
        seq_len = args.seq_len
    elif getattr(args, 'init', None):
        seq_len = min(256, cfg['max_position_embeddings'])
    else:
        seq_len = PRESETS[args.preset]['seq_len']
    if seq_len > cfg['max_position_embeddings']:
        raise SystemExit(f'--seq-len {seq_len} exceeds the model\'s max_position_embeddings {cfg["max_position_embeddings"]}')
    train_ids = load_ids(args.train_bin)
    val_ids = load_ids(args.val_bin) if args.val_bin else None
    for name, ids in (('--train-bin', train_ids), ('--val-bin', val_ids)):
        if ids is not None and len(ids) and int(ids.max()) >= cfg['vocab_size']:
            raise SystemExit(f'{name}: token id {int(ids.max())} is outside the model\'s vocabulary '
                             f'({cfg["vocab_size"]} ids): tokenized with another tokenizer?')
    windows = (len(train_ids) - 1) // seq_len
    if windows < args.batch_size:
        raise SystemExit(f'--train-bin {args.train_bin}: {len(train_ids)} tokens = {windows} windows of {seq_len}+1, '
                         f'fewer than one batch (--batch-size {args.batch_size})')
    if val_ids is not None and len(val_ids) < seq_len + 1:
        raise SystemExit(f'--val-bin {args.val_bin}: {len(val_ids)} tokens, fewer than one window of {seq_len}+1')
    data = Windows(train_ids, seq_len, args.seed)
    total_steps = args.steps if args.steps else max(1, int(args.epochs * data.n / args.batch_size))
    warmup = max(1, int(args.warmup_frac * total_steps))
    return seq_len, train_ids, val_ids, data, total_steps, warmup


def lr_at(step, total, peak, warmup, final_frac):
    if step < warmup:
        return peak * (step + 1) / warmup
    prog = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * prog)))


def lr_at_progress(progress, peak, warmup_frac, final_frac):
    """Same schedule driven by a progress fraction in [0, 1] (used with --time-budget-min)."""
    if progress < warmup_frac:
        return peak * max(0.01, progress / warmup_frac)
    prog = min(1.0, (progress - warmup_frac) / max(1e-9, 1 - warmup_frac))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * prog)))


def make_optimizer(params_named, lr, wd, betas):
    decay = [p for n, p in params_named if p.dim() >= 2 and 'embed_tokens' not in n]
    no_decay = [p for n, p in params_named if not (p.dim() >= 2 and 'embed_tokens' not in n)]
    return torch.optim.AdamW([{'params': decay, 'weight_decay': wd}, {'params': no_decay, 'weight_decay': 0.0}],
                             lr=lr, betas=betas, eps=1e-8)


def plain_args(args):
    """CLI arguments without the sub-command function (keeps checkpoints loadable from any script)."""
    return {k: v for k, v in vars(args).items() if k != 'fn'}


def save_checkpoint(run_dir, state):
    tmp = os.path.join(run_dir, 'ckpt-latest.pt.tmp')
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(run_dir, 'ckpt-latest.pt'))


def duration(seconds):
    """`1h02m`, `4m05s`, `12s`: elapsed and remaining times in log lines."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f'{s // 3600}h{s % 3600 // 60:02d}m'
    return f'{s // 60}m{s % 60:02d}s' if s >= 60 else f'{s}s'


def progress_text(step, total, elapsed, steps_done):
    """`step 120/500 (24%) elapsed 1m05s eta 3m26s`; the ETA assumes the mean step time so far."""
    eta = (total - step) * elapsed / steps_done if steps_done else 0.0
    return f'step {step}/{total} ({100 * step / total:.0f}%) elapsed {duration(elapsed)} eta {duration(eta)}'


def log_line(log_f, msg):
    line = f'[{time.strftime("%H:%M:%S")}] {msg}'
    print(line, flush=True)
    if log_f:
        log_f.write(line + '\n')
        log_f.flush()


# ----------------------------------------------------------------------------------------------------------
# HF Llama directories (--init) and tokenizer checks

TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model',
                   'vocab.json', 'merges.txt')


def read_tokenizer(tok_dir):
    """{'vocab_size': highest id + 1, 'eot_id': id of <|endoftext|> or None} of a tokenizer.json."""
    path = os.path.join(tok_dir, 'tokenizer.json')
    try:
        with open(path, encoding='utf-8') as f:
            tj = json.load(f)
        vocab = tj['model']['vocab']
        ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
        ids += [t['id'] for t in tj.get('added_tokens') or []]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f'--tokenizer-dir {tok_dir}: cannot read a HF tokenizer.json ({e})')
    eot = next((t['id'] for t in tj.get('added_tokens') or [] if t.get('content') == EOT), None)
    return {'vocab_size': max(ids) + 1, 'eot_id': eot}


def check_vocab(tok, cfg, where):
    if tok['vocab_size'] > cfg['vocab_size']:
        raise SystemExit(f'tokenizer {where} has ids up to {tok["vocab_size"] - 1}, but the model\'s vocab_size is '
                         f'{cfg["vocab_size"]}: the tokenizer does not belong to this checkpoint')


def _hf_error(model_dir, msg):
    return SystemExit(f'--init {model_dir}: {msg}')


def read_hf_dir(model_dir):
    """config + f32 tensors of an HF Llama directory (config.json + model.safetensors, or sharded
    model.safetensors.index.json; BF16 / F16 / F32). A clear error for anything else."""
    if not os.path.isdir(model_dir):
        raise _hf_error(model_dir, 'not a directory')
    try:
        with open(os.path.join(model_dir, 'config.json')) as f:
            cfg = json.load(f)
    except OSError:
        raise _hf_error(model_dir, 'no config.json (expected an HF Llama checkpoint directory)')
    except ValueError as e:
        raise _hf_error(model_dir, f'config.json is not valid JSON ({e})')
    if not isinstance(cfg, dict):
        raise _hf_error(model_dir, 'config.json is not a JSON object')
    arch = cfg.get('architectures') or []
    if cfg.get('model_type') != 'llama' and 'LlamaForCausalLM' not in arch:
        raise _hf_error(model_dir, f'not a Llama checkpoint (model_type {cfg.get("model_type")!r}, architectures '
                                   f'{arch!r}); --init takes LlamaForCausalLM directories')
    for k in ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', 'vocab_size'):
        if not isinstance(cfg.get(k), int) or cfg[k] <= 0:
            raise _hf_error(model_dir, f'config.json: {k} must be a positive integer (got {cfg.get(k)!r})')
    cfg = dict(cfg)
    cfg.setdefault('num_key_value_heads', cfg['num_attention_heads'])
    cfg.setdefault('rms_norm_eps', 1e-6)
    cfg.setdefault('rope_theta', 10000.0)
    cfg.setdefault('tie_word_embeddings', False)
    cfg.setdefault('max_position_embeddings', 2048)
    cfg.setdefault('initializer_range', 0.02)
    if cfg['hidden_size'] % cfg['num_attention_heads'] or cfg['num_attention_heads'] % cfg['num_key_value_heads']:
        raise _hf_error(model_dir, 'config.json: hidden_size / num_attention_heads / num_key_value_heads do not divide')
    if cfg.get('head_dim', cfg['hidden_size'] // cfg['num_attention_heads']) != cfg['hidden_size'] // cfg['num_attention_heads']:
        raise _hf_error(model_dir, 'config.json: head_dim ≠ hidden_size / num_attention_heads is not supported')
    if cfg.get('attention_bias') or cfg.get('mlp_bias') or cfg.get('hidden_act', 'silu') != 'silu':
        raise _hf_error(model_dir, 'config.json: biases or a non-silu activation are not supported')
    rs = cfg.get('rope_scaling')
    if rs and (rs.get('rope_type') or rs.get('type')) not in ('llama3', 'default'):
        raise _hf_error(model_dir, f'config.json: rope_scaling {rs!r} is not supported (llama3 or none)')
    index = os.path.join(model_dir, 'model.safetensors.index.json')
    single = os.path.join(model_dir, 'model.safetensors')
    if os.path.exists(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)['weight_map']
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise _hf_error(model_dir, f'malformed model.safetensors.index.json ({e})')
    elif os.path.exists(single):
        shards = ['model.safetensors']
    else:
        raise _hf_error(model_dir, 'no model.safetensors or model.safetensors.index.json (safetensors weights needed)')
    tensors = {}
    for shard in shards:
        path = os.path.join(model_dir, shard)
        if os.path.dirname(os.path.normpath(shard)) or not os.path.exists(path):
            raise _hf_error(model_dir, f'shard {shard!r} named by the index is missing')
        try:
            tensors.update(load_safetensors(path))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, struct.error) as e:
            raise _hf_error(model_dir, f'{shard} is not a readable safetensors file ({e})')
    return cfg, {k: v.float() for k, v in tensors.items()}


def load_into(model, tensors, cfg, where):
    """Copies HF tensors into the model, every name and shape checked (a clear error, not a strict-load trace)."""
    sd = {k: v for k, v in tensors.items()
          if not k.startswith('name_to_lm_exit_head.') and not k.endswith('rotary_emb.inv_freq')}
    if cfg.get('tie_word_embeddings') and 'lm_head.weight' not in sd and 'model.embed_tokens.weight' in sd:
        sd['lm_head.weight'] = sd['model.embed_tokens.weight']
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    if missing or extra:
        raise SystemExit(f'{where}: the weights do not match config.json (missing {missing[:4]}{"…" if len(missing) > 4 else ""}, '
                         f'unexpected {extra[:4]}{"…" if len(extra) > 4 else ""})')
    for k, v in want.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise SystemExit(f'{where}: {k} has shape {list(sd[k].shape)}, config.json implies {list(v.shape)}')
    model.load_state_dict(sd, strict=True)


def llama3_inv_freq(inv_freq, rs):
    """HF's llama3 rope scaling of inv_freq."""
    factor, low, high = rs['factor'], rs['low_freq_factor'], rs['high_freq_factor']
    old = rs['original_max_position_embeddings']
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return torch.where(medium, smoothed, scaled)


# ----------------------------------------------------------------------------------------------------------
# Processes, devices, precision


class Dist:
    """One training process: world size, rank and device. Under torchrun (WORLD_SIZE > 1) it joins the process
    group (gloo on CPU, NCCL on CUDA); a single process has no process group and runs exactly as before."""

    def __init__(self, args):
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        self.main = self.rank == 0
        want = getattr(args, 'device', 'auto')
        if want == 'auto':
            want = 'cuda' if torch.cuda.is_available() else 'cpu'
        if want == 'cuda':
            if not torch.cuda.is_available():
                raise SystemExit('--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)')
            self.device = torch.device('cuda', self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device('cpu')
        accum = max(1, getattr(args, 'grad_accum', 1))
        if args.batch_size % (self.world * accum):
            raise SystemExit(
                f'--batch-size {args.batch_size} is not divisible by world size {self.world} × --grad-accum {accum}: '
                f'each of the {self.world} processes trains batch/(world·accum) rows per micro-step; use a '
                f'multiple of {self.world * accum}')
        self.group = False
        if self.world > 1:
            dist.init_process_group('nccl' if self.device.type == 'cuda' else 'gloo')
            self.group = True

    def mean(self, values):
        """Mean over the ranks of a list of floats (all ranks get it)."""
        if not self.group:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def from_main(self, values):
        """Rank 0's list of floats on every rank (decisions taken by one clock: time budget, checkpoints)."""
        if not self.group:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.broadcast(t, 0)
        return t.tolist()

    def gather(self, obj):
        if not self.group:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.group:
            dist.barrier()

    def close(self):
        if self.group:
            dist.destroy_process_group()
            self.group = False


def autocast_context(device, precision):
    """bf16 autocast (f32 master weights and optimizer state) or a no-op for f32."""
    if precision == 'bf16':
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(args, device):
    p = getattr(args, 'precision', 'auto')
    if p == 'auto':
        return 'bf16' if device.type == 'cuda' else 'f32'
    return p


def memory_text(device):
    """`rss 312MB` (current resident set of this process) and, on CUDA, `cuda_max 1.2GB` (max allocated)."""
    try:
        with open('/proc/self/statm') as f:
            rss = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text = f'rss {rss / 2**20:.0f}MB'
    if device.type == 'cuda':
        text += f' cuda_max {torch.cuda.max_memory_allocated(device) / 2**20:.0f}MB'
    return text


def param_checksum(model):
    """sha256 over every parameter's bytes (state_dict order): equal on all ranks iff they are in sync."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


class EarlyExitObjective(nn.Module):
    """The training forward: model + early-exit loss in one module, so that DDP sees every use of every
    parameter (the shared head runs on every exit) inside its forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inp, tgt, drop, exits, weights, opts):
        model, cfg = self.model, self.model.cfg
        final, hs = model(inp, drop, collect=set(exits))
        flat_tgt = tgt.reshape(-1)
        final_logits = model.head(final).reshape(-1, cfg['vocab_size']).float()
        ce_final = F.cross_entropy(final_logits, flat_tgt)
        loss = ce_final
        # Self-distillation target: the full model's own next-token distribution, not trained through the exits.
        teacher = None
        if opts['ee_distill'] > 0:
            teacher = F.softmax(final_logits, dim=-1)
            # --teacher-grad s lets a fraction s of the distillation gradient reach the full model (its
            # distribution moves toward what the exits can predict); s = 0 is plain self-distillation.
            s = opts['teacher_grad']
            teacher = teacher.detach() + s * (teacher - teacher.detach()) if s else teacher.detach()
        if exits and opts['exit_token_frac'] < 1.0:
            # Early-exit CE on a random subset of positions (same for every exit): the head costs ~0.7 of a
            # layer per token, so this trains every exit every step for a fraction of the compute.
            n_tok = flat_tgt.numel()
            pos = torch.randperm(n_tok)[:max(1, int(n_tok * opts['exit_token_frac']))].to(flat_tgt.device)
        else:
            pos = None
        teacher_l = teacher.index_select(0, pos) if teacher is not None and pos is not None else teacher
        ces = {}
        for l in exits:
            h_l = hs[l].reshape(-1, cfg['hidden_size'])
            t_l = flat_tgt
            if pos is not None:
                h_l, t_l = h_l.index_select(0, pos), flat_tgt.index_select(0, pos)
            logits_l = model.head(model.model.norm(h_l)).float()
            ce_l = F.cross_entropy(logits_l, t_l)
            exit_loss = ce_l
            if teacher_l is not None:
                # KL(p_final || p_exit): trains the exit to agree with the full model, which is exactly what
                # self-speculative drafts need (acceptance = agreement with the verifier).
                exit_loss = exit_loss + opts['ee_distill'] * F.kl_div(F.log_softmax(logits_l, dim=-1), teacher_l,
                                                                     reduction='batchmean')
            loss = loss + opts['ee_scale'] * weights[l] * exit_loss
            ces[l] = ce_l.detach()
        return loss, ce_final.detach(), ces


RESUME_KEYS = ('mode', 'preset', 'num_hidden_layers', 'hidden_size', 'num_attention_heads', 'num_key_value_heads',
               'intermediate_size', 'seq_len', 'batch_size', 'init')


def check_resume_args(resume_state, args):
    """A resume must train the checkpoint's model on the same batches: refuse another config before any step."""
    old = resume_state.get('args', {})
    diffs = []
    for k in RESUME_KEYS:
        a, b = old.get(k), getattr(args, k, None)
        if k == 'init' and a:
            a = os.path.abspath(a)
        if k == 'init' and b:
            b = os.path.abspath(b)
        if a != b:
            diffs.append(f'--{k.replace("_", "-")} {b!r} (checkpoint: {a!r})')
    if diffs:
        raise SystemExit('--resume: the checkpoint was trained with another config: ' + '; '.join(diffs) +
                         '. Pass the original options or use a new --name / --run-dir.')


def rank_seed(seed, rank, step):
    """Seed of rank `rank`'s dropout / exit-position stream when it cannot come from a checkpoint."""
    return (seed * 1000003 + rank * 7919 + step * 104729) % (2**63 - 1)


def cmd_train(args):
    torch.set_num_threads(args.threads)
    d = Dist(args)
    try:
        _train(args, d)
    finally:
        d.close()


def _train(args, d):
    run_dir = args.run_dir or os.path.join(HERE, 'runs', args.name)
    os.makedirs(run_dir, exist_ok=True)
    ckpt_path = os.path.join(run_dir, 'ckpt-latest.pt')
    log_f = open(os.path.join(run_dir, 'train.log'), 'a') if d.main else None
    log = (lambda msg: log_line(log_f, msg)) if d.main else (lambda msg: None)

    resume_state = None
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise SystemExit(f'--resume: no checkpoint at {ckpt_path}')
        resume_state = torch.load(ckpt_path, map_location='cpu')
        check_resume_args(resume_state, args)
        log(f'resuming from {ckpt_path} at step {resume_state["step"]} '
            f'(written by {resume_state.get("world_size", 1)} process(es); now {d.world})')

    if args.mode == 'exit-heads':
        args.base = args.base or args.init
    # Tokenizer files: --tokenizer-dir, else those of the --init / --base directory (kept in the export).
    tok_src = args.tokenizer_dir
    for src_dir in (args.init, args.base):
        if not tok_src and src_dir and os.path.exists(os.path.join(src_dir, 'tokenizer.json')):
            tok_src = src_dir
    tok = read_tokenizer(tok_src) if tok_src else None
    if d.main and tok_src:
        for fn in TOKENIZER_FILES:
            src = os.path.join(tok_src, fn)
            if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(run_dir, fn)):
                shutil.copy(src, os.path.join(run_dir, fn))

    if args.mode == 'exit-heads':
        if d.world > 1:
            raise SystemExit('--mode exit-heads runs in one process (the heads are small); start it without torchrun')
        return train_exit_heads(args, run_dir, log_f, resume_state)

    init_tensors = None
    if resume_state:
        cfg = resume_state['config']
    elif args.init:
        cfg, init_tensors = read_hf_dir(args.init)
    else:
        if tok is None:
            raise SystemExit('train: --tokenizer-dir is required without --init')
        if tok['eot_id'] is None:
            raise SystemExit(f'--tokenizer-dir {tok_src}: no {EOT} token (a from-scratch model needs it as bos/eos)')
        cfg = make_config(args.preset, args, tok['vocab_size'], tok['eot_id'])
    if tok is not None:
        check_vocab(tok, cfg, tok_src)
    seq_len, train_ids, val_ids, data, total_steps, warmup = training_data(args, cfg)

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    model = LlamaEE(cfg)
    if init_tensors is not None:
        load_into(model, init_tensors, cfg, args.init)
    model.activation_checkpointing = args.activation_checkpointing
    model.to(d.device)
    opt = make_optimizer(list(model.named_parameters()), args.lr, args.weight_decay, (0.9, 0.95))
    step = 0
    if d.world > 1:
        # Every rank starts from the same weights (same seed; DDP also broadcasts rank 0's); the dropout and
        # exit-position draws are per rank, from a per-rank stream.
        torch.manual_seed(rank_seed(args.seed, d.rank, 0))
    if resume_state:
        model.load_state_dict(resume_state['model'])
        opt.load_state_dict(resume_state['optimizer'])
        step = resume_state['step']
        total_steps = resume_state['total_steps'] if not args.steps else total_steps
        warmup = resume_state['warmup']
        rngs = resume_state.get('rank_rng')
        if resume_state.get('world_size', 1) == d.world and rngs:
            torch.set_rng_state(rngs[d.rank][0])
            random.setstate(rngs[d.rank][1])
        elif resume_state.get('world_size', 1) == d.world == 1:
            torch.set_rng_state(resume_state['torch_rng'])
            random.setstate(resume_state['py_rng'])
        else:  # another world size: the per-rank streams restart, seeded by (seed, rank, step)
            torch.manual_seed(rank_seed(args.seed, d.rank, step))
            random.seed(rank_seed(args.seed, d.rank, step))
            log(f'world size changed ({resume_state.get("world_size", 1)} -> {d.world}): weights, optimizer, step, '
                'schedule and data position resume exactly; layer-dropout / exit-position draws are re-seeded')
    if args.init and not resume_state and val_ids is not None and d.main:
        ev = evaluate(model, val_ids, seq_len, args.val_windows)
        log(f'init {args.init}: val ce per exit {fmt_list(ev["ce"])} | agree-with-final {fmt_list(ev["agree"])}')
        with open(os.path.join(run_dir, 'val.jsonl'), 'a') as f:
            f.write(json.dumps({'step': 0, 'init': args.init, **ev}) + '\n')
    precision = resolve_precision(args, d.device)
    objective = EarlyExitObjective(model)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # find_unused_parameters: with layer dropout every sample of a rank's rows may skip a block.
        objective = DDP(objective, device_ids=[d.device.index] if d.device.type == 'cuda' else None,
                        find_unused_parameters=True, broadcast_buffers=False)  # the only buffer (inv_freq) is constant
    n_layers = cfg['num_hidden_layers']
    if args.exit_curriculum == 'rotational' and args.exit_rotation < 2:
        raise SystemExit('--exit-curriculum rotational needs --exit-rotation R ≥ 2 (every R-th exit per step)')
    drop = layer_drop_probs(n_layers, args.layer_drop_max, args.layer_drop_depth, args.layer_drop_time, 0.0)
    drop_end = layer_drop_probs(n_layers, args.layer_drop_max, args.layer_drop_depth, args.layer_drop_time, 1.0)
    opts = {'ee_distill': args.ee_distill, 'teacher_grad': args.teacher_grad, 'exit_token_frac': args.exit_token_frac,
            'ee_scale': args.ee_scale}
    # Time-budget mode: the cosine schedule follows elapsed wall time (so a shared, slow machine still ends the
    # schedule at the deadline); step-count mode is fully deterministic.
    budget_s = args.time_budget_min * 60 if args.time_budget_min else 0.0
    train_elapsed = resume_state.get('train_elapsed', 0.0) if resume_state else 0.0
    if resume_state and resume_state.get('budget_s'):
        budget_s = resume_state['budget_s'] if not args.time_budget_min else budget_s
    if resume_state and args.schedule_restart:
        # A new phase on the trained weights: a fresh warmup + cosine schedule over --time-budget-min from this
        # point (optimizer moments are kept). Later --resume calls continue this schedule (it is checkpointed).
        if not args.time_budget_min:
            raise SystemExit('--schedule-restart needs --time-budget-min (the new phase\'s length)')
        train_elapsed = 0.0
    n_params = sum(p.numel() for p in model.parameters())
    if d.main:
        with open(os.path.join(run_dir, 'config.json'), 'w') as f:
            json.dump(cfg, f, indent=2)
    accum = max(1, args.grad_accum)
    micro = args.batch_size // (d.world * accum)
    log(f'config {json.dumps(cfg)}')
    log(f'params {n_params} train_tokens {len(train_ids)} windows {data.n} seq_len {seq_len} '
        f'batch {args.batch_size} (world {d.world} × accum {accum} × micro {micro}) device {d.device} '
        f'precision {precision} steps {total_steps} (epochs {total_steps * args.batch_size / data.n:.2f}) '
        f'warmup {warmup} lr {args.lr} ee_scale {args.ee_scale} rotation {args.exit_rotation} '
        f'exit_token_frac {args.exit_token_frac} exit_curriculum {args.exit_curriculum} exit_weights {args.exit_weights} '
        f'layer_drop {args.layer_drop_depth}/{args.layer_drop_time} {fmt_list(drop, 3)}'
        + (f' -> {fmt_list(drop_end, 3)}' if drop_end != drop else '') + f' args {plain_args(args)}')

    def checkpoint():
        rngs = d.gather((torch.get_rng_state(), random.getstate()))
        if d.main:
            state = {'model': model.state_dict(), 'optimizer': opt.state_dict(), 'step': step,
                     'total_steps': total_steps, 'warmup': warmup, 'config': cfg, 'args': plain_args(args),
                     'torch_rng': rngs[0][0], 'py_rng': rngs[0][1], 'rank_rng': rngs, 'world_size': d.world,
                     'samples_seen': step * args.batch_size, 'mode': 'earlyexit',
                     'train_elapsed': train_elapsed + (time.time() - t_seg), 'budget_s': budget_s}
            save_checkpoint(run_dir, state)
            msg = f'checkpoint step {step}'
            if val_ids is not None:
                t0 = time.time()
                ev = evaluate(model, val_ids, seq_len, args.val_windows)
                msg += (f' | val ce per exit {fmt_list(ev["ce"])} | agree-with-final {fmt_list(ev["agree"])}'
                        f' | {ev["tokens"]} tokens {time.time() - t0:.1f}s')
                with open(os.path.join(run_dir, 'val.jsonl'), 'a') as f:
                    f.write(json.dumps({'step': step, **ev}) + '\n')
            log(msg)
        d.barrier()

    model.train()
    t_start = time.time()
    first_step = step  # steps before this process (resume) do not count in its step time
    t_seg = t_start  # wall time of this process segment; train_elapsed carries earlier segments (resume)
    last_ckpt = time.time()
    acc = {}  # running sums of CE per exit over the log interval
    tokens_since = 0
    t_log = time.time()
    while True:
        # One clock decides (rank 0's): every rank runs the same steps and checkpoints together.
        progress = (train_elapsed + time.time() - t_seg) / budget_s if budget_s else 0.0
        due = 1.0 if time.time() - last_ckpt >= args.ckpt_minutes * 60 else 0.0
        if d.world > 1:
            progress, due = d.from_main([progress, due])
        if due and step > first_step:
            checkpoint()
            last_ckpt = time.time()
        if budget_s:
            if progress >= 1.0:
                break
            lr = lr_at_progress(progress, args.lr, args.warmup_frac, args.final_lr_frac)
        else:
            if step >= total_steps or (args.stop_at_step and step >= args.stop_at_step):
                break
            lr = lr_at(step, total_steps, args.lr, warmup, args.final_lr_frac)
        for g in opt.param_groups:
            g['lr'] = lr
        # Training progress in [0, 1] for the curricula: the step over the schedule, or the time budget spent.
        prog = min(1.0, progress) if budget_s else step / max(1, total_steps - 1)
        if args.layer_drop_time != 'constant':
            drop = layer_drop_probs(n_layers, args.layer_drop_max, args.layer_drop_depth, args.layer_drop_time, prog)
        exits = active_exits(n_layers, step, args.exit_rotation, args.exit_curriculum, prog) if args.ee_scale > 0 else []
        ws = exit_weights(exits, args.exit_weights, args.exit_focus, args.exit_focus_weight) if exits else {}
        opt.zero_grad(set_to_none=True)
        step_loss, step_ce = 0.0, {}
        for a in range(accum):
            # Global batch `step`, rank r, micro-batch a: rows step·B + (r·accum + a)·micro ... (+ micro).
            inp, tgt = data.rows(step * args.batch_size + (d.rank * accum + a) * micro, micro)
            inp, tgt = inp.to(d.device), tgt.to(d.device)
            sync = a == accum - 1 or d.world == 1
            ctx = objective.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with autocast_context(d.device, precision):
                    loss, ce_final, ces = objective(inp, tgt, drop, exits, ws, opts)
                (loss / accum if accum > 1 else loss).backward()
            step_loss += loss.item() / accum
            for l, v in ((n_layers, ce_final), *ces.items()):
                step_ce[l] = step_ce.get(l, 0.0) + v.item() / accum
            tokens_since += inp.numel() * d.world
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        for l, v in step_ce.items():
            s, n = acc.get(l, (0.0, 0))
            acc[l] = (s + v, n + 1)
        if step % args.log_every == 0:
            keys = sorted(acc)
            # Loss and CEs are the mean over the ranks (each rank's value is its rows' mean).
            vals = d.mean([step_loss] + [acc[l][0] / acc[l][1] for l in keys])
            dt = time.time() - t_log
            per_exit = ' '.join(f'{l}:{v:.3f}' for l, v in zip(keys, vals[1:]))
            if budget_s:
                spent = train_elapsed + time.time() - t_seg
                where = (f'step {step} (time {100 * spent / budget_s:.0f}%) elapsed {duration(time.time() - t_start)} '
                         f'eta {duration(budget_s - spent)}')
            else:
                where = progress_text(step, total_steps, time.time() - t_start, step - first_step)
            if args.layer_drop_time != 'constant' or args.exit_curriculum == 'gradual':
                where += f' drop_max_now {max(drop):.3f} exits_on {len(exits)}'
            log(f'{where} lr {lr:.2e} loss {vals[0]:.4f} ce_final {vals[1 + keys.index(n_layers)]:.4f} '
                f'gnorm {gnorm:.2f} tok/s {tokens_since / dt:.0f} {memory_text(d.device)} | ce per exit {per_exit}')
            acc, tokens_since, t_log = {}, 0, time.time()
    checkpoint()
    digest = param_checksum(model)
    # Every rank writes its own checksum of the parameters after the last step: equal iff the ranks are in sync.
    with open(os.path.join(run_dir, f'param-checksum.rank{d.rank}'), 'w') as f:
        f.write(digest + '\n')
    digests = d.gather(digest)
    log(f'param checksum step {step} ' + ' '.join(f'rank{r}:{h[:16]}' for r, h in enumerate(digests)) +
        (' (ranks in sync)' if len(set(digests)) == 1 else ' (RANKS DIVERGED)'))
    log(f'done: {step} steps in {time.time() - t_start:.0f}s')
    if len(set(digests)) != 1:
        raise SystemExit('ranks ended with different parameters')


# ----------------------------------------------------------------------------------------------------------
# Exit heads on a frozen base (IBM multi-exit recipe)


def load_hf_dir(model_dir):
    cfg, tensors = read_hf_dir(model_dir)
    model = LlamaEE(cfg)
    load_into(model, tensors, cfg, model_dir)
    return model, cfg


def train_exit_heads(args, run_dir, log_f, resume_state):
    if not args.base:
        raise SystemExit('--mode exit-heads needs --base <exported HF model dir>')
    model, cfg = load_hf_dir(args.base)
    if resume_state and os.path.abspath(resume_state.get('base', '')) != os.path.abspath(args.base):
        raise SystemExit(f'--resume: the checkpoint trained heads on {resume_state.get("base")}, not {args.base}')
    tok_dir = args.tokenizer_dir or (args.base if os.path.exists(os.path.join(args.base, 'tokenizer.json')) else None)
    if tok_dir:
        check_vocab(read_tokenizer(tok_dir), cfg, tok_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()  # frozen base: no layer dropout
    n_layers = cfg['num_hidden_layers']
    layers = sorted(int(x) for x in args.exit_layers.split(',')) if args.exit_layers else \
        list(range(1, n_layers + 1))
    if any(l < 1 or l > n_layers for l in layers):
        raise SystemExit(f'--exit-layers must be in 1..{n_layers}')
    d, vocab = cfg['hidden_size'], cfg['vocab_size']
    heads = nn.ModuleDict({str(l): nn.Linear(d, vocab, bias=False) for l in layers})
    torch.manual_seed(args.seed)
    with torch.no_grad():
        for h in heads.values():
            if args.head_init == 'shared':  # start from the shared head (logit lens): a good initial point
                h.weight.copy_(model.lm_head.weight)
            else:
                nn.init.normal_(h.weight, 0.0, cfg.get('initializer_range', 0.02))
    seq_len, train_ids, val_ids, data, total_steps, warmup = training_data(args, cfg)
    torch.manual_seed(args.seed)
    opt = make_optimizer(list(heads.named_parameters()), args.lr, args.weight_decay, (0.9, 0.95))
    step = 0
    if resume_state:
        heads.load_state_dict(resume_state['heads'])
        opt.load_state_dict(resume_state['optimizer'])
        step, total_steps, warmup = resume_state['step'], resume_state['total_steps'], resume_state['warmup']
        torch.set_rng_state(resume_state['torch_rng'])
    out_cfg = dict(cfg)
    out_cfg['lm_head_layer_indices'] = layers
    with open(os.path.join(run_dir, 'config.json'), 'w') as f:
        json.dump(out_cfg, f, indent=2)
    log_line(log_f, f'exit-heads on frozen {args.base}: layers {layers} steps {total_steps} lr {args.lr}')

    def head_outputs(inp):
        with torch.no_grad():
            final, hs = model(inp, None, collect=set(layers))
            normed = {l: (final if l == n_layers else model.model.norm(hs[l])) for l in layers}
            final_logits = model.lm_head(final).reshape(-1, vocab)
        return {l: heads[str(l)](normed[l]).reshape(-1, vocab) for l in layers}, final_logits

    def head_losses(inp, tgt):
        logits, final_logits = head_outputs(inp)
        # --ee-distill β: + β·KL(p_full ‖ p_head) for heads below the last layer (self-distillation: trains the
        # agreement with the full model that drafts need, as in the early-exit mode).
        teacher = F.softmax(final_logits, dim=-1) if args.ee_distill > 0 else None
        losses = {}
        for l in layers:
            loss = F.cross_entropy(logits[l], tgt.reshape(-1))
            if teacher is not None and l < n_layers:
                loss = loss + args.ee_distill * F.kl_div(F.log_softmax(logits[l], dim=-1), teacher, reduction='batchmean')
            losses[l] = loss
        return losses

    def checkpoint():
        save_checkpoint(run_dir, {'heads': heads.state_dict(), 'optimizer': opt.state_dict(), 'step': step,
                                  'total_steps': total_steps, 'warmup': warmup, 'config': out_cfg,
                                  'base': os.path.abspath(args.base), 'torch_rng': torch.get_rng_state(),
                                  'args': plain_args(args), 'mode': 'exit-heads'})
        msg = f'checkpoint step {step}'
        if val_ids is not None:
            n = min(args.val_windows, (len(val_ids) - 1) // seq_len)
            tot = {l: 0.0 for l in layers}
            agree = {l: 0.0 for l in layers}
            with torch.no_grad():
                for w in range(n):
                    x = val_ids[w * seq_len:w * seq_len + seq_len + 1][None]
                    logits, final_logits = head_outputs(x[:, :-1])
                    target = final_logits.argmax(-1)
                    for l in layers:
                        tot[l] += F.cross_entropy(logits[l], x[:, 1:].reshape(-1)).item()
                        agree[l] += (logits[l].argmax(-1) == target).float().mean().item()
            msg += ' | val ce per head ' + ' '.join(f'{l}:{tot[l] / max(1, n):.3f}' for l in layers)
            msg += ' | agree-with-final ' + ' '.join(f'{l}:{agree[l] / max(1, n):.3f}' for l in layers)
        log_line(log_f, msg)

    t_start, last_ckpt = time.time(), time.time()
    first_step, tokens_since, t_log = step, 0, time.time()
    while step < total_steps:
        lr = lr_at(step, total_steps, args.lr, warmup, args.final_lr_frac)
        for g in opt.param_groups:
            g['lr'] = lr
        inp, tgt = data.batch(step, args.batch_size)
        losses = head_losses(inp, tgt)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(heads.parameters(), args.grad_clip)
        opt.step()
        step += 1
        tokens_since += inp.numel()
        if step % args.log_every == 0 or step == total_steps:
            where = progress_text(step, total_steps, time.time() - t_start, step - first_step)
            log_line(log_f, f'{where} lr {lr:.2e} loss {loss.item():.4f} tok/s {tokens_since / (time.time() - t_log):.0f} '
                     '| ce per head ' + ' '.join(f'{l}:{v.item():.3f}' for l, v in losses.items()))
            tokens_since, t_log = 0, time.time()
        if time.time() - last_ckpt >= args.ckpt_minutes * 60 and step < total_steps:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    log_line(log_f, f'done: {step} steps in {time.time() - t_start:.0f}s')


# ----------------------------------------------------------------------------------------------------------
# Export


def cmd_export(args):
    run_dir = args.run
    ckpt = os.path.join(run_dir, 'ckpt-latest.pt')
    if not os.path.exists(ckpt):
        raise SystemExit(f'export: no checkpoint at {ckpt}')
    state = torch.load(ckpt, map_location='cpu')  # a GPU run's checkpoint exports on a CPU-only machine
    cfg = dict(state['config'])
    os.makedirs(args.out, exist_ok=True)
    n_layers = cfg['num_hidden_layers']
    dtype = torch.float16 if args.dtype == 'f16' else torch.bfloat16 if args.dtype == 'bf16' else torch.float32
    cfg['torch_dtype'] = {'f16': 'float16', 'bf16': 'bfloat16', 'f32': 'float32'}[args.dtype]
    if state['mode'] == 'exit-heads':
        base = state['base']
        tensors = {k: v for k, v in read_hf_dir(base)[1].items() if not k.startswith('name_to_lm_exit_head.')}
        for l, w in ((k.split('.')[0], v) for k, v in state['heads'].items()):
            tensors[f'name_to_lm_exit_head.lm_head_{l}.weight'] = w
    else:
        tensors = dict(state['model'])
        if cfg['tie_word_embeddings']:
            tensors.pop('lm_head.weight', None)  # tied: HF stores only model.embed_tokens.weight
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    save_safetensors(tensors, os.path.join(args.out, 'model.safetensors'), metadata={'format': 'pt'})
    with open(os.path.join(args.out, 'config.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
    for fn in TOKENIZER_FILES:  # the run's tokenizer files (from --tokenizer-dir, --init or --base), if any
        src = os.path.join(run_dir, fn)
        if not os.path.exists(src) and state['mode'] == 'exit-heads':
            src = os.path.join(state['base'], fn)
        if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(args.out, fn)):
            shutil.copy(src, os.path.join(args.out, fn))
    exit_layer = args.exit_layer if args.exit_layer else max(1, n_layers // 4)
    gen = {'bos_token_id': cfg.get('bos_token_id'), 'eos_token_id': cfg.get('eos_token_id'), 'do_sample': False,
           'max_length': cfg['max_position_embeddings'],
           # Recommended self-speculative settings for the mexit engine (extra keys).
           'mexit_exit_layer': exit_layer, 'mexit_num_speculations': args.num_speculations,
           'mexit_draft_quantization': args.draft_quantization,
           'transformers_version': '4.47.0'}
    with open(os.path.join(args.out, 'generation_config.json'), 'w') as f:
        json.dump(gen, f, indent=2)
    if args.sweep:
        best = sweep_export(args, state, n_layers)
        gen.update({'mexit_exit_layer': best['exitLayer'], 'mexit_num_speculations': best['numSpeculations'],
                    'mexit_draft_quantization': best['draftQuantization']})
        with open(os.path.join(args.out, 'generation_config.json'), 'w') as f:
            json.dump(gen, f, indent=2)
    info = {'step': state['step'], 'total_steps': state['total_steps'], 'mode': state['mode']}
    print(json.dumps({'exported': args.out, **info, 'tensors': len(tensors),
                      'bytes': os.path.getsize(os.path.join(args.out, 'model.safetensors'))}))


def sweep_prompts(args, state, cfg):
    """Held-out prompts for the sweep: --sweep-prompts (a .json list of prompts, or uint16 ids like valid.bin),
    else the run's --val-bin; from ids, --sweep-num-prompts windows of --sweep-prompt-len ids, evenly spaced."""
    src = args.sweep_prompts or state.get('args', {}).get('val_bin')
    if not src:
        raise SystemExit('export --sweep: no held-out prompts (pass --sweep-prompts <ids .bin or prompts .json>; '
                         'the run had no --val-bin)')
    if src.endswith('.json'):
        with open(src) as f:
            return json.load(f)
    ids = load_ids(src)
    n, plen = args.sweep_num_prompts, args.sweep_prompt_len
    if len(ids) < n * plen:
        raise SystemExit(f'export --sweep: {src} has {len(ids)} ids, fewer than {n} prompts of {plen}')
    if int(ids.max()) >= cfg['vocab_size']:
        raise SystemExit(f'export --sweep: {src} has ids outside the vocabulary ({cfg["vocab_size"]})')
    stride = len(ids) // n
    return [ids[k * stride:k * stride + plen].tolist() for k in range(n)]


def sweep_export(args, state, n_layers):
    """Runs tools/train/sweep.mjs on the exported directory (the engine, measured) and returns the fastest
    lossless (E, d); the whole measurement lands in <out>/mexit_sweep.json."""
    cfg = state['config']
    prompts = sweep_prompts(args, state, cfg)
    prompts_path = os.path.join(args.out, 'mexit_sweep_prompts.json')
    with open(prompts_path, 'w') as f:
        json.dump(prompts, f)
    if args.sweep_exits:
        exits = args.sweep_exits
    else:  # around E = L/4, the usual LayerSkip draft depth
        q = max(1, n_layers // 4)
        exits = ','.join(str(e) for e in sorted({q - 1, q, q + 1}) if 1 <= e < n_layers)
    cmd = ['node', os.path.join(HERE, 'sweep.mjs'), args.out, prompts_path, '--exits', exits, '--drafts',
           args.sweep_drafts, '--quantizations', args.sweep_quantization, '--max-new-tokens', str(args.sweep_max_new_tokens), '--repeats', str(args.sweep_repeats)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f'export --sweep: {" ".join(cmd)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}')
    out = json.loads(res.stdout.strip().splitlines()[-1])
    with open(os.path.join(args.out, 'mexit_sweep.json'), 'w') as f:
        json.dump(out, f, indent=1)
    os.remove(prompts_path)
    best = out['best']
    print(f'sweep: ar {out["ar"]["tokensPerSecond"]:.1f} tok/s; ' + ' '.join(
        f'E{r["exitLayer"]}/d{r["numSpeculations"]}/{r["draftQuantization"]}:{r["tokensPerSecond"]:.1f}{"" if r["lossless"] else "(LOSSY)"}'
        for r in out['results']) + f'; best E={best["exitLayer"]} d={best["numSpeculations"]} '
        f'{best["draftQuantization"]} ({best["speedup"]:.2f}x)', file=sys.stderr)
    return best


# ----------------------------------------------------------------------------------------------------------


def cmd_prepare(args):
    os.makedirs(args.out, exist_ok=True)
    if args.gpt2_dir:
        vocab_size, eot_id = build_tokenizer(args.gpt2_dir, args.num_merges, args.out, args.model_max_length)
        print(json.dumps({'tokenizer': args.out, 'vocab_size': vocab_size, 'eot_id': eot_id}))
    tok_dir = args.out if args.gpt2_dir else args.tokenizer_dir
    for text_path, name in ((args.train_text, 'train.bin'), (args.val_text, 'valid.bin')):
        if text_path:
            res = tokenize_file(tok_dir, text_path, os.path.join(args.out, name), args.max_stories)
            print(json.dumps(res))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)

    pp = sub.add_parser('prepare', help='build tokenizer files and tokenize text with node')
    pp.add_argument('--out', required=True, help='directory for tokenizer files and *.bin id files')
    pp.add_argument('--gpt2-dir', help='GPT-2 vocab.json/merges.txt to build the tokenizer from')
    pp.add_argument('--tokenizer-dir', help='existing tokenizer.json/tokenizer_config.json (instead of --gpt2-dir)')
    pp.add_argument('--num-merges', type=int, default=1791)
    pp.add_argument('--model-max-length', type=int, default=512)
    pp.add_argument('--train-text', help='e.g. /work/shared/data/tinystories/train.txt')
    pp.add_argument('--val-text', help='e.g. fixtures/data/valid-small.txt')
    pp.add_argument('--max-stories', type=int, default=0)
    pp.set_defaults(fn=cmd_prepare)

    tp = sub.add_parser('train', help='train (llama3-earlyexit recipe, or exit heads on a frozen base)')
    tp.add_argument('--mode', choices=['earlyexit', 'exit-heads'], default='earlyexit')
    tp.add_argument('--name', default='tinystories-ee', help='run name: checkpoints in tools/train/runs/<name>/')
    tp.add_argument('--run-dir', help='explicit run directory (overrides --name)')
    tp.add_argument('--tokenizer-dir', help='tokenizer.json (+ tokenizer_config.json) of the training ids '
                    '(default with --init: the init directory\'s tokenizer files, if any)')
    tp.add_argument('--init', help='start from this HF Llama directory (config.json + safetensors, sharded or not, '
                    'BF16/F16/F32): continual pretraining / finetuning; with --mode exit-heads: the frozen base')
    tp.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                    help='auto: cuda when torch sees a GPU (rank r of torchrun uses cuda:LOCAL_RANK), else cpu')
    tp.add_argument('--precision', choices=['auto', 'f32', 'bf16'], default='auto',
                    help='auto: bf16 autocast on cuda (f32 master weights and optimizer), f32 on cpu')
    tp.add_argument('--grad-accum', type=int, default=1,
                    help='micro-batches per optimizer step: each process runs batch/(world·N) rows N times')
    tp.add_argument('--activation-checkpointing', action='store_true',
                    help='recompute each block in backward instead of storing its activations')
    tp.add_argument('--train-bin', required=True, help='uint16 ids from `prepare`')
    tp.add_argument('--val-bin', help='uint16 validation ids (evaluated at every checkpoint)')
    tp.add_argument('--preset', choices=sorted(PRESETS), default='default')
    tp.add_argument('--num-hidden-layers', dest='num_hidden_layers', type=int)
    tp.add_argument('--hidden-size', dest='hidden_size', type=int)
    tp.add_argument('--num-attention-heads', dest='num_attention_heads', type=int)
    tp.add_argument('--num-key-value-heads', dest='num_key_value_heads', type=int)
    tp.add_argument('--intermediate-size', dest='intermediate_size', type=int)
    tp.add_argument('--seq-len', type=int)
    tp.add_argument('--batch-size', type=int, default=16)
    tp.add_argument('--steps', type=int, default=0, help='total optimizer steps (default: from --epochs)')
    tp.add_argument('--epochs', type=float, default=1.0)
    tp.add_argument('--time-budget-min', type=float, default=0.0,
                    help='run for this many wall-clock minutes, LR schedule following elapsed time (overrides steps)')
    tp.add_argument('--lr', type=float, default=2e-3)
    tp.add_argument('--warmup-frac', type=float, default=0.03)
    tp.add_argument('--final-lr-frac', type=float, default=0.1)
    tp.add_argument('--weight-decay', type=float, default=0.1)
    tp.add_argument('--grad-clip', type=float, default=1.0)
    tp.add_argument('--layer-drop-max', type=float, default=0.5, help='p_max of p_{l,t} = S(t)·D(l)·p_max')
    tp.add_argument('--layer-drop-depth', choices=['quadratic', 'exponential', 'linear', 'uniform'], default='quadratic',
                    help='D(l): quadratic (l/L)², last block never drops (seed recipe); exponential e^{l ln2/(L-1)} - 1 '
                    '(LayerSkip); linear; uniform')
    tp.add_argument('--layer-drop-time', choices=['constant', 'exponential'], default='constant',
                    help='S(t): constant 1 (finetuning) or exponential 2^{t/(T-1)} - 1 (LayerSkip pretraining from scratch)')
    tp.add_argument('--exit-curriculum', choices=['all', 'rotational', 'gradual'], default='all',
                    help='which exits train at a step: all; rotational (every --exit-rotation R-th, rotating); '
                    'gradual (last to first, one more every 1/(2L) of training)')
    tp.add_argument('--ee-scale', type=float, default=0.3, help='early-exit loss weight (0 disables exits)')
    tp.add_argument('--exit-rotation', type=int, default=1, help='train every R-th exit per step, rotating')
    tp.add_argument('--exit-weights', choices=['linear', 'uniform', 'sum-l'], default='linear',
                    help="early-exit loss scales: linear w_l ∝ l (seed recipe), uniform, or sum-l w_l ∝ 1+…+l "
                    "(torchtune's SUM_L); normalised over the exits trained at the step")
    tp.add_argument('--ee-distill', type=float, default=0.0,
                    help='add this × KL(full-model distribution || exit distribution) to each exit loss (self-distillation)')
    tp.add_argument('--exit-token-frac', type=float, default=1.0,
                    help='fraction of positions (random per step) on which the early-exit CE is computed')
    tp.add_argument('--exit-layers', help='exit-heads mode: comma list of layers (1-based), default all')
    tp.add_argument('--head-init', choices=['shared', 'random'], default='shared',
                    help='exit-heads mode: initialise heads from the shared lm_head or N(0, initializer_range)')
    tp.add_argument('--base', help='exit-heads mode: exported HF model directory to freeze')
    tp.add_argument('--seed', type=int, default=1234)
    tp.add_argument('--threads', type=int, default=1,
                    help='torch threads; 1 is ~5x faster than 2 when the 2 cores are shared (OpenBLAS spin-waits)')
    tp.add_argument('--log-every', type=int, default=10)
    tp.add_argument('--ckpt-minutes', type=float, default=5.0)
    tp.add_argument('--val-windows', type=int, default=24, help='validation windows of seq_len tokens')
    tp.add_argument('--stop-at-step', type=int, default=0,
                    help='checkpoint and stop at this step without changing the schedule (tests resume)')
    tp.add_argument('--resume', action='store_true', help='continue from runs/<name>/ckpt-latest.pt')
    tp.add_argument('--schedule-restart', action='store_true',
                    help='with --resume: start a new warmup + cosine schedule (--lr, --time-budget-min or --steps)')
    tp.add_argument('--teacher-grad', type=float, default=0.0,
                    help='fraction of the distillation gradient that reaches the full model (0: detached teacher)')
    tp.add_argument('--exit-focus', type=int, default=0, help='draft exit that gets --exit-focus-weight of the exit loss')
    tp.add_argument('--exit-focus-weight', type=float, default=0.0)
    tp.set_defaults(fn=cmd_train)

    ep = sub.add_parser('export', help='write an HF model directory from a run checkpoint')
    ep.add_argument('--run', required=True, help='run directory (tools/train/runs/<name>)')
    ep.add_argument('--out', required=True)
    ep.add_argument('--dtype', choices=['f16', 'bf16', 'f32'], default='f16')
    ep.add_argument('--exit-layer', type=int, default=0, help='recommended draft exit E (default L/4)')
    ep.add_argument('--num-speculations', type=int, default=4, help='recommended draft length d')
    ep.add_argument('--draft-quantization', choices=['none', 'int8', 'int4'], default='none',
                    help='recommended storage of the draft layers (mexit draftQuantization)')
    ep.add_argument('--sweep', action='store_true',
                    help='measure self-spec in the engine (tools/train/sweep.mjs) for a few (E, d) on held-out prompts '
                    'and record the fastest lossless one as mexit_exit_layer / mexit_num_speculations')
    ep.add_argument('--sweep-prompts', help='held-out prompts: uint16 ids (.bin) or a .json list (default: the run\'s --val-bin)')
    ep.add_argument('--sweep-exits', help='comma list of E (default: L/4 − 1, L/4, L/4 + 1)')
    ep.add_argument('--sweep-drafts', default='1,2,3,4,6', help='comma list of d')
    ep.add_argument('--sweep-quantization', default='none',
                    help='comma list of draft storages to measure: none (exact), int8, int4')
    ep.add_argument('--sweep-num-prompts', type=int, default=8)
    ep.add_argument('--sweep-prompt-len', type=int, default=16)
    ep.add_argument('--sweep-max-new-tokens', type=int, default=48)
    ep.add_argument('--sweep-repeats', type=int, default=3)
    ep.set_defaults(fn=cmd_export)

    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == '__main__':
    main()
