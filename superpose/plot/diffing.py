"""Model-diffing figures: what a crosscoder, a diff direction and the LoRA weights say about a
fine-tune (see `superpose.diffing` and `superpose.sae.crosscoder`).

- `decoder_norm_ratios`: histogram of a crosscoder's relative decoder norms
  r_j = ‖d_ft‖ / (‖d_base‖ + ‖d_ft‖) (Lindsey et al. 2024): 0 base-only, ½ shared, 1
  fine-tuned-only. Bars are stacked by class (`crosscoder.classify`'s labels, or the same bands
  computed from r), the bands shaded, the counts in the legend; chosen latents (the trigger
  latent) are marked with their index, and Latent Scaling's verdict (Minder et al. 2025: is an
  apparently exclusive latent really absent from the other model?) is a row of markers at the
  top, filled where confirmed exclusive, hollow where not, a cross where it never fired.
- `activations_over_text`: one or a few latents' or directions' activations over a text, as
  a feature dashboard line: every character (or token) a cell shaded by the activation
  (orange from 0 to the series' max; blue/red around 0 for a signed series such as a LoRA
  readout), the text laid out as written (a newline starts a new row), the highlighted
  positions (the trigger) boxed and bold; below, the same activations as lines against the
  position (one band per series), the highlighted positions as vertical lines.
- `delta_spectra`: the singular values of each adapter's ΔW = s·BA on a log scale, one line
  per adapted weight (colour: the weight's kind, W_O, W_out, ...; marker: its layer), and the
  adapter rank r marked: ΔW has rank at most r, so a spectrum that falls off before r says
  the fine-tune needed fewer directions than it was given.

Inputs are tensors, arrays or duck-typed results (`LatentScaling`, `LoRADirections`); nothing
here computes a diff or imports model code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from matplotlib import colormaps, transforms
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogFormatter

from superpose import _validate as v
from superpose.plot._common import (
    LabFigure,
    figure_and_axes,
    finite_inputs,
    root_figure,
    string_tokens,
)
from superpose.plot.features import CHAR_WIDTH, MONO, _context_token

BASE_COLOR, FT_COLOR = "#2b8cbe", "#e34a33"      # base-only blue, fine-tuned-only red
SHARED_COLOR, OTHER_COLOR = "0.6", "#fdd49e"
HIGHLIGHT_COLOR = "0.15"
CELL_W_IN, ROW_H_IN = 0.092, 0.21                # one text cell (8 pt monospace + padding)
TEXT_FONTSIZE = 8.0
NUMERICAL_ZERO = 1e-6                            # σ below this × the largest is round-off


def _vector(x: Any, name: str, where: str) -> np.ndarray:
    """A 1-D float array from a tensor / array / list, or a ValueError that says what to pass."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"{where}: {name} must be numbers, got a {x.dtype} tensor")
        x = x.double().numpy()
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a 1-D tensor or array of numbers, got "
                         f"{type(x).__name__}") from None
    if a.ndim != 1:
        raise ValueError(f"{where}: {name} must be 1-D (one value per entry), got shape "
                         f"{list(a.shape)}")
    if a.size == 0:
        raise ValueError(f"{where}: {name} is empty; there is nothing to draw")
    return a


def _spines(a: Axes) -> None:
    for side in ("top", "right"):
        a.spines[side].set_visible(False)


# ---- decoder_norm_ratios --------------------------------------------------------------------

def norm_bands(exclusive_ratio: float = 0.2, shared_ratio: float = 0.8
               ) -> tuple[float, float, float, float]:
    """`crosscoder.classify`'s bands on the relative norm r: (base-only below, shared from,
    shared to, fine-tuned-only above). A latent is exclusive when the other model's norm is under
    `exclusive_ratio` times its own (r < ρ/(1+ρ) or r > 1/(1+ρ)) and shared when the smaller norm
    is at least `shared_ratio` times the larger (σ/(1+σ) ≤ r ≤ 1/(1+σ)): 1/6, 4/9, 5/9, 5/6 with
    the defaults."""
    for name, value in (("exclusive_ratio", exclusive_ratio), ("shared_ratio", shared_ratio)):
        if not v.Float(gt=0, lt=1).ok(value):
            raise ValueError(f"{name} must be a number in (0, 1) (classify's cut-off), got "
                             f"{value!r}")
    if exclusive_ratio >= shared_ratio:
        raise ValueError(f"exclusive_ratio ({exclusive_ratio}) must be below shared_ratio "
                         f"({shared_ratio}): a latent cannot be both exclusive and shared")
    e, s = exclusive_ratio, shared_ratio
    return e / (1 + e), s / (1 + s), 1 / (1 + s), 1 / (1 + e)


