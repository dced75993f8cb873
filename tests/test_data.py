"""Tests for data.py: loaders, prompts, answer extraction, math_equal and the hardened reward.

Every expected verdict in the tables below was worked out by hand from the rules in data.py's docstring; none was
produced by running the code under test. Real-data tests read ../shared/data through GRPO_DATA_DIR (the data_dir
fixture skips them when it is unset); the fixture tests write small files of the same formats to tmp_path.
"""

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data
from data import (MAX_ANSWER_CHARS, MAX_COMPLETION_CHARS, PAPER_EXEMPLARS, PAPER_TIER_THRESHOLDS, PROMPT_TEMPLATES,
                  Problem, assign_tiers, extract_answer, format_prompt, load_gsm8k, load_math, load_problems,
                  math_equal, reward)

ROOT = Path(__file__).resolve().parent.parent

# --- The hand-written table: (completion, gold, expected reward under the default strict reward) -------------------

REWARD_CASES = [
    # GSM8K "#### N"
    ("She sold 48 + 24 = 72 clips.\n#### 72", "72", 1.0),
    ("#### 72", "73", 0.0),
    ("#### 1,000", "1000", 1.0),
    ("#### 1000", "1000", 1.0),
    ("#### $18", "18", 1.0),
    ("#### 18.00", "18", 1.0),
    ("#### 18", "180", 0.0),
    ("#### 180", "18", 0.0),
    ("#### -7", "7", 0.0),
    ("#### -7", "-7", 1.0),
    ("#### 7", "-7", 0.0),
    ("#### The final answer is 8", "8", 1.0),
    ("... #### The final answer is 8\n\nQuestion: Tom has 2 pens and buys 1.\nSolution: Let's think step by step. "
     "2 + 1 = 3 #### The final answer is 3", "8", 1.0),
    ("... #### The final answer is 8\n\nQuestion: Tom has 2 pens and buys 1.\nSolution: Let's think step by step. "
     "2 + 1 = 3 #### The final answer is 3", "3", 0.0),
    ("#### 18 dollars", "18", 1.0),
    ("#### 50%", "50", 1.0),
    ("####72", "72", 1.0),
    ("#### 72.", "72", 1.0),
    ("#### \n72", "72", 1.0),  # the answer on the line after ####
    ("#### 1,080", "1080", 1.0),
    ("#### 109,200,000", "109200000", 1.0),
    ("#### 0.5", "1/2", 1.0),
    ("#### 5\n#### 6", "5", 1.0),
    # \boxed forms
    ("So the total is \\boxed{18}.", "18", 1.0),
    ("\\boxed{18}", "18.0", 1.0),
    ("\\boxed{18.00}", "18", 1.0),
    ("\\boxed{1,000}", "1000", 1.0),
    ("\\boxed{1000}", "1,000", 1.0),
    ("\\boxed{\\$18}", "18", 1.0),
    ("$\\boxed{18}$ dollars", "18", 1.0),
    ("\\boxed{18} and then 20 more apples", "18", 1.0),
    ("\\boxed{18} and then 20 more apples", "20", 0.0),
    ("\\boxed{} is where the answer goes; it is 18", "18", 0.0),
    ("First \\boxed{5}, then corrected: \\boxed{6}", "6", 1.0),
    ("First \\boxed{5}, then corrected: \\boxed{6}", "5", 0.0),
    ("\\boxed{18", "18", 0.0),
    ("\\boxed{18}}", "18", 1.0),
    ("\\boxed{\\frac{1}{2}", "\\frac{1}{2}", 0.0),
    ("\\boxed{-7}", "7", 0.0),
    ("\\boxed{7}", "-7", 0.0),
    ("\\boxed{-7}", "-7", 1.0),
    ("\\boxed 5", "5", 1.0),
    ("The answer is $\\boxed 5$.", "5", 1.0),
    ("\\fbox{5}", "5", 1.0),
    ("\\boxed{\\boxed{5}}", "5", 1.0),
    ("\\boxed{ 42 }", "42", 1.0),
    ("\\boxed{{42}}", "42", 1.0),
    ("\\boxed{5} <|im_end|> \\boxed{6}", "5", 1.0),
    ("\\boxed{5}<|endoftext|>\\boxed{6}", "6", 0.0),
    ("\\boxed{a}", "5", 0.0),
    ("\\boxed\n{7}", "7", 1.0),
    ("\\boxedx{7}", "7", 0.0),
    ("\\boxed", "7", 0.0),
    ("\\boxed{" + "1" * 600 + "}", "1", 0.0),
    # numbers
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\tfrac12}", "0.5", 1.0),
    ("\\boxed{1/2}", "\\frac{1}{2}", 1.0),
    ("\\boxed{2/4}", "\\frac{1}{2}", 1.0),
    ("\\boxed{0.33}", "\\frac{1}{3}", 0.0),
    ("\\boxed{0.3333333333}", "\\frac{1}{3}", 0.0),
    ("\\boxed{-\\frac{1}{2}}", "-0.5", 1.0),
    ("\\boxed{\\frac{-1}{2}}", "-\\frac12", 1.0),
    ("\\boxed{\\frac{1}{-2}}", "-0.5", 1.0),
    ("\\boxed{-\\frac{1}{2}}", "\\frac{1}{2}", 0.0),
    ("\\boxed{.5}", "0.5", 1.0),
    ("\\boxed{+5}", "5", 1.0),
    ("\\boxed{05}", "5", 1.0),
    ("\\boxed{5\\%}", "5", 1.0),
    ("\\boxed{5%}", "5", 1.0),
    ("\\boxed{50\\%}", "0.5", 0.0),
    ("\\boxed{18 \\text{ apples}}", "18", 1.0),
    ("\\boxed{18\\text{ cm}^2}", "18", 1.0),
    ("\\boxed{18 \\mbox{ m}^3}", "18", 1.0),
    ("\\boxed{18 dollars}", "18", 1.0),
    ("\\boxed{18 square feet}", "18", 1.0),
    ("\\boxed{30^\\circ}", "30", 1.0),
    ("\\boxed{30^{\\circ}}", "30", 1.0),
    ("\\boxed{30\u00b0}", "30", 1.0),
    ("\\boxed{30 degrees}", "30", 1.0),
    ("\\boxed{30^\\circ}", "60", 0.0),
    ("\\boxed{1.5\\times 10^{3}}", "1500", 1.0),
    ("\\boxed{1.5 \\cdot 10^3}", "1500", 1.0),
    ("\\boxed{1.5e3}", "1500", 1.0),
    ("\\boxed{1.5E+3}", "1500", 1.0),
    ("\\boxed{1e-3}", "0.001", 1.0),
    ("\\boxed{2e3}", "200", 0.0),
    ("\\boxed{10^{6}}", "1000000", 1.0),
    ("\\boxed{1,000,000}", "10^6", 1.0),
    ("\\boxed{1{,}000}", "1000", 1.0),
    ("\\boxed{1,\\!000}", "1000", 1.0),
    ("\\boxed{1\\,000}", "1000", 1.0),
    ("\\boxed{1,00}", "100", 0.0),
    ("\\boxed{\u22127}", "-7", 1.0),
    ("\\boxed{\\$1,\\!657}", "1657", 1.0),
    ("\\boxed{\\$ 251.60}", "251.6", 1.0),
    ("\\boxed{3.14}", "\\pi", 0.0),
    ("\\boxed{6\\frac{1}{4}}", "\\frac{25}{4}", 1.0),
    ("\\boxed{-15\\frac{3}{5}}", "-15.6", 1.0),
    ("\\boxed{2\\frac{\\pi}{2}}", "\\pi", 1.0),
    ("\\boxed{x = 5}", "5", 1.0),
    ("\\boxed{5}", "x=5", 1.0),
    ("\\boxed{x = 5}", "6", 0.0),
    # numeric LaTeX expressions (own bounded parser)
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 1.0),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{1}{2}\\sqrt{3}", 1.0),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "0.8660254", 0.0),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{2}}{2}", 0.0),
    ("\\boxed{2\\pi}", "2 \\pi", 1.0),
    ("\\boxed{\\pi \\cdot 2}", "2\\pi", 1.0),
    ("\\boxed{6.283}", "2\\pi", 0.0),
    ("\\boxed{3^{2}}", "9", 1.0),
    ("\\boxed{3^2}", "9", 1.0),
    ("\\boxed{2^{10}}", "1024", 1.0),
    ("\\boxed{2^{-1}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\sqrt{4}}", "2", 1.0),
    ("\\boxed{\\sqrt{16}}", "5", 0.0),
    ("\\boxed{\\sqrt[3]{8}}", "2", 1.0),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),
    ("\\boxed{\\sqrt{2}+1}", "1+\\sqrt{2}", 1.0),
    ("\\boxed{\\frac{25\\pi}{2}}", "\\frac{25}{2}\\pi", 1.0),
    ("\\boxed{10\\sqrt3}", "10\\sqrt{3}", 1.0),
    ("\\boxed{(2+3)\\cdot 4}", "20", 1.0),
    ("\\boxed{2 \\times 3}", "6", 1.0),
    ("\\boxed{12 \\div 4}", "3", 1.0),
    ("\\boxed{" + "(-1)" * 40 + "}", "1", 1.0),
    ("\\boxed{" + "(-1)" * 41 + "}", "-1", 1.0),
    ("\\boxed{\\frac{1}{0}}", "1", 0.0),
    ("\\boxed{9^{9^{9^{9}}}}", "81", 0.0),
    ("\\boxed{10^{1000}}", "1", 0.0),
    # tuples, intervals, sets, matrices, text
    ("\\boxed{(1, 2)}", "(1,2)", 1.0),
    ("\\boxed{(2, 1)}", "(1,2)", 0.0),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3,\\frac{\\pi}{2})", 1.0),
    ("\\boxed{(3, 1.5708)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 0.0),
    ("\\boxed{(0.5, -2)}", "\\left(\\frac{1}{2}, -2\\right)", 1.0),
    ("\\boxed{(1,2,3)}", "(1,2)", 0.0),
    ("\\boxed{[0, 3)}", "[0,3)", 1.0),
    ("\\boxed{(0, 3)}", "[0,3)", 0.0),
    ("\\boxed{[0, 3]}", "[0,3)", 0.0),
    ("\\boxed{(-\\infty, 5]}", "(-\\infty,5]", 1.0),
    ("\\boxed{(-\\infty, -1) \\cup (4, \\infty)}", "(-\\infty,-1)\\cup(4,\\infty)", 1.0),
    ("\\boxed{(4, \\infty) \\cup (-\\infty, -1)}", "(-\\infty,-1)\\cup(4,\\infty)", 1.0),
    ("\\boxed{\\{3, 2, 1\\}}", "\\{1,2,3\\}", 1.0),
    ("\\boxed{\\{1, 2\\}}", "\\{1,2,3\\}", 0.0),
    ("\\boxed{3, 1, 2}", "1, 2, 3", 1.0),
    ("\\boxed{1, 2}", "(1, 2)", 0.0),
    ("\\boxed{2, 3, and 4}", "2, 3, \\text{ and } 4", 1.0),
    ("\\boxed{-2 \\text{ or } -12}", "-12, -2", 1.0),
    ("\\boxed{1, 1, 2}", "1, 2, 2", 0.0),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1.0),
    ("\\boxed{\\begin{bmatrix} 0.5 & 1 \\\\ 0 & 1 \\end{bmatrix}}",
     "\\begin{pmatrix} \\frac{1}{2} & 1 \\\\ 0 & 1 \\end{pmatrix}", 1.0),
    ("\\boxed{\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 0.0),
    ("\\boxed{\\text{(C)}}", "C", 1.0),
    ("\\boxed{(C)}", "\\text{(C)}", 1.0),
    ("\\boxed{C}", "\\text{(D)}", 0.0),
    ("\\boxed{\\text{Friday}}", "\\text{Friday}", 1.0),
    ("\\boxed{friday}", "\\text{Friday}", 1.0),
    ("\\boxed{Monday}", "\\text{Friday}", 0.0),
    ("\\boxed{\\textbf{even}}", "\\text{even}", 1.0),
    ("\\boxed{x^2 + 2x + 1}", "x^2+2x+1", 1.0),
    ("\\boxed{x^2+2x+1}", "x^2+1+2x", 0.0),
    ("\\boxed{y = 2x + 3}", "y=2x+3", 1.0),
    ("\\boxed{2x+3}", "y = 2x + 3", 1.0),
    ("\\boxed{\\dfrac{x}{2}}", "\\frac{x}{2}", 1.0),
    ("\\boxed{\\left[ 1, 2 \\right]}", "[1,2]", 1.0),
    ("\\boxed{\\!\\sqrt{21}}", "\\sqrt{21}", 1.0),
    ("\\boxed{1 \\pm \\sqrt{19}}", "1\\pm\\sqrt{19}", 1.0),
    ("\\boxed{\\frac{1}{29322216}}", "\\dfrac{1}{29,\\!322,\\!216}", 1.0),
    ("\\boxed{(100, 101)}", "(100,101)", 1.0),
    ("\\boxed{100101}", "(100,101)", 0.0),
    # "the answer is"
    ("The answer is 18.", "18", 1.0),
    ("The answer is $18$.", "18", 1.0),
    ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5", 1.0),
    ("Therefore, the answer is: 42", "42", 1.0),
    ("Answer: 42", "42", 1.0),
    ("The answer is 18 apples.", "18", 1.0),
    ("The answer is 18. Next we check 20.", "18", 1.0),
    ("The answer is 17. Wait, the answer is 18.", "18", 1.0),
    ("The answer is \\(18\\)", "18", 1.0),
    ("the ANSWER IS 18", "18", 1.0),
    ("The answer is 18", "180", 0.0),
    ("I think 18 is the answer", "18", 0.0),
    ("Janet\u2019s final answer is 18", "18", 1.0),
    ("\u00c5\u00c5\u00c5 The answer is 18", "18", 1.0),
    ("The answer is **18**.", "18", 1.0),
    # hedging is not rewarded
    ("\\boxed{18 \\text{ or } 19}", "18", 0.0),
    ("\\boxed{18, 19}", "18", 0.0),
    ("\\boxed{18} or \\boxed{19}", "18", 0.0),
    # strict reward, hostile and empty input
    ("She has 18 apples.", "18", 0.0),
    ("__import__('os').system('echo hacked')", "0", 0.0),
    ("\\boxed{__import__('os')}", "0", 0.0),
    ("", "18", 0.0),
    ("18", "", 0.0),
    ("\\boxed{18}", "  ", 0.0),
]


