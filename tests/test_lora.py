"""lora.py: exactness of merge/unmerge, the trainable count, and round trips through peft
(the oracle)."""

import json

import pytest
import torch

import lora as L
import model as M
from tiny import TINY, make_hf_model, save_hf_model


@pytest.fixture()
def base(tmp_path):
    hf = make_hf_model(seed=3, tie_word_embeddings=False)
    folder = save_hf_model(hf, tmp_path / "base")
    return folder, hf


def train_a_few_steps(model, params, steps=3, seed=0):
    """Random targets, Adam: moves B off zero so merge/save tests are not vacuous."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        ids = torch.randint(0, TINY["vocab_size"], (2, 12), generator=g)
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1),
                                                 ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


IDS = torch.randint(0, TINY["vocab_size"], (2, 15), generator=torch.Generator().manual_seed(9))


def test_fresh_adapter_changes_nothing_and_freezes_the_base(base):
    folder, _ = base
    model = M.load_model(folder)
    with torch.no_grad():
        before = model(IDS)
    params = L.apply_lora(model, r=4, alpha=8)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), before, atol=0, rtol=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(params) == 2 * 7 * TINY["num_hidden_layers"]
    assert all(p.dtype == torch.float32 for p in params)


def test_an_adapters_own_layers_are_never_adapted(base):
    """A regex target matches "q_proj.lora_A" too: a second apply_lora must not wrap an adapter's
    A and B in adapters of their own (it finds nothing left to adapt)."""
    folder, _ = base
    model = M.load_model(folder)
    L.apply_lora(model, r=4, alpha=8, targets=r".*_proj")
    assert len(L.lora_layers(model)) == 7 * TINY["num_hidden_layers"]
    with pytest.raises(ValueError, match="no Linear layer matches"):
        L.apply_lora(model, r=4, alpha=8, targets=r".*_proj.*")
    assert all(isinstance(m.lora_A, torch.nn.Linear) and isinstance(m.lora_B, torch.nn.Linear)
               for m in L.lora_layers(model).values())


def test_merged_equals_unmerged_and_unmerge_restores_the_base(base):
    folder, _ = base
    model = M.load_model(folder)
    with torch.no_grad():
        base_logits = model(IDS)
    train_a_few_steps(model, L.apply_lora(model, r=4, alpha=8))
    with torch.no_grad():
        adapted = model(IDS)
        assert (adapted - base_logits).abs().max() > 1e-2  # training moved the output
        L.merge_lora(model)
        torch.testing.assert_close(model(IDS), adapted, atol=1e-5, rtol=0)
        L.unmerge_lora(model)
        torch.testing.assert_close(model(IDS), adapted, atol=1e-5, rtol=0)
        with L.lora_disabled(model):
            torch.testing.assert_close(model(IDS), base_logits, atol=1e-5, rtol=0)
    # Unmerge restores the base weights themselves, not just the outputs.
    fresh = M.load_model(folder)
    for name, p in fresh.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], p, atol=1e-6, rtol=0)


def test_delta_is_scale_times_b_times_a(base):
    """Hand-worked: one projection, the output change equals x (alpha/r) A^T B^T."""
    folder, _ = base
    model = M.load_model(folder)
    L.apply_lora(model, r=2, alpha=6)
    layer = model.model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, TINY["hidden_size"])
    with torch.no_grad():
        expected = (x @ layer.weight.T + layer.bias
                    + 3.0 * (x @ layer.lora_A.weight.T) @ layer.lora_B.weight.T)
        torch.testing.assert_close(layer(x), expected)


def test_bf16_base_with_float32_adapter(base):
    folder, _ = base
    model = M.load_model(folder, dtype=torch.bfloat16)
    params = L.apply_lora(model, r=4, alpha=8)
    assert all(p.dtype == torch.float32 for p in params)
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    out = model(IDS)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)


def test_trainable_count_for_qwen_math_1_5b_equals_peft(data_dir):
    """Real config, meta device, no weights. Oracle: peft on transformers' model; also the
    18,464,768 the paper authors' logs report for r=16
    (28 layers x 16 x sum(in + out) = 28 x 16 x 41,216)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, Qwen2ForCausalLM
    folder = data_dir / "qwen2.5-tokenizer"
    config = M.Qwen2Config.from_pretrained(folder)
    with torch.device("meta"):
        ours16, ours64 = M.Qwen2(config), M.Qwen2(config)
        hf = Qwen2ForCausalLM(AutoConfig.from_pretrained(str(folder)))
    n16 = sum(p.numel() for p in L.apply_lora(ours16, r=16, alpha=32))
    n64 = sum(p.numel() for p in L.apply_lora(ours64, r=64, alpha=128))
    peft_model = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32,
                                               target_modules=list(L.ALL_PROJECTIONS)))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert n16 == trainable == 18_464_768
    assert n64 == 4 * n16 == 73_859_072


