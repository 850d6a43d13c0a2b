"""Splicing SAEs into models: the loss numbers against hand-built SAEs whose answer is known
(identity -> nothing lost, zero -> zero ablation, constant mean -> mean ablation), KL and the
clean loss against direct computations, the error term, input scales, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from superpose import gpt, sae

V, D, CTX = 23, 16, 12
RESID, MLP, Z = "blocks.0.hook_resid_post", "blocks.1.mlp.hook_post", "blocks.0.attn.hook_z"


@pytest.fixture(scope="module")
def model() -> gpt.GPT:
    # A large init makes every activation matter, so ablations clearly change the loss.
    return gpt.GPT(gpt.GPTConfig(d_vocab=V, n_layers=2, d_model=D, n_heads=2, n_ctx=CTX,
                                 init_std=0.4, seed=3), device="cpu").eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, V, (7, 10), generator=torch.Generator().manual_seed(0))


def identity_sae(d: int) -> sae.SAE:
    """ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x exactly."""
    s = sae.create(sae.SAEConfig(d_in=d, d_sae=2 * d, architecture="relu"), device="cpu")
    eye = torch.eye(d)
    with torch.no_grad():
        s.W_enc.copy_(torch.cat([eye, -eye], 1))
        s.W_dec.copy_(torch.cat([eye, -eye], 0))
        s.b_enc.zero_()
        s.b_dec.zero_()
    return s


def constant_sae(d: int, value: torch.Tensor) -> sae.SAE:
    """Outputs `value` whatever the input (no latent ever fires)."""
    s = sae.create(sae.SAEConfig(d_in=d, d_sae=4, architecture="relu",
                                 apply_b_dec_to_input=False), device="cpu")
    with torch.no_grad():
        s.W_enc.zero_()
        s.b_enc.fill_(-1.0)
        s.W_dec.zero_()
        s.b_dec.copy_(value)
    return s


def topk_sae(d: int, seed: int = 0) -> sae.SAE:
    s = sae.create(sae.SAEConfig(d_in=d, d_sae=4 * d, architecture="topk", k=3, seed=seed),
                   device="cpu")
    with torch.no_grad():
        s.W_dec.mul_(10)             # decoder_init_norm 0.1 -> a reconstruction of real size
        s.b_dec.normal_(generator=torch.Generator().manual_seed(seed))
    return s


@pytest.mark.parametrize("hook,d", [(RESID, D), (MLP, 4 * D), (Z, D)])
def test_identity_sae_recovers_everything(model, tokens, hook, d):
    r = sae.spliced_losses(model, identity_sae(d), hook, tokens, batch_size=3)
    assert r.spliced_loss == pytest.approx(r.clean_loss, abs=1e-6)
    assert r.loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert r.loss_recovered_mean == pytest.approx(1.0, abs=1e-4)
    assert 0 <= r.kl_div < 1e-6
    assert r.n_tokens == 70 and r.n_predictions == 63
    # Ablating changes this (random) model's loss a lot, so the fractions are not 0/0.
    assert abs(r.zero_ablation_loss - r.clean_loss) > 0.05
    assert abs(r.mean_ablation_loss - r.clean_loss) > 0.01


def test_clean_loss_is_the_models_own_loss(model, tokens):
    r = sae.spliced_losses(model, identity_sae(D), RESID, tokens, batch_size=4)
    with torch.no_grad():
        assert r.clean_loss == pytest.approx(float(model.loss(tokens)), abs=1e-5)


def test_zero_and_mean_saes_give_the_ablations(model, tokens):
    zero = sae.spliced_losses(model, constant_sae(D, torch.zeros(D)), RESID, tokens)
    assert zero.spliced_loss == pytest.approx(zero.zero_ablation_loss, abs=1e-6)
    assert zero.loss_recovered == pytest.approx(0.0, abs=1e-5)
    # The mean activation over every position, computed here independently.
    _, cache = model.run_with_cache(tokens, names_filter=[RESID])
    mean = cache[RESID].reshape(-1, D).double().mean(0).float()
    mean_r = sae.spliced_losses(model, constant_sae(D, mean), RESID, tokens, batch_size=2)
    assert mean_r.spliced_loss == pytest.approx(mean_r.mean_ablation_loss, abs=1e-5)
    assert mean_r.loss_recovered_mean == pytest.approx(0.0, abs=1e-4)
    assert zero.kl_div > 0.01


def test_spliced_loss_and_kl_match_a_direct_computation(model, tokens):
    s = topk_sae(D).eval()

    def replace(act, hook):
        return s(act)
    with torch.no_grad():
        clean = model(tokens)
        spl = model.run_with_hooks(tokens, fwd_hooks=[(RESID, replace)])
    ce = F.cross_entropy(spl[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    kl = F.kl_div(spl.log_softmax(-1), clean.log_softmax(-1), log_target=True,
                  reduction="none").sum(-1).mean()
    r = sae.spliced_losses(model, s, RESID, tokens, batch_size=5)
    assert r.spliced_loss == pytest.approx(float(ce), rel=1e-5)
    assert r.kl_div == pytest.approx(float(kl), rel=1e-4)
    assert r.kl_div > 0
    assert r.loss_recovered == pytest.approx(
        (r.zero_ablation_loss - r.spliced_loss) / (r.zero_ablation_loss - r.clean_loss))
    assert r.as_dict()["loss_delta"] == pytest.approx(r.spliced_loss - r.clean_loss)
    assert not s.training and not model.training


def test_error_term_leaves_the_model_unchanged_but_latents_act(model, tokens):
    s = topk_sae(D).eval()
    r = sae.spliced_losses(model, s, RESID, tokens, error_term=True)
    assert r.spliced_loss == pytest.approx(r.clean_loss, abs=1e-5)
    assert r.loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert r.kl_div < 1e-6 and r.error_term
    # Ablating latent j through the SAE's hook = subtracting its decoder contribution.
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[RESID])
        x = cache[RESID]
        j = int(s.encode(x).flatten(0, 1).gt(0).sum(0).argmax())   # the most active latent

        def minus_j(act, hook):
            return act - s.encode(act)[..., j:j + 1] * s.W_dec[j]
        expected = model.run_with_hooks(tokens, fwd_hooks=[(RESID, minus_j)])

        def kill_j(acts, hook):
            acts = acts.clone()
            acts[..., j] = 0
            return acts
        s.add_hook("hook_sae_acts_post", kill_j)
        try:
            with sae.spliced(model, s, RESID, error_term=True):
                got = model(tokens)
        finally:
            s.reset_hooks()
    assert (got - expected).abs().max() < 1e-4
    assert (got - model(tokens)).abs().max() > 1e-3
    # Gradients reach the SAE through its latents.
    s.zero_grad()
    with sae.spliced(model, s, RESID, error_term=True):
        model.loss(tokens).backward()
    assert s.W_enc.grad is not None and s.W_enc.grad.abs().sum() > 0
    model.zero_grad()


def test_scale_equals_folding(model, tokens):
    s = topk_sae(D, seed=1)
    factor = 3.7
    via_arg = sae.spliced_losses(model, s, RESID, tokens, scale=factor)
    folded = s.copy()
    folded.fold_activation_scale(factor)
    via_fold = sae.spliced_losses(model, folded, RESID, tokens)
    via_cfg = s.copy()
    via_cfg.cfg = via_cfg.cfg.replace(activation_scale=factor)
    via_scale_cfg = sae.spliced_losses(model, via_cfg, RESID, tokens)
    plain = sae.spliced_losses(model, s, RESID, tokens)
    for r in (via_fold, via_scale_cfg):
        assert r.spliced_loss == pytest.approx(via_arg.spliced_loss, abs=1e-5)
        assert r.kl_div == pytest.approx(via_arg.kl_div, rel=1e-3, abs=1e-7)
    assert abs(plain.spliced_loss - via_arg.spliced_loss) > 1e-3
    with pytest.raises(ValueError, match="scale them twice"):
        sae.spliced_losses(model, via_cfg, RESID, tokens, scale=factor)


def test_evaluate_gets_the_spliced_numbers(model, tokens):
    s = topk_sae(D)
    _, cache = model.run_with_cache(tokens, names_filter=[RESID])
    acts = cache[RESID].reshape(-1, D)
    ev = sae.evaluate(s, [acts], model_fn=sae.splice_fn(model, RESID, tokens, batch_size=3))
    direct = sae.spliced_losses(model, s, RESID, tokens)
    assert ev.extra["loss_recovered"] == pytest.approx(direct.loss_recovered, rel=1e-5)
    assert ev.extra["kl_div"] == pytest.approx(direct.kl_div, rel=1e-4)
    assert ev.extra["n_tokens"] == 70


class TinyLM(HookedRootModule):
    """Not our GPT: embedding -> hook -> unembedding, TransformerLens hooks only."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W_E = nn.Parameter(torch.randn(V, D, generator=g))
        self.W_U = nn.Parameter(torch.randn(D, V, generator=g))
        self.hook_resid = HookPoint()
        self.setup()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hook_resid(self.W_E[tokens]) @ self.W_U


