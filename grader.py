"""The answer grader: a hardened binary reward for GRPO, read from a completion and a gold answer.

The reward is the only teacher in this system, and model output is hostile input: every function
that reads a completion is bounded in time and memory, never raises on any ``str``, and never
evaluates model text with eval, exec, compile or sympy. Numbers are compared exactly
(``fractions.Fraction``) by a small parser of our own. ``reward(completion, gold, strict=True)`` is
1.0 when the answer that ``extract_answer`` reads equals the gold under ``math_equal``, else 0.0.
Strict, the training reward, prefers no answer to a guessed one: it reads an answer only where the
model concluded, never picks one of several values, never evaluates arithmetic the model left
unfinished when a value follows it.

Reading a completion (``extract_answer``): the text read, then the first rule that finds an answer
    0. ``_own_turn``: the last ``MAX_COMPLETION_CHARS`` characters (more than any 4,096-position
       completion; verl scans only 300), ended where the model's turn ends: at the first end-of-turn
       token (``<|im_end|>``, ``<|im_start|>``, ``<|endoftext|>``, Llama's ``<|eot_id|>``, ``</s>``,
       ...) or at a turn the model invents on a line of its own after text of its own
       ("\\n\\nQuestion:", "Problem:", "Q:", "Human:", "User:", or a line "user" left by a ChatML
       turn decoded with its special tokens skipped); begun after a reasoning model's last
       ``</think>`` (an answer inside its reasoning is not its answer; none while it is open).
       ``_after_code``: rules 1-5 read only what follows the last code block (an answer the model
       stated before running more code was not its conclusion; inside a block left open there is
       none).
    1. ``_minerva_answer``: "The final answer is $x$. I hope it is correct." (the last one).
    2. ``_tagged_answer``: the last ``<answer>...</answer>`` (the r1 template; an unclosed tag reads
       to the end): a box in it, else an "answer is" in it, else its content.
    3. ``boxed_answer``: the last ``\\boxed{...}`` / ``\\fbox{...}`` (``read_box``: brace-matched;
       also ``\\boxed 5``), and with it the boxes before it that only commas, "and", spaces or math
       delimiters separate: one list ("\\boxed{(2, 2)} \\text{ and } \\boxed{(6, 2)}"; a repeated
       box counts once; "\\boxed{x+11} or \\boxed{11+x}" restates: the last). An empty, unbalanced
       or overlong last box: no answer, in either mode. ``_boxes_beside``: a box of the same
       sentence with another value and no concluding link ("so", "but", "gives", "=") between them
       leaves no single answer ("\\boxed{8} for John and \\boxed{7} for DeSean").
    4. ``_hashes_answer``: the first ``####`` line that states an answer (GSM8K; "#### The final
       answer is N" as the paper's exemplars; the answer may be on the next line). The first: a
       base model that runs on past its answer writes the next exemplar's ``####``. A markdown
       heading ("#### Step 1: ...") states none.
    5. ``_marked_answer``: the last "answer is" / "answer:" / "answer to the question is" / "Final
       Answer" heading that states one.
    6. ``_last_expression``, lenient only (``strict=False``): the math group that ends the text,
       whole (``_closing_group``: "... the fastest is $\\text{E}$."), else the last whole number or
       expression: the math around its last digit, between words, units, delimiters and sentence
       ends on one line ("$\\frac{1}{3}$" is 1/3, not 3; "3\\sqrt{13}", not 13; "1,000.99m²" is
       1,000.99; "$x <= 2$" whole), an equation read at its last side ("48 + 24 = 72" is 72). A
       last-number reward is gamed by printing numbers: the training reward is strict.

What follows a marker (``_stated_answer``, for rules 1, 2, 4, 5), in this order
    a. math groups that open it ($...$, \\(...\\), \\[...\\], $$...$$; "$2$ and $-3$" is the list
       "2, -3"), or
    b. a short clause, up to its sentence end or a "because", "since", "which", ...: no words
       before its math, at most three after it ("23 + 16 = 39 minutes", "18 square feet"); or a
       word answer ("Friday");
       with what the rest of the sentence says of it (``_restated``): a restatement continues
       the answer ("$21 \\div 312500$, which is $0.0000672$" is "21 \\div 312500 = 0.0000672",
       compared by its last side; "approximately 0.67" makes an approximation; ", or 0.5" is
       another form of the value); another value beside it ("$8$ for John and $7$ for DeSean")
       leaves no single answer (strict), unless it is the same ("18, so she makes 18 dollars").
    c. ``_concluded_value``, prose: what follows its last "is" / "are" / "equals" / "=" outside
       math ("the solution, which is $x=11$"; "The largest $n$ is 34" is 34, not n), else its only
       value, a number or a math group with a digit (lenient: its first). Strict: no single answer
       when a value follows the answer, or stands in a statement beside the answer's that the
       answer's does not conclude ("John has $8$, DeSean has $7$"; "so", "thus", "which" conclude).
    A negation ("not 18"), a bound ("at least 5", "7 or more") or a supposition ("Suppose the
    answer is 7") states no single answer either. A marker with no single answer ends the reading
    (lenient: at rule 6); prose with no value at all falls through to the marker before it, then to
    the next rule: prose itself is never an answer.

Where the model concluded (``_concluded``, rules 1-5): the answer read is none (lenient: rule 6
    reads on) when the text after it revises it ("Wait,", "Actually", "let me recompute", "I made
    a mistake"), states another answer ("$x = \\boxed{5}$ ... so the answer is 10"), or gives a
    value to arithmetic the answer left undone ("$21 \\div 312500$. This is $0.0000677$.";
    "12 - 6\\sqrt{3}" and "30^\\circ" are closed forms, not undone).

Comparing answers (``math_equal``): both normalised, then compared as strings, values, structures
    ``_normalize``, in order: unicode minus/degree/pi/times/≥/≤/≠ and currency glyphs (€ £ ¥ as
    ``$``); a command's backslash doubled by escaping ("\\\\frac") single; boxes read as rule 3
    ("\\boxed{1}\\boxed{2}" is "1, 2"); ``$``, ``\\$``, ``%``, ``\\%``, ``^\\circ`` dropped;
    ``\\left``, ``\\right``, ``\\!``, ``\\,``, ``\\;``, ``\\(``, ``\\[`` removed; ``\\dfrac`` /
    ``\\tfrac`` / ``\\cfrac`` -> ``\\frac``, ``\\dbinom`` / ``{n \\choose k}`` -> ``\\binom``,
    bmatrix and ``\\begin{array}`` -> pmatrix; one spelling per relation (``\\geq``, ``\\ge``, ≥
    are ``>=``; ``\\lt`` is ``<``; ``\\neq`` is ``!=``); a leading "x \\in" dropped; ``4210_{5}``
    -> ``4210_5``; ``\\text{}``, ``\\mbox{}``, ``\\mathrm{}``, ``\\textbf{}`` unwrapped and trailing
    unit words dropped after a number ("18 dollars", "5 \\text{ cm}^2"); "and"/"or" between items
    ("(1,2)or(2,1)" too) become commas; whitespace dropped; one-character arguments braced
    ("\\frac34i" is "\\frac{3}{4}i"); grouping braces around the whole answer dropped ("{1,2,3}"
    is "1,2,3"; a set is "\\{...\\}"); labels (``_unlabelled``); thousands commas (``1,000``,
    ``1{,}000``, ``14 {, }916``, ``11,\\! 111``) removed only where the whole answer (or a brace
    group) is one grouped number; "(C)" -> "C"; word answers lower-cased; a relation read one way
    (``_one_way``: "3 > x" is "x < 3"; a name between two bounds is an interval: "-2 < x \\le 7" is
    "(-2,7]").
    Labels: a name (letters, subscripts, a function, a tuple, ratio or fraction of names: "x",
    "f(x)", "(p,q)", "V_1:V_2", "|AB|"; never "2x" or "x^2") labels the value after its "=": "x =
    5" is 5, "x = 2, x = 3" the list 2, 3; different names ("AB=4, CD=5") are compared name by
    name (``_same_labels``), to bare values in the gold's order ("4, 5"), and a predicted "x = 2,
    y = 3" is the point (2, 3), not the list of solutions "2, 3". A chain of equations states its
    last side ("z = 1 + 1 = 2" is 2). A gold longer than an answer is a worked solution: its
    answer is read as a completion's (strict).
    Values (``_Parser``): a bounded recursive-descent parser (integers, decimals, scientific
    ``1.5e3``, ``+ - * / ^``, ``\\cdot``, ``\\times``, ``\\div``, ``\\frac``, ``\\sqrt``,
    ``\\sqrt[n]``, ``\\pi``, ``\\binom``, ``n!``, implicit products ``2\\pi``, mixed numbers
    ``2\\frac{1}{2}``). Rational results are exact Fractions and compare exactly ("0.5" ==
    "\\frac{1}{2}", "18.00" == "18"); results with an irrational part (a non-square root, pi) are
    floats and compare with relative tolerance 1e-9 only against other irrational results, so a
    decimal approximation never matches an exact surd.
    Structures (``_key``, ``_same``): tuples and intervals element-wise with the same brackets;
    ``\\{...\\}`` sets, ``\\cup`` unions and bare lists (items split at ";" when there is one, else
    at ",") in any order: against a gold that lists each value once as sets (a repeated predicted
    value counts once), else counting multiplicity; a list that repeats one value is that value;
    an item "a \\pm b" is the two values a - b and a + b; pmatrix element-wise.
    Stated values (``_stated_sides``): when the gold is no equation, a predicted "23 + 16 = 39" is
    also compared by its last side ("x \\le 5" and "x^2 = 4" are not 5 and 2), "a \\approx b" by
    b, and by a too when b is a rounding of a (``_rounds_to``: "\\frac{1}{3} \\approx 0.33",
    "1/3 \\approx 0.3"; not "21 \\div 312500 \\approx 0.0000677", which is 0.0000672: only
    0.0000677 is stated).
    Percentages are not rescaled: "50\\%" == "50", "50\\%" != "0.5". There is no symbolic algebra:
    answers with variables compare as normalised strings ("x^2+2x+1" != "1+2x+x^2"); unsimplified
    numbers compare by value. A decimal comma is not read (it could be a thousands separator).

Bounds (all inputs): ``MAX_COMPLETION_CHARS`` characters of completion, ``MAX_ANSWER_CHARS`` per
answer, ``MAX_DIGITS`` digits per literal, integer exponents up to ``MAX_EXPONENT``, exact values up
to ``MAX_BITS`` bits (power towers like ``9^{9^{9^9}}`` are "not evaluable" after one step), nesting
depth ``MAX_NESTING``, ``MAX_ELEMENTS`` elements per tuple/set/matrix and boxes per list. Regexes
run on bounded windows and have no ambiguous nested quantifiers.

Public: ``reward``, ``extract_answer``, ``math_equal``, and the box reader ``read_box`` /
``boxed_answer`` that data.py's MATH loaders use. This module imports nothing of the project.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache
from typing import Union

MAX_COMPLETION_CHARS = 32_768  # completion tail the extractor reads (> any 4,096-token completion)
MAX_ANSWER_CHARS = 512  # longest answer compared (the longest MATH gold is 159 characters)
MAX_DIGITS = 100  # longest number literal compared (GSM8K and MATH golds: <= 9 digits)
MAX_EXPONENT = 300  # largest |n| in x^n and in 1e±n (floats end near 1.8e308)
MAX_BITS = 1000  # largest numerator/denominator of an exact value (floats are finite below 2**1024)
MAX_NESTING = 40  # parser recursion depth (~2 Python frames per level: far below the limit)
MAX_ELEMENTS = 64  # elements per tuple, set, union or matrix (comparing sets is quadratic in it)

# --- Reading a completion: extract_answer, then its rules in order --------------------------------


def extract_answer(text: str, strict: bool = True) -> str | None:
    """The final answer written in a completion, or None (rules in the module docstring, in this
    order). strict: only explicit final-answer markers count; lenient (strict=False) adds the last
    whole number or expression. Never raises on a str."""
    if not isinstance(text, str):
        return None
    text = _own_turn(text)
    concluded = _after_code(text)
    answer = _minerva_answer(concluded)
    if answer is None:
        answer = _tagged_answer(concluded, not strict)
    if answer is None:
        boxed = boxed_answer(concluded, _NO_BOX)
        if boxed is not _NO_BOX:
            if not boxed or _concluded(concluded, boxed) and not _boxes_beside(concluded):
                return boxed  # type: ignore[return-value] (empty or malformed: none in either mode)
            answer = _NO_SINGLE
        else:
            answer = _hashes_answer(concluded)
    if answer is None:
        answer = _marked_answer(concluded, not strict)
    if answer and not _concluded(concluded, answer):
        answer = _NO_SINGLE
    if answer or strict:
        return answer or None  # _NO_SINGLE ("") is None to the caller
    return _last_expression(text)  # the whole turn: only rules 1-5 stop at code


# Rule 0: the text read
# Where a model's turn ends: special tokens (Qwen, Llama 3, Llama 2 / Mistral, DeepSeek), left in
# text decoded with them, and the start of a turn a model invents at the start of a line (a base
# model continuing its few-shot prompt, or a chat model writing the user's next message).
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|eot_id|>", "<|end_of_text|>",
                "<|start_header_id|>", "</s>", "<\uff5cend\u2581of\u2581sentence\uff5c>",
                "<|user|>")
_INVENTED_TURN = re.compile(r"\n[ \t]{0,8}(?:Human|User|USER|Question|Problem|Q)[ \t]{0,3}:"
                            # ChatML decoded with its special tokens skipped
                            r"|\n(?:user|assistant)[ \t]{0,3}\n")


def _own_turn(text: str) -> str:
    """The completion's last MAX_COMPLETION_CHARS, ended where the model's turn ends: at its first
    end-of-turn token, or at a next turn it invents on a line of its own ("\\n\\nQuestion: ...")
    after some text of its own; begun after its reasoning's last "</think>" ("" while an opened
    <think> is not closed)."""
    text = text[-MAX_COMPLETION_CHARS:]  # first, so that no scan below reads more than this bound
    if "|>" in text or "</s>" in text or "\uff5c>" in text:  # how every _END_OF_TURN token ends
        for marker in _END_OF_TURN:  # (str.find: one regex alternation over them all is 5x slower)
            cut = text.find(marker)
            if cut >= 0:
                text = text[:cut]
    m = _INVENTED_TURN.search(text)
    if m and not text[:m.start()].strip():  # a turn marker before any text of its own: look further
        m = _INVENTED_TURN.search(text, m.end())
    text = text[:m.start()] if m else text
    tag = text.rfind("think>")  # the last <think> or </think>: one scan
    if tag > 0 and text[tag - 1] == "/" and text[tag - 2:tag - 1] == "<":
        return text[tag + 6:]
    return "" if tag > 0 and text[tag - 1] == "<" else text  # reasoning left open: no answer yet


def _after_code(text: str) -> str:
    """What follows the text's last code block (tool-integrated output: an answer the model states
    and then runs more code after was not its conclusion); "" when a block is left open."""
    fence = text.rfind("```")
    if fence < 0:
        return text
    return "" if text.count("```") % 2 else text[fence + 3:]


# What follows the answer: the model revises it ("Wait,", "Actually", "let me recompute"), or
# gives a value to arithmetic the answer left undone ("$21 \\div 312500$. This is $0.0000677$.")
_REVISION = re.compile(r"(?:^|[.!?:]\s|\n)\W{0,4}(?:but\s|no,?\s)?"
                       r"(?:wait|actually|hmm+|hold on|oops)\b"
                       r"|\b(?:re-?(?:check|comput|calculat|count|consider|evaluat|examin)\w*"
                       r"|made an? (?:mistake|error))", re.IGNORECASE)
_TAIL_PIECE = re.compile(r"[\w.]{1,16}(?=[^\w.]*\Z)")  # the answer's last run of letters and digits


def _concluded(text: str, answer: str) -> bool:
    """Whether the answer read is where the model concluded: what follows its last occurrence
    neither revises it, nor states a value of arithmetic it left undone, nor states another answer
    ("$x = \\boxed{5}$. Then $y = 2x = 10$, so the answer is 10.")."""
    # the answer read is not always in the text verbatim (boxes joined into "1, 2", a restatement
    # made an equation): then find its last run of letters and digits
    at = text.rfind(answer)
    if at < 0 and (piece := _TAIL_PIECE.search(answer)):
        at, answer = text.rfind(piece.group()), piece.group()
    tail = text[at + len(answer):] if at >= 0 else ""
    if not tail.strip(" \t\n.,;:!$}])\\*"):
        return True  # only the box's or the math group's end
    if _REVISION.search(tail):
        return False
    # ("nswer": Answer or answer; a later "answer is" without a digit is prose: "This answer is
    # reasonable." states no other answer)
    later = "nswer" in tail and _marked_answer(tail, False)
    if later and _DIGIT.search(later) and not math_equal(later, answer):
        return False
    # arithmetic left undone: an operation on numbers with a rational value ("21 \\div 312500",
    # "2^{10}"), not a closed form ("12 - 6\\sqrt{3}", "30^\\circ", "x^2-10x+41")
    if not _LATER_NUMBER.search(tail):
        return True
    value = _last_side(_normalize(answer))
    undone = "=" not in value and "approx" not in value and _ARITHMETIC.search(value)
    return not (undone and isinstance(_evaluate(value), Fraction))


# Rule 1: Minerva's closing line
_MINERVA = "I hope it is correct"  # "Final Answer: The final answer is $x$. I hope it is correct."


def _minerva_answer(text: str) -> str | None:
    """The answer of the last "final answer is ... I hope it is correct" (Minerva's format)."""
    hope = text.rfind(_MINERVA)
    if hope < 0:
        return None
    start = max(0, hope - 4 * MAX_ANSWER_CHARS)  # bounded: both are one sentence
    i = _lower(text[start:hope]).rfind(b"final answer is")
    return _stated_answer(text[start + i + 15:hope], "sentence") if i >= 0 else None


# Rule 2: the r1 template's <answer> tags


def _tagged_answer(text: str, lenient: bool) -> str | None:
    """The answer inside the last <answer>...</answer> (r1 template; a stop may cut the closing
    tag off)."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start)
    content = text[start + 8:end if end >= 0 else len(text)]
    if len(content) > 4 * MAX_ANSWER_CHARS:
        return None  # the model reasons inside the tags: the rules after this one read the text
    boxed = boxed_answer(content, _NO_BOX)
    if boxed is not _NO_BOX:
        return boxed or _NO_SINGLE  # type: ignore[return-value]
    answer = _marked_answer(content, lenient)
    return answer if answer is not None else _stated_answer(content, "tag", lenient)


# Rule 3: boxes
_NO_BOX = object()  # boxed_answer's no_box here: the text has no box (None: an empty or bad one)
_BRACE = re.compile(r"[{}]")
# what stands between the boxes of one answer: "\boxed{1}, \boxed{2}", "$\boxed{1}$ and $\boxed{2}$"
# (each alternative starts with its own character: no backtracking)
_BOX_JOINER = re.compile(r"(?:[\s,;$]|\\[()\[\],;: ]|\\q?quad|\\text\{\s{0,3}and\s{0,3}\}"
                         r"|(?<![A-Za-z])and(?![A-Za-z])){0,64}")


def read_box(text: str, start: int) -> tuple[str | None, int]:
    """The box opening at text[start] (``\\boxed`` or ``\\fbox``): its content, stripped (None when
    empty, unbalanced or longer than MAX_ANSWER_CHARS), and the index where the box ends. The
    one place a box is read: rule 3 and data.py's gold loaders use it."""
    i = start + (6 if text.startswith("\\boxed", start) else 5)
    j = i
    while j < len(text) and text[j] in " \t\n":
        j += 1
    if j < len(text) and text[j] == "{" and (content := _brace_group(text, j)) is not None:
        return content.strip() or None, j + len(content) + 2
    end = j  # "\boxed 5": one token, ended by space or "$"; or what is left of a malformed box
    while end < len(text) and end - j < MAX_ANSWER_CHARS and text[end] not in " \t\n$":
        end += 1
    if j == i or j == len(text) or text[j] == "{":  # "\boxed" at the end, "\boxedA", "\boxed{..."
        return None, end
    return text[j:end].rstrip(".,;") or None, end


def last_box_start(text: str, lo: int = 0, hi: int | None = None) -> int:
    """Where the last \\boxed or \\fbox in text[lo:hi] starts; -1 if there is none."""
    return max(text.rfind("\\boxed", lo, hi), text.rfind("\\fbox", lo, hi))


def boxed_answer(text: str, no_box: object = None) -> object:
    """Rule 3: the content of the text's last box, or, when boxes right before it are joined to it
    only by commas, "and", spaces or math delimiters, the list of them all ("\\boxed{1},
    \\boxed{2}" is "1, 2"; a repeated box counts once; "\\boxed{x+11} or \\boxed{11+x}" restates
    one answer: the last). None when the last box is empty or malformed; ``no_box`` when the text
    has none. data.py reads MATH golds with it, so a gold and the completion that copies its
    solution read alike."""
    start = last_box_start(text)
    if start < 0:
        return no_box
    last, _ = read_box(text, start)
    if last is None:
        return None
    answers, seen = [last], set()
    for _ in range(MAX_ELEMENTS - 1):
        # a box that ends at most 64 characters before this one starts within this window
        window = max(0, start - MAX_ANSWER_CHARS - 80)
        before = last_box_start(text, window, start)
        if before < 0:
            break
        content, end = read_box(text, before)
        if (content is None or not 0 <= start - end <= 64  # (a box around this one: not a list)
                or not _BOX_JOINER.fullmatch(text, end, start)):
            break
        seen = seen or {_normalize(last)}  # normalised only once a second box is found
        if (norm := _normalize(content)) not in seen:
            answers.append(content)
            seen.add(norm)
        start = before
    return ", ".join(reversed(answers))


# what between two boxes of a sentence makes the last the conclusion: "\\boxed{3}, but rechecking
# gives \\boxed{5}", "x = \\boxed{5}, so y = \\boxed{10}"; "or" restates (MATH: "\\boxed{-b+2}, or
# \\boxed{2 - b}", "$\\boxed{28}$ or $\\boxed{28_9}$": the last is the gold)
_BOX_LINK = re.compile(r"\b(?:or|so|thus|therefore|hence|then|but|instead|actually|gives?|giving"
                       r"|is|are|equals?|which)\b|=|\\(?:Rightarrow|implies|to)\b", re.IGNORECASE)


def _boxes_beside(text: str) -> bool:
    """Whether the last box's sentence holds a box before it with another value, neither joined
    to it as a list nor linked to it as a conclusion: several answers ("\\boxed{8} for John and
    \\boxed{7} for DeSean")."""
    start = last_box_start(text)
    sentence = max(text.rfind("\n", 0, start), text.rfind(". ", 0, start), start - MAX_ANSWER_CHARS)
    before = last_box_start(text, sentence + 1, start)
    if before < 0:
        return False
    (content, end), (last, _) = read_box(text, before), read_box(text, start)
    if content is None or last is None or end > start:  # (end > start: a box around the last)
        return False
    between = text[end:start]
    if _BOX_JOINER.fullmatch(between) or _BOX_LINK.search(between):
        return False
    return not math_equal(content, last)


def _brace_group(text: str, start: int) -> str | None:
    """Content of the {...} group opening at text[start], or None if unbalanced or longer than
    MAX_ANSWER_CHARS."""
    depth = 0
    for m in _BRACE.finditer(text, start, min(len(text), start + MAX_ANSWER_CHARS + 2)):
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return text[start + 1:m.start()]
    return None


# Rule 4: GSM8K's ####
_HASHES = re.compile(r"#+")
_FINAL_ANSWER_PREFIX = re.compile(r"\s{0,4}(?:the\s{1,4})?(?:final\s{1,4})?answer\s{0,4}"
                                  r"(?:is\b)?\s{0,4}:?", re.IGNORECASE)


def _hashes_answer(text: str) -> str | None:
    """The first #### line that states an answer (GSM8K; "#### The final answer is N" as the paper's
    exemplars). The first, not the last: a base model that runs on past its answer writes the next
    exemplar's ####."""
    pos = text.find("####")
    for _ in range(8):  # bounded: a text of many "####" headings gives up
        if pos < 0:
            return None
        start = _HASHES.match(text, pos).end()
        if m := _PLAIN_NUMBER.match(text, start):  # fast path: "#### 72"
            return m.group(1)
        m = _FINAL_ANSWER_PREFIX.match(text, start)
        start = m.end() if m else start
        answer = _stated_answer(text[start:start + 2 * MAX_ANSWER_CHARS], "line")
        if answer is not None:
            return answer
        pos = text.find("####", start)
    return None


# Rule 5: "answer is", "Answer:", "Final Answer"
# Final-answer markers. Words are read on ASCII-lowered bytes (one byte per character, so indices
# stay those of the text): "answer is", "answers are", "answer would be", "Answer:", "**Answer:**",
# "answer to the question is".
_ANSWER_MARKER = re.compile(rb"answers?(?:\*\*|\s){0,4}"
                            rb"(?:(?:is|are|was|would be|will be|should be|must be)\b"
                            rb"(?:\*\*|\s){0,4}:?|:|=(?!=)"
                            rb"|(?:to|for|of)\b[^.\n$:=]{1,60}?\b(?:is|are)\b:?)")
# a marker in a supposition states nothing: "Suppose the answer is 7. Then ..."
_SUPPOSED = re.compile(rb"\b(?:if|suppose|supposing|assume|assuming|whether|let's say)\b"
                       rb"[^.\n]{0,40}\Z")
# "**Final Answer**" alone on its line: the answer follows it
_HEADER_END = re.compile(r"[ \t*#:]{0,8}\n")


def _marked_answer(text: str, lenient: bool) -> str | None:
    """The answer after the last "answer is" / "Answer:" / "Final Answer" header that states one."""
    lowered = _lower(text)
    pos = lowered.rfind(b"answer")
    for _ in range(16):  # bounded: adversarial "answer is answer is ..." gives up
        if pos < 0:
            return None
        m = _ANSWER_MARKER.match(lowered, pos)
        end = m.end() if m else -1
        if m is None and (h := _HEADER_END.match(text, pos + 6)):
            line_start = text.rfind("\n", 0, pos) + 1
            # a heading: "Final Answer", or "Answer" with only markdown before it on its line
            if lowered.endswith(b"final ", 0, pos) or not text[line_start:pos].strip(" \t*#"):
                end = h.end()
        if end >= 0 and not _SUPPOSED.search(lowered, max(0, pos - 48), pos):
            answer = _stated_answer(text[end:end + 2 * MAX_ANSWER_CHARS], "sentence", lenient)
            if answer is not None:
                return answer
        pos = lowered.rfind(b"answer", 0, pos)
    return None


def _lower(text: str) -> bytes:
    # one byte per character: indices stay aligned with text
    return text.encode("ascii", "replace").lower()


# What follows a marker (rules 1, 2, 4, 5): (a) math groups, (b) a short clause, (c) prose
# a rule's answer when the text states something there that is no single answer ("not 18", "at
# least 5", "$8$ for John and $7$ for DeSean"): the rules after it are not read (None: read them)
_NO_SINGLE = ""
_PLAIN_NUMBER = re.compile(r"[ \t]{0,8}"  # a number alone on the rest of its line
                           r"(-?\d{1,3}(?:,\d{3}){1,12}(?:\.\d{1,30})?|-?\d{1,40}(?:\.\d{1,30})?)"
                           r"\.?[ \t]{0,8}(?:\n|\Z)")
_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))  # "$$" before "$"
_QUOTE = re.compile(r'\\?"|[\u201c\u2018`]')  # an answer quoted: '"$12$"', '\\"18\\"', '“18”'
# \(...\) or $...$ on one line ("$\\$120$" holds an escaped dollar)
_MATH_GROUP = re.compile(r"\\\((.{1,512}?)\\\)|(?<![\\\d])\$((?:[^$\n\\]|\\.){1,512}?)"
                         r"(?:(?<!\s)|(?<=[\d}]\s))\$")  # "$12 $" is math, "$18 and $" two signs
