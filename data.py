"""Math data for GRPO: records, loaders, difficulty tiers, prompt formats and synthetic problems.

Data
    ``load_gsm8k`` / ``load_math`` read the original release formats as jsonl (as in
    ../shared/data): GSM8K ``{"question", "answer"}`` whose gold is the text after ``####`` with
    commas removed; MATH ``{"problem", "level", "type", "solution"}`` (MATH-500's ``subject`` is
    read as ``type``) whose gold is the last ``\\boxed{...}`` of the solution, brace-matched
    (grader.py's box reader). MATH may also be the per-problem json tree of the original tarball
    (``{split}/<subject>/<n>.json``). A MATH solution without a usable box (two train problems have
    an empty ``\\boxed{}``) cannot be scored and is skipped. With no local path, the pinned Hugging
    Face Hub copy is fetched (``HUB_SOURCES``; GSM8K and MATH are parquet there, read with the
    optional pyarrow); offline, a one-line ConnectionError says to pass a local path.
    ``assign_tiers`` sets each problem's tier (difficulty) from a file of measured pass rates.

Prompts (exact text: the ``*_TEMPLATE`` and ``PAPER_EXEMPLARS`` constants below; placeholders are
filled in one pass, never with ``str.format``, so LaTeX braces in a question are safe)
    ``qwen-chat`` (default): Qwen2.5-Math chat format, system prompt "Please reason step by step,
    and put your final answer within \\boxed{}."; ``plain``: "Question: ...\\nAnswer:"; ``paper``:
    the paper authors' format (worked exemplar(s), then "Question: ...\\nSolution: Let's think step
    by step. "); ``paper-gold``: the same with the problem's own cleaned gold reasoning appended,
    only the final answer withheld, as the authors trained.

Synthetic problems (the demo)
    ``synthetic_problems``: GSM8K-shaped addition and subtraction word problems in two tiers, with
    worked solutions that end in "#### N"; ``synthetic_problem`` with ``slip`` > 0 writes some steps
    wrong, to pretrain the demo model (demo/make_demo_model.py).

Grading a completion against a gold answer is grader.py's job.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Union

from grader import boxed_answer, last_box_start, read_box

PathLike = Union[str, Path]

# --- Records --------------------------------------------------------------------------------------


@dataclass
class Problem:
    question: str
    answer: str  # gold final answer (GSM8K: after ####, commas removed; MATH: last \boxed content)
    # gold worked solution (GSM8K: the answer text without its #### line; MATH: as released)
    solution: str = ""
    id: str = ""  # stable id: "gsm8k/train/0", or MATH's unique_id "train/algebra/0.json"
    level: int | None = None  # MATH level 1-5 (None for GSM8K and "Level ?")
    type: str | None = None  # MATH subject, e.g. "Algebra" (None for GSM8K)
    tier: str | None = None  # difficulty tier set by assign_tiers


# --- Loading --------------------------------------------------------------------------------------

# Pinned Hub copies (repo, revision, files), used when no local path is given. GSM8K and full MATH
# exist on the Hub only as parquet (MATH: one file per subject), read with pyarrow when it is
# installed (an optional dependency; without it the error says to install it or pass a local path).
# MATH-500's test.jsonl at this revision has the sha256 of ../shared/data/math/math500_test.jsonl
# (35dc4108...), so it is read as is.
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")
_GSM8K_REPO = ("openai/gsm8k", "cc7b047b6e5bb11b4f1af84efc572db110a51b3c")
_MATH_REPO = ("EleutherAI/hendrycks_math", "21a5633873b6a120296cce3e2df9d5550074f4a3")
HUB_SOURCES: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {
    ("gsm8k", "train"): (*_GSM8K_REPO, ("main/train-00000-of-00001.parquet",)),
    ("gsm8k", "test"): (*_GSM8K_REPO, ("main/test-00000-of-00001.parquet",)),
    ("math", "train"): (*_MATH_REPO,
                        tuple(f"{s}/train-00000-of-00001.parquet" for s in MATH_SUBJECTS)),
    ("math", "test"): (*_MATH_REPO,
                       tuple(f"{s}/test-00000-of-00001.parquet" for s in MATH_SUBJECTS)),
    ("math", "math500"): ("HuggingFaceH4/MATH-500", "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be",
                          ("test.jsonl",)),
}
_LOCAL_FILE = {"math500": "math500_test.jsonl"}  # file name of a split inside a local data folder


def _hub_rows(dataset: str, split: str) -> list[tuple[str, dict]]:
    """(where, record) for every record of the pinned hub copy; where = 'file:row' for messages."""
    if (dataset, split) not in HUB_SOURCES:
        raise ValueError(f"no hub source for {dataset} split {split!r}; pass a local path")
    repo, revision, files = HUB_SOURCES[(dataset, split)]
    hint = f"pass a local path instead, e.g. --data-path ../shared/data/{dataset}"
    rows = []
    for file in files:
        try:
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(repo, file, repo_type="dataset", revision=revision))
        except Exception as e:  # any failure (offline, DNS, HTTP, no package): the same to the user
            raise ConnectionError(f"cannot fetch {dataset}/{split} from the Hugging Face Hub "
                                  f"({repo}@{revision[:7]}): hub unreachable or offline "
                                  f"({type(e).__name__}); {hint}") from None
        if local.suffix == ".jsonl":
            rows += [(f"{local}:{n}", r) for n, r in _read_jsonl(local)]
        else:
            rows += [(f"{local}:row {n}", r) for n, r in enumerate(_read_parquet(local, hint), 1)]
    return rows


def _read_parquet(path: Path, hint: str) -> list[dict]:
    try:
        import pyarrow.parquet
    except ImportError:
        raise ImportError(f"{path} is parquet (the Hub's only copy); reading it needs pyarrow "
                          f"(pip install pyarrow), or {hint}") from None
    return pyarrow.parquet.read_table(path).to_pylist()


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(1-based line number, object) for each non-blank line; bad input names the file and line."""
    try:  # bytes, decoded line by line: a bad UTF-8 byte is reported with its line number
        raw_lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    rows = []
    for lineno, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue  # blank lines, and the empty piece after the file's final newline
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}:{lineno}: invalid JSON line ({e})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, "
                             f"got {type(record).__name__}")
        rows.append((lineno, record))
    return rows


