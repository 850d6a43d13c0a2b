"""ActivationStore, the SAE splice and the head scores on the Encoder and the Seq2Seq
(`superpose.transformer`): padded batches as dicts of the model's inputs, rows only at real
positions, losses only at real targets."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from superpose import sae, transformer
from superpose.activations import ActivationStore, model_call, position_mask
from superpose.gpt import heads

D, VOCAB, SENTINEL = 32, 20, 1.0e4


def encoder() -> transformer.Encoder:
    torch.manual_seed(0)
    return transformer.Encoder(transformer.EncoderConfig(
        d_vocab=VOCAB, d_model=D, n_heads=4, n_layers=2, n_ctx=16), device="cpu")


def seq2seq() -> transformer.Seq2Seq:
    return transformer.Seq2Seq(transformer.Seq2SeqConfig(
        d_vocab=VOCAB, d_model=D, n_heads=4, n_layers=2, n_ctx=16, bos_id=1, eos_id=2,
        pad_id=0), device="cpu")


def lengths_mask(lengths: list[int], n: int, left: bool = False) -> torch.Tensor:
    pos = torch.arange(n)
    m = torch.stack([pos < k for k in lengths])
    return m.flip(1) if left else m


def enc_batches(n_batches: int = 3, b: int = 4, n: int = 10, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        lengths = torch.randint(2, n + 1, (b,), generator=g).tolist()
        mask = lengths_mask(lengths, n, left=i % 2 == 1)
        tokens = torch.randint(4, VOCAB, (b, n), generator=g).masked_fill(~mask, 0)
        labels = torch.full_like(tokens, -100)
        pick = mask & (torch.rand(b, n, generator=g) < 0.3)
        pick[:, :][mask.long().cumsum(1) == 1] = True         # at least one target a row
        labels[pick] = tokens[pick]
        out.append({"tokens": tokens.masked_fill(pick, 3), "attention_mask": mask,
                    "labels": labels})
    return out


def s2s_batches(n_batches: int = 3, b: int = 4, s: int = 9, t: int = 7,
                seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        sm = lengths_mask(torch.randint(2, s + 1, (b,), generator=g).tolist(), s)
        tm = lengths_mask(torch.randint(2, t + 1, (b,), generator=g).tolist(), t)
        src = torch.randint(4, VOCAB, (b, s), generator=g).masked_fill(~sm, 0)
        tgt = torch.randint(4, VOCAB, (b, t), generator=g).masked_fill(~tm, 0)
        tgt[:, 0] = 1
        labels = torch.cat([tgt[:, 1:], torch.full((b, 1), 2)], 1).masked_fill(~tm, -100)
        out.append({"src": src, "tgt": tgt, "src_attention_mask": sm,
                    "tgt_attention_mask": tm, "labels": labels})
    return out


def drain(store: ActivationStore) -> torch.Tensor:
    return torch.cat(list(store))


def cached_real_rows(model, hook: str, batches: list[dict], mask_key: str) -> torch.Tensor:
    rows = []
    for b in batches:
        args, kwargs = model_call(b)
        _, cache = model.run_with_cache(*args, names_filter=[hook], **kwargs)
        rows.append(cache[hook][b[mask_key]])
    return torch.cat(rows)


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows in a canonical order (the store shuffles)."""
    keys = x[:, 0] * 1e3 + x[:, 1]
    return x[keys.argsort()]


# ---- ActivationStore ----------------------------------------------------------------------------

@pytest.mark.parametrize("family,hook,mask_key", [
    ("encoder", "blocks.0.hook_resid_post", "attention_mask"),
    ("encoder", "blocks.1.attn.hook_z", "attention_mask"),
    ("seq2seq", "encoder.1.hook_resid_post", "src_attention_mask"),
    ("seq2seq", "decoder.0.hook_cross_attn_out", "tgt_attention_mask"),
    ("seq2seq", "decoder.1.hook_resid_mid", "tgt_attention_mask"),
])
def test_store_takes_real_positions_only(family, hook, mask_key):
    model = encoder() if family == "encoder" else seq2seq()
    batches = enc_batches() if family == "encoder" else s2s_batches()
    n_real = sum(int(b[mask_key].sum()) for b in batches)
    store = ActivationStore(model, hook, batches, batch_size=7, device="cpu")
    got = drain(store)
    assert got.shape[0] == n_real                                  # exactly the real rows
    want = cached_real_rows(model, hook, batches, mask_key).flatten(1)
    torch.testing.assert_close(sorted_rows(got), sorted_rows(want))

    # a sentinel written at every padded position of the hook never becomes a row
    rows = []
    for b in batches:
        def poison(act, hook, real=b[mask_key]):
            act = act.clone()
            act[~real] = SENTINEL
            return act
        model.add_hook(hook, poison)
        try:
            rows.append(drain(ActivationStore(model, hook, [b], batch_size=64, device="cpu")))
        finally:
            model.reset_hooks()
    rows = torch.cat(rows)
    assert rows.shape[0] == n_real
    assert not (rows == SENTINEL).any()


