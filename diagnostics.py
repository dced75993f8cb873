"""
The paper's two measurements, each beside its control: gradient orthogonality and curvature vs
reward variance.

Per prompt i of a fixed diagnostic set, 2K samples are drawn and split into two disjoint sets A and
B of K. Each set gives its own estimate of the prompt's policy gradient, with its own baseline:

    G_i^A = sum_{k in A} (r_ik - mean_A r_i) grad log p(o_ik | q_i)          (likewise G_i^B)

E[G_i^A] = (K - 1) grad J_i =: g_i (the leave-one-out argument), so G^A and G^B are independent,
unbiased estimates of one vector. All that is kept of them is their Gram matrix (logged per
diagnostic step, so any estimator can be recomputed), from which:

  rms     the cosine of the true gradients, as a root mean square over pairs of prompts
          (`cosine_rms`): products of four independent estimates are unbiased for squared inner
          products,
              <g_i, g_j>^2       ~  (G_i^A.G_j^A)(G_i^B.G_j^B)/2 + (G_i^A.G_j^B)(G_i^B.G_j^A)/2
              |g_i|^2 |g_j|^2    ~  (G_i^A.G_i^B)(G_j^A.G_j^B)                          (i != j)
          and numerator and denominator are summed over all pairs (and diagnostic steps) before
          dividing: rms^2 = sum_{i<j} <g_i, g_j>^2 / sum_{i<j} |g_i|^2 |g_j|^2, the mean cos^2
          weighted by the pairs' gradient energy (all pairs at one cosine c: exactly c^2). Its 95%
          interval is a delete-one-prompt jackknife. Tested against true gradients with chosen
          cosines at effective dimension 100-300 and K=8 noise as in the demo's logs
          (tests/test_diagnostics.py), where the per-pair ratio it replaces read 0.08-0.16 on
          exactly orthogonal truth. In the paper's units: independent random directions in R^d
          have rms 1/sqrt(d).
  cross   |cos(G_i^A, G_j^A)|, i < j: what the paper reports (mean 0.088). Noise shrinks it toward
          0 (K samples of noise are nearly orthogonal to everything), so it reads "orthogonal"
          whatever the truth.
  same-prompt |cos(G_i^A, G_i^B)|: two estimates of ONE gradient, whose true cosine is 1. It is
          an upper reference, what |cos| noisy K-sample estimates can show at all; it is not a
          floor below which a cross-prompt number is noise.

Curvature. The proxy of prompt i is kappa_i = mean_{k in A} |grad log p(o_ik)|^2 / |o_ik| (empirical
Fisher trace per token, set A); the reward std and pass rate it is set against come from set B, so
the two share no samples (sharing them adds a spurious correlation). On the demo, wrong samples
have far larger score-function norms than right ones, so kappa mostly counts wrong answers. Hence
three numbers within a step, and the same three across steps (kappa at one diagnostic step against
std at the next, same prompts, the paper's "different iterations"):

    r(kappa_A, std_B)                 the raw relation
    r(error rate_A, std_B)            a curvature-free stand-in: the error rate of the samples
                                      kappa came from; what counting wrong answers alone gives
    r(kappa_A, std_B | right_A)       conditional on pass rate: within strata of prompts whose A
                                      samples had the same number right (`stratified_correlation`),
                                      where kappa no longer counts anything, only per-sample norms

Tested on the paper's bandit, where curvature is known (tests/test_diagnostics.py): the conditional
statistic finds a real curvature-std relation and reads ~0 for a proxy that only counts errors.

Memory: no full gradient is kept per prompt. Each per-sample gradient is folded into a fixed-size
sketch of each estimate the moment it is computed (`GradientSketch`): the identity when the LoRA
weights fit in SKETCH_DIM floats (the demo: exact), else a CountSketch of SKETCH_DIM buckets, whose
inner products are unbiased with a standard error of |a| |b| / sqrt(SKETCH_DIM) (cosines to about
+-0.001). Peak: one per-sample gradient plus 2 x prompts sketches.
"""

from __future__ import annotations

