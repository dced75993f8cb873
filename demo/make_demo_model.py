"""
Build the demo model: a tiny Qwen2 (0.8M parameters) pretrained on synthetic arithmetic word problems whose
worked solutions slip (each step result wrong with probability SLIP, carried forward). It "knows but slips":
greedy decoding is mostly right, sampling at temperature 1 often is not, which puts GRPO in the paper's regime
on a laptop CPU. The committed demo/model (defaults below, seed 0) measures on the 1,000 held-out problems
(python eval.py --model demo/model --data demo --max-new-tokens 64): greedy 98.6% easy / 96.6% hard, sampled
46.4% easy / 19.4% hard.

    python demo/make_demo_model.py            # writes demo/model/ (config, safetensors, tokenizer): ~50 min on 2 cores

The tokenizer is word-level (tokenizers' WordLevel over the generator's words, single digits, punctuation); spaces
attach to the following word as "▁", so decoding restores the exact text.
"""
import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import data  # noqa: E402
import model as M  # noqa: E402

EOS = "<|endoftext|>"
SPACE = "\u2581"  # spaces become this symbol and stick to the word after them
PRETOKENIZE = rf"{SPACE}?[A-Za-z]+|{SPACE}?[^\sA-Za-z\d{SPACE}]+|\d|\n|{SPACE}"


# -----------------------------------------------------------------------------
# Tokenizer: one token per word (with its leading space), digit, punctuation mark


def build_tokenizer(texts):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    pre = pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated")
    norm = normalizers.Replace(" ", SPACE)
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))})
    vocab = {EOS: 0, "[UNK]": 1} | {w: i + 2 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])
    return tok


# -----------------------------------------------------------------------------
# Pretraining: next-token loss on the worked solution only (the prompt is context), cosine LR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "model"))
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--slip", type=float, default=0.45)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    # Vocabulary: every pre-token the generator and the template can produce.
    sample = data.synthetic_problems(4000, seed=12345)
    texts = [data.format_prompt(p, "plain") + " " + p.solution for p in sample]
    tok = build_tokenizer(texts + [" ".join(str(i) for i in range(10))])
    V = tok.get_vocab_size()
    print(f"vocab {V}")
    config = M.Qwen2Config(vocab_size=V, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                           num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
    net = M.Qwen2(config)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name:
                continue
            if p.dim() == 1:
                p.zero_()
            else:
                p.normal_(0, 0.02)
    print(f"params {sum(p.numel() for p in net.parameters()):,}")
    eos = tok.token_to_id(EOS)

    def batch(n):
        seqs, starts = [], []
        for _ in range(n):
            tier = "easy" if rng.random() < 0.5 else "hard"
            p = data.synthetic_problem(rng, tier, slip=args.slip)
            prompt = tok.encode(data.format_prompt(p, "plain"), add_special_tokens=False).ids
            sol = tok.encode(" " + p.solution, add_special_tokens=False).ids + [eos]
            seqs.append(prompt + sol)
            starts.append(len(prompt))
        T = max(map(len, seqs))
        ids = torch.zeros(n, T, dtype=torch.long)
        mask = torch.zeros(n, T - 1)
        for i, (s, st) in enumerate(zip(seqs, starts)):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, st - 1:len(s) - 1] = 1
        return ids, mask

    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    t0 = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, mask = batch(args.batch)
        logits = net(ids[:, :-1])
        loss = (F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none") * mask.flatten()).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    M.save_model(net, out)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS, "pad_token": EOS, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2) + "\n")
    print("saved", out)


if __name__ == "__main__":
    main()
