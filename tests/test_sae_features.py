"""Feature analysis against brute force: streamed top activations and densities equal one
sort over every activation, logit effects equal the matmuls written out, decoder neighbours
equal a full cosine ranking; and the feature dashboard draws what it is given."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from superpose import gpt, plot, sae
from superpose.plot.attention import visible_token
from superpose.sae.features import PAD

TEXT = ("def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n    y: int = 0\n"
        "for i in range(10):\n    print(i * i)\n")
D, CTX = 16, 20
RESID, MLP, Z = "blocks.0.hook_resid_post", "blocks.1.mlp.hook_post", "blocks.1.attn.hook_z"


@pytest.fixture(scope="module")
def tok() -> gpt.CharTokenizer:
    return gpt.CharTokenizer.fit(TEXT)


@pytest.fixture(scope="module")
def model(tok) -> gpt.GPT:
    return gpt.GPT(gpt.GPTConfig(d_vocab=tok.vocab_size, n_layers=2, d_model=D, n_heads=2,
                                 n_ctx=CTX, init_std=0.3, seed=1), device="cpu").eval()


@pytest.fixture(scope="module")
def tokens(tok) -> torch.Tensor:
    ids = tok.encode(TEXT)
    return ids[: 5 * 18].view(5, 18)


def relu_sae(d_in: int, d_sae: int = 24, seed: int = 0) -> sae.SAE:
    """A ReLU SAE with random weights and biases (many continuous, distinct activations)."""
    s = sae.create(sae.SAEConfig(d_in=d_in, d_sae=d_sae, architecture="relu", seed=seed),
                   device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        s.W_enc.copy_(torch.randn(d_in, d_sae, generator=g))
        s.b_enc.copy_(torch.randn(d_sae, generator=g))
        s.W_dec.copy_(torch.randn(d_sae, d_in, generator=g))
    return s.eval()


def brute_force(model, s, hook, tokens):
    """Every latent activation [batch, pos, d_sae] in one go."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook])
        x = cache[hook]
        return s.encode(x.reshape(*x.shape[:2], -1))


def test_top_activations_equal_one_stable_sort(model, tokens):
    s = relu_sae(D)
    latents, k, (left, right) = [0, 3, 5, 17], 6, (3, 2)
    st = sae.latent_stats(model, s, RESID, tokens, latents, k=k, context=(left, right),
                          batch_size=2)                              # streamed over 3 batches
    acts = brute_force(model, s, RESID, tokens)
    B, P = tokens.shape
    for i in latents:
        flat = acts[..., i].flatten()
        vals, order = flat.sort(descending=True, stable=True)
        keep = vals[:k] > 0
        vals, order = vals[:k][keep], order[:k][keep]
        t = st.top[i]
        assert len(t) == len(vals) > 0
        torch.testing.assert_close(t.values, vals)
        assert t.seq.tolist() == (order // P).tolist()
        assert t.pos.tolist() == (order % P).tolist()
        for n, (b, p) in enumerate(zip(t.seq.tolist(), t.pos.tolist())):
            for c, q in enumerate(range(p - left, p + right + 1)):
                inside = 0 <= q < P
                assert t.tokens[n, c] == (tokens[b, q] if inside else PAD)
                assert t.acts[n, c] == pytest.approx(float(acts[b, q, i]) if inside else 0.0,
                                                     abs=1e-5)
        assert t.acts[:, left].tolist() == pytest.approx(t.values.tolist(), abs=1e-6)
        # every positive activation is kept for the histogram
        assert sorted(st.values[i].tolist()) == pytest.approx(sorted(flat[flat > 0].tolist()),
                                                              abs=1e-5)
    torch.testing.assert_close(st.density, (acts > 0).float().mean(dim=(0, 1)))
    assert st.n_tokens == tokens.numel()
    again = sae.top_activations(model, s, RESID, tokens, 3, k=k, context=(left, right),
                                batch_size=5)                        # one batch: same answer
    torch.testing.assert_close(again[3].values, st.top[3].values)
    assert again[3].pos.tolist() == st.top[3].pos.tolist()


def test_contexts_render_with_the_tokenizer(model, tokens, tok):
    s = relu_sae(D)
    top = sae.top_activations(model, s, RESID, tokens, [2], k=4, context=4)[2]
    for (before, token, after), b, p in zip(top.strings(tok), top.seq.tolist(),
                                            top.pos.tolist()):
        row = tok.decode(tokens[b])
        assert token == row[p]
        assert before == row[max(0, p - 4):p] and after == row[p + 1:p + 5]


def test_topk_sae_and_a_scale(model, tokens):
    """`scale` feeds the SAE x * scale, as when it was trained on normalised activations."""
    s = sae.create(sae.SAEConfig(d_in=D, d_sae=32, architecture="topk", k=4), device="cpu")
    st = sae.latent_stats(model, s, RESID, tokens, [1, 2], scale=2.5, batch_size=3)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[RESID])
        acts = s.encode(cache[RESID] * 2.5)
    torch.testing.assert_close(st.density, (acts > 0).float().mean(dim=(0, 1)))
    assert st.density.sum() == pytest.approx(4.0, abs=1e-4)          # k per token


