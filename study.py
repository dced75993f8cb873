"""
The study: run the estimators over learning rates and seeds, and compare them.

    python eval.py sweep --preset demo --optimizer sgd --lrs 0.125,0.25 --out runs/sweep-sgd
    python eval.py compare runs/demo-std-adamw-s0 runs/demo-none-adamw-s0 --out reports/demo
    python study.py sweep ... | compare ...                    # the same two commands

An *arm* is one estimator setting: normalize / optimizer / lr (grpo.py's --normalize, --optimizer,
--lr). Run folders whose config.json agree on those three belong to one arm and differ only in
seed; every number of an arm is a mean over its seeds, and the figures draw that mean with a band
from the lowest to the highest seed. Training accuracy is that of each step's own rollouts: "final"
is its mean over the last 10% of steps, "gain" is final minus its mean over the first 10%.
Held-out accuracy is that of the last evaluation on the fixed held-out set (grpo.py --eval-every).

The three-arm decomposition. With the same optimizer and rate, `batch` divides every advantage by
one number (the step's reward std) where `std` divides each prompt's by its own: std - batch
isolates the per-prompt reweighting, batch - none the global step size, and std - none is their
sum (README "The algorithm").

Best vs best. An estimator's best rate depends on the scale of its advantages, so one equal rate
can favour one of them. Each (normalize, optimizer) run at two or more rates is also taken at its
best rate, picked by the headline training metric (final) on the same seeds the table reports.

Intervals. Each difference of two arms comes with the 95% two-sample t-interval (pooled variance)
of the per-seed finals; none with fewer than two seeds in an arm. It accounts for seed-to-seed
variation only: not for picking the best rate on the same seeds (best-vs-best intervals are
optimistic), not for the many rows compared at once, and not for the pairing of runs that share a
seed across arms (same prompt order and LoRA init): the seeds are treated as independent samples.
With two or three seeds it rests on near-normal per-seed finals.

Phases: the smoothed, seed-averaged gap std - none opens at the first step where it reaches a
threshold, holds while it stays at or above half of it, and closes at the first later step below
that (`phases`).

Sweeps resume. `sweep` runs grpo.py for every (lr, normalize, seed) into
OUT/<normalize>-<optimizer>-lr<lr>-s<seed>: a finished run (last logged step >= its config's steps)
is skipped, a stopped one resumes from its latest checkpoint, and one stopped before its first
checkpoint is moved to OUT/interrupted/ and started over; then `compare` writes OUT/report. After
an interruption, run the same command again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

# -----------------------------------------------------------------------------
# Run folders and arms


def find_runs(paths: list[str]) -> list[Path]:
    dirs = []
    for d in map(Path, paths):
        dirs += ([d] if (d / "metrics.jsonl").is_file()
                 else sorted(p.parent for p in d.glob("*/metrics.jsonl")))
    return dirs


def read_run(run_dir: Path) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines if line.strip()]
    diag_path = run_dir / "diagnostics.jsonl"
    diagnostics = ([json.loads(line) for line in diag_path.read_text().splitlines()]
                   if diag_path.is_file() else [])
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
    """Mean over seeds of the smoothed curve, and the seeds' lowest and highest values (the band),
    on the steps all seeds reached."""
    curves = [series(r, key) for r in runs]
    curves = [(s, v) for s, v in curves if len(s)]
    if not curves:
        return None
    n = min(len(s) for s, _ in curves)
    stacked = np.stack([smooth(v[:n], window) for _, v in curves])
    return curves[0][0][:n], stacked.mean(0), stacked.min(0), stacked.max(0), len(curves)


def final_value(runs, key, frac=0.1):
    """Mean over seeds of the metric averaged over the last `frac` of steps; and its per-seed
    values."""
    vals = []
    for r in runs:
        _, v = series(r, key)
        if len(v):
            vals.append(float(v[-max(1, int(len(v) * frac)):].mean()))
    return (float(np.mean(vals)) if vals else float("nan")), vals


def final_heldout(runs, key):
    """Mean over seeds of the metric at each run's last held-out evaluation; and its per-seed
    values."""
    vals = [float(v[-1]) for _, v in (series(r, key) for r in runs) if len(v)]
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


def summarize_arms(arms: dict, keys: list[str], heldout_keys: list[str], metric: str) -> dict:
    summary = {}
    for arm, rs in sorted(arms.items()):
        finals = ({k: final_value(rs, k) for k in keys}
                  | {k: final_heldout(rs, k) for k in heldout_keys})
        summary[arm] = {"seeds": len(rs), "final": {k: v[0] for k, v in finals.items()},
                        "gain": gain(rs, metric),
                        "final_per_seed": {k: v[1] for k, v in finals.items()},
                        "config": {k: rs[0]["config"][k] for k in ("normalize", "optimizer", "lr")}}
    return summary


# -----------------------------------------------------------------------------
# Differences between arms: intervals, the decomposition, phases

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
# The t distribution's 0.80 quantile, df = 1..30 (then 0.842): detectable_difference's power.
T80 = [1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879,
       0.876, 0.873, 0.870, 0.868, 0.866, 0.865, 0.863, 0.862, 0.861, 0.860,
       0.859, 0.858, 0.858, 0.857, 0.856, 0.856, 0.855, 0.855, 0.854, 0.854]


def pooled_standard_error(a: list[float], b: list[float]) -> tuple[float, int] | None:
    """The standard error of mean(a) - mean(b) with pooled variance, and its degrees of freedom
    n_a + n_b - 2. None with fewer than two seeds in either arm."""
    if len(a) < 2 or len(b) < 2:
        return None
    na, nb = len(a), len(b)
    df = na + nb - 2
    pooled = ((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / df
    return math.sqrt(pooled * (1 / na + 1 / nb)), df


def t_quantile(table: list[float], df: int, normal: float) -> float:
    return table[df - 1] if df <= len(table) else normal


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95% confidence interval of mean(a) - mean(b) over seeds: the two-sample t-interval with
    pooled variance (df = n_a + n_b - 2). None with fewer than two seeds in either arm."""
    se = pooled_standard_error(a, b)
    if se is None:
        return None
    half = t_quantile(T975, se[1], 1.96) * se[0]
    d = float(np.mean(a) - np.mean(b))
    return d - half, d + half


