r"""The grader against the classes of other math graders' public test suites, math-verify beside it.

The cases below were written for this project in the forms those suites test (Math-Verify's tests,
the MATH paper's is_equiv tests, verl's and rllm/DeepScaleR's math reward tests, TRL's accuracy
reward tests): the same classes, our own numbers and sentences; none is copied. Each is
(suite, class, kind, prediction, gold, expected verdict): kind "answer" compares two final answers
(grader.math_equal), kind "completion" scores a whole completion (grader.reward). Only classes in
the grader's scope are here: no symbolic algebra (x^2+2x+1 vs (x+1)^2), no rounding tolerance
(1/3 vs 0.333), no percent rescaling (50% vs 0.5), no decimal comma where it could be a thousands
separator, bare lists unordered (MATH's "enter all solutions").

Then the suites' own cases, transcribed as test data (inputs and expected verdicts, each with
the repository and test file it comes from) into other_suites.jsonl: Math-Verify's tests, the MATH
paper's math_equivalence_test.py, verl's test_numeric_canonicalization, rllm's test_math_reward and
test_math_utils, TRL's accuracy reward tests. A case out of the grader's scope says why
("out_of_scope": symbolic algebra, rounding tolerance, decimal comma, matrix arithmetic, ordered
lists, a format reward, an expected verdict that is not true); the rest are counted.

Printed: for each class, how many verdicts agree with the expected one for ours strict (the
training reward), ours lenient and math-verify (parse + verify, each side parsed as a completion,
an answer wrapped in $...$; on the suites' cases with the extraction targets of the test), then
the totals and the cases where strict and lenient disagree with the expected verdict.
math-verify is only this comparison's oracle, not a dependency:

    pip install math-verify
    python bench/grader_suites.py            # --mismatches: every case ours gets wrong
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import grader  # noqa: E402

MV, HE, VERL, RLLM, TRL = "Math-Verify", "MATH is_equiv", "verl", "rllm", "TRL"
A, C = "answer", "completion"

CASES = [
    # --- several boxes that together form one answer (a gold written as boxes too)
    (MV, "boxes", C, r"The pairs are $$\boxed{(3, 1)} \quad \text{and} \quad \boxed{(5, 4)}$$",
     "(3, 1), (5, 4)", 1),
    (MV, "boxes", C, r"So the pairs are $\boxed{(3, 1)}$ and $\boxed{(5, 4)}$.", "(5, 4), (3, 1)", 1),
    (MV, "boxes", C, r"The solutions are \boxed{(1, 3)}, \boxed{(3, 1)}, \boxed{(-2, -6)}.",
     "(3,1),(1,3),(-2,-6)", 1),
    (MV, "boxes", C, r"Both roots: \(\boxed{2}\) and \(\boxed{-5}\).", "-5, 2", 1),
    (MV, "boxes", C, r"\boxed{4},\boxed{6},\boxed{9}", "4, 6, 9", 1),
    (MV, "boxes", C, r"\boxed{4} and \boxed{6} and \boxed{9}", "\\{4,6,9\\}", 1),
    (MV, "boxes", C, r"The pairs are $\boxed{(3, 1)}$ and $\boxed{(5, 4)}$.", "(3, 1)", 0),
    (MV, "boxes", C, r"First I got \boxed{3}, but rechecking the sum gives \boxed{5}.", "3, 5", 0),
    (MV, "boxes", C, r"First I got \boxed{3}, but rechecking the sum gives \boxed{5}.", "5", 1),
    (MV, "boxes", A, "4, 7", r"\boxed{4}\boxed{7}", 1),
    (MV, "boxes", A, r"\boxed{4, 7}", r"\boxed{4} \text{ and } \boxed{7}", 1),
    (MV, "boxes", A, "4", r"\boxed{4}\boxed{7}", 0),
    (MV, "boxes", C, r"So $k = \boxed{12}$ and $m = \boxed{3}$.", "k=12, m=3", 1),
    # --- golds labelled by names of more than one letter or by a function
    (MV, "labels", A, "(5,1)", "(a,b)=(5,1)", 1),
    (MV, "labels", C, r"Hence $\boxed{(5, 1)}$.", "(a,b)=(5,1)", 1),
    (MV, "labels", A, "(1,5)", "(a,b)=(5,1)", 0),
    (MV, "labels", A, "(2,0,9)", "(x,y,z)=(2,0,9)", 1),
    (MV, "labels", A, "6, 8", "BC=6, DE=8", 1),
    (MV, "labels", A, "8, 6", "BC=6, DE=8", 0),
    (MV, "labels", A, "3", "g(x)=3", 1),
    (MV, "labels", A, "4", "g(x)=3", 0),
    (MV, "labels", A, "5:13", "A_1:A_2=5:13", 1),
    (MV, "labels", A, "13:5", "A_1:A_2=5:13", 0),
    (MV, "labels", A, "2", "|PQ|=2", 1),
    (MV, "labels", A, r"\frac{2}{\sqrt{3}}", r"\frac{PM}{MQ}=\frac{2}{\sqrt{3}}", 1),
    (MV, "labels", A, "9:40", "S_{ABC}:S=9:40", 1),
    (MV, "labels", A, r"-3, \frac{7}{2}", r"x = -3,\ q = \frac{7}{2}", 1),
    (MV, "labels", A, "b_{12} = 7, b_2 = 4", "b_2 = 4, b_{12} = 7", 1),
    (MV, "labels", A, "b_{12} = 4, b_2 = 7", "b_2 = 4, b_{12} = 7", 0),
    (MV, "labels", C, r"$\boxed{m = 20} \quad \text{and} \quad \boxed{n = 6}$", "m = 20, n = 6", 1),
    (MV, "labels", A, "(3,1),(5,1)", "a=3,b=1;a=5,b=1", 1),
    (MV, "labels", A, "(3,1),(5,2)", "a=3,b=1;a=5,b=1", 0),
    (MV, "labels", A, "11", "x=11", 1),
    (MV, "labels", A, "k=11", "11", 1),
    (MV, "labels", A, "x = 4+4+1 = 6 = 9", "x=9", 1),
    (MV, "labels", A, "0", "2x + y = 0", 0),
    (MV, "labels", A, "0", "b^2 + c = 0", 0),
    (MV, "labels", A, "13a+d", "5 = 13a+d", 0),
    # --- "Final Answer:" then a sentence that names the quantity in math and gives its value
    (MV, "final sentence", C, "Final Answer: The smallest $k$ is 12.", "12", 1),
    (MV, "final sentence", C, "Final Answer: The smallest $k$ is 12.", "k", 0),
    (MV, "final sentence", C, "Final Answer: The number of $n$ that work is 7.", "7", 1),
    (MV, "final sentence", C, r"Final Answer: The value of $\angle B$ is $40^\circ$.", "40", 1),
    (MV, "final sentence", C, "Final Answer: The largest $m$ is 18.", "19", 0),
    # --- relations in other notations
    (MV, "relations", A, r"y \geq 3", "y >= 3", 1),
    (MV, "relations", A, r"y \ge 3", r"y \geq 3", 1),
    (MV, "relations", A, r"t \leq -1", "t <= -1", 1),
    (MV, "relations", A, r"t \le -1", r"t \leqslant -1", 1),
    (MV, "relations", A, r"a \lt 7", "a < 7", 1),
    (MV, "relations", A, r"a \gt 7", "a > 7", 1),
    (MV, "relations", A, "z != 4", r"z \neq 4", 1),
    (MV, "relations", A, r"z \ne 4", r"z \neq 4", 1),
    (MV, "relations", A, r"y \le 3", r"y \geq 3", 0),
    (MV, "relations", A, "a < 7", "a > 7", 0),
    (MV, "relations", A, r"3 \geq y", r"y \leq 3", 1),
    (MV, "relations", A, r"7 > a", "a < 7", 1),
    (MV, "relations", C, r"Therefore $n \geq 4$ is the answer.", r"n \ge 4", 1),
    (MV, "relations", C, r"So the solution is $x \le 2$.", r"x \geq 2", 0),
    # --- separators and notations of lists
    (MV, "lists", A, r"(1;0;2),(3;-1;2)", "(1,0,2),(3,-1,2)", 1),
    (MV, "lists", A, r"(3, -1, 2), (1, 0, 2)", "(1;0;2);(3;-1;2)", 1),
    (MV, "lists", A, "-4;-2;0;3", r"\{-4, -2, 0, 3\}", 1),
    (MV, "lists", A, "-4;-2;0", r"\{-4, -2, 0, 3\}", 0),
    (MV, "lists", A, "(4,9)or(9,4)", "(9,4), (4,9)", 1),
    (MV, "lists", A, r"\pm 37", "-37, 37", 1),
    (MV, "lists", A, r"\pm 37", "37", 0),
    (MV, "lists", A, r"x = \pm 5", "5, -5", 1),
    (MV, "lists", A, r"2 \pm \sqrt{3}", r"2+\sqrt{3}, 2-\sqrt{3}", 1),
    (MV, "lists", A, r"\{2\pm\sqrt{3}, 7\}", r"\{2+\sqrt3, 7, 2-\sqrt3\}", 1),
    (MV, "lists", A, "(2,5),(5,2),(2,5)", "(5,2),(2,5)", 1),
    (MV, "lists", A, "(2,5),(5,2),(2,6)", "(5,2),(2,5)", 0),
    (MV, "lists", A, "14,9 or 5", "14,9,5", 1),
    (MV, "lists", A, r"3\text{ and }8", "3, 8", 1),
    (MV, "lists", A, "21, 45, and 60", r"21, 45, \text{ and } 60", 1),
    (MV, "lists", A, "21, 45, and 60", "21, 44, and 60", 0),
    # --- a unit or currency glyph glued to a number in prose (lenient reads prose)
    (MV, "unit glyph", C, "so the price is not 20, it is 2,500.75\u20ac", "2500.75", 1),
    (MV, "unit glyph", C, "the plot is 3,200.5m\u00b2 in all", "3200.5", 1),
    (MV, "unit glyph", C, "the plot is 3,200.5m\u00b2 in all", "3200", 0),
    (MV, "unit glyph", A, "45\u00a3", "45", 1),
    # --- LaTeX variants
    (MV, "latex", A, r"\cfrac{2}{7}", "2/7", 1),
    (MV, "latex", A, r"\dfrac{2}{7}", "2/7", 1),
    (HE, "latex", A, r"\frac56i", r"\frac{5}{6}i", 1),
    (HE, "latex", A, r"\frac56i", r"\frac{6}{5}i", 0),
    (HE, "latex", A, r"\tfrac95", r"\frac{9}{5}", 1),
    (HE, "latex", A, r"6\sqrt{5} + \sqrt9", r"6\sqrt5 + \sqrt{9}", 1),
    (HE, "latex", A, r"\dfrac{2}{3} +\! \frac1{48}", r"\\tfrac{2}{3} + \frac{1}{48}", 1),
    (HE, "latex", A, r"\\frac{3}{4}", "0.75", 1),
    (HE, "latex", A, r"\left(y+5\right)\left(y-5\right)", "(y+5)(y-5)", 1),
    (MV, "latex", A, r"\left[\begin{array}{cc}2 & 0 \\ 1 & 7\end{array}\right]",
     r"\begin{pmatrix}2 & 0 \\ 1 & 7\end{pmatrix}", 1),
    (MV, "latex", A, r"\left[\begin{array}{cc}2 & 0 \\ 1 & 8\end{array}\right]",
     r"\begin{pmatrix}2 & 0 \\ 1 & 7\end{pmatrix}", 0),
    (MV, "latex", A, r"\begin{bmatrix}1 & 0 \\ 0 & 1\end{bmatrix}",
     r"\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}", 1),
    (MV, "latex", A, "23 {, }417", "23417", 1),
    (MV, "latex", A, r"23{,}417", "23417", 1),
    (MV, "latex", A, r"23,\! 417", "23417", 1),
    (MV, "latex", A, "23, 417", "23417", 0),
    (MV, "latex", C, r"Final Answer: The final answer is \"$7 $ and $9 $\". I hope it is correct.",
     r"7\text{ and }9", 1),
    (MV, "latex", C, r"Final Answer: The final answer is \"$7 $ and $9 $\". I hope it is correct.",
     "7", 0),
    (MV, "latex", A, r"\frac43", r"\frac{4}{3}", 1),
    (MV, "latex", A, r"\sqrt7", r"\sqrt{7}", 1),
    (MV, "latex", A, r"\frac{1}{3}\textbf{ cm}", "1/3", 1),
    (MV, "latex", A, r"\text{D}", "D", 1),
    (MV, "latex", A, r"\text{(B)}", r"\text{B}", 1),
    (MV, "latex", A, r"\text{even}", "Even", 1),
    # --- numbers (thousands, decimals, signs, leading zeros)
    (MV, "numbers", A, "3,615,000", "3615000", 1),
    (MV, "numbers", A, "2000.0", "2000", 1),
    (MV, "numbers", A, "2,000.5", "2000.5", 1),
    (MV, "numbers", A, ".7", "0.7", 1),
    (MV, "numbers", A, r"\$2,000.5", "2000.5", 1),
    (MV, "numbers", A, "3", "ZQ3B", 0),
    (MV, "numbers", A, "-8", "-8", 1),
    (MV, "numbers", A, "8", "-8", 0),
    (VERL, "numbers", A, "054", "54", 1),
    (VERL, "numbers", A, "+054", "54", 1),
    (VERL, "numbers", A, "-0", "0", 1),
    (VERL, "numbers", A, "0000", "0", 1),
    (VERL, "numbers", A, "054", "45", 0),
    (HE, "numbers", A, r"15\text{ meters}", "15", 1),
    (HE, "numbers", A, r"15\text{ meters}", "150", 0),
    (HE, "numbers", A, r"\$35", "35", 1),
    (HE, "numbers", A, r"35\%", "35", 1),
    (HE, "numbers", A, "0.3", ".3", 1),
    (HE, "numbers", A, "5/8", r"\frac{5}{8}", 1),
    (MV, "numbers", A, "-7/4", r"-\frac{7}{4}", 1),
    (MV, "numbers", A, r"\frac{1}{4}", r"\frac{1}{4}\text{ inches}", 1),
    # --- where the answer is read in a completion
    (MV, "reading", C, r"Answer \[ 12 \]", "12", 1),
    (MV, "reading", C, "Answer $ 12 $", "12", 1),
    (MV, "reading", C, r"Answer \( 12 \)", "12", 1),
    (MV, "reading", C, r"Answer \( (11+1) \)", "12", 1),
    (MV, "reading", C, r"Answer $ \frac{1}{3} \$ = \frac{7}{5} $", "7/5", 1),
    (MV, "reading", C, r"So $q = \frac{2}{9}$.", "2/9", 1),
    (MV, "reading", C, r"Thus $y - q = \boxed{3-3q}$.", "3-3q", 1),
    (MV, "reading", C, r"so the final value is $\boxed{14\%}$.", r"14\%", 1),
    (MV, "reading", C, r"Therefore, $\boxed{\text{Marta}}$ is our answer.", r"\text{Marta}", 1),
    (MV, "reading", C, r"... = \sqrt{125} = \boxed{5\sqrt{5}}.", r"5\sqrt{5}", 1),
    (MV, "reading", C, r"the only integer roots are $\boxed{-3,2}.$", "-3,2", 1),
    (MV, "reading", C, r"so we find $(u,v,w) = \boxed{(4,17,-2)}.$", "(4,17,-2)", 1),
    (MV, "reading", C, r"By the quadratic formula, $x = \boxed{2 \pm \sqrt{11}}.$", r"2 \pm \sqrt{11}", 1),
    (MV, "reading", C, r"The length is $\boxed{48\textnormal{ feet}}.$", "48", 1),
    (MV, "reading", C, r"The set is $\boxed{[-3, -\tfrac12) \cup (-\tfrac12, 4]}.$",
     r"[-3, -\frac{1}{2}) \cup (-\frac{1}{2}, 4]", 1),
    (MV, "reading", C, r"So the answer is $\boxed{\sqrt 3+\sqrt 7}$", r"\sqrt{3}+\sqrt{7}", 1),
    (MV, "reading", C, r"Therefore $\boxed{\frac74\pi}$.", r"\frac{7}{4}\pi", 1),
    (MV, "reading", C, r"Therefore the domain is $t \in \boxed{(1,9) \cup (9,40)}$",
     r"(1, 9) \cup (9, 40)", 1),
    (MV, "reading", C, r"The inverse is $ \begin{pmatrix}0 & 1 \\ 1 & 0\end{pmatrix} $.",
     r"\begin{pmatrix}0 & 1 \\ 1 & 0\end{pmatrix}", 1),
    (MV, "reading", C, r"The answer is $\boxed{(2, 8)}$.", "(8, 2)", 0),
    (MV, "reading", C, r"The answer is $\boxed{[0, 4)}$.", "(0, 4)", 0),
    (MV, "reading", C, r"The answer is $\boxed{[0, 4)}$.", "[0, 4)", 1),
    (MV, "reading", C, r"\boxed{0021}. Let me verify: 21 \bmod 100 = 21, so \boxed{0021} holds."
     "\n\n**Final Answer**\n\\boxed{0021}", "21", 1),
    (MV, "reading", C, "maybe \\boxed{512}.,but let me check.\n\n**Final Answer**\n\\boxed{512}",
     "512", 1),
    (MV, "reading", C, "Final Answer: The final answer is \\((-4, 11)\\). I hope it is correct.",
     "(-4, 11)", 1),
    (MV, "reading", C, "Final Answer: The final answer is $22$. I hope it is correct.", "23", 0),
    (MV, "reading", C, "x = 4, then x = 4 + 9 = 13.\n\nTherefore, the answer is 13.\n\nWait, let me "
     "also check the case y = 2: then 2 + 2 = 4, which is not 13.", "13", 1),
    (MV, "reading", C, "The answer is: C", "C", 1),
    (MV, "reading", C, "The answer is D.", "C", 0),
    # --- tool-integrated and reasoning outputs
    (RLLM, "reading", C, "<think>3 + 5 = 8</think>\nThe answer is \\boxed{8}.", "8", 1),
    (RLLM, "reading", C, "<think>3 + 5 = 9</think>\nThe answer is \\boxed{9}.", "8", 0),
    (RLLM, "reading", C, "<think>a half</think>\nThe answer is \\boxed{0.5}.", "1/2", 1),
    (RLLM, "reading", C, "<think>solve it</think>\nThe answer is \\boxed{x = 4, x = -1}.",
     "x = 4, x = -1", 1),
    (RLLM, "reading", C, "<think>6!/5!</think>\nThe answer is \\boxed{6}.", "\\boxed{6}", 1),
    (RLLM, "reading", C, "<think>pi</think>\nThe answer is \\boxed{2.71828}.", "2.71828", 1),
    (RLLM, "reading", C, "<think>...</think>\nThe answer is \\boxed{}.", "7", 0),
    (RLLM, "reading", C, "<think>...</think>\nThe answer is \\boxed{0}.", "\\boxed{0}", 1),
    (TRL, "reading", C, r"\boxed{\frac{47}{300}}", r"\frac{47}{300}", 1),
    (TRL, "reading", C, r"\boxed{\frac{47}{300}}", "47/300", 1),
    (TRL, "reading", C, r"\boxed{\frac{48}{300}}", r"\frac{47}{300}", 0),
    (TRL, "reading", C, r"\boxed{5}", "10", 0),
    (TRL, "reading", C, r"<think> Let me think. </think> \boxed{\frac{1}{6}}", r"\frac{1}{6}", 1),
    # --- strict: no answer rather than a guessed one
    ("ours", "strict", C, r"The correct answer should be $35 \div (2^3 \cdot 5^4) = 35 \div 5000$, "
     "which is $0.00071$", "0.007", 0),
    ("ours", "strict", C, r"The correct answer should be $35 \div (2^3 \cdot 5^4) = 35 \div 5000$, "
     "which is $0.007$", "0.007", 1),
    ("ours", "strict", C, "So the answer is 35 \u00f7 5000, which is 0.00071.", "0.007", 0),
    ("ours", "strict", C, "<answer> Ana has $6$ stickers, Ben has $9$ stickers and they trade two "
     "</answer>", "9", 0),
    ("ours", "strict", C, "The answer is $6$ for Ana and $9$ for Ben.", "9", 0),
    ("ours", "strict", C, "The answer is: 27.\n```python\n# check the sum\ntotal = 9 * 3\nprint(total)"
     "\n", "27", 0),
    ("ours", "strict", C, "```python\nprint(9 * 3)\n```\n```output\n27\n```\nThe answer is: 27.",
     "27", 1),
    ("ours", "strict", C, r"The answer is $\frac{2}{3}$, which is approximately $0.67$.",
     r"\frac{2}{3}", 1),
    ("ours", "strict", C, r"The answer is $\frac{3}{4}$, or $0.75$.", r"\frac{3}{4}", 1),
    ("ours", "strict", C, "The answer is $12$, or maybe $13$.", "13", 0),
]


def agreement(cases, verdict) -> tuple[int, list]:
    """How many verdicts equal the expected one, and the cases where not."""
    wrong = [case for case in cases if verdict(case) != case[5]]
    return len(cases) - len(wrong), wrong


def ours(strict: bool):
    def verdict(case) -> int:
        _, _, kind, pred, gold, _ = case
        if kind == A:
            return int(grader.math_equal(pred, gold))
        return int(grader.reward(pred, gold, strict=strict))
    return verdict


def math_verify_verdict(case, targets: str | None = None) -> int:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    _, _, kind, pred, gold, _ = case
    configs = {"latex": LatexExtractionConfig(boxed_match_priority=0),
               "expr": ExprExtractionConfig()}
    extraction = ([configs[t] for t in targets.split(",")] if targets and targets != "default"
                  else None)

    def as_text(s: str) -> str:
        return s if targets or "$" in s or "\\boxed" in s or "\\(" in s else f"${s}$"

    def parsed(s: str):
        return parse(s, extraction) if extraction else parse(s)
    try:
        return int(verify(parsed(as_text(gold)), parsed(pred if kind == C else as_text(pred))))
    except Exception:  # noqa: BLE001 (a crash of the oracle is a wrong verdict, not a crash here)
        return -1


SUITE_CASES = Path(__file__).with_name("other_suites.jsonl")


def suite_cases() -> tuple[list, list, dict]:
    """The suites' own cases in scope as (suite, source, kind, pred, gold, expected), their
    math-verify extraction targets, and the number of cases out of scope by reason."""
    cases, targets, out = [], [], defaultdict(int)
    for line in SUITE_CASES.read_text().splitlines():
        c = json.loads(line)
        if "out_of_scope" in c:
            out[c["out_of_scope"]] += 1
            continue
        cases.append((c["suite"], c["source"], c["kind"], c["pred"], c["gold"], c["expected"]))
        targets.append(c.get("mv_targets"))
    return cases, targets, out


def print_table(first_column: str, graders: dict, groups: list[tuple[str, list]]) -> None:
    """A markdown table: per group of cases, how many of each grader's verdicts are the expected."""
    print(f"| {first_column} | cases | " + " | ".join(graders) + " |")
    print("|---|---:|" + "---:|" * len(graders))
    for name, cases in groups:
        cells = [str(agreement(cases, v)[0]) for v in graders.values()]
        print(f"| {name} | {len(cases)} | " + " | ".join(cells) + " |")


