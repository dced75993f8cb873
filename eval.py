"""
Held-out evaluation: greedy and sampled accuracy, strict and lenient, and pass@k.

    python eval.py --model demo/model --data demo          # greedy + 8 samples, strict and lenient
    python eval.py --model Qwen/Qwen2.5-Math-1.5B --data gsm8k --data-path ../shared/data/gsm8k \
                   --adapter runs/x/checkpoints/step_000350 --split test

Accuracy is reported two ways side by side: strict (only an explicit final answer counts,
\\boxed{}, "####", "the answer is", <answer> tags: what the training reward sees) and lenient (the
last whole number or expression in the text also counts; grader.py's docstring has the rules). A
completion with no extractable answer is a parse failure, counted apart from a wrong answer. With K
samples per problem we report the mean sampled accuracy and the unbiased pass@k of Chen et al.
(2021): 1 - C(n-c, k) / C(n, k). grpo.py logs the same numbers (heldout_accuracy) on its fixed
held-out set during training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import data as D
import grader

# -----------------------------------------------------------------------------
# Held-out accuracy


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: the chance that k of them drawn without
    replacement include a correct one."""
    # Chen et al. (2021)'s estimator: 1 - C(n-c, k) / C(n, k), not 1 - (1 - c/n)^k, which is
    # biased low for k > 1. Fewer than k wrong samples: every k of them hold a right one.
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def grade(text: str, gold: str) -> dict:
    """Strict and lenient verdicts for one completion; None answer = parse failure."""
    out = {}
    for mode, strict in (("strict", True), ("lenient", False)):
        answer = grader.extract_answer(text, strict=strict)
        out[mode] = {"answer": answer,
                     "correct": answer is not None and grader.math_equal(answer, gold)}
    return out


def load_eval_problems(args) -> list[D.Problem]:
    problems = D.load_problems(args.data, split=args.split, path=args.data_path,
                               levels=D.parse_levels(args.level))
    return problems[:args.limit] if args.limit else problems


