"""Our GPT and TransformerLens 3.9's HookedTransformer are interchangeable: with the same weights
every hook both have caches the same values, the converters go both ways, and TL's toolbox
(logit lens, direct logit attribution, residual decompositions, activation patching,
SVDInterpreter, FactoredMatrix circuits) gives the same numbers on either model."""

from __future__ import annotations

import itertools

import pytest
import torch
from tl_support import perturb
from transformer_lens import HookedTransformer, HookedTransformerConfig, SVDInterpreter
from transformer_lens import patching as tl_patching

from superpose.gpt import GPT, GPTConfig, from_hooked_transformer, to_hooked_transformer

pytestmark = pytest.mark.science   # the interop tier (make test-science)

V, CTX = 23, 10
TOL = dict(atol=2e-5, rtol=2e-5)


def random_gpt(**kw) -> GPT:
    """A GPT whose every weight is non-trivial (LN gains and biases too), so that a hook read
    before or after a weight cannot agree by accident."""
    cfg = GPTConfig(**{"d_vocab": V, "n_layers": 2, "d_model": 16, "n_heads": 4, "n_ctx": CTX,
                       "d_mlp": 24, "init_std": 0.3, "seed": 3, **kw})
    return perturb(GPT(cfg, device="cpu").eval(), seed=7)


def tokens(batch: int = 3, pos: int = CTX, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, pos), generator=torch.Generator().manual_seed(seed))


ARCHS = [dict(positional=p, norm=n, attn_only=a) for p, n, a in
         itertools.product(["learned", "sinusoidal", "rotary", "none"], ["pre", "none"],
                           [False, True])]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(str(x) for x in a.values()))
def test_every_shared_hook_caches_the_same_values(arch):
    # catches: a converter (to_hooked_transformer / tl_parameters) that puts a weight under the
    # wrong TL name or layout (q|k|v order of W_QKV, W_O transposed, LN w and b swapped, a zero
    # W_pos missing for positional='none'), a rotary or sinusoidal table unlike TL's, a hook that
    # reads before or after the wrong op (hook_normalized after w and b), a hook TL has and we lack
    # or vice versa, or a fused fast path (SDPA, F.layer_norm) whose logits differ from the hooked
    # path, in all 16 positional x norm x attn_only combinations.
    m = random_gpt(**arch)
    ht = to_hooked_transformer(m)
    assert isinstance(ht, HookedTransformer)
    t = tokens()
    ours, c1 = m.run_with_cache(t)
    theirs, c2 = ht.run_with_cache(t)
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(m(t), theirs, **TOL)          # our fused fast path too
    # Every hook name TL has is ours too; only a zero W_pos stands in for "no positions".
    extra = {"hook_pos_embed"} if arch["positional"] == "none" else set()
    assert set(ht.hook_dict) - extra == set(m.hook_dict)
    assert set(c2.keys()) - extra == set(c1.keys())
    for name in c1.keys():
        torch.testing.assert_close(c1[name], c2[name], **TOL, msg=name)


@pytest.mark.parametrize("switch", ["set_use_attn_result", "set_use_split_qkv_input",
                                    "set_use_attn_in", "set_use_hook_mlp_in"])
def test_switched_hooks_match_hooked_transformer(switch):
    # catches: a set_use_attn_result / set_use_split_qkv_input / set_use_attn_in /
    # set_use_hook_mlp_in that is a no-op (its hook would be missing from the cache), that fires its
    # hook with values other than TL's (hook_result before W_O, split inputs taken after ln1 instead
    # of from resid_pre), or that changes the logits.
    m = random_gpt()
    ht = to_hooked_transformer(m)
    getattr(m, switch)(True)
    getattr(ht, switch)(True)
    t = tokens()
    l1, c1 = m.run_with_cache(t)
    l2, c2 = ht.run_with_cache(t)
    torch.testing.assert_close(l1, l2, **TOL)
    new = {"set_use_attn_result": "attn.hook_result", "set_use_split_qkv_input": "hook_q_input",
           "set_use_attn_in": "hook_attn_in", "set_use_hook_mlp_in": "hook_mlp_in"}[switch]
    assert f"blocks.1.{new}" in c1.keys()
    assert set(c1.keys()) == set(c2.keys())
    for name in c1.keys():
        torch.testing.assert_close(c1[name], c2[name], **TOL, msg=name)