def test_store_mask_rules_and_skip_positions():
    b = s2s_batches(1)[0]
    assert torch.equal(position_mask("encoder.0.hook_resid_post", b), b["src_attention_mask"])
    assert torch.equal(position_mask("decoder.0.hook_cross_attn_out", b), b["tgt_attention_mask"])
    assert torch.equal(position_mask("hook_tgt_embed", b), b["tgt_attention_mask"])
    assert torch.equal(position_mask("hook_embed", b), b["src_attention_mask"])
    assert position_mask("blocks.0.hook_resid_post", torch.zeros(2, 3, dtype=torch.long)) is None
    e = enc_batches(1)[0]
    assert torch.equal(position_mask("unembed.hook_out", e), e["attention_mask"])

    model = seq2seq()
    batches = s2s_batches()
    # an explicit mask_key overrides the default; the wrong side's mask is a clear error
    with pytest.raises(ValueError, match="its mask is"):
        drain(ActivationStore(model, "decoder.0.hook_resid_post", batches, batch_size=8,
                              device="cpu", mask_key="src_attention_mask"))
    with pytest.raises(ValueError, match="not a key of the batch"):
        drain(ActivationStore(model, "decoder.0.hook_resid_post", batches, batch_size=8,
                              device="cpu", mask_key="mask"))
    # None for a hook: every position
    n_all = sum(b["tgt"].numel() for b in batches)
    got = drain(ActivationStore(model, "decoder.0.hook_resid_post", batches, batch_size=8,
                                device="cpu", mask_key={"decoder.0.hook_resid_post": None}))
    assert len(got) == n_all
    # skip_positions drops the first real position of each sequence (left padding too)
    enc, eb = encoder(), enc_batches()
    n_real = sum(int(b["attention_mask"].sum()) for b in eb)
    got = drain(ActivationStore(enc, "blocks.0.hook_resid_post", eb, batch_size=8,
                                device="cpu", skip_positions=1))
    assert len(got) == n_real - sum(len(b["tokens"]) for b in eb)
    # hooks of both sides in one store: their real positions differ
    with pytest.raises(ValueError, match="real positions in common"):
        drain(ActivationStore(model, ["encoder.0.hook_resid_post", "decoder.0.hook_resid_post"],
                              batches, batch_size=8, device="cpu"))


def test_store_cache_and_resume_with_dict_batches(tmp_path):
    model = seq2seq()
    batches = s2s_batches(4)
    hook = "decoder.0.hook_cross_attn_out"
    n_real = sum(int(b["tgt_attention_mask"].sum()) for b in batches)
    kw = dict(batch_size=8, buffer_size=8, device="cpu", shard_size=8)
    ref = drain(ActivationStore(model, hook, iter(batches), cache_dir=tmp_path / "a", **kw))
    cached = drain(ActivationStore.from_cache(tmp_path / "a", batch_size=8, device="cpu"))
    assert len(ref) == len(cached) == n_real
    torch.testing.assert_close(sorted_rows(cached), sorted_rows(ref))

    # interrupted after two batches, then resumed: the same files
    part = ActivationStore(model, hook, batches[:2], cache_dir=tmp_path / "b", **kw)
    drain(part)
    man = tmp_path / "b" / "manifest.json"
    m = json.loads(man.read_text())
    assert m["complete"] and m["mask_key"] is None
    resumed_dir = tmp_path / "c"
    store = ActivationStore(model, hook, iter(batches), cache_dir=resumed_dir, **kw)
    it = iter(store)
    next(it)                                              # some rows, then "killed"
    m = json.loads((resumed_dir / "manifest.json").read_text())
    assert not m["complete"] and 0 < m["count"] < n_real
    del store, it
    again = drain(ActivationStore(model, hook, iter(batches), cache_dir=resumed_dir,
                                  resume=True, **kw))
    assert len(again) == n_real
    for f in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / f).read_bytes() == (resumed_dir / f).read_bytes(), f
    # resuming with another mask_key is refused
    with pytest.raises(ValueError, match="mask_key"):
        ActivationStore(model, hook, iter(batches), cache_dir=tmp_path / "a", resume=True,
                        mask_key="tgt_attention_mask", **kw)


