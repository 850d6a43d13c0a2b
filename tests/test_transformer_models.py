"""The encoder and the encoder–decoder (superpose.transformer): padding never leaks into a real
position, the causal decoder never sees the future, the fused and explicit attention paths
agree, generation with a KV cache equals generation without one, TransformerLens's hook names,
hook ablations, save/load, and the errors bad input gets."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from superpose import gpt
from superpose.gpt.config import GPTConfig
from superpose.transformer import (
    Encoder,
    EncoderConfig,
    HookSwitchError,
    Seq2Seq,
    Seq2SeqConfig,
    mlm_loss,
)

NORMS = ["pre", "post", "none"]
POSITIONALS = ["learned", "sinusoidal", "rotary", "none"]
SIDES = ["left", "right"]
V_SRC, V_TGT = 13, 11          # different vocabularies: a mix-up of the two sides shows
BOS, EOS, PAD = 1, 2, 0
TOL = dict(atol=1e-5, rtol=1e-5)
# Left-padded, right-padded and unpadded runs reduce over different key counts (padded keys
# add exact zeros, but the summation order changes): float noise relative to the value.
NOISE = dict(atol=2e-5, rtol=1e-4)


def encoder(norm="post", positional="learned", **kw):
    base = dict(d_vocab=V_SRC, n_layers=2, d_model=32, n_heads=4, n_ctx=12, norm=norm,
                positional=positional, init_std=0.3, seed=0)
    return Encoder(EncoderConfig(**{**base, **kw}), device="cpu").eval()


def seq2seq(norm="pre", positional="learned", **kw):
    base = dict(d_vocab=V_SRC, d_vocab_tgt=V_TGT, n_layers=2, n_decoder_layers=2, d_model=32,
                n_heads=4, n_ctx=12, n_ctx_tgt=10, norm=norm, positional=positional,
                init_std=0.3, bos_id=BOS, eos_id=EOS, pad_id=PAD, seed=0)
    return Seq2Seq(Seq2SeqConfig(**{**base, **kw}), device="cpu").eval()


def ids(shape, vocab, seed):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def pad_mask(lengths, pos, side):
    """[batch pos] bool, True at the real tokens: each row's `lengths[i]` tokens at the end
    (left padding) or at the start (right padding)."""
    ar = torch.arange(pos)[None]
    n = torch.tensor(lengths)[:, None]
    return ar >= pos - n if side == "left" else ar < n


def scramble_padding(tokens, mask, vocab, seed):
    """The same batch with different (random) ids at every padded position."""
    other = ids(tokens.shape, vocab, seed)
    out = torch.where(mask, tokens, other)
    assert (out[~mask] != tokens[~mask]).any()
    return out


# ---- reading activations at the real positions -----------------------------------------------

ATTN = ("hook_attn_scores", "hook_pattern")


def s2s_side(name):
    """Which sequence a Seq2Seq hook's position axis runs over."""
    src = (name.startswith("encoder") or name in ("hook_embed", "hook_pos_embed")
           or name.endswith((".cross_attn.hook_k", ".cross_attn.hook_v")))
    return "src" if src else "tgt"


def at_real(name, t, qmask, kmask=None):
    """The activation `t` of hook `name` at the real positions of `qmask` [batch pos]:
    rows stacked as [n_real, ...]. Attention scores and patterns [batch head query key] are
    read at real queries (and, given `kmask`, real keys only)."""
    if name.endswith(ATTN):
        t = t.movedim(2, 1)[qmask]                     # [n_real, head, key]
        if kmask is not None:                           # same real-key count in every row read
            rows = qmask.nonzero()[:, 0]
            t = torch.stack([t[i][:, kmask[r]] for i, r in enumerate(rows.tolist())])
        return t
    if name.endswith(("pooler.hook_pooler_out", "classifier.hook_out")):
        return t
    assert t.shape[:2] == qmask.shape, (name, t.shape)
    return t[qmask]


def assert_same_cache(cache_a, cache_b, read, **tol):
    assert set(cache_a.keys()) == set(cache_b.keys())
    for name in cache_a.keys():
        a, b = read(name, cache_a[name]), read(name, cache_b[name])
        torch.testing.assert_close(a, b, **(tol or TOL), msg=lambda m, n=name: f"{n}: {m}")


def encoder_cache(model, tokens, mask):
    return model.run_with_cache(tokens, attention_mask=mask)


def s2s_cache(model, src, tgt, smask, tmask):
    return model.run_with_cache(src, tgt, src_attention_mask=smask, tgt_attention_mask=tmask)


def s2s_reader(masks, real_keys=False):
    def read(name, t):
        q = masks[s2s_side(name)]
        if not name.endswith(ATTN):
            return at_real(name, t, q)
        k = masks["src"] if ".cross_attn." in name or name.startswith("encoder") else masks["tgt"]
        return at_real(name, t, q, k if real_keys else None)
    return read


