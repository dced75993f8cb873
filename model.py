"""
Qwen2 by hand: the network, HF checkpoint loading, a batched KV-cache sampler and chunked log-probs.

Design
- Parameter names equal the HF checkpoint's (model.layers.0.self_attn.q_proj.weight, ...), so
  loading is a plain strict state-dict load and any Qwen2 / Qwen2.5(-Math) checkpoint works without
  a conversion table.
- `Qwen2.forward(input_ids)` returns logits [B, T, V]. `Qwen2.hidden_states(...)` is the same
  network up to the final norm; it also takes explicit positions, a boolean attention mask and a KV
  cache, which is all the sampler needs. The learner never asks for full logits:
  `completion_logprobs` applies the LM head in chunks, and runs each prompt once for all its samples
  (PrefixCache), as the sampler prefills it once.
- Sampling (`generate`): prompts are left-padded to a common length and padding is tracked by
  length, never by token id (Qwen's pad token is also its EOS). Each prompt is prefilled once and
  its cache fanned out to its K samples. Each row draws from its own pre-generated uniforms
  (inverse-CDF sampling), so a row's tokens depend only on the seed, the row index and its own
  logits, never on what else is in the batch. The prefill's result and the sampler's settings are
  one DecodeInputs, which the decode loop takes. The loop here (decode_plain) is the sampler, whole
  and the reference; fast_decode.py rebuilds the same step for speed (fused weights; compiled and
  replayed as CUDA graphs on a GPU), tested equal to it, and generate runs it when its caller
  passes it (`decode=`): grpo.py chooses (--decoder). This file imports neither it nor lora.py.
- Attention on CUDA: cuDNN's SDPA is switched off where the device is chosen (pick_device,
  safe_attention), for the reasons its docstring gives.

    model = load_model("Qwen/Qwen2.5-Math-1.5B")          # or a local folder; safetensors only
    tok = load_tokenizer("Qwen/Qwen2.5-Math-1.5B")
    out = generate(model, [tok.encode("1+1=")], max_new_tokens=16, temperature=0,
                   eos_token_id=tok.eos_token_id)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# -----------------------------------------------------------------------------
# Config


@dataclass
class Qwen2Config:
    # defaults: Qwen2.5-Math-1.5B's config.json (the paper's model); a checkpoint's config overrides
    vocab_size: int = 151936
    hidden_size: int = 1536
    intermediate_size: int = 8960
    num_hidden_layers: int = 28
    num_attention_heads: int = 12
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> Qwen2Config:
        arch = raw.get("model_type")
        if arch != "qwen2":
            archs = raw.get("architectures") or []
            raise ValueError(f"{source}: model_type is {arch!r} (architectures {archs}); "
                             "only Qwen2 models (model_type 'qwen2', e.g. Qwen2.5-Math) "
                             "are supported")
        if raw.get("use_sliding_window"):
            raise ValueError(f"{source}: use_sliding_window=true is not supported")
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"{source}: rope scaling {rope} is not supported (plain RoPE only)")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: hidden_act {raw['hidden_act']!r} is not supported "
                             "(Qwen2 uses silu)")
        names = {f.name for f in fields(cls)}
        # a config.json without these means what transformers' Qwen2Config reads: an untied head
        # (a tied one would silently drop the checkpoint's own lm_head.weight), theta 1e4
        optional = ("tie_word_embeddings", "rope_theta")
        raw = {"tie_word_embeddings": False} | raw
        missing = sorted(n for n in names if n not in raw and n not in optional)
        if missing:
            raise ValueError(f"{source}: missing keys {missing}")
        # Newer transformers write rope_theta inside rope_parameters.
        raw = dict(raw)
        if "rope_theta" not in raw and isinstance(raw.get("rope_parameters"), dict):
            raw["rope_theta"] = raw["rope_parameters"].get("rope_theta", cls.rope_theta)
        config = cls(**{n: raw[n] for n in names if n in raw})
        if (config.hidden_size % config.num_attention_heads
                or config.num_attention_heads % config.num_key_value_heads):
            raise ValueError(f"{source}: hidden_size must divide into heads "
                             "and heads into kv heads")
        # transformers' Qwen2 reads head_dim when the config has one: another value would be
        # another network than the one built here
        if raw.get("head_dim", config.head_dim) != config.head_dim:
            raise ValueError(f"{source}: head_dim {raw['head_dim']} "
                             "!= hidden_size / num_attention_heads")
        return config

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> Qwen2Config:
        path = Path(folder) / "config.json"
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"model folder not found: {folder}")
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (an HF model folder holds config.json)")
        return cls.from_dict(json.loads(path.read_text()), source=str(path))

    def to_hf_dict(self) -> dict:
        """config.json contents that transformers' Qwen2ForCausalLM reads back."""
        return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
                "use_sliding_window": False, "attention_dropout": 0.0,
                **{f.name: getattr(self, f.name) for f in fields(self)}}