def _classes_from_norms(r: np.ndarray, bands: tuple[float, float, float, float],
                        names: tuple[str, str]) -> list[str]:
    lo, s_lo, s_hi, hi = bands
    return [f"{names[0]}-only" if x < lo else f"{names[1]}-only" if x > hi
            else "shared" if s_lo <= x <= s_hi else "other" for x in r]


def _class_order(labels: list[str], r: np.ndarray) -> list[tuple[str, str]]:
    """(label, colour) in drawing order: the low-r exclusive class, shared, other, the high-r
    exclusive class. Exclusive labels ("<name>-only") are told apart by where their latents
    sit (mean r below or above ½), so any model names work."""
    present = list(dict.fromkeys(labels))
    unknown = [lab for lab in present if lab not in ("shared", "other")
               and not lab.endswith("-only")]
    if unknown:
        raise ValueError(f"plot.decoder_norm_ratios: labels must be crosscoder.classify's "
                         f"('<model>-only', 'shared', 'other'), got {unknown[:3]}")
    lab_arr = np.asarray(labels)
    mean_r = {lab: float(r[lab_arr == lab].mean()) for lab in present}
    only = sorted((lab for lab in present if lab.endswith("-only")), key=mean_r.get)
    low = [(lab, BASE_COLOR) for lab in only if mean_r[lab] < 0.5]
    high = [(lab, FT_COLOR) for lab in only if mean_r[lab] >= 0.5]
    mid = [(lab, c) for lab, c in (("shared", SHARED_COLOR), ("other", OTHER_COLOR))
           if lab in present]
    return low + mid + high


def _highlights(highlight: Any, n: int) -> list[tuple[str, int]]:
    if highlight is None:
        return []
    if isinstance(highlight, Mapping):
        items = [(str(k), j) for k, j in highlight.items()]
    elif isinstance(highlight, (int, np.integer)) and not isinstance(highlight, bool):
        items = [(None, highlight)]
    elif isinstance(highlight, torch.Tensor):
        items = [(None, j) for j in highlight.reshape(-1).tolist()]
    else:
        items = [(None, j) for j in highlight]
    out = []
    for name, j in items:
        if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= int(j) < n:
            raise ValueError(f"plot.decoder_norm_ratios: highlight must be latent indices in "
                             f"[0, {n - 1}] (or a dict name -> index), got {j!r}")
        out.append((name or f"latent {int(j)}", int(j)))
    return out


def _scaling_verdicts(ls: Any, n: int, nu_error_max: float, nu_recon_max: float
                      ) -> dict[str, list[int]]:
    """{"exclusive": [...], "not exclusive": [...], "never fired": [...]} latent indices from a
    `LatentScaling` (or anything with .latents, .count and .exclusive(nu_error_max,
    nu_recon_max))."""
    if not (hasattr(ls, "latents") and hasattr(ls, "count") and callable(
            getattr(ls, "exclusive", None))):
        raise ValueError(f"plot.decoder_norm_ratios: latent_scaling must be the result of "
                         f"crosscoder.latent_scaling(cc, data), got {type(ls).__name__}")
    idx = torch.as_tensor(ls.latents).reshape(-1).long().tolist()
    if any(not 0 <= j < n for j in idx):
        raise ValueError(f"plot.decoder_norm_ratios: latent_scaling covers latents up to "
                         f"{max(idx)} but relative_norms has {n}; pass the same crosscoder's "
                         f"relative norms")
    fired = (torch.as_tensor(ls.count).reshape(-1) > 0).tolist()
    excl = torch.as_tensor(ls.exclusive(nu_error_max, nu_recon_max)).reshape(-1).tolist()
    out: dict[str, list[int]] = {"exclusive": [], "not exclusive": [], "never fired": []}
    for j, f, e in zip(idx, fired, excl):
        out["exclusive" if f and e else "not exclusive" if f else "never fired"].append(j)
    return out