import math

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
            # the hashes are drawn again on every call, not stored: an int64 bucket and sign per
            # entry would take four times the fp32 gradient's memory
            seed = M.derived_seed(self.seed, "sketch", t)
            gen = torch.Generator(device=g.device).manual_seed(seed)
            bucket = torch.randint(0, self.dim, (g.numel(),), generator=gen, device=g.device)
            sign = torch.randint(0, 2, (g.numel(),), generator=gen, device=g.device).float() * 2 - 1
            # Random signs: two entries that share a bucket add a cross term of mean zero, so
            # inner products stay unbiased. float(): index_add_ refuses a bf16 adapter's grads.
            out.index_add_(0, bucket, sign * g.detach().flatten().float())
        return out


# -----------------------------------------------------------------------------
# Orthogonality: the cosine of the true per-prompt gradients, from the Gram matrix of the estimates

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    return T975[df - 1] if df <= len(T975) else 1.96


def gram_matrix(A: torch.Tensor, B: torch.Tensor) -> np.ndarray:
    """A, B [prompts, d]: the two estimates per prompt (rows of zeros: no signal in that set) ->
    the Gram matrix of [A; B] (float64), what diagnostics.jsonl keeps of them."""
    S = torch.cat([A, B]).double()
    return (S @ S.T).cpu().numpy()


def naive_cosines(gram: np.ndarray) -> dict:
    """|cos| between estimates: cross-prompt (set A, pairs i < j) and same-prompt (A_i vs B_i), for
    estimates that are not zero."""
    n = len(gram) // 2
    norm = np.sqrt(np.clip(gram.diagonal(), 0, None))
    cross = [abs(gram[i, j]) / (norm[i] * norm[j]) for i in range(n) for j in range(i + 1, n)
             if norm[i] > 0 and norm[j] > 0]
    same = [abs(gram[i, n + i]) / (norm[i] * norm[n + i]) for i in range(n)
            if norm[i] > 0 and norm[n + i] > 0]
    return {"cross": [float(c) for c in cross], "same_prompt": [float(c) for c in same]}