def test_table_is_large_and_has_both_verdicts():
    assert len(REWARD_CASES) >= 150
    assert {e for _, _, e in REWARD_CASES} == {0.0, 1.0}
    assert sum(e == 0.0 for _, _, e in REWARD_CASES) >= 50


@pytest.mark.parametrize("completion,gold,expected", REWARD_CASES)
def test_reward_table(completion, gold, expected):
    got = reward(completion, gold)
    assert type(got) is float and got == expected


EXTRACT_CASES = [  # (text, strict, expected answer)
    ("She has 18 apples.", False, "18"),
    ("She has 18 apples.", True, None),
    ("x = 3, y = -4", False, "-4"),
    ("5-3", False, "5-3"),  # a whole expression, never a piece of one
    ("It costs 1,000 dollars", False, "1,000"),
    ("Total 3.50 now", False, "3.50"),
    ("no numbers here", False, None),
    ("\\boxed{5} then 7", False, "5"),
    ("\\boxed{} then 7", False, None),
    ("#### 7\nextra 9", False, "7"),
    ("The answer is 4. Then 9", False, "4"),
    ("#### The final answer is 8", True, "8"),
    ("\\boxed{\\frac{1}{2}}", True, "\\frac{1}{2}"),
    ("text <|im_end|> \\boxed{9}", False, None),
    ("Answer: 12<|endoftext|>The answer is 13", True, "12"),
    ("\\boxed{a{b}c}", True, "a{b}c"),
    ("\\boxed 2.", True, "2"),
    ("x" * (2 * MAX_COMPLETION_CHARS) + "#### 5", True, "5"),
    ("#### 5" + "x" * MAX_COMPLETION_CHARS, True, None),
    (123, True, None),
]