# ---- 1. padding never leaks ------------------------------------------------------------------

@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_encoder_padding_ids_change_nothing_real(norm, positional, side):
    model = encoder(norm, positional, n_token_types=2 if norm == "post" else 0, n_classes=3)
    tokens = ids((3, 10), V_SRC, 1)
    mask = pad_mask([6, 10, 3], 10, side)
    logits, cache = encoder_cache(model, tokens, mask)
    other = scramble_padding(tokens, mask, V_SRC, 2)
    logits2, cache2 = encoder_cache(model, other, mask)
    torch.testing.assert_close(logits[mask], logits2[mask], **TOL)
    assert_same_cache(cache, cache2, lambda n, t: at_real(n, t, mask))
    pooled = model(tokens, "class_logits", attention_mask=mask)
    torch.testing.assert_close(pooled, model(other, "class_logits", attention_mask=mask), **TOL)
    # The comparison can fail: a real token changed changes the real outputs.
    real = other.clone()
    real[1, 4] = (real[1, 4] + 1) % V_SRC
    assert not torch.allclose(model(real, attention_mask=mask)[mask], logits2[mask], **TOL)


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_encoder_left_right_and_alone_agree_at_real_tokens(norm, positional):
    model = encoder(norm, positional)
    seq = ids((1, 7), V_SRC, 3)
    runs = []
    for side in (None, *SIDES):
        if side is None:
            tokens, mask = seq, torch.ones(1, 7, dtype=torch.bool)
            logits, cache = encoder_cache(model, seq, None)
        else:
            mask = pad_mask([7], 11, side)
            tokens = ids((1, 11), V_SRC, 4)
            tokens[mask] = seq[0]
            logits, cache = encoder_cache(model, tokens, mask)
        runs.append((logits[mask], cache, mask))
    pooled = [model(seq, "pooled")]
    for side in SIDES:
        tokens, mask = _padded(seq, side)
        pooled.append(model(tokens, "pooled", attention_mask=mask))
    for logits, cache, mask in runs[1:]:
        torch.testing.assert_close(logits, runs[0][0], **NOISE)
        for name in cache.keys():
            torch.testing.assert_close(at_real(name, cache[name], mask, mask),
                                       at_real(name, runs[0][1][name], runs[0][2], runs[0][2]),
                                       **NOISE, msg=lambda m, n=name: f"{n}: {m}")
    for p in pooled[1:]:
        torch.testing.assert_close(p, pooled[0], **NOISE)


