"""The sparse training path (superpose.sae.sparse): same numbers and gradients as the dense
autograd path, exact batch top-k, and ground-truth directions that never equal an SAE's init."""

from __future__ import annotations

import pytest
import torch

from superpose import sae
from superpose.sae.sparse import batch_topk, decode_rows, pre_at

D_IN, D_SAE, K = 8, 32, 4
JUMP = {"jumprelu": {"jumprelu_threshold_init": 0.05, "jumprelu_bandwidth": 0.04}}


def make(arch: str, **kw) -> sae.SAE:
    if arch in ("topk", "batchtopk"):
        kw = {"k": K, "k_aux": 3, **kw}
    s = sae.create(sae.SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, **kw),
                   device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        s.b_enc.copy_(0.05 * torch.randn(D_SAE, generator=g))
        s.b_dec.copy_(0.05 * torch.randn(D_IN, generator=g))
    return s.train()


def x_batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


def test_pre_at_and_decode_rows_match_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, D_IN, generator=g, requires_grad=True)
    W = torch.randn(D_IN, D_SAE, generator=g, requires_grad=True)
    b = torch.randn(D_SAE, generator=g, requires_grad=True)
    Wd = torch.randn(D_SAE, D_IN, generator=g, requires_grad=True)
    rows = torch.tensor([0, 0, 1, 3, 3, 3, 5])
    cols = torch.tensor([2, 7, 7, 0, 2, 31, 7])
    out_w = torch.randn(6, D_IN, generator=g)
    grads = []
    for sparse in (True, False):
        for t in (x, W, b, Wd):
            t.grad = None
        if sparse:
            with torch.no_grad():
                vals = (x @ W + b)[rows, cols]
            v = pre_at(x, W, b, rows, cols, vals)
            recon = decode_rows(v.relu(), rows, cols, Wd, 6)
        else:
            v = (x @ W + b)[rows, cols]
            recon = torch.zeros(6, D_IN).index_add(0, rows, v.relu()[:, None] * Wd[cols])
        ((recon * out_w).sum() + v.pow(2).sum()).backward()
        grads.append([t.grad.clone() for t in (x, W, b, Wd)])
    for g_sparse, g_dense in zip(*grads):
        torch.testing.assert_close(g_sparse, g_dense)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_fast_training_path_equals_dense_path(arch):
    """Same loss terms and the same gradient for every parameter, AuxK included; a hook on the
    latents forces the dense path, so the two runs differ only in the path taken."""
    x = x_batch(24)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    results = []
    for fast in (True, False):
        s = make(arch)
        if not fast:
            s.hook_sae_acts_post.add_hook(lambda t, hook: t)
        out = s.training_forward(x, dead_mask=dead)
        assert (out.sparse is not None) == fast
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in s.named_parameters()},
                        s.threshold.clone() if arch == "batchtopk" else None))
    (fast, g_fast, th_fast), (dense, g_dense, th_dense) = results
    assert fast.losses["aux"] > 0
    for key in ("mse", "aux"):
        torch.testing.assert_close(fast.losses[key], dense.losses[key])
    torch.testing.assert_close(fast.recon, dense.recon)
    torch.testing.assert_close(fast.acts, dense.acts)
    assert torch.equal(fast.fired(), dense.fired()) and fast.l0() == dense.l0()
    for name in g_dense:
        torch.testing.assert_close(g_fast[name], g_dense[name], msg=name)
    if arch == "batchtopk":
        torch.testing.assert_close(th_fast, th_dense)


def test_dense_archs_bias_trick_keeps_b_dec_gradient():
    """relu's encoder computes x@W_enc + (b_enc − b_dec@W_enc); b_dec still gets the gradient
    of the plain (x − b_dec)@W_enc + b_enc form."""
    s = make("relu")
    x = x_batch(16)
    s.training_forward(x).loss.backward()
    got = s.b_dec.grad.clone()
    s.zero_grad()
    sae_in = x - s.b_dec
    acts = torch.relu(sae_in @ s.W_enc + s.b_enc)
    recon = acts @ s.W_dec + s.b_dec
    loss = (recon - x).pow(2).sum(-1).mean() + (acts * s.W_dec.norm(dim=-1)).sum(-1).mean()
    loss.backward()
    torch.testing.assert_close(got, s.b_dec.grad)


