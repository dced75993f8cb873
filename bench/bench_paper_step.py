"""
One paper-config GRPO step on a random model: 1 prompt x K=8 samples x up to 1024 new tokens, LoRA r=64 on all
seven projections, AdamW, activation checkpointing as in the paper preset, the sampler grpo.py runs (make_decoder:
--decoder auto --compile auto, kept from step to step); reports the time split and peak memory (targets on an
H200: at most 2.5 s and 24 GB per step). Each step prints its line when it ends, and the script exits 1 if a step's
loss or gradient is not finite (a NaN update is not a timing).

    python bench/bench_paper_step.py --device cuda                        # Qwen2.5-Math-1.5B shape, bf16
    python bench/bench_paper_step.py --device cuda --eos-rate 0.001       # completions of varied lengths
    python bench/bench_paper_step.py --device cpu --shape small --new-tokens 32 --steps 1   # a smoke run

Random weights draw from a near-uniform distribution, so a completion ends only where it draws one of the ids
taken as EOS: none by default (every completion runs to --new-tokens, the worst case), or the first
--eos-rate x vocabulary ids, which ends each row after a geometric number of tokens (mean 1 / rate), so the
learner's micro-batches change shape from step to step as real completions make them. Rewards are random bits
(fixed seed), so every group has signal and the learner processes all K completions.
"""
import argparse
import math
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import grpo as G  # noqa: E402
import lora as L  # noqa: E402
import model as M  # noqa: E402

SHAPES = {
    "qwen2.5-math-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                              num_attention_heads=12, num_key_value_heads=2),
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2),
}
TARGET_S, TARGET_GB = 2.5, 24.0  # one paper-config step on an H200 (issue 22)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", default="qwen2.5-math-1.5b", choices=list(SHAPES))
    ap.add_argument("--prompt-len", type=int, default=200)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction,
                    default=G.Config().grad_checkpointing, help="default: the paper preset's")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--sampler", default="exact", choices=G.CHOICES["sampler"], help="as grpo.py --sampler")
    ap.add_argument("--decoder", default="auto", choices=G.CHOICES["decoder"], help="as grpo.py --decoder")
    ap.add_argument("--eos-rate", type=float, default=0.0, help="the share of the vocabulary that ends a completion")
    args = ap.parse_args()
    device = M.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = M.Qwen2Config(max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6,
                           tie_word_embeddings=True, **SHAPES[args.shape])
    with torch.device(device):
        model = M.Qwen2(config).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    M.fuse_projection_storage(model)  # as load_model lays the weights out
    model.gradient_checkpointing = args.grad_checkpointing
    params = L.apply_lora(model, r=args.lora_rank, alpha=2 * args.lora_rank)
    cfg = G.Config(group_size=args.group_size, micro_batch=args.micro_batch, lr=1e-5, grad_clip=0.1,
                   max_new_tokens=args.new_tokens, sampler=args.sampler, decoder=args.decoder)
    decode = G.make_decoder(cfg, device, dtype)
    optimizer = G.make_optimizer(params, cfg)
    prompt = torch.randint(0, config.vocab_size, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
    rewards = torch.randint(0, 2, (1, args.group_size), generator=torch.Generator().manual_seed(1)).float()
    rewards[0, :2] = torch.tensor([0.0, 1.0])  # at least one of each
    eos = list(range(round(args.eos_rate * config.vocab_size)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# {time.strftime('%Y-%m-%d')} | {name} | torch {torch.__version__} | shape {args.shape} {str(dtype)[6:]} | "
          f"1 prompt ({args.prompt_len} tokens) x {args.group_size} x up to {args.new_tokens} new tokens, "
          f"{len(eos)} EOS ids | LoRA r={args.lora_rank} ({sum(p.numel() for p in params):,} params) | micro-batch "
          f"{args.micro_batch} | grad checkpointing {args.grad_checkpointing} | sampler {args.sampler} | "
          f"{G.describe_decoder(decode, device)}", flush=True)

    def step(seed):
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        model.eval()
        merged = args.sampler == "merged"  # as grpo.rollout: sample the merged copy, then measure the mismatch
        sampler = L.merged_copy(model) if merged else model
        out = M.generate(sampler, [prompt], args.new_tokens, num_samples=args.group_size, seed=seed,
                         eos_token_id=eos, return_logprobs=merged, decode=decode)
        del sampler
        completions, logprobs = out if merged else (out, None)
        ro = G.Rollouts([None], [prompt], completions, [""] * len(completions), rewards)
        if merged:
            ro.sampler_stats = G.sampler_mismatch(model, [prompt], completions, logprobs, cfg,
                                                  config.vocab_size)
        sync()
        t1 = time.perf_counter()
        loss, stats = G.update(model, params, optimizer, ro, G.group_advantages(rewards, "std"), cfg, config.vocab_size)
        sync()
        t2 = time.perf_counter()
        lengths = [len(c) for c in completions]
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 1e9
        print(f"  step {seed}{' (warm-up)' if seed == 0 else ''}: sampling {t1 - t0:.2f} s, update {t2 - t1:.2f} s, "
              f"step {t2 - t0:.2f} s | completion lengths {min(lengths)}-{max(lengths)} (sum {sum(lengths)}) | loss "
              f"{loss:.4g}, grad norm {stats.get('grad_norm_preclip', math.nan):.4g} | peak {peak:.1f} GB", flush=True)
        finite = math.isfinite(loss) and math.isfinite(stats.get("grad_norm_preclip", math.nan))
        return t1 - t0, t2 - t1, sum(lengths), ro.sampler_stats, finite, peak

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [step(s) for s in range(args.steps + 1)]
    timed = times[1:] or times
    sample_t = sum(t[0] for t in timed) / len(timed)
    update_t = sum(t[1] for t in timed) / len(timed)
    tokens, peak = timed[-1][2], max(t[5] for t in times)
    print("| sampling s | update s | step s | generated tok/s | peak memory GB |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {sample_t:.2f} | {update_t:.2f} | {sample_t + update_t:.2f} | {tokens / sample_t:,.0f} | {peak:.1f} |")
    if device.type == "cuda":
        print(f"targets (H200, 1 x 8 x 1024, LoRA r=64): step {sample_t + update_t:.2f} s <= {TARGET_S} s: "
              f"{'met' if sample_t + update_t <= TARGET_S else 'NOT met'}; peak {peak:.1f} GB <= {TARGET_GB:g} GB: "
              f"{'met' if peak <= TARGET_GB else 'NOT met'}")
    if timed[-1][3]:
        print("sampler - learner mismatch of the last step: " + ", ".join(f"{k} {v:.3e}" for k, v in timed[-1][3].items()))
    bad = [i for i, t in enumerate(times) if not t[4]]
    if bad:
        sys.exit(f"FAIL: a non-finite loss or gradient at step(s) {bad}")
    print("PASS: every step's loss and gradient finite", flush=True)


if __name__ == "__main__":
    main()
