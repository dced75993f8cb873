"""
Correctness on a CUDA GPU: the checks of tests/test_model.py, tests/test_fast_decode.py and tests/test_lora.py that
could behave differently there (kernels, the compiled step, CUDA graphs, devices of intermediate tensors), against
transformers and the CPU on the same seed. Run it on a GPU machine before trusting timings from it; it exits 1
if any check fails.

    python bench/cuda_checks.py
    python bench/cuda_checks.py --device cpu     # the same checks without CUDA (a dry run of this script)

The CPU test suite cannot see these: the sampler captures its decode step as CUDA graphs only on CUDA, and
compiles it with Triton only there. Float32 throughout (tokens must match exactly).
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import fast_decode as FD  # noqa: E402
import lora as L  # noqa: E402
import model as M  # noqa: E402
from tiny import make_hf_model, save_hf_model  # noqa: E402

failures = []


def check(name: str, ok: bool, detail: str = ""):
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    if not ok:
        failures.append(name)


def sampler_checks(ours, on_cpu, prompts, cases, label):
    """Same seed, same tokens: the compiled CUDA-graph step (the default on CUDA), the same graphs over eager
    pieces, the fast shrinking-batch step, the plain loop, and the plain loop on the CPU."""
    for case in cases:
        kwargs = dict(max_new_tokens=48, seed=5, num_samples=4) | case
        runs = {"compiled graphs": M.generate(ours, prompts, fixed_shapes=True, compile=True, **kwargs),
                "eager graphs": M.generate(ours, prompts, fixed_shapes=True, compile=False, **kwargs),
                "fast shrinking": M.generate(ours, prompts, fixed_shapes=False, compile=False, **kwargs),
                "plain loop": M.generate(ours, prompts, fast=False, **kwargs),
                "compiled graphs again": M.generate(ours, prompts, fixed_shapes=True, compile=True, **kwargs),
                "plain loop on the CPU": M.generate(on_cpu, prompts, fast=False, **kwargs)}
        reference = runs["plain loop on the CPU"]
        rows = {k: sum(a == b for a, b in zip(v, reference)) for k, v in runs.items()}
        check(f"{label}{' = '.join(runs)}, same seed ({case})", all(v == reference for v in runs.values()),
              ", ".join(f"{k} {n}/{len(reference)}" for k, n in rows.items())
              + f"; lengths {sorted({len(r) for r in reference})}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    device = torch.device(ap.parse_args().device)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 parity means float32 arithmetic
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# {name} | torch {torch.__version__}", flush=True)
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
    for label, kwargs in (("compiled CUDA-graph step", dict(fixed_shapes=True, compile=True)),
                          ("fast shrinking-batch step", dict(fixed_shapes=False, compile=False)),
                          ("plain loop", dict(fast=False))):
        got = M.generate(ours, prompts, max_new_tokens=40, temperature=0, **kwargs)
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
    sampler_checks(ours, on_cpu, prompts, cases, "")

    # Attention buckets of 8 columns: a call crosses several, each its own compiled-step CUDA graph.
    FD.ATTENTION_BUCKET = 8
    kwargs = dict(max_new_tokens=48, seed=2, num_samples=2, temperature=1.0)
    graph = M.generate(ours, prompts, fixed_shapes=True, compile=True, **kwargs)
    FD.ATTENTION_BUCKET = 256
    check("CUDA graphs of 8-column attention buckets = the plain loop",
          graph == M.generate(ours, prompts, fast=False, **kwargs))

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
    sampler_checks(ours, on_cpu, prompts, cases[1:2] + cases[3:], "with LoRA: ")

    # The sampler's log-probs are what the learner scores, float32 on this device.
    completions, logprobs = M.generate(ours, prompts, 32, temperature=0.8, seed=4, num_samples=2, vocab_size=90,
                                       return_logprobs=True)
    with torch.no_grad():
        lp, _, _ = M.completion_logprobs(ours, prompts, completions, [i // 2 for i in range(8)], 0.8, 90)
    err = max((torch.tensor(x) - lp[i, :len(x)].cpu()).abs().max().item() for i, x in enumerate(logprobs))
    check("the CUDA-graph sampler's log-probs = completion_logprobs of its tokens", err < 1e-4, f"max |diff| {err:.2e}")

    # The merged-weights sampler: a separate copy, the master untouched; in float32 it is the learner to rounding.
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    copy = L.merged_copy(ours)
    merged_tokens = M.generate(copy, prompts, 32, temperature=1.0, seed=4, num_samples=2)
    untouched = all(torch.equal(ours.state_dict()[k], v) for k, v in before.items())
    with torch.no_grad():
        err = (copy(ids) - ours(ids)).abs().max().item()
    exact_tokens = M.generate(ours, prompts, 32, temperature=1.0, seed=4, num_samples=2)
    check("merged copy: master untouched, logits = the adapter's to 1e-4, same tokens", untouched and err < 1e-4 and
          merged_tokens == exact_tokens, f"untouched {untouched}, max |diff| {err:.2e}")

    print(f"\n{len(failures)} failed" + (f": {failures}" if failures else ""), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
