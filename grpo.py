r"""
GRPO vs REINFORCE for math reasoning, as compared in "Why GRPO Needs Normalization"
(arXiv 2601.23135).

One step: take the next prompts, draw K completions each with the KV-cache sampler (each prompt
prefilled once), score them with the binary reward, turn rewards into advantages per group of K, and
take one policy-gradient step on the LoRA weights:

    --normalize std    A_ik = (r_ik - mean_k r_ik) / (std_k r_ik + eps)
                       the paper's GRPO (population std, 1/K)
    --normalize batch  A_ik = (r_ik - mean_k r_ik) / (std of the batch + eps)
                       one step size for the whole batch
    --normalize none   A_ik =  r_ik - mean_k r_ik
                       the paper's REINFORCE baseline

Everything else is identical between the arms. The update is on-policy (one gradient step per batch
of rollouts), so the PPO ratio is exactly 1 and there is nothing to clip; the loss is
-A * log p(completion), aggregated over tokens as --loss-agg says (log-probs computed in chunks,
never the full [B, T, V] logits). The optimizer steps on every step, also on one whose groups carry
no signal (zero gradient: AdamW still moves by its momentum, as in the authors' TRL runs).

With one prompt per step (the paper's design) the three rules differ only by one positive scalar per
step, 1/std, which changes the size of the update and never its direction; AdamW divides most of
such a scale out and gradient clipping removes it whenever it fires. The per-prompt reweighting
needs several prompts per step.

    # the embedded demo: tiny model, CPU, < 5 minutes
    python grpo.py --preset demo --normalize std
    # the paper's setup: Qwen2.5-Math-1.5B, LoRA r=64, GSM8K
    python grpo.py --normalize std
    python grpo.py --normalize none --model /models/Qwen2.5-Math-1.5B \
        --data-path ../shared/data/gsm8k
    # continue a run exactly where it stopped
    python grpo.py --resume runs/demo-std-adamw-s0
    # one step end to end, nothing kept
    python grpo.py --dry-run --model PATH

A run folder holds config.json, metrics.jsonl (a line per step), samples.jsonl, diagnostics.jsonl
and checkpoints/step_N (the adapter in peft's format, optimizer, RNG states, data cursor), written
atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import data as D
import diagnostics as diag
import fast_decode as FD
import grader
import lora as L
import model as M
from parallel import PeerFailed, World

DEMO_MODEL = Path(__file__).resolve().parent / "demo" / "model"

# -----------------------------------------------------------------------------
# Config and presets


def arg(default, help: str):
    """A Config field and its --help text, in one place."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    """Every flag of grpo.py. The defaults are the `paper` preset: what the authors' training
    computed (Caitlyn-Yin/grpo_norm train_difficulty.py on TRL's git main of Sept 2025, README
    "The paper preset"): one prompt x 8 completions per step, TRL's default loss_type "dapo" (our
    token-mean), beta 0.02, lr 1e-5 decayed linearly, clip 0.1, their prompt with the gold reasoning
    in it. LoRA r=64, alpha=128 is this project's spec (they ran 16/32). `--preset demo` replaces
    the fields listed in PRESETS["demo"]."""
    # model
    model: str = arg("Qwen/Qwen2.5-Math-1.5B", "HF hub id or local folder (safetensors)")
    tokenizer: str | None = arg(None, "default: the model folder")
    device: str = arg("auto", "auto: cuda when available")
    dtype: str = arg("auto", "auto: bfloat16 on cuda, float32 on cpu")
    lora_rank: int = arg(64, "r")
    lora_alpha: float = arg(128.0, "the update is scaled by alpha / r")
    lora_dropout: float = arg(0.0, "on the adapter's input "
                                   "(0: sampler and learner see one function)")
    lora_targets: str = arg(",".join(L.ALL_PROJECTIONS), "comma-separated projection names")
    grad_checkpointing: bool = arg(True, "recompute activations in backward (H100, 1.5B: "
                                         "peak memory 27.2 -> 8.9 GB for +5% update time)")
    # data
    data: str = arg("gsm8k", "gsm8k | math | demo | a .jsonl file")
    data_path: str | None = arg(None, "local file or folder; None: the hub (gsm8k, math)")
    split: str = arg("train", "train | test (MATH also math500)")
    math_levels: str | None = arg(None, 'e.g. "2" or "1,2"')
    difficulty_file: str | None = arg(None, "per-problem pass rates (see data.assign_tiers; "
                                            "eval.py writes them)")
    tier_thresholds: str | None = arg(None, '"easy=1.0,medium=0.9,hard=0.0": tier -> min pass rate '
                                            "(default: the paper's)")
    tiers: str | None = arg(None, 'train only on these tiers, e.g. "hard"')
    template: str = arg("paper-gold", "prompt format, see data.PROMPT_TEMPLATES")
    # rollouts
    prompts_per_step: int = arg(1, "prompts per step "
                                   "(their whole groups split over torchrun ranks)")
    group_size: int = arg(8, "K completions per prompt")
    max_new_tokens: int = arg(1024, "completion length limit, in tokens")
    temperature: float = arg(1.0, "sampling temperature; the learner scores the same distribution")
    sampler: str = arg("exact", "exact | merged: sample a merged copy "
                                "(faster, inexact; mismatch logged)")
    decoder: str = arg("auto", "the sampler's decode loop: plain (model.py's, the reference) | "
                               "fast (fast_decode.py: the same tokens; fixed shapes and CUDA "
                               "graphs on CUDA) | auto: fast on both, by measurement (CPU: "
                               "1.53-1.60x transformers' tokens/s against the plain loop's "
                               "1.15-1.18x; CUDA: 10 kernels per step and layer against 43, "
                               "its speed measured by bench/run_gpu.sh); BENCHMARKS.md")
    compile: str = arg("auto", "torch.compile the fast decoder's pieces: on | off | auto (on CUDA, "
                               "and if compiling fails, one warning, eager decoding and "
                               "sampler/compiled 0 in the metrics); on: an error if it fails")
    # the update
    normalize: str = arg("std", "std | batch | none (see group_advantages)")
    std_eps: float = arg(1e-6, "guards the division by the std (binary rewards: std >= 0.33 or 0)")
    loss_agg: str = arg("token-mean", "token-mean (TRL's dapo) | seq-sum | seq-mean "
                                      "(see policy_loss)")
    kl_coef: float = arg(0.02, "beta of a k3 KL penalty to the base model (adapter off)")
    optimizer: str = arg("adamw", "adamw | sgd")
    lr: float = arg(1e-5, "peak learning rate, decayed linearly to 0")
    weight_decay: float = arg(0.0, "on the LoRA weights")
    grad_clip: float = arg(0.1, "max global grad norm; 0 disables")
    micro_batch: int = arg(4, "sequences per forward/backward (gradient accumulation)")
    steps: int = arg(350, "optimizer steps (one batch of rollouts each)")
    seed: int = arg(0, "data order, sampling, LoRA init")
    # logging, checkpoints, diagnostics
    out: str | None = arg(None, "run folder; default runs/<preset>-<normalize>-<optimizer>-s<seed>")
    log_samples_every: int = arg(10, "steps between completions written to samples.jsonl")
    save_every: int = arg(50, "steps between checkpoints")
    keep_checkpoints: int = arg(3, "the newest N are kept")
    diag_every: int = arg(0, "0: off. Gradient cosines with noise floors, curvature vs reward std")
    diag_prompts: int = arg(16, "the fixed diagnostic prompts "
                                "(2K fresh samples each per diag step)")
    eval_every: int = arg(0, "0: off. Held-out accuracy at step 0, every N steps and at the end")
    eval_problems: int = arg(128, "the fixed held-out set (test split); demo: ~14% of a run's time")
    eval_samples: int = arg(4, "samples per held-out problem "
                               "(sampled accuracy, pass@k), besides greedy")
    max_bad_steps: int = arg(5, "stop after this many non-finite losses in a row")
    dist_timeout_s: float = arg(1800.0, "torchrun: a rank silent this long (a hang) "
                                        "stops every rank")
    preset: str = arg("paper", "paper | demo: the defaults that other flags override")


PRESETS = {
    "paper": {},  # the Config defaults
    # The embedded demo: a 0.8M-parameter model pretrained on synthetic word problems; laptop CPU,
    # no downloads.
    "demo": dict(model=str(DEMO_MODEL), lora_rank=16, lora_alpha=32.0, grad_checkpointing=False,
                 data="demo", template="plain", prompts_per_step=16, max_new_tokens=64,
                 loss_agg="seq-sum", kl_coef=0.0, lr=2e-3, grad_clip=1.0, micro_batch=128,
                 steps=150, save_every=50, log_samples_every=25, eval_every=25, device="cpu"),
}
CHOICES = dict(preset=list(PRESETS), normalize=["std", "batch", "none"], optimizer=["adamw", "sgd"],
               loss_agg=["seq-sum", "seq-mean", "token-mean"], template=list(D.PROMPT_TEMPLATES),
               device=["auto", "cpu", "cuda"], dtype=["auto", "float32", "bfloat16"],
               sampler=["exact", "merged"], decoder=["auto", "plain", "fast"],
               compile=["auto", "on", "off"])
# Keys whose values depend on the machine, not on the computation: excluded from exact-resume
# comparisons.
TIMING_PREFIXES = ("time/", "perf/")


def parse_args(argv=None) -> tuple[Config, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        defaults = ", ".join(f"{p}: {PRESETS[p].get(f.name, f.default)}" for p in PRESETS)
        text = f"{f.metadata['help']} ({defaults})".replace("%", "%%")  # argparse formats %
        if f.type == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            ap.add_argument(flag, type=kind, default=None, choices=CHOICES.get(f.name), help=text)
    ap.add_argument("--resume", metavar="RUN_DIR",
                    help="continue this run from its last checkpoint")
    ap.add_argument("--dry-run", action="store_true",
                    help="one step end to end in a temporary folder")
    args = ap.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
             if getattr(args, f.name) is not None}
    if args.resume:
        extra = sorted(set(given) - {"steps"})
        if extra:
            ap.error(f"--resume continues a run with its saved config.json; do not also pass "
                     f"{', '.join('--' + k.replace('_', '-') for k in extra)} "
                     "(only --steps may change)")
        path = Path(args.resume) / "config.json"
        if not path.is_file():
            ap.error(f"--resume {args.resume}: no config.json there (not a run folder)")
        cfg = Config(**(json.loads(path.read_text()) | given))
    else:
        preset = given.get("preset", Config.preset)
        cfg = Config(**(PRESETS[preset] | given | {"preset": preset}))
    problems = validate(cfg)
    if problems:
        ap.error("; ".join(problems))
    return cfg, args


def validate(cfg: Config) -> list[str]:
    problems = [f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: choose one of "
                f"{', '.join(choices)}" for name, choices in CHOICES.items()
                if getattr(cfg, name) not in choices]  # a config.json is not checked by argparse
    if cfg.compile == "on" and cfg.decoder == "plain":
        problems.append("--compile on compiles the fast decoder: it needs --decoder fast or auto")
    if cfg.group_size < 2:
        problems.append(f"--group-size must be >= 2 (got {cfg.group_size}): "
                        "a group of one has no baseline")
    for name in ("prompts_per_step", "max_new_tokens", "micro_batch", "steps", "lora_rank",
                 "keep_checkpoints", "diag_prompts", "max_bad_steps"):
        if getattr(cfg, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.lr <= 0 or cfg.temperature <= 0:
        problems.append("--lr and --temperature must be > 0 "
                        "(the learner scores the sampler's distribution)")
    if cfg.diag_every and cfg.diag_prompts < 2:
        problems.append(f"--diag-prompts must be >= 2 to compare gradients of different prompts "
                        f"(got {cfg.diag_prompts})")
    for name in ("eval_every", "diag_every", "eval_samples"):
        if getattr(cfg, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0")
    if cfg.eval_every and cfg.eval_problems < 1:
        problems.append("--eval-problems must be >= 1")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.prompts_per_step % world_size:
        problems.append(f"--prompts-per-step {cfg.prompts_per_step} is not divisible by the "
                        f"{world_size} processes (each process takes whole groups)")
    return problems


# -----------------------------------------------------------------------------
# The two estimators


def group_advantages(rewards: torch.Tensor, normalize: str, eps: float = 1e-6,
                     batch_std: float | None = None) -> torch.Tensor:
    """rewards [prompts, K] -> advantages [prompts, K]; every std is the population std (1/K), as in
    the paper.

      none  (REINFORCE)  A_ik = r_ik - mean_k r_ik
      std   (GRPO)       A_ik = (r_ik - mean_k r_ik) / (std_k r_ik + eps)   per-prompt step size
      batch (batch std)  A_ik = (r_ik - mean_k r_ik) / (std_jk r_jk + eps)  one step size per batch

    batch is the authors' `batch_std` arm (TRL's scale_rewards="batch"): the global scale that
    dividing by a std gives, without the per-prompt reweighting. So std - batch measures the
    per-prompt effect and batch - none the step-size effect. With one prompt per step batch and std
    are the same rule. eps only guards the division: a group whose rewards are all equal has
    r_ik - mean = 0, hence zero advantage under every rule.
    batch_std: the std of the whole step's rewards when this process holds only its share
    (data parallel).
    """
    centered = rewards - rewards.mean(dim=-1, keepdim=True)
    if normalize == "none":
        return centered
    if normalize == "std":
        return centered / (rewards.std(dim=-1, unbiased=False, keepdim=True) + eps)
    if normalize == "batch":
        return centered / ((rewards.std(unbiased=False) if batch_std is None else batch_std) + eps)
    raise ValueError(f"normalize must be 'std', 'batch' or 'none', got {normalize!r}")


# -----------------------------------------------------------------------------
# The policy-gradient loss


def policy_loss(token_logprobs, mask, advantages, loss_agg: str, normalizer: float, kl_tokens=None,
                kl_coef=0.0):
    """-(advantage-weighted log-likelihood) for a micro-batch, scaled so micro-batch losses sum to
    the batch's.

    token_logprobs, mask [B, T]; advantages [B]. Aggregation rules (normalizer is batch-wide):
      seq-sum     sum_i A_i * sum_t log p_it / (number of completions)
                  the paper: sequence log-prob, constant scale
      seq-mean    sum_i A_i * mean_t log p_it / (number of completions)
                  per-sequence mean (GRPO paper; length-biased)
      token-mean  sum_i A_i * sum_t log p_it / (number of tokens)
                  DAPO's token mean = TRL's "dapo"
    An optional KL penalty (per token, same aggregation) is added with weight kl_coef.
    """
    mask = mask.to(token_logprobs.dtype)
    per_seq = lambda x: ((x * mask).sum(-1)  # noqa: E731
                         / (mask.sum(-1).clamp(min=1) if loss_agg == "seq-mean" else 1))
    loss = -(advantages * per_seq(token_logprobs)).sum() / normalizer
    if kl_tokens is not None and kl_coef:
        loss = loss + kl_coef * per_seq(kl_tokens).sum() / normalizer
    return loss


def kl_k3(logprobs, ref_logprobs):
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1 with d = ref - policy
    (>= 0, unbiased)."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


# -----------------------------------------------------------------------------
# Data


def load_training_problems(cfg: Config) -> list[D.Problem]:
    problems = D.load_problems(cfg.data, split=cfg.split, path=cfg.data_path,
                               levels=D.parse_levels(cfg.math_levels))
    if cfg.difficulty_file:
        thresholds = D.PAPER_TIER_THRESHOLDS
        if cfg.tier_thresholds:
            pairs = [item.split("=") for item in cfg.tier_thresholds.split(",")]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"--tier-thresholds {cfg.tier_thresholds!r}: "
                                 "expected tier=min_pass_rate,...")
            thresholds = {tier: float(rate) for tier, rate in pairs}
        problems = D.assign_tiers(problems, cfg.difficulty_file, thresholds)
    if cfg.tiers:
        wanted = set(cfg.tiers.split(","))
        problems = [p for p in problems if p.tier in wanted]
    if not problems:
        raise ValueError(f"no training problems left for --data {cfg.data} "
                         f"(after --tiers {cfg.tiers})")
    return problems


def load_heldout_problems(cfg: Config) -> list[D.Problem]:
    """The fixed held-out set: `eval_problems` of the test split (the demo's synthetic test set,
    GSM8K's and MATH's test splits, same MATH levels), drawn with one fixed seed, so every run and
    every arm sees the same problems."""
    if cfg.data in ("demo", "gsm8k", "math") and cfg.split == "train":
        problems = D.load_problems(cfg.data, split="test", path=cfg.data_path,
                                   levels=D.parse_levels(cfg.math_levels))
    else:
        raise ValueError(f"--eval-every {cfg.eval_every}: no held-out set for --data {cfg.data} "
                         f"--split {cfg.split} (held-out sets: the test splits of demo, gsm8k and "
                         "math, when training on train)")
    if cfg.eval_problems > len(problems):
        raise ValueError(f"--eval-problems {cfg.eval_problems} exceeds the {len(problems)} "
                         f"problems of the held-out split of --data {cfg.data}")
    return random.Random(0).sample(problems, cfg.eval_problems)


def heldout_record(model, tok, problems, cfg: Config, decode=None) -> dict:
    """Held-out accuracy of the current adapter as metrics.jsonl keys: eval/<metric> and
    eval/<tier>/<metric>. decode: the run's decode loop (None: the plain loop)."""
    import eval as E
    t0 = time.time()
    groups, _ = E.heldout_accuracy(model, tok, problems, cfg.template, cfg.max_new_tokens,
                                   cfg.eval_samples, cfg.temperature,
                                   seed=cfg.seed * 1_000_003 + 999_983, decode=decode)
    record = {}
    for group, metrics in groups.items():
        prefix = "eval/" if group == "all" else f"eval/{group}/"
        record |= {prefix + k: v for k, v in metrics.items()}
    return record | {"time/eval": time.time() - t0}


