"""
Everything that needs a GPU, in one call of at most 6 minutes (so that a 15-minute GPU loan can run it twice), most
important first: the probe of the attention backend and the bf16 gate (bench/cuda_checks.py --only probe,bf16), one
paper-config GRPO step with completions of varied lengths (bench/bench_paper_step.py), decode per step at batch 8
and 64 with and without LoRA against the bandwidth roofline (bench/bench_decode.py), the float32 equality checks
(bench/cuda_checks.py --only float32), kernels per decode step from the CUDA profiler (bench/count_kernels.py), and
on a machine with several GPUs the data-parallel checks (bench/bench_allreduce.py, bench/dp_check.py; a single-GPU
machine skips them and says so).

Each step has its own time limit and the whole its budget; a step's output is echoed as it comes (its headline
as soon as the step has it) and kept in OUT_DIR/<step>.txt; at most 8 files: machine.txt, one per step, summary.txt.
The exit status is 1 if any step failed, timed out or did not run for lack of budget, else 0.

    bash bench/run_gpu.sh [OUT_DIR]                 # OUT_DIR: default $OUT, else bench/gpu-out
    python bench/run_gpu.py --device cpu OUT_DIR    # the same steps at small shapes on the CPU (a smoke run)
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 345      # the whole call (under 6 minutes with the start-up of this script)
MIN_STEP_S = 15     # a step given less than this is not started
NOISE = ("Writing model shards", "Loading weights")  # progress bars: kept in the files, not echoed


@dataclass
class Step:
    name: str            # its file: OUT_DIR/<name>.txt
    limit_s: float
    command: list[str]
    gpus: int = 1        # needs at least this many


def gpu_steps(device: str, gpus: int) -> list[Step]:
    py = [sys.executable]
    if device == "cpu":  # the smoke run: small shapes, no kernel counts (minutes on a CPU), no data parallel
        return [  # gpus=0: every step runs
            Step("checks_bf16", 240, py + ["bench/cuda_checks.py", "--device", "cpu", "--small", "--only", "probe,bf16"],
                 gpus=0),
            Step("paper_step", 120, py + ["bench/bench_paper_step.py", "--device", "cpu", "--shape", "small",
                                          "--new-tokens", "32", "--steps", "1", "--eos-rate", "0.01"], gpus=0),
            Step("decode", 120, py + ["bench/bench_decode.py", "--device", "cpu", "--shape", "small", "--new-tokens",
                                      "16", "--batch", "2", "--prompt-len", "16", "--plain-steps", "4",
                                      "--skip-merged", "--skip-mismatch"], gpus=0),
        ]
    return [
        Step("checks_bf16", 110, py + ["bench/cuda_checks.py", "--only", "probe,bf16"]),
        Step("paper_step", 65, py + ["bench/bench_paper_step.py", "--device", "cuda", "--eos-rate", "0.001"]),
        Step("decode", 75, py + ["bench/bench_decode.py", "--device", "cuda", "--new-tokens", "256", "--batch", "8",
                                 "64", "--plain-steps", "32", "--skip-merged", "--skip-mismatch"]),
        Step("checks_float32", 50, py + ["bench/cuda_checks.py", "--only", "float32"]),
        Step("data_parallel", 90, ["bash", "-c",
                                   f"torchrun --standalone --nproc_per_node {gpus} bench/bench_allreduce.py "
                                   f"--device cuda && {sys.executable} bench/dp_check.py --device cuda "
                                   f"--nproc {gpus}"], gpus=2),
        Step("kernels", 40, py + ["bench/count_kernels.py", "--device", "cuda"]),
    ]


def run_step(step: Step, limit: float, out: Path) -> tuple[str, float]:
    """Run one step, its output echoed line by line and written to out -> (status, seconds)."""
    t0 = time.monotonic()
    print(f"=== {step.name}: {' '.join(step.command)} (limit {limit:.0f} s)", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(out, "w") as log:
        process = subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

        def echo():
            for line in process.stdout:
                log.write(line)
                log.flush()
                if not any(n in line for n in NOISE):
                    print(f"  {line.rstrip()}", flush=True)

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        try:
            code = process.wait(timeout=limit)
            status = "ok" if code == 0 else f"FAILED (exit {code})"
        except subprocess.TimeoutExpired:
            stop(process)
            status = f"TIMED OUT after {limit:.0f} s"
        reader.join(timeout=10)
    seconds = time.monotonic() - t0
    print(f"=== {step.name}: {status}, {seconds:.0f} s", flush=True)
    return status, seconds


def stop(process: subprocess.Popen):
    """The step's whole process group (torchrun's workers too): SIGTERM, then SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_steps(steps: list[Step], out_dir: Path, budget_s: float, gpus: int) -> int:
    """Every step in order within the budget -> the exit status (1 if any step failed, timed out or was not run for
    lack of budget); summary.txt says which."""
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_s
    rows = []
    for step in steps:
        if step.gpus > gpus:
            status, seconds = f"skipped: needs {step.gpus} GPUs, this machine has {gpus}", 0.0
            print(f"=== {step.name}: {status}", flush=True)
        elif deadline - time.monotonic() < MIN_STEP_S:
            status, seconds = f"NOT RUN: the {budget_s:.0f} s budget is spent", 0.0
            print(f"=== {step.name}: {status}", flush=True)
        else:
            status, seconds = run_step(step, min(step.limit_s, deadline - time.monotonic()),
                                       out_dir / f"{step.name}.txt")
        rows.append((step.name, status, seconds))
    bad = [name for name, status, _ in rows if not (status == "ok" or status.startswith("skipped"))]
    lines = [f"{name:<16} {status:<48} {seconds:5.0f} s" for name, status, seconds in rows]
    lines.append(f"{len(bad)} of {len(rows)} steps failed, timed out or did not run" + (f": {bad}" if bad else ""))
    (out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(["", "=== summary"] + lines), flush=True)
    return 1 if bad else 0


def machine(device: str, out_dir: Path) -> int:
    """machine.txt: the GPUs, driver and versions -> the number of GPUs."""
    import torch
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    lines = []
    if gpus:
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.sm,"
                                  "clocks.max.sm", "--format=csv"], capture_output=True, text=True)
            lines += (smi.stdout or smi.stderr).strip().splitlines()
        except FileNotFoundError:
            lines += [torch.cuda.get_device_name(i) for i in range(gpus)]
    else:
        lines.append(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    lines.append(f"python {platform.python_version()} torch {torch.__version__} | {gpus} GPU(s) | "
                 f"{time.strftime('%Y-%m-%d %H:%M')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "machine.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return gpus


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=os.environ.get("OUT") or str(ROOT / "bench" / "gpu-out"))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--budget-s", type=float, default=BUDGET_S)
    args = ap.parse_args()
    out_dir = Path(args.out_dir)
    gpus = machine(args.device, out_dir)
    if args.device == "cuda" and gpus == 0:
        sys.exit("error: no CUDA GPU here (python bench/run_gpu.py --device cpu runs the smoke version)")
    if args.device == "cuda" and gpus < 2:
        print("one GPU: the data-parallel step (NCCL across GPUs) is skipped", flush=True)
    sys.exit(run_steps(gpu_steps(args.device, gpus), out_dir, args.budget_s, gpus))


if __name__ == "__main__":
    main()