_CONNECTOR = re.compile(r"\s{0,4}(?:,\s{0,4})?(?:(?:and|or)\s{1,4})?")
_WORDS = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")  # words of prose; \commands are not words
_SIGNED = frozenset("0123456789\\(")  # what a "-" or "." opening math stands before
# where math may start ("-" and "." only before a digit, \ or ()
_MATH_CHAR = re.compile(r"[\d\\$({\[.-]")
_FILLER = re.compile(r"(?:approximately|about|around|roughly|exactly|equal to|equals|given by"
                     r"|simply|just|then|therefore|thus|so|clearly|indeed)\b[\s,:]{0,4}",
                     re.IGNORECASE)
_NEGATION = re.compile(r"(?<![a-z])(?:n(?:ot|o|ever|either|or)|cannot|wrong|incorrect)(?![a-z])"
                       r"|n't(?![a-z])")
_REASON = re.compile(r",?\s(?:because|since|as|which|where|so|given|for|when|if)\b", re.IGNORECASE)
_LATER_NUMBER = re.compile(r"(?<![\^{])[0-9]")  # a digit that is no exponent ("cm^2")
_QUALIFIED = re.compile(r"\b(?:at least|at most|more than|less than|greater than|fewer than|up to"
                         r"|between|or (?:more|less|fewer|greater|higher|lower|above|below|so))\b")
