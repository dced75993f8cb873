"""
Decode speed of the sampler against the memory-bandwidth roofline, and how far each sampler is from the learner.

The Qwen2.5-Math-1.5B shape with random weights (bfloat16 on a GPU), one prompt of 200 tokens x B samples x
--new-tokens new tokens at temperature 1 (the paper's rollout; random weights never emit EOS, so every row runs to
the end):

- ms per decode step at batch 8 and 64: (time of generate with N new tokens - with 1) / (N - 1), each with the
  decoder grpo.py runs (fast_decode.FastDecode, compiled on CUDA), kept from call to call as the trainer keeps it:
  one warm-up call first (compilation, graph captures), so the timed calls are the steady state. Samplers: the
  exact one (generate's default) with LoRA r=64 on all seven projections and without (the same model under
  lora_disabled), the merged-weights one (lora.merged_copy, whose per-step merge is timed apart; --skip-merged
  leaves it out), and the plain loop (model.decode_plain, --plain-steps steps) for reference.
- The roofline: the bytes one step must read, every weight once (LoRA's float32 A and B included when on) plus
  the KV cache of the filled positions (28,672 bytes per position and row; P + N/2 on average), over the memory
  bandwidth: the HBM spec for the GPUs named below, and the bandwidth of a large device copy measured here.
  Targets on an H200: batch 8 at least 50% of the spec roofline, LoRA at most 1.15x no LoRA.
- The sampler-learner mismatch of both samplers with LoRA, batch 8 (--skip-mismatch leaves it out):
  grpo.sampler_mismatch (KL k3 and mean |delta log p| between the log-probs generate returns and
  completion_logprobs of the same tokens).

Each row prints when measured.

    python bench/bench_decode.py                                             # CUDA, every sampler
    python bench/bench_decode.py --new-tokens 256 --skip-merged --skip-mismatch   # bench/run_gpu.sh's
    python bench/bench_decode.py --device cpu --shape small --new-tokens 32 --batch 2 --prompt-len 16   # dry run
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import fast_decode as FD  # noqa: E402
import grpo as G  # noqa: E402
import lora as L  # noqa: E402
import model as M  # noqa: E402
from bench_paper_step import SHAPES  # noqa: E402

HBM_BYTES_PER_S = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100": 2.0e12}


def spec_bandwidth(name: str) -> float | None:
    return next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)


def copy_bandwidth(device) -> float:
    """Bytes read + written per second by a 1 GB device-to-device copy (best of 5)."""
    x = torch.empty(2**29, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        y.copy_(x)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * x.element_size() / best


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", default="qwen2.5-math-1.5b", choices=list(SHAPES))
    ap.add_argument("--prompt-len", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--plain-steps", type=int, default=64, help="decode steps timed for the plain loop")
    ap.add_argument("--skip-merged", action="store_true")
    ap.add_argument("--skip-mismatch", action="store_true")
    args = ap.parse_args()
    device = M.pick_device(args.device)  # on CUDA: safe_attention
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = M.Qwen2Config(max_position_embeddings=4096, tie_word_embeddings=True, **SHAPES[args.shape])
    with torch.device(device):
        model = M.Qwen2(config).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    M.fuse_projection_storage(model)
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    L.apply_lora(model, r=args.lora_rank, alpha=2 * args.lora_rank)
    with torch.no_grad():
        for m in L.lora_layers(model).values():  # B off zero, as after training
            m.lora_B.weight.normal_(0, 0.02)
    model.eval()
    lora_bytes = sum(p.numel() * p.element_size() for p in L.lora_parameters(model))
    kv_bytes = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * torch.finfo(dtype).bits // 8
    prompt = torch.randint(0, config.vocab_size, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    bandwidths = {"copy": copy_bandwidth(device)} | ({"spec": spec_bandwidth(name)} if spec_bandwidth(name) else {})
    print(f"# {time.strftime('%Y-%m-%d')} | {name} | torch {torch.__version__} | shape {args.shape} {str(dtype)[6:]} | "
          f"1 prompt ({args.prompt_len} tokens) x B x {args.new_tokens} new tokens, temperature 1 | weights "
          f"{base_bytes / 1e9:.2f} GB + LoRA r={args.lora_rank} {lora_bytes / 1e9:.3f} GB | KV {kv_bytes:,} B per position "
          f"| bandwidth: " + ", ".join(f"{k} {v / 1e12:.2f} TB/s" for k, v in bandwidths.items()), flush=True)

    N = args.new_tokens
    # The trainer's decoder: compiled on CUDA (a failure here is an error, not a slower timing).
    decoder = FD.FastDecode(compile=device.type in FD.COMPILE_AUTO)
    rows = []
    for B in args.batch:
        def per_step(m, decode, n=N):
            run = lambda k: lambda: M.generate(m, [prompt], k, temperature=1.0, seed=0, num_samples=B,  # noqa: E731
                                               decode=decode)
            run(n)()  # warm-up: compilation, graph captures, the allocator
            return (seconds(run(n), device) - seconds(run(1), device)) / (n - 1)

        kv = kv_bytes * B * (args.prompt_len + N / 2)

        def report(what, t):
            weights = base_bytes + (lora_bytes if what.startswith("exact, LoRA") or what.startswith("plain") else 0)
            roofs = {k: (weights + kv) / bw for k, bw in bandwidths.items()}
            rows.append((B, what, t, roofs))
            print(f"  batch {B:>3} {what:<18} {t * 1e3:7.2f} ms/step  roofline " +
                  ", ".join(f"{k} {r * 1e3:.2f} ms ({r / t:.0%})" for k, r in roofs.items()), flush=True)
            return t

        lora_on = report("exact, LoRA", per_step(model, decoder))
        with L.lora_disabled(model):
            lora_off = report("exact, no LoRA", per_step(model, decoder))
        print(f"  batch {B:>3} LoRA / no LoRA: {lora_on / lora_off:.2f}x", flush=True)
        if not args.skip_merged:
            merge = seconds(lambda: L.merged_copy(model), device)
            merged = L.merged_copy(model)
            report("merged, LoRA", per_step(merged, decoder))
            del merged
            print(f"  batch {B:>3} merging the adapter into the copy: {merge * 1e3:.0f} ms per rollout", flush=True)
        report("plain loop, LoRA", per_step(model, None, n=args.plain_steps + 1))

    print("\n| batch | sampler | ms per step | roofline ms | share of roofline |")
    print("|---:|---|---:|---:|---:|")
    for B, what, t, roofs in rows:
        roof = roofs.get("spec", roofs["copy"])
        print(f"| {B} | {what} | {t * 1e3:.2f} | {roof * 1e3:.2f} | {roof / t:.0%} |")

    if args.skip_mismatch:
        return
    print(f"\nSampler - learner mismatch, batch {args.batch[0]}, LoRA r={args.lora_rank} (KL k3 of sampler || learner "
          "per token; mean |delta log p|):")
    print("| sampler | KL (k3) | mean abs diff log p |")
    print("|---|---:|---:|")
    cfg = G.Config(group_size=args.batch[0], micro_batch=4, temperature=1.0)
    for what, sampler in (("exact", model), ("merged", None)):
        sampler = sampler if sampler is not None else L.merged_copy(model)
        completions, logprobs = M.generate(sampler, [prompt], N, temperature=1.0, seed=1, num_samples=args.batch[0],
                                           return_logprobs=True, decode=decoder)
        del sampler
        stats = G.sampler_mismatch(model, [prompt], completions, logprobs, cfg, config.vocab_size)
        print(f"| {what} | {stats['sampler/kl_k3']:.2e} | {stats['sampler/logp_abs_diff_mean']:.2e} |", flush=True)


if __name__ == "__main__":
    main()
