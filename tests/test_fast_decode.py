"""fast_decode.py against the plain path of model.py: the same step in float32 (bit for bit without LoRA, within the
rounding of a reordered sum with it), the same tokens for the same seed (greedy, sampled, top-p, EOS, vocab masking,
prefix sharing, LoRA; with LoRA a draw may differ only where rounding decides it), the same distribution as completion_logprobs scores; the two-pass sampler against sample_token;
the fused weight storage; merged_copy."""

import math

import pytest
import torch

import fast_decode as FD
import lora as L
import model as M
from tiny import TINY, make_hf_model, save_hf_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    hf = make_hf_model(seed=1, tie_word_embeddings=False, rope_theta=1e6)
    return save_hf_model(hf, tmp_path_factory.mktemp("ckpt"), shard=True)


def with_lora(model, targets=L.ALL_PROJECTIONS, r=4, alpha=8, seed=0):
    """A LoRA adapter with random B (a fresh one is zero, which would make every check below vacuous)."""
    L.apply_lora(model, r=r, alpha=alpha, targets=targets)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in L.lora_layers(model).values():
            m.lora_B.weight.copy_(0.1 * torch.randn(m.lora_B.weight.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def models(folder):
    return {"no LoRA": M.load_model(folder), "LoRA on all 7": with_lora(M.load_model(folder)),
            "LoRA on q, v, down": with_lora(M.load_model(folder), targets=("q_proj", "v_proj", "down_proj"))}


def one_step_both_ways(model, batch: int, tamper=None):
    """Prefill a ragged batch, then one decode step through the plain forward and through the fused step, each
    on its own copy of the cache -> (plain hidden, fused hidden, plain cache, fused cache, columns written).
    tamper(decoder), if given, edits the fused weights first (to show that the checks below can fail)."""
    g = torch.Generator().manual_seed(batch)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in torch.randint(1, 12, (batch,), generator=g)]
    P = max(map(len, prompts))
    ids, lengths, key_valid, positions = M.left_pad(prompts, "cpu", width=P + 4)
    token = torch.randint(0, 97, (batch,), generator=g)
    with torch.no_grad():
        cache = M.KVCache.allocate(model.config, batch, P, torch.float32, "cpu")
        model.hidden_states(ids, positions, M.causal_mask(key_valid[:, :P], P), cache)
        plain_cache = cache.fan_out(1, P + 4)
        fused_cache = cache.fan_out(1, P + 4)
        plain = model.hidden_states(token[:, None], lengths[:, None], M.causal_mask(key_valid[:, :P + 1], 1),
                                    plain_cache)[:, -1]
        bias = torch.zeros(key_valid.shape).masked_fill_(~key_valid, float("-inf"))[:, None, None, :P + 1]
        decoder = FD.Decoder(model)
        if tamper:
            tamper(decoder)
        fused = decoder.hidden(token, lengths, fused_cache, torch.tensor([P]), P + 1, bias)
    return plain, fused, plain_cache, fused_cache, P + 1


def reordered_sum_bound(model, reference: torch.Tensor) -> float:
    """How far two float32 evaluations of one step may land apart when only the order of their sums differs.

    Two summation orders of n float32 terms differ by at most about 2 n u sum|terms| (u = 2^-24; Higham, Accuracy
    and Stability of Numerical Algorithms, Thm 3.1), and the step's values are O(1) after every norm; so this allows
    n ulps of the largest value, n the longest reduction of the step (the MLP's intermediate size here). Measured
    on an AMD EPYC: 0.7-3.1e-6 against a bound of 4.6e-5, while a LoRA scale off by 1% moves the step by 1e-2."""
    config = model.config
    n = max(config.hidden_size, config.intermediate_size)
    ulp = 2.0 ** (math.floor(math.log2(float(reference.abs().max()))) - 23)
    return n * ulp


def assert_same_step(model, plain, fused, plain_cache, fused_cache, filled, exact: bool):
    """The hidden state and every key and value written: bit for bit (exact) or within reordered_sum_bound."""
    pairs = [(plain, fused)] + [(a[:, :, :, :filled], b[:, :, :, :filled])
                                for a, b in zip(plain_cache.kv, fused_cache.kv)]
    for want, got in pairs:
        if exact:
            assert torch.equal(got, want)
        else:
            difference, bound = float((got - want).abs().max()), reordered_sum_bound(model, want)
            assert difference <= bound, f"max |difference| {difference:.3g} > bound {bound:.3g}"


def logit_bound(model, h: torch.Tensor, logits: torch.Tensor) -> float:
    """How far the fused loop's logits may land from the plain loop's with LoRA: the hidden state's
    reordered_sum_bound carried through lm_head (at most the largest row's L1 norm times it), plus the head's own
    reordered sum."""
    largest_row = float(model.lm_head.weight.abs().sum(1).max())
    return reordered_sum_bound(model, h) * largest_row + reordered_sum_bound(model, logits)


def rounding_decides(model, prompt: list[int], prefix: list[int], plain: int, fused: int, uniform: float,
                     settings: dict) -> bool:
    """Whether a draw the two loops made differently is one that a last-bit difference decides: some
    perturbation of the plain logits within logit_bound makes sample_token draw the fused loop's token.

    The perturbations tried are the extreme ones for an inverse-CDF draw: every logit up to a boundary of the
    sampler's order (ids, or probabilities with top-p) pushed one way and the rest the other, at the boundaries
    of both tokens; and the two tokens pushed apart (a greedy tie, a swap in the top-p order)."""
    with torch.no_grad():
        h = model.hidden_states(torch.tensor([prompt + prefix]))[:, -1]
        logits = model.lm_head(h).float()
    eps = logit_bound(model, h, logits)
    temperature, top_p = settings.get("temperature", 1.0), settings.get("top_p", 1.0)
    vocab_size = settings.get("vocab_size")
    order = logits[0].argsort(descending=True) if top_p < 1.0 else torch.arange(logits.shape[1])
    rank = order.argsort()
    pushes = [torch.zeros_like(logits[0]).index_fill_(0, torch.tensor([fused]), 1.0)
              .index_fill_(0, torch.tensor([plain]), -1.0)]
    for k in {int(rank[plain]), int(rank[fused]), int(rank[plain]) - 1, int(rank[fused]) - 1}:
        first = (rank <= k).float()
        pushes += [2 * first - 1, 1 - 2 * first]
    u = torch.tensor([uniform], dtype=torch.float64)
    return any(int(M.sample_token(logits + eps * push, temperature, top_p, u, vocab_size)) == fused
               for push in pushes)


def assert_same_draws(model, prompts: list[list[int]], kwargs: dict, plain: list, fused: list):
    """The fused loop drew the plain loop's tokens: bit for bit without LoRA (the same step, bit for bit); with
    LoRA (the same step up to summation order) each row equal, or equal up to a draw that rounding decides,
    after which the rows go their own ways."""
    if not L.lora_layers(model):
        assert fused == plain
        return
    assert len(fused) == len(plain)
    samples, steps = kwargs.get("num_samples", 1), kwargs["max_new_tokens"]
    uniforms = torch.rand(len(plain), steps, generator=torch.Generator().manual_seed(kwargs["seed"]),
                          dtype=torch.float64)  # generate's stream: row r draws uniforms[r, t]
    for r, (want, got) in enumerate(zip(plain, fused)):
        t = next((t for t, (a, b) in enumerate(zip(want, got)) if a != b), None)
        if t is None:
            assert got == want, f"row {r}"
            continue
        assert rounding_decides(model, prompts[r // samples], want[:t], want[t], got[t], float(uniforms[r, t]),
                                kwargs), f"row {r} step {t}: drew {got[t]}, the plain loop {want[t]}"


@pytest.mark.parametrize("batch", [3, 8])
def test_the_fused_step_without_lora_is_the_plain_step_bit_for_bit(models, batch):
    """Float32 on the CPU, no adapter: the fused q/k/v and gate/up GEMMs (each output column its own dot product
    over the input), the norm with its residual add, the rotary table: the same bits as the plain forward, in the
    hidden state and in every key and value written, on Intel and AMD alike."""
    assert_same_step(models["no LoRA"], *one_step_both_ways(models["no LoRA"], batch), exact=True)


@pytest.mark.parametrize("name", ["LoRA on all 7", "LoRA on q, v, down"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_the_fused_step_with_lora_is_the_plain_step_up_to_summation_order(models, name, batch):
    """With LoRA the fused step sums in another order than LoRALinear: B is one block-diagonal GEMM over all the
    adapters of an input (zeros between them) with alpha / r folded in, and its delta is accumulated into the base
    output by addmm. MKL picks its kernels by instruction set and shape, so these are the plain forward's bits on
    an Intel Xeon (batch 3 and 8) and differ in the last bits on an AMD EPYC: equal within reordered_sum_bound."""
    assert_same_step(models[name], *one_step_both_ways(models[name], batch), exact=False)


def _scale_lora(factor, layer, projection):
    def tamper(decoder):
        p = getattr(decoder.layers[layer], projection)
        p.lora_b_t = p.lora_b_t * factor
    return tamper


def _drop_lora(layer, projection):
    def tamper(decoder):
        p = getattr(decoder.layers[layer], projection)
        p.lora_a = p.lora_b_t = p.with_a = p.with_a_bias = None
    return tamper


@pytest.mark.parametrize("tamper", [_scale_lora(1.01, 0, "qkv"), _scale_lora(0.5, 1, "gate_up"),
                                    _drop_lora(1, "down")],
                         ids=["qkv-scale-off-by-1%", "gate-up-scale-halved", "down-delta-dropped"])
def test_the_bound_fails_a_real_error(models, tamper):
    """The bound is not so loose that it passes a wrong step: a LoRA scale off by 1% in one layer, a halved scale
    (alpha / r taken as alpha / 2r), one projection's delta left out."""
    model = models["LoRA on all 7"]
    with pytest.raises(AssertionError, match=r"max \|difference\|"):
        assert_same_step(model, *one_step_both_ways(model, 3, tamper), exact=False)


CASES = [dict(temperature=0), dict(temperature=1.0), dict(temperature=0.7, top_p=0.8),
         dict(temperature=1.0, vocab_size=90), dict(temperature=1.0, eos_token_id=[3, 17]),
         dict(temperature=0, eos_token_id=[3, 17]), dict(temperature=1.3, num_samples=1)]
CASE_IDS = ["greedy", "sampled", "top-p", "vocab-size", "eos-sampled", "eos-greedy", "no-prefix-sharing"]


@pytest.mark.parametrize("name", ["no LoRA", "LoRA on all 7", "LoRA on q, v, down"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("fixed_shapes", [False, True], ids=["shrinking-batch", "fixed-shapes"])
def test_fast_generate_draws_what_the_plain_loop_draws(models, name, case, fixed_shapes):
    model = models[name]
    kwargs = dict(max_new_tokens=40, seed=5, num_samples=3) | case
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8], [9, 9, 9, 9, 9, 9, 9]]
    plain = M.generate(model, prompts, **kwargs)
    assert_same_draws(model, prompts, kwargs, plain, M.generate(model, prompts, decode=FD.FastDecode(fixed_shapes),
                                                                 **kwargs))
    if "eos_token_id" in case:  # rows did end early, at different steps
        assert len({len(row) for row in plain}) > 1 and min(len(row) for row in plain) < 40


def test_a_draw_that_rounding_decides_is_told_from_one_that_it_does_not(models):
    """rounding_decides, on a draw placed by hand: a uniform a hair below the CDF boundary between two tokens
    (the plain loop draws the lower id; a last bit could give the next one) is decided by rounding; the same
    uniform in the middle of the token's interval, or a token two intervals away, is not."""
    model = models["LoRA on all 7"]
    prompt, prefix = [1, 2, 3], [40, 41]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + prefix]))[0, -1].float()
    cdf = torch.softmax(logits, -1).double().cumsum(-1)
    cdf = cdf / cdf[-1]  # as sample_token scales its draw
    k = int((cdf < 0.5).sum())  # the token drawn at u = 0.5
    below, middle = float(cdf[k]) - 1e-9, float(cdf[k] + cdf[k - 1]) / 2
    settings = dict(temperature=1.0)
    assert int(M.sample_token(logits[None], 1.0, 1.0, torch.tensor([below], dtype=torch.float64))) == k
    assert rounding_decides(model, prompt, prefix, k, k + 1, below, settings)
    assert not rounding_decides(model, prompt, prefix, k, k + 1, middle, settings)
    assert not rounding_decides(model, prompt, prefix, k, k + 2, below, settings)


def test_a_real_error_in_the_fused_step_is_not_taken_for_rounding(models, monkeypatch):
    """assert_same_draws is not so loose that it passes a wrong loop: with LoRA's scale off by 1% in one layer
    of the fused step, the draws part at a draw that rounding does not decide."""
    model = models["LoRA on all 7"]
    build = FD.Decoder.__init__

    def tampered(self, *args, **kwargs):
        build(self, *args, **kwargs)
        _scale_lora(1.01, 0, "qkv")(self)

    monkeypatch.setattr(FD.Decoder, "__init__", tampered)
    prompts, kwargs = [[1, 2, 3], [4, 5, 6, 7]], dict(max_new_tokens=40, seed=5, num_samples=3, temperature=1.0)
    fused = M.generate(model, prompts, decode=FD.FastDecode(fixed_shapes=True), **kwargs)
    with pytest.raises(AssertionError, match=r"step \d+: drew"):
        assert_same_draws(model, prompts, kwargs, M.generate(model, prompts, **kwargs), fused)


def test_attention_buckets_draw_what_the_plain_loop_draws(models, monkeypatch):
    """Fixed shapes with a bucket of 4 columns: the attention width grows 12 -> 16 -> ... -> 52 during the
    call, each width its own step (its own CUDA graph on a GPU); unwritten columns inside a bucket are masked."""
    model = models["LoRA on all 7"]
    widths = []
    hidden = FD.Decoder.hidden
    monkeypatch.setattr(FD.Decoder, "hidden", lambda self, *a: widths.append(a[4]) or hidden(self, *a))
    monkeypatch.setattr(FD, "ATTENTION_BUCKET", 4)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]]
    kwargs = dict(max_new_tokens=40, seed=2)
    got = M.generate(model, prompts, decode=FD.FastDecode(fixed_shapes=True), **kwargs)
    assert_same_draws(model, prompts, kwargs, M.generate(model, prompts, **kwargs), got)
    assert sorted(set(widths)) == list(range(12, 53, 4))  # P + t + 1 = 11 ... 49, rounded up


