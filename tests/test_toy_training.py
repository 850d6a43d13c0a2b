import pytest
import torch

from superpose import geometry, toy
from superpose.toy import analytic


def _grads(model, x):
    imp = model.cfg.importance_tensor()
    loss = toy.loss_per_instance(model(x), toy.target(model, x), imp)
    model.zero_grad()
    loss.sum().backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("variant", ["relu_out", "linear"])
@pytest.mark.parametrize("shape", [(5, 2, 4), (40, 7, 9)])   # block-diagonal and batched paths
def test_closed_form_gradient_equals_autograd(variant, shape):
    f, h, inst = shape
    cfg = toy.ToyConfig(n_features=f, n_hidden=h, n_instances=inst, variant=variant,
                        importance=0.8, feature_probability=[0.9 ** i for i in range(inst)],
                        seed=3)
    m = toy.ToyModel(cfg, device="cpu")
    with torch.no_grad():
        m.b_final.normal_(0, 0.3)        # so some outputs sit below the ReLU's kink
    x = toy.generate_batch(cfg, 128, generator=1, device="cpu")
    want_loss, want = _grads(m, x)
    step = analytic.AnalyticStep(m, cfg.importance_tensor())
    assert step.block == (inst * f <= analytic.BLOCK_DIAGONAL_MAX)
    with torch.no_grad():
        got_loss = step(x, want_loss=True)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-7)
    for name in ("W", "b_final"):
        torch.testing.assert_close(getattr(m, name).grad, want[name], rtol=1e-4, atol=1e-7)


def test_dense_instance_reaches_closed_form_loss():
    """Dense 5→2 with importance 0.9^i: the two most important features get orthogonal
    directions and the other three are predicted by their bias (E[x] = 1/2, variance 1/12),
    so the loss is (0.9² + 0.9³ + 0.9⁴) / (12 · 5) ≈ 0.0366."""
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=4, importance=0.9,
                        feature_probability=1.0)
    m = toy.ToyModel(cfg, device="cpu")
    res = toy.train(m, steps=4000, lr=3e-3, schedule="cosine", warmup_steps=100,
                    weight_decay=0.0, progress=False)
    closed = (0.9**2 + 0.9**3 + 0.9**4) / 60
    best = res.final_loss.min().item()
    assert best == pytest.approx(closed, rel=0.02)
    i = int(res.final_loss.argmin())
    V = m.feature_directions()[i]
    norms = geometry.norms(V)
    assert norms[:2].tolist() == pytest.approx([1, 1], abs=0.05)
    assert norms[2:].max() < 0.2           # dropped (they decay slowly: the gradient ∝ w)
    assert abs(torch.dot(V[0], V[1]).item()) < 0.05


def test_sparse_features_go_into_superposition():
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=4, importance=0.9,
                        feature_probability=0.05)
    m = toy.ToyModel(cfg, device="cpu")
    toy.train(m, steps=3000, lr=3e-3, progress=False)
    # More features than dimensions are represented: that is superposition.
    assert geometry.n_represented(m.feature_directions()).max() >= 4


def test_joint_training_equals_separate_training_with_same_random_numbers():
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3, importance=0.9,
                        feature_probability=[1.0, 0.2, 0.05], seed=1)
    joint = toy.ToyModel(cfg, device="cpu")
    gen = torch.Generator().manual_seed(0)
    batches = [toy.generate_batch(cfg, 256, generator=gen) for _ in range(200)]
    singles = [joint.select(i) for i in range(3)]
    toy.train(joint, steps=200, data=batches, progress=False, schedule="cosine")
    for i, single in enumerate(singles):
        toy.train(single, steps=200, data=[b[:, i:i + 1] for b in batches], progress=False,
                  schedule="cosine")
        torch.testing.assert_close(single.W[0], joint.W[i], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(single.b_final[0], joint.b_final[i], rtol=1e-4, atol=1e-6)


def test_analytic_and_autograd_training_agree():
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=2, feature_probability=[1, 0.1])
    a, b = toy.ToyModel(cfg, device="cpu"), toy.ToyModel(cfg, device="cpu")
    ra = toy.train(a, steps=100, progress=False)
    rb = toy.train(b, steps=100, progress=False, analytic_grad=False)
    assert ra.extra["analytic_grad"] and not rb.extra["analytic_grad"]
    torch.testing.assert_close(a.W, b.W, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ra.loss, rb.loss, rtol=1e-4, atol=1e-6)


def test_hooks_attached_during_training_fire():
    cfg = toy.ToyConfig(n_features=5, n_hidden=2, n_instances=1)
    m = toy.ToyModel(cfg, device="cpu")
    seen = []
    m.add_hook("hook_hidden", lambda h, hook: seen.append(h.shape))
    res = toy.train(m, steps=5, batch_size=8, progress=False)
    m.reset_hooks()
    assert len(seen) == 5 and not res.extra["analytic_grad"]


@pytest.mark.parametrize("variant, n_features, n_hidden", [("abs", 3, 6), ("relu_hidden", 6, 6)])
def test_autograd_variants_learn(variant, n_features, n_hidden):
    """With 2 hidden neurons per feature |x| = ReLU(x) + ReLU(-x) is exact, and with as many
    hidden neurons as features the privileged-basis model can keep every feature: some of the
    four instances must get the loss down by 50x."""
    cfg = toy.ToyConfig(n_features=n_features, n_hidden=n_hidden, n_instances=4,
                        variant=variant, feature_probability=0.3)
    m = toy.ToyModel(cfg, device="cpu")
    res = toy.train(m, steps=1000, lr=1e-2, progress=False)
    assert not res.extra["analytic_grad"]
    assert (res.final_loss / res.loss[:3].mean(0)).min() < 0.02


def test_history_shape_and_bad_data(user_errors):
    cfg = toy.ToyConfig(n_instances=2, feature_probability=[1, 0.5])
    m = toy.ToyModel(cfg, device="cpu")
    res = toy.train(m, steps=25, log_every=10, batch_size=32, progress=False)
    assert res.history.step == [1, 10, 20, 25]
    assert res.loss.shape == (4, 2) and res.final_loss.shape == (2,)
    assert len(res.history.lr) == len(res.history.seconds) == 4
    with pytest.raises(ValueError, match="data ran out after 2 batches"):
        toy.train(m, steps=5, data=[torch.rand(4, 2, 5)] * 2, progress=False)
    with pytest.raises(ValueError, match=r"batch 0 has shape \[4, 5\]; expected \[batch, "
                                         r"n_instances=2, n_features=5\]"):
        toy.train(m, steps=1, data=[torch.rand(4, 5)], progress=False)
    bad = torch.rand(4, 2, 5)
    bad[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="batch 0 contains NaN or inf"):
        toy.train(m, steps=1, data=[bad], progress=False)
