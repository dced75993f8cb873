"""Tiny random Qwen2 checkpoints in HF format, written by transformers
(the reference implementation)."""

from pathlib import Path

import torch

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def make_hf_model(seed: int = 0, scale: float = 0.2, **overrides):
    """transformers' Qwen2ForCausalLM with every weight random, biases and norm scales included.

    The default init gives near-uniform logits and zero biases; a larger scale makes greedy decoding
    decisive and exercises the q/k/v biases.
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


class ChatTokenizer:
    """model.Tokenizer's interface over characters, with Qwen's three special tokens as ids 0-2:
    enough to write a completion's ids by hand (ids 3.. are the characters of ALPHABET)."""

    SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n"

    def __init__(self):
        self.eos_token_id = self.pad_token_id = 0
        self.vocab_size = len(self.SPECIAL) + len(self.ALPHABET)

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            special = next((k for k, s in enumerate(self.SPECIAL) if text.startswith(s, i)), None)
            if special is not None:
                ids.append(special)
                i += len(self.SPECIAL[special])
            else:
                ids.append(len(self.SPECIAL) + self.ALPHABET.index(text[i]))
                i += 1
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        n = len(self.SPECIAL)
        return "".join(self.ALPHABET[i - n] if i >= n
                       else ("" if skip_special_tokens else self.SPECIAL[i])
                       for i in ids)

    def token_to_id(self, token: str) -> int | None:
        return self.SPECIAL.index(token) if token in self.SPECIAL else None