def test_the_sampler_log_probs_are_what_completion_logprobs_scores(models):
    """The distribution generate draws from is the learner's: the log-prob of each drawn token under the
    sampler's own logits equals completion_logprobs of the same tokens (temperature, vocab_size and LoRA), for
    the plain loop and both fast ones."""
    model = models["LoRA on all 7"]
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    for decode in (None, FD.FastDecode(fixed_shapes=False), FD.FastDecode(fixed_shapes=True)):
        completions, logprobs = M.generate(model, prompts, max_new_tokens=24, temperature=0.8, seed=3, num_samples=2,
                                           vocab_size=90, eos_token_id=[5], decode=decode, return_logprobs=True)
        assert [len(c) for c in completions] == [len(lp) for lp in logprobs]
        with torch.no_grad():
            lp, _, mask = M.completion_logprobs(model, prompts, completions, [0, 0, 1, 1], temperature=0.8,
                                                vocab_size=90)
        for i, c in enumerate(completions):
            torch.testing.assert_close(torch.tensor(logprobs[i]), lp[i, :len(c)], atol=1e-5, rtol=0)


def test_compiled_pieces_draw_what_the_plain_loop_draws(models):
    """The GPU's path on the CPU: the norms, rotary, the gate and the sampler compiled by inductor (their
    reductions may sum in another order, so float32 may differ in the last bits; the tokens do not)."""
    model = models["LoRA on all 7"]
    prompts = [[1, 2, 3], [4, 5, 6, 7], [8]]
    for case in (dict(temperature=0), dict(temperature=1.0, vocab_size=90, eos_token_id=[3, 17])):
        kwargs = dict(max_new_tokens=32, seed=4, num_samples=2) | case
        plain = M.generate(model, prompts, **kwargs)
        compiled = FD.FastDecode(fixed_shapes=True, compile=True)
        assert_same_draws(model, prompts, kwargs, plain, M.generate(model, prompts, decode=compiled, **kwargs))


