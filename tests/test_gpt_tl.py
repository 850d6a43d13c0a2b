"""TransformerLens's surface on our GPT, on whichever TransformerLens is installed (`make test`
runs this file on 4.x and again on 3.9 in the interop tier). Numbers are checked against the
model's own weights here; tests/interop/ checks them against a real HookedTransformer."""

from __future__ import annotations

import pytest
import torch
import transformer_lens
from tl_support import perturb
from transformer_lens import SVDInterpreter
from transformer_lens import patching as tl_patching

from superpose import hooks
from superpose.gpt import GPT, CharTokenizer, GPTConfig, to_hooked_transformer

V = 19
try:                                     # 4.x raises ImportError on the attribute itself
    HAS_HOOKED_TRANSFORMER = transformer_lens.HookedTransformer is not None
except ImportError:
    HAS_HOOKED_TRANSFORMER = False


def make(**kw) -> GPT:
    cfg = GPTConfig(**{"d_vocab": V, "n_layers": 2, "d_model": 16, "n_heads": 4, "n_ctx": 12,
                       "init_std": 0.3, **kw})
    return perturb(GPT(cfg, device="cpu").eval(), seed=1)


def toks(batch: int = 2, pos: int = 12) -> torch.Tensor:
    return torch.randint(0, V, (batch, pos), generator=torch.Generator().manual_seed(0))


def test_hook_normalized_is_tl_meaning_before_the_learned_weight_and_bias():
    # catches: LayerNorm hooks with another meaning than TL's (hook_scale the variance, or eps
    # outside the sqrt; hook_normalized taken after w and b), a hooked LayerNorm path that differs
    # from F.layer_norm, or unembed.hook_in / hook_out not seeing ln_final's output and the logits.
    m = make()
    t = toks()
    _, c = m.run_with_cache(t)
    for name, ln, inp in [("blocks.0.ln1", m.blocks[0].ln1, c["blocks.0.hook_resid_pre"]),
                          ("blocks.1.ln2", m.blocks[1].ln2, c["blocks.1.hook_resid_mid"]),
                          ("ln_final", m.ln_final, c["blocks.1.hook_resid_post"])]:
        centred = inp - inp.mean(-1, keepdim=True)
        scale = (centred.pow(2).mean(-1, keepdim=True) + m.cfg.ln_eps).sqrt()
        torch.testing.assert_close(c[f"{name}.hook_scale"], scale)
        torch.testing.assert_close(c[f"{name}.hook_normalized"], centred / scale)
        out = torch.nn.functional.layer_norm(inp, (16,), ln.w, ln.b, m.cfg.ln_eps)
        torch.testing.assert_close(c[f"{name}.hook_normalized"] * ln.w + ln.b, out,
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c["unembed.hook_in"], c["ln_final.hook_normalized"]
                               * m.ln_final.w + m.ln_final.b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c["unembed.hook_out"], m(t), atol=1e-5, rtol=1e-5)


