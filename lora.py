"""
LoRA by hand: inject, merge/unmerge, save and load adapters in the format peft reads and writes.

A wrapped projection computes  y = x W^T + b + (alpha / r) * x A^T B^T,  with A [r, in] random
(kaiming-uniform, as peft and nn.Linear initialise) and B [out, r] zero, so a fresh adapter leaves
the model unchanged. The base W and b keep their HF names (q_proj.weight), so the wrapped model
still loads plain checkpoints; the adapter adds q_proj.lora_A.weight and q_proj.lora_B.weight, which
peft saves as base_model.model.<module path>.lora_A.weight. The base may stay in bf16 while A and B
(and so their optimizer state) are float32.

    lora_params = apply_lora(model, r=64, alpha=128)  # freezes every base parameter
    save_adapter(model, "out/adapter")  # peft: PeftModel.from_pretrained(hf_model, "out/adapter")
    load_adapter(model, "some/peft/adapter")  # injects (or checks) and loads
    export_merged(model, "out/merged")  # an HF model folder with W + (alpha/r) B A
    sampler = merged_copy(model)  # a separate merged model (the faster, inexact sampler)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import Qwen2, fuse_projection_storage, save_model

# Qwen2's Linear layers but the head: what peft's "all-linear" picks and the authors' LoRA targets
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel.base_model (the LoRA wrapper) .model (the network)


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) B A dropout(x): the frozen base W (shared, not copied) plus a
    rank-r update, A [r, in] and B [out, r] the only trainable weights."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 dtype=torch.float32):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        device = base.weight.device
        # on the base's device; on meta (a model with no weights yet) there is nothing to initialise
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=device, dtype=dtype)
        if device.type != "meta":
            # peft's initialisation: A random, B zero, so the adapted model starts as the base
            # model exactly and the first gradient reaches B (A's is 0 while B is)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False   # W already holds (alpha/r) B A
        self.enabled = True   # False: behave as the base layer (the KL reference)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            if not self.enabled:
                raise RuntimeError("cannot disable a merged adapter; unmerge_lora(model) first")
            return y
        if not self.enabled:
            return y
        # the adapter runs in its own dtype (float32 by default, over a bf16 base): its small
        # updates would round away in bf16. Dropout on the adapter's input only, as peft.
        a = self.lora_A.weight
        return y + (self.lora_B(self.lora_A(self.dropout(x.to(a.dtype))))
                    * self.scaling).to(y.dtype)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, r={self.r}, alpha={self.alpha}"


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _matches(name: str, targets) -> bool:
    """peft's rule: a list names module-name suffixes; a string is a regex matched against the full
    name."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name.split(".")[-1] in targets


# -----------------------------------------------------------------------------
# Inject, freeze, toggle, merge


def apply_lora(model: Qwen2, r: int = 64, alpha: float = 128, dropout: float = 0.0,
               targets=ALL_PROJECTIONS, dtype=torch.float32) -> list[nn.Parameter]:
    """Wrap every matching nn.Linear (never the LM head), freeze the base, return the trainable
    parameters."""
    if r < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {r}")
    if targets == "all-linear":
        targets = ALL_PROJECTIONS
    for p in model.parameters():
        p.requires_grad_(False)
    found = []
    # an adapter's own A and B are Linears too: never adapted (a regex target in a second call
    # would match "q_proj.lora_A")
    adapters = {name for name, module in model.named_modules() if isinstance(module, LoRALinear)}
    # a snapshot: the loop swaps modules in the tree it walks. Never the head (peft's all-linear
    # leaves it out too).
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rpartition(".")[0] not in adapters \
                and name != "lm_head" and _matches(name, targets):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child,
                    LoRALinear(module, r, alpha, dropout, dtype))
            found.append(name)
    if not found:
        raise ValueError(f"no Linear layer matches LoRA targets {targets}")
    return lora_parameters(model)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    params = [p for m in lora_layers(model).values() for p in (m.lora_A.weight, m.lora_B.weight)]
    for p in params:
        p.requires_grad_(True)
    return params  # in a fixed order (modules, then A before B): the optimizer state's ids


@contextmanager
def lora_disabled(model: nn.Module):
    """Run the base model (adapter off) without a second copy of the weights: the KL reference."""
    layers = lora_layers(model).values()
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:  # an error inside must not leave the adapter off for the rest of the run
        for m in layers:
            m.enabled = True


@torch.no_grad()
def merge_lora(model: nn.Module):
    """W <- W + (alpha/r) B A in place (computed in float32). Inference then costs nothing extra."""
    for m in lora_layers(model).values():
        if not m.merged:  # twice would add the delta twice
            m.weight.copy_((m.weight.float() + m.delta_weight().float()).to(m.weight.dtype))
            m.merged = True


@torch.no_grad()
def unmerge_lora(model: nn.Module):
    """Undo merge_lora: exact up to rounding in float32; a bf16 base loses the bits the merge
    rounded away."""
    for m in lora_layers(model).values():
        if m.merged:
            m.weight.copy_((m.weight.float() - m.delta_weight().float()).to(m.weight.dtype))
            m.merged = False


# -----------------------------------------------------------------------------
# The peft adapter format