def _padded(seq, side, pos=11):
    mask = pad_mask([seq.shape[1]], pos, side)
    tokens = ids((1, pos), V_SRC, 5)
    tokens[mask] = seq[0]
    return tokens, mask


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_seq2seq_padding_ids_change_nothing_real(norm, positional, side):
    model = seq2seq(norm, positional)
    src, tgt = ids((3, 12), V_SRC, 6), ids((3, 9), V_TGT, 7)
    masks = {"src": pad_mask([5, 12, 8], 12, side), "tgt": pad_mask([9, 4, 6], 9, side)}
    logits, cache = s2s_cache(model, src, tgt, masks["src"], masks["tgt"])
    src2 = scramble_padding(src, masks["src"], V_SRC, 8)
    tgt2 = scramble_padding(tgt, masks["tgt"], V_TGT, 9)
    for s, t in ((src2, tgt), (src, tgt2), (src2, tgt2)):
        logits2, cache2 = s2s_cache(model, s, t, masks["src"], masks["tgt"])
        torch.testing.assert_close(logits[masks["tgt"]], logits2[masks["tgt"]], **TOL)
        assert_same_cache(cache, cache2, s2s_reader(masks))
    # Can fail: a real source token changed reaches the real target logits.
    real = src2.clone()
    real[1, 3] = (real[1, 3] + 1) % V_SRC
    changed = model(real, tgt, src_attention_mask=masks["src"], tgt_attention_mask=masks["tgt"])
    assert not torch.allclose(changed[1][masks["tgt"][1]], logits[1][masks["tgt"][1]], **TOL)


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_seq2seq_left_right_and_alone_agree_at_real_tokens(norm, positional):
    model = seq2seq(norm, positional)
    src, tgt = ids((1, 6), V_SRC, 10), ids((1, 5), V_TGT, 11)
    ones = {"src": torch.ones(1, 6, dtype=torch.bool), "tgt": torch.ones(1, 5, dtype=torch.bool)}
    ref_logits, ref_cache = s2s_cache(model, src, tgt, None, None)
    for side in SIDES:
        masks = {"src": pad_mask([6], 12, side), "tgt": pad_mask([5], 9, side)}
        ps, pt = ids((1, 12), V_SRC, 12), ids((1, 9), V_TGT, 13)
        ps[masks["src"]], pt[masks["tgt"]] = src[0], tgt[0]
        logits, cache = s2s_cache(model, ps, pt, masks["src"], masks["tgt"])
        torch.testing.assert_close(logits[masks["tgt"]], ref_logits[0], **NOISE)
        read, ref_read = s2s_reader(masks, real_keys=True), s2s_reader(ones, real_keys=True)
        for name in cache.keys():
            torch.testing.assert_close(read(name, cache[name]), ref_read(name, ref_cache[name]),
                                       **NOISE, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("side", [None, *SIDES])
@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_seq2seq_decoder_never_sees_the_future(norm, positional, side):
    model = seq2seq(norm, positional)
    src, tgt = ids((2, 8), V_SRC, 14), ids((2, 9), V_TGT, 15)
    smask = None if side is None else pad_mask([8, 5], 8, side)
    tmask = None if side is None else pad_mask([9, 9], 9, side)   # no target padding to cut
    cut = 5
    later = tgt.clone()
    later[:, cut:] = (later[:, cut:] + 1 + ids((2, 9 - cut), V_TGT - 1, 16)) % V_TGT
    logits, cache = s2s_cache(model, src, tgt, smask, tmask)
    logits2, cache2 = s2s_cache(model, src, later, smask, tmask)
    early = {"tgt": torch.arange(9)[None].expand(2, -1) < cut,
             "src": torch.ones(2, 8, dtype=torch.bool) if smask is None else smask}
    torch.testing.assert_close(logits[:, :cut], logits2[:, :cut], **TOL)
    assert_same_cache(cache, cache2, s2s_reader(early))
    assert not torch.allclose(logits[:, cut:], logits2[:, cut:], **TOL)   # can fail


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_gpt_never_sees_the_future(norm, positional):
    """The GPT's causal decoder: later tokens change nothing before them."""
    model = gpt.GPT(GPTConfig(d_vocab=V_SRC, n_layers=2, d_model=32, n_heads=4, n_ctx=12,
                              norm=norm, positional=positional, init_std=0.3), device="cpu")
    model.eval()
    tokens = ids((2, 10), V_SRC, 17)
    later = tokens.clone()
    later[:, 6:] = (later[:, 6:] + 1) % V_SRC
    logits, cache = model.run_with_cache(tokens)
    logits2, cache2 = model.run_with_cache(later)
    early = torch.arange(10)[None].expand(2, -1) < 6
    torch.testing.assert_close(logits[:, :6], logits2[:, :6], **TOL)
    assert_same_cache(cache, cache2, lambda n, t: at_real(n, t, early))
    assert not torch.allclose(logits[:, 6:], logits2[:, 6:], **TOL)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_gpt_padding_never_leaks(norm, positional, side):
    """The GPT with an attention_mask: padded ids change nothing at real positions, a padded row
    equals the row alone, and the loss counts only real predictions."""
    model = gpt.GPT(GPTConfig(d_vocab=V_SRC, n_layers=2, d_model=32, n_heads=4, n_ctx=12,
                              norm=norm, positional=positional, init_std=0.3), device="cpu")
    model.eval()
    tokens = ids((2, 10), V_SRC, 21)
    mask = torch.ones(2, 10, dtype=torch.bool)
    if side == "left":
        mask[1, :4] = False
    else:
        mask[1, 6:] = False
    logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    other = tokens.clone()
    other[~mask] = (other[~mask] + 3) % V_SRC
    logits2, cache2 = model.run_with_cache(other, attention_mask=mask)
    torch.testing.assert_close(logits[mask], logits2[mask], **TOL)
    assert_same_cache(cache, cache2, lambda n, t: at_real(n, t, mask))
    real = tokens[1][mask[1]][None]
    torch.testing.assert_close(model(real)[0], logits[1][mask[1]], atol=2e-5, rtol=1e-4)
    loss_alone = model(real, "loss")
    per = model(tokens, "loss", attention_mask=mask, loss_per_token=True)
    counted = mask[:, :-1] & mask[:, 1:]
    assert (per[~counted] == 0).all()
    torch.testing.assert_close(per[1][counted[1]].mean(), loss_alone, atol=2e-5, rtol=1e-4)
    two = torch.cat([real, real])              # an all-real 0/1 mask changes nothing
    torch.testing.assert_close(model(two), model(two, attention_mask=torch.ones_like(two)), **TOL)


# ---- 2. fused attention vs the explicit (hooked) path ----------------------------------------

def _pattern_hooks(name):
    return name.endswith("hook_pattern")


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("masked", [False, True])
def test_hooked_pattern_path_equals_fused_path(positional, masked):
    enc = encoder("pre", positional)
    tokens = ids((3, 10), V_SRC, 18)
    mask = pad_mask([10, 4, 7], 10, "right") if masked else None
    fused = enc(tokens, attention_mask=mask)
    hooked, cache = enc.run_with_cache(tokens, attention_mask=mask, names_filter=_pattern_hooks)
    assert len(cache.keys()) == 2                       # the explicit path ran (and hooked)
    torch.testing.assert_close(hooked, fused, **TOL)

    s2s = seq2seq("pre", positional)
    src, tgt = ids((3, 12), V_SRC, 19), ids((3, 9), V_TGT, 20)
    smask = pad_mask([12, 5, 8], 12, "left") if masked else None
    tmask = pad_mask([9, 3, 6], 9, "right") if masked else None
    fused = s2s(src, tgt, src_attention_mask=smask, tgt_attention_mask=tmask)
    hooked, cache = s2s.run_with_cache(src, tgt, src_attention_mask=smask,
                                       tgt_attention_mask=tmask, names_filter=_pattern_hooks)
    assert len(cache.keys()) == 6                       # 2 encoder, 2 self, 2 cross patterns
    torch.testing.assert_close(hooked, fused, **TOL)
    for name in cache.keys():
        torch.testing.assert_close(cache[name].sum(-1), torch.ones(cache[name].shape[:-1]),
                                   **TOL)


# ---- 3. generation: KV cache, greedy, beam search --------------------------------------------

SRC_LENGTHS = [12, 5, 9]


def gen_inputs(seed=21):
    src = ids((3, 12), V_SRC, seed)
    mask = pad_mask(SRC_LENGTHS, 12, "right")
    mask[2] = pad_mask([9], 12, "left")[0]              # one row left-padded
    return src, mask


def first_eos_mask(seqs):
    """[batch new] True at the generated tokens up to and including the first EOS."""
    gen = seqs[:, 1:]
    before = (gen == EOS).long().cumsum(1) - (gen == EOS).long()
    return before == 0


def rescore(model, src, mask, seqs):
    """Summed log-probabilities of the generated tokens (through the first EOS), by a
    teacher-forced forward."""
    logp = model(src, seqs[:, :-1], src_attention_mask=mask).log_softmax(-1)
    tok = logp.gather(-1, seqs[:, 1:, None])[..., 0]
    return (tok * first_eos_mask(seqs)).sum(1)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_generate_with_cache_equals_without(positional):
    model = seq2seq("pre", positional, seed=1)
    src, mask = gen_inputs()
    for beam in (1, 2, 3, 4):
        a, sa = model.generate(src, mask, beam=beam, use_cache=True, return_scores=True)
        b, sb = model.generate(src, mask, beam=beam, use_cache=False, return_scores=True)
        assert torch.equal(a, b), beam
        torch.testing.assert_close(sa, sb, **TOL)
        assert a[:, 0].eq(BOS).all() and a.shape[1] <= 1 + model.cfg.n_ctx_tgt
        torch.testing.assert_close(rescore(model, src, mask, a), sa, atol=1e-4, rtol=1e-5)
        # Each row is what the source alone (unpadded) generates.
        for i in range(len(SRC_LENGTHS)):
            alone = model.generate(src[i:i + 1][mask[i:i + 1]][None], beam=beam)
            row = a[i, :alone.shape[1]]
            assert torch.equal(row, alone[0]), (beam, i)
            assert a[i, alone.shape[1]:].eq(PAD).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_is_argmax_decoding_written_out(seed):
    model = seq2seq("post", "rotary", seed=seed)
    src, mask = gen_inputs(seed + 30)
    out = model.generate(src, mask, beam=1)
    seqs = torch.full((3, 1), BOS)
    done = torch.zeros(3, dtype=torch.bool)
    for _ in range(model.cfg.n_ctx_tgt):       # n_ctx_tgt new tokens at most
        nxt = model(src, seqs, src_attention_mask=mask)[:, -1].argmax(-1)
        nxt = torch.where(done, torch.tensor(PAD), nxt)
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        done |= nxt == EOS
        if done.all():
            break
    assert torch.equal(out, seqs)
    # Teacher-forced re-run of the produced prefix: argmax is the next token, up to EOS.
    pred = model(src, out[:, :-1], src_attention_mask=mask).argmax(-1)
    real = first_eos_mask(out)
    assert torch.equal(pred[real], out[:, 1:][real])


def test_generation_exercises_eos_and_padding():
    """The random models above do end sequences early (so the EOS and pad paths run)."""
    ended = 0
    for seed in (0, 1, 2):
        model = seq2seq("post", "rotary", seed=seed)
        out = model.generate(*gen_inputs(seed + 30))
        ended += int((out[:, -1] == PAD).sum())
    assert ended > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_beam_scores_are_log_probs_and_beam_finds_the_exact_best(seed):
    # Beam search in general can return a worse sequence than greedy; what holds always: the
    # returned score is the sequence's log-probability, and a beam as wide as the vocabulary
    # over two steps is an exhaustive search, so it finds the best sequence (>= greedy).
    model = seq2seq("pre", "learned", d_vocab_tgt=5, seed=seed)
    src, mask = gen_inputs(seed + 40)
    for beam in (1, 2, 3, 4):
        seqs, scores = model.generate(src, mask, beam=beam, length_penalty=0.0,
                                      return_scores=True)
        torch.testing.assert_close(rescore(model, src, mask, seqs), scores, atol=1e-4, rtol=0)
    greedy, g_score = model.generate(src, mask, max_new_tokens=2, return_scores=True)
    best, b_score = model.generate(src, mask, max_new_tokens=2, beam=5, length_penalty=0.0,
                                   return_scores=True)
    # Exhaustive: every (t1, t2), t1 == EOS ends the sequence.
    exact = torch.full((3,), float("-inf"))
    for t1, t2 in itertools.product(range(5), range(5)):
        if t1 == EOS and t2 != PAD:
            continue
        seq = torch.tensor([[BOS, t1, t2]] * 3)
        exact = torch.maximum(exact, rescore(model, src, mask, seq))
    torch.testing.assert_close(b_score, exact, atol=1e-4, rtol=0)
    assert (b_score >= g_score - 1e-5).all()
    torch.testing.assert_close(rescore(model, src, mask, best), b_score, atol=1e-4, rtol=0)


# ---- 4. hook names and switched hooks --------------------------------------------------------

TL_ENCODER_1_LAYER = {
    "embed.ln.hook_scale", "embed.ln.hook_normalized", "embed.hook_embed",
    "embed.hook_pos_embed", "embed.hook_token_type_embed",
    *(f"blocks.0.attn.{h}" for h in ("hook_k", "hook_q", "hook_v", "hook_z", "hook_attn_scores",
                                     "hook_pattern", "hook_result")),
    "blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized",
    "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
    "blocks.0.ln2.hook_scale", "blocks.0.ln2.hook_normalized",
    *(f"blocks.0.{h}" for h in ("hook_q_input", "hook_k_input", "hook_v_input", "hook_attn_out",
                                "hook_mlp_in", "hook_mlp_out", "hook_resid_pre",
                                "hook_resid_mid", "hook_resid_post",
                                "hook_normalized_resid_post")),
    "mlm_head.ln.hook_scale", "mlm_head.ln.hook_normalized",
    "unembed.hook_in", "unembed.hook_out", "nsp_head.hook_nsp_out",
    "pooler.hook_pooler_out", "hook_full_embed",
}   # TransformerLens 3.9 HookedEncoder (BERT), 1 layer


def _ln(prefix):
    return {f"{prefix}.hook_scale", f"{prefix}.hook_normalized"}


ATTN_HOOKS = ("hook_k", "hook_q", "hook_v", "hook_z", "hook_attn_scores", "hook_pattern",
              "hook_result")
TL_ENCODER_DECODER_1_1 = {
    *_ln("encoder.0.ln1"), *_ln("encoder.0.ln2"),
    *(f"encoder.0.attn.{h}" for h in ATTN_HOOKS), "encoder.0.attn.rel_pos_hook",
    "encoder.0.mlp.hook_pre", "encoder.0.mlp.hook_post",
    *(f"encoder.0.{h}" for h in ("hook_q_input", "hook_k_input", "hook_v_input", "hook_attn_in",
                                 "hook_attn_out", "hook_mlp_in", "hook_mlp_out",
                                 "hook_resid_pre", "hook_resid_mid", "hook_resid_post")),
    *_ln("encoder_final_ln"),
    *_ln("decoder.0.ln1"), *_ln("decoder.0.ln2"), *_ln("decoder.0.ln3"),
    *(f"decoder.0.attn.{h}" for h in ATTN_HOOKS), "decoder.0.attn.rel_pos_hook",
    *(f"decoder.0.cross_attn.{h}" for h in ATTN_HOOKS),
    "decoder.0.mlp.hook_pre", "decoder.0.mlp.hook_post",
    *(f"decoder.0.{h}" for h in ("hook_q_input", "hook_k_input", "hook_v_input", "hook_attn_in",
                                 "hook_attn_out", "hook_cross_attn_in", "hook_cross_attn_out",
                                 "hook_resid_mid_cross", "hook_mlp_in", "hook_mlp_out",
                                 "hook_resid_pre", "hook_resid_mid", "hook_resid_post")),
    *_ln("decoder_final_ln"), "unembed.hook_in", "unembed.hook_out", "hook_embed",
}   # TransformerLens 3.9 HookedEncoderDecoder (T5), 1 + 1 layers


def test_encoder_hook_names_are_hooked_encoders():
    model = encoder("post", "learned", n_layers=1, n_token_types=2, mlm_head="bert",
                    n_classes=3)
    ours = set(model.hook_dict)
    # We have no next-sentence head; we add the classifier's output and hook_attn_in (the
    # use_attn_in switch, which TL's BertBlock lacks).
    assert TL_ENCODER_1_LAYER - ours == {"nsp_head.hook_nsp_out"}
    assert ours - TL_ENCODER_1_LAYER == {"classifier.hook_out", "blocks.0.hook_attn_in"}
    no_classifier = encoder("post", "learned", n_layers=1, n_token_types=2)
    assert "classifier.hook_out" not in no_classifier.hook_dict


def test_seq2seq_hook_names_are_hooked_encoder_decoders():
    model = seq2seq("pre", "learned", n_layers=1, n_decoder_layers=1)
    ours = set(model.hook_dict)
    # T5's relative position bias is TL-only; we add the target's own embedding hooks and the
    # (learned/sinusoidal) position hooks. Our hook_embed is the SOURCE embedding; TL's T5
    # calls its one hook_embed for both sides, so its cache keeps the decoder's.
    assert TL_ENCODER_DECODER_1_1 - ours == {"encoder.0.attn.rel_pos_hook",
                                             "decoder.0.attn.rel_pos_hook"}
    assert ours - TL_ENCODER_DECODER_1_1 == {"hook_tgt_embed", "hook_pos_embed",
                                             "hook_tgt_pos_embed"}
    src, tgt = ids((2, 7), V_SRC, 50), ids((2, 4), V_TGT, 51)
    _, cache = model.run_with_cache(src, tgt, names_filter=["hook_embed", "hook_tgt_embed"])
    torch.testing.assert_close(cache["hook_embed"], model.W_E[src])
    torch.testing.assert_close(cache["hook_tgt_embed"], model.W_E_target[tgt])


@pytest.mark.parametrize("side", SIDES)
def test_cross_attention_pattern(side):
    model = seq2seq("pre", "learned")
    src, tgt = ids((3, 12), V_SRC, 52), ids((3, 7), V_TGT, 53)
    smask = pad_mask([12, 4, 9], 12, side)
    _, cache = model.run_with_cache(src, tgt, src_attention_mask=smask,
                                    names_filter=lambda n: n.endswith("cross_attn.hook_pattern"))
    for layer in (0, 1):
        p = cache[f"decoder.{layer}.cross_attn.hook_pattern"]
        assert p.shape == (3, 4, 7, 12)                 # [batch head tgt src]
        torch.testing.assert_close(p.sum(-1), torch.ones(3, 4, 7), **TOL)
        assert (p.movedim(3, 1)[~smask] == 0).all()     # every padded source key: 0
        assert (p.movedim(3, 1)[smask] > 0).all()


def test_switched_hooks_raise_until_switched_on_then_sum_to_the_output():
    model = seq2seq("pre", "learned")
    src, tgt = ids((2, 8), V_SRC, 54), ids((2, 6), V_TGT, 55)
    smask = pad_mask([8, 5], 8, "right")
    ref = model(src, tgt, src_attention_mask=smask)
    switched = {"decoder.0.cross_attn.hook_result": model.set_use_attn_result,
                "encoder.1.attn.hook_result": model.set_use_attn_result,
                "decoder.1.hook_q_input": model.set_use_split_qkv_input,
                "decoder.0.hook_mlp_in": model.set_use_hook_mlp_in,
                "decoder.0.hook_cross_attn_in": model.set_use_attn_in,
                "encoder.0.hook_attn_in": model.set_use_attn_in}
    for name, setter in switched.items():
        with pytest.raises(HookSwitchError, match=rf"{name} only fires after model\."
                                                  rf"{setter.__name__}\(True\)"):
            model.run_with_hooks(src, tgt, src_attention_mask=smask,
                                 fwd_hooks=[(name, lambda x, hook: None)])
        with pytest.raises(HookSwitchError, match=setter.__name__):
            model.add_hook(name, lambda x, hook: None)
        # As on TL's HookedTransformer, run_with_cache skips a switched-off point (so caching
        # everything works without the switches): it is absent from the cache.
        _, cache = model.run_with_cache(src, tgt, src_attention_mask=smask, names_filter=[name])
        assert name not in cache.keys()
    for name, setter in switched.items():
        setter(True)
        logits, cache = model.run_with_cache(src, tgt, src_attention_mask=smask,
                                             names_filter=[name])
        assert name in cache.keys()
        torch.testing.assert_close(logits, ref, **TOL)   # the switch changes no output
        setter(False)
    model.set_use_attn_result(True)
    names = ["decoder.0.cross_attn.hook_result", "decoder.0.hook_cross_attn_out",
             "encoder.1.attn.hook_result", "encoder.1.hook_attn_out"]
    _, cache = model.run_with_cache(src, tgt, src_attention_mask=smask, names_filter=names)
    assert cache[names[0]].shape == (2, 6, 4, 32)       # [batch pos head d_model]
    torch.testing.assert_close(cache[names[0]].sum(2),
                               cache[names[1]] - model.decoder[0].cross_attn.b_O, **TOL)
    torch.testing.assert_close(cache[names[2]].sum(2),
                               cache[names[3]] - model.encoder[1].attn.b_O, **TOL)

    enc = encoder("post", "learned")
    with pytest.raises(HookSwitchError, match="set_use_attn_result"):
        enc.run_with_hooks(ids((1, 5), V_SRC, 56),
                           fwd_hooks=[("blocks.0.attn.hook_result", lambda x, hook: None)])
    enc.set_use_attn_result(True)
    _, cache = enc.run_with_cache(ids((1, 5), V_SRC, 56),
                                  names_filter=["blocks.0.attn.hook_result",
                                                "blocks.0.hook_attn_out"])
    torch.testing.assert_close(cache["blocks.0.attn.hook_result"].sum(2),
                               cache["blocks.0.hook_attn_out"] - enc.blocks[0].attn.b_O, **TOL)


# ---- 5. ablation, unknown names, save / load -------------------------------------------------

def test_cross_attention_ablation_cuts_the_source_off():
    model = seq2seq("pre", "learned", n_decoder_layers=1)
    src, tgt = ids((2, 8), V_SRC, 57), ids((2, 6), V_TGT, 58)
    other = ids((2, 8), V_SRC, 59)
    zero = [("decoder.0.hook_cross_attn_out", lambda x, hook: torch.zeros_like(x))]
    plain = model(src, tgt)
    ablated = model.run_with_hooks(src, tgt, fwd_hooks=zero)
    assert not torch.allclose(plain, ablated, **TOL)
    # With the only cross-attention zeroed the decoder cannot depend on the source at all.
    torch.testing.assert_close(model.run_with_hooks(other, tgt, fwd_hooks=zero), ablated, **TOL)
    assert not torch.allclose(model(other, tgt), plain, **TOL)
    torch.testing.assert_close(model(src, tgt), plain)   # the hook is gone afterwards


def test_unknown_hook_name_lists_close_matches():
    model = seq2seq("pre", "learned")
    with pytest.raises(ValueError, match=r"no hook point named 'decoder.0.hook_cross_atn_out'"
                                         r".*close matches: .*decoder.0.hook_cross_attn_out"):
        model.run_with_hooks(ids((1, 4), V_SRC, 0), ids((1, 3), V_TGT, 0),
                             fwd_hooks=[("decoder.0.hook_cross_atn_out", lambda x, hook: x)])
    enc = encoder()
    with pytest.raises(ValueError, match=r"close matches: .*blocks.0.attn.hook_pattern"):
        enc.run_with_cache(ids((1, 4), V_SRC, 0), names_filter=["blocks.0.attn.hook_patern"])


def test_save_load_round_trip_and_tampering(tmp_path):
    enc = encoder("pre", "rotary", n_token_types=2, n_classes=2, seed=3)
    s2s = seq2seq("post", "sinusoidal", tied_embeddings=True, seed=4)
    tokens, mask = ids((2, 9), V_SRC, 60), pad_mask([9, 4], 9, "left")
    src, tgt = ids((2, 10), V_SRC, 61), ids((2, 5), V_TGT, 62)
    for model, cls, args, kw in (
            (enc, Encoder, (tokens,), dict(attention_mask=mask)),
            (s2s, Seq2Seq, (src, tgt), dict(src_attention_mask=pad_mask([10, 3], 10, "right")))):
        folder = model.save(tmp_path / cls.__name__)
        loaded = cls.load(folder).eval()
        assert loaded.cfg == model.cfg
        torch.testing.assert_close(loaded(*args, **kw), model(*args, **kw), atol=0, rtol=0)
        weights = folder / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0xFF                                 # one flipped byte in the weights
        weights.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="corrupt"):
            cls.load(folder)
    # A hand-edited config that does not fit the weights.
    folder = s2s.save(tmp_path / "edited")
    cfg_file = folder / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["d_model"] = 64
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError):
        Seq2Seq.load(folder)


