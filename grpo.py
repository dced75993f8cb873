r"""
GRPO vs REINFORCE for math reasoning, as compared in "Why GRPO Needs Normalization"
(arXiv 2601.23135).

One step: take the next prompts, draw K completions each with the KV-cache sampler (each prompt
prefilled once), score them with the binary reward, turn rewards into advantages per group of K, and
take one policy-gradient step on the LoRA weights:

    --normalize std    A_ik = (r_ik - mean_k r_ik) / (std_k r_ik + eps)
                       the paper's GRPO (--std-estimator: bessel as TRL, or population)
    --normalize batch  A_ik = (r_ik - mean_k r_ik) / (std of the batch + eps)
                       one step size for the whole batch (the authors' batch_std)
    --normalize matched  A_ik = (r_ik - mean_k r_ik) / s, one s per step: std's mean |A|
                       the scale-matched control: std - matched is the per-prompt reweighting
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
and checkpoints/step_N (the adapter in peft's format, optimizer, RNG states, data cursor, and a
manifest of each file's size and sha256), written atomically. --resume checks every file of a
checkpoint before loading it; a damaged one is renamed aside (damaged-step_N) and the run resumes
from the newest intact one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import re
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
import eval as E  # as E: the module is named like the builtin
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
    "The paper preset"; tests/test_trl.py runs TRL 0.23.1's step beside it): one prompt x 8
    completions per step, advantages over TRL's Bessel std + 1e-4, TRL's default loss_type "dapo"
    (our token-mean), beta 0.02, lr 1e-5 decayed linearly, clip 0.1, prompts cut to their last 768
    tokens, their prompt with the gold reasoning in it. LoRA r=64, alpha=128 is this project's spec
    (they ran 16/32). `--preset demo` replaces the fields listed in PRESETS["demo"]."""
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
    max_prompt_tokens: int = arg(768, "keep a prompt's last N tokens, as TRL's "
                                      "max_prompt_length cut them (from the left); 0: no cut")
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
    normalize: str = arg("std", "std | batch | matched | none (see group_advantages)")
    std_estimator: str = arg("bessel", "bessel (1/(K-1): TRL's torch.std, what the authors ran) | "
                                       "population (1/K: the paper's sigma); see group_advantages")
    std_eps: float = arg(1e-4, "guards the division by the std (TRL: 1e-4; binary rewards: "
                               "std >= 0.33 or 0)")
    loss_agg: str = arg("token-mean", "token-mean (TRL's dapo) | seq-sum | seq-mean "
                                      "(see policy_loss)")
    kl_coef: float = arg(0.02, "beta of a k3 KL penalty to the base model (adapter off)")
    optimizer: str = arg("adamw", "adamw | sgd")
    lr: float = arg(1e-5, "peak learning rate, decayed linearly to 0")
    weight_decay: float = arg(0.0, "on the LoRA weights")
    grad_clip: float = arg(0.1, "max global grad norm; 0 disables")
    micro_batch: int = arg(4, "sequences per forward/backward (gradient accumulation)")
    steps: int = arg(350, "optimizer steps (one batch of rollouts each)")
    seed: int = arg(0, "data order, sampling, LoRA init (0 <= seed < 2048: model.MAX_SEED)")
    # logging, checkpoints, diagnostics
    out: str | None = arg(None, "run folder; default runs/<preset>-<normalize>-<optimizer>-s<seed>")
    log_samples_every: int = arg(10, "steps between completions written to samples.jsonl")
    save_every: int = arg(50, "steps between checkpoints")
    keep_checkpoints: int = arg(3, "the newest N are kept")
    diag_every: int = arg(0, "0: off. Gradient cosines (rms of the true gradients' with an "
                             "interval), curvature vs reward std apart from pass rate")
    diag_prompts: int = arg(16, "the fixed diagnostic prompts, >= 3 "
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
    # Its std is the population std + 1e-6, as in the committed study (docs/results/study) that
    # ran before the paper preset took TRL's Bessel std + 1e-4.
    "demo": dict(model=str(DEMO_MODEL), lora_rank=16, lora_alpha=32.0, grad_checkpointing=False,
                 data="demo", template="plain", prompts_per_step=16, max_new_tokens=64,
                 std_estimator="population", std_eps=1e-6,
                 loss_agg="seq-sum", kl_coef=0.0, lr=2e-3, grad_clip=1.0, micro_batch=128,
                 steps=150, save_every=50, log_samples_every=25, eval_every=25, device="cpu"),
}
# What a run computed before its config.json had these fields (read on --resume).
BEFORE_FIELD_EXISTED = dict(std_estimator="population", max_prompt_tokens=0)
CHOICES = dict(preset=list(PRESETS), normalize=["std", "batch", "matched", "none"],
               std_estimator=["bessel", "population"], optimizer=["adamw", "sgd"],
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
    # Every flag defaults to None, meaning "not given": the preset's (or, on --resume, the saved
    # config's) value then stands, and only flags the user typed override it.
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        defaults = ", ".join(f"{p}: {PRESETS[p].get(f.name, f.default)}" for p in PRESETS)
        text = f"{f.metadata['help']} ({defaults})".replace("%", "%%")  # argparse formats %
        if f.type == "bool":  # a string: annotations are not evaluated (from __future__)
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
        saved, problem = read_run_config(path)
        if problem:  # a damaged file, not a misused flag: no usage text above the message
            sys.exit(f"error: --resume {args.resume}: {problem}")
        # the right wins: what an older run computed < its config.json < --steps
        cfg = Config(**(BEFORE_FIELD_EXISTED | saved | given))
    else:
        preset = given.get("preset", Config.preset)
        cfg = Config(**(PRESETS[preset] | given | {"preset": preset}))
    problems = validate(cfg)
    if problems:
        ap.error("; ".join(problems))
    return cfg, args


def read_run_config(path: Path) -> tuple[dict, str | None]:
    """A run folder's config.json -> (its fields, None), or ({}, what is wrong with it)."""
    try:
        saved = read_json(path)
    except DamagedCheckpoint as e:  # not UTF-8 or not JSON: the file and line
        return {}, str(e)
    if not isinstance(saved, dict):
        return {}, f"{path}: not a JSON object of Config fields"
    # JSON has one number type: a hand-written 2 is as good a float as 2.0
    kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
             "str | None": (str, type(None))}
    fields = {f.name: kinds.get(f.type, (object,)) for f in dataclasses.fields(Config)}
    unknown = sorted(set(saved) - set(fields))
    if unknown:
        return {}, f"{path}: unknown fields {unknown} (not written by this version of grpo.py?)"
    wrong = [f"{name}={value!r}" for name, value in saved.items()
             if not isinstance(value, fields[name])
             # bool is a subclass of int: without this, "steps": true would pass as 1
             or (isinstance(value, bool) and bool not in fields[name])]
    if wrong:
        return {}, f"{path}: values of the wrong type: {', '.join(wrong)}"
    return saved, None


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
    if cfg.diag_every and cfg.diag_prompts < 3:
        problems.append(f"--diag-prompts must be >= 3 with --diag-every (got {cfg.diag_prompts}): "
                        "the cosine's interval leaves one prompt out and needs a pair left")
    for name in ("eval_every", "diag_every", "eval_samples", "max_prompt_tokens"):
        if getattr(cfg, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0")
    if cfg.eval_every and cfg.eval_problems < 1:
        problems.append("--eval-problems must be >= 1")
    if not 0 <= cfg.seed < M.MAX_SEED:  # the draws' seeds must fit torch's 32 bits apart
        problems.append(f"--seed must be in [0, {M.MAX_SEED}) (got {cfg.seed})")
    # torchrun's variable, read directly: arguments are checked before the process group exists
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.prompts_per_step % world_size:
        problems.append(f"--prompts-per-step {cfg.prompts_per_step} is not divisible by the "
                        f"{world_size} processes (each process takes whole groups)")
    return problems


# -----------------------------------------------------------------------------
# The two estimators


def group_advantages(rewards: torch.Tensor, normalize: str, eps: float = 1e-6,
                     batch_std: float | None = None, matched_divisor: float | None = None,
                     estimator: str = "population") -> torch.Tensor:
    """rewards [prompts, K] -> advantages [prompts, K]. With c_ik = r_ik - mean_k r_ik:

      none    (REINFORCE)  A_ik = c_ik
      std     (GRPO)       A_ik = c_ik / (std_k r_ik + eps)    per-prompt step size
      batch   (batch std)  A_ik = c_ik / (std_jk r_jk + eps)   one step size per batch
      matched (control)    A_ik = c_ik / s,  s = sum_ik |c_ik| / sum_ik |c_ik| / (std_k r_ik + eps)

    with the std over n rewards  std = sqrt(sum (r - mean)^2 / (n - 1))  for estimator "bessel"
    (TRL's torch.std, what the authors' runs divided by, with eps 1e-4) and
    std = sqrt(sum (r - mean)^2 / n)  for "population" (the paper's sigma). They differ by the
    constant sqrt(K / (K - 1)): 1.069 at K = 8.

    batch is the authors' `batch_std` arm (TRL's scale_rewards="batch"). Its std includes the
    variance between prompts, so its steps are smaller than std's (demo: mean |A| ~8% lower) and
    std - batch mixes the per-prompt reweighting with a step-size difference. matched is the clean
    control: one divisor s for the whole step, chosen so that its mean |A| equals std's exactly
    (for binary rewards and the population std, sum_k |c_ik| = 2 K sigma_i^2, so
    s = sum_i sigma_i^2 / sum_i sigma_i, the groups' mean std weighted by their std). Its update is
    none's times 1/s at std's step size: std - matched is the per-prompt reweighting alone,
    matched - none the step size alone. With one prompt per step batch, matched and std are the
    same rule (to rounding). eps only guards the division: a group whose rewards are all equal has
    c = 0, hence zero advantage under every rule.
    batch_std, matched_divisor: the step-wide values when this process holds only its share (data
    parallel; see global_batch_std, global_matched_divisor).
    """
    bessel = bessel_correction(estimator)
    # every rule starts from the group's own baseline, its mean reward (no value network)
    centered = rewards - rewards.mean(dim=-1, keepdim=True)
    if normalize == "none":
        return centered
    if normalize == "std":
        return centered / (rewards.std(dim=-1, unbiased=bessel, keepdim=True) + eps)
    if normalize == "batch":
        return centered / ((rewards.std(unbiased=bessel) if batch_std is None else batch_std) + eps)
    if normalize == "matched":
        s = matched_divisor if matched_divisor is not None else \
            matched_ratio(*matched_sums(rewards, eps, estimator))
        return centered / s
    raise ValueError(f"normalize must be 'std', 'batch', 'matched' or 'none', got {normalize!r}")


def matched_sums(rewards: torch.Tensor, eps: float, estimator: str) -> tuple[float, float]:
    """The matched divisor's numerator and denominator: sum |c_ik| (none's size) and
    sum |c_ik| / (std_k r_ik + eps) (std's). Sums, so that ranks can add theirs."""
    size = (rewards - rewards.mean(dim=-1, keepdim=True)).abs()
    group_std = rewards.std(dim=-1, unbiased=bessel_correction(estimator), keepdim=True)
    return float(size.sum()), float((size / (group_std + eps)).sum())


def matched_ratio(size: float, size_std: float) -> float:
    return size / size_std if size_std > 0 else 1.0  # no signal: A = 0 whatever s is


def bessel_correction(estimator: str) -> bool:
    """True for the "bessel" std (divide by n - 1), False for "population" (divide by n)."""
    if estimator not in CHOICES["std_estimator"]:
        raise ValueError(f"--std-estimator must be 'bessel' or 'population', got {estimator!r}")
    return estimator == "bessel"


# -----------------------------------------------------------------------------
# The policy-gradient loss


def policy_loss(token_logprobs, mask, advantages, loss_agg: str, step_tokens: float,
                step_completions: float, kl_tokens=None, kl_coef=0.0):
    """-(advantage-weighted log-likelihood) of a micro-batch, as its share of the whole step's loss:
    divided by the step's count of tokens or completions (every micro-batch, every rank), so that
    the micro-batches' losses, and their gradients, add up to the step's.

    token_logprobs, mask [B, T]; advantages [B]. The aggregation rules:
      seq-sum     sum_i A_i * sum_t log p_it / step_completions
                  the paper: sequence log-prob, constant scale
      seq-mean    sum_i A_i * mean_t log p_it / step_completions
                  per-sequence mean (GRPO paper; length-biased)
      token-mean  sum_i A_i * sum_t log p_it / step_tokens
                  DAPO's token mean = TRL's "dapo"
    An optional KL penalty (per token, aggregated the same way) is added with weight kl_coef.
    """
    mask = mask.to(token_logprobs.dtype)
    divisor = step_tokens if loss_agg == "token-mean" else step_completions

    def per_completion(x):  # [B, T] -> [B]
        summed = (x * mask).sum(-1)
        return summed / mask.sum(-1).clamp(min=1) if loss_agg == "seq-mean" else summed

    loss = -(advantages * per_completion(token_logprobs)).sum() / divisor
    if kl_tokens is not None and kl_coef:
        loss = loss + kl_coef * per_completion(kl_tokens).sum() / divisor
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
    t0 = time.time()
    # one seed for every evaluation of the run: the same draws each time, so the curve moves with
    # the adapter, not with sampling noise
    groups, _ = E.heldout_accuracy(model, tok, problems, cfg.template, cfg.max_new_tokens,
                                   cfg.eval_samples, cfg.temperature,
                                   seed=cfg.seed,
                                   max_prompt_tokens=cfg.max_prompt_tokens, decode=decode)
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
        # seeded by (run seed, epoch), not drawn from a running generator: a resumed run rebuilds
        # the epoch's order from the two numbers its checkpoint keeps
        order = list(range(len(self.problems)))
        random.Random(M.derived_seed(self.seed, "prompt-order", self.epoch)).shuffle(order)
        return order

    def take(self, n: int) -> list[D.Problem]:
        """The next n problems. A step never spans two epochs: with fewer than n left, the rest
        of the epoch is skipped (a DataLoader's drop_last), so no step holds a problem twice."""
        if self.position + n > len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._shuffle()
        out = [self.problems[i] for i in self._order[self.position:self.position + n]]
        self.position += n
        return out

    def state(self):
        return {"epoch": self.epoch, "position": self.position}


# -----------------------------------------------------------------------------
# Rollouts


@dataclass
class Rollouts:
    """One rank's rollouts of a step: what the update needs."""
    problems: list          # the step's prompts' problems
    prompts: list           # token ids per prompt
    completions: list       # token ids per completion, prompt-major (K per prompt)
    texts: list
    rewards: torch.Tensor   # [prompts, K]
    truncated: list = field(default_factory=list)
    sampler_stats: dict = field(default_factory=dict)  # sampler_mismatch, with --sampler merged
    sample_s: float = 0.0   # seconds drawing them (--sampler merged: its copy and mismatch too)
    grade_s: float = 0.0    # seconds decoding and grading them


def rollout(model, tok, problems, cfg: Config, seed: int, first_row: int = 0,
            decode: FD.FastDecode | None = None) -> Rollouts:
    """K completions per problem and their binary rewards [problems, K]. decode: the run's decode
    loop (make_decoder; kept from step to step), None: the plain loop."""
    t0 = time.time()
    prompts = [D.prompt_ids(tok, p, cfg.template, cfg.max_prompt_tokens, cfg.max_new_tokens,
                            model.config.max_position_embeddings) for p in problems]
    # sample: K completions per prompt from the policy itself, each prompt prefilled once
    model.eval()  # no adapter dropout while sampling (--lora-dropout acts in the learner only)
    if cfg.sampler == "exact":
        # vocab_size: the tokenizer's ids (Qwen2.5: 151,665); the other rows of the 151,936-row
        # embedding are padding no text contains, never drawn. first_row: see train()
        completions = M.generate(model, prompts, cfg.max_new_tokens, temperature=cfg.temperature,
                                 eos_token_id=M.stop_ids(tok), seed=seed,
                                 num_samples=cfg.group_size, vocab_size=tok.vocab_size,
                                 first_row=first_row, decode=decode)
        sampler_stats = {}
    else:
        completions, sampler_stats = sample_merged(model, tok, prompts, cfg, seed, first_row,
                                                   decode)
    t1 = time.time()
    # grade: the binary reward of each completion against its problem's gold answer
    texts = [M.completion_text(tok, c) for c in completions]
    golds = [p.answer for p in problems for _ in range(cfg.group_size)]
    rewards = torch.tensor([grader.reward(t, g) for t, g in zip(texts, golds)],
                           dtype=torch.float32)
    t2 = time.time()
    # record
    eos = set(M.stop_ids(tok))
    truncated = [not c or c[-1] not in eos for c in completions]  # ran into --max-new-tokens
    if decode is not None and (decode.compile or decode.compile_error):
        # 0 once compiling failed and the sampler went on eagerly (the mean over processes)
        sampler_stats["sampler/compiled"] = float(decode.compile)
    return Rollouts(problems, prompts, completions, texts,
                    rewards.view(len(problems), cfg.group_size), truncated, sampler_stats,
                    sample_s=t1 - t0, grade_s=t2 - t1)


def sample_merged(model, tok, prompts: list, cfg: Config, seed: int, first_row: int,
                  decode: FD.FastDecode | None) -> tuple[list, dict]:
    """--sampler merged: draw from a copy of the model with the adapter merged into its weights
    (one matmul per projection instead of three; not the learner's function to the last bit, the
    less so in bfloat16) -> (completions, sampler_mismatch's measure of the gap)."""
    merged = L.merged_copy(model)  # rebuilt from the current adapter every step
    completions, logprobs = M.generate(merged, prompts, cfg.max_new_tokens,
                                       temperature=cfg.temperature, eos_token_id=M.stop_ids(tok),
                                       seed=seed, num_samples=cfg.group_size,
                                       vocab_size=tok.vocab_size, return_logprobs=True,
                                       first_row=first_row, decode=decode)
    del merged  # a second copy of the model: gone before the learner runs
    return completions, sampler_mismatch(model, prompts, completions, logprobs, cfg,
                                         tok.vocab_size)


@torch.no_grad()
def sampler_mismatch(model, prompts: list, completions: list, sampler_logprobs: list,
                     cfg: Config, vocab_size: int) -> dict:
    """How far the sampler's distribution is from the learner's, on the tokens it drew. Per token,
    d = log p_learner - log p_sampler (the learner: completion_logprobs of the model, adapter
    unmerged; the sampler: the log-probs generate returns). kl_k3 is the k3 estimate of
    KL(sampler || learner) per token, mean(exp(d) - 1 - d) over the samples the sampler drew;
    logp_abs_diff_mean is mean |d|."""
    K = cfg.group_size
    rows = [i for i, c in enumerate(completions) if c]
    learner = []
    for start in range(0, len(rows), cfg.micro_batch):
        batch = rows[start:start + cfg.micro_batch]
        groups = sorted({i // K for i in batch})
        lp, _, _ = M.completion_logprobs(
            model, [prompts[g] for g in groups], [completions[i] for i in batch],
            [groups.index(i // K) for i in batch], cfg.temperature, vocab_size)
        # float64: in float32, exp(d) - 1 - d is exactly 0 at d = 1e-4 (true value 5e-9)
        learner += [lp[j, :len(completions[i])].double().cpu() for j, i in enumerate(batch)]
    learner = torch.cat(learner)
    sampler = torch.tensor([x for i in rows for x in sampler_logprobs[i]], dtype=torch.float64)
    return {"sampler/kl_k3": float(kl_k3(sampler, learner).mean()),
            "sampler/logp_abs_diff_mean": float((learner - sampler).abs().mean())}


# -----------------------------------------------------------------------------
# One update


def update(model, params, optimizer, ro: Rollouts, advantages: torch.Tensor, cfg: Config,
           vocab_size: int, world: World = World()) -> tuple[float, dict]:
    """One policy-gradient step on this batch of rollouts -> (loss, stats); (nan, {}) when the loss
    or the gradient is not finite, and the step is skipped. Data parallel: ro is this rank's
    share, and the step is the whole batch's (see accumulate_gradient)."""
    optimizer.zero_grad(set_to_none=True)
    sums = accumulate_gradient(model, ro, advantages.flatten(), cfg, vocab_size, world)
    grad_norm = optimizer_step(optimizer, params, grad_clip=cfg.grad_clip, world=world,
                               loss_finite=sums.loss_finite)
    if grad_norm is None:
        return float("nan"), {}
    return update_stats(sums, grad_norm, cfg, world)


@dataclass
class GradientSums:
    """What accumulate_gradient adds up over this rank's micro-batches, for the logs."""
    step_completions: int          # in the whole step (every rank), forwarded or not
    loss: float = 0.0              # policy_loss, summed over micro-batches
    loss_finite: bool = True       # False: a micro-batch's loss was nan or inf (backward not run)
    forwarded_completions: int = 0
    forwarded_tokens: int = 0
    entropy: float = 0.0           # summed over forwarded tokens
    kl: float = 0.0                # summed over forwarded tokens
    # TRL's logged loss, kl and entropy (see trl_logs): kl and entropy are summed per completion
    # (each completion's token mean)
    trl_loss: float = 0.0
    trl_kl: float = 0.0
    trl_entropy: float = 0.0


def accumulate_gradient(model, ro: Rollouts, advantages: torch.Tensor, cfg: Config,
                        vocab_size: int, world: World) -> GradientSums:
    """Backpropagate policy_loss micro-batch by micro-batch, adding into each LoRA weight's .grad;
    advantages [completions], prompt-major as ro.completions.

    policy_loss divides by the whole step's count of tokens or completions (over every rank), so
    the micro-batches' gradients, and then the ranks', add up to the gradient of the step's loss.
    A completion with zero advantage adds nothing to the policy-gradient term, so without KL it is
    not even forwarded; a step with no signal at all then has an exactly zero gradient.
    """
    K = cfg.group_size
    # over every completion of every rank, also those not forwarded below (TRL's dapo divides by
    # all the batch's completion tokens, zero-advantage ones included)
    step_tokens, step_completions = world.sum_values(sum(len(c) for c in ro.completions),
                                                     len(ro.completions))
    rows = [i for i in range(len(ro.completions))
            if (advantages[i] != 0 or cfg.kl_coef > 0) and ro.completions[i]]
    sums = GradientSums(step_completions=int(step_completions), forwarded_completions=len(rows))
    device = next(model.parameters()).device
    model.train()  # --lora-dropout acts from here (0, the default: the sampler's own function)
    for start in range(0, len(rows), cfg.micro_batch):
        batch = rows[start:start + cfg.micro_batch]
        # the micro-batch's prompts, each run once for all its completions in the batch
        groups = sorted({i // K for i in batch})
        prompts = [ro.prompts[g] for g in groups]
        completions = [ro.completions[i] for i in batch]
        prompt_of = [groups.index(i // K) for i in batch]
        lp, entropy, mask = M.completion_logprobs(model, prompts, completions, prompt_of,
                                                  cfg.temperature, vocab_size)
        kl = None
        if cfg.kl_coef > 0:  # the reference policy: the base model, i.e. the adapter switched off
            with torch.no_grad(), L.lora_disabled(model):
                ref, _, _ = M.completion_logprobs(model, prompts, completions, prompt_of,
                                                  cfg.temperature, vocab_size)
            kl = kl_k3(lp, ref)
            sums.kl += float((kl.detach() * mask).sum())
            sums.trl_kl += float(token_mean(kl.detach(), mask).sum())
        adv = advantages[batch].to(device)
        loss = policy_loss(lp, mask, adv, cfg.loss_agg, step_tokens, step_completions, kl,
                           cfg.kl_coef)
        if not torch.isfinite(loss):
            # skipped on every rank anyway (optimizer_step): no backward, no further forwards
            sums.loss_finite = False
            break
        loss.backward()
        sums.loss += loss.item()
        with torch.no_grad():  # TRL's loss value: its ratio exp(lp - lp.detach()) = 1 for log p
            sums.trl_loss += float(policy_loss(torch.ones_like(lp), mask, adv, cfg.loss_agg,
                                               step_tokens, step_completions, kl, cfg.kl_coef))
        sums.entropy += float((entropy * mask).sum())
        sums.trl_entropy += float(token_mean(entropy, mask).sum())
        sums.forwarded_tokens += int(mask.sum())
    return sums


def optimizer_step(optimizer, params: list, grad_clip: float, world: World,
                   loss_finite: bool) -> float | None:
    """Sum the gradient over ranks, clip its global norm to grad_clip (0: no clipping) and step
    -> the norm before clipping; None, and no step, if any rank's loss or the gradient is not
    finite (every rank skips the same steps).

    The optimizer steps also on a step with an exactly zero gradient (no group carried a signal):
    AdamW then moves by its momentum, as in the authors' TRL runs."""
    # a parameter no loss reached has a zero gradient, not a missing one (AdamW skips None)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if world.size > 1:  # one all-reduce of the flat LoRA gradient (parallel.py says why not DDP)
        flat = world.sum_tensor(torch.cat([p.grad.flatten() for p in params]))
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))
    # after the sum, so every rank clips by the whole step's norm (inf: measure it, clip nothing)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(
        params, grad_clip if grad_clip > 0 else float("inf")))
    # decided together: a rank that stepped or skipped alone would leave the adapters different
    if world.any(not loss_finite or not math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return grad_norm


def update_stats(sums: GradientSums, grad_norm: float, cfg: Config,
                 world: World) -> tuple[float, dict]:
    """The step's loss and its metrics.jsonl entries, summed over ranks."""
    loss, entropy, tokens, kl, trl_loss, trl_kl, trl_entropy, forwarded = world.sum_values(
        sums.loss, sums.entropy, sums.forwarded_tokens, sums.kl, sums.trl_loss, sums.trl_kl,
        sums.trl_entropy, sums.forwarded_completions)
    stats = {"grad_norm_preclip": grad_norm,
             "grad_clipped": bool(cfg.grad_clip > 0 and grad_norm > cfg.grad_clip),
             "learner_tokens": int(tokens),
             "entropy": entropy / tokens if tokens else None}  # None: nothing was forwarded
    if cfg.kl_coef > 0:
        stats["kl"] = kl / tokens if tokens else None
    # TRL's keys (trl_logs): the loss for its loss_type "dapo" (token-mean) or "grpo" (seq-mean);
    # kl and entropy as means over completions, when TRL's would have seen every completion
    stats["trl/grad_norm"] = grad_norm
    if cfg.loss_agg != "seq-sum":
        stats["trl/loss"] = trl_loss
    if forwarded == sums.step_completions:
        stats["trl/entropy"] = trl_entropy / forwarded
        if cfg.kl_coef > 0:
            stats["trl/kl"] = trl_kl / forwarded
    return loss, stats


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B]: each completion's mean over its own tokens."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def global_batch_std(rewards: torch.Tensor, world: World, estimator: str) -> float | None:
    """The std of the whole step's rewards from two sums over ranks (None in one process: the batch
    is all here, and group_advantages computes it)."""
    if world.size == 1:
        return None
    n, total, squares = world.sum_values(rewards.numel(), float(rewards.sum()),
                                         float(rewards.pow(2).sum()))
    # E[r^2] - E[r]^2 can come out a hair below 0 by rounding when every reward is equal
    variance = max(squares / n - (total / n) ** 2, 0.0)  # population: 1/n
    return math.sqrt(variance * n / (n - 1) if bessel_correction(estimator) else variance)


def global_matched_divisor(rewards: torch.Tensor, eps: float, world: World,
                           estimator: str) -> float | None:
    """group_advantages' matched divisor over the whole step, from two sums over ranks (None in one
    process: group_advantages computes it)."""
    if world.size == 1:
        return None
    return matched_ratio(*world.sum_values(*matched_sums(rewards, eps, estimator)))


def make_optimizer(params, cfg: Config):
    # torch's betas (0.9, 0.999) and eps 1e-8 equal HF Trainer's defaults (under TRL, the authors'
    # framework); weight_decay is always passed because torch's default is 0.01, HF's 0.0
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Plain gradient ascent on J (descent on the loss), as in the paper's theory: no momentum, no
    # rescaling.
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg: Config) -> float:
    """Linear decay from lr to 0 over the run, no warmup (the authors' schedule).
    step counts from 0."""
    # HF's get_linear_schedule_with_warmup at 0 warmup: the first step takes lr, the last lr / steps
    return cfg.lr * (1 - step / cfg.steps)


# -----------------------------------------------------------------------------
# The paper's diagnostics (diagnostics.py): gradient orthogonality and curvature vs reward variance,
# with controls


def diagnostic_prompts(problems, cfg: Config) -> list:
    """The fixed diagnostic set: drawn once per run (from the seed),
    re-scored at every diagnostic step."""
    # a str seed is hashed with sha512, not hash(): the same set in every process and Python run
    return random.Random(f"diag-{cfg.seed}").sample(problems, min(cfg.diag_prompts, len(problems)))


def run_diagnostics(model, tok, params, prompts, cfg: Config, step: int, previous_rows: list[dict],
                    decode=None):
    """2K fresh samples per diagnostic prompt (own seed: training is not perturbed)
    -> (summary as metrics.jsonl keys, rows of diagnostics.jsonl)."""
    t0 = time.time()
    # 2K: two disjoint sets of K, two independent estimates of each prompt's gradient
    ro = rollout(model, tok, prompts, dataclasses.replace(cfg, group_size=2 * cfg.group_size),
                 seed=M.derived_seed(cfg.seed, "diagnostics", step), decode=decode)
    summary, rows = diag.measure(model, params, ro, cfg.group_size, cfg.temperature, tok.vocab_size,
                                 step, cfg.seed)
    if previous_rows and "curvature_a" in previous_rows[0]:  # not an older diagnostics.py's row
        summary |= diag.across_steps(previous_rows, rows)
    return summary | {"time/diagnostics": time.time() - t0}, rows


# -----------------------------------------------------------------------------
# Checkpoints: adapter (peft format) + optimizer + RNG states + data cursor, written atomically,
# with a manifest of each file's size and sha256; validated file by file before --resume loads one

TRAINER_STATE, TRAINER_TENSORS, MANIFEST = ("trainer_state.json", "trainer_state.safetensors",
                                            "manifest.json")
CHECKPOINT_FILES = (L.ADAPTER_CONFIG, L.ADAPTER_WEIGHTS, TRAINER_STATE, TRAINER_TENSORS)


def save_checkpoint(run_dir: Path, step: int, model, optimizer, stream: PromptStream, extra: dict,
                    keep: int):
    from safetensors.torch import save_file
    ckpt_dir = run_dir / "checkpoints"
    final = ckpt_dir / f"step_{step:06d}"  # zero-padded: name order is step order
    if final.exists():
        return final
    # beside the final folder: the os.replace below is a rename within one filesystem, atomic
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{step:06d}-", dir=ckpt_dir))
    L.save_adapter(model, tmp, base_model_name_or_path=extra.get("model"))
    # optimizer and RNG states as safetensors + JSON, not torch.save: loading them unpickles nothing
    opt_state = optimizer.state_dict()
    tensors = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/torch_cuda{i}"] = s
    for pid, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"optimizer/{pid}/{name}"] = (value if torch.is_tensor(value)
                                                  else torch.tensor(value))
    # safetensors refuses a non-contiguous tensor
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
              tmp / TRAINER_TENSORS)
    np_state = np.random.get_state()
    state = {"step": step, "data": stream.state(), "param_groups": opt_state["param_groups"],
             "python_rng": random.getstate(),
             "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             **{k: v for k, v in extra.items() if k != "model"}}
    (tmp / TRAINER_STATE).write_text(json.dumps(state))
    write_manifest(tmp)
    # on disk before the rename, so a crash cannot leave a torn checkpoint
    for path in [*tmp.iterdir(), tmp]:
        fsync(path)
    os.replace(tmp, final)  # atomic: a checkpoint folder is complete or absent
    fsync(ckpt_dir)  # the rename itself, on disk
    # older checkpoints go only once the new one is durable
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
    state = json.loads((ckpt / TRAINER_STATE).read_text())
    tensors = load_file(ckpt / TRAINER_TENSORS)
    opt_state = {"state": {}, "param_groups": state["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, pid, name = key.split("/")
            opt_state["state"].setdefault(int(pid), {})[name] = value
    device = next(iter(model.parameters())).device
    for s in opt_state["state"].values():
        # the step count stays on the CPU, where AdamW (neither fused nor capturable) keeps it
        for name, value in s.items():
            s[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng/torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/torch_cuda")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    py = state["python_rng"]
    # JSON gave back lists; setstate takes only the tuples getstate made
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return state


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"))
    return ckpts[-1] if ckpts else None


# --- Validation: is a checkpoint intact? (reads sizes, headers and JSON; never loads a tensor) ---

class DamagedCheckpoint(ValueError):
    """A file of a checkpoint is missing, cut short, altered or not this run's."""

    def __init__(self, path: Path | str, what: str):
        super().__init__(f"{path}: {what}")


def write_manifest(folder: Path):
    """Each file's size and sha256, recorded inside the checkpoint before its atomic rename."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
             for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_checkpoint(ckpt: Path, cfg: Config):
    """Raise DamagedCheckpoint naming the first file that is wrong, and what is wrong with it:
    a file missing, a size or sha256 other than manifest.json recorded at save time, a
    safetensors header that does not fit its file, trainer_state.json unreadable or of another
    step, an adapter whose config or tensor shapes are not the run's LoRA (rank, alpha, targets).
    Checkpoints written before manifests (no manifest.json) get every check but the recorded
    sizes and sums."""
    if not ckpt.is_dir():
        raise DamagedCheckpoint(ckpt, "not a folder")
    if not ckpt.name.removeprefix("step_").isdigit():
        raise DamagedCheckpoint(ckpt, "not named step_<N>")
    for name in CHECKPOINT_FILES:
        if not (ckpt / name).is_file():
            raise DamagedCheckpoint(ckpt / name, "missing")
    manifest = read_manifest(ckpt)
    for name, entry in manifest.items():
        path, size = ckpt / name, entry["bytes"]
        if not path.is_file():
            raise DamagedCheckpoint(path, "missing (manifest.json lists it)")
        if path.stat().st_size != size:
            raise DamagedCheckpoint(path, ("truncated: " if path.stat().st_size < size else "")
                                    + f"{path.stat().st_size:,} bytes, {size:,} when saved")
    adapter_shapes = check_adapter(ckpt, cfg)
    check_trainer_state(ckpt, adapter_shapes)
    # last: the one check that reads every byte (0.9 GB at r=64: adapter and AdamW moments, fp32)
    for name, entry in manifest.items():
        if sha256_of(ckpt / name) != entry["sha256"]:
            raise DamagedCheckpoint(ckpt / name, "sha256 differs from the one recorded at save "
                                                 "time (the file changed on disk)")


def read_manifest(ckpt: Path) -> dict[str, dict]:
    """manifest.json's {file: {"bytes", "sha256"}}; {} for a checkpoint written before manifests."""
    path = ckpt / MANIFEST
    if not path.exists():
        return {}
    manifest = read_json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(e, dict) and isinstance(e.get("bytes"), int)
        and isinstance(e.get("sha256"), str) for e in files.values())
    if not ok:
        raise DamagedCheckpoint(path, 'not {"files": {name: {"bytes", "sha256"}}}')
    for name in CHECKPOINT_FILES:
        if name not in files:
            raise DamagedCheckpoint(path, f"does not list {name}")
    return files


def read_json(path: Path):
    """A JSON file's value (a checkpoint's, or a run's config.json); DamagedCheckpoint naming the
    file, and the line where it is not JSON."""
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        raise DamagedCheckpoint(path, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise DamagedCheckpoint(f"{path}:{e.lineno}",
                                f"not valid JSON ({e.msg}, column {e.colno})") from None


SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2,
                           "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8,
                           "U64": 8, "F64": 8}


def safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors file's header, after checking the header against
    the file: [8-byte little-endian header length][JSON header][tensor data], each tensor's
    data_offsets spanning dtype size x numel bytes, the spans tiling the data exactly."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DamagedCheckpoint(path, f"truncated: {size} bytes, "
                                          "not even the 8-byte header length")
        n = int.from_bytes(head, "little")
        # checked before reading: f.read of a garbled length fails with MemoryError, naming no file
        if n > size - 8:
            raise DamagedCheckpoint(path, f"truncated: {size:,} bytes, but its header length says "
                                          f"the header alone takes {n:,} after the first 8")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DamagedCheckpoint(path, "the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise DamagedCheckpoint(path, "the safetensors header is not a JSON object")
    header.pop("__metadata__", None)  # safetensors' optional string map, not a tensor
    tensors, spans = {}, []
    for name, info in header.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        shape, offsets = (info.get("shape"), info.get("data_offsets")) if dtype else (None, None)
        if (dtype not in SAFETENSORS_DTYPE_BYTES or not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            raise DamagedCheckpoint(path, f"tensor {name}: malformed header entry "
                                          f"{json.dumps(info)[:80]}")
        nbytes = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise DamagedCheckpoint(path, f"tensor {name}: {dtype} {shape} takes {nbytes} bytes, "
                                          f"its data_offsets {offsets} span another size")
        tensors[name] = (dtype, tuple(shape))
        spans.append((offsets[0], offsets[1]))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise DamagedCheckpoint(path, "the tensors' data_offsets leave gaps or overlap")
        end = stop
    data = size - 8 - n
    if data < end:
        raise DamagedCheckpoint(path, f"truncated: {size:,} bytes, its header describes "
                                      f"{8 + n + end:,}")
    if data > end:
        raise DamagedCheckpoint(path, f"{size:,} bytes, its header describes {8 + n + end:,} "
                                      "(bytes appended after the last tensor)")
    return tensors


def check_adapter(ckpt: Path, cfg: Config) -> list[tuple[int, ...]]:
    """adapter_config.json and every adapter tensor against the run's --lora-rank, --lora-alpha
    and --lora-targets -> the tensors' shapes."""
    path = ckpt / L.ADAPTER_CONFIG
    config = read_json(path)
    if not isinstance(config, dict):
        raise DamagedCheckpoint(path, "not a JSON object")
    r = cfg.lora_rank
    # the projections apply_lora wraps: Qwen2's Linear layers are exactly L.ALL_PROJECTIONS
    targets = sorted(set(cfg.lora_targets.split(",")) & set(L.ALL_PROJECTIONS))
    saved_targets = config.get("target_modules")
    if config.get("r") != r:
        raise DamagedCheckpoint(path, f"r={config.get('r')!r}, the run's --lora-rank is {r}")
    if config.get("lora_alpha") != cfg.lora_alpha:
        raise DamagedCheckpoint(path, f"lora_alpha={config.get('lora_alpha')!r}, "
                                      f"the run's --lora-alpha is {cfg.lora_alpha:g}")
    if not (isinstance(saved_targets, list) and all(isinstance(t, str) for t in saved_targets)
            and sorted(saved_targets) == targets):
        raise DamagedCheckpoint(path, f"target_modules={saved_targets!r}, "
                                      f"the run's --lora-targets give {targets}")
    path = ckpt / L.ADAPTER_WEIGHTS
    tensors = safetensors_header(path)
    halves = {}  # module -> {"A", "B"}
    for key, (_, shape) in tensors.items():
        match = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", key)
        if match is None or match[1].rsplit(".", 1)[-1] not in targets:
            raise DamagedCheckpoint(path, f"unexpected tensor {key} (--lora-targets {targets})")
        rank_dim = 0 if match[2] == "A" else 1  # A is [r, in], B is [out, r]
        if len(shape) != 2 or shape[rank_dim] != r:
            raise DamagedCheckpoint(path, f"{key} has shape {list(shape)}, not of rank {r} "
                                          f"(the run's --lora-rank): lora_A is [r, in], "
                                          "lora_B [out, r]")
        halves.setdefault(match[1], set()).add(match[2])
    for module, found in sorted(halves.items()):
        if found != {"A", "B"}:
            raise DamagedCheckpoint(path, f"{module} has lora_{found.pop()} "
                                          "but not its other half")
    adapted = sorted({module.rsplit(".", 1)[-1] for module in halves})
    if adapted != targets:
        raise DamagedCheckpoint(path, f"adapts {adapted}, the run's --lora-targets give {targets}")
    return [shape for _, shape in tensors.values()]


def check_trainer_state(ckpt: Path, adapter_shapes: list[tuple[int, ...]]):
    """trainer_state.json: this folder's step, the data cursor, RNG states and optimizer groups in
    the form load_checkpoint reads; trainer_state.safetensors: the CPU RNG state and one optimizer
    state per LoRA tensor, of its shape."""
    path = ckpt / TRAINER_STATE
    state = read_json(path)
    step = int(ckpt.name.removeprefix("step_"))
    if not isinstance(state, dict):
        raise DamagedCheckpoint(path, "not a JSON object")
    if state.get("step") != step:
        raise DamagedCheckpoint(path, f"step {state.get('step')!r}, the folder is step {step}")
    data, groups = state.get("data"), state.get("param_groups")
    python_rng, numpy_rng = state.get("python_rng"), state.get("numpy_rng")
    malformed = {
        "data": not (isinstance(data, dict) and all(
            isinstance(data.get(k), int) and data[k] >= 0 for k in ("epoch", "position"))),
        "param_groups": not (isinstance(groups, list) and all(
            isinstance(g, dict) and isinstance(g.get("params"), list)
            and all(isinstance(p, int) for p in g["params"]) for g in groups)
            and sorted(p for g in groups for p in g["params"])
            == list(range(len(adapter_shapes)))),
        "python_rng": not (isinstance(python_rng, list) and len(python_rng) == 3
                           and isinstance(python_rng[1], list)),
        "numpy_rng": not (isinstance(numpy_rng, list) and len(numpy_rng) == 5
                          and isinstance(numpy_rng[1], list) and len(numpy_rng[1]) == 624),
    }
    bad = [key for key, is_bad in malformed.items() if is_bad]
    if bad:
        raise DamagedCheckpoint(path, f"{', '.join(bad)} malformed (param_groups: one entry per "
                                      f"LoRA tensor, {len(adapter_shapes)} here)")
    path = ckpt / TRAINER_TENSORS
    tensors = safetensors_header(path)
    if tensors.get("rng/torch_cpu", ("",))[0] != "U8":
        raise DamagedCheckpoint(path, "no CPU RNG state (rng/torch_cpu, uint8)")
    for key, (dtype, shape) in tensors.items():
        if not key.startswith("optimizer/"):
            continue
        parts = key.split("/")
        ok = len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(adapter_shapes)
        if not ok:
            raise DamagedCheckpoint(path, f"{key}: no such LoRA tensor "
                                          f"(the adapter has {len(adapter_shapes)})")
        if parts[2] != "step" and shape not in adapter_shapes:  # step: a scalar count
            raise DamagedCheckpoint(path, f"{key} has shape {list(shape)}, "
                                          "no LoRA tensor has that shape")


def choose_checkpoint(run_dir: Path, cfg: Config, world: World = World()) -> tuple[Path, list[str]]:
    """--resume's checkpoint: the newest whose every file is intact (check_checkpoint), and the
    lines that say what was found. Rank 0 checks and decides, every rank gets its answer. Each
    damaged newer checkpoint is kept, renamed aside to damaged-step_N (which latest_checkpoint and
    the keep-N pruning never see); then the run resumes from the intact one as from any other,
    every log cut back to it. No intact checkpoint, or a per-step log that cannot be cut (a broken
    line before its last): ValueError, on every rank, and nothing is renamed."""
    answer = None
    if world.main:  # one process, or ranks would race to rename the same folder aside
        try:
            answer = pick_intact_checkpoint(run_dir, cfg)
        except Exception as e:  # noqa: BLE001 - the other ranks are waiting for an answer
            answer = str(e) if isinstance(e, (ValueError, OSError)) else (
                f"checking {run_dir / 'checkpoints'} failed: {type(e).__name__}: {e}")
    answer = world.broadcast(answer)
    if isinstance(answer, str):
        raise ValueError(answer)
    ckpt, notes = answer
    return Path(ckpt), notes


def pick_intact_checkpoint(run_dir: Path, cfg: Config) -> tuple[str, list[str]]:
    folder = run_dir / "checkpoints"
    newest_first = sorted(folder.glob("step_*"), reverse=True)
    if not newest_first:
        raise ValueError(f"{folder}: no checkpoint to resume from")
    # the logs first: one that cannot be cut back stops the resume before anything is renamed
    for log in PER_STEP_LOGS:
        log_lines(run_dir / log)  # raises on a log that resuming could not cut back
    damaged = []
    for ckpt in newest_first:
        try:
            check_checkpoint(ckpt, cfg)
            break
        except DamagedCheckpoint as e:
            damaged.append((ckpt, str(e)))
    else:
        raise ValueError(f"no intact checkpoint in {folder} (nothing was renamed or deleted): "
                         + "; ".join(fault for _, fault in damaged))
    notes = [f"damaged checkpoint {fault}; kept as {set_aside(bad)}" for bad, fault in damaged]
    if damaged:
        notes.append(f"resuming from {ckpt}, the newest intact checkpoint")
    if not (ckpt / MANIFEST).exists():
        notes.append(f"{ckpt} has no {MANIFEST} (written before checkpoints had checksums): "
                     "its files were checked for completeness, not for altered bytes")
    return str(ckpt), notes


def set_aside(ckpt: Path) -> Path:
    """Rename a damaged checkpoint out of the way, never over an earlier one set aside."""
    aside, n = ckpt.with_name(f"damaged-{ckpt.name}"), 1
    while aside.exists():
        n += 1
        aside = ckpt.with_name(f"damaged-{ckpt.name}-{n}")
    os.rename(ckpt, aside)
    return aside


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


def tier_accuracy(whole: StepBatch) -> dict:
    per_tier = {}
    for problem, r in zip(whole.problems, whole.rewards):
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
            "std, matched and batch are none times one positive scalar per step (1/std of the "
            "group), which AdamW largely divides out and gradient clipping removes whenever it "
            "fires; the per-prompt reweighting needs --prompts-per-step > 1")


def make_decoder(cfg: Config, device, dtype) -> FD.FastDecode | None:
    """--decoder and --compile -> the run's decode loop for model.generate (None: the plain loop).
    Compiling is tried here, on a tiny model, before any work: --compile on stops with a one-line
    error if it fails, auto says so and decodes eagerly (and falls back later too, should the real
    model's compilation fail)."""
    if cfg.decoder == "plain":
        return None
    compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type in FD.COMPILE_AUTO)
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
    # The global generators: the LoRA init (and any library that draws from them). torch's is
    # seeded with --seed itself, the number seed 0's rollouts take at step `seed`
    # (model.derived_seed): the one stream two runs can share, kept so that every run drawn so
    # far redraws its adapter; a kaiming init and a sampler use the bits in unrelated ways.
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


def train(cfg: Config, run_dir: Path, resume: bool | Path = False,
          world: World = World()) -> Path:
    """resume: True for the newest intact checkpoint, or the checkpoint to continue from."""
    run = Run(cfg, run_dir, resume, world)  # set up, or restore the last checkpoint
    model, tok, params, optimizer = run.model, run.tok, run.params, run.optimizer
    decode = run.decode  # the sampler's decode loop, kept from step to step
    # a resumed run has its step-0 record already: resuming cuts the logs back to the checkpoint
    if run.heldout and not resume and world.main:  # the held-out accuracy before training
        run.log_heldout(heldout_record(model, tok, run.heldout, cfg, decode))
    with StopFlag() as stop:
        for step in range(run.start, cfg.steps):
            # ---- the algorithm: sample and grade, advantages, one policy-gradient step ----------
            t0 = time.time()
            # from the step number, no scheduler object: nothing more to checkpoint and restore
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            # the step's prompts (the same on every rank)
            batch = run.stream.take(cfg.prompts_per_step)
            mine = world.shard(batch)  # this rank's whole groups
            # first_row: this rank's rows of the step's one random stream, so a completion draws
            # the same numbers whatever the number of processes
            ro = rollout(model, tok, mine, cfg, seed=M.derived_seed(cfg.seed, "rollouts", step),
                         first_row=world.rank * len(mine) * cfg.group_size, decode=decode)
            t1 = time.time()
            advantages = group_advantages(
                ro.rewards, cfg.normalize, cfg.std_eps,
                batch_std=global_batch_std(ro.rewards, world, cfg.std_estimator),
                matched_divisor=global_matched_divisor(ro.rewards, cfg.std_eps, world,
                                                       cfg.std_estimator),
                estimator=cfg.std_estimator)
            t2 = time.time()
            loss, stats = update(model, params, optimizer, ro, advantages, cfg, tok.vocab_size,
                                 world)
            times = (t0, t1, t2, time.time())
            # ---- measurements, when due: rank 0 alone (the others wait at the next collective), on
            # fresh samples with their own seeds, so training draws the same with them or without
            done = step + 1
            diagnostics = heldout = None
            if world.main and cfg.diag_every and done % cfg.diag_every == 0:
                # the paper's: per-prompt gradient cosines, curvature vs reward std (diagnostics.py)
                diagnostics = run_diagnostics(model, tok, params, run.diag_set, cfg, done,
                                              run.diag_rows, decode)
            if world.main and run.heldout and (done % cfg.eval_every == 0 or done == cfg.steps):
                heldout = heldout_record(model, tok, run.heldout, cfg, decode)
            # update skipped a step with a non-finite loss or gradient; too many in a row stop
            # the run (every rank agrees: update's skip is agreed across ranks)
            run.bad_streak = 0 if math.isfinite(loss) else run.bad_streak + 1
            # ---- bookkeeping: write what the step measured, checkpoint -------------------------
            # gather_batch is a collective, hence called here by every rank; rank 0 alone writes
            run.log_step(step, gather_batch(world, batch, ro, advantages), loss, stats, times,
                         diagnostics, heldout)
            if run.bad_streak >= cfg.max_bad_steps:
                run.save(done)
                raise TrainingStopped(f"{run.bad_streak} steps in a row had a non-finite loss or "
                                      f"gradient; stopped at step {done} (checkpoint saved). "
                                      "Lower --lr or check the data.")
            if run.end_step(step, stop.requested):
                return run_dir
    run.finish()
    return run_dir


@dataclass
class StepBatch:
    """The whole step's rollouts as the logs need them: every rank's share, gathered in rank order
    (the order of the step's prompts)."""
    problems: list
    texts: list
    rewards: torch.Tensor       # [prompts, K]
    advantages: torch.Tensor    # [prompts, K]
    lengths: list[int]          # tokens per completion
    truncated: list[bool]
    sample_s: float             # the slowest rank's
    grade_s: float
    sample_tokens_per_s: float  # summed over ranks
    sampler_stats: dict         # means over ranks


def gather_batch(world: World, problems: list, ro: Rollouts, advantages) -> StepBatch:
    """Every rank's rollouts of the step (a collective: every rank calls it)."""
    parts = world.gather({"rewards": ro.rewards, "advantages": advantages, "texts": ro.texts,
                          "lengths": [len(c) for c in ro.completions], "truncated": ro.truncated,
                          "sample_s": ro.sample_s, "grade_s": ro.grade_s,
                          "sampler_stats": ro.sampler_stats})
    return StepBatch(
        problems=problems,
        texts=[t for p in parts for t in p["texts"]],
        rewards=torch.cat([p["rewards"] for p in parts]),
        advantages=torch.cat([p["advantages"] for p in parts]),
        lengths=[n for p in parts for n in p["lengths"]],
        truncated=[t for p in parts for t in p["truncated"]],
        sample_s=max(p["sample_s"] for p in parts),
        grade_s=max(p["grade_s"] for p in parts),
        sample_tokens_per_s=sum(sum(p["lengths"]) / max(p["sample_s"], 1e-9) for p in parts),
        sampler_stats={k: float(np.mean([p["sampler_stats"][k] for p in parts]))
                       for k in parts[0]["sampler_stats"]})


class Run:
    """The plumbing around train()'s loop: the run folder, resume, logs, checkpoints. It computes
    nothing; only rank 0 writes; every rank takes the same decisions (stop, save) at the same
    step."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool | Path, world: World):
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        (self.model, self.tok, self.params, self.optimizer, problems, self.device, dtype,
         self.decode) = setup(cfg, world)
        self.heldout = load_heldout_problems(cfg) if cfg.eval_every else []
        self.diag_set = diagnostic_prompts(problems, cfg) if cfg.diag_every else []
        self.stream = PromptStream(problems, cfg.seed)
        # non-finite steps in a row (train() stops the run at --max-bad-steps); checkpointed
        self.start, self.bad_streak = 0, 0
        self.metrics_path = run_dir / "metrics.jsonl"
        self.say = print if world.main else (lambda *a, **k: None)
        if resume:
            self.restore(resume)
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
        # the last diagnostic step's rows: the across-step control compares the next one with them
        self.diag_rows = last_diagnostics(run_dir / "diagnostics.jsonl")
        self.t_run, self.steps_timed = time.time(), 0

    def restore(self, checkpoint: Path | bool = True):
        """Back to a checkpoint: weights, optimizer, RNG, data cursor; every per-step log cut to
        it. checkpoint: the one main() chose (choose_checkpoint), or True to choose here."""
        if isinstance(checkpoint, Path):
            ckpt = checkpoint
        else:
            ckpt, notes = choose_checkpoint(self.run_dir, self.cfg, self.world)
            for note in notes:
                self.say(note)
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

    def log_heldout(self, record: dict):
        """The held-out accuracy before the first step (step 0 of metrics.jsonl)."""
        record = {"step": 0} | record
        self.say(heldout_line(record), flush=True)
        self.write_metrics(record)

    def log_step(self, step: int, whole: StepBatch, loss: float, stats: dict, times: tuple,
                 diagnostics: tuple[dict, list[dict]] | None, heldout: dict | None):
        """metrics.jsonl (over the whole step's batch, with the diagnostics' summary and the
        held-out accuracy when they ran), diagnostics.jsonl, samples.jsonl, the progress line."""
        cfg = self.cfg
        if not self.world.main:
            return
        record = step_record(step, cfg, whole, loss, stats, times, self.device)
        if diagnostics is not None:
            summary, self.diag_rows = diagnostics
            record |= summary
            with (self.run_dir / "diagnostics.jsonl").open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.diag_rows)
        if heldout is not None:
            record |= heldout
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


def step_record(step: int, cfg: Config, whole: StepBatch, loss: float, stats: dict, times: tuple,
                device) -> dict:
    """One metrics.jsonl line: over the whole step's batch (all ranks),
    names that say what they measure."""
    skipped = not math.isfinite(loss)
    # population std whatever --std-estimator: one definition across arms (TRL's: trl/reward_std)
    group_std = whole.rewards.std(dim=1, unbiased=False)
    t0, t1, t2, t3 = times
    return {
        "step": step + 1,
        "accuracy": float(whole.rewards.mean()), **tier_accuracy(whole),  # = mean reward
        "reward_std": float(group_std.mean()),
        "zero_std_frac": float((group_std == 0).float().mean()),
        "adv_abs_mean": float(whole.advantages.abs().mean()),
        "loss": None if skipped else loss, **stats,
        "lr": lr_at(step, cfg), "completion_len": float(np.mean(whole.lengths)),
        "completion_len_max": max(whole.lengths),
        "truncated_frac": float(np.mean(whole.truncated)), "skipped": skipped,
        "time/sample": whole.sample_s, "time/grade": whole.grade_s,
        "time/advantages": t2 - t1, "time/update": t3 - t2,
        "perf/sample_tokens_per_s": whole.sample_tokens_per_s,
        "perf/peak_mem_gb": peak_memory_gb(device),
        **whole.sampler_stats,
        **trl_logs(whole.rewards, whole.lengths, whole.truncated, cfg.normalize),
        "trl/learning_rate": lr_at(step, cfg),
    }


def trl_logs(rewards: torch.Tensor, lengths: list[int], truncated: list[bool],
             normalize: str) -> dict:
    """The step's values under the names TRL 0.23.1's GRPOTrainer logs, by its definitions, as the
    authors' runs logged them (one completion per micro-batch, logging_steps=1; their rows every 5
    steps are the means of 5 of ours, grad_norm the 5th's). tests/test_trl.py checks each against
    TRL's own log of the same step.

      reward                    mean reward
      reward_std                mean over groups of the Bessel std (batch: of the whole batch), as
                                TRL computes it whatever --std-estimator is
      frac_reward_zero_std      share of those stds that are 0
      completions/...           lengths in tokens, the stop token counted; clipped_ratio: the share
                                that hit --max-new-tokens; *_terminated_length over the others
      clip_ratio/...            0: one update per batch, so TRL's ratio exp(lp - lp_old) is exactly
                                1 and never leaves [1 - 0.2, 1 + 0.2]
    From update: loss (its loss_type dapo = token-mean, grpo = seq-mean; the value with the ratio
    in place of log p), kl and entropy (means over completions of each one's token mean),
    grad_norm (pre-clip). learning_rate: the step's.
    """
    stds = rewards.std() if normalize == "batch" else rewards.std(dim=-1)
    n = torch.tensor(lengths, dtype=torch.float64)
    # no completion ended by itself: TRL logs 0 for the terminated lengths, not nan
    ended = n[~torch.tensor(truncated)] if not all(truncated) else torch.zeros(1)
    return {
        "trl/reward": float(rewards.mean()),
        "trl/reward_std": float(stds.mean()),
        "trl/frac_reward_zero_std": float(torch.isclose(stds, torch.zeros_like(stds))
                                          .float().mean()),
        "trl/completions/mean_length": float(n.mean()),
        "trl/completions/min_length": float(n.min()),
        "trl/completions/max_length": float(n.max()),
        "trl/completions/clipped_ratio": float(np.mean(truncated)),
        "trl/completions/mean_terminated_length": float(ended.mean()),
        "trl/completions/min_terminated_length": float(ended.min()),
        "trl/completions/max_terminated_length": float(ended.max()),
        **{f"trl/clip_ratio/{k}": 0.0
           for k in ("low_mean", "low_min", "high_mean", "high_max", "region_mean")},
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
    # step 0 is the held-out record written before training: no update there
    taken = [r for r in rows if r["step"] > 0 and not r["skipped"]]
    clipped = sum(r.get("grad_clipped", False) for r in taken)
    return (f"gradient clipped (pre-clip norm > {cfg.grad_clip:g}) on {clipped} of {len(taken)} "
            f"steps ({clipped / max(len(taken), 1):.0%})")


# each line carries its "step"
PER_STEP_LOGS = ("metrics.jsonl", "diagnostics.jsonl", "samples.jsonl")


def keep_log_until(path: Path, step: int):
    """On resume, lines past the checkpoint are recomputed; move the old ones aside (appended to
    <log>.after-step-N.jsonl, so a second resume at the same step loses nothing) rather than lose
    them. The log itself is replaced atomically."""
    if not path.is_file():
        return
    lines, torn = log_lines(path)
    dropped = [line for s, line in lines if s > step] + ([torn + "\n"] if torn else [])
    if dropped:
        with (path.parent / f"{path.stem}.after-step-{step}.jsonl").open(
                "a", errors="surrogateescape") as f:
            f.writelines(dropped)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line for s, line in lines if s <= step), errors="surrogateescape")
    os.replace(tmp, path)


def log_lines(path: Path) -> tuple[list[tuple[int, str]], str]:
    """A per-step log's lines with their steps, and its torn last line ("" if none). A crash while
    appending (a full disk) can cut the last line short, and only the last: it is past every
    checkpoint (a step's lines are written before its checkpoint), so resuming moves it aside.
    Any other line that is not a JSON record with a "step" is an error naming file and line."""
    if not path.is_file():
        return [], ""
    # surrogateescape: a line torn inside a UTF-8 character still reads, and moves aside intact
    lines = path.read_text(errors="surrogateescape").splitlines(keepends=True)
    out, torn = [], ""
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            step = record["step"] if isinstance(record, dict) else None
        except (json.JSONDecodeError, KeyError):
            step = None
        if isinstance(step, int):
            out.append((step, line if line.endswith("\n") else line + "\n"))
        elif number == len(lines) and not line.endswith("\n"):
            torn = line
        else:
            raise ValueError(f"{path}:{number}: not a JSON record with a step "
                             f"({line[:60]!r}); fix or remove that line, then resume")
    return out, torn


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


def log_samples(run_dir: Path, step: int, whole: StepBatch, tok):
    K = whole.rewards.shape[1]
    with (run_dir / "samples.jsonl").open("a") as f:
        for i, problem in enumerate(whole.problems):
            for k in range(K):
                f.write(json.dumps({"step": step, "id": problem.id, "gold": problem.answer,
                                    "reward": float(whole.rewards[i, k]),
                                    "completion": whole.texts[i * K + k]}) + "\n")
    print(f"  sample (reward {float(whole.rewards[0, 0]):.0f}, gold {whole.problems[0].answer}): "
          f"{whole.texts[0][:300]!r}")


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main(argv=None):
    cfg, args = parse_args(argv)
    if args.dry_run:
        # save_every 1: the one step writes a checkpoint too, end to end
        cfg = dataclasses.replace(cfg, steps=1, save_every=1, diag_every=0)
    try:
        device_type = resolve_device(cfg)[0].type
    except ValueError as e:
        sys.exit(f"error: {e}")
    # under torchrun: each process on its own GPU from here on, before any collective
    world = World.from_env(device_type, cfg.dist_timeout_s)
    resume_from, notes = False, []
    if args.resume:
        run_dir = Path(args.resume)
        try:  # before the configuration dump, so that an error is the last thing on the screen
            resume_from, notes = choose_checkpoint(run_dir, cfg, world)
        except ValueError as e:
            world.close(False)
            sys.exit(f"error: {e}" if world.main else 1)
    elif args.dry_run and cfg.out is None:
        # one folder for every rank: rank 0 makes it, the others get its name
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
        for note in notes:
            print(note)
    finished = False
    who = f" (rank {world.rank})" if world.size > 1 else ""
    try:
        train(cfg, run_dir, resume=resume_from, world=world)
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
