"""Tests for data.py: loaders, difficulty tiers, prompts and the synthetic demo problems.

Real-data tests read ../shared/data through GRPO_DATA_DIR (the data_dir fixture skips them when it
is unset) and check that the grader scores every loaded gold right; the fixture tests write small
files of the same formats to tmp_path.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import data
from data import (PAPER_EXEMPLARS, PAPER_TIER_THRESHOLDS, PROMPT_TEMPLATES, Problem, assign_tiers,
                  format_prompt, load_gsm8k, load_math, load_problems)
from grader import math_equal, reward

ROOT = Path(__file__).resolve().parent.parent

# --- Loaders on small fixtures written here (no GRPO_DATA_DIR needed) -----------------------------

def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


GSM8K_RECORDS = [
    {"question": "Natalia sold clips to 48 friends in April, and half as many in May. "
                 "How many altogether?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "How much is the house worth?",
     "answer": "It is 1,000 + 80 = <<1000+80=1080>>1,080.\n#### 1,080"},
    {"question": "What is the temperature change?", "answer": "3 - 10 = <<3-10=-7>>-7\n#### -7"},
]
MATH_RECORDS = [
    {"problem": "Find $a+b$.", "level": "Level 2", "type": "Algebra",
     "solution": "So $a+b=-3+3=\\boxed{0}$.", "unique_id": "train/algebra/0.json"},
    {"problem": "Simplify $\\frac{2}{4}$.", "level": "Level 1", "type": "Prealgebra",
     "solution": "It is $\\boxed{\\frac{1}{2}}$, or $\\boxed{\\dfrac{1}{2}}$.",
     "unique_id": "train/prealgebra/3.json"},
    {"problem": "Which choice?", "level": "Level 3", "type": "Number Theory",
     "solution": "None of them: $\\boxed{}$", "unique_id": "train/number_theory/7115.json"},
    {"problem": "How many?", "level": "Level ?", "type": "Geometry",
     "solution": "There are $\\boxed 2$ of them.", "unique_id": "train/geometry/377.json"},
    {"problem": "Pick two.", "level": "Level 2", "type": "Counting & Probability",
     "solution": "First $\\boxed{(-2,18)}$ and then $\\boxed{(8,38)}$.",
     "unique_id": "train/counting_and_probability/1.json"},
]


def test_load_gsm8k_fixture(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", GSM8K_RECORDS)
    for source in (tmp_path, tmp_path / "train.jsonl"):
        problems = load_gsm8k("train", source)
        assert [p.answer for p in problems] == ["72", "1080", "-7"]
        assert [p.id for p in problems] == ["gsm8k/train/0", "gsm8k/train/1", "gsm8k/train/2"]
        assert (problems[0].solution.endswith("altogether in April and May.")
                and "####" not in problems[0].solution)
        assert problems[0].level is None and problems[0].type is None and problems[0].tier is None
        for p, r in zip(problems, GSM8K_RECORDS):
            assert reward(r["answer"], p.answer) == 1.0


def test_load_math_fixture_jsonl_and_release_tree(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", MATH_RECORDS)
    tree = tmp_path / "release"
    for r in MATH_RECORDS:
        file = tree / r["unique_id"]
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({k: v for k, v in r.items() if k != "unique_id"}),
                        encoding="utf-8")
    for source in (tmp_path, tmp_path / "train.jsonl", tree):
        problems = load_math("train", source)
        by_id = {p.id: p for p in problems}
        assert "train/number_theory/7115.json" not in by_id  # empty box: unscorable, skipped
        assert len(problems) == 4
        assert by_id["train/algebra/0.json"].answer == "0"
        assert (by_id["train/algebra/0.json"].level == 2
                and by_id["train/algebra/0.json"].type == "Algebra")
        assert by_id["train/prealgebra/3.json"].answer == "\\dfrac{1}{2}"  # the last box
        assert (by_id["train/geometry/377.json"].answer == "2"
                and by_id["train/geometry/377.json"].level is None)
        assert by_id["train/counting_and_probability/1.json"].answer == "(8,38)"
        for p in problems:
            assert reward(p.solution, p.answer) == 1.0
    assert [p.id for p in load_math("train", tmp_path, levels=[2])] == [
        "train/algebra/0.json", "train/counting_and_probability/1.json"]
    assert [p.id for p in load_math("train", tmp_path, types=["counting_and_probability"])] == [
        "train/counting_and_probability/1.json"]
    assert [p.id for p in load_math("train", tmp_path, levels=[2], types=["Algebra"])] == [
        "train/algebra/0.json"]


def test_load_math500_layout_fixture(tmp_path):
    _write_jsonl(tmp_path / "math500_test.jsonl", [
        {"problem": "Convert.", "solution": "So $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
         "unique_id": "test/precalculus/807.json"}])
    (p,) = load_math("math500", tmp_path)
    assert (p.answer, p.type, p.level, p.id) == (
        "\\left( 3, \\frac{\\pi}{2} \\right)", "Precalculus", 2, "test/precalculus/807.json")


def test_load_problems_detects_the_format(tmp_path):
    gsm = _write_jsonl(tmp_path / "g.jsonl", GSM8K_RECORDS)
    mat = _write_jsonl(tmp_path / "m.jsonl", MATH_RECORDS)
    assert [p.answer for p in load_problems(str(gsm))] == ["72", "1080", "-7"]
    assert len(load_problems(str(mat))) == 4
    assert len(load_problems(str(mat), levels=[1])) == 1
    assert [p.answer for p in load_problems("gsm8k", path=gsm)] == ["72", "1080", "-7"]
    with pytest.raises(ValueError, match="levels/types"):
        load_problems(str(gsm), levels=[2])
    other = _write_jsonl(tmp_path / "o.jsonl", [{"text": "hello"}])
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_problems(str(other))


def test_bad_input_names_file_and_line(tmp_path):
    lines = [json.dumps(GSM8K_RECORDS[0]), json.dumps(GSM8K_RECORDS[1]),
             '{"question": "broken", "answer": ']
    bad = tmp_path / "train.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:3: invalid JSON"):
        load_gsm8k("train", bad)
    bad.write_text(json.dumps(GSM8K_RECORDS[0]) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:2: expected a JSON object"):
        load_gsm8k("train", bad)
    bad.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n",
                   encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:1: .*####"):
        load_gsm8k("train", bad)
    bad.write_text(json.dumps({"problem": "p"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:1: .*'solution'"):
        load_math("train", bad)
    bad.write_bytes(json.dumps(GSM8K_RECORDS[0]).encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:2"):
        load_gsm8k("train", bad)
    missing = tmp_path / "nowhere" / "test.jsonl"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_gsm8k("test", missing)
    with pytest.raises(FileNotFoundError, match=r"test\.jsonl"):
        load_gsm8k("test", tmp_path)


def test_hub_fetch_fails_clearly_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    for call in ("load_gsm8k()", "load_math('math500')"):
        result = subprocess.run([sys.executable, "-c", f"import data; data.{call}"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("ConnectionError: cannot fetch"), result.stderr
        assert "hub unreachable or offline" in last and "pass a local path" in last



def _fake_hub(tmp_path, monkeypatch, tables: dict[str, list[dict]]):
    """hf_hub_download answered from local parquet files written here: {repo file name: rows}."""
    pq = pytest.importorskip("pyarrow.parquet")
    import huggingface_hub
    import pyarrow
    fetched = []
    def download(repo, file, repo_type=None, revision=None):
        assert repo_type == "dataset" and len(revision) == 40  # a pinned commit, not a branch
        fetched.append((repo, file))
        local = tmp_path / "hub" / repo / file
        local.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pyarrow.Table.from_pylist(tables[file]), local)
        return str(local)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return fetched


def test_hub_parquet_copies_load_like_the_jsonl_release(tmp_path, monkeypatch):
    gsm = [{"question": "Tom has 2 apples and buys 1,200 more. How many?",
            "answer": "2 + 1200 = 1202\n#### 1,202"}]
    subjects = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                "number_theory", "prealgebra", "precalculus")
    math_rows = {f"{s}/train-00000-of-00001.parquet": [
        {"problem": f"{s} problem", "level": f"Level {1 + i % 2}", "type": s.title(),
         "solution": f"so it is $\\boxed{{\\frac{{{i}}}{{7}}}}$."}] for i, s in enumerate(subjects)}
    fetched = _fake_hub(tmp_path, monkeypatch,
                        {"main/train-00000-of-00001.parquet": gsm, **math_rows})
    (p,) = load_gsm8k("train")
    assert (p.question, p.answer, p.solution) == (gsm[0]["question"], "1202", "2 + 1200 = 1202")
    level2 = data.load_math("train", levels=[2])
    # every subject file is fetched; subjects 1, 3, 5 (0-based) are Level 2 here
    assert [f for _, f in fetched[1:]] == list(math_rows)
    assert [q.question for q in level2] == [f"{s} problem" for s in subjects[1::2]]
    assert [q.answer for q in level2] == ["\\frac{1}{7}", "\\frac{3}{7}", "\\frac{5}{7}"]


def test_hub_parquet_without_pyarrow_is_one_clear_message(tmp_path, monkeypatch):
    _fake_hub(tmp_path, monkeypatch,
              {"main/test-00000-of-00001.parquet": [{"question": "q", "answer": "#### 1"}]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"test-00000-of-00001\.parquet is parquet"
                                          r".*pip install pyarrow.*local path"):
        load_gsm8k("test")


def test_hub_record_errors_name_the_file_and_row(tmp_path, monkeypatch):
    _fake_hub(tmp_path, monkeypatch, {"main/test-00000-of-00001.parquet": [
        {"question": "q", "answer": "#### 1"}, {"question": "q2", "answer": "no final line"}]})
    with pytest.raises(ValueError,
                       match=r"test-00000-of-00001\.parquet:row 2: GSM8K answer has no"):
        load_gsm8k("test")

# --- Difficulty tiers -----------------------------------------------------------------------------

def test_assign_tiers(tmp_path):
    problems = [Problem(f"q{i}", str(i), id=f"gsm8k/train/{i}") for i in range(5)]
    rates = _write_jsonl(tmp_path / "rates.jsonl", [
        {"id": "gsm8k/train/0", "rewards": [1] * 10},
        {"id": "gsm8k/train/1", "rewards": [1] * 9 + [0]},
        {"id": "gsm8k/train/2", "pass_rate": 0.8},
        {"id": "gsm8k/train/3", "pass_rate": 0},
        {"id": "gsm8k/train/4", "pass_rate": 0.95},
        {"id": "gsm8k/test/0", "pass_rate": 0.5},  # other ids are ignored
    ])
    tiered = assign_tiers(problems, rates, PAPER_TIER_THRESHOLDS)
    assert [p.tier for p in tiered] == ["easy", "medium", "hard", "hard", "medium"]
    assert [p.tier for p in problems] == [None] * 5  # copies, inputs untouched
    tiered = assign_tiers(problems, rates, {"hard": 0.05, "easy": 0.5})
    assert [p.tier for p in tiered] == ["easy", "easy", "easy", None, "easy"]

    with pytest.raises(ValueError, match="no pass rate for 1 of 6"):
        assign_tiers(problems + [Problem("q", "1", id="gsm8k/train/99")], rates)
    with pytest.raises(ValueError, match="distinct"):
        assign_tiers(problems, rates, {"a": 0.5, "b": 0.5})
    for bad_line, message in [({"id": "x", "pass_rate": 1.5}, "in \\[0, 1\\]"),
                              ({"id": "x"}, "pass_rate"),
                              ({"id": "x", "rewards": []}, "non-empty"),
                              ({"id": "x", "rewards": [1, True]}, "list of 0/1"),
                              ({"id": "x", "pass_rate": True}, "in \\[0, 1\\]"),
                              ({"pass_rate": 0.5}, "'id'")]:
        bad = _write_jsonl(tmp_path / "bad.jsonl",
                           [{"id": "gsm8k/train/0", "pass_rate": 1.0}, bad_line])
        with pytest.raises(ValueError, match=r"bad\.jsonl:2: .*" + message):
            assign_tiers(problems, bad)


# --- Prompts --------------------------------------------------------------------------------------

GSM8K_PROBLEM = Problem("How many clips?", "72",
                        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.",
                        "gsm8k/train/0")
MATH_PROBLEM = Problem("Find $\\{x\\}$ for {question} and {reasoning}.", "\\frac{1}{2}",
                       "We get $x=\\boxed{\\frac{1}{2}}$.\nDone", "train/algebra/9.json", 2,
                       "Algebra")


def test_prompt_templates_exact_text():
    assert set(PROMPT_TEMPLATES) == {"qwen-chat", "plain", "paper", "paper-gold"}
    assert format_prompt(GSM8K_PROBLEM) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nHow many clips?<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert format_prompt(GSM8K_PROBLEM, "plain") == "Question: How many clips?\nAnswer:"
    assert format_prompt(GSM8K_PROBLEM, "paper") == (
        "Question: John has 5 apples. He buys 3 more apples. How many apples does he have?\n"
        "Solution: Let's think step by step. John starts with 5 apples. He buys 3 more. "
        "So he has 5 + 3 = 8 apples #### The final answer is 8\n\n"
        "Question: How many clips?\nSolution: Let's think step by step. ")
    assert format_prompt(GSM8K_PROBLEM, "paper-gold").endswith(
        "Question: How many clips?\nSolution: Let's think step by step. "
        "Natalia sold 48/2 = 24 clips in May. "
        "Natalia sold 48+24 = 72 clips altogether in April and May. ")


def test_paper_prompt_exemplar_follows_tier_and_dataset():
    hard = format_prompt(Problem("Q?", "1", tier="hard"), "paper")
    assert hard.startswith(PAPER_EXEMPLARS["hard"]) and hard.count("Question:") == 2
    assert format_prompt(Problem("Q?", "1", tier="weird"), "paper").startswith(
        PAPER_EXEMPLARS["easy"])
    math_prompt = format_prompt(MATH_PROBLEM, "paper")
    assert math_prompt.startswith(PAPER_EXEMPLARS["math"]) and math_prompt.count("Question:") == 3


def test_paper_gold_withholds_only_the_final_answer():
    prompt = format_prompt(MATH_PROBLEM, "paper-gold")
    target = prompt[len(PAPER_EXEMPLARS["math"]):]
    # LaTeX braces and literal placeholders in the question survive; the box (nested braces) is
    # removed entirely
    assert target == ("Question: Find $\\{x\\}$ for {question} and {reasoning}.\n"
                      "Solution: Let's think step by step. We get x=. Done ")
    gsm = format_prompt(GSM8K_PROBLEM, "paper-gold")
    assert "<<" not in gsm and gsm.count("####") == 1  # only the exemplar's answer line
    with pytest.raises(ValueError, match="no gold solution"):
        format_prompt(Problem("Q?", "1"), "paper-gold")
    with pytest.raises(ValueError, match="unknown prompt template"):
        format_prompt(GSM8K_PROBLEM, "chatml")


# --- Real data (GRPO_DATA_DIR) --------------------------------------------------------------------

def _raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


@pytest.mark.parametrize("split,count", [("train", 7473), ("test", 1319)])
def test_real_gsm8k_golds_extract_and_match(data_dir, split, count):
    problems = load_gsm8k(split, data_dir / "gsm8k")
    raw = _raw(data_dir / "gsm8k" / f"{split}.jsonl")
    assert len(problems) == len(raw) == count
    for p, r in zip(problems, raw):
        assert p.answer == r["answer"].split("####")[-1].strip().replace(",", "")
        assert math_equal(p.answer, p.answer)
        assert reward(r["answer"], p.answer) == 1.0  # the gold solution, as a completion, scores 1
        assert reward(r["answer"], str(int(p.answer) + 1)) == 0.0


# MATH solutions that box every answer and join the boxes with "and" (the staged field keeps the last)
MATH_LISTED_GOLDS = {
    "train/algebra/152.json", "train/algebra/1771.json", "train/intermediate_algebra/1964.json",
    "train/intermediate_algebra/396.json", "train/precalculus/860.json", "test/algebra/1878.json",
    "test/intermediate_algebra/25.json", "test/intermediate_algebra/702.json",
    "test/precalculus/679.json"}


@pytest.mark.parametrize("split,count", [("train", 7500), ("test", 5000)])
def test_real_math_golds_extract_and_match(data_dir, split, count):
    raw = _raw(data_dir / "math" / f"{split}.jsonl")
    assert len(raw) == count
    problems = {p.id: p for p in load_math(split, data_dir / "math")}
    empty = {r["unique_id"] for r in raw if r["answer"] == ""}
    assert empty == ({"train/number_theory/7115.json", "train/number_theory/7117.json"}
                     if split == "train" else set())
    assert set(problems) == {r["unique_id"] for r in raw} - empty
    listed = set()
    for r in raw:
        if r["unique_id"] in empty:
            continue
        p = problems[r["unique_id"]]
        # the staged field is the same brace-matched last box, unstripped; where boxes joined by
        # "and" list the answer ("are $\\boxed{-2}$ and $\\boxed{1}$"), the gold is the list
        if p.answer != r["answer"].strip():
            assert p.answer.endswith(", " + r["answer"].strip())
            listed.add(r["unique_id"])
        assert math_equal(p.answer, p.answer)
        assert reward(p.solution, p.answer) == 1.0
        assert reward(f"So the answer is $\\boxed{{{p.answer}}}$.", p.answer) == 1.0
    assert listed == (MATH_LISTED_GOLDS & set(problems))


def test_real_math500_matches_official_answers(data_dir):
    official = _raw(data_dir / "math" / "math500_test.jsonl")
    ours = load_math("math500", data_dir / "math")
    full_test = {p.id: p for p in load_math("test", data_dir / "math")}
    assert len(ours) == len(official) == 500
    for p, r in zip(ours, official):
        assert p.id == r["unique_id"] and p.answer == r["answer"] and p.level == r["level"]
        # the full test set's gold is MATH-500's official answer
        assert full_test[p.id].answer == r["answer"]
        assert math_equal(full_test[p.id].answer, r["answer"])


def test_real_math_filters(data_dir):
    assert len(load_math("train", data_dir / "math", levels=[2])) == 1348
    assert len(load_math("test", data_dir / "math", levels=[2])) == 894
    level2_train = {"Algebra": 340, "Counting & Probability": 119, "Geometry": 100,
                    "Intermediate Algebra": 167, "Number Theory": 131, "Prealgebra": 329,
                    "Precalculus": 162}
    for subject, count in level2_train.items():
        assert len(load_math("train", data_dir / "math", levels=[2], types=[subject])) == count


def test_real_qwen_chat_template_matches_tokenizer_config(data_dir):
    jinja2 = pytest.importorskip("jinja2")
    config = json.loads(
        (data_dir / "qwen2.5-tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
    rendered = jinja2.Environment().from_string(config["chat_template"]).render(
        messages=[{"role": "user", "content": "How many clips?"}], add_generation_prompt=True)
    assert rendered == format_prompt(GSM8K_PROBLEM, "qwen-chat")


# --- Synthetic demo problems ----------------------------------------------------------------------


def _check_steps(solution: str):
    """Every written step 'a +/- b = c.' is arithmetic on the previous written value.
    Returns (start, results)."""
    import re
    steps = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)\.", solution)
    assert steps
    prev = None
    for a, op, b, c in steps:
        a, b, c = int(a), int(b), int(c)
        if prev is not None:
            assert a == prev  # carried forward, even when wrong
        prev = c
    return steps, prev


def test_synthetic_problems_are_correct_and_tiered():
    for p in data.synthetic_problems(400, seed=11):
        steps, final = _check_steps(p.solution)
        assert all(int(a) + (int(b) if op == "+" else -int(b)) == int(c) for a, op, b, c in steps)
        assert str(final) == p.answer and reward(" " + p.solution, p.answer) == 1.0
        assert len(steps) in ((1, 2) if p.tier == "easy" else (3, 4))
        assert all(0 <= int(x) <= 99 for s in steps for x in (s[0], s[2], s[3]))
        assert p.question.endswith("have now?") and p.question.count("Then ") == len(steps)
    assert data.synthetic_problems(5, seed=3) == data.synthetic_problems(5, seed=3)


def test_synthetic_slips_keep_the_gold_and_carry_the_error_forward():
    import random
    rng = random.Random(0)
    slipped = wrong = 0
    for _ in range(2000):
        p = data.synthetic_problem(rng, "hard", slip=0.45)
        steps, final = _check_steps(p.solution)  # the written chain stays internally consistent
        true = [int(steps[0][0])]
        for _, op, b, _ in steps:
            true.append(true[-1] + (int(b) if op == "+" else -int(b)))
        slipped += any(int(c) != t for (_, _, _, c), t in zip(steps, true[1:]))
        wrong += str(final) != p.answer
        assert all(0 <= int(s[3]) <= 99 for s in steps)
    # 3-4 steps with slip 0.45: P(no slip) = (0.55^3 + 0.55^4) / 2 = 0.129; slips sometimes cancel
    assert 0.80 < slipped / 2000 < 0.92 and 0.70 < wrong / 2000 < slipped / 2000