# ---- 6. bad input: clear ValueErrors ---------------------------------------------------------

def test_bad_masks(user_errors):
    enc, s2s = encoder(), seq2seq()
    tokens = ids((2, 6), V_SRC, 63)
    good = torch.ones(2, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"attention_mask must have the tokens' shape \[2, 6\]"):
        enc(tokens, attention_mask=good[:, :5])
    with pytest.raises(ValueError, match="must be bool or hold only 0 and 1"):
        enc(tokens, attention_mask=good.long() * 2)
    with pytest.raises(ValueError, match="must be bool or hold only 0 and 1"):
        enc(tokens, attention_mask=good.float())
    all_pad = good.clone()
    all_pad[1] = False
    with pytest.raises(ValueError, match=r"sequence\(s\) \[1\] are all padding"):
        enc(tokens, attention_mask=all_pad)
    enc(tokens, attention_mask=good.long())              # 0/1 integers are fine
    src, tgt = ids((2, 6), V_SRC, 64), ids((2, 4), V_TGT, 65)
    with pytest.raises(ValueError, match="src_attention_mask must have the tokens' shape"):
        s2s(src, tgt, src_attention_mask=good[:, :4])
    with pytest.raises(ValueError, match="tgt_attention_mask must have the tokens' shape"):
        s2s(src, tgt, tgt_attention_mask=good)
    with pytest.raises(ValueError, match="src_attention_mask: .* all padding"):
        s2s(src, tgt, src_attention_mask=all_pad)
    with pytest.raises(ValueError, match="src_attention_mask: .* all padding"):
        s2s.generate(src, all_pad)


