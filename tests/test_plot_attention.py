"""Attention figures from a real GPT cache: one panel per head, token labels, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from transformer_lens import ActivationCache

from superpose import gpt, plot
from superpose.plot._common import figure_and_axes
from superpose.plot.attention import visible_token

TEXT = "def f(x):\n    return x"       # 22 characters, spaces and a newline


@pytest.fixture(scope="module")
def tok() -> gpt.CharTokenizer:
    return gpt.CharTokenizer.fit(TEXT)


@pytest.fixture(scope="module")
def run(tok):
    cfg = gpt.GPTConfig(d_vocab=tok.vocab_size, n_layers=2, d_model=16, n_heads=4, n_ctx=32,
                        seed=0)
    model = gpt.GPT(cfg, device="cpu")
    ids = torch.stack([tok.encode(TEXT), tok.encode(TEXT).flip(0)])      # [2, 22]
    _, cache = model.run_with_cache(ids)
    return model, cache


def heatmap_axes(fig: Figure) -> list:
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def tick_text(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


def test_one_panel_per_head_plus_a_shared_colorbar(run, tok):
    _, cache = run
    fig = plot.attention_heads(cache, layer=1, tokens=tok.to_str_tokens(TEXT))
    assert isinstance(fig, Figure)
    panels = heatmap_axes(fig)
    assert len(panels) == 4 and len(fig.axes) == 4 + 1
    assert [a.get_title() for a in panels] == ["L1H0", "L1H1", "L1H2", "L1H3"]
    # The image is the cached pattern (query rows, key columns), on a fixed 0..1 scale, with
    # the causally masked upper triangle masked out.
    im = panels[2].images[0]
    assert im.get_clim() == (0.0, 1.0)
    data = im.get_array()
    want = cache["pattern", 1][0, 2].numpy()
    np.testing.assert_allclose(data.filled(0.0), want, atol=1e-6)
    assert data.mask[0, 1] and not data.mask[1, 0] and not data.mask.diagonal().any()


def test_token_labels_on_both_axes_with_whitespace_visible(run, tok):
    _, cache = run
    strs = tok.to_str_tokens(TEXT)
    fig = plot.attention_heads(cache, layer=0, tokens=strs, max_cols=2)
    first, *_, last = heatmap_axes(fig)
    want = [visible_token(s) for s in strs]
    assert tick_text(first.yaxis) == want                    # queries: left column
    assert tick_text(last.xaxis) == want                     # keys: bottom row
    assert tick_text(first.xaxis) == [""] * len(strs)        # inner panels stay clean
    assert "\\n" in want and "␣" in want and " " not in want
    assert first.get_ylabel() == "query" and last.get_xlabel() == "key"


def test_visible_token():
    assert visible_token(" the") == "␣the"
    assert visible_token("\n\t") == "\\n\\t"
    assert visible_token("\x07") == "\\x07"
    assert visible_token("") == "∅"
    assert visible_token("é") == "é"


def test_many_tokens_are_thinned_to_every_kth_label():
    pattern = torch.softmax(torch.randn(2, 3, 120, 120), -1).tril()
    labels = [f"t{i}" for i in range(120)]
    fig = plot.attention_heads(pattern, tokens=labels, heads=[0], panel_size=3.0)
    ax = heatmap_axes(fig)[0]
    shown = tick_text(ax.xaxis)
    assert 4 <= len(shown) <= 30
    step = int(ax.get_xticks()[1] - ax.get_xticks()[0])
    assert shown == labels[::step] and step > 1
    fig = plot.attention_head(pattern, layer=0, head=1, tokens=labels)
    shown = tick_text(heatmap_axes(fig)[0].yaxis)
    assert 30 <= len(shown) <= 64 and shown[0] == "t0"


def test_tensors_dicts_head_subsets_and_ax(run, tok):
    _, cache = run
    p = cache["pattern", 0]                                          # [2, 4, 22, 22]
    # The second sequence, from a [batch head q k] tensor, a [head q k] tensor and a dict.
    for src, batch in [(p, 1), (p[1], 0), ({"blocks.0.attn.hook_pattern": p}, 1)]:
        fig = plot.attention_heads(src, batch=batch, heads=[3, 1])
        panels = heatmap_axes(fig)
        assert len(panels) == 2 and panels[0].get_title() in ("head 3", "L0H3")
        np.testing.assert_allclose(panels[1].images[0].get_array().filled(0.0),
                                   p[1, 1].numpy(), atol=1e-6)
    fig = plot.attention_heads(cache, layer=-1, heads=0)
    assert heatmap_axes(fig)[0].get_title() == "L1H0"
    assert tick_text(heatmap_axes(fig)[0].xaxis)[:3] == ["0", "1", "2"]   # positions
    fig, ax = figure_and_axes()
    assert plot.attention_heads(cache, heads=2, ax=ax) is fig
    assert plot.attention_head(cache, layer=0, head=1, ax=ax) is fig


def test_attention_head_single_large_view(run, tok):
    _, cache = run
    strs = tok.to_str_tokens(TEXT)
    fig = plot.attention_head(cache, layer=1, head=3, tokens=strs)
    ax = heatmap_axes(fig)[0]
    assert len(fig.axes) == 2 and ax.get_title() == "layer 1, head 3"
    assert tick_text(ax.xaxis) == tick_text(ax.yaxis) == [visible_token(s) for s in strs]
    assert min(fig.get_size_inches()) >= 4.5
    assert len(ax.texts) == 0                                # 22 tokens: no cell values
    fig = plot.attention_head(cache, layer=1, head=3, tokens=strs, annotate=True)
    assert len(heatmap_axes(fig)[0].texts) == 22 * 23 // 2   # lower triangle only


def test_transformer_lens_style_cache_without_batch_dim(run):
    model, _ = run
    _, cache = model.run_with_cache(torch.zeros(1, 5, dtype=torch.long), remove_batch_dim=True)
    assert cache["pattern", 0].shape == (4, 5, 5)
    fig = plot.attention_heads(cache, layer=0)
    assert len(heatmap_axes(fig)) == 4


def test_head_scores_heatmap():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, float("nan"), 0.2]])
    fig = plot.head_scores_heatmap(scores, label="induction score", title="t")
    ax = heatmap_axes(fig)[0]
    assert len(fig.axes) == 2 and ax.get_xlabel() == "head" and ax.get_ylabel() == "layer"
    assert ax.images[0].get_array().shape == (2, 3) and ax.images[0].get_array().mask[1, 1]
    assert len(ax.texts) == 5                                # NaN cell left blank
    assert fig.axes[1].get_ylabel() == "induction score"
    plot.head_scores_heatmap(np.random.rand(4, 8), vmin=0, vmax=1, annotate=False)


# ---------------------------------------------------------------- bad input: our own messages


def test_layer_not_in_cache_lists_the_cached_layers(run, user_errors):
    _, cache = run
    with pytest.raises(ValueError, match=r"layer 5 is not in the cache.*layers \[0, 1\]"):
        plot.attention_heads(cache, layer=5)
    with pytest.raises(ValueError, match=r"layer 2 is not in the cache.*layers \[0, 1\]"):
        plot.attention_head(cache, layer=2, head=0)
    with pytest.raises(ValueError, match="holds no attention patterns.*names_filter"):
        plot.attention_heads({"blocks.0.hook_resid_pre": torch.zeros(1, 3, 8)})


def test_head_out_of_range(run, user_errors):
    _, cache = run
    with pytest.raises(ValueError, match=r"head 4 is out of range: this layer has 4 heads "
                                         r"\(valid: 0..3\)"):
        plot.attention_head(cache, layer=0, head=4)
    with pytest.raises(ValueError, match="head 7 is out of range"):
        plot.attention_heads(cache, heads=[0, 7])
    with pytest.raises(ValueError, match="at least one head"):
        plot.attention_heads(cache, heads=[])


def test_token_label_mismatch_and_wrong_kinds(run, tok, user_errors):
    _, cache = run
    with pytest.raises(ValueError, match=r"tokens has 21 labels but the patterns cover 22 "
                                         r"positions"):
        plot.attention_heads(cache, tokens=tok.to_str_tokens(TEXT)[:-1])
    with pytest.raises(ValueError, match="single str. Pass tokenizer.to_str_tokens"):
        plot.attention_heads(cache, tokens=TEXT)
    with pytest.raises(ValueError, match="tensor of ids"):
        plot.attention_head(cache, layer=0, head=0, tokens=tok.encode(TEXT))
    with pytest.raises(ValueError, match="list of 2 sequences; pass tokens\\[batch\\]"):
        plot.attention_heads(cache, tokens=[tok.to_str_tokens(TEXT)] * 2)


def test_bad_shapes_batch_and_ax(run, user_errors):
    _, cache = run
    with pytest.raises(ValueError, match=r"\[batch head query_pos key_pos\] or \[head "
                                         r"query_pos key_pos\], got \[5, 5\]"):
        plot.attention_heads(torch.rand(5, 5))
    with pytest.raises(ValueError, match=r"batch 2 is out of range: the patterns hold 2"):
        plot.attention_heads(cache, batch=2)
    with pytest.raises(ValueError, match="no batch dimension"):
        plot.attention_heads(torch.rand(2, 5, 5), batch=1)
    with pytest.raises(ValueError, match="must be an ActivationCache, a dict"):
        plot.attention_heads([[0.5, 0.5]])
    _, ax = figure_and_axes()
    with pytest.raises(ValueError, match=r"one Axes per drawn head \(4: heads \[0, 1, 2, 3\]\)"):
        plot.attention_heads(cache, ax=ax)
    with pytest.raises(ValueError, match=r"scores must have shape \[layer head\]"):
        plot.head_scores_heatmap(torch.rand(3))


def test_type_checker_also_rejects_bad_shapes_under_pytest(run):
    # Without `user_errors`, the jaxtyping annotations reject a 2-D tensor before our check;
    # either way the caller gets an error, never a silently wrong figure.
    with pytest.raises((ValueError, TypeError)):
        plot.attention_heads(torch.rand(5, 5))


def test_old_name_attention_patterns_warns_and_is_attention_heads():
    import superpose.plot.attention as attention_module

    with pytest.warns(DeprecationWarning, match=r"plot.attention_patterns is now "
                                                r"plot.attention_heads"):
        assert plot.attention_patterns is plot.attention_heads
    with pytest.warns(DeprecationWarning, match="plot.attention_heads"):
        assert attention_module.attention_patterns is plot.attention_heads
    with pytest.raises(AttributeError, match="has no attribute 'attention_pattern'"):
        plot.attention_pattern  # noqa: B018


# ---------------------------------------------------------------- encoders and seq2seq

SRC = ["▁the", "▁black", "▁cat", "▁sat", "</s>", "<pad>", "<pad>"]
TGT = ["<s>", "▁le", "▁chat", "▁noir", "▁assis", "</s>", "<pad>", "<pad>"]
SRC_MASK = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
TGT_MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
ALIGN = torch.zeros(8, 7, dtype=torch.bool)
for _t, _s in [(1, 0), (2, 2), (3, 1), (4, 3), (5, 4)]:
    ALIGN[_t, _s] = True


def _softmax(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.masked_fill(~keep, float("-inf")), -1)


@pytest.fixture(scope="module")
def s2s_cache() -> dict[str, torch.Tensor]:
    """What a seq2seq run_with_cache holds (TransformerLens HookedEncoderDecoder names): key
    padding masked with -inf, the decoder's self-attention causal."""
    g = torch.Generator().manual_seed(0)
    src_keep = SRC_MASK.bool()[:, None, None, :]                        # [2, 1, 1, S]
    tgt_keep = TGT_MASK.bool()[:, None, None, :] & torch.ones(8, 8).tril().bool()
    return {
        "encoder.0.attn.hook_pattern": _softmax(torch.randn(2, 4, 7, 7, generator=g), src_keep),
        "encoder.1.attn.hook_pattern": _softmax(torch.randn(2, 4, 7, 7, generator=g), src_keep),
        "decoder.0.attn.hook_pattern": _softmax(torch.randn(2, 4, 8, 8, generator=g), tgt_keep),
        "decoder.0.cross_attn.hook_pattern": _softmax(
            torch.randn(2, 4, 8, 7, generator=g) + 4 * ALIGN, src_keep),
        "decoder.1.cross_attn.hook_pattern": _softmax(torch.randn(2, 4, 8, 7, generator=g),
                                                      src_keep),
    }


