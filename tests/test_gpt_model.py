import dataclasses
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from superpose import gpt
from superpose.gpt.config import GPTConfig

POSITIONALS = ["learned", "sinusoidal", "rotary", "none"]
NORMS = ["pre", "post", "none"]
V = 13


def make(**kw):
    base = dict(d_vocab=V, n_layers=2, d_model=16, n_heads=2, n_ctx=12, seed=0)
    return gpt.GPT(GPTConfig(**{**base, **kw}), device="cpu")


def toks(batch=3, pos=10, seed=0):
    return torch.randint(0, V, (batch, pos), generator=torch.Generator().manual_seed(seed))


def force_explicit():
    """A do-nothing hook on every pattern: attention then runs the explicit path."""
    return (lambda name: name.endswith("hook_pattern"), lambda x, hook: None)


# ---- config ----------------------------------------------------------------------------------

def test_config_resolves_defaults_and_is_frozen():
    cfg = GPTConfig(d_vocab=50, d_model=128, n_heads=4)
    assert (cfg.d_head, cfg.d_mlp) == (32, 512)
    assert GPTConfig(d_vocab=5, d_model=10, n_heads=3, d_head=4).d_head == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 64
    with pytest.raises(TypeError):
        GPTConfig(50)                               # keyword-only


@pytest.mark.parametrize("kw, message", [
    (dict(d_model=130, n_heads=4),
     r"d_model \(130\) must be divisible by n_heads \(4\) when d_head is not given; pass d_head"),
    (dict(positional="rope"),
     r"positional must be one of \['learned', 'sinusoidal', 'rotary', 'none'\], got 'rope'"),
    (dict(norm="layer"), r"norm must be one of \['pre', 'post', 'none'\], got 'layer'"),
    (dict(act="silu"), r"act must be one of \['gelu', 'relu'\], got 'silu'"),
    (dict(d_model=12, n_heads=4, positional="rotary"),
     r"positional='rotary' rotates pairs .* d_head must be even, got d_head=3"),
    (dict(n_layers=0), r"n_layers must be a positive integer, got 0"),
    (dict(n_ctx=2.5), r"n_ctx must be a positive integer, got 2.5"),
    (dict(d_vocab=True), r"d_vocab must be a positive integer, got True"),
    (dict(dropout=1.0), r"dropout must be a finite number in \[0, 1\), got 1.0"),
    (dict(attn_only="yes"), r"attn_only must be True or False, got 'yes'"),
    (dict(init_std=0), r"init_std must be a positive finite number, got 0"),
    (dict(seed=-1), r"seed must be a non-negative integer, got -1"),
])
def test_config_errors_name_field_value_and_fix(kw, message):
    # No `user_errors` fixture on purpose: the config opts out of the test-time type checker,
    # so these are the messages a user sees, under pytest too.
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{"d_vocab": 10, **kw})


# ---- hook points -----------------------------------------------------------------------------

# Hook points that exist (as on a HookedTransformer) but fire only when switched on.
SWITCHED = ("attn.hook_result", "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input",
            "hook_mlp_in")


def expected_hooks(cfg):
    names = ["hook_embed"]
    if cfg.positional in ("learned", "sinusoidal"):
        names.append("hook_pos_embed")
    ln = ["hook_scale", "hook_normalized"] if cfg.norm != "none" else []
    for i in range(cfg.n_layers):
        b = f"blocks.{i}."
        names += [b + "hook_resid_pre", *(b + "ln1." + h for h in ln)]
        attn = ["hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z"]
        if cfg.positional == "rotary":
            attn += ["hook_rot_q", "hook_rot_k"]
        names += [b + "attn." + h for h in attn] + [b + "hook_attn_out"]
        names += [b + "attn.hook_result", b + "hook_attn_in", b + "hook_q_input",
                  b + "hook_k_input", b + "hook_v_input", b + "hook_mlp_in", b + "hook_mlp_out"]
        if not cfg.attn_only:
            names += [b + "hook_resid_mid", *(b + "ln2." + h for h in ln), b + "mlp.hook_pre",
                      b + "mlp.hook_post"]
        names.append(b + "hook_resid_post")
    if cfg.norm == "pre":
        names += ["ln_final." + h for h in ln]
    return names + ["unembed.hook_in", "unembed.hook_out"]


