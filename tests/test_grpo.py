"""grpo.py: the two estimators on hand-worked groups, the loss, the update's sign,
exact resume, bad input."""

import json
import math
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

import data as D
import diagnostics as diag
import grader
import grpo as G
import lora as L
import model as M
from tiny import make_hf_model, save_hf_model

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "model"


# --- the advantage formulas -----------------------------------------------------------------------


def test_one_correct_of_eight():
    """k=1 of K=8: mean 1/8, population std sqrt(1/8 * 7/8) = 0.330719. By hand:
    REINFORCE gives the correct sample 1 - 1/8 = 0.875 and each wrong one -0.125;
    GRPO gives 0.875 / 0.330719 = 2.6458 and -0.125 / 0.330719 = -0.37796."""
    r = torch.tensor([[0, 0, 1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    none = G.group_advantages(r, "none")
    std = G.group_advantages(r, "std")
    assert none[0, 2].item() == pytest.approx(0.875, abs=1e-7)
    assert none[0, 0].item() == pytest.approx(-0.125, abs=1e-7)
    assert std[0, 2].item() == pytest.approx(2.6458, abs=1e-4)
    assert std[0, 0].item() == pytest.approx(-0.37796, abs=1e-5)
    assert std.sum().item() == pytest.approx(0.0, abs=1e-5)


def test_half_correct_and_several_groups():
    """[1,1,0,0]: mean .5, std .5 -> none +-0.5, std +-1.
    [1,0,0,0]: mean .25, std sqrt(3)/4 = 0.4330."""
    r = torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 0]])
    torch.testing.assert_close(G.group_advantages(r, "none"),
                               torch.tensor([[.5, .5, -.5, -.5], [.75, -.25, -.25, -.25]]))
    s = math.sqrt(3) / 4
    expected = torch.tensor([[1.0, 1, -1, -1], [.75 / s, -.25 / s, -.25 / s, -.25 / s]])
    torch.testing.assert_close(G.group_advantages(r, "std"), expected, atol=1e-5, rtol=0)


def test_zero_std_groups_get_zero_advantage_in_both():
    r = torch.tensor([[1.0] * 8, [0.0] * 8])
    for mode in ("std", "none"):
        assert torch.equal(G.group_advantages(r, mode), torch.zeros(2, 8))


def test_batch_std_by_hand():
    """[1,0,0,0] and [1,1,1,0]: group means .25 and .75; all eight rewards:
    mean .5, population std .5. batch divides each group's centred rewards by that one std:
    +-.25 -> +-.5, .75 -> 1.5."""
    r = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]])
    expected = torch.tensor([[.75, -.25, -.25, -.25], [.25, .25, .25, -.75]]) / (0.5 + 1e-6)
    torch.testing.assert_close(G.group_advantages(r, "batch"), expected, atol=1e-6, rtol=0)
    # std instead divides each group by its own std, sqrt(3)/4 for both here: the
    # same set of weights
    torch.testing.assert_close(G.group_advantages(r, "std"), expected * 0.5 / (math.sqrt(3) / 4),
                               atol=1e-5, rtol=0)


def test_batch_equals_std_with_one_prompt():
    for row in ([0, 0, 1, 0, 0, 0, 0, 0], [1, 1, 0, 1, 0, 1, 1, 1], [1, 0]):
        r = torch.tensor([row], dtype=torch.float32)
        assert torch.equal(G.group_advantages(r, "batch"), G.group_advantages(r, "std"))


def test_batch_with_all_rewards_equal_is_zero_not_nan():
    for value in (0.0, 1.0):
        a = G.group_advantages(torch.full((3, 8), value), "batch")
        assert torch.equal(a, torch.zeros(3, 8))


def test_matched_by_hand():
    """[1,0,0,0] (std sqrt(3)/4 = 0.4330), [1,1,0,0] (std 0.5), [1,1,1,1] (no signal). Sum of |c|:
    1.5 + 2 = 3.5; sum of |c| / std: 1.5 / 0.4330 + 2 / 0.5 = 7.4641; s = 3.5 / 7.4641 = 0.468912
    (binary rewards: sum sigma^2 / sum sigma = (3/16 + 1/4) / (0.4330 + 0.5), the same). matched is
    none / s; its mean |A| is std's, 7.4641 / 12 = 0.622, where batch's is 5% smaller, 3.5 / 0.4930
    / 12 = 0.592 (its std over all twelve rewards holds the between-prompt variance too)."""
    r = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    sigma = [math.sqrt(3) / 4 + 1e-6, 0.5 + 1e-6]
    s = 3.5 / (1.5 / sigma[0] + 2 / sigma[1])
    assert s == pytest.approx(0.468912, abs=1e-6)
    assert s == pytest.approx((3 / 16 + 1 / 4) / (math.sqrt(3) / 4 + 0.5), abs=1e-5)
    matched = G.group_advantages(r, "matched")
    torch.testing.assert_close(matched, G.group_advantages(r, "none") / s, atol=1e-6, rtol=0)
    mean_abs = lambda a: float(a.abs().mean())  # noqa: E731
    assert mean_abs(matched) == pytest.approx(mean_abs(G.group_advantages(r, "std")), rel=1e-6)
    assert mean_abs(matched) == pytest.approx((1.5 / sigma[0] + 2 / sigma[1]) / 12, rel=1e-6)
    assert mean_abs(G.group_advantages(r, "batch")) == pytest.approx(
        3.5 / math.sqrt(7 / 12 * 5 / 12) / 12, rel=1e-5)


@pytest.mark.parametrize("estimator", ["population", "bessel"])
def test_matched_keeps_stds_step_size_on_random_batches(estimator):
    """16 groups of 8 binary rewards at random pass rates: matched's mean |A| equals std's on every
    batch (with either std estimator), and matched is none times one positive scalar."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        r = (torch.rand(16, 8, generator=g) < torch.rand(16, 1, generator=g)).float()
        std = G.group_advantages(r, "std", 1e-4, estimator=estimator)
        none = G.group_advantages(r, "none")
        matched = G.group_advantages(r, "matched", 1e-4, estimator=estimator)
        assert float(matched.abs().mean()) == pytest.approx(float(std.abs().mean()), rel=1e-5)
        signal = none != 0
        ratio = matched[signal] / none[signal]
        assert float(ratio.max() - ratio.min()) <= 1e-5 * float(ratio.max())


def test_matched_is_std_with_one_prompt_and_zero_without_signal():
    for row in ([0, 0, 1, 0, 0, 0, 0, 0], [1, 1, 0, 1, 0, 1, 1, 1], [1, 0]):
        r = torch.tensor([row], dtype=torch.float32)
        torch.testing.assert_close(G.group_advantages(r, "matched"), G.group_advantages(r, "std"),
                                   atol=1e-6, rtol=1e-6)
    assert torch.equal(G.group_advantages(torch.ones(3, 8), "matched"), torch.zeros(3, 8))


@pytest.mark.parametrize("estimator", ["population", "bessel"])
def test_matched_divisor_over_ranks_is_the_whole_steps(estimator):
    """Data parallel: each rank holds whole groups; global_matched_divisor sums the two partial
    sums over ranks, so every rank divides by the whole step's s (here two ranks, simulated: the
    world's sum adds the other rank's values)."""
    g = torch.Generator().manual_seed(1)
    r = (torch.rand(16, 8, generator=g) < torch.rand(16, 1, generator=g)).float()

    class Rank:
        size = 2

        def __init__(self, other=None):
            self.other, self.sent = other, None

        def sum_values(self, *values):
            self.sent = values
            return [a + b for a, b in zip(values, self.other.sent)] if self.other else values

    first = Rank()
    G.global_matched_divisor(r[:8], 1e-6, first, estimator)  # rank 0's partial sums
    s = G.global_matched_divisor(r[8:], 1e-6, Rank(other=first), estimator)  # rank 1 adds its own
    whole = G.group_advantages(r, "matched", estimator=estimator)
    torch.testing.assert_close(G.group_advantages(r[8:], "matched", matched_divisor=s), whole[8:],
                               atol=1e-6, rtol=1e-5)
    assert G.global_matched_divisor(r, 1e-6, G.World(), estimator) is None  # computed in place


def test_unknown_normalisation_is_an_error():
    with pytest.raises(ValueError, match="normalize must be"):
        G.group_advantages(torch.zeros(1, 4), "median")


def test_bessel_std_by_hand():
    """TRL's std (the paper preset): sum of squares / (K - 1), eps 1e-4. k=1 of K=8: the squares
    sum to 7/8, so std = sqrt(7/8 / 7) = sqrt(1/8) = 0.353553 (population: 0.330719); the correct
    sample gets 0.875 / 0.353653 = 2.47418, each wrong one -0.125 / 0.353653 = -0.353454.
    Batch over [1,0,0,0] and [1,1,1,0]: mean .5, squares 8 * .25 = 2, std sqrt(2/7) = 0.534522."""
    r = torch.tensor([[0, 0, 1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    a = G.group_advantages(r, "std", 1e-4, estimator="bessel")
    assert a[0, 2].item() == pytest.approx(2.47418, abs=1e-5)
    assert a[0, 0].item() == pytest.approx(-0.353454, abs=1e-6)
    r = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]])
    expected = torch.tensor([[.75, -.25, -.25, -.25], [.25, .25, .25, -.75]]) / (0.534522 + 1e-4)
    torch.testing.assert_close(G.group_advantages(r, "batch", 1e-4, estimator="bessel"), expected,
                               atol=1e-5, rtol=0)
    # none has no std
    assert torch.equal(G.group_advantages(r, "none", estimator="bessel"),
                       G.group_advantages(r, "none", estimator="population"))


def test_unknown_std_estimator_is_a_one_line_error():
    with pytest.raises(ValueError, match="^--std-estimator must be 'bessel' or 'population', "
                                         "got 'sample'$"):
        G.group_advantages(torch.zeros(1, 4), "std", estimator="sample")


class TwoRanks:
    """World.sum_values of a 2-process run as seen by rank 0: its values plus the other rank's."""
    size = 2

    def __init__(self, other_rewards):
        self.other = other_rewards

    def sum_values(self, *values):
        theirs = (self.other.numel(), float(self.other.sum()), float(self.other.pow(2).sum()))
        return [a + b for a, b in zip(values, theirs)]


