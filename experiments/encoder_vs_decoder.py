""""An encoder is better at understanding, a decoder at generating", tested with small runs.

The claim (BERT vs GPT folklore): a bidirectional encoder pretrained with masked language
modelling gives better representations for classification, a causal decoder trained on next-token
prediction generates better text. Here both are trained from scratch, same size, same data:

- Same architecture: the same parts (`superpose.transformer.parts`), pre-LN, learned positions,
  untied unembedding, the same d_model / n_layers / n_heads / d_mlp / n_ctx; the encoder has no
  MLM transform (mlm_head="linear") and no embedding LayerNorm, so the two differ only in the
  attention mask, four special-token rows (4 x d_model in W_E and W_U) and BERT's pooler (never
  trained by MLM). Both parameter counts are reported.
- Same data and budget: the char-level stdlib corpus (`gpt.load_corpus("stdlib")`, one
  CharTokenizer; the encoder's `SpecialTokenizer` keeps every character id), the same number of
  steps, batch size and positions per sequence (the GPT reads n_ctx characters; the encoder
  [CLS] + n_ctx - 2 characters + [SEP]), the same AdamW settings and schedule. What differs is
  the objective: the GPT is scored at every position, MLM at 15% of them (BERT's recipe); the
  tokens seen and tokens scored are reported.

Understanding (frozen features, a linear probe: sklearn's standardised logistic regression, the
same for every feature set):
  (U1) which of K stdlib modules a window of characters comes from (probe trained on windows
       from the first 80% of each module's text, tested on the last 20%). Features: encoder
       [CLS] residual, BERT's pooled [CLS] (tanh(W x_cls), W untrained), mean of the final
       residual; GPT mean of the final residual and its last position. The verdict takes each
       model's best feature set, so no model is handicapped by a pooling choice.
  (U2) identifier-level, needs both sides: for each identifier (3+ characters, not a keyword or
       builtin) in a held-out window, does the same identifier occur anywhere else in the
       window? Features at the identifier's first character, its last character and the mean
       over its characters (best taken). Classes balanced (chance 0.5). An identity-only
       baseline (the majority label of that identifier string in the probe's training set)
       says how much is solvable without context. A left-only control label ("occurs earlier
       in the window", which a decoder can see) is reported but not counted in the verdict.
  (U3) fill-in-the-middle: the middle character of a held-out window; the encoder sees
       [MASK] with both sides (its MLM head), the decoder its left side only (its next-char
       head). Accuracy and loss.
Generating:
  (G1) next-character loss and accuracy with the same left context (n_ctx - 3 characters): the
       GPT natively, the encoder by placing [MASK] at the end ([CLS] context [MASK] [SEP]).
  (G2) sampled continuations (greedy and temperature 0.8) by the same loop, the encoder by
       iterative [MASK]-append decoding; scored by the fraction of generated identifiers that
       exist in the training text.
Every number is also given for the untrained models (same init) as a baseline.

Verdicts: a task favours a model when the seed-mean difference exceeds ACC_MARGIN (accuracy) or
LOSS_MARGIN (nats) and that model wins in every seed. Understanding is "supported" when the
encoder wins U1, U2 and U3, "partly" when it wins some; generating is supported when the GPT's
G1 loss is lower. Quick mode (one small seed) is a smoke test; read the full run.

Full mode also trains one more encoder (first seed) for 4x the steps, against the same GPT,
reported beside the verdict (not in it): is the encoder's deficit MLM's fewer scored positions?

What the full run found (2 layers, d_model 64, 4 heads, n_ctx 64, 1000 steps of 32 sequences =
2,048,000 positions per model; seeds 0, 1, 2; 848 s on 2 shared CPU cores). Parameters: GPT
117,608; encoder 122,284 = the same 117,608 + pooler 4,160 + four special rows 516. Positions
scored: GPT 2,048,000, encoder 288,000 (15%). Unigram loss 3.148, uniform 4.644 nats.
  Overall: partly supported -- generating yes, understanding contradicted at equal budget.
  (G1) GPT next-char loss 1.602 / 1.625 / 1.610 (accuracy 0.581 / 0.573 / 0.582); encoder
       with [MASK] at the end 2.804 / 2.727 / 2.813 (0.318 / 0.327 / 0.300): GPT, by 1.1-1.2
       nats. (G2) generated identifiers that exist in the corpus: GPT 0.51 / 0.46 / 0.56,
       encoder 0.03 / 0.09 / 0.08; the encoder's samples are mostly "ene"/"___" babble.
  (U1) 8 modules (chance 0.125), best features: encoder 0.322 / 0.323 / 0.272 (mean residual;
       [CLS] 0.21-0.24, pooled 0.20-0.22), GPT 0.394 / 0.412 / 0.405 (mean residual; last
       position 0.20-0.21). But the untrained models' features do better (encoder mean 0.447,
       GPT 0.403): at this size the probe reads character statistics, not learned knowledge.
  (U2) repeated identifier (chance 0.5, identity-only 0.539): encoder 0.661 / 0.608 / 0.564,
       GPT 0.668 / 0.688 / 0.665 (its last character), untrained 0.586 / 0.612. Left-only
       control: encoder 0.749 / 0.708 / 0.732, GPT 0.782 / 0.754 / 0.742.
  (U3) fill-in-the-middle: the encoder, seeing both sides, 0.345 / 0.364 / 0.362 (loss
       2.47 / 2.33 / 2.47) against the GPT's left side only 0.582 / 0.576 / 0.572 (1.65).
  4x-steps encoder (seed 0; 1,152,000 scored positions, still fewer than the GPT's): U1 0.420
  vs GPT 0.394 and U3 0.635 (loss 1.34) vs 0.582 -- now the encoder's; U2 0.619 vs 0.668 still
  the GPT's; G1 2.249 vs 1.602 still the GPT's. So at equal steps MLM's 15% scoring leaves the
  encoder behind everywhere; given 4x the compute it overtakes on the window and fill-in tasks.

    python experiments/encoder_vs_decoder.py [--quick] [--out DIR] [--seed N]
"""