def report_suites(graders: dict, mismatches: bool) -> None:
    cases, targets, out = suite_cases()
    if "math-verify" in graders:
        mv = dict(zip(map(id, cases), targets))
        graders = {**graders, "math-verify": lambda c: math_verify_verdict(c, mv[id(c)])}
    by_suite = defaultdict(list)
    for case in cases:
        by_suite[case[0]].append(case)
    print()
    print_table("suite (their own cases, in scope)", graders,
                [*by_suite.items(), ("all", cases),
                 ("all but Math-Verify's", [c for c in cases if c[0] != "Math-Verify"])])
    print("\nout of scope: " + ", ".join(f"{n} {reason}" for reason, n in out.items()))
    wrong_positive = [c for c in cases if c[5] == 0 and ours(True)(c) == 1]
    print(f"strict scores {len(wrong_positive)} of {sum(c[5] == 0 for c in cases)} wrong "
          "answers right")
    if mismatches:
        print("\nours lenient disagrees with:")
        for case in agreement(cases, ours(False))[1]:
            print(f"  [{case[1]}] {case[3][-160:]!r} vs {case[4][-80:]!r}: expected {case[5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mismatches", action="store_true", help="print every case ours gets wrong")
    args = parser.parse_args()
    try:
        import math_verify  # noqa: F401
        graders = {"ours strict": ours(True), "ours lenient": ours(False),
                   "math-verify": math_verify_verdict}
    except ImportError:
        print("math-verify is not installed (pip install math-verify): ours only\n")
        graders = {"ours strict": ours(True), "ours lenient": ours(False)}

    by_class = defaultdict(list)
    for case in CASES:
        by_class[case[1]].append(case)
    others = [c for c in CASES if c[0] != MV and c[0] != "ours"]
    print_table("class", graders, [*by_class.items(), ("all", CASES),
                                   ("suites other than Math-Verify's", others)])
    wrong_positive = [c for c in CASES if c[5] == 0 and ours(True)(c) == 1]
    print(f"\nstrict scores {len(wrong_positive)} of {sum(c[5] == 0 for c in CASES)} wrong "
          "answers right")
    if args.mismatches:
        for g in ("ours strict", "ours lenient"):
            print(f"\n{g} disagrees with:")
            for case in agreement(CASES, graders[g])[1]:
                print(f"  [{case[1]}] {case[3]!r} vs {case[4]!r}: expected {case[5]}")
    report_suites(graders, args.mismatches)


if __name__ == "__main__":
    main()
