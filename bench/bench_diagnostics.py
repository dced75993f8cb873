"""What the diagnostics' estimators cost per diagnostic step, beside the step's backward passes.

A diagnostic step (grpo.py --diag-every) draws 2K samples for each diagnostic prompt and runs one
backward pass per sample (diagnostics.measure); from the two gradient estimates per prompt only the
Gram matrix is kept. This script times the part issue 27 added on top, from a Gram matrix of the
shape a demo step logs (16 prompts x 2 estimates): the pair terms and the rms cosine with its
jackknife interval, the naive cosines, and the three curvature statistics; and the bytes the Gram
matrix adds to diagnostics.jsonl. The backward passes are timed from run logs (time/diagnostics):

    python bench/bench_diagnostics.py [--runs docs/results/paired] [--prompts 16] [--repeats 200]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diagnostics as diag  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="docs/results/paired",
                    help="run folders whose metrics.jsonl log time/diagnostics")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n = args.prompts
    S = rng.normal(size=(2 * n, 2000)) @ rng.normal(size=(2000, 64)) / 50  # any Gram matrix
    gram = S @ S.T
    rows = [{"id": str(i), "step": 1, "right_a": int(rng.integers(0, 9)), "curvature_a": float(c),
             "pass_rate_a": 0.5, "reward_std_b": float(s)}
            for i, (c, s) in enumerate(zip(rng.random(n), rng.random(n)))]
    est = timed(lambda: diag.cosine_rms([diag.pair_terms(gram)]), args.repeats)
    naive = timed(lambda: diag.naive_cosines(gram), args.repeats)
    curv = timed(lambda: diag.curvature_relations(rows, rows), args.repeats)
    logged = len(json.dumps([[float(f"{x:.9g}") for x in line] for line in gram]))
    steps = [m["time/diagnostics"] for p in Path(args.runs).glob("**/metrics.jsonl")
             for m in map(json.loads, p.read_text().splitlines()) if "time/diagnostics" in m]
    print(f"| per diagnostic step ({n} prompts, 2 x {n} estimates) | median |")
    print("|---|---:|")
    print(f"| rms cosine: pair terms + jackknife interval | {est * 1e3:.2f} ms |")
    print(f"| naive cross-prompt and same-prompt cosines | {naive * 1e3:.2f} ms |")
    print(f"| curvature: raw, stand-in, conditional on pass rate | {curv * 1e3:.2f} ms |")
    print(f"| Gram matrix logged in diagnostics.jsonl | {logged / 1e3:.1f} kB |")
    if steps:
        print(f"| the whole diagnostic step in the runs ({len(steps)} steps; 2K samples per "
              f"prompt, one backward each) | {statistics.median(steps):.1f} s |")


if __name__ == "__main__":
    main()