def pair_terms(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) [prompts, prompts] from one diagnostic step's Gram matrix of [A; B]: P_ij unbiased for
    <g_i, g_j>^2 and Q_ij for |g_i|^2 |g_j|^2 (i != j; diagonals 0). Each is a product of inner
    products of four independent estimates (module docstring)."""
    n = len(gram) // 2
    AA, AB, BB = gram[:n, :n], gram[:n, n:], gram[n:, n:]
    # For i != j the four estimates G_i^A, G_j^A, G_i^B, G_j^B are independent, so both
    # products, (G_i^A.G_j^A)(G_i^B.G_j^B) and (G_i^A.G_j^B)(G_j^A.G_i^B), have mean
    # (K-1)^4 <g_i, g_j>^2, and so has their mean. Q's mean carries the same (K-1)^4, which
    # cancels in sum P / sum Q.
    P = (AA * BB + AB * AB.T) / 2
    norm2 = AB.diagonal()  # G_i^A . G_i^B
    Q = np.outer(norm2, norm2)
    # i = j would multiply an estimate by itself: its noise squared, biased (and no pair)
    np.fill_diagonal(P, 0)
    np.fill_diagonal(Q, 0)
    return P, Q


def cosine_rms(blocks: list[tuple[np.ndarray, np.ndarray]]) -> dict | None:
    """The rms cosine of the true gradients with its 95% interval. blocks: one (P, Q) per set of
    prompts (a run's fixed diagnostic set), each summed over that run's diagnostic steps.

    rms^2 = sum P / sum Q over every pair of every block; the interval is the delete-one-prompt
    jackknife of rms^2 (each prompt of each block with a nonzero norm estimate is one unit: its
    samples are independent of the others'), t with units - 1 degrees of freedom; the estimate and
    the interval's ends mapped to rms by sqrt and cut to 0..1, where an rms of cosines lies. None
    with fewer than 3 such prompts or no positive energy (nothing to estimate)."""
    num = sum(P.sum() for P, _ in blocks) / 2  # symmetric: each pair counted twice
    den = sum(Q.sum() for _, Q in blocks) / 2
    # A jackknife, deleting one prompt at a time: rms^2 is a ratio of sums over pairs, and pairs
    # that share a prompt are not independent, while prompts are. Deleting prompt k removes the
    # pairs in its row, P[k].sum() and Q[k].sum(). A prompt without signal (a zero estimate)
    # adds nothing to either sum: counted as a unit it would only inflate n.
    units = [(P[k].sum(), Q[k].sum()) for P, Q in blocks for k in range(len(P)) if Q[k].any()]
    if len(units) < 3 or not den > 0:
        return None
    leave_out = np.array([(num - p) / (den - q) for p, q in units])
    if not np.all(np.isfinite(leave_out)):  # a deletion left no energy: den - q = 0
        return None
    n, ms = len(units), num / den
    se = math.sqrt((n - 1) / n * ((leave_out - leave_out.mean()) ** 2).sum())
    lo, hi = ms - t975(n - 1) * se, ms + t975(n - 1) * se
    # sum P is unbiased, so near 0 mean_square can be negative (P's products take either sign),
    # and noise can take it past 1: the rms and its ends are cut to 0..1, mean_square kept as is
    root = lambda x: math.sqrt(max(x, 0.0))  # noqa: E731
    return {"rms": root(min(ms, 1.0)), "low": root(min(lo, 1.0)), "high": root(min(hi, 1.0)),
            "mean_square": float(ms),
            "mean_square_interval": [float(lo), float(hi)], "prompts": n}


# -----------------------------------------------------------------------------
# Curvature vs reward std, apart from pass rate


def pearson(x, y) -> float | None:
    """Pearson r, or None when it is undefined (fewer than 3 points or a constant variable)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def stratified_correlation(x, y, strata) -> dict | None:
    """The correlation of x and y within strata: each centred on its stratum's mean, the residuals
    pooled (the partial correlation given the stratum). Strata of one member carry nothing and are
    dropped. Interval: Fisher z with se 1 / sqrt(n - strata - 2) (n - q - 3 for q = strata - 1
    controls; None without a degree of freedom left). None when r is undefined."""
    x, y, strata = (np.asarray(v) for v in (x, y, strata))
    keep = np.zeros(len(x), bool)
    rx, ry = np.zeros(len(x)), np.zeros(len(x))
    levels = 0
    for s in np.unique(strata):
        at = strata == s
        if at.sum() < 2:
            continue
        keep |= at
        levels += 1
        rx[at], ry[at] = x[at] - x[at].mean(), y[at] - y[at].mean()
    r = pearson(rx[keep], ry[keep])
    n = int(keep.sum())
    if r is None:
        return None
    out = {"r": r, "low": None, "high": None, "n": n, "strata": levels}
    if n - levels - 2 >= 1:
        # r clamped: exactly +-1 has an infinite z
        z, se = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), 1 / math.sqrt(n - levels - 2)
        out |= {"low": math.tanh(z - 1.96 * se), "high": math.tanh(z + 1.96 * se)}
    return out


def curvature_relations(before: list[dict], after: list[dict]) -> dict:
    """The three curvature statistics (module docstring) between the proxy of `before` and the
    reward std of `after`, matched by prompt id: within a step pass the same rows twice, across
    steps the previous diagnostic step's rows and this one's. Keys: curvature (raw r),
    error_rate (the stand-in), curvature_given_pass_rate (within strata of right answers in A);
    a value is None where undefined."""
    proxy = {row["id"]: row for row in before}
    pairs = [(proxy[row["id"]], row) for row in after if row["id"] in proxy]
    kappa = [a["curvature_a"] for a, _ in pairs]
    errors = [1 - a["pass_rate_a"] for a, _ in pairs]
    std = [b["reward_std_b"] for _, b in pairs]
    conditional = stratified_correlation(kappa, std, [a["right_a"] for a, _ in pairs])
    return {"curvature": pearson(kappa, std), "error_rate": pearson(errors, std),
            "curvature_given_pass_rate": conditional["r"] if conditional else None}


# -----------------------------------------------------------------------------
# One diagnostic step


def measure(model, params, ro, K: int, temperature: float, vocab_size: int, step: int, seed: int):
    """ro: rollouts of the diagnostic prompts with 2K samples each (set A = the first K, B = the
    last K).

    Returns (summary for metrics.jsonl, one row per prompt for diagnostics.jsonl; the first row also
    carries the step's Gram matrix and the naive |cos| lists). One backward pass per sample of A,
    and per sample of B with a nonzero advantage."""
    sketch = GradientSketch(params, seed=seed)
    n = len(ro.problems)
    # a row stays zero where its set has no signal (all K rewards equal: every advantage 0)
    A = torch.zeros(n, sketch.dim, device=params[0].device)
    B = torch.zeros_like(A)
    was_training = model.training
    model.eval()  # no dropout: the gradients of the sampled distribution itself
    rows = []
    for i, problem in enumerate(ro.problems):
        kappa = 0.0
        # two disjoint halves, each centred on its own mean: independent estimates of one gradient
        for half, G in ((0, A), (1, B)):
            r = ro.rewards[i, half * K:(half + 1) * K]
            centered = r - r.mean()
            for k in range(K):
                completion = ro.completions[i * 2 * K + half * K + k]
                if not completion or (half == 1 and centered[k] == 0):
                    continue  # nothing to score; set B is only needed where it carries signal
                # one sample per backward: kappa needs each sample's own |grad|^2, which a
                # batched backward would sum away
                lp, _, mask = M.completion_logprobs(model, [ro.prompts[i]], [completion], [0],
                                                    temperature, vocab_size)
                # the score function grad log p(o); the advantage weights it below
                grads = torch.autograd.grad((lp * mask).sum(), params)
                # Curvature from A only, its std from B: shared samples tie the two through the
                # same draws' luck (the tests' bandit: a proxy that only counts errors reads r
                # ~0.77 against its own samples' std, ~0.42 against an independent set's). Per
                # token, as the authors' |g|^2 / tokens.
                if half == 0:
                    kappa += sum(float(g.float().pow(2).sum()) for g in grads) / len(completion) / K
                if centered[k] != 0:  # the sketch is linear: summing sketches sketches the sum
                    G[i] += float(centered[k]) * sketch(grads)
        a, b = ro.rewards[i, :K], ro.rewards[i, K:]
        rows.append({"step": step, "id": problem.id, "tier": problem.tier,
                     "right_a": int(a.sum()), "pass_rate_a": float(a.mean()), "curvature_a": kappa,
                     # population std: the paper's sigma, and the authors' analysis scripts'
                     "pass_rate_b": float(b.mean()), "reward_std_b": float(b.std(unbiased=False))})
    model.train(was_training)  # left as found: the caller's dropout setting is its own
    gram = gram_matrix(A, B)
    cos = naive_cosines(gram)
    summary = {"diag/prompts": n, "diag/prompts_with_signal": int((A.norm(dim=1) > 0).sum())}
    rms = cosine_rms([pair_terms(gram)])
    if rms:
        summary |= {"diag/cos_rms": rms["rms"], "diag/cos_rms_low": rms["low"],
                    "diag/cos_rms_high": rms["high"]}
    for name, key in (("cross", "diag/cos_abs"), ("same_prompt", "diag/cos_same_prompt_abs")):
        values = np.array(cos[name])
        summary[f"{key}_pairs"] = len(values)
        if len(values):
            summary[f"{key}_mean"] = float(values.mean())
            summary[f"{key}_p90"] = float(np.quantile(values, 0.9))
    # The step's Gram matrix, on its first row: every estimator can be recomputed from the log
    # (study.py recomputes them per seed).
    rows[0] |= {"gram": [[float(f"{x:.9g}") for x in line] for line in gram],
                "abs_cosines": [round(c, 6) for c in cos["cross"]],
                "abs_cosines_same_prompt": [round(c, 6) for c in cos["same_prompt"]]}
    # within the step: each row against itself, its proxy from A and its std from B
    summary |= relation_keys(curvature_relations(rows, rows), "")
    return summary, rows


def relation_keys(relations: dict, suffix: str) -> dict:
    """curvature_relations' values as metrics.jsonl keys (defined ones only)."""
    names = {"curvature": "diag/curvature_std_corr", "error_rate": "diag/error_rate_std_corr",
             "curvature_given_pass_rate": "diag/curvature_std_corr_given_pass_rate"}
    return {names[k] + suffix: v for k, v in relations.items() if v is not None}


def across_steps(previous: list[dict], current: list[dict]) -> dict:
    """The curvature statistics across steps: each prompt's proxy at the previous diagnostic step
    against its reward std now (same prompts), as metrics.jsonl keys ending in _across."""
    return relation_keys(curvature_relations(previous, current), "_across")
