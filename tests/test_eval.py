"""eval.py: pass@k against the closed form, strict vs lenient grading, the tally by hand, and the
held-out evaluation of the demo model (with and without an adapter)."""

import json
from pathlib import Path

import pytest
import torch

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
    ("so she has 14 left.", "14", (False, None), (True, "14")),  # no marker: strict parse failure
    # a marker beats the last number
    ("The answer is 12. Then 14 more.", "14", (False, "12"), (False, "12")),
    ("\\boxed{7} and later 9", "9", (False, "7"), (False, "7")),
    ("nothing numeric here", "3", (False, None), (False, None)),
])
def test_strict_and_lenient_grading(text, gold, strict, lenient):
    g = E.grade(text, gold)
    assert (g["strict"]["correct"], g["strict"]["answer"]) == strict
    assert (g["lenient"]["correct"], g["lenient"]["answer"]) == lenient


def test_tally_by_hand():
    """Two problems, K = 2. Problem 1: greedy '#### 14' (right), samples '#### 14' and 'so 14'
    (strict: no answer; lenient: right). Problem 2: greedy without a number, samples '#### 3' and
    'so 3' (wrong, the second with no strict answer)."""
    t = E.Tally()
    t.add(E.grade("#### 14", "14"), [E.grade("#### 14", "14"), E.grade("so 14", "14")], 2)
    t.add(E.grade("nothing", "14"), [E.grade("#### 3", "14"), E.grade("so 3", "14")], 2)
    assert t.counts[("greedy", "strict")] == E.Counts(graded=2, correct=1, parse_failures=1)
    assert t.counts[("samples", "strict")] == E.Counts(graded=4, correct=1, parse_failures=2)
    assert t.counts[("samples", "lenient")] == E.Counts(graded=4, correct=2, parse_failures=0)
    assert list(t.metrics().items()) == [
        ("problems", 2),
        ("greedy/strict/accuracy", 0.5), ("greedy/strict/parse_failures", 0.5),
        ("samples/strict/accuracy", 0.25), ("samples/strict/parse_failures", 0.5),
        ("greedy/lenient/accuracy", 0.5), ("greedy/lenient/parse_failures", 0.5),
        ("samples/lenient/accuracy", 0.5), ("samples/lenient/parse_failures", 0.0),
        ("strict/pass@1", 0.25), ("strict/pass@2", 0.5),
        ("lenient/pass@1", 0.5), ("lenient/pass@2", 0.5)]  # this order is metrics.jsonl's
    greedy_only = E.Tally()
    greedy_only.add(E.grade("#### 14", "14"), [], 0)  # K = 0: no sampled keys, no pass@k
    assert greedy_only.metrics() == {"problems": 1, "greedy/strict/accuracy": 1.0,
                                     "greedy/strict/parse_failures": 0.0,
                                     "greedy/lenient/accuracy": 1.0,
                                     "greedy/lenient/parse_failures": 0.0}


DEMO = Path(__file__).resolve().parent.parent / "demo" / "model"


