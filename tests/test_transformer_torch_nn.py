"""Our encoder and encoder–decoder against an implementation nobody here wrote: torch.nn's
TransformerEncoder / Transformer, with our weights copied in. Positions and embeddings stay
ours (torch has none): both run from the embedded input (our first block's hook_resid_pre) to
the last residual stream, with padding masks (torch's key_padding_mask is True at padding, the
opposite of our attention_mask), post-LN and pre-LN, compared at the real positions.

Weight mapping (checked by these tests, and directly on one attention layer):
  MultiheadAttention.in_proj_weight [3 d, d] = W_QKV.reshape(3 h d_head, d)  (rows q | k | v,
      head-major inside each), in_proj_bias = b_QKV.reshape(-1)
  out_proj.weight = W_O.reshape(h d_head, d).T, out_proj.bias = b_O
  linear1.weight = W_in.T, linear2.weight = W_out.T (biases b_in, b_out)
  encoder layer: norm1 = ln1 (self-attention), norm2 = ln2 (MLP)
  decoder layer: norm1 = ln1 (self-attention), norm2 = ln2 (cross-attention, multihead_attn),
      norm3 = ln3 (MLP)
  pre-LN: TransformerEncoder.norm = ln_final / encoder_final_ln, TransformerDecoder.norm =
      decoder_final_ln; post-LN: no final norm (torch's Transformer always adds one, so the
      stacks are built by hand and passed as custom_encoder / custom_decoder).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from superpose.transformer import Encoder, EncoderConfig, Seq2Seq, Seq2SeqConfig
from superpose.transformer.parts import Attention, LayerNorm

D, H, MLP_D, V = 32, 4, 64, 17
ATOL = dict(atol=1e-5, rtol=1e-5)


def ids(shape, vocab, seed):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def pad_mask(lengths, pos, side):
    ar = torch.arange(pos)[None]
    n = torch.tensor(lengths)[:, None]
    return ar >= pos - n if side == "left" else ar < n


@torch.no_grad()
def randomize_norms(model, seed: int):
    """LayerNorm gains and biases away from 1 and 0 (their init), so that a LayerNorm copied
    to the wrong place shows."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, LayerNorm):
            m.w.copy_(1 + 0.3 * torch.randn(m.w.shape, generator=gen))
            m.b.copy_(0.3 * torch.randn(m.b.shape, generator=gen))
    return model


# ---- copying our weights into torch.nn modules -----------------------------------------------

def copy_ln(dst: nn.LayerNorm, src: LayerNorm) -> None:
    assert dst.eps == src.eps
    dst.weight.copy_(src.w)
    dst.bias.copy_(src.b)


def copy_attention(dst: nn.MultiheadAttention, src: Attention) -> None:
    h, dh, d = src.W_QKV.shape[1:]
    assert dst.embed_dim == d and dst.num_heads == h and dst.head_dim == dh
    dst.in_proj_weight.copy_(src.W_QKV.reshape(3 * h * dh, d))
    dst.in_proj_bias.copy_(src.b_QKV.reshape(-1))
    dst.out_proj.weight.copy_(src.W_O.reshape(h * dh, d).T)
    dst.out_proj.bias.copy_(src.b_O)


def copy_mlp(dst: nn.Module, block) -> None:
    dst.linear1.weight.copy_(block.mlp.W_in.T)
    dst.linear1.bias.copy_(block.mlp.b_in)
    dst.linear2.weight.copy_(block.mlp.W_out.T)
    dst.linear2.bias.copy_(block.mlp.b_out)


def encoder_layer(cfg) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, dim_feedforward=cfg.d_mlp,
                                      dropout=0.0, activation=cfg.act, batch_first=True,
                                      norm_first=cfg.norm == "pre", layer_norm_eps=cfg.ln_eps)


def decoder_layer(cfg) -> nn.TransformerDecoderLayer:
    return nn.TransformerDecoderLayer(cfg.d_model, cfg.n_heads, dim_feedforward=cfg.d_mlp,
                                      dropout=0.0, activation=cfg.act, batch_first=True,
                                      norm_first=cfg.norm == "pre", layer_norm_eps=cfg.ln_eps)


def torch_encoder_stack(cfg, n_layers: int, final_norm: bool) -> nn.TransformerEncoder:
    norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps) if final_norm else None
    return nn.TransformerEncoder(encoder_layer(cfg), n_layers, norm=norm,
                                 enable_nested_tensor=False)


def torch_decoder_stack(cfg, n_layers: int, final_norm: bool) -> nn.TransformerDecoder:
    norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps) if final_norm else None
    return nn.TransformerDecoder(decoder_layer(cfg), n_layers, norm=norm)