def heldout_accuracy(model, tok, problems, template: str, max_new_tokens: int, samples: int,
                     temperature: float, seed: int, batch_size: int = 64,
                     progress: bool = False, max_prompt_tokens: int = 0, decode=None
                     ) -> tuple[dict, list[dict]]:
    """Greedy and sampled accuracy, strict and lenient, and pass@k of the model as it is (adapter
    on, unmerged). decode: generate's decode loop (None: the plain loop).

    Returns ({group: metrics} for "all" and each tier, one row per problem). The sampler is
    seeded per call from seed (a run's --seed: model.derived_seed(seed, "held-out", batch start)),
    so the same weights give the same numbers, and no global random state is touched (training is
    not perturbed). Prompts are cut to their last max_prompt_tokens as in training (0: not cut).
    """
    import model as M
    prompts = [D.prompt_ids(tok, p, template, max_prompt_tokens, max_new_tokens,
                            model.config.max_position_embeddings) for p in problems]
    stops = M.stop_ids(tok)
    was_training = model.training
    model.eval()

    def run(temperature, num_samples):
        outs = []
        per_call = max(1, batch_size // num_samples)  # batch_size counts sequences, not prompts
        for start in range(0, len(prompts), per_call):
            # a stream per batch: one seed for all would replay the same random draws on every
            # batch of problems
            outs += M.generate(model, prompts[start:start + per_call], max_new_tokens,
                               temperature=temperature, eos_token_id=stops,
                               seed=M.derived_seed(seed, "held-out", start),
                               num_samples=num_samples, vocab_size=tok.vocab_size,
                               decode=decode)
            if progress:
                done = min(start + per_call, len(prompts))
                print(f"\r  {'greedy' if temperature == 0 else f'{num_samples} samples'}: "
                      f"{done}/{len(prompts)} problems", end="", flush=True)
        if progress:
            print()
        return [M.completion_text(tok, c) for c in outs]

    greedy_texts = run(0.0, 1)
    sample_texts = run(temperature, samples) if samples else []
    model.train(was_training)
    K = samples
    rows, totals = [], {}
    for i, p in enumerate(problems):
        g = grade(greedy_texts[i], p.answer)
        graded = [grade(t, p.answer) for t in sample_texts[i * K:(i + 1) * K]]
        # the unsuffixed fields are strict, the training reward; lenient ones say so
        row = {"id": p.id, "tier": p.tier, "question": p.question, "gold": p.answer,
               "greedy": greedy_texts[i], "greedy_answer": g["strict"]["answer"],
               "greedy_correct": g["strict"]["correct"],
               "greedy_answer_lenient": g["lenient"]["answer"],
               "greedy_correct_lenient": g["lenient"]["correct"]}
        if K:
            # sample_rewards: what pass_rates.jsonl keeps for data.assign_tiers (Easy/Hard)
            row |= {"sample_rewards": [int(s["strict"]["correct"]) for s in graded],
                    "samples_correct": sum(s["strict"]["correct"] for s in graded),
                    "samples_correct_lenient": sum(s["lenient"]["correct"] for s in graded),
                    "sample_example": sample_texts[i * K]}
        rows.append(row)
        for group in ("all", p.tier) if p.tier else ("all",):
            totals.setdefault(group, Tally()).add(g, graded, K)
    return {group: t.metrics() for group, t in totals.items()}, rows


@dataclass
class Counts:
    """The completions of one decoding (greedy or samples) graded in one mode (strict, lenient)."""
    graded: int = 0
    correct: int = 0
    parse_failures: int = 0  # no extractable answer


@dataclass
class Tally:
    """Counts for one group of problems: per (decoding, mode), and pass@k per problem."""
    problems: int = 0
    counts: dict[tuple[str, str], Counts] = field(default_factory=dict)
    pass_at: dict[str, list[float]] = field(default_factory=dict)  # "strict/pass@4": per problem

    def add(self, greedy: dict, samples: list[dict], K: int):
        """One problem: its greedy verdict and its K sampled verdicts (grade's dicts)."""
        self.problems += 1
        for mode in ("strict", "lenient"):
            for decoding, graded in (("greedy", [greedy]), ("samples", samples)):
                c = self.counts.setdefault((decoding, mode), Counts())
                c.graded += len(graded)
                c.correct += sum(x[mode]["correct"] for x in graded)
                c.parse_failures += sum(x[mode]["answer"] is None for x in graded)
            correct = sum(s[mode]["correct"] for s in samples)
            # pass@k per problem, averaged over the group in metrics(): the estimator is
            # unbiased per problem, so its mean is too
            for k in (k for k in (1, 2, 4, 8, 16, 32, 64) if k <= K):
                self.pass_at.setdefault(f"{mode}/pass@{k}", []).append(pass_at_k(K, correct, k))

    def metrics(self) -> dict:
        """problems, <decoding>/<mode>/accuracy and .../parse_failures (shares), pass@k."""
        out = {"problems": self.problems}
        for (decoding, mode), c in self.counts.items():
            if c.graded:
                out[f"{decoding}/{mode}/accuracy"] = c.correct / c.graded
                out[f"{decoding}/{mode}/parse_failures"] = c.parse_failures / c.graded
        return out | {k: float(np.mean(v)) for k, v in self.pass_at.items()}


def evaluate(args) -> dict:
    # torch comes in with these, here and not at the top: `python eval.py --help` needs none
    import lora as L
    import model as M
    device = M.pick_device(args.device)
    model = M.load_model(args.model, device=device)
    tok = M.load_tokenizer(args.tokenizer or args.model)
    if args.adapter:
        L.load_adapter(model, args.adapter)
        L.merge_lora(model)  # same function, no per-token adapter cost while sampling
    problems = load_eval_problems(args)
    t0 = time.time()
    # The fast decoder, as grpo.py's --decoder auto; compiled on CUDA, eager if that fails.
    import fast_decode as FD
    decode = FD.FastDecode(compile=device.type in FD.COMPILE_AUTO, fall_back=True)
    groups, rows = heldout_accuracy(model, tok, problems, args.template, args.max_new_tokens,
                                    args.samples, args.temperature, args.seed, args.batch_size,
                                    progress=True, max_prompt_tokens=args.max_prompt_tokens,
                                    decode=decode)
    K = args.samples
    results = {"model": args.model, "adapter": args.adapter, "data": args.data, "split": args.split,
               "template": args.template, "samples": K, "temperature": args.temperature,
               "max_new_tokens": args.max_new_tokens,
               "max_prompt_tokens": args.max_prompt_tokens, "seconds": round(time.time() - t0, 1),
               "groups": groups}
    out = Path(args.out or f"eval-{Path(str(args.adapter or args.model)).name}-{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    with (out / "problems.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    if K:  # measured difficulty, the input of data.assign_tiers (grpo.py --difficulty-file)
        with (out / "pass_rates.jsonl").open("w") as f:
            f.writelines(json.dumps({"id": r["id"], "rewards": r["sample_rewards"]}) + "\n"
                         for r in rows)
    print_results(results)
    print(f"wrote {out}/results.json, problems.jsonl" + (", pass_rates.jsonl" if K else ""))
    return results


def print_results(results: dict):
    K = results["samples"]
    print("\n| group | problems | greedy strict | greedy lenient | parse fail (strict) |"
          + (f" mean of {K} strict | mean of {K} lenient | pass@{K} strict |" if K else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if K else ""))
    for group, r in results["groups"].items():
        line = (f"| {group} | {r['problems']} | {r['greedy/strict/accuracy']:.3f} | "
                f"{r['greedy/lenient/accuracy']:.3f} | {r['greedy/strict/parse_failures']:.3f} |")
        if K:
            line += (f" {r['samples/strict/accuracy']:.3f} | {r['samples/lenient/accuracy']:.3f} | "
                     f"{r[f'strict/pass@{K}']:.3f} |")
        print(line)


def run_config_of(adapter: str | None) -> dict | None:
    """The config.json of the run that wrote this adapter (RUN/checkpoints/step_N), if from one."""
    if not adapter:
        return None
    path = Path(adapter).resolve().parent.parent / "config.json"
    in_a_run = path.is_file() and Path(adapter).parent.name == "checkpoints"
    return json.loads(path.read_text()) if in_a_run else None


# -----------------------------------------------------------------------------
# CLI


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Comparing runs and sweeps: python study.py; the paper's "
                                        "bandit: python theory.py")
    ap.add_argument("--model", default=None,
                    help="HF hub id or local folder (default: the run's, with --adapter)")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--adapter", default=None,
                    help="a peft LoRA folder, e.g. a run's checkpoints/step_N")
    ap.add_argument("--data", required=True, help="gsm8k | math | demo | a .jsonl file")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--level", default=None, help="MATH levels, e.g. 2 or 1,2")
    ap.add_argument("--template", default=None, choices=list(D.PROMPT_TEMPLATES),
                    help="default: the run's (with --adapter inside a run), else plain for demo, "
                         "qwen-chat otherwise")
    ap.add_argument("--samples", type=int, default=8, help="K samples per problem (0: greedy only)")
    ap.add_argument("--temperature", type=float, default=None, help="default: the run's, else 1.0")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="default: the run's, else 64 for demo, 1024 otherwise")
    ap.add_argument("--max-prompt-tokens", type=int, default=None,
                    help="keep each prompt's last N tokens, as training cut them (default: the "
                         "run's, else 0: not cut)")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per generate call")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0,
                    help="the sampler's seed, as a run's --seed (below model.MAX_SEED)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run = run_config_of(args.adapter)
    if run:
        taken = {k: run[k] for k in ("model", "template", "max_new_tokens", "temperature",
                                     "max_prompt_tokens")
                 if getattr(args, k) is None and k in run}  # older runs lack the last
        if args.tokenizer is None and run.get("tokenizer"):
            taken["tokenizer"] = run["tokenizer"]
        vars(args).update(taken)
        taken_text = ", ".join(f"{k} {v}" for k, v in taken.items()) or "nothing"
        print(f"from the run's config.json: {taken_text}")
    demo = args.data == "demo"  # the demo model's settings (its preset; 512 positions)
    defaults = {"template": "plain" if demo else "qwen-chat", "temperature": 1.0,
                "max_new_tokens": 64 if demo else 1024, "max_prompt_tokens": 0}
    vars(args).update({k: v for k, v in defaults.items() if getattr(args, k) is None})
    if args.model is None:
        ap.error("--model is required (or an --adapter inside a run folder, whose config.json "
                 "names the model)")
    # the temperature matters only when sampling: greedy runs at 0 whatever it says
    if args.samples < 0 or args.temperature <= 0 and args.samples:
        ap.error("--samples must be >= 0 and --temperature > 0")
    if args.max_prompt_tokens < 0:
        ap.error("--max-prompt-tokens must be >= 0 (0: not cut)")
    import model as M  # torch, only once the arguments parsed: `--help` needs none
    if not 0 <= args.seed < M.MAX_SEED:
        ap.error(f"--seed must be in [0, {M.MAX_SEED})")
    try:
        return evaluate(args)
    # a missing file, bad data or an unreachable hub: one line, not a traceback
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