# ---- SAEs on the rows, and the splice ----------------------------------------------------------

def identity_sae(d: int) -> sae.SAE:
    """A ReLU SAE computing x exactly: relu(x) - relu(-x)."""
    s = sae.create(sae.SAEConfig(d_in=d, d_sae=2 * d, architecture="relu"))
    eye = torch.eye(d)
    with torch.no_grad():
        s.W_enc.copy_(torch.cat([eye, -eye], 1))
        s.W_dec.copy_(torch.cat([eye, -eye], 0))
        s.b_enc.zero_()
        s.b_dec.zero_()
    return s


def concat(batches: list[dict]) -> dict:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize("family,hook", [
    ("encoder", "blocks.0.hook_resid_post"),
    ("seq2seq", "decoder.0.hook_cross_attn_out"),
])
def test_sae_trains_and_splices(family, hook):
    model = encoder() if family == "encoder" else seq2seq()
    batches = enc_batches(4) if family == "encoder" else s2s_batches(4)
    store = ActivationStore(model, hook, itertools.cycle(batches), batch_size=16,
                            device="cpu")
    s = sae.create(sae.SAEConfig(d_in=D, d_sae=64, architecture="topk", k=4, hook_name=hook))
    result = sae.train(s, store, steps=6, progress=False)
    assert len(result.history.mse) >= 1 and all(torch.isfinite(torch.tensor(result.history.mse)))

    inputs = concat(batches)
    r = sae.spliced_losses(model, s, hook, inputs, batch_size=5, progress=False)
    for x in (r.clean_loss, r.spliced_loss, r.zero_ablation_loss, r.mean_ablation_loss,
              r.kl_div):
        assert x == x and abs(x) < float("inf")
    n_targets = int((inputs["labels"] != -100).sum())
    assert r.n_predictions == n_targets
    out_mask = inputs["attention_mask" if family == "encoder" else "tgt_attention_mask"]
    assert r.n_tokens == int(out_mask.sum())
    # the clean loss is the model's own loss (mean over real targets)
    args, kwargs = model_call(inputs)
    with torch.no_grad():
        want = model(*args, return_type="loss", labels=inputs["labels"], **kwargs)
    assert r.clean_loss == pytest.approx(float(want), rel=1e-5)

    # an identity "SAE" gives the clean loss; so does the error term
    ident = sae.spliced_losses(model, identity_sae(D), hook, inputs, progress=False)
    assert ident.spliced_loss == pytest.approx(ident.clean_loss, rel=1e-5, abs=1e-6)
    assert ident.kl_div < 1e-6
    err = sae.spliced_losses(model, s, hook, inputs, error_term=True, progress=False,
                             mean_ablation=False)
    assert err.spliced_loss == pytest.approx(err.clean_loss, rel=1e-5, abs=1e-6)
    fn = sae.splice_fn(model, hook, inputs, progress=False, mean_ablation=False)
    assert set(fn(s)) >= {"loss_recovered", "kl_div"}


def test_splice_refuses_scored_padding_and_missing_labels():
    model, inputs = seq2seq(), concat(s2s_batches(1))
    s = identity_sae(D)
    hook = "decoder.0.hook_cross_attn_out"
    bad = dict(inputs, labels=inputs["labels"].masked_fill(~inputs["tgt_attention_mask"], 5))
    with pytest.raises(ValueError, match="scores a padded position"):
        sae.spliced_losses(model, s, hook, bad, progress=False)
    no_labels = {k: x for k, x in inputs.items() if k != "labels"}
    with pytest.raises(ValueError, match="needs 'labels'"):
        sae.spliced_losses(model, s, hook, no_labels, progress=False)
    # a custom loss: the same numbers as the labels' loss
    def loss_fn(logits, batch):
        keep = batch["labels"] != -100
        return torch.nn.functional.cross_entropy(logits[keep], batch["labels"][keep],
                                                 reduction="none")
    a = sae.spliced_losses(model, s, hook, inputs, progress=False, mean_ablation=False)
    b = sae.spliced_losses(model, s, hook, no_labels | {"labels": inputs["labels"]},
                           loss_fn=loss_fn, progress=False, mean_ablation=False)
    assert a.clean_loss == pytest.approx(b.clean_loss)