def detectable_difference(a: list[float], b: list[float]) -> float | None:
    """The smallest true difference of means that a two-sided 5% test on these seeds detects with
    80% power, from their pooled seed-to-seed spread: (t_0.975 + t_0.80) * s * sqrt(1/n_a + 1/n_b)
    (the usual approximation of the noncentral t). What a comparison at this seed count can see:
    an effect below it may be there and go unseen."""
    se = pooled_standard_error(a, b)
    if se is None:
        return None
    return (t_quantile(T975, se[1], 1.96) + t_quantile(T80, se[1], 0.842)) * se[0]


def interval_text(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(one seed)"


def effect(summary: dict, arm_a: str, arm_b: str, key: str) -> dict | None:
    a, b = summary[arm_a], summary[arm_b]
    if key not in a["final"] or key not in b["final"]:
        return None
    per_seed = a["final_per_seed"][key], b["final_per_seed"][key]
    return {"difference": a["final"][key] - b["final"][key],
            "interval": difference_interval(*per_seed),
            "detectable": detectable_difference(*per_seed)}


# The three-arm decomposition: with the same optimizer and rate, std - batch isolates the per-prompt
# reweighting and batch - none the global step size (README "The algorithm").
EFFECTS = (("per-prompt effect", "std", "batch"), ("step-size effect", "batch", "none"),
           ("total", "std", "none"))


def best_rates(summary: dict, metric: str) -> dict:
    """(normalize, optimizer) -> its arm at the best learning rate by `metric`, for estimators run
    at 2+ rates."""
    best, rates = {}, {}
    for arm, s in summary.items():
        key = (s["config"]["normalize"], s["config"]["optimizer"])
        rates.setdefault(key, set()).add(s["config"]["lr"])
        if key not in best or s["final"][metric] > summary[best[key]]["final"][metric]:
            best[key] = arm
    return {key: arm for key, arm in best.items() if len(rates[key]) > 1}


def decomposition(summary: dict, metric: str, heldout: str | None) -> list[tuple]:
    """The effects at equal rates and best vs best, in training and held-out accuracy: one
    (setting, (effect name, arm a, arm b), {"train", "heldout", "rates"}) per row."""
    by_key = {(s["config"]["normalize"], s["config"]["optimizer"], s["config"]["lr"]): arm
              for arm, s in summary.items()}
    best = best_rates(summary, metric)
    normalizers = ("std", "batch", "none")
    settings = [(f"{opt} / lr {lr:g}", {n: by_key.get((n, opt, lr)) for n in normalizers})
                for opt, lr in sorted({(o, lr) for _, o, lr in by_key})]
    settings += [(f"{opt} / each at its best lr", {n: best.get((n, opt)) for n in normalizers})
                 for opt in sorted({o for _, o in best})]
    rows = []
    for setting, arm in settings:
        for name, a, b in EFFECTS:
            if not (arm[a] and arm[b]):
                continue
            rows.append((setting, (name, a, b), {
                "train": effect(summary, arm[a], arm[b], metric),
                "heldout": effect(summary, arm[a], arm[b], heldout) if heldout else None,
                "rates": [summary[arm[a]]["config"]["lr"], summary[arm[b]]["config"]["lr"]]}))
    return rows


def phases(steps, gap, threshold):
    """The documented rule: the gap (std minus none, smoothed, mean over seeds) *opens* at the
    first step where it reaches `threshold`, *holds* while it stays at or above threshold / 2, and
    *closes* at the first later step where it falls below threshold / 2 (None if it never opens or
    never closes)."""
    opened = next((i for i, g in enumerate(gap) if g >= threshold), None)
    if opened is None:
        return {"opens": None, "closes": None,
                "max_gap": float(np.max(gap)) if len(gap) else None,
                "max_gap_step": int(steps[int(np.argmax(gap))]) if len(gap) else None}
    closed = next((i for i in range(opened, len(gap)) if gap[i] < threshold / 2), None)
    return {"opens": int(steps[opened]),
            "closes": int(steps[closed]) if closed is not None else None,
            "max_gap": float(np.max(gap)), "max_gap_step": int(steps[int(np.argmax(gap))])}


def gap_phases(arms: dict, summary: dict, metric: str, window: int, threshold: float) -> dict:
    """The phases of the gap std - none and the final gap, keyed "optimizer / lr", for every
    setting run with both."""
    table = {}
    for arm_std, runs_std in sorted(arms.items()):
        c = runs_std[0]["config"]
        arm_none = arm_of(c | {"normalize": "none"})
        if c["normalize"] != "std" or arm_none not in arms:
            continue
        cs, cn = arm_curve(runs_std, metric, window), arm_curve(arms[arm_none], metric, window)
        if cs is None or cn is None:
            continue
        n = min(len(cs[0]), len(cn[0]))
        gap = effect(summary, arm_std, arm_none, metric)
        table[f"{c['optimizer']} / lr {c['lr']:g}"] = (
            phases(cs[0][:n], cs[1][:n] - cn[1][:n], threshold)
            | {"final_gap": gap["difference"], "final_gap_interval": gap["interval"]})
    return table


# -----------------------------------------------------------------------------
# Diagnostics, pooled per arm


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    defined = len(x) > 2 and x.std() > 0 and y.std() > 0
    return float(np.corrcoef(x, y)[0, 1]) if defined else float("nan")


def diagnostic_summary(runs) -> dict:
    """Pool an arm's diagnostics: the three |cos| families (cross-prompt, same-prompt noise floor,
    debiased), the within-step r(curvature, reward std) (mean over steps; also over prompts with
    reward variance only, since all-right or all-wrong groups sit at std 0 with small gradients and
    can carry the correlation alone), and the across-step control on the same fixed prompts
    (diag/curvature_std_corr_across, mean over steps)."""
    families = {"cross": "abs_cosines", "same_prompt": "abs_cosines_same_prompt",
                "debiased": "abs_cosines_debiased"}
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
            within_signal.append(pearson([x["curvature"] for x in signal],
                                         [x["reward_std"] for x in signal]))
        across += [m["diag/curvature_std_corr_across"] for m in r["metrics"]
                   if m.get("diag/curvature_std_corr_across") is not None]
    out = {"prompts": prompts, "pairs": len(pooled["cross"])}
    for name, values in pooled.items():
        v = np.array(values) if values else np.array([np.nan])
        out |= {f"{name}_pairs": len(values), f"{name}_mean": float(v.mean()),
                f"{name}_std": float(v.std()), f"{name}_p90": float(np.quantile(v, 0.9)),
                f"{name}_values": [float(c) for c in values]}

    def mean(xs):
        return float(np.nanmean(xs)) if xs and not np.all(np.isnan(xs)) else float("nan")
    return out | {"r_within": mean(within), "r_within_signal": mean(within_signal),
                  "r_across": mean(across)}


# -----------------------------------------------------------------------------
# The report: one function per section, each returning its markdown lines


def intro_section(runs: int, arms: int, window: int, metric: str, heldout: str | None) -> list[str]:
    return ["# Run comparison\n",
            f"{runs} runs in {arms} arms (an arm = normalize / optimizer / lr; figures show the "
            "mean over its seeds and a band from the lowest to the highest seed). Training curves "
            f"are trailing {window}-step moving averages of the training-rollout accuracy; final "
            "= mean over the last 10% of steps; gain = final minus the mean over the first 10%. "
            "Held-out: the accuracy on the fixed held-out set at the last evaluation. Headline "
            f"metrics: `{metric}` (training), `{heldout}` (held-out). Intervals: 95% two-sample "
            "t-intervals over seeds.\n"]


def arms_table(summary: dict, keys: list[str], metric: str) -> list[str]:
    """One row per arm: its seeds, the final value of every metric, its per-seed gains in
    `metric`."""
    lines = ["| arm | seeds | " + " | ".join(f"final {k}" for k in keys)
             + f" | gain {metric} (per seed) |",
             "|---|---:|" + "---:|" * len(keys) + "---|"]
    for arm, s in summary.items():
        lines.append(f"| {arm} | {s['seeds']} | " + " | ".join(f"{s['final'][k]:.3f}" for k in keys)
                     + f" | {', '.join(f'{x:+.3f}' for x in s['gain'])} |")
    return lines


def effects_table(rows: list[tuple], metric: str, heldout: str | None) -> list[str]:
    def cell(e):
        if not e:
            return "-"
        detectable = f"; detectable {e['detectable']:.3f}" if e["detectable"] is not None else ""
        return f"{e['difference']:+.3f} {interval_text(e['interval'])}{detectable}"
    lines = ["\n## The effects: per-prompt (std - batch), step size (batch - none), "
             "total (std - none)\n",
             "At equal rates the arms share everything but the advantage rule. Each arm's best "
             f"rate is picked by final `{metric}` on the same seeds (the interval does not account "
             "for that choice); needs two or more rates per arm. *Detectable*: the smallest true "
             "difference these seeds would detect with 80% power (5% two-sided), from their "
             "seed-to-seed spread.\n",
             f"| setting | effect | rates | training `{metric}` | held-out `{heldout}` |",
             "|---|---|---|---|---|"]
    table = [f"| {setting} | {name} ({a} - {b}) | {row['rates'][0]:g} vs {row['rates'][1]:g} | "
             f"{cell(row['train'])} | {cell(row['heldout'])} |"
             for setting, (name, a, b), row in rows]
    return lines + (table or ["| (needs two arms at one rate) | | | | |"])


def phases_table(phase_table: dict, metric: str, threshold: float) -> list[str]:
    lines = [f"\n## Phases of the gap in `{metric}` (std minus none)\n",
             f"Rule: the smoothed, seed-averaged gap *opens* at the first step where it reaches "
             f"{threshold:.2f}, *holds* while it stays at or above {threshold / 2:.3f}, and "
             f"*closes* at the first later step below that.\n",
             "| optimizer / lr | opens at step | closes at step | largest gap (step) | "
             "final gap (95% interval) |",
             "|---|---:|---:|---:|---|"]
    for setting, ph in phase_table.items():
        lines.append(f"| {setting} | {ph['opens']} | {ph['closes']} | "
                     f"{ph['max_gap']:+.3f} ({ph['max_gap_step']}) | {ph['final_gap']:+.3f} "
                     f"{interval_text(ph['final_gap_interval'])} |")
    return lines


def diagnostics_report(diag: dict) -> list[str]:
    lines = ["\n## Diagnostics, each beside its control "
             "(pooled over each arm's diagnostic steps)\n",
             "|cos| between per-prompt policy gradients (LoRA weights), K samples per estimate: "
             "across prompts (what the paper reports: mean 0.088, 90% under 0.15), between two "
             "independent estimates of the SAME prompt (the noise floor: what K samples can "
             "resolve), and debiased (inner products from products of independent estimates: the "
             "cosine of the true gradients). Pearson r between each prompt's curvature proxy and "
             "its reward std, within a step, over prompts with reward variance only, and across "
             "steps on the same fixed prompts (the paper: 0.342 within, -0.028 across).\n",
             "| arm | pairs | cross-prompt \\|cos\\| (90th pct) | same-prompt floor | "
             "debiased \\|cos\\| (pairs) | r within step | r within, std > 0 | "
             "r across steps, same prompts |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, d in diag.items():
        lines.append(f"| {arm} | {d['cross_pairs']} | {d['cross_mean']:.3f} "
                     f"({d['cross_p90']:.3f}) | {d['same_prompt_mean']:.3f} | "
                     f"{d['debiased_mean']:.3f} ({d['debiased_pairs']}) | {d['r_within']:.3f} | "
                     f"{d['r_within_signal']:.3f} | {d['r_across']:.3f} |")
    return lines


def figures_section(figures: list[Path]) -> list[str]:
    if not figures:
        return ["\n(no figures: matplotlib is not installed; `pip install matplotlib`)"]
    return ["\n" + "\n".join(f"![{f.stem}]({f.name})" for f in figures)]


# -----------------------------------------------------------------------------
# Figures


def pyplot():
    """matplotlib.pyplot (headless), or None when matplotlib is not installed: the numbers are
    written anyway."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: writing numbers only "
              "(pip install matplotlib for the figures)")
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
        axes[3].scatter([x["reward_std"] for x in rows], [x["curvature"] for x in rows], s=8,
                        alpha=0.5, color=colors[arm],
                        label=f"{arm} (r within step {d['r_within']:.2f})")
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
    fig.suptitle(f"training-rollout accuracy ({window}-step moving average), held-out accuracy "
                 "(eval/) and diagnostics (diag/): mean over seeds, band from the lowest to the "
                 "highest seed")
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# The diagnostics' per-step summaries, drawn as curves when logged.
DIAG_CURVES = ("diag/cos_abs_mean", "diag/cos_same_prompt_abs_mean", "diag/cos_debiased_abs_mean",
               "diag/curvature_std_corr", "diag/curvature_std_corr_across")


def plot_figures(arms: dict, curve_keys: list[str], diag_keys: list[str], diag: dict, window: int,
                 out: Path) -> list[Path]:
    """curves.png, and diagnostics.png when there are diagnostics; none without matplotlib."""
    plt = pyplot()
    if not plt:
        return []
    colors = {arm: f"C{i}" for i, arm in enumerate(sorted(arms))}  # one color per arm, everywhere
    paths = [plot_compare(plt, arms, colors, curve_keys, diag_keys, window, out)]
    if diag:
        paths.append(plot_diagnostics(plt, arms, colors, diag, out))
    return paths


# -----------------------------------------------------------------------------
# compare: run folders -> report.md, summary.json, figures


def compare(argv=None):
    ap = argparse.ArgumentParser(prog="eval.py compare", description="Compare GRPO runs: the "
                                 "three arms, seeds as intervals and bands.")
    ap.add_argument("runs", nargs="+", help="run folders, or folders holding run folders")
    ap.add_argument("--out", default="reports/compare")
    ap.add_argument("--window", type=int, default=10,
                    help="trailing moving-average window, in steps")
    ap.add_argument("--metric", default=None,
                    help="headline training metric (default accuracy/hard when present)")
    ap.add_argument("--heldout-metric", default=None,
                    help="headline held-out metric (default eval/hard/samples/strict/accuracy "
                         "when present)")
    ap.add_argument("--gap-threshold", type=float, default=0.03,
                    help="phase rule threshold (accuracy points / 100)")
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
                                                       "eval/samples/strict/accuracy")
                                           if k in logged), None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    summary = summarize_arms(arms, keys, heldout_keys, metric)
    effect_rows = decomposition(summary, metric, heldout)
    phase_table = gap_phases(arms, summary, metric, args.window, args.gap_threshold)
    diag = {arm: diagnostic_summary(rs) for arm, rs in sorted(arms.items())
            if any(r["diagnostics"] for r in rs)}

    report = (intro_section(len(runs), len(arms), args.window, metric, heldout)
              + arms_table(summary, keys + heldout_keys, metric)
              + effects_table(effect_rows, metric, heldout)
              + phases_table(phase_table, metric, args.gap_threshold)
              + (diagnostics_report(diag) if diag else []))
    curve_keys = keys + [k for k in heldout_keys if "/samples/" in k]
    figures = plot_figures(arms, curve_keys, [k for k in DIAG_CURVES if k in logged], diag,
                           args.window, out)
    report += figures_section(figures)

    (out / "report.md").write_text("\n".join(report) + "\n")
    effects = {f"{setting}: {name}": row for setting, (name, _, _), row in effect_rows}
    (out / "summary.json").write_text(json.dumps(
        {"metric": metric, "heldout_metric": heldout, "arms": summary, "effects": effects,
         "phases": phase_table, "diagnostics": diag, "window": args.window}, indent=2) + "\n")
    print("\n".join(report))
    print(f"\nwrote {out}/report.md, {out}/summary.json"
          + (f" and {len(figures)} figures" if figures else ""))
    return summary


# -----------------------------------------------------------------------------
# sweep: every (lr, normalize, seed), resumable, then compare


def sweep(argv=None):
    ap = argparse.ArgumentParser(prog="eval.py sweep", description="Run grpo.py for every "
                                 "(normalize, lr, seed); then compare best vs best.")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--lrs", required=True, help="comma-separated learning rates")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--normalize", default="std,batch,none")
    ap.add_argument("--out", required=True)
    ap.add_argument("extra", nargs=argparse.REMAINDER,
                    help="after --: more grpo.py flags for every run")
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
                    # Stopped before its first checkpoint: nothing to resume. Set it aside.
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    aside = out / "interrupted" / f"{run_dir.name}-{stamp}"
                    aside.parent.mkdir(parents=True, exist_ok=True)
                    run_dir.rename(aside)
                    print(f"{run_dir} stopped before its first checkpoint; moved to {aside}, "
                          "starting over")
                flags = ["--resume", str(run_dir)] if run_dir.exists() else \
                    ["--preset", args.preset, "--optimizer", args.optimizer, "--lr", lr,
                     "--normalize", normalize, "--seed", seed, "--out", str(run_dir), *extra]
                print(f"=== python grpo.py {' '.join(flags)}", flush=True)
                grpo.main(flags)
    compare([str(out), "--out", str(out / "report")])


def latest_complete(run_dir: Path) -> bool:
    config = json.loads((run_dir / "config.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return bool(lines) and json.loads(lines[-1])["step"] >= config["steps"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"compare": compare, "sweep": sweep}
    if not argv or argv[0] not in commands:
        sys.exit("usage: python study.py compare RUN_DIR ... [--out DIR] | "
                 "sweep --lrs LRS --out DIR [...] (--help after either for its flags)")
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
