"""NaN, inf, empty and zero-vector data reaching a figure or a geometry / JL / packing /
toy-analysis function (issue 13). Each call here is hostile in one way and must end in one
ValueError naming the function, the argument and the problem (how many NaN/inf values and the
index of the first, or the zero row) — never a blank figure or a NaN answer without a word.
Where a user plausibly wants NaN skipped (a diverged run's curves, a histogram of ratios, a
frontier with a failed run), `nan_policy="omit"` draws the finite part and the title says how
much was left out; those results are checked here too. Unit tier."""

from __future__ import annotations

import dataclasses
import inspect

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from superpose import geometry, jl, packing, plot, toy
from superpose.sae.training import SAETrainHistory
from superpose.toy import analysis
from superpose.train.result import History, TrainResult

NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def with_value(shape=(3, 4, 2), at=(1, 2, 0), value=NAN, seed=0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    x[at] = value
    return x


def _nonfinite(where, arg, count=1, index=None):
    at = rf" \(first at index \[{index}\]\)" if index is not None else ""
    return rf"{where}: {arg} holds {count} NaN/inf value\(s\){at}"


# ---------------------------------------------------------------- plots: the first argument

@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize("name", [n for n in plot.__all__ if n != "loss_curves"])
def test_every_plot_refuses_non_finite_data_in_its_first_argument(name, value, user_errors):
    fn = getattr(plot, name)
    first = next(iter(inspect.signature(fn).parameters))
    if name == "head_scores_heatmap" and value != value:
        pytest.skip("NaN scores are unscored heads, drawn grey (tested below)")
    if name == "capacity_curves":           # caps are packing.Capacity (inf there: no bound)
        with pytest.raises(TypeError, match=r"caps must be a non-empty sequence of "
                                            r"packing\.Capacity"):
            fn(with_value(value=value))
        return
    with pytest.raises(ValueError, match=_nonfinite(rf"plot\.{name}", first, 1, "1, 2, 0")
                       + r"; a figure of them would be empty or wrong"):
        fn(with_value(value=value))


# ---------------------------------------------------------------- plots: real inputs

def _result(losses, val=None):
    h = History()
    for i, loss in enumerate(losses):
        h.record(step=i + 1, loss=loss, lr=1e-3, seconds=0.1 * i)
    if val is not None:
        h = dataclasses.replace(h)          # plain History has no val lists: add them
        h.val_step, h.val_loss = [1, 2], val
    return TrainResult(history=h, config=None, step=len(losses), seconds=1.0)


def _sae_history(mse):
    h = SAETrainHistory()
    for i, m in enumerate(mse):
        h.record(step=i, loss=m, lr=1e-3, seconds=0.0, samples=(i + 1) * 100, mse=m,
                 sparsity=0.1, aux=0.0, l0=10.0, frac_dead=0.0, resampled=0)
    return h


def _pack():
    return packing.pack(6, 3, steps=20, seed=0)


def _sweep():
    X = torch.randn(12, 20, generator=torch.Generator().manual_seed(0))
    return jl.smallest_k(X, 0.5, ks=[4, 8], trials=1, refine=False)


W = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, n_instances=2)).W.detach().clone()
PATTERN = torch.rand(1, 2, 2, 5, 5).softmax(-1)
POINTS = [{"architecture": "topk", "l0": 3.0, "fve": 0.9},
          {"architecture": "topk", "l0": 5.0, "fve": 0.95}]


def _bad_w(value):
    w = W.clone()
    w[1, 1, 1] = value
    return w


def _bad_pattern(value):
    p = PATTERN.clone()
    p[0, 0, 1, 4, 2] = value
    return p


def _bad_points(value):
    return [POINTS[0], {**POINTS[1], "l0": value}]


def _bad_pack(value):
    r = _pack()
    return dataclasses.replace(r, history=[*r.history[:-1], value])


def _bad_sweep(value):
    s = _sweep()
    q = {k: v.copy() for k, v in s.sweep.quantiles.items()}
    q[1.0][1, 0] = value
    return dataclasses.replace(s, sweep=dataclasses.replace(s.sweep, quantiles=q))


