"""The paper preset against TRL itself: one real step of trl 0.23.1's GRPOTrainer (the authors' code
path: a peft LoRA, HF generate, loss_type "dapo", beta 0.02 against the adapter-off model, AdamW,
clip 0.1, one completion per micro-batch) beside grpo.rollout + group_advantages + update on the
same prompts, completions and rewards, from the same non-zero LoRA on a tiny Qwen2.

TRL samples nothing here: its model's generate returns the completions the test fixes (ragged: some
end at the EOS, one runs to max_completion_length), and its reward function returns fixed rewards;
grpo.rollout gets the same completions and rewards. Checked, for scale_rewards group / batch / none
against --normalize std / batch / none (the paper preset: Bessel std + 1e-4), 1 and 2 prompts:

- the prompts TRL generates from equal ours after its max_prompt_length cut (from the left);
- the accumulated gradient before clipping, the step's update of every LoRA weight, and every value
  TRL logs under the names grpo.py logs with the trl/ prefix.

Tolerances (float32). The gradients come from different kernels (HF's full forward vs our
prefix-cached, chunked log-probs) summed in other orders: their relative difference measured
4.9e-7 to 1.24e-6 over these cases (AMD EPYC), asserted <= 1e-5 (GRADIENT_RTOL); against it, the
paper's population std + 1e-6 is 6.8% off here, and eps 1e-6 instead of TRL's 1e-4 alone 2.1e-4.
The updates: each side's is AdamW's first step on its own gradient (adamw_first_step, float64) to
the float32 rounding of w + delta and of the step's arithmetic, bounds computed from the weights.
"""

import dataclasses

import pytest
import torch

import data as D
import grpo as G
import lora as L
import model as M
from tiny import make_hf_model, save_hf_model
from test_grpo import DEMO

from datasets import Dataset  # trl's own dependency
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer  # requirements-dev.txt pins trl==0.23.1 (and says why)

GRADIENT_RTOL = 1e-5
K, MAX_NEW, CUT = 8, 6, 20  # group size, completion limit, prompt cut (TRL's max_prompt_length)
EOS = 0  # the demo tokenizer's <|endoftext|>: TRL's eos and pad, our stop token
# Two prompts: the first is cut (39 tokens -> its last 20), the second (15) is not and gets TRL's
# left padding.
QUESTIONS = ["Tom has 5 apples. He buys 3 more. Then he gives away 2. Then he finds 4 more. "
             "How many apples does Tom have now?",
             "Mia has 7 pens. How many now?"]
REWARDS = [[1.0, 0, 0, 1, 0, 0, 0, 0], [1.0, 1, 0, 1, 1, 1, 0, 1]]


def completions_for(prompts: int) -> list[list[int]]:
    """Ragged, fixed completions, prompt-major: lengths 1..MAX_NEW ending at the EOS, and one per
    group that hits MAX_NEW without it (truncated)."""
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(prompts * K):
        if i % K == 5:
            out.append(torch.randint(1, 55, (MAX_NEW,), generator=g).tolist())  # truncated
        else:
            n = int(torch.randint(0, MAX_NEW, (1,), generator=g))
            out.append(torch.randint(1, 55, (n,), generator=g).tolist() + [EOS])
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Qwen2 on the demo tokenizer's 55 ids and a random non-zero LoRA in peft's format."""
    root = tmp_path_factory.mktemp("trl")
    base = save_hf_model(make_hf_model(seed=7, vocab_size=55), root / "base")
    peft_model = get_peft_model(Qwen2ForCausalLM.from_pretrained(base), lora_config())
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:  # B = 0 would make A's gradient zero
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def lora_config():
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(L.ALL_PROJECTIONS),
                      task_type="CAUSAL_LM")


def problems_for(prompts: int) -> list[D.Problem]:
    return [D.Problem(question=q, answer="0", id=f"q{i}")
            for i, q in enumerate(QUESTIONS)][:prompts]


def paper_config(normalize: str, prompts: int, loss_agg: str) -> G.Config:
    """The paper preset (the Config defaults) at this test's sizes."""
    return G.Config(normalize=normalize, prompts_per_step=prompts, group_size=K,
                    max_new_tokens=MAX_NEW, max_prompt_tokens=CUT, template="plain",
                    loss_agg=loss_agg, micro_batch=3, steps=1, device="cpu")


# TRL's scale_rewards and loss_type for our --normalize and --loss-agg
SCALE_REWARDS = {"std": "group", "batch": "batch", "none": "none"}
LOSS_TYPE = {"token-mean": "dapo", "seq-mean": "grpo"}