# --- the two-pass sampler -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("V, vocab_size", [(97, None), (97, 90), (5000, 1000), (32000, None), (151936, 151665)])
def test_two_pass_inverse_cdf_picks_the_tokens_of_sample_token(V, vocab_size):
    """Rows of peaked and flat distributions, two temperatures: the token of each row's uniform is the one
    sample_token's float64 cumsum gives."""
    g = torch.Generator().manual_seed(V)
    rows = 1024 if V < 10000 else 64
    for scale in (0.1, 1.0, 5.0, 30.0):
        logits = torch.randn(rows, V, generator=g) * scale
        u = torch.rand(rows, generator=g, dtype=torch.float64)
        for temperature in (1.0, 0.6):
            expected = M.sample_token(logits, temperature, 1.0, u, vocab_size)
            assert torch.equal(FD.two_pass_inverse_cdf(logits, temperature, u, vocab_size), expected)


def test_two_pass_inverse_cdf_never_draws_a_zero_probability_token():
    """Three tokens of equal probability in 3000 (-inf elsewhere, one row with two): the draw at u = 0 is the
    first, u just below 1 the last, u = 0.5 the middle one; chunk borders (1024, 2048) fall between them."""
    logits = torch.full((4, 3000), float("-inf"))
    logits[:, [5, 1500, 2999]] = 0.0
    logits[3, 2999] = float("-inf")
    u = torch.tensor([0.0, 1 - 2 ** -53, 0.5, 1 - 2 ** -53], dtype=torch.float64)
    got = FD.two_pass_inverse_cdf(logits, 1.0, u, None)
    assert got.tolist() == [5, 2999, 1500, 1500]
    assert torch.equal(got, M.sample_token(logits, 1.0, 1.0, u))


