r"""Real-looking model completions, written by hand in the forms models produce, with the verdict
each grader mode must give: (kind, completion, gold, strict reward, lenient reward).

The forms follow public evaluation outputs: Qwen2.5-Math base and instruct (CoT with \boxed,
tool-integrated with ```output blocks, few-shot "The answer is" / Minerva "Final Answer: ... I hope
it is correct."), the r1 template's <think>/<answer> tags, GSM8K's "####", Llama-3.1's "## Step n"
and "The final answer is: $\boxed{..}$". Every verdict is what a reader of the completion says
about its final answer, under the rules of grader.py's docstring: strict reads only an explicit
final-answer marker; lenient adds the last whole number or expression when there is none. None was
produced by running the grader.

kinds:
  marker      every explicit final-answer marker a model writes, right and wrong
  tags        the r1 template's <answer>...</answer>
  prose       a marker followed by prose, a tag or an equation: the answer in it, or the next rule
  whole       lenient's last number: a whole number or expression, never a piece of one
  tool        tool-integrated outputs (```python / ```output)
  turn        a completion that runs past its turn (an invented user turn, a next few-shot question)
  gold        gold forms of the official data (MATH-500, MATH): x \in [...], 11,\! 111, \binom,
              factorials
  wrong       near misses and hedges: a wrong answer is never scored right in strict mode
  boxes       several boxes that together form one answer (and a gold written as boxes)
  labels      golds that label their values: (a,b)=(2,-1), AB=9, BC=12, f(x)=4, V_1:V_2=3:8
  final       "Final Answer:" then a sentence naming the quantity in math and giving its value
  relations   >= / \geq / \ge, \lt, \neq, a relation written the other way round
  lists       ";" in and between tuples, "or" without spaces, \pm, a repeated element
  units       a unit or currency glyph glued to a number (1,250.50€, 2,400.5m²)
  latex       \cfrac, \frac34i, array matrices, 14 {, }916, an answer in escaped quotes, a gold
              with doubled backslashes
  strict      strict states no answer rather than a guessed one: arithmetic left unfinished when a
              value follows it, several values in the answer's clause, code after the answer
"""

QWEN_COT_JANET = (
    "To determine how much Janet makes every day at the farmers' market, we need to follow these steps:\n\n"
    "1. Calculate the total number of eggs laid by the ducks each day.\n"
    "2. Subtract the number of eggs Janet eats for breakfast and the number of eggs she uses to bake muffins.\n"
    "3. Multiply the remaining number of eggs by the price per egg.\n\n"
    "Step 1: The ducks lay 16 eggs per day.\n"
    "Step 2: Janet eats 3 eggs for breakfast and uses 4 eggs to bake muffins. So, the total number of eggs she "
    "uses is:\n\\[ 3 + 4 = 7 \\]\n"
    "Therefore, the number of eggs left to sell is:\n\\[ 16 - 7 = 9 \\]\n"
    "Step 3: Janet sells each egg for $2. So, the total amount of money she makes is:\n"
    "\\[ 9 \\times 2 = 18 \\]\n\n")

LLAMA_STEPS = (
    "## Step 1: Calculate the number of eggs Janet has left after breakfast and baking.\n"
    "Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins with 4, so she has "
    "16 - 3 - 4 = 9 eggs left.\n\n"
    "## Step 2: Calculate how much money Janet makes from selling the remaining eggs.\n"
    "She sells each egg for $2, so she makes 9 * $2 = $18.\n\n")

R1_THINK = (
    "<think> Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and uses 4 for muffins, so 16 - 3 - 4 = 9 "
    "eggs are left. She sells them at $2 each, so 9 * 2 = 18 dollars. </think>")

WORKED_SOLUTION = (  # a MATH solution longer than an answer, given whole as the gold
    "Factoring the denominator on the left side gives \\[ \\frac{4x}{(x-5)(x-3)} = \\frac{A}{x-3} + "
    "\\frac{B}{x-5}. \\] Then we multiply both sides of the equation by $(x - 3)(x - 5)$ to get "
    "\\[ 4x = A(x-5) + B(x-3). \\] If the linear expression $4x$ agrees with the linear expression "
    "$A(x - 5) + B(x - 3)$ at all values of $x$ besides 3 and 5, then the two expressions must agree for "
    "$x = 3$ and $x = 5$ as well. Substituting $x = 3$, we get $12 = -2A$, so $A = -6$. Likewise, we plug "
    "in $x = 5$ to solve for $B$. Substituting $x = 5$, we get $20 = 2B$, so $B = 10$. Therefore, "
    "$(A, B) = \\boxed{(-6, 10)}.$"
)

