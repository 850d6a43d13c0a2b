import pytest
import torch

from superpose import toy


def test_sparse_features_density_and_values():
    p = [1.0, 0.3, 0.02]
    cfg = toy.ToyConfig(n_features=50, n_instances=3, feature_probability=p)
    x = toy.generate_batch(cfg, 20_000, generator=0, device="cpu")
    assert x.shape == (20_000, 3, 50)
    density = (x > 0).float().mean(dim=(0, 2))
    torch.testing.assert_close(density, torch.tensor(p), atol=3e-3, rtol=0.02)
    present = x[:, 1][x[:, 1] > 0]
    assert present.max() <= 1 and present.min() >= 0
    # Present values are uniform on (0, 1): mean 1/2, variance 1/12.
    assert present.mean().item() == pytest.approx(0.5, abs=0.01)
    assert present.var().item() == pytest.approx(1 / 12, abs=0.003)


def test_same_seed_same_batch_different_seed_different_batch():
    cfg = toy.ToyConfig(n_features=5, n_instances=2, feature_probability=0.3)
    a = toy.generate_batch(cfg, 64, generator=7, device="cpu")
    b = toy.generate_batch(cfg, 64, generator=7, device="cpu")
    c = toy.generate_batch(cfg, 64, generator=8, device="cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_correlated_sets_switch_together():
    cfg = toy.ToyConfig(n_features=6, n_instances=1, feature_probability=0.2,
                        correlation="correlated", set_size=3)
    on = toy.generate_batch(cfg, 10_000, generator=0, device="cpu")[:, 0] > 0
    sets = on.view(-1, 2, 3)
    assert (sets.all(-1) == sets.any(-1)).all()          # all or none within a set
    assert on.float().mean().item() == pytest.approx(0.2, abs=0.01)
    # Different sets are independent: P(both on) ≈ p².
    both = (sets[:, 0, 0] & sets[:, 1, 0]).float().mean().item()
    assert both == pytest.approx(0.04, abs=0.01)


def test_anticorrelated_sets_never_overlap_and_keep_marginals():
    cfg = toy.ToyConfig(n_features=4, n_instances=1, feature_probability=0.3,
                        correlation="anticorrelated", set_size=2)
    on = toy.generate_batch(cfg, 20_000, generator=0, device="cpu")[:, 0] > 0
    assert (on.view(-1, 2, 2).sum(-1) <= 1).all()
    torch.testing.assert_close(on.float().mean(0), torch.full((4,), 0.3), atol=0.015, rtol=0)


def test_abs_variant_values_span_minus_one_to_one():
    cfg = toy.ToyConfig(n_features=10, n_hidden=4, variant="abs", feature_probability=1.0)
    x = toy.generate_batch(cfg, 5000, generator=0, device="cpu")
    assert x.min() < -0.99 and x.max() > 0.99
    assert x.mean().item() == pytest.approx(0, abs=0.02)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        toy.generate_batch(toy.ToyConfig(), 0, generator=0, device="cpu")


def test_make_generator_device_defaults_and_mismatch(user_errors):
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert toy.make_generator(0).device.type == want              # None: CUDA when available
    assert toy.make_generator(0, "cpu").device.type == "cpu"
    g = torch.Generator()
    assert toy.make_generator(g) is g and toy.make_generator(g, "cpu") is g
    # A CPU generator given to a batch without a device: the batch follows the generator.
    cfg = toy.ToyConfig(n_features=4, n_instances=2)
    assert toy.generate_batch(cfg, 3, generator=torch.Generator()).device.type == "cpu"
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"generator lives on cpu but device='cuda' was "
                                             r"asked for"):
            toy.make_generator(g, "cuda")