def test_a_hook_on_a_split_input_edits_one_head_as_in_tl():
    # catches: split q/k/v inputs that share storage (zeroing k's head 2 would leak into q and v),
    # an edit to hook_k_input that is ignored (the output would not change), or one applied to
    # another head or to q instead of k (the output would differ from TL's).
    m = random_gpt()
    ht = to_hooked_transformer(m)
    for model in (m, ht):
        model.set_use_split_qkv_input(True)

    def zero_head_2(x, hook):
        x[:, :, 2] = 0.0
        return x

    t = tokens()
    hooks = [("blocks.0.hook_k_input", zero_head_2)]
    a, b = m.run_with_hooks(t, fwd_hooks=hooks), ht.run_with_hooks(t, fwd_hooks=hooks)
    torch.testing.assert_close(a, b, **TOL)
    assert (a - m(t)).abs().max() > 1e-3                        # the edit changed the output


def test_backward_hooks_see_the_same_gradients():
    # catches: a fast path (fused SDPA, F.layer_norm, FastHookPoint's shortcut) taken while a
    # backward hook is attached, so the hook never fires or sees another gradient; backward hooks
    # missing from our hook points (fewer than 20 *_grad entries); or a return_type='loss' unlike
    # TL's.
    m = random_gpt()
    ht = to_hooked_transformer(m)
    t = tokens()
    _, c1 = m.run_with_cache(t, incl_bwd=True, return_type="loss")
    _, c2 = ht.run_with_cache(t, incl_bwd=True, return_type="loss")
    grads = [k for k in c1.keys() if k.endswith("_grad")]
    assert len(grads) > 20
    # HookedTransformer runs ln1 three times (once each for q, k and v), so its backward hook on
    # ln1's hook_scale / hook_normalized records the gradient through one of the three copies;
    # ours (one ln1 call) records the whole gradient. Every other gradient must agree.
    for name in grads:
        if ".ln1." in name:
            continue
        torch.testing.assert_close(c1[name], c2[name], **TOL, msg=name)


def test_converters_round_trip_and_from_hooked_transformer():
    # catches: a from_hooked_transformer that is not the inverse of to_hooked_transformer
    # (W_Q/W_K/W_V mis-packed into W_QKV, rotary weights left permuted), LNPre loaded as anything
    # but w=1, b=0, or act_fn / normalization_type misread (relu read as gelu, LNPre as no
    # LayerNorm).
    m = random_gpt(positional="rotary")
    back = GPT.from_hooked_transformer(to_hooked_transformer(m))
    t = tokens()
    torch.testing.assert_close(back(t), m(t), **TOL)
    # A HookedTransformer built by TL itself (LNPre: LN without w, b) converts too.
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=CTX, d_head=4, n_heads=4,
                                  d_mlp=32, d_vocab=V, act_fn="relu", normalization_type="LNPre",
                                  seed=1, device="cpu")
    ht = HookedTransformer(cfg)
    ours = from_hooked_transformer(ht)
    assert ours.cfg.act == "relu" and ours.cfg.norm == "pre"
    l1, c1 = ours.run_with_cache(t)
    l2, c2 = ht.run_with_cache(t)
    torch.testing.assert_close(l1, l2, **TOL)
    for name in c2.keys():
        torch.testing.assert_close(c1[name], c2[name], **TOL, msg=name)


