"""
Sampler and log-prob benchmark: our `generate` vs transformers' `generate(use_cache=True)`, same random weights,
one process: ours is generate with the fast decoder (fast_decode.FastDecode, grpo.py's default), next to it our
plain loop (generate's own, model.decode_plain) and ours with LoRA on all seven projections; prefix sharing (8 prompts x 8 samples, one prefill per prompt vs 64 prefills); peak memory of
chunked vs full log-probs.

    python bench/bench_generate.py                                   # CPU, a small model (minutes)
    python bench/bench_generate.py --vocab 32000 --batch 8 --prompt-len 32 --new-tokens 64 --repeats 10 \
        --skip-prefix-sharing --skip-memory                          # issue 14's CPU target
    python bench/bench_generate.py --device cuda --shape qwen2.5-math-1.5b --dtype bfloat16

Both samplers decode greedily with EOS disabled, so every row produces exactly --new-tokens tokens. The
variants take turns within each of --repeats rounds and each keeps its best time, so a load that comes and goes
on a shared machine slows them alike.
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import fast_decode as FD  # noqa: E402
import lora as L  # noqa: E402
import model as M  # noqa: E402

SHAPES = {
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2),
    "qwen2.5-math-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                              num_attention_heads=12, num_key_value_heads=2),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_pair(shape: str, vocab: int, dtype, device, folder: Path):
    """A random HF checkpoint written by transformers, loaded by both implementations."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, **SHAPES[shape])
    with torch.device(device):
        hf = Qwen2ForCausalLM(config).to(dtype).eval()
    hf.generation_config.eos_token_id = None
    hf.save_pretrained(folder)
    ours = M.load_model(folder, dtype=dtype, device=device)
    return ours, hf


def time_it(fn, device, repeats):
    return time_all({"fn": fn}, device, repeats)["fn"]


def time_all(fns: dict, device, repeats) -> dict:
    """Best of `repeats` seconds per function after one warm-up each; the functions take turns within each
    round, so a load that comes and goes on a shared machine hits all of them alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def with_random_lora(model, rank: int):
    """LoRA r=rank (alpha 2r) on all seven projections, B off zero as after training."""
    L.apply_lora(model, r=rank, alpha=2 * rank)
    with torch.no_grad():
        for m in L.lora_layers(model).values():
            m.lora_B.weight.normal_(0, 0.02)
    return model.eval()


def bench_generate(args, device, dtype):
    rows = []
    shared = repeated = shared_long = repeated_long = None
    for vocab in args.vocab:
        with tempfile.TemporaryDirectory() as tmp:
            ours, hf = build_pair(args.shape, vocab, dtype, device, Path(tmp))
            adapted = with_random_lora(M.load_model(tmp, dtype=dtype, device=device), args.lora_rank)
            for batch in args.batch:
                g = torch.Generator().manual_seed(batch)
                ids = torch.randint(0, vocab, (batch, args.prompt_len), generator=g)
                prompts = ids.tolist()

                def run_hf():
                    with torch.no_grad():
                        hf.generate(ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                                    max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                    do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0)

                run = lambda model, decode: lambda: M.generate(model, prompts, args.new_tokens, temperature=0,  # noqa: E731
                                                               decode=decode)
                fast = lambda: FD.FastDecode(compile=device.type in FD.COMPILE_AUTO)  # noqa: E731  (grpo.py's default)
                fns = {"ours": run(ours, fast()), "hf": run_hf, "plain": run(ours, None), "lora": run(adapted, fast())}
                if device.type == "cuda":  # the eager loop without CUDA graphs or compilation
                    fns["eager"] = run(ours, FD.FastDecode(fixed_shapes=False))
                t = time_all(fns, device, args.repeats)
                n = batch * args.new_tokens
                rows.append((vocab, batch, n / t["ours"], n / t["hf"], t["hf"] / t["ours"], t["hf"] / t["plain"],
                             t["lora"] / t["ours"], n / t["eager"] if "eager" in t else None))
                print(f"  vocab {vocab:>6} batch {batch:>3}: ours {n / t['ours']:9.0f} tok/s  transformers "
                      f"{n / t['hf']:9.0f} tok/s  ratio {t['hf'] / t['ours']:5.2f}x  (plain loop "
                      f"{t['hf'] / t['plain']:5.2f}x; LoRA r={args.lora_rank} costs {t['lora'] / t['ours']:.2f}x)"
                      + (f"  (ours without CUDA graph {n / t['eager']:9.0f} tok/s)" if "eager" in t else ""), flush=True)
            if vocab == args.vocab[-1] and not args.skip_prefix_sharing:
                prompts = torch.randint(0, vocab, (8, args.prompt_len), generator=torch.Generator().manual_seed(1)).tolist()
                decode = FD.FastDecode(compile=device.type in FD.COMPILE_AUTO)
                shared = time_it(lambda: M.generate(ours, prompts, args.new_tokens, num_samples=8, seed=0, decode=decode),
                                 device, args.repeats)
                repeated = time_it(lambda: M.generate(ours, [p for p in prompts for _ in range(8)], args.new_tokens, seed=0,
                                                      decode=decode), device, args.repeats)
                long_prompts = torch.randint(0, vocab, (8, args.long_prompt_len), generator=torch.Generator().manual_seed(2)).tolist()
                shared_long = time_it(lambda: M.generate(ours, long_prompts, 32, num_samples=8, seed=0, decode=decode),
                                      device, args.repeats)
                repeated_long = time_it(lambda: M.generate(ours, [p for p in long_prompts for _ in range(8)], 32, seed=0,
                                                           decode=decode), device, args.repeats)
            del ours, hf, adapted
    return rows, (shared, repeated, shared_long, repeated_long)


PEAK_CPU = r"""
import resource, sys, torch
sys.path.insert(0, {root!r})
import model as M
torch.manual_seed(0)
B, T, H, V = {B}, {T}, {H}, {V}
hidden = torch.randn(B, T, H, requires_grad=True)
weight = torch.empty(V, H).normal_(0, 0.02)  # in place: no temporary to raise the high-water mark before `base`
targets = torch.randint(0, V, (B, T))
small = torch.randn(1, 4, H, requires_grad=True)
M.token_logprobs(small, weight[:10], torch.zeros(1, 4, dtype=torch.long), chunk_size=2)[0].sum().backward()
torch.log_softmax(small @ weight[:10].T, -1).sum().backward()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if {chunked}:
    lp, _ = M.token_logprobs(hidden, weight, targets, chunk_size={chunk_size})
