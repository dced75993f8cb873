"""What data parallelism costs per step: one all-reduce of the flat LoRA gradient, timed (run under torchrun).

    torchrun --standalone --nproc_per_node 2 bench/bench_allreduce.py              # gloo on CPUs
    torchrun --standalone --nproc_per_node 8 bench/bench_allreduce.py --device cuda  # NCCL, one GPU each

Sizes: the demo adapter (r=16 on the 0.8M model), and Qwen2.5-Math-1.5B's at r=16 and r=64, float32. The
trainer does exactly this once per step (parallel.World.sum_tensor), after accumulating the micro-batches: the most
DistributedDataParallel could save by overlapping it with the last backward is this time.
"""

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

SIZES = {"demo, r=16": 155_648, "Qwen2.5-Math-1.5B, r=16": 18_464_768, "Qwen2.5-Math-1.5B, r=64": 73_859_072}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.device == "cuda" else "cpu"
    if args.device == "cuda":
        torch.cuda.set_device(device)
    if rank == 0:
        print(f"{world} processes, {dist.get_backend()}, float32, median of {args.repeats} after a warm-up\n")
        print("| adapter | floats | MB | all-reduce | GB/s (algorithm bandwidth) |")
        print("|---|---:|---:|---:|---:|")
    for name, n in SIZES.items():
        x = torch.ones(n, device=device)
        times = []
        for i in range(args.repeats + 1):
            dist.barrier()
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            if args.device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        assert float(x[0]) == world ** (args.repeats + 1)  # every rank's ones, summed each time
        t = statistics.median(times)
        if rank == 0:
            print(f"| {name} | {n:,} | {n * 4 / 1e6:.1f} | {t * 1e3:.1f} ms | {n * 4 / t / 1e9:.2f} |", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