def test_batch_topk_is_exact_on_the_fast_and_the_fallback_route():
    g = torch.Generator().manual_seed(0)
    big = torch.relu(torch.randn(600, 512, generator=g)) * torch.rand(600, 1, generator=g) * 3
    for acts, total in ((big, 600 * 8), (big[:10], 10 * 8), (torch.zeros(600, 512), 100)):
        values, idx = batch_topk(acts, total)
        ref = acts.reshape(-1).topk(total)
        assert len(idx) == total and len(set(idx.tolist())) == total
        torch.testing.assert_close(values.sort().values, ref.values.sort().values)
        torch.testing.assert_close(acts.reshape(-1)[idx], values)


def test_ground_truth_directions_are_not_an_sae_init():
    gt = sae.GroundTruthFeatures(64, 32, seed=0)
    s = sae.create(sae.SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4, seed=0))
    from superpose.sae.evaluation import ground_truth_metrics
    assert ground_truth_metrics(s.W_dec.detach(), gt.directions)["recovered"] < 0.05
    torch.testing.assert_close(gt.directions, sae.GroundTruthFeatures(64, 32, seed=0).directions)


def test_train_step_output_needs_one_representation(user_errors):
    r = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="exactly one of them"):
        sae.TrainStepOutput(recon=r)
    with pytest.raises(ValueError, match="need d_sae"):
        sae.TrainStepOutput(recon=r, sparse=(torch.zeros(1), torch.zeros(1), torch.zeros(1)))


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
@pytest.mark.parametrize("route", ["sparse", "dense"])
@pytest.mark.parametrize("b_dec_in", [True, False])
def test_penalised_fast_path_equals_plain_path(arch, route, b_dec_in, monkeypatch):
    """relu/jumprelu: both routes of the fast path (sparse entries, or dense reusing the
    pre-activations) give the plain path's losses, latents and gradients (θ's included),
    with and without b_dec subtracted from the input."""
    from superpose.sae import jumprelu, relu
    limit = 1.0 if route == "sparse" else 0.0
    monkeypatch.setattr(relu, "SPARSE_MAX_DENSITY", limit)
    monkeypatch.setattr(jumprelu, "SPARSE_MAX_DENSITY", limit)
    x = x_batch(24)
    results = []
    for fast in (True, False):
        s = make(arch, sparsity_coefficient=0.7, **JUMP.get(arch, {}),
                 apply_b_dec_to_input=b_dec_in, activation_scale=1.5)
        if not fast:
            s.hook_sae_acts_post.add_hook(lambda t, hook: t)
        out = s.training_forward(x, sparsity_coefficient=0.9)
        assert (out.sparse is not None) == (fast and route == "sparse")
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in s.named_parameters()}))
    (fast, g_fast), (dense, g_dense) = results
    assert 0 < dense.l0() < D_SAE
    for key in ("mse", "sparsity"):
        torch.testing.assert_close(fast.losses[key], dense.losses[key])
    torch.testing.assert_close(fast.loss, dense.loss)
    torch.testing.assert_close(fast.recon, dense.recon)
    torch.testing.assert_close(fast.acts, dense.acts)
    assert torch.equal(fast.fired(), dense.fired()) and fast.l0() == dense.l0()
    assert g_dense.keys() == g_fast.keys()
    for name in g_dense:
        assert g_dense[name].abs().sum() > 0, name
        torch.testing.assert_close(g_fast[name], g_dense[name], msg=name)
    if arch == "jumprelu" and route == "sparse":     # the band below θ is part of the entries
        assert (fast.sparse[2] == 0).any()


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_penalised_fast_path_picks_the_route_by_density(arch):
    x = x_batch(64)
    s = make(arch, **JUMP.get(arch, {}))
    assert s.training_forward(x).sparse is None                 # about half the latents on
    with torch.no_grad():
        s.b_enc.fill_(-0.25)
    out = s.training_forward(x)
    assert out.sparse is not None and 0 < out.l0() < 0.06 * D_SAE
    with torch.no_grad():
        assert s.training_forward(x).sparse is None             # no autograd: plain path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_csr_kernels_equal_dense_autograd(dtype):
    """csr_pre / csr_decode: values, reconstruction and every gradient equal dense autograd
    through the same masked expression, including rows and latents with no kept entry."""
    from superpose.sae.sparse import csr_decode, csr_pre, kept_entries
    g = torch.Generator().manual_seed(3)
    n, d_in, d_sae = 37, 6, 11
    x = torch.randn(n, d_in, generator=g, dtype=dtype)
    params = [torch.randn(*s, generator=g, dtype=dtype) for s in
              ((d_in, d_sae), (d_sae,), (d_sae, d_in), (d_in,))]
    with torch.no_grad():
        pre = (x - params[3]) @ params[0] + params[1]
        mask = pre > 0.8
        mask[5] = False                   # a row with no entry
        mask[:, 2] = False                # a latent with no entry
    w = torch.randn(n, d_in, generator=g, dtype=dtype)

    def run(sparse: bool):
        W_enc, b_enc, W_dec, b_dec = (p.clone().requires_grad_() for p in params)
        if sparse:
            kept, pre_kept = kept_entries(pre, mask, 1.0)
            acts = csr_pre(x - b_dec, W_enc, b_enc, b_dec, kept, pre_kept)
            out = csr_decode(acts * acts, W_dec, kept)
        else:
            z = ((x - b_dec) @ W_enc + b_enc) * mask
            out = (z * z) @ W_dec
        (out * w).sum().backward()
        return out, [p.grad for p in (W_enc, b_enc, W_dec, b_dec)]

    (a, ga), (b, gb) = run(True), run(False)
    torch.testing.assert_close(a, b)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)
    assert kept_entries(pre, mask, 0.01) is None          # too dense: the caller goes dense
    assert kept_entries(pre, torch.zeros_like(mask), 0.0) is None    # cutoff 0: always dense