# --- fused weight storage ------------------------------------------------------------------------------------------


def test_load_model_stores_each_projection_group_as_one_tensor(folder):
    model = M.load_model(folder)
    for block in model.model.layers:
        att, mlp = block.self_attn, block.mlp
        proj = FD.fuse([att.q_proj, att.k_proj, att.v_proj])
        assert proj.weight.data_ptr() == att.q_proj.weight.data_ptr()  # a view: no copy
        assert torch.equal(proj.weight, torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]))
        assert torch.equal(proj.bias, torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]))
        assert FD.fuse([mlp.gate_proj, mlp.up_proj]).weight.data_ptr() == mlp.gate_proj.weight.data_ptr()
    # Names, shapes and values are the checkpoint's.
    from safetensors.torch import load_file
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state |= load_file(f)
    ours = model.state_dict()
    assert set(ours) == set(state)
    assert all(torch.equal(ours[k], v) for k, v in state.items())


def test_separate_storage_is_concatenated_and_draws_the_same(folder, tmp_path):
    """A model whose weights are not laid out by load_model (here: saved and reloaded into a plain Qwen2) is
    fused by copy, once per call, with the same tokens; saving a fused model writes the checkpoint it read."""
    model = M.load_model(folder)
    M.save_model(model, tmp_path)
    other = M.Qwen2(model.config)
    other.load_state_dict(M.load_state_dict(tmp_path))
    att = other.model.layers[0].self_attn
    assert FD.adjacent_rows([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]) is None
    kwargs = dict(max_new_tokens=20, seed=1, num_samples=2, temperature=1.0)
    fast = FD.FastDecode()
    assert M.generate(other, [[1, 2, 3], [4]], decode=fast, **kwargs) == M.generate(model, [[1, 2, 3], [4]], **kwargs)