PLOT_CASES = {
    "feature_directions W": (lambda x: plot.feature_directions(_bad_w(x)),
                             _nonfinite(r"plot\.feature_directions", "model_or_vectors", 1,
                                        "1, 1, 1")),
    "gram_heatmaps W": (lambda x: plot.gram_heatmaps(_bad_w(x)),
                        _nonfinite(r"plot\.gram_heatmaps", "model_or_vectors", 1, "1, 1, 1")),
    "feature_bars W": (lambda x: plot.feature_bars(_bad_w(x)),
                       _nonfinite(r"plot\.feature_bars", "model_or_vectors", 1, "1, 1, 1")),
    "attention_heads pattern": (lambda x: plot.attention_heads(_bad_pattern(x), layer=0),
                                _nonfinite(r"plot\.attention_heads", "cache_or_patterns", 1,
                                           "0, 0, 1, 4, 2")),
    "attention_head cache": (lambda x: plot.attention_head(
        {"blocks.0.attn.hook_pattern": _bad_pattern(x)[0]}, layer=0, head=1),
        _nonfinite(r"plot\.attention_head", "cache_or_patterns", 1,
                   "'blocks.0.attn.hook_pattern', 0, 1, 4, 2")),
    "head_scores_heatmap inf": (lambda x: plot.head_scores_heatmap(
        torch.tensor([[0.1, x if x == x else -INF], [0.5, 0.2]])),
        _nonfinite(r"plot\.head_scores_heatmap", "scores", 1, "0, 1")),
    "dimensions_per_feature_curve y": (lambda x: plot.dimensions_per_feature_curve(
        np.array([1.0, 2.0]), np.array([1.0, x])),
        _nonfinite(r"plot\.dimensions_per_feature_curve", "dims_per_feature", 1, "1")),
    "dimensionality_scatter x": (lambda x: plot.dimensionality_scatter(
        np.array([x, 2.0]), np.ones((2, 3))),
        _nonfinite(r"plot\.dimensionality_scatter", "inv_sparsity", 1, "0")),
    "phase_diagram x_values": (lambda x: plot.phase_diagram(
        torch.zeros(2, 2, dtype=torch.long), np.array([1.0, x]), np.array([1.0, 2.0]),
        class_names=["a"], xlabel="x", ylabel="y"),
        _nonfinite(r"plot\.phase_diagram", "x_values", 1, "1")),
    "angle_histograms dict": (lambda x: plot.angle_histograms(
        {"a": with_value((6, 3), (4, 1), x)}), _nonfinite(r"plot\.angle_histograms",
                                                          "vectors", 1, "'a', 4, 1")),
    "angle_comparison groups": (lambda x: plot.angle_comparison(
        {"t": {"a": with_value((6, 3), (4, 1), x)}}),
        _nonfinite(r"plot\.angle_comparison", "groups", 1, "'t', 'a', 4, 1")),
    "capacity_curves measured": (lambda x: plot.capacity_curves(
        [packing.capacity(3, 30)], measured={"m": ([3, 4], [5.0, x])}),
        _nonfinite(r"plot\.capacity_curves", "measured", 1, "'m', 1, 1")),
    "optimizer_history history": (lambda x: plot.optimizer_history(_bad_pack(x)),
                                  r"plot\.optimizer_history: results holds 1 NaN/inf value\(s\) "
                                  r"\(first at index \['history', \d+\]\)"),
    "distortion_vs_k sweep": (lambda x: plot.distortion_vs_k(_bad_sweep(x)),
                              r"plot\.distortion_vs_k: result holds 1 NaN/inf value\(s\) "
                              r"\(first at index \['sweep', 'quantiles', 1\.0, 1, 0\]\)"),
    "distortion_histogram ratios": (lambda x: plot.distortion_histogram(
        {"gaussian": np.array([0.9, x, 1.1])}),
        _nonfinite(r"plot\.distortion_histogram", "ratios", 1, "'gaussian', 1")
        + r".*nan_policy='omit'"),
    "decoder_vs_true true": (lambda x: plot.decoder_vs_true(
        torch.randn(4, 3), with_value((4, 3), (2, 2), x)),
        _nonfinite(r"plot\.decoder_vs_true", "true", 1, "2, 2")),
    "max_cos_histogram results": (lambda x: plot.max_cos_histogram(
        {"relu": with_value((4, 3), (3, 0), x)}, torch.randn(4, 3)),
        _nonfinite(r"plot\.max_cos_histogram", "results", 1, "'relu', 3, 0")),
    "frontier l0": (lambda x: plot.frontier(_bad_points(x)),
                    _nonfinite(r"plot\.frontier", "points", 1, "1, 'l0'")
                    + r".*nan_policy='omit'"),
    "latent_density vector": (lambda x: plot.latent_density(torch.tensor([0.1, x, 0.0])),
                              _nonfinite(r"plot\.latent_density", "densities", 1, "1")),
    "sae_training_curves mse": (lambda x: plot.sae_training_curves(
        {"relu": _sae_history([1.0, 0.5, x])}),
        _nonfinite(r"plot\.sae_training_curves", "histories", 2, "'relu', 'loss', 2")
        + r".*nan_policy='omit'"),
    "loss_recovered_bars losses": (lambda x: plot.loss_recovered_bars(
        {"a": {"clean": 2.0, "spliced": x, "mean_ablated": 3.0, "zero_ablated": 4.0}}),
        _nonfinite(r"plot\.loss_recovered_bars", "results", 1, "'a', 'spliced'")),
    "loss_curves train loss": (lambda x: plot.loss_curves(_result([2.0, 1.5, x])),
                               r"plot\.loss_curves: result_or_results has 1 logged step\(s\) "
                               r"with a NaN/inf loss \(first at step 3\): the run diverged "
                               r"there.*nan_policy='omit'"),
    "loss_curves val loss": (lambda x: plot.loss_curves(_result([2.0, 1.5], val=[1.9, x])),
                             r"plot\.loss_curves: result_or_results has 1 NaN/inf validation "
                             r"loss\(es\) \(first at step 2\).*nan_policy='omit'"),
}


