"""
The sampler's decode loop rebuilt for speed. It computes the same function as the plain loop in
model.py (Qwen2.hidden_states over a KVCache, the LM head, sample_token) and is tested equal to it
(tests/test_fast_decode.py, bench/cuda_checks.py); `generate` runs it unless asked for fast=False.

Why a second copy of the step at all: a GPU decode step at batch 8 is bound by the number of kernels
it launches (the plain step is 43 per layer, 85 with LoRA: bench/count_kernels.py), not by
arithmetic. What changes:

- Projections that share an input are one GEMM: q/k/v (with their biases) and gate/up. load_model
  lays their weights out as adjacent rows of one tensor (model.fuse_projection_storage), so the
  fused weight is a view; for any other model it is a copy made once per generate call.
- LoRA: the A matrices that share an input are one GEMM and their B matrices one block-diagonal GEMM
  with alpha / r folded into B (exact when alpha / r is a power of two, as in both presets), in the
  adapter's dtype.
- Each RMSNorm takes the residual add before it, and the LoRA deltas are added inside the op that
  consumes them (the norm, rotary, the SiLU gate), in the plain path's order and dtypes.
- Rotary cos/sin come from a table built once per call; the padding mask is an additive bias built
  once per step, not converted in every layer; keys and values of a layer are one tensor
  (KVCache.kv), written once.
- Attention runs over the filled columns only: exactly on the shrinking-batch loop, and on the
  fixed-shape loop over the smallest multiple of ATTENTION_BUCKET columns that holds them (one CUDA
  graph per bucket).
- Sampling at temperature > 0 without top-p maps each row's uniform to a token by inverse CDF in two
  parallel passes (two_pass_inverse_cdf) instead of a float64 cumulative sum over the vocabulary;
  greedy and top-p call model.sample_token itself.
- On CUDA the pieces between the GEMMs (the norms, rotary, the gate, the sampler) are compiled with
  torch.compile (inductor, rounding bfloat16 intermediates where eager does:
  emulate_precision_casts) and each step is replayed as a CUDA graph: 10 kernels per layer, 19 with
  LoRA.

How equal: in float32 on the CPU the eager step's hidden states, keys and values are the plain
forward's bit for bit without LoRA, on Intel and AMD alike. With LoRA the block-diagonal B GEMM and
the addmm that adds its delta sum in another order than LoRALinear; MKL picks its kernels by
instruction set and shape, so that is the plain forward's bits on an Intel Xeon at batch > 1 and a
last-bit difference on an AMD EPYC or at batch 1 (tested within n ulps of the largest value, n the
longest reduction of the step). The logits differ by rounding where the CPU computes the head over a
transposed copy (twice as fast there), and compiled code sums its reductions in another order. The tokens drawn
for a seed are the same in every test; they could differ only where a draw lands within that
rounding of a CDF boundary, as the plain loop's own draws may between batch sizes. lora.merged_copy
(--sampler merged) is the one deliberate departure, measured by grpo.sampler_mismatch. Left out:
paged KV, continuous batching, speculative decoding, split-KV attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

import lora as L
import model as M

# Fixed-shape loop: the attention width is a multiple of this (one CUDA graph each).
ATTENTION_BUCKET = 256
SAMPLER_CHUNK = 1024      # vocabulary entries per chunk in the sampler's first pass
# Probabilities as integers: exact sums in any order; p * 2^62 summed over V stays below 2^63.
CDF_SCALE = 2.0 ** 62


# -----------------------------------------------------------------------------
# The weights, arranged for one decode step


@dataclass
class Projection:
    """Linear layers that share an input, as one: weight [sum out, in], bias, and their LoRA
    adapters as lora_a [sum r, in] and a block-diagonal lora_b [sum out, sum r] with alpha / r
    folded in."""
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    lora_a: torch.Tensor | None = None
    lora_b: torch.Tensor | None = None

    # lora_b transposed, contiguous: x @ B^T without a transposed GEMM
    lora_b_t: torch.Tensor | None = None
    # [weight; lora_a] when both have one dtype: one GEMM for both
    with_a: torch.Tensor | None = None
    with_a_bias: torch.Tensor | None = None  # [bias; 0] to go with it

    def lora_delta(self, x_lora):
        """x A^T B^T in the adapter's dtype (None without an adapter): what LoRALinear adds, before
        its cast."""
        return None if self.lora_a is None else F.linear(x_lora, self.lora_a) @ self.lora_b_t

    def __call__(self, x, x_lora=None):
        """(x W^T + b, its LoRA delta or None). Where the adapter has the base's dtype (float32 on
        a CPU), x A^T comes out of the base GEMM as extra output columns: each output column is its
        own dot product over the input, so the base columns are the plain GEMM's."""
        if self.with_a is None:
            return F.linear(x, self.weight, self.bias), self.lora_delta(x_lora)
        out = F.linear(x, self.with_a, self.with_a_bias)
        y, xa = out.split([self.weight.shape[0], self.lora_a.shape[0]], dim=-1)
        # y + (x A^T) B^T, the delta added as LoRALinear adds it
        return torch.addmm(y, xa, self.lora_b_t), None

    @property
    def lora_dtype(self):
        return None if self.lora_a is None else self.lora_a.dtype


