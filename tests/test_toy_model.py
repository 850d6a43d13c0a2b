import dataclasses
import json
import math

import pytest
import torch

from superpose import toy


@pytest.fixture
def model():
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3, importance=0.9,
                        feature_probability=[1.0, 0.3, 0.05])
    return toy.ToyModel(cfg, device="cpu")


def test_run_with_cache_exposes_hidden_and_output(model):
    x = toy.generate_batch(model.cfg, 16, generator=0, device="cpu")
    out, cache = model.run_with_cache(x)
    assert set(cache.keys()) == {"hook_hidden", "hook_out"}
    assert cache["hook_hidden"].shape == (16, 3, 2)
    torch.testing.assert_close(cache["hook_out"], out)
    # h = W x for the relu_out model
    torch.testing.assert_close(cache["hook_hidden"], torch.einsum("ihf,bif->bih", model.W, x))


def test_run_with_hooks_ablation_changes_output_and_cleans_up(model):
    x = toy.generate_batch(model.cfg, 16, generator=0, device="cpu")
    clean = model(x)

    def zero(h, hook):
        return torch.zeros_like(h)

    ablated = model.run_with_hooks(x, fwd_hooks=[("hook_hidden", zero)])
    # With h = 0 the output is ReLU(b) = 0 at init.
    assert torch.equal(ablated, torch.zeros_like(ablated))
    assert not torch.equal(clean, ablated)
    torch.testing.assert_close(model(x), clean)          # the hook is gone afterwards


@pytest.mark.parametrize("variant", ["relu_out", "linear", "relu_hidden", "abs"])
def test_variants_forward_shapes_and_semantics(variant):
    cfg = toy.ToyConfig(n_features=6, n_hidden=3, n_instances=2, variant=variant)
    m = toy.ToyModel(cfg, device="cpu")
    x = toy.generate_batch(cfg, 8, generator=0, device="cpu")
    out, cache = m.run_with_cache(x)
    assert out.shape == (8, 2, 6) and cache["hook_hidden"].shape == (8, 2, 3)
    if variant in ("relu_hidden", "abs"):
        assert (cache["hook_hidden"] >= 0).all()
    if variant == "linear":
        assert (out < 0).any()        # no output ReLU
    else:
        assert (out >= 0).all()
    assert m.feature_directions().shape == (2, 6, 3)


def test_init_does_not_depend_on_the_number_of_instances():
    a = toy.ToyModel(toy.ToyConfig(n_features=20, n_hidden=5, n_instances=1), device="cpu")
    b = toy.ToyModel(toy.ToyConfig(n_features=20, n_hidden=5, n_instances=64), device="cpu")
    # Per-instance Xavier: std sqrt(2 / (5 + 20)) ≈ 0.28 whatever the sweep size.
    assert b.W.std().item() == pytest.approx((2 / 25) ** 0.5, rel=0.05)
    assert a.W.abs().mean().item() == pytest.approx(b.W.abs().mean().item(), rel=0.25)


def test_wrong_input_shape_says_what_was_expected(model, user_errors):
    with pytest.raises(ValueError, match=r"expects input of shape \[batch, n_instances=3, "
                                         r"n_features=5\], got \[4, 5\]"):
        model(torch.rand(4, 5))


def test_select_copies_instances(model):
    sub = model.select([2, 0])
    assert sub.cfg.n_instances == 2
    torch.testing.assert_close(sub.W, model.W[[2, 0]])
    assert sub.cfg.probability_tensor()[:, 0].tolist() == pytest.approx([0.05, 1.0])


def test_save_load_roundtrip(model, tmp_path):
    with torch.no_grad():
        model.b_final.normal_()
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors",
                                                             "saved.json"}
    loaded = toy.ToyModel.load(tmp_path / "m", device="cpu")
    assert loaded.cfg == model.cfg
    x = toy.generate_batch(model.cfg, 4, generator=0, device="cpu")
    torch.testing.assert_close(loaded(x), model(x))


