"""bench/cuda_checks.py's bf16 gate can fail: on the CPU at a tiny shape it passes the production decoder and
fails one whose sampler decodes without the adapter (the learner keeps it), through both of its log-prob
checks."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import cuda_checks as CC  # noqa: E402

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)


class WithoutAdapter(CC.FD.FastDecode):
    """A broken sampler: the fast decoder with the LoRA adapter switched off."""

    def __call__(self, model, inputs, return_logprobs=False):
        with CC.L.lora_disabled(model):
            return super().__call__(model, inputs, return_logprobs)


@pytest.mark.parametrize("decoder, failed", [
    (CC.FD.FastDecode, []),
    (WithoutAdapter, ["fast sampler's log-probs = the plain bf16 loop's on the same tokens, within bfloat16's error",
                      "sampler - learner mismatch within bfloat16's error"]),
])
def test_the_bf16_gate_passes_the_production_decoder_and_fails_a_sampler_without_its_adapter(
        monkeypatch, capsys, decoder, failed):
    monkeypatch.setitem(CC.SHAPES, "small", TINY)
    monkeypatch.setattr(CC, "failures", [])
    monkeypatch.setattr(CC.FD, "FastDecode", decoder)
    CC.bf16(CC.torch.device("cpu"), small=True)
    out = capsys.readouterr().out
    assert CC.failures == failed, out
    assert "PASS  one learner update" in out and "PASS  every log-prob finite" in out