class GradientAtClip:
    """Records the gradient that reaches owner.clip_grad_norm_ (TRL's Trainer: its accelerator's;
    grpo.update: torch.nn.utils'): the accumulated, not yet clipped step gradient."""

    def __init__(self, monkeypatch, owner):
        self.grads, self.clip = [], owner.clip_grad_norm_
        monkeypatch.setattr(owner, "clip_grad_norm_", self)

    def __call__(self, parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        self.grads.append({id(p): p.grad.detach().clone() for p in parameters
                           if p.grad is not None})
        return self.clip(parameters, max_norm, *args, **kwargs)


def trl_step(checkpoint, tmp_path, normalize: str, prompts: int, loss_agg: str, monkeypatch):
    """One GRPOTrainer step -> (gradient, weights before and after, its log, prompt ids it saw,
    its unrounded loss); LoRA tensors keyed by our names (model.layers.0.mlp.up_proj.lora_A...)."""
    base, adapter = checkpoint
    model = PeftModel.from_pretrained(Qwen2ForCausalLM.from_pretrained(base), adapter,
                                      is_trainable=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(DEMO / "tokenizer.json"),
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fixed, rewards, seen = completions_for(prompts), sum(REWARDS[:prompts], []), {}

    def generate(input_ids, attention_mask, **kwargs):  # the completions this test fixes
        seen["prompts"] = [ids[mask.bool()].tolist()
                           for ids, mask in zip(input_ids, attention_mask)]
        rows = [c + [EOS] * (MAX_NEW - len(c)) for c in fixed]
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)

    model.generate = generate

    def fixed_reward(prompts, completions, completion_ids, **kwargs):
        assert completion_ids == fixed  # TRL cut them at the EOS: the rows are ours, in order
        return rewards

    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, report_to=[],
        save_strategy="no", logging_steps=1, max_steps=1, seed=0,
        per_device_train_batch_size=1, gradient_accumulation_steps=K * prompts,
        num_generations=K, max_prompt_length=CUT, max_completion_length=MAX_NEW,
        shuffle_dataset=False, learning_rate=1e-5, max_grad_norm=0.1, beta=0.02,
        scale_rewards=SCALE_REWARDS[normalize], loss_type=LOSS_TYPE[loss_agg])
    assert args.temperature == 1.0 and args.weight_decay == 0.0 and args.epsilon == 0.2
    dataset = Dataset.from_dict({"prompt": [D.format_prompt(p, "plain")
                                            for p in problems_for(prompts)]})
    trainer = GRPOTrainer(model=model, reward_funcs=fixed_reward, args=args,
                          train_dataset=dataset, processing_class=tok)
    micro_losses, training_step = [], trainer.training_step

    def recorded_training_step(*args, **kwargs):  # the Trainer logs their sum, rounded
        loss = training_step(*args, **kwargs)
        micro_losses.append(float(loss))
        return loss

    trainer.training_step = recorded_training_step
    names = {id(p): ours_name(n) for n, p in trainer.model.named_parameters() if "lora_" in n}
    before = {ours_name(n): p.detach().clone() for n, p in trainer.model.named_parameters()
              if "lora_" in n}
    at_clip = GradientAtClip(monkeypatch, trainer.accelerator)
    trainer.train()
    after = {ours_name(n): p.detach().clone() for n, p in trainer.model.named_parameters()
             if "lora_" in n}
    (grads,) = at_clip.grads
    grad = {names[i]: g for i, g in grads.items()}
    log = trainer.state.log_history[0]
    return grad, before, after, log, seen["prompts"], sum(micro_losses)


def ours_name(peft_name: str) -> str:
    return peft_name.removeprefix("base_model.model.").replace(".default", "")


def our_step(checkpoint, normalize: str, prompts: int, loss_agg: str, monkeypatch):
    """grpo.py's step on the same completions and rewards -> (gradient, weights before and after,
    metrics record, prompt ids it sampled from)."""
    base, adapter = checkpoint
    cfg = paper_config(normalize, prompts, loss_agg)
    model = M.load_model(base)
    params = L.load_adapter(model, adapter)
    tok = M.load_tokenizer(DEMO)
    completions, rewards = completions_for(prompts), [r for row in REWARDS for r in row]
    seen = {}

    def generate(model, prompt_ids, max_new_tokens, num_samples, **kwargs):
        seen["prompts"] = prompt_ids
        return completions

    monkeypatch.setattr(G.M, "generate", generate)
    monkeypatch.setattr(G.grader, "reward", lambda text, gold: rewards.pop(0))
    ro = G.rollout(model, tok, problems_for(prompts), cfg, seed=0)
    monkeypatch.undo()
    names = {id(m.lora_A.weight): f"{n}.lora_A.weight" for n, m in L.lora_layers(model).items()}
    names |= {id(m.lora_B.weight): f"{n}.lora_B.weight" for n, m in L.lora_layers(model).items()}
    before = {names[id(p)]: p.detach().clone() for p in params}
    at_clip = GradientAtClip(monkeypatch, torch.nn.utils)
    advantages = G.group_advantages(ro.rewards, cfg.normalize, cfg.std_eps,
                                    estimator=cfg.std_estimator)
    loss, stats = G.update(model, params, G.make_optimizer(params, cfg), ro, advantages, cfg,
                           tok.vocab_size)
    (grads,) = at_clip.grads
    ro.sample_s = 1.0
    record = G.step_record(0, cfg, G.gather_batch(G.World(), ro.problems, ro, advantages), loss,
                           stats, (0, 0, 0, 0), torch.device("cpu"))
    after = {names[id(p)]: p.detach().clone() for p in params}
    return {names[i]: g for i, g in grads.items()}, before, after, record, seen["prompts"]