@pytest.mark.parametrize("estimator, bessel", [("bessel", True), ("population", False)])
def test_the_batch_std_over_ranks_is_the_std_of_the_whole_batch(estimator, bessel):
    mine, theirs = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[1.0, 1, 1, 0], [0, 0, 0, 1]])
    whole = torch.cat([mine, theirs]).std(unbiased=bessel)
    assert G.global_batch_std(mine, TwoRanks(theirs), estimator) == pytest.approx(float(whole))


# --- the loss -------------------------------------------------------------------------------------


def test_loss_aggregation_rules_by_hand():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([2.0, -1.0])
    # sums of token log-probs: -6 and -1; means: -2 and -0.5. The step: 4 completions, 10 tokens
    # (this micro-batch is half of it), so each rule divides by the one count it names.
    step = dict(step_tokens=10, step_completions=4)
    assert (G.policy_loss(lp, mask, adv, "seq-sum", **step).item()
            == pytest.approx(-(2 * -6 + -1 * -1) / 4))
    assert (G.policy_loss(lp, mask, adv, "seq-mean", **step).item()
            == pytest.approx(-(2 * -2 + -1 * -0.5) / 4))
    assert (G.policy_loss(lp, mask, adv, "token-mean", **step).item()
            == pytest.approx(-(2 * -6 + -1 * -1) / 10))
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.4, 9.0]])
    with_kl = G.policy_loss(lp, mask, adv, "seq-sum", **step, kl_tokens=kl, kl_coef=0.5).item()
    assert with_kl == pytest.approx(-(2 * -6 + -1 * -1) / 4 + 0.5 * (0.6 + 0.8) / 4)
    with_kl = G.policy_loss(lp, mask, adv, "seq-mean", **step, kl_tokens=kl, kl_coef=0.5).item()
    assert with_kl == pytest.approx(-(2 * -2 + -1 * -0.5) / 4 + 0.5 * (0.2 + 0.4) / 4)


def test_k3_kl_is_zero_on_policy_and_positive_otherwise():
    lp = torch.log(torch.tensor([0.2, 0.5]))
    assert torch.equal(G.kl_k3(lp, lp), torch.zeros(2))
    assert (G.kl_k3(lp, torch.log(torch.tensor([0.3, 0.4]))) > 0).all()