# -----------------------------------------------------------------------------
# The network


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # Normalise in float32, scale in the model dtype: exactly HF's order of operations.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin of shape [B, 1, T, head_dim] for integer positions [B, T] (computed in float32)."""
    # float32 throughout (as HF): bf16 holds integers exactly only up to 256, so later positions
    # would share a phase
    exponents = torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    inv_freq = 1.0 / theta ** exponents
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x, cos, sin):
    # HF's rotate_half: dimension i turns with i + D/2 (not with its neighbour, as in the RoPE
    # paper); the checkpoints' q/k rows are laid out for this pairing
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        d = config.hidden_size
        # Qwen2: biases on q, k, v only
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, mask, cache, layer):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        # is_causal aligns its triangle to key column 0, so it is right only with no cached
        # columns before the queries; hidden_states builds a mask whenever there are some
        if mask is None:  # a plain causal batch starting at position 0 (training, full recompute)
            gqa = self.n_heads != self.n_kv_heads
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            # Grouped-query attention without copying K/V: the G query heads that share a KV head
            # become G*T query rows of that head, each with its own row of the mask. Query heads
            # j*G .. j*G+G-1 share KV head j (HF's repeat_kv order), so a reshape groups them.
            G, S = self.n_heads // self.n_kv_heads, k.shape[2]
            q = q.reshape(B, self.n_kv_heads, G * T, self.head_dim)
            mask = mask.unsqueeze(2).expand(B, 1, G, T, S).reshape(B, 1, G * T, S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.reshape(B, self.n_heads, T, self.head_dim).transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen2(nn.Module):
    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.config = config
        # nested as in HF (model.layers.0..., lm_head): the checkpoint's names, no conversion table
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size),
            layers=nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers)),
            norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
        ))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        # Recompute each block's activations in backward (training memory).
        self.gradient_checkpointing = False

    def tie_weights(self):
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def hidden_states(self, input_ids, positions=None, mask=None, cache=None):
        """Final-norm hidden states [B, T, H].

        positions: [B, T] rotary positions (default 0..T-1, after the cache length with a cache).
        mask: bool [B, 1, T, S], True where a query may attend to a key; S = cache length + T with a
              cache. None means causal with no padding.
        cache: a KVCache or PrefixCache, which keeps each layer's new keys/values and its own
               length, or a PrefixView, which only prepends its keys/values.
        """
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        if mask is None and start > 0:  # queries after cached columns: is_causal would misalign
            all_valid = torch.ones(B, start + T, dtype=torch.bool, device=input_ids.device)
            mask = causal_mask(all_valid, T)
        x = self.model.embed_tokens(input_ids)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        # Recomputing a block in backward must not write the cache twice: no cache, or a read-only
        # one (the learner's PrefixView).
        recompute = (self.gradient_checkpointing and torch.is_grad_enabled()
                     and (cache is None or cache.read_only))
        for i, block in enumerate(self.model.layers):
            if recompute:
                x = checkpoint(block, x, cos, sin, mask, cache, i, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, cache, i)
        return self.model.norm(x)

    def forward(self, input_ids, positions=None, mask=None, cache=None):
        return self.lm_head(self.hidden_states(input_ids, positions, mask, cache))


# -----------------------------------------------------------------------------
# KV cache