def test_activation_histogram():
    h = sae.activation_histogram(torch.tensor([0.0, 0.0, 1.0, 2.0, 4.0, -1.0]), bins=4)
    assert h.n_active == 3 and h.n_total == 6 and h.density == pytest.approx(0.5)
    assert h.counts.tolist() == [0, 1, 1, 1] and h.edges.tolist() == [0, 1, 2, 3, 4]
    h = sae.activation_histogram(torch.tensor([1.0, 2.0]), n_total=100)
    assert h.density == pytest.approx(0.02)
    with pytest.raises(ValueError, match="n_total"):
        sae.activation_histogram(torch.tensor([1.0, 2.0]), n_total=1)


def _centred_ln(model, d):
    return (d - d.mean()) * model.ln_final.w.detach()


def test_logit_effect_is_the_matmul(model):
    s = relu_sae(D, seed=2)
    i = 7
    W_U = model.W_U.detach()
    d = s.W_dec[i].detach()
    le = sae.logit_effect(s, model, i, RESID, k=5)
    torch.testing.assert_close(le.values, _centred_ln(model, d) @ W_U)
    assert le.top_ids.tolist() == le.values.argsort(descending=True)[:5].tolist()
    assert le.bottom_ids.tolist() == le.values.argsort()[:5].tolist()
    assert (le.top_values[:-1] >= le.top_values[1:]).all()
    raw = sae.logit_effect(s, model, i, RESID, ln=False)
    torch.testing.assert_close(raw.values, d @ W_U)
    half = sae.logit_effect(s, model, i, RESID, ln=False, scale=2.0)
    torch.testing.assert_close(half.values, d @ W_U / 2)
    # MLP neurons: through that layer's W_out first.
    m = relu_sae(4 * D, seed=3)
    le = sae.logit_effect(m, model, 4, MLP)
    W_out = model.blocks[1].mlp.W_out.detach()
    torch.testing.assert_close(le.values, _centred_ln(model, m.W_dec[4].detach() @ W_out) @ W_U)
    # hook_z: [head, d_head] through W_O
    z = relu_sae(D, seed=4)
    W_O = model.blocks[1].attn.W_O.detach()
    via_o = torch.einsum("hk,hkm->m", z.W_dec[0].detach().view(2, D // 2), W_O)
    torch.testing.assert_close(sae.logit_effect(z, model, 0, Z).values,
                               _centred_ln(model, via_o) @ W_U)


def test_logit_effect_at_ln_final_hook_normalized_is_exact(model, tokens):
    """ln_final.hook_normalized is TL's (before ln_final's w, b): adding a direction there moves
    the logits by exactly (d * w) @ W_U, which is what logit_effect reports."""
    s = relu_sae(D, seed=6)
    d = s.W_dec[3].detach()
    w = model.ln_final.w
    saved = w.detach().clone()
    try:
        with torch.no_grad(), torch.random.fork_rng():
            torch.nn.init.normal_(w, 1.0, 0.5)           # a non-trivial gain
            le = sae.logit_effect(s, model, 3, "ln_final.hook_normalized")
            clean = model(tokens)
            nudged = model.run_with_hooks(tokens, fwd_hooks=[(
                "ln_final.hook_normalized", lambda x, hook: x + d)])
    finally:
        with torch.no_grad():
            w.copy_(saved)
    torch.testing.assert_close((nudged - clean)[0, 0], le.values, atol=1e-4, rtol=1e-4)


def test_decoder_neighbours(model):
    s = relu_sae(D, d_sae=40, seed=5)
    nb = sae.decoder_neighbours(s, 11, k=4)
    U = s.W_dec.detach() / s.W_dec.detach().norm(dim=-1, keepdim=True)
    cos = U @ U[11]
    cos[11] = -2
    assert nb.indices.tolist() == cos.argsort(descending=True)[:4].tolist()
    torch.testing.assert_close(nb.cosines, cos[nb.indices])
    assert 11 not in nb.indices.tolist()


def test_bad_input(model, tokens, user_errors):
    s = relu_sae(D)
    with pytest.raises(ValueError, match=r"latents must be integers in \[0, d_sae=24\)"):
        sae.top_activations(model, s, RESID, tokens, [24])
    with pytest.raises(ValueError, match="without repeats"):
        sae.top_activations(model, s, RESID, tokens, [1, 1])
    with pytest.raises(ValueError, match="context must be"):
        sae.top_activations(model, s, RESID, tokens, 1, context=(1, 2, 3))
    with pytest.raises(ValueError, match="close matches"):
        sae.top_activations(model, s, "blocks.0.hook_resid_psot", tokens, 1)
    with pytest.raises(ValueError, match="d_in is 16"):
        sae.top_activations(model, s, MLP, tokens, 1)
    with pytest.raises(ValueError, match="no direct linear path"):
        sae.logit_effect(s, model, 1, "blocks.0.attn.hook_pattern")
    with pytest.raises(ValueError, match="trained on another hook"):
        sae.logit_effect(s, model, 1, MLP)
    with pytest.raises(ValueError, match="pass hook_name"):
        sae.logit_effect(s, model, 1)


def test_feature_view_and_loss_bars(model, tokens, tok, tmp_path):
    s = relu_sae(D)
    st = sae.latent_stats(model, s, RESID, tokens, [0, 3], k=5, context=(6, 2))
    le = sae.logit_effect(s, model, 3, RESID, k=4)
    fig = plot.feature_view(st, 3, tokenizer=tok, logits=le, n_contexts=5, label="test")
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    texts = [t.get_text() for t in fig.axes[0].texts]
    bold = "".join(t.get_text() for t in fig.axes[0].texts if t.get_fontweight() == "bold")
    strings = st.top[3].strings(tok)
    assert len(strings) == 5          # the activating tokens are the bold characters
    assert bold == "".join(t for _, t, _ in strings).replace(" ", "␣").replace("\n", "↵")
    assert f"{float(st.top[3].values[0]):.2f}" in texts
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert len(labels) == 8                                         # 4 promoted, 4 suppressed
    assert labels[0] == f"'{visible_token(le.top_tokens(tok)[0])}'"
    assert labels[-1] == f"'{visible_token(le.bottom_tokens(tok)[0])}'"
    fig.savefig(tmp_path / "view.png")
    assert len(plot.feature_view(st, 0, tokenizer=tok).axes) == 3      # no logit panel
    with pytest.raises(ValueError, match=r"latent 5 is not in these stats"):
        plot.feature_view(st, 5, tokenizer=tok)
    r = sae.spliced_losses(model, s, RESID, tokens)
    fig = plot.loss_recovered_bars({"resid": r, "as dict": r.as_dict()})
    assert len(fig.axes) == 2
    heights = [p.get_height() for p in fig.axes[1].patches]
    assert heights[:2] == pytest.approx([r.loss_recovered] * 2)
    with pytest.raises(ValueError, match="SplicedLosses"):
        plot.loss_recovered_bars({"x": 1.0})
