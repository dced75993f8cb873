"""
Kernels per decode step of the sampler, counted on the CPU for the structure of Qwen2.5-Math-1.5B (28 layers,
hidden 1536, 12 query / 2 KV heads, MLP 8960, vocab 151,936), bfloat16, batch 8, sampling at temperature 1.

How they are counted: generate runs under torch.profiler, and a kernel is the innermost event that computes:
an ATen op that is not a view, a reshape, an allocation or a no-op cast (as_strided, empty, resolve_conj, ...)
and has no computing op below it (aten::linear counts once, as its addmm), or one C++ kernel that inductor
generated for compiled code (torch._inductor.config.cpp.enable_kernel_profile makes each one an event; on a
GPU inductor emits one Triton kernel for each of them, and bench/run_gpu.sh counts the GPU's own kernels with
the CUDA profiler). A decode step's count is the difference between generate with 2 + k and with 2 new tokens,
divided by k (the prefill and the first token cancel); per layer it is the difference between 28 layers and 1,
divided by 27 (the embedding, final norm, LM head and sampler cancel).

Rows: the plain loop (model.decode_plain, model.py's forward), the fast step eager (the CPU's path) and the
fast step compiled (the GPU's path, which on CUDA is also captured as one CUDA graph per attention bucket),
each without LoRA and with LoRA r=64 on all seven projections (the paper's adapter).

--device cuda counts what the GPU runs instead: every kernel, copy and fill of the CUDA profiler, launched
eagerly (the shrinking-batch loop with EOS off, so the same kernels as one graph replay), and names the
attention kernels of the compiled step (the SDPA backend chosen).

    python bench/count_kernels.py                    # about 5 minutes on 2 cores, 8 GB of memory
    python bench/count_kernels.py --device cuda
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import fast_decode as FD  # noqa: E402
import lora as L  # noqa: E402
import model as M  # noqa: E402

NOT_KERNELS = {
    "as_strided", "empty", "empty_strided", "empty_like", "resolve_conj", "resolve_neg", "view", "_unsafe_view",
    "_reshape_alias", "reshape", "detach", "detach_", "lift_fresh", "alias", "expand", "expand_as", "slice",
    "select", "transpose", "t", "permute", "unsqueeze", "squeeze", "split", "split_with_sizes", "chunk", "unbind",
    "narrow", "flatten", "unflatten", "view_as", "result_type", "resize_", "to", "_to_copy", "contiguous",
    "set_", "_local_scalar_dense", "item", "is_nonzero", "lift_fresh_copy", "scalar_tensor", "numpy_T",
}


def is_kernel(event) -> bool:
    if "cpp_fused" in event.name:
        return True
    name = event.name.removeprefix("aten::")
    return event.name.startswith("aten::") and name not in NOT_KERNELS


def count_kernels(events) -> int:
    """Innermost computing events: a kernel whose subtree holds another kernel is a wrapper of it."""
    def has_kernel_below(e):
        return any(is_kernel(c) or has_kernel_below(c) for c in e.cpu_children)
    return sum(1 for e in events if is_kernel(e) and not has_kernel_below(e))


def gpu_kernels(events) -> list[str]:
    return [e.name for e in events if e.device_type == torch.autograd.DeviceType.CUDA]


def kernels_of(fn, device) -> tuple[int, list[str]]:
    """-> (kernels, names of the GPU's kernels or [])."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    if device.type == "cuda":
        names = gpu_kernels(prof.events())
        return len(names), names
    return count_kernels(prof.events()), []


def random_model(layers: int, lora: bool, device) -> M.Qwen2:
    config = M.Qwen2Config(num_hidden_layers=layers)
    with torch.device("meta"):
        model = M.Qwen2(config).to(torch.bfloat16)
    model = model.to_empty(device=device)
    model.tie_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    M.fuse_projection_storage(model).eval()
    if lora:
        L.apply_lora(model, r=64, alpha=128)
    return model


def per_step(model, prompts, k: int, device, decode) -> tuple[float, list[str]]:
    """-> (kernels per decode step, the GPU kernel names of the k steps' run)."""
    run = lambda n: lambda: M.generate(model, prompts, n, temperature=1.0, seed=0, decode=decode)  # noqa: E731
    run(2)(), run(2 + k)()  # warm-up: compilation, and every attention width the counted runs use
    (long, names), (short, _) = kernels_of(run(2 + k), device), kernels_of(run(2), device)
    return (long - short) / k, names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="k: decode steps counted")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = M.pick_device(args.device)  # on CUDA: safe_attention
    import torch._inductor.config as inductor_config
    inductor_config.cpp.enable_kernel_profile = True
    torch.manual_seed(0)
    prompts = torch.randint(0, 151936, (args.batch, 8)).tolist()
    fixed = device.type != "cuda"  # on CUDA fixed shapes are graph replays, which the profiler may not unfold
    paths = {"plain loop (model.py)": lambda: None,
             "fast step, eager (CPU)": lambda: FD.FastDecode(fixed_shapes=fixed, compile=False),
             "fast step, compiled (GPU)": lambda: FD.FastDecode(fixed_shapes=fixed, compile=True)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    print(f"# {time.strftime('%Y-%m-%d')} | torch {torch.__version__} | Qwen2.5-Math-1.5B structure, bfloat16, batch "
          f"{args.batch}, temperature 1 | kernels per decode step, counted on {where}")
    print("| path | LoRA | per step (28 layers) | per layer |")
    print("|---|---|---:|---:|")
    last, attention = {}, set()
    for lora in (False, True):
        models = {n: random_model(n, lora, device) for n in (1, 28)}
        for name, decoder in paths.items():
            steps = {n: per_step(m, prompts, args.steps, device, decoder()) for n, m in models.items()}
            layer = (steps[28][0] - steps[1][0]) / 27
            print(f"| {name} | {'r=64, all 7' if lora else 'none'} | {steps[28][0]:.0f} | {layer:.1f} |", flush=True)
            last[lora] = layer
            if "compiled" in name:
                attention |= {k for k in steps[28][1] if any(s in k.lower() for s in ("fmha", "flash", "attention"))}
        del models
    if device.type == "cuda":
        print("attention kernels of the compiled step: " + ("; ".join(sorted(attention)) or "none found"))
    print(f"per layer: {last[False]:.0f} without LoRA, {last[True]:.0f} with LoRA")


if __name__ == "__main__":
    main()
