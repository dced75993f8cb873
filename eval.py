"""
Evaluation and the paper's comparison: held-out accuracy, run comparison with phases, learning-rate sweeps, theory.

    python eval.py --model demo/model --data demo                          # greedy + 8 samples, strict and lenient
    python eval.py --model Qwen/Qwen2.5-Math-1.5B --adapter runs/x/checkpoints/step_000350 --data gsm8k \
                   --data-path ../shared/data/gsm8k --split test
    python eval.py compare runs/demo-std-adamw-s0 runs/demo-none-adamw-s0 ... --out reports/demo
    python eval.py sweep --preset demo --optimizer sgd --lrs 0.002,0.004,0.008 --seeds 0,1,2 --out runs/sweep-sgd
    python eval.py theory                                                  # the paper's bandit (theory.py)

Accuracy is reported two ways side by side: strict (only an explicit final answer counts, \\boxed{}, "####", "the
answer is", <answer> tags: what the training reward sees) and lenient (the last whole number or expression in the
text also counts; data.py's docstring has the rules). A completion with no extractable
answer is a parse failure, counted apart from a wrong answer. With K samples per problem we report the mean
sampled accuracy and the unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import data as D

# -----------------------------------------------------------------------------
# Held-out accuracy


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: the chance that k of them drawn without replacement
    include a correct one."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def grade(text: str, gold: str) -> dict:
    """Strict and lenient verdicts for one completion; None answer = parse failure."""
    out = {}
    for mode, strict in (("strict", True), ("lenient", False)):
        answer = D.extract_answer(text, strict=strict)
        out[mode] = {"answer": answer, "correct": answer is not None and D.math_equal(answer, gold)}
    return out


def load_eval_problems(args) -> list[D.Problem]:
    if args.data == "demo":
        problems = D.synthetic_problems(D.SYNTHETIC_TEST_SIZE, seed=D.SYNTHETIC_TEST_SEED)
    else:
        levels = [int(x) for x in args.level.split(",")] if args.level else None
        problems = D.load_problems(args.data, split=args.split, path=args.data_path, levels=levels)
    return problems[:args.limit] if args.limit else problems


def evaluate(args) -> dict:
    import torch

    import lora as L
    import model as M
    from grpo import completion_text, stop_ids
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = M.load_model(args.model, device=device)
    tok = M.load_tokenizer(args.tokenizer or args.model)
    if args.adapter:
        L.load_adapter(model, args.adapter)
        L.merge_lora(model)  # same function, no per-token adapter cost while sampling
    problems = load_eval_problems(args)
    template = args.template or ("plain" if args.data == "demo" else "qwen-chat")
    prompts = [tok.encode(D.format_prompt(p, template)) for p in problems]
    stops = stop_ids(tok)

    def run(temperature, num_samples, seed):
        outs = []
        per_call = max(1, args.batch_size // num_samples)
        for start in range(0, len(prompts), per_call):
            outs += M.generate(model, prompts[start:start + per_call], args.max_new_tokens, temperature=temperature,
                               eos_token_id=stops, seed=seed + start, num_samples=num_samples, vocab_size=tok.vocab_size)
            print(f"\r  {'greedy' if temperature == 0 else f'{num_samples} samples'}: "
                  f"{min(start + per_call, len(prompts))}/{len(prompts)} problems", end="", flush=True)
        print()
        return [completion_text(tok, c) for c in outs], outs

    t0 = time.time()
    greedy_texts, greedy_ids = run(0.0, 1, args.seed)
    sample_texts, sample_ids = run(args.temperature, args.samples, args.seed) if args.samples else ([], [])
    K = args.samples
    rows, totals = [], {}
    for i, p in enumerate(problems):
        g = grade(greedy_texts[i], p.answer)
        samples = [grade(t, p.answer) for t in sample_texts[i * K:(i + 1) * K]]
        row = {"id": p.id, "tier": p.tier, "question": p.question, "gold": p.answer,
               "greedy": greedy_texts[i], "greedy_answer": g["strict"]["answer"], "greedy_correct": g["strict"]["correct"],
               "greedy_answer_lenient": g["lenient"]["answer"], "greedy_correct_lenient": g["lenient"]["correct"]}
        if K:
            row |= {"sample_rewards": [int(s["strict"]["correct"]) for s in samples],
                    "samples_correct": sum(s["strict"]["correct"] for s in samples),
                    "samples_correct_lenient": sum(s["lenient"]["correct"] for s in samples),
                    "sample_example": sample_texts[i * K]}
        rows.append(row)
        for group in ("all", p.tier) if p.tier else ("all",):
            t = totals.setdefault(group, {"n": 0, "greedy": {"strict": [0, 0], "lenient": [0, 0]},
                                          "samples": {"strict": [0, 0], "lenient": [0, 0]}, "pass": {}})
            t["n"] += 1
            for mode in ("strict", "lenient"):
                t["greedy"][mode][0] += g[mode]["correct"]
                t["greedy"][mode][1] += g[mode]["answer"] is None
                for s in samples:
                    t["samples"][mode][0] += s[mode]["correct"]
                    t["samples"][mode][1] += s[mode]["answer"] is None
                c = sum(s[mode]["correct"] for s in samples)
                for k in [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= K]:
                    t["pass"].setdefault(f"{mode}/pass@{k}", []).append(pass_at_k(K, c, k))
    results = {"model": args.model, "adapter": args.adapter, "data": args.data, "split": args.split,
               "template": template, "samples": K, "temperature": args.temperature,
               "max_new_tokens": args.max_new_tokens, "seconds": round(time.time() - t0, 1), "groups": {}}
    for group, t in totals.items():
        n = t["n"]
        res = {"problems": n}
        for mode in ("strict", "lenient"):
            res[f"greedy/{mode}/accuracy"] = t["greedy"][mode][0] / n
            res[f"greedy/{mode}/parse_failures"] = t["greedy"][mode][1] / n
            if K:
                res[f"samples/{mode}/accuracy"] = t["samples"][mode][0] / (n * K)
                res[f"samples/{mode}/parse_failures"] = t["samples"][mode][1] / (n * K)
        res |= {k: float(np.mean(v)) for k, v in t["pass"].items()}
        results["groups"][group] = res
    out = Path(args.out or f"eval-{Path(str(args.adapter or args.model)).name}-{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    with (out / "problems.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    if K:  # measured difficulty, the input of data.assign_tiers (grpo.py --difficulty-file)
        with (out / "pass_rates.jsonl").open("w") as f:
            f.writelines(json.dumps({"id": r["id"], "rewards": r["sample_rewards"]}) + "\n" for r in rows)
    print_results(results)
    print(f"wrote {out}/results.json, problems.jsonl" + (", pass_rates.jsonl" if K else ""))
    return results


def print_results(results: dict):
    K = results["samples"]
    print(f"\n| group | problems | greedy strict | greedy lenient | parse fail (strict) |"
          + (f" mean of {K} strict | mean of {K} lenient | pass@{K} strict |" if K else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if K else ""))
    for group, r in results["groups"].items():
        line = (f"| {group} | {r['problems']} | {r['greedy/strict/accuracy']:.3f} | {r['greedy/lenient/accuracy']:.3f} | "
                f"{r['greedy/strict/parse_failures']:.3f} |")
        if K:
            line += (f" {r['samples/strict/accuracy']:.3f} | {r['samples/lenient/accuracy']:.3f} | "
                     f"{r[f'strict/pass@{K}']:.3f} |")
        print(line)


# -----------------------------------------------------------------------------
# Comparing runs: curves, diagnostics, phases, best-vs-best

def read_run(run_dir: Path) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    diag_path = run_dir / "diagnostics.jsonl"
    diagnostics = [json.loads(line) for line in diag_path.read_text().splitlines()] if diag_path.is_file() else []
    return {"dir": run_dir, "config": config, "metrics": metrics, "diagnostics": diagnostics}


def arm_of(config: dict) -> str:
    """Runs that differ only in seed belong to one arm."""
    return f"{config['normalize']} / {config['optimizer']} / lr {config['lr']:g}"


def series(run: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(m["step"], m[key]) for m in run["metrics"] if m.get(key) is not None]
    if not pts:
        return np.array([]), np.array([])
    steps, values = zip(*pts)
    return np.array(steps), np.array(values, dtype=float)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` steps (fewer at the start)."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def arm_curve(runs: list[dict], key: str, window: int):
    """Mean over seeds of the smoothed curve, and the seeds' lowest and highest values (the band), on the
    steps all seeds reached."""
    curves = [series(r, key) for r in runs]
    curves = [(s, v) for s, v in curves if len(s)]
    if not curves:
        return None
    n = min(len(s) for s, _ in curves)
    stacked = np.stack([smooth(v[:n], window) for _, v in curves])
    return curves[0][0][:n], stacked.mean(0), stacked.min(0), stacked.max(0), len(curves)


def final_value(runs, key, frac=0.1):
    """Mean over seeds of the metric averaged over the last `frac` of steps; and its per-seed values."""
    vals = []
    for r in runs:
        _, v = series(r, key)
        if len(v):
            vals.append(float(v[-max(1, int(len(v) * frac)):].mean()))
    return (float(np.mean(vals)) if vals else float("nan")), vals


def gain(runs, key, frac=0.1):
    """Per seed: mean over the last frac of steps minus mean over the first frac."""
    out = []
    for r in runs:
        _, v = series(r, key)
        if len(v):
            w = max(1, int(len(v) * frac))
            out.append(float(v[-w:].mean() - v[:w].mean()))
    return out


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95% confidence interval of mean(a) - mean(b) over seeds: the two-sample t-interval with pooled variance
    (df = n_a + n_b - 2). None with fewer than two seeds in either arm."""
    if len(a) < 2 or len(b) < 2:
        return None
    na, nb = len(a), len(b)
    pooled = ((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2)
    df = na + nb - 2
    half = (T975[df - 1] if df <= len(T975) else 1.96) * math.sqrt(pooled * (1 / na + 1 / nb))
    d = float(np.mean(a) - np.mean(b))
    return d - half, d + half


def interval_text(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(one seed)"


def phases(steps, gap, threshold):
    """The documented rule: the gap (std minus none, smoothed, mean over seeds) *opens* at the first step where it
    reaches `threshold`, *holds* while it stays at or above threshold / 2, and *closes* at the first later step
    where it falls below threshold / 2 (None if it never opens or never closes)."""
    opened = next((i for i, g in enumerate(gap) if g >= threshold), None)
    if opened is None:
        return {"opens": None, "closes": None, "max_gap": float(np.max(gap)) if len(gap) else None,
                "max_gap_step": int(steps[int(np.argmax(gap))]) if len(gap) else None}
    closed = next((i for i in range(opened, len(gap)) if gap[i] < threshold / 2), None)
    return {"opens": int(steps[opened]), "closes": int(steps[closed]) if closed is not None else None,
            "max_gap": float(np.max(gap)), "max_gap_step": int(steps[int(np.argmax(gap))])}


def compare(argv=None):
    ap = argparse.ArgumentParser(prog="eval.py compare", description="Compare GRPO runs (std vs none, seeds as bands).")
    ap.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    ap.add_argument("--out", default="reports/compare")
    ap.add_argument("--window", type=int, default=10, help="trailing moving-average window, in steps")
    ap.add_argument("--metric", default=None, help="headline metric (default accuracy/hard when present)")
    ap.add_argument("--gap-threshold", type=float, default=0.03, help="phase rule threshold (accuracy points / 100)")
    args = ap.parse_args(argv)
    dirs = []
    for d in map(Path, args.runs):
        dirs += [d] if (d / "metrics.jsonl").is_file() else sorted(p.parent for p in d.glob("*/metrics.jsonl"))
    if not dirs:
        sys.exit(f"error: no run folders (with metrics.jsonl) in {args.runs}")
    runs = [read_run(d) for d in dirs]
    arms: dict[str, list] = {}
    for r in runs:
        arms.setdefault(arm_of(r["config"]), []).append(r)
    keys = sorted({k for r in runs for m in r["metrics"] for k in m if k.startswith("accuracy")})
    metric = args.metric or ("accuracy/hard" if "accuracy/hard" in keys else "accuracy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = [f"# Run comparison\n", f"{len(runs)} runs in {len(arms)} arms (an arm = normalize / optimizer / lr; "
              f"figures show the mean over its seeds and a band from the lowest to the highest seed). Curves are "
              f"trailing {args.window}-step moving averages of the training-rollout accuracy. Final = mean over the "
              f"last 10% of steps; gain = final minus the mean over the first 10%. Headline metric: `{metric}`.\n"]

    # Each arm: final value (last 10% of steps) and gain (last 10% minus first 10%), per seed.
    report.append("| arm | seeds | " + " | ".join(f"final {k}" for k in keys) + f" | gain {metric} (per seed) |")
    report.append("|---|---:|" + "---:|" * len(keys) + "---|")
    summary = {}
    for arm, rs in sorted(arms.items()):
        finals = {k: final_value(rs, k) for k in keys}
        g = gain(rs, metric)
        summary[arm] = {"seeds": len(rs), "final": {k: v[0] for k, v in finals.items()}, "gain": g,
                        "final_per_seed": {k: v[1] for k, v in finals.items()},
                        "config": {k: rs[0]["config"][k] for k in ("normalize", "optimizer", "lr")}}
        report.append(f"| {arm} | {len(rs)} | " + " | ".join(f"{finals[k][0]:.3f}" for k in keys) +
                      f" | {', '.join(f'{x:+.3f}' for x in g)} |")

    # Best-vs-best: each (normalize, optimizer) at its own best learning rate, by the headline metric.
    best, rates = {}, {}
    for arm, s in summary.items():
        c = s["config"]
        key = (c["normalize"], c["optimizer"])
        rates.setdefault(key, set()).add(c["lr"])
        if key not in best or s["final"][metric] > summary[best[key]]["final"][metric]:
            best[key] = arm
    best = {key: arm for key, arm in best.items() if len(rates[key]) > 1}  # a best needs a sweep to be picked from
    report.append("\n## Best vs best (each estimator at its own best learning rate)\n")
    if not best:
        report.append("Needs runs at two or more learning rates per estimator (`python eval.py sweep`).\n")
    report.append("The interval is the 95% two-sample t-interval over seeds (pooled variance); it does not account "
                  "for picking the best rate on the same seeds.\n")
    report.append("| optimizer | std: best lr, final | none: best lr, final | difference (std - none) | 95% interval |")
    report.append("|---|---|---|---:|---|")
    for opt in sorted({o for _, o in best}):
        s, n = best.get(("std", opt)), best.get(("none", opt))
        if s and n:
            fs, fn = summary[s]["final"][metric], summary[n]["final"][metric]
            ci = difference_interval(summary[s]["final_per_seed"][metric], summary[n]["final_per_seed"][metric])
            report.append(f"| {opt} | {summary[s]['config']['lr']:g}: {fs:.3f} | {summary[n]['config']['lr']:g}: "
                          f"{fn:.3f} | {fs - fn:+.3f} | {interval_text(ci)} |")

    # Phases of the std-vs-none gap, for each optimizer and lr where both estimators ran.
    report.append(f"\n## Phases of the gap in `{metric}` (std minus none)\n")
    report.append(f"Rule: the smoothed, seed-averaged gap *opens* at the first step where it reaches "
                  f"{args.gap_threshold:.2f}, *holds* while it stays at or above {args.gap_threshold / 2:.3f}, and "
                  f"*closes* at the first later step below that.\n")
    report.append("| optimizer / lr | opens at step | closes at step | largest gap (step) | final gap (95% interval) |")
    report.append("|---|---:|---:|---:|---|")
    phase_table = {}
    for arm_s, rs_s in sorted(arms.items()):
        c = rs_s[0]["config"]
        if c["normalize"] != "std":
            continue
        arm_n = arm_of(c | {"normalize": "none"})
        if arm_n not in arms:
            continue
        cs, cn = arm_curve(rs_s, metric, args.window), arm_curve(arms[arm_n], metric, args.window)
        if cs is None or cn is None:
            continue
        n = min(len(cs[0]), len(cn[0]))
        ph = phases(cs[0][:n], cs[1][:n] - cn[1][:n], args.gap_threshold)
        fs, fn = summary[arm_s], summary[arm_n]
        ph["final_gap"] = fs["final"][metric] - fn["final"][metric]
        ph["final_gap_interval"] = difference_interval(fs["final_per_seed"][metric], fn["final_per_seed"][metric])
        phase_table[f"{c['optimizer']} / lr {c['lr']:g}"] = ph
        ci = ph["final_gap_interval"]
        report.append(f"| {c['optimizer']} / lr {c['lr']:g} | {ph['opens']} | {ph['closes']} | "
                      f"{ph['max_gap']:+.3f} ({ph['max_gap_step']}) | {ph['final_gap']:+.3f} {interval_text(ci)} |")

    # Diagnostics over training (when the runs logged them): the paper's orthogonality and curvature-variance numbers.
    diag_keys = [k for k in ("diag/cos_abs_mean", "diag/cos_abs_p90", "diag/curvature_std_corr") if k in
                 {k for r in runs for m in r["metrics"] for k in m}]
    diag = {arm: diagnostic_summary(rs) for arm, rs in sorted(arms.items()) if any(r["diagnostics"] for r in rs)}
    if diag:
        report.append("\n## Diagnostics (pooled over each arm's diagnostic steps)\n")
        report.append("The |cos| between per-prompt policy gradients (LoRA weights) of prompts with reward variance; "
                      "Pearson r between each prompt's curvature proxy (mean squared gradient norm per token) and "
                      "its reward std, within a diagnostic step, and for a control that pairs curvatures with the "
                      "reward stds of another step's prompts; r is also given over the prompts with reward variance only "
                      "(std > 0). The paper: mean |cos| 0.088 (std 0.064), 90% of pairs "
                      "under 0.15; r = 0.342 within an iteration, -0.028 across iterations.\n")
        report.append("| arm | pairs | mean \\|cos\\| (std) | 90th pct | prompts | r within step | r within, std > 0 | r across steps (control) |")
        report.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for arm, d in diag.items():
            report.append(f"| {arm} | {d['pairs']} | {d['cos_mean']:.3f} ({d['cos_std']:.3f}) | {d['cos_p90']:.3f} | "
                          f"{d['prompts']} | {d['r_within']:.3f} | {d['r_within_signal']:.3f} | {d['r_across']:.3f} |")

    plt = pyplot()
    colors = {arm: f"C{i}" for i, arm in enumerate(sorted(arms))}  # one color per arm in every figure
    figures = [plot_compare(plt, arms, colors, keys, diag_keys, args.window, out)] if plt else []
    if plt and diag:
        figures.append(plot_diagnostics(plt, arms, colors, diag, out))
    report.append("\n" + ("\n".join(f"![{f.stem}]({f.name})" for f in figures) if figures else
                          "(no figures: matplotlib is not installed; `pip install matplotlib`)"))
    (out / "report.md").write_text("\n".join(report) + "\n")
    (out / "summary.json").write_text(json.dumps({"metric": metric, "arms": summary, "phases": phase_table,
                                                  "diagnostics": diag, "window": args.window}, indent=2) + "\n")
    print("\n".join(report))
    print(f"\nwrote {out}/report.md, {out}/summary.json" + (f" and {len(figures)} figures" if figures else ""))
    return summary


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and x.std() > 0 and y.std() > 0 else float("nan")


def diagnostic_summary(runs) -> dict:
    """Pool diagnostics.jsonl rows of an arm's runs: |cos| statistics, within-step r(curvature, reward std) (mean
    over steps; also over the prompts with reward variance only, since all-right or all-wrong groups sit at std 0 with
    small gradients and can carry the correlation alone), and the across-step control: curvatures of step t against
    reward stds of step t+1 (other prompts)."""
    cosines, within, within_signal, across, prompts = [], [], [], [], 0
    for r in runs:
        by_step = {}
        for row in r["diagnostics"]:
            by_step.setdefault(row["step"], []).append(row)
            cosines += row.get("abs_cosines", [])
        steps = sorted(by_step)
        prompts += sum(len(v) for v in by_step.values())
        for s in steps:
            within.append(pearson([x["curvature"] for x in by_step[s]], [x["reward_std"] for x in by_step[s]]))
            signal = [x for x in by_step[s] if x["reward_std"] > 0]
            within_signal.append(pearson([x["curvature"] for x in signal], [x["reward_std"] for x in signal]))
        for a, b in zip(steps, steps[1:]):
            n = min(len(by_step[a]), len(by_step[b]))
            across.append(pearson([x["curvature"] for x in by_step[a][:n]], [x["reward_std"] for x in by_step[b][:n]]))
    cos = np.array(cosines) if cosines else np.array([np.nan])
    return {"pairs": len(cosines), "cos_mean": float(cos.mean()), "cos_std": float(cos.std()),
            "cos_p90": float(np.quantile(cos, 0.9)), "prompts": prompts, "cosines": [float(c) for c in cosines],
            "r_within": float(np.nanmean(within)) if within else float("nan"),
            "r_within_signal": float(np.nanmean(within_signal)) if within_signal else float("nan"),
            "r_across": float(np.nanmean(across)) if across else float("nan")}


def pyplot():
    """matplotlib.pyplot (headless), or None when matplotlib is not installed: the numbers are written anyway."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: writing numbers only (pip install matplotlib for the figures)")
        return None
    return plt


def plot_diagnostics(plt, arms, colors, diag: dict, out: Path) -> Path:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for arm, d in diag.items():
        if d["cosines"]:
            ax1.hist(d["cosines"], bins=40, range=(0, 0.5), alpha=0.5, color=colors[arm],
                     label=f"{arm} (mean {d['cos_mean']:.3f})")
        rows = [row for r in arms[arm] for row in r["diagnostics"]]
        ax2.scatter([x["reward_std"] for x in rows], [x["curvature"] for x in rows], s=8, alpha=0.5,
                    color=colors[arm], label=f"{arm} (r within step {d['r_within']:.2f})")
    ax1.set_xlabel("|cos| of per-prompt policy gradients")
    ax1.set_ylabel("prompt pairs")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("reward std of the prompt (K samples)")
    ax2.set_ylabel("curvature proxy (mean |grad|^2 per token)")
    ax2.set_yscale("log")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = out / "diagnostics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(plt, arms, colors, keys, diag_keys, window, out: Path) -> Path:
    panels = [k for k in keys] + ["reward_std"] + diag_keys
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        for arm, rs in sorted(arms.items()):
            curve = arm_curve(rs, key, 1 if key.startswith("diag/") else window)
            if curve is None:
                continue
            steps, mean, low, high, n = curve
            style = "-" if arm.startswith("std") else "--"
            ax.plot(steps, mean, style, color=colors[arm], label=f"{arm} (n={n})")
            ax.fill_between(steps, low, high, color=colors[arm], alpha=0.15)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"training-rollout metrics, {window}-step moving average: mean over seeds, band from lowest to highest")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -----------------------------------------------------------------------------
# Learning-rate sweep: each estimator at its own best rate


def sweep(argv=None):
    ap = argparse.ArgumentParser(prog="eval.py sweep",
                                 description="Run grpo.py for every (normalize, lr, seed); then compare best vs best.")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--lrs", required=True, help="comma-separated learning rates")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--normalize", default="std,none")
    ap.add_argument("--out", required=True)
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more grpo.py flags for every run")
    args = ap.parse_args(argv)
    import grpo
    extra = [a for a in args.extra if a != "--"]
    out = Path(args.out)
    for lr in args.lrs.split(","):
        for normalize in args.normalize.split(","):
            for seed in args.seeds.split(","):
                run_dir = out / f"{normalize}-{args.optimizer}-lr{lr}-s{seed}"
                if (run_dir / "metrics.jsonl").is_file() and latest_complete(run_dir):
                    print(f"skip {run_dir} (complete)")
                    continue
                if run_dir.exists() and grpo.latest_checkpoint(run_dir) is None:
                    # Stopped before its first checkpoint: nothing to resume. Keep it aside, start over.
                    aside = out / "interrupted" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
                    aside.parent.mkdir(parents=True, exist_ok=True)
                    run_dir.rename(aside)
                    print(f"{run_dir} stopped before its first checkpoint; moved to {aside}, starting over")
                flags = ["--resume", str(run_dir)] if run_dir.exists() else \
                    ["--preset", args.preset, "--optimizer", args.optimizer, "--lr", lr, "--normalize", normalize,
                     "--seed", seed, "--out", str(run_dir), *extra]
                print(f"=== python grpo.py {' '.join(flags)}", flush=True)
                grpo.main(flags)
    compare([str(out), "--out", str(out / "report")])


def latest_complete(run_dir: Path) -> bool:
    config = json.loads((run_dir / "config.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return bool(lines) and json.loads(lines[-1])["step"] >= config["steps"]


# -----------------------------------------------------------------------------
# CLI


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return compare(argv[1:])
    if argv and argv[0] == "sweep":
        return sweep(argv[1:])
    if argv and argv[0] == "theory":
        import theory
        return theory.main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Subcommands: compare RUN_DIR ... | sweep ... | theory (see the module docstring)")
    ap.add_argument("--model", required=True, help="HF hub id or local folder")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--adapter", default=None, help="a peft LoRA folder, e.g. a run's checkpoints/step_N")
    ap.add_argument("--data", required=True, help="gsm8k | math | demo | a .jsonl file")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--level", default=None, help="MATH levels, e.g. 2 or 1,2")
    ap.add_argument("--template", default=None, choices=list(D.PROMPT_TEMPLATES),
                    help="default: plain for demo, qwen-chat otherwise")
    ap.add_argument("--samples", type=int, default=8, help="K samples per problem (0: greedy only)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per generate call")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.samples < 0 or args.temperature <= 0 and args.samples:
        ap.error("--samples must be >= 0 and --temperature > 0")
    try:
        return evaluate(args)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