def adjacent_rows(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """One tensor over `tensors` when they are contiguous, consecutive in one storage (a view);
    else None."""
    first = tensors[0]
    offset = first.storage_offset()
    for t in tensors:
        if (not t.is_contiguous() or t.dtype != first.dtype or t.shape[1:] != first.shape[1:]
                or t.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
                or t.storage_offset() != offset):
            return None
        offset += t.numel()
    rows = sum(t.shape[0] for t in tensors)
    return first.detach().as_strided((rows, *first.shape[1:]), first.stride())


def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat(tensors), as a view when they already are adjacent rows of one storage."""
    tensors = [t.detach() for t in tensors]
    view = adjacent_rows(tensors)
    return view if view is not None else torch.cat(tensors)


def fuse(linears: list) -> Projection:
    """The Projection of nn.Linear / LoRALinear layers with one input (their outputs concatenated
    in order)."""
    bias = stacked([m.bias for m in linears]) if linears[0].bias is not None else None
    projection = Projection(stacked([m.weight for m in linears]), bias)
    adapted = [(i, m) for i, m in enumerate(linears)
               if isinstance(m, L.LoRALinear) and m.enabled and not m.merged]
    if not adapted:
        return projection
    if any(m.training and isinstance(m.dropout, torch.nn.Dropout) for _, m in adapted):
        raise ValueError("LoRA dropout is active (the model is in training mode): "
                         "call model.eval() before generate, or pass fast=False")
    projection.lora_a = torch.cat([m.lora_A.weight.detach() for _, m in adapted])
    projection.lora_b = projection.lora_a.new_zeros(projection.weight.shape[0],
                                                    projection.lora_a.shape[0])
    rows = [0]
    for m in linears:
        rows.append(rows[-1] + m.out_features)
    col = 0
    for i, m in adapted:
        projection.lora_b[rows[i]:rows[i + 1], col:col + m.r] = m.lora_B.weight.detach() * m.scaling
        col += m.r
    projection.lora_b_t = projection.lora_b.t().contiguous()
    if (projection.lora_a.dtype == projection.weight.dtype
            and projection.weight.device.type == "cpu"):
        projection.with_a = torch.cat([projection.weight, projection.lora_a])
        if bias is not None:
            projection.with_a_bias = torch.cat([bias, bias.new_zeros(projection.lora_a.shape[0])])
    return projection


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    qkv: Projection
    o: Projection
    post_norm: torch.Tensor
    gate_up: Projection
    down: Projection


# -----------------------------------------------------------------------------
# The pieces of a step between the GEMMs (compiled on CUDA). Each repeats the plain path's
# operations in its order and dtypes: x + (y + delta.to(y.dtype)) is what Block and LoRALinear
# compute.


def add_lora(y, delta):
    return y if delta is None else y + delta.to(y.dtype)


def rms_norm(x, weight, eps: float, lora_dtype):
    """model.RMSNorm -> (x, its norm, the norm in the adapter's dtype for the next LoRA A, or
    None)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    normed = weight * h.to(x.dtype)
    return x, normed, None if lora_dtype is None else normed.to(lora_dtype)


def residual_norm(x, branch, branch_delta, weight, eps: float, lora_dtype):
    """x + branch (a block's output, its LoRA delta added first), then rms_norm of the sum."""
    return rms_norm(x + add_lora(branch, branch_delta), weight, eps, lora_dtype)


def rotate_qkv(qkv, qkv_delta, cos, sin, n_heads: int, n_kv_heads: int):
    """The fused q/k/v output [B, (n_heads + 2 n_kv_heads) D] -> q [B, n_kv_heads, G, D] (the G
    query heads of each KV head as G query rows, as Attention does) and the new keys and values
    [2, B, n_kv_heads, 1, D]."""
    B, D = qkv.shape[0], cos.shape[-1]
    qkv = add_lora(qkv, qkv_delta).view(B, n_heads + 2 * n_kv_heads, D)
    qk, v = qkv.split([n_heads + n_kv_heads, n_kv_heads], dim=1)
    # q and k at once
    q, k = M.apply_rotary(qk, cos[:, None], sin[:, None]).split([n_heads, n_kv_heads], dim=1)
    return q.reshape(B, n_kv_heads, n_heads // n_kv_heads, D), torch.stack([k, v])[:, :, :, None]


def silu_gate(gate_up, gate_up_delta, lora_dtype):
    """silu(gate) * up from the fused gate/up output -> (the product, the product in the adapter's
    dtype or None)."""
    gate, up = add_lora(gate_up, gate_up_delta).chunk(2, dim=-1)
    y = F.silu(gate) * up
    return y, None if lora_dtype is None else y.to(lora_dtype)


def two_pass_inverse_cdf(logits, temperature: float, uniforms, vocab_size: int | None):
    """The token sample_token draws for these uniforms, found in two parallel passes over the
    vocabulary.

    Probabilities are computed exactly as sample_token does; each p then becomes the integer
    floor(p * 2^62), so every sum below is exact whatever its order (GPU scans included). Pass 1
    sums each chunk of SAMPLER_CHUNK entries; the row's draw t = floor(u * total) falls in the first
    chunk whose running total exceeds it. Pass 2 scans that one chunk for the first entry whose
    running total exceeds t. A zero probability adds nothing to a running total, so it is never
    chosen. sample_token searches a float64 cumsum instead: both pick the first token whose CDF
    exceeds u * total, so they differ only when a draw lands within that cumsum's rounding of a CDF
    boundary (at most V * 2^-53 of the probability mass: 2e-11 at V = 151,936), or on a token of
    probability below 2^-62, which only the cumsum can draw.
    """
    if vocab_size is not None and vocab_size < logits.shape[-1]:
        logits = logits.clone()
        logits[:, vocab_size:] = float("-inf")
    probs = torch.softmax(logits / temperature, dim=-1)
    B, V = probs.shape
    C = SAMPLER_CHUNK
    n = -(-V // C)
    mass = F.pad((probs.double() * CDF_SCALE).long(), (0, n * C - V)).view(B, n, C)
    ends = mass.sum(-1).cumsum(-1)                                             # [B, n]
    draw = (uniforms.double() * ends[:, -1].double()).long().clamp(max=ends[:, -1] - 1)[:, None]
    chunk = torch.searchsorted(ends, draw, right=True)                         # [B, 1]
    before = torch.where(chunk > 0, ends.gather(1, (chunk - 1).clamp(min=0)), 0)
    inside = mass.gather(1, chunk[:, :, None].expand(B, 1, C)).squeeze(1).cumsum(-1) + before
    return (chunk * C + torch.searchsorted(inside, draw, right=True)).squeeze(1)


def token_logprobs(logits, tokens, temperature: float, vocab_size: int | None):
    """log p(token) under softmax(logits / temperature) over the first vocab_size ids: what the
    sampler drew from, in the terms completion_logprobs scores the learner."""
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, tokens[:, None]).squeeze(1)


def _compiled(fn):
    # dynamic: one compiled graph for every batch size (the shrinking loop changes it every few
    # steps).
    return torch.compile(fn, dynamic=True, options={"emulate_precision_casts": True})


# -----------------------------------------------------------------------------
# The step


class Decoder:
    """One decode step of `model` over fused weights, built from the model's current weights (per
    generate call)."""

    def __init__(self, model: M.Qwen2, max_position: int, compile: bool = False):
        c = model.config
        self.n_heads, self.n_kv_heads, self.eps = (c.num_attention_heads, c.num_key_value_heads,
                                                   c.rms_norm_eps)
        self.embed = model.model.embed_tokens.weight.detach()
        head = model.lm_head.weight.detach()
        # On a CPU, x @ W^T with W stored [V, H] runs at half the speed of the same GEMM with W
        # stored [H, V] (MKL, batch 8); so there the head is copied transposed, once per call. Same
        # sums, other rounding.
        self.head_t = head.T.contiguous() if head.device.type == "cpu" else head.T
        self.final_norm = model.model.norm.weight.detach()
        self.layers = []
        for block in model.model.layers:
            att, mlp = block.self_attn, block.mlp
            self.layers.append(LayerWeights(
                block.input_layernorm.weight.detach(),
                fuse([att.q_proj, att.k_proj, att.v_proj]), fuse([att.o_proj]),
                block.post_attention_layernorm.weight.detach(),
                fuse([mlp.gate_proj, mlp.up_proj]), fuse([mlp.down_proj])))
        cos, sin = M.rotary_cos_sin(torch.arange(max_position, device=self.embed.device)[None],
                                    c.head_dim, c.rope_theta, self.embed.dtype)
        self.cos, self.sin = cos[0, 0], sin[0, 0]  # [max_position, D]
        pieces = (rms_norm, residual_norm, rotate_qkv, silu_gate, two_pass_inverse_cdf)
        self.rms_norm, self.residual_norm, self.rotate_qkv, self.silu_gate, self.inverse_cdf = (
            map(_compiled, pieces) if compile else pieces)

    def hidden(self, tokens, positions, cache: M.KVCache, column, width: int, bias):
        """Final-norm hidden states [B, H] for one new token per row (tokens, positions [B]): its
        key and value go to cache column `column` (a [1] tensor); attention sees columns < width,
        masked by `bias` [B, 1, 1, width] (0 where a key is visible, -inf elsewhere)."""
        B = tokens.shape[0]
        x = F.embedding(tokens, self.embed)
        cos, sin = self.cos[positions], self.sin[positions]
        # The previous block's output (and its LoRA delta), added to x by the next norm.
        branch = delta = None
        for i, layer in enumerate(self.layers):
            if branch is None:
                x, h, h_lora = self.rms_norm(x, layer.input_norm, self.eps, layer.qkv.lora_dtype)
            else:
                x, h, h_lora = self.residual_norm(x, branch, delta, layer.input_norm, self.eps,
                                                  layer.qkv.lora_dtype)
            qkv, qkv_delta = layer.qkv(h, h_lora)
            q, new_kv = self.rotate_qkv(qkv, qkv_delta, cos, sin, self.n_heads, self.n_kv_heads)
            kv = cache.kv[i]
            kv.index_copy_(3, column, new_kv)
            y = F.scaled_dot_product_attention(q, kv[0, :, :, :width], kv[1, :, :, :width],
                                               attn_mask=bias)
            y = y.reshape(B, -1)
            branch, delta = layer.o(y, None if layer.o.lora_a is None else y.to(layer.o.lora_dtype))
            x, h, h_lora = self.residual_norm(x, branch, delta, layer.post_norm, self.eps,
                                              layer.gate_up.lora_dtype)
            gate_up, gate_up_delta = layer.gate_up(h, h_lora)
            y, y_lora = self.silu_gate(gate_up, gate_up_delta, layer.down.lora_dtype)
            branch, delta = layer.down(y, y_lora)
        return self.residual_norm(x, branch, delta, self.final_norm, self.eps, None)[1]

    def logits(self, h):
        return (h @ self.head_t).float()

    def sample(self, logits, temperature: float, top_p: float, uniforms, vocab_size: int | None):
        if temperature == 0 or top_p < 1.0:
            return M.sample_token(logits, temperature, top_p, uniforms, vocab_size)
        return self.inverse_cdf(logits, temperature, uniforms, vocab_size)


# -----------------------------------------------------------------------------
# The two decode loops (called by model.generate after its prefill)


def decode(model, inputs: M.DecodeInputs, fixed_shapes: bool, compile: bool, return_logprobs: bool):
    """-> (tokens [B, N], steps run, sampler log-probs [B, N] float32 or None), from the state
    model.generate's plain loop starts from."""
    max_position = int(inputs.next_position.max()) + inputs.uniforms.shape[1]
    decoder = Decoder(model, max_position, compile)
    loop = _decode_fixed_shapes if fixed_shapes else _decode_shrinking
    return loop(decoder, inputs, return_logprobs)


def _draw(decoder, h, inputs: M.DecodeInputs, uniforms, logprobs: bool):
    """Each row's next token from hidden states h, and its log-prob if asked (else None)."""
    logits = decoder.logits(h)
    token = decoder.sample(logits, inputs.temperature, inputs.top_p, uniforms, inputs.vocab_size)
    if not logprobs:
        return token, None
    return token, token_logprobs(logits, token, inputs.temperature, inputs.vocab_size)


def _decode_shrinking(decoder, inputs: M.DecodeInputs, return_logprobs: bool):
    """model._decode_plain with the fused step: rows that have ended leave the batch (checked every
    16 steps)."""
    h, cache, uniforms, eos = inputs.h, inputs.cache, inputs.uniforms, inputs.eos
    next_position, key_valid = inputs.next_position.squeeze(1), inputs.key_valid
    P = cache.length  # the prompt columns: the fused step writes at its own columns, P + t
    B, max_new_tokens = uniforms.shape
    device = uniforms.device
    out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    logprobs = torch.zeros(B, max_new_tokens, device=device) if return_logprobs else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)
    bias = torch.zeros(key_valid.shape, dtype=h.dtype, device=device)
    bias.masked_fill_(~key_valid, float("-inf"))
    n_steps = 0
    for t in range(max_new_tokens):
        token, lp = _draw(decoder, h, inputs, uniforms[rows, t], return_logprobs)
        out[rows, t] = token
        if return_logprobs:
            logprobs[rows, t] = lp
        n_steps = t + 1
        done[rows] |= torch.isin(token, eos)
        if t == max_new_tokens - 1:
            break
        if eos.numel() and t % 16 == 15:
            live = ~done[rows]
            n_live = int(live.sum())
            if n_live == 0:
                break
            if n_live <= len(rows) * 3 // 4:
                keep = live.nonzero().squeeze(1)
                rows, token, cache = rows[keep], token[keep], cache.select(keep)
                bias, next_position = bias[keep], next_position[keep]
        column = torch.full((1,), P + t, device=device)
        h = decoder.hidden(token, next_position + t, cache, column, P + t + 1,
                           bias[:, None, None, :P + t + 1])
    return out, n_steps, logprobs


def _decode_fixed_shapes(decoder, inputs: M.DecodeInputs, return_logprobs: bool):
    """The whole batch to the end, one fixed-shape step per attention bucket; on CUDA each bucket's
    step is captured once as a CUDA graph and replayed.

    Step t feeds token t at cache column P + t and draws token t + 1. Its inputs live in fixed
    buffers (token, column, uniform) that the loop refills before each step; the mask and positions
    are built inside it.
    """
    h, cache, uniforms, eos = inputs.h, inputs.cache, inputs.uniforms, inputs.eos
    next_position, key_valid = inputs.next_position.squeeze(1), inputs.key_valid
    P = cache.length  # the prompt columns: the fused step writes at its own columns, P + t
    B, max_new_tokens = uniforms.shape
    device, W = uniforms.device, key_valid.shape[1]
    out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    logprobs = torch.zeros(B, max_new_tokens, device=device) if return_logprobs else None
    out[:, 0], lp = _draw(decoder, h, inputs, uniforms[:, 0], return_logprobs)
    if return_logprobs:
        logprobs[:, 0] = lp
    if max_new_tokens == 1:
        return out, 1, logprobs
    token_in, uniform_in = out[:, 0].clone(), uniforms[:, 1].clone()
    column = torch.full((1,), P, device=device)
    columns = torch.arange(W, device=device)

    def step(width):
        visible = key_valid[:, :width] & (columns[:width] <= column)
        bias = torch.zeros(visible.shape, dtype=h.dtype, device=device)
        bias.masked_fill_(~visible, float("-inf"))
        hidden = decoder.hidden(token_in, next_position + (column - P), cache, column, width,
                                bias[:, None, None])
        return _draw(decoder, hidden, inputs, uniform_in, return_logprobs)

    steps = {}  # attention width -> the step (a CUDA graph's replay on CUDA)
    pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
    done = torch.isin(out[:, 0], eos)
    n_steps = max_new_tokens
    for t in range(max_new_tokens - 1):
        if eos.numel() and t % 16 == 15 and bool(done.all()):  # a GPU sync, so only every 16 steps
            n_steps = t + 1
            break
        column.fill_(P + t)
        uniform_in.copy_(uniforms[:, t + 1])
        width = min(W, -(-(P + t + 1) // ATTENTION_BUCKET) * ATTENTION_BUCKET)
        if width not in steps:
            step_at = partial(step, width)
            steps[width] = _cuda_graph(step_at, pool) if device.type == "cuda" else step_at
        token, lp = steps[width]()
        out[:, t + 1] = token
        if return_logprobs:
            logprobs[:, t + 1] = lp
        token_in.copy_(token)
        if eos.numel():
            done |= torch.isin(token, eos)
    return out, n_steps, logprobs


def _cuda_graph(step, pool):
    """Capture step() as a CUDA graph -> a function that replays it and returns its outputs (fixed
    buffers).

    Warm-up first, on a side stream (compilation, cuBLAS handles, the allocator): it is the real
    step, and the first replay repeats it exactly (the same cache column with the same values). The
    graphs of one generate call share a memory pool: they are replayed one after another, never
    concurrently.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        outputs = step()
    return lambda: (graph.replay(), outputs)[1]
