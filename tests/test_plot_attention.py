"""Attention figures from a real GPT cache: one panel per head, token labels, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

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