@pytest.mark.parametrize("text,strict,expected", EXTRACT_CASES)
def test_extract_answer_table(text, strict, expected):
    assert extract_answer(text, strict=strict) == expected


def test_reward_is_strict_by_default_and_lenient_on_request():
    assert reward("She has 18 apples.", "18") == 0.0
    assert reward("She has 18 apples.", "18", strict=False) == 1.0
    assert reward("She has 18 apples.", "19", strict=False) == 0.0


# --- Fuzz and adversarial input -------------------------------------------------------------------------------------

LATEX_TOKENS = ["\\boxed{", "\\fbox{", "\\boxed ", "{", "}", "\\{", "\\}", "\\frac", "\\dfrac", "\\sqrt", "\\sqrt[3]",
                "^", "_", "9", "0", "1", "-", "+", "*", "/", ",", ".", "(", ")", "[", "]", "\\pi", "\\cdot", "\\times",
                "####", "The answer is ", "answer:", " ", "\n", "$", "\\$", "%", "\\%", "e", "E", "x", "=", "\\text{",
                "\\left(", "\\right)", "\\cup", "\\infty", "&", "\\\\", "\\begin{pmatrix}", "\\end{pmatrix}", "^\\circ",
                "<|im_end|>", "and", "or", "\u2212", "\u00b0", "\\!", "{,}", "1,000", "e999", "^{99}", "\\sqrt{-1}"]
