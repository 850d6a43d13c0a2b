import math

import pytest
import torch

from superpose import geometry


def polygon(k: int) -> torch.Tensor:
    t = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([t.cos(), t.sin()], -1)


def tetrahedron() -> torch.Tensor:
    v = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    return v / math.sqrt(3)


def square_antiprism() -> torch.Tensor:
    # Two squares rotated by 45° against each other; the height that makes the 8 unit vectors
    # a tight frame (Σ v vᵀ = (8/3) I) is z² = 1/3.
    z = 1 / math.sqrt(3)
    r = math.sqrt(1 - z * z)
    pts = []
    for k in range(4):
        a, b = k * math.pi / 2, k * math.pi / 2 + math.pi / 4
        pts += [[r * math.cos(a), r * math.sin(a), z], [r * math.cos(b), r * math.sin(b), -z]]
    return torch.tensor(pts, dtype=torch.float64)


@pytest.mark.parametrize("vectors, expected", [
    (polygon(2), 1 / 2),             # antipodal pair
    (polygon(3), 2 / 3),             # triangle
    (tetrahedron(), 3 / 4),
    (polygon(5), 2 / 5),             # pentagon
    (square_antiprism(), 3 / 8),
    (torch.eye(4, dtype=torch.float64), 1.0),
])
def test_feature_dimensionality_of_exact_polytopes(vectors, expected):
    D = geometry.feature_dimensionality(vectors)
    torch.testing.assert_close(D, torch.full_like(D, expected), rtol=0, atol=1e-12)
    # Σ_i D_i equals the number of dimensions the polytope spans.
    assert D.sum().item() == pytest.approx(torch.linalg.matrix_rank(vectors).item())


def test_unlearned_feature_has_dimensionality_zero_and_no_nan():
    V = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    D = geometry.feature_dimensionality(V)
    assert D.tolist() == pytest.approx([1.0, 0.0, 1.0])


def test_norms_superposition_and_counts():
    V = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.3]])
    assert geometry.norms(V).tolist() == pytest.approx([1, 1, 0.3])
    assert geometry.superposition(V).tolist() == pytest.approx([1, 1, 0])
    assert geometry.n_represented(V).item() == 2
    assert geometry.dimensions_per_feature(V).item() == pytest.approx(2 / 2.09)
    I = geometry.interference(V)
    assert torch.diagonal(I).abs().max() == 0 and I[0, 1] == -1


def test_batched_over_instances():
    V = torch.stack([polygon(5), torch.cat([polygon(2), torch.zeros(3, 2)])]).float()
    assert geometry.n_represented(V).tolist() == [5, 2]
    assert geometry.feature_dimensionality(V).shape == (2, 5)
    assert geometry.gram(V).shape == (2, 5, 5)


def test_coherence_chunked_equals_dense():
    g = torch.Generator().manual_seed(0)
    V = torch.randn(3, 301, 7, generator=g)
    dense = geometry.cosine_matrix(V).abs()
    dense = dense - 2 * torch.eye(301)              # drop the diagonal
    torch.testing.assert_close(geometry.coherence(V, chunk=64), dense.amax(dim=(-1, -2)))
    assert geometry.angles_deg(polygon(4))[0, 1].item() == pytest.approx(90)


def test_coherence_default_chunk_uses_the_shared_budget(monkeypatch):
    g = torch.Generator().manual_seed(1)
    V = torch.randn(2, 300, 5, generator=g, dtype=torch.float64)
    want = geometry.coherence(V, chunk=300)                 # one block
    blocks = []
    real = torch.Tensor.__matmul__

    def spy(a, b):
        blocks.append(a.shape[-2])
        return real(a, b)

    # A budget of 2 * 300 * 50 cosines: 50 rows per block for 2 instances of 300 vectors.
    monkeypatch.setattr(geometry, "_CHUNK_ELEMENTS", 2 * 300 * 50)
    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    got = geometry.coherence(V)
    monkeypatch.undo()
    assert blocks == [50] * 6
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="chunk must be a positive integer .* got 0"):
        geometry.coherence(V, chunk=0)


def test_options_are_keyword_only_and_old_positional_calls_warn():
    V = torch.stack([polygon(5), torch.cat([polygon(2), torch.zeros(3, 2)])]).float()
    with pytest.warns(DeprecationWarning, match=r"threshold positionally to n_represented"):
        assert geometry.n_represented(V, 0.9).tolist() == \
            geometry.n_represented(V, threshold=0.9).tolist()
    with pytest.warns(DeprecationWarning, match=r"eps positionally to normalize"):
        torch.testing.assert_close(geometry.normalize(V, 1e-6), geometry.normalize(V, eps=1e-6))
    with pytest.warns(DeprecationWarning, match=r"eps positionally to feature_dimensionality"):
        geometry.feature_dimensionality(V, 1e-8)
    with pytest.warns(DeprecationWarning, match=r"chunk positionally to coherence"):
        torch.testing.assert_close(geometry.coherence(V, 2), geometry.coherence(V, chunk=2))
    U = polygon(6).double()
    with pytest.warns(DeprecationWarning, match=r"pass bins=\.\.\., range_deg=\.\.\."):
        old = geometry.angle_histogram(U, 10, (0, 90))
    new = geometry.angle_histogram(U, bins=10, range_deg=(0, 90))
    assert torch.equal(old[0], new[0]) and torch.equal(old[1], new[1])
    with pytest.raises(TypeError, match="both positionally and by keyword"):
        geometry.angle_histogram(U, 10, bins=20)
    with pytest.raises(TypeError, match="got eps both positionally and as eps="):
        geometry.normalize(V, 1e-6, eps=1e-3)


def test_bad_vector_sets(user_errors):
    with pytest.raises(ValueError, match=r"shape \[..., n, d\].*got shape \[5\]"):
        geometry.norms(torch.ones(5))
    with pytest.raises(ValueError, match="floating-point"):
        geometry.gram(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 vectors"):
        geometry.coherence(torch.ones(1, 3))
