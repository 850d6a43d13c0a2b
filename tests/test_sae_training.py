"""SAE training and evaluation: ground-truth recovery, exact metrics, bad input, resume."""

from __future__ import annotations

import json

import pytest
import torch

from superpose import sae
from superpose.sae.evaluation import evaluate, ground_truth_metrics, loss_recovered
from superpose.sae.synthetic import GroundTruthFeatures
from superpose.sae.training import SAETrainConfig, geometric_median, lr_at, train

ARCHS = ["relu", "topk", "batchtopk", "jumprelu", "gated"]


def make(arch: str = "topk", d_in: int = 32, d_sae: int = 64, **kw) -> sae.SAE:
    # each option applies to its architectures only (SAEConfig refuses the others)
    kw.pop("sparsity_coefficient" if arch in ("topk", "batchtopk") else "k", None)
    return sae.create(sae.SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, **kw),
                      device="cpu")


def small_problem() -> GroundTruthFeatures:
    return GroundTruthFeatures(64, 32, p=4 / 64, noise=0.01, seed=0)


# ---- ground-truth recovery -----------------------------------------------------------------

def test_topk_recovers_ground_truth_features():
    gt = small_problem()      # 64 features; a 2x wider SAE finds them in 400 steps
    s = make("topk", d_sae=128, k=8)
    result = train(s, gt.batches(256), steps=400, progress=False)
    ev = evaluate(s, gt.batches(1024, seed=99), n_batches=2, ground_truth=gt.directions)
    assert ev.recovered >= 0.9, ev
    assert ev.fve > 0.9
    assert result.history.mse[-1] < result.history.mse[0]


def test_relu_recovers_ground_truth_features():
    gt = small_problem()
    s = make("relu", d_sae=128, sparsity_coefficient=0.3)
    train(s, gt.batches(256), steps=600, progress=False)
    ev = evaluate(s, gt.batches(1024, seed=99), n_batches=2, ground_truth=gt.directions)
    assert ev.recovered >= 0.8, ev
    assert ev.mmcs_true > 0.9


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_lowers_its_loss(arch):
    gt = small_problem()
    s = make(arch, k=8, sparsity_coefficient=0.1)
    r = train(s, gt.batches(128), steps=200, progress=False, log_every=10)
    assert r.history.mse[-1] < 0.5 * r.history.mse[0]
    assert r.history.step[-1] == 200 and r.samples == 200 * 128
    assert all(torch.isfinite(p).all() for p in s.parameters())
    if arch in ("topk", "batchtopk"):
        torch.testing.assert_close(s.W_dec.norm(dim=-1), torch.ones(64))


# ---- evaluation on hand-made cases ---------------------------------------------------------

def _identity_sae(d: int = 4) -> sae.SAE:
    s = make("relu", d_in=d, d_sae=2 * d)
    with torch.no_grad():   # latents 2i, 2i+1 carry ±x_i: exact reconstruction
        eye = torch.eye(d)
        w = torch.stack([eye, -eye], 1).reshape(2 * d, d)
        s.W_dec.copy_(w)
        s.W_enc.copy_(w.T)
        s.b_enc.zero_()
        s.b_dec.zero_()
    return s


def test_fve_is_about_the_mean():
    torch.manual_seed(0)
    x = torch.randn(256, 4) + 5.0
    perfect = evaluate(_identity_sae(), [x])
    assert perfect.fve == pytest.approx(1.0, abs=1e-9)
    assert perfect.cosine == pytest.approx(1.0, abs=1e-6)
    assert perfect.l2_ratio == pytest.approx(1.0, abs=1e-6)
    assert perfect.mse == pytest.approx(0.0, abs=1e-9)
    mean_sae = make("relu", d_in=4, d_sae=8)
    with torch.no_grad():       # no latent ever fires; the output is b_dec = the data mean
        mean_sae.b_enc.fill_(-1e6)
        mean_sae.b_dec.copy_(x.mean(0))
    r = evaluate(mean_sae, [x[:128], x[128:]])
    assert r.fve == pytest.approx(0.0, abs=1e-5)
    assert r.l0 == 0 and r.frac_dead == 1.0 and r.n_samples == 256


def test_l0_dead_dense_and_density():
    s = _identity_sae(2)
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    r = evaluate(s, [x])
    # latent 0 (+x0) fires on 3 of 4, latent 2 (+x1) on 2 of 4, the negative ones never
    torch.testing.assert_close(r.density, torch.tensor([0.75, 0.0, 0.5, 0.0]))
    assert r.l0 == pytest.approx(5 / 4)
    assert r.frac_dead == 0.5 and r.frac_dense == 0.5
    assert r.log10_density[1] == -10.0
    counts, edges = r.density_histogram(bins=4)
    assert counts.sum() == 2 and len(edges) == 5


