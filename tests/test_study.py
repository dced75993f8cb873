"""study.py: `compare` on synthetic run folders (paired and unpaired effects, phases, diagnostics,
intervals by hand), the pairing check, `sweep` with resume, and study.py's command line."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import study as S


def write_run(folder: Path, normalize: str, seed: int, slope: float, lr=1e-3, optimizer="adamw",
              steps=40, diag=False, level=None, heldout=None):
    """A synthetic run folder. level: constant training accuracy (else a noisy line of the given
    slope); heldout: the held-out accuracy at every evaluation (steps 0, 20, 40). Step 1's rollout
    metrics depend on the seed only, as in real runs of one seed (see check_pairing)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"normalize": normalize, "optimizer": optimizer,
                                                    "lr": lr, "seed": seed, "steps": steps}))
    with (folder / "metrics.jsonl").open("w") as f:
        if heldout is not None:
            f.write(json.dumps({"step": 0, "eval/samples/strict/accuracy": 0.1,
                                "eval/problems": 128}) + "\n")
        for step in range(1, steps + 1):
            hard = (level if level is not None
                    else min(1.0, 0.15 + slope * step + rng.normal(0, 0.02)))
            m = {"step": step, "accuracy": hard, "accuracy/easy": min(1.0, 0.5 + slope * step),
                 "accuracy/hard": hard, "reward_std": 0.3, "time/step": 1.0}
            if step == 1:
                m |= {"accuracy": 0.2 + 0.01 * seed, "accuracy/easy": 0.3 + 0.01 * seed,
                      "accuracy/hard": 0.1 + 0.01 * seed, "completion_len": 30.0 + seed,
                      "entropy": 0.11895706121443714 + seed}
            if heldout is not None and step % 20 == 0:
                m |= {"eval/samples/strict/accuracy": heldout, "eval/problems": 128}
            f.write(json.dumps(m) + "\n")
    if diag:
        write_diagnostics(folder, range(10, steps + 1, 10))