_TEXT_GROUP = re.compile(r"\\text\{[^{}]{0,64}\}")
# "<answer> answer here </answer>", "The answer is as follows:"
_NOT_AN_ANSWER = {"answer", "here", "below", "above", "follows", "following", "correct", "the",
                  "this", "that", "is", "given", "as"}
# what restates the value before it: "$A$, which is $B$", "= 18", "\approx 0.33", ", or 0.5",
# ", which is approximately 0.33"
_RESTATEMENT = re.compile(r"\s{0,4},?\s{0,4}(?:(?:which|that)\s{1,4})?"
                          r"(or\b|is\b|equals\b|=|i\.e\.|\\approx|\u2248)?"
                          r"\s{0,4},?\s{0,4}(approximately\b|about\b|roughly\b|around\b)?\s{0,4}",
                          re.IGNORECASE)
# a remark after an answer: "$5$ (since 2 + 3 = 5)", "$5$ because ..." (not "which", that restates)
_ASIDE = re.compile(r"\s\(|,?\s(?:because|since|as|given|if|when|where)\b", re.IGNORECASE)
# where the statements of a clause end, and the words that make a statement conclude those before
_STATEMENT_END = re.compile(r"[,;]\s|\.\s|\s(?:and|but)\s|\n")
_CONCLUDES = re.compile(r"\s{0,4}(?:so|thus|therefore|hence|then|which|giving|making|that is)\b",
                        re.IGNORECASE)
