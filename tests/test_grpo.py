"""grpo.py: the two estimators on hand-worked groups, the loss, the update's sign, exact resume, bad input."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import data as D
import grpo as G
import lora as L
import model as M
from tiny import make_hf_model, save_hf_model

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "model"


# --- the advantage formulas --------------------------------------------------------------------------------------


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
    """[1,1,0,0]: mean .5, std .5 -> none +-0.5, std +-1. [1,0,0,0]: mean .25, std sqrt(3)/4 = 0.4330."""
    r = torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 0]])
    torch.testing.assert_close(G.group_advantages(r, "none"), torch.tensor([[.5, .5, -.5, -.5], [.75, -.25, -.25, -.25]]))
    s = math.sqrt(3) / 4
    expected = torch.tensor([[1.0, 1, -1, -1], [.75 / s, -.25 / s, -.25 / s, -.25 / s]])
    torch.testing.assert_close(G.group_advantages(r, "std"), expected, atol=1e-5, rtol=0)


def test_zero_std_groups_get_zero_advantage_in_both():
    r = torch.tensor([[1.0] * 8, [0.0] * 8])
    for mode in ("std", "none"):
        assert torch.equal(G.group_advantages(r, mode), torch.zeros(2, 8))


def test_unknown_normalisation_is_an_error():
    with pytest.raises(ValueError, match="normalize must be"):
        G.group_advantages(torch.zeros(1, 4), "batch")


# --- the loss ------------------------------------------------------------------------------------------------------


def test_loss_aggregation_rules_by_hand():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([2.0, -1.0])
    # sums of token log-probs: -6 and -1; means: -2 and -0.5; 2 completions, 5 tokens
    assert G.policy_loss(lp, mask, adv, "seq-sum", 2).item() == pytest.approx(-(2 * -6 + -1 * -1) / 2)
    assert G.policy_loss(lp, mask, adv, "seq-mean", 2).item() == pytest.approx(-(2 * -2 + -1 * -0.5) / 2)
    assert G.policy_loss(lp, mask, adv, "token-mean", 5).item() == pytest.approx(-(2 * -6 + -1 * -1) / 5)
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.4, 9.0]])
    with_kl = G.policy_loss(lp, mask, adv, "seq-sum", 2, kl, kl_coef=0.5).item()
    assert with_kl == pytest.approx(-(2 * -6 + -1 * -1) / 2 + 0.5 * (0.6 + 0.8) / 2)


def test_k3_kl_is_zero_on_policy_and_positive_otherwise():
    lp = torch.log(torch.tensor([0.2, 0.5]))
    assert torch.equal(G.kl_k3(lp, lp), torch.zeros(2))
    assert (G.kl_k3(lp, torch.log(torch.tensor([0.3, 0.4]))) > 0).all()


def test_linear_lr_decay():
    cfg = G.Config(lr=1e-3, steps=4)
    assert [G.lr_at(s, cfg) for s in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


# --- the update ------------------------------------------------------------------------------------------------------


def test_a_step_raises_the_logprob_of_a_positive_advantage_completion(tmp_path):
    model = M.load_model(save_hf_model(make_hf_model(seed=4), tmp_path))
    params = L.apply_lora(model, r=4, alpha=8)
    torch.manual_seed(0)
    for p in params:  # B = 0 makes A's gradient zero; start both off zero so every LoRA weight moves
        torch.nn.init.normal_(p, std=0.02)
    prompt, good, bad = [5, 6, 7], [10, 11, 12, 13], [20, 21, 22]
    ro = G.Rollouts(problems=[None], prompts=[prompt], completions=[good, bad], texts=["", ""],
                    rewards=torch.tensor([[1.0, 0.0]]))
    cfg = G.Config(group_size=2, optimizer="sgd", lr=0.1, grad_clip=0, micro_batch=1, temperature=1.0)

    def logp(completion):
        with torch.no_grad():
            lp, _, mask = M.completion_logprobs(model, [prompt], [completion], [0])
        return float((lp * mask).sum())

    before = logp(good), logp(bad)
    opt = G.make_optimizer(params, cfg)
    loss, stats = G.update(model, params, opt, ro, G.group_advantages(ro.rewards, "std"), cfg, vocab_size=97)
    after = logp(good), logp(bad)
    assert after[0] > before[0] and after[1] < before[1]
    assert stats["grad_norm"] > 0 and math.isfinite(loss)


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
        cfg = G.Config(group_size=2, optimizer="sgd", lr=1e-9, grad_clip=0, micro_batch=micro, loss_agg=agg)
        G.update(model, params, G.make_optimizer(params, cfg), ro, G.group_advantages(ro.rewards, "none"), cfg, 97)
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(grads[2], grads[3], atol=1e-7, rtol=1e-5)


# --- CLI and bad input ---------------------------------------------------------------------------------------------


def test_presets_and_flags_resolve():
    cfg, _ = G.parse_args(["--normalize", "none", "--lr", "3e-5"])
    assert cfg.preset == "paper" and cfg.normalize == "none" and cfg.lr == 3e-5
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.group_size, cfg.prompts_per_step, cfg.grad_clip,
            cfg.max_new_tokens, cfg.temperature, cfg.kl_coef) == (64, 128.0, 8, 1, 0.1, 1024, 1.0, 0.0)
    demo, _ = G.parse_args(["--preset", "demo", "--steps", "7"])
    assert demo.data == "demo" and demo.steps == 7 and Path(demo.model) == DEMO


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--normalize", "batch"], "invalid choice: 'batch'"),
    (["--group-size", "1"], "--group-size must be >= 2"),
    (["--optimizer", "lion"], "invalid choice: 'lion'"),
])
def test_bad_flags_are_one_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        G.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


# --- end to end on the demo model ------------------------------------------------------------------------------------

SMALL = ["--preset", "demo", "--prompts-per-step", "4", "--group-size", "4", "--max-new-tokens", "48",
         "--save-every", "3", "--log-samples-every", "100"]


def run_metrics(run_dir: Path, timing=False):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if timing or not k.startswith(G.TIMING_PREFIXES)} for r in rows]


def adapter_tensors(ckpt: Path):
    from safetensors.torch import load_file
    return load_file(ckpt / "adapter_model.safetensors")


def test_resume_is_exact(tmp_path):
    """6 steps straight == 3 steps, stop, resume, 3 more: bitwise equal adapter weights and metrics."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    G.main(SMALL + ["--steps", "6", "--out", str(straight)])
    G.main(SMALL + ["--steps", "6", "--out", str(split)])
    # cut the second run back to its step-3 checkpoint, as if it had been stopped there
    shutil.rmtree(split / "checkpoints" / "step_000006")
    lines = (split / "metrics.jsonl").read_text().splitlines(keepends=True)
    (split / "metrics.jsonl").write_text("".join(lines[:3]))
    G.main(["--resume", str(split)])
    a, b = adapter_tensors(straight / "checkpoints/step_000006"), adapter_tensors(split / "checkpoints/step_000006")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run_metrics(straight) == run_metrics(split)
    assert any(r["grad_norm"] > 0 for r in run_metrics(straight))  # the adapter did move
    first = adapter_tensors(straight / "checkpoints/step_000003")
    assert any(not torch.equal(first[k], a[k]) for k in a)


