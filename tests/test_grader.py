"""The grader on real-looking model outputs (tests/completions.py): every verdict in both modes, by class.

tests/test_data.py holds the rule-by-rule tables, the fuzzing and the adversarial corpus; this file checks the
grader on whole completions in the forms models write, and the properties the fixture must keep.
"""

from collections import Counter
from fractions import Fraction

import pytest

from completions import COMPLETIONS
from data import extract_answer, math_equal, reward

KINDS = ("marker", "tags", "prose", "whole", "tool", "turn", "gold", "wrong")


def _id(case):
    kind, completion, gold = case[:3]
    return f"{kind}:{completion[-40:]!r}->{gold}"


@pytest.mark.parametrize("kind,completion,gold,strict,lenient", COMPLETIONS, ids=map(_id, COMPLETIONS))
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
        assert any(s == 1 for s, _ in verdicts) or kind in ("whole", "wrong"), kind  # no marker / no right one


def test_strict_is_never_more_generous_than_lenient():
    # lenient reads the same markers first, so a strict 1 is a lenient 1; "wrong" cases score 0 in strict
    assert all(s <= le for _, _, _, s, le in COMPLETIONS)
    assert all(s == 0 for k, _, _, s, _ in COMPLETIONS if k == "wrong")


RIGHT_INTEGER = [c for c in COMPLETIONS if c[3] == 1 and c[2].lstrip("-").isdigit()]


@pytest.mark.parametrize("kind,completion,gold,strict,lenient", RIGHT_INTEGER, ids=map(_id, RIGHT_INTEGER))
def test_a_right_answer_is_right_only_for_its_gold(kind, completion, gold, strict, lenient):
    """Strict 1 for gold N never carries over to N + 1: the answer read is the number, not any number in sight."""
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
    # after a marker: the answer expression, or None (strict) when the marker is followed by prose alone
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
    ("Final Answer: The final answer is $\\frac{14}{3}$. I hope it is correct.", True, "\\frac{14}{3}"),
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


def test_binomial_oracle():
    value = Fraction(1)
    for i in range(9):
        value *= Fraction(34 - i, i + 1)
    assert value == 52451256  # the value used above, from the product formula