@pytest.mark.parametrize("positional, norm, attn_only",
                         list(itertools.product(POSITIONALS, NORMS, [False, True])))
def test_every_hook_point_is_present_with_tl_shapes(positional, norm, attn_only):
    m = make(positional=positional, norm=norm, attn_only=attn_only, d_mlp=24)
    assert sorted(m.hook_names()) == sorted(expected_hooks(m.cfg))
    t = toks(3, 10)
    logits, cache = m.run_with_cache(t)
    silent = SWITCHED + (("hook_mlp_out",) if attn_only else ())
    assert set(cache.keys()) == {n for n in m.hook_dict if not n.endswith(silent)}
    assert logits.shape == (3, 10, V)
    shapes = {"hook_q": (3, 10, 2, 8), "hook_k": (3, 10, 2, 8), "hook_v": (3, 10, 2, 8),
              "hook_z": (3, 10, 2, 8), "hook_rot_q": (3, 10, 2, 8), "hook_rot_k": (3, 10, 2, 8),
              "hook_attn_scores": (3, 2, 10, 10), "hook_pattern": (3, 2, 10, 10),
              "hook_pre": (3, 10, 24), "hook_post": (3, 10, 24), "hook_scale": (3, 10, 1),
              "hook_out": (3, 10, V)}
    for name, act in cache.items():
        want = shapes.get(name.rsplit(".", 1)[-1], (3, 10, 16))
        assert tuple(act.shape) == want, name
    # The cached run takes the explicit attention path; it agrees with the fast one.
    torch.testing.assert_close(logits, m(t), atol=1e-5, rtol=1e-5)


def test_cache_is_an_activation_cache_with_tl_shorthands():
    m = make()
    _, cache = m.run_with_cache(toks())
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])
    assert torch.equal(cache["resid_post", -1], cache["blocks.1.hook_resid_post"])
    _, cache = m.run_with_cache(toks(), names_filter=["blocks.1.hook_resid_pre"])
    assert list(cache.keys()) == ["blocks.1.hook_resid_pre"]


def test_weights_are_tl_layout_views_that_reproduce_the_hooks():
    m = make()
    attn, mlp = m.blocks[0].attn, m.blocks[0].mlp
    assert attn.W_Q.shape == (2, 16, 8) and attn.b_Q.shape == (2, 8)
    assert attn.W_O.shape == (2, 8, 16)
    assert attn.W_K.data_ptr() != attn.W_Q.data_ptr()
    _, c = m.run_with_cache(toks())
    x = c["blocks.0.ln1.hook_normalized"]
    for w, b, name in [(attn.W_Q, attn.b_Q, "q"), (attn.W_K, attn.b_K, "k"),
                       (attn.W_V, attn.b_V, "v")]:
        torch.testing.assert_close(torch.einsum("bpm,hmd->bphd", x, w) + b,
                                   c[f"blocks.0.attn.hook_{name}"])
    torch.testing.assert_close(torch.einsum("bphd,hdm->bpm", c["blocks.0.attn.hook_z"], attn.W_O)
                               + attn.b_O, c["blocks.0.hook_attn_out"])
    z = torch.einsum("bhqk,bkhd->bqhd", c["blocks.0.attn.hook_pattern"], c["blocks.0.attn.hook_v"])
    torch.testing.assert_close(z, c["blocks.0.attn.hook_z"])
    x2 = c["blocks.0.ln2.hook_normalized"]
    torch.testing.assert_close(x2 @ mlp.W_in + mlp.b_in, c["blocks.0.mlp.hook_pre"])
    torch.testing.assert_close(F.gelu(c["blocks.0.mlp.hook_pre"]), c["blocks.0.mlp.hook_post"])
    torch.testing.assert_close(c["blocks.0.mlp.hook_post"] @ mlp.W_out + mlp.b_out,
                               c["blocks.0.hook_mlp_out"])
    # Editing a view in place edits the model.
    with torch.no_grad():
        attn.W_Q.zero_()
    assert m.blocks[0].attn.W_QKV[0].abs().sum() == 0


