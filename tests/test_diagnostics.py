"""diagnostics.py: the three cosine families on cases whose true gradients are known,
the sketch, the controls."""

import math

import numpy as np
import pytest
import torch

import diagnostics as diag
import theory as T


def noisy_estimates(true: torch.Tensor, noise: float, seed: int):
    """Two independent unbiased estimates of each true gradient (rows):
    true + isotropic Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    return (true + noise * torch.randn(true.shape, generator=g, dtype=true.dtype),
            true + noise * torch.randn(true.shape, generator=g, dtype=true.dtype))


def test_cosines_with_known_true_gradients():
    """Six true gradients in d = 200,000 with |g| = 1 and pairwise cos 0.3; noise per estimate of
    norm 2 (|noise|^2 = 4 |g|^2, a K=8-like signal to noise). In high dimension the noise is
    orthogonal to everything, so: same-prompt cos -> 1/5 (= |g|^2 / (|g|^2 + |noise|^2)), naive
    cross-prompt cos -> 0.3/5 = 0.06, while the debiased estimate recovers 0.3."""
    d, n = 200_000, 6
    g = torch.Generator().manual_seed(1)
    shared, own = (torch.randn(d, generator=g, dtype=torch.float64),
                   torch.randn(n, d, generator=g, dtype=torch.float64))
    true = (math.sqrt(0.3) * shared / shared.norm()
            + math.sqrt(0.7) * own / own.norm(dim=1, keepdim=True))
    true /= true.norm(dim=1, keepdim=True)
    A, B = noisy_estimates(true, noise=2 / math.sqrt(d), seed=2)
    cos = diag.gradient_cosines(A, B)
    assert len(cos["cross"]) == len(cos["debiased"]) == 15 and len(cos["same_prompt"]) == 6
    assert np.mean(cos["same_prompt"]) == pytest.approx(0.2, abs=0.01)
    assert np.mean(cos["cross"]) == pytest.approx(0.06, abs=0.01)
    assert np.mean(cos["debiased"]) == pytest.approx(0.3, abs=0.02)


def test_debiased_estimate_of_orthogonal_gradients_is_near_zero():
    """Orthogonal true gradients: the debiased |cos| is small; noise-only rows (a prompt with
    nothing to learn) make the norm estimate fall to noise, and a non-positive one
    drops the pair."""
    d = 100_000
    true = torch.zeros(4, d, dtype=torch.float64)
    for i in range(4):
        true[i, i * 1000:(i + 1) * 1000] = 1 / math.sqrt(1000)
    A, B = noisy_estimates(true, noise=1 / math.sqrt(d), seed=3)
    cos = diag.gradient_cosines(A, B)
    assert max(cos["debiased"]) < 0.05
    assert np.mean(cos["same_prompt"]) == pytest.approx(0.5, abs=0.02)


def test_rows_without_signal_are_left_out():
    A = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1, 0]])
    B = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, -1, 0]])
    cos = diag.gradient_cosines(A, B)
    assert cos["cross"] == [0.0]  # rows 0 and 2 only
    assert cos["same_prompt"] == [1.0, 1.0]  # rows 0 and 2: |cos| of (0,1,0) and (0,-1,0)
    assert len(cos["debiased"]) == 0  # norm estimates: 1, 0, -1: only row 0 is positive


def test_debiased_inner_products_are_unbiased_on_the_papers_bandit():
    """The paper's log-linear bandit, where grad J_i is exact (theory.grad_hess): over many draws of
    two groups of K=8 samples per prompt, the mean of G_i^A . G_j^B equals
    (K-1)^2 grad J_i . grad J_j (here i != j and i = j), while the naive same-prompt cosine stays
    far below the true 1."""
    rng = np.random.default_rng(0)
    K, d, n_answers = 8, 6, 5
    X = [rng.normal(size=(n_answers, d)) for _ in range(2)]
    theta = rng.normal(size=d) * 0.3
    correct = [0, 1]
    true = [T.grad_hess(X[i], theta, correct[i])[2] for i in range(2)]
    reps, prods, same = 20_000, np.zeros((2, 2)), []
    for _ in range(reps):
        est = {}
        for i in range(2):
            pi = T.softmax(X[i] @ theta)
            for s in "AB":
                o = rng.choice(n_answers, size=K, p=pi)
                r = (o == correct[i]).astype(float)
                est[s, i] = ((r - r.mean())[:, None] * (X[i][o] - X[i].T @ pi)).sum(0)
        for i in range(2):
            for j in range(2):
                prods[i, j] += est["A", i] @ est["B", j] / reps
        na, nb = np.linalg.norm(est["A", 0]), np.linalg.norm(est["B", 0])
        if na > 0 and nb > 0:
            same.append(abs(est["A", 0] @ est["B", 0]) / (na * nb))
    expected = (K - 1) ** 2 * np.array([[true[i] @ true[j] for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(prods, expected, rtol=0.1, atol=0.02 * np.abs(expected).max())
    assert np.mean(same) < 0.9


def test_sketch_is_exact_when_small_and_keeps_inner_products_when_not():
    g = torch.Generator().manual_seed(0)
    params = [torch.zeros(300, 40), torch.zeros(7000)]
    a = [torch.randn(p.shape, generator=g) for p in params]
    b = [x + 0.5 * torch.randn(x.shape, generator=g) for x in a]
    exact = diag.GradientSketch(params, dim=100_000)
    assert exact.exact and torch.equal(exact(a), torch.cat([x.flatten() for x in a]))
    small = diag.GradientSketch(params, dim=4096, seed=5)
    assert not small.exact
    sa, sb = small(a), small(b)
    assert sa.shape == (4096,) and torch.equal(small(a), sa)  # the same map on every call
    flat_a, flat_b = torch.cat([x.flatten() for x in a]), torch.cat([x.flatten() for x in b])
    error = abs(float(sa @ sb - flat_a @ flat_b))
    assert error < 5 * float(flat_a.norm() * flat_b.norm()) / math.sqrt(4096)
    assert (float(small([x + y for x, y in zip(a, b)]) @ sa)
            == pytest.approx(float((sa + sb) @ sa), rel=1e-5))


def test_across_steps_pairs_the_same_prompts():
    previous = [{"id": str(i), "curvature": c} for i, c in enumerate([1.0, 2.0, 3.0, 4.0])]
    current = [{"id": str(i), "reward_std": s}
               for i, s in [(3, 0.1), (0, 0.4), (1, 0.3), (2, 0.2), (9, 0.5)]]
    # pairs (curvature, std): (4, .1), (1, .4), (2, .3), (3, .2): perfectly anti-correlated
    assert diag.across_steps(previous, current) == pytest.approx(-1.0)
    assert diag.across_steps(previous[:2], current) is None  # fewer than three pairs
    assert diag.pearson([1, 1, 1], [1, 2, 3]) is None