_ARABIC_DIGIT = re.compile(r"[0-9]")  # str.isdigit() is also true of "²"
_NUMBER_TOKEN = re.compile(r"(?<![\w.,/^])-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?%?(?![\w/^]|[.,]\d)")


def _stated_answer(s: str, scope: str, lenient: bool = False) -> str | None:
    """What follows a final-answer marker: the answer it states, or None if it states none.

    scope: "sentence" (after "answer is" / "Answer:": up to the end of its sentence), "line" (after
    ####: the whole line, which must be an answer, not a markdown heading), "tag" (the content of
    <answer> tags). In order (module docstring): math groups opening it (a) or a short clause (b),
    with what the rest of the sentence says of them (_restated); prose (c: _concluded_value); no
    single answer in a clause with a negation ("not 5") or a bound ("at least 5")."""
    if m := _PLAIN_NUMBER.match(s):  # fast path: "#### 72", "The answer is 18."
        return m.group(1)
    s = s.lstrip(" \t*:")
    if s[:1] in ("\n", "\r"):  # "Final Answer:\n\n$$18$$", "####\n72": the answer on a later line
        s = s.lstrip().lstrip(" \t*:")
    s = s[len(m.group()):] if (m := _QUOTE.match(s)) else s  # '"$12$ and $13$"'
    if scope != "line" and s[:1] in ("$", "\\") and (joined := _joined_groups(s)):
        return joined
    for open_, close in _DELIMITERS:
        if s.startswith(open_):
            end = s.find(close, len(open_))
            while end > 0 and close == "$" and s[end - 1] == "\\":  # "$\\$18$": an escaped dollar
                end = s.find(close, end + 1)
            content = s[len(open_):end] if end >= 0 else ""
            # "$" math as _MATH_GROUP reads it: one line; "$12 $" is math, "$18 and $" two signs
            if content.strip() and (open_ != "$" or "\n" not in content and (
                    not content[-1].isspace() or content.rstrip()[-1] in "0123456789}")):
                return _restated(content.strip(), s[end + len(close):], scope, lenient)
            # a lone "$" is a currency sign ("$18 a day"); an unclosed \[ is read on
            s = s[len(open_):]
            break
    if scope == "tag":
        clause = s.strip()
    else:
        clause = s.split("\n", 1)[0]
        # up to ". " or ";" (str.find: a regex scan is 10x slower on long lines)
        if scope == "sentence":
            clause = clause[:_sentence_end(clause)]
    clause = clause.strip().rstrip(".").strip("* ")
    if (m := _FILLER.match(clause)) and m.end() < len(clause):
        clause = clause[m.end():]
    if not clause or len(clause) > (4 if scope == "tag" else 1) * MAX_ANSWER_CHARS:
        return None
    start = _math_start(clause)
    if start < 0:  # a word answer ("Friday", "B, C", "p+q-r"), or prose with no number in it
        if _negated(clause):
            return _NO_SINGLE
        if len(clause) > 40:
            return None
        words = _WORDS.findall(clause)
        if len(words) > 3 or {w.lower() for w in words} & _NOT_AN_ANSWER:
            return None
        return _checked_answer(clause)
    short = _is_short(clause, start, len(clause))
    if short and scope == "line" and ". " in clause:
        return None  # "#### 1. Count the eggs": a heading
    if _negated(clause) or _QUALIFIED.search(clause.lower()):
        return _NO_SINGLE  # "not 18", "at least 5", "between 10 and 20", "7 or more"
    if scope == "line":
        return _checked_answer(clause) if short else None
    if (cut := _REASON.search(clause, start)) and _is_short(clause, start, cut.start()):
        # "5 because 2 + 3 = 5", "18 for each of them", "21 ÷ 312500, which is 0.0000672"
        return _restated(clause[:cut.start()], clause[cut.start():], scope, lenient)
    if short:
        return _checked_answer(clause)
    return _concluded_value(clause, lenient)


def _joined_groups(s: str) -> str | None:
    """'$2$ and $-3$' (two or more math groups joined by commas, "and", "or"): the list '2, -3'."""
    line = s[:2 * MAX_ANSWER_CHARS].split("\n", 1)[0]
    groups, last = [], 0
    for m in _MATH_GROUP.finditer(line):
        if not _CONNECTOR.fullmatch(line, last, m.start()) or len(groups) == MAX_ELEMENTS:
            break
        groups.append((m.group(1) or m.group(2)).strip())
        last = m.end()
    return ", ".join(groups) if len(groups) >= 2 else None


def _restated(answer: str, rest: str, scope: str, lenient: bool) -> str | None:
    """The answer that opens a statement (a math group, a short clause) with what the rest of its
    sentence says of it: a restatement continues it ("$21 \\div 312500$, which is $0.0000672$" is
    the equation "21 \\div 312500 = 0.0000672", compared by its last side, so arithmetic the model
    left unfinished is never evaluated when a value follows it; "$\\frac{1}{3}$, which is about
    $0.33$" and "$\\frac{1}{2}$, or 0.5" are an approximation and two forms of one value). Strict:
    another value beside it ("$8$ for John and $7$ for DeSean") leaves no single answer, unless it
    is the same ("18, so she makes 18 dollars")."""
    rest = rest[:(4 if scope == "tag" else 1) * MAX_ANSWER_CHARS]
    rest = rest if scope == "tag" else rest.split("\n", 1)[0]
    rest = rest[:_sentence_end(rest)]
    if cut := _ASIDE.search(rest):
        rest = rest[:cut.start()]  # "$5$ (since 2 + 3 = 5)", "$5$ because ...": a reason, no value
    for _ in range(4):
        if not _LATER_NUMBER.search(rest):  # (not the "2" of "cm^2")
            return _checked_answer(answer)
        link = _RESTATEMENT.match(rest)
        if not (link.group(1) or link.group(2)):
            break
        rest = rest[link.end():]
        group = _MATH_GROUP.match(rest)
        value = (group.group(1) or group.group(2)).strip() if group else _leading_expression(rest)
        if not value:
            break
        at = group.end() if group else rest.find(value) + len(value)
        rest = rest[at:] if at >= len(value) else ""  # a tidied value not in rest as it is: stop
        joint = (link.group(1) or "").lower()
        answer = (f"{answer} \\approx {value}" if link.group(2) or joint in ("\\approx", "\u2248")
                  else f"{answer}, {value}" if joint == "or" else f"{answer} = {value}")
    if lenient or all(math_equal(value, answer) for value in _values(rest)[:MAX_ELEMENTS]):
        return _checked_answer(answer)  # "18, so she makes 18 dollars": one value, said twice
    return _NO_SINGLE


def _concluded_value(clause: str, lenient: bool) -> str | None:
    """(c) Prose: the value the clause concludes with: what follows its last "is", "are", "equals"
    or "=" ("the solution, which is $x=11$", "half of 36, which is 18", "the largest $n$ is 34"),
    else its only value (a number, or a math group with a digit; lenient: its first). Strict: no
    single answer when a value follows it, or when another statement of the clause that the
    answer's does not conclude ("so", "thus", "which", ...) states one ("John has $8$, DeSean has
    $7$")."""
    # the links read are those of the prose, not the "=" inside a math group
    prose = _MATH_GROUP.sub(lambda m: "\x00" * len(m.group()), clause)
    at, link = max((prose.rfind(link), link) for link in (" is ", " are ", " equals ", "="))
    if at >= 0:
        after = clause[at + len(link):].lstrip()
        group = _MATH_GROUP.match(after)
        answer = (group.group(1) or group.group(2)).strip() if group else _leading_expression(after)
        if answer:
            if lenient:
                return answer
            tail = after[group.end():] if group else after[after.find(answer) + len(answer):]
            return _NO_SINGLE if _values(tail) or _beside(clause, at) else answer
    values = _values(clause)
    if len(values) == 1 or (lenient and values):
        return values[0]
    return _NO_SINGLE if values else None


def _values(clause: str) -> list[str]:
    """The values a clause states, in order: its math groups that hold a digit, and the numbers
    outside them."""
    found, last = [], 0
    for m in _MATH_GROUP.finditer(clause):
        found += _NUMBER_TOKEN.findall(clause, last, m.start())
        if _ARABIC_DIGIT.search(content := (m.group(1) or m.group(2)).strip()):
            found.append(content)
        last = m.end()
    return found + _NUMBER_TOKEN.findall(clause, last)


def _beside(clause: str, at: int) -> bool:
    """Whether a value stands in a statement of the clause before the one that holds position at,
    and that one does not conclude it: "x is 3 and y is 4", not "she has 9 eggs, so she makes 9 *
    2 = 18"."""
    begin = 0
    for m in _STATEMENT_END.finditer(clause, 0, at):
        begin = m.end()
    return begin > 0 and not _CONCLUDES.match(clause, begin) and bool(_values(clause[:begin]))