class PromptStream:
    """Problems in a fresh seeded order each epoch; its whole state is (epoch, position)."""

    def __init__(self, problems, seed: int, epoch: int = 0, position: int = 0):
        self.problems, self.seed, self.epoch, self.position = problems, seed, epoch, position
        self._order = self._shuffle()

    def _shuffle(self):
        order = list(range(len(self.problems)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[D.Problem]:
        out = []
        for _ in range(n):
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self.problems[self._order[self.position]])
            self.position += 1
        return out

    def state(self):
        return {"epoch": self.epoch, "position": self.position}


# -----------------------------------------------------------------------------
# Rollouts


@dataclass
class Rollouts:
    problems: list          # the step's prompts' problems
    prompts: list           # token ids per prompt
    completions: list       # token ids per completion, prompt-major (K per prompt)
    texts: list
    rewards: torch.Tensor   # [prompts, K]
    truncated: list = field(default_factory=list)
    sampler_stats: dict = field(default_factory=dict)  # sampler_mismatch, with --sampler merged
    sample_s: float = 0.0   # seconds drawing the completions (building the merged copy included)
    grade_s: float = 0.0    # seconds decoding and grading them


def rollout(model, tok, problems, cfg: Config, seed: int, first_row: int = 0,
            decode: FD.FastDecode | None = None) -> Rollouts:
    """K completions per problem and their binary rewards [problems, K]. decode: the run's decode
    loop (make_decoder; kept from step to step), None: the plain loop."""
    t0 = time.time()
    prompts = [tok.encode(D.format_prompt(p, cfg.template)) for p in problems]
    model.eval()
    merged = cfg.sampler == "merged"
    # rebuilt from the current adapter every step
    sampler = L.merged_copy(model) if merged else model
    out = M.generate(sampler, prompts, cfg.max_new_tokens, temperature=cfg.temperature,
                     eos_token_id=M.stop_ids(tok), seed=seed, num_samples=cfg.group_size,
                     vocab_size=tok.vocab_size, return_logprobs=merged, first_row=first_row,
                     decode=decode)
    del sampler
    completions, sampler_logprobs = out if merged else (out, None)
    t1 = time.time()
    eos = set(M.stop_ids(tok))
    texts = [M.completion_text(tok, c) for c in completions]
    golds = [p.answer for p in problems for _ in range(cfg.group_size)]
    rewards = torch.tensor([grader.reward(t, g) for t, g in zip(texts, golds)],
                           dtype=torch.float32)
    truncated = [not c or c[-1] not in eos for c in completions]
    ro = Rollouts(problems, prompts, completions, texts,
                  rewards.view(len(problems), cfg.group_size), truncated,
                  sample_s=t1 - t0, grade_s=time.time() - t1)
    if merged:
        ro.sampler_stats = sampler_mismatch(model, ro, sampler_logprobs, cfg, tok.vocab_size)
    if decode is not None and (decode.compile or decode.compile_error):
        # 0 once compiling failed and the sampler went on eagerly (the mean over processes)
        ro.sampler_stats["sampler/compiled"] = float(decode.compile)
    return ro


@torch.no_grad()
def sampler_mismatch(model, ro: Rollouts, sampler_logprobs: list, cfg: Config,
                     vocab_size: int) -> dict:
    """How far the sampler's distribution is from the learner's, on the tokens it drew. Per token,
    d = log p_learner - log p_sampler (the learner: completion_logprobs of the model, adapter
    unmerged; the sampler: the log-probs generate returns). kl_k3 is the k3 estimate of
    KL(sampler || learner) per token, mean(exp(d) - 1 - d) over the samples the sampler drew;
    logp_abs_diff_mean is mean |d|."""
    K = cfg.group_size
    rows = [i for i, c in enumerate(ro.completions) if c]
    learner = []
    for start in range(0, len(rows), cfg.micro_batch):
        batch = rows[start:start + cfg.micro_batch]
        groups = sorted({i // K for i in batch})
        lp, _, _ = M.completion_logprobs(
            model, [ro.prompts[g] for g in groups], [ro.completions[i] for i in batch],
            [groups.index(i // K) for i in batch], cfg.temperature, vocab_size)
        learner += [lp[j, :len(ro.completions[i])].double().cpu() for j, i in enumerate(batch)]
    learner = torch.cat(learner)
    sampler = torch.tensor([x for i in rows for x in sampler_logprobs[i]], dtype=torch.float64)
    return {"sampler/kl_k3": float(kl_k3(sampler, learner).mean()),
            "sampler/logp_abs_diff_mean": float((learner - sampler).abs().mean())}


# -----------------------------------------------------------------------------
# One update


def update(model, params, optimizer, ro: Rollouts, advantages: torch.Tensor, cfg: Config,
           vocab_size: int, world: World = World()):
    """Accumulate the policy gradient over micro-batches, clip, and take one optimizer step
    -> (loss, stats).

    Completions with zero advantage contribute nothing to the policy-gradient term, so without KL
    they are not even forwarded; a step with no signal at all then has an exactly zero gradient, and
    the optimizer still steps on it (AdamW moves by its momentum, as it did in the authors' runs).
    Entropy is logged only when something was forwarded. A non-finite loss or gradient skips the
    step: (nan, {}).
    Data parallel: ro is this rank's share;
    the normaliser counts the whole step, so the gradients sum.
    """
    K = cfg.group_size
    adv = advantages.flatten()
    rows = [i for i in range(len(ro.completions))
            if (adv[i] != 0 or cfg.kl_coef > 0) and ro.completions[i]]
    n_tokens, n_completions = world.sum(sum(len(c) for c in ro.completions), len(ro.completions))
    normalizer = n_tokens if cfg.loss_agg == "token-mean" else n_completions
    optimizer.zero_grad(set_to_none=True)
    model.train()
    total_loss, entropy_sum, n_forwarded, kl_sum, finite = 0.0, 0.0, 0, 0.0, True
    device = params[0].device
    for start in range(0, len(rows), cfg.micro_batch):
        batch = rows[start:start + cfg.micro_batch]
        # each prompt runs once for all its completions in the batch
        groups = sorted({i // K for i in batch})
        args = ([ro.prompts[g] for g in groups], [ro.completions[i] for i in batch],
                [groups.index(i // K) for i in batch], cfg.temperature, vocab_size)
        lp, ent, mask = M.completion_logprobs(model, *args)
        kl = None
        if cfg.kl_coef > 0:
            with torch.no_grad(), L.lora_disabled(model):
                ref, _, _ = M.completion_logprobs(model, *args)
            kl = kl_k3(lp, ref)
            kl_sum += float((kl.detach() * mask).sum())
        loss = policy_loss(lp, mask, adv[batch].to(device), cfg.loss_agg, normalizer, kl,
                           cfg.kl_coef)
        if not torch.isfinite(loss):
            finite = False
            break
        loss.backward()
        total_loss += loss.item()
        entropy_sum += float((ent * mask).sum())
        n_forwarded += int(mask.sum())
    # a parameter no loss reached has a zero gradient, not a missing one (AdamW skips None)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if world.size > 1:  # one all-reduce of the flat LoRA gradient (parallel.py says why not DDP)
        flat = world.sum_(torch.cat([p.grad.flatten() for p in params]))
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))
    grad_norm = float(torch.nn.utils.clip_grad_norm_(
        params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
    if world.any(not finite or not math.isfinite(grad_norm)):  # every rank skips the same steps
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), {}
    optimizer.step()
    total_loss, entropy_sum, n_forwarded, kl_sum = world.sum(
        total_loss, entropy_sum, n_forwarded, kl_sum)
    stats = {"grad_norm_preclip": grad_norm,
             "grad_clipped": bool(cfg.grad_clip > 0 and grad_norm > cfg.grad_clip),
             "learner_tokens": int(n_forwarded),
             "entropy": entropy_sum / n_forwarded if n_forwarded else None}
    if cfg.kl_coef > 0:
        stats["kl"] = kl_sum / n_forwarded if n_forwarded else None
    return total_loss, stats


def global_batch_std(rewards: torch.Tensor, world: World) -> float | None:
    """The population std of the whole step's rewards from two sums over ranks (None in one process:
    the batch is all here, and group_advantages computes it)."""
    if world.size == 1:
        return None
    n, total, squares = world.sum(rewards.numel(), float(rewards.sum()),
                                  float(rewards.pow(2).sum()))
    return math.sqrt(max(squares / n - (total / n) ** 2, 0.0))


def make_optimizer(params, cfg: Config):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Plain gradient ascent on J (descent on the loss), as in the paper's theory: no momentum, no
    # rescaling.
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg: Config) -> float:
    """Linear decay from lr to 0 over the run, no warmup (the authors' schedule).
    step counts from 0."""
    return cfg.lr * (1 - step / cfg.steps)


# -----------------------------------------------------------------------------
# The paper's diagnostics (diagnostics.py): gradient orthogonality and curvature vs reward variance,
# with controls


def diagnostic_prompts(problems, cfg: Config) -> list:
    """The fixed diagnostic set: drawn once per run (from the seed),
    re-scored at every diagnostic step."""
    return random.Random(f"diag-{cfg.seed}").sample(problems, min(cfg.diag_prompts, len(problems)))


def run_diagnostics(model, tok, params, prompts, cfg: Config, step: int, previous_rows: list[dict],
                    decode=None):
    """2K fresh samples per diagnostic prompt (own seed: training is not perturbed)
    -> (summary, rows)."""
    ro = rollout(model, tok, prompts, dataclasses.replace(cfg, group_size=2 * cfg.group_size),
                 seed=cfg.seed * 1_000_003 + 500_009 * step + 7, decode=decode)
    summary, rows = diag.measure(model, params, ro, cfg.group_size, cfg.temperature, tok.vocab_size,
                                 step, cfg.seed)
    if previous_rows:
        corr = diag.across_steps(previous_rows, rows)
        if corr is not None:
            summary["diag/curvature_std_corr_across"] = corr
    return summary, rows


# -----------------------------------------------------------------------------
# Checkpoints: adapter (peft format) + optimizer + RNG states + data cursor, written atomically


def save_checkpoint(run_dir: Path, step: int, model, optimizer, stream: PromptStream, extra: dict,
                    keep: int):
    from safetensors.torch import save_file
    ckpt_dir = run_dir / "checkpoints"
    final = ckpt_dir / f"step_{step:06d}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{step:06d}-", dir=ckpt_dir))
    L.save_adapter(model, tmp, base_model_name_or_path=extra.get("model"))
    opt_state = optimizer.state_dict()
    tensors = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/torch_cuda{i}"] = s
    for pid, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"optimizer/{pid}/{name}"] = (value if torch.is_tensor(value)
                                                  else torch.tensor(value))
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
              tmp / "trainer_state.safetensors")
    np_state = np.random.get_state()
    state = {"step": step, "data": stream.state(), "param_groups": opt_state["param_groups"],
             "python_rng": random.getstate(),
             "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             **{k: v for k, v in extra.items() if k != "model"}}
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    # on disk before the rename, so a crash cannot leave a torn checkpoint
    for path in [*tmp.iterdir(), tmp]:
        fsync(path)
    os.replace(tmp, final)  # atomic: a checkpoint folder is complete or absent
    fsync(ckpt_dir)
    for old in sorted(ckpt_dir.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def fsync(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(ckpt: Path, model, optimizer) -> dict:
    from safetensors.torch import load_file
    L.load_adapter(model, ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    tensors = load_file(ckpt / "trainer_state.safetensors")
    opt_state = {"state": {}, "param_groups": state["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, pid, name = key.split("/")
            opt_state["state"].setdefault(int(pid), {})[name] = value
    device = next(iter(model.parameters())).device
    for s in opt_state["state"].values():
        for name, value in s.items():
            s[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng/torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/torch_cuda")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return state


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"))
    return ckpts[-1] if ckpts else None


# -----------------------------------------------------------------------------
# Training


def resolve_device(cfg: Config, world: World = World()):
    device = M.pick_device(cfg.device)
    if device.type == "cuda" and world.size > 1:  # torchrun: one GPU per process
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    return device, dtype


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    # peak RSS of the process (KB on Linux)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def tier_accuracy(ro: Rollouts) -> dict:
    per_tier = {}
    for problem, r in zip(ro.problems, ro.rewards):
        if problem.tier:
            per_tier.setdefault(problem.tier, []).append(r)
    return {f"accuracy/{t}": float(torch.cat(rs).mean()) for t, rs in sorted(per_tier.items())}


class TrainingStopped(RuntimeError):
    """The run cannot go on (e.g. repeated non-finite losses); a checkpoint has been written."""


class StopFlag:
    """First Ctrl-C: finish the current step, checkpoint, exit. Second: stop at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)",
              flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def design_note(cfg: Config) -> str | None:
    """One plain line when this configuration cannot let --normalize change the
    direction of the update."""
    if cfg.prompts_per_step > 1:
        return None
    return ("note: one prompt per step, so --normalize cannot change the direction of the update: "
            "std and batch are none times one positive scalar per step (1/std of the group), which "
            "AdamW largely divides out and gradient clipping removes whenever it fires; the "
            "per-prompt reweighting needs --prompts-per-step > 1")


# Where --compile auto compiles: on CUDA the compiled step is 10 kernels per layer against 34
# eager (bench/count_kernels.py); a CPU gains nothing from it.
COMPILE_AUTO = ("cuda",)


def make_decoder(cfg: Config, device, dtype) -> FD.FastDecode | None:
    """--decoder and --compile -> the run's decode loop for model.generate (None: the plain loop).
    Compiling is tried here, on a tiny model, before any work: --compile on stops with a one-line
    error if it fails, auto says so and decodes eagerly (and falls back later too, should the real
    model's compilation fail)."""
    if cfg.decoder == "plain":
        return None
    compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type in COMPILE_AUTO)
    decode = FD.FastDecode(compile=compile, fall_back=cfg.compile == "auto")
    error = FD.compile_error(device, dtype) if compile else None
    if error and cfg.compile == "on":
        raise ValueError(f"--compile on: torch.compile fails on this machine ({error}); "
                         "run with --compile auto or off")
    if error:
        decode.compile, decode.compile_error = False, error
        print(f"WARNING: torch.compile fails on this machine ({error}); the sampler decodes "
              "eagerly, slower (--compile off skips the attempt)", file=sys.stderr, flush=True)
    return decode


def describe_decoder(decode: FD.FastDecode | None, device) -> str:
    """The run's start-up line on its sampler: the decode loop and, on CUDA, the attention
    backends (model.safe_attention's choice, made by resolve_device)."""
    attention = f"; {M.attention_backends()}" if device.type == "cuda" else ""
    if decode is None:
        return "decoder: plain (model.py)" + attention
    loop = "fixed shapes, CUDA graphs" if device.type == "cuda" else "shrinking batch"
    return (f"decoder: fast ({loop}, {'compiled' if decode.compile else 'eager'}"
            + (f"; compiling failed: {decode.compile_error}" if decode.compile_error else "")
            + ")" + attention)


def setup(cfg: Config, world: World = World()):
    """Seeded model, tokenizer, LoRA parameters, optimizer, training problems and the sampler's
    decode loop (make_decoder, first: a bad --compile stops before any work): a run's state at
    step 0 (the same on every rank: the seed fixes the adapter's initialisation)."""
    device, dtype = resolve_device(cfg, world)
    decode = make_decoder(cfg, device, dtype)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = M.load_model(cfg.model, dtype=dtype, device=device)
    tok = M.load_tokenizer(cfg.tokenizer or cfg.model)
    model.gradient_checkpointing = cfg.grad_checkpointing
    problems = load_training_problems(cfg)
    if cfg.prompts_per_step > len(problems):
        raise ValueError(f"--prompts-per-step {cfg.prompts_per_step} exceeds the {len(problems)} "
                         f"training problems (--data {cfg.data}, --tiers {cfg.tiers}): "
                         "a step would repeat a prompt")
    params = L.apply_lora(model, r=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                          targets=tuple(cfg.lora_targets.split(",")))
    return model, tok, params, make_optimizer(params, cfg), problems, device, dtype, decode


def train(cfg: Config, run_dir: Path, resume: bool = False, world: World = World()) -> Path:
    run = Run(cfg, run_dir, resume, world)  # set up, or restore the last checkpoint
    model, tok, params, optimizer = run.model, run.tok, run.params, run.optimizer
    with StopFlag() as stop:
        for step in range(run.start, cfg.steps):
            # ---- the algorithm: sample, score, advantages, one policy-gradient step --------------
            t0 = time.time()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            # the step's prompts (the same on every rank)
            batch = run.stream.take(cfg.prompts_per_step)
            mine = world.shard(batch)  # this rank's whole groups
            ro = rollout(model, tok, mine, cfg, seed=cfg.seed * 1_000_003 + step,
                         first_row=world.rank * len(mine) * cfg.group_size, decode=run.decode)
            t1 = time.time()
            advantages = group_advantages(ro.rewards, cfg.normalize, cfg.std_eps,
                                          batch_std=global_batch_std(ro.rewards, world))
            t2 = time.time()
            loss, stats = update(model, params, optimizer, ro, advantages, cfg, tok.vocab_size,
                                 world)
            # ---- bookkeeping: logs, diagnostics, held-out accuracy, checkpoints ------------------
            run.log_step(step, batch, ro, advantages, loss, stats, (t0, t1, t2, time.time()))
            if run.end_step(step, stop.requested):
                return run_dir
    run.finish()
    return run_dir


class Run:
    """The plumbing around train()'s loop: the run folder, resume, logs, evaluation, checkpoints.
    Only rank 0 writes; every rank takes the same decisions (stop, save) at the same step."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool, world: World):
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        (self.model, self.tok, self.params, self.optimizer, problems, self.device, dtype,
         self.decode) = setup(cfg, world)
        self.heldout = load_heldout_problems(cfg) if cfg.eval_every else []
        self.diag_set = diagnostic_prompts(problems, cfg) if cfg.diag_every else []
        self.stream = PromptStream(problems, cfg.seed)
        self.start, self.bad_streak = 0, 0
        self.metrics_path = run_dir / "metrics.jsonl"
        self.say = print if world.main else (lambda *a, **k: None)
        if resume:
            self.restore()
        elif world.main:
            run_dir.mkdir(parents=True, exist_ok=False)
            (run_dir / "checkpoints").mkdir()
            (run_dir / "config.json").write_text(
                json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        self.say(f"{len(problems)} problems, {sum(p.numel() for p in self.params):,} trainable "
                 f"LoRA parameters, {self.device} {str(dtype).removeprefix('torch.')}, "
                 f"{world.size} process{'es' if world.size > 1 else ''}, run folder {run_dir}")
        self.say(describe_decoder(self.decode, self.device))
        if design_note(cfg):
            self.say(design_note(cfg))
        # across-step control's previous
        self.diag_rows = last_diagnostics(run_dir / "diagnostics.jsonl")
        if self.heldout and not resume and world.main:
            record = {"step": 0} | heldout_record(self.model, self.tok, self.heldout, cfg,
                                                  self.decode)
            self.say(heldout_line(record), flush=True)
            self.write_metrics(record)
        self.t_run, self.steps_timed = time.time(), 0

    def restore(self):
        """Back to the last checkpoint: weights, optimizer, RNG, data cursor;
        every per-step log cut to it."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{self.run_dir}/checkpoints: no checkpoint to resume from")
        state = load_checkpoint(ckpt, self.model, self.optimizer)
        self.start, self.bad_streak = state["step"], state.get("bad_streak", 0)
        self.stream = PromptStream(self.stream.problems, self.cfg.seed, **state["data"])
        if self.world.main:
            # a crash while writing
            for unfinished in (self.run_dir / "checkpoints").glob(".tmp-step_*"):
                shutil.rmtree(unfinished)
            for log in PER_STEP_LOGS:
                keep_log_until(self.run_dir / log, self.start)
            written_by = state.get("world_size", 1)
            print(f"resumed {self.run_dir} at step {self.start} from {ckpt.name}"
                  + (f" (written by {written_by} processes, now {self.world.size})"
                     if written_by != self.world.size else ""))

    def log_step(self, step: int, batch: list, ro: Rollouts, advantages, loss: float, stats: dict,
                 times: tuple):
        """metrics.jsonl (over the whole step's batch), diagnostics, held-out accuracy,
        samples, progress."""
        cfg, world = self.cfg, self.world
        self.bad_streak = 0 if math.isfinite(loss) else self.bad_streak + 1
        parts = world.gather({"rewards": ro.rewards, "advantages": advantages, "texts": ro.texts,
                              "lengths": [len(c) for c in ro.completions],
                              "truncated": ro.truncated, "sample_s": ro.sample_s,
                              "grade_s": ro.grade_s, "sampler_stats": ro.sampler_stats})
        whole = Rollouts(batch, None, None, [t for p in parts for t in p["texts"]],
                         torch.cat([p["rewards"] for p in parts]),
                         [t for p in parts for t in p["truncated"]])
        if not world.main:
            return
        record = step_record(step, cfg, whole, torch.cat([p["advantages"] for p in parts]), parts,
                             loss, stats, times, self.device)
        if cfg.diag_every and (step + 1) % cfg.diag_every == 0:
            t = time.time()
            summary, self.diag_rows = run_diagnostics(self.model, self.tok, self.params,
                                                      self.diag_set, cfg, step + 1, self.diag_rows,
                                                      self.decode)
            record |= summary | {"time/diagnostics": time.time() - t}
            with (self.run_dir / "diagnostics.jsonl").open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.diag_rows)
        if self.heldout and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            record |= heldout_record(self.model, self.tok, self.heldout, cfg, self.decode)
        record["time/step"] = time.time() - times[0]
        self.write_metrics(record)
        self.steps_timed += 1
        eta = (time.time() - self.t_run) / self.steps_timed * (cfg.steps - step - 1)
        self.say(progress_line(record, cfg.steps, eta), flush=True)
        if "eval/problems" in record:
            self.say(heldout_line(record), flush=True)
        if (step + 1) % cfg.log_samples_every == 0 or step == self.start:
            log_samples(self.run_dir, step + 1, whole, self.tok)

    def write_metrics(self, record: dict):
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def end_step(self, step: int, stop_requested: bool) -> bool:
        """Checkpoint when due; True when the run stops here (Ctrl-C on any rank)."""
        cfg, done = self.cfg, step + 1
        stopping = self.world.any(stop_requested)  # every rank stops after the same step
        if self.bad_streak >= cfg.max_bad_steps:
            self.save(done)
            raise TrainingStopped(f"{self.bad_streak} steps in a row had a non-finite loss or "
                                  f"gradient; stopped at step {done} (checkpoint saved). "
                                  "Lower --lr or check the data.")
        if done % cfg.save_every == 0 or done == cfg.steps or stopping:
            self.save(done)
        if stopping:
            self.say(f"stopped after step {done}; "
                     f"resume with: python grpo.py --resume {self.run_dir}")
        return stopping

    def save(self, step: int):
        if self.world.main:
            extra = {"model": self.cfg.model, "bad_streak": self.bad_streak,
                     "world_size": self.world.size}
            save_checkpoint(self.run_dir, step, self.model, self.optimizer, self.stream, extra,
                            self.cfg.keep_checkpoints)

    def finish(self):
        self.say(f"done: {self.cfg.steps} steps in {format_seconds(time.time() - self.t_run)}; "
                 f"{clipping_summary(self.metrics_path, self.cfg)}; run folder {self.run_dir}")


def step_record(step: int, cfg: Config, ro: Rollouts, advantages, parts: list[dict], loss: float,
                stats: dict, times: tuple, device) -> dict:
    """One metrics.jsonl line: over the whole step's batch (all ranks),
    names that say what they measure."""
    skipped = not math.isfinite(loss)
    lengths = [n for p in parts for n in p["lengths"]]
    group_std = ro.rewards.std(dim=1, unbiased=False)
    t0, t1, t2, t3 = times
    return {
        "step": step + 1,
        "accuracy": float(ro.rewards.mean()), **tier_accuracy(ro),  # = mean reward
        "reward_std": float(group_std.mean()),
        "zero_std_frac": float((group_std == 0).float().mean()),
        "adv_abs_mean": float(advantages.abs().mean()), "loss": None if skipped else loss, **stats,
        "lr": lr_at(step, cfg), "completion_len": float(np.mean(lengths)),
        "completion_len_max": max(lengths),
        "truncated_frac": float(np.mean(ro.truncated)), "skipped": skipped,
        "time/sample": max(p["sample_s"] for p in parts),
        "time/grade": max(p["grade_s"] for p in parts),
        "time/advantages": t2 - t1, "time/update": t3 - t2,
        "perf/sample_tokens_per_s": sum(sum(p["lengths"]) / max(p["sample_s"], 1e-9)
                                        for p in parts),
        "perf/peak_mem_gb": peak_memory_gb(device),
        **{k: float(np.mean([p["sampler_stats"][k] for p in parts]))
           for k in parts[0]["sampler_stats"]},
    }


def progress_line(record: dict, steps: int, eta: float) -> str:
    tiers = " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in record.items()
                     if k.startswith("accuracy/"))
    line = (f"step {record['step']}/{steps} | acc {record['accuracy']:.3f}"
            f"{' (' + tiers + ')' if tiers else ''}")
    if record["skipped"]:
        return line + f" | SKIPPED (non-finite) | ETA {format_seconds(eta)}"
    return (line + f" | loss {record['loss']:.4f} | |A| {record['adv_abs_mean']:.3f} | "
            f"|g| {record['grad_norm_preclip']:.3g}"
            f"{' clipped' if record['grad_clipped'] else ''} | "
            f"len {record['completion_len']:.0f} | "
            f"{record['perf/sample_tokens_per_s']:.0f} tok/s | "
            f"{record['time/step']:.2f}s/step | ETA {format_seconds(eta)}")


def clipping_summary(metrics_path: Path, cfg: Config) -> str:
    """The share of steps whose gradient was clipped, over the whole run
    (resumed parts included)."""
    if cfg.grad_clip <= 0:
        return "gradient clipping off"
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    taken = [r for r in rows if r["step"] > 0 and not r["skipped"]]
    clipped = sum(r.get("grad_clipped", False) for r in taken)
    return (f"gradient clipped (pre-clip norm > {cfg.grad_clip:g}) on {clipped} of {len(taken)} "
            f"steps ({clipped / max(len(taken), 1):.0%})")


# each line carries its "step"
PER_STEP_LOGS = ("metrics.jsonl", "diagnostics.jsonl", "samples.jsonl")


def keep_log_until(path: Path, step: int):
    """On resume, lines past the checkpoint are recomputed;
    move the old ones aside rather than lose them."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if json.loads(line)["step"] <= step]
    dropped = [line for line in lines if json.loads(line)["step"] > step]
    if dropped:
        (path.parent / f"{path.stem}.after-step-{step}.jsonl").write_text("".join(dropped))
    path.write_text("".join(keep))


def last_diagnostics(path: Path) -> list[dict]:
    """The rows of the last diagnostic step in diagnostics.jsonl (none yet: [])."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["step"] == rows[-1]["step"]] if rows else []


def heldout_line(record: dict) -> str:
    k = max((int(key.rsplit("@", 1)[1]) for key in record if key.startswith("eval/strict/pass@")),
            default=None)
    line = (f"  held-out at step {record['step']} ({record['eval/problems']} problems, "
            f"strict / lenient): greedy {record['eval/greedy/strict/accuracy']:.3f} / "
            f"{record['eval/greedy/lenient/accuracy']:.3f}")
    if k:
        line += (f", sampled {record['eval/samples/strict/accuracy']:.3f} / "
                 f"{record['eval/samples/lenient/accuracy']:.3f}, "
                 f"pass@{k} {record[f'eval/strict/pass@{k}']:.3f}")
    return line


def log_samples(run_dir: Path, step: int, ro: Rollouts, tok):
    with (run_dir / "samples.jsonl").open("a") as f:
        for i, problem in enumerate(ro.problems):
            for k in range(ro.rewards.shape[1]):
                f.write(json.dumps({"step": step, "id": problem.id, "gold": problem.answer,
                                    "reward": float(ro.rewards[i, k]),
                                    "completion": ro.texts[i * ro.rewards.shape[1] + k]}) + "\n")
    print(f"  sample (reward {float(ro.rewards[0, 0]):.0f}, gold {ro.problems[0].answer}): "
          f"{ro.texts[0][:300]!r}")


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main(argv=None):
    cfg, args = parse_args(argv)
    if args.dry_run:
        cfg = dataclasses.replace(cfg, steps=1, save_every=1, diag_every=0)
    try:
        device_type = resolve_device(cfg)[0].type
    except ValueError as e:
        sys.exit(f"error: {e}")
    # under torchrun: each process on its own GPU from here on, before any collective
    world = World.from_env(device_type, cfg.dist_timeout_s)
    if args.resume:
        run_dir = Path(args.resume)
    elif args.dry_run and cfg.out is None:
        run_dir = Path(world.broadcast(
            tempfile.mkdtemp(prefix="grpo-dry-run-") if world.main else None)) / "run"
    else:
        run_dir = Path(cfg.out or f"runs/{cfg.preset}-{cfg.normalize}-{cfg.optimizer}-s{cfg.seed}")
        if world.main and run_dir.exists():
            sys.exit(f"error: run folder {run_dir} already exists; "
                     f"pass --resume {run_dir} to continue it, or --out NEW_FOLDER")
        cfg = dataclasses.replace(cfg, out=str(run_dir))
    if world.main:
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
    finished = False
    who = f" (rank {world.rank})" if world.size > 1 else ""
    try:
        train(cfg, run_dir, resume=bool(args.resume), world=world)
        finished = True
    except (FileNotFoundError, ValueError, ConnectionError, TrainingStopped) as e:
        sys.exit(f"error{who}: {e}")
    except PeerFailed as e:
        sys.exit(f"error{who}: another process of this data-parallel run failed or "
                 f"stopped answering within --dist-timeout-s {cfg.dist_timeout_s:g}; the last "
                 f"checkpoint in {run_dir}/checkpoints is intact "
                 f"(python grpo.py --resume {run_dir}). Cause: {e}")
    except Exception as e:
        if world.size == 1:
            raise
        traceback.print_exc()  # this process's own error, which stops the others
        sys.exit(f"error{who}: this process failed: {type(e).__name__}: "
                 f"{(str(e).splitlines() or [''])[0]}; the last checkpoint in "
                 f"{run_dir}/checkpoints is intact (python grpo.py --resume {run_dir})")
    finally:
        world.close(finished)
    if args.dry_run and world.main:
        print(f"dry run ok: one step end to end in {run_dir}")


if __name__ == "__main__":
    main()
