"""Attention-head scores (superpose.gpt.heads) on our GPT and on TransformerLens's own models."""

import pytest
import torch

from superpose import gpt, toy
from superpose.gpt import GPTConfig


def tiny(n_layers: int = 2, n_heads: int = 3, n_ctx: int = 16) -> gpt.GPT:
    torch.manual_seed(0)
    return gpt.GPT(GPTConfig(d_vocab=11, d_model=12, n_heads=n_heads, n_layers=n_layers,
                             n_ctx=n_ctx), device="cpu")


def manual_patterns(model, tokens):
    _, cache = model.run_with_cache(tokens)
    return torch.stack([cache[f"blocks.{i}.attn.hook_pattern"]
                        for i in range(model.cfg.n_layers)])


def test_perfect_patterns_score_one():
    L, n = 5, 11                                          # BOS + 2 * 5
    induction = torch.zeros(1, 1, 1, n, n)
    for t in range(n):
        induction[..., t, t - L + 1 if t >= L + 1 else 0] = 1.0
    assert gpt.induction_scores_from(induction, L, L + 1).item() == pytest.approx(1.0)
    assert gpt.prev_token_scores_from(induction).item() < 0.2
    prev = torch.zeros(2, 3, 4, n, n)
    prev[..., 0, 0] = 1.0
    for t in range(1, n):
        prev[..., t, t - 1] = 1.0
    torch.testing.assert_close(gpt.prev_token_scores_from(prev), torch.ones(2, 4))


def test_scores_equal_the_cached_patterns():
    model = tiny()
    tokens = torch.randint(0, 11, (4, 16), generator=torch.Generator().manual_seed(1))
    pat = manual_patterns(model, tokens)
    torch.testing.assert_close(gpt.attention_patterns(model, tokens), pat)
    q = torch.arange(1, 16)
    prev = gpt.prev_token_scores(model, tokens)
    assert prev.shape == (2, 3)
    torch.testing.assert_close(prev, pat[..., q, q - 1].mean(dim=(1, 3)))
    rep = gpt.repeated_tokens(8, 7, 11, generator=3, bos=0, device="cpu")
    q = torch.arange(8, 15)
    expect = manual_patterns(model, rep)[..., q, q - 6].mean(dim=(1, 3))
    got = gpt.induction_scores(model, seq_len=7, d_vocab=11, batch_size=8, seed=3, bos=0)
    torch.testing.assert_close(got, expect)


def test_a_head_forced_to_the_previous_token_scores_one():
    """A hook that rewrites layer 0's pattern into 'attend to t - 1' is what the scores see."""
    model = tiny()

    def previous(pattern, hook):
        n = pattern.shape[-1]
        p = torch.zeros_like(pattern)
        p[..., 0, 0] = 1.0
        p[..., torch.arange(1, n), torch.arange(n - 1)] = 1.0
        return p

    model.add_hook("blocks.0.attn.hook_pattern", previous)
    try:
        tokens = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(2))
        prev = gpt.prev_token_scores(model, tokens)
    finally:
        model.reset_hooks()
    torch.testing.assert_close(prev[0], torch.ones(3))
    assert (prev[1] < 0.9).all()


def test_bad_input(user_errors):
    model = tiny()
    tokens = torch.randint(0, 11, (2, 8))
    with pytest.raises(ValueError, match="no attention-pattern hook points"):
        gpt.prev_token_scores(toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2)), tokens)
    with pytest.raises(TypeError, match="TransformerLens-hooked model"):
        gpt.prev_token_scores(torch.nn.Linear(2, 2), tokens)
    with pytest.raises(TypeError, match="integer tensor"):
        gpt.prev_token_scores(model, tokens.float())
    with pytest.raises(ValueError, match="pos >= 2"):
        gpt.prev_token_scores(model, tokens[:, :1])
    with pytest.raises(ValueError, match="exceeds the model's context n_ctx=16; use seq_len <= 7"):
        gpt.induction_scores(model, seq_len=8, d_vocab=11, bos=0)
    with pytest.raises(ValueError, match="copy_start must be in"):
        gpt.induction_scores_from(torch.zeros(1, 1, 1, 6, 6), 3, 6)


def test_transformer_bridge_boot_native():
    """The same scores on TransformerLens 4's own model, built offline."""
    bridge_mod = pytest.importorskip("transformer_lens.model_bridge")
    from transformer_lens.config import TransformerBridgeConfig

    cfg = TransformerBridgeConfig(n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4,
                                  d_vocab=20, act_fn="relu", seed=0)
    model = bridge_mod.TransformerBridge.boot_native(cfg, device="cpu")
    tokens = torch.randint(0, 20, (3, 12), generator=torch.Generator().manual_seed(0))
    pat = gpt.attention_patterns(model, tokens)
    assert pat.shape == (2, 3, 4, 12, 12)
    torch.testing.assert_close(pat.sum(-1), torch.ones(2, 3, 4, 12))
    prev = gpt.prev_token_scores(model, tokens)
    q = torch.arange(1, 12)
    torch.testing.assert_close(prev, pat[..., q, q - 1].mean(dim=(1, 3)))
    ind = gpt.induction_scores(model, seq_len=6, d_vocab=20, batch_size=4)
    assert ind.shape == (2, 4) and ((ind >= 0) & (ind <= 1)).all()
