"""
The study: run the estimators over learning rates and seeds, and compare them.

    python study.py sweep --preset demo --optimizer sgd --lrs 0.125,0.25 --out runs/sweep-sgd
    python study.py compare runs/sweep-sgd --out reports/sgd

An *arm* is one estimator setting: normalize / optimizer / lr (grpo.py's --normalize, --optimizer,
--lr). Run folders whose config.json agree on those three belong to one arm and differ only in
seed. Training accuracy is that of each step's own rollouts: "final" is its mean over the last 10%
of steps, "gain" is final minus its mean over the first 10%. Held-out accuracy is that of the last
evaluation on the fixed held-out set (grpo.py --eval-every). A run with fewer logged steps than
its config's (still running, or stopped early) is left out of the comparison and named in the
report, so a report of a study in progress says which runs it lacks.

The decomposition (README "The algorithm"). With the same optimizer and rate, `matched` divides all
of a step's advantages by one number chosen to give std's mean |A|, so std - matched is the
per-prompt reweighting alone and matched - none the step size alone; std - none is their sum. The
authors' `batch` divides by the std of all the step's rewards, which holds the variance between
prompts too, so its steps are smaller than std's and std - batch mixes the per-prompt reweighting
with a step-size difference: reported, but not as the per-prompt effect.

Paired by seed. Every arm of a seed starts from the same LoRA initialisation, takes the prompts in
the same order and draws from the same sampler streams, so its step-1 rollouts are identical across
arms, to the last bit of the initial model's entropy on them (checked: `check_pairing` stops with
an error naming the runs that are not; that entropy also tells an Intel run from an AMD one). A
difference of two arms is therefore estimated from the per-seed differences: the paired
t-interval (n - 1 degrees of freedom over the seeds both arms ran), its p-value, and the smallest
true difference it would detect (80% power, 5% two-sided). The two-sample interval that treats the
seeds as independent is printed beside it: it is what a comparison of unrelated runs could claim,
and wider wherever the seeds' common part (the prompt order, the initialisation) moves both arms
alike.

What the intervals do not account for: choosing the best rate on the same seeds whose difference is
reported (best-vs-best rows are optimistic), the grid's coarseness (rates a factor 2 apart: "best"
is the best of those run), and the number of comparisons in one report (counted in the report,
with Holm-adjusted p-values beside the raw ones). With 2-3 seeds they rest on near-normal per-seed
values.

Best rates. Each (normalize, optimizer) is also taken at its best rate, by the headline training
metric (final), among the rates run in the folder; an arm run at one rate only is taken at that rate
(the README says where it was chosen).

Diagnostics (diagnostics.py) are recomputed here from each run's diagnostics.jsonl: per seed, pooled
over the run's diagnostic steps, and then as a mean over seeds with a t-interval over seeds; the
cosine also pooled over every prompt of every seed with its jackknife interval.

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

import diagnostics as diag
from diagnostics import T975

# -----------------------------------------------------------------------------
# Run folders, arms and their pairing


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


def seed_of(run: dict) -> int:
    return run["config"].get("seed", 0)


# What a run's first step logs about its rollouts and the initial model alone (before any update):
# identical across the arms of one seed when they pair. The rollouts' accuracy and lengths agree
# between an Intel and an AMD CPU; the initial model's entropy on them (a float sum over the
# forwarded tokens) carries the machine's last bits, so it tells runs of two machines apart.
ROLLOUT_KEYS = ("accuracy", "reward_std", "zero_std_frac", "completion_len", "completion_len_max",
                "truncated_frac", "learner_tokens", "entropy")


def first_rollouts(run: dict) -> dict:
    first = next((m for m in run["metrics"] if m.get("step") == 1), {})
    return {k: v for k, v in first.items()
            if k in ROLLOUT_KEYS or (k.startswith("accuracy/") and v is not None)}


def check_pairing(runs: list[dict]) -> str | None:
    """None when every two runs of one seed drew identical step-1 rollouts and scored them alike
    under the initial model (so their arms pair), else a one-line message naming two runs that did
    not (another machine, thread count or code version: the bits differ), or two runs of one arm
    and seed."""
    by_seed: dict[int, list] = {}
    for r in runs:
        by_seed.setdefault(seed_of(r), []).append(r)
    for seed, rs in sorted(by_seed.items()):
        arms = [arm_of(r["config"]) for r in rs]
        twice = next((a for a in arms if arms.count(a) > 1), None)
        if twice:
            same = [str(r["dir"]) for r in rs if arm_of(r["config"]) == twice]
            return (f"runs {same[0]} and {same[1]} are both arm {twice!r}, seed {seed}: "
                    "compare them in separate folders")
        ref = rs[0]
        for r in rs[1:]:
            a, b = first_rollouts(ref), first_rollouts(r)
            # exact, floats too: identical rollouts give identical bits, so any difference,
            # however small, means other rollouts or another machine
            if a != b:
                key = next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), "step 1")
                return (f"runs {ref['dir']} and {r['dir']} share seed {seed} but their step 1 "
                        f"differs ({key} {a.get(key)} vs {b.get(key)}), so they do not pair "
                        "(another machine, thread count, design or code version): compare them "
                        "in separate folders")
    return None


# What may differ between two runs of one optimizer and rate besides the arm (normalize) and the
# seed: where they write, and settings that change the speed, not the numbers.
BOOKKEEPING = ("out", "save_every", "keep_checkpoints", "log_samples_every", "device", "decoder",
               "compile", "dist_timeout_s")


def check_design(runs: list[dict]) -> str | None:
    """None when the runs of each optimizer and rate differ only in normalize, seed and
    bookkeeping, else a one-line message naming two runs and the flag: any other difference (the
    std estimator, the clip, the steps) would be pooled into one arm or set against the control."""
    import grpo  # what a field missing from an older config.json meant
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["config"]["optimizer"], r["config"]["lr"]), []).append(r)
    for rs in groups.values():
        ref = rs[0]
        for r in rs[1:]:
            a, b = ref["config"], r["config"]
            for key in sorted(set(a) | set(b)):
                if key in ("normalize", "seed") + BOOKKEEPING:
                    continue
                old = grpo.BEFORE_FIELD_EXISTED.get(key)
                if a.get(key, old) != b.get(key, old):
                    return (f"runs {ref['dir']} and {r['dir']} differ in "
                            f"--{key.replace('_', '-')} ({a.get(key, old)!r} vs "
                            f"{b.get(key, old)!r}), not only in arm and seed: compare them in "
                            "separate folders")
    return None


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
    """(steps, mean over seeds of the smoothed curve, the seeds' smoothed curves [seeds, steps]) on
    the steps all seeds reached."""
    curves = [series(r, key) for r in runs]
    curves = [(s, v) for s, v in curves if len(s)]
    if not curves:
        return None
    # cut to the shortest seed: a mean whose seed count changed midway would jump there. The
    # seeds of one arm log the same steps (check_design), so the first one's step numbers serve.
    n = min(len(s) for s, _ in curves)
    stacked = np.stack([smooth(v[:n], window) for _, v in curves])
    return curves[0][0][:n], stacked.mean(0), stacked


def final_per_seed(runs, key, frac=0.1) -> dict[int, float]:
    """Per seed: the metric averaged over the last `frac` of its logged steps."""
    out = {}
    for r in runs:
        _, v = series(r, key)
        if len(v):
            out[seed_of(r)] = float(v[-max(1, int(len(v) * frac)):].mean())  # >= 1 step
    return out


def heldout_per_seed(runs, key) -> dict[int, float]:
    """Per seed: the metric at the run's last held-out evaluation."""
    return {seed_of(r): float(v[-1]) for r in runs for _, v in [series(r, key)] if len(v)}


def gain(runs, key, frac=0.1) -> dict[int, float]:
    """Per seed: mean over the last frac of steps minus mean over the first frac."""
    out = {}
    for r in runs:
        _, v = series(r, key)
        if len(v):
            w = max(1, int(len(v) * frac))
            out[seed_of(r)] = float(v[-w:].mean() - v[:w].mean())
    return out


def mean_interval(values) -> tuple[float, tuple[float, float] | None]:
    """The mean of per-seed values and its 95% t-interval over the seeds (None below two)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return float("nan"), None
    if len(v) < 2:
        return float(v.mean()), None
    # t, not the normal's 1.96: with 3 seeds t is 4.303, an interval 2.2 times as wide
    half = t_quantile(T975, len(v) - 1, 1.96) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), (float(v.mean() - half), float(v.mean() + half))


def summarize_arms(arms: dict, keys: list[str], heldout_keys: list[str], metric: str) -> dict:
    summary = {}
    for arm, rs in sorted(arms.items()):
        per_seed = ({k: final_per_seed(rs, k) for k in keys}
                    | {k: heldout_per_seed(rs, k) for k in heldout_keys})
        summary[arm] = {"seeds": sorted(seed_of(r) for r in rs),
                        "final": {k: float(np.mean(list(v.values()))) for k, v in per_seed.items()
                                  if v},
                        "final_interval": {k: mean_interval(v.values())[1]
                                           for k, v in per_seed.items() if v},
                        "gain": gain(rs, metric), "final_per_seed": per_seed,
                        "config": {k: rs[0]["config"][k] for k in ("normalize", "optimizer", "lr")}}
    return summary


# -----------------------------------------------------------------------------
# Differences between arms: paired and unpaired intervals, the decomposition, phases

# The t distribution's 0.80 quantile, df = 1..30 (then 0.842): detectable_difference's power.
# Tables and a hand-written p-value rather than scipy: the runtime dependencies stay torch and
# numpy (tests/test_study.py checks the tables and the p against the t density).
T80 = [1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879,
       0.876, 0.873, 0.870, 0.868, 0.866, 0.865, 0.863, 0.862, 0.861, 0.860,
       0.859, 0.858, 0.858, 0.857, 0.856, 0.856, 0.855, 0.855, 0.854, 0.854]


def t_quantile(table: list[float], df: int, normal: float) -> float:
    return table[df - 1] if df <= len(table) else normal


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom (the density integrated
    numerically: Simpson's rule on 0..|t| after the substitution u = atan(t / sqrt(df)), exact to
    ~1e-9)."""
    if not np.isfinite(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    u = np.linspace(0.0, theta, 4001)
    # t = sqrt(df) tan u: density (1 + t^2/df)^-(df+1)/2 dt = cos(u)^(df-1) sqrt(df) du
    f = np.cos(u) ** (df - 1)
    h = theta / 4000
    integral = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return float(max(0.0, 1 - 2 * math.exp(logc) * math.sqrt(df) * integral))


def pooled_standard_error(a: list[float], b: list[float]) -> tuple[float, int] | None:
    """The standard error of mean(a) - mean(b) with pooled variance, and its degrees of freedom
    n_a + n_b - 2, treating the two arms' seeds as independent. None below two seeds per arm."""
    if len(a) < 2 or len(b) < 2:
        return None
    na, nb = len(a), len(b)
    df = na + nb - 2
    pooled = ((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / df
    return math.sqrt(pooled * (1 / na + 1 / nb)), df


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """Unpaired: the 95% two-sample t-interval (pooled variance) of mean(a) - mean(b)."""
    se = pooled_standard_error(a, b)
    if se is None:
        return None
    half = t_quantile(T975, se[1], 1.96) * se[0]
    d = float(np.mean(a) - np.mean(b))
    return d - half, d + half


def detectable_difference(a: list[float], b: list[float]) -> float | None:
    """Unpaired: the smallest true difference of means that a two-sided 5% test on these seeds
    detects with 80% power, (t_0.975 + t_0.80) * s * sqrt(1/n_a + 1/n_b) (the usual approximation
    of the noncentral t)."""
    se = pooled_standard_error(a, b)
    if se is None:
        return None
    return (t_quantile(T975, se[1], 1.96) + t_quantile(T80, se[1], 0.842)) * se[0]


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Paired by seed: over the seeds both arms ran, the mean of the per-seed differences a_s - b_s,
    its 95% t-interval (df = seeds - 1), two-sided p and the difference detectable with 80% power,
    (t_0.975 + t_0.80) * sd / sqrt(n). None without a common seed; no interval with one."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    # Differences per seed first: what a seed's arms share (prompt order, initial adapter,
    # sampler streams) cancels in a_s - b_s, so the spread left is the arms' own.
    d = np.array([a[s] - b[s] for s in seeds])
    out = {"difference": float(d.mean()), "seeds": seeds, "per_seed": [float(x) for x in d],
           "interval": None, "p": None, "detectable": None}
    if len(d) < 2:
        return out
    df, se = len(d) - 1, float(d.std(ddof=1)) / math.sqrt(len(d))
    half = t_quantile(T975, df, 1.96) * se
    # se 0: every seed gave the same difference; p is 1 if that is 0 (identical arms), else 0
    out |= {"interval": (float(d.mean() - half), float(d.mean() + half)),
            "p": t_two_sided_p(d.mean() / se, df) if se > 0 else float(d.mean() == 0),
            "detectable": (t_quantile(T975, df, 1.96) + t_quantile(T80, df, 0.842)) * se}
    return out


def interval_text(ci) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(one seed)"


def effect(summary: dict, arm_a: str, arm_b: str, key: str) -> dict | None:
    """arm_a - arm_b in `key`: paired by seed, and unpaired beside it."""
    a, b = summary[arm_a]["final_per_seed"].get(key), summary[arm_b]["final_per_seed"].get(key)
    if not a or not b:
        return None
    paired = paired_difference(a, b)
    if paired is None:
        return None
    return paired | {"unpaired": {"interval": difference_interval(list(a.values()),
                                                                  list(b.values())),
                                  "detectable": detectable_difference(list(a.values()),
                                                                      list(b.values()))}}


# The decomposition at one optimizer and rate (module docstring): name, arm a, arm b.
EFFECTS = (("per-prompt", "std", "matched"), ("step size", "matched", "none"),
           ("total", "std", "none"), ("authors' batch arm", "std", "batch"),
           ("batch step size", "batch", "none"))
NORMALIZERS = ("std", "matched", "batch", "none")


def best_rates(summary: dict, metric: str) -> dict:
    """(normalize, optimizer) -> its arm at the best learning rate by `metric` among those run (an
    arm run at one rate: that rate)."""
    # picked on the same seeds whose differences are then reported: best-vs-best rows are
    # optimistic (module docstring)
    best = {}
    for arm, s in summary.items():
        key = (s["config"]["normalize"], s["config"]["optimizer"])
        if metric not in s["final"]:
            continue
        if key not in best or s["final"][metric] > summary[best[key]]["final"][metric]:
            best[key] = arm
    return best


def decomposition(summary: dict, metric: str, heldout: str | None) -> list[tuple]:
    """The effects at equal rates, and with each arm at its best rate where that differs: one
    (setting, (effect name, arm a, arm b), {"train", "heldout", "rates"}) per row."""
    by_key = {(s["config"]["normalize"], s["config"]["optimizer"], s["config"]["lr"]): arm
              for arm, s in summary.items()}
    best = best_rates(summary, metric)
    settings = [(f"{opt} / lr {lr:g}", {n: by_key.get((n, opt, lr)) for n in NORMALIZERS})
                for opt, lr in sorted({(o, lr) for _, o, lr in by_key})]
    equal = [arms for _, arms in settings]
    # Equal rates first: there the arms differ in the advantage's divisor alone. Best-rate rows
    # follow, and are optimistic: each rate was picked on the very seeds compared.
    for opt in sorted({o for _, o in best}):
        arms = {n: best.get((n, opt)) for n in NORMALIZERS}
        if arms not in equal:
            settings.append((f"{opt} / each at its best lr", arms))
    rows = []
    for setting, arm in settings:
        for name, a, b in EFFECTS:
            if not (arm[a] and arm[b]):
                continue
            rates = [summary[arm[a]]["config"]["lr"], summary[arm[b]]["config"]["lr"]]
            if setting.endswith("best lr") and rates[0] == rates[1]:
                continue  # the equal-rate row at that rate says it
            rows.append((setting, (name, a, b), {
                "train": effect(summary, arm[a], arm[b], metric),
                "heldout": effect(summary, arm[a], arm[b], heldout) if heldout else None,
                "rates": rates, "arms": [arm[a], arm[b]]}))
    return rows


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values (familywise error over the whole report)."""
    # Holm rather than Bonferroni: the same familywise guarantee, also under any dependence (the
    # report's effects share arms and seeds: total = per-prompt + step size, seed by seed), and
    # never less power. Benjamini-Hochberg would bound the share of false claims, not the chance
    # of any.
    m, order = len(pvalues), np.argsort(pvalues)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        # the k-th smallest p times m - k + 1, kept non-decreasing in the raw p's order
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def identical(e: dict | None) -> bool:
    """Two arms that computed the same numbers on every seed (one prompt per step: std = batch)."""
    return bool(e) and all(d == 0 for d in e["per_seed"])


def adjust_for_comparisons(rows: list[tuple]) -> int:
    """Adds 'p_holm' to every paired effect with a p-value in the report (arms identical on every
    seed are no comparison and left out); returns their number."""
    cells = [row[k] for _, _, row in rows for k in ("train", "heldout")
             if row.get(k) and row[k].get("p") is not None and not identical(row[k])]
    for cell, p in zip(cells, holm([c["p"] for c in cells])):
        cell["p_holm"] = p
    return len(cells)


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
    # closing at half the threshold, not at it: a gap wavering around the threshold stays one
    # phase instead of opening and closing on every wobble
    closed = next((i for i in range(opened, len(gap)) if gap[i] < threshold / 2), None)
    return {"opens": int(steps[opened]),
            "closes": int(steps[closed]) if closed is not None else None,
            "max_gap": float(np.max(gap)), "max_gap_step": int(steps[int(np.argmax(gap))])}


def gap_phases(arms: dict, summary: dict, metric: str, window: int, threshold: float) -> dict:
    """The phases of the gap std - none and the final gap (paired), keyed "optimizer / lr", for
    every setting run with both."""
    table = {}
    for arm_std, runs_std in sorted(arms.items()):
        c = runs_std[0]["config"]
        arm_none = arm_of(c | {"normalize": "none"})
        if c["normalize"] != "std" or arm_none not in arms:
            continue
        cs, cn = arm_curve(runs_std, metric, window), arm_curve(arms[arm_none], metric, window)
        gap = effect(summary, arm_std, arm_none, metric)
        if cs is None or cn is None or gap is None:
            continue
        # the steps both arms reached; the curve is the gap of the arm means (its phases are a
        # description), the final gap is paired by seed (the number with an interval)
        n = min(len(cs[0]), len(cn[0]))
        table[f"{c['optimizer']} / lr {c['lr']:g}"] = (
            phases(cs[0][:n], cs[1][:n] - cn[1][:n], threshold)
            | {"final_gap": gap["difference"], "final_gap_interval": gap["interval"]})
    return table


# -----------------------------------------------------------------------------
# Diagnostics: recomputed per seed from diagnostics.jsonl, then intervals over seeds

# The per-seed diagnostics, each beside its control (diagnostics.py's docstring).
DIAG_STATS = {
    "cos_rms": "rms cos of the true gradients",
    "cos_cross_abs_mean": "cross-prompt |cos| of estimates (the paper's)",
    "cos_same_prompt_abs_mean": "same-prompt |cos| (upper reference)",
    "r_curvature_within": "r(curvature_A, std_B), within step",
    "r_error_rate_within": "r(error rate_A, std_B), within step (stand-in)",
    "r_curvature_given_pass_rate_within": "r(curvature_A, std_B | right_A), within step",
    "r_curvature_across": "r(curvature_A, std_B next step)",
    "r_error_rate_across": "r(error rate_A, std_B next step) (stand-in)",
    "r_curvature_given_pass_rate_across": "r(curvature_A, std_B next step | right_A)",
}


def run_diagnostics(run: dict) -> dict | None:
    """One run's diagnostics pooled over its diagnostic steps, or None for a run without them or
    with rows of an older diagnostics.py (no Gram matrix, curvature and std from one sample set):
    {stat: value} for DIAG_STATS, and "cos_terms" (P, Q) for pooling over seeds."""
    rows = run["diagnostics"]
    if not rows or "curvature_a" not in rows[0]:
        return None
    steps = sorted({r["step"] for r in rows})
    by_step = {s: [r for r in rows if r["step"] == s] for s in steps}
    grams = [np.array(r["gram"]) for r in rows if "gram" in r]  # one per step, on its first row
    # One block for the run: P and Q summed over its steps, so the jackknife drops a prompt at
    # every step at once. The prompt is the unit sampled: one whose gradient lines up with the
    # others' does so at every step, so its terms at two steps are not independent.
    terms = [diag.pair_terms(g) for g in grams]
    P, Q = sum(t[0] for t in terms), sum(t[1] for t in terms)
    rms = diag.cosine_rms([(P, Q)])
    naive = [diag.naive_cosines(g) for g in grams]
    cross = [c for n in naive for c in n["cross"]]
    same = [c for n in naive for c in n["same_prompt"]]
    out = {"cos_terms": (P, Q), "cos_rms_interval": (rms["low"], rms["high"]) if rms else None,
           "cos_rms": rms["rms"] if rms else None,
           "cos_cross_abs_mean": float(np.mean(cross)) if cross else None,
           "cos_same_prompt_abs_mean": float(np.mean(same)) if same else None,
           "steps": len(steps), "prompts": len(by_step[steps[0]])}
    # within a step a row is paired with itself: its proxy and its std come from its disjoint
    # sample sets A and B (diagnostics.measure), so they share no draw
    pairs = {"within": [(r, r) for s in steps for r in by_step[s]]}
    index = [{r["id"]: r for r in by_step[s]} for s in steps]
    pairs["across"] = [(index[i][k], row) for i in range(len(steps) - 1)
                       for k, row in index[i + 1].items() if k in index[i]]
    for when, ps in pairs.items():
        if not ps:
            continue
        kappa = [a["curvature_a"] for a, _ in ps]
        errors = [1 - a["pass_rate_a"] for a, _ in ps]
        std = [b["reward_std_b"] for _, b in ps]
        # Each step its own stratum: a drift that moves every prompt alike over training (all
        # getting easier) is not a per-prompt relation.
        step = [a["step"] for a, _ in ps]  # within the step the proxy was measured at
        stratum = [(a["step"], a["right_a"]) for a, _ in ps]
        for name, x, strata in (("curvature", kappa, step), ("error_rate", errors, step),
                                ("curvature_given_pass_rate", kappa, stratum)):
            # as strings: (step, right) tuples would become a 2-D array of labels
            r = diag.stratified_correlation(x, std, [str(s) for s in strata])
            out[f"r_{name}_{when}"] = r["r"] if r else None
    return out


def seed_interval(values: dict[int, float], correlation: bool) -> dict:
    """The mean over seeds and its 95% t-interval over seeds. A correlation is averaged as Fisher's
    z = atanh(r) and mapped back (so the interval stays within -1..1); a cosine's interval is cut
    to 0..1, where a |cos| or an rms of cosines lies."""
    if not correlation:
        mean, ci = mean_interval(values.values())
        return {"mean": mean, "interval": (max(ci[0], 0.0), min(ci[1], 1.0)) if ci else None}
    # clamped: an r of exactly +-1 (rows without noise) has an infinite z
    z = [math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)) for r in values.values()]
    mean, ci = mean_interval(z)
    return {"mean": math.tanh(mean) if z else float("nan"),
            "interval": (math.tanh(ci[0]), math.tanh(ci[1])) if ci else None}


def diagnostic_summary(runs) -> dict | None:
    """An arm's diagnostics: per seed (run_diagnostics), the mean over seeds with its t-interval for
    every DIAG_STATS entry, and the cosine pooled over every prompt of every seed with its
    jackknife interval (correlations averaged as Fisher z: seed_interval). {"older_format": n}
    when its runs logged diagnostics of an older diagnostics.py only; None without
    diagnostics."""
    per_seed = {seed_of(r): d for r in runs if (d := run_diagnostics(r)) is not None}
    if not per_seed:
        return {"older_format": len(runs)} if any(r["diagnostics"] for r in runs) else None
    out = {"seeds": sorted(per_seed), "per_seed": {}}
    for stat in DIAG_STATS:
        values = {s: d[stat] for s, d in per_seed.items() if d.get(stat) is not None}
        out[stat] = seed_interval(values, correlation=stat.startswith("r_"))
        out[stat]["per_seed"] = values
    # one block per seed: the seeds' samples are independent, so every prompt of every seed is
    # a jackknife unit
    pooled = diag.cosine_rms([d["cos_terms"] for d in per_seed.values()])
    out["cos_rms_pooled"] = pooled
    out["steps"] = [d["steps"] for d in per_seed.values()]
    out["prompts"] = [d["prompts"] for d in per_seed.values()]
    return out


# -----------------------------------------------------------------------------
# The report: one function per section, each returning its markdown lines


def intro_section(runs: list[dict], arms: int, window: int, metric: str,
                  heldout: str | None, unfinished: list[dict] = ()) -> list[str]:
    # eval/hard/samples/strict/accuracy -> eval/hard/problems: how many problems it averages
    count = f"{heldout.rsplit('/', 3)[0]}/problems" if heldout else None
    sizes = sorted({m[count] for r in runs for m in r["metrics"] if count in m})
    samples = sorted({r["config"].get("eval_samples") for r in runs} - {None})
    held = (f"`{heldout}` at the last evaluation, over {' / '.join(map(str, sizes))} problems of "
            f"the fixed held-out set" + (f" ({' / '.join(map(str, samples))} samples each)"
                                         if samples and "/samples/" in heldout else "")
            if sizes else f"`{heldout}`")
    return ["# Run comparison\n",
            f"{len(runs)} runs in {arms} arms (an arm = normalize / optimizer / lr), seeds "
            f"{sorted({seed_of(r) for r in runs})}, paired: every seed's arms drew identical "
            "step-1 rollouts, scored alike to the last bit (checked). Training: `" + metric
            + "` over each step's own rollouts, final = mean over the last 10% of steps, gain = "
            f"final minus the mean over the first 10%; curves are trailing {window}-step moving "
            f"averages. Held-out: {held}."
            + (f" Left out, unfinished (fewer logged steps than their config's, still running or "
               f"stopped early): {', '.join(sorted(Path(r['dir']).name for r in unfinished))}."
               if unfinished else "") + "\n",
            "**Intervals.** Differences of arms are paired by seed (study.py's docstring: the arms "
            "of a seed share its prompt order, initial adapter and sampler streams): mean of the "
            "per-seed differences, 95% t-interval over seeds, two-sided p, and *detectable*, the "
            "smallest true difference these seeds would detect with 80% power. Beside it the "
            "unpaired two-sample interval that treats the seeds as independent. Neither accounts "
            "for choosing a best rate on these same seeds, for the grid's coarseness, or for the "
            "number of comparisons (counted below, with Holm-adjusted p).\n"]


def arms_table(summary: dict, keys: list[str], metric: str, heldout: str | None) -> list[str]:
    """One row per arm: its seeds, the headline metrics with their intervals over seeds, the final
    value of every metric, its per-seed gains in `metric`."""
    headline = [k for k in (metric, heldout) if k]
    rest = [k for k in keys if k not in headline]
    lines = ["| arm | seeds | " + " | ".join(f"final `{k}` [95% over seeds]" for k in headline)
             + " | " + " | ".join(f"final {k}" for k in rest) + f" | gain {metric} (per seed) |",
             "|---|---|" + "---:|" * (len(headline) + len(rest)) + "---|"]
    for arm, s in summary.items():
        cells = [f"{s['final'][k]:.3f} {interval_text(s['final_interval'].get(k))}"
                 if k in s["final"] else "-" for k in headline]
        cells += [f"{s['final'][k]:.3f}" if k in s["final"] else "-" for k in rest]
        lines.append(f"| {arm} | {','.join(map(str, s['seeds']))} | " + " | ".join(cells)
                     + f" | {', '.join(f'{x:+.3f}' for x in s['gain'].values())} |")
    return lines


def effect_cell(e: dict | None) -> str:
    if not e:
        return "-"
    if e["interval"] is None:
        return f"{e['difference']:+.3f} (one seed)"
    if identical(e):
        return "identical on every seed"
    p = f"p {e['p']:.3f}" + (f", Holm {e['p_holm']:.2f}" if "p_holm" in e else "")
    unpaired = e["unpaired"]["interval"]
    return (f"**{e['difference']:+.3f} {interval_text(e['interval'])}** ({p}; detectable "
            f"{e['detectable']:.3f}); unpaired {interval_text(unpaired)}")


def effects_table(rows: list[tuple], metric: str, heldout: str | None,
                  comparisons: int) -> list[str]:
    lines = ["\n## The effects, paired by seed\n",
             "per-prompt = std - matched (the per-prompt reweighting alone: matched has std's mean "
             "|A| in every step); step size = matched - none; total = std - none; the authors' "
             "batch arm: std - batch (per-prompt reweighting plus batch's smaller steps); batch "
             "step size = batch - none. Each arm's best rate is the best by final "
             f"`{metric}` among the rates in this folder, on the same seeds. Bold: paired mean "
             "[95% interval]; then p, Holm-adjusted p, the detectable difference and the unpaired "
             f"interval. **{comparisons} paired comparisons** in this table: at 5% each, about "
             f"{comparisons * 0.05:.1f} of them would exclude zero by chance alone.\n",
             f"| setting | effect | rates | training `{metric}` | held-out `{heldout}` |",
             "|---|---|---|---|---|"]
    table = [f"| {setting} | {name} ({a} - {b}) | {row['rates'][0]:g} vs {row['rates'][1]:g} | "
             f"{effect_cell(row['train'])} | {effect_cell(row['heldout'])} |"
             for setting, (name, a, b), row in rows]
    return lines + (table or ["| (needs two arms at one rate) | | | | |"])


def phases_table(phase_table: dict, metric: str, threshold: float) -> list[str]:
    if not phase_table:
        return []
    lines = [f"\n## Phases of the gap in `{metric}` (std minus none)\n",
             f"Rule: the smoothed, seed-averaged gap *opens* at the first step where it reaches "
             f"{threshold:.2f}, *holds* while it stays at or above {threshold / 2:.3f}, and "
             f"*closes* at the first later step below that.\n",
             "| optimizer / lr | opens at step | closes at step | largest gap (step) | "
             "final gap (paired 95% interval) |",
             "|---|---:|---:|---:|---|"]
    for setting, ph in phase_table.items():
        lines.append(f"| {setting} | {ph['opens']} | {ph['closes']} | "
                     f"{ph['max_gap']:+.3f} ({ph['max_gap_step']}) | {ph['final_gap']:+.3f} "
                     f"{interval_text(ph['final_gap_interval'])} |")
    return lines


def stat_text(s: dict, signed: bool = True) -> str:
    if s["mean"] != s["mean"]:  # nan: undefined on every seed
        return "-"
    if signed:
        return f"{s['mean']:+.3f} {interval_text(s['interval'])}"
    ci = s["interval"]
    return f"{s['mean']:.3f} " + (f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "(one seed)")


def diagnostics_report(diag_summary: dict) -> list[str]:
    lines = ["\n## Diagnostics, each beside its control\n",
             "Recomputed from diagnostics.jsonl (diagnostics.py): per seed, pooled over its "
             "diagnostic steps; shown as the mean over seeds [95% t-interval over seeds]. "
             "**Orthogonality**: the rms cosine of the true per-prompt gradients (unbiased "
             "products of independent estimates, numerator and denominator summed over all pairs "
             "before dividing; tested against known truth at the logs' dimension and noise), "
             "pooled over every prompt of every seed with its jackknife interval too; beside it "
             "the cross-prompt |cos| of the K-sample estimates, which is what the paper reports "
             "(mean 0.088) and which noise pulls toward 0, and the same-prompt |cos|, two "
             "estimates of one gradient whose truth is 1: the upper reference for what noisy "
             "estimates can show, not a noise floor.\n",
             "| arm | seeds | rms cos, true gradients: over seeds | pooled (jackknife) | "
             "cross-prompt \\|cos\\| of estimates | same-prompt \\|cos\\| |",
             "|---|---|---:|---:|---:|---:|"]
    older = []
    for arm, d in diag_summary.items():
        if "older_format" in d:
            older.append(arm)
            continue
        pooled = d["cos_rms_pooled"]
        pooled_text = (f"{pooled['rms']:.3f} [{pooled['low']:.3f}, {pooled['high']:.3f}] "
                       f"({pooled['prompts']} prompts)" if pooled else "-")
        lines.append(f"| {arm} | {','.join(map(str, d['seeds']))} | "
                     f"{stat_text(d['cos_rms'], False)} | {pooled_text} | "
                     f"{stat_text(d['cos_cross_abs_mean'], False)} | "
                     f"{stat_text(d['cos_same_prompt_abs_mean'], False)} |")
    lines += ["\n**Curvature vs reward std, apart from pass rate.** The proxy (mean |grad log p|^2 "
              "per token) from sample set A, the reward std from the independent set B. Pearson r "
              "within a step (pooled over steps, each step its own stratum), beside the "
              "curvature-free stand-in (the error rate of the same A samples: what counting wrong "
              "answers alone gives) and the correlation conditional on pass rate (within strata "
              "of prompts with the same number right in A). Across steps: the proxy at one "
              "diagnostic step against the std at the next, same prompts.\n",
              "| arm | r within | stand-in within | r within given pass rate | r across | "
              "stand-in across | r across given pass rate |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for arm, d in diag_summary.items():
        if "older_format" in d:
            continue
        lines.append(f"| {arm} | " + " | ".join(stat_text(d[k]) for k in (
            "r_curvature_within", "r_error_rate_within", "r_curvature_given_pass_rate_within",
            "r_curvature_across", "r_error_rate_across", "r_curvature_given_pass_rate_across"))
            + " |")
    if older:
        lines.append(f"\n{len(older)} arms ({', '.join(older)}) logged diagnostics of an older "
                     "diagnostics.py (per-pair |cos| lists, curvature and std from one sample "
                     "set): not summarised here; the estimators above need the Gram matrix and "
                     "independent sets that it did not log.")
    return lines


def figures_section(figures: list[Path]) -> list[str]:
    if not figures:
        return ["\n(no figures: matplotlib is not installed; `pip install matplotlib`)"]
    return ["\n## Figures\n"] + [f"![{f.stem}]({f.name})\n" for f in figures]


# -----------------------------------------------------------------------------
# Figures: one question each; one colour per estimator in every figure, rates as line styles

# Okabe-Ito colours (readable in colour-blindness and grey): each estimator keeps its colour in
# every figure of every report.
ARM_COLORS = {"std": "#0072B2", "matched": "#E69F00", "batch": "#009E73", "none": "#D55E00"}
RATE_STYLES = ["-", "--", ":", "-.", (0, (8, 2, 1, 2, 1, 2)), (0, (1, 4))]
COLLAPSED = 0.05  # a run whose final training accuracy is below this has collapsed


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


def normalizer(arm: str) -> str:
    return arm.split(" /")[0]


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.clf()
    return path


def contrast_color(a: str, b: str) -> str:
    """The colour of a difference a - b: that of the arm set against std (std - matched: matched's),
    else of the first arm (matched - none: matched's)."""
    return ARM_COLORS.get(b if a == "std" else a, "k")


def plot_effects(plt, rows: list[tuple], names: tuple[str, ...], title: str, labels: dict,
                 collapsed: set[str], path: Path) -> Path | None:
    """A forest plot of the effects named `names`: one row per (setting, effect), training and
    held-out side by side; the paired 95% interval thick, the unpaired one thin below it, the
    per-seed differences as dots. Rows where an arm collapsed on some seed (intervals spanning the
    whole scale) stay in the report's table only."""
    chosen = [(setting, effect, row) for setting, effect, row in rows if effect[0] in names
              and not set(row["arms"]) & collapsed]
    if not chosen:
        return None
    left_out = sum(1 for _, effect, row in rows if effect[0] in names
                   and set(row["arms"]) & collapsed)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(chosen) + 1.6), sharey=True)
    for ax, key in zip(axes, ("train", "heldout")):
        for y, (setting, (name, a, b), row) in enumerate(chosen):
            e, color = row.get(key), contrast_color(a, b)
            if not e:
                continue
            if e["unpaired"]["interval"]:
                ax.plot(e["unpaired"]["interval"], [y + 0.22] * 2, color=color, lw=1, alpha=0.6)
            if e["interval"]:
                ax.plot(e["interval"], [y, y], color=color, lw=4, solid_capstyle="butt")
            ax.plot(e["difference"], y, "o", color="white", mec=color, mew=2, ms=7, zorder=3)
            ax.plot(e["per_seed"], [y - 0.22] * len(e["per_seed"]), ".", color=color, alpha=0.8)
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_xlabel(f"difference in {labels[key]}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(chosen)))
    axes[0].set_yticklabels([f"{setting}: {name} ({a} - {b})"
                             for setting, (name, a, b), _ in chosen], fontsize=8)
    axes[0].invert_yaxis()
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color="0.3", lw=4, label="paired 95% interval (mean: circle)"),
               Line2D([], [], color="0.3", lw=1, label="unpaired 95% interval"),
               Line2D([], [], color="0.3", marker=".", ls="", label="per-seed differences")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
               frameon=False, fontsize=8)
    note = (f"\n({left_out} rows with an arm that collapsed on a seed: in the report's table "
            "only)" if left_out else "")
    fig.suptitle(title + note, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def curve_panels(plt, arms: dict, selected: list[str], keys: list[tuple[str, str]], window: int,
                 title: str, path: Path) -> Path:
    """Curves of the selected arms, one row of panels per optimizer and one panel per (metric key,
    label): the mean over seeds thick, each seed thin and faint beneath it (the spread without
    hiding the mean); colour = estimator, line style = rate."""
    optimizers = sorted({arms[a][0]["config"]["optimizer"] for a in selected})
    fig, axes = plt.subplots(len(optimizers), len(keys), squeeze=False,
                             figsize=(5.2 * len(keys), 3.6 * len(optimizers)))
    for row, opt in zip(axes, optimizers):
        mine = [a for a in selected if arms[a][0]["config"]["optimizer"] == opt]
        rates = sorted({arms[a][0]["config"]["lr"] for a in mine})
        for ax, (key, label) in zip(row, keys):
            for arm in mine:
                # held-out points are evaluations --eval-every steps apart: not smoothed (a
                # window of them would span that many evaluations), drawn with markers
                curve = arm_curve(arms[arm], key, 1 if key.startswith("eval/") else window)
                if curve is None:
                    continue
                steps, mean, seeds = curve
                color = ARM_COLORS.get(normalizer(arm), "k")
                style = RATE_STYLES[rates.index(arms[arm][0]["config"]["lr"]) % len(RATE_STYLES)]
                marker = "o" if key.startswith("eval/") else None
                for s in seeds:
                    ax.plot(steps, s, ls=style, color=color, lw=0.7, alpha=0.25)
                ax.plot(steps, mean, ls=style, color=color, lw=2, marker=marker, ms=3,
                        label=f"{arm} ({len(seeds)} seeds)")
            ax.set_title(f"{opt}: {label}", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        handles, names = row[-1].get_legend_handles_labels()
        row[-1].legend(handles, names, loc="center left", bbox_to_anchor=(1.02, 0.5),
                       frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def plot_rates(plt, arms: dict, metric: str, window: int, path: Path) -> Path | None:
    """How each estimator depends on its rate: one panel per estimator run at 2+ rates (its colour),
    one line style per rate."""
    by_norm: dict[tuple, list] = {}
    for arm, rs in arms.items():
        by_norm.setdefault((normalizer(arm), rs[0]["config"]["optimizer"]), []).append(arm)
    swept = {k: sorted(v, key=lambda a: arms[a][0]["config"]["lr"])
             for k, v in by_norm.items() if len(v) > 1}
    if not swept:
        return None
    rates = sorted({arms[a][0]["config"]["lr"] for v in swept.values() for a in v})
    fig, axes = plt.subplots(1, len(swept), figsize=(4.3 * len(swept), 3.6), squeeze=False,
                             sharey=True)
    for ax, ((norm, opt), selected) in zip(axes[0], sorted(swept.items())):
        for arm in selected:
            steps, mean, seeds = arm_curve(arms[arm], metric, window)
            lr = arms[arm][0]["config"]["lr"]
            style = RATE_STYLES[rates.index(lr) % len(RATE_STYLES)]
            for s in seeds:
                ax.plot(steps, s, ls=style, color=ARM_COLORS.get(norm, "k"), lw=0.6, alpha=0.25)
            ax.plot(steps, mean, ls=style, color=ARM_COLORS.get(norm, "k"), lw=2,
                    label=f"lr {lr:g}")
        ax.set_title(f"{norm} / {opt}", fontsize=9, color=ARM_COLORS.get(norm, "k"))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3,
                  frameon=False, handlelength=3.5)
    axes[0][0].set_ylabel(f"training {metric} ({window}-step mean)")
    fig.suptitle("Each estimator across its learning rates (mean over seeds thick, each seed "
                 "faint)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def plot_diagnostics(plt, diag_summary: dict, path: Path) -> Path | None:
    """Each diagnostic beside its control, per arm: mean over seeds with its t-interval, per-seed
    values as dots. Orthogonality (rms of the true gradients' cosine vs the paper's cross-prompt
    |cos| vs the same-prompt reference), curvature within a step and across steps (raw r, the
    error-rate stand-in, conditional on pass rate)."""
    arms = [a for a, d in diag_summary.items() if "older_format" not in d]
    if not arms:
        return None
    panels = [("Orthogonality: |cos| between per-prompt gradients",
               [("cos_rms", "rms cos,\ntrue gradients"),
                ("cos_cross_abs_mean", "cross-prompt |cos|\nof estimates (paper's)"),
                ("cos_same_prompt_abs_mean", "same-prompt |cos|\n(upper reference)")]),
              ("Curvature vs reward std, within a step",
               [("r_curvature_within", "r(curvature, std)"),
                ("r_error_rate_within", "r(error rate, std)\nstand-in"),
                ("r_curvature_given_pass_rate_within", "r(curvature, std)\ngiven pass rate")]),
              ("... across steps (same prompts)",
               [("r_curvature_across", "r(curvature, std)"),
                ("r_error_rate_across", "r(error rate, std)\nstand-in"),
                ("r_curvature_given_pass_rate_across", "r(curvature, std)\ngiven pass rate")])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(arms)
    for ax, (title, stats) in zip(axes, panels):
        for j, arm in enumerate(arms):
            color = ARM_COLORS.get(normalizer(arm), "k")
            for x, (stat, _) in enumerate(stats):
                s = diag_summary[arm][stat]
                pos = x - 0.4 + width * (j + 0.5)
                if s["interval"]:
                    ax.plot([pos, pos], s["interval"], color=color, lw=3, alpha=0.7)
                if s["mean"] == s["mean"]:
                    ax.plot(pos, s["mean"], "o", color="white", mec=color, mew=2, ms=6,
                            label=arm if x == 0 else None)
                ax.plot([pos] * len(s["per_seed"]), list(s["per_seed"].values()), ".",
                        color=color, ms=4)
        ax.set_xticks(range(len(stats)))
        ax.set_xticklabels([label for _, label in stats], fontsize=8)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               fontsize=8, title="mean over seeds, 95% interval;\ndots: seeds", title_fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_figures(arms: dict, summary: dict, rows: list[tuple], diag_summary: dict, metric: str,
                 heldout: str | None, window: int, out: Path) -> list[Path]:
    """per_prompt_effect.png, step_size_effect.png, best_rates.png, rates.png (when an estimator
    ran at 2+ rates) and diagnostics.png (when logged); none without matplotlib."""
    plt = pyplot()
    if not plt:
        return []
    labels = {"train": f"training {metric}", "heldout": f"held-out {heldout}"}
    # an arm whose final training accuracy fell below COLLAPSED on some seed
    collapsed = {arm for arm, s in summary.items()
                 if min(s["final_per_seed"].get(metric, {0: 1.0}).values()) < COLLAPSED}
    paths = [plot_effects(plt, rows, ("per-prompt", "authors' batch arm"),
                          "The per-prompt effect: std - matched (same step size), and the "
                          "authors' std - batch", labels, collapsed,
                          out / "per_prompt_effect.png"),
             plot_effects(plt, rows, ("step size", "batch step size", "total"),
                          "The step-size effect: matched - none and batch - none, beside the "
                          "total std - none", labels, collapsed, out / "step_size_effect.png")]
    best = sorted(set(best_rates(summary, metric).values()))
    keys = [(metric, f"training {metric} ({window}-step mean)")]
    keys += [(heldout, f"held-out {heldout}")] if heldout else []
    paths.append(curve_panels(plt, arms, best, keys, window, "Each arm at its best rate (mean "
                              "over seeds thick, each seed faint)", out / "best_rates.png"))
    paths.append(plot_rates(plt, arms, metric, window, out / "rates.png"))
    if diag_summary:
        paths.append(plot_diagnostics(plt, diag_summary, out / "diagnostics.png"))
    plt.close("all")
    return [p for p in paths if p]


# -----------------------------------------------------------------------------
# compare: run folders -> report.md, summary.json, figures


def jsonable(x):
    if isinstance(x, dict):
        # cos_terms: prompts x prompts matrices per seed, rebuilt from diagnostics.jsonl at will
        return {str(k): jsonable(v) for k, v in x.items() if k != "cos_terms"}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def compare(argv=None):
    ap = argparse.ArgumentParser(prog="study.py compare", description="Compare GRPO runs: the "
                                 "arms' effects paired by seed, diagnostics with intervals.")
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
    # A run still going (or stopped early) has fewer steps than its config says: comparing its
    # last 10% with finished runs' would compare different steps, so it is left out, by name.
    unfinished = [r for r in runs if not finished(r)]
    runs = [r for r in runs if finished(r)]
    if not runs:
        sys.exit(f"error: no finished runs in {args.runs} (unfinished: "
                 f"{', '.join(str(r['dir']) for r in unfinished)})")
    # Both checks, the design first: a run that differs only in its update (another std
    # estimator, say) draws the same step-1 rollouts, so the pairing check alone lets it in.
    problem = check_design(runs) or check_pairing(runs)
    if problem:
        sys.exit(f"error: {problem}")
    arms: dict[str, list] = {}
    for r in runs:
        arms.setdefault(arm_of(r["config"]), []).append(r)
    logged = {k for r in runs for m in r["metrics"] for k in m}
    keys = sorted(k for k in logged if k.startswith("accuracy"))
    # Hard by default: where the paper reports its gap (81% vs 76%); strict held-out accuracy,
    # the reading the training reward uses
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
    comparisons = adjust_for_comparisons(effect_rows)
    phase_table = gap_phases(arms, summary, metric, args.window, args.gap_threshold)
    diag_summary = {arm: d for arm, rs in sorted(arms.items())
                    if (d := diagnostic_summary(rs)) is not None}

    report = (intro_section(runs, len(arms), args.window, metric, heldout, unfinished)
              + arms_table(summary, keys + heldout_keys, metric, heldout)
              + effects_table(effect_rows, metric, heldout, comparisons)
              + phases_table(phase_table, metric, args.gap_threshold)
              + (diagnostics_report(diag_summary) if diag_summary else []))
    figures = plot_figures(arms, summary, effect_rows, diag_summary, metric, heldout,
                           args.window, out)
    report += figures_section(figures)

    (out / "report.md").write_text("\n".join(report) + "\n")
    effects = {f"{setting}: {name} ({a} - {b})": row for setting, (name, a, b), row in effect_rows}
    (out / "summary.json").write_text(json.dumps(jsonable(
        {"metric": metric, "heldout_metric": heldout, "arms": summary, "effects": effects,
         "comparisons": comparisons, "phases": phase_table, "diagnostics": diag_summary,
         "window": args.window}), indent=2) + "\n")
    print("\n".join(report))
    print(f"\nwrote {out}/report.md, {out}/summary.json"
          + (f" and {len(figures)} figures" if figures else ""))
    return summary


# -----------------------------------------------------------------------------
# sweep: every (lr, normalize, seed), resumable, then compare


def sweep(argv=None):
    ap = argparse.ArgumentParser(prog="study.py sweep", description="Run grpo.py for every "
                                 "(normalize, lr, seed); then compare best vs best.")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--lrs", required=True, help="comma-separated learning rates")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--normalize", default="std,matched,batch,none")
    ap.add_argument("--out", required=True)
    ap.add_argument("extra", nargs=argparse.REMAINDER,
                    help="after --: more grpo.py flags for every run")
    args = ap.parse_args(argv)
    import grpo
    extra = [a for a in args.extra if a != "--"]
    out = Path(args.out)
    # rate outermost: a sweep cut short holds every arm of the rates it finished, the sets that
    # compare pairs
    for lr in args.lrs.split(","):
        for normalize in args.normalize.split(","):
            for seed in args.seeds.split(","):
                run_dir = out / f"{normalize}-{args.optimizer}-lr{lr}-s{seed}"
                if (run_dir / "metrics.jsonl").is_file() and finished(read_run(run_dir)):
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
                # --resume takes no other flag: the run goes on with its own config.json
                flags = ["--resume", str(run_dir)] if run_dir.exists() else \
                    ["--preset", args.preset, "--optimizer", args.optimizer, "--lr", lr,
                     "--normalize", normalize, "--seed", seed, "--out", str(run_dir), *extra]
                print(f"=== python grpo.py {' '.join(flags)}", flush=True)
                grpo.main(flags)
    compare([str(out), "--out", str(out / "report")])


def finished(run: dict) -> bool:
    """A read run (read_run) whose last logged step reached its config's steps."""
    steps = run["config"].get("steps")
    return steps is None or bool(run["metrics"]) and run["metrics"][-1]["step"] >= steps


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"compare": compare, "sweep": sweep}
    usage = ("usage: python study.py compare RUN_DIR ... [--out DIR] | "
             "sweep --lrs LRS --out DIR [...] (--help after either for its flags)")
    if argv[:1] in (["-h"], ["--help"]):  # asked for: the usage on stdout, exit 0
        print(usage)
        return None
    if not argv or argv[0] not in commands:
        sys.exit(usage)
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
