"""model.py against transformers' Qwen2 (the oracle): logits, cached decoding, sampling, loading, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fast_decode as FD
import model as M
from tiny import TINY, make_hf_model, save_hf_model

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = [
    dict(tie_word_embeddings=True, num_key_value_heads=1, rope_theta=1e4, shard=False),
    dict(tie_word_embeddings=False, num_key_value_heads=2, rope_theta=1e6, shard=True),
    dict(tie_word_embeddings=True, num_key_value_heads=4, rope_theta=1e6, shard=True),
    dict(tie_word_embeddings=False, num_key_value_heads=1, rope_theta=1e4, shard=False, num_hidden_layers=3,
         hidden_size=96, num_attention_heads=6, intermediate_size=160),
]


# generate's decode loops: model.py's own (the default), fast_decode's two
DECODERS = {"plain": lambda: None, "fast-shrinking-batch": lambda: FD.FastDecode(fixed_shapes=False),
            "fast-fixed-shapes": lambda: FD.FastDecode(fixed_shapes=True)}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(ours, transformers') for the second config: untied, GQA, sharded."""
    hf = make_hf_model(seed=1, tie_word_embeddings=False, rope_theta=1e6)
    folder = save_hf_model(hf, tmp_path_factory.mktemp("ckpt"), shard=True)
    return M.load_model(folder), hf


