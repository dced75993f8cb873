"""
The paper's two measurements, each beside its control: gradient orthogonality and curvature vs
reward variance.

Per prompt i of a fixed diagnostic set, 2K samples are drawn and split into two disjoint sets A and
B of K. Each set gives its own estimate of the prompt's policy gradient, with its own baseline:

    G_i^A = sum_{k in A} (r_ik - mean_A r_i) grad log p(o_ik | q_i)          (likewise G_i^B)

E[G_i^A] = (K - 1) grad J_i (the leave-one-out argument), so G^A and G^B are independent, unbiased
estimates of the true gradient up to one constant, which no cosine sees. From them
(`gradient_cosines`):

    cross-prompt  |cos(G_i^A, G_j^A)|, i < j   what the paper reports ("nearly orthogonal")
    same-prompt   |cos(G_i^A, G_i^B)|          the noise floor: two estimates of ONE gradient; with
                                               K = 8 it is far below 1, so small cross-prompt
                                               cosines alone say little
    debiased      |<g_i, g_j>^ / sqrt(|g_i|^2^ |g_j|^2^)|, with the inner products estimated
                  without bias from products of independent estimates: <g_i, g_j>^ = mean of
                  G_i^S . G_j^T over S, T in {A, B} (i != j), |g_i|^2^ = G_i^A . G_i^B; pairs
                  whose norm estimates are not positive are left out. (A ratio of unbiased
                  estimates: consistent, not itself unbiased; it can exceed 1.)

The curvature proxy of prompt i is kappa_i = mean_{k in A} |grad log p(o_ik)|^2 / |o_ik| (empirical
Fisher trace per token), set beside the reward std of set A: their Pearson r within a step, and
across steps on the same prompts (curvature at one diagnostic step against reward std at the next),
the control the paper calls "different iterations".

Memory: no full gradient is kept per prompt. Each per-sample gradient is folded into a fixed-size
sketch of each estimate the moment it is computed (`GradientSketch`): the identity when the LoRA
weights fit in SKETCH_DIM floats (the demo: exact), else a CountSketch of SKETCH_DIM buckets, whose
inner products are unbiased with a standard error of |a| |b| / sqrt(SKETCH_DIM) (cosines to about
+-0.001). Peak: one per-sample gradient plus 2 x prompts sketches.
"""

from __future__ import annotations

import numpy as np
import torch

import model as M

# Floats per sketched gradient (4 MB); LoRA weights up to this size are kept exactly.
SKETCH_DIM = 2 ** 20


class GradientSketch:
    """A linear map of the flat LoRA gradient to SKETCH_DIM floats that keeps inner products.

    Exact (concatenation) when the gradient has at most `dim` entries; otherwise a CountSketch:
    entry p of tensor t goes to bucket h_t(p) with sign s_t(p), both drawn from a generator seeded
    by (seed, t), so every call maps alike and nothing of size d is stored.
    E[sketch(a) . sketch(b)] = a . b.
    """

    def __init__(self, params: list[torch.Tensor], dim: int = SKETCH_DIM, seed: int = 0):
        self.sizes = [p.numel() for p in params]
        self.exact = sum(self.sizes) <= dim
        self.dim = sum(self.sizes) if self.exact else dim
        self.seed = seed

    def __call__(self, grads: list[torch.Tensor]) -> torch.Tensor:
        if self.exact:
            return torch.cat([g.detach().flatten().float() for g in grads])
        out = torch.zeros(self.dim, dtype=torch.float32, device=grads[0].device)
        for t, g in enumerate(grads):
            gen = torch.Generator(device=g.device).manual_seed(self.seed * 1_000_003 + t)
            bucket = torch.randint(0, self.dim, (g.numel(),), generator=gen, device=g.device)
            sign = torch.randint(0, 2, (g.numel(),), generator=gen, device=g.device).float() * 2 - 1
            out.index_add_(0, bucket, sign * g.detach().flatten().float())
        return out