def test_bad_token_ids_and_lengths(user_errors):
    enc, s2s = encoder(), seq2seq()
    src, tgt = ids((2, 6), V_SRC, 66), ids((2, 4), V_TGT, 67)
    with pytest.raises(ValueError, match=r"src: token ids must lie in \[0, d_vocab=13\)"):
        s2s(src + V_SRC, tgt)
    bad_tgt = tgt.clone()
    bad_tgt[0, 0] = V_TGT + 1                            # a source id, not a target id
    with pytest.raises(ValueError, match=r"tgt: token ids must lie in \[0, vocab_tgt=11\)"):
        s2s(src, bad_tgt)
    with pytest.raises(ValueError, match="tgt: sequence length 11 exceeds the model's context "
                                         "n_ctx_tgt=10"):
        s2s(src, ids((2, 11), V_TGT, 68))
    with pytest.raises(ValueError, match="src: sequence length 13 exceeds"):
        s2s(ids((2, 13), V_SRC, 69), tgt)
    with pytest.raises(ValueError, match=r"tokens: token ids must lie in \[0, d_vocab=13\)"):
        enc(-src)
    with pytest.raises(ValueError, match="use tokens\\[None\\] for a single sequence"):
        enc(src[0])
    with pytest.raises(ValueError, match="no token types"):
        enc(src, token_type_ids=torch.zeros_like(src))
    with pytest.raises(ValueError,
                       match=r"token_type_ids: token ids must lie in \[0, n_token_types=2\)"):
        encoder(n_token_types=2)(src, token_type_ids=torch.full_like(src, 2))