# --- forward parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS, ids=["tied-kv1-1e4", "untied-kv2-1e6-sharded", "tied-mha-sharded", "untied-kv1-3layers"])
def test_logits_match_transformers(cfg, tmp_path):
    cfg = dict(cfg)
    shard = cfg.pop("shard")
    hf = make_hf_model(seed=hash(str(cfg)) % 1000, **cfg)
    folder = save_hf_model(hf, tmp_path, shard=shard)
    assert shard == (folder / "model.safetensors.index.json").exists()
    ours = M.load_model(folder)
    ids = torch.randint(0, TINY["vocab_size"], (3, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == (3, 23, TINY["vocab_size"])
    assert expected.abs().max() > 1.0  # the check is not vacuous
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == cfg["tie_word_embeddings"]


def test_a_config_without_tie_word_embeddings_keeps_its_own_head(tmp_path):
    """transformers' Qwen2Config reads a missing tie_word_embeddings as False: the checkpoint's own
    lm_head.weight is the head. Ours reads it the same way, so the logits still match."""
    hf = make_hf_model(seed=4, tie_word_embeddings=False)
    folder = save_hf_model(hf, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["tie_word_embeddings"]
    (folder / "config.json").write_text(json.dumps(config))
    ours = M.load_model(folder)
    assert ours.lm_head.weight is not ours.model.embed_tokens.weight
    ids = torch.randint(0, TINY["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)


def test_parameter_names_equal_the_checkpoint(pair):
    ours, hf = pair
    assert set(ours.state_dict()) == set(hf.state_dict())


# --- cached decoding ----------------------------------------------------------------------------------------


def full_recompute_greedy(model, prompt, steps):
    ids, logits = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            step_logits = model(torch.tensor([ids]))[0, -1]
            logits.append(step_logits)
            ids.append(int(step_logits.argmax()))
    return ids[len(prompt):], torch.stack(logits)


def test_prefill_and_decode_equal_full_recompute_on_ragged_batch(pair):
    """Left-padded prompts of lengths 7, 1, 12 decoded step by step against the cache: every step's logits
    equal a full recompute of that row alone."""
    ours, _ = pair
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (7, 1, 12)]
    steps = 10
    refs = [full_recompute_greedy(ours, p, steps) for p in prompts]
    P = max(map(len, prompts))
    pad = torch.tensor([P - len(p) for p in prompts])
    ids = torch.zeros(3, P, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, pad[i]:] = torch.tensor(p)
    key_valid = torch.arange(P + steps)[None] >= pad[:, None]
    positions = (torch.arange(P)[None] - pad[:, None]).clamp(min=0)
    cache = M.KVCache.allocate(ours.config, 3, P + steps, torch.float32, "cpu")
    with torch.no_grad():
        logits = ours(ids, positions, M.causal_mask(key_valid[:, :P], P), cache)[:, -1]
        for t in range(steps):
            for row in range(3):
                torch.testing.assert_close(logits[row], refs[row][1][t], atol=1e-5, rtol=1e-5)
            token = torch.tensor([refs[row][0][t] for row in range(3)])
            pos = torch.tensor([len(p) + t for p in prompts])[:, None]
            logits = ours(token[:, None], pos, M.causal_mask(key_valid[:, :P + t + 1], 1), cache)[:, -1]


def test_chunked_prefill_onto_a_filled_cache(pair):
    """A second multi-token chunk written after the first must see it (the is_causal trap)."""
    ours, _ = pair
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(4))
    cache = M.KVCache.allocate(ours.config, 2, 20, torch.float32, "cpu")
    with torch.no_grad():
        full = ours(ids)
        first = ours(ids[:, :8], cache=cache)
        second = ours(ids[:, 8:], cache=cache)
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
def test_greedy_generate_matches_transformers(pair, decoder):
    ours, hf = pair
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (9, 1, 4)]
    got = M.generate(ours, prompts, max_new_tokens=40, temperature=0, decode=DECODERS[decoder]())
    for prompt, tokens in zip(prompts, got):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert tokens == out[0, len(prompt):].tolist()
        assert len(tokens) == 40


@pytest.mark.parametrize("decoder", DECODERS)
def test_greedy_generate_equals_full_recompute(pair, decoder):
    ours, _ = pair
    prompts = [[5, 6, 7, 8, 9, 10], [42]]
    got = M.generate(ours, prompts, max_new_tokens=33, temperature=0, decode=DECODERS[decoder]())
    for prompt, tokens in zip(prompts, got):
        assert tokens == full_recompute_greedy(ours, prompt, 33)[0]


def test_rows_are_independent_of_the_rest_of_the_batch(pair):
    ours, _ = pair
    a, b, c = [1, 2, 3, 4, 5], [60, 61], [7] * 15
    for temperature in (0, 1.0):
        ab = M.generate(ours, [a, b], max_new_tokens=24, temperature=temperature, seed=11)
        ac = M.generate(ours, [a, c], max_new_tokens=24, temperature=temperature, seed=11)
        assert ab[0] == ac[0]
        assert ab[1] != ac[1]


def test_prefix_sharing_equals_repeated_prompts(pair):
    """num_samples=K prefills once and fans out; it must draw exactly what K copies of the prompt draw."""
    ours, _ = pair
    prompts = [[3, 1, 4, 1, 5], [9, 2]]
    shared = M.generate(ours, prompts, max_new_tokens=20, num_samples=4, seed=7)
    repeated = M.generate(ours, [p for p in prompts for _ in range(4)], max_new_tokens=20, seed=7)
    assert shared == repeated
    assert len(shared) == 8


def test_samples_of_one_prompt_differ_in_their_first_token(tmp_path):
    hf = make_hf_model(seed=2, scale=0.02)  # near-uniform next-token distribution
    ours = M.load_model(save_hf_model(hf, tmp_path))
    out = M.generate(ours, [[1, 2, 3]], max_new_tokens=3, num_samples=8, seed=0)
    assert len({row[0] for row in out}) > 1


def test_same_seed_same_samples_other_seed_other_samples(pair):
    ours, _ = pair
    run = lambda seed: M.generate(ours, [[1, 2], [3]], max_new_tokens=16, num_samples=3, seed=seed)
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_torch_cpu_generator_keeps_only_32_bits_of_a_seed():
    """Why derived_seed lays its seeds out in 32 bits: seeds that differ above bit 31 draw the
    same numbers on the CPU."""
    draw = lambda seed: torch.rand(4, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1), draw(1 + 2**32)) and not torch.equal(draw(1), draw(2))


def test_derived_seeds_of_different_draws_never_meet():
    """Every draw of every run below MAX_SEED gets its own 32-bit seed: the training draws below
    2**31, each measurement draw in its own block above, exhaustively at the edges of each range
    (first, second, last seed; first, second, last index). The offsets they replaced collided
    (seed 0's diagnostics at step 2 drew seed 1's rollouts at step 22)."""
    seeds = (0, 1, M.MAX_SEED - 1)
    training = {(s, d, i): M.derived_seed(s, d, i) for s in seeds for d in ("rollouts",)
                for i in (0, 1, M.SEED_STRIDE - 1)}
    measuring = {(s, d, i): M.derived_seed(s, d, i) for s in seeds for d in M.MEASUREMENT_DRAWS
                 for i in (0, 1, 2**18 - 1)}
    assert max(training.values()) < 2**31 <= min(measuring.values())
    assert max(measuring.values()) < 2**32
    every = list(training.values()) + list(measuring.values())
    assert len(set(every)) == len(every)
    assert M.derived_seed(0, "diagnostics", 2) != M.derived_seed(1, "rollouts", 22)
    # the training streams are the ones every committed run drew: seed * 1,000,003 + step
    assert M.derived_seed(2, "rollouts", 5) == 2 * 1_000_003 + 5
    for bad in ((M.MAX_SEED, "rollouts", 0), (-1, "held-out", 0), (0, "rollouts", M.SEED_STRIDE),
                (0, "sketch", 2**18)):
        with pytest.raises(ValueError, match="--seed must be in|outside"):
            M.derived_seed(*bad)


def test_eos_stops_each_row_and_is_kept(pair, monkeypatch):
    """Rows stop at their own EOS (kept as the last token); rows that end early are dropped from the batch
    (every 16 steps), which must not change what the other rows draw, greedy or sampled."""
    ours, _ = pair
    dropped = []
    select = M.KVCache.select
    monkeypatch.setattr(M.KVCache, "select", lambda self, rows: dropped.append(len(rows)) or select(self, rows))
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8], [9, 9]]
    for temperature in (0, 1.0):
        free = M.generate(ours, prompts, max_new_tokens=40, temperature=temperature, seed=5)
        eos = [free[0][3], free[1][5]]  # tokens that these rows do emit early
        got = M.generate(ours, prompts, max_new_tokens=40, temperature=temperature, seed=5, eos_token_id=eos)
        for row_free, row in zip(free, got):
            stops = [j for j, tok in enumerate(row_free) if tok in eos]
            assert row == (row_free[:stops[0] + 1] if stops else row_free)
        assert got[0][-1] in eos and len(got[0]) <= 4 and len(got[1]) <= 6
    assert dropped  # the batch did shrink