def test_resume_moves_metrics_past_the_checkpoint_aside(tmp_path):
    run = tmp_path / "run"
    G.main(SMALL + ["--steps", "4", "--save-every", "2", "--out", str(run)])
    shutil.rmtree(run / "checkpoints" / "step_000004")
    G.main(["--resume", str(run)])
    assert [r["step"] for r in run_metrics(run)] == [1, 2, 3, 4]
    aside = [json.loads(x)["step"] for x in (run / "metrics.after-step-2.jsonl").read_text().splitlines()]
    assert aside == [3, 4]


def test_grpo_improves_reward_on_the_demo_easy_tier(tmp_path):
    """A learnable toy task end to end: the demo model's easy problems, a few dozen steps."""
    run = tmp_path / "run"
    G.main(["--preset", "demo", "--tiers", "easy", "--steps", "40", "--prompts-per-step", "16", "--lr", "3e-3",
            "--out", str(run), "--save-every", "100"])
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
    path.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys 2 more. How many now?",
                                        "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"}) + "\n" for i in range(5)))
    return path


def test_existing_run_folder_without_resume(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="already exists; pass --resume"):
        G.main(SMALL + ["--steps", "1", "--out", str(tmp_path / "run")])


def test_model_folder_without_weights(tmp_path):
    make_hf_model(seed=0).config.save_pretrained(tmp_path / "empty")
    with pytest.raises(SystemExit, match="no model.safetensors"):
        G.main(SMALL + ["--steps", "1", "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
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
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("diag/")} for r in rows]  # noqa: E731
    assert strip(run_metrics(diag)) == run_metrics(plain)
    logged = [r for r in run_metrics(diag) if "diag/prompts_with_signal" in r]
    assert [r["step"] for r in logged] == [2, 4]
    rows = [json.loads(x) for x in (diag / "diagnostics.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["curvature"] > 0 and 0 <= r["reward_std"] <= 0.5 for r in rows)
    for r in logged:
        if r["diag/prompts_with_signal"] >= 2:
            assert 0 <= r["diag/cos_abs_mean"] <= r["diag/cos_abs_p90"] <= 1


def test_per_prompt_gradients_and_curvature_by_hand(tmp_path, monkeypatch):
    """diagnostics() against an independent computation on a tiny model: per-sample gradients by autograd on
    a full forward, G_i = sum_k (r_ik - mean) g_ik, kappa_i = mean_k |g_ik|^2 / |o_ik|."""
    model = M.load_model(save_hf_model(make_hf_model(seed=6, vocab_size=20), tmp_path))
    params = L.apply_lora(model, r=2, alpha=4)
    torch.manual_seed(1)
    for p in params:
        torch.nn.init.normal_(p, std=0.1)
    problems = [D.Problem(question=f"q{i}", answer="1", id=str(i)) for i in range(3)]
    prompts = {"0": [1, 2], "1": [3], "2": [4, 5, 6]}
    comps = [[7, 8], [9], [10, 11, 12], [13], [7], [8, 9], [1, 1], [2], [3, 4], [5], [6, 6], [7]]
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 1, 1]])  # the middle group has no signal
    ro = G.Rollouts(problems, [prompts[p.id] for p in problems], comps, [""] * 12, rewards)
    monkeypatch.setattr(G, "rollout", lambda *a, **k: ro)
    monkeypatch.setattr(G.random.Random, "sample", lambda self, pop, n: list(pop)[:n])

    class Tok:
        vocab_size = 20
    cfg = G.Config(group_size=4, diag_prompts=3)
    summary, rows = G.diagnostics(model, Tok(), params, problems, cfg, step=1, device="cpu")

    def grad_of(prompt, completion):
        full = torch.log_softmax(model(torch.tensor([prompt + completion])), -1)[0]
        lp = sum(full[len(prompt) - 1 + j, t] for j, t in enumerate(completion))
        return torch.cat([g.flatten() for g in torch.autograd.grad(lp, params)])

    pg, kappas, stds = [], [], [0.5, 0.0, 0.4330127]  # population std of [1,0,0,1], [0,0,0,0], [1,0,1,1]
    for i, p in enumerate(problems):
        gs = [grad_of(prompts[p.id], comps[i * 4 + k]) for k in range(4)]
        kappas.append(sum(float(g.pow(2).sum()) / len(comps[i * 4 + k]) for k, g in enumerate(gs)) / 4)
        assert rows[i]["curvature"] == pytest.approx(kappas[-1], rel=1e-4)
        assert rows[i]["reward_std"] == pytest.approx(stds[i], abs=1e-6)
        r = rewards[i]
        if stds[i] > 0:
            pg.append(sum((r[k] - r.mean()) * gs[k] for k in range(4)))
    cos = torch.nn.functional.cosine_similarity(pg[0], pg[1], dim=0).abs().item()
    assert summary["diag/cos_pairs"] == 1 and summary["diag/cos_abs_mean"] == pytest.approx(cos, rel=1e-4)
    import numpy as np
    assert summary["diag/curvature_std_corr"] == pytest.approx(np.corrcoef(stds, kappas)[0, 1], rel=1e-4)