class KVCache:
    """The sampler's keys and values, preallocated: kv[layer] is [2, batch, kv_heads, max_len,
    head_dim] (keys, then values), and columns < `length` are filled.

    The cache keeps its own length: a forward pass writes each layer's new keys/values at column
    `length` (update), and the last layer's write moves `length` past them. All rows share that
    write position (prompts are left-padded); which columns are padding is the attention mask's
    business. fast_decode.py's step writes kv[layer] itself, at a column held in a device tensor
    (what a CUDA graph can replay), and leaves `length` at the prompt's; its loops count columns
    from there.

    The sampler decodes over it in two ways:
    - shrinking batch (this file's loop; fast_decode's on a CPU): rows that have ended leave
      (select), so later steps cost less;
    - fixed shapes (fast_decode's on CUDA): each step is one CUDA graph replay, as kernel launches
      bound a GPU step; it attends over unwritten columns too, so fan_out fills them with zeros,
      and it keeps one cache from call to call (fan_out(..., into=)), whose addresses the graphs
      hold.
    """

    read_only = False  # a forward pass writes its keys/values here

    def __init__(self, kv: list[torch.Tensor], length: int = 0):
        """A cache over these per-layer tensors (no copy), columns < length filled."""
        self.kv, self.length = kv, length

    @classmethod
    def allocate(cls, config: Qwen2Config, batch_size: int, max_len: int, dtype,
                 device) -> KVCache:
        """An empty cache of max_len columns (uninitialised memory: nothing reads past length)."""
        shape = (2, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        return cls([torch.empty(shape, dtype=dtype, device=device)
                    for _ in range(config.num_hidden_layers)])

    def update(self, layer: int, k, v):
        """Write k, v [B, kv_heads, T, D] at column `length` -> the layer's filled keys, values."""
        start, end = self.length, self.length + k.shape[2]
        kv = self.kv[layer]
        if end > kv.shape[3]:
            raise RuntimeError(f"KV cache overflow: {end} > {kv.shape[3]} columns")
        kv[0, :, :, start:end] = k
        kv[1, :, :, start:end] = v
        if layer == len(self.kv) - 1:  # every layer holds the new columns now
            self.length = end
        return kv[0, :, :, :end], kv[1, :, :, :end]

    def select(self, rows: torch.Tensor) -> KVCache:
        """A cache holding only these rows (drops finished sequences)."""
        return KVCache([kv[:, rows] for kv in self.kv], self.length)

    def fan_out(self, copies: int, max_len: int, into: KVCache | None = None) -> KVCache:
        """A cache of max_len columns with each row repeated `copies` times
        (row b -> rows b*copies .. b*copies+copies-1): a new one, or `into`'s storage, refilled."""
        _, B, H, _, D = self.kv[0].shape
        if into is None:
            into = KVCache([kv.new_empty((2, B * copies, H, max_len, D)) for kv in self.kv])
        if into.kv[0].shape[1] != B * copies or into.kv[0].shape[3] < self.length:
            raise ValueError(f"fan_out into a cache of shape {tuple(into.kv[0].shape)}: "
                             f"{B * copies} rows of {self.length}+ columns needed")
        into.length = self.length
        for old, kv in zip(self.kv, into.kv):
            kv[:, :, :, :self.length] = old[:, :, :, :self.length].repeat_interleave(copies, dim=1)
            # Zeros, not garbage: fixed-shape decoding attends over unwritten columns with weight
            # 0, and 0 * NaN = NaN.
            kv[:, :, :, self.length:] = 0
        return into


class PrefixCache:
    """Keys/values of a shared prefix that autograd can see through (the learner's prompt pass).

    The prompt pass through each layer stores its keys/values; `select(rows)` then gives each
    completion its prompt's entries (a differentiable gather) as a PrefixView, which the
    completion pass reads.
    """

    read_only = False  # the prompt pass writes here

    def __init__(self):
        self.k, self.v = [], []

    @property
    def length(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    def update(self, layer: int, k, v):
        self.k.append(k)
        self.v.append(v)
        return k, v

    def select(self, rows: torch.Tensor) -> PrefixView:
        return PrefixView([k[rows] for k in self.k], [v[rows] for v in self.v])


class PrefixView:
    """The prompts' keys/values, one row per completion, that a completion pass attends to.

    It only prepends them and writes nothing, so a block may run twice over it: the completion pass
    can use activation checkpointing (recompute in backward), which a cache that writes cannot.
    """

    read_only = True

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor]):
        self.k, self.v = k, v

    @property
    def length(self) -> int:
        """The prefix's columns (a view keeps nothing of the passes after it)."""
        return self.k[0].shape[2]

    def update(self, layer: int, k, v):
        return torch.cat([self.k[layer], k], dim=2), torch.cat([self.v[layer], v], dim=2)


def left_pad(prompts: list[list[int]], device, width: int | None = None):
    """Left-pad prompts to the longest, P
    -> (ids [B, P], lengths [B], key_valid [B, width or P], positions [B, P]).

    Padding is tracked by length (key_valid: False on a row's padding columns), never by token id;
    columns past P (room for generated tokens) are valid. Positions count from each row's first real
    token.
    """
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    P = int(lengths.max())
    ids = torch.zeros(len(prompts), P, dtype=torch.long, device=device)  # pad id: any, it is masked
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
    pad = P - lengths
    key_valid = torch.arange(width or P, device=device)[None, :] >= pad[:, None]
    # As HF's position_ids under left padding: padding shifts no real token's rotary phase, so a
    # row's logits do not depend on the longest prompt in its batch.
    positions = (torch.arange(P, device=device)[None, :] - pad[:, None]).clamp(min=0)
    return ids, lengths, key_valid, positions


def causal_mask(key_valid: torch.Tensor, T: int) -> torch.Tensor:
    """bool [B, 1, T, S] for T new queries at columns S-T .. S-1 over keys 0 .. S-1.

    A query attends to valid keys at or before its own column. Padding queries have no valid key, so
    they attend to themselves only: their outputs are never used, but an all-masked row is NaN in
    older torch and some SDPA kernels (torch 2.13's CPU kernels return 0), and a NaN there would
    reach the gradients as NaN * 0.
    """
    B, S = key_valid.shape
    q_col = torch.arange(S - T, S, device=key_valid.device)[:, None]
    k_col = torch.arange(S, device=key_valid.device)[None, :]
    mask = (k_col <= q_col)[None] & key_valid[:, None, :]
    mask |= (k_col == q_col)[None]
    return mask[:, None]