def adapter_config(model: nn.Module, base_model_name_or_path: str | None = None) -> dict:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapter")
    first = next(iter(layers.values()))
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": first.r, "lora_alpha": first.alpha, "lora_dropout": getattr(first.dropout, "p", 0.0),
        "target_modules": sorted({name.split(".")[-1] for name in layers}),
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
        "alpha_pattern": {},
    }


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights under peft's key names."""
    state = {}
    for name, m in lora_layers(model).items():
        state[f"{PEFT_PREFIX}{name}.lora_A.weight"] = m.lora_A.weight.detach()
        state[f"{PEFT_PREFIX}{name}.lora_B.weight"] = m.lora_B.weight.detach()
    return state


def save_adapter(model: nn.Module, folder: str | os.PathLike,
                 base_model_name_or_path: str | None = None):
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in adapter_state_dict(model).items()},
              folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(
        json.dumps(adapter_config(model, base_model_name_or_path), indent=2) + "\n")


def read_adapter_config(folder: Path) -> dict:
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (a peft adapter folder holds {ADAPTER_CONFIG} "
                                f"and {ADAPTER_WEIGHTS})")
    config = json.loads(path.read_text())
    # Each of these changes what the adapter computes: loading it as plain LoRA would run another
    # function without a word.
    unsupported = {
        "peft_type": config.get("peft_type", "LORA") != "LORA",
        "use_rslora": bool(config.get("use_rslora")), "use_dora": bool(config.get("use_dora")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
        "bias": config.get("bias", "none") != "none",
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "layers_to_transform": config.get("layers_to_transform") is not None,
        "modules_to_save": bool(config.get("modules_to_save")),
    }
    bad = [k for k, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ValueError(f"{path}: unsupported adapter settings "
                         f"{[(k, config.get(k)) for k in bad]} (plain LoRA on Linear layers only)")
    return config


def load_adapter(model: Qwen2, folder: str | os.PathLike,
                 dtype=torch.float32) -> list[nn.Parameter]:
    """Load a peft LoRA adapter (ours or peft's). Injects LoRA when the model has none; otherwise
    the model's rank, alpha and targets must equal the adapter's. Returns the LoRA parameters."""
    from safetensors.torch import load_file
    folder = Path(folder)
    config = read_adapter_config(folder)
    r, alpha, targets = config["r"], config["lora_alpha"], config["target_modules"]
    targets = tuple(targets) if isinstance(targets, list) else targets
    if not lora_layers(model):
        apply_lora(model, r=r, alpha=alpha, dropout=config.get("lora_dropout", 0.0),
                   targets=targets, dtype=dtype)
    else:
        first = next(iter(lora_layers(model).values()))
        if (first.r, first.alpha) != (r, alpha):
            raise ValueError(f"{folder}: adapter has r={r}, lora_alpha={alpha} "
                             f"but the model's LoRA has r={first.r}, alpha={first.alpha}")
    weights_path = folder / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found "
                                "(only safetensors adapters are loaded, never .bin)")
    state = load_file(weights_path)
    layers = lora_layers(model)
    expected = {f"{PEFT_PREFIX}{n}.lora_{ab}.weight": (m, ab)
                for n, m in layers.items() for ab in "AB"}
    # peft may write the adapter name into keys (".lora_A.default.weight") in some versions; accept
    # both.
    state = {k.replace(".default.weight", ".weight"): v for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{folder}: adapter targets do not match the model "
                         f"(target_modules {targets}); "
                         f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                         f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    with torch.no_grad():
        for key, (m, ab) in expected.items():
            param = m.lora_A.weight if ab == "A" else m.lora_B.weight
            if state[key].shape != param.shape:
                raise ValueError(f"{folder}: {key} has shape {tuple(state[key].shape)} "
                                 f"but the model needs {tuple(param.shape)} "
                                 "(rank or base shapes differ)")
            param.copy_(state[key])
    return lora_parameters(model)


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict (HF names) with each adapter folded in: W + (alpha/r) B A,
    computed in float32 and stored in W's dtype as a new tensor; every other entry is the model's
    own tensor, not a copy."""
    layers = lora_layers(model)
    state = {}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:  # folded into W below
            continue
        module = layers.get(name.removesuffix(".weight"))
        # a merged layer's W holds its delta already
        if module is not None and name.endswith(".weight") and not module.merged:
            tensor = (tensor.float() + module.delta_weight().float()).to(tensor.dtype)
        state[name] = tensor
    return state


def merged_copy(model: Qwen2) -> Qwen2:
    """A separate plain Qwen2 for sampling: the adapted weights merged (merged_state_dict, so in the
    base's dtype: bfloat16 on a GPU), rebuilt from the model's current base and adapter; the weights
    no adapter touches are shared with the model, not copied. The model itself is never modified,
    unlike merge_lora. It computes the learner's function only up to the rounding of the merge;
    grpo.sampler_mismatch measures how far."""
    with torch.device("meta"):
        copy = Qwen2(model.config)
    copy.load_state_dict(merged_state_dict(model), assign=True)
    copy.tie_weights()  # assign gave the head its own Parameter over the embedding's storage
    copy.requires_grad_(False)
    return fuse_projection_storage(copy).eval()


def export_merged(model: Qwen2, folder: str | os.PathLike,
                  tokenizer_from: str | os.PathLike | None = None):
    """An HF-format model folder with the adapter folded in (the model itself is left as it was).
    tokenizer_from: a folder whose tokenizer files are copied alongside, so the export runs on its
    own."""
    save_model(model, folder, state_dict=merged_state_dict(model))
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                     "generation_config.json"):
            if (Path(tokenizer_from) / name).is_file():
                shutil.copy(Path(tokenizer_from) / name, Path(folder) / name)
