"""ActivationStore: captured values equal run_with_cache's, the buffer only permutes, seeds
reproduce, normalisation hits sqrt(d_in), the disk cache round-trips, bad input fails clearly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from superpose import toy
from superpose.activations import ActivationStore
from superpose.gpt import GPT, GPTConfig

HOOK = "blocks.0.hook_resid_post"


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order: two tensors hold the same multiset of rows iff equal."""
    x = x.reshape(len(x), -1)
    order = np.lexsort(x.double().numpy().T[::-1])
    return x[torch.from_numpy(order.copy())]


def drain(store: ActivationStore) -> torch.Tensor:
    return torch.cat(list(store))


@pytest.fixture(scope="module")
def gpt() -> GPT:
    return GPT(GPTConfig(d_vocab=16, n_layers=2, d_model=16, n_heads=2, n_ctx=8, act="relu"),
               device="cpu")


@pytest.fixture(scope="module")
def tokens() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 16, (4, 8), generator=g) for _ in range(6)]


def reference(model, tokens, hook, skip=0):
    rows = []
    for t in tokens:
        _, cache = model.run_with_cache(t, names_filter=hook)
        a = cache[hook][:, skip:]
        rows.append(a.reshape(-1, a.shape[-1]))
    return torch.cat(rows)


def store_kw(**kw):
    return {"batch_size": 16, "buffer_size": 64, "device": "cpu", **kw}


@pytest.mark.parametrize("hook", [HOOK, "blocks.1.mlp.hook_post"])
def test_gpt_values_equal_run_with_cache(gpt, tokens, hook):
    store = ActivationStore(gpt, hook, tokens, **store_kw())
    got = drain(store)
    ref = reference(gpt, tokens, hook)
    assert store.d_in == ref.shape[1]
    assert got.shape == ref.shape and store.n_tokens_seen == len(ref)
    torch.testing.assert_close(sorted_rows(got), sorted_rows(ref), rtol=0, atol=0)
    assert all(b.shape == (16, store.d_in) for b in list(ActivationStore(
        gpt, hook, tokens, **store_kw()))[:-1])


def test_shuffling_is_a_seeded_permutation(gpt, tokens):
    unshuffled = reference(gpt, tokens, HOOK)
    a = drain(ActivationStore(gpt, HOOK, tokens, **store_kw(seed=3)))
    b = drain(ActivationStore(gpt, HOOK, iter(tokens), **store_kw(seed=3)))
    c = drain(ActivationStore(gpt, HOOK, tokens, **store_kw(seed=4)))
    assert torch.equal(a, b)                          # same seed, same order
    assert not torch.equal(a, c)                      # another seed, another order
    assert not torch.equal(a, unshuffled)             # it does shuffle
    torch.testing.assert_close(sorted_rows(a), sorted_rows(unshuffled), rtol=0, atol=0)


def test_callable_source_and_token_pairs(gpt, tokens):
    it = iter([(t, t) for t in tokens])              # (inputs, targets) as TokenDataset yields
    store = ActivationStore(gpt, HOOK, lambda: next(it), **store_kw(buffer_size=32))
    first = [store.next_batch() for _ in range(3)]
    assert all(b.shape == (16, 16) for b in first) and store.n_tokens_seen == 48


def test_skip_bos_drops_position_zero(gpt, tokens):
    got = drain(ActivationStore(gpt, HOOK, tokens, **store_kw(skip_bos=True)))
    ref = reference(gpt, tokens, HOOK, skip=1)
    assert len(got) == len(tokens) * 4 * 7
    torch.testing.assert_close(sorted_rows(got), sorted_rows(ref), rtol=0, atol=0)
    got2 = drain(ActivationStore(gpt, HOOK, tokens, **store_kw(skip_positions=3)))
    assert len(got2) == len(tokens) * 4 * 5


def test_toy_instance_values(user_errors):
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3)
    model = toy.ToyModel(cfg, device="cpu")
    xs = [toy.generate_batch(cfg, 32, generator=i, device="cpu") for i in range(3)]
    got = drain(ActivationStore(model, "hook_hidden", xs, instance=1, **store_kw()))
    ref = torch.cat([model.run_with_cache(x)[1]["hook_hidden"][:, 1] for x in xs])
    torch.testing.assert_close(sorted_rows(got), sorted_rows(ref), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"n_instances=3 .* pass instance=i"):
        ActivationStore(model, "hook_hidden", xs)
    with pytest.raises(ValueError, match=r"instance must be an integer in \[0, 3\), got 5"):
        ActivationStore(model, "hook_hidden", xs, instance=5)