@pytest.mark.parametrize("case", [
    dict(temperature=0), dict(temperature=1.0), dict(temperature=0.7, top_p=0.8), dict(temperature=1.0, vocab_size=90),
    dict(temperature=1.0, eos_token_id=[3, 17]), dict(temperature=0, eos_token_id=[3, 17]), dict(max_new_tokens=1),
], ids=["greedy", "sampled", "top-p", "vocab-size", "eos-sampled", "eos-greedy", "one-token"])
def test_fixed_shape_decoding_draws_what_the_shrinking_batch_draws(pair, case):
    """The CUDA-graph path (fixed shapes: whole batch to the end, attention over every cache column with the
    unwritten ones masked) must draw exactly the tokens of the shrinking-batch path, which the tests above check
    against transformers and a full recompute. On a CPU the same fixed-shape step runs without capture."""
    ours, _ = pair
    kwargs = dict(max_new_tokens=40, seed=5, num_samples=3) | case
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8], [9, 9, 9, 9, 9, 9, 9]]
    shrinking = M.generate(ours, prompts, decode=FD.FastDecode(fixed_shapes=False), **kwargs)
    fixed = M.generate(ours, prompts, decode=FD.FastDecode(fixed_shapes=True), **kwargs)
    assert fixed == shrinking
    if "eos_token_id" in case:  # rows did end early, at different steps
        assert len({len(row) for row in fixed}) > 1 and min(len(row) for row in fixed) < 40


def test_fixed_shape_decoding_stops_when_every_row_has_ended(pair, monkeypatch):
    ours, _ = pair
    prompts = [[1, 2, 3], [4, 5]]
    first = [row[0] for row in M.generate(ours, prompts, max_new_tokens=1, temperature=0)]
    steps = []
    sample = M.sample_token
    monkeypatch.setattr(M, "sample_token", lambda *a, **k: steps.append(1) or sample(*a, **k))
    out = M.generate(ours, prompts, max_new_tokens=200, temperature=0, eos_token_id=first,
                     decode=FD.FastDecode(fixed_shapes=True))
    assert out == [[first[0]], [first[1]]]
    assert len(steps) == 16  # the first token, then 15 steps until the every-16-steps check sees all rows ended


