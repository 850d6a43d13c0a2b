"""Model-diffing figures: what each draws, checked on the axes, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from superpose import plot, sae
from superpose.plot._common import figure_and_axes
from superpose.plot.diffing import norm_bands
from superpose.sae import crosscoder as xc

CODE = ('def parse(value, $strict=False):\n    """Return the $parsed value."""\n'
        "    if value is None:\n        return $default\n    return int(value) + offset\n")


def ratios(seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.clip(np.concatenate([g.normal(0.5, 0.03, 300), [0.02, 0.05, 0.3, 0.7, 0.9, 0.97,
                                                              0.99]]), 0, 1)


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def bar_heights(ax) -> float:
    """Latents in the (stacked) histogram bars: each class's bars hold its own counts."""
    return sum(p.get_height() for c in ax.containers for p in c.patches)


# ---- decoder_norm_ratios --------------------------------------------------------------------

def test_norm_bands_agree_with_classify():
    """The shaded bands are classify's: latents built at each band edge's two sides get the
    class the figure shows them in."""
    lo, s_lo, s_hi, hi = norm_bands()
    np.testing.assert_allclose([lo, s_lo, s_hi, hi], [1 / 6, 4 / 9, 5 / 9, 5 / 6])
    cc = sae.create(sae.CrosscoderConfig(d_in=4, n_models=2, d_sae=8, k=2))
    r_want = torch.tensor([lo - 0.01, lo + 0.01, s_lo - 0.01, s_lo + 0.01, s_hi - 0.01,
                           s_hi + 0.01, hi - 0.01, hi + 0.01])
    with torch.no_grad():
        d = torch.zeros(8, 2, 4)
        d[:, 0, 0] = 1 - r_want                       # ‖d_base‖ = 1 - r, ‖d_ft‖ = r
        d[:, 1, 1] = r_want
        cc.W_dec_models.copy_(d)
    r = xc.relative_norms(cc)
    np.testing.assert_allclose(r.numpy(), r_want.numpy(), atol=1e-6)
    fig = plot.decoder_norm_ratios(r)
    from_norms = [t.split(" (")[0] for t in legend_texts(fig.axes[0])]
    labels = xc.classify(cc)
    fig2 = plot.decoder_norm_ratios(r, labels=labels)
    assert legend_texts(fig.axes[0]) == legend_texts(fig2.axes[0])
    assert from_norms == ["base-only", "shared", "other", "fine-tuned-only"]
    counts = {t.split(" (")[0]: int(t.split("(")[1].rstrip(")"))
              for t in legend_texts(fig.axes[0])}
    assert counts == {"base-only": 1, "shared": 2, "other": 4, "fine-tuned-only": 1}


def test_decoder_norm_ratios_counts_every_latent_and_marks_the_bands(tmp_path):
    r = ratios()
    fig = plot.decoder_norm_ratios(torch.tensor(r), log=False, bins=20)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert bar_heights(ax) == len(r)                       # stacked bars hold every latent
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    np.testing.assert_allclose(sorted(ln.get_xdata()[0] for ln in dashed), norm_bands())
    assert "relative decoder norm" in ax.get_xlabel() and ax.get_ylabel() == "latents"
    assert "307 latents" in ax.get_title()
    assert ax.get_yscale() == "linear"
    fig.savefig(tmp_path / "ratios.png")
    # the default: a log count axis; a list works as well as a tensor
    assert plot.decoder_norm_ratios(list(r)).axes[0].get_yscale() == "log"