def test_linear_lr_decay():
    cfg = G.Config(lr=1e-3, steps=4)
    assert [G.lr_at(s, cfg) for s in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


# --- the update -----------------------------------------------------------------------------------


def test_a_step_raises_the_logprob_of_a_positive_advantage_completion(tmp_path):
    model = M.load_model(save_hf_model(make_hf_model(seed=4), tmp_path))
    params = L.apply_lora(model, r=4, alpha=8)
    torch.manual_seed(0)
    # B = 0 makes A's gradient zero; start both off zero so every LoRA weight moves
    for p in params:
        torch.nn.init.normal_(p, std=0.02)
    prompt, good, bad = [5, 6, 7], [10, 11, 12, 13], [20, 21, 22]
    ro = G.Rollouts(problems=[None], prompts=[prompt], completions=[good, bad], texts=["", ""],
                    rewards=torch.tensor([[1.0, 0.0]]))
    cfg = G.Config(group_size=2, optimizer="sgd", lr=0.1, grad_clip=0, micro_batch=1,
                   temperature=1.0, loss_agg="seq-sum", kl_coef=0.0)

    def logp(completion):
        with torch.no_grad():
            lp, _, mask = M.completion_logprobs(model, [prompt], [completion], [0])
        return float((lp * mask).sum())

    before = logp(good), logp(bad)
    opt = G.make_optimizer(params, cfg)
    loss, stats = G.update(model, params, opt, ro, G.group_advantages(ro.rewards, "std"), cfg,
                           vocab_size=97)
    after = logp(good), logp(bad)
    assert after[0] > before[0] and after[1] < before[1]
    assert stats["grad_norm_preclip"] > 0 and math.isfinite(loss)


def test_micro_batching_gives_the_same_gradient(tmp_path):
    folder = save_hf_model(make_hf_model(seed=5), tmp_path)
    ro = G.Rollouts(problems=[None, None], prompts=[[1, 2], [3, 4, 5]],
                    completions=[[6, 7], [8], [9, 10, 11], [12, 13]], texts=[""] * 4,
                    rewards=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    grads = []
    for micro, agg in ((4, "token-mean"), (1, "token-mean"), (4, "seq-mean"), (3, "seq-mean")):
        model = M.load_model(folder)
        torch.manual_seed(0)
        params = L.apply_lora(model, r=2, alpha=4)
        for p in params:
            torch.nn.init.normal_(p, std=0.05)
        cfg = G.Config(group_size=2, optimizer="sgd", lr=1e-9, grad_clip=0, micro_batch=micro,
                       loss_agg=agg, kl_coef=0.0)
        G.update(model, params, G.make_optimizer(params, cfg), ro,
                 G.group_advantages(ro.rewards, "none"), cfg, 97)
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(grads[2], grads[3], atol=1e-7, rtol=1e-5)


# --- the switch changes the update exactly as the formulas say ------------------------------------

PROMPTS = [[5, 6, 7], [8, 9]]
COMPLETIONS = [[10, 11, 12, 13], [20, 21, 22], [30], [31, 32], [40, 41], [42], [43, 44, 45], [46]]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_hf_model(make_hf_model(seed=4), tmp_path_factory.mktemp("tiny"))


def fresh_lora(folder):
    model = M.load_model(folder)
    params = L.apply_lora(model, r=4, alpha=8)
    torch.manual_seed(0)
    # B = 0 makes A's gradient zero; start both off zero so every LoRA weight moves
    for p in params:
        torch.nn.init.normal_(p, std=0.02)
    return model, params


def rollouts(rewards):
    rewards = torch.tensor(rewards)
    n = rewards.shape[0]
    return G.Rollouts(problems=[None] * n, prompts=PROMPTS[:n], completions=COMPLETIONS[:n * 4],
                      texts=[""] * (n * 4), rewards=rewards)


def update_delta(folder, ro, normalize, **overrides):
    """The change of the LoRA weights (flat) after one update from the same initial adapter; the
    paper's population std + 1e-6 unless overridden."""
    model, params = fresh_lora(folder)
    cfg = G.Config(group_size=4, micro_batch=3,
                   **({"optimizer": "sgd", "lr": 0.5, "grad_clip": 0.0, "loss_agg": "token-mean",
                       "kl_coef": 0.0, "std_estimator": "population", "std_eps": 1e-6}
                      | overrides))
    before = torch.cat([p.detach().flatten().clone() for p in params])
    opt = G.make_optimizer(params, cfg)
    advantages = G.group_advantages(ro.rewards, normalize, cfg.std_eps,
                                    estimator=cfg.std_estimator)
    _, stats = G.update(model, params, opt, ro, advantages, cfg, 97)
    return torch.cat([p.detach().flatten() for p in params]) - before, stats


def policy_gradient(folder, ro, weights):
    """Independent: grad of -sum_ik w_ik log p(o_ik) / (number of tokens),
    by autograd on full forwards."""
    model, params = fresh_lora(folder)
    n_tokens = sum(len(c) for c in ro.completions)
    loss = 0.0
    for i, prompt in enumerate(ro.prompts):
        for k in range(4):
            c = ro.completions[i * 4 + k]
            full = torch.log_softmax(model(torch.tensor([prompt + c])), -1)[0]
            loss = loss - weights[i][k] * sum(full[len(prompt) - 1 + j, t]
                                              for j, t in enumerate(c)) / n_tokens
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def assert_same_vector(a, b, rel=1e-5):
    """Equal up to float32 rounding, as vectors: |a - b| <= rel |b| (elementwise tolerances would be
    dominated by the rounding of theta + delta - theta in the smallest entries)."""
    assert float((a - b).norm()) <= rel * float(b.norm()), float((a - b).norm() / b.norm())


def test_one_prompt_sgd_std_is_none_times_one_over_sigma(tiny_folder):
    ro = rollouts([[1.0, 0, 0, 0]])
    sigma = math.sqrt(3) / 4
    none, _ = update_delta(tiny_folder, ro, "none")
    std, _ = update_delta(tiny_folder, ro, "std")
    batch, _ = update_delta(tiny_folder, ro, "batch")
    assert_same_vector(std, none / (sigma + 1e-6))
    assert torch.equal(batch, std)
    # and none itself is -lr times the independent policy gradient of r - mean
    g = policy_gradient(tiny_folder, ro, [[.75, -.25, -.25, -.25]])
    assert_same_vector(none, -0.5 * g)


def test_the_std_estimator_switch_scales_the_update_as_its_formula_says(tiny_folder):
    """[1,0,0,0]: population std sqrt(3)/4 (+1e-6, the demo), Bessel std 1/2 (+1e-4, TRL's): SGD
    without clipping, each std update is none's divided by its own std + eps."""
    ro = rollouts([[1.0, 0, 0, 0]])
    none, _ = update_delta(tiny_folder, ro, "none")
    population, _ = update_delta(tiny_folder, ro, "std")
    bessel, _ = update_delta(tiny_folder, ro, "std", std_estimator="bessel", std_eps=1e-4)
    assert_same_vector(population, none / (math.sqrt(3) / 4 + 1e-6))
    assert_same_vector(bessel, none / (0.5 + 1e-4))
    assert float(population.norm() / bessel.norm()) == pytest.approx(
        (0.5 + 1e-4) / (math.sqrt(3) / 4 + 1e-6), rel=1e-5)  # 1.1549: the arms can differ


def test_with_clipping_active_both_arms_take_the_same_update(tiny_folder):
    ro = rollouts([[1.0, 0, 0, 0]])
    none, s_none = update_delta(tiny_folder, ro, "none", grad_clip=1e-3, lr=100.0)
    std, s_std = update_delta(tiny_folder, ro, "std", grad_clip=1e-3, lr=100.0)
    assert s_none["grad_clipped"] and s_std["grad_clipped"]
    assert s_std["grad_norm_preclip"] == pytest.approx(
        s_none["grad_norm_preclip"] / (math.sqrt(3) / 4), rel=1e-4)
    assert_same_vector(std, none)
    assert float(none.norm()) == pytest.approx(100 * 1e-3, rel=1e-4)  # lr x clip


def test_two_prompts_of_different_sigma_reweight_the_direction(tiny_folder):
    """std's update is -lr sum_i g_i / sigma_i, none's -lr sum_i g_i:
    the directions differ by the weights."""
    ro = rollouts([[1.0, 0, 0, 0], [1, 1, 0, 0]])
    sigmas = [math.sqrt(3) / 4 + 1e-6, 0.5 + 1e-6]
    centered = [[.75, -.25, -.25, -.25], [.5, .5, -.5, -.5]]
    g = [policy_gradient(tiny_folder, ro, [centered[0], [0] * 4]),
         policy_gradient(tiny_folder, ro, [[0] * 4, centered[1]])]
    none, _ = update_delta(tiny_folder, ro, "none")
    std, _ = update_delta(tiny_folder, ro, "std")
    assert_same_vector(none, -0.5 * (g[0] + g[1]))
    assert_same_vector(std, -0.5 * (g[0] / sigmas[0] + g[1] / sigmas[1]))
    cos = torch.nn.functional.cosine_similarity(std, none, dim=0)
    assert cos < 0.999  # not one scalar apart


def test_batch_update_is_none_times_one_over_the_batch_std(tiny_folder):
    ro = rollouts([[1.0, 0, 0, 0], [1, 1, 0, 0]])
    batch_std = float(ro.rewards.std(unbiased=False))  # 3 of 8 correct: sqrt(3/8 * 5/8)
    assert batch_std == pytest.approx(math.sqrt(15) / 8)
    none, _ = update_delta(tiny_folder, ro, "none")
    batch, _ = update_delta(tiny_folder, ro, "batch")
    assert_same_vector(batch, none / (batch_std + 1e-6))


def test_matched_update_is_none_times_one_scalar_and_differs_from_std(tiny_folder):
    """Through the whole update (micro-batches, token-mean, SGD): matched's step is none's times
    1/s, s = (3/16 + 1/4) / (sqrt(3)/4 + 1/2) for these two groups, and not std's direction."""
    ro = rollouts([[1.0, 0, 0, 0], [1, 1, 0, 0]])
    s = 3.5 / (1.5 / (math.sqrt(3) / 4 + 1e-6) + 2 / (0.5 + 1e-6))
    none, _ = update_delta(tiny_folder, ro, "none")
    matched, _ = update_delta(tiny_folder, ro, "matched")
    std, _ = update_delta(tiny_folder, ro, "std")
    assert_same_vector(matched, none / s)
    assert torch.nn.functional.cosine_similarity(std, matched, dim=0) < 0.999


def test_token_mean_is_trls_dapo_loss(tiny_folder):
    """TRL (git main, Sept 2025) loss_type="dapo", one completion per micro-batch, beta 0.02,
    written out as TRL computes it: per token -exp(lp - lp.detach()) * A + beta * k3, summed,
    divided by the number of completion tokens of the whole generation batch, micro-batch losses
    summed (no division by accumulation steps)."""
    ro = rollouts([[1.0, 0, 0, 0]])
    adv = G.group_advantages(ro.rewards, "std").flatten()
    model, params = fresh_lora(tiny_folder)
    num_items = sum(len(c) for c in ro.completions)
    total = 0.0
    for k, c in enumerate(ro.completions):
        full = torch.log_softmax(model(torch.tensor([ro.prompts[0] + c])), -1)[0]
        lp = torch.stack([full[len(ro.prompts[0]) - 1 + j, t] for j, t in enumerate(c)])
        with torch.no_grad(), L.lora_disabled(model):
            ref_full = torch.log_softmax(model(torch.tensor([ro.prompts[0] + c])), -1)[0]
            ref = torch.stack([ref_full[len(ro.prompts[0]) - 1 + j, t] for j, t in enumerate(c)])
        per_token = (-torch.exp(lp - lp.detach()) * adv[k]
                     + 0.02 * (torch.exp(ref - lp) - (ref - lp) - 1))
        total = total + per_token.sum() / num_items
    trl = torch.cat([g.flatten() for g in torch.autograd.grad(total, params)])
    ours, _ = update_delta(tiny_folder, ro, "std", lr=1.0, kl_coef=0.02)
    assert_same_vector(ours, -trl)


def test_the_optimizer_steps_on_a_step_without_signal(tiny_folder):
    """All-equal rewards, no KL: nothing is forwarded, the gradient is exactly zero, and AdamW still
    moves the weights by its momentum: theta -= lr * m_hat / (sqrt(v_hat) + eps) with
    m = b1 m, v = b2 v (by hand)."""
    model, params = fresh_lora(tiny_folder)
    cfg = G.Config(group_size=4, micro_batch=8, optimizer="adamw", lr=1e-2, grad_clip=0.0,
                   kl_coef=0.0)
    opt = G.make_optimizer(params, cfg)
    signal, none_at_all = rollouts([[1.0, 0, 0, 0]]), rollouts([[1.0, 1, 1, 1]])
    G.update(model, params, opt, signal, G.group_advantages(signal.rewards, "std"), cfg, 97)
    before = [p.detach().clone() for p in params]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    loss, stats = G.update(model, params, opt, none_at_all,
                           G.group_advantages(none_at_all.rewards, "std"), cfg, 97)
    assert loss == 0.0 and stats["grad_norm_preclip"] == 0.0 and not stats["grad_clipped"]
    # nothing measured, so nothing claimed
    assert stats["learner_tokens"] == 0 and stats["entropy"] is None
    b1, b2, eps = 0.9, 0.999, 1e-8
    for p, p0, s in zip(params, before, state):
        m, v = b1 * s["exp_avg"], b2 * s["exp_avg_sq"]
        expected = p0 - 1e-2 * (m / (1 - b1 ** 2)) / ((v / (1 - b2 ** 2)).sqrt() + eps)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-8)
    assert any(not torch.equal(p, p0) for p, p0 in zip(params, before))


# --- CLI and bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_problems, per_step", [(5, 2), (7, 3), (8, 4), (6, 1)])
def test_the_prompt_stream_never_repeats_a_prompt_in_a_step_and_resumes_exactly(n_problems, per_step):
    """Epochs in a fresh seeded order; a step that would run past an epoch's end starts the next
    epoch (the rest skipped), so no step holds a problem twice; every epoch's steps are distinct
    problems in the epoch's order; (epoch, position) alone restores the stream."""
    problems = [D.Problem(f"q{i}", str(i), id=f"p{i}") for i in range(n_problems)]
    stream = G.PromptStream(problems, seed=3)
    steps, states = [], []
    for _ in range(12):
        states.append(stream.state())
        steps.append([p.id for p in stream.take(per_step)])
    usable = n_problems - n_problems % per_step  # what each epoch serves
    per_epoch = usable // per_step
    for e in range(len(steps) // per_epoch):
        epoch = [i for step in steps[e * per_epoch:(e + 1) * per_epoch] for i in step]
        assert len(set(epoch)) == usable  # no problem twice in an epoch, so none in a step
        order = G.PromptStream(problems, seed=3, epoch=e)._order
        assert epoch == [f"p{i}" for i in order[:usable]]
    for k in (1, 5, 11):  # a resumed stream draws what the running one drew
        resumed = G.PromptStream(problems, seed=3, **states[k])
        assert [[p.id for p in resumed.take(per_step)] for _ in range(12 - k)] == steps[k:]


def test_every_flag_is_a_config_field_with_its_help_and_the_defaults_are_the_paper_preset(capsys):
    fields = G.dataclasses.fields(G.Config)
    assert all(f.metadata.get("help") for f in fields)
    with pytest.raises(SystemExit):
        G.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in fields:
        assert "--" + f.name.replace("_", "-") in shown
        assert " ".join(f.metadata["help"].split()) in shown
    assert G.PRESETS["paper"] == {}  # the paper preset is the defaults themselves
    assert set(G.PRESETS["demo"]) <= {f.name for f in fields}


def test_presets_and_flags_resolve():
    cfg, _ = G.parse_args(["--normalize", "none", "--lr", "3e-5"])
    assert cfg.preset == "paper" and cfg.normalize == "none" and cfg.lr == 3e-5
    assert ((cfg.lora_rank, cfg.lora_alpha, cfg.group_size, cfg.prompts_per_step, cfg.grad_clip,
             cfg.max_new_tokens, cfg.temperature, cfg.kl_coef)
            == (64, 128.0, 8, 1, 0.1, 1024, 1.0, 0.02))
    assert (cfg.loss_agg, cfg.template) == ("token-mean", "paper-gold")
    # TRL's std and prompt cut (tests/test_trl.py); the demo keeps its study's std
    assert (cfg.std_estimator, cfg.std_eps, cfg.max_prompt_tokens) == ("bessel", 1e-4, 768)
    demo, _ = G.parse_args(["--preset", "demo", "--steps", "7"])
    assert demo.data == "demo" and demo.steps == 7 and Path(demo.model) == DEMO
    assert (demo.std_estimator, demo.std_eps) == ("population", 1e-6)
    assert G.parse_args(["--std-estimator", "population"])[0].std_estimator == "population"


def test_resuming_a_run_from_before_the_new_fields_keeps_what_it_computed(tmp_path):
    """A config.json written before --std-estimator and --max-prompt-tokens existed: that run
    divided by the population std and cut no prompt, and goes on doing so."""
    config = G.dataclasses.asdict(G.Config(**G.PRESETS["demo"]))
    del config["std_estimator"], config["max_prompt_tokens"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    cfg, _ = G.parse_args(["--resume", str(tmp_path)])
    assert (cfg.std_estimator, cfg.max_prompt_tokens) == ("population", 0)


def test_prompts_are_cut_from_the_left_as_trl_cuts_them():
    tok = M.load_tokenizer(DEMO)
    problem = D.Problem(question="Tom has 5 apples. He buys 3 more. How many now?", answer="8")
    whole = tok.encode(D.format_prompt(problem, "plain"))
    assert len(whole) > 7 and D.prompt_ids(tok, problem, "plain", 7, 64, 512) == whole[-7:]
    assert D.prompt_ids(tok, problem, "plain", 0, 64, 512) == whole
    with pytest.raises(ValueError, match=r"^problem '': its prompt of 7 tokens \(after "
                                         r"--max-prompt-tokens 7\) \+ --max-new-tokens 64 exceeds "
                                         r"the model's 70 positions; lower --max-prompt-tokens or "
                                         r"--max-new-tokens$"):
        D.prompt_ids(tok, problem, "plain", 7, 64, 70)


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--normalize", "median"], "invalid choice: 'median'"),
    (["--group-size", "1"], "--group-size must be >= 2"),
    (["--optimizer", "lion"], "invalid choice: 'lion'"),
    (["--diag-every", "5", "--diag-prompts", "2"], "--diag-prompts must be >= 3 with --diag-every"),
    (["--eval-every", "-1"], "--eval-every must be >= 0"),
    (["--std-estimator", "sample"], "invalid choice: 'sample'"),
    (["--max-prompt-tokens", "-1"], "--max-prompt-tokens must be >= 0"),
    (["--seed", "2048"], "--seed must be in [0, 2048)"),
])
def test_bad_flags_are_one_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        G.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


# --- end to end on the demo model -----------------------------------------------------------------

SMALL = ["--preset", "demo", "--prompts-per-step", "4", "--group-size", "4",
         "--max-new-tokens", "48", "--save-every", "3", "--log-samples-every", "100",
         "--eval-every", "0"]


def run_metrics(run_dir: Path, timing=False):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if timing or not k.startswith(G.TIMING_PREFIXES)}
            for r in rows]