def test_load_errors_are_clear(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        toy.ToyModel.load(tmp_path / "nope")
    folder = model.save(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is corrupt"):
        toy.ToyModel.load(folder)
    other = toy.ToyModel(toy.ToyConfig(n_features=7, n_hidden=2, n_instances=3), device="cpu")
    other.save(tmp_path / "o")
    (tmp_path / "o" / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="weights do not match config.json"):
        toy.ToyModel.load(tmp_path / "o")
    (tmp_path / "o" / "config.json").write_text('{"n_features": 5, "colour": "red"}')
    with pytest.raises(ValueError, match=r"does not take key\(s\) \['colour'\]"):
        toy.ToyModel.load(tmp_path / "o")


def test_init_is_seeded_by_the_config():
    cfg = toy.ToyConfig(n_features=6, n_hidden=3, n_instances=2, seed=3)
    a, b = toy.ToyModel(cfg, device="cpu"), toy.ToyModel(cfg, device="cpu")
    torch.testing.assert_close(a.W, b.W)
    other = toy.ToyModel(dataclasses.replace(cfg, seed=4), device="cpu")
    assert not torch.equal(a.W, other.W)
    # The weights are the CPU generator's draw for cfg.seed (Xavier-normal per instance),
    # which is what `ToyModel(cfg, seed=3)` drew before the seed moved into the config.
    gen = torch.Generator().manual_seed(3)
    want = torch.randn((2, 3, 6), generator=gen) * math.sqrt(2 / (3 + 6))
    torch.testing.assert_close(a.W.detach(), want)
    # The default config seed is 0, the old default of ToyModel's seed argument.
    gen0 = torch.Generator().manual_seed(0)
    zero = toy.ToyModel(toy.ToyConfig(n_features=6, n_hidden=3, n_instances=2), device="cpu")
    torch.testing.assert_close(zero.W.detach(),
                               torch.randn((2, 3, 6), generator=gen0) * math.sqrt(2 / 9))


def test_seed_argument_is_a_deprecated_override_naming_the_config_field():
    cfg = toy.ToyConfig(n_features=6, n_hidden=3, n_instances=2)
    with pytest.warns(DeprecationWarning, match=r"ToyModel\(seed=5\) is deprecated.*"
                                                r"ToyConfig\(\.\.\., seed=5\)"):
        old = toy.ToyModel(cfg, device="cpu", seed=5)
    new = toy.ToyModel(dataclasses.replace(cfg, seed=5), device="cpu")
    torch.testing.assert_close(old.W, new.W)
    assert old.cfg.seed == 5                        # the saved config says how it was made
    with pytest.warns(DeprecationWarning, match=r"ToyModel\(seed=None\) is deprecated"):
        r1 = toy.ToyModel(cfg, device="cpu", seed=None)
    with pytest.warns(DeprecationWarning):
        r2 = toy.ToyModel(cfg, device="cpu", seed=None)
    assert not torch.equal(r1.W, r2.W)              # None still means a fresh random init
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="seed"):
        toy.ToyModel(cfg, device="cpu", seed=-1)


def test_saved_config_records_the_seed_and_old_configs_load_with_seed_0(tmp_path):
    m = toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, seed=7), device="cpu")
    folder = m.save(tmp_path / "m")
    data = json.loads((folder / "config.json").read_text())
    assert data["seed"] == 7
    assert toy.ToyModel.load(folder).cfg.seed == 7
    del data["seed"]                                # a config.json written before the field
    (folder / "config.json").write_text(json.dumps(data))
    old = toy.ToyModel.load(folder, device="cpu")
    assert old.cfg.seed == 0 and old.cfg == toy.ToyConfig(n_features=5, n_hidden=2)
    torch.testing.assert_close(old.W, m.W)          # weights come from the file, not the seed