COMPLETIONS = [
    # --- marker: \boxed (last one counts), ####, "the (final) answer is", "Answer:", "Final Answer:", Minerva, Llama
    ("marker", QWEN_COT_JANET + "Janet makes \\(\\boxed{18}\\) dollars every day at the farmers' market.", "18", 1, 1),
    ("marker", QWEN_COT_JANET + "Janet makes \\(\\boxed{20}\\) dollars every day at the farmers' market.", "18", 0, 0),
    ("marker", QWEN_COT_JANET + "The final answer is \\(\\boxed{18}\\).", "18", 1, 1),
    ("marker", "We have $\\frac{14}{3}$ as a first guess, but that ignores the carry. Redoing it: "
               "$\\boxed{\\frac{16}{3}}$ is wrong too. Correcting the sign, the answer is $\\boxed{\\frac{14}{3}}$.",
     "\\frac{14}{3}", 1, 1),
    ("marker", "Correcting the sign, the answer is $\\boxed{\\frac{14}{3}}$. Checking again: $\\boxed{\\frac{16}{3}}$.",
     "\\frac{14}{3}", 0, 0),
    ("marker", LLAMA_STEPS + "The final answer is: $\\boxed{18}$", "18", 1, 1),
    ("marker", LLAMA_STEPS + "The final answer is: $\\boxed{9}$", "18", 0, 0),
    ("marker", "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day "
               "at the farmer’s market.\n#### 18", "18", 1, 1),
    ("marker", "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 9", "18", 0, 0),
    ("marker", "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4, so she has 16 - 3 - 4 = 9 left. "
               "She sells them for $2 each, so she makes 9 * 2 = 18 dollars. The answer is 18.", "18", 1, 1),
    ("marker", "First find the area: $\\pi r^2 = 25\\pi$. Then subtract the inner circle, $9\\pi$.\n"
               "Final Answer: The final answer is $16\\pi$. I hope it is correct.", "16\\pi", 1, 1),
    ("marker", "Final Answer: The final answer is $16$. I hope it is correct.", "16\\pi", 0, 0),
    ("marker", "Therefore, the final answer is: $\\boxed{\\frac{1}{2}}$. I hope it is correct.", "0.5", 1, 1),
    ("marker", "So the total distance is 3 * 60 = 180 miles.\n\n**Answer:** 180 miles", "180", 1, 1),
    ("marker", "So the total distance is 3 * 60 = 180 miles.\n\n**Answer:** 180 miles", "240", 0, 0),
    ("marker", "He runs 3 sprints 3 times a week, 60 meters each: 3 * 3 * 60 = 540.\n\n**Answer**: 540", "540", 1, 1),
    ("marker", "Adding the two parts gives the result.\n\nFinal Answer: 540", "540", 1, 1),
    ("marker", "Adding the two parts gives the result.\n\n**Final Answer**\n\\[\n\\boxed{540}\n\\]", "540", 1, 1),
    ("marker", "Adding the two parts gives the result.\n\n### Final Answer\n540 meters", "540", 1, 1),
    ("marker", "Adding the two parts gives the result.\n\n### Final Answer\n450 meters", "540", 0, 0),
    ("marker", "The answer is: $540$", "540", 1, 1),
    ("marker", "9 eggs at $2 each.\nANSWER: 18", "18", 1, 1),
    ("marker", "Checking each option, the correct answer is 18.", "18", 1, 1),
    ("marker", "Therefore, $\\boxed{18}$ is the answer.", "18", 1, 1),
    ("marker", "The answer is $\\frac{1}{2}$, or 0.5 as a decimal.", "0.5", 1, 1),
    ("marker", "So the answers are $x = 2$ and $x = 3$.", "2, 3", 1, 1),
    ("marker", "So the answers are $x = 2$ and $x = 3$.", "2", 0, 0),
    ("marker", "The answers are $2$ and $-3$.", "-3, 2", 1, 1),
    ("marker", "Solving $2x - 7 = 3$ gives $\\boxed{x = 5}$.", "5", 1, 1),
    ("marker", "It takes her $\\boxed{5 \\text{ minutes}}$.", "5", 1, 1),
    ("marker", "Each ticket costs $\\boxed{\\$18.00}$.", "18", 1, 1),
    ("marker", "The discount is $\\boxed{25\\%}$.", "25", 1, 1),
    ("marker", "### Final Answer\nThe final answer is \\(\\boxed{3\\sqrt{13}}\\).", "3\\sqrt{13}", 1, 1),
    ("marker", "In polar coordinates the point is $\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}$.",
     "\\left( 3, \\frac{\\pi}{2} \\right)", 1, 1),
    ("marker", "So she has 18 apples left.\n\\boxed{18}\n\\boxed{18}\n\\boxed{18}\n\\boxed{18}", "18", 1, 1),

    # --- tags: the r1 template
    ("tags", R1_THINK + " <answer> 18 </answer>", "18", 1, 1),
    ("tags", R1_THINK + " <answer>18</answer>", "20", 0, 0),
    ("tags", R1_THINK + "\n<answer> The answer is 18 </answer>", "18", 1, 1),
    ("tags", R1_THINK + " <answer> \\boxed{18} </answer>", "18", 1, 1),
    ("tags", R1_THINK + " <answer> 18 dollars </answer>", "18", 1, 1),
    ("tags", "<think> 2x - 7 = 3, so 2x = 10. </think> <answer> $x = 5$ </answer>", "5", 1, 1),
    ("tags", "<think> 2x - 7 = 3, so 2x = 10. </think> <answer> $x = 5$ </answer>", "10", 0, 0),
    ("tags", "<think> Two outcomes of six. </think> <answer>The final answer is $\\frac{1}{3}$.</answer>",
     "\\frac{1}{3}", 1, 1),
    ("tags", "<think> Janet keeps 16 - 3 - 4 = 9 eggs. </think> <answer> Janet has 16 - 3 (for breakfast) - 4 (for "
             "her muffins) = 9 fresh duck eggs daily. She sells her fresh duck eggs for $2 each, so she makes "
             "9 x 2 = $18 a day at the farmers’ market. </answer>", "18", 1, 1),
    ("tags", "<think> 9 eggs at $2. </think> <answer> Janet makes $18 every day. </answer>", "18", 1, 1),
    ("tags", "<think> 9 eggs at $2. </think> <answer> Janet makes $16 every day. </answer>", "18", 0, 0),
    ("tags", "<think> At first I get \\boxed{16}, but she also eats 3, not 5, so 9 eggs are sold: 9 * 2 = 18. "
             "</think> <answer> 18 </answer>", "18", 1, 1),
    ("tags", "<think> At first I get \\boxed{16}, but she also eats 3, not 5, so 9 eggs are sold: 9 * 2 = 18. "
             "</think> <answer> 18 </answer>", "16", 0, 0),
    ("tags", R1_THINK + " <answer> 18", "18", 1, 1),  # the closing tag was the stop string
    ("tags", "<think> 6 * 7 = \\boxed{42} </think> So the product is \\boxed{43}.", "42", 0, 0),  # not in reasoning
    ("tags", "<think> First \\boxed{41}? No: 6 * 7 = 42. </think> The product is \\boxed{42}.", "42", 1, 1),
    ("tags", "<think> 6 * 7 = 42, so the answer is \\boxed{42} </think> Some other text.", "42", 0, 0),
    ("tags", "<think> 6 * 7 = 42, so the answer is \\boxed{42}. Now check 6 * 7 again", "42", 0, 0),  # still open
    ("tags", "<think> reasoning process here </think> <answer> answer here </answer>", "18", 0, 0),
    ("tags", "<think> The last choice fits. </think> <answer> (C) </answer>", "\\text{(C)}", 1, 1),
    ("tags", "<think> |x - 5/2| <= 9/2 </think> <answer>x \\in [-2, 7]</answer>", "x \\in [-2,7]", 1, 1),
    ("tags", "<think> He saves 24 - 18 = 6 dollars. </think> <answer> Mark saves $6 by buying 18 flowers. "
             "</answer>", "6", 0, 1),

    # --- prose: a marker followed by a sentence, a tag or an equation
    ("prose", "So, the Answer is the solution to the equation $2x - 7 = 15$, which is $x=11$.", "11", 1, 1),
    ("prose", "So, the Answer is the solution to the equation $2x - 7 = 15$, which is $x=11$.", "15", 0, 0),
    ("prose", "She reads 23 minutes on Monday and 16 on Tuesday.\nAnswer: 23 + 16 = 39 minutes", "39", 1, 1),
    ("prose", "She reads 23 minutes on Monday and 16 on Tuesday.\nAnswer: 23 + 16 = 39 minutes", "23", 0, 0),
    ("prose", "She reads 23 minutes on Monday and 16 on Tuesday.\nAnswer: 23 + 16 = 38 minutes", "39", 0, 0),
    ("prose", "Answer: $23 + 16 = 39$ minutes", "39", 1, 1),
    ("prose", "The answer is the total number of minutes, 39.", "39", 1, 1),
    ("prose", "The final answer is that Kylar needs to pay $64 for the glasses.", "64", 1, 1),
    ("prose", "Answer: Janet makes 9 * 2 = $18 per day.", "18", 1, 1),
    ("prose", "Answer: the value of $x$ is $\\frac{5}{2}$.", "\\frac{5}{2}", 1, 1),
    ("prose", "The answer is 18.\n\nLet me double-check the answer: it is consistent with the problem.", "18", 1, 1),
    ("prose", "She has 8 - 3 = 5 apples. The answer is the number of apples she has left.", "5", 0, 1),
    ("prose", "The answer is 18, which is the number of dollars she makes.", "18", 1, 1),
    ("prose", "The answer is 18, because 9 eggs at $2 each make 9 * 2 = 18.", "18", 1, 1),
    ("prose", "The answer is: **39 minutes**", "39", 1, 1),
    ("prose", "The answer is 5 because 2 + 3 = 5.", "5", 1, 1),
    ("prose", "The answer is half of 36, which is 18.", "18", 1, 1),
    ("prose", "The answer is 1/2 of 36, which is 18.", "\\frac{1}{2}", 0, 0),
    ("prose", "The answer is $x = 5$ since $2x = 10$.", "5", 1, 1),
    ("prose", "The answer is x = 5 since 2x = 10.", "10", 0, 0),
    ("prose", "The answer is approximately 3.14.", "3.14", 1, 1),
    ("prose", "Therefore, the answer to the question is 42.", "42", 1, 1),
    ("prose", "Therefore, the answer to the question is 42.", "24", 0, 0),
    ("prose", "The answer is not 18, it's 20.", "20", 0, 1),
    ("prose", "The answer is not 18, it's 20.", "18", 0, 0),
    ("prose", "The answer is: Mark saves $6 by buying 18 flowers.", "6", 0, 1),

    # --- whole: lenient's last number is a whole number or expression
    ("whole", "There are 6 outcomes and 2 of them are favourable. Therefore, the probability is $\\frac{1}{3}$.",
     "\\frac{1}{3}", 0, 1),
    ("whole", "There are 6 outcomes and 2 of them are favourable. Therefore, the probability is $\\frac{1}{3}$.",
     "3", 0, 0),
    ("whole", "By the Pythagorean theorem the side is $\\sqrt{4 + 113} = 3\\sqrt{13}$ units.", "3\\sqrt{13}", 0, 1),
    ("whole", "By the Pythagorean theorem the side is $\\sqrt{4 + 113} = 3\\sqrt{13}$ units.", "13", 0, 0),
    ("whole", "Each draw is independent, so the probability of three heads is 1/8.", "\\frac{1}{8}", 0, 1),
    ("whole", "Each draw is independent, so the probability of three heads is 1/8.", "8", 0, 0),
    ("whole", "So the probability is\n\\[\n\\frac{1}{3}\n\\]", "\\frac{1}{3}", 0, 1),
    ("whole", "The area of the ring is $25\\pi - 9\\pi = 16\\pi$ square units.", "16\\pi", 0, 1),
    ("whole", "Thus $x = -\\frac{3}{4}$.", "-\\frac{3}{4}", 0, 1),
    ("whole", "He buys 18 flowers at $1.50 each, and the bouquet would cost $33, so he saves 33 - 27 = 6 dollars.",
     "6", 0, 1),
    ("whole", "She sold 48/2 = <<48/2=24>>24 clips in May.", "24", 0, 1),
    ("whole", "So she saves $\\$120$ after 2 months.", "2", 0, 1),
    ("whole", "The store sells the shirt at a 25% discount.", "25", 0, 1),
    ("whole", "So she makes $18.00 per day.", "18", 0, 1),
    ("whole", "Adding everything, the total is 1,234,567.", "1234567", 0, 1),
    ("whole", "The floor is 5 m by 5 m, so its area is 25 m^2.", "25", 0, 1),
    ("whole", "The floor is 5 m by 5 m, so its area is 25 cm\u00b2.", "25", 0, 1),
    ("whole", "Let's compute: 16 - 3 = 13, then 13 - 4 =", "9", 0, 0),
    ("whole", "So, after all the steps, 2^{10} = 1024.", "1024", 0, 1),
    ("whole", "x = 3, y = -4", "-4", 0, 1),
    ("whole", "So the point of intersection is $(2, 3)$.", "(2,3)", 0, 1),
    ("whole", "So the point of intersection is $(2, 3)$.", "3", 0, 0),
    ("whole", "The roots are $-4, 4$.", "-4, 4", 0, 1),
    ("whole", "The roots are $-4, 4$.", "4", 0, 0),
    ("whole", "Thus $x \\in [0, \\infty)$.", "[0,\\infty)", 0, 1),
    ("whole", "The area of the label is 440 \\text{ cm}^2.", "440", 0, 1),
    ("whole", "Hence $\\mathbf{M} = \\begin{pmatrix} 2 & 0 \\\\ -3 & 5 \\end{pmatrix}$.",
     "\\begin{pmatrix} 2 & 0 \\\\ -3 & 5 \\end{pmatrix}", 0, 1),
    ("whole", "On each item she loses $-\\$0.50$.", "-\\$0.50", 0, 1),
    ("whole", "The ratio of boys to girls is 3:1.", "3:1", 0, 1),
    ("whole", "Comparing the five speeds, the fastest is $\\text{E}$.", "\\text{E}", 0, 1),  # a closing group
    ("whole", "Comparing the five speeds, the fastest is $\\text{E}$.", "D", 0, 0),
    ("whole", "Substituting back, every solution has the form\n$$f(x) = 2x$$", "f(x)=2x", 0, 1),
    ("whole", "So the three ages are $19, 46, \\text{ and } 82$.", "19, 46, 82", 0, 1),
    ("whole", "Both sides agree, so $x <= 2$ is our answer.", "x \\leq 2", 0, 1),  # a relation, whole
    ("whole", "Both sides agree, so $x <= 2$ is our answer.", "2", 0, 0),

    # --- tool: tool-integrated reasoning
    ("tool", "```python\ndef money_per_day():\n    eggs = 16 - 3 - 4\n    return eggs * 2\n\nprint(money_per_day())\n"
             "```\n```output\n18\n```\nJanet makes $\\boxed{18}$ dollars every day at the farmers' market.",
     "18", 1, 1),
    ("tool", "```python\nfrom sympy import Rational\nprint(Rational(2, 6))\n```\n```output\n1/3\n```\n",
     "\\frac{1}{3}", 0, 1),
    ("tool", "```python\nprint(23 + 16)\n```\n```output\n39\n```\nThe answer is 39.", "39", 1, 1),
    ("tool", "```python\nprint(x)\n```\n```output\nNameError: name 'x' is not defined\n```\nLet's define x first."
             "\n```python\nx = 10 / 2\nprint(x)\n```\n```output\n5.0\n```\nThe final answer is $\\boxed{5}$.",
     "5", 1, 1),
    ("tool", "```python\nprint('The answer is', 14 / 3)\n```\n```output\nThe answer is 4.666666666666667\n```\n"
             "The exact value is $\\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}", 1, 1),
    ("tool", "```python\nprint('The answer is', 14 / 3)\n```\n```output\nThe answer is 4.666666666666667\n```\n",
     "\\frac{14}{3}", 0, 0),

    # --- turn: the graded text ends where the model's turn ended
    ("turn", QWEN_COT_JANET + "Therefore, the answer is \\(\\boxed{18}\\).<|im_end|>\n<|im_start|>user\nWhat if she "
             "sold them for $3 each?<|im_end|>\n<|im_start|>assistant\nThen she makes \\(\\boxed{27}\\).", "18", 1, 1),
    ("turn", QWEN_COT_JANET + "Therefore, the answer is \\(\\boxed{18}\\).<|im_end|>\n<|im_start|>user\nWhat if she "
             "sold them for $3 each?<|im_end|>\n<|im_start|>assistant\nThen she makes \\(\\boxed{27}\\).", "27", 0, 0),
    ("turn", "Janet makes \\(\\boxed{18}\\) dollars.\nuser\nWhat if she sold them for $3 each?\nassistant\nThen "
             "she makes \\(\\boxed{27}\\).", "18", 1, 1),  # ChatML decoded with its special tokens skipped
    ("turn", "Janet makes \\(\\boxed{18}\\) dollars.\nuser\nWhat if she sold them for $3 each?\nassistant\nThen "
             "she makes \\(\\boxed{27}\\).", "27", 0, 0),
    ("turn", "Therefore, the answer is \\(\\boxed{18}\\).<|im_start|>user\nAnd with 20 eggs?<|im_start|>assistant\n"
             "\\(\\boxed{26}\\)", "26", 0, 0),
    ("turn", "She makes 9 * 2 = 18 dollars. The answer is 18.\n\nQuestion: A robe takes 2 bolts of blue fiber and half "
             "that much white fiber. How many bolts in total does it take?\nAnswer: 2 + 1 = 3. The answer is 3.",
     "18", 1, 1),
    ("turn", "She makes 9 * 2 = 18 dollars. The answer is 18.\n\nQuestion: A robe takes 2 bolts of blue fiber and half "
             "that much white fiber. How many bolts in total does it take?\nAnswer: 2 + 1 = 3. The answer is 3.",
     "3", 0, 0),
    ("turn", "She makes 9 * 2 = 18 dollars.\n\nQuestion: A robe takes 2 bolts of blue fiber and half that much white "
             "fiber. How many bolts in total?\nAnswer: 2 + 1 = 3", "3", 0, 0),
    ("turn", "Final Answer: The final answer is $7$. I hope it is correct.\n\nProblem:\nFind the remainder when 29 is "
             "divided by 17.\n\nSolution:\n$29 = 17 + 12$.\nFinal Answer: The final answer is $12$. I hope it is "
             "correct.", "7", 1, 1),
    ("turn", "Final Answer: The final answer is $7$. I hope it is correct.\n\nProblem:\nFind the remainder when 29 is "
             "divided by 17.\n\nSolution:\n$29 = 17 + 12$.\nFinal Answer: The final answer is $12$. I hope it is "
             "correct.", "12", 0, 0),
    ("turn", "The answer is 18.\n\nHuman: Thanks! And if she sells 10 eggs?\n\nAssistant: Then she makes "
             "$\\boxed{20}$.", "20", 0, 0),
    ("turn", "So she makes 18 dollars.\nUser: what about 10 eggs?\nAssistant: 20 dollars.", "18", 0, 1),
    ("turn", LLAMA_STEPS + "The final answer is: $\\boxed{18}$<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
             "Now do it for 20 eggs.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
             "The final answer is: $\\boxed{26}$", "18", 1, 1),
    ("turn", "The answer is 18.</s>[INST] And for 20 eggs? [/INST] The answer is 26.", "26", 0, 0),
    ("turn", "Question: How much does Janet make?\nAnswer: She makes 9 * 2 = 18 dollars. The answer is 18.", "18", 1, 1),
    ("turn", "\\boxed{5}\n\nQ: What is 2 + 2?\nA: \\boxed{4}", "5", 1, 1),

    # --- gold: forms of the official answers
    ("gold", "So $|x - 5/2| \\le 9/2$, and the solution set is $\\boxed{[-2, 7]}$.", "x \\in [-2,7]", 1, 1),
    ("gold", "The answer is $\\boxed{x \\in [-2,7]}$.", "x \\in [-2,7]", 1, 1),
    ("gold", "So $|x - 5/2| < 9/2$, and the solution set is $\\boxed{(-2, 7)}$.", "x \\in [-2,7]", 0, 0),
    ("gold", "Multiplying out gives $\\boxed{11111111100}$.", "11,\\! 111,\\! 111,\\! 100", 1, 1),
    ("gold", "Multiplying out gives $\\boxed{11,111,111,100}$.", "11,\\! 111,\\! 111,\\! 100", 1, 1),
    ("gold", "Multiplying out gives $\\boxed{11,111,111,000}$.", "11,\\! 111,\\! 111,\\! 100", 0, 0),
    ("gold", "The number of 9-element subsets is $\\binom{34}{9} = \\boxed{52451256}$.", "\\binom{34}{9}", 1, 1),
    ("gold", "The number of 9-element subsets is $\\boxed{\\binom{34}{9}}$.", "52451256", 1, 1),
    ("gold", "The number of 9-element subsets is $\\boxed{\\dbinom{34}{9}}$.", "\\binom{34}{9}", 1, 1),
    ("gold", "So $(A, B) = \\boxed{(-6, 10)}$.", WORKED_SOLUTION, 1, 1),  # a worked solution as the gold
    ("gold", "So $(A, B) = \\boxed{(10, -6)}$.", WORKED_SOLUTION, 0, 0),
    ("gold", "Thus $\\boxed{5}$.", "z = 2 + 3 = 5", 1, 1),  # a gold that works its value out
    ("gold", "Thus $\\boxed{3}$.", "z = 2 + 3 = 5", 0, 0),
    ("gold", "The number of 9-element subsets is $\\boxed{52451265}$.", "\\binom{34}{9}", 0, 0),
    ("gold", "The number of orders is $\\boxed{5!}$.", "120", 1, 1),
    ("gold", "He sold 20 + 52 = 72 clips in all.\n####\n72", "72", 1, 1),
    ("gold", "He sold 20 + 52 = 72 clips in all.\n#### \n72", "27", 0, 0),
    ("gold", "The total is $\\boxed{32348}$ dollars.", "\\$32,\\!348", 1, 1),
    ("gold", "In base 5 the number is $\\boxed{4210_5}$.", "4210_{5}", 1, 1),
    ("gold", "Each angle is $\\boxed{\\frac{270}{7}^\\circ}$.", "\\frac{270}7\\text{ degrees}", 1, 1),
    ("gold", "The area is $\\boxed{864}$ square inches.", "864 \\mbox{ inches}^2", 1, 1),
    ("gold", "So it is $\\boxed{111111111}$.", "111, \\! 111, \\! 111", 1, 1),

    # --- wrong: near misses, hedges, approximations, pieces
    ("wrong", "The probability is $\\boxed{\\frac{1}{3}}$.", "3", 0, 0),
    ("wrong", "The side length is $\\boxed{3\\sqrt{13}}$.", "13", 0, 0),
    ("wrong", "It is either $\\boxed{18}$ or $\\boxed{19}$.", "18", 0, 0),
    ("wrong", "It is $\\boxed{18 \\text{ or } 19}$.", "18", 0, 0),
    ("wrong", "The answer is 18 or 19.", "18", 0, 0),
    ("wrong", "The answer is $\\boxed{0.33}$.", "\\frac{1}{3}", 0, 0),
    ("wrong", "The answer is $\\boxed{3.14}$.", "\\pi", 0, 0),
    ("wrong", "So $x \\le 5$. The answer is $x \\le 5$.", "5", 0, 0),
    ("wrong", "The answer is $x^2 = 4$.", "2", 0, 0),
    ("wrong", "The answer is $\\boxed{50\\%}$.", "0.5", 0, 0),
    ("wrong", "Answer: 2x = 10", "5", 0, 0),
    ("wrong", "I think 18 is the answer.", "18", 0, 1),
    ("wrong", "The answer is at least 5.", "5", 0, 1),  # strict: a bound is no answer; lenient: the last number
    ("wrong", "The answer is between 10 and 20.", "10", 0, 0),
    ("wrong", "The answer is \\boxed{}. She has 18 apples.", "18", 0, 0),
    ("wrong", "#### 1. Count the eggs\nShe has 16 - 3 - 4 = 9 eggs.", "1", 0, 0),
    ("marker", "#### Step 1: Count the eggs\nShe has 16 - 3 - 4 = 9 eggs.\n#### 9", "9", 1, 1),

    # --- boxes: several boxes that together form one answer
    ("boxes", "Factoring gives $(x-3)(x+5)=0$, so the solutions are $\\boxed{3}$ and $\\boxed{-5}$.", "-5, 3", 1, 1),
    ("boxes", "Factoring gives $(x-3)(x+5)=0$, so the solutions are $\\boxed{3}$ and $\\boxed{-5}$.", "3", 0, 0),
    ("boxes", "The line meets the parabola at $\\boxed{(1, 2)}$, $\\boxed{(4, 11)}$.", "(4,11),(1,2)", 1, 1),
    ("boxes", "Thus the vertices are \\[\\boxed{(0, 3)} \\text{ and } \\boxed{(0, -3)}\\]", "(0,3), (0,-3)", 1, 1),
    ("boxes", "Checking $x = 2$: it works, so \\boxed{2}.\n\nBut $x = -2$ works too, since $(-2)^2 = 4$. So the "
              "answer is \\boxed{-2}.", "-2", 1, 1),  # words between the boxes: the last one
    ("boxes", "Checking $x = 2$: it works, so \\boxed{2}.\n\nBut $x = -2$ works too, since $(-2)^2 = 4$. So the "
              "answer is \\boxed{-2}.", "2, -2", 0, 0),
    ("boxes", "So the total is \\boxed{12}.\n\\boxed{12}", "12", 1, 1),  # a repeated box counts once
    ("boxes", "The roots are $\\boxed{-1}$ and $\\boxed{4}$.", "\\boxed{-1}\\boxed{4}", 1, 1),

    # --- labels: golds that label their values, by a name of several letters or a function
    ("labels", "Solving the system, we find $(a, b) = \\boxed{(2, -1)}$.", "(a,b)=(2,-1)", 1, 1),
    ("labels", "Solving the system, we find $(a, b) = \\boxed{(-1, 2)}$.", "(a,b)=(2,-1)", 0, 0),
    ("labels", "So the side lengths are $\\boxed{9, 12}$.", "AB=9, BC=12", 1, 1),
    ("labels", "So the side lengths are $\\boxed{12, 9}$.", "AB=9, BC=12", 0, 0),  # the gold's order
    ("labels", "Therefore $f(x) = \\boxed{4}$ for every $x$.", "f(x)=4", 1, 1),
    ("labels", "So the ratio of the volumes is $\\boxed{3:8}$.", "V_1:V_2=3:8", 1, 1),
    ("labels", "So $m = 20$ and $n = 6$: $\\boxed{n = 6} \\quad \\text{and} \\quad \\boxed{m = 20}$", "m = 20, n = 6",
     1, 1),
    ("labels", "The solution of the system is $\\boxed{x = 3, y = 4}$.", "(3, 4)", 1, 1),
    ("labels", "The solution of the system is $\\boxed{x = 3, y = 4}$.", "3, 4", 0, 0),  # a point, not a list

    # --- final: "Final Answer:" then a sentence that names the quantity in math and gives its value
    ("final", "Final Answer: The largest $k$ is 12.", "12", 1, 1),
    ("final", "Final Answer: The largest $k$ is 12.", "13", 0, 0),
    ("final", "Final Answer: The value of $a + b$ is $\\frac{7}{2}$.", "\\frac72", 1, 1),
    ("final", "**Final Answer**\nThe number of possible values of $n$ is 6.", "6", 1, 1),
    ("final", "Final Answer: The area of $\\triangle ABC$ is 24 square units.", "24", 1, 1),
    ("final", "Final Answer: The sum of the roots of $x^2 - 5x + 6$ is 5.", "6", 0, 0),
    ("final", "Final Answer: The smallest $n$ such that $2^n > 1000$ is 10.", "10", 1, 1),

    # --- relations in other notations
    ("relations", "Therefore the solution set is $\\boxed{x \\geq 3}$.", "x >= 3", 1, 1),
    ("relations", "Therefore the solution set is $\\boxed{x \\le 3}$.", "x \\ge 3", 0, 0),
    ("relations", "The answer is $\\boxed{n \\neq 2}$.", "n != 2", 1, 1),
    ("relations", "So $\\boxed{3 < t}$.", "t > 3", 1, 1),
    ("relations", "So $\\boxed{t \\lt 3}$.", "t < 3", 1, 1),
    ("relations", "So $\\boxed{t \\leqslant 3}$.", "t \\leq 3", 1, 1),
    ("relations", "So $\\boxed{t > 3}$.", "t < 3", 0, 0),
    ("relations", "Both bounds hold, so $\\boxed{-2 < x < 7}$.", "(-2, 7)", 1, 1),  # an interval
    ("relations", "Both bounds hold, so $\\boxed{-2 < x < 7}$.", "[-2, 7]", 0, 0),
    ("relations", "Both bounds hold, so $\\boxed{7 \\geq x > -2}$.", "(-2, 7]", 1, 1),

    # --- lists: separators and notations
    ("lists", "The solutions are $\\boxed{(1;2;0)}$ and $\\boxed{(2;1;0)}$.", "(1,2,0),(2,1,0)", 1, 1),
    ("lists", "The integers are $\\boxed{-3;-1;2}$.", "\\{-3, -1, 2\\}", 1, 1),
    ("lists", "The integers are $\\boxed{-3;-1}$.", "\\{-3, -1, 2\\}", 0, 0),
    ("lists", "Hence $x = \\boxed{\\pm 7}$.", "-7, 7", 1, 1),
    ("lists", "Hence $x = \\boxed{\\pm 7}$.", "7", 0, 0),
    ("lists", "The pairs are $\\boxed{(2,9)or(9,2)}$.", "(9,2), (2,9)", 1, 1),
    ("lists", "The pairs are $\\boxed{(2, 9), (9, 2), (2, 9)}$.", "(9,2),(2,9)", 1, 1),  # listed twice
    ("lists", "The pairs are $\\boxed{(2, 9), (9, 2), (2, 8)}$.", "(9,2),(2,9)", 0, 0),
    ("lists", "The primes are $$\\boxed{{2, 3, 5, 7}}$$", "2, 3, 5, 7", 1, 1),  # grouping braces print nothing
    ("lists", "The primes are $$\\boxed{{2, 3, 5}}$$", "2, 3, 5, 7", 0, 0),

    # --- units: a unit or currency glyph glued to a number
    ("units", "So the price comes to 1,250.50\u20ac.", "1250.5", 0, 1),
    ("units", "The garden covers 2,400.5m\u00b2.", "2400.5", 0, 1),
    ("units", "The garden covers 2,400.5m\u00b2.", "2400", 0, 0),
    ("units", "The answer is 75\u00a3.", "75", 1, 1),
    ("units", "Total: \\boxed{1,250.50\u20ac}", "1250.5", 1, 1),
    ("units", "It costs 30\u20ac and weighs 2 kg.", "30", 0, 0),

    # --- latex: variants of the same answer
    ("latex", "So $x = \\boxed{\\cfrac{5}{8}}$.", "\\frac58", 1, 1),
    ("latex", "So $z = \\boxed{\\frac34i}$.", "\\frac{3}{4}i", 1, 1),
    ("latex", "So $z = \\boxed{\\frac43i}$.", "\\frac{3}{4}i", 0, 0),
    ("latex", "The matrix is $\\boxed{\\left[\\begin{array}{cc} 1 & 2 \\\\ 0 & 1 \\end{array}\\right]}$.",
     "\\begin{pmatrix} 1 & 2 \\\\ 0 & 1 \\end{pmatrix}", 1, 1),
    ("latex", "Final Answer: The final answer is $14 {, }916$. I hope it is correct.", "14916", 1, 1),
    ("latex", "Final Answer: The final answer is \\\"$12 $ and $13 $\\\". I hope it is correct.", "12\\text{ and }13",
     1, 1),
    ("latex", "So the slope is $\\boxed{\\frac{3}{5}}$.", "\\\\frac{3}{5}", 1, 1),  # a gold escaped twice
    ("latex", "So the slope is $\\boxed{\\frac{3}{5}}$.", "\\\\frac{5}{3}", 0, 0),

    # --- strict: no answer rather than a guessed one
    ("strict", "The correct answer should be $18 \\div (2 \\cdot 3^2) = 18 \\div 18$, which is $0$.", "1", 0, 0),
    ("strict", "The correct answer should be $18 \\div (2 \\cdot 3^2) = 18 \\div 18$, which is $1$.", "1", 1, 1),
    ("strict", "<answer> Maya has $12$ marbles, Leo has $7$ marbles and they play two rounds </answer>", "7", 0, 0),
    ("strict", "The answer is $12$ for Maya and $7$ for Leo.", "7", 0, 0),
    ("strict", "The answer is 18, so Janet makes $18 every day.", "18", 1, 1),  # one value, said twice
    ("strict", "So the final answer is 18 \u00f7 18, which is 0.", "1", 0, 0),  # no math delimiters either
    ("strict", "So the final answer is 18 \u00f7 18, which is 1.", "1", 1, 1),
    ("strict", "So the answer is: 15.\n```python\n# double-check\nprint(3 * 5)\n", "15", 0, 1),
    ("strict", "```python\nprint(3 * 5)\n```\n```output\n15\n```\nSo the answer is: 15.", "15", 1, 1),
    ("strict", "The answer is $\\frac{2}{3}$, which is approximately $0.67$.", "\\frac23", 1, 1),
    ("strict", "The answer is $\\frac{2}{3}$, which is approximately $0.67$.", "0.67", 1, 1),
    ("strict", "The answer is $21 \\div 312500 \\approx 0.0000677$.", "0.0000672", 0, 0),
    ("strict", "The answer is 18. Wait, the answer is not 18 but 20.", "18", 0, 0),
    ("strict", "Answer: She keeps 16 - 3 - 4 = 9 eggs and earns 9 * 2 = 18 dollars.", "9", 0, 0),
    ("strict", "<answer> She keeps 16 - 3 - 4 = 9 eggs, so she earns 9 * 2 = $18. </answer>", "18", 1, 1),
    # arithmetic left undone, then its value in the next sentence or after the box
    ("strict", "The answer is $21 \\div 312500$. Computing it, this is $0.00006768$.", "0.0000672", 0, 0),
    ("strict", "The answer is $21 \\div 312500$. Computing it, this is $0.00006768$.", "0.00006768", 0, 1),
    ("strict", "So the probability is $\\boxed{21 \\div 312500} = 0.00006768$", "0.0000672", 0, 0),
    ("strict", "Thus $\\boxed{12 - 6\\sqrt{3}} \\approx 1.61$.", "12 - 6\\sqrt{3}", 1, 1),  # a closed form
    # an answer the text after it revises, supposes, or replaces
    ("strict", "The answer is 7.\n\nWait, let me double-check: 3 + 5 = 8. So actually", "7", 0, 0),
    ("strict", "Final Answer: The final answer is $7$. I hope it is correct.\n\nActually, it is $8$.", "7", 0, 0),
    ("strict", "The answer is $\\boxed{7}$.\n\nHmm, I recounted and got 8.", "7", 0, 0),
    ("strict", "Suppose the answer is 7. Then 3 + 5 = 8, a contradiction.", "7", 0, 0),
    ("strict", "So $x = \\boxed{5}$. Then $y = 2x = 10$, so the answer is 10.", "5", 0, 0),
    ("strict", "So $x = \\boxed{5}$. Then $y = 2x = 10$, so the answer is 10.", "10", 0, 1),
    ("strict", "The answer is: $\\boxed{5}$\n\n```python\nprint(2 * 5)\n```\n```output\n10\n```\n"
               "The answer is: $\\boxed{10}$", "10", 1, 1),
    # a bound, a scale word, or several labelled values: no single answer
    ("strict", "So she needs 7 or more boxes. The answer is 7 or more.", "7", 0, 1),  # lenient: rule 6
    ("strict", "The answer is 7 thousand.", "7", 0, 0),
    ("strict", "The answer is $x = 8$ and $y = 7$.", "7", 0, 0),
    ("strict", "So John has $\\boxed{8}$ s'mores and DeSean has $\\boxed{7}$ s'mores.", "7", 0, 1),
    ("strict", "First I got $\\boxed{16}$, but she eats 3 more, so she sells $\\boxed{9}$.", "9", 1, 1),
    ("strict", "The correct answer should be $21 \\div (2^2 \\cdot 5^7) = 21 \\div 312500$.\nWhich is "
               "$0.00006768$", "0.0000672", 0, 0),
    ("strict", "The answer is 21/312500, which is approximately 0.00006768.", "0.0000672", 0, 0),
]
