"""Tests for theory.py: the log-linear bandit's analytic gradient and Hessian against autograd, the
paper's smoothness bounds, the notes' closed-form updates, Assumption 2 by construction, the
expected sampled-GRPO factor rho_K(p) by exact enumeration, and the entry point with and without
matplotlib."""

import itertools
import json
import math
import sys

import numpy as np
import pytest
import torch

import theory as T


def instances(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [T.random_instance(rng) for _ in range(n)]


# --- Analytic forms against autograd (float64) ----------------------------------------------------


def test_analytic_gradient_and_hessian_equal_autograd():
    for X, theta, a in instances(60):
        p, q, g, H = T.grad_hess(X, theta, a)
        ga, Ha = T.autograd_grad_hess(X, theta, a)
        x2 = T.spectral_norm(X) ** 2
        assert abs(p + q - 1) < 1e-12
        np.testing.assert_allclose(g, ga, rtol=0, atol=1e-13 * math.sqrt(x2))
        np.testing.assert_allclose(H, Ha, rtol=0, atol=1e-13 * x2)
        np.testing.assert_allclose(H, H.T, atol=1e-15 * x2)


def test_hessian_formula_by_hand_on_two_answers():
    # X = [[1], [-1]], a = 0: p = sigmoid(2 theta), J'' = 4 p (1 - p)(1 - 2p)
    # (the derivative of 2 p (1 - p))
    for theta in (-3.0, -0.2, 0.0, 0.7, 4.0):
        p, _, g, H = T.grad_hess(np.array([[1.0], [-1.0]]), np.array([theta]), 0)
        assert p == pytest.approx(1 / (1 + math.exp(-2 * theta)), rel=1e-14)
        assert g[0] == pytest.approx(2 * p * (1 - p), rel=1e-12)
        assert H[0, 0] == pytest.approx(4 * p * (1 - p) * (1 - 2 * p), rel=1e-10, abs=1e-16)


# --- The smoothness bounds ------------------------------------------------------------------------


def test_local_and_global_bounds_hold_and_have_teeth():
    r = T.check_bounds(600, seed=1, n_autograd=10)
    assert r["local_ok"] and r["global_ok"]
    assert r["autograd_max_err"] < 1e-13
    # p spans (0, 1), near-deterministic both ways
    assert r["p_min"] < 1e-6 and r["one_minus_p_min"] < 1e-6
    # the local bound is tight up to the factor 2 derived in the module docstring, the global one is
    # much looser
    assert 0.3 < r["max_local_ratio"] <= 0.5 + 1e-9
    assert r["max_global_ratio"] <= 0.5  # proven; numerically the sup is 1/(3 sqrt 3) = 0.192


def test_local_bound_ratio_tends_to_one_half_on_two_answers():
    X = np.array([[1.0], [-1.0]])  # ||X||_2^2 = 2; ratio = |1 - 2p| / 2 -> 1/2 as p -> 0
    p, q, _, H = T.grad_hess(X, np.array([-8.0]), 0)
    assert abs(H[0, 0]) / (4 * 2 * p * q) == pytest.approx(0.5, abs=1e-6)


def test_bounds_stable_for_saturated_policies():
    # p = 1 - 1e-30: the centred forms keep 1 - p and the Hessian accurate
    # where p (1 - p) would cancel
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    theta = np.array([40.0, -30.0])
    p, q, _, H = T.grad_hess(X, theta, 0)
    assert 0 < q < 1e-15
    assert np.abs(np.linalg.eigvalsh(H)).max() <= 2 * T.spectral_norm(X) ** 2 * p * q * (1 + 1e-9)


# --- Updates and orthogonality --------------------------------------------------------------------


def test_deterministic_updates_equal_the_notes_closed_forms():
    rng = np.random.default_rng(3)
    for _ in range(10):
        K, m, eta = 5, 4, 0.37
        X = rng.normal(size=(1, K, m))
        theta = rng.normal(size=(1, m))
        pi = T.softmax(X[0] @ theta[0])
        p, rest = pi[0], (pi[1:, None] * X[0, 1:]).sum(0)  # sum_{j != a} pi_j x_j, a = 0
        a = np.zeros(1, dtype=int)
        grpo = T.exact_step(X, theta, a, eta, normalize=True)[0][0]
        reinforce = T.exact_step(X, theta, a, eta, normalize=False)[0][0]
        # the notes' two closed forms, a = 0
        closed_grpo = theta[0] + eta * (math.sqrt(p * (1 - p)) * X[0, 0]
                                        - math.sqrt(p / (1 - p)) * rest)
        closed_reinforce = theta[0] + eta * (p * (1 - p) * X[0, 0] - p * rest)
        np.testing.assert_allclose(grpo, closed_grpo, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(reinforce, closed_reinforce, rtol=1e-12, atol=1e-14)


def test_orthogonal_prompts_have_orthogonal_gradients():
    p0s = [0.02, 0.3, 0.6, 0.9]
    bandit = T.make_bandit(p0s, [0, 1, 0, 2], n_answers=5, seed=4)
    full, theta = T.embed(bandit["X"]), bandit["theta0"].reshape(-1)  # theta in R^{n m}
    grads = np.stack([T.grad_hess(full[i], theta, 0)[2] for i in range(len(p0s))])
    gram = grads @ grads.T
    assert np.abs(gram - np.diag(np.diag(gram))).max() == 0.0
    assert (np.diag(gram) > 0).all()
    # the block form used by the experiments
    _, p, _, g = T.batch_grad(bandit["X"], bandit["theta0"], bandit["a"])
    np.testing.assert_allclose(p, p0s, rtol=1e-12)
    np.testing.assert_allclose(g.reshape(-1), grads.sum(0), rtol=1e-12, atol=1e-15)
    assert bandit["x_max"] == pytest.approx(1.0)


def test_exact_run_satisfies_min_bounds_and_grpo_helps_hard_prompts():
    r = T.run_exact(p0s=[0.02, 0.5], n_features=2, steps=300)
    for algo in ("reinforce", "grpo"):
        assert (r[algo]["max_bound_ratio"] <= 1).all() and (r[algo]["ascent_ratio"] >= 1).all()
        assert (r[algo]["unreached"] == 0).all()
    assert (r["grpo"]["max_weighted_sum_ratio"] <= 1).all()
    assert r["grpo"]["steps_to_target"][0] < r["reinforce"]["steps_to_target"][0]


# --- Sampled groups: E[GRPO update] = rho_K(p) E[REINFORCE update], by exact enumeration ----------


@pytest.mark.parametrize("K", [2, 3, 4])
def test_expected_sampled_updates_by_enumeration(K):
    from grpo import group_advantages

    rng = np.random.default_rng(K)
    n_answers, m = 3, 3
    X = rng.normal(size=(1, n_answers, m))
    theta = rng.normal(size=(1, m))
    pi, p, _, g = T.batch_grad(X, theta, np.zeros(1, dtype=int))
    # every group of K answers
    outcomes = np.array(list(itertools.product(range(n_answers), repeat=K)))
    prob = np.prod(pi[0][outcomes], axis=1)
    r = torch.from_numpy((outcomes == 0).astype(np.float64))
    for mode, factor in (("none", 1.0), ("std", float(T.expected_gain(p[0], K)))):
        A = group_advantages(r, mode).numpy()
        upd = T.group_update(X, np.broadcast_to(pi, (len(outcomes), 1, n_answers)),
                             outcomes[:, None], A[:, None])
        expected = (prob[:, None] * upd[:, 0]).sum(0)
        # eps = 1e-6 in the std
        np.testing.assert_allclose(expected, factor * (K - 1) * g[0], rtol=1e-5, atol=1e-12)


def test_expected_gain_limits():
    # K = 2: sigma is always 1/2
    assert np.allclose(T.expected_gain(np.array([0.01, 0.3, 0.9]), 2), 2.0)
    # only k = 1 groups
    assert float(T.expected_gain(1e-6, 8)) == pytest.approx(8 / math.sqrt(7), rel=1e-4)
    # K -> infinity
    assert float(T.expected_gain(0.2, 4000)) == pytest.approx(1 / math.sqrt(0.2 * 0.8), rel=1e-3)


# --- The entry point ------------------------------------------------------------------------------


def test_main_quick_writes_json_figures_and_readme(tmp_path):
    pytest.importorskip("matplotlib")
    result = T.main(["--quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "theory.json").read_text())
    assert set(data) >= {"bounds", "exact", "sampled", "figures"}
    assert data["bounds"]["local_ok"] and data["bounds"]["global_ok"]
    assert data["figures"] == ["theory_exact.png", "theory_sampled.png"]
    for f in data["figures"]:
        assert (tmp_path / f).stat().st_size > 10_000
    readme = (tmp_path / "README.md").read_text()
    assert "theory_exact.png" in readme and "### Findings" in readme
    assert result["seconds"] < 30


def test_main_without_matplotlib_still_writes_numbers(tmp_path, monkeypatch, capsys):
    # makes `import matplotlib` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    T.main(["--quick", "--out", str(tmp_path)])
    assert "pip install matplotlib" in capsys.readouterr().out
    data = json.loads((tmp_path / "theory.json").read_text())
    assert data["figures"] == [] and not list(tmp_path.glob("*.png"))
    assert data["sampled"]["steps_to_target"]