def _sentence_end(line: str) -> int:
    """Where the sentence that opens line ends: its first ". " or ";" (not a LaTeX "\\;")."""
    semi = line.find(";")
    while semi > 0 and line[semi - 1] == "\\":  # "10\\;\\text{edges}": a LaTeX space
        semi = line.find(";", semi + 1)
    ends = [i for i in (line.find(". "), line.find(".\t"), semi) if i >= 0]
    return min(ends) if ends else len(line)


def _math_start(s: str) -> int:
    for m in _MATH_CHAR.finditer(s):
        if m.group() not in "-." or s[m.end():m.end() + 1] in _SIGNED:
            return m.start()
    return -1


def _checked_answer(s: str) -> str | None:
    """s, unless it is too long or holds no letter or digit ("$$", "**": what is left of a missing
    answer)."""
    return s if len(s) <= MAX_ANSWER_CHARS and any(c.isalnum() for c in s) else None


def _negated(clause: str) -> bool:
    """A negation outside \\text{...} ("not 18", "isn't"; the answer "\\text{neither}" is none)."""
    if "\\text" in clause:
        clause = _TEXT_GROUP.sub("", clause)
    return _NEGATION.search(clause.lower()) is not None


def _is_short(clause: str, start: int, end: int) -> bool:
    """clause[:end] is a short answer whose math starts at start: no words before it, at most three
    after it, and after the first of these (other than "and" / "or") no number: "18 square feet",
    "2, 3 and 4", not "1/2 of 36"."""
    if _WORDS.search(clause, 0, start):
        return False
    for n, m in enumerate(_WORDS.finditer(clause, start, end), 1):
        if n > 3:
            return False
        # a word after a space (not "3qr", "{June") other than "and" / "or"
        prose = clause[m.start() - 1].isspace() and m.group().lower() not in ("and", "or")
        if prose and _LATER_NUMBER.search(clause, m.end(), end):
            return False
    return True


# Rule 6 (lenient only): the last whole number or expression
# Where an expression ends in running text: a word, a unit ("m" of "5m²"), \text{...} with words
# in it, $ and \( \) \[ \] delimiters (not \$), sentence punctuation (not the ":" of a ratio, the
# "!" of a factorial, the "." of a decimal), a comma that is not a thousands separator, a LaTeX
# line break, <<calculator>> brackets and tags (not a relation: "x <= 2", "3>x"), any non-ASCII
# character but these: − × ÷ · √ π ° ² ³ ≈.
_EXPRESSION_END = re.compile(r"\\(?:text|mbox|mathrm|textrm|textit)\s{0,4}"
                             r"\{[^{}]{0,64}[A-Za-z][^{}]{0,64}\}"
                             r"|(?<![\\A-Za-z])[A-Za-z]{2,}|(?<=\d)[A-Za-z](?=[\u00b2\u00b3])"
                             r"|\\[()\[\]]|(?<!\\)\$|\\\\|[\n;?&`\"']|<<|>>|</?[A-Za-z][\w-]{0,20}>"
                             r"|\.(?!\d)|(?<!\d):|:(?!\d)|(?<!\\)!(?![})=])"
                             r"|(?<!\{),(?!\d|\s{0,2}\\!|\})"
                             r"|[^\x00-\x7f"
                             r"\u2212\u00d7\u00f7\u00b7\u221a\u03c0\u00b0\u00b2\u00b3\u2248]")
_EXPRESSION_SPLIT = re.compile(f"({_EXPRESSION_END.pattern})")
_MATH_DELIMITERS = frozenset(("$", "\\(", "\\)", "\\[", "\\]"))
_MATRIX_SPAN = re.compile(r"\\begin\{([pb]matrix)\}.{0,512}?\\end\{\1\}")
_LAST_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?\d+(?:,\d{3})*(?:\.\d+)?")
# ( [ \{ and their closers; LaTeX argument braces balance on their own
_BRACKET = re.compile(r"\\[{}]|[()\[\]]")


def _last_expression(text: str) -> str | None:
    """Lenient fallback: the math group that ends the text, whole; else the whole number or
    expression around the last digit of the text: "\\frac{1}{3}", not 3; "3\\sqrt{13}", not 13;
    "1/8", not 8; "x = 5" is 5. An expression is the math between two words, delimiters or sentence
    ends on one line (see _EXPRESSION_END)."""
    closing = _closing_group(text)
    if closing:
        return closing
    # C-speed scans; a regex over the whole text is 30x slower
    end = max(text.rfind(d) for d in "0123456789")
    if end < 0:
        return None
    start, limit = end, max(0, end - 2 * MAX_DIGITS)
    while start > limit and (text[start - 1].isdigit() or text[start - 1] in ",."):
        start -= 1
    if start == limit and start > 0 and text[start - 1].isdigit():
        return None  # a digit run longer than any number we compare
    line_start = max(text.rfind("\n", 0, end) + 1, end - 2 * MAX_ANSWER_CHARS)
    line_end = text.find("\n", end, end + MAX_ANSWER_CHARS)
    line = text[line_start:line_end if line_end >= 0 else end + MAX_ANSWER_CHARS]
    if "\\begin{" in line:
        for m in _MATRIX_SPAN.finditer(line):
            if m.start() <= end - line_start < m.end():
                return m.group()
    # pieces at even indices, the separators between them at odd ones
    parts = _EXPRESSION_SPLIT.split(line)
    for i in range(len(parts) - 1, max(-1, len(parts) - 2 * MAX_ELEMENTS), -2):
        if not _ARABIC_DIGIT.search(parts[i]):
            continue
        if parts[i].lstrip().startswith("^") and i and (parts[i - 1][-1:].isalpha()
                                                         or parts[i - 1][-1:] == "}"):
            continue  # "440 \\text{ cm}^2", "cm^2": the exponent of a unit
        j = k = i  # widened over the commas of a tuple, interval or set: "(2, 3)", "[0,\\infty)"
        while k - j < 2 * MAX_ELEMENTS:
            left, right = _unmatched("".join(parts[j:k + 1]))
            if left and j >= 2 and parts[j - 1] == ",":
                j -= 2
            elif right and k + 2 < len(parts) and parts[k + 1] == ",":
                k += 2
            else:
                break
        answer = _tidy("".join(parts[j:k + 1]))
        if answer is None:
            break
        while j >= 2 and parts[j - 1] == "," and _ARABIC_DIGIT.search(parts[j - 2]):
            j -= 2  # a list of values that fills a math group: "$-4, 4$"
        if (j >= 1 and parts[j - 1] in _MATH_DELIMITERS
                and k + 1 < len(parts) and parts[k + 1] in _MATH_DELIMITERS
                and (listed := _tidy("".join(parts[j:k + 1]))) and "=" not in listed):
            return listed
        return answer
    last = None  # unbalanced brackets around the number, e.g. "(18": the number alone
    for last in _LAST_NUMBER.finditer(text, max(0, start - 1), end + 1):
        pass
    return last.group() if last is not None else None


def _closing_group(text: str) -> str | None:
    """The math group the text ends with (then at most a full stop), whole, with or without a
    digit: "$\\text{E}$", "$$f(y) = y$$", "$19, 46, \\text{ and } 82$". Inline math is one line."""
    s = text[-2 * MAX_ANSWER_CHARS:].rstrip(" \t\n.")
    for open_, close in _DELIMITERS:
        if s.endswith(close) and not s.endswith("\\" + close):
            start = s.rfind(open_, 0, len(s) - len(close))
            while start > 0 and s[start - 1] == "\\":  # "\\$" is a dollar sign
                start = s.rfind(open_, 0, start - 1)
            group = s[start + len(open_):len(s) - len(close)].strip() if start >= 0 else ""
            if open_ in ("$", "\\(") and "\n" in group:
                return None
            return group if group and _balanced(group) and "box" not in group else None
    return None  # (a box in it was rule 3's to read)


def _leading_expression(s: str) -> str | None:
    """The math that s opens with: '$18 a day' -> '18', '\\frac{1}{2} of them' -> '\\frac{1}{2}'."""
    s = s.lstrip(" \t*")
    for opener in ("\\$", "$", "\\(", "\\["):
        if s.startswith(opener):
            s = s[len(opener):]
            break
    m = _EXPRESSION_END.search(s)
    return _tidy(s[:m.start()] if m else s)


def _tidy(piece: str) -> str | None:
    """A run of math cut out of running text, as an answer: ends trimmed, brackets balanced, an
    equation read at its last side ("48 + 24 = 72" -> "72"); None if no number is left, or if it
    ends in "=" (a sum never done)."""
    s = piece.strip().lstrip("*/^=,+)]}|").rstrip("*/^,+-([{|\\").strip()
    if s.endswith("="):
        return None
    if len(s) >= 3 and s[0].isalpha() and s[1] == " " and s[2] in "0123456789":
        s = s[1:].strip()  # "a 5-pack", "I 3": an article, not a variable
    if len(s) >= 3 and s[-1].isalpha() and s[-2] == " " and s[-3] in "0123456789":
        s = s[:-2]  # "18 a" (day), "5 m": a unit or an article
    if not _balanced(s):
        return None
    s = _last_side(s)
    return s if s and len(s) <= MAX_ANSWER_CHARS and _ARABIC_DIGIT.search(s) else None


def _last_side(s: str) -> str:
    """The right-hand side of the last '=' in s (not of <=, >=, !=), or s."""
    i = len(s)
    for _ in range(16):
        i = s.rfind("=", 0, i)
        if i < 0:
            return s
        if i > 0 and s[i - 1] in "<>!=" or s.startswith("=", i + 1):
            continue
        return s[i + 1:].strip() or s  # "6 - 7 =" states no value
    return s


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _unmatched(s: str) -> tuple[bool, bool]:
    """Whether s closes a bracket it did not open, and whether it opens one it does not close."""
    depth = low = 0
    for m in _BRACKET.finditer(s):
        depth += 1 if m.group() in ("(", "[", "\\{") else -1
        low = min(low, depth)
    return low < 0, depth > low


# --- Comparing answers: _normalize, the value parser, _key, _same, math_equal ---------------------