def test_tokens_the_tokenizer_lacks_are_never_drawn(pair):
    ours, _ = pair
    vocab = 90  # pretend ids 90..96 are padding rows of the embedding
    out = M.generate(ours, [[1, 2, 3]], max_new_tokens=30, num_samples=8, seed=3, vocab_size=vocab)
    assert max(max(r) for r in out) < vocab
    # Make a padding id overwhelmingly likely: greedy must still avoid it.
    logits = torch.zeros(2, 97)
    logits[:, 95] = 100.0
    assert M.sample_token(logits, 0, 1.0, torch.rand(2), vocab_size=vocab).max() < vocab
    assert M.sample_token(logits, 1.0, 1.0, torch.rand(2), vocab_size=vocab).max() < vocab


# --- the sampler draws from the softmax ----------------------------------------------------------------------

# Upper 0.1% point of the chi-square distribution with 7 degrees of freedom.
CHI2_7DOF_999 = 24.322


def chi_square(counts, probs):
    n = counts.sum()
    expected = probs * n
    return float(((counts - expected) ** 2 / expected).sum())


def test_temperature_one_draws_from_the_model_softmax(tmp_path):
    hf = make_hf_model(seed=8, scale=0.1, vocab_size=8)
    ours = M.load_model(save_hf_model(hf, tmp_path))
    prompt = [1, 5, 2]
    n = 6000
    out = M.generate(ours, [prompt], max_new_tokens=1, num_samples=n, seed=123)
    counts = torch.bincount(torch.tensor([r[0] for r in out]), minlength=8).double()
    with torch.no_grad():
        probs = torch.softmax(hf(torch.tensor([prompt])).logits[0, -1].double(), -1)
    assert probs.min() > 0.01 and probs.max() < 0.6  # a non-degenerate distribution
    assert chi_square(counts, probs) < CHI2_7DOF_999
    # A wrong distribution (uniform) is rejected by the same test, so it has power.
    assert chi_square(counts, torch.full((8,), 1 / 8, dtype=torch.float64)) > CHI2_7DOF_999


def test_temperature_and_top_p_distributions():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 0.2, 1.5]])
    n = 20000
    u = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # temperature 0.5: softmax(logits / 0.5), worked independently with exp.
    draws = M.sample_token(logits.expand(n, 8), 0.5, 1.0, u)
    w = torch.exp(logits[0].double() / 0.5)
    assert chi_square(torch.bincount(draws, minlength=8).double(), w / w.sum()) < CHI2_7DOF_999
    # top_p 0.7: the most likely tokens in order 0 (2.0), 7 (1.5), 1 (1.0), ...; keep until mass reaches 0.7.
    p = torch.softmax(logits[0].double(), -1)
    order = p.argsort(descending=True).tolist()
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += float(p[i])
        if mass >= 0.7:
            break
    draws = M.sample_token(logits.expand(n, 8), 1.0, 0.7, u)
    counts = torch.bincount(draws, minlength=8).double()
    assert set(torch.nonzero(counts).flatten().tolist()) == set(kept)
    target = torch.zeros(8, dtype=torch.float64)
    target[kept] = p[kept] / p[kept].sum()
    sub = torch.tensor(kept)
    assert len(kept) == 3  # 0.391 + 0.237 < 0.7 <= 0.391 + 0.237 + 0.144
    assert chi_square(counts[sub], target[sub]) < 13.816  # chi-square 0.1% point, 2 dof


# --- chunked log-probs ------------------------------------------------------------------------------------------


def naive_logprobs(model, prompt, completion):
    """log p of each completion token from a full forward of prompt + completion (no cache, no chunking)."""
    full = torch.log_softmax(model(torch.tensor([prompt + completion])).double(), -1)[0]
    return torch.stack([full[len(prompt) - 1 + j, tok] for j, tok in enumerate(completion)]), full


