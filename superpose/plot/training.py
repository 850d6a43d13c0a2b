"""Training curves: the loss history any `train(...)` call returns.

Every trainer's result has the shape of `superpose.train.TrainResult`: `history.step` [n] and
`history.loss` [n] or, for the toy models, [n, instances]. Per-instance losses are drawn one
line per instance on log-y axes; one loss per step as a line, plus, when the history has
them (GPT), the periodic validation losses (`val_step`, `val_loss`) as dots. The y label is
the history's `LOSS_LABEL`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from superpose import _validate as v
from superpose.plot._common import figure_and_axes, omitted_note
from superpose.plot.toy import feature_colors

LINESTYLES = ("-", "--", ":", "-.")


def _history(result: Any, name: str, nan_policy: str = "raise"
             ) -> tuple[np.ndarray, np.ndarray]:
    """(steps [n], loss [n, inst]) from a training result's history; non-finite losses raise,
    or with nan_policy="omit" their logged steps are dropped."""
    history = getattr(result, "history", None)
    if not (hasattr(history, "step") and hasattr(history, "loss")):
        raise ValueError(f"{name} must be a training result (with history.step and "
                         f"history.loss, as every superpose trainer returns), got "
                         f"{type(result).__name__}")
    steps = np.asarray(history.step, dtype=float)
    loss = np.asarray(history.loss, dtype=float)
    if loss.ndim == 1:
        loss = loss[:, None]
    if steps.ndim != 1 or loss.ndim != 2 or loss.shape[0] != steps.shape[0]:
        raise ValueError(f"{name}: history.loss must be [n_logged] or [n_logged, n_instances] "
                         f"matching history.step [n_logged], got loss {list(loss.shape)} and "
                         f"step {list(steps.shape)}")
    if loss.shape[0] == 0:
        raise ValueError(f"{name} has an empty loss history")
    ok = np.isfinite(loss).all(axis=1) & np.isfinite(steps)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        if nan_policy == "raise":
            raise ValueError(f"plot.loss_curves: {name} has {int((~ok).sum())} logged step(s) "
                             f"with a NaN/inf loss (first at step {steps[first]:g}): the run "
                             "diverged there. Pass nan_policy='omit' to draw the finite points "
                             "only (the title says how many were left out)")
        steps, loss = steps[ok], loss[ok]
        if not len(steps):
            raise ValueError(f"plot.loss_curves: {name} has no finite loss at all; nothing "
                             "to draw")
    return steps, loss


def _per_instance(result: Any) -> bool:
    """Toy results: one loss per instance at every logged step."""
    loss = result.history.loss
    return bool(loss) and isinstance(loss[0], (list, tuple))


def _val_history(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """(val_step, val_loss) of the finite validation points (`loss_curves` has checked or
    counted the others)."""
    h = result.history
    vs = np.asarray(getattr(h, "val_step", []), dtype=float)
    vl = np.asarray(getattr(h, "val_loss", []), dtype=float)
    if vs.shape != vl.shape:
        return vs, vl
    ok = np.isfinite(vs) & np.isfinite(vl)
    return vs[ok], vl[ok]


def _val_nonfinite(result: Any) -> tuple[int, float | None]:
    """(how many validation points are NaN/inf, the step of the first)."""
    h = result.history
    vs = np.asarray(getattr(h, "val_step", []), dtype=float)
    vl = np.asarray(getattr(h, "val_loss", []), dtype=float)
    if vs.shape != vl.shape or not vs.size:
        return 0, None
    bad = ~(np.isfinite(vs) & np.isfinite(vl))
    return int(bad.sum()), (float(vs[bad][0]) if bad.any() else None)


def _first_nonfinite_step(result: Any) -> float | None:
    """The logged step of a run's first NaN/inf training loss (where it diverged), or None."""
    steps = np.asarray(result.history.step, dtype=float)
    loss = np.asarray(result.history.loss, dtype=float).reshape(len(steps), -1)
    bad = ~(np.isfinite(loss).all(axis=1) & np.isfinite(steps))
    return float(steps[bad][0]) if bad.any() else None


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along axis 0 (keeps the length; the start uses what it has)."""
    if window <= 1:
        return y
    c = np.cumsum(np.concatenate([np.zeros((1, *y.shape[1:])), y]), axis=0)
    i = np.arange(1, len(y) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)[:, None]


def loss_curves(result_or_results: Any, *, labels: Sequence[str] | None = None,
                ax: Axes | None = None, log: bool | None = None, smooth: int = 1,
                title: str | None = None, val: bool = True,
                nan_policy: str = "raise") -> Figure:
    """Loss against step, for the result of any superpose trainer (toy, GPT, SAE).

    `result_or_results` is one training result or a dict name -> result, all of one kind:
      - per-instance losses (toy models): one line per instance; with a dict each run gets
        its own line style and instances share colours. `labels` name the instances (e.g.
        their feature densities).
      - one loss per step (GPT, SAE): the per-batch training loss as a line and, with
        `val=True`, validation losses where the history has them as dots joined by a line;
        with a dict each run gets its own colour. `labels` (one entry) renames a single run.
    `log`: log-y axes (default: for per-instance losses, and for any loss spanning more than
    a decade; a GPT's cross-entropy spans less). `smooth`: a moving-average window over logged
    training points (per-batch losses are noisy); validation points are never smoothed.
    `nan_policy`: a NaN/inf loss (a diverged run) raises a ValueError naming the first such
    step ("raise"), or "omit" draws the finite part, marks where each run diverged (a dashed
    vertical line at its first non-finite step) and says how many logged points were left out
    in the title (in the figure, so a saved PNG carries it).
    """
    v.check_nan_policy("plot.loss_curves", nan_policy)
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be a positive integer (window in logged points), "
                         f"got {smooth!r}")
    if isinstance(result_or_results, Mapping):
        if not result_or_results:
            raise ValueError("result_or_results is an empty dict; give at least one TrainResult")
        results = {str(k): r for k, r in result_or_results.items()}
    else:
        results = {"": result_or_results}
    runs = {k: _history(r, f"result_or_results[{k!r}]" if k else "result_or_results",
                        nan_policy) for k, r in results.items()}
    n_omitted = sum(len(np.asarray(r.history.step)) - len(runs[k][0])
                    for k, r in results.items())
    if val:
        for k, r in results.items():
            n_bad, at = _val_nonfinite(r)
            if n_bad and nan_policy == "raise":
                name = f"result_or_results[{k!r}]" if k else "result_or_results"
                raise ValueError(f"plot.loss_curves: {name} has {n_bad} NaN/inf validation "
                                 f"loss(es) (first at step {at:g}). Pass nan_policy='omit' to "
                                 "draw the finite points only, or val=False")
            n_omitted += n_bad
    diverged = {k: _first_nonfinite_step(r) for k, r in results.items()}
    kinds = {type(r.history) for r in results.values()}
    if len(kinds) > 1:
        raise ValueError(f"result_or_results mixes results of different trainers "
                         f"({sorted(k.__name__ for k in kinds)}); draw each kind in its own "
                         "figure (pass ax= to share one)")
    per_instance = any(_per_instance(r) for r in results.values())
    ylabel = getattr(kinds.pop(), "LOSS_LABEL", "training loss")
    if log is None:
        every = np.concatenate([loss.ravel() for _, loss in runs.values()])
        log = per_instance or bool(every.min() > 0 and every.max() > 10 * every.min())
    n_inst = max(loss.shape[1] for _, loss in runs.values())
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != n_inst:
            raise ValueError(f"labels must have one entry per instance ({n_inst}), "
                             f"got {len(labels)}")
    fig, a = figure_and_axes(ax, figsize=(5.5, 3.5))
    if per_instance:
        _draw_instances(a, runs, labels=labels, smooth=smooth, n_inst=n_inst)
    else:
        _draw_scalar(a, results, runs, labels=labels, smooth=smooth, val=val)
    if log:
        a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel(ylabel)
    for k, at in diverged.items():
        if at is not None:
            a.axvline(at, color="0.35", ls="--", lw=0.9, zorder=0)
            a.annotate(f"{k + ' ' if k else ''}diverged (step {at:g})", (at, 1.0),
                       xycoords=("data", "axes fraction"), xytext=(-3, -3),
                       textcoords="offset points", ha="right", va="top", fontsize=7,
                       color="0.25", rotation=90)
    title = omitted_note(title, n_omitted, "non-finite logged point(s)")
    if title:
        a.set_title(title)
    for side in ("top", "right"):
        a.spines[side].set_visible(False)
    return fig


def _legend(a: Axes, handles: list, names: list, *, inside: bool = False) -> None:
    """Outside on the right (many instances), or inside where the lines leave room."""
    if not handles:
        return
    if inside:
        a.legend(handles, names, fontsize=7, frameon=False, loc="best")
    else:
        a.legend(handles, names, fontsize=7, ncol=2 if len(handles) > 16 else 1, frameon=False,
                 loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _draw_instances(a: Axes, runs: dict[str, tuple[np.ndarray, np.ndarray]], *,
              labels: list[str] | None, smooth: int, n_inst: int) -> None:
    colors = feature_colors(n_inst)
    for r, (steps, loss) in enumerate(runs.values()):
        y = _smooth(loss, smooth)
        for i in range(loss.shape[1]):
            lab = None
            if r == 0 and (n_inst > 1 or labels is not None):
                lab = labels[i] if labels is not None else f"instance {i}"
            a.plot(steps, y[:, i], color=colors[i], lw=1.0,
                   ls=LINESTYLES[r % len(LINESTYLES)], label=lab)
    handles, names = a.get_legend_handles_labels()
    if len(runs) > 1:
        handles += [Line2D([], [], color="0.3", ls=LINESTYLES[r % len(LINESTYLES)])
                    for r in range(len(runs))]
        names += list(runs)
    _legend(a, handles, names)


def _draw_scalar(a: Axes, results: dict[str, Any], runs: dict[str, tuple[np.ndarray, np.ndarray]],
              *, labels: list[str] | None, smooth: int, val: bool) -> None:
    single = len(runs) == 1
    palette = colormaps["tab10"]
    with_val = val and any(len(_val_history(r)[0]) for r in results.values())
    handles, names = [], []
    for r, (name, (steps, loss)) in enumerate(runs.items()):
        color = "tab:blue" if single else palette(r % 10)
        y = _smooth(loss, smooth)[:, 0]
        if single:
            train_label = "train (per batch" + (f", mean of {smooth})" if smooth > 1 else ")")
            if labels is not None:
                train_label = f"{labels[0]}: {train_label}"
        a.plot(steps, y, color=color, lw=0.9, alpha=0.6 if with_val and not single else 0.9,
               label=train_label if single else None)
        vs, vl = _val_history(results[name])
        if with_val and len(vs):
            a.plot(vs, vl, "o-", color="black" if single else color, lw=1.2, ms=3,
                   label="validation" if single else None)
        if not single:
            handles.append(Line2D([], [], color=color, lw=2))
            names.append(name)
    if single:
        handles, names = a.get_legend_handles_labels()
    elif with_val:          # line styles are only worth a key when both kinds are drawn
        handles += [Line2D([], [], color="0.3", lw=0.9),
                    Line2D([], [], color="0.3", marker="o", ms=3, lw=1.2)]
        names += ["train (per batch)", "validation"]
    _legend(a, handles, names, inside=len(handles) <= 6)