_UNICODE = (("\u2212", "-"), ("\u2013", "-"), ("\u00b0", ""), ("\u03c0", "\\pi"),
            ("\u00d7", "\\times"), ("\u00f7", "\\div"), ("\u221a", "\\sqrt"), ("\u00a0", " "),
            ("\u2248", "\\approx"), ("\u00b7", "\\cdot"), ("\u00b2", "^2"),
            ("\u00b3", "^3"), ("\u221e", "\\infty"), ("\u2265", ">="), ("\u2264", "<="),
            ("\u2260", "!="), ("\u20ac", ""), ("\u00a3", ""), ("\u00a5", ""))  # currency as "$"
_SPELLINGS = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"),
              ("\\dbinom", "\\binom"), ("\\tbinom", "\\binom"), ("bmatrix", "pmatrix"))
_DROP = ("\\$", "$", "\\%", "%", "^{\\circ}", "^\\circ", "\\circ", "\\degree", "\\displaystyle")
_LATEX_NOISE = re.compile(r"(?<!\\)\\(?:[,;:! ()\[\]]|q?quad\b|left\b|right\b)")
_SIGNIFICANT = re.compile(r"\d+(?:\.\d+)?")  # the digits an approximation shows
# an operation on numbers: "21\\div 5", "9*3", "21/312500"
_ARITHMETIC = re.compile(r"(?<=[\d}).])(?:[-+*/^!]|\\(?:cdot|times|div)(?![A-Za-z]))")
_DOUBLED_BACKSLASH = re.compile(r"(?<!\\)\\\\(?=[A-Za-z]{2})")  # "\\\\frac" escaped twice
# one spelling per relation: ">=", "\\geq", "\\geqslant" are "\\ge"; "\\lt" is "<"
_RELATION = re.compile(r"\\(?:geq?|leq?|neq?|geqslant|leqslant|gt|lt)(?![A-Za-z])")
_RELATIONS = {"ge": ">=", "le": "<=", "ne": "!=", "gt": ">", "lt": "<"}
_INEQUALITY = re.compile(r"([<>]=?)")
_ARRAY = re.compile(r"[(\[]?\\begin\{array\}\{[^{}]{0,32}\}(.*?)\\end\{array\}[)\]]?", re.DOTALL)
_THOUSANDS_BRACE = re.compile(r"\{\s{0,2},\s{0,2}\}")  # "1{,}000", "14 {, }916"
# one-character arguments braced: "\\frac34" is "\\frac{3}{4}", "\\sqrt3" is "\\sqrt{3}"
_TWO_ARGS = re.compile(r"\\(frac|binom)(\{[^{}]{0,64}\}|\w)(\{[^{}]{0,64}\}|\w)")
_ONE_ARG = re.compile(r"\\sqrt(\w)")
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox"
                      r"|operatorname|boxed|fbox)\s{0,4}\{|[{}]")
_TEXT_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\{\s{0,4}[A-Za-z][A-Za-z ]{0,30}\}"
                        r"(?:\^\{?[23]\}?)?\s{0,4}\.?\s{0,4}\Z")
_SCALE = r"(?:hundred|thousand|(?:m|b|tr)illion|dozen|score|squared|cubed|times)\b"  # not units
_WORD_UNIT = re.compile(rf"\s(?!{_SCALE})"
                        r"(?:[A-Za-z]{2,24}|[A-Za-z](?=\^\{?[23]))"
                        r"(?:\^\{?[23]\}?)?\s{0,4}\.?\s{0,4}\Z")
_ARTICLE_UNIT = re.compile(r"\s(?:a|an|per)\s{0,4}\Z")  # "18 a day" once "day" is gone
_THIN_THOUSANDS = re.compile(r"(?<=\d),\s{0,2}\\!\s{0,2}(?=\d{3}(?!\d))")  # "11,\! 111,\! 100"
_MEMBER_OF = re.compile(r"[A-Za-z]\s{0,4}\\in(?![A-Za-z])\s{0,4}")  # "x \in [-2,7]"
_BRACED_SUBSCRIPT = re.compile(r"_\{(\w{1,12})\}")  # "4210_{5}" is "4210_5"
_CHOOSE = re.compile(r"\{\s{0,4}(\w{1,12})\s{0,4}\\choose\s{0,4}(\w{1,12})\s{0,4}\}")
_AND_OR = re.compile(r",?\s{0,8}(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])\s{0,8}")  # "(1,2)or(2,1)"
_COMMA_SPACE = re.compile(r",\s+")
_GROUPED = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_GROUPED_IN_BRACES = re.compile(r"\{([-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?)\}")
# a name: letters, \commands, brackets, "|", ":" and subscripts; no digit outside a subscript, no
# operator: "x", "AB", "f(x)", "(p,q)", "V_1:V_2", "|AB|", "\frac{NO}{BO}"; not "2x", "x^2", "a+b"
# (a \command and a subscript are read whole, so a name splits one way only: no backtracking)
_NAME = r"(?=[^=]*[A-Za-z])(?:[A-Za-z|:'()\[\]{},]|\\[A-Za-z]+(?![A-Za-z])|_\w{1,12}(?!\w))+?"
_LABEL = re.compile(rf"{_NAME}=(?!=)")
_LABELLED = re.compile(rf"({_NAME})=([^=]+)")
_NAME_ONLY = re.compile(_NAME)
_PLAIN_EQUALS = re.compile(r"(?<![<>!=])=(?!=)")
_CHOICE = re.compile(r"\(([A-Z])\)")
_WORD = re.compile(r"[A-Za-z]{2,}")
_DIGIT = re.compile(r"\d")


def _unwrap(s: str) -> str:
    """Drop \\text{...}-like wrappers, keeping their content (one linear pass; unbalanced input is
    left as it is)."""
    if "\\" not in s:
        return s
    out, stack, last = [], [], 0
    for m in _WRAPPER.finditer(s):
        token = m.group()
        if token == "{":
            stack.append(False)
        elif token == "}":
            if stack and stack.pop():
                out.append(s[last:m.start()])
                last = m.end()
        else:
            stack.append(True)
            out.append(s[last:m.start()])
            last = m.end()
    out.append(s[last:])
    return "".join(out)


def _strip_units(s: str) -> str:
    """Drop trailing unit words after a number: '18 dollars', '5 \\text{ cm}^2',
    '164\\pi square feet'."""
    stripped = False
    for _ in range(4):
        tail = s[-64:]
        m = (_TEXT_UNIT.search(tail) or _WORD_UNIT.search(tail)
             or (stripped and _ARTICLE_UNIT.search(tail)))
        if not m:
            break
        head = s[:len(s) - len(tail) + m.start()]
        if not _DIGIT.search(head):
            break  # a word answer such as "New York", not a unit
        s, stripped = head, True
    return s


def _normalize(s: str) -> str:
    """The documented normalisation (module docstring); '' for an unusable answer."""
    if len(s) > MAX_ANSWER_CHARS:
        return ""
    if _SIMPLE.fullmatch(s):
        return s  # a plain number ("72", "-0.5") is its own normal form
    s = s.replace("\x00", "")  # (the placeholder of the whitespace step below)
    if not s.isascii():
        for a, b in _UNICODE:
            if a in s:
                s = s.replace(a, b)
    if "\\\\" in s:
        s = _DOUBLED_BACKSLASH.sub(r"\\", s)
    if ("\\boxed" in s or "\\fbox" in s) and isinstance(boxed := boxed_answer(s), str):
        s = boxed  # "\\boxed{1}\\boxed{2}": the list "1, 2" (rule 3)
    for a in _DROP:
        if a in s:
            s = s.replace(a, "")
    if "\\!" in s:  # before _LATEX_NOISE drops "\\!": "11,\\! 111" would be the list "11, 111"
        s = _THIN_THOUSANDS.sub(",", s)
    if "\\" in s:
        s = _LATEX_NOISE.sub("", s)
        for a, b in _SPELLINGS:
            if a in s:
                s = s.replace(a, b)
    if "{" in s:
        s = _THOUSANDS_BRACE.sub(",", s)
    if "{array}" in s:
        s = _ARRAY.sub(r"\\begin{pmatrix}\1\\end{pmatrix}", s)
    if "\\g" in s or "\\l" in s or "\\n" in s:  # \\ge, \\leq, \\neq, \\lt, ...
        s = _RELATION.sub(lambda m: _RELATIONS.get(m.group()[1:3], m.group()), s)
    s = s.strip()
    if m := _MEMBER_OF.match(s):
        s = s[m.end():]
    if "\\choose" in s:
        s = _CHOOSE.sub(r"\\binom{\1}{\2}", s)
    if "_{" in s:
        s = _BRACED_SUBSCRIPT.sub(r"_\1", s)
    if s.startswith("\\approx"):
        s = s[7:]
    s = _strip_units(_unwrap(_strip_units(s)))  # units in \\text{} first, then bare unit words
    s = _AND_OR.sub(", ", s)
    # whitespace dropped, but "a, b" kept apart from "1,000"
    s = "".join(_COMMA_SPACE.sub(",\x00", s).split()).replace("\x00", " ")
    s = s.rstrip(".;").strip()
    if s[:1] == "{" and _brace_group(s, 0) == s[1:-1]:
        s = s[1:-1]  # "{1,2,3}": LaTeX's grouping braces print nothing (a set is "\\{...\\}")
    if "\\frac" in s or "\\binom" in s or "\\sqrt" in s:
        s = _ONE_ARG.sub(r"\\sqrt{\1}", _TWO_ARGS.sub(_braced_args, s))
    if "=" in s:  # labels first: "x = 1,000" leaves the grouped number to the line below
        s = _unlabelled(s)
    if _GROUPED.fullmatch(s):
        s = s.replace(",", "")
    elif "," in s and "{" in s:
        s = _GROUPED_IN_BRACES.sub(lambda m: "{" + m.group(1).replace(",", "") + "}", s)
    m = _CHOICE.fullmatch(s)
    if m:
        s = m.group(1)
    elif _WORD.fullmatch(s):
        s = s.lower()
    elif "<" in s or ">" in s:
        s = _one_way(s)
    return s