def gradient_cosines(A: torch.Tensor, B: torch.Tensor) -> dict:
    """A, B [prompts, d]: two independent estimates per prompt (rows of zeros: no signal in that
    set).

    Returns the three families of |cos| as lists (cross-prompt from A; same-prompt A vs B;
    debiased), computed from one Gram matrix of the 2n estimates.
    """
    n = A.shape[0]
    S = torch.cat([A, B]).double()
    gram = S @ S.T
    AA, AB, BB = gram[:n, :n], gram[:n, n:], gram[n:, n:]
    norm_a, norm_b = AA.diagonal().sqrt(), BB.diagonal().sqrt()
    iu = torch.triu_indices(n, n, 1).unbind()
    has_a = norm_a > 0
    cross = [abs(float(AA[i, j] / (norm_a[i] * norm_a[j]))) for i, j in zip(*iu)
             if has_a[i] and has_a[j]]
    same = [abs(float(AB[i, i] / (norm_a[i] * norm_b[i]))) for i in range(n)
            if has_a[i] and norm_b[i] > 0]
    inner = (AA + AB + AB.T + BB) / 4  # each term unbiased for (K-1)^2 <g_i, g_j> when i != j
    norm2 = AB.diagonal()  # G_i^A . G_i^B: unbiased for (K-1)^2 |g_i|^2
    debiased = [abs(float(inner[i, j] / (norm2[i] * norm2[j]).sqrt())) for i, j in zip(*iu)
                if norm2[i] > 0 and norm2[j] > 0]
    return {"cross": cross, "same_prompt": same, "debiased": debiased}


def measure(model, params, ro, K: int, temperature: float, vocab_size: int, step: int, seed: int):
    """ro: rollouts of the diagnostic prompts with 2K samples each (set A = the first K, B = the
    last K).

    Returns (summary for metrics.jsonl, one row per prompt for diagnostics.jsonl). One backward
    pass per sample.
    """
    sketch = GradientSketch(params, seed=seed)
    n = len(ro.problems)
    A = torch.zeros(n, sketch.dim, device=params[0].device)
    B = torch.zeros_like(A)
    model.eval()  # no dropout: the gradients of the sampled distribution itself
    rows = []
    for i, problem in enumerate(ro.problems):
        kappa = 0.0
        for half, G in ((0, A), (1, B)):
            r = ro.rewards[i, half * K:(half + 1) * K]
            centered = r - r.mean()
            for k in range(K):
                completion = ro.completions[i * 2 * K + half * K + k]
                if not completion or (half == 1 and centered[k] == 0):
                    continue  # set B is only needed where it carries signal
                lp, _, mask = M.completion_logprobs(model, [ro.prompts[i]], [completion], [0],
                                                    temperature, vocab_size)
                grads = torch.autograd.grad((lp * mask).sum(), params)
                if half == 0:
                    kappa += sum(float(g.float().pow(2).sum()) for g in grads) / len(completion) / K
                if centered[k] != 0:
                    G[i] += float(centered[k]) * sketch(grads)
        r = ro.rewards[i, :K]
        rows.append({"step": step, "id": problem.id, "tier": problem.tier,
                     "pass_rate": float(r.mean()), "reward_std": float(r.std(unbiased=False)),
                     "curvature": kappa})
    cos = gradient_cosines(A, B)
    summary = {"diag/prompts": n, "diag/prompts_with_signal": int((A.norm(dim=1) > 0).sum())}
    for name, key in (("cross", "diag/cos_abs"), ("same_prompt", "diag/cos_same_prompt_abs"),
                      ("debiased", "diag/cos_debiased_abs")):
        values = np.array(cos[name])
        summary[f"{key}_pairs"] = len(values)
        if len(values):
            summary[f"{key}_mean"] = float(values.mean())
            summary[f"{key}_p90"] = float(np.quantile(values, 0.9))
    rows[0] |= {"abs_cosines": [round(c, 6) for c in cos["cross"]],
                "abs_cosines_same_prompt": [round(c, 6) for c in cos["same_prompt"]],
                "abs_cosines_debiased": [round(c, 6) for c in cos["debiased"]]}
    corr = pearson([x["curvature"] for x in rows], [x["reward_std"] for x in rows])
    if corr is not None:
        summary["diag/curvature_std_corr"] = corr
    return summary, rows


def across_steps(previous: list[dict], current: list[dict]) -> float | None:
    """Pearson r of each prompt's curvature at the previous diagnostic step and its reward std now
    (same prompts)."""
    before = {row["id"]: row["curvature"] for row in previous}
    pairs = [(before[row["id"]], row["reward_std"]) for row in current if row["id"] in before]
    return pearson(*zip(*pairs)) if len(pairs) > 2 else None


def pearson(x, y) -> float | None:
    """Pearson r, or None when it is undefined (fewer than 3 points or a constant variable)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