def test_unknown_hook_lists_close_matches(gpt, tokens, user_errors):
    with pytest.raises(ValueError) as e:
        ActivationStore(gpt, "blocks.0.hook_resid_psot", tokens)
    msg = str(e.value)
    assert "no hook point named 'blocks.0.hook_resid_psot'" in msg
    assert "close matches" in msg and "'blocks.0.hook_resid_post'" in msg


def test_early_stop_skips_later_layers_and_keeps_values(gpt, tokens):
    calls = []
    handle = gpt.blocks[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        fast = drain(ActivationStore(gpt, HOOK, tokens, **store_kw(stop_early=True)))
        assert calls == []                            # block 1 never ran
        slow = drain(ActivationStore(gpt, HOOK, tokens, **store_kw(stop_early=False)))
        assert len(calls) == len(tokens)
    finally:
        handle.remove()
    assert torch.equal(fast, slow)
    assert not any(hp._forward_hooks for hp in gpt.hook_dict.values())   # hooks cleaned up


def test_several_hooks_stack(gpt, tokens):
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    store = ActivationStore(gpt, names, tokens, **store_kw(seed=0))
    got = drain(store)
    assert got.shape == (len(tokens) * 32, 2, 16) and store.row_shape == (2, 16)
    ref = torch.stack([reference(gpt, tokens, n) for n in names], dim=1)
    torch.testing.assert_close(sorted_rows(got), sorted_rows(ref), rtol=0, atol=0)


def test_mean_norm_normalisation():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(256, 12, generator=g) * 7 + 3
    store = ActivationStore.from_tensor(acts, **store_kw(buffer_size=256, normalize="mean_norm"))
    got = drain(store)
    expected = math.sqrt(12) / acts.norm(dim=1).mean().item()
    assert store.scaling_factor == pytest.approx(expected, rel=1e-5)
    assert got.norm(dim=1).mean().item() == pytest.approx(math.sqrt(12), rel=1e-5)
    torch.testing.assert_close(sorted_rows(got), sorted_rows(acts * store.scaling_factor))
    fixed = ActivationStore.from_tensor(acts, **store_kw(normalize=2.0))
    torch.testing.assert_close(sorted_rows(drain(fixed)), sorted_rows(acts * 2))


def test_plain_tensor_source_and_epochs():
    acts = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    store = ActivationStore(None, None, acts, **store_kw())
    assert store.d_in == 8
    got = drain(store)
    assert [len(b) for b in ActivationStore.from_tensor(acts, **store_kw())] == [16] * 6 + [4]
    torch.testing.assert_close(sorted_rows(got), sorted_rows(acts), rtol=0, atol=0)
    two = drain(ActivationStore.from_tensor(acts, **store_kw(epochs=2)))
    torch.testing.assert_close(sorted_rows(two), sorted_rows(torch.cat([acts, acts])))


def test_disk_cache_round_trip(gpt, tokens, tmp_path):
    cache = tmp_path / "acts"
    with ActivationStore(gpt, HOOK, tokens, **store_kw(cache_dir=cache, shard_size=40,
                                                        normalize="mean_norm")) as store:
        streamed = drain(store)
    manifest = json.loads((cache / "manifest.json").read_text())
    n = len(tokens) * 32
    assert manifest["count"] == n and manifest["d_in"] == 16 and manifest["hook_names"] == [HOOK]
    assert [s["count"] for s in manifest["shards"]] == [40] * 4 + [32]
    assert manifest["scaling_factors"] == pytest.approx([store.scaling_factor])
    raw = reference(gpt, tokens, HOOK)
    a = ActivationStore.from_cache(cache, batch_size=16, seed=5, buffer_size=64, device="cpu")
    assert a.scaling_factor == pytest.approx(store.scaling_factor) and a.d_in == 16
    got_a = drain(a)
    torch.testing.assert_close(sorted_rows(got_a), sorted_rows(streamed))
    torch.testing.assert_close(sorted_rows(got_a / a.scaling_factor), sorted_rows(raw))
    b = drain(ActivationStore.from_cache(cache, batch_size=16, seed=5, buffer_size=64,
                                         device="cpu"))
    c = drain(ActivationStore.from_cache(cache, batch_size=16, seed=6, buffer_size=64,
                                         device="cpu"))
    assert torch.equal(got_a, b) and not torch.equal(got_a, c)
    with pytest.warns(DeprecationWarning, match=r"pass batch_size=\.\.\., seed=\.\.\."):
        old = ActivationStore.from_cache(cache, 16, 5, buffer_size=64, device="cpu")
    assert old.batch_size == 16 and torch.equal(drain(old), got_a)
    with pytest.raises(TypeError, match="both positionally and by keyword"):
        ActivationStore.from_cache(cache, 16, batch_size=8)
    with pytest.raises(FileExistsError, match="already holds an activation cache"):
        ActivationStore(gpt, HOOK, tokens, cache_dir=cache)


def test_cache_corrupt_or_missing(gpt, tokens, tmp_path):
    cache = tmp_path / "acts"
    drain(ActivationStore(gpt, HOOK, tokens, **store_kw(cache_dir=cache, shard_size=64)))
    (cache / "shard_00001.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match=r"shard_00001.safetensors is corrupt"):
        drain(ActivationStore.from_cache(cache, batch_size=16))
    (cache / "shard_00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard shard_00002.safetensors .* missing"):
        ActivationStore.from_cache(cache)
    (cache / "manifest.json").write_text("{ truncated")
    with pytest.raises(ValueError, match="not valid JSON"):
        ActivationStore.from_cache(cache)
    (cache / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        ActivationStore.from_cache(cache)


def test_nan_activations_name_the_batch(user_errors):
    cfg = toy.ToyConfig(n_features=5, n_hidden=2)
    model = toy.ToyModel(cfg, device="cpu")
    xs = [torch.rand(8, 1, 5) for _ in range(4)]
    xs[2][3, 0, 1] = float("nan")
    store = ActivationStore(model, "hook_hidden", xs, batch_size=4, buffer_size=64,
                            device="cpu")
    with pytest.raises(ValueError, match=r"NaN/inf activations .* in source batch 2 "
                                         r"\(0-based; first bad row 3"):
        store.next_batch()
    bad = torch.ones(10, 3)
    bad[7, 1] = float("inf")
    with pytest.raises(ValueError, match="first in row 7"):
        ActivationStore.from_tensor(bad)


def test_bad_arguments(gpt, tokens, user_errors):
    with pytest.raises(ValueError, match="buffer_size must be at least batch_size=16, got 8"):
        ActivationStore(gpt, HOOK, tokens, batch_size=16, buffer_size=8)
    with pytest.raises(ValueError, match=r"normalize must be one of \['mean_norm'\]"):
        ActivationStore(gpt, HOOK, tokens, normalize="mean-norm")
    with pytest.raises(ValueError, match=r"pass e.g. tokens.split\(32\)"):
        ActivationStore(gpt, HOOK, tokens[0])
    with pytest.raises(ValueError, match="leaves nothing of sequences of length 8"):
        ActivationStore(gpt, HOOK, tokens, skip_positions=8).next_batch()


def test_transformer_bridge_boot_native():
    """TransformerLens 4's own models: a tiny TransformerBridge built offline."""
    bridge_mod = pytest.importorskip("transformer_lens.model_bridge")
    from transformer_lens.config import TransformerBridgeConfig

    cfg = TransformerBridgeConfig(n_layers=2, d_model=16, n_ctx=8, d_head=4, n_heads=4,
                                  d_vocab=20, act_fn="relu", seed=0)
    model = bridge_mod.TransformerBridge.boot_native(cfg, device="cpu")
    g = torch.Generator().manual_seed(0)
    toks = [torch.randint(0, 20, (2, 8), generator=g) for _ in range(3)]
    for hook in (HOOK, "blocks.1.mlp.hook_post"):
        got = drain(ActivationStore(model, hook, toks, **store_kw()))
        ref = torch.cat([model.run_with_cache(t, names_filter=hook)[1][hook].reshape(
            16, -1) for t in toks])
        torch.testing.assert_close(sorted_rows(got), sorted_rows(ref))