def test_evaluate_the_demo_model_with_and_without_an_adapter(tmp_path):
    """Greedy and sampled accuracy, strict and lenient, per tier; the pass-rate file grpo.py reads
    back."""
    import grpo
    args = ["--model", str(DEMO), "--data", "demo", "--limit", "16", "--samples", "4"]  # the
    # demo's defaults (64 new tokens: its model has 512 positions), as the docstring runs it
    res = E.main(args + ["--out", str(tmp_path / "base")])
    groups = res["groups"]
    assert set(groups) == {"all", "easy", "hard"} and groups["all"]["problems"] == 16
    assert groups["all"]["greedy/strict/accuracy"] >= 0.75  # the demo model knows the answers...
    assert (groups["all"]["samples/strict/accuracy"]
            < groups["all"]["greedy/strict/accuracy"])  # ...but slips
    assert groups["all"]["strict/pass@4"] >= groups["all"]["strict/pass@1"]
    lines = [json.loads(x) for x in (tmp_path / "base/pass_rates.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and all(len(x["rewards"]) == 4 for x in lines)
    problems = E.load_eval_problems(E.argparse.Namespace(data="demo", limit=16, split="test",
                                                         level=None, data_path=None))
    import data as D
    tiered = D.assign_tiers(problems, tmp_path / "base/pass_rates.jsonl",
                            {"solved": 1.0, "unsolved": 0.0})
    assert all(t.tier in ("solved", "unsolved") for t in tiered)
    # an adapter from a one-step run loads and evaluates
    run = tmp_path / "run"
    grpo.main(["--preset", "demo", "--steps", "1", "--prompts-per-step", "2", "--group-size", "4",
               "--out", str(run), "--eval-every", "0"])
    res = E.main(args + ["--adapter", str(run / "checkpoints/step_000001"),
                         "--out", str(tmp_path / "adapted")])
    assert res["adapter"].endswith("step_000001") and (tmp_path / "adapted/results.json").is_file()


def test_an_adapter_inside_a_run_is_evaluated_with_that_runs_prompt(tmp_path, capsys):
    import grpo
    run = tmp_path / "run"
    grpo.main(["--preset", "demo", "--steps", "1", "--prompts-per-step", "2", "--group-size", "4",
               "--out", str(run), "--eval-every", "0", "--template", "paper",
               "--max-new-tokens", "20", "--temperature", "0.7", "--max-prompt-tokens", "40"])
    res = E.main(["--adapter", str(run / "checkpoints/step_000001"), "--data", "demo",
                  "--limit", "4", "--samples", "1", "--out", str(tmp_path / "ev")])
    assert (res["template"], res["max_new_tokens"], res["temperature"],
            res["max_prompt_tokens"]) == ("paper", 20, 0.7, 40)
    assert Path(res["model"]) == DEMO
    assert "from the run's config.json: model" in capsys.readouterr().out
    explicit = E.main(["--adapter", str(run / "checkpoints/step_000001"), "--data", "demo",
                       "--limit", "4", "--samples", "1", "--template", "plain",
                       "--out", str(tmp_path / "ev2")])
    assert explicit["template"] == "plain"  # a flag given on the command line wins


def test_held_out_prompts_are_cut_as_training_cuts_them(monkeypatch):
    import data as D
    import model as M
    tok = M.load_tokenizer(DEMO)
    problems = [D.Problem(question=f"Tom has {n} apples. He buys 3 more. How many now?",
                          answer=str(n + 3)) for n in (5, 6)]
    seen = []

    def generate(model, prompts, max_new_tokens, num_samples=1, **kw):
        seen.extend(prompts)
        return [[] for _ in range(len(prompts) * num_samples)]

    monkeypatch.setattr(M, "generate", generate)
    model = torch.nn.Linear(1, 1)
    model.config = M.Qwen2Config(max_position_embeddings=512)
    whole = [tok.encode(D.format_prompt(p, "plain")) for p in problems]
    for cut, expected in ((0, whole), (6, [w[-6:] for w in whole])):
        seen.clear()
        E.heldout_accuracy(model, tok, problems, "plain", 8, samples=0,
                           temperature=1.0, seed=0, max_prompt_tokens=cut)
        assert len(whole[0]) > 6 and seen == expected
    # as in training, a prompt that leaves no room for --max-new-tokens is one line naming it
    model.config = M.Qwen2Config(max_position_embeddings=len(whole[0]) + 7)
    with pytest.raises(ValueError, match=r"^problem '': its prompt of \d+ tokens \(--max-prompt-"
                                         r"tokens 0: not cut\) \+ --max-new-tokens 8 exceeds the "
                                         r"model's \d+ positions"):
        E.heldout_accuracy(model, tok, problems, "plain", 8, samples=0, temperature=1.0, seed=0)


def test_evaluate_without_a_model_or_a_run_is_one_clear_message(capsys):
    with pytest.raises(SystemExit):
        E.main(["--data", "demo"])
    assert "--model is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        E.main(["--model", str(DEMO), "--data", "demo", "--seed", "2048"])
    assert "--seed must be in [0, 2048)" in capsys.readouterr().err


def test_evaluation_grades_only_the_turn_the_model_ended(tmp_path, monkeypatch):
    """A completion that runs on into a turn it invents (<|im_start|>user ...) is graded on its own
    turn."""
    import model as M
    from tiny import ChatTokenizer
    tok = ChatTokenizer()
    # only the stop token ends this turn
    completion = tok.encode("9 * 2 = \\boxed{18} dollars.<|im_start|>user\nAnd for 10 eggs?"
                            "<|im_end|><|im_start|>assistant\nThen \\boxed{20}.")
    decoded_whole = tok.decode(completion, skip_special_tokens=True)
    assert E.grade(decoded_whole, "20")["strict"]["correct"]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"question": f"Janet sells 9 eggs at $2 ({i}). How much?",
                                        "answer": "9 * 2 = 18\n#### 18"}) + "\n" for i in range(3)))
    stops = []

    def generate(model, prompts, max_new_tokens, eos_token_id=None, num_samples=1, **kw):
        stops.append(eos_token_id)
        return [list(completion) for _ in range(len(prompts) * num_samples)]

    monkeypatch.setattr(M, "load_tokenizer", lambda *a: tok)
    monkeypatch.setattr(M, "generate", generate)
    res = E.main(["--model", str(DEMO), "--data", str(data), "--samples", "2",
                  "--template", "qwen-chat", "--max-new-tokens", "64", "--out", str(tmp_path / "out")])
    groups = res["groups"]["all"]
    assert groups["greedy/strict/accuracy"] == groups["samples/strict/accuracy"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "out/problems.jsonl").read_text().splitlines()]
    assert [r["greedy"] for r in rows] == ["9 * 2 = \\boxed{18} dollars."] * 3
    assert all(s == [0, 1, 2] for s in stops)  # stops at <|endoftext|>, <|im_start|>, <|im_end|>
