"""study.py: `compare` on synthetic run folders (effects, phases, diagnostics, intervals by hand),
`sweep` with resume, and eval.py's compare and sweep commands landing here."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import eval as E
import study as S


def write_run(folder: Path, normalize: str, seed: int, slope: float, lr=1e-3, optimizer="adamw",
              steps=40, diag=False, level=None, heldout=None):
    """A synthetic run folder. level: constant training accuracy (else a noisy line of the given
    slope); heldout: the held-out accuracy at every evaluation (steps 0, 20, 40)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"normalize": normalize, "optimizer": optimizer,
                                                    "lr": lr, "seed": seed, "steps": steps}))
    with (folder / "metrics.jsonl").open("w") as f:
        if heldout is not None:
            f.write(json.dumps({"step": 0, "eval/samples/strict/accuracy": 0.1}) + "\n")
        for step in range(1, steps + 1):
            hard = (level if level is not None
                    else min(1.0, 0.15 + slope * step + rng.normal(0, 0.02)))
            m = {"step": step, "reward": hard, "accuracy": hard,
                 "accuracy/easy": min(1.0, 0.5 + slope * step), "accuracy/hard": hard,
                 "reward_std": 0.3, "time/step": 1.0}
            if diag and step % 10 == 0:
                m |= {"diag/cos_abs_mean": 0.1, "diag/cos_abs_p90": 0.2,
                      "diag/curvature_std_corr": 0.3}
                if step > 10:
                    m["diag/curvature_std_corr_across"] = -0.1
            if heldout is not None and step % 20 == 0:
                m["eval/samples/strict/accuracy"] = heldout
            f.write(json.dumps(m) + "\n")
    if diag:  # per-prompt rows: curvature = 10 * reward std (r = 1), cosines 0.1 / 0.3
        with (folder / "diagnostics.jsonl").open("w") as f:
            for step in range(10, steps + 1, 10):
                for i, std in enumerate([0.1, 0.2, 0.3, 0.4]):
                    row = {"step": step, "id": str(i), "reward_std": std, "curvature": 10 * std}
                    if i == 0:
                        row |= {"abs_cosines": [0.1, 0.3],
                                "abs_cosines_same_prompt": [0.5, 0.3, 0.4],
                                "abs_cosines_debiased": [0.2]}
                    f.write(json.dumps(row) + "\n")


@pytest.fixture()
def runs(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / "runs" / f"std-s{seed}", "std", seed, slope=0.012, diag=True)
        write_run(tmp_path / "runs" / f"none-s{seed}", "none", seed, slope=0.006, diag=True)
        write_run(tmp_path / "runs" / f"none-lr2-s{seed}", "none", seed, slope=0.011, lr=2e-3)
        write_run(tmp_path / "runs" / f"std-lr2-s{seed}", "std", seed, slope=0.010, lr=2e-3)
    return tmp_path / "runs"


def test_compare_writes_report_figure_and_phases(runs, tmp_path):
    pytest.importorskip("matplotlib")
    summary = S.compare([str(runs), "--out", str(tmp_path / "rep"), "--window", "5"])
    report = (tmp_path / "rep/report.md").read_text()
    assert (tmp_path / "rep/curves.png").stat().st_size > 10_000
    assert "The effects" in report and "Phases" in report and "Diagnostics" in report
    assert (tmp_path / "rep/diagnostics.png").is_file()
    assert set(summary) == {"std / adamw / lr 0.001", "none / adamw / lr 0.001",
                            "none / adamw / lr 0.002", "std / adamw / lr 0.002"}
    data = json.loads((tmp_path / "rep/summary.json").read_text())
    # 2 seeds x 4 diagnostic steps x 2 cosines (0.1, 0.3); curvature = 10 x reward std in every step
    d = data["diagnostics"]["std / adamw / lr 0.001"]
    assert d["cross_pairs"] == 16 and d["cross_mean"] == pytest.approx(0.2)
    assert d["r_within"] == pytest.approx(1.0)
    assert d["same_prompt_pairs"] == 24 and d["same_prompt_mean"] == pytest.approx(0.4)
    assert d["debiased_mean"] == pytest.approx(0.2) and d["r_across"] == pytest.approx(-0.1)
    assert d["r_within_signal"] == pytest.approx(1.0)
    phase = data["phases"]["adamw / lr 0.001"]
    # std rises 0.006/step faster: the smoothed gap reaches 0.03 after ~5-8 steps and never closes
    assert phase["opens"] is not None and 3 <= phase["opens"] <= 12 and phase["closes"] is None
    # best vs best: std at its lr 0.001 (slope 0.012), none at its lr 0.002 (slope 0.011)
    best = data["effects"]["adamw / each at its best lr: total"]
    assert best["rates"] == [0.001, 0.002]
    lo, hi = phase["final_gap_interval"]
    assert lo < phase["final_gap"] < hi