def test_encoder_patterns_are_bidirectional_with_padding_grey(s2s_cache):
    fig = plot.attention_heads(s2s_cache, hook="encoder", layer=1, tokens=SRC,
                               attention_mask=SRC_MASK)
    panels = heatmap_axes(fig)
    assert len(panels) == 4 and [a.get_title() for a in panels][:2] == ["L1H0", "L1H1"]
    assert "encoder layer 1" in fig.get_suptitle() and "bidirectional" in fig.get_suptitle()
    im = panels[0].images[0]
    mask = im.get_array().mask
    assert not mask[:5, :5].any()                         # the upper triangle is drawn too
    assert mask[5:, :].all() and mask[:, 5:].all()        # padded queries and keys: grey
    assert im.cmap.get_bad() == pytest.approx(to_rgba("0.88"))
    np.testing.assert_allclose(im.get_array()[:5, :5].data,
                               s2s_cache["encoder.1.attn.hook_pattern"][0, 0, :5, :5].numpy(),
                               atol=1e-6)
    # Without a mask, a bidirectional pattern is detected: nothing grey at all.
    fig = plot.attention_heads(s2s_cache["encoder.0.attn.hook_pattern"][:, :, :5, :5])
    assert not np.ma.getmaskarray(heatmap_axes(fig)[0].images[0].get_array()).any()
    # batch row 1 takes row 1 of a [batch pos] mask (3 real tokens).
    fig = plot.attention_heads(s2s_cache, hook="encoder", batch=1, attention_mask=SRC_MASK)
    mask = heatmap_axes(fig)[0].images[0].get_array().mask
    assert not mask[:3, :3].any() and mask[3:].all() and mask[:, 3:].all()


