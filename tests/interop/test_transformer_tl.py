"""Our Encoder and TransformerLens 3.9's HookedEncoder (BERT) are interchangeable: with the same
weights (copied either way by transformer.convert) they give the same MLM logits, the same pooled
output and the same value at every hook both have, with and without a (right-)padding mask; our
hook names are TL's (ours lack only the NSP head's); TL's ActivationCache tools read our cache as
they read TL's. Our Seq2Seq carries HookedEncoderDecoder's hook names (T5's relative position
bias aside)."""

from __future__ import annotations

import warnings

import pytest
import torch
from tl_support import perturb
from transformer_lens import HookedEncoder, HookedEncoderDecoder, HookedTransformerConfig

from superpose.transformer import Encoder, EncoderConfig, Seq2Seq, Seq2SeqConfig
from superpose.transformer.convert import (
    TransformerLensVersionError,
    from_hooked_encoder,
    to_hooked_encoder,
)

pytestmark = pytest.mark.science   # the interop tier (make test-science)

V, CTX = 23, 10
TOL = dict(atol=1e-5, rtol=1e-5)


def random_encoder(**kw) -> Encoder:
    """An Encoder whose every weight is non-trivial (LN gains and biases too), so that a hook
    read before or after a weight cannot agree with its twin by accident."""
    cfg = EncoderConfig(**{"d_vocab": V, "n_layers": 2, "d_model": 16, "n_heads": 4, "n_ctx": CTX,
                           "d_mlp": 24, "init_std": 0.3, "seed": 3, "n_token_types": 2, **kw})
    return perturb(Encoder(cfg, device="cpu").eval(), seed=7)


def tokens(batch: int = 3, pos: int = CTX, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, pos), generator=torch.Generator().manual_seed(seed))


def right_mask(lengths: list[int], pos: int = CTX) -> torch.Tensor:
    """[batch pos] 1 at real tokens, right-padded (0 after each row's length)."""
    return (torch.arange(pos)[None, :] < torch.tensor(lengths)[:, None]).long()


def real_positions(x: torch.Tensor, name: str, mask: torch.Tensor | None) -> torch.Tensor:
    """`x` at real query positions only: TL gives a padded position its arange position, ours
    gives it 0, so padded positions differ by design; real ones must not (right padding)."""
    if mask is None:
        return x
    m = mask.bool()
    if name.endswith(("hook_attn_scores", "hook_pattern")):     # [batch head q k]
        return x.transpose(1, 2)[m]
    return x[m]                                                  # [batch pos ...]


def compare_caches(c_ours, c_tl, mask: torch.Tensor | None = None) -> set[str]:
    common = set(c_ours.keys()) & set(c_tl.keys())
    for name in sorted(common):
        torch.testing.assert_close(real_positions(c_ours[name], name, mask),
                                   real_positions(c_tl[name], name, mask), **TOL, msg=name)
    return common


def tl_bert_config(**kw) -> HookedTransformerConfig:
    return HookedTransformerConfig(**{
        "original_architecture": "BertForMaskedLM", "n_layers": 2, "d_model": 16, "n_ctx": CTX,
        "d_head": 4, "n_heads": 4, "d_mlp": 24, "d_vocab": V, "act_fn": "gelu",
        "attention_dir": "bidirectional", "device": "cpu", **kw})