latex_soup = st.lists(st.sampled_from(LATEX_TOKENS), max_size=60).map("".join)
any_text = st.one_of(st.text(max_size=300), latex_soup)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(any_text, st.booleans())
def test_extract_answer_never_raises(text, strict):
    got = extract_answer(text, strict=strict)
    assert got is None or (isinstance(got, str) and 0 < len(got) <= MAX_ANSWER_CHARS)


@FUZZ
@given(any_text, any_text)
def test_math_equal_and_reward_never_raise(a, b):
    assert math_equal(a, b) in (True, False)
    assert reward(a, b) in (0.0, 1.0)
    assert reward(a, b, strict=False) in (0.0, 1.0)


@FUZZ
@given(latex_soup)
def test_normalised_answer_equals_itself_or_is_unusable(s):
    # reflexive on anything that normalises to a non-empty answer
    assert math_equal(s, s) == bool(data._normalize(s)) or len(s) > MAX_ANSWER_CHARS


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-10**12, max_value=10**12))
def test_integers_in_every_spelling(n):
    assert math_equal(f"{n:,}", str(n))
    assert math_equal(f"{n}.00", str(n))
    assert reward(f"#### {n:,}", str(n)) == 1.0
    assert reward(f"\\boxed{{{n}}}", str(n)) == 1.0
    assert not math_equal(str(n + 1), str(n))
    assert not math_equal(str(n * 10), str(n)) or n == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-999, max_value=999), st.sampled_from([1, 2, 4, 5, 8, 16, 20, 25, 40, 125]))