# -----------------------------------------------------------------------------
# Sampling


@dataclass
class DecodeInputs:
    """What a decode loop starts from: generate's prefill and the sampler's settings. B rows, each
    continuing prompt b // samples; N = the new tokens to draw; P = the longest prompt."""
    h: torch.Tensor              # [B, H] final-norm hidden state of each row's prompt's last column
    prompt_cache: KVCache        # the prompts' keys/values: one row per prompt, P columns
    samples: int                 # rows per prompt (the loop fans prompt_cache out to B rows)
    key_valid: torch.Tensor      # bool [B, P + N]: False on each row's left padding
    next_position: torch.Tensor  # [B, 1] rotary position of the first new token (the prompt length)
    uniforms: torch.Tensor       # float64 [B, N]: row b draws its token t with uniforms[b, t]
    temperature: float           # 0 is greedy
    top_p: float
    vocab_size: int | None       # ids >= it are never drawn
    eos: torch.Tensor            # the ids that end a row (none: every row runs N tokens)


@torch.no_grad()
def generate(model: Qwen2, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, eos_token_id: int | list[int] | None = None,
             seed: int | None = None, num_samples: int = 1, vocab_size: int | None = None,
             return_logprobs: bool = False, first_row: int = 0, decode=None):
    """Sample `num_samples` completions for each prompt; returns len(prompts) * num_samples token
    lists, prompt-major (the samples of prompt i are rows i*num_samples ... i*num_samples +
    num_samples - 1), each cut after its first EOS (the EOS is kept: it is a sampled action the
    learner must train).

    temperature 0 is greedy. vocab_size: ids >= it (embedding rows the tokenizer does not have) are
    never drawn. first_row: row r of this call draws from row first_row + r of the seed's stream, so
    a batch split across processes (each calling with its own share) draws what one call with the
    whole batch would. return_logprobs: also return each row's per-token log-probs under the
    distribution it was drawn from (softmax(logits / temperature) over the first vocab_size ids):
    (completions, logprobs).
    decode: the decode loop run after the prefill, decode(model, DecodeInputs, return_logprobs)
      -> (tokens [B, N], steps run, log-probs [B, N] or None). None: decode_plain, below.
      fast_decode.FastDecode is the same loop rebuilt for speed, tested to draw the same tokens.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt and no empty prompt")
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError("num_samples and max_new_tokens must be >= 1")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if return_logprobs and (temperature == 0 or top_p < 1.0):
        raise ValueError("return_logprobs needs temperature > 0 and top_p = 1 "
                         "(the distribution the learner scores)")
    config, device = model.config, model.lm_head.weight.device
    dtype = model.lm_head.weight.dtype
    P = max(len(p) for p in prompts)
    if P + max_new_tokens > config.max_position_embeddings:
        raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"max_position_embeddings ({config.max_position_embeddings})")
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)

    ids, lengths, key_valid, positions = left_pad(prompts, device, width=P + max_new_tokens)

    # Prefill each prompt once; the decode loop fans its cache out to its samples. Only the last
    # column's hidden state is kept: it predicts the first new token.
    cache = KVCache.allocate(config, len(prompts), P, dtype, device)
    h = model.hidden_states(ids, positions, causal_mask(key_valid[:, :P], P), cache)[:, -1]

    # Per-row uniforms drawn on the CPU from one seeded stream: row r gets draws r*N .. r*N+N-1,
    # whatever the batch holds (a CPU generator is reproducible across devices; CUDA's is not across
    # batch shapes). float64: a float32 uniform has 2^24 values, so a token of probability below
    # 6e-8 would be drawn with probability 0 or 6e-8, not its own.
    B = len(prompts) * num_samples
    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    stream = torch.rand(first_row + B, max_new_tokens, generator=generator, dtype=torch.float64)
    uniforms = stream[first_row:].to(device)

    # The K samples of a prompt share its last hidden state but not their first token: each row
    # draws it with its own uniform (nanochat's samples once shared it).
    inputs = DecodeInputs(h=h.repeat_interleave(num_samples, dim=0), prompt_cache=cache,
                          samples=num_samples,
                          key_valid=key_valid.repeat_interleave(num_samples, dim=0),
                          next_position=lengths.repeat_interleave(num_samples)[:, None],
                          uniforms=uniforms, temperature=temperature, top_p=top_p,
                          vocab_size=vocab_size, eos=eos)
    out, n_steps, logprobs = (decode or decode_plain)(model, inputs, return_logprobs)

    # Cut each row after its first EOS.
    stop, result, result_logprobs = set(eos.tolist()), [], []
    for i, row in enumerate(out[:, :n_steps].tolist()):
        end = next((j + 1 for j, tok in enumerate(row) if tok in stop), len(row))
        result.append(row[:end])
        if return_logprobs:
            result_logprobs.append(logprobs[i, :end].tolist())
    return (result, result_logprobs) if return_logprobs else result


def decode_plain(model: Qwen2, inputs: DecodeInputs, return_logprobs: bool = False):
    """The decode loop, with rows that have ended dropped from the batch as it goes
    -> (tokens [B, N], steps run, log-probs [B, N] float32 or None)."""
    h, key_valid = inputs.h, inputs.key_valid
    next_position, uniforms, eos = inputs.next_position, inputs.uniforms, inputs.eos
    B, max_new_tokens = uniforms.shape
    cache = inputs.prompt_cache.fan_out(inputs.samples, key_valid.shape[1])
    device = uniforms.device
    out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    logprobs = torch.zeros(B, max_new_tokens, device=device) if return_logprobs else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)  # the output row of each row still in the batch
    n_steps = 0
    for t in range(max_new_tokens):
        # float32: a bf16 log-softmax over 152k logits is off by up to ~0.1; completion_logprobs
        # upcasts the same way
        logits = model.lm_head(h).float()
        token = sample_token(logits, inputs.temperature, inputs.top_p, uniforms[rows, t],
                             inputs.vocab_size)
        out[rows, t] = token
        if return_logprobs:
            logprobs[rows, t] = sampled_logprobs(logits, token, inputs.temperature,
                                                 inputs.vocab_size)
        n_steps = t + 1
        done[rows] |= torch.isin(token, eos)
        if t == max_new_tokens - 1:  # the last token drawn needs no forward pass
            break
        # Looking at `done` syncs with the GPU, so only every 16 steps: stop when every row has
        # ended, and drop ended rows once they are a quarter of the batch (the rest decode faster).
        if eos.numel() and t % 16 == 15:
            live = ~done[rows]
            n_live = int(live.sum())
            if n_live == 0:
                break
            if n_live <= len(rows) * 3 // 4:
                keep = live.nonzero().squeeze(1)
                rows, token, cache = rows[keep], token[keep], cache.select(keep)
                key_valid, next_position = key_valid[keep], next_position[keep]
        mask = causal_mask(key_valid[:, :cache.length + 1], 1)  # token t goes to column P + t
        h = model.hidden_states(token[:, None], next_position + t, mask, cache)[:, -1]
    return out, n_steps, logprobs


def sampled_logprobs(logits, tokens, temperature: float, vocab_size: int | None):
    """log p(token) under softmax(logits / temperature) over the first vocab_size ids: what the
    sampler drew from, in the terms completion_logprobs scores the learner."""
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, tokens[:, None]).squeeze(1)


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor,
                 vocab_size: int | None = None) -> torch.Tensor:
    """One token per row of float logits [B, V], by inverse CDF with one uniform in [0, 1) per
    row."""
    if vocab_size is not None and vocab_size < logits.shape[-1]:
        logits = logits.clone()
        logits[:, vocab_size:] = float("-inf")
    if temperature == 0:
        # = argmax(-1), the first of equal maxima (3x faster on a CPU)
        return logits.max(-1).indices
    probs = torch.softmax(logits / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p. The most likely
        # token always stays (its mass before is 0 < top_p).
        probs, order = probs.sort(dim=-1, descending=True)
        mass_before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)
    # float64: a float32 running sum over 152k probabilities drifts by ~6e-8, more than a rare
    # token's whole interval
    cdf = probs.double().cumsum(-1)
    # u * total, not u: after the top-p cut the kept mass is below 1 (this renormalises it)
    draws = (uniforms.double() * cdf[:, -1])[:, None]
    # right=True: the first index whose cdf exceeds the draw, so zero-probability ids are never
    # chosen. The clamp: NaN logits make searchsorted return V, an id the model does not have.
    idx = torch.searchsorted(cdf, draws, right=True).clamp(max=logits.shape[-1] - 1)
    idx = idx.squeeze(-1)
    return order.gather(-1, idx[:, None]).squeeze(-1) if order is not None else idx


# Each random draw of a run gets its own generator, seeded from the run's --seed, the draw's name
# and its index (a step, an epoch, a batch of problems, a tensor), so that turning one draw on (say
# --diag-every) changes no other, and no two draws of any two runs share a stream (the prompt
# order is Python's generator, which seeds its state another way; the LoRA init is the exception
# grpo.setup states). torch's CPU generator keeps only the low 32 bits of a seed (seeds 1 and
# 1 + 2**32 draw the same numbers), so the layout fits in 32 bits: the training draws at
# seed * SEED_STRIDE + index, below 2**31 for every --seed below MAX_SEED; each measurement draw
# in its own 2**29 block above 2**31, 2**18 indices per seed.
SEED_STRIDE = 1_000_003  # a prime above any step count: seed s's steps never reach seed s + 1's
MAX_SEED = 2**11  # 2**11 * SEED_STRIDE < 2**31
TRAINING_DRAWS = ("rollouts", "prompt-order")  # index: the step, the epoch
MEASUREMENT_DRAWS = ("held-out", "diagnostics", "sketch")  # index: the batch, the step, the tensor


def derived_seed(seed: int, draw: str, index: int) -> int:
    """The generator seed of one draw of the run with this --seed."""
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"--seed must be in [0, {MAX_SEED}), got {seed}")
    if draw in TRAINING_DRAWS:
        if not 0 <= index < SEED_STRIDE:
            raise ValueError(f"{draw} index {index} is outside [0, {SEED_STRIDE})")
        return seed * SEED_STRIDE + index
    if not 0 <= index < 2**18:
        raise ValueError(f"{draw} index {index} is outside [0, {2**18})")
    return 2**31 + MEASUREMENT_DRAWS.index(draw) * 2**29 + seed * 2**18 + index


# -----------------------------------------------------------------------------
# Log-probabilities for the learner


def token_logprobs(hidden: torch.Tensor, lm_head_weight: torch.Tensor, targets: torch.Tensor,
                   temperature: float = 1.0, vocab_size: int | None = None, chunk_size: int = 1024):
    """log p(target) and the entropy of the next-token distribution at each position.

    hidden [B, T, H], targets [B, T] -> (logprobs [B, T] float32, entropy [B, T] float32, no grad).
    The LM head runs over `chunk_size` positions at a time and, under autograd, each chunk is
    recomputed in backward, so at most [chunk_size, V] float32 logits exist at once, never
    [B, T, V]. temperature and vocab_size define the same distribution the sampler drew from.
    """
    B, T, H = hidden.shape
    flat_h, flat_t = hidden.reshape(B * T, H), targets.reshape(B * T)
    logprobs, entropies = [], []
    for start in range(0, B * T, chunk_size):
        h, t = flat_h[start:start + chunk_size], flat_t[start:start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_chunk_logprobs, h, lm_head_weight, t, temperature, vocab_size,
                                 use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(h, lm_head_weight, t, temperature, vocab_size)
        logprobs.append(lp)
        entropies.append(ent)
    return torch.cat(logprobs).view(B, T), torch.cat(entropies).view(B, T)


def _chunk_logprobs(h, weight, targets, temperature, vocab_size):
    logits = F.linear(h, weight)
    # bf16 -> float32 (the sampler's dtype; bf16's logsumexp over 152k is off by ~0.06), float64
    # stays
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    # the sampler's distribution: ids no token reaches out of the softmax, the same temperature
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    if temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
    with torch.no_grad():  # entropy is only logged: no [chunk, V] product kept for backward
        probs = torch.softmax(logits, dim=-1)
        entropy = logz - (probs * logits).sum(-1)
    return lp, entropy


def completion_logprobs(model: Qwen2, prompts: list[list[int]], completions: list[list[int]],
                        prompt_of: list[int], temperature: float = 1.0,
                        vocab_size: int | None = None, chunk_size: int = 1024):
    """Per-token log-probs of each completion given its prompt, with gradients; each prompt runs
    only once.

    completions[i] continues prompts[prompt_of[i]] (non-empty). The prompts run left-padded, as in
    the sampler, keeping their keys/values in a PrefixCache; every completion then attends to its
    own prompt's entries, so K samples of one prompt cost one prompt pass, not K. Returns
    (logprobs, entropy, mask), each [N, C] with C = the longest completion: position j scores
    completion token j.
    """
    device = model.lm_head.weight.device
    # ---- the prompts, each once, keeping their keys/values ----
    ids, lengths, key_valid, positions = left_pad(prompts, device)
    P = ids.shape[1]
    cache = PrefixCache()
    # The last prompt column's hidden state predicts completion token 0.
    last = model.hidden_states(ids, positions, causal_mask(key_valid, P), cache)[:, -1]

    # ---- the completions, right-padded, each over its own prompt's keys/values ----
    rows = torch.tensor(prompt_of, device=device)
    cache = cache.select(rows)
    N, C = len(completions), max(len(c) for c in completions)
    cids = torch.zeros(N, C, dtype=torch.long, device=device)
    for i, c in enumerate(completions):
        cids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
    # Completion token j sits at position len(prompt) + j, as in the sampler. Its right padding
    # comes after its tokens, where causality already hides it: every completion column is valid.
    positions = lengths[rows][:, None] + torch.arange(C, device=device)[None, :]
    keys = torch.cat([key_valid[rows], torch.ones(N, C, dtype=torch.bool, device=device)], dim=1)
    h = model.hidden_states(cids, positions, causal_mask(keys, C), cache)
    # Shift by one: the state before token j predicts it; the last token's state predicts nothing.
    hidden = torch.cat([last[rows][:, None], h[:, :-1]], dim=1)
    logprobs, entropy = token_logprobs(hidden, model.lm_head.weight, cids, temperature, vocab_size,
                                       chunk_size)
    completion_lengths = torch.tensor([len(c) for c in completions], device=device)
    mask = torch.arange(C, device=device)[None, :] < completion_lengths[:, None]
    return logprobs, entropy, mask


# -----------------------------------------------------------------------------
# Loading HF checkpoints (safetensors only)

HUB_PATTERNS = ["*.json", "*.safetensors", "merges.txt", "vocab.json"]


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; anything else that looks like a hub id ("org/name") is downloaded
    (weights and configs only) with huggingface-hub."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    text = str(name_or_path)
    looks_like_hub_id = (text.count("/") == 1 and not text.startswith((".", "/", "~"))
                         and not path.exists())
    if not looks_like_hub_id:
        raise FileNotFoundError(f"model folder not found: {text}")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id=text, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # offline, DNS, HTTP errors, missing repo: one clear line
        raise ConnectionError(
            f"could not download '{text}' from the Hugging Face Hub ({type(e).__name__}); "
            f"the hub may be unreachable. Download it elsewhere and pass the local folder instead, "
            f"e.g. --model /path/to/{text.split('/')[-1]}") from None


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        pickles = (sorted(p.name for p in folder.glob("*.bin"))
                   + sorted(p.name for p in folder.glob("*.pt")))
        hint = (f" It has {pickles}: pickle checkpoints are not loaded (they can run code); "
                "convert them to safetensors first.") if pickles else ""
        raise FileNotFoundError(f"{folder}: no model.safetensors or "
                                f"model.safetensors.index.json.{hint}")
    state = {}
    for name in files:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is listed in the index but missing")
        state.update(load_file(folder / name))
    return state


def pick_device(name: str) -> torch.device:
    """--device: "auto" is cuda when available, else cpu; "cuda" without one is a clear error.
    On CUDA it also chooses the attention backends (safe_attention)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    if device.type == "cuda":
        safe_attention()
    return device


