"""Can the arms differ? The std, batch and none arms' LoRA updates after N steps, on the demo model.

For each update rule below, every arm trains N steps from the same seed (same initial adapter, same prompts,
same sampler uniforms); the update of an arm is theta_N - theta_0 over all LoRA weights. Printed per rule:

    |d_std - d_none| / |d_none|    relative difference of the two arms' updates (0: the switch changed nothing)
    cos(d_std, d_none)             1: same direction (one prompt per step: std = none times a scalar per step)
    clipped                        share of steps whose pre-clip gradient norm exceeded --grad-clip, per arm
    pre-clip |g|                   min / median / max of the pre-clip gradient norm over the steps, per arm

    python bench/arm_difference.py                       # 10 steps, seeds 0 1 2 (about 6 minutes on 2 cores)
    python bench/arm_difference.py --steps 10 --seeds 0
"""

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import grpo as G  # noqa: E402
import lora as L  # noqa: E402

DEMO = ["--preset", "demo"]
RULES = {
    "paper's update rule (1 prompt x 8, token-mean, clip 0.1, KL 0.02, AdamW lr 2e-3)":
        DEMO + ["--prompts-per-step", "1", "--loss-agg", "token-mean", "--grad-clip", "0.1", "--kl-coef", "0.02"],
    "the same, clipping off":
        DEMO + ["--prompts-per-step", "1", "--loss-agg", "token-mean", "--grad-clip", "0", "--kl-coef", "0.02"],
    "the same, SGD lr 0.125, clipping off":
        DEMO + ["--prompts-per-step", "1", "--loss-agg", "token-mean", "--grad-clip", "0", "--kl-coef", "0.02",
                "--optimizer", "sgd", "--lr", "0.125"],
    "demo preset (16 prompts x 8, seq-sum, clip 1.0, AdamW lr 2e-3)": DEMO,
    "demo preset, SGD lr 0.125, clipping off": DEMO + ["--optimizer", "sgd", "--lr", "0.125", "--grad-clip", "0"],
}
ARMS = ("std", "batch", "none")


def flat_lora(cfg: G.Config, checkpoint: Path | None = None) -> torch.Tensor:
    """All LoRA weights as one vector: the seeded initial adapter, or the one saved in a checkpoint."""
    model = G.setup(cfg)[0]
    if checkpoint is not None:
        L.load_adapter(model, checkpoint)
    return torch.cat([p.detach().flatten() for p in L.lora_parameters(model)])


def run_arms(flags: list[str], steps: int, seed: int, folder: Path):
    """Train every arm; return (update vector, metrics rows) per arm."""
    out = {}
    for arm in ARMS:
        run = folder / f"{arm}-s{seed}"
        argv = flags + ["--normalize", arm, "--steps", str(steps), "--seed", str(seed), "--out", str(run),
                        "--save-every", str(steps), "--log-samples-every", str(10 * steps)]
        with contextlib.redirect_stdout(io.StringIO()):
            G.main(argv)
        cfg = G.Config(**json.loads((run / "config.json").read_text()))
        delta = flat_lora(cfg, G.latest_checkpoint(run)) - flat_lora(cfg)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        out[arm] = (delta, [r for r in rows if not r["skipped"]])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"demo model, {args.steps} steps, seeds {seeds}; ranges are over seeds\n")
    print(r"| update rule | \|d_std - d_none\| / \|d_none\| | cos(d_std, d_none) | \|d_std - d_batch\| / \|d_batch\| "
          "| clipped: std / batch / none | pre-clip grad norm, min-max (median): std | none |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in RULES.items():
            rel, cos, rel_batch, clipped, norms = [], [], [], {a: [] for a in ARMS}, {a: [] for a in ARMS}
            for seed in seeds:
                arms = run_arms(flags, args.steps, seed, Path(tmp) / name[:20].replace(" ", "_") / str(seed))
                d = {a: arms[a][0] for a in ARMS}
                rel.append(float((d["std"] - d["none"]).norm() / d["none"].norm()))
                cos.append(float(torch.nn.functional.cosine_similarity(d["std"], d["none"], dim=0)))
                rel_batch.append(float((d["std"] - d["batch"]).norm() / d["batch"].norm()))
                for a in ARMS:
                    rows = arms[a][1]
                    clipped[a] += [r["grad_clipped"] for r in rows]
                    norms[a] += [r["grad_norm_preclip"] for r in rows]
            span = lambda xs, f: f"{f(min(xs))}-{f(max(xs))}" if f(min(xs)) != f(max(xs)) else f(xs[0])  # noqa: E731
            e = lambda x: f"{x:.2g}"  # noqa: E731
            share = " / ".join(f"{sum(clipped[a]) / len(clipped[a]):.0%}" for a in ARMS)
            norm = lambda a: f"{e(min(norms[a]))}-{e(max(norms[a]))} ({e(statistics.median(norms[a]))})"  # noqa: E731
            print(f"| {name} | {span(rel, e)} | {span(cos, lambda x: f'{x:.4f}')} | {span(rel_batch, e)} "
                  f"| {share} | {norm('std')} | {norm('none')} |", flush=True)


if __name__ == "__main__":
    main()