from __future__ import annotations

import builtins
import keyword
import logging
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from superpose import gpt, runs, transformer
from superpose.transformer.data import SpecialTokenizer

log = logging.getLogger(__name__)

ACC_MARGIN = 0.02     # accuracy difference below this (seed mean) is "no clear difference"
LOSS_MARGIN = 0.05    # nats/char, likewise
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FILE_HEADER = re.compile(r"^# file: (.+)\n", re.M)
COMMON = set(keyword.kwlist) | set(dir(builtins)) | {"self", "cls"}
DATA_SEED = 12345     # the probe data sets are the same for every model seed


def configs(quick: bool, seed: int) -> dict[str, Any]:
    if quick:
        model = dict(n_layers=2, d_model=32, n_heads=4, n_ctx=48)
        train = dict(steps=300, batch_size=16, lr=3e-3, warmup_steps=15)
        data = dict(max_chars=300_000, n_modules=4, per_module_train=100, per_module_test=40,
                    ident_windows=1500, fim_windows=500, gen_windows=500, n_samples=4,
                    n_new=60)
        n_seeds = 1
    else:
        model = dict(n_layers=2, d_model=64, n_heads=4, n_ctx=64)
        train = dict(steps=1000, batch_size=32, lr=3e-3, warmup_steps=50)
        data = dict(max_chars=None, n_modules=8, per_module_train=250, per_module_test=80,
                    ident_windows=4000, fim_windows=2000, gen_windows=2000, n_samples=8,
                    n_new=120)
        n_seeds = 3
    return {"quick": quick, "seed": seed, "n_seeds": n_seeds, "model": model,
            "train": {**train, "weight_decay": 0.01, "betas": (0.9, 0.98), "schedule": "cosine",
                      "min_lr_ratio": 0.1, "grad_clip": 1.0},
            "mask_prob": 0.15, "data": data, "temperature": 0.8,
            # full mode: one more encoder (first seed) trained this many times longer, against
            # the same GPT: does the encoder's deficit come from MLM's fewer scored positions?
            "long_encoder_factor": None if quick else 4}


# ---------------------------------------------------------------- models and training


def build(cfg: dict[str, Any], tok: gpt.CharTokenizer, stok: SpecialTokenizer, seed: int
          ) -> tuple[gpt.GPT, transformer.Encoder]:
    m = cfg["model"]
    dec = gpt.GPT(gpt.GPTConfig(d_vocab=tok.vocab_size, norm="pre", positional="learned",
                                seed=seed, **m), device="cpu")
    enc = transformer.Encoder(transformer.EncoderConfig(
        d_vocab=stok.vocab_size, norm="pre", positional="learned", embed_ln=False,
        mlm_head="linear", seed=seed, **m), device="cpu")
    return dec, enc