# --- the merged-weights sampler (--sampler merged) --------------------------------------------------------------


def demo_rollout_setup(sampler: str, dtype=torch.float32):
    cfg = G.Config(**G.PRESETS["demo"] | dict(group_size=4, max_new_tokens=24, micro_batch=3, sampler=sampler))
    model = M.load_model(DEMO, dtype=dtype)
    L.apply_lora(model, r=4, alpha=8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in L.lora_layers(model).values():  # a trained-looking adapter: B off zero
            m.lora_B.weight.copy_(0.05 * torch.randn(m.lora_B.weight.shape, generator=g))
    return cfg, model, M.load_tokenizer(DEMO), G.load_training_problems(cfg)[:3]


def naive_token_logprobs(model, prompt, completion, temperature, vocab_size):
    """log p of each completion token from one full forward of prompt + completion (no cache, no chunks)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion]))[0].double()[:, :vocab_size] / temperature
    lp = torch.log_softmax(logits, -1)
    return torch.stack([lp[len(prompt) - 1 + j, tok] for j, tok in enumerate(completion)])


def test_the_exact_sampler_is_the_default():
    assert G.Config().sampler == "exact" and all("sampler" not in p for p in G.PRESETS.values())
    cfg, model, tok, problems = demo_rollout_setup("exact")
    assert G.rollout(model, tok, problems, cfg, seed=0).sampler_stats == {}


def test_the_merged_sampler_leaves_the_master_untouched(monkeypatch):
    """The adapter is merged into a separate copy, never into the model: after a merged rollout every tensor
    of the model (base and adapter) is bit for bit what it was, and no layer is left merged."""
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
    assert 0 < ro.sampler_stats["sampler/logp_abs_diff_mean"] < 0.5 and ro.sampler_stats["sampler/kl_k3"] >= 0


def test_the_logged_mismatch_equals_an_independent_computation(monkeypatch):
    """A sampler deliberately off the learner (its copy's down_proj of layer 0 scaled by 1.5), float32: the
    logged KL (k3) and mean |delta log p| equal the formulas applied to full-forward log-probs of the sampler's
    copy and of the learner, token by token."""
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
    assert ro.sampler_stats["sampler/kl_k3"] == pytest.approx(float((d.exp() - 1 - d).mean()), rel=1e-4)
    assert ro.sampler_stats["sampler/logp_abs_diff_mean"] == pytest.approx(float(d.abs().mean()), rel=1e-4)


def test_a_merged_sampler_run_logs_the_mismatch_every_step(tmp_path):
    """Float32 on the CPU: the merge is exact to rounding, so the measured mismatch is tiny."""
    run = tmp_path / "run"
    G.main(SMALL + ["--steps", "2", "--sampler", "merged", "--out", str(run)])
    rows = run_metrics(run)
    assert len(rows) == 2
    for r in rows:
        assert 0 <= r["sampler/kl_k3"] < 1e-6 and 0 <= r["sampler/logp_abs_diff_mean"] < 1e-3