def test_lora_scale_that_is_not_a_power_of_two(folder):
    """alpha / r = 1.5 folded into B also rounds the product B * scale: tokens as the plain loop, the step within
    the bound of a reordered sum."""
    model = with_lora(M.load_model(folder), r=4, alpha=6)
    assert_same_step(model, *one_step_both_ways(model, 5), exact=False)
    prompts, kwargs = [[1, 2], [3, 4, 5]], dict(max_new_tokens=30, seed=8, num_samples=2, temperature=1.0)
    assert_same_draws(model, prompts, kwargs, M.generate(model, prompts, **kwargs),
                      M.generate(model, prompts, decode=FD.FastDecode(), **kwargs))


def test_disabled_and_merged_adapters(folder):
    """lora_disabled (the KL reference) and merge_lora: the fast step adds no delta where the plain one adds none."""
    model = with_lora(M.load_model(folder))
    prompts, kwargs = [[1, 2, 3], [7, 8]], dict(max_new_tokens=24, seed=6, temperature=1.0)
    fast = FD.FastDecode()  # one object throughout: each change of the adapters rebuilds it
    assert_same_draws(model, prompts, kwargs, M.generate(model, prompts, **kwargs),
                      M.generate(model, prompts, decode=fast, **kwargs))
    with L.lora_disabled(model):  # no delta anywhere: the same step, bit for bit
        assert M.generate(model, prompts, decode=fast, **kwargs) == M.generate(model, prompts, **kwargs)
    L.merge_lora(model)
    assert M.generate(model, prompts, decode=fast, **kwargs) == M.generate(model, prompts, **kwargs)


