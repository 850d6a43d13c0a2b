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
