"""Shared helpers for the plot modules: figures without pyplot, and vector-set coercion.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot): no global figure
state, nothing to close, safe in tests and worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from superpose import _validate as v


def select_indices(sel: Any, n: int, *, empty: str, bad: Any) -> list[int]:
    """`sel` (None for all, one integer, or integers; negative ones count from the end) as a
    list of indices into n items. An empty selection raises ValueError(empty); a non-integer or
    out-of-range entry x raises ValueError(bad(x))."""
    if sel is None:
        return list(range(n))
    if isinstance(sel, (int, np.integer)) and not isinstance(sel, bool):
        raw = [sel]
    else:
        raw = [sel] if isinstance(sel, bool) else list(sel)
    if not raw:
        raise ValueError(empty)
    out = []
    for i in raw:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= int(i) < n:
            raise ValueError(bad(i))
        out.append(int(i) % n)
    return out


class LabFigure(Figure):
    """A pyplot-free `Figure` that Jupyter displays by itself.

    Without pyplot, IPython's inline backend never registers its figure formatter, so a bare
    `Figure` returned from a cell would print as `<Figure size ...>`; `_repr_png_` makes it
    render as an image in any notebook, whatever the backend.
    """

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


def string_tokens(tokens: Any, name: str, *, allow_str: bool = False) -> list[str]:
    """One sequence's token strings (`tokenizer.to_str_tokens(ids)`) as a list, or a ValueError
    naming `name` and the fix: a single str (unless `allow_str`: a character-level text, one
    token per character), a tensor of ids, a batch of sequences, non-strings."""
    if isinstance(tokens, str):
        if allow_str:
            return list(tokens)
        raise ValueError(f"{name} must be a list of strings, one per token; got a single str. "
                         "Pass tokenizer.to_str_tokens(text)")
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name} must be a list of strings, one per token, got a tensor of "
                         "ids; pass tokenizer.to_str_tokens(ids)")
    tokens = list(tokens)
    if tokens and isinstance(tokens[0], (list, tuple)):
        raise ValueError(f"{name} must be the labels of one sequence of strings, got a list of "
                         f"{len(tokens)} sequences; pass {name}[batch]")
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{name} must be strings (tokenizer.to_str_tokens(text)), got "
                         f"{type(bad[0]).__name__} {bad[0]!r}")
    return tokens


def figure_and_axes(ax: Axes | None = None, *, nrows: int = 1, ncols: int = 1,
                    figsize: tuple[float, float] | None = None,
                    **kw: Any) -> tuple[Figure, Axes | np.ndarray]:
    """Return `(fig, axes)`: the root figure of `ax` and `ax` itself when `ax` is given (only
    a single panel can then be drawn), else a new pyplot-free `Figure` with `nrows x ncols`
    subplots.

    Extra keywords go to `Figure.subplots` (e.g. `squeeze=False`, `sharex=True`,
    `subplot_kw=...`). `figsize` defaults to 3.2 x 3.0 inches per panel.
    """
    if ax is not None:
        if nrows * ncols != 1:
            raise ValueError(f"ax= draws a single panel, but nrows={nrows}, ncols={ncols} "
                             f"were requested; pass ax=None to get a new figure")
        if kw.get("squeeze", True) is False:
            return root_figure(ax), np.array([[ax]], dtype=object)
        return root_figure(ax), ax
    if nrows < 1 or ncols < 1:
        raise ValueError(f"nrows and ncols must be >= 1, got nrows={nrows}, ncols={ncols}")
    if figsize is None:
        figsize = (3.2 * ncols, 3.0 * nrows)
    layout = kw.pop("layout", "constrained")
    fig = LabFigure(figsize=figsize, layout=layout)
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def root_figure(ax: Axes) -> Figure:
    """The top-level `Figure` an axes lives in (also when it sits in a `SubFigure`)."""
    try:
        return ax.get_figure(root=True)                  # matplotlib >= 3.10
    except TypeError:
        fig = ax.figure
        while not isinstance(fig, Figure):               # SubFigure: climb to the root
            fig = fig.figure
        return fig


def new_figure(nrows: int = 1, ncols: int = 1, ax: Axes | None = None,
               **kw: Any) -> tuple[Figure, Axes | np.ndarray]:
    """Alias of `figure_and_axes` with positional rows/cols."""
    return figure_and_axes(ax, nrows=nrows, ncols=ncols, **kw)


def grid_shape(n: int, max_cols: int = 5) -> tuple[int, int]:
    """Rows and columns for `n` panels, at most `max_cols` per row."""
    if n < 1:
        raise ValueError(f"number of panels must be >= 1, got {n}")
    ncols = min(n, max_cols)
    return (n + ncols - 1) // ncols, ncols


def as_vector_sets(source: Any, instances: int | Sequence[int] | None = None, *,
                   name: str = "model_or_vectors"
                   ) -> tuple[torch.Tensor, list[int], list[str] | None]:
    """Coerce what a plot was given into `(V [k, n, d] float CPU tensor, instance ids, default
    titles or None)`.

    `source` is a module with `feature_directions()` (a `ToyModel`: [inst, n_features, n_hidden]),
    or a tensor/array of vectors as rows, [inst, n, d] or [n, d] (one set). `instances` picks a
    subset (an int or a list of ints). Titles default to each instance's feature density when
    the module has a toy config.
    """
    titles: list[str] | None = None
    if isinstance(source, torch.nn.Module) or hasattr(source, "feature_directions"):
        fd = getattr(source, "feature_directions", None)
        if not callable(fd):
            raise ValueError(f"{name} must be a tensor of vectors [inst, n, d] / [n, d] or a "
                             f"model with a feature_directions() method, got "
                             f"{type(source).__name__}")
        V = fd()
        cfg = getattr(source, "cfg", None)
        if cfg is not None and hasattr(cfg, "probability_tensor"):
            p = cfg.probability_tensor().mean(-1)
            titles = [density_label(float(x)) for x in p]
    elif isinstance(source, torch.Tensor):
        V = source
    elif isinstance(source, np.ndarray):
        V = torch.from_numpy(np.asarray(source))
    else:
        raise ValueError(f"{name} must be a tensor of vectors [inst, n, d] / [n, d] or a model "
                         f"with a feature_directions() method, got {type(source).__name__}")
    V = V.detach().to("cpu")
    if V.ndim == 2:
        V = V[None]
    if V.ndim != 3:
        raise ValueError(f"{name} must have shape [inst, n, d] or [n, d] (vectors as rows), "
                         f"got shape {list(V.shape)}")
    if not V.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {V.dtype}")
    if V.shape[1] == 0 or V.shape[2] == 0:
        raise ValueError(f"{name} must hold at least one vector of dimension >= 1, "
                         f"got shape {list(V.shape)}")
    V = V.float()
    n_inst = V.shape[0]
    idx = select_indices(
        instances, n_inst,
        empty="instances must select at least one instance, got an empty list",
        bad=lambda i: f"instances must be integers in [0, {n_inst}) (there are {n_inst} "
                      f"instances), got {i!r}")
    V = V[idx]
    if titles is not None:
        titles = [titles[i] for i in idx]
    return V, idx, titles


def resolve_titles(titles: Sequence[str] | None, default: list[str] | None,
                   idx: list[int]) -> list[str]:
    """User titles (one per drawn panel) win; else the defaults; else 'instance i'."""
    if titles is not None:
        titles = list(titles)
        if len(titles) != len(idx):
            raise ValueError(f"titles must have one entry per drawn instance ({len(idx)}), "
                             f"got {len(titles)}")
        return [str(t) for t in titles]
    if default is not None:
        return default
    return [f"instance {i}" for i in idx] if len(idx) > 1 else [""]


def density_label(p: float) -> str:
    """'p = 0.05': the feature density (1 - sparsity) of an instance."""
    return f"p = {p:.2g}" if p < 0.995 else "p = 1 (dense)"


def axes_list(ax: Any, n: int, *, nrows: int, ncols: int,
              figsize: tuple[float, float] | None = None,
              **kw: Any) -> tuple[Figure, list[Axes]]:
    """A figure with `n` panels laid out `nrows x ncols` (spare panels hidden), or the given
    axes: one `Axes` (then n must be 1) or a sequence of exactly `n` axes."""
    if ax is None:
        fig, axes = figure_and_axes(nrows=nrows, ncols=ncols, figsize=figsize, squeeze=False,
                                    **kw)
        flat = list(axes.ravel())
        for extra in flat[n:]:
            extra.set_visible(False)
        return fig, flat[:n]
    if isinstance(ax, Axes):
        if n != 1:
            raise ValueError(f"ax= is a single Axes but {n} instances are to be drawn; pass "
                             f"instances=<one index>, a sequence of {n} axes, or ax=None")
        return root_figure(ax), [ax]
    axs = list(np.asarray(ax, dtype=object).ravel())
    if len(axs) != n or not all(isinstance(a, Axes) for a in axs):
        raise ValueError(f"ax= must be an Axes or a sequence of {n} Axes (one per instance), "
                         f"got {len(axs)} item(s)")
    return root_figure(axs[0]), axs


def finite_inputs(fn: Any = None, *, missing_ok: Sequence[str] = (),
                  omit: Sequence[str] = (), skip: Sequence[str] = ()) -> Any:
    """Decorator for a public plot function: every numeric argument (tensors, arrays, floats,
    and lists / tuples / dicts of them) must be finite, else one ValueError naming the function,
    the argument, how many values and where the first is. A figure of NaN data is empty or
    wrong without a word, which is worse than an error.

    `missing_ok`: arguments where NaN means "no value" and is drawn as such (a grey cell); inf
    is still refused. `omit`: arguments the function itself cleans when called with
    nan_policy="omit" (it then says how many values it left out). `skip`: arguments that are
    our own results where inf has a meaning (a capacity bound that does not exist)."""
    if fn is None:
        return lambda f: finite_inputs(f, missing_ok=missing_ok, omit=omit, skip=skip)
    import functools
    import inspect

    sig = inspect.signature(fn)
    where = f"plot.{fn.__name__}"

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:
            return fn(*args, **kwargs)          # let the function report its own misuse
        omitting = bound.arguments.get("nan_policy", "raise") == "omit"
        for name, value in bound.arguments.items():
            if (omitting and name in omit) or name in skip:
                continue
            if name in missing_ok:
                value = _without_nan(value)
            v.check_finite(where, name, value, fix="a figure of them would be empty or wrong. "
                           + ("Pass nan_policy='omit' to leave them out, or drop"
                              if name in omit else "Drop") + " or fix those values first")
        return fn(*args, **kwargs)
    return checked


def _without_nan(x: Any) -> Any:
    """`x` with NaN replaced by 0 (for arguments where NaN means 'missing'), so that only inf
    counts as bad; an all-NaN tensor stays as it is (a figure of no values is refused)."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(x)
        if t.is_floating_point() and t.numel() and not bool(torch.isnan(t).all()):
            return torch.nan_to_num(t, nan=0.0, posinf=math.inf, neginf=-math.inf)
    return x


def drop_nonfinite(x: Any) -> tuple[np.ndarray, int]:
    """(the finite values of `x` as a flat float64 array, how many were dropped)."""
    a = np.asarray(torch.as_tensor(x).detach().to("cpu").double()).ravel()
    ok = np.isfinite(a)
    return a[ok], int((~ok).sum())


def omitted_note(title: str | None, n_omitted: int, what: str = "non-finite value(s)"
                 ) -> str | None:
    """The title with a second line saying how many values nan_policy='omit' left out (in the
    figure itself, where a reader of the saved PNG sees it, not in a log nobody reads)."""
    if not n_omitted:
        return title
    note = f"({n_omitted} {what} omitted)"
    return f"{title}\n{note}" if title else note