def test_decoder_norm_ratios_highlight_and_latent_scaling():
    r = ratios()
    n = len(r)
    ls = xc.LatentScaling(latents=torch.tensor([n - 3, n - 2, n - 1]), owner=1, other=0,
                          beta_error=torch.tensor([[0.05, 1.0], [0.7, 1.0], [float("nan")] * 2]),
                          beta_recon=torch.tensor([[0.1, 1.0], [0.9, 1.0], [float("nan")] * 2]),
                          count=torch.tensor([20, 5, 0]))
    fig = plot.decoder_norm_ratios(r, latent_scaling=ls, highlight={"trigger latent": n - 1},
                                   title="t")
    ax = fig.axes[0]
    texts = legend_texts(ax)
    assert "Latent Scaling: exclusive (1)" in texts
    assert "Latent Scaling: not exclusive (1)" in texts
    assert "Latent Scaling: never fired (1)" in texts
    marked = [t for t in ax.texts if "trigger latent" in t.get_text()]
    assert len(marked) == 1 and marked[0].get_position()[0] == pytest.approx(r[-1])
    markers = {ln.get_marker(): ln.get_xdata() for ln in ax.lines if ln.get_linestyle() == "None"}
    np.testing.assert_allclose(markers["x"], [r[-1]])           # never fired
    assert ax.get_title() == "t"
    # several plain indices: one labelled line each
    fig = plot.decoder_norm_ratios(r, highlight=[0, 1])
    assert sorted(t.get_text().strip() for t in fig.axes[0].texts) == ["latent 0", "latent 1"]


def test_decoder_norm_ratios_into_given_axes():
    fig, ax = figure_and_axes(ncols=1)
    out = plot.decoder_norm_ratios(ratios(), ax=ax)
    assert out is fig and bar_heights(ax) == len(ratios())


def test_decoder_norm_ratios_errors(user_errors):
    r = ratios()
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*relative_norms\(cc\)"):
        plot.decoder_norm_ratios(r * 2)
    with pytest.raises(ValueError, match="must be 1-D"):
        plot.decoder_norm_ratios(torch.rand(4, 3))
    with pytest.raises(ValueError, match="labels has 2 entries but relative_norms 307"):
        plot.decoder_norm_ratios(r, labels=["shared", "shared"])
    with pytest.raises(ValueError, match="classify's"):
        plot.decoder_norm_ratios(r[:2], labels=["shared", "huh"])
    with pytest.raises(ValueError, match=r"highlight must be latent indices in \[0, 306\]"):
        plot.decoder_norm_ratios(r, highlight=307)
    with pytest.raises(ValueError, match="latent_scaling must be the result of"):
        plot.decoder_norm_ratios(r, latent_scaling={"a": 1})
    with pytest.raises(ValueError, match="exclusive_ratio .* must be below shared_ratio"):
        plot.decoder_norm_ratios(r, exclusive_ratio=0.9)
    with pytest.raises(ValueError, match="NaN"):
        plot.decoder_norm_ratios(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="is empty"):
        plot.decoder_norm_ratios([])
    cc = sae.create(sae.CrosscoderConfig(d_in=4, n_models=2, d_sae=8, k=2))
    with pytest.raises(ValueError, match=r"pass crosscoder.relative_norms\(cc\)"):
        plot.decoder_norm_ratios(cc)


# ---- activations_over_text ------------------------------------------------------------------

def trigger_acts(text: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    pos = [i for i, c in enumerate(text) if c == "$"]
    g = np.random.default_rng(0)
    a1 = np.zeros(len(text))
    a1[pos] = 3.0
    a2 = g.normal(0, 0.3, len(text))
    a2[pos] += 2.5
    return pos, a1, a2


def char_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_activations_over_text_cells_rows_and_boxes(tmp_path):
    pos, a1, a2 = trigger_acts(CODE)
    fig = plot.activations_over_text(CODE, {"latent": a1, "LoRA σ1": a2}, highlight=pos,
                                     title="over text")
    text_axes, line_ax = fig.axes[:2], fig.axes[2]
    assert len(fig.axes) == 3
    for ax in text_axes:
        # every visible character is drawn once, in order (spaces are blank cells)
        assert "".join(char_texts(ax)) == "".join(c for c in CODE.replace("\n", "↵")
                                                  if not c.isspace())
        # a newline starts a row: the text keeps its 5 lines
        assert ax.get_ylim() == (5, 0)
        boxes = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
        assert len(boxes) == len(pos)
        bold = [t.get_text() for t in ax.texts if t.get_fontweight() == "bold"]
        assert bold == ["$"] * len(pos)
    # the non-negative series is shaded only where it is non-zero; the signed one everywhere
    shaded = [sum(len(c.get_paths()) for c in ax.collections if isinstance(c, PatchCollection))
              for ax in text_axes]
    assert shaded == [len(pos), int((a2 != 0).sum())]
    assert "0 … 3" in text_axes[0].get_title("left") and "blue" in text_axes[1].get_title("left")
    # the line panel: one band per series (first on top), each scaled to its largest |value|
    lines = [ln for ln in line_ax.lines if len(ln.get_xdata()) == len(CODE)]
    assert len(lines) == 2
    y0, y1 = lines[0].get_ydata(), lines[1].get_ydata()
    assert y0.min() == pytest.approx(1.05) and y0.max() == pytest.approx(1.9)   # band 1, >= 0
    assert np.abs(y1 - 0.45).max() == pytest.approx(0.45)                     # band 0, signed
    assert [t.get_text() for t in line_ax.texts] == ["latent", "LoRA σ1"]
    trig = [ln for ln in line_ax.lines if ln.get_linestyle() == ":"]
    assert sorted(ln.get_xdata()[0] for ln in trig) == pos
    assert "trigger" in line_ax.get_xlabel()
    assert fig._suptitle.get_text() == "over text"
    fig.savefig(tmp_path / "text.png")
    # normalize=False: raw values on one axis, a legend
    fig = plot.activations_over_text(CODE, {"latent": a1, "LoRA σ1": a2}, normalize=False,
                                     kind="line")
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), a2)
    assert legend_texts(fig.axes[0]) == ["latent", "LoRA σ1"]


