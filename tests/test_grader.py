"""Tests for grader.py: rule-by-rule tables, fuzzing, the adversarial corpus (tests/adversarial.py),
real-looking outputs.

Every expected verdict in the tables below was worked out by hand from the rules in grader.py's
docstring; none was produced by running the code under test. The last part checks the grader on
whole completions in the forms models write (tests/completions.py): every verdict in both modes, by
class, and the properties the fixture must keep.
"""

import time
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grader
from adversarial import ADVERSARIAL
from completions import COMPLETIONS
from grader import MAX_ANSWER_CHARS, MAX_COMPLETION_CHARS, extract_answer, math_equal, reward

# --- The hand-written table: (completion, gold, expected reward under the default strict reward)

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
    ("... #### The final answer is 8\n\nQuestion: Tom has 2 pens and buys 1.\n"
     "Solution: Let's think step by step. 2 + 1 = 3 #### The final answer is 3", "8", 1.0),
    ("... #### The final answer is 8\n\nQuestion: Tom has 2 pens and buys 1.\n"
     "Solution: Let's think step by step. 2 + 1 = 3 #### The final answer is 3", "3", 0.0),
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
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}",
     "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1.0),
    ("\\boxed{\\begin{bmatrix} 0.5 & 1 \\\\ 0 & 1 \\end{bmatrix}}",
     "\\begin{pmatrix} \\frac{1}{2} & 1 \\\\ 0 & 1 \\end{pmatrix}", 1.0),
    ("\\boxed{\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}}",
     "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 0.0),
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


# --- Fuzz and adversarial input -------------------------------------------------------------------

LATEX_TOKENS = ["\\boxed{", "\\fbox{", "\\boxed ", "{", "}", "\\{", "\\}", "\\frac", "\\dfrac",
                "\\sqrt", "\\sqrt[3]", "^", "_", "9", "0", "1", "-", "+", "*", "/", ",", ".", "(",
                ")", "[", "]", "\\pi", "\\cdot", "\\times", "####", "The answer is ", "answer:",
                " ", "\n", "$", "\\$", "%", "\\%", "e", "E", "x", "=", "\\text{", "\\left(",
                "\\right)", "\\cup", "\\infty", "&", "\\\\", "\\begin{pmatrix}", "\\end{pmatrix}",
                "^\\circ", "<|im_end|>", "and", "or", "\u2212", "\u00b0", "\\!", "{,}", "1,000",
                "e999", "^{99}", "\\sqrt{-1}"]
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
    assert math_equal(s, s) == bool(grader._normalize(s)) or len(s) > MAX_ANSWER_CHARS


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**330), st.integers(min_value=2, max_value=9))
def test_integer_roots_are_exact_at_any_size(r, n):
    # past 2**53 a float root is off by more than 1: r**n + 1 has no integer root, r**n has r
    assert grader._iroot(r ** n, n) == r
    assert r == 0 or grader._iroot(r ** n + 1, n) is None
    assert r == 0 or grader._iroot(r ** n - 1, n) is None or r == 1


def test_a_root_of_a_large_power_equals_its_exact_gold():
    big = 10**16 + 1
    assert math_equal(f"\\sqrt[3]{{{big ** 3}}}", str(big))
    assert math_equal(f"\\sqrt[5]{{{big ** 5}}}", str(big))
    assert not math_equal(f"\\sqrt[3]{{{big ** 3 + 1}}}", str(big))


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
@given(st.integers(min_value=-999, max_value=999),
       st.sampled_from([1, 2, 4, 5, 8, 16, 20, 25, 40, 125]))