def test_any_hooked_root_module(tokens):
    m = TinyLM()
    r = sae.spliced_losses(m, identity_sae(D), "hook_resid", tokens)
    assert r.loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert r.zero_ablation_loss == pytest.approx(math.log(V), abs=1e-5)   # uniform logits


def test_bad_input(model, tokens, user_errors):
    s = identity_sae(D)
    with pytest.raises(ValueError, match=r"no hook point named 'blocks.0.hook_resid_pots'.*"
                                         r"close matches: \['blocks.0.hook_resid_post'"):
        sae.spliced_losses(model, s, "blocks.0.hook_resid_pots", tokens)
    with pytest.raises(ValueError, match=r"shape \[4, 10, 64\], but the SAE's d_in is 16"):
        sae.spliced_losses(model, s, MLP, tokens[:4])
    with pytest.raises(ValueError, match="integer token ids"):
        sae.spliced_losses(model, s, RESID, tokens.float())
    with pytest.raises(ValueError, match=r"tokens\[None\]"):
        sae.spliced_losses(model, s, RESID, tokens[0])
    with pytest.raises(ValueError, match="pos >= 2"):
        sae.spliced_losses(model, s, RESID, tokens[:, :1])
    with pytest.raises(TypeError, match="superpose.sae.SAE"):
        sae.spliced_losses(model, nn.Linear(D, D), RESID, tokens)
    with pytest.raises(TypeError, match="hooked model"):
        sae.spliced_losses(nn.Linear(D, D), s, RESID, tokens)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sae.spliced_losses(model, s, RESID, tokens, batch_size=0)
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        sae.spliced_losses(model, s, RESID, tokens, scale=-1.0)
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['n_batches'\]"):
        sae.splice_fn(model, RESID, tokens, n_batches=3)