def test_completion_logprobs_equal_the_full_computation(pair):
    """Prompts run once and shared (two completions of prompt 0), chunked head: values, entropy and gradients
    equal a plain forward of each prompt + completion."""
    ours, _ = pair
    prompts = [[1, 2, 3], [8], [11, 12, 13, 14]]
    completions = [[4, 5, 6, 7], [9, 10], [15], [16, 17]]
    prompt_of = [0, 1, 2, 0]
    params = [p for p in ours.parameters()]
    lp, ent, mask = M.completion_logprobs(ours, prompts, completions, prompt_of, chunk_size=3)
    assert mask.tolist() == [[True] * 4, [True] * 2 + [False] * 2, [True] + [False] * 3, [True] * 2 + [False] * 2]
    shared_grads = torch.autograd.grad((lp * mask).sum(), params)
    total = 0
    for i, (c, j) in enumerate(zip(completions, prompt_of)):
        expected, full = naive_logprobs(ours, prompts[j], c)
        total = total + expected.sum()
        torch.testing.assert_close(lp[i, :len(c)].double(), expected, atol=1e-6, rtol=0)
        rows = full[len(prompts[j]) - 1:len(prompts[j]) - 1 + len(c)]
        torch.testing.assert_close(ent[i, :len(c)].double(), -(rows.exp() * rows).sum(-1), atol=1e-5, rtol=0)
    naive_grads = torch.autograd.grad(total, params)
    for a, b in zip(shared_grads, naive_grads):
        torch.testing.assert_close(a.double(), b.double(), atol=1e-5, rtol=1e-4)


def test_completion_logprobs_with_activation_checkpointing(pair):
    ours, _ = pair
    prompts, completions, prompt_of = [[1, 2, 3], [4]], [[5, 6], [7, 8, 9], [10]], [0, 1, 1]
    params = list(ours.parameters())
    lp, _, mask = M.completion_logprobs(ours, prompts, completions, prompt_of)
    plain = torch.autograd.grad((lp * mask).sum(), params)
    ours.gradient_checkpointing = True
    try:
        lp2, _, _ = M.completion_logprobs(ours, prompts, completions, prompt_of)
        ckpt = torch.autograd.grad((lp2 * mask).sum(), params)
    finally:
        ours.gradient_checkpointing = False
    torch.testing.assert_close(lp2, lp)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b)


def test_chunked_logprob_gradients_equal_full(pair):
    ours, _ = pair
    hidden = torch.randn(2, 9, ours.config.hidden_size, dtype=torch.float64, requires_grad=True)
    weight = ours.lm_head.weight.detach().double().requires_grad_()
    targets = torch.randint(0, 90, (2, 9))
    lp, _ = M.token_logprobs(hidden, weight, targets, temperature=0.7, vocab_size=90, chunk_size=5)
    lp.sum().backward()
    g_chunked = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    full = torch.log_softmax((hidden @ weight.T)[..., :90] / 0.7, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(lp, full, atol=1e-10, rtol=0)
    full.sum().backward()
    torch.testing.assert_close(g_chunked[0], hidden.grad)
    torch.testing.assert_close(g_chunked[1], weight.grad)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward): what is materialised at once."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel() * x.element_size())
        return out


def test_chunked_logprobs_never_materialise_the_full_logits():
    """Forward + backward over [4, 256] targets and V = 32000: the full computation creates [4, 256, 32000]
    float32 logits (131 MB); the chunked one (64 positions per chunk) never creates more than [64, 32000]
    (8 MB) at once. (Peak process memory is measured in bench/bench_generate.py.)"""
    B, T, H, V = 4, 256, 64, 32000
    hidden = torch.randn(B, T, H, requires_grad=True)
    weight = torch.randn(V, H) * 0.05
    targets = torch.randint(0, V, (B, T))
    with LargestTensor() as full:
        torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[..., None]).sum().backward()
    with LargestTensor() as chunked:
        M.token_logprobs(hidden, weight, targets, chunk_size=64)[0].sum().backward()
    assert full.largest >= B * T * V * 4
    assert chunked.largest <= 64 * V * 4 < full.largest / 8


# --- loading and clear errors --------------------------------------------------------------------------------


def test_config_reads_the_real_qwen_math_config(data_dir):
    config = M.Qwen2Config.from_pretrained(data_dir / "qwen2.5-tokenizer")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size, config.head_dim) == (1536, 28, 12, 2, 8960, 151936, 128)
    assert config.tie_word_embeddings and config.rope_theta == 10000 and config.max_position_embeddings == 4096
    with torch.device("meta"):
        net = M.Qwen2(config)
    assert sum(p.numel() for p in net.parameters()) == 1_543_714_304  # Qwen2.5-1.5B's published count


def test_missing_folder():
    with pytest.raises(FileNotFoundError, match="model folder not found: ./no/such/folder"):
        M.load_model("./no/such/folder")