def adapter_tensors(ckpt: Path):
    from safetensors.torch import load_file
    return load_file(ckpt / "adapter_model.safetensors")


def test_resume_is_exact(tmp_path):
    """6 steps straight == 3 steps, stop, resume, 3 more:
    bitwise equal adapter weights and metrics."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    G.main(SMALL + ["--steps", "6", "--out", str(straight)])
    G.main(SMALL + ["--steps", "6", "--out", str(split)])
    # cut the second run back to its step-3 checkpoint, as if it had been stopped there
    shutil.rmtree(split / "checkpoints" / "step_000006")
    lines = (split / "metrics.jsonl").read_text().splitlines(keepends=True)
    (split / "metrics.jsonl").write_text("".join(lines[:3]))
    G.main(["--resume", str(split)])
    a, b = (adapter_tensors(straight / "checkpoints/step_000006"),
            adapter_tensors(split / "checkpoints/step_000006"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run_metrics(straight) == run_metrics(split)
    assert any(r["grad_norm_preclip"] > 0 for r in run_metrics(straight))  # the adapter did move
    first = adapter_tensors(straight / "checkpoints/step_000003")
    assert any(not torch.equal(first[k], a[k]) for k in a)


def test_resume_moves_metrics_past_the_checkpoint_aside(tmp_path):
    run = tmp_path / "run"
    G.main(SMALL + ["--steps", "4", "--save-every", "2", "--out", str(run)])
    shutil.rmtree(run / "checkpoints" / "step_000004")
    G.main(["--resume", str(run)])
    assert [r["step"] for r in run_metrics(run)] == [1, 2, 3, 4]
    aside = [json.loads(x)["step"]
             for x in (run / "metrics.after-step-2.jsonl").read_text().splitlines()]
    assert aside == [3, 4]


def test_grpo_improves_reward_on_the_demo_easy_tier(tmp_path):
    """A learnable toy task end to end: the demo model's easy problems, a few dozen steps."""
    run = tmp_path / "run"
    G.main(["--preset", "demo", "--tiers", "easy", "--steps", "40", "--prompts-per-step", "16",
            "--lr", "3e-3", "--out", str(run), "--save-every", "100", "--eval-every", "0"])
    acc = [r["accuracy"] for r in run_metrics(run)]
    assert sum(acc[-10:]) / 10 > sum(acc[:10]) / 10 + 0.08  # measured: +0.14 (0.57 -> 0.71)