def write_diagnostics(folder: Path, steps):
    """Four prompts per diagnostic step whose two estimates are both exactly g_i: e1, e1, e2, e2
    (pairwise cos 1 within each pair, 0 across); proxy = 10 x the std of set B (r = 1), right
    answers in A 2, 2, 3, 3 (two strata of two)."""
    g = np.array([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    S = np.vstack([g, g])
    with (folder / "diagnostics.jsonl").open("w") as f:
        for step in steps:
            for i, (std, right) in enumerate(zip([0.1, 0.2, 0.3, 0.4], [2, 2, 3, 3])):
                row = {"step": step, "id": str(i), "right_a": right, "pass_rate_a": right / 8,
                       "curvature_a": 10 * std, "pass_rate_b": 0.5, "reward_std_b": std}
                if i == 0:
                    row["gram"] = (S @ S.T).tolist()
                f.write(json.dumps(row) + "\n")


@pytest.fixture()
def runs(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / "runs" / f"std-s{seed}", "std", seed, slope=0.012, diag=True)
        write_run(tmp_path / "runs" / f"none-s{seed}", "none", seed, slope=0.006, diag=True)
        write_run(tmp_path / "runs" / f"none-lr2-s{seed}", "none", seed, slope=0.011, lr=2e-3)
        write_run(tmp_path / "runs" / f"std-lr2-s{seed}", "std", seed, slope=0.010, lr=2e-3)
    return tmp_path / "runs"


def test_compare_writes_report_figures_and_phases(runs, tmp_path):
    pytest.importorskip("matplotlib")
    summary = S.compare([str(runs), "--out", str(tmp_path / "rep"), "--window", "5"])
    report = (tmp_path / "rep/report.md").read_text()
    for name in ("best_rates", "rates", "step_size_effect", "diagnostics"):
        assert (tmp_path / f"rep/{name}.png").stat().st_size > 10_000, name
        assert f"![{name}]({name}.png)" in report
    assert not (tmp_path / "rep/per_prompt_effect.png").exists()  # no matched or batch arm
    assert "The effects, paired by seed" in report and "Phases" in report
    assert set(summary) == {"std / adamw / lr 0.001", "none / adamw / lr 0.001",
                            "none / adamw / lr 0.002", "std / adamw / lr 0.002"}
    data = json.loads((tmp_path / "rep/summary.json").read_text())
    d = data["diagnostics"]["std / adamw / lr 0.001"]
    assert d["seeds"] == [0, 1] and d["steps"] == [4, 4]
    # estimates e1, e1, e2, e2 without noise: 2 of 6 pairs at cos 1, the rest 0: rms sqrt(1/3)
    assert d["cos_rms"]["mean"] == pytest.approx(math.sqrt(1 / 3))
    assert d["cos_rms_pooled"]["rms"] == pytest.approx(math.sqrt(1 / 3))
    assert d["cos_rms_pooled"]["prompts"] == 8  # 4 prompts x 2 seeds
    assert d["cos_cross_abs_mean"]["mean"] == pytest.approx(1 / 3)
    assert d["cos_same_prompt_abs_mean"]["mean"] == pytest.approx(1.0)
    # curvature = 10 x std: r = 1 within a step, across steps, and within the strata of right_A;
    # the stand-in, error rates 6/8, 6/8, 5/8, 5/8 against stds .1-.4: -0.025 / (0.125 x 0.2236)
    for when in ("within", "across"):
        assert d[f"r_curvature_{when}"]["mean"] == pytest.approx(1.0)
        assert d[f"r_curvature_given_pass_rate_{when}"]["mean"] == pytest.approx(1.0)
        assert d[f"r_error_rate_{when}"]["mean"] == pytest.approx(-0.025 / (0.125 * 0.05 ** 0.5))
    assert d["r_curvature_within"]["interval"] == pytest.approx([1.0, 1.0])  # same on both seeds
    phase = data["phases"]["adamw / lr 0.001"]
    # std rises 0.006/step faster: the smoothed gap reaches 0.03 after ~5-8 steps and never closes
    assert phase["opens"] is not None and 3 <= phase["opens"] <= 12 and phase["closes"] is None
    # best vs best: std at its lr 0.001 (slope 0.012), none at its lr 0.002 (slope 0.011)
    best = data["effects"]["adamw / each at its best lr: total (std - none)"]
    assert best["rates"] == [0.001, 0.002]
    lo, hi = phase["final_gap_interval"]
    assert lo < phase["final_gap"] < hi


def test_diagnostics_over_seeds_by_hand():
    """Correlations averaged over seeds as Fisher z: r = 0.2, 0.4, 0.6 -> z = 0.2027, 0.4236,
    0.6931, mean 0.4398 (r 0.4133), sd 0.2455, t(0.975, 2) = 4.303: z in [-0.170, 1.050], r in
    [-0.168, 0.782]. Cosines: a plain t-interval, cut to 0..1."""
    out = S.seed_interval({0: 0.2, 1: 0.4, 2: 0.6}, correlation=True)
    z = [math.atanh(r) for r in (0.2, 0.4, 0.6)]
    half = 4.303 * np.std(z, ddof=1) / math.sqrt(3)
    assert out["mean"] == pytest.approx(math.tanh(np.mean(z)))
    assert out["interval"] == pytest.approx([math.tanh(np.mean(z) - half),
                                             math.tanh(np.mean(z) + half)], abs=1e-4)
    cos = S.seed_interval({0: 0.01, 1: 0.2, 2: 0.05}, correlation=False)
    assert cos["mean"] == pytest.approx(0.26 / 3) and cos["interval"][0] == 0
    half = 12.706 * np.std([0.3, 0.9], ddof=1) / math.sqrt(2)  # 0.6 +- 3.81: cut to [0, 1]
    assert half > 0.6 and S.seed_interval({0: 0.3, 1: 0.9}, False)["interval"] == (0.0, 1.0)


def test_the_decomposition_paired_by_hand(tmp_path):
    """Constant accuracies per seed (0, 1, 2): std .60 .63 .61, matched .55 .57 .56, batch
    .50 .53 .52, none .45 .46 .48. Per seed, std - matched = .05 .06 .05: mean .05333, sd .005774,
    se .003333, t(0.975, 2) = 4.303: [+.0390, +.0677]; the unpaired interval of the same seeds is
    wider: pooled variance (.000233 + .0001) / 2, se .01054, t(0.975, 4) = 2.776."""
    finals = {"std": [0.60, 0.63, 0.61], "matched": [0.55, 0.57, 0.56],
              "batch": [0.50, 0.53, 0.52], "none": [0.45, 0.46, 0.48]}
    for arm, levels in finals.items():
        for seed, level in enumerate(levels):
            write_run(tmp_path / "runs" / f"{arm}-s{seed}", arm, seed, 0.0, level=level,
                      heldout=0.4)
    S.compare([str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    data = json.loads((tmp_path / "rep/summary.json").read_text())
    e = data["effects"]["adamw / lr 0.001: per-prompt (std - matched)"]["train"]
    assert e["per_seed"] == pytest.approx([0.05, 0.06, 0.05])
    assert e["difference"] == pytest.approx(0.16 / 3)
    assert e["interval"] == pytest.approx([0.16 / 3 - 4.303 * 0.01 / 3,
                                           0.16 / 3 + 4.303 * 0.01 / 3], abs=1e-4)
    assert e["detectable"] == pytest.approx((4.303 + 1.061) * 0.01 / 3, abs=1e-4)
    # t = 0.05333 / 0.003333 = 16.0 on 2 df: two-sided p = 1 - 16 / sqrt(16^2 + 2) = 0.003884
    assert e["p"] == pytest.approx(1 - 16 / math.sqrt(258), abs=1e-4)
    se = math.sqrt((np.var(finals["std"], ddof=1) + np.var(finals["matched"], ddof=1)) / 2 * 2 / 3)
    assert e["unpaired"]["interval"] == pytest.approx([0.16 / 3 - 2.776 * se,
                                                       0.16 / 3 + 2.776 * se], abs=1e-4)
    names = set(data["effects"])
    for name in ("per-prompt (std - matched)", "step size (matched - none)", "total (std - none)",
                 "authors' batch arm (std - batch)", "batch step size (batch - none)"):
        assert f"adamw / lr 0.001: {name}" in names
    # 5 effects in training; held-out is 0.4 in every run: arms identical on every seed there are
    # no comparison (one prompt per step, std = batch, is the real case)
    assert data["comparisons"] == 5
    held = data["effects"]["adamw / lr 0.001: total (std - none)"]["heldout"]
    assert held["difference"] == 0 and held["p"] == 1.0 and "p_holm" not in held
    train = [data["effects"][k]["train"] for k in data["effects"]]
    for cell, adjusted in zip(train, S.holm([c["p"] for c in train])):
        assert cell["p_holm"] == pytest.approx(adjusted)
    report = (tmp_path / "rep/report.md").read_text()
    assert "**5 paired comparisons**" in report
    assert ("| adamw / lr 0.001 | per-prompt (std - matched) | 0.001 vs 0.001 | **+0.053 "
            f"[+0.039, +0.068]** (p 0.004, Holm {e['p_holm']:.2f}; detectable 0.018); "
            "unpaired") in report
    assert "| identical on every seed |" in report


def test_runs_that_do_not_pair_are_one_clear_error(tmp_path, capsys):
    """A seed's arms must have drawn the same step-1 rollouts; a run from another machine (its
    first step's accuracy differs) is named, and so are two runs of one arm and seed."""
    for arm in ("std", "none"):
        write_run(tmp_path / "a" / f"{arm}-s0", arm, 0, 0.01)
    metrics = tmp_path / "a/none-s0/metrics.jsonl"
    lines = metrics.read_text().splitlines()
    first = json.loads(lines[0]) | {"accuracy": 0.5}
    metrics.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    with pytest.raises(SystemExit) as e:
        S.compare([str(tmp_path / "a"), "--out", str(tmp_path / "rep")])
    message = str(e.value)
    assert message.startswith("error: runs ") and "\n" not in message
    assert "std-s0" in message and "none-s0" in message and "(accuracy 0.5 vs 0.2)" in message
    # the same rollouts scored on another CPU: only the entropy's last bits differ (Intel vs AMD,
    # the first study's std-sgd-lr0.125-s0 and the paired one's)
    metrics.write_text("\n".join([json.dumps(json.loads(lines[0])
                                             | {"entropy": 0.11895707701846517})]
                                 + lines[1:]) + "\n")
    with pytest.raises(SystemExit, match=r"\(entropy 0.11895707701846517 vs 0.11895706121443714\)"):
        S.compare([str(tmp_path / "a"), "--out", str(tmp_path / "rep")])
    write_run(tmp_path / "b" / "std-s0", "std", 0, 0.01)
    write_run(tmp_path / "b" / "std-copy-s0", "std", 0, 0.01)
    with pytest.raises(SystemExit, match="are both arm 'std / adamw / lr 0.001', seed 0"):
        S.compare([str(tmp_path / "b"), "--out", str(tmp_path / "rep")])


def test_runs_of_another_design_are_one_clear_error(tmp_path):
    """Runs of one optimizer and rate may differ only in the arm, the seed and bookkeeping: a run
    with another std estimator is named with the flag, not pooled into its arm; where a run was
    written, or an older config without the field (population, as then computed), is no
    difference."""
    for arm in ("std", "none"):
        write_run(tmp_path / "a" / f"{arm}-s0", arm, 0, 0.01)
    config = tmp_path / "a/std-s0/config.json"
    c = json.loads(config.read_text())
    config.write_text(json.dumps(c | {"std_estimator": "population", "out": "elsewhere"}))
    S.compare([str(tmp_path / "a"), "--out", str(tmp_path / "rep")])
    config.write_text(json.dumps(c | {"std_estimator": "bessel"}))
    with pytest.raises(SystemExit) as e:
        S.compare([str(tmp_path / "a"), "--out", str(tmp_path / "rep")])
    message = str(e.value)
    assert message.startswith("error: runs ") and "\n" not in message
    assert "std-s0" in message and "none-s0" in message
    assert ("differ in --std-estimator ('population' vs 'bessel')" in message
            or "differ in --std-estimator ('bessel' vs 'population')" in message)


def test_unfinished_runs_are_left_out_by_name(tmp_path, capsys):
    """A run still going has fewer logged steps than its config's: its last 10% would be other
    steps than the finished runs', so the report leaves it out and names it."""
    for seed in (0, 1):
        write_run(tmp_path / "a" / f"std-s{seed}", "std", seed, 0.01)
        write_run(tmp_path / "a" / f"none-s{seed}", "none", seed, 0.005)
    metrics = tmp_path / "a/none-s1/metrics.jsonl"
    metrics.write_text("\n".join(metrics.read_text().splitlines()[:25]) + "\n")
    summary = S.compare([str(tmp_path / "a"), "--out", str(tmp_path / "rep")])
    assert summary["none / adamw / lr 0.001"]["seeds"] == [0]
    assert summary["std / adamw / lr 0.001"]["seeds"] == [0, 1]
    assert "3 runs in 2 arms" in (report := (tmp_path / "rep/report.md").read_text())
    assert "Left out, unfinished" in report and ": none-s1." in report
    for d in ("std-s0", "std-s1", "none-s0"):
        (tmp_path / "a" / d / "metrics.jsonl").write_text("")
    metrics.unlink()
    with pytest.raises(SystemExit, match="error: no finished runs in"):
        S.compare([str(tmp_path / "a"), "--out", str(tmp_path / "rep")])


def test_two_sided_p_against_the_t_density():
    """df 2: P(|T| >= t) = 1 - t / sqrt(t^2 + 2) exactly; df 1 (Cauchy): 1 - 2 atan(t) / pi; other
    df: the oracle below."""
    for t in (0.5, 2.0, 4.303, 16.0):
        assert S.t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-7)
        assert S.t_two_sided_p(-t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, abs=1e-7)
    for df in (3, 7, 30):
        assert S.t_two_sided_p(S.T975[df - 1], df) == pytest.approx(0.05, abs=5e-4)
        assert S.t_two_sided_p(1.3, df) == pytest.approx(2 * (1 - student_t_cdf(1.3, df)),
                                                         abs=1e-5)


def test_holm_by_hand():
    # sorted p .01, .02, .04, .30 times 4, 3, 2, 1 = .04, .06, .08, .30, kept non-decreasing
    assert S.holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])


def test_compare_without_matplotlib_still_writes_numbers(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    S.compare([str(runs), "--out", str(tmp_path / "rep")])
    assert "pip install matplotlib" in capsys.readouterr().out
    assert (tmp_path / "rep/report.md").is_file() and not (tmp_path / "rep/curves.png").exists()


def test_study_py_compare_is_study_compare(runs, tmp_path, monkeypatch):
    """`python study.py compare ...` (the README's command) writes what study.compare writes."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # numbers only: quick
    S.compare([str(runs), "--out", str(tmp_path / "direct")])
    S.main(["compare", str(runs), "--out", str(tmp_path / "cli")])
    for name in ("report.md", "summary.json"):
        assert (tmp_path / "cli" / name).read_text() == (tmp_path / "direct" / name).read_text()


def test_study_py_without_a_command_says_its_usage(capsys):
    with pytest.raises(SystemExit, match="usage: python study.py compare"):
        S.main(["theory"])
    with pytest.raises(SystemExit, match="usage: python study.py compare"):
        S.main([])
    S.main(["--help"])  # asked for: printed, no error
    assert capsys.readouterr().out.startswith("usage: python study.py compare")


def test_phase_rule_by_hand():
    steps = np.arange(1, 9)
    gap = np.array([0.0, 0.01, 0.04, 0.05, 0.03, 0.01, 0.0, 0.0])
    assert S.phases(steps, gap, 0.03) == {"opens": 3, "closes": 6, "max_gap": 0.05,
                                          "max_gap_step": 4}
    assert S.phases(steps, gap * 0, 0.03)["opens"] is None


def test_smoothing_is_a_trailing_mean():
    np.testing.assert_allclose(S.smooth(np.array([1.0, 2, 3, 4]), 2), [1.0, 1.5, 2.5, 3.5])


def test_sweep_runs_every_arm_skips_complete_runs_and_restarts_interrupted_ones(tmp_path, capsys):
    out = tmp_path / "sweep"
    tiny = ["--", "--steps", "2", "--prompts-per-step", "2", "--group-size", "4",
            "--max-new-tokens", "24", "--save-every", "2", "--log-samples-every", "100",
            "--eval-every", "0"]
    # an arm stopped before its first checkpoint: a config and one metrics line, nothing to resume
    stopped = out / "none-sgd-lr0.1-s0"
    stopped.mkdir(parents=True)
    (stopped / "config.json").write_text(json.dumps({"steps": 2}))
    (stopped / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    S.sweep(["--optimizer", "sgd", "--lrs", "0.1", "--seeds", "0", "--out", str(out), *tiny])
    for arm in ("std", "matched", "batch", "none"):
        rows = [json.loads(x) for x in
                (out / f"{arm}-sgd-lr0.1-s0/metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
    # the arms of a seed pair: identical step-1 rollouts (compare checks it too)
    firsts = [S.first_rollouts(S.read_run(out / f"{arm}-sgd-lr0.1-s0"))
              for arm in ("std", "matched", "batch", "none")]
    assert firsts[0] and all(f == firsts[0] for f in firsts)
    (aside,) = (out / "interrupted").iterdir()
    assert aside.name.startswith("none-sgd-lr0.1-s0-")
    assert (aside / "metrics.jsonl").read_text().count("\n") == 1
    assert (out / "report/report.md").is_file()
    capsys.readouterr()
    # again, as the README runs it (python study.py sweep ...): every arm is complete
    S.main(["sweep", "--optimizer", "sgd", "--lrs", "0.1", "--seeds", "0", "--out", str(out),
            *tiny])
    assert capsys.readouterr().out.count("(complete)") == 4


def test_difference_interval_by_hand():
    # a = [1, 2, 3], b = [0, 0, 3]: means 2 and 1; sample variances 1 and 3, pooled 2;
    # se = sqrt(2 * 2/3); t(0.975, df 4) = 2.776 (tables)
    lo, hi = S.difference_interval([1, 2, 3], [0, 0, 3])
    half = 2.776 * (2 * 2 / 3) ** 0.5
    assert lo == pytest.approx(1 - half, abs=1e-3) and hi == pytest.approx(1 + half, abs=1e-3)
    assert S.difference_interval([1.0], [0.0, 1.0]) is None


def student_t_cdf(x: float, df: int, steps: int = 200_000) -> float:
    """P(T <= x) by the trapezoid rule over the t density (an oracle independent of the tables)."""
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    t = np.linspace(0.0, x, steps)
    pdf = np.exp(logc - (df + 1) / 2 * np.log1p(t * t / df))
    return 0.5 + float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(t)))


def test_t_tables_are_the_t_quantiles():
    for df in range(1, 31):
        assert student_t_cdf(S.T975[df - 1], df) == pytest.approx(0.975, abs=5e-4)
        assert student_t_cdf(S.T80[df - 1], df) == pytest.approx(0.80, abs=5e-4)


def test_detectable_difference_by_hand():
    # the same seeds as above: pooled variance 2, se = sqrt(2 * 2/3), df 4: (2.776 + 0.941) * se
    assert S.detectable_difference([1, 2, 3], [0, 0, 3]) == pytest.approx(
        (2.776 + 0.941) * (2 * 2 / 3) ** 0.5, abs=1e-3)
    assert S.detectable_difference([1.0], [0.0, 1.0]) is None
    # at that size the test has 80% power: simulated, normal seeds with the true gap = detectable
    rng = np.random.default_rng(0)
    gap = S.detectable_difference([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])  # sd 1, n 3 + 3
    hits = [S.difference_interval(list(rng.normal(gap, 1, 3)), list(rng.normal(0, 1, 3)))[0] > 0
            for _ in range(4000)]
    assert np.mean(hits) == pytest.approx(0.80, abs=0.04)


def test_best_vs_best_needs_a_sweep(runs, tmp_path):
    S.compare([str(runs / "std-s0"), str(runs / "none-s0"), "--out", str(tmp_path / "rep")])
    report = (tmp_path / "rep/report.md").read_text()
    assert "| adamw / lr 0.001 | total (std - none) |" in report
    assert "each at its best lr" not in report