def test_the_three_arm_decomposition_by_hand(tmp_path):
    """Constant accuracies: std 0.60 / 0.62 (seeds 0, 1), batch 0.50 / 0.52, none 0.45 / 0.47,
    held-out std 0.4, batch 0.3, none 0.3. Per-prompt effect +0.10, step-size +0.05, total +0.15;
    each pair of arms has pooled variance 0.0002 and se 0.01414, t(0.975, 2) = 4.303, so every
    training interval is +-0.0609."""
    for seed in (0, 1):
        for arm, level, held in (("std", 0.60, 0.4), ("batch", 0.50, 0.3), ("none", 0.45, 0.3)):
            write_run(tmp_path / "runs" / f"{arm}-s{seed}", arm, seed, 0.0,
                      level=level + 0.02 * seed, heldout=held)
    S.compare([str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    data = json.loads((tmp_path / "rep/summary.json").read_text())
    assert data["heldout_metric"] == "eval/samples/strict/accuracy"
    for name, diff, held in (("per-prompt effect", 0.10, 0.1), ("step-size effect", 0.05, 0.0),
                             ("total", 0.15, 0.1)):
        e = data["effects"][f"adamw / lr 0.001: {name}"]
        assert e["train"]["difference"] == pytest.approx(diff)
        lo, hi = e["train"]["interval"]
        assert (hi - lo) / 2 == pytest.approx(4.303 * 0.0002 ** 0.5, rel=1e-3)
        assert e["heldout"]["difference"] == pytest.approx(held)  # the last evaluation, not step 0
        # detectable at 80% power: (t(0.975, 2) + t(0.80, 2)) * se = (4.303 + 1.061) * 0.01414
        assert e["train"]["detectable"] == pytest.approx(5.364 * 0.0002 ** 0.5, rel=1e-3)
    report = (tmp_path / "rep/report.md").read_text()
    assert ("| adamw / lr 0.001 | per-prompt effect (std - batch) | 0.001 vs 0.001 | "
            "+0.100 [+0.039, +0.161]; detectable 0.076 |") in report


def test_compare_without_matplotlib_still_writes_numbers(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    S.compare([str(runs), "--out", str(tmp_path / "rep")])
    assert "pip install matplotlib" in capsys.readouterr().out
    assert (tmp_path / "rep/report.md").is_file() and not (tmp_path / "rep/curves.png").exists()


def test_eval_py_compare_is_study_compare(runs, tmp_path, monkeypatch):
    """`python eval.py compare ...` (the README's command) writes what study.compare writes."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # numbers only: quick
    S.compare([str(runs), "--out", str(tmp_path / "study")])
    E.main(["compare", str(runs), "--out", str(tmp_path / "eval")])
    for name in ("report.md", "summary.json"):
        assert (tmp_path / "eval" / name).read_text() == (tmp_path / "study" / name).read_text()


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
    for arm in ("std", "batch", "none"):
        rows = [json.loads(x) for x in
                (out / f"{arm}-sgd-lr0.1-s0/metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
    (aside,) = (out / "interrupted").iterdir()
    assert aside.name.startswith("none-sgd-lr0.1-s0-")
    assert (aside / "metrics.jsonl").read_text().count("\n") == 1
    assert (out / "report/report.md").is_file()
    capsys.readouterr()
    # again, as the README runs it (python eval.py sweep ...): every arm is complete
    E.main(["sweep", "--optimizer", "sgd", "--lrs", "0.1", "--seeds", "0", "--out", str(out),
            *tiny])
    assert capsys.readouterr().out.count("(complete)") == 3


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


def test_curvature_correlation_with_and_without_zero_std_prompts():
    # two all-right/all-wrong prompts (std 0, tiny gradients) and three with reward variance
    rows = [{"step": 10, "id": str(i), "reward_std": s, "curvature": c}
            for i, (s, c) in enumerate([(0, 0.01), (0, 0.02), (0.2, 3), (0.4, 1), (0.5, 2)])]
    d = S.diagnostic_summary([{"diagnostics": rows, "metrics": []}])
    # by hand over the last three: dx = (-1/6, 1/30, 2/15), dy = (1, -1, 0):
    # r = -0.2 / sqrt(0.04667 * 2)
    assert d["r_within_signal"] == pytest.approx(-0.2 / (0.0466667 * 2) ** 0.5, abs=1e-4)
    assert d["r_within"] > 0.5  # the std-0 cluster alone makes the pooled correlation positive