def test_bad_generate_arguments(user_errors):
    s2s = seq2seq()
    src = ids((2, 6), V_SRC, 70)
    for beam in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="beam must be an int >= 1"):
            s2s.generate(src, beam=beam)
    with pytest.raises(ValueError, match="exceeds the target vocabulary"):
        s2s.generate(src, beam=V_TGT + 1)
    with pytest.raises(ValueError, match="max_new_tokens=11 would make the decoder input longer "
                                         "than its context n_ctx_tgt=10"):
        s2s.generate(src, max_new_tokens=11)
    assert s2s.generate(src, max_new_tokens=10, eos_id=None).shape == (2, 11)
    no_bos = seq2seq(bos_id=None)
    with pytest.raises(ValueError, match="generate needs the decoder's start token"):
        no_bos.generate(src)
    assert no_bos.generate(src, bos_id=BOS).shape[0] == 2
    with pytest.raises(ValueError, match=r"eos_id must be a target token id in \[0, 11\)"):
        s2s.generate(src, eos_id=V_TGT)


def test_bad_losses_and_configs(user_errors):
    enc = encoder()
    tokens = ids((2, 6), V_SRC, 71)
    with pytest.raises(ValueError, match="labels are -100 everywhere"):
        enc(tokens, "loss", labels=torch.full_like(tokens, -100))
    with pytest.raises(ValueError, match="labels are -100 everywhere"):
        mlm_loss(torch.zeros(2, 6, V_SRC), torch.full((2, 6), -100))
    with pytest.raises(ValueError, match="needs labels"):
        enc(tokens, "loss")
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by n_heads \(4\)"):
        EncoderConfig(d_vocab=10, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by n_heads \(4\)"):
        Seq2SeqConfig(d_vocab=10, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="bos_id=11 is not a target token id: the target "
                                         "vocabulary has 11 ids"):
        Seq2SeqConfig(d_vocab=20, d_vocab_tgt=11, bos_id=11)
    with pytest.raises(ValueError, match="eos_id=20 is not a target token id"):
        Seq2SeqConfig(d_vocab=20, eos_id=20)


@pytest.mark.parametrize("hooked", [False, True])
def test_decode_takes_a_0_1_integer_source_mask(hooked):
    # catches: decode() (public) passing a 0/1 integer mask to the attention as-is (a
    # RuntimeError from scaled_dot_product_attention, or masked_fill on ~int: all masked).
    model = seq2seq("pre", "learned")
    src, tgt = ids((2, 8), V_SRC, 72), ids((2, 5), V_TGT, 73)
    mask = pad_mask([8, 5], 8, "right")
    ref = model(src, tgt, src_attention_mask=mask)
    names = (lambda n: n.endswith("cross_attn.hook_pattern")) if hooked else (lambda n: False)
    with model.hooks(fwd_hooks=[(names, lambda t, hook: None)]):
        out = model.decode(model.encode(src, mask), tgt, src_attention_mask=mask.long())
    torch.testing.assert_close(out, ref, **TOL)