def test_relu_act_and_sinusoidal_table():
    m = make(act="relu", positional="sinusoidal")
    _, c = m.run_with_cache(toks())
    torch.testing.assert_close(c["blocks.0.mlp.hook_post"], c["blocks.0.mlp.hook_pre"].relu())
    pe = c["hook_pos_embed"][0]
    assert pe[3, 0] == pytest.approx(math.sin(3)) and pe[3, 1] == pytest.approx(math.cos(3))
    assert "W_pos" not in m.state_dict()          # fixed, not a weight


# ---- hooks intervene ---------------------------------------------------------------------------

def test_zero_ablating_attn_out_changes_logits_and_cleans_up():
    m = make()
    t = toks()
    clean = m(t)
    ablated = m.run_with_hooks(t, fwd_hooks=[("blocks.0.hook_attn_out",
                                              lambda x, hook: torch.zeros_like(x))])
    assert not torch.allclose(clean, ablated)
    assert all(not hp._forward_hooks for hp in m.hook_dict.values())
    torch.testing.assert_close(m(t), clean)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_patching_resid_pre_from_another_input_reproduces_its_logits(positional):
    m = make(positional=positional, n_layers=3)
    a, b = toks(seed=1), toks(seed=2)
    logits_a, cache_a = m.run_with_cache(a, names_filter="blocks.1.hook_resid_pre")
    patched = m.run_with_hooks(b, fwd_hooks=[("blocks.1.hook_resid_pre",
                                              lambda x, hook: cache_a[hook.name])])
    torch.testing.assert_close(patched, logits_a)
    assert not torch.allclose(m(b), logits_a)


def test_replacing_the_pattern_takes_effect():
    m = make()
    t = toks()

    def uniform(pattern, hook):       # attend uniformly over the causal prefix
        n = pattern.shape[-1]
        return torch.ones(n, n).tril() / torch.arange(1, n + 1)[:, None]

    seen = {}
    out = m.run_with_hooks(t, fwd_hooks=[
        ("blocks.0.attn.hook_pattern", uniform),
        ("blocks.0.attn.hook_z", lambda z, hook: seen.setdefault("z", z)),
    ])
    assert not torch.allclose(out, m(t))
    _, c = m.run_with_cache(t)
    mean_v = c["blocks.0.attn.hook_v"].cumsum(1) / torch.arange(1, 11)[None, :, None, None]
    torch.testing.assert_close(seen["z"], mean_v)