else:
    lp = torch.log_softmax((hidden @ weight.T).float(), -1).gather(-1, targets[..., None]).squeeze(-1)
lp.sum().backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def logprob_peak_memory(device, dtype, chunk_sizes, B=8, T=512, H=1536, V=151936):
    """Peak memory of forward + backward of the log-probs of B x T targets, full logits and chunked with each of
    chunk_sizes (beyond the inputs): {None: full, chunk_size: chunked}. On the CPU: peak RSS growth of a fresh
    process, with a fixed mmap threshold so that glibc returns freed blocks to the OS and the peak tracks live
    tensors rather than the allocator's heap."""
    if device.type == "cuda":
        out = {}
        for chunk_size in (None, *chunk_sizes):
            chunked = chunk_size is not None
            hidden = torch.randn(B, T, H, device=device, dtype=dtype, requires_grad=True)
            weight = (torch.randn(V, H, device=device) * 0.02).to(dtype)
            targets = torch.randint(0, V, (B, T), device=device)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            if chunked:
                lp, _ = M.token_logprobs(hidden, weight, targets, chunk_size=chunk_size)
            else:
                lp = torch.log_softmax((hidden @ weight.T).float(), -1).gather(-1, targets[..., None]).squeeze(-1)
            lp.sum().backward()
            torch.cuda.synchronize()
            out[chunk_size] = torch.cuda.max_memory_allocated() - base
            del hidden, weight, targets, lp
        return out
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = {}
    for chunk_size in (None, *chunk_sizes):
        code = PEAK_CPU.format(root=str(ROOT), B=B, T=T, H=H, V=V, chunked=chunk_size is not None,
                               chunk_size=chunk_size)
        out[chunk_size] = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                             check=True, env=env).stdout.strip())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--shape", default="small", choices=list(SHAPES))
    ap.add_argument("--vocab", type=int, nargs="+", default=[1024, 151936])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--long-prompt-len", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-generate", action="store_true", help="only the log-prob memory table")
    ap.add_argument("--skip-prefix-sharing", action="store_true")
    ap.add_argument("--lora-rank", type=int, default=16, help="rank of the LoRA variant (all seven projections)")
    ap.add_argument("--chunk-sizes", type=int, nargs="+", default=[1024, 256], help="positions per log-prob chunk")
    args = ap.parse_args()
    device, dtype = M.pick_device(args.device), getattr(torch, args.dtype)
    import transformers
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {time.strftime('%Y-%m-%d')} | {device} ({name}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}) | torch {torch.__version__} | transformers {transformers.__version__} | "
          f"shape {args.shape} {args.dtype} | prompt {args.prompt_len} + {args.new_tokens} new tokens, greedy, no EOS")
    if not args.skip_generate:
        report_generate(args, device, dtype)
    if not args.skip_memory:
        what = "peak CUDA memory allocated" if device.type == "cuda" else "peak RSS growth"
        print(f"\nLog-probs of 8 x 512 targets, V=151936, H=1536, forward + backward ({what}):")
        print("| full logits | chunked: positions per chunk | chunked | full / chunked |")
        print("|---:|---:|---:|---:|")
        peaks = logprob_peak_memory(device, dtype, args.chunk_sizes)
        for chunk_size in args.chunk_sizes:
            print(f"| {peaks[None] / 1e9:.2f} GB | {chunk_size} | {peaks[chunk_size] / 1e9:.3f} GB | "
                  f"{peaks[None] / peaks[chunk_size]:.1f}x |")


def report_generate(args, device, dtype):
    rows, (shared, repeated, shared_long, repeated_long) = bench_generate(args, device, dtype)
    graphs = device.type == "cuda"
    print(f"\n| vocab | batch | ours tok/s | transformers tok/s | ours / transformers | plain loop / transformers "
          f"| LoRA r={args.lora_rank} / no LoRA |" + (" ours without CUDA graph, tok/s |" if graphs else ""))
    print("|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if graphs else ""))
    for vocab, batch, ours, hf, ratio, plain, lora, eager in rows:
        print(f"| {vocab} | {batch} | {ours:,.0f} | {hf:,.0f} | {ratio:.2f}x | {plain:.2f}x | {lora:.2f}x |"
              + (f" {eager:,.0f} |" if graphs else ""))
    if shared is None:
        return
    print(f"\nPrefix sharing, 8 prompts x 8 samples, vocab {args.vocab[-1]}:")
    print("| prompt + new tokens | one prefill per prompt (num_samples=8) | 64 prefills | gain |")
    print("|---|---:|---:|---:|")
    print(f"| {args.prompt_len} + {args.new_tokens} | {shared:.3f} s | {repeated:.3f} s | {repeated / shared:.2f}x |")
    print(f"| {args.long_prompt_len} + 32 | {shared_long:.3f} s | {repeated_long:.3f} s | {repeated_long / shared_long:.2f}x |")


if __name__ == "__main__":
    main()