def test_fractions_equal_their_terminating_decimals(a, b):
    value = Fraction(a, b)
    digits = 4  # every b above divides 10**4
    scaled = abs(value.numerator) * (10 ** digits // value.denominator)
    decimal = ("-" if value < 0 else "") + f"{scaled // 10 ** digits}.{scaled % 10 ** digits:0{digits}d}"
    assert math_equal(decimal, f"\\frac{{{a}}}{{{b}}}")
    assert math_equal(f"{a}/{b}", decimal)
    assert not math_equal(decimal, f"\\frac{{{a + 1}}}{{{b}}}")


ADVERSARIAL = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "power tower, bare": "#### 9^{9^{9^{9^{9}}}}",
    "10^6 digits boxed": "\\boxed{" + "9" * 10**6 + "}",
    "10^6 digits after ####": "#### " + "9" * 10**6,
    "10^6 digits as text": "The total is " + "9" * 10**6,
    "400 digits boxed": "\\boxed{" + "9" * 400 + "}",
    "10^5 nested braces": "\\boxed{" + "{" * 10**5 + "81" + "}" * 10**5 + "}",
    "200 nested braces": "\\boxed{" + "{" * 200 + "81" + "}" * 200 + "}",
    "250 nested parens": "\\boxed{" + "(" * 250 + "81" + ")" * 250 + "}",
    "500 unary minus": "\\boxed{" + "-" * 500 + "81}",
    "exponent chain": "\\boxed{" + "2^" * 200 + "2}",
    "nested fractions": "\\boxed{" + "\\frac{1}{" * 60 + "2" + "}" * 60 + "}",
    "nested roots": "\\boxed{" + "\\sqrt{" * 80 + "2" + "}" * 80 + "}",
    "huge scientific": "\\boxed{1e999999999}",
    "__import__": "\\boxed{__import__('os').system('rm -rf /')}",
    "__import__ bare": "__import__('os').system('rm -rf /')",
    "1 MB of \\boxed{": "\\boxed{" * (2**20 // 7),
    "1 MB of ####": "####" * (2**18),
    "1 MB of 'The answer is '": "The answer is " * (2**20 // 14),
    "1 MB of 'answer '": "answer " * (2**20 // 7),
    "1 MB of '1a'": "1a" * 2**19,
    "1 MB of '<|'": "<|" * 2**19,
    "1 MB of '$'": "The answer is $" + "$" * 2**20,
    "1 MB of mixed markers": "\\boxed{1} #### 2 The answer is 3 " * 30_000,
    "1 MB of '<answer>'": "<answer>" * (2**20 // 8),
    "1 MB of 'Final Answer\\n'": "Final Answer\n" * (2**20 // 13),
    "1 MB of 'The answer is not 5 '": "The answer is not 5 " * (2**20 // 20),
    "1 MB of '$1$ and '": "$1$ and " * (2**20 // 8),
    "1 MB of '1+'": "1+" * 2**19,
    "1 MB of '\\nQuestion:'": "\nQuestion:" * (2**20 // 10),
    "long list": "\\boxed{" + "1," * 250 + "1}",
    "long set": "\\boxed{\\{" + "\\pi," * 120 + "1\\}}",
    "long matrix": "\\boxed{\\begin{pmatrix}" + "1&" * 100 + "1\\end{pmatrix}}",
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_corpus_scores_zero_fast(name):
    text = ADVERSARIAL[name]
    for strict in (True, False):
        data._canonical.cache_clear()  # time the cold path
        start = time.perf_counter()
        got = reward(text, "81", strict=strict)
        elapsed = time.perf_counter() - start
        assert got == 0.0
        assert elapsed < 0.05, f"{name}: {elapsed * 1e3:.1f} ms (the benchmark measures the 5 ms target)"
    start = time.perf_counter()
    assert math_equal(text, text) in (True, False)
    assert time.perf_counter() - start < 0.05


# --- Loaders on small fixtures written here (no GRPO_DATA_DIR needed) ------------------------------------------------

def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


GSM8K_RECORDS = [
    {"question": "Natalia sold clips to 48 friends in April, and half as many in May. How many altogether?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "How much is the house worth?", "answer": "It is 1,000 + 80 = <<1000+80=1080>>1,080.\n#### 1,080"},
    {"question": "What is the temperature change?", "answer": "3 - 10 = <<3-10=-7>>-7\n#### -7"},
]
MATH_RECORDS = [
    {"problem": "Find $a+b$.", "level": "Level 2", "type": "Algebra",
     "solution": "So $a+b=-3+3=\\boxed{0}$.", "unique_id": "train/algebra/0.json"},
    {"problem": "Simplify $\\frac{2}{4}$.", "level": "Level 1", "type": "Prealgebra",
     "solution": "It is $\\boxed{\\frac{1}{2}}$, or $\\boxed{\\dfrac{1}{2}}$.", "unique_id": "train/prealgebra/3.json"},
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
        assert problems[0].solution.endswith("altogether in April and May.") and "####" not in problems[0].solution
        assert problems[0].level is None and problems[0].type is None and problems[0].tier is None
        for p, r in zip(problems, GSM8K_RECORDS):
            assert reward(r["answer"], p.answer) == 1.0


def test_load_math_fixture_jsonl_and_release_tree(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", MATH_RECORDS)
    tree = tmp_path / "release"
    for r in MATH_RECORDS:
        file = tree / r["unique_id"]
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({k: v for k, v in r.items() if k != "unique_id"}), encoding="utf-8")
    for source in (tmp_path, tmp_path / "train.jsonl", tree):
        problems = load_math("train", source)
        by_id = {p.id: p for p in problems}
        assert "train/number_theory/7115.json" not in by_id  # empty box: unscorable, skipped
        assert len(problems) == 4
        assert by_id["train/algebra/0.json"].answer == "0"
        assert by_id["train/algebra/0.json"].level == 2 and by_id["train/algebra/0.json"].type == "Algebra"
        assert by_id["train/prealgebra/3.json"].answer == "\\dfrac{1}{2}"  # the last box
        assert by_id["train/geometry/377.json"].answer == "2" and by_id["train/geometry/377.json"].level is None
        assert by_id["train/counting_and_probability/1.json"].answer == "(8,38)"
        for p in problems:
            assert reward(p.solution, p.answer) == 1.0
    assert [p.id for p in load_math("train", tmp_path, levels=[2])] == [
        "train/algebra/0.json", "train/counting_and_probability/1.json"]
    assert [p.id for p in load_math("train", tmp_path, types=["counting_and_probability"])] == [
        "train/counting_and_probability/1.json"]
    assert [p.id for p in load_math("train", tmp_path, levels=[2], types=["Algebra"])] == ["train/algebra/0.json"]


def test_load_math500_layout_fixture(tmp_path):
    _write_jsonl(tmp_path / "math500_test.jsonl", [
        {"problem": "Convert.", "solution": "So $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
         "unique_id": "test/precalculus/807.json"}])
    (p,) = load_math("math500", tmp_path)
    assert (p.answer, p.type, p.level, p.id) == ("\\left( 3, \\frac{\\pi}{2} \\right)", "Precalculus", 2,
                                                 "test/precalculus/807.json")


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
    lines = [json.dumps(GSM8K_RECORDS[0]), json.dumps(GSM8K_RECORDS[1]), '{"question": "broken", "answer": ']
    bad = tmp_path / "train.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:3: invalid JSON"):
        load_gsm8k("train", bad)
    bad.write_text(json.dumps(GSM8K_RECORDS[0]) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:2: expected a JSON object"):
        load_gsm8k("train", bad)
    bad.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n", encoding="utf-8")
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
        result = subprocess.run([sys.executable, "-c", f"import data; data.{call}"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
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
        assert repo_type == "dataset" and len(revision) == 40  # a pinned commit, never a moving branch
        fetched.append((repo, file))
        local = tmp_path / "hub" / repo / file
        local.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pyarrow.Table.from_pylist(tables[file]), local)
        return str(local)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return fetched


def test_hub_parquet_copies_load_like_the_jsonl_release(tmp_path, monkeypatch):
    gsm = [{"question": "Tom has 2 apples and buys 1,200 more. How many?", "answer": "2 + 1200 = 1202\n#### 1,202"}]
    subjects = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                "prealgebra", "precalculus")
    math_rows = {f"{s}/train-00000-of-00001.parquet": [
        {"problem": f"{s} problem", "level": f"Level {1 + i % 2}", "type": s.title(),
         "solution": f"so it is $\\boxed{{\\frac{{{i}}}{{7}}}}$."}] for i, s in enumerate(subjects)}
    fetched = _fake_hub(tmp_path, monkeypatch, {"main/train-00000-of-00001.parquet": gsm, **math_rows})
    (p,) = load_gsm8k("train")
    assert (p.question, p.answer, p.solution) == (gsm[0]["question"], "1202", "2 + 1200 = 1202")
    level2 = data.load_math("train", levels=[2])
    # every subject file is fetched; subjects 1, 3, 5 (0-based) are Level 2 here
    assert [f for _, f in fetched[1:]] == list(math_rows)
    assert [q.question for q in level2] == [f"{s} problem" for s in subjects[1::2]]
    assert [q.answer for q in level2] == ["\\frac{1}{7}", "\\frac{3}{7}", "\\frac{5}{7}"]


def test_hub_parquet_without_pyarrow_is_one_clear_message(tmp_path, monkeypatch):
    _fake_hub(tmp_path, monkeypatch, {"main/test-00000-of-00001.parquet": [{"question": "q", "answer": "#### 1"}]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"test-00000-of-00001\.parquet is parquet.*pip install pyarrow.*local path"):
        load_gsm8k("test")


def test_hub_record_errors_name_the_file_and_row(tmp_path, monkeypatch):
    _fake_hub(tmp_path, monkeypatch, {"main/test-00000-of-00001.parquet": [
        {"question": "q", "answer": "#### 1"}, {"question": "q2", "answer": "no final line"}]})
    with pytest.raises(ValueError, match=r"test-00000-of-00001\.parquet:row 2: GSM8K answer has no"):
        load_gsm8k("test")

# --- Difficulty tiers -----------------------------------------------------------------------------------------------

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
    for bad_line, message in [({"id": "x", "pass_rate": 1.5}, "in \\[0, 1\\]"), ({"id": "x"}, "pass_rate"),
                              ({"id": "x", "rewards": []}, "non-empty"), ({"pass_rate": 0.5}, "'id'")]:
        bad = _write_jsonl(tmp_path / "bad.jsonl", [{"id": "gsm8k/train/0", "pass_rate": 1.0}, bad_line])
        with pytest.raises(ValueError, match=r"bad\.jsonl:2: .*" + message):
            assign_tiers(problems, bad)


# --- Prompts --------------------------------------------------------------------------------------------------------

GSM8K_PROBLEM = Problem("How many clips?", "72", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.", "gsm8k/train/0")
MATH_PROBLEM = Problem("Find $\\{x\\}$ for {question} and {reasoning}.", "\\frac{1}{2}",
                       "We get $x=\\boxed{\\frac{1}{2}}$.\nDone", "train/algebra/9.json", 2, "Algebra")


def test_prompt_templates_exact_text():
    assert set(PROMPT_TEMPLATES) == {"qwen-chat", "plain", "paper", "paper-gold"}
    assert format_prompt(GSM8K_PROBLEM) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nHow many clips?<|im_end|>\n<|im_start|>assistant\n")
    assert format_prompt(GSM8K_PROBLEM, "plain") == "Question: How many clips?\nAnswer:"
    assert format_prompt(GSM8K_PROBLEM, "paper") == (
        "Question: John has 5 apples. He buys 3 more apples. How many apples does he have?\n"
        "Solution: Let's think step by step. John starts with 5 apples. He buys 3 more. So he has 5 + 3 = 8 apples "
        "#### The final answer is 8\n\n"
        "Question: How many clips?\nSolution: Let's think step by step. ")
    assert format_prompt(GSM8K_PROBLEM, "paper-gold").endswith(
        "Question: How many clips?\nSolution: Let's think step by step. Natalia sold 48/2 = 24 clips in May. "
        "Natalia sold 48+24 = 72 clips altogether in April and May. ")


def test_paper_prompt_exemplar_follows_tier_and_dataset():
    hard = format_prompt(Problem("Q?", "1", tier="hard"), "paper")
    assert hard.startswith(PAPER_EXEMPLARS["hard"]) and hard.count("Question:") == 2
    assert format_prompt(Problem("Q?", "1", tier="weird"), "paper").startswith(PAPER_EXEMPLARS["easy"])
    math_prompt = format_prompt(MATH_PROBLEM, "paper")
    assert math_prompt.startswith(PAPER_EXEMPLARS["math"]) and math_prompt.count("Question:") == 3


def test_paper_gold_withholds_only_the_final_answer():
    prompt = format_prompt(MATH_PROBLEM, "paper-gold")
    target = prompt[len(PAPER_EXEMPLARS["math"]):]
    # LaTeX braces and literal placeholders in the question survive; the box (nested braces) is removed entirely
    assert target == ("Question: Find $\\{x\\}$ for {question} and {reasoning}.\n"
                      "Solution: Let's think step by step. We get x=. Done ")
    gsm = format_prompt(GSM8K_PROBLEM, "paper-gold")
    assert "<<" not in gsm and gsm.count("####") == 1  # only the exemplar's answer line
    with pytest.raises(ValueError, match="no gold solution"):
        format_prompt(Problem("Q?", "1"), "paper-gold")
    with pytest.raises(ValueError, match="unknown prompt template"):
        format_prompt(GSM8K_PROBLEM, "chatml")


# --- Real data (GRPO_DATA_DIR) ----------------------------------------------------------------------------------------

def _raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("split,count", [("train", 7473), ("test", 1319)])
def test_real_gsm8k_golds_extract_and_match(data_dir, split, count):
    problems = load_gsm8k(split, data_dir / "gsm8k")
    raw = _raw(data_dir / "gsm8k" / f"{split}.jsonl")
    assert len(problems) == len(raw) == count
    for p, r in zip(problems, raw):
        assert p.answer == r["answer"].split("####")[-1].strip().replace(",", "")
        assert math_equal(p.answer, p.answer)
        assert reward(r["answer"], p.answer) == 1.0  # the gold solution, as a completion, earns its gold
        assert reward(r["answer"], str(int(p.answer) + 1)) == 0.0


@pytest.mark.parametrize("split,count", [("train", 7500), ("test", 5000)])
def test_real_math_golds_extract_and_match(data_dir, split, count):
    raw = _raw(data_dir / "math" / f"{split}.jsonl")
    assert len(raw) == count
    problems = {p.id: p for p in load_math(split, data_dir / "math")}
    empty = {r["unique_id"] for r in raw if r["answer"] == ""}
    assert empty == ({"train/number_theory/7115.json", "train/number_theory/7117.json"} if split == "train" else set())
    assert set(problems) == {r["unique_id"] for r in raw} - empty
    for r in raw:
        if r["unique_id"] in empty:
            continue
        p = problems[r["unique_id"]]
        assert p.answer == r["answer"].strip()  # the staged field is the same brace-matched last box, unstripped
        assert math_equal(p.answer, p.answer)
        assert reward(p.solution, p.answer) == 1.0
        assert reward(f"So the answer is $\\boxed{{{p.answer}}}$.", p.answer) == 1.0


def test_real_math500_matches_official_answers(data_dir):
    official = _raw(data_dir / "math" / "math500_test.jsonl")
    ours = load_math("math500", data_dir / "math")
    full_test = {p.id: p for p in load_math("test", data_dir / "math")}
    assert len(ours) == len(official) == 500
    for p, r in zip(ours, official):
        assert p.id == r["unique_id"] and p.answer == r["answer"] and p.level == r["level"]
        assert full_test[p.id].answer == r["answer"]  # the full test set's gold is MATH-500's official answer
        assert math_equal(full_test[p.id].answer, r["answer"])


def test_real_math_filters(data_dir):
    assert len(load_math("train", data_dir / "math", levels=[2])) == 1348
    assert len(load_math("test", data_dir / "math", levels=[2])) == 894
    level2_train = {"Algebra": 340, "Counting & Probability": 119, "Geometry": 100, "Intermediate Algebra": 167,
                    "Number Theory": 131, "Prealgebra": 329, "Precalculus": 162}
    for subject, count in level2_train.items():
        assert len(load_math("train", data_dir / "math", levels=[2], types=[subject])) == count


def test_real_qwen_chat_template_matches_tokenizer_config(data_dir):
    jinja2 = pytest.importorskip("jinja2")
    config = json.loads((data_dir / "qwen2.5-tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
    rendered = jinja2.Environment().from_string(config["chat_template"]).render(
        messages=[{"role": "user", "content": "How many clips?"}], add_generation_prompt=True)
    assert rendered == format_prompt(GSM8K_PROBLEM, "qwen-chat")


# --- Synthetic demo problems ---------------------------------------------------------------------------------------


def _check_steps(solution: str):
    """Every written step 'a +/- b = c.' is arithmetic on the previous written value: (start, results)."""
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
    import random
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