def safe_attention() -> str:
    """Switch cuDNN's scaled_dot_product_attention off (process-wide) -> what runs instead.

    torch 2.11 prefers cuDNN attention on Hopper with cuDNN > 9.15, and it has two hazards here:
    with an explicit mask (the learner always passes one) its backward returns NaN in dQ when the
    key length is 64 mod 128 and a row's logsumexp is below ln(FLT_MAX) = -88.7 (pytorch#196678,
    hit through Qwen2.5 in TRL#7181), and it builds a plan for every new shape (tens to hundreds of
    ms each; the learner's shapes change every micro-batch). Flash attention (no mask: the plain
    causal batch) and memory-efficient attention (masks) are clean on the same inputs;
    bench/cuda_checks.py checks it on the machine (the probe and the bf16 gate)."""
    torch.backends.cuda.enable_cudnn_sdp(False)
    return attention_backends()


def attention_backends() -> str:
    """The SDPA backends CUDA may use now, as one line for a run's log."""
    flags = {"flash": torch.backends.cuda.flash_sdp_enabled(),
             "memory-efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
             "math": torch.backends.cuda.math_sdp_enabled(),
             "cuDNN": torch.backends.cuda.cudnn_sdp_enabled()}
    return ("attention (SDPA on CUDA): " + ", ".join(k for k, on in flags.items() if on)
            + "; off: " + (", ".join(k for k, on in flags.items() if not on) or "none"))


