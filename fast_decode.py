"""
The sampler's decode loop rebuilt for speed. It computes the same function as the plain loop in
model.py (model.decode_plain: Qwen2.hidden_states over a KVCache, the LM head, sample_token) and is
tested equal to it (tests/test_fast_decode.py, bench/cuda_checks.py). model.generate runs it when
given it: generate(..., decode=FastDecode()); grpo.py's --decoder chooses.

Why a second copy of the step at all: a GPU decode step at batch 8 is bound by the number of kernels
it launches (the plain step is 43 per layer, 85 with LoRA: bench/count_kernels.py), not by
arithmetic. What changes:

- Projections that share an input are one GEMM: q/k/v (with their biases) and gate/up. load_model
  lays their weights out as adjacent rows of one tensor (model.fuse_projection_storage), so the
  fused weight is a view; for any other model it is a copy, refilled at every call.
- LoRA: the A matrices that share an input are one GEMM and their B matrices one block-diagonal GEMM
  with alpha / r folded into B (exact when alpha / r is a power of two, as in both presets), in the
  adapter's dtype.
- Each RMSNorm takes the residual add before it, and the LoRA deltas are added inside the op that
  consumes them (the norm, rotary, the SiLU gate), in the plain path's order and dtypes.
- Rotary cos/sin come from a table built once; the padding mask is an additive bias built once per
  step, not converted in every layer; keys and values of a layer are one tensor (KVCache.kv),
  written once.
- Attention runs over the filled columns only: exactly on the shrinking-batch loop, and on the
  fixed-shape loop over the smallest multiple of ATTENTION_BUCKET columns that holds them (one CUDA
  graph per bucket).
- Sampling at temperature > 0 without top-p maps each row's uniform to a token by inverse CDF in two
  parallel passes (two_pass_inverse_cdf) instead of a float64 cumulative sum over the vocabulary;
  greedy and top-p call model.sample_token itself.
- On CUDA the pieces between the GEMMs (the norms, rotary, the gate, the sampler) are compiled with
  torch.compile (inductor, rounding bfloat16 intermediates where eager does:
  emulate_precision_casts) and each step is replayed as a CUDA graph: 10 kernels per layer, 19 with
  LoRA. If compilation fails, FastDecode(fall_back=True) says so and goes on eagerly.
- One FastDecode serves a whole run: the fused weights, the fixed-shape loop's KV cache and buffers
  and its CUDA graphs are kept from call to call (a capture synchronises and empties the
  allocator's cache, which also flushes the learner's blocks), and the weights are refilled in
  place at each call.

How equal: in float32 on the CPU the eager step's hidden states, keys and values are the plain
forward's bit for bit without LoRA, on Intel and AMD alike. With LoRA the block-diagonal B GEMM and
the addmm that adds its delta sum in another order than LoRALinear; MKL picks its kernels by
instruction set and shape, so that is the plain forward's bits on an Intel Xeon at batch > 1 and a
last-bit difference on an AMD EPYC or at batch 1 (tested within n ulps of the largest value, n the
longest reduction of the step). The logits differ by rounding where the CPU computes the head over a
transposed copy (twice as fast there), and compiled code sums its reductions in another order. The
tokens drawn for a seed are the same in every test; they could differ only where a draw lands within
that rounding of a CDF boundary, as the plain loop's own draws may between batch sizes.
lora.merged_copy (--sampler merged) is the one deliberate departure, measured by
grpo.sampler_mismatch. Left out: paged KV, continuous batching, speculative decoding, split-KV
attention.
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F

import lora as L
import model as M

# Fixed-shape loop: the attention width is a multiple of this (one CUDA graph each). Larger
# means fewer captures but more masked columns per step; the paper's 768 + 1024 tokens take 7.
ATTENTION_BUCKET = 256
SAMPLER_CHUNK = 1024      # vocabulary entries per chunk in pass 1 (149 chunks at V = 151,936)
# Probabilities as integers: exact sums in any order; p * 2^62 summed over V stays below 2^63.
CDF_SCALE = 2.0 ** 62


# -----------------------------------------------------------------------------
# The weights, arranged for one decode step


@dataclass
class Projection:
    """Linear layers that share an input, as one: weight [sum out, in], bias, and their LoRA
    adapters as lora_a [sum r, in] and lora_b_t, the transpose of a block-diagonal B
    [sum out, sum r] with alpha / r folded in."""
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    lora_a: torch.Tensor | None = None
    linears: list = field(default_factory=list)  # the layers it was built from

    # B transposed, contiguous: x @ B^T without a transposed GEMM
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

    def refill(self):
        """Its tensors that are copies (not views of the layers' weights) get the layers' current
        values, in place: the addresses a CUDA graph holds stay valid."""
        fresh = fuse(self.linears)
        for name in ("weight", "bias", "lora_a", "lora_b_t", "with_a", "with_a_bias"):
            mine, new = getattr(self, name), getattr(fresh, name)
            if (mine is None) != (new is None):
                raise RuntimeError("the adapters changed shape; build a new Decoder")
            if mine is not None and mine.data_ptr() != new.data_ptr():  # a view is already current
                mine.copy_(new)


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
    projection = Projection(stacked([m.weight for m in linears]), bias, linears=list(linears))
    adapted = [(i, m) for i, m in enumerate(linears)
               if isinstance(m, L.LoRALinear) and m.enabled and not m.merged]
    if not adapted:
        return projection
    if any(m.training and isinstance(m.dropout, torch.nn.Dropout) for _, m in adapted):
        raise ValueError("LoRA dropout is active (the model is in training mode): "
                         "call model.eval() before generate, or decode with the plain loop")
    projection.lora_a = torch.cat([m.lora_A.weight.detach() for _, m in adapted])
    lora_b = projection.lora_a.new_zeros(projection.weight.shape[0], projection.lora_a.shape[0])
    rows = [0]
    for m in linears:
        rows.append(rows[-1] + m.out_features)
    # Block-diagonal: layer i's B fills its own output rows and its own r columns, so no delta
    # reaches another layer's outputs. alpha / r goes into B: a power of two scales every product
    # and partial sum exactly, so folding it in adds no rounding.
    col = 0
    for i, m in adapted:
        lora_b[rows[i]:rows[i + 1], col:col + m.r] = m.lora_B.weight.detach() * m.scaling
        col += m.r
    projection.lora_b_t = lora_b.t().contiguous()
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
    mass = F.pad((probs.double() * CDF_SCALE).long(), (0, n * C - V)).view(B, n, C)  # pad: mass 0
    ends = mass.sum(-1).cumsum(-1)                                             # [B, n]
    # clamp: float64 keeps 53 of the total's ~62 bits, so u * total can round up past total - 1
    draw = (uniforms.double() * ends[:, -1].double()).long().clamp(max=ends[:, -1] - 1)[:, None]
    chunk = torch.searchsorted(ends, draw, right=True)                         # [B, 1]
    before = torch.where(chunk > 0, ends.gather(1, (chunk - 1).clamp(min=0)), 0)
    inside = mass.gather(1, chunk[:, :, None].expand(B, 1, C)).squeeze(1).cumsum(-1) + before
    return (chunk * C + torch.searchsorted(inside, draw, right=True)).squeeze(1)


def _compiled(fn):
    # dynamic: one compiled graph for every batch size (the shrinking loop changes it every few
    # steps).
    return torch.compile(fn, dynamic=True, options={"emulate_precision_casts": True})


# -----------------------------------------------------------------------------
# The step


class Decoder:
    """One decode step of `model` over fused weights: views of the model's weights where their
    storage allows, copies elsewhere, which refill() brings up to date."""

    def __init__(self, model: M.Qwen2, compile: bool = False):
        c = model.config
        self.n_heads, self.n_kv_heads, self.eps = (c.num_attention_heads, c.num_key_value_heads,
                                                   c.rms_norm_eps)
        self.embed = model.model.embed_tokens.weight.detach()
        self.head = model.lm_head.weight.detach()
        # On a CPU, x @ W^T with W stored [V, H] runs at half the speed of the same GEMM with W
        # stored [H, V] (MKL, batch 8); so there the head is copied transposed (refilled at every
        # call). Same sums, other rounding.
        cpu = self.head.device.type == "cpu"
        self.head_t = self.head.T.contiguous() if cpu else self.head.T
        self.final_norm = model.model.norm.weight.detach()
        self.layers = []
        for block in model.model.layers:
            att, mlp = block.self_attn, block.mlp
            self.layers.append(LayerWeights(
                block.input_layernorm.weight.detach(),
                fuse([att.q_proj, att.k_proj, att.v_proj]), fuse([att.o_proj]),
                block.post_attention_layernorm.weight.detach(),
                fuse([mlp.gate_proj, mlp.up_proj]), fuse([mlp.down_proj])))
        # Every position's entry is computed alone, so a prefix of this table is bit for bit the
        # table of fewer positions.
        positions = torch.arange(c.max_position_embeddings, device=self.embed.device)[None]
        cos, sin = M.rotary_cos_sin(positions, c.head_dim, c.rope_theta, self.embed.dtype)
        self.cos, self.sin = cos[0, 0], sin[0, 0]  # [max_position_embeddings, D]
        pieces = (rms_norm, residual_norm, rotate_qkv, silu_gate, two_pass_inverse_cdf)
        self.rms_norm, self.residual_norm, self.rotate_qkv, self.silu_gate, self.inverse_cdf = (
            map(_compiled, pieces) if compile else pieces)

    def refill(self):
        """The model's current weights into the copies (the LoRA matrices change every training
        step), in place."""
        for layer in self.layers:
            for projection in (layer.qkv, layer.o, layer.gate_up, layer.down):
                projection.refill()
        if self.head_t.data_ptr() != self.head.data_ptr():
            self.head_t.copy_(self.head.T)

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
            # column is a device tensor: one captured graph writes the next column at each replay
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
        # the last MLP's output joins the residual here, then the final norm
        return self.residual_norm(x, branch, delta, self.final_norm, self.eps, None)[1]

    def logits(self, h):
        return (h @ self.head_t).float()

    def sample(self, logits, temperature: float, top_p: float, uniforms, vocab_size: int | None):
        if temperature == 0 or top_p < 1.0:
            return M.sample_token(logits, temperature, top_p, uniforms, vocab_size)
        return self.inverse_cdf(logits, temperature, uniforms, vocab_size)


# -----------------------------------------------------------------------------
# The two decode loops, and what they keep from one call to the next


class Settings(NamedTuple):
    """The sampler's settings: constants of a captured step."""
    temperature: float
    top_p: float
    vocab_size: int | None