def test_fractions_equal_their_terminating_decimals(a, b):
    value = Fraction(a, b)
    digits = 4  # every b above divides 10**4
    scaled = abs(value.numerator) * (10 ** digits // value.denominator)
    decimal = (("-" if value < 0 else "")
               + f"{scaled // 10 ** digits}.{scaled % 10 ** digits:0{digits}d}")
    assert math_equal(decimal, f"\\frac{{{a}}}{{{b}}}")
    assert math_equal(f"{a}/{b}", decimal)
    assert not math_equal(decimal, f"\\frac{{{a + 1}}}{{{b}}}")


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_corpus_scores_zero_fast(name):
    text = ADVERSARIAL[name]
    for strict in (True, False):
        grader._canonical.cache_clear()  # time the cold path
        start = time.perf_counter()
        got = reward(text, "81", strict=strict)
        elapsed = time.perf_counter() - start
        assert got == 0.0
        assert elapsed < 0.05, (f"{name}: {elapsed * 1e3:.1f} ms "
                                "(the benchmark measures the 5 ms target)")
    start = time.perf_counter()
    assert math_equal(text, text) in (True, False)
    assert time.perf_counter() - start < 0.05


# --- Real-looking completions (tests/completions.py) ----------------------------------------------

KINDS = ("marker", "tags", "prose", "whole", "tool", "turn", "gold", "wrong", "boxes", "labels", "final",
         "relations", "lists", "units", "latex", "strict")


def _id(case):
    kind, completion, gold = case[:3]
    return f"{kind}:{completion[-40:]!r}->{gold}"


@pytest.mark.parametrize("kind,completion,gold,strict,lenient", COMPLETIONS,
                         ids=map(_id, COMPLETIONS))
def test_completion_verdicts(kind, completion, gold, strict, lenient):
    assert reward(completion, gold, strict=True) == strict
    assert reward(completion, gold, strict=False) == lenient


def test_fixture_covers_every_class_with_both_verdicts():
    counts = Counter(kind for kind, *_ in COMPLETIONS)
    assert set(counts) == set(KINDS)
    assert all(counts[k] >= 6 for k in KINDS), counts
    for kind in KINDS:
        verdicts = {(s, le) for k, _, _, s, le in COMPLETIONS if k == kind}
        assert {le for _, le in verdicts} == {0, 1}, kind
        # "whole": no marker, "wrong": no right one
        assert any(s == 1 for s, _ in verdicts) or kind in ("whole", "wrong"), kind


def test_strict_is_never_more_generous_than_lenient():
    # lenient reads the same markers first, so a strict 1 is a lenient 1; "wrong" cases score 0 in
    # strict
    assert all(s <= le for _, _, _, s, le in COMPLETIONS)
    assert all(s == 0 for k, _, _, s, _ in COMPLETIONS if k == "wrong")


def test_other_graders_own_cases():
    """bench/other_suites.jsonl (Math-Verify's, the MATH paper's, verl's, rllm's and TRL's test
    cases, in scope): strict pays no wrong answer, lenient agrees with nearly all verdicts (290 of
    300 today; the misses are listed in BENCHMARKS.md). The cases and verdicts are the
    benchmark's own (bench/grader_suites.py), so the test and the table cannot drift apart."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import grader_suites as GS
    cases, _, _ = GS.suite_cases()  # (suite, source, kind, pred, gold, expected), in scope
    assert len(cases) == 300
    assert not [c for c in cases if c[5] == 0 and GS.ours(strict=True)(c) == 1]
    assert sum(GS.ours(strict=False)(c) == c[5] for c in cases) >= 288


RIGHT_INTEGER = [c for c in COMPLETIONS if c[3] == 1 and c[2].lstrip("-").isdigit()]


@pytest.mark.parametrize("kind,completion,gold,strict,lenient", RIGHT_INTEGER,
                         ids=map(_id, RIGHT_INTEGER))
def test_a_right_answer_is_right_only_for_its_gold(kind, completion, gold, strict, lenient):
    """Strict 1 for gold N never carries over to N + 1: the answer read is the number, not any
    number in sight."""
    assert reward(completion, str(int(gold) + 1), strict=True) == 0.0
    assert reward(completion, str(int(gold) + 1), strict=False) == 0.0


@pytest.mark.parametrize("text,strict,expected", [
    # the whole expression, never a piece of one
    ("so the probability is $\\frac{1}{3}$.", False, "\\frac{1}{3}"),
    ("the side is $3\\sqrt{13}$ units", False, "3\\sqrt{13}"),
    ("the probability is 1/8.", False, "1/8"),
    ("so he saves money by buying 18 flowers", False, "18"),
    ("it takes 2 months", False, "2"),
    ("She sold 48 + 24 = 72 clips.", False, "72"),
    ("The area is 25 m^2.", False, "25 m^2"),
    # after a marker: the answer expression, or None (strict) when only prose follows the marker
    ("Answer: 23 + 16 = 39 minutes", True, "23 + 16 = 39 minutes"),
    ("So, the Answer is the solution to the equation, which is $x=11$.", True, "x=11"),
    ("The answer is the number of apples she has left.", True, None),
    ("The answer is: Mark saves $6 by buying 18 flowers.", True, None),
    ("The answer is: Mark saves $6 by buying 18 flowers.", False, "6"),
    ("The answers are $2$ and $-3$.", True, "2, -3"),
    ("<think> 9 * 2 </think> <answer> 18 </answer>", True, "18"),
    ("<answer> The answer is 72 </answer>", True, "72"),
    ("<think> reasoning process here </think> <answer> answer here </answer>", True, None),
    ("####\n72", True, "72"),
    ("**Final Answer**\n18", True, "18"),
    ("Final Answer: The final answer is $\\frac{14}{3}$. I hope it is correct.", True,
     "\\frac{14}{3}"),
    # the text graded ends where the turn ends
    ("\\boxed{5}<|im_start|>user\nAnd 7?<|im_start|>assistant\n\\boxed{7}", True, "5"),
    ("The answer is 5.\n\nQuestion: What is 3 + 4?\nAnswer: The answer is 7.", True, "5"),
    ("Question: What is 2 + 3?\nAnswer: The answer is 5.", True, "5"),
])
def test_extracted_answer(text, strict, expected):
    assert extract_answer(text, strict=strict) == expected


@pytest.mark.parametrize("pred,gold,expected", [
    ("[-2, 7]", "x \\in [-2,7]", True),
    ("x \\in [-2, 7]", "[-2,7]", True),
    ("[-2, 7)", "x \\in [-2,7]", False),
    ("x \\in (-\\infty, 3)", "(-\\infty,3)", True),
    ("11111111100", "11,\\! 111,\\! 111,\\! 100", True),
    ("11,111,111,100", "11,\\! 111,\\! 111,\\! 100", True),
    ("111111111", "111, \\! 111, \\! 111", True),
    ("11,111", "11,\\! 111", True),
    ("11,112", "11,\\! 111", False),
    # C(34, 9) = 34*33*...*26 / 9! = 52451256 (worked as a running product of exact quotients)
    ("52451256", "\\binom{34}{9}", True),
    ("\\dbinom{34}{9}", "52451256", True),
    ("{34 \\choose 9}", "52451256", True),
    ("52451257", "\\binom{34}{9}", False),
    ("\\binom{5}{7}", "0", True),
    ("\\binom{10^{9}}{10^{6}}", "1", False),  # far past MAX_BITS: not evaluated, compared as text
    ("120", "5!", True),
    ("\\frac{1}{6}", "\\frac{1}{3!}", True),
    ("\\frac{1}{2004!}", "\\frac{1}{2004!}", True),
    ("4210_5", "4210_{5}", True),
    ("39", "23 + 16 = 39", False),       # an equation as the gold is compared whole
    ("23 + 16 = 39", "39", True),        # a stated equation is read at its last side
    ("23 + 16 = 39 \\text{ minutes}", "39", True),
    ("x \\le 5", "5", False),
    ("x <= 5", "5", False),
    ("x^2 = 4", "2", False),
    ("\\frac{1}{3} \\approx 0.33", "\\frac{1}{3}", True),
    ("\\frac{1}{3} \\approx 0.33", "0.3", False),
    ("25 cm\u00b2", "25", True),
    ("x = 2, x = 3", "2, 3", True),     # one variable's values: the solutions
    ("x = 2, y = 3", "2, 3", False),
    ("18 a day", "18", True),
])
def test_gold_forms_and_stated_values(pred, gold, expected):
    assert math_equal(pred, gold) is expected


@pytest.mark.parametrize("pred,gold,expected", [
    # labels: a name (letters, subscripts, a function, a tuple or ratio of names) labels a value
    ("(2,-1)", "(a,b)=(2,-1)", True),
    ("(-1,2)", "(a,b)=(2,-1)", False),
    ("4", "f(x)=4", True),
    ("3:8", "V_1:V_2=3:8", True),
    ("2", "|PQ|=2", True),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{PM}{MQ}=\\frac{1}{\\sqrt{2}}", True),
    ("9, 12", "AB=9, BC=12", True),       # a gold's named values, stated bare in its order
    ("12, 9", "AB=9, BC=12", False),
    ("BC=12, AB=9", "AB=9, BC=12", True),  # named values in any order
    ("BC=9, AB=12", "AB=9, BC=12", False),
    ("(5,2),(7,2)", "p=5,q=2;p=7,q=2", True),
    ("x = 3, y = 4", "(3, 4)", True),     # a point
    ("x = 3, y = 4", "(4, 3)", False),
    ("-3, \\frac{7}{2}", "x = -3,\\ q = \\frac{7}{2}", True),
    ("x = 4+4+1 = 6 = 9", "x=9", True),
    ("0", "2x + y = 0", False),           # "2x + y" is no name: an equation, compared whole
    ("0", "b^2 + c = 0", False),
    # relations in one spelling, read one way
    ("y \\geq 3", "y >= 3", True),
    ("y \\ge 3", "y \\geqslant 3", True),
    ("t \\lt -1", "t < -1", True),
    ("z \\neq 4", "z != 4", True),
    ("3 \\geq y", "y \\leq 3", True),
    ("y \\le 3", "y \\ge 3", False),
    ("y < 3", "y \\le 3", False),
    ("(-1, 8)", "-1 < x < 8", True),                # a name between two bounds: an interval
    ("(-1, 8]", "8 \\geq t > -1", True),
    ("[-1, 8]", "-1 < x < 8", False),
    ("(0, 1)", "0 < f(x) < 1", True),
    ("k", "z = 2 + 3 = 5", False),                   # a chain of equations states its last side
    ("5", "z = 2 + 3 = 5", True),
    ("{3, 5, 8}", "3, 5, 8", True),                 # grouping braces print nothing
    ("{3, 5}", "3, 5, 8", False),
    # lists: ";" separates items, "or" between brackets, \pm gives two values, repeats
    ("(1;0;2),(3;-1;2)", "(1,0,2),(3,-1,2)", True),
    ("-4;-2;0;3", "\\{-4, -2, 0, 3\\}", True),
    ("-4;-2;0", "\\{-4, -2, 0, 3\\}", False),
    ("(4,9)or(9,4)", "(9,4), (4,9)", True),
    ("\\pm 37", "-37, 37", True),
    ("\\pm 37", "37", False),
    ("\\{2\\pm\\sqrt{3}, 7\\}", "\\{2+\\sqrt3, 7, 2-\\sqrt3\\}", True),
    ("(2,5),(5,2),(2,5)", "(5,2),(2,5)", True),  # the gold lists each once: a set
    ("1, 1, 2", "1, 2, 2", False),               # the gold repeats one: multiplicity counts
    ("\\frac{1}{2}, 0.5", "0.5", True),          # one value in two forms
    ("18, 19", "18", False),
    # LaTeX variants
    ("\\cfrac{2}{7}", "2/7", True),
    ("\\frac56i", "\\frac{5}{6}i", True),
    ("\\frac56i", "\\frac{6}{5}i", False),
    ("\\sqrt7", "\\sqrt{7}", True),
    ("\\left[\\begin{array}{cc}2 & 0 \\\\ 1 & 7\\end{array}\\right]",
     "\\begin{pmatrix}2 & 0 \\\\ 1 & 7\\end{pmatrix}", True),
    ("23 {, }417", "23417", True),
    ("23, 417", "23417", False),                  # a list, not a thousands separator
    ("\\\\frac{3}{4}", "0.75", True),             # escaped twice
    ("45\u00a3", "45", True),
    ("1,250.50\u20ac", "1250.5", True),
    ("4, 7", "\\boxed{4}\\boxed{7}", True),        # a gold written as several boxes
    ("4", "\\boxed{4}\\boxed{7}", False),
    # an approximation states its value, and its exact side only when the value is its rounding
    ("\\frac{2}{3} \\approx 0.67", "\\frac{2}{3}", True),
    ("2/3 \\approx 0.7", "\\frac{2}{3}", True),
    ("21 \\div 312500 \\approx 0.0000672", "\\frac{21}{312500}", True),
    ("21 \\div 312500 \\approx 0.0000677", "0.0000672", False),
    ("21/312500 \\approx 0.00006768", "0.0000672", False),
    ("21 \\div 312500 \\approx 0.0000677", "0.0000677", True),
    ("7 thousand", "7", False),                     # a scale word is no unit
    ("x = 8, y = 7", "7", False),                   # several equations state no one value
])
def test_equivalence_classes(pred, gold, expected):
    assert math_equal(pred, gold) is expected


def test_box_reader():
    text = "So $\\boxed{\\frac{1}{2}}$, not \\boxed 3 or \\fbox{"
    start = text.find("\\boxed")
    assert grader.read_box(text, start) == ("\\frac{1}{2}", start + len("\\boxed{\\frac{1}{2}}"))
    assert grader.read_box(text, text.find("\\boxed 3")) == ("3", text.find(" or"))
    assert grader.read_box(text, text.find("\\fbox"))[0] is None  # unbalanced
    assert grader.boxed_answer(text) is None  # the last box is malformed: no earlier one instead
    assert grader.boxed_answer("no box here") is None
    assert grader.boxed_answer("no box here", no_box="gold field") == "gold field"
    assert grader.boxed_answer("$\\boxed{1}$, $\\boxed{2}$ and $\\boxed{1}$") == "2, 1"
    assert grader.boxed_answer("\\boxed{1}, then \\boxed{2}") == "2"


def test_data_reads_golds_with_the_public_box_reader():
    """No private grader name crosses into data.py: boxes are read in one place."""
    import ast
    from pathlib import Path
    tree = ast.parse((Path(__file__).resolve().parent.parent / "data.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "grader" for alias in node.names}
    assert imported and not any(name.startswith("_") for name in imported)


def test_binomial_oracle():
    value = Fraction(1)
    for i in range(9):
        value *= Fraction(34 - i, i + 1)
    assert value == 52451256  # the value used above, from the product formula