def test_freezing_ln_scale_through_hook_scale():
    m = make()
    a, b = toks(seed=1), toks(seed=2)
    _, ca = m.run_with_cache(a)
    x = ca["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(ca["blocks.0.ln1.hook_scale"],
                               (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt())
    # Patching every LN scale with its cached value leaves the run unchanged ...
    hooks = [(n, lambda s, hook: ca[hook.name]) for n in m.hook_names() if n.endswith("scale")]
    torch.testing.assert_close(m.run_with_hooks(a, fwd_hooks=hooks), m(a))
    # ... and on another input changes it (the scale is used, not recomputed).
    assert not torch.allclose(m.run_with_hooks(b, fwd_hooks=hooks), m(b))


# ---- attention paths and causality ---------------------------------------------------------------

@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("train", [False, True])
def test_sdpa_and_explicit_attention_agree(positional, train, monkeypatch):
    m = make(positional=positional, n_layers=2, dropout=0.0)
    m.train(train)
    t = toks(4, 12)
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    fast = m(t)
    fast.square().sum().backward()
    g_fast = {n: p.grad.clone() for n, p in m.named_parameters()}
    assert len(calls) == 2
    m.zero_grad()
    slow = m.run_with_hooks(t, fwd_hooks=[force_explicit()])
    slow.square().sum().backward()
    assert len(calls) == 2                         # the hooked run did not use SDPA
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for n, p in m.named_parameters():
        torch.testing.assert_close(g_fast[n], p.grad, atol=1e-4, rtol=1e-4, msg=n)
    # A hook on the scores alone also switches to the explicit path.
    m.run_with_hooks(t, fwd_hooks=[("blocks.1.attn.hook_attn_scores", lambda x, hook: None)])
    assert len(calls) == 3                         # only layer 0 used SDPA


def test_causal_mask_pattern_rows_sum_to_one_and_nothing_above_diagonal():
    m = make()
    _, c = m.run_with_cache(toks(2, 9))
    for i in range(2):
        pat, scores = c["pattern", i], c["attn_scores", i]
        above = torch.ones(9, 9, dtype=torch.bool).triu(1)
        torch.testing.assert_close(pat.sum(-1), torch.ones(2, 2, 9))
        assert (pat[..., above] == 0).all() and (pat[..., ~above] > 0).all()
        assert torch.isneginf(scores[..., above]).all()
        assert torch.isfinite(scores[..., ~above]).all()


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm", NORMS)
def test_output_at_t_does_not_depend_on_later_tokens(positional, norm):
    m = make(positional=positional, norm=norm)
    t = toks(2, 12)
    for cut in (0, 5, 10):
        u = t.clone()
        u[:, cut + 1:] = (u[:, cut + 1:] + 1) % V
        a, b = m(t), m(u)
        torch.testing.assert_close(a[:, : cut + 1], b[:, : cut + 1])
        assert not torch.allclose(a[:, cut + 1:], b[:, cut + 1:])


# ---- pre-LN / post-LN structure -----------------------------------------------------------------

def test_pre_ln_structure():
    m = make(norm="pre")
    _, c = m.run_with_cache(toks())
    b = "blocks.0."
    torch.testing.assert_close(c[b + "ln1.hook_normalized"],
                               F.layer_norm(c[b + "hook_resid_pre"], (16,)))
    torch.testing.assert_close(c[b + "hook_resid_mid"],
                               c[b + "hook_resid_pre"] + c[b + "hook_attn_out"])
    torch.testing.assert_close(c[b + "hook_resid_post"],
                               c[b + "hook_resid_mid"] + c[b + "hook_mlp_out"])
    assert "ln_final.hook_normalized" in c.keys()


def test_post_ln_normalizes_after_each_residual_add_and_has_no_final_ln():
    m = make(norm="post")
    _, c = m.run_with_cache(toks())
    b = "blocks.0."
    ln1, ln2 = m.blocks[0].ln1, m.blocks[0].ln2
    torch.testing.assert_close(c[b + "hook_resid_mid"], c[b + "ln1.hook_normalized"] * ln1.w
                               + ln1.b)
    torch.testing.assert_close(
        c[b + "hook_resid_mid"],
        F.layer_norm(c[b + "hook_resid_pre"] + c[b + "hook_attn_out"], (16,)))
    torch.testing.assert_close(c[b + "hook_resid_post"], c[b + "ln2.hook_normalized"] * ln2.w
                               + ln2.b)
    post = c["blocks.1.hook_resid_post"]
    torch.testing.assert_close(post.mean(-1), torch.zeros(post.shape[:2]), atol=1e-5, rtol=0)
    assert not any(k.startswith("ln_final") for k in c.keys())
    # The attention of a post-LN block reads the raw residual stream.
    attn = m.blocks[0].attn
    q = torch.einsum("bpm,hmd->bphd", c[b + "hook_resid_pre"], attn.W_Q) + attn.b_Q
    torch.testing.assert_close(q, c[b + "attn.hook_q"])


def test_attn_only_and_no_norm_structure():
    m = make(norm="none", attn_only=True)
    _, c = m.run_with_cache(toks())
    torch.testing.assert_close(c["blocks.0.hook_resid_post"],
                               c["blocks.0.hook_resid_pre"] + c["blocks.0.hook_attn_out"])
    torch.testing.assert_close(c["blocks.1.hook_resid_pre"], c["blocks.0.hook_resid_post"])
    torch.testing.assert_close(c["blocks.0.hook_resid_pre"], c["hook_embed"] + c["hook_pos_embed"])


# ---- unknown hook names ------------------------------------------------------------------------

def test_unknown_hook_names_list_close_matches():
    m = make(n_layers=2)
    t = toks()
    near = (r"no hook point named 'blocks\.0\.hook_resid_posts'; "
            r"close matches: \['blocks\.0\.hook_resid_post'")
    with pytest.raises(ValueError, match=near):
        m.run_with_hooks(t, fwd_hooks=[("blocks.0.hook_resid_posts", lambda x, hook: x)])
    with pytest.raises(ValueError, match=near):
        m.add_hook("blocks.0.hook_resid_posts", lambda x, hook: x)
    with pytest.raises(ValueError, match=near):
        m.run_with_cache(t, names_filter=["blocks.0.hook_resid_pre", "blocks.0.hook_resid_posts"])
    with pytest.raises(ValueError, match=r"'blocks\.0\.attn\.hook_patern'; close matches: "
                                         r"\['blocks\.0\.attn\.hook_pattern'"):
        m.run_with_cache(t, names_filter="blocks.0.attn.hook_patern")
    with pytest.raises(ValueError, match=r"named 'blocks\.0\.attn'; close matches: "
                                         r"\['blocks\.0\.attn\.hook_"):
        m.hooks(bwd_hooks=[("blocks.0.attn", lambda x, hook: x)])     # a module, not a hook
    with pytest.raises(ValueError, match=r"depend on the config .*norm='none'"):
        make(norm="none").run_with_cache(t, names_filter=["blocks.0.ln1.hook_normalized"])
    assert all(not hp._forward_hooks and not hp._backward_hooks for hp in m.hook_dict.values())
    # Filters given as functions are still accepted.
    _, c = m.run_with_cache(t, names_filter=lambda n: n.endswith("resid_post"))
    assert sorted(c.keys()) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_backward_hooks_see_gradients():
    m = make()
    grads = {}
    m.add_hook("blocks.1.hook_resid_pre", lambda g, hook: grads.setdefault("g", g), dir="bwd")
    try:
        m.loss(toks()).backward()
    finally:
        m.reset_hooks()
    assert grads["g"].shape == (3, 10, 16) and grads["g"].abs().sum() > 0


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, message", [
    (torch.zeros(2, 13, dtype=torch.long), r"sequence length 13 exceeds .* n_ctx=12"),
    (torch.tensor([[1, 2, 13]]),
     r"token ids must lie in \[0, d_vocab=13\), got values in \[1, 13\]"),
    (torch.tensor([[-1, 2]]), r"got values in \[-1, 2\]"),
    (torch.zeros(2, 3), r"integer token ids \(torch.long\), got dtype torch.float32"),
    (torch.zeros(5, dtype=torch.long), r"shape \[batch, pos\] .* got \[5\] \(use tokens\[None\]"),
    (torch.zeros(2, 0, dtype=torch.long), r"got \[2, 0\]"),
    ([[1, 2]], r"must be a torch.Tensor of token ids, got list"),
])
def test_bad_tokens_fail_with_the_numbers(tokens, message, user_errors):
    m = make()
    with pytest.raises(ValueError, match=message):
        m(tokens)