def test_config_of_another_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="model_type is 'llama'.*only Qwen2"):
        M.load_model(tmp_path)


def _edit_checkpoint(tmp_path, edit):
    from safetensors.torch import load_file, save_file
    folder = save_hf_model(make_hf_model(seed=0), tmp_path)
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")
    return folder


def test_missing_tensor(tmp_path):
    folder = _edit_checkpoint(tmp_path, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensors: \['model.layers.1.mlp.up_proj.weight'\]"):
        M.load_model(folder)


def test_wrong_shape(tmp_path):
    def edit(s):
        s["model.layers.0.self_attn.k_proj.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"wrong shapes.*k_proj.bias: checkpoint \(5,\) vs model \(32,\)"):
        M.load_model(_edit_checkpoint(tmp_path, edit))


def test_unexpected_tensor(tmp_path):
    def edit(s):
        s["model.layers.0.extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match="unexpected tensors"):
        M.load_model(_edit_checkpoint(tmp_path, edit))


def test_pickle_only_checkpoint_is_refused(tmp_path):
    hf = make_hf_model(seed=0)
    hf.config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model.bin.*pickle checkpoints are not loaded"):
        M.load_model(tmp_path)


def test_unreachable_hub_says_so_in_one_line():
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import model; model.load_model('Qwen/Qwen2.5-Math-1.5B')"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(ROOT / ".pytest_cache" / "hf-home-empty"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "could not download 'Qwen/Qwen2.5-Math-1.5B' from the Hugging Face Hub" in last
    assert "pass the local folder" in last


def test_generate_rejects_overlong_requests(pair):
    ours, _ = pair
    with pytest.raises(ValueError, match="max_position_embeddings"):
        M.generate(ours, [[1] * 200], max_new_tokens=100)


# --- tokenizer ----------------------------------------------------------------------------------------------


def test_tokenizer_matches_transformers_on_gsm8k_and_chat_tokens(data_dir):
    from transformers import AutoTokenizer
    folder = data_dir / "qwen2.5-tokenizer"
    ours = M.load_tokenizer(folder)
    ref = AutoTokenizer.from_pretrained(str(folder))
    questions = [json.loads(line)["question"] for line in (data_dir / "gsm8k/test.jsonl").open()][:200]
    chat = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
            "<|im_start|>user\n" + questions[0] + "<|im_end|>\n<|im_start|>assistant\n")
    for text in questions + [chat, "  spaces\n\n\ttabs 1234567 it's Ǆ 😀 <|endoftext|>"]:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False)
    ids = ours.encode(chat)
    assert ids[0] == 151644 and ids.count(151645) == 2 and ours.decode(ids) == chat
    # Hand-checked ids from Qwen2Tokenizer's docstring.
    assert ours.encode("Hello world") == [9707, 1879] and ours.encode(" Hello world") == [21927, 1879]
    assert ours.eos_token_id == 151643 and ours.pad_token_id == 151643 and ours.vocab_size == 151665
    assert ours.token_to_id("<|im_end|>") == 151645


# --- the attention backend on CUDA -------------------------------------------------------------------------------


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch believes a CUDA device is there; the cuDNN attention switch is restored afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


@pytest.mark.parametrize("name", ["cuda", "auto"])
def test_choosing_a_cuda_device_switches_cudnn_attention_off(fake_cuda, name):
    """pick_device is where every entry point (grpo.py, eval.py, bench/) gets its device: on CUDA it turns
    cuDNN's SDPA off (its masked backward's NaN and per-shape plans, model.safe_attention) and leaves flash,
    memory-efficient and math on; the line a run logs says so."""
    assert M.pick_device(name).type == "cuda"
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert M.attention_backends().endswith("; off: cuDNN")


def test_the_trainer_applies_it_when_its_device_is_cuda(fake_cuda):
    import grpo as G
    device, dtype = G.resolve_device(G.Config(device="cuda"))
    assert (device.type, dtype) == ("cuda", torch.bfloat16) and not torch.backends.cuda.cudnn_sdp_enabled()


def test_on_the_cpu_the_attention_switches_are_left_alone(fake_cuda):
    assert M.pick_device("cpu").type == "cpu" and torch.backends.cuda.cudnn_sdp_enabled()