@dataclass
class StepBuffers:
    """The fixed-shape loop's state for one batch size, at fixed addresses (what a CUDA graph
    reads and writes): the KV cache, with `room` columns, and the step's inputs."""
    cache: M.KVCache
    key_valid: torch.Tensor  # bool [B, room]
    offset: torch.Tensor     # [B] each row's rotary position minus its cache column
    token: torch.Tensor      # [B] the token fed to the step
    uniform: torch.Tensor    # float64 [B] the uniform of the token it draws
    column: torch.Tensor     # [1] the cache column the step writes
    columns: torch.Tensor    # [room] 0, 1, ..., room - 1
    steps: dict = field(default_factory=dict)  # (width, Settings, logprobs) -> step (a graph)
    pool: object = None      # the graphs' memory pool (CUDA)

    @property
    def shape(self):
        return self.key_valid.shape


# Where compiling pays, the default of grpo.py --compile auto and of eval.py: on CUDA the compiled
# step is 10 kernels per layer against 34 eager (bench/count_kernels.py); a CPU gains nothing.
COMPILE_AUTO = ("cuda",)


class FastDecode:
    """model.generate's decode loop over the fused step: generate(..., decode=FastDecode()).

    fixed_shapes (default: on CUDA): the whole batch to the end with fixed shapes, so that on CUDA
      each step is one CUDA graph replay instead of a launch per kernel (what bounds a GPU decode
      step); otherwise rows that have ended leave the batch as it goes, which is what pays on a
      CPU. Both draw the same tokens.
    compile: torch.compile the step's pieces between the GEMMs.
    fall_back: if compilation fails, print one line, set compile_error and decode eagerly from then
      on (the failed call is redone: it kept nothing); otherwise the error is raised.

    One object serves a whole run and keeps from call to call: the fused weights (refilled in place
    at each call, as the adapter changes every step), and with fixed shapes the KV cache (sized for
    the longest prompt so far plus the completion budget, rounded up to ATTENTION_BUCKET; a longer
    request or another batch size allocates anew), the step's buffers and one step per attention
    width and setting, on CUDA a CUDA graph captured once. Another model, or this one with a weight
    replaced, an adapter merged or switched off, rebuilds them all; release() drops them.
    """

    def __init__(self, fixed_shapes: bool | None = None, compile: bool = False,
                 fall_back: bool = False):
        self.fixed_shapes, self.compile, self.fall_back = fixed_shapes, compile, fall_back
        self.compile_error: str | None = None  # why compilation was given up (fall_back)
        self.release()

    def release(self):
        """Forget the model: weights, cache, buffers and graphs."""
        self.drop_buffers()
        self.decoder, self.model_state = None, None

    def drop_buffers(self):
        if getattr(self, "buffers", None) is not None:
            self.buffers.steps.clear()  # the steps refer to the buffers: no cycle left for the GC
        self.buffers = None

    def __call__(self, model: M.Qwen2, inputs: M.DecodeInputs, return_logprobs: bool = False):
        try:
            return self.decode(model, inputs, return_logprobs)
        except Exception as e:
            if not (self.compile and self.fall_back and is_compile_error(e)):
                raise
            self.compile, self.compile_error = False, one_line(e)  # for good: no retry each call
            print(f"WARNING: torch.compile failed ({self.compile_error}); the sampler goes on with "
                  "the eager step, slower (grpo.py --compile off skips compiling, --compile on "
                  "makes this an error)", file=sys.stderr, flush=True)
            self.release()  # the compiled pieces live in the Decoder: the next one is eager
            return self.decode(model, inputs, return_logprobs)

    def decode(self, model: M.Qwen2, inputs: M.DecodeInputs, return_logprobs: bool):
        state = model_state(model)
        if self.decoder is None or not same_state(self.model_state, state):
            self.release()
            self.decoder, self.model_state = Decoder(model, self.compile), state
        else:
            self.decoder.refill()
        fixed = inputs.uniforms.device.type == "cuda" if self.fixed_shapes is None \
            else self.fixed_shapes
        if fixed:
            return self.decode_fixed_shapes(inputs, return_logprobs)
        return decode_shrinking(self.decoder, inputs, return_logprobs)

    def buffers_for(self, inputs: M.DecodeInputs) -> StepBuffers:
        """This call's StepBuffers: the last call's when they fit (and so its graphs)."""
        B, N = inputs.uniforms.shape
        P, dtype = inputs.prompt_cache.length, inputs.h.dtype
        device = inputs.uniforms.device
        kept = self.buffers
        if (kept is not None and kept.shape[0] == B and kept.shape[1] >= P + N
                and kept.cache.kv[0].dtype == dtype and kept.key_valid.device == device):
            return kept
        del kept  # with no reference left, the old cache is freed before the new one is allocated
        self.drop_buffers()  # the old cache and graphs go before the new ones come
        room = -(-(P + N) // ATTENTION_BUCKET) * ATTENTION_BUCKET
        _, _, H, _, D = inputs.prompt_cache.kv[0].shape
        cache = M.KVCache([torch.zeros((2, B, H, room, D), dtype=dtype, device=device)
                           for _ in inputs.prompt_cache.kv])
        self.buffers = StepBuffers(
            cache, torch.zeros(B, room, dtype=torch.bool, device=device),
            torch.zeros(B, dtype=torch.long, device=device),
            torch.zeros(B, dtype=torch.long, device=device),
            torch.zeros(B, dtype=torch.float64, device=device),
            torch.zeros(1, dtype=torch.long, device=device),
            torch.arange(room, device=device),
            pool=torch.cuda.graph_pool_handle() if device.type == "cuda" else None)
        return self.buffers

    def decode_fixed_shapes(self, inputs: M.DecodeInputs, return_logprobs: bool):
        """The whole batch to the end, one fixed-shape step per attention bucket; on CUDA each
        bucket's step is captured once as a CUDA graph and replayed, in this call and the next.

        Step t feeds token t at cache column P + t and draws token t + 1. Its inputs live in the
        StepBuffers, which the loop refills before each step; the mask and positions are built
        inside it.
        """
        decoder, uniforms, eos = self.decoder, inputs.uniforms, inputs.eos
        P = inputs.prompt_cache.length  # the fused step writes at its own columns, P + t
        B, max_new_tokens = uniforms.shape
        device = uniforms.device
        buffers = self.buffers_for(inputs)
        inputs.prompt_cache.fan_out(inputs.samples, buffers.shape[1], into=buffers.cache)
        buffers.key_valid.zero_()  # columns past this call's P + N are never valid keys
        buffers.key_valid[:, :inputs.key_valid.shape[1]] = inputs.key_valid
        buffers.offset.copy_(inputs.next_position.squeeze(1) - P)
        settings = Settings(inputs.temperature, inputs.top_p, inputs.vocab_size)

        out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
        logprobs = torch.zeros(B, max_new_tokens, device=device) if return_logprobs else None
        # token 0 comes from the prefill's hidden state: no step, no graph
        out[:, 0], lp = _draw(decoder, inputs.h, settings, uniforms[:, 0], return_logprobs)
        if return_logprobs:
            logprobs[:, 0] = lp
        if max_new_tokens == 1:
            return out, 1, logprobs
        buffers.token.copy_(out[:, 0])
        done = torch.isin(out[:, 0], eos)
        n_steps = max_new_tokens
        for t in range(max_new_tokens - 1):
            if eos.numel() and t % 16 == 15 and bool(done.all()):  # a GPU sync: every 16 steps
                n_steps = t + 1
                break
            buffers.column.fill_(P + t)
            buffers.uniform.copy_(uniforms[:, t + 1])
            width = -(-(P + t + 1) // ATTENTION_BUCKET) * ATTENTION_BUCKET
            key = (width, settings, return_logprobs)
            if key not in buffers.steps:
                step = partial(_fixed_shape_step, decoder, buffers, width, settings,
                               return_logprobs)
                buffers.steps[key] = (_cuda_graph(step, buffers.pool) if device.type == "cuda"
                                      else step)
            token, lp = buffers.steps[key]()
            # on CUDA token and lp are the graph's output buffers, which the next replay overwrites
            out[:, t + 1] = token
            if return_logprobs:
                logprobs[:, t + 1] = lp
            buffers.token.copy_(token)
            if eos.numel():
                done |= torch.isin(token, eos)
        return out, n_steps, logprobs


def _fixed_shape_step(decoder: Decoder, buffers: StepBuffers, width: int, settings: Settings,
                      return_logprobs: bool):
    """One step of the fixed-shape loop, reading and writing only the buffers: attention over the
    first `width` cache columns, those after the step's own column masked."""
    visible = buffers.key_valid[:, :width] & (buffers.columns[:width] <= buffers.column)
    bias = torch.zeros(visible.shape, dtype=decoder.embed.dtype, device=visible.device)
    bias.masked_fill_(~visible, float("-inf"))
    hidden = decoder.hidden(buffers.token, buffers.offset + buffers.column, buffers.cache,
                            buffers.column, width, bias[:, None, None])
    return _draw(decoder, hidden, settings, buffers.uniform, return_logprobs)


def _draw(decoder, h, settings, uniforms, logprobs: bool):
    """Each row's next token from hidden states h, and its log-prob if asked (else None)."""
    logits = decoder.logits(h)
    token = decoder.sample(logits, settings.temperature, settings.top_p, uniforms,
                           settings.vocab_size)
    if not logprobs:
        return token, None
    return token, M.sampled_logprobs(logits, token, settings.temperature, settings.vocab_size)


def decode_shrinking(decoder, inputs: M.DecodeInputs, return_logprobs: bool):
    """model.decode_plain with the fused step: rows that have ended leave the batch (checked every
    16 steps)."""
    h, uniforms, eos = inputs.h, inputs.uniforms, inputs.eos
    next_position, key_valid = inputs.next_position.squeeze(1), inputs.key_valid
    cache = inputs.prompt_cache.fan_out(inputs.samples, key_valid.shape[1])
    P = cache.length  # the prompt columns: the fused step writes at its own columns, P + t
    B, max_new_tokens = uniforms.shape
    device = uniforms.device
    out = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
    logprobs = torch.zeros(B, max_new_tokens, device=device) if return_logprobs else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)
    # the padding as an additive bias, built once; each step slices its filled columns
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


def model_state(model: M.Qwen2):
    """What a Decoder of `model` depends on beyond the values of its weights: which tensors they
    are (weak references, addresses) and which adapters apply."""
    params = list(model.parameters())
    adapters = tuple((m.enabled, m.merged) for m in L.lora_layers(model).values())
    # An address alone may be reused by a new tensor once the old one is freed; a weak reference
    # tells them apart without keeping an old model alive.
    return [weakref.ref(p) for p in params], [p.data_ptr() for p in params], adapters


def same_state(old, new) -> bool:
    if old is None:
        return False
    (old_refs, old_ptrs, old_adapters), (new_refs, new_ptrs, new_adapters) = old, new
    return (old_ptrs == new_ptrs and old_adapters == new_adapters
            and all(a() is b() for a, b in zip(old_refs, new_refs)))


# -----------------------------------------------------------------------------
# Compilation: what counts as its failure, and a check that it works here


def is_compile_error(e: BaseException) -> bool:
    """Raised by torch.compile (Dynamo, inductor) or by Triton building or running its kernels."""
    module = type(e).__module__ or ""
    return (isinstance(e, torch._dynamo.exc.TorchDynamoException)
            or module.startswith(("triton", "torch._inductor")))


def one_line(e: BaseException) -> str:
    """The error and its cause (BackendCompilerFailed wraps the backend's), on one line."""
    cause = getattr(e, "inner_exception", None) or e.__cause__
    text = f"{type(e).__name__}"
    if cause is not None and cause is not e:
        e, text = cause, f"{text} <- {type(cause).__name__}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{text}: {lines[0][:200]}" if lines else text


def compile_error(device, dtype) -> str | None:
    """None when torch.compile builds and runs the fused step's pieces here (a one-layer random
    model in this dtype with a float32 adapter, the fixed-shape loop on CUDA and the shrinking one
    elsewhere, sampling a few tokens), else what failed, in one line."""
    config = M.Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96,
                           num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=64)
    # The caller's random streams stay as they were: the CPU's and, on CUDA, this device's
    # (manual_seed reseeds it too). Only this one: forking every device would start a CUDA
    # context on each GPU in every process.
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        model = M.Qwen2(config).to(device=device, dtype=dtype).eval()
        L.apply_lora(model, r=4, alpha=8)
    try:
        M.generate(model, [[1, 2, 3]], 4, seed=0, num_samples=2, decode=FastDecode(compile=True))
    except Exception as e:
        if not is_compile_error(e):
            raise
        return one_line(e)
    return None


def _cuda_graph(step, pool):
    """Capture step() as a CUDA graph -> a function that replays it and returns its outputs (fixed
    buffers).

    Warm-up first, on a side stream (compilation, cuBLAS handles, the allocator): it is the real
    step, and the first replay repeats it exactly (the same cache column with the same values). The
    graphs over one StepBuffers share a memory pool: they are replayed one after another, never
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