@pytest.mark.parametrize("field, value, message", [
    ("normalization_type", "RMS", r"normalization_type='RMS'"),
    ("act_fn", "gelu_new", r"act_fn='gelu_new'"),
    ("parallel_attn_mlp", True, r"parallel_attn_mlp=True"),
    ("gated_mlp", True, r"gated_mlp=True"),
    ("positional_embedding_type", "shortformer", r"positional_embedding_type='shortformer'"),
    ("n_key_value_heads", 2, r"n_key_value_heads=2"),
])
def test_from_hooked_transformer_refuses_what_we_cannot_express(field, value, message):
    # catches: a check dropped from tl_config_checks / config_from_hooked_transformer, so an
    # RMSNorm, gelu_new, parallel-attention, gated-MLP, shortformer or grouped-query
    # HookedTransformer converts silently into a GPT computing a different function, or a refusal
    # that does not name the field and its value.
    kw = dict(n_layers=1, d_model=16, n_ctx=CTX, d_head=4, n_heads=4, d_mlp=32, d_vocab=V,
              act_fn="gelu", normalization_type="LN", device="cpu")
    kw[field] = value
    ht = HookedTransformer(HookedTransformerConfig(**kw))
    with pytest.raises(ValueError, match=message):
        GPT.from_hooked_transformer(ht)


def test_post_ln_is_refused_by_the_converter():
    # catches: tl_config_fields converting a post-LN GPT (which HookedTransformer cannot express)
    # into a pre-LN HookedTransformer computing a different function, instead of a ValueError naming
    # norm='post'.
    with pytest.raises(ValueError, match=r"norm='post'"):
        to_hooked_transformer(random_gpt(norm="post"))


# ---- TL's toolbox gives the same numbers on either model ---------------------------------------

@pytest.fixture(scope="module")
def pair():
    m = random_gpt()
    ht = to_hooked_transformer(m)
    t = tokens()
    _, c1 = m.run_with_cache(t)
    _, c2 = ht.run_with_cache(t)
    return m, ht, t, c1, c2


def test_logit_lens_and_accumulated_resid(pair):
    # catches: hook_resid_pre / hook_resid_mid / hook_resid_post or ln_final.hook_scale caching
    # values unlike TL's (accumulated_resid reads them and applies ln_final by the cached scale),
    # labels for layer / incl_mid unlike TL's, or m.unembed computing something other than the
    # forward's unembedding (the last layer's lens would not equal the logits).
    m, ht, t, c1, c2 = pair
    for kw in (dict(apply_ln=True), dict(apply_ln=False), dict(layer=1, incl_mid=True,
                                                                apply_ln=True)):
        r1, lab1 = c1.accumulated_resid(return_labels=True, **kw)
        r2, lab2 = c2.accumulated_resid(return_labels=True, **kw)
        assert lab1 == lab2
        torch.testing.assert_close(r1, r2, **TOL)
    lens1 = m.unembed(c1.accumulated_resid(apply_ln=True))
    lens2 = ht.unembed(c2.accumulated_resid(apply_ln=True))
    torch.testing.assert_close(lens1, lens2, **TOL)
    torch.testing.assert_close(lens1[-1], m(t), **TOL)     # the last layer's lens is the output


