"""
Correctness on a CUDA GPU, in three parts, each a list of checks that print PASS or FAIL as they finish; the
script exits 1 if any failed. Run it before trusting a timing from the same machine.

    python bench/cuda_checks.py                          # all three parts, CUDA
    python bench/cuda_checks.py --only probe,bf16        # the first two (bench/run_gpu.sh's first step)
    python bench/cuda_checks.py --device cpu --small     # what the CPU can run of them (a smoke run, a test)

probe: the attention backend. Which SDPA kernels the learner's masked attention runs, with torch's defaults and
  with model.safe_attention's choice (asserted: no cuDNN kernel), and the NaN trigger of pytorch#196678 (cuDNN's
  masked backward, key length 64 mod 128, a row's logsumexp below -88.7): the bare repro and the learner's own
  update (grpo.update, bfloat16, LoRA r=64, activation checkpointing) on a model with one such head, at key
  lengths 192, 320, 704 and 256. Asserted finite under our setting; with cuDNN forced the result is reported
  (whether this stack still has the bug), not asserted.
bf16: the production path in bfloat16 (the 1.5B's shape, LoRA r=64 on all seven projections, the decoder
  grpo.py runs: compiled CUDA graphs on CUDA, compilation failing is a FAIL here), against the plain loop of
  model.py, tokens forced to be the same, and against the learner. The tolerance is bfloat16's own error,
  measured in the same run: each bfloat16 computation's mean |delta log p| from the same computation in float32
  on the same weights. Two computations that differ only by rounding are each that far from float32, so from
  each other about sqrt(2) times as far if their errors are independent; the gate allows 2 times (TOL_BF16).
  It asserts: the fast sampler's log-probs within it of the plain bf16 loop's, the sampler within it of the
  learner's (the sampler-learner mismatch; KL k3 reported), every value finite, and one learner update on
  completions of varied lengths with a finite loss and gradient.
float32: the checks of tests/test_model.py, tests/test_fast_decode.py and tests/test_lora.py that could behave
  differently on a GPU (kernels, the compiled step, CUDA graphs kept from call to call while the adapter
  changes, devices of intermediate tensors), against transformers and the CPU on the same seed: tokens equal.
"""
import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import fast_decode as FD  # noqa: E402
import grpo as G  # noqa: E402
import lora as L  # noqa: E402
import model as M  # noqa: E402

TOL_BF16 = 2.0  # allowed |bf16 path - bf16 reference| / (the reference's own |bf16 - float32|)
LSE_TRIGGER = -88.7  # ln(FLT_MAX): a row's logsumexp below this triggers pytorch#196678
SHAPES = {  # the 1.5B's widths (head_dim 128, GQA 12/2); --small for the CPU
    "qwen2.5-math-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_attention_heads=12,
                              num_key_value_heads=2),
    "small": dict(vocab_size=4096, hidden_size=512, intermediate_size=768, num_attention_heads=4,
                  num_key_value_heads=2),
}
failures = []


def check(name: str, ok: bool, detail: str = ""):
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    if not ok:
        failures.append(name)


def info(name: str, detail: str):
    print(f"INFO  {name}  {detail}", flush=True)


def random_model(shape: str, layers: int, device, dtype, lora_rank: int = 64, seed: int = 0) -> M.Qwen2:
    """Random weights (std 0.02, as bench_decode), fused storage as load_model lays it out, LoRA on all seven
    projections with B off zero (a trained-looking adapter)."""
    torch.manual_seed(seed)
    config = M.Qwen2Config(num_hidden_layers=layers, max_position_embeddings=4096, tie_word_embeddings=True,
                           **SHAPES[shape])
    with torch.device(device):
        model = M.Qwen2(config).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    M.fuse_projection_storage(model).eval()
    L.apply_lora(model, r=lora_rank, alpha=2 * lora_rank)
    with torch.no_grad():
        for m in L.lora_layers(model).values():
            m.lora_B.weight.normal_(0, 0.02)
    return model


# -----------------------------------------------------------------------------
# probe: the attention backend and the NaN trigger