def test_greedy_log_probs_and_dropout_are_clear_errors(folder):
    model = with_lora(M.load_model(folder))
    with pytest.raises(ValueError, match="return_logprobs needs temperature > 0"):
        M.generate(model, [[1]], 4, temperature=0, return_logprobs=True)
    dropout = M.load_model(folder)
    L.apply_lora(dropout, r=4, alpha=8, dropout=0.1)
    dropout.train()
    with pytest.raises(ValueError, match="LoRA dropout is active"):
        M.generate(dropout, [[1]], 4, decode=FD.FastDecode())


# --- the merged-weights sampler (lora.merged_copy) ----------------------------------------------------------------


def test_merged_copy_is_separate_and_leaves_the_model_untouched(folder):
    model = with_lora(M.load_model(folder, dtype=torch.bfloat16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = L.merged_copy(model)
    ids = torch.randint(0, TINY["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = M.generate(copy, ids.tolist(), 8, temperature=1.0, seed=0)
        merged_logits, model_logits = copy(ids).float(), model(ids).float()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the master, bit for bit
    assert not any(m.merged for m in L.lora_layers(model).values()) and not L.lora_layers(copy)
    q = model.model.layers[0].self_attn.q_proj
    copy_q = copy.model.layers[0].self_attn.q_proj
    assert copy_q.weight.dtype == torch.bfloat16 and copy_q.weight.data_ptr() != q.weight.data_ptr()
    assert torch.equal(copy_q.weight, (q.weight.float() + q.delta_weight()).to(torch.bfloat16))
    assert copy.model.embed_tokens.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # shared
    assert len(out) == 2
    # The same function up to bfloat16 rounding of the merge and of the two computations.
    assert (merged_logits - model_logits).abs().max() < 0.1 * model_logits.abs().max()


# --- bench/count_kernels.py's rule -------------------------------------------------------------------------------


def test_the_kernel_counter_counts_each_computing_op_once():
    """linear (addmm under it), softmax (_softmax), an add: 3 kernels; a view, a no-op cast, a reshape: none."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from count_kernels import kernels_of
    x, w, b = torch.randn(4, 8), torch.randn(16, 8), torch.randn(16)

    def ops():
        y = torch.nn.functional.linear(x, w, b).float().view(4, 2, 8).reshape(8, 8)
        return torch.softmax(y, -1) + 1

    assert kernels_of(ops, torch.device("cpu")) == (3, [])
    assert kernels_of(lambda: x.view(2, 16).float().T, torch.device("cpu")) == (0, [])


# --- one FastDecode for a whole run: weights refilled, cache, buffers and steps (CUDA graphs) kept -----------------


def test_one_fast_decode_serves_a_run_and_draws_what_the_plain_loop_draws(folder, monkeypatch):
    """The fixed-shape loop (CUDA's) over one FastDecode, called as a training run calls it: the adapter changes in
    place between calls (an optimizer step), prompts get longer (the cache grows once, rounded up to the bucket),
    the batch size changes (a diagnostic or held-out rollout) and comes back, settings change. Every call draws the
    plain loop's tokens for the weights of that moment, and its log-probs are bit for bit those of a fresh
    FastDecode: nothing stale is kept. Calls of the same batch size that fit reuse the cache and every step built
    before (on CUDA: the captured graphs) instead of building them again."""
    monkeypatch.setattr(FD, "ATTENTION_BUCKET", 16)
    model = with_lora(M.load_model(folder), seed=1)
    lora_b = [m.lora_B.weight for m in L.lora_layers(model).values()]
    kept = FD.FastDecode(fixed_shapes=True)
    short, long = [[1, 2, 3], [4, 5, 6, 7]], [list(range(1, 26)), [5]]  # 4 + 30 -> 48 columns, 25 + 30 -> 64
    calls = [(short, 3, dict(temperature=1.0)), (short, 3, dict(temperature=1.0)),
             (long, 3, dict(temperature=1.0, vocab_size=90)), (short, 5, dict(temperature=0.7, top_p=0.8)),
             (short, 3, dict(temperature=0)), (short, 3, dict(temperature=1.0))]
    history = []
    for i, (prompts, samples, settings) in enumerate(calls):
        with torch.no_grad():
            for b in lora_b:  # an optimizer step, in place
                b.add_(0.05 * torch.randn(b.shape, generator=torch.Generator().manual_seed(i)))
        kwargs = dict(max_new_tokens=30, seed=i, num_samples=samples, eos_token_id=[3]) | settings
        got = M.generate(model, prompts, decode=kept, **kwargs)
        fresh = M.generate(model, prompts, decode=FD.FastDecode(fixed_shapes=True), **kwargs)
        assert got == fresh, f"call {i}"  # nothing stale: a fresh decoder's draw, bit for bit
        assert_same_draws(model, prompts, kwargs, M.generate(model, prompts, **kwargs), got)
        if settings.get("top_p", 1.0) == 1.0 and settings["temperature"] > 0:
            _, kept_lp = M.generate(model, prompts, decode=kept, return_logprobs=True, **kwargs)
            _, fresh_lp = M.generate(model, prompts, decode=FD.FastDecode(fixed_shapes=True),
                                     return_logprobs=True, **kwargs)
            assert kept_lp == fresh_lp, f"call {i}"
        history.append((kept.buffers, kept.buffers.cache.kv[0].data_ptr(), dict(kept.buffers.steps)))
    # Calls 0 and 1: the same buffers, cache and step objects; call 1 built nothing.
    assert history[1][0] is history[0][0] and history[1][1] == history[0][1]
    assert all(history[1][2][key] is step for key, step in history[0][2].items())
    assert history[1][0].shape[1] == 48 and history[2][0].shape[1] == 64  # longer prompts: grown
    # 5 rows per prompt: new buffers; back to 3: new again (one batch size is kept), then reused.
    assert history[3][0] is not history[2][0] and history[4][0] is not history[3][0]
    assert history[5][0] is history[4][0] and all(history[5][2][k] is v for k, v in history[4][2].items())


def test_a_new_model_or_a_replaced_weight_rebuilds_the_fast_decoder(folder):
    """Another model through the same FastDecode, or a weight of this one replaced (not updated in place): the
    fused weights are built anew, so the tokens are the new weights' own."""
    kept = FD.FastDecode(fixed_shapes=True)
    a, b = M.load_model(folder), with_lora(M.load_model(folder), seed=3)
    kwargs = dict(max_new_tokens=20, seed=1, num_samples=2, temperature=1.0)
    for model in (a, b, a):
        assert_same_draws(model, [[1, 2, 3]], kwargs, M.generate(model, [[1, 2, 3]], **kwargs),
                          M.generate(model, [[1, 2, 3]], decode=kept, **kwargs))
    decoder = kept.decoder
    down = a.model.layers[0].mlp.down_proj
    down.weight = torch.nn.Parameter(down.weight.detach() * 1.5)
    assert M.generate(a, [[1, 2, 3]], decode=kept, **kwargs) == M.generate(a, [[1, 2, 3]], **kwargs)
    assert kept.decoder is not decoder


# --- compilation: falls back when asked to, and says so ---------------------------------------------------------


@pytest.mark.parametrize("fixed_shapes", [False, True], ids=["shrinking-batch", "fixed-shapes"])
def test_a_failed_compilation_falls_back_to_the_eager_step_with_one_loud_line(models, failing_compiler, capsys,
                                                                               fixed_shapes):
    model = models["LoRA on all 7"]
    prompts, kwargs = [[1, 2, 3], [4, 5]], dict(max_new_tokens=24, seed=3, num_samples=2, temperature=1.0)
    decode = FD.FastDecode(fixed_shapes=fixed_shapes, compile=True, fall_back=True)
    assert M.generate(model, prompts, decode=decode, **kwargs) == M.generate(model, prompts, **kwargs)
    assert not decode.compile and "RuntimeError: made to fail" in decode.compile_error
    warning = [line for line in capsys.readouterr().err.splitlines() if "torch.compile failed" in line]
    assert len(warning) == 1 and warning[0].startswith("WARNING") and "made to fail" in warning[0]
    M.generate(model, prompts, decode=decode, **kwargs)  # eager from now on: no second warning
    assert "torch.compile" not in capsys.readouterr().err


def test_without_fall_back_a_failed_compilation_is_raised(models, failing_compiler):
    decode = FD.FastDecode(fixed_shapes=True, compile=True)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed, match="made to fail"):
        M.generate(models["no LoRA"], [[1, 2]], 8, seed=0, decode=decode)


def test_compile_error_says_in_one_line_whether_torch_compile_works_here(failing_compiler):
    torch.manual_seed(11)
    error = FD.compile_error(torch.device("cpu"), torch.float32)
    assert error is not None and "\n" not in error
    assert error.startswith("BackendCompilerFailed") and "RuntimeError: made to fail" in error
    # its own model is seeded apart: the caller's random stream goes on where it was
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(3))


def test_compile_error_is_none_where_inductor_works():
    """This machine has a C++ compiler, so inductor builds the fused step's pieces (bfloat16, as on a GPU)."""
    assert FD.compile_error(torch.device("cpu"), torch.bfloat16) is None