def test_dry_run_on_a_random_hf_folder(tmp_path, data_file, capsys):
    """Any HF Qwen2 folder with a tokenizer: here a random model sized to the demo tokenizer."""
    tok = M.load_tokenizer(DEMO)
    folder = save_hf_model(make_hf_model(seed=0, vocab_size=tok.vocab_size), tmp_path / "random")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO / name, folder / name)
    G.main(["--dry-run", "--model", str(folder), "--data", str(data_file), "--template", "plain",
            "--max-new-tokens", "16", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "step 1/1" in out and "dry run ok" in out


@pytest.fixture()
def data_file(tmp_path):
    """The real GSM8K train file when GRPO_DATA_DIR is set, else a fixture in its format."""
    import os
    if os.environ.get("GRPO_DATA_DIR"):
        return Path(os.environ["GRPO_DATA_DIR"]) / "gsm8k" / "train.jsonl"
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(
        json.dumps({"question": f"Tom has {i} apples and buys 2 more. How many now?",
                    "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}) + "\n" for i in range(5)))
    return path


@pytest.fixture()
def one_hard_problem(tmp_path):
    """Three GSM8K-format problems, pass rates that leave one of them in the hard tier."""
    data = tmp_path / "three.jsonl"
    data.write_text("".join(
        json.dumps({"question": f"Tom has {i} apples and buys 2 more. How many now?",
                    "answer": f"#### {i + 2}"}) + "\n" for i in range(3)))
    rates = tmp_path / "rates.jsonl"
    rates.write_text("".join(json.dumps({"id": f"gsm8k/train/{i}", "pass_rate": r}) + "\n"
                             for i, r in enumerate([1.0, 0.3, 1.0])))
    return ["--data", str(data), "--difficulty-file", str(rates), "--tiers", "hard",
            "--template", "plain"]


def test_a_tier_with_one_problem_trains_one_prompt_per_step(tmp_path, one_hard_problem, capsys):
    run = tmp_path / "run"
    G.main(SMALL + one_hard_problem + ["--prompts-per-step", "1", "--steps", "2",
                                       "--normalize", "batch", "--out", str(run)])
    out = capsys.readouterr().out
    assert ("1 problems" in out
            and "note: one prompt per step, so --normalize cannot change the direction" in out)
    rows = run_metrics(run)
    assert len(rows) == 2 and all(r["accuracy/hard"] == r["accuracy"] for r in rows)


def test_more_prompts_per_step_than_problems_is_one_clear_message(tmp_path, one_hard_problem):
    with pytest.raises(SystemExit, match=r"--prompts-per-step 4 exceeds the 1 training problems "
                                         r".*--tiers hard"):
        G.main(SMALL + one_hard_problem + ["--steps", "1", "--out", str(tmp_path / "run")])


def test_every_step_logs_its_preclip_norm_and_the_run_its_clipped_share(tmp_path, capsys):
    run = tmp_path / "run"
    G.main(SMALL + ["--steps", "4", "--grad-clip", "0.05", "--out", str(run)])
    rows = run_metrics(run)
    for r in rows:
        assert r["grad_clipped"] == (r["grad_norm_preclip"] > 0.05)
        assert (r["entropy"] is None) == (r["learner_tokens"] == 0)
        # TRL's names beside ours (their values against TRL itself: tests/test_trl.py)
        assert (r["trl/reward"], r["trl/grad_norm"], r["trl/completions/mean_length"],
                r["trl/completions/clipped_ratio"], r["trl/learning_rate"]) == pytest.approx(
            (r["accuracy"], r["grad_norm_preclip"], r["completion_len"], r["truncated_frac"],
             r["lr"]))
        assert "trl/loss" not in r and "trl/kl" not in r  # seq-sum has no TRL loss_type; no KL
    clipped = sum(r["grad_clipped"] for r in rows)
    out = capsys.readouterr().out
    assert (f"gradient clipped (pre-clip norm > 0.05) on {clipped} of 4 steps ({clipped / 4:.0%})"
            in out)
    assert "note: one prompt per step" not in out  # 4 prompts per step


def test_time_keys_measure_what_their_names_say(tmp_path, monkeypatch):
    """Grading slowed by a known 20 ms per completion shows in time/grade, not in time/sample;
    tokens/s is the sampled tokens over the sampling time alone; accuracy is the mean reward,
    logged once."""
    slow = 0.02
    reward = grader.reward
    monkeypatch.setattr(G.grader, "reward",
                        lambda text, gold: (time.sleep(slow), reward(text, gold))[1])
    run = tmp_path / "run"
    G.main(SMALL + ["--steps", "2", "--out", str(run)])
    completions = 4 * 4
    for r in run_metrics(run, timing=True):
        assert r["time/grade"] >= slow * completions
        assert (r["time/sample"] + r["time/grade"] + r["time/advantages"] + r["time/update"]
                <= r["time/step"])
        tokens = r["completion_len"] * completions
        assert r["perf/sample_tokens_per_s"] == pytest.approx(tokens / r["time/sample"], rel=1e-6)
        assert "reward" not in r and 0 <= r["accuracy"] <= 1


EVAL = ["--eval-every", "2", "--eval-problems", "8", "--eval-samples", "2"]


def test_heldout_accuracy_is_logged_and_does_not_perturb_training(tmp_path):
    import eval as E
    plain, evald = tmp_path / "plain", tmp_path / "eval"
    G.main(SMALL + ["--steps", "4", "--out", str(plain)])
    G.main(SMALL + ["--steps", "4", "--out", str(evald)] + EVAL)
    rows = run_metrics(evald)
    assert [r["step"] for r in rows if "eval/problems" in r] == [0, 2, 4]
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("eval/")}  # noqa
                        for r in rs if r["step"]]
    assert strip(rows) == run_metrics(plain)
    last = rows[-1]
    for key in ("eval/greedy/strict/accuracy", "eval/greedy/lenient/accuracy",
                "eval/samples/strict/accuracy", "eval/strict/pass@2", "eval/lenient/pass@1",
                "eval/hard/greedy/strict/accuracy"):
        assert 0 <= last[key] <= 1
    assert last["eval/strict/pass@1"] == pytest.approx(last["eval/samples/strict/accuracy"])
    # the logged numbers are those of the step-4 adapter on the fixed held-out set
    cfg = G.Config(**json.loads((evald / "config.json").read_text()))
    model = M.load_model(cfg.model)
    L.load_adapter(model, evald / "checkpoints" / "step_000004")
    groups, _ = E.heldout_accuracy(model, M.load_tokenizer(cfg.model), G.load_heldout_problems(cfg),
                                   cfg.template, cfg.max_new_tokens, 2, 1.0,
                                   seed=cfg.seed)
    assert groups["all"]["greedy/strict/accuracy"] == last["eval/greedy/strict/accuracy"]
    assert groups["all"]["strict/pass@2"] == last["eval/strict/pass@2"]


@pytest.mark.parametrize("flags, message", [
    (["--eval-problems", "5000"],
     "--eval-problems 5000 exceeds the 1000 problems of the held-out split"),
    (["--data", "DATA"], "--eval-every 2: no held-out set for --data"),
])
def test_heldout_bad_input_is_one_clear_message(tmp_path, data_file, flags, message):
    flags = [str(data_file) if f == "DATA" else f for f in flags]
    with pytest.raises(SystemExit, match=message):
        G.main(SMALL + ["--steps", "1", "--out", str(tmp_path / "run"), "--template", "plain"]
               + EVAL + flags)


def test_resume_keeps_every_log_consistent(tmp_path):
    """Crash after step 4 was logged but before its checkpoint was complete: the resumed run's
    metrics, diagnostics and samples equal an uninterrupted run's, the unfinished checkpoint folder
    is gone, the old lines are kept."""
    flags = SMALL + ["--steps", "4", "--save-every", "2", "--diag-every", "2",
                     "--diag-prompts", "3", "--log-samples-every", "1"] + EVAL
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    G.main(flags + ["--out", str(straight)])
    G.main(flags + ["--out", str(crashed)])
    shutil.rmtree(crashed / "checkpoints" / "step_000004")
    (crashed / "checkpoints" / ".tmp-step_000004-abc").mkdir()
    G.main(["--resume", str(crashed)])
    assert run_metrics(straight) == run_metrics(crashed)
    # step 2: no earlier diagnostic step
    assert "diag/curvature_std_corr_across" not in run_metrics(crashed)[2]
    strip = lambda path: [{k: v for k, v in json.loads(x).items()}  # noqa
                          for x in path.read_text().splitlines()]
    assert strip(straight / "diagnostics.jsonl") == strip(crashed / "diagnostics.jsonl")
    assert strip(straight / "samples.jsonl") == strip(crashed / "samples.jsonl")
    assert [r["step"] for r in strip(crashed / "diagnostics.jsonl")] == [2] * 3 + [4] * 3
    assert not list((crashed / "checkpoints").glob(".tmp-*"))
    for name in ("metrics", "diagnostics", "samples"):
        aside = strip(crashed / f"{name}.after-step-2.jsonl")
        assert aside and all(r["step"] > 2 for r in aside)


def test_existing_run_folder_without_resume(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="already exists; pass --resume"):
        G.main(SMALL + ["--steps", "1", "--out", str(tmp_path / "run")])


def test_a_prompt_the_model_cannot_hold_is_one_clear_line(tmp_path):
    """The demo model has 512 positions: 500 new tokens leave too few for its prompts."""
    with pytest.raises(SystemExit) as e:
        G.main(SMALL + ["--steps", "1", "--max-new-tokens", "500", "--out", str(tmp_path / "run")])
    assert re.fullmatch(r"error: problem '[^']+': its prompt of \d+ tokens \(after "
                        r"--max-prompt-tokens 768\) \+ --max-new-tokens 500 exceeds the model's "
                        r"512 positions; lower --max-prompt-tokens or --max-new-tokens",
                        str(e.value.code))


def test_model_folder_without_weights(tmp_path):
    make_hf_model(seed=0).config.save_pretrained(tmp_path / "empty")
    with pytest.raises(SystemExit, match="no model.safetensors"):
        G.main(SMALL + ["--steps", "1", "--model", str(tmp_path / "empty"),
                        "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_broken_data_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n{not json\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: invalid JSON line"):
        G.main(SMALL + ["--steps", "1", "--data", str(bad), "--out", str(tmp_path / "run")])


def test_resume_with_other_flags_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        G.parse_args(["--resume", str(tmp_path), "--lr", "1"])
    assert "do not also pass --lr" in capsys.readouterr().err


def test_non_finite_losses_skip_steps_then_stop_with_a_checkpoint(tmp_path, monkeypatch):
    real = G.policy_loss
    monkeypatch.setattr(G, "policy_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match="3 steps in a row had a non-finite loss"):
        G.main(SMALL + ["--steps", "10", "--max-bad-steps", "3", "--out", str(run)])
    rows = run_metrics(run)
    assert len(rows) == 3 and all(r["skipped"] for r in rows)
    assert (run / "checkpoints" / "step_000003").is_dir()


def test_diagnostics_are_logged_and_do_not_perturb_training(tmp_path):
    plain, diag = tmp_path / "plain", tmp_path / "diag"
    G.main(SMALL + ["--steps", "4", "--out", str(plain)])
    G.main(SMALL + ["--steps", "4", "--out", str(diag), "--diag-every", "2", "--diag-prompts", "6"])
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("diag/")}  # noqa: E731
                          for r in rows]
    assert strip(run_metrics(diag)) == run_metrics(plain)
    logged = [r for r in run_metrics(diag) if "diag/prompts_with_signal" in r]
    assert [r["step"] for r in logged] == [2, 4]
    rows = [json.loads(x) for x in (diag / "diagnostics.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["curvature_a"] > 0 and 0 <= r["reward_std_b"] <= 0.5
                                   and r["pass_rate_a"] == r["right_a"] / 4 for r in rows)
    assert [len(r["gram"]) for r in rows if "gram" in r] == [12, 12]  # 2 x 6 estimates per step
    for r in logged:
        if r["diag/prompts_with_signal"] >= 2:
            assert 0 <= r["diag/cos_abs_mean"] <= r["diag/cos_abs_p90"] <= 1
        if "diag/cos_rms" in r:
            assert 0 <= r["diag/cos_rms_low"] <= r["diag/cos_rms"] <= r["diag/cos_rms_high"]


def test_per_prompt_gradients_and_curvature_by_hand(tmp_path):
    """diagnostics.measure against an independent computation on a tiny model: per-sample gradients
    by autograd on a full forward; G_i^S = sum_{k in S} (r_ik - mean_S) g_ik for the two sets
    S = A (first K), B (last K); kappa_i = mean_{k in A} |g_ik|^2 / |o_ik|; the logged Gram matrix,
    the naive cosines, the rms from pair terms written out, the reward std of set B."""
    import numpy as np
    model = M.load_model(save_hf_model(make_hf_model(seed=6, vocab_size=20), tmp_path))
    params = L.apply_lora(model, r=2, alpha=4)
    torch.manual_seed(1)
    for p in params:
        torch.nn.init.normal_(p, std=0.1)
    problems = [D.Problem(question=f"q{i}", answer="1", id=str(i)) for i in range(3)]
    prompts = [[1, 2], [3], [4, 5, 6]]
    g = torch.Generator().manual_seed(0)
    comps = [torch.randint(1, 20, (int(torch.randint(1, 4, (1,), generator=g)),),
                           generator=g).tolist()
             for _ in range(3 * 8)]
    rewards = torch.tensor([[1.0, 0, 0, 1, 0, 1, 1, 1],    # A: 2 right; B: std .433
                            [0, 1, 0, 0, 1, 1, 0, 0],      # A: 1 right; B: std .5
                            [1, 0, 1, 1, 1, 0, 0, 0]])     # A: 3 right; B: std .433
    ro = G.Rollouts(problems, prompts, comps, [""] * 24, rewards)
    model.train()
    summary, rows = diag.measure(model, params, ro, K=4, temperature=1.0, vocab_size=20, step=1,
                                 seed=0)
    assert model.training  # measured without dropout, handed back as it came

    def grad_of(prompt, completion):
        full = torch.log_softmax(model(torch.tensor([prompt + completion])), -1)[0]
        lp = sum(full[len(prompt) - 1 + j, t] for j, t in enumerate(completion))
        return torch.cat([x.flatten() for x in torch.autograd.grad(lp, params)]).double()

    est, kappas, std_b = {}, [], [math.sqrt(3) / 4, 0.5, math.sqrt(3) / 4]
    for i in range(3):
        gs = [grad_of(prompts[i], comps[i * 8 + k]) for k in range(8)]
        kappas.append(sum(float(x.pow(2).sum()) / len(comps[i * 8 + k])
                          for k, x in enumerate(gs[:4])) / 4)
        assert rows[i]["curvature_a"] == pytest.approx(kappas[-1], rel=1e-4)
        assert rows[i]["reward_std_b"] == pytest.approx(std_b[i], abs=1e-6)
        assert rows[i]["right_a"] == [2, 1, 3][i]
        for s, half in (("A", slice(0, 4)), ("B", slice(4, 8))):
            r = rewards[i, half]
            est[s, i] = sum(float(r[k] - r.mean()) * gs[half][k] for k in range(4))
    vectors = [est["A", i] for i in range(3)] + [est["B", i] for i in range(3)]
    gram = np.array([[float(u @ v) for v in vectors] for u in vectors])
    np.testing.assert_allclose(rows[0]["gram"], gram, rtol=1e-4, atol=1e-12)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    cross = [abs(cos(est["A", i], est["A", j])) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert (summary["diag/cos_abs_pairs"] == 3
            and summary["diag/cos_abs_mean"] == pytest.approx(np.mean(cross), rel=1e-4))
    same = [abs(cos(est["A", i], est["B", i])) for i in range(3)]
    assert summary["diag/cos_same_prompt_abs_pairs"] == 3
    assert summary["diag/cos_same_prompt_abs_mean"] == pytest.approx(np.mean(same), rel=1e-4)
    dot = lambda s, i, t, j: float(est[s, i] @ est[t, j])  # noqa: E731
    num = sum((dot("A", i, "A", j) * dot("B", i, "B", j)
               + dot("A", i, "B", j) * dot("B", i, "A", j)) / 2
              for i in range(3) for j in range(i + 1, 3))
    den = sum(dot("A", i, "B", i) * dot("A", j, "B", j) for i in range(3) for j in range(i + 1, 3))
    norms = [dot("A", i, "B", i) for i in range(3)]
    if den > 0 and all(norms):
        assert summary["diag/cos_rms"] == pytest.approx(math.sqrt(max(num / den, 0)), rel=1e-3)
    else:
        assert "diag/cos_rms" not in summary
    # the proxy from A against the std from B; the stand-in: A's error rates 1/2, 3/4, 1/4
    assert summary["diag/curvature_std_corr"] == pytest.approx(
        np.corrcoef(kappas, std_b)[0, 1], rel=1e-4)
    assert summary["diag/error_rate_std_corr"] == pytest.approx(
        np.corrcoef([0.5, 0.75, 0.25], std_b)[0, 1], rel=1e-6)
    # A's right counts 2, 1, 3: three strata of one prompt, nothing left to condition on
    assert "diag/curvature_std_corr_given_pass_rate" not in summary


# --- the text graded ends where the model's turn ended --------------------------------------------

# No line of its own for "user" or "assistant" once special tokens are skipped: the grader's
# text-level cut does not see this turn end, only the stop token does.
INVENTED_TURN = ("So she makes 9 * 2 = \\boxed{18} dollars."
                 "<|im_start|>user\nAnd for 10 eggs?<|im_end|>"
                 "<|im_start|>assistant\nThen she makes \\boxed{20} dollars.")


def test_rollout_grades_only_the_turn_the_model_ended(monkeypatch):
    """A completion that runs on into a turn it invents (<|im_start|>user ...)
    is graded on its own turn."""
    from tiny import ChatTokenizer
    tok = ChatTokenizer()
    ids = tok.encode(INVENTED_TURN)
    # decoded whole with special tokens skipped, the invented turn's answer is the one graded
    assert grader.reward(tok.decode(ids, skip_special_tokens=True), "20") == 1.0
    calls = []

    def generate(model, prompts, max_new_tokens, eos_token_id=None, num_samples=1, **kw):
        calls.append(eos_token_id)
        return [list(ids) for _ in range(len(prompts) * num_samples)]

    monkeypatch.setattr(G.M, "generate", generate)
    model = torch.nn.Linear(1, 1)
    model.config = M.Qwen2Config()  # the positions the prompt must fit in
    cfg = G.Config(group_size=2, template="qwen-chat")
    for gold, reward in (("18", 1.0), ("20", 0.0)):
        ro = G.rollout(model, tok, [D.Problem("How much?", gold)], cfg, seed=0)
        assert ro.texts == ["So she makes 9 * 2 = \\boxed{18} dollars."] * 2
        assert ro.rewards.tolist() == [[reward, reward]]
    # <|endoftext|>, <|im_start|>, <|im_end|>: the sampler stops at all three
    assert calls[0] == [0, 1, 2]


def test_stop_tokens_of_the_qwen_tokenizer(data_dir):
    tok = M.load_tokenizer(data_dir / "qwen2.5-tokenizer")
    assert M.stop_ids(tok) == [151643, 151644, 151645]  # <|endoftext|>, <|im_start|>, <|im_end|>
    ids = tok.encode(INVENTED_TURN)
    assert ids.count(151644) == 2
    assert M.completion_text(tok, ids) == "So she makes 9 * 2 = \\boxed{18} dollars."
    # no stop token: the whole completion
    assert M.completion_text(tok, tok.encode("#### 18")) == "#### 18"


# --- the merged-weights sampler (--sampler merged) ------------------------------------------------


def demo_rollout_setup(sampler: str, dtype=torch.float32):
    cfg = G.Config(**G.PRESETS["demo"] | dict(group_size=4, max_new_tokens=24, micro_batch=3,
                                              sampler=sampler))
    model = M.load_model(DEMO, dtype=dtype)
    L.apply_lora(model, r=4, alpha=8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in L.lora_layers(model).values():  # a trained-looking adapter: B off zero
            m.lora_B.weight.copy_(0.05 * torch.randn(m.lora_B.weight.shape, generator=g))
    return cfg, model, M.load_tokenizer(DEMO), G.load_training_problems(cfg)[:3]


def naive_token_logprobs(model, prompt, completion, temperature, vocab_size):
    """log p of each completion token from one full forward of prompt + completion
    (no cache, no chunks)."""
    with torch.no_grad():
        logits = (model(torch.tensor([prompt + completion]))[0].double()[:, :vocab_size]
                  / temperature)
    lp = torch.log_softmax(logits, -1)
    return torch.stack([lp[len(prompt) - 1 + j, tok] for j, tok in enumerate(completion)])


def test_the_exact_sampler_is_the_default():
    assert G.Config().sampler == "exact" and all("sampler" not in p for p in G.PRESETS.values())
    cfg, model, tok, problems = demo_rollout_setup("exact")
    assert G.rollout(model, tok, problems, cfg, seed=0).sampler_stats == {}


def test_the_merged_sampler_leaves_the_master_untouched(monkeypatch):
    """The adapter is merged into a separate copy, never into the model: after a merged rollout
    every tensor of the model (base and adapter) is bit for bit what it was, and no layer is
    left merged."""
    cfg, model, tok, problems = demo_rollout_setup("merged", torch.bfloat16)
    copies = []
    merged_copy = L.merged_copy
    monkeypatch.setattr(L, "merged_copy", lambda m: copies.append(merged_copy(m)) or copies[-1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ro = G.rollout(model, tok, problems, cfg, seed=0)
    assert len(copies) == 1 and copies[0] is not model
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert not any(m.merged for m in L.lora_layers(model).values())
    # bfloat16: the merge rounds, so the sampler is measurably (and only slightly) off the learner.
    assert (0 < ro.sampler_stats["sampler/logp_abs_diff_mean"] < 0.5
            and ro.sampler_stats["sampler/kl_k3"] >= 0)


def test_the_logged_mismatch_equals_an_independent_computation(monkeypatch):
    """A sampler deliberately off the learner (its copy's down_proj of layer 0 scaled by 1.5),
    float32: the logged KL (k3) and mean |delta log p| equal the formulas applied to full-forward
    log-probs of the sampler's copy and of the learner, token by token."""
    cfg, model, tok, problems = demo_rollout_setup("merged")
    samplers, merged_copy = [], L.merged_copy

    def off_copy(m):
        copy = merged_copy(m)
        with torch.no_grad():
            copy.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # merged: the copy's own tensor
        samplers.append(copy)
        return copy

    monkeypatch.setattr(L, "merged_copy", off_copy)
    ro = G.rollout(model, tok, problems, cfg, seed=1)
    d = []
    for i, c in enumerate(ro.completions):
        prompt = ro.prompts[i // cfg.group_size]
        d.append(naive_token_logprobs(model, prompt, c, cfg.temperature, tok.vocab_size)
                 - naive_token_logprobs(samplers[0], prompt, c, cfg.temperature, tok.vocab_size))
    d = torch.cat(d)
    assert d.abs().mean() > 1e-3  # the perturbation shows
    assert ro.sampler_stats["sampler/kl_k3"] == pytest.approx(
        float((d.exp() - 1 - d).mean()), rel=1e-4)
    assert ro.sampler_stats["sampler/logp_abs_diff_mean"] == pytest.approx(
        float(d.abs().mean()), rel=1e-4)


def test_a_merged_sampler_run_logs_the_mismatch_every_step(tmp_path):
    """Float32 on the CPU: the merge is exact to rounding, so the measured mismatch is tiny."""
    run = tmp_path / "run"
    G.main(SMALL + ["--steps", "2", "--sampler", "merged", "--out", str(run)])
    rows = run_metrics(run)
    assert len(rows) == 2
    for r in rows:
        assert 0 <= r["sampler/kl_k3"] < 1e-6 and 0 <= r["sampler/logp_abs_diff_mean"] < 1e-3


# --- the sampler's decoder and compilation (--decoder, --compile) ---------------------------------


def without(rows: list[dict], *prefixes) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(prefixes)} for r in rows]


def test_unknown_decoder_or_compile_values_are_one_line_errors_before_any_work(tmp_path, capsys):
    for flags, message in ((["--decoder", "turbo"], "invalid choice: 'turbo'"),
                           (["--compile", "maybe"], "invalid choice: 'maybe'"),
                           (["--decoder", "plain", "--compile", "on"],
                            "--compile on compiles the fast decoder: it needs --decoder fast")):
        with pytest.raises(SystemExit):
            G.parse_args(SMALL + flags)
        assert message in capsys.readouterr().err
    # a run folder's config.json is checked too (argparse never sees it)
    (tmp_path / "config.json").write_text(json.dumps(
        G.dataclasses.asdict(G.Config(**G.PRESETS["demo"])) | {"decoder": "turbo"}))
    with pytest.raises(SystemExit):
        G.parse_args(["--resume", str(tmp_path)])
    assert "--decoder 'turbo': choose one of auto, plain, fast" in capsys.readouterr().err


def test_compile_on_without_a_working_compiler_stops_before_any_work(failing_compiler, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("work started"))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        G.main(SMALL + ["--compile", "on", "--out", str(run)])
    message = str(stop.value.code)
    assert "\n" not in message and message.startswith("error: --compile on: torch.compile fails")
    assert "RuntimeError: made to fail" in message and not run.exists()


@pytest.mark.parametrize("fails", ["in the check", "on the real model"])
def test_compile_auto_falls_back_with_one_loud_line_and_a_logged_flag(failing_compiler, tmp_path,
                                                                      monkeypatch, capsys, fails):
    """--compile auto where compiling fails: found by make_decoder's check before any work, or
    only when the real model's step compiles (the check passed). Either way one WARNING line, the
    run goes on eagerly and logs sampler/compiled 0, and it is the run --compile off makes (which
    never compiles: the broken compiler stays silent)."""
    monkeypatch.setattr(G.FD, "COMPILE_AUTO", ("cpu", "cuda"))  # auto compiles on this CPU too
    if fails == "on the real model":
        monkeypatch.setattr(G.FD, "compile_error", lambda device, dtype: None)
    flags = SMALL + ["--steps", "2", "--save-every", "2"]
    G.main(flags + ["--out", str(tmp_path / "auto")])
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("WARNING")]) == 1
    assert "torch.compile fail" in err and "made to fail" in err
    G.main(flags + ["--compile", "off", "--out", str(tmp_path / "off")])
    assert "WARNING" not in capsys.readouterr().err  # off never tries to compile
    auto, off = run_metrics(tmp_path / "auto"), run_metrics(tmp_path / "off")
    assert [r["sampler/compiled"] for r in auto] == [0.0, 0.0]
    assert all("sampler/compiled" not in r for r in off)
    assert without(auto, "sampler/") == without(off, "sampler/")


def test_the_decoder_changes_the_speed_not_the_run(tmp_path, capsys):
    """--decoder plain (model.py's loop) and fast (the CPU's default) draw the same tokens: the
    same two steps, metrics and adapter."""
    flags = SMALL + ["--steps", "2", "--save-every", "2"]
    for decoder in ("plain", "fast"):
        G.main(flags + ["--decoder", decoder, "--out", str(tmp_path / decoder)])
    out = capsys.readouterr().out
    assert "decoder: plain (model.py)" in out and "decoder: fast (shrinking batch, eager)" in out
    assert run_metrics(tmp_path / "plain") == run_metrics(tmp_path / "fast")
    a, b = (adapter_tensors(tmp_path / d / "checkpoints" / "step_000002") for d in ("plain", "fast"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_cuda_run_logs_its_attention_backends_at_start(monkeypatch):
    """The start-up line of a CUDA run (faked: resolve_device is where safe_attention is applied)
    names the decoder and the attention backends, cuDNN among those switched off."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        device, _ = G.resolve_device(G.Config(device="cuda"))
        line = G.describe_decoder(G.FD.FastDecode(compile=True), device)
        assert line.startswith("decoder: fast (fixed shapes, CUDA graphs, compiled)")
        assert line.endswith("; off: cuDNN") and "attention (SDPA on CUDA): flash" in line
        assert G.describe_decoder(None, torch.device("cpu")) == "decoder: plain (model.py)"
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