def attention_kernels(fn) -> list[str]:
    """Names of the CUDA kernels fn runs whose name says attention."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    keys = ("fmha", "flash", "cudnn", "attention", "attn", "sdpa", "efficient")
    return sorted({e.name for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA and any(k in e.name.lower() for k in keys)})


def forced_cudnn():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])


def bare_trigger(device, L_=704, D=64):
    """pytorch#196678's repro: every logit about -120, so every row's logsumexp is below -88.7; an explicit
    mask; key length 704 = 64 mod 128 -> the number of non-finite entries of grad q."""
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(1, 1, L_, D, generator=g) * 0.1).to(device, torch.bfloat16)
    k = (torch.randn(1, 1, L_, D, generator=g) * 0.1).to(device, torch.bfloat16)
    v = torch.randn(1, 1, L_, D, generator=g).to(device, torch.bfloat16)
    q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(D)
    q.requires_grad_()
    mask = torch.ones(L_, L_, dtype=torch.bool, device=device).tril()[None, None]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.backward(torch.randn(out.shape, generator=g).to(device, out.dtype))
    return int((~torch.isfinite(q.grad)).sum())


def install_trigger_head(model: M.Qwen2):
    """Make layer 0's first KV head (and the query heads that share it) a "massive activation" head: through the
    last rotary pair (the slowest, so rotary keeps it for thousands of positions) q = 1 and k = -120 sqrt(D) by
    their biases, so every logit of those heads is about -120 and every row's logsumexp < -88.7."""
    att, c = model.model.layers[0].self_attn, model.config
    D, G_ = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    dim = D // 2 - 1
    with torch.no_grad():
        for proj, heads, value in ((att.q_proj, range(G_), 1.0), (att.k_proj, [0], -120 * math.sqrt(D))):
            for h in heads:
                for d in (dim, dim + D // 2):  # the pair's two dimensions: the bias alone
                    proj.weight[h * D + d] = 0
                    proj.bias[h * D + d] = 0
                    if isinstance(proj, L.LoRALinear):
                        proj.lora_B.weight[h * D + d] = 0
                proj.bias[h * D + dim] = value


@torch.no_grad()
def trigger_logsumexp(model: M.Qwen2, ids: list[int]) -> float:
    """The largest logsumexp of any causal row of layer 0's head 0 on this sequence (as the learner computes its
    scores, in float32)."""
    att, c = model.model.layers[0].self_attn, model.config
    device = model.lm_head.weight.device
    x = model.model.layers[0].input_layernorm(model.model.embed_tokens(torch.tensor([ids], device=device)))
    T, D = len(ids), c.head_dim
    cos, sin = M.rotary_cos_sin(torch.arange(T, device=device)[None], D, c.rope_theta, x.dtype)
    q = M.apply_rotary(att.q_proj(x).view(1, T, -1, D).transpose(1, 2), cos, sin)[0, 0].float()
    k = M.apply_rotary(att.k_proj(x).view(1, T, -1, D).transpose(1, 2), cos, sin)[0, 0].float()
    scores = (q @ k.T / math.sqrt(D)).masked_fill(~torch.ones(T, T, dtype=torch.bool, device=device).tril(),
                                                  float("-inf"))
    return float(torch.logsumexp(scores, -1).max())


def learner_update(model, params, prompt_len: int, completion_len: int, seed: int):
    """grpo.update on one prompt x 4 completions whose keys span prompt_len + completion_len columns
    -> (loss, pre-clip gradient norm)."""
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    prompt = torch.randint(0, V, (prompt_len,), generator=g).tolist()
    completions = torch.randint(0, V, (4, completion_len), generator=g).tolist()
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    ro = G.Rollouts([None], [prompt], completions, [""] * 4, rewards)
    cfg = G.Config(group_size=4, micro_batch=4, optimizer="sgd", lr=1e-9)
    optimizer = G.make_optimizer(params, cfg)
    loss, stats = G.update(model, params, optimizer, ro, G.group_advantages(rewards, "std"), cfg, V)
    return loss, stats.get("grad_norm_preclip", float("nan")), prompt + completions[0]


def probe(device, small: bool):
    print(f"\n## probe: attention backend | {M.attention_backends()}", flush=True)
    cuda = device.type == "cuda"
    shape = "small" if small else "qwen2.5-math-1.5b"
    if cuda:  # the learner's masked attention: 4 completions x 12 heads as 2 KV heads x 6 x T query rows
        c = M.Qwen2Config(**SHAPES[shape])
        B, T, S, D = 4, 128, 192, c.head_dim
        G_ = c.num_attention_heads // c.num_key_value_heads
        q = torch.randn(B, c.num_key_value_heads, G_ * T, D, device=device, dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(B, c.num_key_value_heads, S, D, device=device, dtype=torch.bfloat16, requires_grad=True)
                for _ in range(2))
        mask = torch.ones(B, 1, G_ * T, S, dtype=torch.bool, device=device)

        def attend():
            torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()

        ours = attention_kernels(attend)
        torch.backends.cuda.enable_cudnn_sdp(True)
        default = attention_kernels(attend)
        M.safe_attention()
        info("the learner's masked attention, torch's default backends", "; ".join(default) or "no kernel named")
        check("the learner's masked attention with safe_attention runs no cuDNN kernel",
              bool(ours) and not any("cudnn" in k.lower() for k in ours), "; ".join(ours) or "no kernel named")
        try:
            with forced_cudnn():
                bad = bare_trigger(device)
            info("pytorch#196678 repro with cuDNN forced", f"{bad} non-finite entries of grad q "
                 f"({'the bug is present on this stack' if bad else 'clean on this stack'})")
        except RuntimeError as e:
            info("pytorch#196678 repro with cuDNN forced", f"cuDNN cannot run it: {str(e).splitlines()[0]}")
    else:
        info("attention kernels", "skipped: no CUDA (the CPU runs its own SDPA kernels)")
    bad = bare_trigger(device)
    check("pytorch#196678 repro (704 keys, explicit mask, logsumexp < -88.7) under our backends: grad q finite",
          bad == 0, f"{bad} non-finite")

    model = random_model(shape, 2, device, torch.bfloat16 if cuda else torch.float32)
    model.gradient_checkpointing = True
    install_trigger_head(model)
    params = L.lora_parameters(model)
    for prompt_len, completion_len in ((64, 128), (100, 220), (200, 504), (128, 128)):
        t0 = time.time()
        loss, grad_norm, sequence = learner_update(model, params, prompt_len, completion_len, prompt_len)
        lse = trigger_logsumexp(model, sequence)
        S = prompt_len + completion_len
        check(f"learner update at {S} keys ({S % 128} mod 128), trigger head logsumexp {lse:.0f} < {LSE_TRIGGER}",
              lse < LSE_TRIGGER and math.isfinite(loss) and math.isfinite(grad_norm),
              f"loss {loss:.4g}, grad norm {grad_norm:.4g} ({time.time() - t0:.1f} s)")
    if cuda:
        try:
            with forced_cudnn():
                loss, grad_norm, _ = learner_update(model, params, 100, 220, 1)
            info("the same update at 320 keys with cuDNN forced", f"loss {loss:.4g}, grad norm {grad_norm:.4g}"
                 f" ({'NaN: the hazard is real here' if not math.isfinite(loss * grad_norm) else 'finite'})")
        except RuntimeError as e:
            info("the same update with cuDNN forced", f"cuDNN cannot run it: {str(e).splitlines()[0]}")
    del model, params


# -----------------------------------------------------------------------------
# bf16: the production path against the plain loop and the learner, tolerances from bf16's own error


def plain_logprobs(model, prompts, completions, samples: int, temperature: float, vocab_size: int) -> torch.Tensor:
    """model.generate with decode_plain's computation (the prefill, then one cached step per token) fed the given
    tokens instead of its own draws -> float64 [B, N] log-probs (every completion N tokens)."""
    tokens = torch.tensor(completions, device=model.lm_head.weight.device)

    def forced(model, inputs, return_logprobs):  # a decode loop for generate (DecodeInputs)
        cache = inputs.prompt_cache.fan_out(inputs.samples, inputs.key_valid.shape[1])
        h, (B, N) = inputs.h, tokens.shape
        out = torch.zeros(B, N, dtype=torch.float64, device=tokens.device)
        for t in range(N):
            out[:, t] = M.sampled_logprobs(model.lm_head(h).float(), tokens[:, t], inputs.temperature,
                                           inputs.vocab_size)
            mask = M.causal_mask(inputs.key_valid[:, :cache.length + 1], 1)
            h = model.hidden_states(tokens[:, t, None], inputs.next_position + t, mask, cache)[:, -1]
        return tokens, N, out

    _, logprobs = M.generate(model, prompts, tokens.shape[1], temperature=temperature, num_samples=samples,
                             vocab_size=vocab_size, return_logprobs=True, decode=forced)
    return torch.tensor(logprobs, dtype=torch.float64)


@torch.no_grad()
def learner_logprobs(model, prompts, completions, samples: int, temperature: float, vocab_size: int):
    rows = [M.completion_logprobs(model, [prompts[i // samples]], [c], [0], temperature, vocab_size)[0][0]
            for i, c in enumerate(completions)]
    return torch.stack(rows).double().cpu()


def mean_abs(a, b) -> float:
    return float((a - b).abs().mean())


def bf16(device, small: bool):
    cuda = device.type == "cuda"
    shape, layers = ("small", 2) if small else ("qwen2.5-math-1.5b", 28)
    print(f"\n## bf16: the production path, {shape} x {layers} layers, bfloat16, LoRA r=64 (tolerance "
          f"{TOL_BF16}x bfloat16's own error)", flush=True)
    model = random_model(shape, layers, device, torch.bfloat16)
    as_float32 = copy.deepcopy(model).float()  # the same weights, float32 arithmetic
    vocab_size = model.config.vocab_size - 271  # as Qwen's tokenizer: the last rows never drawn
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in (37, 180)]
    samples, N, temperature = 4, 64, 1.0
    decode = FD.FastDecode(compile=cuda)  # grpo.py's --decoder auto --compile auto, without the fallback
    t0 = time.time()
    try:
        completions, fast = M.generate(model, prompts, N, temperature=temperature, seed=3, num_samples=samples,
                                       vocab_size=vocab_size, return_logprobs=True, decode=decode)
        again, _ = M.generate(model, prompts, N, temperature=temperature, seed=3, num_samples=samples,
                              vocab_size=vocab_size, return_logprobs=True, decode=decode)
    except Exception as e:
        check("the production decoder runs (compiled on CUDA)", False, FD.one_line(e))
        return
    check(f"the production decoder runs ({'compiled CUDA graphs' if cuda else 'eager, shrinking batch'}), twice, "
          "the same tokens", completions == again, f"{time.time() - t0:.1f} s")
    fast = torch.tensor(fast, dtype=torch.float64)
    plain, plain32 = (plain_logprobs(m, prompts, completions, samples, temperature, vocab_size)
                      for m in (model, as_float32))
    learner, learner32 = (learner_logprobs(m, prompts, completions, samples, temperature, vocab_size)
                          for m in (model, as_float32))
    values = torch.stack([fast, plain, plain32, learner, learner32])
    check("every log-prob finite (sampler, plain loop, learner; bfloat16 and float32)",
          bool(torch.isfinite(values).all()))
    reference = M.generate(model, prompts, N, temperature=temperature, seed=3, num_samples=samples,
                           vocab_size=vocab_size)
    same = sum(a == b for a, b in zip(reference, completions))
    first = [next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), N) for a, b in zip(reference, completions)]
    info("tokens of the plain bf16 loop for the same seed", f"{same}/{len(completions)} rows equal, first "
         f"difference at {sorted(first)} (bfloat16 rounding moves a near-uniform draw across a CDF boundary)")
    own = mean_abs(plain, plain32)
    d = mean_abs(fast, plain)
    check("fast sampler's log-probs = the plain bf16 loop's on the same tokens, within bfloat16's error",
          d <= TOL_BF16 * own, f"mean |d| {d:.3g} <= {TOL_BF16} x {own:.3g} (plain bf16 - float32); "
          f"max {float((fast - plain).abs().max()):.3g}")
    own = mean_abs(learner, learner32)
    d = mean_abs(fast, learner)
    kl = float(G.kl_k3(fast, learner).mean())  # KL(sampler || learner), as grpo.sampler_mismatch
    check("sampler - learner mismatch within bfloat16's error", d <= TOL_BF16 * own,
          f"mean |d| {d:.3g} <= {TOL_BF16} x {own:.3g} (learner bf16 - float32); KL k3 {kl:.3g} per token; "
          f"float32 sampler - learner {mean_abs(plain32, learner32):.3g}")
    del as_float32
    model.gradient_checkpointing = True
    params = L.lora_parameters(model)
    varied = [c[:n] for c, n in zip(completions, (64, 3, 40, 17, 64, 1, 29, 50))]
    ro = G.Rollouts([None, None], prompts, varied, [""] * 8, torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]]))
    cfg = G.Config(group_size=samples, micro_batch=3, temperature=temperature)
    loss, stats = G.update(model, params, G.make_optimizer(params, cfg), ro, G.group_advantages(ro.rewards, "std"),
                           cfg, vocab_size)
    check("one learner update, completions of 1 to 64 tokens, micro-batch 3: finite loss and gradient",
          math.isfinite(loss) and math.isfinite(stats.get("grad_norm_preclip", math.nan)),
          f"loss {loss:.4g}, grad norm {stats.get('grad_norm_preclip', math.nan):.4g}")


