"""Tiny random Qwen2 checkpoints in HF format, written by transformers (the reference implementation)."""

from pathlib import Path

import torch

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True)


def make_hf_model(seed: int = 0, scale: float = 0.2, **overrides):
    """transformers' Qwen2ForCausalLM with every weight random, biases and norm scales included.

    The default init gives near-uniform logits and zero biases; a larger scale makes greedy decoding decisive
    and exercises the q/k/v biases.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    config = Qwen2Config(**(TINY | overrides))
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(scale * torch.randn_like(p))
    return model


def save_hf_model(hf_model, folder: Path, shard: bool = False) -> Path:
    hf_model.save_pretrained(folder, max_shard_size="40KB" if shard else "10GB")
    return folder