def test_a_hook_on_hook_normalized_edits_what_the_next_layer_reads():
    # catches: a LayerNorm that ignores the value a hook on hook_normalized returns (the
    # F.layer_norm fast path kept while hooked) or applies w and b before the hook (zeroing it would
    # then give logits b_U instead of ln_final.b @ W_U + b_U).
    m = make()
    t = toks()

    def zero(x, hook):
        return torch.zeros_like(x)

    out = m.run_with_hooks(t, fwd_hooks=[("ln_final.hook_normalized", zero)])
    # Normalised input 0 leaves ln_final's bias only: every position gets the same logits.
    want = (m.ln_final.b @ m.W_U + m.b_U).expand_as(out)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_switched_hooks_fire_only_when_switched_on_and_keep_the_function():
    # catches: a hook on a switched-off point (hook_result, hook_q_input) that silently never fires
    # instead of raising HookSwitchError naming the switch; switches that change the logits, or give
    # hook_result / split inputs / hook_mlp_in other than per-head outputs summing to attn_out - b_O
    # and copies of resid_pre / resid_mid; switches written to a shared GPTConfig, leaking into
    # another model; set_use_hook_mlp_in accepted on an attention-only model.
    m = make()
    t = toks()
    base = m(t)
    with pytest.raises(ValueError, match=r"set_use_attn_result\(True\)"):
        m.run_with_hooks(t, fwd_hooks=[("blocks.0.attn.hook_result", lambda x, hook: x)])
    with pytest.raises(ValueError, match=r"set_use_split_qkv_input\(True\)"):
        m.add_hook("blocks.1.hook_q_input", lambda x, hook: x)
    m.set_use_attn_result(True)
    m.set_use_split_qkv_input(True)
    m.set_use_hook_mlp_in(True)
    logits, c = m.run_with_cache(t)
    torch.testing.assert_close(logits, base, atol=1e-5, rtol=1e-5)
    result = c["blocks.1.attn.hook_result"]
    assert result.shape == (2, 12, 4, 16)
    torch.testing.assert_close(result.sum(-2) + m.blocks[1].attn.b_O,
                               c["blocks.1.hook_attn_out"], atol=1e-5, rtol=1e-5)
    for name in ("hook_q_input", "hook_k_input", "hook_v_input"):
        torch.testing.assert_close(c[f"blocks.0.{name}"], c["blocks.0.hook_resid_pre"][:, :, None]
                                   .expand(-1, -1, 4, -1))
    torch.testing.assert_close(c["blocks.0.hook_mlp_in"], c["blocks.0.hook_resid_mid"])
    # The switches are the model's own: another model from the same config is unaffected.
    other = GPT(m.cfg, device="cpu")
    assert not other.cfg.use_attn_result and m.cfg.use_attn_result
    with pytest.raises(ValueError, match="attention-only"):
        make(attn_only=True).set_use_hook_mlp_in(True)


def test_attn_in_hook_edits_one_head():
    # catches: use_attn_in that does not give each head its own copy of the input (an edit to head
    # 1's hook_attn_in would change the other heads' z, or be ignored), or hook_attn_in with another
    # shape than [batch pos head d_model].
    m = make()
    m.set_use_attn_in(True)
    t = toks()
    _, c = m.run_with_cache(t)
    assert c["blocks.0.hook_attn_in"].shape == (2, 12, 4, 16)

    def zero_head(x, hook):
        x[:, :, 1] = 0
        return x

    with m.hooks(fwd_hooks=[("blocks.0.hook_attn_in", zero_head)]):
        _, c2 = m.run_with_cache(t)
    z0, z1 = c["blocks.0.attn.hook_z"], c2["blocks.0.attn.hook_z"]
    assert (z0[:, :, 1] - z1[:, :, 1]).abs().max() > 1e-4          # head 1 changed
    torch.testing.assert_close(z0[:, :, [0, 2, 3]], z1[:, :, [0, 2, 3]])  # the others did not