def test_our_adapter_loads_in_peft_with_equal_logits(base, tmp_path):
    from peft import PeftModel
    folder, hf = base
    model = M.load_model(folder)
    train_a_few_steps(model, L.apply_lora(model, r=4, alpha=16,
                                          targets=("q_proj", "v_proj", "down_proj")))
    L.save_adapter(model, tmp_path / "adapter", base_model_name_or_path=str(folder))
    config = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert (config["r"] == 4 and config["lora_alpha"] == 16
            and config["target_modules"] == ["down_proj", "q_proj", "v_proj"])
    peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), peft_model(IDS).logits, atol=1e-5, rtol=0)


def test_peft_adapter_loads_into_our_model_with_equal_logits(base, tmp_path):
    from peft import LoraConfig, get_peft_model
    folder, hf = base
    with torch.no_grad():
        base_logits = hf(IDS).logits
    peft_model = get_peft_model(hf, LoraConfig(
        r=8, lora_alpha=8, target_modules=["k_proj", "o_proj", "gate_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(tmp_path / "peft_adapter")
    peft_model.eval()
    model = M.load_model(folder)
    L.load_adapter(model, tmp_path / "peft_adapter")
    assert set(L.lora_layers(model)) == {
        n for n, _ in model.named_modules()
        if n.endswith(("k_proj", "o_proj", "gate_proj", "up_proj"))}
    with torch.no_grad():
        expected = peft_model(IDS).logits
        assert (expected - base_logits).abs().max() > 1e-2  # the adapter does something
        torch.testing.assert_close(model(IDS), expected, atol=1e-5, rtol=0)


def test_save_load_round_trip(base, tmp_path):
    folder, _ = base
    model = M.load_model(folder)
    train_a_few_steps(model, L.apply_lora(model, r=4, alpha=8))
    L.save_adapter(model, tmp_path / "a")
    other = M.load_model(folder)
    L.load_adapter(other, tmp_path / "a")
    with torch.no_grad():
        torch.testing.assert_close(other(IDS), model(IDS), atol=0, rtol=0)


def test_merged_export_loads_in_transformers_and_in_ours(base, tmp_path):
    from transformers import Qwen2ForCausalLM
    folder, _ = base
    model = M.load_model(folder)
    train_a_few_steps(model, L.apply_lora(model, r=4, alpha=8))
    L.export_merged(model, tmp_path / "merged")
    with torch.no_grad():
        expected = model(IDS)
        hf = Qwen2ForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
        torch.testing.assert_close(hf(IDS).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(M.load_model(tmp_path / "merged")(IDS), expected, atol=1e-5,
                                   rtol=0)


def test_mismatched_adapters_are_clear_errors(base, tmp_path):
    folder, _ = base
    model = M.load_model(folder)
    L.apply_lora(model, r=4, alpha=8)
    L.save_adapter(model, tmp_path / "r4")
    # rank differs from the model's adapter
    other = M.load_model(folder)
    L.apply_lora(other, r=8, alpha=16)
    with pytest.raises(ValueError,
                       match="adapter has r=4, lora_alpha=8 but the model's LoRA has r=8"):
        L.load_adapter(other, tmp_path / "r4")
    # targets differ
    other = M.load_model(folder)
    L.apply_lora(other, r=4, alpha=8, targets=("q_proj",))
    with pytest.raises(ValueError, match="adapter targets do not match.*unexpected"):
        L.load_adapter(other, tmp_path / "r4")
    # base shapes differ: the same adapter on a wider model
    wide = make_hf_model(seed=0, hidden_size=96, num_attention_heads=4, num_key_value_heads=2)
    wide_model = M.load_model(save_hf_model(wide, tmp_path / "wide"))
    with pytest.raises(ValueError, match=r"has shape \(4, 64\) but the model needs \(4, 96\)"):
        L.load_adapter(wide_model, tmp_path / "r4")
    # not an adapter folder / unsupported settings
    with pytest.raises(FileNotFoundError, match="adapter_config.json not found"):
        L.load_adapter(M.load_model(folder), tmp_path)
    cfg = json.loads((tmp_path / "r4/adapter_config.json").read_text())
    (tmp_path / "r4/adapter_config.json").write_text(json.dumps(cfg | {"use_dora": True}))
    with pytest.raises(ValueError, match="unsupported adapter settings.*use_dora"):
        L.load_adapter(M.load_model(folder), tmp_path / "r4")