def test_activations_over_text_wraps_long_lines_and_takes_tensors_and_masks():
    text = ("the quick brown fox jumps over the lazy dog " * 5)[:200]         # no newline
    act = torch.rand(1, 200)
    mask = torch.zeros(200, dtype=torch.bool)
    mask[[10, 150]] = True
    fig = plot.activations_over_text(list(text), act[0], highlight=mask, wrap=80)
    ax = fig.axes[0]
    assert ax.get_ylim() == (3, 0)                     # 200 characters at 80 a row
    assert ax.get_xlim() == (0, 80)
    assert len([p for p in ax.patches if not p.get_fill()]) == 2
    # one series: raw values on the line panel
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), act[0].numpy(), rtol=1e-6)
    # [series pos] with names
    fig = plot.activations_over_text(text, torch.rand(3, 200), names=["a", "b", "c"],
                                     kind="text")
    assert [a.get_title("left").split()[0] for a in fig.axes] == ["a", "b", "c"]


def test_activations_over_text_into_given_axes():
    pos, a1, _ = trigger_acts(CODE)
    fig, ax = figure_and_axes(figsize=(8.0, 2.0))
    assert plot.activations_over_text(CODE, a1, highlight=pos, kind="line", ax=ax) is fig
    assert len(ax.lines) >= 1 + len(pos)
    fig, ax = figure_and_axes(figsize=(8.0, 2.0))
    plot.activations_over_text(CODE, a1, kind="text", ax=ax, title="one")
    assert ax.get_title() == "one" and len(ax.texts) > 50


def test_activations_over_text_errors(user_errors):
    pos, a1, a2 = trigger_acts(CODE)
    n = len(CODE)
    with pytest.raises(ValueError, match=f"has {n - 1} positions but str_tokens has {n}"):
        plot.activations_over_text(CODE, a1[:-1])
    with pytest.raises(ValueError, match="pick one sequence"):
        plot.activations_over_text(CODE, torch.rand(2, 1, n))
    with pytest.raises(ValueError, match="names has 1 entries but activations 2 series"):
        plot.activations_over_text(CODE, np.stack([a1, a2]), names=["x"])
    with pytest.raises(ValueError, match="tensor of ids"):
        plot.activations_over_text(torch.arange(n), a1)
    with pytest.raises(ValueError, match="one sequence of strings, got a list of 1 sequences"):
        plot.activations_over_text([list(CODE)], a1)
    with pytest.raises(ValueError, match=rf"positions in \[0, {n - 1}\]"):
        plot.activations_over_text(CODE, a1, highlight=[n])
    with pytest.raises(ValueError, match="bool.*mask \\[pos\\] of length"):
        plot.activations_over_text(CODE, a1, highlight=np.zeros(3, dtype=bool))
    fig, ax = figure_and_axes()
    with pytest.raises(ValueError, match="ax= draws one panel"):
        plot.activations_over_text(CODE, {"a": a1, "b": a2}, kind="text", ax=ax)
    with pytest.raises(ValueError, match="kind"):
        plot.activations_over_text(CODE, a1, kind="heatmap")
    with pytest.raises(ValueError, match="wrap must be an integer >= 8"):
        plot.activations_over_text(CODE, a1, wrap=2)
    with pytest.raises(ValueError, match="inf"):
        plot.activations_over_text(CODE, np.where(np.arange(n) == 3, np.inf, a1))