def _field(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{where}: missing or non-string field {key!r}")
    return value


def _split_file(path: PathLike, split: str) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / _LOCAL_FILE.get(split, f"{split}.jsonl")
    return path


def _gsm8k_problems(rows: list[tuple[str, dict]], split: str) -> list[Problem]:
    """rows: (where, record) with where = 'file:line' for messages."""
    problems = []
    for index, (where, record) in enumerate(rows):
        question = _field(record, "question", where)
        reasoning, marker, final = _field(record, "answer", where).rpartition("####")
        gold = final.strip().replace(",", "")  # "1,080": 79 train and 14 test golds have commas
        if not marker or not gold:
            raise ValueError(f"{where}: GSM8K answer has no '#### <final answer>' line")
        # the id is the 0-based row, as the data README counts rows; pass-rate files key on it
        problems.append(Problem(question, gold, reasoning.strip(), f"gsm8k/{split}/{index}"))
    return problems


def load_gsm8k(split: str = "train", path: PathLike | None = None) -> list[Problem]:
    """GSM8K problems. path: a jsonl file, or a folder holding {split}.jsonl; None fetches the
    pinned hub copy."""
    if path is None:
        return _gsm8k_problems(_hub_rows("gsm8k", split), split)
    file = _split_file(path, split)
    return _gsm8k_problems([(f"{file}:{n}", r) for n, r in _read_jsonl(file)], split)


def _math_level(value: object) -> int | None:
    # MATH-500 stores the level as an int, MATH as "Level 2"; a JSON true is an int to Python
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("Level ") and value[6:].strip().isdigit():
        return int(value[6:])
    return None  # "Level ?" in two train problems


def _type_key(name: str) -> str:
    """'Counting & Probability' and 'counting_and_probability' name the same subject."""
    return "_".join(name.lower().replace("&", "and").split())


def _math_problems(rows: Iterable[tuple[str, dict]], split: str) -> list[Problem]:
    """rows: (where, record) with where = 'file:line' for messages."""
    problems = []
    for index, (where, record) in enumerate(rows):
        question, solution = record.get("problem"), record.get("solution")
        if not isinstance(question, str) or not isinstance(solution, str):
            raise ValueError(f"{where}: a MATH record needs string fields 'problem' and 'solution'")
        answer = record.get("answer")  # MATH-format data with no box but an answer field
        # the box wins over an answer field (on MATH-500 the two agree on all 500 problems)
        gold = boxed_answer(solution, no_box=answer.strip() if isinstance(answer, str) else None)
        if not isinstance(gold, str) or not gold:
            continue  # unscorable: e.g. train/number_theory/7115.json and 7117.json box nothing
        subject = record.get("type", record.get("subject"))
        problems.append(Problem(
            question, gold, solution, str(record.get("unique_id") or f"math/{split}/{index}"),
            _math_level(record.get("level")), subject if isinstance(subject, str) else None))
    return problems


def load_math(split: str = "train", path: PathLike | None = None,
              levels: Iterable[int] | None = None,
              types: Iterable[str] | None = None) -> list[Problem]:
    """MATH problems, optionally filtered by level (e.g. [2]) and subject (e.g. ["Algebra"] or
    ["algebra"]).

    split: "train", "test" or "math500". path: a jsonl file; a folder holding {split}.jsonl
    (math500_test.jsonl for "math500"); or the original release tree holding
    {split}/<subject>/<n>.json. None fetches the pinned hub copy.
    """
    if path is None:
        rows = _hub_rows("math", split)
    elif Path(path).is_dir() and (Path(path) / split).is_dir():
        root = Path(path)
        rows = []
        for file in sorted((root / split).glob("*/*.json")):  # lexicographic, as the jsonl dumps
            try:
                record = json.loads(file.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{file}: invalid JSON ({e})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{file}: expected a JSON object")
            # "test/precalculus/807.json": the key the jsonl copies, PRM800K and MATH-500 use
            record.setdefault("unique_id", file.relative_to(root).as_posix())
            rows.append((str(file), record))
    else:
        file = _split_file(path, split)
        rows = [(f"{file}:{n}", r) for n, r in _read_jsonl(file)]
    problems = _math_problems(rows, split)
    if levels is not None:  # "Level ?" (level None) is in no selection
        wanted_levels = set(levels)
        problems = [p for p in problems if p.level in wanted_levels]
    if types is not None:
        wanted_types = {_type_key(t) for t in types}
        problems = [p for p in problems if p.type is not None and _type_key(p.type) in wanted_types]
    return problems


def parse_levels(text: str | None) -> list[int] | None:
    """MATH levels as the flags spell them: "2" or "1,2" (None: every level)."""
    return [int(x) for x in text.split(",")] if text else None


def load_problems(spec: str, split: str = "train", path: PathLike | None = None,
                  levels: Iterable[int] | None = None,
                  types: Iterable[str] | None = None) -> list[Problem]:
    """spec: "gsm8k" or "math" (path = its local copy, None = hub), "demo" (the embedded demo's
    synthetic problems: split "train" its training pool, any other its held-out set), or a jsonl
    file / data folder in either format, detected from the first record's fields (question+answer:
    GSM8K; problem+solution: MATH)."""
    if spec == "demo":
        if path is not None or levels is not None or types is not None:
            raise ValueError("the demo's problems are built in: no path, levels or types")
        if split == "train":
            return synthetic_problems(SYNTHETIC_TRAIN_SIZE, seed=SYNTHETIC_TRAIN_SEED)
        return synthetic_problems(SYNTHETIC_TEST_SIZE, seed=SYNTHETIC_TEST_SEED)
    if spec in ("gsm8k", "math"):
        dataset, source = spec, path
    else:
        if path is not None:
            raise ValueError("pass either a dataset name with path=..., "
                             "or a path as spec, not both")
        source = Path(spec)
        if source.is_dir() and (source / split).is_dir():
            dataset = "math"  # the original MATH release tree
        else:
            file = _split_file(source, split)
            rows = _read_jsonl(file)
            first = rows[0][1] if rows else {}
            if "question" in first and "answer" in first:
                dataset = "gsm8k"
            elif "problem" in first and "solution" in first:
                dataset = "math"
            else:
                raise ValueError(f"{file}: cannot tell the format "
                                 "(want question+answer or problem+solution fields)")
    if dataset == "gsm8k":
        if levels is not None or types is not None:
            raise ValueError("levels/types filter MATH only")
        return load_gsm8k(split, source)
    return load_math(split, source, levels, types)


# --- Difficulty tiers -----------------------------------------------------------------------------

# The authors' GSM8K split [paper notes 1.2, INFER]: 10 samples per problem, Easy = all 10 correct,
# Medium = 9 of 10, Hard = 8 or fewer. With thresholds as minimum pass rates:
# {"easy": 1.0, "medium": 0.9, "hard": 0.0}.
PAPER_TIER_THRESHOLDS: dict[str, float] = {"easy": 1.0, "medium": 0.9, "hard": 0.0}


def _read_pass_rates(path: Path) -> dict[str, float]:
    rates: dict[str, float] = {}
    for lineno, record in _read_jsonl(path):
        where = f"{path}:{lineno}"
        pid = record.get("id")
        if not isinstance(pid, str):
            raise ValueError(f"{where}: missing string field 'id'")
        if "pass_rate" in record:
            rate = record["pass_rate"]
        elif "rewards" in record:
            rewards = record["rewards"]
            if (not isinstance(rewards, list) or not rewards
                    or any(isinstance(r, bool) or r not in (0, 1) for r in rewards)):
                raise ValueError(f"{where}: 'rewards' must be a non-empty list of 0/1")
            rate = sum(rewards) / len(rewards)
        else:
            raise ValueError(f"{where}: need 'pass_rate' or 'rewards'")
        # a JSON true is an int to Python: without the bool tests it would pass as rate 1.0 (or,
        # in 'rewards', as a verdict)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"{where}: pass rate must be a number in [0, 1], got {rate!r}")
        if pid in rates:
            raise ValueError(f"{where}: duplicate id {pid!r}")
        rates[pid] = float(rate)
    return rates


def assign_tiers(problems: Iterable[Problem], pass_rates_path: PathLike,
                 thresholds: Mapping[str, float] = PAPER_TIER_THRESHOLDS) -> list[Problem]:
    """Copies of problems with tier set from measured pass rates.

    pass_rates_path: jsonl, one line per problem, {"id": <Problem.id>, "pass_rate": <float in
    [0, 1]>} or {"id": ..., "rewards": [0/1, ...]} (the k sampled verdicts; pass rate = their mean).
    Ids in the file but not in problems are ignored; a problem missing from the file is an error (a
    file from another split or dataset).
    thresholds: tier -> minimum pass rate (inclusive); each problem gets the tier with the highest
    minimum that its pass rate reaches, or None below all of them. Select a split with
    [p for p in tiered if p.tier == "hard"].
    """
    mins = dict(thresholds)
    # distinct minimums: two tiers at one minimum would leave the tier to the dict's order
    if (not mins or any(not 0.0 <= m <= 1.0 for m in mins.values())
            or len(set(mins.values())) != len(mins)):
        raise ValueError("thresholds must map tiers to distinct minimum pass rates in [0, 1], "
                         f"got {mins}")
    # highest minimum first: next() below gives the highest tier the rate reaches
    ordered = sorted(mins.items(), key=lambda kv: -kv[1])
    rates = _read_pass_rates(Path(pass_rates_path))
    problems = list(problems)
    missing = [p.id for p in problems if p.id not in rates]
    if missing:
        raise ValueError(f"{pass_rates_path}: no pass rate for {len(missing)} of {len(problems)} "
                         f"problems, e.g. {missing[:3]}")
    return [replace(p, tier=next((t for t, m in ordered if rates[p.id] >= m), None))
            for p in problems]


# --- Prompts --------------------------------------------------------------------------------------

# exactly what the tokenizer's chat_template renders for one user turn with the generation prompt
# (no system message given: its default one, also Qwen2.5-Math's own qwen25-math-cot prompt)
QWEN_CHAT_TEMPLATE = ("<|im_start|>system\nPlease reason step by step, and put your final answer "
                      "within \\boxed{}.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                      "<|im_start|>assistant\n")
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"  # the authors' non-"qa" fallback, verbatim
# the authors' "qa" format with cot=True, trailing space included; PAPER_GOLD_TEMPLATE is their
# include_reasoning=True: the cleaned reasoning and its space, the "#### ..." answer left off
PAPER_TEMPLATE = "{exemplars}Question: {question}\nSolution: Let's think step by step. "
PAPER_GOLD_TEMPLATE = ("{exemplars}Question: {question}\nSolution: Let's think step by step. "
                       "{reasoning} ")

# The authors' hand-written exemplars (Caitlyn-Yin/grpo_norm gsm8k_difficulty.py, math_datasets.py),
# as their formatter renders them: GSM8K picks one by the training tier; MATH uses both, in the
# order random.seed(42) gives.
PAPER_EXEMPLARS: dict[str, str] = {
    "easy": (
        "Question: John has 5 apples. He buys 3 more apples. How many apples does he have?\n"
        "Solution: Let's think step by step. John starts with 5 apples. He buys 3 more. "
        "So he has 5 + 3 = 8 apples #### The final answer is 8\n\n"),
    "medium": (
        "Question: A store sells apples for $2 each and oranges for $3 each. "
        "If John buys 4 apples and 5 oranges, how much does he spend?\n"
        "Solution: Let's think step by step. Apples cost $2 each, so 4 apples cost 4 × 2 = $8. "
        "Oranges cost $3 each, so 5 oranges cost 5 × 3 = $15. Total cost is 8 + 15 = $23 "
        "#### The final answer is 23\n\n"),
    "hard": (
        "Question: A factory produces 240 widgets per day. Due to increased demand, "
        "they increase production by 25%. Then, due to equipment issues, they have to reduce "
        "the new production rate by 10%. How many widgets do they produce per day now?\n"
        "Solution: Let's think step by step. Initial production is 240 widgets. "
        "After 25% increase: 240 × 1.25 = 300 widgets. "
        "After 10% decrease: 300 × 0.9 = 270 widgets "
        "#### The final answer is 270\n\n"),
    "math": (
        "Question: Find the value of x if 2x + 3 = 11\n"
        "Solution: Let's think step by step. We have 2x + 3 = 11. "
        "Subtracting 3 from both sides: 2x = 8. Dividing by 2: x = 4 #### The final answer is 4\n\n"
        "Question: What is the area of a rectangle with length 5 and width 3?\n"
        "Solution: Let's think step by step. The area of a rectangle is length times width. "
        "So area = 5 × 3 = 15 #### The final answer is 15\n\n"),
}

_PLACEHOLDER = re.compile(r"\{(question|exemplars|reasoning)\}")
PROMPT_TEMPLATES: dict[str, str] = {
    "qwen-chat": QWEN_CHAT_TEMPLATE,
    "plain": PLAIN_TEMPLATE,
    "paper": PAPER_TEMPLATE,
    "paper-gold": PAPER_GOLD_TEMPLATE,
}


def _remove_boxes(text: str) -> str:
    """text with every \\boxed{...} / \\fbox{...} / \\boxed N removed (gold solutions only)."""
    for _ in range(64):  # bounded; no MATH solution holds more than 5 boxes
        start = last_box_start(text)
        if start < 0:
            break
        text = text[:start] + text[read_box(text, start)[1]:]
    return text


def _gold_reasoning(problem: Problem) -> str:
    """The authors' cleaning of the gold solution for the prompt (their _clean_reasoning), final
    answer withheld.

    One deliberate difference: MATH boxes are removed brace-matched; their regex
    \\boxed\\{[^}]*\\} left the tail of nested answers in the prompt
    (\\boxed{\\frac{1}{2}} -> "{2}}").
    """
    text = problem.solution
    if problem.type is None:  # GSM8K: drop calculator annotations ("<<48/2=24>>")
        text = re.sub(r"<<.*?>>", "", text)
    else:
        text = _remove_boxes(text).strip()
        text = re.sub(r"\\[a-zA-Z]+\{([^}]*)\}", r"\1", text)
        text = re.sub(r"\$([^\$]*)\$", r"\1", text)
    # lines joined by ". "; the ".." after a line that ended in "." becomes one "."
    text = ". ".join(text.split("\n"))
    return re.sub(r"\.+", ".", text).strip()


def format_prompt(problem: Problem, template: str = "qwen-chat") -> str:
    """The prompt text for one problem. template: a key of PROMPT_TEMPLATES."""
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; "
                         f"choose from {sorted(PROMPT_TEMPLATES)}")
    fields = {"question": problem.question}
    if template.startswith("paper"):
        # MATH: both MATH exemplars; GSM8K: its tier's, Easy when untiered (the authors' default)
        key = "math" if problem.type is not None else (
            problem.tier if problem.tier in PAPER_EXEMPLARS else "easy")
        fields["exemplars"] = PAPER_EXEMPLARS[key]
    if template == "paper-gold":
        if not problem.solution:
            raise ValueError(f"problem {problem.id!r} has no gold solution "
                             "for the paper-gold template")
        fields["reasoning"] = _gold_reasoning(problem)
    # One pass over the template: inserted text (LaTeX braces, a literal "{question}") is never
    # rescanned.
    return _PLACEHOLDER.sub(lambda m: fields[m.group(1)], PROMPT_TEMPLATES[template])


def prompt_ids(tok, problem: Problem, template: str, max_tokens: int = 0,
               max_new_tokens: int = 0, max_positions: int | None = None) -> list[int]:
    """The prompt's token ids. With max_tokens only the last max_tokens are kept, as TRL's
    max_prompt_length cuts them (the start of the prompt goes, the question's end stays). With
    max_positions (the model's), checked to leave room for max_new_tokens: one line naming the
    problem and the flags that set both (--max-prompt-tokens, --max-new-tokens)."""
    ids = tok.encode(format_prompt(problem, template))
    ids = ids[-max_tokens:] if max_tokens else ids
    # generate checks this too, but by then it can no longer name the problem
    if max_positions is not None and len(ids) + max_new_tokens > max_positions:
        cut = (f"after --max-prompt-tokens {max_tokens}" if max_tokens
               else "--max-prompt-tokens 0: not cut")
        raise ValueError(f"problem {problem.id!r}: its prompt of {len(ids)} tokens ({cut}) + "
                         f"--max-new-tokens {max_new_tokens} exceeds the model's "
                         f"{max_positions} positions; lower --max-prompt-tokens or "
                         "--max-new-tokens")
    return ids


# --- Synthetic arithmetic word problems (demo) ----------------------------------------------------
# GSM8K-shaped problems a laptop-sized model can learn: a starting amount, then 1-2 (easy) or 3-4
# (hard) additions and subtractions, every running value in 0..99. Worked solutions write one step
# per sentence and end in "#### N". To pretrain the demo model, each written step result is wrong
# with probability `slip` (off by 1, 2 or 10, carried forward), so the model "knows but slips":
# greedy decoding is mostly right, sampling often is not, and RL has something to sharpen
# (demo/make_demo_model.py).

SYNTHETIC_TRAIN_SEED, SYNTHETIC_TRAIN_SIZE = 2024, 20_000  # the demo's training pool
SYNTHETIC_TEST_SEED, SYNTHETIC_TEST_SIZE = 7, 1_000  # its held-out set (eval.py --data demo)
NAMES = ("Tom", "Ana", "Sam", "Mia", "Leo", "Zoe")
ITEMS = ("apples", "pens", "cards", "books", "coins", "shells")
GAIN = ("buys {n} more", "finds {n} more", "gets {n} more from a friend", "wins {n} more")
LOSS = ("gives away {n}", "loses {n}", "sells {n}", "gives {n} to a friend")
TIER_OPS = {"easy": (1, 2), "hard": (3, 4)}


def arithmetic_steps(rng: random.Random, n_ops: int) -> tuple[int, list[int]]:
    """A start value and signed operands keeping every running value in 0..99."""
    value = start = rng.randint(2, 60)
    deltas = []
    for _ in range(n_ops):  # at 99 only down, at 0 only up, else a coin flip
        if value > 0 and (value >= 99 or rng.random() < 0.5):
            d = -rng.randint(1, min(30, value))
        else:
            d = rng.randint(1, min(30, 99 - value))
        deltas.append(d)
        value += d
    return start, deltas


def worked_solution(start: int, deltas: list[int], rng: random.Random | None = None,
                    slip: float = 0.0) -> tuple[str, int]:
    """'12 + 5 = 17. 17 - 3 = 14. #### 14' and its final value. With slip > 0 a step result may be
    off by 1, 2 or 10; later steps carry the wrong value forward (offsets that would leave 0..99
    later are not used)."""
    parts, value, offset = [], start, 0
    true_values = [start + sum(deltas[:i + 1]) for i in range(len(deltas))]
    for i, d in enumerate(deltas):
        if rng is not None and rng.random() < slip:
            later = [v + offset for v in true_values[i:]]
            choices = [e for e in (-10, -2, -1, 1, 2, 10) if all(0 <= v + e <= 99 for v in later)]
            offset += rng.choice(choices) if choices else 0  # none fits: no new slip here
        result = true_values[i] + offset
        parts.append(f"{value} {'+' if d > 0 else '-'} {abs(d)} = {result}.")
        value = result
    return " ".join(parts) + f" #### {value}", value


def synthetic_problem(rng: random.Random, tier: str, index: int = 0, slip: float = 0.0) -> Problem:
    """One problem; `solution` is the worked solution, with slips when slip > 0 (`answer` stays
    correct)."""
    # the order of the rng draws below is part of the data: another order gives other problems for
    # every seed, and the demo model (demo/make_demo_model.py) was pretrained on these
    n_ops = rng.randint(*TIER_OPS[tier])
    start, deltas = arithmetic_steps(rng, n_ops)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    sentences = [f"{name} has {start} {item}."]
    for d in deltas:
        sentences.append("Then " + name + " "
                         + rng.choice(GAIN if d > 0 else LOSS).format(n=abs(d)) + ".")
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    solution, _ = worked_solution(start, deltas, rng, slip)
    answer = start + sum(deltas)
    return Problem(question=question, answer=str(answer), solution=solution,
                   id=f"synthetic/{tier}/{index}", tier=tier)


def synthetic_problems(n: int, tiers=("easy", "hard"), seed: int = 0) -> list[Problem]:
    """n problems, tiers interleaved, reproducible for a seed."""
    rng = random.Random(seed)
    return [synthetic_problem(rng, tiers[i % len(tiers)], i) for i in range(n)]