@pytest.mark.parametrize("value", [NAN, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("name", list(PLOT_CASES))
def test_each_figure_names_the_bad_values(name, value, user_errors):
    call, message = PLOT_CASES[name]
    with pytest.raises(ValueError, match=message):
        call(value)


def test_head_scores_nan_is_an_unscored_head_but_not_all_of_them(user_errors):
    fig = plot.head_scores_heatmap(torch.tensor([[0.1, NAN], [0.5, 0.2]]))
    assert fig.axes[0].images[0].get_array().mask[0, 1]            # drawn grey, as documented
    with pytest.raises(ValueError, match=_nonfinite(r"plot\.head_scores_heatmap", "scores", 4,
                                                    "0, 0")):
        plot.head_scores_heatmap(torch.full((2, 2), NAN))


EMPTY_PLOTS = {
    "feature_directions no features": (lambda: plot.feature_directions(torch.zeros(2, 0, 2)),
                                       r"at least one vector"),
    "angle_histograms no vectors": (lambda: plot.angle_histograms(torch.zeros(0, 3)),
                                    r"plot\.angle_histograms: vectors needs at least 2 vectors"),
    "angle_histograms zero vector": (lambda: plot.angle_histograms(
        torch.cat([torch.eye(3), torch.zeros(1, 3)])),
        r"plot\.angle_histograms: vectors\[3\] is a zero vector"),
    "angle_comparison zero vector": (lambda: plot.angle_comparison(
        {"t": {"a": torch.cat([torch.eye(3), torch.zeros(1, 3)])}}),
        r"plot\.angle_comparison: groups\['t'\]\['a'\]\[3\] is a zero vector"),
    "distortion_histogram empty": (lambda: plot.distortion_histogram(np.array([])),
                                   r"plot\.distortion_histogram: ratios '' is empty"),
    "distortion_histogram all NaN omitted": (lambda: plot.distortion_histogram(
        np.array([NAN, NAN]), nan_policy="omit"),
        r"ratios '' is empty once its 2 NaN/inf value\(s\) are omitted"),
    "frontier all NaN omitted": (lambda: plot.frontier(
        [{**p, "fve": NAN} for p in POINTS], nan_policy="omit"),
        r"plot\.frontier: none of the 2 point\(s\) has a finite 'l0' and 'fve'"),
    "sae_training_curves all NaN omitted": (lambda: plot.sae_training_curves(
        _sae_history([NAN, NAN]), nan_policy="omit"),
        r"histories\[''\] has no finite logged step"),
    "loss_curves all NaN omitted": (lambda: plot.loss_curves(_result([NAN, NAN]),
                                                             nan_policy="omit"),
                                    r"has no finite loss at all"),
    "latent_density empty": (lambda: plot.latent_density(torch.zeros(0)),
                             r"densities\[''\] must be firing frequencies"),
    "head_scores_heatmap no heads": (lambda: plot.head_scores_heatmap(torch.zeros(2, 0)),
                                     r"scores must have shape \[layer head\] with at least one"),
    "dimensionality_scatter empty": (lambda: plot.dimensionality_scatter(
        np.array([]), np.zeros((0, 3))), r"inv_sparsity must have at least one entry"),
    "bad nan_policy": (lambda: plot.distortion_histogram(np.ones(3), nan_policy="skip"),
                       r"plot\.distortion_histogram: nan_policy must be 'raise' or 'omit', "
                       r"got 'skip'"),
    "bad nan_policy loss_curves": (lambda: plot.loss_curves(_result([1.0]), nan_policy=None),
                                   r"plot\.loss_curves: nan_policy must be 'raise' or 'omit'"),
}


@pytest.mark.parametrize("name", list(EMPTY_PLOTS))
def test_empty_and_zero_inputs_to_figures(name, user_errors):
    call, message = EMPTY_PLOTS[name]
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- nan_policy="omit"

def test_loss_curves_of_a_diverged_run_draw_the_finite_part_and_mark_the_divergence():
    diverged = _result([2.0, 1.5, 1.2, NAN, INF, NAN])
    fig = plot.loss_curves(diverged, nan_policy="omit", title="diverged")
    ax = fig.axes[0]
    data = [line for line in ax.lines if len(line.get_xdata()) > 2]
    assert len(data) == 1 and list(data[0].get_xdata()) == [1.0, 2.0, 3.0]
    assert np.isfinite(data[0].get_ydata()).all()
    marks = [line for line in ax.lines if list(line.get_xdata()) == [4, 4]]
    assert len(marks) == 1                                   # the dashed line at step 4
    assert any("diverged (step 4)" in t.get_text() for t in ax.texts)
    assert ax.get_title() == "diverged\n(3 non-finite logged point(s) omitted)"
    fine = plot.loss_curves(_result([2.0, 1.0]), nan_policy="omit")
    assert fine.axes[0].get_title() == "" and not fine.axes[0].texts
    val = plot.loss_curves(_result([2.0, 1.5], val=[1.9, NAN]), nan_policy="omit")
    assert val.axes[0].get_title() == "(1 non-finite logged point(s) omitted)"


def test_sae_training_curves_omit_draws_the_finite_steps_of_each_run():
    fig = plot.sae_training_curves({"ok": _sae_history([1.0, 0.5, 0.25]),
                                    "lr=1": _sae_history([1.0, 0.6, NAN, NAN])},
                                   nan_policy="omit", title="runs")
    mse = fig.axes[0]
    curves = {line.get_label(): line for line in mse.lines if not line.get_label().startswith("_")
              and line.get_label() != "diverged"}
    assert list(curves["ok"].get_ydata()) == [1.0, 0.5, 0.25]
    assert list(curves["lr=1"].get_ydata()) == [1.0, 0.6]
    assert any(line.get_label() == "diverged" and list(line.get_xdata()) == [300, 300]
               for line in mse.lines)                        # marked where it diverged
    assert fig._suptitle.get_text() == "runs\n(2 non-finite logged step(s) omitted)"


def test_distortion_histogram_omit_counts_the_finite_pairs_only():
    r = np.array([0.95, 1.05, NAN, 1.5, INF])
    fig = plot.distortion_histogram(r, eps=0.1, nan_policy="omit")
    ax = fig.axes[0]
    assert ax.get_title() == "(2 NaN/inf ratio(s) omitted)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pairs (66.7% within)" in labels                  # 2 of the 3 finite pairs


def test_frontier_omit_leaves_out_the_failed_run():
    points = [*POINTS, {"architecture": "topk", "l0": 8.0, "fve": NAN}]
    fig = plot.frontier(points, nan_policy="omit")
    ax = fig.axes[0]
    assert list(ax.lines[0].get_xdata()) == [3.0, 5.0]
    assert ax.get_title() == "(1 point(s) with NaN/inf omitted)"


# ---------------------------------------------------------------- geometry

GEOMETRY = ["norms", "normalize", "gram", "cosine_matrix", "interference", "superposition",
            "feature_dimensionality", "dimensions_per_feature", "n_represented", "angles_deg",
            "coherence"]
PAIRWISE = ["angle_histogram", "nearest_neighbour_angles", "cosine_stats", "unit_rows"]


@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", GEOMETRY)
def test_geometry_refuses_non_finite_vectors(name, value):
    V = with_value((2, 6, 3), (1, 4, 1), value)
    with pytest.raises(ValueError, match=_nonfinite(rf"geometry\.{name}", "vectors", 1,
                                                    "1, 4, 1")
                       + r"; norms, angles and dimensionalities of them are undefined"):
        getattr(geometry, name)(V)


@pytest.mark.parametrize("value", [NAN, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("name", PAIRWISE + ["count_pairs_in_band"])
def test_pairwise_geometry_names_the_non_finite_row(name, value):
    V = with_value((6, 3), (4, 1), value)
    args = (80, 100) if name == "count_pairs_in_band" else ()
    where = "unit_rows" if name == "unit_rows" else name
    with pytest.raises(ValueError, match=rf"geometry\.{where}: vectors\[4\] contains NaN or inf "
                                         r"\(1 such row\(s\)\)"):
        getattr(geometry, name)(V, *args)


@pytest.mark.parametrize("name", PAIRWISE + ["count_pairs_in_band", "angles_deg"])
def test_zero_vectors_are_refused_where_an_angle_is_asked_for(name):
    V = torch.randn(5, 3)
    V[2] = 0
    args = (80, 100) if name == "count_pairs_in_band" else ()
    where = "unit_rows" if name == "unit_rows" else name
    with pytest.raises(ValueError, match=rf"geometry\.{where}: vectors\[2\] is a zero vector "
                                         r"\(norm 0\); angles and cosines with it are undefined"):
        getattr(geometry, name)(V, *args)


def test_zero_and_empty_vector_sets_where_the_answer_is_undefined_or_defined():
    V = torch.randn(5, 3)
    V[2] = 0
    # a toy model's dead feature is a zero column: documented values, not errors
    assert geometry.feature_dimensionality(V)[2] == 0
    assert geometry.cosine_matrix(V)[2].abs().sum() == 0
    assert geometry.coherence(V) > 0
    with pytest.raises(ValueError, match=r"geometry\.coherence: vectors has 1 non-zero "
                                         r"vector\(s\); a coherence needs at least 2"):
        geometry.coherence(torch.cat([torch.ones(1, 3), torch.zeros(3, 3)]))
    with pytest.raises(ValueError, match=r"geometry\.coherence: vectors\[1\] has 0 non-zero"):
        geometry.coherence(torch.stack([torch.eye(3), torch.zeros(3, 3)]))
    with pytest.raises(ValueError, match=r"geometry\.dimensions_per_feature: vectors\[1\] has "
                                         r"\|\|W\|\|_F² = 0 .*undefined"):
        geometry.dimensions_per_feature(torch.stack([torch.eye(3), torch.zeros(3, 3)]))
    with pytest.raises(ValueError, match=r"geometry\.dimensions_per_feature: vectors\[0\] has "
                                         r"\|\|W\|\|_F² = 0 \(0 vector\(s\)"):
        geometry.dimensions_per_feature(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match=r"geometry\.angle_histogram: vectors needs at least 2 "
                                         r"vectors \(rows\), got n=0"):
        geometry.angle_histogram(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"coherence needs at least 2 vectors, got n=0"):
        geometry.coherence(torch.zeros(0, 3))
    assert geometry.norms(torch.zeros(0, 3)).shape == (0,)    # no vectors: no norms


# ---------------------------------------------------------------- jl, packing, toy analysis

OTHERS = {
    "jl.project NaN X": (lambda: jl.project(with_value((20, 30), (3, 4)), 10, seed=0),
                         r"X has NaN or inf in 1 row\(s\) \(first: row 3\)"),
    "jl.project inf X": (lambda: jl.project(with_value((20, 30), (3, 4), INF), 10, seed=0),
                         r"X has NaN or inf in 1 row\(s\) \(first: row 3\)"),
    "jl.project empty X": (lambda: jl.project(torch.zeros(0, 30), 10),
                           r"X must hold at least one point"),
    "jl.project inf k": (lambda: jl.project(torch.randn(5, 30), INF), r"k must be an integer"),
    "jl.smallest_k NaN X": (lambda: jl.smallest_k(with_value((20, 30), (3, 4)), 0.3, seed=0),
                            r"X has NaN or inf in 1 row\(s\) \(first: row 3\)"),
    "jl.smallest_k NaN eps": (lambda: jl.smallest_k(torch.randn(5, 8), NAN),
                              r"eps must be in \(0, 1\)"),
    "jl.sweep NaN X": (lambda: jl.sweep(with_value((20, 30), (3, 4)), ks=[4]),
                       r"X has NaN or inf in 1 row\(s\)"),
    "jl.distortion NaN X": (lambda: jl.distortion(with_value((20, 30), (3, 4)), 10),
                            r"X has NaN or inf in 1 row\(s\)"),
    "jl.pairwise_distortion NaN X_proj": (lambda: jl.pairwise_distortion(
        torch.randn(20, 30), with_value((20, 10), (5, 2))),
        r"X_proj has NaN or inf in 1 row\(s\) \(first: row 5\)"),
    "jl.summarize NaN ratios": (lambda: jl.summarize(np.array([1.0, NAN, 1.1])),
                                _nonfinite(r"jl\.summarize", "ratios", 1, "1")),
    "jl.summarize inf ratios": (lambda: jl.summarize(torch.tensor([1.0, INF])),
                                _nonfinite(r"jl\.summarize", "ratios", 1, "1")),
    "jl.summarize empty": (lambda: jl.summarize(np.array([])), r"ratios is empty"),
    "jl.min_dim inf n": (lambda: jl.min_dim(INF, eps=0.1),
                         r"n \(the number of points\) must be a finite number >= 1, got inf"),
    "jl.min_dim NaN n": (lambda: jl.min_dim(NAN, eps=0.1),
                         r"n \(the number of points\) must be a finite number >= 1, got nan"),
    "jl.min_dim NaN in array": (lambda: jl.min_dim(np.array([10.0, NAN]), eps=0.1),
                                r"must be a finite number >= 1, got nan"),
    "jl.min_dim NaN eps": (lambda: jl.min_dim(100, eps=NAN), r"eps must be in \(0, 1\)"),
    "jl.min_dim inf eps": (lambda: jl.min_dim(100, eps=INF), r"eps must be in \(0, 1\)"),
    "jl.default_ks inf n": (lambda: jl.default_ks(INF, 30), r"n must be an integer >= 1"),
    "packing.bounds NaN n": (lambda: packing.bounds(NAN, 3),
                             r"n must be a positive integer, got nan"),
    "packing.bounds inf n": (lambda: packing.bounds(INF, 3),
                             r"n must be a positive integer, got inf"),
    "packing.capacity NaN angle": (lambda: packing.capacity(3, NAN),
                                   r"angle_deg must be a number in \[0, 90\), got nan"),
    "packing.capacity inf d": (lambda: packing.capacity(INF, 30),
                               r"d must be a positive integer, got inf"),
    "packing.random_coherence NaN d": (lambda: packing.random_coherence(10, NAN),
                                       r"random_coherence: d must be a positive integer, "
                                       r"got nan"),
    "packing.random_coherence 0 n": (lambda: packing.random_coherence(0, 3),
                                     r"random_coherence: n must be a positive integer"),
    "packing.random_angle_density NaN": (lambda: packing.random_angle_density(
        torch.tensor([10.0, NAN]), 3), _nonfinite(r"packing\.random_angle_density",
                                                  "angles_deg", 1, "1")),
    "packing.random_angle_density inf": (lambda: packing.random_angle_density(
        torch.tensor([INF, 10.0]), 3), _nonfinite(r"packing\.random_angle_density",
                                                  "angles_deg", 1, "0")),
    "packing.pack inf n": (lambda: packing.pack(INF, 3, steps=5),
                           r"n must be a positive integer, got inf"),
    "packing.pack NaN init": (lambda: packing.pack(5, 3, steps=5, init=with_value((5, 3),
                                                                                   (2, 1))),
                              r"packing\.pack: init\[2\] contains NaN or inf"),
    "packing.pack zero init": (lambda: packing.pack(5, 3, steps=5, init=torch.cat(
        [torch.eye(3), torch.zeros(2, 3)])), r"packing\.pack: init\[3\] is a zero vector"),
    "packing.initial_vectors NaN n": (lambda: packing.initial_vectors(NAN, 3),
                                      r"n must be a positive integer, got nan"),
    "packing.gold_lines inf m": (lambda: packing.gold_lines(INF), r"m must be an odd integer"),
    "analysis.classify_2d NaN": (lambda: analysis.classify_2d(torch.tensor([[1.0, NAN],
                                                                            [0.0, 1.0]])),
                                 _nonfinite(r"toy\.analysis\.classify_2d", "vectors", 1, "0, 1")),
    "analysis.classify_2d inf": (lambda: analysis.classify_2d(torch.tensor([[1.0, 0.0],
                                                                            [-INF, 1.0]])),
                                 _nonfinite(r"toy\.analysis\.classify_2d", "vectors", 1, "1, 0")),
    "analysis.classify_2d NaN threshold": (lambda: analysis.classify_2d(torch.eye(2),
                                                                        threshold=NAN),
                                           r"threshold must be a non-negative finite number"),
    "analysis.classify_2d NaN tol": (lambda: analysis.classify_2d(torch.eye(2), tol_deg=NAN),
                                     r"tol_deg must lie in \(0, 90\), got nan"),
    "analysis.classify_instances NaN": (lambda: analysis.classify_instances(
        torch.full((2, 5, 2), NAN)), _nonfinite(r"toy\.analysis\.classify_instances",
                                                "directions", 20, "0, 0, 0")),
}


@pytest.mark.parametrize("name", list(OTHERS))
def test_jl_packing_and_analysis_refuse_non_finite_numbers(name, user_errors):
    call, message = OTHERS[name]
    with pytest.raises(ValueError, match=message):
        call()


def test_empty_inputs_with_a_defined_answer():
    assert analysis.classify_2d(torch.zeros(0, 2)).label == "none"     # nothing represented
    assert analysis.classify_instances(torch.zeros(0, 5, 2)) == []
    assert jl.min_dim(np.array([]), eps=0.1).size == 0
    assert packing.random_angle_density(torch.zeros(0), 3).shape == (0,)