@pytest.mark.parametrize("family,hook", [
    ("encoder", "blocks.0.hook_resid_post"),
    ("seq2seq", "decoder.0.hook_cross_attn_out"),
    ("seq2seq", "encoder.1.hook_resid_post"),
])
def test_padding_does_not_change_the_spliced_loss(family, hook):
    """Three more padded columns on every input (whatever stands there) change no number:
    padded positions are neither scored nor averaged into the mean ablation."""
    model = encoder() if family == "encoder" else seq2seq()
    b = enc_batches(1, n=8)[0] if family == "encoder" else s2s_batches(1)[0]

    def more(k, x):
        fill = {torch.bool: False}.get(x.dtype, -100 if k == "labels" else 7)
        return torch.cat([x, torch.full((len(x), 3), fill, dtype=x.dtype)], 1)
    pad = {k: more(k, x) for k, x in b.items()}
    s = sae.create(sae.SAEConfig(d_in=D, d_sae=64, architecture="topk", k=4))
    r1 = sae.spliced_losses(model, s, hook, b, progress=False)
    r2 = sae.spliced_losses(model, s, hook, pad, progress=False)
    for k in ("clean_loss", "spliced_loss", "zero_ablation_loss", "mean_ablation_loss",
              "kl_div"):
        assert getattr(r1, k) == pytest.approx(getattr(r2, k), rel=1e-4, abs=1e-6), k
    assert (r1.n_tokens, r1.n_predictions) == (r2.n_tokens, r2.n_predictions)


# ---- head scores --------------------------------------------------------------------------------

def test_head_scores_on_encoder_and_seq2seq():
    enc, b = encoder(), enc_batches(1)[0]
    pat = heads.attention_patterns(enc, b)
    assert pat.shape == (2, 4, 4, 10, 10)
    m = b["attention_mask"]
    assert (pat.permute(1, 3, 0, 2, 4)[~m] == 0).all()             # padded queries
    assert (pat.permute(1, 4, 0, 2, 3)[~m] == 0).all()             # padded keys
    rows = pat.sum(-1).permute(1, 3, 0, 2)[m]                      # real queries sum to 1
    torch.testing.assert_close(rows, torch.ones_like(rows))
    prev = heads.prev_token_scores(enc, b)
    assert prev.shape == (2, 4) and torch.isfinite(prev).all()
    ind = heads.induction_scores(enc, seq_len=6, d_vocab=VOCAB, batch_size=4)
    assert ind.shape == (2, 4)

    model, sb = seq2seq(), s2s_batches(1)[0]
    with pytest.raises(ValueError, match="pass stack="):
        heads.attention_patterns(model, sb)
    cross = heads.attention_patterns(model, sb, stack="cross")
    assert cross.shape == (2, 4, 4, 7, 9)
    sm, tm = sb["src_attention_mask"], sb["tgt_attention_mask"]
    assert (cross.permute(1, 4, 0, 2, 3)[~sm] == 0).all()
    assert (cross.permute(1, 3, 0, 2, 4)[~tm] == 0).all()
    # the cached pattern at real positions is returned unchanged
    args, kwargs = model_call(sb)
    _, cache = model.run_with_cache(*args, **kwargs)
    want = cache["decoder.1.cross_attn.hook_pattern"]
    keep = tm[:, None, :, None] & sm[:, None, None, :]
    torch.testing.assert_close(cross[1][keep.expand_as(want)], want[keep.expand_as(want)])
    dec = heads.attention_patterns(model, sb, stack="decoder")
    assert dec.shape == (2, 4, 4, 7, 7)
    assert heads.attention_patterns(model, sb, stack="encoder").shape == (2, 4, 4, 9, 9)
    assert heads.prev_token_scores(model, sb, stack="decoder").shape == (2, 4)
    with pytest.raises(ValueError, match="cross-attention"):
        heads.prev_token_scores(model, sb, stack="cross")
    with pytest.raises(ValueError, match="stack 'blocks'"):
        heads.induction_scores(model, seq_len=4, d_vocab=VOCAB)


def test_prev_token_score_with_padding_counts_real_pairs_only():
    pat = torch.zeros(1, 2, 1, 4, 4)
    idx = torch.arange(1, 4)
    pat[..., idx, idx - 1] = 1.0
    mask = torch.tensor([[True, True, False, False], [False, True, True, True]])
    pat[:, 0, :, 2, 1] = 0.0           # row 0, query 2 is padding: never counted
    pat[:, 1, :, 1, 0] = 0.0           # row 1, key 0 is padding: never counted
    torch.testing.assert_close(heads.prev_token_scores_from(pat, mask), torch.ones(1, 1))
