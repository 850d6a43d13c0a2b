"""superpose.hooks: capture-and-stop, shared by the activation store and the SAE tools."""

from __future__ import annotations

import pytest
import torch

from superpose import hooks
from superpose.gpt import GPT, GPTConfig


def make() -> GPT:
    return GPT(GPTConfig(d_vocab=13, n_layers=3, d_model=16, n_heads=2, n_ctx=8), device="cpu")


def test_capture_equals_the_cache_and_stops_after_the_last_hook():
    m = make()
    t = torch.randint(0, 13, (2, 8), generator=torch.Generator().manual_seed(0))
    _, cache = m.run_with_cache(t)
    later = []
    m.add_hook("blocks.2.hook_resid_pre", lambda x, hook: later.append(1))
    got = hooks.capture(m, ["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"], t)
    assert set(got) == {"blocks.1.hook_resid_post", "blocks.0.attn.hook_z"}
    for name, act in got.items():
        torch.testing.assert_close(act, cache[name])
    assert later == []                                     # block 2 never ran
    hooks.capture(m, ["blocks.1.hook_resid_post"], t, stop_early=False)
    assert later == [1]                                    # without stop_early it runs on
    m.reset_hooks()
    assert not hooks.any_hooked(m)                         # the capture hooks are gone


def test_capture_clone_and_a_hook_that_never_fires():
    m = make()
    t = torch.randint(0, 13, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = hooks.capture(m, ["hook_embed"], t, clone=True)["hook_embed"]
    a.zero_()                                              # a copy: the model is untouched
    assert m(t).abs().sum() > 0
    m.set_use_attn_result(False)
    with pytest.raises(RuntimeError, match=r"\['blocks.0.attn.hook_result'\] did not fire in "
                                           r"the forward pass of batch 3"):
        hooks.capture(m, ["blocks.0.attn.hook_result"], t, context=" of batch 3")
    assert not hooks.any_hooked(m)


def _through(point, x):
    """Output, input gradient and what the hooks saw, for one pass through `point`."""
    x = x.clone().requires_grad_(True)
    out = point(x)
    (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("kind", ["none", "fwd", "bwd", "pre", "removed"])
def test_fast_hook_point_behaves_as_tl_hook_point(kind):
    """FastHookPoint's shortcut (return the input when nothing listens) against TL's HookPoint,
    the plain path it stands for, with each kind of hook attached. Catches a shortcut taken
    while a backward or pre-hook is attached (that hook would silently never fire) and a
    shortcut that returns anything but its input."""
    from transformer_lens.hook_points import HookPoint

    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    seen: dict[str, list[str]] = {"fast": [], "plain": []}
    results = {}
    for name, point in (("fast", hooks.FastHookPoint()), ("plain", HookPoint())):
        log = seen[name]
        if kind in ("fwd", "removed"):
            point.add_hook(lambda t, hook, log=log: (log.append("fwd"), 2 * t)[1], dir="fwd")
        elif kind == "bwd":
            point.add_hook(lambda g, hook, log=log: log.append("bwd"), dir="bwd")
        elif kind == "pre":
            point.register_forward_pre_hook(lambda m, args, log=log: (log.append("pre"),
                                                                       (args[0] + 1,))[1])
        if kind == "removed":
            point.remove_hooks("both")
        assert hooks.is_hooked(point) == (kind not in ("none", "removed"))
        results[name] = _through(point, x)
    for got, want in zip(results["fast"], results["plain"]):
        torch.testing.assert_close(got, want)
    assert seen["fast"] == seen["plain"] == ([] if kind in ("none", "removed") else [kind])
    if kind == "none":
        assert hooks.FastHookPoint()(x) is x                 # the shortcut: not even a copy