def random_hooked_encoder(**kw) -> HookedEncoder:
    """A HookedEncoder built by TL (not by our converter) with random weights everywhere
    (HookedEncoder leaves its parameters uninitialised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        he = HookedEncoder(tl_bert_config(**kw), move_to_device=False)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in he.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.3 * noise if leaf == "w" else 0.3 * noise)
    return he.eval()


# ---- weights both ways: logits and every shared hook

@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "right-padded"])
@pytest.mark.parametrize("arch", [dict(), dict(n_token_types=0), dict(tied_embeddings=True),
                                  dict(n_token_types=1, ln_eps=1e-12)],
                         ids=["bert", "no-token-types", "tied", "one-type-eps"])
def test_to_hooked_encoder_same_logits_and_hooks(arch, padded):
    # catches: a weight under the wrong TL name or layout (q|k|v order of W_QKV, W_Q not
    # transposed, W_O, MLM-head W transposed), LN w and b swapped, ln1 / ln2 read in the wrong
    # place of the post-LN block (TL's hook_resid_mid / hook_resid_post are the sums before LN),
    # token types missing their zero row, tied W_U not carried, eps not carried, a padding mask
    # read the wrong way round, a hook that fires on a different value than TL's.
    enc = random_encoder(**arch)
    he = to_hooked_encoder(enc)
    assert isinstance(he, HookedEncoder)
    assert he.cfg.attention_dir == "bidirectional" and he.cfg.eps == enc.cfg.ln_eps
    t = tokens()
    mask = right_mask([CTX, 6, 3]) if padded else None
    tl_kw = {} if mask is None else {"one_zero_attention_mask": mask}
    ours, c1 = enc.run_with_cache(t, attention_mask=mask)
    theirs, c2 = he.run_with_cache(t, **tl_kw)
    torch.testing.assert_close(real_positions(ours, "logits", mask),
                               real_positions(theirs, "logits", mask), **TOL)
    fast = enc(t, attention_mask=mask)                # our fused path (SDPA, F.layer_norm) too
    torch.testing.assert_close(real_positions(fast, "logits", mask),
                               real_positions(theirs, "logits", mask), **TOL)
    common = compare_caches(c1, c2, mask)
    # Everything TL caches we cache too (token types only when we have them).
    no_types = {"embed.hook_token_type_embed"} if not enc.cfg.n_token_types else set()
    assert set(c2.keys()) - set(c1.keys()) == no_types
    assert {"blocks.1.attn.hook_pattern", "blocks.1.hook_normalized_resid_post",
            "mlm_head.ln.hook_normalized", "embed.ln.hook_scale"} <= common


@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "right-padded"])
def test_from_hooked_encoder_same_logits_and_hooks(padded):
    # catches: from_hooked_encoder writing W_Q into the fused W_QKV untransposed or in the wrong
    # slot, dropping a bias, reading token types wrongly, or configuring a different eps.
    he = random_hooked_encoder(eps=1e-12)
    enc = from_hooked_encoder(he)
    assert isinstance(enc, Encoder)
    assert enc.cfg.n_token_types == 2 and enc.cfg.ln_eps == 1e-12 and not enc.cfg.tied_embeddings
    t = tokens(seed=1)
    types = torch.randint(0, 2, t.shape, generator=torch.Generator().manual_seed(2))
    mask = right_mask([4, CTX, 7]) if padded else None
    tl_kw = {} if mask is None else {"one_zero_attention_mask": mask}
    ours, c1 = enc.run_with_cache(t, attention_mask=mask, token_type_ids=types)
    theirs, c2 = he.run_with_cache(t, token_type_ids=types, **tl_kw)
    torch.testing.assert_close(real_positions(ours, "logits", mask),
                               real_positions(theirs, "logits", mask), **TOL)
    compare_caches(c1, c2, mask)
    assert set(c2.keys()) <= set(c1.keys())


def test_round_trip_keeps_every_weight():
    # catches: a weight lost or altered on the way there and back (the fused W_QKV, the pooler,
    # the MLM head), and a zero token-type table not read back as n_token_types=0.
    for arch in (dict(), dict(n_token_types=0)):
        enc = random_encoder(**arch)
        back = from_hooked_encoder(to_hooked_encoder(enc))
        assert back.cfg.n_token_types == enc.cfg.n_token_types
        s1, s2 = enc.state_dict(), back.state_dict()
        assert set(s1) == set(s2)
        for k in s1:
            torch.testing.assert_close(s1[k], s2[k], atol=0, rtol=0, msg=k)
    he = random_hooked_encoder()
    again = to_hooked_encoder(from_hooked_encoder(he))
    for k, p in he.named_parameters():
        if not k.startswith("nsp_head."):          # we have no NSP head
            torch.testing.assert_close(p, again.get_parameter(k), atol=0, rtol=0, msg=k)


def test_hook_names_are_tls_minus_the_nsp_head():
    # catches: a TL HookedEncoder hook we lack or misname (ln hooks, hook_normalized_resid_post,
    # the split-qkv inputs, hook_result, unembed hooks).
    enc = random_encoder()
    he = to_hooked_encoder(enc)
    assert set(he.hook_dict) - set(enc.hook_dict) == {"nsp_head.hook_nsp_out"}
    # ours has TL's HookedTransformer hook_attn_in besides (TL's BertBlock lacks it).
    assert set(enc.hook_dict) - set(he.hook_dict) == {
        f"blocks.{i}.hook_attn_in" for i in range(enc.cfg.n_layers)}


@pytest.mark.parametrize("switch", [
    "set_use_attn_result", "set_use_split_qkv_input",
    "set_use_hook_mlp_in",
])
def test_switched_hooks_match_hooked_encoder(switch):
    # catches: a runtime switch not carried by to_hooked_encoder, or whose hook fires a value
    # other than TL's BertBlock's (split inputs, per-head results, the MLP input).
    enc = random_encoder()
    getattr(enc, switch)(True)
    he = to_hooked_encoder(enc)
    t = tokens()
    l1, c1 = enc.run_with_cache(t)
    l2, c2 = he.run_with_cache(t)
    torch.testing.assert_close(l1, l2, **TOL)
    common = compare_caches(c1, c2)
    new = {"set_use_attn_result": "blocks.0.attn.hook_result",
           "set_use_split_qkv_input": "blocks.0.hook_q_input",
           "set_use_hook_mlp_in": "blocks.0.hook_mlp_in"}[switch]
    assert new in common
    back = from_hooked_encoder(he)
    assert getattr(back.cfg, switch.removeprefix("set_"))


# ---- the pooled output

def test_pooled_output_matches_tl_pooler_with_right_padding():
    # catches: our pooler reading another position than TL's (position 0 = [CLS] when right-
    # padded) or its W transposed; and it shows ours is padding-invariant: a left-padded batch
    # pools the first real token, which TL (reading position 0) only matches right-padded.
    enc = random_encoder()
    he = to_hooked_encoder(enc)
    t = tokens(seed=3)
    lengths = [CTX, 5, 2]
    mask = right_mask(lengths)
    ours = enc(t, "pooled", attention_mask=mask)
    with torch.no_grad():
        theirs = he.pooler(he.encoder_output(t, None, mask))
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(enc(t, "pooled"), he.pooler(he.encoder_output(t)), **TOL)
    # The same rows left-padded: ours pools the first real token, the same vector.
    left = torch.zeros_like(t)
    left_mask = torch.zeros_like(mask)
    for i, n in enumerate(lengths):
        left[i, CTX - n:], left_mask[i, CTX - n:] = t[i, :n], 1
    torch.testing.assert_close(enc(left, "pooled", attention_mask=left_mask), theirs, **TOL)
    # hook_pooler_out carries it under TL's name.
    _, cache = enc.run_with_cache(t, "pooled", attention_mask=mask)
    torch.testing.assert_close(cache["pooler.hook_pooler_out"], theirs, **TOL)


# ---- TL's ActivationCache tools on our cache

def test_tl_activation_cache_tools_work_on_our_cache():
    # catches: a cache whose keys, shapes or model surface (cfg.n_layers, blocks[i].attn.W_O,
    # mlp.W_out) TL's ActivationCache cannot read, or reads to other numbers than on TL's cache.
    enc = random_encoder()
    he = to_hooked_encoder(enc)
    t = tokens()
    _, c1 = enc.run_with_cache(t)
    _, c2 = he.run_with_cache(t)
    for name, f in {
        "accumulated_resid": lambda c: c.accumulated_resid(),
        "accumulated_resid_mid": lambda c: c.accumulated_resid(layer=1, incl_mid=True),
        "stack_head_results": lambda c: c.stack_head_results(),
        "stack_neuron_results": lambda c: c.stack_neuron_results(1),
        "pattern": lambda c: c["pattern", 0],
        "z": lambda c: c["z", 1, "attn"],
        "resid_post": lambda c: c["resid_post", 1],
        "ln1_normalized": lambda c: c["normalized", 0, "ln1"],
    }.items():
        torch.testing.assert_close(f(c1), f(c2), **TOL, msg=name)
    _, labels1 = c1.accumulated_resid(return_labels=True)
    _, labels2 = c2.accumulated_resid(return_labels=True)
    assert labels1 == labels2 == ["0_pre", "1_pre", "final_post"]


def test_tl_decompose_resid_on_our_cache():
    enc = random_encoder()
    he = to_hooked_encoder(enc)
    t = tokens()
    _, c1 = enc.run_with_cache(t)
    _, c2 = he.run_with_cache(t)
    torch.testing.assert_close(c1.decompose_resid(), c2.decompose_resid(), **TOL)


# ---- Seq2Seq: HookedEncoderDecoder's hook names

def test_seq2seq_hook_names_cover_hooked_encoder_decoder():
    # catches: a HookedEncoderDecoder hook name our Seq2Seq lacks or misnames (encoder.i /
    # decoder.i blocks, cross_attn hooks, ln1-3, encoder_final_ln / decoder_final_ln, unembed).
    # T5's relative position bias (rel_pos_hook) is an architecture we do not have.
    t5 = HookedTransformerConfig(
        original_architecture="T5ForConditionalGeneration", n_layers=2, d_model=16, n_ctx=CTX,
        d_head=4, n_heads=4, d_mlp=24, d_vocab=V, act_fn="relu",
        positional_embedding_type="relative_positional_bias", normalization_type="RMS",
        relative_attention_max_distance=8, relative_attention_num_buckets=4, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ed = HookedEncoderDecoder(t5, move_to_device=False)
    s2s = Seq2Seq(Seq2SeqConfig(d_vocab=V, n_layers=2, d_model=16, n_heads=4, n_ctx=CTX,
                                d_mlp=24, norm="pre"), device="cpu")
    theirs, ours = set(ed.hook_dict), set(s2s.hook_dict)
    missing = theirs - ours
    assert missing and all(n.endswith(".attn.rel_pos_hook") for n in missing), missing
    assert {"decoder.1.cross_attn.hook_pattern", "decoder.0.hook_resid_mid_cross",
            "encoder_final_ln.hook_normalized", "decoder_final_ln.hook_scale",
            "decoder.1.ln3.hook_normalized"} <= theirs & ours


# ---- refusals

@pytest.mark.parametrize("field,value", [
    ("norm", "pre"), ("positional", "rotary"), ("embed_ln", False), ("mlm_head", "linear"),
    ("act", "relu"), ("n_token_types", 3), ("n_classes", 2)])
def test_to_hooked_encoder_refuses_what_tl_bert_cannot_express(field, value):
    kw = {field: value}
    if field == "positional":
        kw["norm"] = "post"
    enc = random_encoder(**kw)
    with pytest.raises(ValueError, match=field):
        to_hooked_encoder(enc)


@pytest.mark.parametrize("field,value", [
    ("attention_dir", "causal"), ("act_fn", "relu"), ("gated_mlp", True)])
def test_from_hooked_encoder_refuses_what_our_encoder_cannot_express(field, value):
    he = random_hooked_encoder(**{field: value})
    with pytest.raises(ValueError, match=field):
        from_hooked_encoder(he)


def test_transformer_lens_4_is_refused_by_name(monkeypatch):
    # catches: a bare AttributeError / ImportError from deep inside TL 4.x instead of a message
    # that names the installed version and TransformerLens 3.x (TL 4.0 removed HookedEncoder).
    import transformer_lens
    monkeypatch.delattr(transformer_lens, "HookedEncoder")
    with pytest.raises(TransformerLensVersionError, match=r"3\.x") as err:
        to_hooked_encoder(random_encoder())
    assert isinstance(err.value, ValueError) and isinstance(err.value, ImportError)
    assert "3.9" in str(err.value)           # the installed version, named