def test_direct_logit_attribution(pair):
    # catches: embed / pos_embed / attn_out / mlp_out / hook_z caches or W_O, b_O, W_U, b_U unlike
    # TL's, so decompose_resid, stack_head_results or logit_attrs give other numbers or labels; or
    # components that do not add up to the residual stream, or W_U / tokens_to_residual_directions
    # in the wrong orientation (attributions plus biases would not equal the logit difference).
    m, ht, t, c1, c2 = pair
    answer, wrong = t, (t + 1) % V       # an answer and a wrong token at every position
    for method in ("decompose_resid", "stack_head_results"):
        s1, lab1 = getattr(c1, method)(apply_ln=True, return_labels=True)
        s2, lab2 = getattr(c2, method)(apply_ln=True, return_labels=True)
        assert lab1 == lab2
        torch.testing.assert_close(s1, s2, **TOL)
        s1, s2 = getattr(c1, method)(apply_ln=False), getattr(c2, method)(apply_ln=False)
        a1 = c1.logit_attrs(s1, tokens=answer, incorrect_tokens=wrong)
        a2 = c2.logit_attrs(s2, tokens=answer, incorrect_tokens=wrong)
        torch.testing.assert_close(a1, a2, **TOL)
    # The attributions add up to the logit difference, less the biases. TL's apply_ln divides
    # by the cached scale and leaves ln_final.w to be folded into W_U, so fold it (w = 1).
    m = random_gpt()
    with torch.no_grad():
        m.ln_final.w.fill_(1.0)
    _, c1 = m.run_with_cache(t)
    s = c1.decompose_resid(apply_ln=False)          # logit_attrs applies ln_final's scale
    attr = c1.logit_attrs(s, tokens=answer, incorrect_tokens=wrong).sum(0)
    logits = m(t)
    diff = logits.gather(-1, answer[..., None]) - logits.gather(-1, wrong[..., None])
    direction = m.W_U[:, answer] - m.W_U[:, wrong]                       # [d_model batch pos]
    bias = m.b_U[answer] - m.b_U[wrong] + torch.einsum("d,dbp->bp", m.ln_final.b, direction)
    torch.testing.assert_close(attr + bias, diff[..., 0], atol=1e-4, rtol=1e-4)


def test_full_resid_decomposition_and_apply_ln_to_stack(pair):
    # catches: mlp.hook_post, W_in, b_in, W_out, hook_z or b_O unlike TL's
    # (get_full_resid_decomposition and stack_neuron_results expand neurons and heads through them),
    # ln_final.hook_scale unlike TL's (apply_ln_to_stack divides by it), or components labelled in
    # another order.
    m, ht, t, c1, c2 = pair
    for kw in (dict(apply_ln=True, expand_neurons=True), dict(apply_ln=True, expand_neurons=False),
               dict(layer=1, apply_ln=False)):
        s1, lab1 = c1.get_full_resid_decomposition(return_labels=True, **kw)
        s2, lab2 = c2.get_full_resid_decomposition(return_labels=True, **kw)
        assert lab1 == lab2
        torch.testing.assert_close(s1, s2, **TOL)
    stack = c1.decompose_resid(apply_ln=False)
    torch.testing.assert_close(c1.apply_ln_to_stack(stack), c2.apply_ln_to_stack(stack), **TOL)
    torch.testing.assert_close(c1.stack_neuron_results(1, apply_ln=True),
                               c2.stack_neuron_results(1, apply_ln=True), **TOL)


def test_activation_patching(pair):
    # catches: a hook point whose returned value is ignored (a fused path bypassing a patched
    # hook_z, hook_pattern or hook_resid_pre), patched activations with another shape than TL's, or
    # a forward where position 3 of block 0's resid_pre does not carry the whole corruption
    # (patching it would not restore the clean metric, or patching position 4 would change it).
    m, ht, t, c1, c2 = pair
    corrupted = t.clone()
    corrupted[:, 3] = (t[:, 3] + 1) % V          # the prompts differ at position 3 only
    answer = t[:, -1]

    def metric(logits):
        return logits[:, -1].gather(-1, answer[:, None]).mean()

    for fn in ("get_act_patch_resid_pre", "get_act_patch_attn_out", "get_act_patch_mlp_out",
               "get_act_patch_attn_head_out_by_pos", "get_act_patch_attn_head_pattern_all_pos",
               "get_act_patch_attn_head_all_pos_every"):
        p1 = getattr(tl_patching, fn)(m, corrupted, c1, metric)
        p2 = getattr(tl_patching, fn)(ht, corrupted, c2, metric)
        torch.testing.assert_close(p1, p2, **TOL, msg=fn)
    # Patching the clean stream into block 0 at the one differing position restores the clean
    # metric exactly; patching any other position of block 0 changes nothing.
    p = tl_patching.get_act_patch_resid_pre(m, corrupted, c1, metric)
    clean, corrupt = metric(m(t)), metric(m(corrupted))
    assert (clean - corrupt).abs() > 1e-3
    torch.testing.assert_close(p[0, 3], clean, **TOL)
    torch.testing.assert_close(p[0, 4], corrupt, **TOL)