def test_hook_forms_and_the_decoders_causal_self_attention(s2s_cache):
    tl_cache = ActivationCache(s2s_cache, None)
    want = s2s_cache["decoder.0.attn.hook_pattern"][1, 2].numpy()
    for src, hook in [(s2s_cache, "decoder"), (tl_cache, "decoder.{layer}.attn.hook_pattern"),
                      (tl_cache, "decoder.0.attn.hook_pattern")]:
        fig = plot.attention_heads(src, hook=hook, batch=1, heads=2)
        im = heatmap_axes(fig)[0].images[0]
        np.testing.assert_allclose(im.get_array().filled(0.0), want, atol=1e-6)
        mask = im.get_array().mask
        assert mask[0, 1] and not mask[1, 0]                     # causal: detected
        assert "decoder layer 0" in fig.get_suptitle()
    fig = plot.attention_heads(s2s_cache, hook="decoder", attention_mask=TGT_MASK,
                               tokens=TGT)
    assert "causal mask and padding" in fig.get_suptitle()
    assert heatmap_axes(fig)[0].images[0].get_array().mask[6:].all()
    # The encoder, one head, by full key (its layer) and by negative layer.
    fig = plot.attention_head(s2s_cache, hook="encoder.1.attn.hook_pattern", head=3,
                              tokens=SRC, attention_mask=SRC_MASK)
    ax = heatmap_axes(fig)[0]
    assert ax.get_title() == "encoder layer 1, head 3 (bidirectional)"
    assert len(ax.texts) == 5 * 5                                # only the real cells
    fig = plot.attention_head(s2s_cache, hook="encoder", layer=-1, head=0)
    assert heatmap_axes(fig)[0].get_title().startswith("encoder layer 1, head 0")