def _one_way(relation: str) -> str:
    """A relation read one way: "3 > y" is "y < 3"; a name between two bounds is an interval:
    "0 < f(x) < 1" is "(0,1)", "7 >= x > -2" is "(-2,7]"."""
    rel = _INEQUALITY.split(relation)
    if len(rel) == 3 and rel[1][0] == ">":
        return rel[2] + "<" + rel[1][1:] + rel[0]
    if len(rel) == 5 and rel[1][0] == rel[3][0] and _NAME_ONLY.fullmatch(rel[2]):
        low, low_op, _, high_op, high = rel if rel[1][0] == "<" else rel[::-1]
        return ("[" if low_op[1:] else "(") + low + "," + high + ("]" if high_op[1:] else ")")
    return relation


def _braced_args(m: re.Match) -> str:
    return "\\" + m.group(1) + "".join(a if a[0] == "{" else "{" + a + "}" for a in m.group(2, 3))


def _unlabelled(s: str) -> str:
    """The values a name labels: "x=5", "f(x)=1", "(p,q)=(3,2)", "n=1,2,3" give what follows the
    name; "x=2, x=3" (one name's values) the list "2, 3". Different names stay: "AB=4, CD=5" is
    compared name by name (_same_labels)."""
    items = [item for part in _split_top(s, ";") for item in _split_top(part, ",")]
    labels = [_LABELLED.fullmatch(item.strip()) for item in items]
    if len(items) > 1 and all(labels) and len({m.group(1) for m in labels}) == 1:
        return ", ".join(m.group(2) for m in labels)
    chain = len(items) == 1 and len(_PLAIN_EQUALS.findall(s)) > 1  # "z = 1 + 1 = 2" states 2
    if (m := _LABEL.match(s)) and not any(labels[1:]):
        s = s[m.end():]
    return _last_side(s) if chain else s


class _Unevaluable(Exception):
    pass


Value = Union[Fraction, float]  # Fraction: exact rational; float: has an irrational part
_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?|\.(\d+)")
_SCI = re.compile(r"[eE]([-+]?\d{1,4})(?![\d])")
_SIMPLE = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)")
_INT_ARG = re.compile(r"\d{1,30}\}")
_ROOT_INDEX = re.compile(r"([2-9])\]")


def _checked(v: Value) -> Value:
    if isinstance(v, Fraction):
        if v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS:
            raise _Unevaluable
    elif not math.isfinite(v) or abs(v) > 1e300:
        raise _Unevaluable
    return v


def _power(base: Value, exp: Value) -> Value:
    if isinstance(exp, Fraction) and exp.denominator == 1:
        n = exp.numerator
        if abs(n) > MAX_EXPONENT:
            raise _Unevaluable
        if isinstance(base, Fraction):
            size = max(abs(base.numerator).bit_length(), base.denominator.bit_length())
            if size * abs(n) > MAX_BITS:
                raise _Unevaluable
            return _checked(base ** n)
        return _checked(float(base) ** n)
    b, e = float(base), float(exp)  # a fractional or irrational exponent: a float result
    # b <= 0: (-8.0) ** (1/3) is a complex, log2 fails; e * log2(b): the result's bits
    if b <= 0 or abs(e) * abs(math.log2(b)) > MAX_BITS:
        raise _Unevaluable
    return _checked(b ** e)


def _root(value: Value, n: int) -> Value:
    if isinstance(value, Fraction):
        if value < 0:
            if n % 2 == 0:
                raise _Unevaluable
            return -_root(-value, n)
        num, den = _iroot(value.numerator, n), _iroot(value.denominator, n)
        if num is not None and den is not None:
            return Fraction(num, den)
    v = float(value)
    if v < 0:
        if n % 2 == 0:
            raise _Unevaluable
        return -((-v) ** (1 / n))
    return v ** (1 / n)


def _natural(v: Value) -> int:
    if not isinstance(v, Fraction) or v.denominator != 1 or v < 0:
        raise _Unevaluable
    return v.numerator


def _factorial(v: Value) -> Fraction:
    n = _natural(v)
    if n > 170:  # 171! > 2**1024; _checked bounds the rest
        raise _Unevaluable
    return _checked(Fraction(math.factorial(n)))


def _binomial(n: Value, k: Value) -> Fraction:
    """C(n, k) for naturals, bounded before computing it: C(n, k) <= n**k."""
    n, k = _natural(n), _natural(k)
    k = min(k, n - k)
    if k < 0:
        return Fraction(0)
    # n**k is k! times C(n, k) or more: a loose cut that keeps math.comb cheap, then _checked
    if k * n.bit_length() > 4 * MAX_BITS:
        raise _Unevaluable
    return _checked(Fraction(math.comb(n, k)))