def param_counts(dec: gpt.GPT, enc: transformer.Encoder) -> dict[str, int]:
    def n(mod: torch.nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters())
    d = enc.cfg.d_model
    return {"gpt": n(dec), "encoder": n(enc), "encoder_pooler": n(enc.pooler),
            "encoder_special_rows": 4 * d + 4 * d + 4,
            "encoder_without_pooler_and_specials": n(enc) - n(enc.pooler) - 8 * d - 4}


def train_config(cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    t = cfg["train"]
    return dict(steps=steps, batch_size=t["batch_size"], lr=t["lr"],
                warmup_steps=t["warmup_steps"], schedule=t["schedule"],
                min_lr_ratio=t["min_lr_ratio"], weight_decay=t["weight_decay"],
                betas=t["betas"], grad_clip=t["grad_clip"])


def train_encoder(cfg: dict[str, Any], enc: transformer.Encoder, train_ids: Tensor,
                  stok: SpecialTokenizer, seed: int, steps: int, progress: bool
                  ) -> dict[str, Any]:
    L = cfg["model"]["n_ctx"]
    t0 = time.perf_counter()
    res = transformer.train_mlm(enc, train_ids, stok, transformer.TrainConfig(
        **train_config(cfg, steps), log_every=10, seed=seed), seq_len=L,
        mask_prob=cfg["mask_prob"], progress=progress)
    enc.eval()
    n_seq = steps * cfg["train"]["batch_size"]
    return {"final_train_loss": res.history.loss[-1], "seconds": time.perf_counter() - t0,
            "steps": steps, "positions_seen": n_seq * L, "chars_seen": n_seq * (L - 2),
            "positions_scored": n_seq * round(cfg["mask_prob"] * (L - 2))}


def train_both(cfg: dict[str, Any], dec: gpt.GPT, enc: transformer.Encoder,
               train_ids: Tensor, stok: SpecialTokenizer, seed: int, progress: bool
               ) -> dict[str, Any]:
    steps = cfg["train"]["steps"]
    L = cfg["model"]["n_ctx"]
    t0 = time.perf_counter()
    rd = gpt.train(dec, gpt.TokenDataset(train_ids, L), **train_config(cfg, steps),
                   val_every=0, log_every=10, seed=seed, device="cpu", progress=progress)
    dec.eval()
    n_seq = steps * cfg["train"]["batch_size"]
    return {"gpt": {"final_train_loss": rd.history.loss[-1],
                    "seconds": time.perf_counter() - t0, "steps": steps,
                    "positions_seen": n_seq * L, "chars_seen": n_seq * L,
                    "positions_scored": n_seq * L},
            "encoder": train_encoder(cfg, enc, train_ids, stok, seed, steps, progress)}


# ---------------------------------------------------------------- features


def gpt_resid(dec: gpt.GPT, ids: Tensor) -> Tensor:
    """Final residual stream after ln_final [batch pos d_model] of character windows."""
    with torch.no_grad():
        x = dec(ids, stop_at_layer=dec.cfg.n_layers)
        return dec.ln_final(x)


def enc_input(stok: SpecialTokenizer, ids: Tensor) -> Tensor:
    b = ids.shape[0]
    return torch.cat([torch.full((b, 1), stok.cls_id), ids, torch.full((b, 1), stok.sep_id)], 1)


def enc_resid(enc: transformer.Encoder, stok: SpecialTokenizer, ids: Tensor) -> Tensor:
    """Final residual [batch 1+pos+1 d_model] of [CLS] window [SEP]."""
    with torch.no_grad():
        return enc.encoder_output(enc_input(stok, ids))


def chunked(fn: Callable[[Tensor], Tensor], ids: Tensor, size: int = 256) -> Tensor:
    return torch.cat([fn(ids[i:i + size]) for i in range(0, len(ids), size)])


def window_features(dec: gpt.GPT, enc: transformer.Encoder, stok: SpecialTokenizer,
                    ids: Tensor) -> dict[str, Tensor]:
    g = chunked(lambda x: gpt_resid(dec, x), ids)
    e = chunked(lambda x: enc_resid(enc, stok, x), ids)
    with torch.no_grad():
        pooled = enc.pooler(e[:, 0])
    return {"encoder [CLS] residual": e[:, 0], "encoder pooled [CLS]": pooled,
            "encoder mean residual": e[:, 1:-1].mean(1),
            "gpt mean residual": g.mean(1), "gpt last position": g[:, -1]}


def probe(x_train: Tensor, y_train: list[int], x_test: Tensor, y_test: list[int]) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    clf.fit(x_train.double().numpy(), y_train)
    return float(clf.score(x_test.double().numpy(), y_test))


# ---------------------------------------------------------------- (U1) module of a window


def module_texts(text: str) -> dict[str, str]:
    parts = FILE_HEADER.split(text)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def module_dataset(train_text: str, tok: gpt.CharTokenizer, window: int, d: dict[str, Any]
                   ) -> dict[str, Any]:
    mods = module_texts(train_text)
    need = 5 * window
    big = sorted((m for m, body in mods.items() if len(body) * 0.2 > need),
                 key=lambda m: -len(mods[m]))[:d["n_modules"]]
    big.sort()
    g = torch.Generator().manual_seed(DATA_SEED)
    out: dict[str, Any] = {"modules": big, "train": ([], []), "test": ([], [])}
    for k, m in enumerate(big):
        ids = tok.encode(mods[m])
        cut = int(0.8 * len(ids))
        for split, lo, hi, n in (("train", 0, cut, d["per_module_train"]),
                                 ("test", cut, len(ids), d["per_module_test"])):
            starts = torch.randint(lo, hi - window, (n,), generator=g)
            out[split][0].extend(ids[s:s + window] for s in starts.tolist())
            out[split][1].extend([k] * n)
    for split in ("train", "test"):
        out[split] = (torch.stack(out[split][0]), out[split][1])
    return out


def module_claim(dec: gpt.GPT, enc: transformer.Encoder, stok: SpecialTokenizer,
                 ds: dict[str, Any]) -> dict[str, float]:
    ftr = window_features(dec, enc, stok, ds["train"][0])
    fte = window_features(dec, enc, stok, ds["test"][0])
    return {k: probe(ftr[k], ds["train"][1], fte[k], ds["test"][1]) for k in ftr}


# ---------------------------------------------------------------- (U2) repeated identifier


def identifier_examples(text: str) -> list[dict[str, Any]]:
    """Identifiers of a window (3+ chars, not a keyword/builtin, not cut by the window's edge)
    with labels: occurs elsewhere in the window (both sides), occurs earlier (left only)."""
    spans = [(m.start(), m.end(), m.group()) for m in IDENT.finditer(text)
             if m.start() > 0 and m.end() < len(text)]
    names = [s[2] for s in spans]
    count = Counter(names)
    out, seen = [], set()
    for a, b, name in spans:
        if len(name) >= 3 and name not in COMMON and not name[0].isdigit():
            out.append({"start": a, "end": b, "name": name, "elsewhere": int(count[name] > 1),
                        "earlier": int(name in seen)})
        seen.add(name)
    return out


def ident_dataset(val_text: str, tok: gpt.CharTokenizer, window: int, n_windows: int
                  ) -> dict[str, Any]:
    ids = tok.encode(val_text)
    g = torch.Generator().manual_seed(DATA_SEED + 1)
    cut = int(0.7 * len(ids))
    ds: dict[str, Any] = {}
    for split, lo, hi, n in (("train", 0, cut, int(0.7 * n_windows)),
                             ("test", cut, len(ids), n_windows - int(0.7 * n_windows))):
        starts = torch.randint(lo, hi - window, (n,), generator=g)
        wins = torch.stack([ids[s:s + window] for s in starts.tolist()])
        ex = []
        for w, row in enumerate(wins):
            ex.extend({**e, "window": w} for e in identifier_examples(tok.decode(row)))
        ds[split] = (wins, ex)
    return ds


def balanced(ex: list[dict[str, Any]], label: str, seed: int) -> list[dict[str, Any]]:
    pos = [e for e in ex if e[label]]
    neg = [e for e in ex if not e[label]]
    n = min(len(pos), len(neg))
    g = torch.Generator().manual_seed(seed)

    def pick(xs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [xs[i] for i in torch.randperm(len(xs), generator=g)[:n].tolist()]
    return pick(pos) + pick(neg)


def ident_features(resid: Tensor, ex: list[dict[str, Any]], offset: int) -> dict[str, Tensor]:
    w = torch.tensor([e["window"] for e in ex])
    a = torch.tensor([e["start"] for e in ex]) + offset
    b = torch.tensor([e["end"] for e in ex]) + offset
    pos = torch.arange(resid.shape[1])
    inside = ((pos[None] >= a[:, None]) & (pos[None] < b[:, None])).float()   # [ex pos]
    mean = torch.einsum("ep,epd->ed", inside, resid[w]) / inside.sum(1, keepdim=True)
    return {"first char": resid[w, a], "last char": resid[w, b - 1], "mean over chars": mean}


def ident_claim(dec: gpt.GPT, enc: transformer.Encoder, stok: SpecialTokenizer,
                ds: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    resid = {split: {"gpt": chunked(lambda x: gpt_resid(dec, x), ds[split][0]),
                     "encoder": chunked(lambda x: enc_resid(enc, stok, x), ds[split][0])}
             for split in ("train", "test")}
    for label in ("elsewhere", "earlier"):
        tr = balanced(ds["train"][1], label, DATA_SEED)
        te = balanced(ds["test"][1], label, DATA_SEED + 1)
        res: dict[str, Any] = {"n_train": len(tr), "n_test": len(te)}
        for model, offset in (("encoder", 1), ("gpt", 0)):
            ftr = ident_features(resid["train"][model], tr, offset)
            fte = ident_features(resid["test"][model], te, offset)
            for k in ftr:
                res[f"{model} {k}"] = probe(ftr[k], [e[label] for e in tr], fte[k],
                                            [e[label] for e in te])
        out[label] = res
    return out


def identity_baseline(ds: dict[str, Any], label: str) -> float:
    """Accuracy of guessing from the identifier string alone (its majority label in the probe's
    training set; 1 for unseen strings, ties 1): what needs no context at all."""
    tr = balanced(ds["train"][1], label, DATA_SEED)
    te = balanced(ds["test"][1], label, DATA_SEED + 1)
    votes: dict[str, list[int]] = {}
    for e in tr:
        votes.setdefault(e["name"], []).append(e[label])
    guess = {n: int(sum(v) * 2 >= len(v)) for n, v in votes.items()}
    return statistics.fmean(int(guess.get(e["name"], 1) == e[label]) for e in te)


# ---------------------------------------------------------------- (U3) fill in the middle, (G1)


def windows(text_ids: Tensor, n: int, length: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(text_ids) - length, (n,), generator=g)
    return torch.stack([text_ids[s:s + length] for s in starts.tolist()])


def score(logits: Tensor, target: Tensor) -> dict[str, float]:
    logits = logits.float()
    return {"loss": float(F.cross_entropy(logits, target)),
            "accuracy": float((logits.argmax(-1) == target).float().mean())}


def fill_middle(dec: gpt.GPT, enc: transformer.Encoder, stok: SpecialTokenizer, wins: Tensor
                ) -> dict[str, dict[str, float]]:
    """The middle character of each window: the encoder with [MASK] there and both sides, the
    GPT from its left side (the encoder's logits over the characters only, as the GPT's)."""
    mid = wins.shape[1] // 2
    target = wins[:, mid]
    x = wins.clone()
    x[:, mid] = stok.mask_id
    with torch.no_grad():
        e = chunked(lambda t: enc(enc_input(stok, t))[:, 1 + mid, :stok.base.vocab_size], x)
        g = chunked(lambda t: dec(t)[:, -1], wins[:, :mid])
    return {"encoder (both sides)": score(e, target), "gpt (left side)": score(g, target)}


def next_logits_gpt(dec: gpt.GPT, ctx: Tensor) -> Tensor:
    with torch.no_grad():
        return dec(ctx)[:, -1]


def next_logits_enc(enc: transformer.Encoder, stok: SpecialTokenizer, ctx: Tensor) -> Tensor:
    """[CLS] context [MASK] [SEP]: the MLM prediction at the mask, over characters only."""
    b = ctx.shape[0]
    x = enc_input(stok, torch.cat([ctx, torch.full((b, 1), stok.mask_id)], 1))
    with torch.no_grad():
        return enc(x)[:, -2, :stok.base.vocab_size]


def next_char(dec: gpt.GPT, enc: transformer.Encoder, stok: SpecialTokenizer, wins: Tensor
              ) -> dict[str, dict[str, float]]:
    ctx, target = wins[:, :-1], wins[:, -1]
    return {"gpt": score(chunked(lambda t: next_logits_gpt(dec, t), ctx), target),
            "encoder ([MASK] at the end)":
                score(chunked(lambda t: next_logits_enc(enc, stok, t), ctx), target)}


# ---------------------------------------------------------------- (G2) samples


def sample(next_logits: Callable[[Tensor], Tensor], prompt: Tensor, n_new: int, ctx_len: int,
           temperature: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = prompt
    for _ in range(n_new):
        logits = next_logits(x[:, -ctx_len:]).float()
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial((logits / temperature).softmax(-1), 1, generator=g)
        x = torch.cat([x, nxt], 1)
    return x[:, prompt.shape[1]:]


def real_identifier_fraction(texts: list[str], known: set[str]) -> float:
    found = [m.group() for t in texts for m in IDENT.finditer(t)
             if m.end() < len(t) and len(m.group()) >= 2 and not m.group()[0].isdigit()]
    return statistics.fmean(n in known for n in found) if found else 0.0


def samples(dec: gpt.GPT, enc: transformer.Encoder, stok: SpecialTokenizer, val_text: str,
            known: set[str], cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    d = cfg["data"]
    ctx_len = cfg["model"]["n_ctx"] - 3
    tok = stok.base
    starts = [m.start() for m in re.finditer(r"\n    def ", val_text)][:d["n_samples"]]
    prompts = torch.stack([tok.encode(val_text[s + 1:s + 1 + ctx_len]) for s in starts])
    out: dict[str, Any] = {"prompt": tok.decode(prompts[0])}
    for name, fn in (("gpt", lambda t: next_logits_gpt(dec, t)),
                     ("encoder", lambda t: next_logits_enc(enc, stok, t))):
        greedy = sample(fn, prompts[:1], d["n_new"], ctx_len, 0.0, seed)
        hot = sample(fn, prompts, d["n_new"], ctx_len, cfg["temperature"], seed)
        texts = [tok.decode(r) for r in hot]
        out[name] = {"greedy": tok.decode(greedy[0]), f"t={cfg['temperature']}": texts[0],
                     "real_identifier_fraction": real_identifier_fraction(texts, known)}
    return out


# ---------------------------------------------------------------- one seed


def evaluate(dec: gpt.GPT, enc: transformer.Encoder, stok: SpecialTokenizer,
             data: dict[str, Any], cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"U1 module": module_claim(dec, enc, stok, data["modules"]),
            "U2 identifier": ident_claim(dec, enc, stok, data["ident"]),
            "U3 fill-in-the-middle": fill_middle(dec, enc, stok, data["fim"]),
            "G1 next char": next_char(dec, enc, stok, data["gen"]),
            "G2 samples": samples(dec, enc, stok, data["val_text"], data["known"], cfg, seed)}


def best(res: dict[str, float], model: str) -> float:
    return max(v for k, v in res.items() if k.startswith(model))


def headline(ev: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(encoder, gpt) per task: probe accuracy with each model's best features, FIM accuracy,
    next-char loss."""
    u2 = ev["U2 identifier"]["elsewhere"]
    u3 = ev["U3 fill-in-the-middle"]
    g1 = ev["G1 next char"]
    return {"U1": (best(ev["U1 module"], "encoder"), best(ev["U1 module"], "gpt")),
            "U2": (best(u2, "encoder"), best(u2, "gpt")),
            "U3": (u3["encoder (both sides)"]["accuracy"], u3["gpt (left side)"]["accuracy"]),
            "G1": (g1["encoder ([MASK] at the end)"]["loss"], g1["gpt"]["loss"])}


# ---------------------------------------------------------------- verdicts

TASKS = {"U1": "U1 module of a window (probe accuracy, best features)",
         "U2": "U2 identifier occurs elsewhere in the window (probe accuracy, best features)",
         "U3": "U3 fill-in-the-middle (accuracy)",
         "G1": "G1 next-character loss (nats/char, lower is better)"}


def task_verdict(key: str, pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """pairs: (encoder, gpt) per seed. Accuracy: higher wins; G1 loss: lower wins."""
    sign = -1.0 if key == "G1" else 1.0
    diffs = [sign * (e - g) for e, g in pairs]       # > 0: the encoder is better
    margin = LOSS_MARGIN if key == "G1" else ACC_MARGIN
    mean = statistics.fmean(diffs)
    if mean > margin and all(x > 0 for x in diffs):
        winner = "encoder"
    elif mean < -margin and all(x < 0 for x in diffs):
        winner = "gpt"
    else:
        winner = "neither"
    return {"winner": winner, "encoder": [e for e, _ in pairs], "gpt": [g for _, g in pairs],
            "encoder_advantage": diffs, "mean_encoder_advantage": mean}


def verdicts(per_seed: list[dict[str, tuple[float, float]]]) -> dict[str, Any]:
    tasks = {k: task_verdict(k, [h[k] for h in per_seed]) for k in TASKS}
    won = [k for k in ("U1", "U2", "U3") if tasks[k]["winner"] == "encoder"]
    lost = [k for k in ("U1", "U2", "U3") if tasks[k]["winner"] == "gpt"]
    if len(won) == 3:
        u = "supported"
    elif won:
        u = f"partly supported (encoder better on {', '.join(won)}" + (
            f"; GPT better on {', '.join(lost)})" if lost else "; no clear difference elsewhere)")
    elif lost:
        u = f"contradicted (GPT better on {', '.join(lost)})"
    else:
        u = "not supported (no clear difference)"
    g = {"gpt": "supported", "encoder": "contradicted (the encoder generates better)",
         "neither": "not supported (no clear difference)"}[tasks["G1"]["winner"]]
    both = u == "supported" and g == "supported"
    overall = ("supported" if both else
               "partly supported" if u.startswith(("supported", "partly")) or g == "supported"
               else "not supported")
    return {"tasks": tasks, "understanding": u, "generating": g, "overall": overall}


# ---------------------------------------------------------------- figure


def figure(results: list[dict[str, Any]], untrained: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = [("U1 module", lambda ev: ev["U1 module"], "U1: module (probe acc.)"),
              ("U2", lambda ev: ev["U2 identifier"]["elsewhere"], "U2: repeated ident. (acc.)"),
              ("U3", lambda ev: {k: v["accuracy"] for k, v in
                                 ev["U3 fill-in-the-middle"].items()}, "U3: fill middle (acc.)"),
              ("G1", lambda ev: {k: v["loss"] for k, v in ev["G1 next char"].items()},
               "G1: next-char loss")]
    for a, (_, get, title) in zip(axes, panels):
        keys = [k for k in get(results[0]) if not k.startswith("n_")]
        means = [statistics.fmean(get(ev)[k] for ev in results) for k in keys]
        base = [get(untrained)[k] for k in keys]
        y = range(len(keys))
        colors = ["tab:blue" if k.startswith("encoder") else "tab:orange" for k in keys]
        a.barh(list(y), means, color=colors)
        a.plot(base, list(y), "k|", ms=12, label="untrained")
        for i, k in enumerate(keys):
            for ev in results:
                a.plot(get(ev)[k], i, "k.", ms=3)
        a.set_yticks(list(y), [k.replace(" residual", " resid.") for k in keys], fontsize=7)
        a.set_title(title, fontsize=9)
        a.invert_yaxis()
    axes[0].legend(fontsize=7, frameon=False)
    return fig


# ---------------------------------------------------------------- the run


def run(out: str = "results", quick: bool = False, seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    t_start = time.perf_counter()
    cfg = configs(quick, seed)
    r = runs.Run.create("encoder_vs_decoder", out=out)
    r.save_config(cfg)
    d = cfg["data"]
    L = cfg["model"]["n_ctx"]
    corpus = gpt.load_corpus("stdlib", max_chars=d["max_chars"])
    tok = gpt.CharTokenizer.fit(corpus)
    stok = SpecialTokenizer(tok)
    train_ids, val_ids = tok.encode(corpus.train), tok.encode(corpus.val)
    W = L - 2                                  # characters per window (the encoder adds 2)
    data = {"modules": module_dataset(corpus.train, tok, W, d),
            "ident": ident_dataset(corpus.val, tok, W, d["ident_windows"]),
            "fim": windows(val_ids, d["fim_windows"], W, DATA_SEED + 2),
            "gen": windows(val_ids, d["gen_windows"], L - 2, DATA_SEED + 3),
            "val_text": corpus.val, "known": set(IDENT.findall(corpus.train))}
    counts = torch.bincount(train_ids, minlength=tok.vocab_size).double() + 1
    unigram = float(-(counts / counts.sum()).log()[val_ids].mean())

    dec0, enc0 = build(cfg, tok, stok, seed)
    params = param_counts(dec0, enc0)
    untrained = evaluate(dec0, enc0, stok, data, cfg, seed)
    results, training, heads, first_gpt = [], [], [], None
    for s in range(seed, seed + cfg["n_seeds"]):
        dec, enc = build(cfg, tok, stok, s)
        training.append({"seed": s, **train_both(cfg, dec, enc, train_ids, stok, s, progress)})
        ev = evaluate(dec, enc, stok, data, cfg, s)
        results.append({"seed": s, **ev})
        heads.append(headline(ev))
        first_gpt = first_gpt or dec
        log.info("seed %d: %s", s, heads[-1])
    v = verdicts(heads)
    long_enc = None
    if cfg["long_encoder_factor"]:
        _, enc = build(cfg, tok, stok, seed)
        steps = cfg["long_encoder_factor"] * cfg["train"]["steps"]
        tr = train_encoder(cfg, enc, train_ids, stok, seed, steps, progress)
        ev = evaluate(first_gpt, enc, stok, data, cfg, seed)
        h = headline(ev)
        long_enc = {"training": tr, "eval": ev, "headline": h,
                    "tasks": {k: task_verdict(k, [h[k]]) for k in TASKS}}
        log.info("encoder x%d steps: %s", cfg["long_encoder_factor"], h)
    u2_identity = {lab: identity_baseline(data["ident"], lab) for lab in ("elsewhere", "earlier")}

    metrics: dict[str, Any] = {
        "params": params, "training": training, "unigram_loss": unigram,
        "uniform_loss": math.log(tok.vocab_size), "modules": data["modules"]["modules"],
        "u2_identity_baseline": u2_identity, "untrained": untrained,
        "untrained_headline": headline(untrained), "per_seed": results, "verdict": v,
        "long_encoder": long_enc}
    summary: dict[str, Any] = {}
    if quick:
        summary["note"] = ("quick mode: tiny models, one seed, few steps; a smoke test, the "
                           "full run gives the real verdicts")
    summary["claim: encoder better at understanding, decoder at generating"] = v["overall"]
    summary["understanding"] = v["understanding"]
    summary["generating"] = v["generating"]
    for k, name in TASKS.items():
        t = v["tasks"][k]
        summary[name] = (f"encoder {_fmt(t['encoder'])}, GPT {_fmt(t['gpt'])}, untrained "
                         f"encoder/GPT {headline(untrained)[k][0]:.3f}/"
                         f"{headline(untrained)[k][1]:.3f}: {t['winner']}")
    if long_enc is not None:
        summary[f"encoder trained x{cfg['long_encoder_factor']} steps (seed {seed}) vs the "
                "same GPT"] = "; ".join(
            f"{k} {t['encoder'][0]:.3f} vs {t['gpt'][0]:.3f} ({t['winner']})"
            for k, t in long_enc["tasks"].items())
    summary["U2 identity-only baseline"] = f"{u2_identity['elsewhere']:.3f}"
    ctrl = [(best(ev["U2 identifier"]["earlier"], "encoder"),
             best(ev["U2 identifier"]["earlier"], "gpt")) for ev in results]
    summary["U2 control: occurs earlier (left only)"] = (
        f"encoder {_fmt([e for e, _ in ctrl])}, GPT {_fmt([g for _, g in ctrl])}, "
        f"identity-only {u2_identity['earlier']:.3f}")
    g2 = results[0]["G2 samples"]
    summary["G2 real-identifier fraction (T=0.8)"] = (
        f"GPT {_fmt([ev['G2 samples']['gpt']['real_identifier_fraction'] for ev in results])}, "
        f"encoder "
        f"{_fmt([ev['G2 samples']['encoder']['real_identifier_fraction'] for ev in results])}")
    summary["G2 prompt"] = g2["prompt"]
    summary["G2 GPT greedy"] = g2["gpt"]["greedy"]
    summary["G2 encoder greedy"] = g2["encoder"]["greedy"]
    summary["params GPT / encoder (pooler, specials)"] = (
        f"{params['gpt']} / {params['encoder']} ({params['encoder_pooler']}, "
        f"{params['encoder_special_rows']}); encoder without them "
        f"{params['encoder_without_pooler_and_specials']}")
    tr = training[0]
    summary["budget per model"] = (
        f"{cfg['train']['steps']} steps x {cfg['train']['batch_size']} sequences x {L} "
        f"positions = {tr['gpt']['positions_seen']} positions; scored: GPT "
        f"{tr['gpt']['positions_scored']}, encoder {tr['encoder']['positions_scored']}")
    summary["time"] = f"{time.perf_counter() - t_start:.0f}s"
    metrics["summary"] = summary
    r.save_figure(figure(results, untrained), "encoder_vs_decoder")
    r.save_metrics(metrics)
    metrics["run_dir"] = str(r.path)
    return metrics


def _fmt(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in xs) + "]"


if __name__ == "__main__":
    runs.experiment_main(run, __doc__)