# -----------------------------------------------------------------------------
# float32: the CPU test suite's checks that could behave differently on a GPU


def fast_decoders():
    return {"compiled graphs": FD.FastDecode(fixed_shapes=True, compile=True),
            "eager graphs": FD.FastDecode(fixed_shapes=True),
            "fast shrinking": FD.FastDecode(fixed_shapes=False)}


def sampler_checks(ours, on_cpu, prompts, cases, label):
    """Same seed, same tokens: the compiled CUDA-graph step (the default on CUDA), the same graphs over eager
    pieces, the fast shrinking-batch step, the plain loop, the compiled graphs again (kept from the first call),
    and the plain loop on the CPU."""
    decoders = fast_decoders()
    for case in cases:
        kwargs = dict(max_new_tokens=48, seed=5, num_samples=4) | case
        runs = {name: M.generate(ours, prompts, decode=d, **kwargs) for name, d in decoders.items()}
        runs["plain loop"] = M.generate(ours, prompts, **kwargs)
        runs["compiled graphs again"] = M.generate(ours, prompts, decode=decoders["compiled graphs"], **kwargs)
        runs["plain loop on the CPU"] = M.generate(on_cpu, prompts, **kwargs)
        reference = runs["plain loop on the CPU"]
        rows = {k: sum(a == b for a, b in zip(v, reference)) for k, v in runs.items()}
        check(f"{label}{' = '.join(runs)}, same seed ({case})", all(v == reference for v in runs.values()),
              ", ".join(f"{k} {n}/{len(reference)}" for k, n in rows.items())
              + f"; lengths {sorted({len(r) for r in reference})}")