def test_forward_keywords():
    # catches: GPT.forward mishandling TL's keywords: a loss unlike m.loss, loss_per_token not
    # [batch pos-1] or not averaging to the loss, 'both' not (logits, loss), return_type=None
    # returning logits, stop_at_layer / start_at_layer not splitting at blocks.1.hook_resid_pre; or
    # an unknown return_type or keyword, past_kv_cache, a misshapen attention_mask, or token ids
    # passed as the residual stream with start_at_layer silently accepted instead of raising.
    m = make()
    t = toks()
    logits = m(t)
    loss = m(t, return_type="loss")
    torch.testing.assert_close(loss, m.loss(t))
    per_token = m(t, return_type="loss", loss_per_token=True)
    assert per_token.shape == (2, 11)
    torch.testing.assert_close(per_token.mean(), loss, atol=1e-5, rtol=1e-5)
    both = m(t, return_type="both")
    torch.testing.assert_close(both[0], logits)
    torch.testing.assert_close(both[1], loss)
    assert m(t, return_type=None) is None
    _, c = m.run_with_cache(t)
    torch.testing.assert_close(m(t, stop_at_layer=1), c["blocks.1.hook_resid_pre"],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(c["blocks.1.hook_resid_pre"], start_at_layer=1), logits,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="return_type must be one of"):
        m(t, return_type="logprobs")
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        m(t, bogus=None)
    with pytest.raises(ValueError, match="past_kv_cache is not supported"):
        m(t, past_kv_cache=object())
    ones = torch.ones_like(t)                  # a mask of real tokens changes nothing
    torch.testing.assert_close(m(t, attention_mask=ones), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(t, "loss", attention_mask=ones), loss, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attention_mask must have the tokens' shape"):
        m(t, attention_mask=ones[:, :-1])
    with pytest.raises(ValueError, match=r"residual stream \[batch, pos, d_model=16\]"):
        m(t, start_at_layer=1)


def test_text_in_and_out_with_a_tokenizer():
    # catches: to_tokens / to_string / to_str_tokens / to_single_token not round-tripping through
    # the tokenizer, forward on a string not tokenising as to_tokens does,
    # tokens_to_residual_directions of a string not W_U's column, or a multi-character
    # to_single_token, prepend_bos without a BOS, or text without a tokenizer accepted silently.
    tok = CharTokenizer.fit("abcdefghij klmnopq")
    m = GPT(GPTConfig(d_vocab=tok.vocab_size, n_layers=1, d_model=16, n_heads=2, n_ctx=16),
            device="cpu", tokenizer=tok)
    ids = m.to_tokens("bad cab")
    assert ids.shape == (1, 7)
    assert m.to_string(ids[0]) == "bad cab"
    assert m.to_str_tokens(ids) == list("bad cab")
    assert m.to_single_token("c") == int(tok.encode("c")[0])
    torch.testing.assert_close(m("bad cab"), m(ids))
    torch.testing.assert_close(m.tokens_to_residual_directions("c"),
                               m.W_U[:, m.to_single_token("c")])
    with pytest.raises(ValueError, match="not one"):
        m.to_single_token("ab")
    with pytest.raises(ValueError, match="no BOS"):
        m.to_tokens("ab", prepend_bos=True)
    with pytest.raises(ValueError, match="no tokenizer"):
        make().to_tokens("ab")


def test_toolbox_numbers_from_the_weights():
    """TL's ActivationCache tools on our GPT, each checked against a computation by hand."""
    # catches: caches TL's ActivationCache tools read (hook_resid_*, ln_final.hook_scale, hook_z,
    # attn_out) with wrong values, or W_O / b_O / W_U in the wrong layout, so accumulated_resid,
    # decompose_resid (not summing to resid_post), stack_head_results (not summing to attn_out -
    # b_O), logit_attrs or get_full_resid_decomposition give other numbers or labels; or
    # accumulated_bias summing other biases.
    m = make()
    t = toks()
    _, c = m.run_with_cache(t)
    # accumulated_resid: the streams entering each block and the final one.
    acc, labels = c.accumulated_resid(return_labels=True)
    assert labels == ["0_pre", "1_pre", "final_post"]
    torch.testing.assert_close(acc[-1], c["blocks.1.hook_resid_post"])
    # decompose_resid sums to the final stream; with apply_ln it is scaled by ln_final's scale.
    parts = c.decompose_resid()
    torch.testing.assert_close(parts.sum(0), c["blocks.1.hook_resid_post"], atol=1e-5, rtol=1e-5)
    scaled = c.decompose_resid(apply_ln=True)
    centred = parts - parts.mean(-1, keepdim=True)
    torch.testing.assert_close(scaled, centred / c["ln_final.hook_scale"], atol=1e-5, rtol=1e-5)
    # stack_head_results: per-head outputs (from hook_z and W_O) plus biases give attn_out.
    heads = c.stack_head_results(layer=2)
    assert heads.shape == (8, 2, 12, 16)
    torch.testing.assert_close(heads[4:].sum(0) + m.blocks[1].attn.b_O,
                               c["blocks.1.hook_attn_out"], atol=1e-5, rtol=1e-5)
    # logit_attrs of the unembedding directions.
    directions = m.tokens_to_residual_directions(t)
    assert directions.shape == (2, 12, 16)
    attrs = c.logit_attrs(parts, tokens=t)
    want = (centred / c["ln_final.hook_scale"] * directions).sum(-1)
    torch.testing.assert_close(attrs, want, atol=1e-5, rtol=1e-5)
    # get_full_resid_decomposition: heads, neurons, embeddings and biases.
    full, labels = c.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    assert len(labels) == full.shape[0] == 2 * 4 + 2 + 2 + 1
    torch.testing.assert_close(full.sum(0), c["blocks.1.hook_resid_post"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(m.accumulated_bias(2), sum(
        b.attn.b_O + b.mlp.b_out for b in m.blocks))


def test_patching_svd_and_circuits_run_on_our_gpt():
    # catches: a GPT that breaks TL's patching or SVDInterpreter: a hook that ignores the patched
    # value of resid_pre at position 5, hook_z with another shape than the per-head patcher expects,
    # OV not W_V @ W_O per head, QK / OV not [layer head d_model d_model], SVDInterpreter's output
    # not in TL's [d_vocab ... num_vectors] layout, or tl_parameters returning copies instead of
    # views of W_QKV.
    m = make()
    t = toks()
    corrupted = t.clone()
    corrupted[:, 5] = (t[:, 5] + 1) % V
    _, c = m.run_with_cache(t)

    def metric(logits):
        return logits[:, -1, 0].mean()

    p = tl_patching.get_act_patch_resid_pre(m, corrupted, c, metric)
    assert p.shape == (2, 12)
    torch.testing.assert_close(p[0, 5], metric(m(t)), atol=1e-5, rtol=1e-5)
    heads = tl_patching.get_act_patch_attn_head_out_all_pos(m, corrupted, c, metric)
    assert heads.shape == (2, 4)
    ov = SVDInterpreter(m).get_singular_vectors("OV", layer_index=0, head_index=2,
                                                 num_vectors=3)
    assert ov.shape[0] == V and ov.shape[-1] == 3       # TL's layout, as on HookedTransformer
    ab = m.blocks[0].attn.OV.AB[2]
    torch.testing.assert_close(ab, m.blocks[0].attn.W_V[2] @ m.blocks[0].attn.W_O[2])
    assert m.QK.shape == (2, 4, 16, 16) and m.OV.shape == (2, 4, 16, 16)
    params = m.tl_parameters()
    assert params["blocks.1.attn.W_Q"].data_ptr() == m.blocks[1].attn.W_QKV.data_ptr()


def test_to_hooked_transformer_on_this_transformer_lens():
    # catches: on TL 3.x a to_hooked_transformer whose HookedTransformer computes other logits; on
    # 4.x one that fails with an AttributeError (or anything but an ImportError saying TL has no
    # HookedTransformer).
    m = make()
    if HAS_HOOKED_TRANSFORMER:      # 3.x: a real conversion (more in tests/interop)
        ht = to_hooked_transformer(m)
        torch.testing.assert_close(ht(toks()), m(toks()), atol=1e-5, rtol=1e-5)
    else:                           # 4.x removed the class: a clear error, not an AttributeError
        with pytest.raises(ImportError, match="has no HookedTransformer"):
            to_hooked_transformer(m)


def test_is_hooked_sees_every_direction():
    # catches: is_hooked / any_hooked missing a kind of hook (backward, forward-pre, a process-wide
    # module hook), reset_hooks leaving a hook attached, or hooks.suspended not detaching every hook
    # and putting them back; each lets a fast path skip a hook that is listening.
    m = make()
    hp = m.blocks[0].attn.hook_pattern
    assert not hooks.is_hooked(hp) and not hooks.any_hooked(m)
    for direction in ("fwd", "bwd"):
        m.add_hook("blocks.0.attn.hook_pattern", lambda x, hook: None, dir=direction)
        assert hooks.is_hooked(hp) and hooks.any_hooked(m)
        m.reset_hooks()
        assert not hooks.is_hooked(hp)
    handle = hp.register_forward_pre_hook(lambda mod, args: None)
    assert hooks.is_hooked(hp)
    with hooks.suspended(m):
        assert not hooks.is_hooked(hp)
    assert hooks.is_hooked(hp)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert hooks.is_hooked(hp)
    finally:
        handle.remove()


def test_a_backward_hook_on_the_pattern_fires_and_sees_the_gradient():
    """The fused attention path has no pattern tensor: a backward hook must switch it off."""
    # catches: the fused SDPA attention path taken when hook_pattern has only a backward hook (no
    # pattern tensor, so the hook never fires), or a pattern gradient of the wrong shape or all
    # zero.
    m = make()
    t = toks()
    seen = {}

    def grab(grad, hook):
        seen["g"] = grad.detach().clone()

    m.add_hook("blocks.1.attn.hook_pattern", grab, dir="bwd")
    m(t).sum().backward()
    m.reset_hooks()
    assert seen["g"].shape == (2, 4, 12, 12)
    assert seen["g"].abs().sum() > 0