def test_causal_argument(s2s_cache):
    enc = s2s_cache["encoder.0.attn.hook_pattern"][0, :, :5, :5]
    causal = torch.softmax(torch.randn(2, 5, 5).masked_fill(~torch.ones(5, 5).tril().bool(),
                                                            float("-inf")), -1)
    # causal=False on a causal pattern: the zero triangle is drawn white, not grey.
    fig = plot.attention_heads(causal, causal=False)
    assert not np.ma.getmaskarray(heatmap_axes(fig)[0].images[0].get_array()).any()
    fig = plot.attention_heads(causal, causal=True)
    assert heatmap_axes(fig)[0].images[0].get_array().mask[0, 4]
    # GPT-style default is unchanged: a causal pattern is still detected.
    assert heatmap_axes(plot.attention_heads(causal))[0].images[0].get_array().mask[0, 4]
    with pytest.raises(ValueError, match=r"causal=True, but head \d, query \d attends to the "
                                         r"later key \d .*bidirectional; pass causal=False"):
        plot.attention_heads(enc, causal=True)


def test_cross_attention_panels_labels_boxes_and_padding(s2s_cache):
    fig = plot.cross_attention(s2s_cache, layer=0, src_tokens=SRC, tgt_tokens=TGT,
                               alignment=ALIGN, src_mask=SRC_MASK, tgt_mask=TGT_MASK)
    assert isinstance(fig, Figure)
    panels = heatmap_axes(fig)
    assert len(panels) == 4 and len(fig.axes) == 4 + 1                  # + colour bar
    assert [a.get_title().split("\n")[0] for a in panels] == ["L0H0", "L0H1", "L0H2", "L0H3"]
    assert all("in boxes" in a.get_title() for a in panels)
    assert "cross-attention" in fig.get_suptitle()
    first = panels[0]
    assert first.get_ylabel() == "target (queries)" and first.get_xlabel() == "source (keys)"
    assert tick_text(first.yaxis) == [visible_token(t) for t in TGT]
    assert tick_text(first.xaxis) == [visible_token(s) for s in SRC]
    im = first.images[0]
    assert im.get_clim() == (0.0, 1.0) and im.get_array().shape == (8, 7)   # [tgt, src]
    np.testing.assert_allclose(
        im.get_array()[:6, :5].data,
        s2s_cache["decoder.0.cross_attn.hook_pattern"][0, 0, :6, :5].numpy(), atol=1e-6)
    mask = im.get_array().mask
    assert mask[6:].all() and mask[:, 5:].all() and not mask[:6, :5].any()
    assert im.cmap.get_bad() == pytest.approx(to_rgba("0.88"))
    # One outlined box per aligned cell, on the aligned cells, in every panel.
    for a in panels:
        boxes = [p for p in a.patches if isinstance(p, Rectangle)]
        assert len(boxes) == int(ALIGN.sum()) == 5
        assert {(int(b.get_x() + 0.5), int(b.get_y() + 0.5)) for b in boxes} == {
            (s, t) for t, s in ALIGN.nonzero().tolist()}
        assert not boxes[0].get_fill()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["expected alignment",
                                                                  "padding"]
    # The share in the boxes is the mean over aligned rows of the probability on them.
    p = s2s_cache["decoder.0.cross_attn.hook_pattern"][0, 1]
    share = float((p * ALIGN).sum() / ALIGN.any(1).sum())
    assert panels[1].get_title().endswith(f"{share:.0%} in boxes")