def test_ground_truth_metrics_exact():
    eye = torch.eye(4)
    m = ground_truth_metrics(eye, eye)
    assert m == pytest.approx({"mmcs_true": 1.0, "mmcs_latents": 1.0, "recovered": 1.0,
                               "mcc": 1.0})
    # a decoder of two copies of feature 0: greedy max says feature 0 recovered twice; the
    # one-to-one matching uses it once
    dec = torch.stack([eye[0], eye[0], eye[2], -eye[3]])
    m = ground_truth_metrics(dec, eye)
    assert m["recovered"] == 0.5            # features 0 and 2 (−e3 has cos −1)
    assert m["mmcs_true"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert m["mcc"] == pytest.approx((1 + 0 + 1 + 1) / 4)     # |cos|, one-to-one
    rot = torch.tensor([[1.0, 1.0, 0, 0]]) / 2 ** 0.5
    assert ground_truth_metrics(rot, eye)["mmcs_latents"] == pytest.approx(2 ** -0.5)


def test_loss_recovered_formula():
    assert loss_recovered(clean=2.0, sae_loss=2.0, zero_loss=6.0) == 1.0
    assert loss_recovered(clean=2.0, sae_loss=6.0, zero_loss=6.0) == 0.0
    assert loss_recovered(clean=2.0, sae_loss=3.0, zero_loss=6.0) == 0.75
    with pytest.raises(ValueError, match="undefined"):
        loss_recovered(1.0, 1.5, 1.0)


# ---- training pieces -----------------------------------------------------------------------

def test_schedules_and_geometric_median():
    cfg = SAETrainConfig(warmup_steps=0.1, decay_steps=0.2)
    lrs = [lr_at(s, cfg, steps=100, lr=1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0 and lrs[79] == 1.0
    assert lrs[80] == pytest.approx(1.0) and lrs[99] == pytest.approx(0.05)
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    gm = geometric_median(x)
    assert gm.norm() < 1.0      # the outlier barely moves it; the mean is at (25.25, 25.25)


def test_dead_latent_tracking_counts_a_never_firing_latent():
    gt = small_problem()
    s = make("relu", sparsity_coefficient=0.1)
    with torch.no_grad():
        s.W_enc[:, 5] = 0.0
        s.b_enc[5] = -100.0       # latent 5 can never fire; its gradient is zero
    r = train(s, gt.batches(64), steps=40, dead_window=1000, progress=False, grad_clip=None)
    assert bool(r.dead_mask[5]) and r.samples_since_fired[5] == 40 * 64
    assert r.history.frac_dead[-1] >= 1 / 64
    assert r.history.frac_dead[0] == 0.0        # nothing is dead before the window has passed


def test_resampling_revives_dead_latents():
    gt = small_problem()
    s = make("relu", sparsity_coefficient=0.1)
    with torch.no_grad():
        s.W_enc[:, :8] = 0.0
        s.b_enc[:8] = -100.0
    r = train(s, gt.batches(64), steps=60, dead_window=640, resample_every=20, progress=False)
    assert sum(r.history.resampled) >= 8
    assert not r.dead_mask[:8].any()
    assert (s.b_enc[:8] > -100).all()


def test_config_validation(user_errors):
    with pytest.raises(ValueError, match="schedule must be one of"):
        SAETrainConfig(schedule="exp")
    with pytest.raises(ValueError, match="dead_window must be a positive integer"):
        SAETrainConfig(dead_window=0)
    with pytest.raises(ValueError, match="unknown SAETrainConfig field"):
        train(make(), [torch.zeros(2, 32)], stepz=3)
    with pytest.raises(ValueError, match="needs to know how long"):
        train(make(), iter([torch.zeros(2, 32)]), progress=False)


# ---- bad input -----------------------------------------------------------------------------

def test_nan_batch_fails_with_its_index_and_is_not_trained_on(user_errors):
    s = make()
    batches = [torch.randn(16, 32) for _ in range(3)]
    batches[2][4, 7] = float("nan")
    before = {k: t.clone() for k, t in s.state_dict().items()}
    with pytest.raises(ValueError, match="batch 2 contains NaN or inf"):
        train(s, batches, steps=3, progress=False, warmup_steps=0, schedule="constant")
    s2 = make()
    s2.load_state_dict(before)
    train(s2, batches[:2], steps=2, progress=False, warmup_steps=0, schedule="constant")
    # steps 0 and 1 happened; the NaN batch never touched the weights
    for k, t in s.state_dict().items():
        torch.testing.assert_close(t, s2.state_dict()[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch 0 contains NaN or inf"):
        train(make(), [torch.full((4, 32), float("inf"))], steps=1, progress=False)


def test_width_mismatch_names_d_in(user_errors):
    with pytest.raises(ValueError, match=r"batch 0 has shape \[8, 16\].*d_in=32"):
        train(make(), [torch.randn(8, 16)], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"batch 1 has shape \[8, 31\]"):
        train(make(), [torch.randn(8, 32), torch.randn(8, 31)], steps=2, progress=False)
    with pytest.raises(ValueError, match="d_in is 32"):
        evaluate(make(), [torch.randn(8, 16)])


# ---- checkpoints and resume ----------------------------------------------------------------

@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_resume_equals_uninterrupted(tmp_path, arch):
    gt = small_problem()
    kw = dict(steps=30, progress=False, log_every=5, dead_window=256, seed=3,
              resample_every=10 if arch == "relu" else None)
    ref = make(arch, k=8)
    r_ref = train(ref, gt.batches(64), **kw)

    class Stop(Exception):
        pass

    def interrupted(n):
        for i, x in enumerate(gt.batches(64)):
            if i == n:
                raise Stop
            yield x

    s = make(arch, k=8)
    with pytest.raises(Stop):
        train(s, interrupted(17), out=tmp_path, checkpoint_every=5, **kw)
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-00000015"]
    assert not (tmp_path / "sae").exists()          # a failed run saves no SAE
    s2 = make(arch, k=8)
    r = train(s2, gt.batches(64), out=tmp_path, resume=True, checkpoint_every=5, **kw)
    assert r.resumed_from == 15
    for k, t in ref.state_dict().items():
        torch.testing.assert_close(s2.state_dict()[k], t, rtol=0, atol=0)
    assert r.history.step == r_ref.history.step == [1, 5, 10, 15, 20, 25, 30]
    for name in ("loss", "mse", "l0", "frac_dead", "lr", "samples", "resampled"):
        assert getattr(r.history, name) == getattr(r_ref.history, name), name
    torch.testing.assert_close(r.samples_since_fired, r_ref.samples_since_fired)
    loaded = sae.load(r.saved_to)
    torch.testing.assert_close(loaded.W_dec, ref.W_dec)
    meta = json.loads((tmp_path / "checkpoint-00000030" / "checkpoint.json").read_text())
    assert meta["step"] == 30 and meta["samples"] == 30 * 64
    assert meta["format"] == "superpose.sae.checkpoint/2" and "state.safetensors" in meta["files"]


def test_failed_run_keeps_the_saved_sae(tmp_path, user_errors):
    gt = small_problem()
    s = make()
    train(s, gt.batches(32), steps=5, out=tmp_path, progress=False)
    saved = sae.load(tmp_path / "sae").W_dec.clone()
    bad = [torch.randn(32, 32), torch.full((32, 32), float("nan"))]
    with pytest.raises(ValueError, match="batch 1"):
        train(make(seed=1), bad, steps=2, out=tmp_path, progress=False)
    torch.testing.assert_close(sae.load(tmp_path / "sae").W_dec, saved)
    with pytest.raises(ValueError, match="resume=True needs out"):
        train(make(), bad, steps=2, resume=True, progress=False)


def test_existing_checkpoints_need_resume(tmp_path, user_errors):
    gt = small_problem()
    train(make(), gt.batches(32), steps=4, out=tmp_path, checkpoint_every=2, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(make(), gt.batches(32), steps=4, out=tmp_path, checkpoint_every=2, progress=False)
    with pytest.raises(ValueError, match="trained with a different config .*lr: checkpoint "
                                         "None, now 0.5"):
        train(make(), gt.batches(32), steps=4, out=tmp_path, checkpoint_every=2, lr=0.5,
              resume=True, progress=False)


def test_ground_truth_generator():
    gt = GroundTruthFeatures(100, 20, p=0.05, correlated_fraction=0.2, power_law=1.0, seed=1)
    assert gt.directions.shape == (100, 20)
    torch.testing.assert_close(gt.directions.norm(dim=-1), torch.ones(100))
    assert gt.probabilities.mean() == pytest.approx(0.05, rel=1e-5)
    a = torch.cat(list(gt.batches(50, 2)))
    b = torch.cat(list(gt.batches(50, 2)))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="p must be"):
        GroundTruthFeatures(10, 5, p=1.5)