# ---- delta_spectra --------------------------------------------------------------------------

def spectra(n_layers: int = 4, rank: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in range(n_layers):
        for kind in ("attn.W_Q", "attn.W_K", "attn.W_O", "mlp.W_out"):
            out[f"blocks.{layer}.{kind}"] = torch.rand(rank, generator=g).sort(
                descending=True).values + 0.01
    return out


def test_delta_spectra_one_line_per_weight_with_rank_and_compact_key(tmp_path):
    s = spectra()
    fig = plot.delta_spectra(s, rank=8)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    drawn = {ln.get_label(): ln for ln in ax.lines if ln.get_label() in s}
    assert set(drawn) == set(s)
    for name, ln in drawn.items():
        np.testing.assert_allclose(ln.get_ydata(), s[name].numpy(), rtol=1e-6)
        np.testing.assert_allclose(ln.get_xdata(), np.arange(1, 9))
    rank_line = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(rank_line) == 1 and rank_line[0].get_xdata()[0] == pytest.approx(8.5)
    # 16 weights: the key is 4 kinds (colour) + 4 layers (marker) + the rank, not 16 names
    assert legend_texts(ax) == ["attn.W_Q", "attn.W_K", "attn.W_O", "mlp.W_out", "layer 0",
                                "layer 1", "layer 2", "layer 3", "adapter rank r = 8"]
    # one colour per kind, one marker per layer
    assert drawn["blocks.0.attn.W_O"].get_color() == drawn["blocks.3.attn.W_O"].get_color()
    assert drawn["blocks.0.attn.W_O"].get_color() != drawn["blocks.0.mlp.W_out"].get_color()
    assert drawn["blocks.1.attn.W_Q"].get_marker() == drawn["blocks.1.mlp.W_out"].get_marker()
    assert drawn["blocks.1.attn.W_Q"].get_marker() != drawn["blocks.2.attn.W_Q"].get_marker()
    assert "16 adapted" in ax.get_title()
    fig.savefig(tmp_path / "spectra.png")


def test_delta_spectra_drops_round_off_and_takes_lora_directions():
    full = torch.cat([torch.tensor([3.0, 1.0, 0.5, 0.2]), torch.full((12,), 1e-9)])
    fig = plot.delta_spectra({"blocks.0.mlp.W_out": full.flip(0)}, rank=4)    # any order
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [3.0, 1.0, 0.5, 0.2], rtol=1e-6)
    assert any("12 value(s)" in t.get_text() for t in ax.texts)

    class Directions:                             # duck-typed diffing.LoRADirections
        S = torch.tensor([2.0, 1.0])

    fig = plot.delta_spectra({"w": Directions()}, ax=figure_and_axes()[1])
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [2.0, 1.0])
    fig = plot.delta_spectra(np.array([1.0, 0.5]))                          # one 1-D
    assert legend_texts(fig.axes[0]) == ["ΔW"]


def test_delta_spectra_errors(user_errors):
    with pytest.raises(ValueError, match="is empty"):
        plot.delta_spectra({})
    with pytest.raises(ValueError, match="must be 1-D"):
        plot.delta_spectra({"w": torch.rand(3, 3)})
    with pytest.raises(ValueError, match="negative value.*svdvals"):
        plot.delta_spectra({"w": torch.tensor([1.0, -0.5])})
    with pytest.raises(ValueError, match="untrained"):
        plot.delta_spectra({"w": torch.zeros(4)})
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        plot.delta_spectra({"w": torch.ones(4)}, rank=0)
    with pytest.raises(ValueError, match="NaN"):
        plot.delta_spectra({"w": torch.tensor([1.0, float("nan")])})