def test_constructor_rejects_wrong_config_type(user_errors):
    with pytest.raises(TypeError, match="GPT takes a GPTConfig, got dict"):
        gpt.GPT({"d_vocab": 3})


# ---- dropout, init, tied embeddings --------------------------------------------------------------

def test_dropout_applies_in_train_mode_only():
    m = make(dropout=0.3)
    t = toks()
    m.train()
    assert not torch.allclose(m(t), m(t))
    m.eval()
    torch.testing.assert_close(m(t), m(t))


def test_init_is_seeded_and_loss_starts_near_uniform():
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    torch.testing.assert_close(a.state_dict(), b.state_dict())
    assert not torch.equal(a.W_E, c.W_E)
    assert a.loss(toks()).item() == pytest.approx(math.log(V), abs=0.1)
    # Residual-writing projections are scaled by 1/sqrt(2 * n_layers).
    assert a.blocks[0].mlp.W_out.std().item() == pytest.approx(0.02 / 2, rel=0.15)
    assert a.blocks[0].mlp.W_in.std().item() == pytest.approx(0.02, rel=0.15)


def test_tied_embeddings_share_storage_and_gradient():
    m = make(tied_embeddings=True)
    assert m.W_U.data_ptr() == m.W_E.data_ptr() and m.W_U.shape == (16, V)
    assert "W_U" not in m.state_dict()
    untied = make(tied_embeddings=False)
    assert untied.W_U.data_ptr() != untied.W_E.data_ptr() and "W_U" in untied.state_dict()
    # With the embedding path cut by a hook, W_E still gets a gradient: through the unembedding.
    cut = [("hook_embed", lambda x, hook: x.detach())]
    m.run_with_hooks(toks(), fwd_hooks=cut).sum().backward()
    assert m.W_E.grad is not None and m.W_E.grad.abs().sum() > 0


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    m = make(n_layers=2, d_model=32, n_heads=4, n_ctx=16)
    t = toks(4, 16, seed=5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m.loss(t).item()
    for _ in range(100):
        opt.zero_grad()
        loss = m.loss(t)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first, (first, loss.item())


# ---- generation --------------------------------------------------------------------------------

def test_generation_seeded_greedy_topk_and_context_crop():
    m = make(n_ctx=8)
    prompt = toks(2, 5)
    a = m.generate(prompt, 10, generator=torch.Generator().manual_seed(1))
    b = m.generate(prompt, 10, generator=1)
    assert a.shape == (2, 15) and torch.equal(a[:, :5], prompt) and torch.equal(a, b)
    assert not torch.equal(a, m.generate(prompt, 10, generator=2))
    greedy = m.generate(prompt, 6, temperature=0)
    assert torch.equal(greedy, m.generate(prompt, 6, top_k=1, generator=3))
    seq = prompt
    for _ in range(6):                             # greedy = argmax of the last logits
        seq = torch.cat([seq, m(seq[:, -8:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, seq)
    m.train()
    m.generate(prompt, 1)
    assert m.training                              # mode restored


def test_top_k_only_samples_among_the_k_most_likely():
    m = make()
    prompt = toks(1, 4).expand(64, 4)
    out = m.generate(prompt, 1, top_k=3, temperature=5.0, generator=0)[:, -1]
    top3 = m(prompt[:1])[0, -1].topk(3).indices
    assert set(out.tolist()) <= set(top3.tolist()) and len(set(out.tolist())) > 1


def test_generate_argument_errors(user_errors):
    m = make()
    with pytest.raises(ValueError,
                       match="temperature must be a non-negative finite number, got -1"):
        m.generate(toks(), 2, temperature=-1)
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        m.generate(toks(), 2, top_k=0)


# ---- save / load -------------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path):
    m = make(positional="rotary", tied_embeddings=True, norm="post")
    with torch.no_grad():
        m.b_U.normal_()
    m.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors",
                                                             "saved.json"}
    loaded = gpt.GPT.load(tmp_path / "m", device="cpu")
    assert loaded.cfg == m.cfg
    torch.testing.assert_close(loaded(toks()), m(toks()))


def test_load_mismatched_or_corrupt_fails_clearly_and_leaves_files(tmp_path):
    m = make()
    folder = m.save(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "d_model": 32, "d_head": 16,
                                                    "d_mlp": 128}))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match="weights do not match config.json"):
        gpt.GPT.load(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "n_embd": 3}))
    with pytest.raises(ValueError, match=r"does not take key\(s\) \['n_embd'\]"):
        gpt.GPT.load(folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        gpt.GPT.load(folder)
    assert (folder / "model.safetensors").read_bytes() == b"not a safetensors file"
    assert set(before) == {p.name for p in folder.iterdir()}


def test_device_none_means_cuda_when_available():
    m = gpt.GPT(GPTConfig(d_vocab=5, d_model=8, n_heads=2, n_layers=1))
    assert m.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
