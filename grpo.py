"""
GRPO vs REINFORCE for math reasoning, as compared in "Why GRPO Needs Normalization" (arXiv 2601.23135).

One step: take the next prompts, draw K completions each with the KV-cache sampler (each prompt prefilled once),
score them with the binary reward, turn rewards into advantages per group of K, and take one policy-gradient
step on the LoRA weights:

    --normalize std    A_k = (r_k - mean(r)) / (std(r) + eps)     the paper's GRPO (population std, 1/K)
    --normalize none   A_k =  r_k - mean(r)                       the paper's REINFORCE baseline

Everything else is identical between the two. The update is on-policy (one gradient step per batch of
rollouts), so the PPO ratio is exactly 1 and there is nothing to clip; the loss is -A * log p(completion),
with log p the sum of the completion's token log-probs (computed in chunks, never the full [B, T, V] logits).

    python grpo.py --preset demo --normalize std       # the embedded demo: tiny model, CPU, < 5 minutes
    python grpo.py --normalize std                     # the paper's setup: Qwen2.5-Math-1.5B, LoRA r=64, GSM8K
    python grpo.py --normalize none --model /models/Qwen2.5-Math-1.5B --data-path ../shared/data/gsm8k
    python grpo.py --resume runs/demo-std-adamw-s0     # continue a run exactly where it stopped
    python grpo.py --dry-run --model PATH              # one step end to end, nothing kept

A run folder holds config.json, metrics.jsonl (a line per step), samples.jsonl, diagnostics.jsonl and
checkpoints/step_N (the adapter in peft's format, optimizer, RNG states, data cursor), written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import data as D
import lora as L
import model as M

DEMO_MODEL = Path(__file__).resolve().parent / "demo" / "model"

# -----------------------------------------------------------------------------
# Config and presets


@dataclass
class Config:
    # model
    model: str = "Qwen/Qwen2.5-Math-1.5B"    # HF hub id or local folder (safetensors)
    tokenizer: str | None = None             # default: the model folder
    device: str = "auto"                     # auto: cuda when available
    dtype: str = "auto"                      # auto: bfloat16 on cuda, float32 on cpu
    lora_rank: int = 64                      # r
    lora_alpha: float = 128.0                # the update is scaled by alpha / r
    lora_dropout: float = 0.0                # on the adapter's input (0: sampler and learner see one function)
    lora_targets: str = ",".join(L.ALL_PROJECTIONS)  # comma-separated projection names
    grad_checkpointing: bool = False         # recompute activations in backward (long completions on a GPU)
    # data
    data: str = "gsm8k"                      # gsm8k | math | demo | a .jsonl file
    data_path: str | None = None             # local file or folder; None: the hub (gsm8k, math)
    split: str = "train"                     # train | test (MATH also math500)
    math_levels: str | None = None           # e.g. "2" or "1,2"
    difficulty_file: str | None = None       # per-problem pass rates (see data.assign_tiers; eval.py writes them)
    tier_thresholds: str | None = None       # "easy=1.0,medium=0.9,hard=0.0": tier -> min pass rate (default: paper's)
    tiers: str | None = None                 # train only on these tiers, e.g. "hard"
    template: str = "qwen-chat"              # prompt format, see data.PROMPT_TEMPLATES
    # rollouts
    prompts_per_step: int = 1
    group_size: int = 8                      # K completions per prompt
    max_new_tokens: int = 1024
    temperature: float = 1.0                 # sampling temperature; the learner scores the same distribution
    sampler: str = "exact"                   # exact | merged: sample a merged copy (faster, inexact; mismatch logged)
    # the update
    normalize: str = "std"                   # std | none
    std_eps: float = 1e-6                    # guards the division by the group std (binary rewards: std >= 0.33 or 0)
    loss_agg: str = "seq-sum"                # seq-sum | seq-mean | token-mean
    kl_coef: float = 0.0                     # beta of a k3 KL penalty to the base model (adapter off)
    optimizer: str = "adamw"                 # adamw | sgd
    lr: float = 1e-5                         # peak learning rate, decayed linearly to 0
    weight_decay: float = 0.0                # on the LoRA weights
    grad_clip: float = 0.1                   # max global grad norm; 0 disables
    micro_batch: int = 8                     # sequences per forward/backward (gradient accumulation)
    steps: int = 350                         # optimizer steps (one batch of rollouts each)
    seed: int = 0                            # data order, sampling, LoRA init
    # logging, checkpoints, diagnostics
    out: str | None = None                   # run folder; default runs/<preset>-<normalize>-<optimizer>-s<seed>
    log_samples_every: int = 10              # steps between completions written to samples.jsonl
    save_every: int = 50                     # steps between checkpoints
    keep_checkpoints: int = 3                # the newest N are kept
    diag_every: int = 0                      # 0: off. Per-prompt gradient cosines and curvature vs reward std
    diag_prompts: int = 16                   # fresh prompts per diagnostic step (K samples each)
    max_bad_steps: int = 5                   # stop after this many non-finite losses in a row
    preset: str = "paper"                    # paper | demo: the defaults that other flags override


PRESETS = {
    # The paper's setup (authors' code: TRL GRPOTrainer, one prompt x 8 per step, lr 1e-5 linear decay, clip 0.1).
    "paper": dict(model="Qwen/Qwen2.5-Math-1.5B", lora_rank=64, lora_alpha=128.0, data="gsm8k", group_size=8,
                  prompts_per_step=1, lr=1e-5, grad_clip=0.1, max_new_tokens=1024, temperature=1.0, kl_coef=0.0,
                  steps=350, template="qwen-chat", micro_batch=4,
                  grad_checkpointing=True),  # measured on an H100: peak 27.2 -> 8.9 GB for +5% update time
    # The embedded demo: a 0.8M-parameter model pretrained on synthetic word problems; laptop CPU, no downloads.
    "demo": dict(model=str(DEMO_MODEL), lora_rank=16, lora_alpha=32.0, data="demo", group_size=8,
                 prompts_per_step=16, lr=2e-3, grad_clip=1.0, max_new_tokens=64, temperature=1.0, kl_coef=0.0,
                 steps=150, template="plain", micro_batch=128, save_every=50, log_samples_every=25,
                 device="cpu"),
}
CHOICES = dict(preset=list(PRESETS), normalize=["std", "none"], optimizer=["adamw", "sgd"],
               loss_agg=["seq-sum", "seq-mean", "token-mean"], template=list(D.PROMPT_TEMPLATES),
               device=["auto", "cpu", "cuda"], dtype=["auto", "float32", "bfloat16"], sampler=["exact", "merged"])
# Keys whose values depend on the machine, not on the computation: excluded from exact-resume comparisons.
TIMING_PREFIXES = ("time/", "perf/")


def field_help() -> dict[str, str]:
    """The comment after each Config field is its --help text (one source for both)."""
    pattern = re.compile(r"\s+(\w+): [^#]*#\s*(.*)")
    return {m[1]: m[2] for m in map(pattern.match, inspect.getsource(Config).splitlines()) if m}


def parse_args(argv=None) -> tuple[Config, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    helps = field_help()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        defaults = ", ".join(f"{p}: {PRESETS[p].get(f.name, f.default)}" for p in PRESETS)
        text = f"{helps.get(f.name, '')} ({defaults})".strip()
        if f.type == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            ap.add_argument(flag, type=kind, default=None, choices=CHOICES.get(f.name), help=text)
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    ap.add_argument("--dry-run", action="store_true", help="one step end to end in a temporary folder")
    args = ap.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    if args.resume:
        extra = sorted(set(given) - {"steps"})
        if extra:
            ap.error(f"--resume continues a run with its saved config.json; do not also pass "
                     f"{', '.join('--' + k.replace('_', '-') for k in extra)} (only --steps may change)")
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
    problems = []
    if cfg.group_size < 2:
        problems.append(f"--group-size must be >= 2 (got {cfg.group_size}): a group of one has no baseline")
    for name in ("prompts_per_step", "max_new_tokens", "micro_batch", "steps", "lora_rank", "keep_checkpoints",
                 "diag_prompts", "max_bad_steps"):
        if getattr(cfg, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.lr <= 0 or cfg.temperature <= 0:
        problems.append("--lr and --temperature must be > 0 (the learner scores the sampler's distribution)")
    if cfg.diag_every and cfg.diag_prompts < 2:
        problems.append("--diag-prompts must be >= 2 to compare gradients of different prompts")
    return problems


# -----------------------------------------------------------------------------
# The two estimators


def group_advantages(rewards: torch.Tensor, normalize: str, eps: float = 1e-6) -> torch.Tensor:
    """rewards [groups, K] -> advantages [groups, K].

    REINFORCE (none): A_k = r_k - mean(r).   GRPO (std): A_k = (r_k - mean(r)) / (std(r) + eps), with the
    population std sqrt(mean((r - mean r)^2)) as the paper defines it. eps only guards the division: a group
    whose rewards are all equal has r_k - mean(r) = 0, hence zero advantage under both rules.
    """
    centered = rewards - rewards.mean(dim=-1, keepdim=True)
    if normalize == "none":
        return centered
    if normalize == "std":
        return centered / (rewards.std(dim=-1, unbiased=False, keepdim=True) + eps)
    raise ValueError(f"normalize must be 'std' or 'none', got {normalize!r}")


# -----------------------------------------------------------------------------
# The policy-gradient loss


def policy_loss(token_logprobs, mask, advantages, loss_agg: str, normalizer: float, kl_tokens=None, kl_coef=0.0):
    """-(advantage-weighted log-likelihood) for a micro-batch, scaled so micro-batch losses sum to the batch's.

    token_logprobs, mask [B, T]; advantages [B]. Aggregation rules (normalizer is batch-wide):
      seq-sum     sum_i A_i * sum_t log p_it / (number of completions)   the paper: sequence log-prob, constant scale
      seq-mean    sum_i A_i * mean_t log p_it / (number of completions)  per-sequence mean (GRPO paper; length-biased)
      token-mean  sum_i A_i * sum_t log p_it / (number of tokens)        DAPO's token mean
    An optional KL penalty (per token, same aggregation) is added with weight kl_coef.
    """
    mask = mask.to(token_logprobs.dtype)
    per_seq = lambda x: (x * mask).sum(-1) / (mask.sum(-1).clamp(min=1) if loss_agg == "seq-mean" else 1)  # noqa: E731
    loss = -(advantages * per_seq(token_logprobs)).sum() / normalizer
    if kl_tokens is not None and kl_coef:
        loss = loss + kl_coef * per_seq(kl_tokens).sum() / normalizer
    return loss


def kl_k3(logprobs, ref_logprobs):
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1 with d = ref - policy (>= 0, unbiased)."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


# -----------------------------------------------------------------------------
# Data


def load_training_problems(cfg: Config) -> list[D.Problem]:
    if cfg.data == "demo":
        problems = D.synthetic_problems(D.SYNTHETIC_TRAIN_SIZE, seed=D.SYNTHETIC_TRAIN_SEED)
    else:
        levels = [int(x) for x in cfg.math_levels.split(",")] if cfg.math_levels else None
        problems = D.load_problems(cfg.data, split=cfg.split, path=cfg.data_path, levels=levels)
    if cfg.difficulty_file:
        thresholds = D.PAPER_TIER_THRESHOLDS
        if cfg.tier_thresholds:
            pairs = [item.split("=") for item in cfg.tier_thresholds.split(",")]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"--tier-thresholds {cfg.tier_thresholds!r}: expected tier=min_pass_rate,...")
            thresholds = {tier: float(rate) for tier, rate in pairs}
        problems = D.assign_tiers(problems, cfg.difficulty_file, thresholds)
    if cfg.tiers:
        wanted = set(cfg.tiers.split(","))
        problems = [p for p in problems if p.tier in wanted]
    if not problems:
        raise ValueError(f"no training problems left for --data {cfg.data} (after --tiers {cfg.tiers})")
    return problems


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


def stop_ids(tok: M.Tokenizer) -> list[int]:
    """End of document, and end of a chat turn when the tokenizer has one (Qwen: <|endoftext|>, <|im_end|>)."""
    ids = [tok.eos_token_id, tok.token_to_id("<|im_end|>")]
    return sorted({i for i in ids if i is not None})


def rollout(model, tok, problems, cfg: Config, seed: int) -> Rollouts:
    prompts = [tok.encode(D.format_prompt(p, cfg.template)) for p in problems]
    model.eval()
    merged = cfg.sampler == "merged"
    sampler = L.merged_copy(model) if merged else model  # rebuilt from the current adapter every step
    out = M.generate(sampler, prompts, cfg.max_new_tokens, temperature=cfg.temperature, eos_token_id=stop_ids(tok),
                     seed=seed, num_samples=cfg.group_size, vocab_size=tok.vocab_size, return_logprobs=merged)
    del sampler
    completions, sampler_logprobs = out if merged else (out, None)
    eos = set(stop_ids(tok))
    texts = [tok.decode(c, skip_special_tokens=True) for c in completions]
    golds = [p.answer for p in problems for _ in range(cfg.group_size)]
    rewards = torch.tensor([D.reward(t, g) for t, g in zip(texts, golds)], dtype=torch.float32)
    truncated = [not c or c[-1] not in eos for c in completions]
    ro = Rollouts(problems, prompts, completions, texts, rewards.view(len(problems), cfg.group_size), truncated)
    if merged:
        ro.sampler_stats = sampler_mismatch(model, ro, sampler_logprobs, cfg, tok.vocab_size)
    return ro


@torch.no_grad()
def sampler_mismatch(model, ro: Rollouts, sampler_logprobs: list, cfg: Config, vocab_size: int) -> dict:
    """How far the sampler's distribution is from the learner's, on the tokens it drew. Per token,
    d = log p_learner - log p_sampler (the learner: completion_logprobs of the model, adapter unmerged; the
    sampler: the log-probs generate returns). kl_k3 is the k3 estimate of KL(sampler || learner) per token,
    mean(exp(d) - 1 - d) over the samples the sampler drew; logp_abs_diff_mean is mean |d|."""
    K = cfg.group_size
    rows = [i for i, c in enumerate(ro.completions) if c]
    learner = []
    for start in range(0, len(rows), cfg.micro_batch):
        batch = rows[start:start + cfg.micro_batch]
        groups = sorted({i // K for i in batch})
        lp, _, _ = M.completion_logprobs(model, [ro.prompts[g] for g in groups], [ro.completions[i] for i in batch],
                                         [groups.index(i // K) for i in batch], cfg.temperature, vocab_size)
        learner += [lp[j, :len(ro.completions[i])].double().cpu() for j, i in enumerate(batch)]
    learner = torch.cat(learner)
    sampler = torch.tensor([x for i in rows for x in sampler_logprobs[i]], dtype=torch.float64)
    return {"sampler/kl_k3": float(kl_k3(sampler, learner).mean()),
            "sampler/logp_abs_diff_mean": float((learner - sampler).abs().mean())}


# -----------------------------------------------------------------------------
# One update


def update(model, params, optimizer, ro: Rollouts, advantages: torch.Tensor, cfg: Config, vocab_size: int):
    """Accumulate the policy gradient over micro-batches; returns (loss, stats) or (nan, stats) when non-finite.

    Completions with zero advantage contribute nothing to the policy-gradient term, so without KL they are
    not even forwarded (all-equal groups cost no learner compute, in both arms alike).
    """
    K = cfg.group_size
    adv = advantages.flatten()
    rows = [i for i in range(len(ro.completions)) if adv[i] != 0 or cfg.kl_coef > 0]
    rows = [i for i in rows if ro.completions[i]]
    n_completions = len(ro.completions)
    n_tokens = sum(len(c) for c in ro.completions)
    normalizer = n_tokens if cfg.loss_agg == "token-mean" else n_completions
    optimizer.zero_grad(set_to_none=True)
    model.train()
    total_loss, entropy_sum, entropy_n, kl_sum = 0.0, 0.0, 0, 0.0
    device = params[0].device
    for start in range(0, len(rows), cfg.micro_batch):
        batch = rows[start:start + cfg.micro_batch]
        groups = sorted({i // K for i in batch})  # each prompt runs once for all its completions in the batch
        args = ([ro.prompts[g] for g in groups], [ro.completions[i] for i in batch],
                [groups.index(i // K) for i in batch], cfg.temperature, vocab_size)
        lp, ent, mask = M.completion_logprobs(model, *args)
        kl = None
        if cfg.kl_coef > 0:
            with torch.no_grad(), L.lora_disabled(model):
                ref, _, _ = M.completion_logprobs(model, *args)
            kl = kl_k3(lp, ref)
            kl_sum += float((kl.detach() * mask).sum())
        loss = policy_loss(lp, mask, adv[batch].to(device), cfg.loss_agg, normalizer, kl, cfg.kl_coef)
        if not torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            return float("nan"), {}
        loss.backward()
        total_loss += loss.item()
        entropy_sum += float((ent * mask).sum())
        entropy_n += int(mask.sum())
    stats = {"entropy": entropy_sum / max(entropy_n, 1), "learner_tokens": entropy_n}
    if cfg.kl_coef > 0:
        stats["kl"] = kl_sum / max(entropy_n, 1)
    if not rows:
        return 0.0, stats | {"grad_norm": 0.0}
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), {}
    optimizer.step()
    return total_loss, stats | {"grad_norm": float(grad_norm)}


def make_optimizer(params, cfg: Config):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Plain gradient ascent on J (descent on the loss), as in the paper's theory: no momentum, no rescaling.
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg: Config) -> float:
    """Linear decay from lr to 0 over the run, no warmup (the authors' schedule). step counts from 0."""
    return cfg.lr * (1 - step / cfg.steps)


# -----------------------------------------------------------------------------
# The paper's diagnostics: gradient orthogonality and curvature vs reward variance


def diagnostics(model, tok, params, problems, cfg: Config, step: int, device):
    """On a fresh batch of `diag_prompts` prompts (its own RNG: training is not perturbed):

    - g_ik = grad of log p(o_k | q_i) over the LoRA weights, for each of the K samples (one backward each);
    - the per-prompt policy gradient G_i = sum_k (r_ik - mean_k r_ik) g_ik (std-normalisation only rescales
      it, so its direction, and every cosine, is the same under both estimators);
    - |cos(G_i, G_j)| over all prompt pairs with non-zero reward variance (the paper's orthogonality);
    - the curvature proxy kappa_i = mean_k ||g_ik||^2 / |o_ik| (empirical Fisher trace per token) next to
      the prompt's reward std, and their Pearson correlation within this step.
    Exact gradients are kept, one per prompt: diag_prompts x (LoRA parameters) floats of memory.
    """
    rng = random.Random(f"diag-{cfg.seed}-{step}")
    batch = rng.sample(problems, min(cfg.diag_prompts, len(problems)))
    ro = rollout(model, tok, batch, cfg, seed=rng.randrange(2**62))
    K = cfg.group_size
    model.eval()  # no dropout: the gradients of the sampled distribution itself
    rows, pg = [], []
    for i, problem in enumerate(batch):
        r = ro.rewards[i]
        centered = r - r.mean()
        G = None
        kappa = 0.0
        for k in range(K):
            completion = ro.completions[i * K + k]
            if not completion:
                continue
            lp, _, mask = M.completion_logprobs(model, [ro.prompts[i]], [completion], [0], cfg.temperature,
                                                tok.vocab_size)
            grads = torch.autograd.grad((lp * mask).sum(), params)
            g = torch.cat([x.flatten().float() for x in grads])
            kappa += float(g.pow(2).sum()) / len(completion) / K
            if centered[k] != 0:
                G = centered[k] * g if G is None else G + centered[k] * g
        std = float(r.std(unbiased=False))
        rows.append({"step": step, "id": problem.id, "tier": problem.tier, "pass_rate": float(r.mean()),
                     "reward_std": std, "curvature": kappa})
        if G is not None:
            pg.append(G)
    summary = {}
    if len(pg) >= 2:
        Gm = torch.stack(pg)
        Gm = Gm / Gm.norm(dim=1, keepdim=True)
        cos = (Gm @ Gm.T)[torch.triu_indices(len(pg), len(pg), 1).unbind()].abs()
        summary |= {"diag/cos_abs_mean": float(cos.mean()), "diag/cos_abs_p90": float(cos.quantile(0.9)),
                    "diag/cos_pairs": int(cos.numel())}
        rows[0]["abs_cosines"] = [round(float(c), 6) for c in cos]
    stds, kappas = np.array([r["reward_std"] for r in rows]), np.array([r["curvature"] for r in rows])
    if stds.std() > 0 and kappas.std() > 0:
        summary["diag/curvature_std_corr"] = float(np.corrcoef(stds, kappas)[0, 1])
    summary["diag/prompts_with_signal"] = len(pg)
    return summary, rows


# -----------------------------------------------------------------------------
# Checkpoints: adapter (peft format) + optimizer + RNG states + data cursor, written atomically


def save_checkpoint(run_dir: Path, step: int, model, optimizer, stream: PromptStream, extra: dict, keep: int):
    from safetensors.torch import save_file
    ckpt_dir = run_dir / "checkpoints"
    final = ckpt_dir / f"step_{step:06d}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{step:06d}-", dir=ckpt_dir))
    L.save_adapter(model, tmp, base_model_name_or_path=extra.get("model"))
    opt_state = optimizer.state_dict()
    tensors = {f"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/torch_cuda{i}"] = s
    for pid, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"optimizer/{pid}/{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / "trainer_state.safetensors")
    np_state = np.random.get_state()
    state = {"step": step, "data": stream.state(), "param_groups": opt_state["param_groups"],
             "python_rng": random.getstate(), "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             **{k: v for k, v in extra.items() if k != "model"}}
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    os.replace(tmp, final)  # atomic: a checkpoint folder is complete or absent
    for old in sorted(ckpt_dir.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


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


def resolve_device(cfg: Config):
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    return device, dtype


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # peak RSS of the process (KB on Linux)


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
        print("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to abort)", flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def train(cfg: Config, run_dir: Path, resume: bool = False) -> Path:
    device, dtype = resolve_device(cfg)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = M.load_model(cfg.model, dtype=dtype, device=device)
    tok = M.load_tokenizer(cfg.tokenizer or cfg.model)
    model.gradient_checkpointing = cfg.grad_checkpointing
    problems = load_training_problems(cfg)
    params = L.apply_lora(model, r=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                          targets=tuple(cfg.lora_targets.split(",")))
    optimizer = make_optimizer(params, cfg)
    stream = PromptStream(problems, cfg.seed)
    start, bad_streak = 0, 0
    metrics_path = run_dir / "metrics.jsonl"
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{run_dir}/checkpoints: no checkpoint to resume from")
        state = load_checkpoint(ckpt, model, optimizer)
        start, bad_streak = state["step"], state.get("bad_streak", 0)
        stream = PromptStream(problems, cfg.seed, **state["data"])
        keep_metrics_until(metrics_path, start)
        print(f"resumed {run_dir} at step {start} from {ckpt.name}")
    else:
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / "checkpoints").mkdir()
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    print(f"{len(problems)} problems, {sum(p.numel() for p in params):,} trainable LoRA parameters, "
          f"{device} {str(dtype).removeprefix('torch.')}, run folder {run_dir}")

    extra = lambda: {"model": cfg.model, "bad_streak": bad_streak}  # noqa: E731
    t_run, steps_timed = time.time(), 0
    step = start
    with StopFlag() as stop, metrics_path.open("a") as metrics_file:
        for step in range(start, cfg.steps):
            t0 = time.time()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            batch = stream.take(cfg.prompts_per_step)
            ro = rollout(model, tok, batch, cfg, seed=cfg.seed * 1_000_003 + step)
            t1 = time.time()
            advantages = group_advantages(ro.rewards, cfg.normalize, cfg.std_eps)
            t2 = time.time()
            loss, stats = update(model, params, optimizer, ro, advantages, cfg, tok.vocab_size)
            t3 = time.time()
            skipped = not math.isfinite(loss)
            bad_streak = bad_streak + 1 if skipped else 0
            lengths = [len(c) for c in ro.completions]
            group_std = ro.rewards.std(dim=1, unbiased=False)
            record = {
                "step": step + 1, "reward": float(ro.rewards.mean()), "accuracy": float(ro.rewards.mean()),
                **tier_accuracy(ro),
                "reward_std": float(group_std.mean()), "zero_std_frac": float((group_std == 0).float().mean()),
                "adv_abs_mean": float(advantages.abs().mean()), "loss": None if skipped else loss, **stats, "lr": lr_at(step, cfg),
                "completion_len": float(np.mean(lengths)), "completion_len_max": max(lengths),
                "truncated_frac": float(np.mean(ro.truncated)), "skipped": skipped,
                "time/sample": t1 - t0, "time/reward": t2 - t1, "time/update": t3 - t2,
                "perf/tokens_per_s": sum(lengths) / max(t1 - t0, 1e-9), "perf/peak_mem_gb": peak_memory_gb(device),
                **ro.sampler_stats,
            }
            if cfg.diag_every and (step + 1) % cfg.diag_every == 0:
                t4 = time.time()
                summary, rows = diagnostics(model, tok, params, problems, cfg, step + 1, device)
                record |= summary | {"time/diagnostics": time.time() - t4}
                with (run_dir / "diagnostics.jsonl").open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)
            record["time/step"] = time.time() - t0
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            steps_timed += 1
            eta = (time.time() - t_run) / steps_timed * (cfg.steps - step - 1)
            tiers = " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in record.items() if k.startswith("accuracy/"))
            print(f"step {step + 1}/{cfg.steps} | reward {record['reward']:.3f} | acc {record['accuracy']:.3f}"
                  f"{' (' + tiers + ')' if tiers else ''} | loss {loss:.4f} | |A| {record['adv_abs_mean']:.3f} | "
                  f"len {record['completion_len']:.0f} | {record['perf/tokens_per_s']:.0f} tok/s | "
                  f"{record['time/step']:.2f}s/step | ETA {format_seconds(eta)}" + (" | SKIPPED (non-finite)" if skipped else ""),
                  flush=True)
            if (step + 1) % cfg.log_samples_every == 0 or step == start:
                log_samples(run_dir, step + 1, ro, tok)
            if bad_streak >= cfg.max_bad_steps:
                save_checkpoint(run_dir, step + 1, model, optimizer, stream, extra(), cfg.keep_checkpoints)
                raise TrainingStopped(f"{bad_streak} steps in a row had a non-finite loss or gradient; stopped at step "
                                   f"{step + 1} (checkpoint saved). Lower --lr or check the data.")
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps or stop.requested:
                save_checkpoint(run_dir, step + 1, model, optimizer, stream, extra(), cfg.keep_checkpoints)
            if stop.requested:
                print(f"stopped after step {step + 1}; resume with: python grpo.py --resume {run_dir}")
                return run_dir
    print(f"done: {cfg.steps} steps in {format_seconds(time.time() - t_run)}; run folder {run_dir}")
    return run_dir


def keep_metrics_until(path: Path, step: int):
    """On resume, metrics past the checkpoint are recomputed; move the old ones aside rather than lose them."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if json.loads(line)["step"] <= step]
    dropped = lines[len(keep):]
    if dropped:
        (path.parent / f"metrics.after-step-{step}.jsonl").write_text("".join(dropped))
    path.write_text("".join(keep))


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
    if args.resume:
        run_dir = Path(args.resume)
    elif args.dry_run and cfg.out is None:
        run_dir = Path(tempfile.mkdtemp(prefix="grpo-dry-run-")) / "run"
    else:
        run_dir = Path(cfg.out or f"runs/{cfg.preset}-{cfg.normalize}-{cfg.optimizer}-s{cfg.seed}")
        if run_dir.exists():
            sys.exit(f"error: run folder {run_dir} already exists; pass --resume {run_dir} to continue it, "
                     "or --out NEW_FOLDER")
        cfg = dataclasses.replace(cfg, out=str(run_dir))
    print(json.dumps(dataclasses.asdict(cfg), indent=2))
    try:
        train(cfg, run_dir, resume=bool(args.resume))
    except (FileNotFoundError, ValueError, ConnectionError, TrainingStopped) as e:
        sys.exit(f"error: {e}")
    if args.dry_run:
        print(f"dry run ok: one step end to end in {run_dir}")


if __name__ == "__main__":
    main()