def load_model(name_or_path: str | os.PathLike, dtype: torch.dtype | None = None,
               device: str | torch.device = "cpu") -> Qwen2:
    """Build on the meta device, then assign the checkpoint's tensors (cast to dtype) in one strict
    load.

    dtype defaults to bfloat16 on CUDA and float32 elsewhere.
    """
    folder = resolve_model_path(name_or_path)
    config = Qwen2Config.from_pretrained(folder)
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with torch.device("meta"):  # no memory, no random init of weights the checkpoint replaces
        model = Qwen2(config)
    state = load_state_dict(folder)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied: the embedding is the head
    expected = {k: v.shape for k, v in model.state_dict().items()
                if not (config.tie_word_embeddings and k == "lm_head.weight")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(s)}"
             for k, s in expected.items() if k in state and state[k].shape != s]
    if missing or unexpected or wrong:
        problems = ([f"missing tensors: {missing}"] if missing else []) + \
                   ([f"unexpected tensors: {unexpected}"] if unexpected else []) + \
                   ([f"wrong shapes: {wrong}"] if wrong else [])
        raise ValueError(f"{folder}: checkpoint does not match its config.json; "
                         + "; ".join(problems))
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    # Not strict: the keys were checked above, with a tied head absent. assign: meta parameters
    # hold no memory to copy into, so the checkpoint's tensors become the parameters, and the head
    # must be tied again to the new embedding.
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    return fuse_projection_storage(model).eval()


