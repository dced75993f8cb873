"""Reward checker speed: checks/s and per-call latency on real completions and on adversarial inputs.

The real completions are the datasets' own gold solutions (GSM8K answer text ending "#### N", MATH solutions ending
in a \\boxed answer), each scored against its gold answer. "cold" clears grader.py's answer cache before every call
(every answer parsed from scratch: the upper bound); "warm" repeats the pass with the cache full (the lower bound;
in training the gold and many of the 8 samples' answers repeat, so the truth lies between). Prints a markdown
section for BENCHMARKS.md.

    python bench/bench_reward.py --data-dir ../shared/data        # or set GRPO_DATA_DIR
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import data  # noqa: E402
import grader  # noqa: E402
from adversarial import ADVERSARIAL  # noqa: E402  (the corpus tests/test_grader.py bounds)


def measure(pairs: list[tuple[str, str]], strict: bool, cold: bool) -> list[int]:
    times = []
    for completion, gold in pairs:
        if cold:
            grader._canonical.cache_clear()
        start = time.perf_counter_ns()
        grader.reward(completion, gold, strict=strict)
        times.append(time.perf_counter_ns() - start)
    return times


def row(name: str, times: list[int], correct: str = "", chars: int | None = None) -> str:
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3  # noqa: E731
    rate = len(times) / (sum(times) / 1e9)
    name = name.replace("|", "\\|")  # a literal | would end the markdown cell
    if chars is not None:
        name += f" | {chars:,}"
    return (f"| {name} | {len(times):,} | {rate:,.0f} | {pick(0.5):.1f} | {pick(0.99):.1f} | "
            f"{ordered[-1] / 1e3:.1f} |{correct}")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("GRPO_DATA_DIR"), help="the shared data folder")
    parser.add_argument("--adversarial-repeats", type=int, default=20, help="calls per adversarial input")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("pass --data-dir or set GRPO_DATA_DIR")
    root = Path(args.data_dir)

    sets = {}
    for split in ("train", "test"):
        raw = [json.loads(line) for line in (root / "gsm8k" / f"{split}.jsonl").read_text().splitlines()]
        golds = [p.answer for p in data.load_gsm8k(split, root / "gsm8k")]
        sets[f"GSM8K {split} gold solutions"] = [(r["answer"], g) for r, g in zip(raw, golds)]
    for split in ("train", "test"):
        sets[f"MATH {split} solutions"] = [(p.solution, p.answer) for p in data.load_math(split, root / "math")]

    for pairs in sets.values():  # warm-up: regex caches, branch paths
        measure(pairs[:200], True, cold=True)

    print("## Reward checker (grader.py)\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs (shared), Python {platform.python_version()}, "
          f"single thread. Date: {datetime.date.today().isoformat()}. Command: `python bench/bench_reward.py "
          f"--data-dir ../shared/data`.\n")
    print("Per call: extract the answer from the completion, then math_equal against the gold answer. Single "
          "multi-millisecond maxima come from the OS scheduler on the shared machine: they persist with gc "
          "disabled, hit even 40-character inputs, and move between rows from run to run.\n")
    print("| input | calls | checks/s | median µs | p99 µs | max µs | reward = 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    gsm8k_medians = []
    for name, pairs in sets.items():
        for strict in (True, False):
            for cold in (True, False):
                times = measure(pairs, strict, cold)
                hits = sum(grader.reward(c, g, strict) for c, g in pairs)
                mode = f"{'strict' if strict else 'lenient'}, {'cold' if cold else 'warm'}"
                print(row(f"{name} ({mode})", times, f" {hits:,.0f}/{len(pairs):,} |"))
                if name.startswith("GSM8K") and cold:
                    gsm8k_medians.append(sorted(times)[len(times) // 2] / 1e3)
    slowest = max(gsm8k_medians)
    print(f"\nGSM8K gold solutions, cold: the slowest median is {slowest:.1f} µs per check, "
          f"{1e6 / slowest:,.0f} checks/s at the median (target: at least 100,000).")

    print("\nAdversarial inputs (cold, strict and lenient together, "
          f"{args.adversarial_repeats} calls each per mode; every one scores 0.0):\n")
    print("| input | chars | calls | checks/s | median µs | p99 µs | max µs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst_name, worst = "", 0.0
    for name, text in ADVERSARIAL.items():
        times = []
        for strict in (True, False):
            times += measure([(text, "81")] * args.adversarial_repeats, strict, cold=True)
            assert grader.reward(text, "81", strict) == 0.0
        median = sorted(times)[len(times) // 2] / 1e3
        if median > worst:
            worst_name, worst = name, median
        print(row(name, times, chars=len(text)))
    print(f"\nSlowest adversarial input: {worst_name}, median {worst:,.0f} µs per call (target: under 5 ms on a 1 MB "
          f"input). Load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs.")


if __name__ == "__main__":
    main()
