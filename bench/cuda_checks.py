"""
Correctness on a CUDA GPU: the checks of tests/test_model.py and tests/test_lora.py that could behave differently
there (kernels, the CUDA-graph sampler, devices of intermediate tensors), against transformers on the same GPU.
Run it on a GPU machine before trusting timings from it; it exits 1 if any check fails.

    python bench/cuda_checks.py
    python bench/cuda_checks.py --device cpu     # the same checks without CUDA (a dry run of this script)

The CPU test suite cannot see these: the sampler captures its decode step as a CUDA graph only on CUDA.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import lora as L  # noqa: E402
import model as M  # noqa: E402
from tiny import make_hf_model, save_hf_model  # noqa: E402

failures = []


def check(name: str, ok: bool, detail: str = ""):
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)
    if not ok:
        failures.append(name)


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
    for fixed in (True, False):
        got = M.generate(ours, prompts, max_new_tokens=40, temperature=0, fixed_shapes=fixed)
        same = 0
        for prompt, tokens in zip(prompts, got):
            with torch.no_grad():
                out = hf.generate(torch.tensor([prompt], device=device), max_new_tokens=40, do_sample=False,
                                  attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device),
                                  eos_token_id=None, pad_token_id=0)
            same += tokens == out[0, len(prompt):].tolist()
        check(f"greedy generate = transformers' greedy, 40 steps, ragged batch (fixed_shapes={fixed})",
              same == len(prompts), f"{same}/{len(prompts)} rows equal")

    for case in (dict(temperature=1.0), dict(temperature=0.7, top_p=0.8), dict(temperature=1.0, eos_token_id=[3, 17]),
                 dict(temperature=1.0, vocab_size=90)):
        kwargs = dict(max_new_tokens=48, seed=5, num_samples=4) | case
        graph = M.generate(ours, prompts, fixed_shapes=True, **kwargs)
        shrinking = M.generate(ours, prompts, fixed_shapes=False, **kwargs)
        again = M.generate(ours, prompts, fixed_shapes=True, **kwargs)
        cpu = M.generate(on_cpu, prompts, fixed_shapes=False, **kwargs)
        rows = sum(a == b for a, b in zip(graph, shrinking))
        check(f"CUDA graph sampler = shrinking-batch sampler, twice, same seed ({case})",
              graph == shrinking == again, f"{rows}/{len(graph)} rows equal; lengths {sorted({len(r) for r in graph})}")
        rows = sum(a == b for a, b in zip(graph, cpu))
        check(f"  ... = the CPU sampler, same seed", graph == cpu, f"{rows}/{len(graph)} rows equal")

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
    graph = M.generate(ours, prompts, 32, temperature=1.0, seed=3, num_samples=2, fixed_shapes=True)
    check("CUDA graph sampler with LoRA layers = shrinking-batch sampler",
          graph == M.generate(ours, prompts, 32, temperature=1.0, seed=3, num_samples=2, fixed_shapes=False))

    print(f"\n{len(failures)} failed" + (f": {failures}" if failures else ""), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
