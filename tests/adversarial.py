r"""Hostile model outputs for the reward: power towers, megabyte strings, deep nesting, code, and
inputs built to make a parser split or backtrack many ways. Each is scored against the gold "81"
and must score 0.0, fast, in both modes.

One list for the test that bounds each input's time (tests/test_grader.py, 50 ms cold) and the
benchmark that measures it (bench/bench_reward.py, target under 5 ms on 1 MB); the names are the
benchmark's row labels.
"""

ADVERSARIAL = {
    "power tower \\boxed{9^{9^{9^{9}}}}": "\\boxed{9^{9^{9^{9}}}}",
    "power tower after ####": "#### 9^{9^{9^{9^{9}}}}",
    "10^6 digits in \\boxed{}": "\\boxed{" + "9" * 10**6 + "}",
    "10^6 digits after ####": "#### " + "9" * 10**6,
    "10^6 digits as text": "The total is " + "9" * 10**6,
    "400 digits in \\boxed{}": "\\boxed{" + "9" * 400 + "}",
    "10^5 nested braces in \\boxed{}": "\\boxed{" + "{" * 10**5 + "81" + "}" * 10**5 + "}",
    "200 nested braces (parsed)": "\\boxed{" + "{" * 200 + "81" + "}" * 200 + "}",
    "250 nested parens (parsed)": "\\boxed{" + "(" * 250 + "81" + ")" * 250 + "}",
    "500 unary minus": "\\boxed{" + "-" * 500 + "81}",
    "exponent chain 2^2^...^2 (200)": "\\boxed{" + "2^" * 200 + "2}",
    "60 nested fractions": "\\boxed{" + "\\frac{1}{" * 60 + "2" + "}" * 60 + "}",
    "80 nested roots": "\\boxed{" + "\\sqrt{" * 80 + "2" + "}" * 80 + "}",
    "1e999999999": "\\boxed{1e999999999}",
    "__import__('os')": "\\boxed{__import__('os').system('rm -rf /')}",
    "__import__('os') bare": "__import__('os').system('rm -rf /')",
    "1 MB of \\boxed{": "\\boxed{" * (2**20 // 7),
    "1 MB of ####": "####" * (2**18),
    "1 MB of 'The answer is '": "The answer is " * (2**20 // 14),
    "1 MB of 'answer '": "answer " * (2**20 // 7),
    "1 MB of '1a' (lenient scan)": "1a" * 2**19,
    "1 MB of '<|'": "<|" * 2**19,
    "1 MB of '$' after a marker": "The answer is $" + "$" * 2**20,
    "1 MB of mixed markers": "\\boxed{1} #### 2 The answer is 3 " * 30_000,
    "1 MB of '<answer>'": "<answer>" * (2**20 // 8),
    "1 MB of 'Final Answer\\n'": "Final Answer\n" * (2**20 // 13),
    "1 MB of 'The answer is not 5 '": "The answer is not 5 " * (2**20 // 20),
    "1 MB of '$1$ and '": "$1$ and " * (2**20 // 8),
    "1 MB of '1+' (lenient scan)": "1+" * 2**19,
    "1 MB of '\\nQuestion:'": "\nQuestion:" * (2**20 // 10),
    "250-element list": "\\boxed{" + "1," * 250 + "1}",
    "120-element set of \\pi": "\\boxed{\\{" + "\\pi," * 120 + "1\\}}",
    "101-entry matrix": "\\boxed{\\begin{pmatrix}" + "1&" * 100 + "1\\end{pmatrix}}",
    "1 MB of joined boxes": "\\boxed{1}, " * (2**20 // 11),
    "1 MB of distinct joined boxes": "".join(f"\\boxed{{\\frac{{1}}{{{k}}}}}, " for k in range(60_000)),
    "1 MB of ', which is $1$'": "The answer is $1$" + ", which is $1$" * (2**20 // 14),
    "1 MB of ', and x is 1'": "The answer is 1" + ", and x is 1" * (2**20 // 12),
    "1 MB of '```'": "```" * (2**20 // 3),
    "80 x\\geq in a box (names)": "\\boxed{" + "x\\geq" * 80 + "1}",
    "100 subscripts in a box (names)": "\\boxed{" + "_abc" * 100 + "x=1}",
    "60 named values": "\\boxed{" + ",".join(f"a_{k}={k}" for k in range(60)) + "}",
    "1 MB of revisions around a box": (" Wait, 4.2" * (2**20 // 10) + "\\boxed{21 \\div 5}"
                                       + " Wait, 4.2" * 3000),
    "1 MB closing math group": "$" + "1+" * (2**19 - 1) + "1$",
    "1 MB of suppositions": "If the answer is 7, " * (2**20 // 20),
    "40 plus-minus items": "\\boxed{" + ",".join("1\\pm2" for _ in range(40)) + "}",
}