@torch.no_grad()
def copy_encoder_stack(dst: nn.TransformerEncoder, blocks, final_ln: LayerNorm | None) -> None:
    for layer, block in zip(dst.layers, blocks, strict=True):
        copy_attention(layer.self_attn, block.attn)
        copy_mlp(layer, block)
        copy_ln(layer.norm1, block.ln1)
        copy_ln(layer.norm2, block.ln2)
    assert (dst.norm is None) == (final_ln is None)
    if final_ln is not None:
        copy_ln(dst.norm, final_ln)


@torch.no_grad()
def copy_decoder_stack(dst: nn.TransformerDecoder, blocks, final_ln: LayerNorm | None) -> None:
    for layer, block in zip(dst.layers, blocks, strict=True):
        copy_attention(layer.self_attn, block.attn)
        copy_attention(layer.multihead_attn, block.cross_attn)
        copy_mlp(layer, block)
        copy_ln(layer.norm1, block.ln1)
        copy_ln(layer.norm2, block.ln2)
        copy_ln(layer.norm3, block.ln3)
    assert (dst.norm is None) == (final_ln is None)
    if final_ln is not None:
        copy_ln(dst.norm, final_ln)


def torch_encoder(model: Encoder) -> nn.TransformerEncoder:
    """Our encoder's block stack (+ ln_final for pre-LN) as a torch.nn.TransformerEncoder."""
    cfg = model.cfg
    stack = torch_encoder_stack(cfg, cfg.n_layers, cfg.norm == "pre")
    copy_encoder_stack(stack, model.blocks, getattr(model, "ln_final", None))
    return stack.eval()


def torch_transformer(model: Seq2Seq) -> nn.Transformer:
    """Our Seq2Seq's two stacks (+ final LayerNorms for pre-LN) as a torch.nn.Transformer.
    The weights are copied after construction: nn.Transformer re-initializes every matrix,
    custom_encoder / custom_decoder included (xavier_uniform_ in _reset_parameters)."""
    cfg = model.cfg
    pre = cfg.norm == "pre"
    ref = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.n_decoder_layers,
                         cfg.d_mlp, dropout=0.0, activation=cfg.act,
                         custom_encoder=torch_encoder_stack(cfg, cfg.n_layers, pre),
                         custom_decoder=torch_decoder_stack(cfg, cfg.n_decoder_layers, pre),
                         layer_norm_eps=cfg.ln_eps, batch_first=True, norm_first=pre)
    copy_encoder_stack(ref.encoder, model.encoder, getattr(model, "encoder_final_ln", None))
    copy_decoder_stack(ref.decoder, model.decoder, getattr(model, "decoder_final_ln", None))
    return ref.eval()


# ---- the comparisons -------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["left", "right"])
def test_one_attention_layer_matches_multihead_attention(side):
    cfg = EncoderConfig(d_vocab=V, n_layers=1, d_model=D, n_heads=H, d_mlp=MLP_D, n_ctx=12,
                        init_std=0.3, seed=5)
    ours = Attention(cfg, causal=False)
    with torch.no_grad():
        for p in (ours.W_QKV, ours.b_QKV, ours.W_O, ours.b_O):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
    mha = nn.MultiheadAttention(D, H, dropout=0.0, batch_first=True)
    with torch.no_grad():
        copy_attention(mha, ours)
    x = torch.randn(3, 9, D, generator=torch.Generator().manual_seed(1))
    mask = pad_mask([9, 4, 6], 9, side)
    want, weights = mha(x, x, x, key_padding_mask=~mask, average_attn_weights=False)
    with torch.no_grad():
        got = ours(x, key_mask=mask)
    torch.testing.assert_close(got[mask], want[mask], **ATOL)
    # Head-major rows: head 1's query weights are rows d_head..2 d_head of torch's W_q.
    dh = D // H
    torch.testing.assert_close(mha.in_proj_weight[dh:2 * dh], ours.W_Q[1].T)
    torch.testing.assert_close(mha.in_proj_weight[D + dh:D + 2 * dh], ours.W_K[1].T)
    # And the pattern, through our explicit (hooked) path.
    seen = {}
    ours.hook_pattern.add_hook(lambda t, hook: seen.setdefault("p", t.detach()))
    with torch.no_grad():
        ours(x, key_mask=mask)
    ours.hook_pattern.remove_hooks()
    torch.testing.assert_close(seen["p"].movedim(2, 1)[mask], weights.movedim(2, 1)[mask],
                               **ATOL)