def float32(device, small: bool):
    from tiny import make_hf_model, save_hf_model
    print("\n## float32: equal tokens and values on this device", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 parity means float32 arithmetic
    tmp = Path(tempfile.mkdtemp())
    g = torch.Generator().manual_seed(0)

    # The second config (untied, GQA) stays in hand for the sampler checks below.
    for i, overrides in enumerate((dict(tie_word_embeddings=True, num_key_value_heads=1, rope_theta=1e4),
                                   dict(tie_word_embeddings=False, num_key_value_heads=2, rope_theta=1e6))):
        hf = make_hf_model(seed=1, **overrides)
        folder = save_hf_model(hf, tmp / str(i), shard=True)
        ours, hf = M.load_model(folder, dtype=torch.float32, device=device), hf.to(device)
        ids = torch.randint(0, 97, (3, 40), generator=g).to(device)
        with torch.no_grad():
            err = (ours(ids) - hf(ids).logits).abs().max().item()
        check(f"logits = transformers, float32 ({overrides})", err < 1e-5, f"max |diff| {err:.2e}")

    on_cpu = M.load_model(folder, dtype=torch.float32)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (9, 1, 4, 17)]
    for label, decode in (("compiled CUDA-graph step", FD.FastDecode(fixed_shapes=True, compile=True)),
                          ("fast shrinking-batch step", FD.FastDecode(fixed_shapes=False)),
                          ("plain loop", None)):
        got = M.generate(ours, prompts, max_new_tokens=40, temperature=0, decode=decode)
        same = 0
        for prompt, tokens in zip(prompts, got):
            with torch.no_grad():
                out = hf.generate(torch.tensor([prompt], device=device), max_new_tokens=40, do_sample=False,
                                  attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device),
                                  eos_token_id=None, pad_token_id=0)
            same += tokens == out[0, len(prompt):].tolist()
        check(f"greedy generate = transformers' greedy, 40 steps, ragged batch ({label})",
              same == len(prompts), f"{same}/{len(prompts)} rows equal")

    cases = (dict(temperature=0), dict(temperature=1.0), dict(temperature=0.7, top_p=0.8),
             dict(temperature=1.0, eos_token_id=[3, 17]), dict(temperature=1.0, vocab_size=90))
    sampler_checks(ours, on_cpu, prompts, cases[:2] if small else cases, "")

    # Attention buckets of 8 columns: a call crosses several, each its own compiled-step CUDA graph.
    FD.ATTENTION_BUCKET = 8
    kwargs = dict(max_new_tokens=48, seed=2, num_samples=2, temperature=1.0)
    graph = M.generate(ours, prompts, decode=FD.FastDecode(fixed_shapes=True, compile=True), **kwargs)
    FD.ATTENTION_BUCKET = 256
    check("CUDA graphs of 8-column attention buckets = the plain loop", graph == M.generate(ours, prompts, **kwargs))

    big = torch.randn(4096, 64, generator=g).to(device)
    hidden = torch.randn(6, 50, 64, generator=g).to(device).requires_grad_()
    targets = torch.randint(0, 4096, (6, 50), generator=g).to(device)
    lp, _ = M.token_logprobs(hidden, big, targets, chunk_size=64)
    (gh,) = torch.autograd.grad(lp.sum(), hidden)
    full = torch.log_softmax(hidden @ big.T, -1).gather(-1, targets[..., None]).squeeze(-1)
    (gf,) = torch.autograd.grad(full.sum(), hidden)
    err, gerr = (lp - full).abs().max().item(), (gh - gf).abs().max().item()
    check("chunked log-probs and their gradient = full computation", err < 5e-5 and gerr < 5e-5,
          f"max |diff| {err:.2e}, grad {gerr:.2e}")

    # The two-pass sampler (eager and compiled) on this device against sample_token's float64 cumsum on the CPU.
    logits = torch.randn(256, 151936, generator=g) * torch.logspace(-1, 1.5, 256)[:, None]
    u = torch.rand(256, generator=g, dtype=torch.float64)
    expected = M.sample_token(logits, 1.0, 1.0, u, 151665)
    for label, fn in (("eager", FD.two_pass_inverse_cdf), ("compiled", FD._compiled(FD.two_pass_inverse_cdf))):
        got = fn(logits.to(device), 1.0, u.to(device), 151665).cpu()
        check(f"two-pass sampler ({label}) = sample_token on the CPU, 256 rows of 151,936",
              torch.equal(got, expected), f"{int((got == expected).sum())}/256 rows equal")

    ids = torch.randint(0, 97, (2, 30), generator=g).to(device)
    L.apply_lora(ours, r=8, alpha=16)
    with torch.no_grad():
        for layer in L.lora_layers(ours).values():
            layer.lora_B.weight.normal_(0, 0.05)
        unmerged = ours(ids)
        L.merge_lora(ours)
        merged = ours(ids)
        L.unmerge_lora(ours)
        back = ours(ids)
    err, back_err = (merged - unmerged).abs().max().item(), (back - unmerged).abs().max().item()
    check("LoRA merged = unmerged = unmerged again", err < 1e-4 and back_err < 1e-4, f"{err:.2e}, {back_err:.2e}")
    L.apply_lora(on_cpu, r=8, alpha=16)
    on_cpu.load_state_dict({k: v.cpu() for k, v in ours.state_dict().items()})
    sampler_checks(ours, on_cpu, prompts, cases[1:2] + (() if small else cases[3:]), "with LoRA: ")

    # Graphs kept across steps: one compiled FastDecode, the adapter updated in place between calls (as the
    # optimizer does), so the captured graphs replay over refilled weights.
    kept = FD.FastDecode(fixed_shapes=True, compile=True)
    same = []
    for step in range(3):
        with torch.no_grad():
            for layer in L.lora_layers(ours).values():
                layer.lora_B.weight.add_(0.02 * torch.randn(layer.lora_B.weight.shape, generator=g).to(device))
        kwargs = dict(max_new_tokens=40, seed=step, num_samples=3, temperature=1.0)
        same.append(M.generate(ours, prompts, decode=kept, **kwargs) == M.generate(ours, prompts, **kwargs))
    check("graphs kept across 3 calls with the adapter updated in place between them = the plain loop", all(same),
          f"{same}; steps kept: {len(kept.buffers.steps)}")

    # The sampler's log-probs are what the learner scores, float32 on this device.
    completions, logprobs = M.generate(ours, prompts, 32, temperature=0.8, seed=4, num_samples=2, vocab_size=90,
                                       return_logprobs=True, decode=kept)
    with torch.no_grad():
        lp, _, _ = M.completion_logprobs(ours, prompts, completions, [i // 2 for i in range(8)], 0.8, 90)
    err = max((torch.tensor(x) - lp[i, :len(x)].cpu()).abs().max().item() for i, x in enumerate(logprobs))
    check("the CUDA-graph sampler's log-probs = completion_logprobs of its tokens", err < 1e-4, f"max |diff| {err:.2e}")

    # The merged-weights sampler: a separate copy, the master untouched; in float32 it is the learner to rounding.
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    merged_model = L.merged_copy(ours)
    merged_tokens = M.generate(merged_model, prompts, 32, temperature=1.0, seed=4, num_samples=2, decode=kept)
    untouched = all(torch.equal(ours.state_dict()[k], v) for k, v in before.items())
    with torch.no_grad():
        err = (merged_model(ids) - ours(ids)).abs().max().item()
    exact_tokens = M.generate(ours, prompts, 32, temperature=1.0, seed=4, num_samples=2, decode=kept)
    check("merged copy: master untouched, logits = the adapter's to 1e-4, same tokens", untouched and err < 1e-4 and
          merged_tokens == exact_tokens, f"untouched {untouched}, max |diff| {err:.2e}")


PARTS = {"probe": probe, "bf16": bf16, "float32": float32}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    ap.add_argument("--small", action="store_true", help="small shapes and fewer cases (a smoke run)")
    args = ap.parse_args()
    parts = args.only.split(",")
    if any(p not in PARTS for p in parts):
        ap.error(f"--only {args.only}: parts are {', '.join(PARTS)}")
    device = M.pick_device(args.device)  # on CUDA: safe_attention
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# {time.strftime('%Y-%m-%d')} | {name} | torch {torch.__version__} | parts {', '.join(parts)}", flush=True)
    for part in parts:
        t0 = time.time()
        try:
            PARTS[part](device, args.small)
        except Exception as e:  # a check that crashes is a failed check, and the other parts still run
            check(f"{part}: ran to the end", False, FD.one_line(e))
        print(f"## {part}: {time.time() - t0:.0f} s", flush=True)
    print(f"\n{len(failures)} failed" + (f": {failures}" if failures else ""), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