def adamw_first_step(g: torch.Tensor, lr=1e-5, max_norm=0.1, eps=1e-8) -> torch.Tensor:
    """The paper preset's first update, in float64: clip the global norm to max_norm (torch's
    coefficient max_norm / (norm + 1e-6)), then AdamW's first step, where m_hat = g and
    v_hat = g^2: -lr * g / (|g| + eps)."""
    g = g * min(1.0, max_norm / (float(g.norm()) + 1e-6))
    return -lr * g / (g.abs() + eps)


def flat(tensors: dict) -> torch.Tensor:
    return torch.cat([tensors[k].flatten().double() for k in sorted(tensors)])


def test_the_paper_preset_is_trls_defaults():
    """token-mean is TRL's default loss_type, the one the authors ran (they did not set it)."""
    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    assert G.Config().loss_agg == "token-mean" and defaults["loss_type"] == "dapo"
    assert (G.Config().temperature, G.Config().normalize) == (defaults["temperature"], "std")
    assert defaults["scale_rewards"] == "group"  # = their scale_rewards=True, `standard`


@pytest.mark.parametrize("normalize, prompts, loss_agg",
                         [(n, p, "token-mean") for n in SCALE_REWARDS for p in (1, 2)]
                         + [("std", 2, "seq-mean")])
def test_the_paper_preset_takes_trls_step(checkpoint, tmp_path, monkeypatch, normalize, prompts,
                                          loss_agg):
    grad_t, before_t, after_t, log, prompts_t, loss_t = trl_step(checkpoint, tmp_path, normalize,
                                                                 prompts, loss_agg, monkeypatch)
    monkeypatch.undo()
    grad, before, after, record, prompts_ours = our_step(checkpoint, normalize, prompts,
                                                         loss_agg, monkeypatch)
    # the same prompts: TRL's cut keeps the last CUT tokens
    lengths = [len(tok) for tok in prompts_ours]
    assert lengths == [CUT, 15][:prompts]  # the first was cut, the second was not
    assert prompts_t == [p for p in prompts_ours for _ in range(K)]
    # the same start, and the same gradient before clipping
    assert before.keys() == before_t.keys() == grad.keys() == grad_t.keys()
    assert torch.equal(flat(before), flat(before_t))
    g, g_t = flat(grad), flat(grad_t)
    assert float((g - g_t).norm()) <= GRADIENT_RTOL * float(g_t.norm())
    assert float(g.norm()) > 0.1  # clipping (0.1) fires, as on most of the authors' std steps
    # the same step: each side moved every weight by AdamW's first step on its own gradient, to
    # float32 rounding: of w + delta (2^-24 |w + delta|) and of the step's own arithmetic (a few
    # roundings of a step <= lr: 8 * 2^-24 * lr); so the two updates differ by at most that and by
    # what the gradients' own difference makes of it
    delta, delta_t = flat(after) - flat(before), flat(after_t) - flat(before_t)
    arithmetic = 8 * 2.0 ** -24 * 1e-5
    rounding = 2.0 ** -24 * flat(after).abs() + arithmetic
    rounding_t = 2.0 ** -24 * flat(after_t).abs() + arithmetic
    assert bool(((delta - adamw_first_step(g)).abs() <= rounding).all())
    assert bool(((delta_t - adamw_first_step(g_t)).abs() <= rounding_t).all())
    from_gradients = (adamw_first_step(g) - adamw_first_step(g_t)).abs()
    assert bool(((delta - delta_t).abs() <= rounding + rounding_t + from_gradients).all())
    # every value TRL logged, under the name grpo.py logs with trl/ in front
    ours = {k.removeprefix("trl/"): v for k, v in record.items() if k.startswith("trl/")}
    for key in ("loss", "grad_norm", "kl", "entropy", "reward", "reward_std",
                "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio",
                "clip_ratio/region_mean", "learning_rate"):
        assert key in ours and key in log, key
    assert log["loss"] == round(loss_t, 4)  # the Trainer logs the loss rounded to 4 places
    assert ours["loss"] == pytest.approx(loss_t, rel=1e-5, abs=1e-7)
    for key, value in ours.items():
        if key != "loss":
            assert value == pytest.approx(log[key], rel=1e-5, abs=1e-7), key
    # all but the cumulative token count, the epoch and the per-function rewards (we have one)
    assert set(log) - set(ours) == {"num_tokens", "epoch", "step", "rewards/fixed_reward/mean",
                                    "rewards/fixed_reward/std"}
