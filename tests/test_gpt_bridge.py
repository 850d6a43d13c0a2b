"""Our GPT <-> TransformerLens 4.x's TL-native TransformerBridge (`superpose.gpt.bridge`).

This file is for transformer-lens>=4 only: the module is skipped when transformer-lens<4 is
installed (as in the interop tier's .venv-saelens; 3.9 has a preview `sources.native`, which
`superpose.gpt.bridge` refuses) or `transformer_lens.model_bridge.sources.native` is missing; the
main tier always has 4.x, so there it always runs.

Checked: logits and every hook name both `run_with_cache`s produce equal (default bridge and
`enable_compatibility_mode(no_processing=True)`), except the two documented differences
(the bridge's hook_attn_scores is its pattern; rotary hook_q / hook_k are ours with d_head
permuted into NativeRotary's adjacent-pair order); the names found on one side only are pinned;
round trips both ways; refusals name the field and value.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import types

import pytest
import torch

if int(md.version("transformer-lens").split(".", 1)[0]) < 4:
    pytest.skip("superpose.gpt.bridge is for transformer-lens>=4", allow_module_level=True)
pytest.importorskip("transformer_lens.model_bridge.sources.native")

from tl_support import perturb  # noqa: E402
from transformer_lens.config import TransformerBridgeConfig  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

from superpose.gpt import GPT, GPTConfig  # noqa: E402
from superpose.gpt.bridge import (  # noqa: E402
    _rotary_perm,
    config_from_transformer_bridge,
    from_transformer_bridge,
    to_transformer_bridge,
)

V, N_CTX, ATOL = 19, 12, 1e-5


def make(**kw) -> GPT:
    """A GPT with non-trivial weights everywhere: LN gains and biases, every bias."""
    cfg = GPTConfig(**{"d_vocab": V, "n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8,
                       "d_mlp": 24, "n_ctx": N_CTX, "init_std": 0.3, **kw})
    return perturb(GPT(cfg, device="cpu").eval(), seed=1)


def toks(batch: int = 3, pos: int = N_CTX) -> torch.Tensor:
    return torch.randint(0, V, (batch, pos), generator=torch.Generator().manual_seed(0))


def native(**kw) -> TransformerBridge:
    """A randomly initialised boot_native bridge (its own init, seeded)."""
    base = {"d_model": 16, "d_head": 8, "n_heads": 2, "n_layers": 2, "n_ctx": N_CTX,
            "d_vocab": V, "d_mlp": 24, "act_fn": "gelu", "seed": 3}
    kw = {**base, **kw}
    rope_scaling = kw.pop("rope_scaling", None)    # read by NativeRotary, not an init field
    cfg = TransformerBridgeConfig(**kw)
    if rope_scaling is not None:
        cfg.rope_scaling = rope_scaling
    return TransformerBridge.boot_native(cfg)


def flat(names) -> set[str]:
    """Drop the bridge's component-boundary hooks (`*.hook_in` / `*.hook_out` of every wrapped
    module); they are the bridge's own names, not TL's canonical ones."""
    return {n for n in names if not n.endswith((".hook_in", ".hook_out"))}


def assert_hooks_equal(model: GPT, bridge, tokens: torch.Tensor) -> set[str]:
    """Logits and every shared hook equal; returns the shared names."""
    lo, co = model.run_with_cache(tokens)
    lb, cb = bridge.run_with_cache(tokens)
    assert (lo - lb).abs().max().item() <= ATOL
    shared = set(co.keys()) & set(cb.keys())
    perm = _rotary_perm(model.cfg.d_head)
    for name in sorted(shared):
        ours, theirs = co[name], cb[name]
        if name.endswith("attn.hook_attn_scores"):
            # TL 4.3's AttentionBridge fires hook_attn_scores post hoc on the pattern that
            # NativeAttention returns: the bridge's "scores" are the softmaxed pattern.
            pattern = co[name.replace("hook_attn_scores", "hook_pattern")]
            torch.testing.assert_close(theirs, pattern, atol=ATOL, rtol=0)
            assert torch.isinf(ours).any() and not torch.isinf(theirs).any()
            continue
        if model.cfg.positional == "rotary" and name.endswith(("attn.hook_q", "attn.hook_k")):
            ours = ours[..., perm]       # NativeRotary's adjacent pairs: our (i, i + d_head/2)
        assert ours.shape == theirs.shape, name
        torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=0, msg=name)
    return shared


def one_side_names(model: GPT, bridge, tokens: torch.Tensor) -> tuple[set[str], set[str]]:
    _, co = model.run_with_cache(tokens)
    _, cb = bridge.run_with_cache(tokens)
    return set(co.keys()) - set(cb.keys()), flat(cb.keys()) - set(co.keys())


CONFIGS = [dict(positional=p, norm=n, attn_only=a)
           for p in ("learned", "rotary", "sinusoidal", "none")
           for n in ("pre", "none") for a in (False, True)]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_logits_and_every_shared_hook_equal(kw):
    m, t = make(**kw), toks()
    bridge = to_transformer_bridge(m)
    shared = assert_hooks_equal(m, bridge, t)
    # The TL canonical names are there (not only the bridge's hook_in / hook_out ones).
    for name in ("hook_embed", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_pattern",
                 "blocks.1.attn.hook_z", "blocks.1.hook_attn_out", "blocks.1.hook_resid_post"):
        assert name in shared
    if kw["norm"] == "pre":
        assert {"blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized",
                "ln_final.hook_normalized"} <= shared
    if not kw["attn_only"]:
        assert {"blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out",
                "blocks.0.hook_resid_mid"} <= shared
    only_ours, only_bridge = one_side_names(m, bridge, t)
    rot = {f"blocks.{i}.attn.hook_rot_{x}" for i in range(2) for x in "qk"}
    assert only_ours == (rot if kw["positional"] == "rotary" else set())
    # hook_unembed: the bridge's alias of unembed.hook_out (the logits); hook_pos_embed: the
    # zero table standing in for positional="none".
    assert only_bridge == {"hook_unembed"} | (
        {"hook_pos_embed"} if kw["positional"] == "none" else set())
    # Compatibility mode without weight processing: same names, same values.
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    assert assert_hooks_equal(m, bridge, t) == shared


@pytest.mark.parametrize("kw", [dict(act="relu"), dict(tied_embeddings=True),
                                dict(positional="rotary", rotary_base=500.0, ln_eps=1e-3),
                                dict(n_layers=3, n_heads=4, d_head=4)])
def test_other_fields_keep_the_function(kw):
    m, t = make(**kw), toks()
    assert_hooks_equal(m, to_transformer_bridge(m), t)


def test_hook_mlp_in_switch_carries_over_and_others_stay_ours():
    m, t = make(), toks()
    m.set_use_hook_mlp_in(True)
    m.set_use_attn_result(True)             # not supported by TL 4.3's native AttentionBridge
    bridge = to_transformer_bridge(m)
    assert bridge.cfg.use_hook_mlp_in and not bridge.cfg.use_attn_result
    assert "blocks.0.hook_mlp_in" in assert_hooks_equal(m, bridge, t)
    back = from_transformer_bridge(bridge)
    assert back.cfg.use_hook_mlp_in and not back.cfg.use_attn_result


def test_a_hook_edit_has_the_same_effect_on_both():
    m, t = make(positional="rotary"), toks()
    bridge = to_transformer_bridge(m)
    direction = torch.randn(16, generator=torch.Generator().manual_seed(5))

    def add(x, hook):
        return x + direction

    def first_token(x, hook):
        return torch.zeros_like(x).index_fill_(-1, torch.tensor([0]), 1.0)

    hooks = [("blocks.0.hook_resid_post", add), ("blocks.1.attn.hook_pattern", first_token)]
    ours = m.run_with_hooks(t, fwd_hooks=hooks)
    theirs = bridge.run_with_hooks(t, fwd_hooks=hooks)
    assert (ours - theirs).abs().max().item() <= ATOL
    assert (ours - m(t)).abs().max().item() > 1e-2


def test_weights_land_where_tl_reads_them():
    m = make(tied_embeddings=True)
    bridge = to_transformer_bridge(m).train()
    assert bridge.training
    torch.testing.assert_close(bridge.W_U, m.W_U, atol=0, rtol=0)
    torch.testing.assert_close(bridge.unembed.b_U, m.b_U, atol=0, rtol=0)
    torch.testing.assert_close(bridge.W_E, m.W_E, atol=0, rtol=0)
    m.W_E.data.add_(1.0)                    # a copy: the bridge does not alias our weights
    assert not torch.equal(bridge.W_E, m.W_E)


@pytest.mark.parametrize("kw", CONFIGS[::3] + [dict(positional="rotary", act="relu")],
                         ids=str)
def test_round_trip_gpt_bridge_gpt(kw):
    m, t = make(**kw), toks()
    back = from_transformer_bridge(to_transformer_bridge(m))
    assert back.cfg.norm == m.cfg.norm and back.cfg.attn_only == m.cfg.attn_only
    assert back.cfg.positional == ("rotary" if kw.get("positional") == "rotary" else "learned")
    assert (back(t) - m(t)).abs().max().item() <= ATOL
    if m.cfg.positional in ("learned", "rotary"):
        ours, theirs = m.tl_parameters(), back.tl_parameters()
        assert ours.keys() == theirs.keys()
        for name in ours:
            torch.testing.assert_close(theirs[name], ours[name], atol=0, rtol=0, msg=name)


@pytest.mark.parametrize("kw", [{}, dict(positional_embedding_type="rotary"),
                                dict(normalization_type=None, act_fn="relu"),
                                dict(normalization_type="LNPre"), dict(attn_only=True),
                                dict(positional_embedding_type="rotary", rotary_dim=8,
                                     rotary_base=100, eps=1e-4)],
                         ids=str)
def test_round_trip_bridge_gpt_bridge(kw):
    bridge, t = native(**kw), toks()
    m = from_transformer_bridge(bridge)
    assert_hooks_equal(m, bridge, t)
    again = to_transformer_bridge(m)
    assert (again(t) - bridge(t)).abs().max().item() <= ATOL


def test_a_processed_bridge_converts_to_its_processed_function():
    m, t = make(), toks()
    bridge = to_transformer_bridge(m)
    bridge.enable_compatibility_mode(disable_warnings=True)   # fold_ln, centering
    back = from_transformer_bridge(bridge)
    assert (back(t) - bridge(t)).abs().max().item() <= ATOL
    centred = back(t) - m(t)                 # center_unembed: a per-position constant
    assert (centred - centred.mean(-1, keepdim=True)).abs().max().item() <= ATOL
    torch.testing.assert_close(back.blocks[0].ln1.w, torch.ones(16), atol=0, rtol=0)


def test_post_ln_and_non_gpts_are_refused(user_errors):
    with pytest.raises(ValueError, match=r"norm='post'.*pre-LN"):
        to_transformer_bridge(make(norm="post"))
    with pytest.raises(TypeError, match="superpose GPT"):
        to_transformer_bridge(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="TransformerBridge"):
        from_transformer_bridge(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kw, field", [
    (dict(normalization_type="RMS"), "normalization_type='RMS'"),
    (dict(normalization_type="RMSPre"), "normalization_type='RMSPre'"),
    (dict(final_rms=True), "final_rms=True"),
    (dict(gated_mlp=True, act_fn="silu"), "gated_mlp=True"),
    (dict(act_fn="silu"), "act_fn='silu'"),
    (dict(act_fn="gelu_new"), "act_fn='gelu_new'"),
    (dict(act_fn="solu_ln"), "act_fn='solu_ln'"),
    (dict(n_heads=4, d_head=4, n_key_value_heads=2), "n_key_value_heads=2"),
    (dict(parallel_attn_mlp=True), "parallel_attn_mlp=True"),
    (dict(attention_dir="bidirectional"), "attention_dir='bidirectional'"),
    (dict(attn_scale=2.0), "attn_scale=2.0"),
    (dict(attn_scores_soft_cap=30.0), "attn_scores_soft_cap=30.0"),
    (dict(output_logits_soft_cap=30.0), "output_logits_soft_cap=30.0"),
    (dict(d_vocab_out=7), "d_vocab_out=7"),
    (dict(positional_embedding_type="rotary", rotary_dim=4), "rotary_dim=4"),
    (dict(positional_embedding_type="rotary",
          rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling="),
])
def test_from_transformer_bridge_refuses_what_we_cannot_express(kw, field):
    bridge = native(**kw)
    with pytest.raises(ValueError, match=r"cannot convert this TransformerBridge: "
                       + field.replace("(", r"\(").replace(".", r"\.")):
        from_transformer_bridge(bridge)


def test_only_native_bridges_are_converted():
    bridge = native()
    bridge.cfg.architecture = "GPT2LMHeadModel"
    with pytest.raises(ValueError, match="architecture='GPT2LMHeadModel'"):
        config_from_transformer_bridge(bridge)
    fake = types.SimpleNamespace(cfg=native().cfg, original_model=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="the original model is a Linear"):
        from_transformer_bridge(fake)


def test_missing_native_source_is_a_clear_import_error(monkeypatch):
    import transformer_lens.model_bridge.sources as sources
    monkeypatch.setitem(sys.modules, "transformer_lens.model_bridge.sources.native", None)
    monkeypatch.delattr(sources, "native")
    with pytest.raises(ImportError, match=r"needs transformer-lens>=4"):
        to_transformer_bridge(make())
    with pytest.raises(ImportError, match=r"needs transformer-lens>=4"):
        from_transformer_bridge(types.SimpleNamespace(cfg=None, original_model=None))


def test_transformer_lens_3_is_refused_with_the_version_needed(monkeypatch):
    import superpose.gpt.bridge as bridge_module
    monkeypatch.setattr(bridge_module, "_tl_version", lambda: "3.9.0")
    with pytest.raises(ImportError, match=r"needs transformer-lens>=4.*3\.9\.0"):
        to_transformer_bridge(make())
