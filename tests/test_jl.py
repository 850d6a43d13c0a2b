"""Johnson–Lindenstrauss: the bound equals scikit-learn's, the guarantee itself holds on random
data, chunked distortion is exact, everything is deterministic given a seed, and bad input gets
an error that names the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.random_projection import johnson_lindenstrauss_min_dim

from superpose import geometry, jl, plot

EPS_GRID = [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 0.99]
N_GRID = [1, 2, 3, 10, 100, 1797, 10_000, 123_457, 1e6, 1e9]


def random_points(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def dense_ratios(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """The reference: all pairs i < j in row-major order, by explicit differences."""
    i, j = np.triu_indices(len(X), k=1)
    dx = ((X[i] - X[j]) ** 2).sum(1)
    dy = ((Y[i] - Y[j]) ** 2).sum(1)
    keep = dx > 0
    return dy[keep] / dx[keep]


# ----------------------------------------------------------------------------- the bound

@pytest.mark.parametrize("eps", EPS_GRID)
def test_min_dim_equals_sklearn(eps):
    for n in N_GRID:
        assert int(jl.min_dim(n, eps=eps)) == int(johnson_lindenstrauss_min_dim(n, eps=eps))


def test_min_dim_arrays_equal_sklearn():
    n = np.array(N_GRID, dtype=float)
    assert np.array_equal(jl.min_dim(n, eps=0.1), johnson_lindenstrauss_min_dim(n, eps=0.1))
    e = np.array(EPS_GRID)
    assert np.array_equal(jl.min_dim(1e4, eps=e), johnson_lindenstrauss_min_dim(1e4, eps=e))
    assert int(jl.min_dim(1e6, eps=0.5)) == 663                     # scikit-learn's doc example


@pytest.mark.parametrize("eps", [0, 1, -0.1, 1.5, float("nan")])
def test_min_dim_rejects_eps(eps):
    with pytest.raises(ValueError, match=r"eps must be in \(0, 1\)") as e:
        jl.min_dim(100, eps=eps)
    assert repr(float(eps)) in str(e.value)


def test_min_dim_rejects_n_below_1():
    with pytest.raises(ValueError, match=r"^n \(the number of points\) must be a finite "
                                         r"number >= 1, got 0$"):
        jl.min_dim(0, eps=0.1)
    with pytest.raises(ValueError, match=r"^n \(the number of points\) must be a finite "
                                         r"number >= 1, got -5$"):
        jl.min_dim([10, -5], eps=0.1)


# ----------------------------------------------------------------------------- the guarantee

@pytest.mark.parametrize("kind", ["gaussian", "sparse"])
def test_jl_guarantee_at_the_bound(kind):
    """k = min_dim(n, eps): every pair within eps, for a fixed seed and over several seeds;
    and far below the bound it fails (the test has teeth)."""
    n, d, eps = 150, 600, 0.5
    X = random_points(n, d)
    k = int(jl.min_dim(n, eps=eps))
    Y, _ = jl.project(X, k, kind=kind, seed=0)
    s = jl.summarize(jl.pairwise_distortion(X, Y), eps=eps)
    assert s.n_pairs == n * (n - 1) // 2
    assert s.max_abs < eps and s.fraction_within == 1.0
    ok = [jl.summarize(jl.pairwise_distortion(X, jl.project(X, k, kind=kind, seed=s)[0]),
                       eps=eps).max_abs < eps for s in range(1, 6)]
    assert np.mean(ok) >= 0.8                     # JL: probability >= 1 - 1/n; typically all
    Y_small, _ = jl.project(X, k // 16, kind=kind, seed=0)
    assert jl.summarize(jl.pairwise_distortion(X, Y_small)).max_abs > eps


def test_smallest_k_within_bound_and_median_much_smaller():
    n, eps = 120, 0.3
    X = random_points(n, 200, seed=1)
    ks = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    worst = jl.smallest_k(X, eps, kind="gaussian", ks=ks, trials=2, seed=0)
    assert worst.bound == int(jl.min_dim(n, eps=eps))
    assert worst.k is not None and worst.k <= worst.bound
    median = jl.smallest_k(X, eps, kind="gaussian", quantile=0.5, ks=ks, trials=2,
                           precomputed=worst.sweep)
    assert median.k is not None and median.k * 5 < worst.k
    sw = worst.sweep
    assert sw.worst.shape == (len(ks), 2) and np.all(sw.worst >= sw.median)
    # the curve falls with k; the refined k satisfies the target in every trial
    assert sw.worst[-1].mean() < sw.worst[0].mean() / 10
    check = jl.sweep(X, kind="gaussian", ks=[worst.k], trials=2, seed=0)
    assert np.all(check.worst <= eps)


# ----------------------------------------------------------------------------- exactness

def test_chunked_distortion_equals_dense():
    X = random_points(57, 12, seed=2)
    X[10] = X[3]                                     # identical points: skipped, not 0/0
    Y, _ = jl.project(X, 5, seed=0)
    ref = dense_ratios(X, Y)
    assert len(ref) == 57 * 56 // 2 - 1
    for chunk in (1, 7, 56, 1000):
        got = jl.pairwise_distortion(X, Y, chunk=chunk).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_default_chunk_uses_geometrys_budget_and_changes_nothing(monkeypatch):
    X = random_points(57, 12, seed=2)
    Y, _ = jl.project(X, 5, seed=0)
    ref = jl.pairwise_distortion(X, Y, chunk=57).numpy()
    assert jl._rows(57, None) == 57 and jl._rows(10**5, None) == 2**22 // 10**5
    monkeypatch.setattr(geometry, "_CHUNK_ELEMENTS", 57 * 10)    # 10 rows per block
    assert jl._rows(57, None) == 10
    np.testing.assert_allclose(jl.pairwise_distortion(X, Y).numpy(), ref, rtol=1e-12)
    # the sampled path ignores chunk: the same pairs and ratios whatever it is
    a = jl.pairwise_distortion(X, Y, max_pairs=300, seed=1, chunk=1).numpy()
    b = jl.pairwise_distortion(X, Y, max_pairs=300, seed=1).numpy()
    np.testing.assert_array_equal(a, b)


def test_old_names_and_positional_options_warn_with_the_new_spelling():
    with pytest.warns(DeprecationWarning, match=r"min_dim\(n_samples=\.\.\.\) is now "
                                                r"min_dim\(n=\.\.\.\)"):
        assert jl.min_dim(n_samples=1000, eps=0.2) == jl.min_dim(1000, eps=0.2)
    with pytest.warns(DeprecationWarning, match="pass eps=... by keyword"):
        assert jl.min_dim(1000, 0.2) == jl.min_dim(1000, eps=0.2)
    want = jl.default_ks(300, 64, eps=0.2, count=10)
    assert want[0] == 1 and want[-1] == 2 * int(jl.min_dim(300, eps=0.2))
    with pytest.warns(DeprecationWarning, match=r"default_ks\(n_samples=\.\.\.\) is now"):
        with pytest.warns(DeprecationWarning, match=r"default_ks\(n_features=\.\.\.\) is "
                                                    r"now default_ks\(d=\.\.\.\)"):
            assert jl.default_ks(n_samples=300, n_features=64, eps=0.2, count=10) == want
    with pytest.warns(DeprecationWarning, match=r"pass eps=\.\.\., count=\.\.\."):
        assert jl.default_ks(300, 64, 0.2, 10) == want
    with pytest.raises(TypeError, match="both n= and its old name n_samples="):
        jl.default_ks(10, 64, n_samples=300)
    with pytest.warns(DeprecationWarning, match="jl.DEFAULT_CHUNK is deprecated"):
        assert jl.DEFAULT_CHUNK == 1024
    sw = jl.sweep(random_points(20, 6, seed=0), ks=[2, 4], trials=1)
    assert (sw.n, sw.d) == (20, 6)
    with pytest.warns(DeprecationWarning, match=r"Sweep.n_features is now Sweep.d"):
        assert sw.n_features == 6
    with pytest.warns(DeprecationWarning, match=r"Sweep.n_samples is now Sweep.n"):
        assert sw.n_samples == 20


def test_sampled_pairs_are_seeded_subset():
    X = random_points(40, 8, seed=3)
    Y, _ = jl.project(X, 3, kind="very_sparse", seed=1)
    full = jl.pairwise_distortion(X, Y).numpy()
    a = jl.pairwise_distortion(X, Y, max_pairs=100, seed=5)
    b = jl.pairwise_distortion(X, Y, max_pairs=100, seed=5)
    c = jl.pairwise_distortion(X, Y, max_pairs=100, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c) and len(a) == 100
    assert np.all(np.min(np.abs(a.numpy()[:, None] - full[None]), axis=1) < 1e-9)
    # asking for at least all pairs gives all pairs
    assert torch.equal(jl.pairwise_distortion(X, Y, max_pairs=10**6), torch.from_numpy(full))


def test_sweep_for_k_above_d_equals_direct_projection():
    """The sweep measures a k > d projection through a d-column factor of its Gram matrix."""
    X = random_points(30, 10, seed=4)
    for kind in jl.KINDS:
        sw = jl.sweep(X, kind=kind, ks=[4, 50], trials=1, seed=3, quantiles=[0.9])
        for row, k in enumerate([4, 50]):
            dev = np.abs(jl.pairwise_distortion(X, jl.project(X, k, kind=kind, seed=3)[0])
                         .numpy() - 1)
            for q in (0.5, 0.9, 1.0):
                assert sw.quantiles[q][row, 0] == pytest.approx(np.quantile(dev, q), rel=1e-9)


# ----------------------------------------------------------------------------- projections

def test_project_kinds_types_and_determinism():
    X = random_points(20, 100, seed=5)
    for kind, density in [("gaussian", 1.0), ("sparse", 1 / 3), ("very_sparse", 0.1)]:
        Y1, p1 = jl.project(X, 64, kind=kind, seed=7)
        Y2, _ = jl.project(X, 64, kind=kind, seed=7)
        Y3, _ = jl.project(X, 64, kind=kind, seed=8)
        assert isinstance(Y1, np.ndarray) and Y1.shape == (20, 64)
        assert np.array_equal(Y1, Y2) and not np.array_equal(Y1, Y3)
        R = p1.components_
        nnz = (R.toarray() if hasattr(R, "toarray") else R) != 0
        assert nnz.mean() == pytest.approx(density, abs=0.03)
        np.testing.assert_allclose(Y1, p1.transform(X), rtol=1e-10, atol=1e-10)
    T = torch.from_numpy(X).float()
    Yt, _ = jl.project(T, 16, seed=0)
    assert isinstance(Yt, torch.Tensor) and Yt.dtype == torch.float32 and Yt.shape == (20, 16)
    np.testing.assert_allclose(Yt.double().numpy(), jl.project(X, 16, seed=0)[0], rtol=1e-4,
                               atol=1e-4)


# ----------------------------------------------------------------------------- bad input

def test_errors(user_errors):
    X = random_points(10, 5)
    bad = X.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"^X has NaN or inf in 2 row\(s\) \(first: row 3\); "
                                         r"drop or clean those rows first$"):
        jl.project(bad, 3)
    with pytest.raises(ValueError, match=r"^k must be an integer >= 1, got 0$"):
        jl.project(X, 0)
    with pytest.raises(ValueError, match=r"^kind must be one of \['gaussian', 'sparse', "
                                         r"'very_sparse'\], got 'sparce' \(did you mean "
                                         r"'sparse'\?\)$"):
        jl.project(X, 3, kind="sparce")
    with pytest.raises(ValueError, match=r"^eps must be in \(0, 1\) \(the allowed relative "
                                         r"distortion\), got 1.2$"):
        jl.smallest_k(X, 1.2)
    with pytest.raises(ValueError, match=r"^quantile must be in \(0, 1\] .*got 0$"):
        jl.smallest_k(X, 0.2, quantile=0)
    with pytest.raises(ValueError, match=r"^X_proj must have one row per row of X \(10\), "
                                         r"got 9 rows$"):
        jl.pairwise_distortion(X, X[:9])
    with pytest.raises(ValueError, match=r"^X must have shape \[n, d\] \(points as rows\), "
                                         r"got shape \[10\]$"):
        jl.project(X[:, 0], 2)
    with pytest.raises(ValueError, match=r"^X must hold at least 2 points"):
        jl.sweep(X[:1], ks=[2])
    with pytest.raises(ValueError, match=r"^X has no two distinct points"):
        jl.sweep(np.ones((4, 3)), ks=[2], trials=1)


# ----------------------------------------------------------------------------- plots

def test_plots_return_figures_and_accept_ax():
    X = random_points(30, 20, seed=6)
    res = [jl.smallest_k(X, 0.3, kind=k, ks=[2, 8, 32, 128, 512], trials=1) for k in jl.KINDS]
    fig = plot.distortion_vs_k(res)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("JL bound" in s for s in labels) and any("eps = 0.3" in s for s in labels)
    from superpose.plot._common import figure_and_axes

    f2, ax = figure_and_axes(ncols=1)
    assert plot.distortion_vs_k(res[0], ax=ax) is f2
    Y, _ = jl.project(X, 16)
    r = jl.pairwise_distortion(X, Y)
    fig = plot.distortion_histogram(r, eps=0.3)
    assert isinstance(fig, Figure)
    assert any("within" in s for s in fig.axes[0].get_legend_handles_labels()[1])
    f3, ax3 = figure_and_axes()
    assert plot.distortion_histogram({"gaussian": r, "sparse": r.numpy()}, ax=ax3) is f3


# ----------------------------------------------------------------------------- experiment


def test_distortion_is_project_then_pairwise_then_summarize():
    X = np.random.default_rng(3).normal(size=(40, 30))
    s = jl.distortion(X, 64, kind="sparse", seed=2, eps=0.5)
    Y, _ = jl.project(X, 64, kind="sparse", seed=2)
    r = jl.pairwise_distortion(X, Y).numpy()
    assert s.n_pairs == 40 * 39 // 2
    assert s.max_abs == pytest.approx(float(np.abs(r - 1).max()))
    assert s.fraction_within == pytest.approx(float((np.abs(r - 1) <= 0.5).mean()))
    with pytest.raises(ValueError, match="k"):
        jl.distortion(X, 0)