@finite_inputs(skip=("latent_scaling",))
def decoder_norm_ratios(relative_norms: Any, *, labels: Sequence[str] | None = None,
                        latent_scaling: Any = None, highlight: Any = None,
                        exclusive_ratio: float = 0.2, shared_ratio: float = 0.8,
                        nu_error_max: float = 0.2, nu_recon_max: float = 0.5,
                        model_names: tuple[str, str] = ("base", "finetuned"), bins: int = 50,
                        log: bool = True, ax: Axes | None = None, title: str | None = None
                        ) -> Figure:
    """Histogram of a crosscoder's relative decoder norms, stacked by class.

    `relative_norms`: [d_sae] values in [0, 1] (`crosscoder.relative_norms(cc)`), a tensor,
    array or list. `labels`: one class per latent (`crosscoder.classify(cc)`); without them
    the classes come from r and the same bands (`exclusive_ratio`, `shared_ratio`, as in
    `classify`; `model_names` name the exclusive classes). The bands are shaded and their
    edges dashed; the legend counts each class. `highlight`: latents to mark with a labelled
    line (an index, indices, or a dict name -> index, e.g. {"trigger latent": 12}).
    `latent_scaling`: a `crosscoder.LatentScaling`; its latents get a marker at the top: filled
    where ν^ε < `nu_error_max` and ν^r < `nu_recon_max` (confirmed exclusive), hollow where the
    other model explains them too, a cross where the latent never fired. `log`: a log count
    axis, so a handful of exclusive latents stays visible beside thousands of shared ones.
    """
    where = "plot.decoder_norm_ratios"
    if hasattr(relative_norms, "W_dec_models"):
        raise ValueError(f"{where}: pass crosscoder.relative_norms(cc), not the crosscoder "
                         "itself (plots never compute)")
    r = _vector(relative_norms, "relative_norms", where)
    if r.min() < 0 or r.max() > 1:
        raise ValueError(f"{where}: relative_norms must lie in [0, 1] (‖d_ft‖ / (‖d_base‖ + "
                         f"‖d_ft‖)), got values from {r.min():.3g} to {r.max():.3g}; pass "
                         "crosscoder.relative_norms(cc)")
    bands = norm_bands(exclusive_ratio, shared_ratio)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"{where}: bins must be an integer >= 2, got {bins!r}")
    if labels is None:
        labels = _classes_from_norms(r, bands, tuple(model_names))
    else:
        if isinstance(labels, str):
            raise ValueError(f"{where}: labels must be one class per latent (crosscoder."
                             "classify(cc)), got a single str")
        labels = [str(x) for x in labels]
        if len(labels) != len(r):
            raise ValueError(f"{where}: labels has {len(labels)} entries but relative_norms "
                             f"{len(r)}; give one label per latent (crosscoder.classify(cc) "
                             "of the same crosscoder)")
    marks = _highlights(highlight, len(r))
    verdicts = (None if latent_scaling is None else
                _scaling_verdicts(latent_scaling, len(r), nu_error_max, nu_recon_max))

    fig, a = figure_and_axes(ax, figsize=(7.4, 3.4))
    lo, s_lo, s_hi, hi = bands
    for x0, x1, c in ((0, lo, BASE_COLOR), (s_lo, s_hi, SHARED_COLOR), (hi, 1, FT_COLOR)):
        a.axvspan(x0, x1, color=c, alpha=0.08, lw=0, zorder=0)
    for x in bands:
        a.axvline(x, color="0.45", ls="--", lw=0.7, zorder=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    order = _class_order(labels, r)
    lab_arr = np.asarray(labels)
    data = [r[lab_arr == lab] for lab, _ in order]
    a.hist(data, bins=edges, stacked=True, color=[c for _, c in order], zorder=2,
           label=[f"{lab.replace('finetuned', 'fine-tuned')} ({len(d):,})"
                  for (lab, _), d in zip(order, data)], edgecolor="white", linewidth=0.3)
    if log:
        a.set_yscale("log")
        counts, _ = np.histogram(r, bins=edges)
        a.set_ylim(0.6, max(2.0, float(counts.max())) * (12 if verdicts or marks else 3))
    else:
        counts, _ = np.histogram(r, bins=edges)
        a.set_ylim(0, float(counts.max()) * (1.45 if verdicts or marks else 1.1))
    a.set_xlim(-0.01, 1.01)
    trans = transforms.blended_transform_factory(a.transData, a.transAxes)
    for i, (name, j) in enumerate(marks):
        a.axvline(r[j], ymax=0.86, color=HIGHLIGHT_COLOR, lw=1.3, zorder=4)
        a.text(r[j], 0.87 - 0.07 * (i % 2), f" {name}", transform=trans, fontsize=7.5,
               ha="right" if r[j] > 0.8 else "left", va="bottom", color=HIGHLIGHT_COLOR,
               zorder=5)
    handles, texts = a.get_legend_handles_labels()
    if verdicts is not None:
        style = {"exclusive": {"marker": "v", "mfc": FT_COLOR, "mec": FT_COLOR},
                 "not exclusive": {"marker": "v", "mfc": "white", "mec": FT_COLOR},
                 "never fired": {"marker": "x", "mfc": "0.4", "mec": "0.4"}}
        for key, js in verdicts.items():
            if not js:
                continue
            a.plot(r[js], np.full(len(js), 0.955), ls="none", ms=5, mew=0.9, transform=trans,
                   zorder=5, clip_on=False, **style[key])
            handles.append(Line2D([], [], ls="none", ms=5, mew=0.9, **style[key]))
            texts.append(f"Latent Scaling: {key} ({len(js)})")
    a.legend(handles, texts, fontsize=7, frameon=False, loc="upper left",
             bbox_to_anchor=(1.01, 1.0))
    a.set_xlabel(f"relative decoder norm ‖d_ft‖ / (‖d_base‖ + ‖d_ft‖)\n0 = {model_names[0]}"
                 f"-only   ½ = shared   1 = {model_names[1].replace('finetuned', 'fine-tuned')}"
                 "-only", fontsize=8)
    a.set_ylabel("latents", fontsize=8)
    a.tick_params(labelsize=7)
    a.set_xticks([0, lo, 0.5, hi, 1], labels=["0", f"{lo:.2g}", "½", f"{hi:.2g}", "1"])
    _spines(a)
    a.set_title(title if title is not None else
                f"crosscoder latents by relative decoder norm ({len(r):,} latents)", fontsize=9)
    return fig


# ---- activations_over_text ------------------------------------------------------------------

def _tokens(str_tokens: Any, where: str) -> list[str]:
    toks = string_tokens(str_tokens, f"{where}: str_tokens", allow_str=True)  # str: char-level
    if not toks:
        raise ValueError(f"{where}: str_tokens is empty; there is no text to draw")
    return toks


def _series(activations: Any, names: Sequence[str] | None, n_pos: int, where: str
            ) -> dict[str, np.ndarray]:
    if isinstance(activations, Mapping):
        if not activations:
            raise ValueError(f"{where}: activations is an empty dict; give name -> [pos] "
                             "activations")
        if names is not None:
            raise ValueError(f"{where}: names is for a tensor of several series; a dict "
                             "already names its series")
        out = {str(k): _vector(x, f"activations[{k!r}]", where) for k, x in activations.items()}
    else:
        t = activations.detach().cpu().double() if isinstance(activations, torch.Tensor) \
            else torch.as_tensor(np.asarray(activations, dtype=float))
        if t.ndim == 1:
            t = t[None]
        if t.ndim != 2:
            raise ValueError(f"{where}: activations must be [pos] (one series), [series pos] "
                             f"or a dict name -> [pos], got shape {list(t.shape)}; for a "
                             "batch [batch pos] pick one sequence, e.g. act[0]")
        if names is None:
            names = [""] if t.shape[0] == 1 else [f"series {i}" for i in range(t.shape[0])]
        names = [str(x) for x in names]
        if len(names) != t.shape[0]:
            raise ValueError(f"{where}: names has {len(names)} entries but activations "
                             f"{t.shape[0]} series; give one name per row")
        out = {n: row.numpy() for n, row in zip(names, t)}
    for k, a in out.items():
        if len(a) != n_pos:
            label = f"activations[{k!r}]" if k else "activations"
            raise ValueError(f"{where}: {label} has {len(a)} positions but str_tokens has "
                             f"{n_pos}; give one activation per token (the same window)")
    return out


def _positions(highlight: Any, n_pos: int, where: str) -> list[int]:
    if highlight is None:
        return []
    h = highlight.detach().cpu() if isinstance(highlight, torch.Tensor) else np.asarray(highlight)
    h = np.asarray(h)
    if h.dtype == bool:
        if h.ndim != 1 or len(h) != n_pos:
            raise ValueError(f"{where}: a boolean highlight must be a mask [pos] of length "
                             f"{n_pos} (e.g. batch.trigger[i]), got shape {list(h.shape)}")
        return np.flatnonzero(h).tolist()
    h = h.reshape(-1)
    if h.size and (h.dtype.kind not in "iu" or h.min() < 0 or h.max() >= n_pos):
        raise ValueError(f"{where}: highlight must be positions in [0, {n_pos - 1}] or a bool "
                         f"mask [pos], got {h.tolist()[:8]}")
    return sorted(set(int(i) for i in h))


def _layout(cells: list[str], wrap: int, break_lines: bool, raw: list[str]
            ) -> list[tuple[int, int, int]]:
    """(row, column, width) of each token's cell: wrapped at `wrap` columns, and a new row
    after a token that holds a newline when `break_lines`."""
    out, row, col = [], 0, 0
    for cell, tok in zip(cells, raw):
        w = max(1, len(cell))
        if col and col + w > wrap:
            row, col = row + 1, 0
        out.append((row, col, w))
        col += w
        if break_lines and "\n" in tok:
            row, col = row + 1, 0
    return out


def _norm_colors(a: np.ndarray) -> tuple[Any, float, bool]:
    """(a function value -> RGBA, the scale, whether the series is signed)."""
    signed = bool(a.min() < 0)
    scale = float(np.abs(a).max())
    if signed:
        cm = colormaps["RdBu_r"]
        return (lambda x: cm(0.5 + 0.42 * x / scale) if scale > 0 else cm(0.5)), scale, True
    cm = colormaps["Oranges"]
    return (lambda x: cm(0.08 + 0.72 * x / scale) if scale > 0 else (1, 1, 1, 0)), scale, False


def _text_panel(a: Axes, raw: list[str], act: np.ndarray, marks: set[int], name: str, *,
                wrap: int, break_lines: bool, fontsize: float) -> None:
    cells = [_context_token(t, i in marks) for i, t in enumerate(raw)]
    lay = _layout(cells, wrap, break_lines, raw)
    n_rows = lay[-1][0] + 1 if lay else 1
    color, scale, signed = _norm_colors(act)
    boxes, faces = [], []
    for i, ((row, col, w), cell) in enumerate(zip(lay, cells)):
        if act[i] != 0:
            boxes.append(Rectangle((col, row), w, 1))
            faces.append(color(act[i]))
        if i in marks:
            a.add_patch(Rectangle((col, row), w, 1, fill=False, ec=HIGHLIGHT_COLOR, lw=1.1,
                                  zorder=3))
        for k, ch in enumerate(cell):
            if not ch.isspace():
                t = a.text(col + k + 0.5, row + 0.52, ch, fontsize=fontsize, fontfamily=MONO,
                           ha="center", va="center", zorder=2,
                           fontweight="bold" if i in marks else "normal")
                t.set_parse_math(False)
    if boxes:
        a.add_collection(PatchCollection(boxes, facecolors=faces, edgecolors="none", zorder=1))
    a.set_xlim(0, wrap)
    a.set_ylim(n_rows, 0)
    # cells keep their shape (a row is ROW_H_IN tall per CELL_W_IN of width) in any axes
    a.set_aspect(ROW_H_IN / CELL_W_IN, adjustable="box", anchor="NW")
    a.set_axis_off()
    scale_note = (f"colour: −{scale:.3g} (blue) … +{scale:.3g} (red)" if signed
                  else f"colour: 0 … {scale:.3g}")
    a.set_title(f"{name}   ({scale_note})" if name else f"activation ({scale_note})",
                fontsize=8, loc="left", pad=3)


def _line_panel(a: Axes, series: dict[str, np.ndarray], marks: list[int], normalize: bool,
                highlight_label: str) -> None:
    """Every series against the position. Normalised: one band per series (first on top),
    each divided by its largest |value| and drawn from its own baseline (a signed series
    around the band's middle), named inside its band: lines of different scales never hide
    each other. Otherwise raw values on one axis, named in a legend."""
    colors = colormaps["tab10"]
    n = len(series)
    band_label = transforms.blended_transform_factory(a.transAxes, a.transData)
    for i, (name, act) in enumerate(series.items()):
        x = np.arange(len(act))
        if normalize:
            top = float(np.abs(act).max()) or 1.0
            signed = bool(act.min() < 0)
            base = (n - 1 - i) + (0.45 if signed else 0.05)
            y = base + (0.45 if signed else 0.85) * act / top
            a.axhline(base, color="0.8", lw=0.5, zorder=0)
            a.text(0.005, n - i - 0.04, name or f"series {i}", transform=band_label,
                   fontsize=7, color=colors(i % 10), ha="left", va="top", zorder=3,
                   bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5})
        else:
            y = act
        a.plot(x, y, lw=1.0, color=colors(i % 10), label=None if normalize else (name or None),
               zorder=2)
    for p in marks:
        a.axvline(p, color=HIGHLIGHT_COLOR, ls=":", lw=0.9, zorder=1)
    a.set_xlim(-0.5, len(next(iter(series.values()))) - 0.5)
    a.set_xlabel("position" + (f"   (dotted: {highlight_label})" if marks and highlight_label
                               else ""), fontsize=8)
    if normalize:
        a.set_ylim(-0.05, n)
        a.set_yticks([])
        a.set_ylabel("activation / max |activation|" if n == 1 else
                     "activation / max |activation|,\none band per series", fontsize=8)
    else:
        a.axhline(0, color="0.7", lw=0.5, zorder=0)
        a.set_ylabel("activation", fontsize=8)
    a.tick_params(labelsize=7)
    _spines(a)
    if not normalize and n > 1:
        a.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


