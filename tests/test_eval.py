"""eval.py: pass@k against the closed form, strict vs lenient grading, and `compare` on synthetic run folders."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import eval as E


@pytest.mark.parametrize("n, c, k, expected", [
    (2, 1, 1, 0.5),             # one of two correct: a single draw hits it half the time
    (4, 1, 2, 1 - 3 / 6),       # 1 - C(3,2)/C(4,2)
    (5, 2, 2, 1 - 3 / 10),      # 1 - C(3,2)/C(5,2)
    (8, 0, 8, 0.0),
    (8, 8, 1, 1.0),
    (3, 1, 3, 1.0),             # every draw of 3 from 3 includes the correct one
    (10, 3, 1, 0.3),            # pass@1 is the plain fraction correct
])
def test_pass_at_k_closed_form(n, c, k, expected):
    assert E.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_equals_brute_force_enumeration():
    from itertools import combinations
    samples = [1, 0, 0, 1, 0, 0]
    for k in range(1, 7):
        draws = list(combinations(samples, k))
        assert E.pass_at_k(6, 2, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))


@pytest.mark.parametrize("text, gold, strict, lenient", [
    ("so she has 14 left. #### 14", "14", (True, "14"), (True, "14")),
    ("so she has 14 left.", "14", (False, None), (True, "14")),              # no marker: strict parse failure
    ("The answer is 12. Then 14 more.", "14", (False, "12"), (False, "12")),  # a marker beats the last number
    ("\\boxed{7} and later 9", "9", (False, "7"), (False, "7")),
    ("nothing numeric here", "3", (False, None), (False, None)),
])
def test_strict_and_lenient_grading(text, gold, strict, lenient):
    g = E.grade(text, gold)
    assert (g["strict"]["correct"], g["strict"]["answer"]) == strict
    assert (g["lenient"]["correct"], g["lenient"]["answer"]) == lenient


def write_run(folder: Path, normalize: str, seed: int, slope: float, lr=1e-3, optimizer="adamw", steps=40, diag=False,
              level=None, heldout=None):
    """A synthetic run folder. level: constant training accuracy (else a noisy line of the given slope);
    heldout: the held-out accuracy at every evaluation (steps 0, 20, 40)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"normalize": normalize, "optimizer": optimizer, "lr": lr,
                                                    "seed": seed, "steps": steps}))
    with (folder / "metrics.jsonl").open("w") as f:
        if heldout is not None:
            f.write(json.dumps({"step": 0, "eval/samples/strict/accuracy": 0.1}) + "\n")
        for step in range(1, steps + 1):
            hard = level if level is not None else min(1.0, 0.15 + slope * step + rng.normal(0, 0.02))
            m = {"step": step, "reward": hard, "accuracy": hard, "accuracy/easy": min(1.0, 0.5 + slope * step),
                 "accuracy/hard": hard, "reward_std": 0.3, "time/step": 1.0}
            if diag and step % 10 == 0:
                m |= {"diag/cos_abs_mean": 0.1, "diag/cos_abs_p90": 0.2, "diag/curvature_std_corr": 0.3}
                if step > 10:
                    m["diag/curvature_std_corr_across"] = -0.1
            if heldout is not None and step % 20 == 0:
                m["eval/samples/strict/accuracy"] = heldout
            f.write(json.dumps(m) + "\n")
    if diag:  # per-prompt rows: curvature = 10 * reward std (perfect within-step correlation), cosines 0.1 / 0.3
        with (folder / "diagnostics.jsonl").open("w") as f:
            for step in range(10, steps + 1, 10):
                for i, std in enumerate([0.1, 0.2, 0.3, 0.4]):
                    row = {"step": step, "id": str(i), "reward_std": std, "curvature": 10 * std}
                    if i == 0:
                        row |= {"abs_cosines": [0.1, 0.3], "abs_cosines_same_prompt": [0.5, 0.3, 0.4],
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
    summary = E.compare([str(runs), "--out", str(tmp_path / "rep"), "--window", "5"])
    report = (tmp_path / "rep/report.md").read_text()
    assert (tmp_path / "rep/curves.png").stat().st_size > 10_000
    assert "The effects" in report and "Phases" in report and "Diagnostics" in report
    assert (tmp_path / "rep/diagnostics.png").is_file()
    assert set(summary) == {"std / adamw / lr 0.001", "none / adamw / lr 0.001", "none / adamw / lr 0.002",
                            "std / adamw / lr 0.002"}
    data = json.loads((tmp_path / "rep/summary.json").read_text())
    # 2 seeds x 4 diagnostic steps x 2 cosines (0.1, 0.3); curvature = 10 x reward std in every step
    d = data["diagnostics"]["std / adamw / lr 0.001"]
    assert d["cross_pairs"] == 16 and d["cross_mean"] == pytest.approx(0.2) and d["r_within"] == pytest.approx(1.0)
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
    """Constant accuracies: std 0.60 / 0.62 (seeds 0, 1), batch 0.50 / 0.52, none 0.45 / 0.47, held-out std 0.4,
    batch 0.3, none 0.3. Per-prompt effect +0.10, step-size +0.05, total +0.15; each pair of arms has pooled
    variance 0.0002 and se 0.01414, t(0.975, 2) = 4.303, so every training interval is +-0.0609."""
    for seed in (0, 1):
        for arm, level, held in (("std", 0.60, 0.4), ("batch", 0.50, 0.3), ("none", 0.45, 0.3)):
            write_run(tmp_path / "runs" / f"{arm}-s{seed}", arm, seed, 0.0, level=level + 0.02 * seed, heldout=held)
    E.compare([str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    data = json.loads((tmp_path / "rep/summary.json").read_text())
    assert data["heldout_metric"] == "eval/samples/strict/accuracy"
    for name, diff, held in (("per-prompt effect", 0.10, 0.1), ("step-size effect", 0.05, 0.0), ("total", 0.15, 0.1)):
        e = data["effects"][f"adamw / lr 0.001: {name}"]
        assert e["train"]["difference"] == pytest.approx(diff)
        lo, hi = e["train"]["interval"]
        assert (hi - lo) / 2 == pytest.approx(4.303 * 0.0002 ** 0.5, rel=1e-3)
        assert e["heldout"]["difference"] == pytest.approx(held)  # the last evaluation, not the step-0 one
    report = (tmp_path / "rep/report.md").read_text()
    assert "| adamw / lr 0.001 | per-prompt effect (std - batch) | 0.001 vs 0.001 | +0.100 [+0.039, +0.161] |" in report


def test_compare_without_matplotlib_still_writes_numbers(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    E.compare([str(runs), "--out", str(tmp_path / "rep")])
    assert "pip install matplotlib" in capsys.readouterr().out
    assert (tmp_path / "rep/report.md").is_file() and not (tmp_path / "rep/curves.png").exists()


def test_phase_rule_by_hand():
    steps = np.arange(1, 9)
    gap = np.array([0.0, 0.01, 0.04, 0.05, 0.03, 0.01, 0.0, 0.0])
    assert E.phases(steps, gap, 0.03) == {"opens": 3, "closes": 6, "max_gap": 0.05, "max_gap_step": 4}
    assert E.phases(steps, gap * 0, 0.03)["opens"] is None


def test_smoothing_is_a_trailing_mean():
    np.testing.assert_allclose(E.smooth(np.array([1.0, 2, 3, 4]), 2), [1.0, 1.5, 2.5, 3.5])


DEMO = Path(__file__).resolve().parent.parent / "demo" / "model"


def test_evaluate_the_demo_model_with_and_without_an_adapter(tmp_path):
    """Greedy and sampled accuracy, strict and lenient, per tier; the pass-rate file grpo.py reads back."""
    import grpo
    args = ["--model", str(DEMO), "--data", "demo", "--limit", "16", "--samples", "4", "--max-new-tokens", "64"]
    res = E.main(args + ["--out", str(tmp_path / "base")])
    groups = res["groups"]
    assert set(groups) == {"all", "easy", "hard"} and groups["all"]["problems"] == 16
    assert groups["all"]["greedy/strict/accuracy"] >= 0.75  # the demo model knows the answers...
    assert groups["all"]["samples/strict/accuracy"] < groups["all"]["greedy/strict/accuracy"]  # ...but slips
    assert groups["all"]["strict/pass@4"] >= groups["all"]["strict/pass@1"]
    lines = [json.loads(x) for x in (tmp_path / "base/pass_rates.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and all(len(x["rewards"]) == 4 for x in lines)
    problems = E.load_eval_problems(E.argparse.Namespace(data="demo", limit=16, split="test", level=None, data_path=None))
    import data as D
    tiered = D.assign_tiers(problems, tmp_path / "base/pass_rates.jsonl", {"solved": 1.0, "unsolved": 0.0})
    assert all(t.tier in ("solved", "unsolved") for t in tiered)
    # an adapter from a one-step run loads and evaluates
    run = tmp_path / "run"
    grpo.main(["--preset", "demo", "--steps", "1", "--prompts-per-step", "2", "--group-size", "4", "--out", str(run),
               "--eval-every", "0"])
    res = E.main(args + ["--adapter", str(run / "checkpoints/step_000001"), "--out", str(tmp_path / "adapted")])
    assert res["adapter"].endswith("step_000001") and (tmp_path / "adapted/results.json").is_file()


def test_sweep_runs_every_arm_skips_complete_runs_and_restarts_interrupted_ones(tmp_path, capsys):
    out = tmp_path / "sweep"
    tiny = ["--", "--steps", "2", "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "24",
            "--save-every", "2", "--log-samples-every", "100", "--eval-every", "0"]
    # an arm stopped before its first checkpoint: a config and one metrics line, nothing to resume from
    stopped = out / "none-sgd-lr0.1-s0"
    stopped.mkdir(parents=True)
    (stopped / "config.json").write_text(json.dumps({"steps": 2}))
    (stopped / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    E.sweep(["--optimizer", "sgd", "--lrs", "0.1", "--seeds", "0", "--out", str(out), *tiny])
    for arm in ("std", "batch", "none"):
        rows = [json.loads(x) for x in (out / f"{arm}-sgd-lr0.1-s0/metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
    (aside,) = (out / "interrupted").iterdir()
    assert aside.name.startswith("none-sgd-lr0.1-s0-") and (aside / "metrics.jsonl").read_text().count("\n") == 1
    assert (out / "report/report.md").is_file()
    capsys.readouterr()
    E.sweep(["--optimizer", "sgd", "--lrs", "0.1", "--seeds", "0", "--out", str(out), *tiny])
    assert capsys.readouterr().out.count("(complete)") == 3


def test_difference_interval_by_hand():
    # a = [1, 2, 3], b = [0, 0, 3]: means 2 and 1; sample variances 1 and 3, pooled 2; se = sqrt(2 * 2/3);
    # t(0.975, df 4) = 2.776 (tables)
    lo, hi = E.difference_interval([1, 2, 3], [0, 0, 3])
    half = 2.776 * (2 * 2 / 3) ** 0.5
    assert lo == pytest.approx(1 - half, abs=1e-3) and hi == pytest.approx(1 + half, abs=1e-3)
    assert E.difference_interval([1.0], [0.0, 1.0]) is None


def test_best_vs_best_needs_a_sweep(runs, tmp_path):
    E.compare([str(runs / "std-s0"), str(runs / "none-s0"), "--out", str(tmp_path / "rep")])
    report = (tmp_path / "rep/report.md").read_text()
    assert "| adamw / lr 0.001 | total (std - none) |" in report and "each at its best lr" not in report


def test_curvature_correlation_with_and_without_zero_std_prompts():
    # two all-right/all-wrong prompts (std 0, tiny gradients) and three with reward variance
    rows = [{"step": 10, "id": str(i), "reward_std": s, "curvature": c}
            for i, (s, c) in enumerate([(0, 0.01), (0, 0.02), (0.2, 3), (0.4, 1), (0.5, 2)])]
    d = E.diagnostic_summary([{"diagnostics": rows, "metrics": []}])
    # by hand over the last three: dx = (-1/6, 1/30, 2/15), dy = (1, -1, 0): r = -0.2 / sqrt(0.04667 * 2)
    assert d["r_within_signal"] == pytest.approx(-0.2 / (0.0466667 * 2) ** 0.5, abs=1e-4)
    assert d["r_within"] > 0.5  # the std-0 cluster alone makes the pooled correlation positive


def test_an_adapter_inside_a_run_is_evaluated_with_that_runs_prompt(tmp_path, capsys):
    import grpo
    run = tmp_path / "run"
    grpo.main(["--preset", "demo", "--steps", "1", "--prompts-per-step", "2", "--group-size", "4", "--out", str(run),
               "--eval-every", "0", "--template", "paper", "--max-new-tokens", "20", "--temperature", "0.7"])
    res = E.main(["--adapter", str(run / "checkpoints/step_000001"), "--data", "demo", "--limit", "4",
                  "--samples", "1", "--out", str(tmp_path / "ev")])
    assert (res["template"], res["max_new_tokens"], res["temperature"]) == ("paper", 20, 0.7)
    assert Path(res["model"]) == DEMO
    assert "from the run's config.json: model" in capsys.readouterr().out
    explicit = E.main(["--adapter", str(run / "checkpoints/step_000001"), "--data", "demo", "--limit", "4",
                       "--samples", "1", "--template", "plain", "--out", str(tmp_path / "ev2")])
    assert explicit["template"] == "plain"  # a flag given on the command line wins


def test_evaluate_without_a_model_or_a_run_is_one_clear_message(capsys):
    with pytest.raises(SystemExit):
        E.main(["--data", "demo"])
    assert "--model is required" in capsys.readouterr().err


def test_evaluation_grades_only_the_turn_the_model_ended(tmp_path, monkeypatch):
    """A completion that runs on into a turn it invents (<|im_start|>user ...) is graded on its own turn."""
    import model as M
    from tiny import ChatTokenizer
    tok = ChatTokenizer()
    completion = tok.encode("9 * 2 = \\boxed{18} dollars.<|im_start|>user\nAnd for 10 eggs?<|im_end|>"
                            "<|im_start|>assistant\nThen \\boxed{20}.")  # only the stop token ends this turn
    assert E.grade(tok.decode(completion, skip_special_tokens=True), "20")["strict"]["correct"]  # decoded whole
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"question": f"Janet sells 9 eggs at $2 ({i}). How much?",
                                        "answer": "9 * 2 = 18\n#### 18"}) + "\n" for i in range(3)))
    stops = []

    def generate(model, prompts, max_new_tokens, eos_token_id=None, num_samples=1, **kw):
        stops.append(eos_token_id)
        return [list(completion) for _ in range(len(prompts) * num_samples)]

    monkeypatch.setattr(M, "load_tokenizer", lambda *a: tok)
    monkeypatch.setattr(M, "generate", generate)
    res = E.main(["--model", str(DEMO), "--data", str(data), "--samples", "2", "--template", "qwen-chat",
                  "--out", str(tmp_path / "out")])
    groups = res["groups"]["all"]
    assert groups["greedy/strict/accuracy"] == groups["samples/strict/accuracy"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "out/problems.jsonl").read_text().splitlines()]
    assert [r["greedy"] for r in rows] == ["9 * 2 = \\boxed{18} dollars."] * 3
    assert all(s == [0, 1, 2] for s in stops)  # the sampler stops at <|endoftext|>, <|im_start|>, <|im_end|>
