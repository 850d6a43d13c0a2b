"""SAE latents in a model: one dashboard per latent, and loss recovered across hooks/SAEs.

`feature_view(stats, latent, tokenizer=tok, logits=effect)` draws, for one latent,
  - its top contexts (from `sae.latent_stats`): one line per example with its activation, every
    token shaded by the latent's activation on it and the activating token boxed (whitespace
    made visible: '↵' newline, '⇥' tab, '␣' a space that is the activating token);
  - its logit effect (`sae.logit_effect`): the most promoted and most suppressed tokens;
  - the histogram of its positive activations;
  - its firing density against every other latent's (log10 of the fraction of tokens).
`loss_recovered_bars(results)` compares `sae.spliced_losses` results: the cross-entropy clean,
with the SAE, mean- and zero-ablated, and the fraction of loss recovered.

Inputs are duck-typed results (this package never imports model or SAE code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps, transforms
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from superpose.plot._common import LabFigure, figure_and_axes, finite_inputs
from superpose.plot.attention import visible_token

CONTEXT_CMAP = "Oranges"
CHAR_WIDTH = 0.602        # DejaVu Sans Mono's advance, in ems
MONO = "DejaVu Sans Mono"
POS_COLOR, NEG_COLOR = "#2b8cbe", "#e34a33"
LOSS_COLORS = {"clean": "0.35", "SAE": "#2b8cbe", "mean-ablated": "#fdae6b",
               "zero-ablated": "#e34a33"}


def _context_token(tok: str, activating: bool) -> str:
    tok = tok.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    return tok.replace(" ", "␣") if activating else tok


def _strs(tokenizer: Any, ids: list[int]) -> list[str]:
    if hasattr(tokenizer, "to_str_tokens"):
        return list(tokenizer.to_str_tokens(ids))
    if hasattr(tokenizer, "decode"):
        return [tokenizer.decode([i]) for i in ids]
    raise ValueError(f"tokenizer must have to_str_tokens or decode, got {type(tokenizer).__name__}")


def draw_contexts(ax: Axes, top: Any, tokenizer: Any, *, n: int = 10,
                  fontsize: float = 8.5) -> None:
    """Top contexts of one latent as shaded monospace text (see the module docstring).

    Positions are counted in characters of a monospace font, in points from the axes' left
    edge; every character is its own centred text on that grid (a whole-line text drifts off
    its shading boxes: hinted glyph advances are not exactly 0.602 em at every dpi)."""
    ax.set_axis_off()
    rows = min(n, len(top.values))
    if rows == 0:
        ax.text(0.5, 0.5, "the latent never fired on these tokens", ha="center",
                va="center", transform=ax.transAxes, fontsize=9, color="0.4")
        return
    fig = ax.get_figure()
    cmap = colormaps[CONTEXT_CMAP]
    vmax = float(top.values.max())
    cw = CHAR_WIDTH * fontsize                       # points per character
    lh = 1.25 * fontsize                             # box height in points
    label_chars = max(len(f"{float(x):.2f}") for x in top.values[:rows]) + 2
    for r in range(rows):
        y = 1.0 - (r + 0.5) / max(rows, n)
        at = transforms.ScaledTranslation(0, y, ax.transAxes)
        pts = transforms.Affine2D().scale(1 / 72) + fig.dpi_scale_trans + at
        ax.text(0, 0, f"{float(top.values[r]):.2f}", transform=pts, fontsize=fontsize,
                fontfamily=MONO, color="0.35", va="center", ha="left")
        ids = top.tokens[r].tolist()
        acts = top.acts[r].tolist()
        keep = [c for c, t in enumerate(ids) if t >= 0]
        strs = _strs(tokenizer, [ids[c] for c in keep])
        boxes, colors = [], []
        col = label_chars
        for c, tok in zip(keep, strs):
            here = c == top.left
            tok = _context_token(tok, here)
            a = acts[c] / vmax if vmax > 0 else 0.0
            if a > 0:
                boxes.append(Rectangle((col * cw, -lh / 2), len(tok) * cw, lh))
                colors.append(cmap(0.1 + 0.7 * min(a, 1.0)))
            if here:
                ax.add_patch(Rectangle((col * cw, -lh / 2), len(tok) * cw, lh, fill=False,
                                       ec="black", lw=1.0, transform=pts, zorder=3))
            for ch in tok:           # one text per character: glyphs stay on the box grid
                if not ch.isspace():
                    t = ax.text((col + 0.5) * cw, 0, ch, transform=pts, fontsize=fontsize,
                                fontfamily=MONO, va="center", ha="center", zorder=2,
                                fontweight="bold" if here else "normal")
                    t.set_parse_math(False)
                col += 1
        if boxes:
            ax.add_collection(PatchCollection(boxes, facecolors=colors, edgecolors="none",
                                              transform=pts, zorder=1))


def _context_chars(top: Any, tokenizer: Any, n: int) -> int:
    """Characters in the longest drawn line (the activation label included)."""
    rows = min(n, len(top.values))
    if rows == 0:
        return 30
    label = max(len(f"{float(x):.2f}") for x in top.values[:rows]) + 2
    return label + max(sum(len(x) for x in _strs(tokenizer, [i for i in ids if i >= 0]))
                       for ids in top.tokens[:rows].tolist())


def _logit_panel(ax: Axes, effect: Any, tokenizer: Any, k: int) -> None:
    top_ids, top_v = effect.top_ids[:k].tolist(), effect.top_values[:k].tolist()
    bot_ids, bot_v = effect.bottom_ids[:k].tolist(), effect.bottom_values[:k].tolist()
    labels = [f"'{visible_token(s)}'" for s in _strs(tokenizer, top_ids + bot_ids[::-1])]
    vals = top_v + bot_v[::-1]
    y = np.arange(len(vals))[::-1]
    ax.barh(y, vals, color=[POS_COLOR if x >= 0 else NEG_COLOR for x in vals], height=0.75)
    ax.set_yticks(y, labels=labels, fontsize=7.5, fontfamily=MONO)
    ax.set_ylim(-0.6, len(vals) - 0.4)
    for lab in ax.get_yticklabels():
        lab.set_parse_math(False)
    ax.axvline(0, color="0.3", lw=0.6)
    ax.set_xlabel("direct logit effect per unit activation", fontsize=8)
    ax.set_title("promoted / suppressed tokens", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)


def _hist_panel(ax: Axes, values: torch.Tensor, n_total: int, bins: int) -> None:
    vals = values.detach().float().cpu()
    vals = vals[vals > 0]
    if len(vals) == 0:
        ax.text(0.5, 0.5, "never fired", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.hist(vals.numpy(), bins=bins, color=colormaps[CONTEXT_CMAP](0.7))
        ax.set_yscale("log")
    ax.set_xlabel("activation (where it fires)", fontsize=8)
    ax.set_ylabel("tokens", fontsize=8)
    ax.set_title(f"fires on {len(vals):,} of {n_total:,} tokens ({len(vals) / n_total:.2%})",
                 fontsize=9)
    ax.tick_params(labelsize=7)


def _density_panel(ax: Axes, density: torch.Tensor, latent: int, bins: int) -> None:
    d = density.detach().float().cpu()
    alive = d[d > 0]
    n_dead = int((d == 0).sum())
    if len(alive):
        ax.hist(alive.log10().numpy(), bins=bins, color="0.7")
    if d[latent] > 0:
        x = math.log10(float(d[latent]))
        ax.axvline(x, color=NEG_COLOR, lw=1.5, label=f"latent {latent}")
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_xlabel("log10 firing density", fontsize=8)
    ax.set_ylabel("latents", fontsize=8)
    ax.set_title(f"density vs all {len(d):,} latents ({n_dead:,} dead)", fontsize=9)
    ax.tick_params(labelsize=7)


@finite_inputs
def feature_view(stats: Any, latent: int, *, tokenizer: Any, logits: Any | None = None,
                 n_contexts: int = 10, k_logits: int = 6, bins: int = 30,
                 title: str | None = None, label: str | None = None) -> Figure:
    """A one-figure dashboard of `latent` (see the module docstring).

    `stats`: a `sae.LatentStats` holding this latent (top contexts, values, densities);
    `logits`: its `sae.LogitEffect` (the panel is left out without it); `label`: a short
    interpretation shown under the title.
    """
    top = getattr(stats, "top", None)
    if not isinstance(top, Mapping) or not hasattr(stats, "density"):
        raise ValueError(f"stats must be a LatentStats (from sae.latent_stats), got "
                         f"{type(stats).__name__}")
    if latent not in top:
        raise ValueError(f"latent {latent} is not in these stats; they hold {sorted(top)}")
    for name, val in (("n_contexts", n_contexts), ("k_logits", k_logits), ("bins", bins)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    t = top[latent]
    fontsize = 8.5
    chars = _context_chars(t, tokenizer, n_contexts)
    left_in = max(3.0, chars * CHAR_WIDTH * fontsize / 72 + 0.3)
    fig = LabFigure(figsize=(left_in + 5.2, max(5.6, 0.3 * n_contexts + 2.2)),
                    layout="constrained")
    n_right = 3 if logits is not None else 2
    gs = fig.add_gridspec(n_right, 2, width_ratios=[left_in, 5.0],
                          height_ratios=[1.6, 1, 1][3 - n_right:])
    draw_contexts(fig.add_subplot(gs[:, 0]), t, tokenizer, n=n_contexts, fontsize=fontsize)
    row = 0
    if logits is not None:
        _logit_panel(fig.add_subplot(gs[row, 1]), logits, tokenizer, k_logits)
        row += 1
    _hist_panel(fig.add_subplot(gs[row, 1]), stats.values[latent], stats.n_tokens, bins)
    _density_panel(fig.add_subplot(gs[row + 1, 1]), stats.density, latent, bins)
    head = title or f"latent {latent} at {getattr(stats, 'hook_name', '?')}"
    dens = float(stats.density[latent])
    sub = f"density {dens:.2%}, max activation {float(t.values[0]) if len(t) else 0:.2f}"
    fig.suptitle(head + (f": {label}" if label else "") + f"\n{sub}; top contexts, activating "
                 "token boxed, shading = activation", fontsize=10)
    return fig


def _as_losses(r: Any) -> dict[str, float]:
    if hasattr(r, "as_dict"):
        r = r.as_dict()
    if not isinstance(r, Mapping) or not {"clean_loss", "spliced_loss", "zero_ablation_loss",
                                          "loss_recovered"} <= set(r):
        raise ValueError("each result must be a SplicedLosses (or its as_dict()), got "
                         f"{type(r).__name__}")
    return {k: float(x) for k, x in r.items()}


@finite_inputs
def loss_recovered_bars(results: Mapping[str, Any], *, ax: Axes | None = None,
                        title: str | None = None) -> Figure:
    """Left: cross-entropy clean / with the SAE / mean- / zero-ablated per entry; right: the
    fraction of loss recovered (against zero and, when known, mean ablation). With `ax=` only
    the right panel is drawn. `results` maps a name (hook or SAE) to a SplicedLosses."""
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict name -> SplicedLosses")
    data = {str(k): _as_losses(r) for k, r in results.items()}
    names = list(data)
    ticks = [n.replace(" (", "\n(") for n in names]          # "resid (blocks.0...)" on 2 lines
    x = np.arange(len(names))
    if ax is None:
        fig, axes = figure_and_axes(ncols=2, figsize=(max(7.0, 2.2 * len(names) + 4), 3.6))
        ax_ce, ax_rec = axes
    else:
        fig, ax_rec = figure_and_axes(ax)
        ax_ce = None
    if ax_ce is not None:
        keys = [("clean", "clean_loss"), ("SAE", "spliced_loss"),
                ("mean-ablated", "mean_ablation_loss"), ("zero-ablated", "zero_ablation_loss")]
        w = 0.8 / len(keys)
        for j, (lab, key) in enumerate(keys):
            vals = [data[n].get(key, float("nan")) for n in names]
            ax_ce.bar(x + (j - 1.5) * w, vals, w, label=lab, color=LOSS_COLORS[lab])
        ax_ce.set_xticks(x, labels=ticks, fontsize=7)
        ax_ce.set_ylabel("cross-entropy (nats/token)", fontsize=8)
        top = max(v for n in names for k, v in data[n].items() if k.endswith("_loss")
                  and math.isfinite(v))
        ax_ce.set_ylim(0, top * 1.3)
        ax_ce.legend(fontsize=7, frameon=False, ncols=4, loc="upper center")
        ax_ce.set_title("next-token loss", fontsize=9)
    rec = [data[n]["loss_recovered"] for n in names]
    rec_m = [data[n].get("loss_recovered_mean", float("nan")) for n in names]
    has_mean = any(math.isfinite(r) for r in rec_m)
    w = 0.38 if has_mean else 0.6
    bars = ax_rec.bar(x - (w / 2 if has_mean else 0), rec, w, color=LOSS_COLORS["SAE"],
                      label="vs zero ablation")
    ax_rec.bar_label(bars, fmt="%.3f", fontsize=7, label_type="center", color="white")
    if has_mean:
        bars = ax_rec.bar(x + w / 2, rec_m, w, color=LOSS_COLORS["mean-ablated"],
                          label="vs mean ablation")
        ax_rec.bar_label(bars, fmt="%.3f", fontsize=7, label_type="center")
        ax_rec.legend(fontsize=7, frameon=False, ncols=2, loc="upper center")
    ax_rec.axhline(1.0, color="0.3", lw=0.6, ls="--")
    finite = [r for r in rec + rec_m if math.isfinite(r)]
    lo = min([0.0, *finite])
    ax_rec.set_ylim(lo - 0.05, max([1.0, *finite]) * 1.25)
    ax_rec.set_xticks(x, labels=ticks, fontsize=7)
    ax_rec.set_ylabel("fraction of loss recovered", fontsize=8)
    ax_rec.set_title("SAE spliced in", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