def test_svd_interpreter_and_factored_circuits(pair):
    # catches: W_Q, W_K, W_V, W_O, b_Q, b_O, W_in, W_out, W_U or W_E views (stacked [layer head ...]
    # on the GPT, per block on attn) in another layout than TL's (W_Q without the transpose of
    # W_QKV[0]), QK / OV FactoredMatrix built from the wrong factors (W_K not transposed, W_O for
    # W_V), tl_parameters lacking a weight SVDInterpreter reads, accumulated_bias summing the wrong
    # biases or layers, or tokens_to_residual_directions indexing W_U by row.
    m, ht, *_ = pair
    s1, s2 = SVDInterpreter(m), SVDInterpreter(ht)
    for kind, kw in (("OV", dict(head_index=1)), ("w_in", {}), ("w_out", {})):
        a = s1.get_singular_vectors(kind, layer_index=1, num_vectors=4, **kw)
        b = s2.get_singular_vectors(kind, layer_index=1, num_vectors=4, **kw)
        torch.testing.assert_close(a.abs(), b.abs(), atol=1e-4, rtol=1e-4)   # up to sign
    for name in ("OV", "QK"):
        torch.testing.assert_close(getattr(m, name).AB, getattr(ht, name).AB, **TOL)
        torch.testing.assert_close(getattr(m.blocks[1].attn, name).AB,
                                   getattr(ht.blocks[1].attn, name).AB, **TOL)
    for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_O", "W_in", "W_out", "W_U", "W_E"):
        torch.testing.assert_close(getattr(m, name), getattr(ht, name), **TOL, msg=name)
    for layer in range(3):
        torch.testing.assert_close(m.accumulated_bias(layer), ht.accumulated_bias(layer), **TOL)
    ids = torch.tensor([[1, 5], [2, 7]])
    torch.testing.assert_close(m.tokens_to_residual_directions(ids),
                               ht.tokens_to_residual_directions(ids), **TOL)


@pytest.mark.parametrize("kw", [dict(return_type="loss"), dict(return_type="both"),
                                dict(return_type="loss", loss_per_token=True),
                                dict(stop_at_layer=1), dict(return_type=None)])
def test_forward_keywords_as_hooked_transformer(kw):
    # catches: a forward that handles return_type='loss' / 'both' / None, loss_per_token,
    # stop_at_layer or start_at_layer unlike HookedTransformer (a loss shifted by one position or
    # averaged differently, stop_at_layer applying ln_final or stopping at another block,
    # start_at_layer adding the embeddings again).
    m = random_gpt()
    ht = to_hooked_transformer(m)
    t = tokens()
    a, b = m(t, **kw), ht(t, **kw)
    if a is None:
        assert b is None
        return
    for x, y in zip(a if isinstance(a, tuple) else [a], b if isinstance(b, tuple) else [b]):
        torch.testing.assert_close(x, y, **TOL)
    resid = m(t, stop_at_layer=1)
    torch.testing.assert_close(m(resid, start_at_layer=1), ht(resid, start_at_layer=1), **TOL)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_padded_batches_match_hooked_transformer(side, positional):
    # catches: our attention_mask differing from TL's on a padded batch: positions of a
    # left-padded row (TL offsets them by the padding), padded keys, or which predictions the
    # loss counts.
    m = random_gpt(positional=positional).eval()
    ht = to_hooked_transformer(m)
    t = tokens()
    mask = torch.ones_like(t)
    if side == "left":
        mask[1, :5], mask[2, :2] = 0, 0
    else:
        mask[1, -5:], mask[2, -2:] = 0, 0
    real = mask.bool()
    ours = m(t, attention_mask=mask)
    theirs = ht(t, attention_mask=mask, padding_side=side)
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(t, "loss", attention_mask=mask),
                               ht(t, "loss", attention_mask=mask, padding_side=side),
                               atol=1e-5, rtol=1e-5)