@finite_inputs
def activations_over_text(str_tokens: Any, activations: Any, *, highlight: Any = None,
                          names: Sequence[str] | None = None, title: str | None = None,
                          kind: Literal["both", "text", "line"] = "both", wrap: int = 100,
                          break_lines: bool = True, normalize: bool | None = None,
                          highlight_label: str = "trigger", ax: Axes | None = None
                          ) -> Figure:
    """Activations of one or a few latents / directions over a text.

    `str_tokens`: the text's tokens (`tok.to_str_tokens(ids)`), or a str for a character-level
    text (one token per character). `activations`: [pos] (one series), [series pos] (with
    `names`) or a dict name -> [pos]; the same window as the tokens. `highlight`: positions to
    box and mark (indices, or a bool mask [pos] such as `batch.trigger[i]`).

    kind="text": one panel per series, each token a cell shaded by its activation (scaled to the
    series' largest |value|, stated in the panel title; orange for a non-negative series,
    blue-white-red around 0 for a signed one), wrapped at `wrap` columns and, with
    `break_lines`, a new row after each newline (code keeps its layout); highlighted tokens
    boxed and bold. kind="line": every series against the position, highlighted positions as
    dotted lines; with `normalize` (the default for several series) each series gets its own
    band, divided by its largest |value| and named inside it, else raw values on one axis
    with a legend. kind="both" (default): the text panels above the line panel. `ax=` draws
    one panel: kind="line", or kind="text" with one series.
    """
    where = "plot.activations_over_text"
    v.choice("kind", kind, ("both", "text", "line"))
    if isinstance(wrap, bool) or not isinstance(wrap, int) or wrap < 8:
        raise ValueError(f"{where}: wrap must be an integer >= 8 (columns per text row), got "
                         f"{wrap!r}")
    raw = _tokens(str_tokens, where)
    series = _series(activations, names, len(raw), where)
    marks = _positions(highlight, len(raw), where)
    if normalize is None:
        normalize = len(series) > 1
    lay = _layout([_context_token(t, i in set(marks)) for i, t in enumerate(raw)], wrap,
                  break_lines, raw)
    n_rows = lay[-1][0] + 1
    cols = min(wrap, max(c + w for _, c, w in lay))           # the widest row, in cells
    if ax is not None:
        if kind == "both" or (kind == "text" and len(series) > 1):
            raise ValueError(f"{where}: ax= draws one panel: pass kind='line', or kind='text' "
                             f"with one series (got kind={kind!r} and {len(series)} series), "
                             "or ax=None for the full figure")
        fig = root_figure(ax)
        panels = [ax]
    else:
        # the text cells' width, plus the line panel's y label (the panels share edges)
        width = max(5.0, cols * CELL_W_IN + 1.0) if kind != "line" else 6.0
        text_h = [n_rows * ROW_H_IN + 0.3] * len(series) if kind != "line" else []
        line_h = [max(2.0, 0.8 * len(series) + 0.6)] if kind != "text" else []
        heights = text_h + line_h
        fig = LabFigure(figsize=(width + (1.6 if line_h and not normalize and len(series) > 1
                                          else 0.0),
                                 sum(heights) + (0.35 if title else 0.0)), layout="constrained")
        panels = list(np.atleast_1d(fig.subplots(len(heights), 1, squeeze=False,
                                                 gridspec_kw={"height_ratios": heights})[:, 0]))
    if kind != "line":
        fontsize = TEXT_FONTSIZE
        if ax is not None:              # a given axes: shrink the font to its cells if need be
            cell_in = ax.get_position().width * fig.get_size_inches()[0] / cols
            fontsize = min(TEXT_FONTSIZE, max(3.0, 0.9 * cell_in * 72 / CHAR_WIDTH))
        for a, (name, act) in zip(panels, series.items()):
            _text_panel(a, raw, act, set(marks), name, wrap=cols, break_lines=break_lines,
                        fontsize=fontsize)
    if kind != "text":
        _line_panel(panels[-1], series, marks, normalize, highlight_label)
    if title:
        if ax is None:
            fig.suptitle(title, fontsize=10)
        else:
            ax.set_title(title, fontsize=9)
    return fig