def test_cross_attention_tensors_heads_and_ax(s2s_cache):
    p = s2s_cache["decoder.1.cross_attn.hook_pattern"]
    for src, batch in [(p, 1), (p[1], 0)]:
        fig = plot.cross_attention(src, batch=batch, heads=[3, 1])
        panels = heatmap_axes(fig)
        assert [a.get_title() for a in panels] == ["head 3", "head 1"]
        np.testing.assert_allclose(np.asarray(panels[1].images[0].get_array()),
                                   p[1, 1].numpy(), atol=1e-6)
        assert not panels[0].patches                            # no alignment: no boxes
    fig = plot.cross_attention(p[0, 2])                         # [tgt src]: one head
    assert len(heatmap_axes(fig)) == 1
    assert tick_text(heatmap_axes(fig)[0].xaxis)[:3] == ["0", "1", "2"]
    fig = plot.cross_attention(s2s_cache, layer=-1, heads=0)
    assert heatmap_axes(fig)[0].get_title() == "L1H0"
    fig, ax = figure_and_axes()
    assert plot.cross_attention(s2s_cache, heads=2, ax=ax, alignment=ALIGN) is fig
    assert len(ax.patches) == 5 and ax.get_xlabel() == "source (keys)"


def test_save_pngs_of_the_new_figures(s2s_cache, tmp_path):
    figs = {"cross": plot.cross_attention(s2s_cache, src_tokens=SRC, tgt_tokens=TGT,
                                          alignment=ALIGN, src_mask=SRC_MASK,
                                          tgt_mask=TGT_MASK),
            "encoder": plot.attention_heads(s2s_cache, hook="encoder", tokens=SRC,
                                            attention_mask=SRC_MASK)}
    for name, fig in figs.items():
        fig.savefig(tmp_path / f"{name}.png", dpi=60)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_cross_attention_bad_inputs(s2s_cache, user_errors):
    c = s2s_cache
    with pytest.raises(ValueError, match=r"src_tokens has 6 labels but the patterns cover 7 "
                                         r"source positions"):
        plot.cross_attention(c, src_tokens=SRC[:-1])
    with pytest.raises(ValueError, match=r"tgt_tokens has 7 labels but the patterns cover 8 "
                                         r"target positions"):
        plot.cross_attention(c, tgt_tokens=SRC)
    with pytest.raises(ValueError, match=r"alignment must be a bool array \[tgt src\] = "
                                         r"\[8, 7\].*got shape \[7, 8\]"):
        plot.cross_attention(c, alignment=ALIGN.T)
    with pytest.raises(ValueError, match=r"alignment must hold True / 1"):
        plot.cross_attention(c, alignment=ALIGN * 0.5)
    with pytest.raises(ValueError, match=r"alignment marks target 1 -> source 0, but that "
                                         r"cell is padding"):
        plot.cross_attention(c, alignment=ALIGN, tgt_mask=torch.tensor([1, 0, 1, 1, 1, 1, 0, 0]))
    with pytest.raises(ValueError, match=r"layer 2 is not in the cache.*layers \[0, 1\]"):
        plot.cross_attention(c, layer=2)
    with pytest.raises(ValueError, match=r"head 4 is out of range: this layer has 4 heads"):
        plot.cross_attention(c, heads=[0, 4])
    with pytest.raises(ValueError, match=r"holds no attention patterns under "
                                         r"'decoder.\{L\}.cross_attn.hook_pattern'"):
        plot.cross_attention({"blocks.0.attn.hook_pattern": torch.rand(1, 2, 3, 3)})
    bad = c["decoder.0.cross_attn.hook_pattern"].clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"plot\.cross_attention: cache_or_pattern\["
                                         r"'decoder.0.cross_attn.hook_pattern'\] holds 1 "
                                         r"NaN/inf.*\[1, 2, 3, 4\]"):
        plot.cross_attention({**c, "decoder.0.cross_attn.hook_pattern": bad})
    with pytest.raises(ValueError, match=r"cache_or_pattern holds 1 NaN/inf"):
        plot.cross_attention(bad)
    with pytest.raises(ValueError, match=r"cache_or_pattern\['decoder.0.cross_attn"):
        plot.cross_attention(ActivationCache({"decoder.0.cross_attn.hook_pattern": bad}, None))
    with pytest.raises(ValueError, match=r"\[batch head tgt src\] or \[head tgt src\] or "
                                         r"\[tgt src\], got \[7\]"):
        plot.cross_attention(torch.rand(7))
    # An inverted mask (True = padding) is caught: real tokens attend what it calls padding.
    with pytest.raises(ValueError, match=r"src_mask marks key position \d as padding, but "
                                         r"head \d, query \d gives it probability .*~mask"):
        plot.cross_attention(c, src_mask=SRC_MASK == 0)
    with pytest.raises(ValueError, match=r"tgt_mask covers 7 positions but the patterns have "
                                         r"8 target positions"):
        plot.cross_attention(c, tgt_mask=torch.ones(7))