FUSED_GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj")), ("mlp", ("gate_proj", "up_proj")))


@torch.no_grad()
def fuse_projection_storage(model: Qwen2) -> Qwen2:
    """Store each layer's q/k/v weights and biases as adjacent rows of one tensor, and gate/up
    likewise.

    Only the storage changes: every parameter keeps its name, shape and value, so loading, saving
    and this file's forward are untouched, while the fast decoder (fast_decode.py) reads each group
    as one weight matrix without a copy. A model moved with .to() afterwards has separate storage
    again (the fast decoder then keeps a concatenated copy, refilled at every generate call).
    """
    for block in model.model.layers:
        for part, names in FUSED_GROUPS:
            layers = [getattr(getattr(block, part), n) for n in names]
            for attr in ("weight", "bias"):
                params = [getattr(m, attr) for m in layers]
                if any(p is None for p in params):
                    continue
                fused = torch.cat([p.detach() for p in params])
                for m, p, piece in zip(layers, params, fused.split([p.shape[0] for p in params])):
                    setattr(m, attr, nn.Parameter(piece, requires_grad=p.requires_grad))
    return model


def save_model(model: Qwen2, folder: str | os.PathLike, state_dict: dict | None = None):
    """Write an HF-format folder (config.json + model.safetensors) that load_model and transformers
    read."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    # tied: HF checkpoints store the embedding only (and safetensors refuses two names for one
    # tensor)
    if model.config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
              folder / "model.safetensors", metadata={"format": "pt"})
    torch_dtype = str(model.lm_head.weight.dtype).removeprefix("torch.")
    config = model.config.to_hf_dict() | {"torch_dtype": torch_dtype}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# -----------------------------------------------------------------------------
# Tokenizer

# Qwen2's pre-tokenizer regex (transformers models/qwen2/tokenization_qwen2.py): single digits
# split.
QWEN2_PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                           r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class Tokenizer:
    """A thin wrapper over a `tokenizers.Tokenizer` with the ids GRPO needs."""

    def __init__(self, tokenizer, eos_token: str | None, pad_token: str | None = None):
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.token_to_id(eos_token) if eos_token else None
        self.pad_token_id = tokenizer.token_to_id(pad_token) if pad_token else self.eos_token_id

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (added tokens included); the model may have more
        rows."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)


def stop_ids(tok: Tokenizer) -> list[int]:
    """End of document, end of a chat turn and start of a next one, when the tokenizer has them
    (Qwen: <|endoftext|>, <|im_end|>, <|im_start|>): a model that opens a turn itself has ended its
    own."""
    ids = [tok.eos_token_id, tok.token_to_id("<|im_end|>"), tok.token_to_id("<|im_start|>")]
    return sorted({i for i in ids if i is not None})


def completion_text(tok: Tokenizer, ids: list[int]) -> str:
    """The text graded: the completion up to its first stop token, decoded without special tokens
    (decoded whole, a turn the model went on to invent would be graded as part of its answer)."""
    stops = set(stop_ids(tok))
    end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    return tok.decode(ids[:end], skip_special_tokens=True)


def load_tokenizer(name_or_path: str | os.PathLike) -> Tokenizer:
    """tokenizer.json when present, otherwise vocab.json + merges.txt with Qwen2's byte-level BPE
    and the added tokens of tokenizer_config.json. The EOS is tokenizer_config's eos_token."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    folder = resolve_model_path(name_or_path)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}

    def token_text(value):
        return value.get("content") if isinstance(value, dict) else value

    if (folder / "tokenizer.json").is_file():
        tokenizer = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        merges = []
        for line in (folder / "merges.txt").read_text(encoding="utf-8").split("\n"):
            # Qwen's file has no header: never skip line 1 blindly.
            if line.startswith("#version") or not line:
                continue
            a, b = line.split(" ")
            merges.append((a, b))
        tokenizer = HFTokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
        tokenizer.normalizer = normalizers.NFC()
        # Qwen's regex splits; ByteLevel only maps bytes to symbols (its own GPT-2 regex would split
        # pieces again: "$abc" -> "$", "abc")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tokenizer.decoder = decoders.ByteLevel()
        # add_tokens numbers new tokens in order: added by id, each must land on its own id
        added = sorted(((int(i), t) for i, t in config.get("added_tokens_decoder", {}).items()))
        for token_id, token in added:
            tokenizer.add_tokens([AddedToken(
                token["content"], special=token.get("special", False), normalized=False,
                lstrip=token.get("lstrip", False), rstrip=token.get("rstrip", False),
                single_word=token.get("single_word", False))])
            if tokenizer.token_to_id(token["content"]) != token_id:
                raise ValueError(f"{config_path}: added token {token['content']!r} "
                                 f"should have id {token_id}")
    else:
        raise FileNotFoundError(f"{folder}: no tokenizer.json, nor vocab.json + merges.txt")
    eos_token, pad_token = token_text(config.get("eos_token")), token_text(config.get("pad_token"))
    return Tokenizer(tokenizer, eos_token, pad_token)