def test_csr_kernels_with_no_entry_at_all():
    from superpose.sae.sparse import csr_decode, csr_pre, kept_entries
    pre = -torch.ones(4, 5)
    kept, pre_kept = kept_entries(pre, pre > 0, 0.5)
    W_enc, b_enc = torch.ones(3, 5, requires_grad=True), torch.zeros(5, requires_grad=True)
    W_dec = torch.ones(5, 3, requires_grad=True)
    out = csr_decode(csr_pre(torch.ones(4, 3), W_enc, b_enc, None, kept, pre_kept), W_dec, kept)
    assert out.shape == (4, 3) and not out.any()
    out.sum().backward()
    assert not W_enc.grad.any() and not W_dec.grad.any() and not b_enc.grad.any()


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "gated"])
@pytest.mark.parametrize("point", ["hook_sae_acts_pre", "hook_sae_acts_post"])
def test_a_backward_hook_on_the_latents_fires_during_training(arch, point):
    """The fast training paths skip the dense latent tensor; a hook of any direction (here a
    backward hook, which reads the latents' gradient) must switch to the explicit path."""
    s = make(arch) if arch != "gated" else sae.create(   # make() sets b_enc, which Gated lacks
        sae.SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="gated"), device="cpu").train()
    seen = []
    s.add_hook(point, lambda grad, hook: seen.append(grad.detach().clone()), dir="bwd")
    out = s.training_forward(x_batch(64))
    out.loss.backward()
    assert len(seen) == 1 and seen[0].shape == (64, D_SAE)
    assert seen[0].abs().sum() > 0


def test_ground_truth_keyword_options_and_old_spellings():
    """p and the sample generator are keyword-only now; the old positional spellings warn and
    give the same numbers."""
    new = sae.GroundTruthFeatures(64, 32, p=0.1, seed=2, device="cpu")
    with pytest.warns(DeprecationWarning, match="p="):
        old = sae.GroundTruthFeatures(64, 32, 0.1, seed=2)
    torch.testing.assert_close(new.probabilities, old.probabilities)
    a = new.sample(16, generator=torch.Generator().manual_seed(0))
    with pytest.warns(DeprecationWarning, match="generator="):
        b = new.sample(16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a.shape == (16, 32) and a.device.type == "cpu"