def test_masks_and_hooks_bad_inputs(s2s_cache, run, user_errors):
    c = s2s_cache
    with pytest.raises(ValueError, match=r"hold 1 / True for real tokens.*values \{-inf, 0\}.*"
                                         r"\(mask == 0\)"):
        plot.attention_heads(c, hook="encoder",
                             attention_mask=torch.tensor([0, 0, 0, 0, 0, -np.inf, -np.inf]))
    with pytest.raises(ValueError, match="marks every position as padding"):
        plot.attention_heads(c, hook="encoder", attention_mask=torch.zeros(7))
    with pytest.raises(ValueError, match=r"attention_mask has shape \[3, 7\] \(\[batch pos\]\) "
                                         r"but the patterns hold 2 sequences"):
        plot.attention_heads(c, hook="encoder", attention_mask=torch.ones(3, 7))
    with pytest.raises(ValueError, match=r"attention_mask covers 5 positions but the patterns "
                                         r"have 7"):
        plot.attention_head(c, hook="encoder", head=0, attention_mask=torch.ones(5))
    with pytest.raises(ValueError, match=r"attention_mask marks key position 1 as padding"):
        plot.attention_heads(c, hook="encoder", attention_mask=[1, 0, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"holds no attention patterns under "
                                         r"'blocks.\{L\}.attn.hook_pattern'.*It holds "
                                         r"'decoder.\{L\}.attn.hook_pattern'.*hook='encoder'"):
        plot.attention_heads(c)
    with pytest.raises(ValueError, match=r"cross-attention pattern.*plot.cross_attention"):
        plot.attention_heads(c, hook="decoder.0.cross_attn.hook_pattern")
    with pytest.raises(ValueError, match=r"layer=0 disagrees with hook='encoder.1"):
        plot.attention_head(c, hook="encoder.1.attn.hook_pattern", layer=0, head=0)
    with pytest.raises(ValueError, match=r"layer 3 is not in the cache.*layers \[0, 1\] "
                                         r"\('encoder"):
        plot.attention_heads(c, hook="encoder", layer=3)
    with pytest.raises(ValueError, match=r"hook must be 'blocks', 'encoder', 'decoder'"):
        plot.attention_heads(c, hook="enc")
    with pytest.raises(ValueError, match=r"causal must be True, False or None"):
        plot.attention_heads(c, hook="encoder", causal="yes")
    _, cache = run                     # the GPT cache still works with hook='blocks'
    assert len(heatmap_axes(plot.attention_heads(cache, hook="blocks"))) == 4
