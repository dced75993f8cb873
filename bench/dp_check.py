"""Data parallel equals one process: a few demo steps on one process and under torchrun, updates compared.

    python bench/dp_check.py --device cpu --nproc 2      # gloo
    python bench/dp_check.py --device cuda --nproc 8     # NCCL, one GPU per process (bench/run_gpu.sh)

SGD without clipping, so the update is linear in the summed gradient and the two runs agree to float rounding
(tests/test_parallel.py states the tolerances); 4 prompts per process per step.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import grpo as G  # noqa: E402
import lora as L  # noqa: E402


def update_of(run: Path) -> torch.Tensor:
    from safetensors.torch import load_file
    cfg = G.Config(**json.loads((run / "config.json").read_text()))
    start, end = L.adapter_state_dict(G.setup(cfg)[0]), load_file(G.latest_checkpoint(run) / "adapter_model.safetensors")
    return torch.cat([(end[k] - start[k]).flatten() for k in sorted(end)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    flags = ["--preset", "demo", "--device", args.device, "--steps", str(args.steps), "--eval-every", "0",
             "--prompts-per-step", str(4 * args.nproc), "--optimizer", "sgd", "--lr", "0.125", "--grad-clip", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for name, launcher in (("one", [sys.executable]),
                               ("all", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        "--nproc_per_node", str(args.nproc)])):
            t0 = time.time()
            subprocess.run(launcher + ["grpo.py", *flags, "--out", f"{tmp}/{name}"], cwd=ROOT, check=True,
                           capture_output=True)
            seconds[name] = time.time() - t0
        a, b = update_of(Path(tmp) / "one"), update_of(Path(tmp) / "all")
        rel = float((a - b).norm() / a.norm())
        print(f"{args.steps} demo steps of {4 * args.nproc} prompts x 8: one process {seconds['one']:.1f} s, "
              f"{args.nproc} processes {seconds['all']:.1f} s (both including start-up); "
              f"|update difference| / |update| = {rel:.2e}")
        assert rel < 1e-5, rel


if __name__ == "__main__":
    main()
