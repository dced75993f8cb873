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
text also counts; grader.py's docstring has the rules). A completion with no extractable
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
import grader

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
        answer = grader.extract_answer(text, strict=strict)
        out[mode] = {"answer": answer,
                     "correct": answer is not None and grader.math_equal(answer, gold)}
    return out


def load_eval_problems(args) -> list[D.Problem]:
    if args.data == "demo":
        problems = D.synthetic_problems(D.SYNTHETIC_TEST_SIZE, seed=D.SYNTHETIC_TEST_SEED)
    else:
        levels = [int(x) for x in args.level.split(",")] if args.level else None
        problems = D.load_problems(args.data, split=args.split, path=args.data_path, levels=levels)
    return problems[:args.limit] if args.limit else problems


def heldout_accuracy(model, tok, problems, template: str, max_new_tokens: int, samples: int, temperature: float,
                     seed: int, batch_size: int = 64, progress: bool = False) -> tuple[dict, list[dict]]:
    """Greedy and sampled accuracy, strict and lenient, and pass@k of the model as it is (adapter on, unmerged).

    Returns ({group: metrics} for "all" and each tier, one row per problem). The sampler is seeded per call, so the
    same weights give the same numbers, and no global random state is touched (training is not perturbed).
    """
    import model as M
    from grpo import completion_text, stop_ids
    prompts = [tok.encode(D.format_prompt(p, template)) for p in problems]
    stops = stop_ids(tok)
    was_training = model.training
    model.eval()

    def run(temperature, num_samples):
        outs = []
        per_call = max(1, batch_size // num_samples)
        for start in range(0, len(prompts), per_call):
            outs += M.generate(model, prompts[start:start + per_call], max_new_tokens, temperature=temperature,
                               eos_token_id=stops, seed=seed + start, num_samples=num_samples,
                               vocab_size=tok.vocab_size)
            if progress:
                print(f"\r  {'greedy' if temperature == 0 else f'{num_samples} samples'}: "
                      f"{min(start + per_call, len(prompts))}/{len(prompts)} problems", end="", flush=True)
        if progress:
            print()
        return [completion_text(tok, c) for c in outs]

    greedy_texts = run(0.0, 1)
    sample_texts = run(temperature, samples) if samples else []
    model.train(was_training)
    K = samples
    rows, totals = [], {}
    for i, p in enumerate(problems):
        g = grade(greedy_texts[i], p.answer)
        graded = [grade(t, p.answer) for t in sample_texts[i * K:(i + 1) * K]]
        row = {"id": p.id, "tier": p.tier, "question": p.question, "gold": p.answer, "greedy": greedy_texts[i],
               "greedy_answer": g["strict"]["answer"], "greedy_correct": g["strict"]["correct"],
               "greedy_answer_lenient": g["lenient"]["answer"], "greedy_correct_lenient": g["lenient"]["correct"]}
        if K:
            row |= {"sample_rewards": [int(s["strict"]["correct"]) for s in graded],
                    "samples_correct": sum(s["strict"]["correct"] for s in graded),
                    "samples_correct_lenient": sum(s["lenient"]["correct"] for s in graded),
                    "sample_example": sample_texts[i * K]}
        rows.append(row)
        for group in ("all", p.tier) if p.tier else ("all",):
            t = totals.setdefault(group, Tally())
            t.add(g, graded, K)
    return {group: t.metrics(K) for group, t in totals.items()}, rows


class Tally:
    """Counts for one group of problems: correct answers and parse failures (no extractable answer) per decoding
    and mode, and pass@k per problem."""

    def __init__(self):
        self.problems, self.counts, self.pass_at = 0, {}, {}

    def add(self, greedy: dict, samples: list[dict], K: int):
        self.problems += 1
        for mode in ("strict", "lenient"):
            for decoding, graded in (("greedy", [greedy]), ("samples", samples)):
                c = self.counts.setdefault((decoding, mode), {"correct": 0, "parse_failures": 0, "n": 0})
                c["correct"] += sum(x[mode]["correct"] for x in graded)
                c["parse_failures"] += sum(x[mode]["answer"] is None for x in graded)
                c["n"] += len(graded)
            correct = sum(s[mode]["correct"] for s in samples)
            for k in (k for k in (1, 2, 4, 8, 16, 32, 64) if k <= K):
                self.pass_at.setdefault(f"{mode}/pass@{k}", []).append(pass_at_k(K, correct, k))

    def metrics(self, K: int) -> dict:
        out = {"problems": self.problems}
        for (decoding, mode), c in self.counts.items():
            if c["n"]:
                out[f"{decoding}/{mode}/accuracy"] = c["correct"] / c["n"]
                out[f"{decoding}/{mode}/parse_failures"] = c["parse_failures"] / c["n"]
        return out | {k: float(np.mean(v)) for k, v in self.pass_at.items()}


def evaluate(args) -> dict:
    import torch

    import lora as L
    import model as M
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = M.load_model(args.model, device=device)
    tok = M.load_tokenizer(args.tokenizer or args.model)
    if args.adapter:
        L.load_adapter(model, args.adapter)
        L.merge_lora(model)  # same function, no per-token adapter cost while sampling
    problems = load_eval_problems(args)
    t0 = time.time()
    groups, rows = heldout_accuracy(model, tok, problems, args.template, args.max_new_tokens, args.samples,
                                    args.temperature, args.seed, args.batch_size, progress=True)
    K = args.samples
    results = {"model": args.model, "adapter": args.adapter, "data": args.data, "split": args.split,
               "template": args.template, "samples": K, "temperature": args.temperature,
               "max_new_tokens": args.max_new_tokens, "seconds": round(time.time() - t0, 1), "groups": groups}
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


# The three-arm decomposition: with the same optimizer and rate, std - batch isolates the per-prompt reweighting and
# batch - none the global step size (README "The algorithm").
EFFECTS = (("per-prompt effect", "std", "batch"), ("step-size effect", "batch", "none"), ("total", "std", "none"))


def find_runs(paths: list[str]) -> list[Path]:
    dirs = []
    for d in map(Path, paths):
        dirs += [d] if (d / "metrics.jsonl").is_file() else sorted(p.parent for p in d.glob("*/metrics.jsonl"))
    return dirs


def final_heldout(runs, key):
    """Mean over seeds of the metric at each run's last held-out evaluation; and its per-seed values."""
    vals = [float(v[-1]) for _, v in (series(r, key) for r in runs) if len(v)]
    return (float(np.mean(vals)) if vals else float("nan")), vals


def summarize_arms(arms: dict, keys: list[str], heldout_keys: list[str], metric: str) -> dict:
    summary = {}
    for arm, rs in sorted(arms.items()):
        finals = {k: final_value(rs, k) for k in keys} | {k: final_heldout(rs, k) for k in heldout_keys}
        summary[arm] = {"seeds": len(rs), "final": {k: v[0] for k, v in finals.items()}, "gain": gain(rs, metric),
                        "final_per_seed": {k: v[1] for k, v in finals.items()},
                        "config": {k: rs[0]["config"][k] for k in ("normalize", "optimizer", "lr")}}
    return summary


def best_rates(summary: dict, metric: str) -> dict:
    """(normalize, optimizer) -> its arm at the best learning rate by `metric`, for estimators run at 2+ rates."""
    best, rates = {}, {}
    for arm, s in summary.items():
        key = (s["config"]["normalize"], s["config"]["optimizer"])
        rates.setdefault(key, set()).add(s["config"]["lr"])
        if key not in best or s["final"][metric] > summary[best[key]]["final"][metric]:
            best[key] = arm
    return {key: arm for key, arm in best.items() if len(rates[key]) > 1}


def effect(summary: dict, arm_a: str, arm_b: str, key: str) -> dict | None:
    a, b = summary[arm_a], summary[arm_b]
    if key not in a["final"] or key not in b["final"]:
        return None
    return {"difference": a["final"][key] - b["final"][key],
            "interval": difference_interval(a["final_per_seed"][key], b["final_per_seed"][key])}


def decomposition(summary: dict, metric: str, heldout: str | None) -> tuple[list[str], dict]:
    """Rows of the effects table, at equal rates and best vs best, for training and held-out accuracy."""
    lines, table = [], {}
    by_key = {(s["config"]["normalize"], s["config"]["optimizer"], s["config"]["lr"]): arm
              for arm, s in summary.items()}
    best = best_rates(summary, metric)
    settings = [(f"{opt} / lr {lr:g}", {n: by_key.get((n, opt, lr)) for n in ("std", "batch", "none")})
                for opt, lr in sorted({(o, lr) for _, o, lr in by_key})]
    settings += [(f"{opt} / each at its best lr", {n: best.get((n, opt)) for n in ("std", "batch", "none")})
                 for opt in sorted({o for _, o in best})]
    for setting, arms_of in settings:
        for name, a, b in EFFECTS:
            if not (arms_of[a] and arms_of[b]):
                continue
            row = {"train": effect(summary, arms_of[a], arms_of[b], metric),
                   "heldout": effect(summary, arms_of[a], arms_of[b], heldout) if heldout else None,
                   "rates": [summary[arms_of[a]]["config"]["lr"], summary[arms_of[b]]["config"]["lr"]]}
            table[f"{setting}: {name}"] = row
            cell = lambda e: f"{e['difference']:+.3f} {interval_text(e['interval'])}" if e else "-"  # noqa: E731
            lines.append(f"| {setting} | {name} ({a} - {b}) | {row['rates'][0]:g} vs {row['rates'][1]:g} | "
                         f"{cell(row['train'])} | {cell(row['heldout'])} |")
    return lines, table


def compare(argv=None):
    ap = argparse.ArgumentParser(prog="eval.py compare",
                                 description="Compare GRPO runs: the three arms, seeds as intervals and bands.")
    ap.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    ap.add_argument("--out", default="reports/compare")
    ap.add_argument("--window", type=int, default=10, help="trailing moving-average window, in steps")
    ap.add_argument("--metric", default=None, help="headline training metric (default accuracy/hard when present)")
    ap.add_argument("--heldout-metric", default=None,
                    help="headline held-out metric (default eval/hard/samples/strict/accuracy when present)")
    ap.add_argument("--gap-threshold", type=float, default=0.03, help="phase rule threshold (accuracy points / 100)")
    args = ap.parse_args(argv)
    dirs = find_runs(args.runs)
    if not dirs:
        sys.exit(f"error: no run folders (with metrics.jsonl) in {args.runs}")
    runs = [read_run(d) for d in dirs]
    arms: dict[str, list] = {}
    for r in runs:
        arms.setdefault(arm_of(r["config"]), []).append(r)
    logged = {k for r in runs for m in r["metrics"] for k in m}
    keys = sorted(k for k in logged if k.startswith("accuracy"))
    metric = args.metric or ("accuracy/hard" if "accuracy/hard" in keys else "accuracy")
    heldout_keys = sorted(k for k in logged if k.startswith("eval/")
                          and k.endswith(("samples/strict/accuracy", "greedy/strict/accuracy")))
    heldout = args.heldout_metric or next((k for k in ("eval/hard/samples/strict/accuracy",
                                                       "eval/samples/strict/accuracy") if k in logged), None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_arms(arms, keys, heldout_keys, metric)
    report = ["# Run comparison\n",
              f"{len(runs)} runs in {len(arms)} arms (an arm = normalize / optimizer / lr; figures show the mean over "
              f"its seeds and a band from the lowest to the highest seed). Training curves are trailing "
              f"{args.window}-step moving averages of the training-rollout accuracy; final = mean over the last 10% "
              f"of steps; gain = final minus the mean over the first 10%. Held-out: the accuracy on the fixed "
              f"held-out set at the last evaluation. Headline metrics: `{metric}` (training), "
              f"`{heldout}` (held-out). Intervals: 95% two-sample t-intervals over seeds.\n"]
    report.append("| arm | seeds | " + " | ".join(f"final {k}" for k in keys + heldout_keys) +
                  f" | gain {metric} (per seed) |")
    report.append("|---|---:|" + "---:|" * len(keys + heldout_keys) + "---|")
    for arm, s in summary.items():
        report.append(f"| {arm} | {s['seeds']} | " + " | ".join(f"{s['final'][k]:.3f}" for k in keys + heldout_keys)
                      + f" | {', '.join(f'{x:+.3f}' for x in s['gain'])} |")

    report.append("\n## The effects: per-prompt (std - batch), step size (batch - none), total (std - none)\n")
    report.append("At equal rates the arms share everything but the advantage rule. Each arm's best rate is picked "
                  f"by final `{metric}` on the same seeds (the interval does not account for that choice); "
                  "needs two or more rates per arm.\n")
    lines, effects = decomposition(summary, metric, heldout)
    report.append(f"| setting | effect | rates | training `{metric}` | held-out `{heldout}` |")
    report.append("|---|---|---|---|---|")
    report += lines or ["| (needs two arms at one rate) | | | | |"]

    report.append(f"\n## Phases of the gap in `{metric}` (std minus none)\n")
    report.append(f"Rule: the smoothed, seed-averaged gap *opens* at the first step where it reaches "
                  f"{args.gap_threshold:.2f}, *holds* while it stays at or above {args.gap_threshold / 2:.3f}, and "
                  f"*closes* at the first later step below that.\n")
    report.append("| optimizer / lr | opens at step | closes at step | largest gap (step) | final gap (95% interval) |")
    report.append("|---|---:|---:|---:|---|")
    phase_table = {}
    for arm_s, rs_s in sorted(arms.items()):
        c = rs_s[0]["config"]
        arm_n = arm_of(c | {"normalize": "none"})
        if c["normalize"] != "std" or arm_n not in arms:
            continue
        cs, cn = arm_curve(rs_s, metric, args.window), arm_curve(arms[arm_n], metric, args.window)
        if cs is None or cn is None:
            continue
        n = min(len(cs[0]), len(cn[0]))
        ph = phases(cs[0][:n], cs[1][:n] - cn[1][:n], args.gap_threshold)
        gap = effect(summary, arm_s, arm_n, metric)
        ph |= {"final_gap": gap["difference"], "final_gap_interval": gap["interval"]}
        phase_table[f"{c['optimizer']} / lr {c['lr']:g}"] = ph
        report.append(f"| {c['optimizer']} / lr {c['lr']:g} | {ph['opens']} | {ph['closes']} | "
                      f"{ph['max_gap']:+.3f} ({ph['max_gap_step']}) | {ph['final_gap']:+.3f} "
                      f"{interval_text(ph['final_gap_interval'])} |")

    diag = {arm: diagnostic_summary(rs) for arm, rs in sorted(arms.items()) if any(r["diagnostics"] for r in rs)}
    if diag:
        report += diagnostics_report(diag)
    diag_keys = [k for k in ("diag/cos_abs_mean", "diag/cos_same_prompt_abs_mean", "diag/cos_debiased_abs_mean",
                             "diag/curvature_std_corr", "diag/curvature_std_corr_across") if k in logged]
    plt = pyplot()
    colors = {arm: f"C{i}" for i, arm in enumerate(sorted(arms))}  # one color per arm in every figure
    figures = [plot_compare(plt, arms, colors, keys + [k for k in heldout_keys if "/samples/" in k], diag_keys,
                            args.window, out)] if plt else []
    if plt and diag:
        figures.append(plot_diagnostics(plt, arms, colors, diag, out))
    report.append("\n" + ("\n".join(f"![{f.stem}]({f.name})" for f in figures) if figures else
                          "(no figures: matplotlib is not installed; `pip install matplotlib`)"))
    (out / "report.md").write_text("\n".join(report) + "\n")
    (out / "summary.json").write_text(json.dumps({"metric": metric, "heldout_metric": heldout, "arms": summary,
                                                  "effects": effects, "phases": phase_table, "diagnostics": diag,
                                                  "window": args.window}, indent=2) + "\n")
    print("\n".join(report))
    print(f"\nwrote {out}/report.md, {out}/summary.json" + (f" and {len(figures)} figures" if figures else ""))
    return summary


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and x.std() > 0 and y.std() > 0 else float("nan")


def diagnostic_summary(runs) -> dict:
    """Pool an arm's diagnostics: the three |cos| families (cross-prompt, same-prompt noise floor, debiased), the
    within-step r(curvature, reward std) (mean over steps; also over prompts with reward variance only, since
    all-right or all-wrong groups sit at std 0 with small gradients and can carry the correlation alone), and the
    across-step control on the same fixed prompts (diag/curvature_std_corr_across, mean over steps)."""
    families = {"cross": "abs_cosines", "same_prompt": "abs_cosines_same_prompt", "debiased": "abs_cosines_debiased"}
    pooled = {name: [] for name in families}
    within, within_signal, across, prompts = [], [], [], 0
    for r in runs:
        by_step = {}
        for row in r["diagnostics"]:
            by_step.setdefault(row["step"], []).append(row)
            for name, field in families.items():
                pooled[name] += row.get(field, [])
        prompts += sum(len(v) for v in by_step.values())
        for rows in by_step.values():
            within.append(pearson([x["curvature"] for x in rows], [x["reward_std"] for x in rows]))
            signal = [x for x in rows if x["reward_std"] > 0]
            within_signal.append(pearson([x["curvature"] for x in signal], [x["reward_std"] for x in signal]))
        across += [m["diag/curvature_std_corr_across"] for m in r["metrics"]
                   if m.get("diag/curvature_std_corr_across") is not None]
    out = {"prompts": prompts, "pairs": len(pooled["cross"])}
    for name, values in pooled.items():
        v = np.array(values) if values else np.array([np.nan])
        out |= {f"{name}_pairs": len(values), f"{name}_mean": float(v.mean()), f"{name}_std": float(v.std()),
                f"{name}_p90": float(np.quantile(v, 0.9)), f"{name}_values": [float(c) for c in values]}
    mean = lambda xs: float(np.nanmean(xs)) if xs and not np.all(np.isnan(xs)) else float("nan")  # noqa: E731
    return out | {"r_within": mean(within), "r_within_signal": mean(within_signal), "r_across": mean(across)}


def diagnostics_report(diag: dict) -> list[str]:
    lines = ["\n## Diagnostics, each beside its control (pooled over each arm's diagnostic steps)\n",
             "|cos| between per-prompt policy gradients (LoRA weights), K samples per estimate: across prompts (what "
             "the paper reports: mean 0.088, 90% under 0.15), between two independent estimates of the SAME prompt "
             "(the noise floor: what K samples can resolve), and debiased (inner products from products of "
             "independent estimates: the cosine of the true gradients). Pearson r between each prompt's curvature "
             "proxy and its reward std, within a step, over prompts with reward variance only, and across steps "
             "on the same fixed prompts (the paper: 0.342 within, -0.028 across).\n",
             "| arm | pairs | cross-prompt \\|cos\\| (90th pct) | same-prompt floor | debiased \\|cos\\| (pairs) "
             "| r within step | r within, std > 0 | r across steps, same prompts |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, d in diag.items():
        lines.append(f"| {arm} | {d['cross_pairs']} | {d['cross_mean']:.3f} ({d['cross_p90']:.3f}) | "
                     f"{d['same_prompt_mean']:.3f} | {d['debiased_mean']:.3f} ({d['debiased_pairs']}) | "
                     f"{d['r_within']:.3f} | {d['r_within_signal']:.3f} | {d['r_across']:.3f} |")
    return lines


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
    fig, axes = plt.subplots(1, 4, figsize=(20, 3.8))
    titles = {"cross": "across prompts", "same_prompt": "same prompt, two estimates (floor)",
              "debiased": "debiased (true gradients)"}
    for ax, (name, title) in zip(axes, titles.items()):
        for arm, d in diag.items():
            if d[f"{name}_values"]:
                ax.hist(d[f"{name}_values"], bins=40, range=(0, 1), alpha=0.5, color=colors[arm],
                        label=f"{arm} (mean {d[f'{name}_mean']:.3f})")
        ax.set_title(f"|cos|, {title}", fontsize=9)
        ax.set_xlabel("|cos| of per-prompt policy gradients")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("pairs")
    for arm, d in diag.items():
        rows = [row for r in arms[arm] for row in r["diagnostics"]]
        axes[3].scatter([x["reward_std"] for x in rows], [x["curvature"] for x in rows], s=8, alpha=0.5,
                        color=colors[arm], label=f"{arm} (r within step {d['r_within']:.2f})")
    axes[3].set_xlabel("reward std of the prompt (K samples)")
    axes[3].set_ylabel("curvature proxy (mean |grad|^2 per token)")
    axes[3].set_yscale("log")
    axes[3].legend(fontsize=6)
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
            curve = arm_curve(rs, key, 1 if key.startswith(("diag/", "eval/")) else window)
            if curve is None:
                continue
            steps, mean, low, high, n = curve
            style = {"std": "-", "batch": "-.", "none": "--"}.get(arm.split(" /")[0], ":")
            ax.plot(steps, mean, style, color=colors[arm], label=f"{arm} (n={n})")
            ax.fill_between(steps, low, high, color=colors[arm], alpha=0.15)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"training-rollout accuracy ({window}-step moving average), held-out accuracy (eval/) and "
                 "diagnostics (diag/): mean over seeds, band from the lowest to the highest seed")
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
    ap.add_argument("--normalize", default="std,batch,none")
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
    ap.add_argument("--model", default=None, help="HF hub id or local folder (default: the run's, with --adapter)")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--adapter", default=None, help="a peft LoRA folder, e.g. a run's checkpoints/step_N")
    ap.add_argument("--data", required=True, help="gsm8k | math | demo | a .jsonl file")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--level", default=None, help="MATH levels, e.g. 2 or 1,2")
    ap.add_argument("--template", default=None, choices=list(D.PROMPT_TEMPLATES),
                    help="default: the run's (with --adapter inside a run), else plain for demo, qwen-chat otherwise")
    ap.add_argument("--samples", type=int, default=8, help="K samples per problem (0: greedy only)")
    ap.add_argument("--temperature", type=float, default=None, help="default: the run's, else 1.0")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's, else 1024")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per generate call")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run = run_config_of(args.adapter)
    if run:
        taken = {k: run[k] for k in ("model", "template", "max_new_tokens", "temperature")
                 if getattr(args, k) is None}
        if args.tokenizer is None and run.get("tokenizer"):
            taken["tokenizer"] = run["tokenizer"]
        vars(args).update(taken)
        print(f"from the run's config.json: {', '.join(f'{k} {v}' for k, v in taken.items()) or 'nothing'}")
    defaults = {"template": "plain" if args.data == "demo" else "qwen-chat", "temperature": 1.0,
                "max_new_tokens": 1024}
    vars(args).update({k: v for k, v in defaults.items() if getattr(args, k) is None})
    if args.model is None:
        ap.error("--model is required (or an --adapter inside a run folder, whose config.json names the model)")
    if args.samples < 0 or args.temperature <= 0 and args.samples:
        ap.error("--samples must be >= 0 and --temperature > 0")
    try:
        return evaluate(args)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        sys.exit(f"error: {e}")


def run_config_of(adapter: str | None) -> dict | None:
    """The config.json of the run that wrote this adapter (RUN/checkpoints/step_N), if it came from one."""
    if not adapter:
        return None
    path = Path(adapter).resolve().parent.parent / "config.json"
    return json.loads(path.read_text()) if path.is_file() and Path(adapter).parent.name == "checkpoints" else None


if __name__ == "__main__":
    main()