@pytest.mark.parametrize("act", ["gelu", "relu"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_encoder_matches_torch_transformer_encoder(norm, side, act):
    model = Encoder(EncoderConfig(d_vocab=V, n_layers=2, d_model=D, n_heads=H, d_mlp=MLP_D,
                                  n_ctx=12, norm=norm, act=act, positional="learned",
                                  init_std=0.3, seed=7), device="cpu").eval()
    randomize_norms(model, 1)
    tokens = ids((3, 11), V, 1)
    mask = pad_mask([11, 5, 8], 11, side)
    ref = torch_encoder(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=mask,
                                        names_filter=["hook_full_embed"])
        ours = model.encoder_output(tokens, mask)
        theirs = ref(cache["hook_full_embed"], src_key_padding_mask=~mask)
    torch.testing.assert_close(ours[mask], theirs[mask], **ATOL)
    # torch's training-mode path (dropout is 0; no fused fast-path kernel) agrees too.
    with torch.no_grad():
        theirs_slow = ref.train()(cache["hook_full_embed"], src_key_padding_mask=~mask)
    torch.testing.assert_close(ours[mask], theirs_slow[mask], **ATOL)


@pytest.mark.parametrize("src_side", ["left", "right"])
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_seq2seq_matches_torch_transformer(norm, src_side):
    cfg = Seq2SeqConfig(d_vocab=V, d_vocab_tgt=V - 4, n_layers=2, n_decoder_layers=2, d_model=D,
                        n_heads=H, d_mlp=MLP_D, n_ctx=12, n_ctx_tgt=9, norm=norm,
                        positional="learned", init_std=0.3, seed=8)
    model = randomize_norms(Seq2Seq(cfg, device="cpu").eval(), 2)
    src, tgt = ids((3, 12), V, 2), ids((3, 9), V - 4, 3)
    smask = pad_mask([12, 4, 7], 12, src_side)
    # Targets right-padded: torch gives NaN for a query with no key at all (a left-padded
    # target's first positions under the causal mask), which then reaches the real positions
    # as a masked value 0 * NaN; ours lets such a query see itself (parts.py).
    tmask = pad_mask([9, 6, 2], 9, "right")
    ref = torch_transformer(model)
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            src, tgt, src_attention_mask=smask, tgt_attention_mask=tmask,
            names_filter=["encoder.0.hook_resid_pre", "decoder.0.hook_resid_pre",
                          "unembed.hook_in"])
        memory = model.encode(src, smask)
        # torch's causal mask (-inf above the diagonal) as bool, the padding masks' type.
        causal = nn.Transformer.generate_square_subsequent_mask(9).isinf()
        theirs = ref(cache["encoder.0.hook_resid_pre"], cache["decoder.0.hook_resid_pre"],
                     tgt_mask=causal, src_key_padding_mask=~smask,
                     tgt_key_padding_mask=~tmask, memory_key_padding_mask=~smask)
        their_memory = ref.encoder(cache["encoder.0.hook_resid_pre"],
                                   src_key_padding_mask=~smask)
    torch.testing.assert_close(memory[smask], their_memory[smask], **ATOL)
    torch.testing.assert_close(cache["unembed.hook_in"][tmask], theirs[tmask], **ATOL)
    torch.testing.assert_close(logits, cache["unembed.hook_in"] @ model.W_U + model.b_U, **ATOL)


def test_the_comparison_can_fail():
    """A wrong weight mapping (q and k rows swapped, or the cross-attention's and the MLP's
    LayerNorms crossed) is seen."""
    model = Seq2Seq(Seq2SeqConfig(d_vocab=V, n_layers=1, d_model=D, n_heads=H, d_mlp=MLP_D,
                                  n_ctx=8, norm="post", init_std=0.3, seed=9), device="cpu").eval()
    src, tgt = ids((2, 8), V, 4), ids((2, 6), V, 5)
    with torch.no_grad():
        model.decoder[0].ln2.w.mul_(1.5)                 # so that ln2 and ln3 differ
        _, cache = model.run_with_cache(src, tgt, names_filter=["encoder.0.hook_resid_pre",
                                                                "decoder.0.hook_resid_pre",
                                                                "unembed.hook_in"])
        args = (cache["encoder.0.hook_resid_pre"], cache["decoder.0.hook_resid_pre"])
        kw = dict(tgt_mask=nn.Transformer.generate_square_subsequent_mask(6).isinf())
        want = cache["unembed.hook_in"]
        torch.testing.assert_close(torch_transformer(model)(*args, **kw), want, **ATOL)
        ref = torch_transformer(model)
        w = ref.decoder.layers[0].multihead_attn.in_proj_weight
        w.copy_(torch.cat([w[D:2 * D], w[:D], w[2 * D:]]))
        assert not torch.allclose(ref(*args, **kw), want, **ATOL)
        ref = torch_transformer(model)
        layer = ref.decoder.layers[0]
        layer.norm2, layer.norm3 = layer.norm3, layer.norm2
        assert not torch.allclose(ref(*args, **kw), want, **ATOL)