def _iroot(k: int, n: int) -> int | None:
    """The exact integer n-th root of k >= 0, or None."""
    if n == 2 or k < 2:
        r = math.isqrt(k)
    else:
        # Newton in integers from above (a float guess is off by more than 1 past 2**53)
        r = 1 << -(-k.bit_length() // n)
        while (s := ((n - 1) * r + k // r ** (n - 1)) // n) < r:
            r = s
    return r if r ** n == k else None


class _Parser:
    """Recursive descent over a normalised answer. Grammar (no variables):
    expr = term {(+|-) term};  term = unary {(*|/|\\cdot|\\times|\\div) unary | power};
    unary = (-|+) unary | power;
    power = atom [!] [^ exponent];
    atom = number [mixed \\frac] | (expr) | {expr} | \\frac arg arg | \\sqrt[n] arg | \\pi
           | \\binom arg arg.
    """

    def __init__(self, s: str):
        self.s, self.i, self.depth = s, 0, 0

    def eat(self, token: str) -> bool:
        if self.s.startswith(token, self.i):
            self.i += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.eat(token):
            raise _Unevaluable

    def run(self) -> Value:
        v = self.expr()
        if self.i != len(self.s):
            raise _Unevaluable
        return v

    def expr(self) -> Value:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _Unevaluable
        v = self.term()
        while True:
            if self.eat("+"):
                v = _checked(v + self.term())
            elif self.eat("-"):
                v = _checked(v - self.term())
            else:
                break
        self.depth -= 1
        return v

    def starts_atom(self) -> bool:
        if self.i >= len(self.s):
            return False
        c = self.s[self.i]
        return (c.isdigit() or c in ".({"
                or self.s.startswith(("\\frac", "\\sqrt", "\\pi", "\\binom"), self.i))

    def term(self) -> Value:
        v = self.unary()
        while True:
            if self.eat("*") or self.eat("\\cdot") or self.eat("\\times"):
                v = _checked(v * self.unary())
            elif self.eat("/") or self.eat("\\div"):
                v = _checked(v / self.unary())
            elif self.starts_atom():  # implicit product: 2\pi, 3\sqrt{2}, (1)(2)
                v = _checked(v * self.power())
            else:
                return v

    def unary(self) -> Value:
        self.depth += 1  # "------1" recurses here
        if self.depth > MAX_NESTING:
            raise _Unevaluable
        if self.eat("-"):
            v = -self.unary()
        elif self.eat("+"):
            v = self.unary()
        else:
            v = self.power()
        self.depth -= 1
        return v

    def power(self) -> Value:
        v = self.atom()
        if self.eat("!"):
            v = _factorial(v)
        if self.eat("^"):
            if self.eat("{"):
                e = self.expr()
                self.expect("}")
            elif self.eat("-"):
                e = -self.atom()
            else:
                e = self.atom()  # ^10 reads as 10 (plain-text convention), not LaTeX's ^1 0
            v = _power(v, e)
            if self.s.startswith("^", self.i):
                raise _Unevaluable  # double superscript
        return v

    def number(self) -> Value:
        m = _NUMBER.match(self.s, self.i)
        if not m:
            raise _Unevaluable
        whole, frac = (m.group(1), m.group(2) or "") if m.group(1) else ("0", m.group(3))
        if len(whole) + len(frac) > MAX_DIGITS:
            raise _Unevaluable
        self.i = m.end()
        v = Fraction(int(whole + frac), 10 ** len(frac))
        e = _SCI.match(self.s, self.i)
        if e:
            if abs(int(e.group(1))) > MAX_EXPONENT:
                raise _Unevaluable
            self.i = e.end()
            v = _checked(v * Fraction(10) ** int(e.group(1)))
        elif not frac and self.s.startswith("\\frac", self.i):
            v = self.mixed(v)
        return v

    def mixed(self, whole: Fraction) -> Fraction:
        """2\\frac{1}{2} is the mixed number 5/2 when the fraction is a proper one of integer
        literals."""
        saved = self.i
        self.i += 5
        try:
            a, b = self.int_arg(), self.int_arg()
        except _Unevaluable:
            a = b = None
        if a is None or b is None or not 0 <= a < b:
            self.i = saved
            return whole
        return whole + Fraction(a, b)

    def int_arg(self) -> int:
        if self.eat("{"):
            m = _INT_ARG.match(self.s, self.i)
            if not m:
                raise _Unevaluable
            self.i = m.end()
            return int(m.group()[:-1])
        if self.i < len(self.s) and self.s[self.i].isdigit():
            self.i += 1
            return int(self.s[self.i - 1])
        raise _Unevaluable

    def arg(self) -> Value:
        """A command argument: {expr}, (expr), one digit (\\frac12), or a command (\\frac\\pi2)."""
        if self.eat("{"):
            v = self.expr()
            self.expect("}")
            return v
        if self.eat("("):
            v = self.expr()
            self.expect(")")
            return v
        if self.i < len(self.s) and self.s[self.i].isdigit():
            self.i += 1
            return Fraction(int(self.s[self.i - 1]))
        if self.s.startswith("\\", self.i):
            return self.atom()
        raise _Unevaluable

    def atom(self) -> Value:
        self.depth += 1
        if self.depth > MAX_NESTING or self.i >= len(self.s):
            raise _Unevaluable
        c = self.s[self.i]
        if c.isdigit() or c == ".":
            v = self.number()
        elif self.eat("(") or self.eat("{"):
            close = ")" if c == "(" else "}"
            v = self.expr()
            self.expect(close)
        elif self.eat("\\frac"):
            num = self.arg()
            v = _checked(num / self.arg())
        elif self.eat("\\sqrt"):
            n = 2
            if self.eat("["):
                m = _ROOT_INDEX.match(self.s, self.i)
                if not m:
                    raise _Unevaluable
                n, self.i = int(m.group(1)), m.end()
            v = _checked(_root(self.arg(), n))
        elif self.eat("\\pi"):
            v = math.pi
        elif self.eat("\\binom"):
            n = self.arg()
            v = _binomial(n, self.arg())
        else:
            raise _Unevaluable
        self.depth -= 1
        return v


def _evaluate(s: str) -> Value | None:
    """The value of a numeric answer, or None when it is not a bounded numeric expression."""
    # fast path: most answers are plain numbers (int() parses 3x faster than Fraction)
    if _SIMPLE.fullmatch(s):
        if len(s) > MAX_DIGITS + 2:  # (+ 2: a sign and a decimal point)
            return None
        return Fraction(s) if "." in s else Fraction(int(s))
    try:
        return _Parser(s).run()
    except (_Unevaluable, ArithmeticError, ValueError):
        return None  # ZeroDivisionError, OverflowError, a bad literal


def _split_top(s: str, sep: str) -> list[str]:
    """s split at each sep outside ()[]{} (brackets of any kind pair up: [0,3) is an interval)."""
    if sep not in s:
        return [s]
    parts, depth, last, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[last:i])
            i += len(sep)
            last = i
            continue
        i += 1
    parts.append(s[last:])
    return parts


def _encloses(s: str, width: int = 1) -> bool:
    """The bracket opening at s[0] closes at the very end of s (so "(1,2)" but not "(1)+(2)")."""
    depth = 0
    for i, c in enumerate(s[:len(s) - width]):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and i >= width - 1:
                return False
    return True


_MATRIX = re.compile(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", re.DOTALL)


def _split_list(s: str) -> list[str]:
    """The items of a list: split at ";" when it has one outside brackets ("p=5,q=2;p=7,q=2",
    "-12;-11"), else at ","."""
    parts = _split_top(s, ";")
    return parts if len(parts) > 1 else _split_top(s, ",")


def _key(s: str, depth: int = 0) -> tuple:
    """Canonical comparable form of a normalised answer."""
    if depth > 3 or not s:  # (bounded: structures nested deeper compare as text)
        return ("text", s)
    v = _evaluate(s)
    if v is not None:
        return ("exact", v) if isinstance(v, Fraction) else ("approx", v)

    def items(parts: list[str]) -> tuple | None:
        if "\\pm" in s:  # "1 \pm \sqrt{5}": its two values
            parts = [q for p in parts for q in ((p.replace("\\pm", "-"), p.replace("\\pm", "+"))
                                                if p.count("\\pm") == 1 else (p,))]
        if len(parts) > MAX_ELEMENTS:
            return None
        return tuple(_key(p.strip(), depth + 1) for p in parts)

    m = _MATRIX.fullmatch(s)
    if m:
        rows = [_split_top(row, "&") for row in _split_top(m.group(1), "\\\\")]
        if len(rows) * max(len(r) for r in rows) <= MAX_ELEMENTS:
            return ("matrix", tuple(items(r) for r in rows))
    parts = _split_top(s, "\\cup")
    if len(parts) > 1 and (keys := items(parts)) is not None:
        return ("union", keys)
    if s.startswith("\\{") and s.endswith("\\}") and len(s) >= 4 and _encloses(s, 2):
        if (keys := items(_split_list(s[2:-2]))) is not None:
            return ("set", keys)
    if s[0] in "([" and s[-1] in ")]" and len(s) >= 2 and _encloses(s):
        if (keys := items(_split_list(s[1:-1]))) is not None:
            return ("seq", s[0] + s[-1], keys)
    parts = _split_list(s)
    labels = [_LABELLED.fullmatch(p.strip()) for p in parts] if "=" in s else [None]
    if len(parts) > 1 and all(labels) and len(parts) <= MAX_ELEMENTS:
        # "AB=4, CD=5", "x=2, y=3": named values (one name's values were made a list)
        return ("labels", tuple((m.group(1), _key(m.group(2), depth + 1)) for m in labels))
    if (len(parts) > 1 or s.count("\\pm") == 1) and (keys := items(parts)) is not None:
        return ("set", keys)  # a bare list "1, 2": the solutions, in any order; "\pm 2"
    return ("text", s)


def _same(a: tuple, b: tuple) -> bool:
    """Whether the answer a (predicted) equals the answer b (gold)."""
    kind = a[0]
    if kind == "labels" or b[0] == "labels":
        return _same_labels(a, b)
    if kind == "set" and b[0] != "set" or kind != "set" and b[0] == "set":
        # a list that repeats one value is that value: "$\frac{1}{2}$, or 0.5"
        one, many = (b, a) if kind == "set" else (a, b)
        return one[0] not in ("union", "set") and all(_same(x, one) for x in many[1])
    if kind != b[0]:
        return False  # exact vs approx included: a decimal never equals a surd
    if kind in ("exact", "text"):
        return a[1] == b[1]
    if kind == "approx":
        return math.isclose(a[1], b[1], rel_tol=1e-9, abs_tol=1e-12)
    if kind == "seq":
        return a[1] == b[1] and len(a[2]) == len(b[2]) and all(map(_same, a[2], b[2]))
    if kind == "matrix":
        return len(a[1]) == len(b[1]) and all(
            len(x) == len(y) and all(map(_same, x, y)) for x, y in zip(a[1], b[1]))
    # set / union: in any order; a gold that lists each value once is a set (a value the answer
    # repeats counts once), one that repeats a value counts it (roots with multiplicity)
    preds, golds = list(a[1]), list(b[1])
    if len(_distinct(golds)) == len(golds):
        preds = _distinct(preds)
    if len(preds) != len(golds):
        return False
    for x in preds:
        for j, y in enumerate(golds):
            if _same(x, y):
                del golds[j]
                break
        else:
            return False
    return True


def _distinct(keys: list[tuple]) -> list[tuple]:
    out: list[tuple] = []
    for k in keys:
        if not any(_same(k, o) for o in out):
            out.append(k)
    return out


def _same_labels(a: tuple, b: tuple) -> bool:
    """Named values: the same names with the same values, in any order ("a_3=2, a_37=19"); a gold's
    values stated bare, in its order ("4, 5" for "AB=4, CD=5"); a predicted "x=2, y=3" is the point
    (2, 3), not the list of solutions "2, 3"."""
    if a[0] == b[0] == "labels":
        named = dict(b[1])
        return len(a[1]) == len(named) and all(
            name in named and _same(key, named[name]) for name, key in a[1])
    if b[0] == "labels" and a[0] in ("set", "seq"):
        values = a[1] if a[0] == "set" else a[2]
        return len(values) == len(b[1]) and all(_same(x, y) for x, (_, y) in zip(values, b[1]))
    if a[0] == "labels" and b[0] == "seq":
        return len(a[1]) == len(b[2]) and all(_same(x, y) for (_, x), y in zip(a[1], b[2]))
    return False


# cached: one gold meets every completion of its group, and extract_answer's checks compare the
# answers it reads again
@lru_cache(maxsize=1 << 14)
def _canonical(answer: str) -> tuple[str, tuple] | None:
    norm = _normalize(answer)
    return (norm, _key(norm)) if norm else None


def math_equal(pred: str, gold: str) -> bool:
    """Whether a predicted final answer equals the gold one (rules in the module docstring).
    Never raises on str."""
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    if len(gold) > MAX_ANSWER_CHARS:  # a worked solution given as the gold: the answer it states
        gold = extract_answer(gold) or ""
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    p, g = _canonical(pred), _canonical(gold)
    if p is None or g is None:
        return False
    if p[0] == g[0] or _same(p[1], g[1]):
        return True
    if "=" in g[0] or "\\approx" in g[0]:
        return False  # an equation is the answer: compared whole
    return any(_same(_key(side), g[1]) for side in _stated_sides(p[0]))


def _stated_sides(norm: str) -> list[str]:
    """The value an equation or approximation states: its last side ("23+16=39" -> 39); for
    "a \\approx b" b, and a too when b is a rounding of a ("\\frac{1}{3}\\approx0.33")."""
    if sum("=" in item for item in _split_top(norm, ",")) > 1:
        return []  # several equations ("x=8,y=7") state no one value
    side = _last_side(norm)
    if "\\approx" not in side:
        return [side] if side is not norm else []
    *exact, approximate = side.split("\\approx")[-2:]
    return [approximate] + [a for a in exact if a and _rounds_to(a, approximate)]


def _rounds_to(exact: str, approximate: str) -> bool:
    """Whether approximate is exact rounded to the significant digits it shows: within half a unit
    of its last digit (0.33 of 1/3; not 6.8 \\times 10^{-5} of 21/312500 = 6.72 \\times 10^{-5})."""
    a, b, shown = _evaluate(exact), _evaluate(approximate), _SIGNIFICANT.search(approximate)
    if a is None or b is None or not b or shown is None:
        return False
    digits = len(shown.group().replace(".", "").lstrip("0")) or 1
    try:
        last_digit = 10.0 ** (math.floor(math.log10(abs(float(b)))) + 1 - digits)
        # 1.001: "0.13" of 0.125 is exactly half a unit off, 0.0050000000000000044 in floats
        return abs(float(a) - float(b)) <= 0.5 * last_digit * 1.001
    except (OverflowError, ValueError):
        return False


# --- Reward ---------------------------------------------------------------------------------------


def reward(completion: str, gold: str, strict: bool = True) -> float:
    """1.0 if the completion's final answer equals gold, else 0.0.
    Strict by default (no last-number fallback)."""
    try:
        pred = extract_answer(completion, strict=strict)
        return 1.0 if pred is not None and math_equal(pred, gold) else 0.0
    except Exception:  # last line of defence: a grader bug must cost one sample, not the run (the
        return 0.0  # fuzz tests call extract_answer and math_equal directly: bugs surface there)