# ---- delta_spectra --------------------------------------------------------------------------

class _PlainLog(LogFormatter):
    """Log-axis labels as plain numbers (0.2, 3, 10), not 2e-01 or 3 × 10⁰."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_MARKERS = "osD^vP*X<>ph"


def _spectra(singular_values: Any) -> dict[str, np.ndarray]:
    where = "plot.delta_spectra"
    if not isinstance(singular_values, Mapping):
        singular_values = {"ΔW": singular_values}
    if not singular_values:
        raise ValueError(f"{where}: singular_values is empty; give a dict weight name -> "
                         "singular values (e.g. diffing.lora_directions(model))")
    out = {}
    for k, s in singular_values.items():
        s = getattr(s, "S", s)                       # a diffing.LoRADirections
        a = _vector(s, f"singular_values[{k!r}]", where)
        if a.min() < 0:
            raise ValueError(f"{where}: singular_values[{k!r}] has a negative value "
                             f"({a.min():.3g}); singular values are >= 0: pass "
                             "torch.linalg.svdvals(ΔW) or diffing.lora_directions(model)")
        out[str(k)] = np.sort(a)[::-1]
    return out


@finite_inputs
def delta_spectra(singular_values: Any, *, rank: int | None = None, ax: Axes | None = None,
                  title: str | None = None, numerical_zero: float = NUMERICAL_ZERO) -> Figure:
    """Singular values of each adapted weight's ΔW, largest first, on a log scale.

    `singular_values`: a dict weight name -> 1-D singular values (a tensor, array or list, or
    a `diffing.LoRADirections`, so `diffing.lora_directions(model)` can be passed as it is),
    or one 1-D tensor. Weights named `blocks.{L}.{kind}` get a colour per kind and a marker per
    layer. `rank`: the adapters' rank r, drawn as a dashed line: ΔW = s·BA has rank ≤ r.
    Values below `numerical_zero` × the largest (round-off of an SVD past rank r) are left out
    and counted in a note.
    """
    where = "plot.delta_spectra"
    spectra = _spectra(singular_values)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))
                             or rank < 1):
        raise ValueError(f"{where}: rank must be a positive integer (the adapters' rank), got "
                         f"{rank!r}")
    if not isinstance(numerical_zero, (int, float)) or not 0 <= numerical_zero < 1:
        raise ValueError(f"{where}: numerical_zero must be a number in [0, 1), got "
                         f"{numerical_zero!r}")
    top = max(float(s.max()) for s in spectra.values())
    if top <= 0:
        raise ValueError(f"{where}: every singular value is 0, so ΔW = 0: the adapters are "
                         "untrained (B starts at 0); train them first (gpt.train)")
    floor = numerical_zero * top
    parsed = {k: _BLOCK.match(k) for k in spectra}
    kinds = list(dict.fromkeys(m.group(2) if m else k for k, m in parsed.items()))
    layers = sorted({int(m.group(1)) for m in parsed.values() if m})
    n = len(spectra)
    fig, a = figure_and_axes(ax, figsize=(6.2 if n > 4 else 4.8, 3.4))
    n_dropped = 0
    longest = max(len(s) for s in spectra.values())
    for k, s in spectra.items():
        m = parsed[k]
        kind_i = kinds.index(m.group(2) if m else k)
        marker = _MARKERS[layers.index(int(m.group(1))) % len(_MARKERS)] if m else "o"
        keep = s > floor
        n_dropped += int((~keep).sum())
        x = np.arange(1, len(s) + 1)[keep]
        a.plot(x, s[keep], marker=marker, ms=4.5, lw=1.0, alpha=0.85, mfc="none", mew=1.0,
               color=colormaps["tab10"](kind_i % 10), label=k)
    a.set_yscale("log")
    # plain numbers (0.2, 3), on minor ticks too when the spectra span under ~2 decades
    a.yaxis.set_major_formatter(_PlainLog(labelOnlyBase=False))
    a.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    a.tick_params(axis="y", which="both", labelsize=7)
    if rank is not None:
        a.axvline(rank + 0.5, color="0.35", ls="--", lw=0.9,
                  label=f"adapter rank r = {rank}")
    a.set_xlim(0.5, max(longest, rank or 0) + 0.5 + (0.5 if rank and rank >= longest else 0))
    if longest <= 20:
        a.set_xticks(np.arange(1, max(longest, rank or 0) + 1))
    a.set_xlabel("singular value index (largest first)", fontsize=8)
    a.set_ylabel("σ of ΔW", fontsize=8)
    a.tick_params(labelsize=7)
    a.grid(alpha=0.25, lw=0.5, which="major")
    _spines(a)
    if n_dropped:
        a.text(0.99, 0.02, f"{n_dropped} value(s) < {numerical_zero:g}·max (round-off) "
               "not drawn", transform=a.transAxes, fontsize=6.5, ha="right", va="bottom",
               color="0.4")
    handles, texts = a.get_legend_handles_labels()
    if n > 4 and all(parsed.values()):
        # many weights of a model: a key of kinds (colour) and layers (marker), not n entries
        handles = [Line2D([], [], color=colormaps["tab10"](i % 10), lw=1.5) for i in
                   range(len(kinds))] + [Line2D([], [], color="0.3", ls="none", mfc="none",
                                                marker=_MARKERS[i % len(_MARKERS)])
                                         for i in range(len(layers))] + handles[n:]
        texts = kinds + [f"layer {L}" for L in layers] + texts[n:]
    outside = n > 4
    a.legend(handles, texts, fontsize=7, frameon=False, ncol=2 if len(texts) > 14 else 1,
             loc="upper left" if outside else "upper right",
             bbox_to_anchor=(1.01, 1.0) if outside else None)
    a.set_title(title if title is not None else f"ΔW spectra of {n} adapted weight(s)",
                fontsize=9)
    return fig
