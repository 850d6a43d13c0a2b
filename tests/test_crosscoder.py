"""The crosscoder (superpose.sae.crosscoder): shapes and hooks, BatchTopK on decoder-norm-weighted
scores, save/load, errors, training through sae.train, the decoder-norm readouts, Latent Scaling
on hand-built crosscoders whose answers are known, paired activations of two GPTs, and (science
tier) ground truth: a crosscoder trained on synthetic paired data separates shared, base-only
and fine-tuned-only features by their relative decoder norms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from superpose import gpt, sae
from superpose.gpt import GPTConfig
from superpose.sae import crosscoder as xc

D, N_MODELS, D_SAE, K = 16, 2, 64, 4


def make(**kw) -> xc.Crosscoder:
    return sae.create(sae.CrosscoderConfig(**{"d_in": D, "d_sae": D_SAE, "k": K, **kw}),
                      device="cpu")


def paired(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, N_MODELS, D, generator=torch.Generator().manual_seed(seed))


# ---- shapes, hooks, the encoder ------------------------------------------------------------

def test_shapes_views_and_hook_points():
    cc = make()
    x = paired(32)
    assert isinstance(cc, xc.Crosscoder) and isinstance(cc, sae.SAE)
    assert cc(x).shape == (32, N_MODELS, D)
    assert cc.encode(x).shape == (32, D_SAE)
    assert cc.decode(cc.encode(x)).shape == (32, N_MODELS, D)
    assert cc(x.flatten(1)).shape == (32, N_MODELS * D)     # the trainer's flat rows
    assert cc.W_enc_models.shape == (N_MODELS, D, D_SAE)
    assert cc.W_dec_models.shape == (D_SAE, N_MODELS, D)
    assert cc.b_dec_models.shape == (N_MODELS, D)
    assert cc.W_dec_models.data_ptr() == cc.W_dec.data_ptr()   # views, not copies
    _, cache = cc.run_with_cache(x)
    assert cache["hook_sae_acts_post"].shape == (32, D_SAE)
    assert cache["hook_sae_input"].shape == (32, N_MODELS * D)
    assert cache["hook_sae_output"].shape == (32, N_MODELS, D)
    with pytest.raises(ValueError, match="close matches"):
        cc.run_with_cache(x, names_filter=["hook_sae_act_post"])


def test_encoder_sums_over_models_and_decoder_is_per_model():
    cc = make(apply_b_dec_to_input=False)
    with torch.no_grad():
        cc.b_enc.normal_(0, 0.1)
        cc.b_dec.normal_(0, 0.1)
    x = paired(8)
    _, cache = cc.run_with_cache(x, names_filter=["hook_sae_acts_pre"])
    want = torch.einsum("bmd,mdf->bf", x, cc.W_enc_models) + cc.b_enc
    torch.testing.assert_close(cache["hook_sae_acts_pre"], want, atol=1e-5, rtol=1e-5)
    acts = torch.relu(torch.randn(8, D_SAE))
    want = torch.einsum("bf,fmd->bmd", acts, cc.W_dec_models) + cc.b_dec_models
    torch.testing.assert_close(cc.decode(acts), want, atol=1e-5, rtol=1e-5)


def test_batchtopk_keeps_k_per_row_on_average_and_both_paths_agree():
    cc = make()
    x = paired(64)
    acts = cc.encode(x)                                   # training mode: batch top-k
    nnz = (acts > 0).sum(-1)
    assert int(nnz.sum()) == K * 64
    assert int(nnz.max()) > int(nnz.min())                # rows vary: the batch shares k·batch
    fast = cc.training_forward(x)
    assert fast.sparse is not None and math.isclose(fast.l0(), K, rel_tol=1e-6)
    with cc.hooks(fwd_hooks=[("hook_sae_acts_post", lambda t, hook: t)]):
        dense = cc.training_forward(x)                    # a hook forces the dense path
    assert dense.sparse is None
    torch.testing.assert_close(fast.acts, dense.acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.loss, dense.loss, atol=1e-4, rtol=1e-4)


def test_selection_scores_weight_by_summed_decoder_norms():
    """Minder et al.: the batch top-k ranks f_j·Σ_m ‖d_j^m‖, so a latent with a smaller
    activation but larger decoder norms wins; the kept value is the unscaled f_j."""
    cc = make(d_sae=2, k=1, apply_b_dec_to_input=False)
    with torch.no_grad():
        cc.W_enc.zero_()
        cc.b_enc.copy_(torch.tensor([1.0, 1.5]))          # f = (1, 1.5) on every input
        cc.W_dec.zero_()
        cc.W_dec_models[0] = 1.0 / math.sqrt(D)           # ‖d_0^m‖ = 1: weight 2
        cc.W_dec_models[1, 0, 0] = 1.0                    # weight 1: score 1.5 < 2
    acts = cc.encode(paired(1))
    assert acts.tolist() == [[1.0, 0.0]]
    cc.eval()
    with torch.no_grad():
        cc.threshold.fill_(1.8)                          # eval: the score against θ
    assert cc.encode(paired(1)).tolist() == [[1.0, 0.0]]


def test_threshold_is_the_running_minimum_kept_score():
    cc = make()
    x = paired(128)
    out = cc.training_forward(x)
    scores = out.acts * cc.latent_weights()
    assert float(cc.threshold) == pytest.approx(float(scores[scores > 0].min().detach()),
                                               rel=1e-5)
    cc.eval()
    l0_eval = float((cc.encode(paired(512, seed=1)) > 0).sum(-1).float().mean())
    assert 0.3 * K < l0_eval < 3 * K


# ---- save / load and errors ----------------------------------------------------------------

def test_save_load_round_trip_is_exact(tmp_path):
    cc = make(model_names=("pre", "post"), hook_name="blocks.0.hook_resid_post")
    sae.train(cc, [paired(128, s) for s in range(5)], progress=False)
    path = sae.save(cc, tmp_path / "cc")
    back = sae.load(path)
    assert isinstance(back, xc.Crosscoder) and back.crosscoder_cfg == cc.crosscoder_cfg
    for name, t in cc.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    cc.eval(), back.eval()
    x = paired(64, seed=9)
    assert torch.equal(back(x), cc(x))
    assert xc.classify(back) == xc.classify(cc)
    assert all(label in ("pre-only", "post-only", "shared", "other")
               for label in xc.classify(back))


def test_load_refuses_changed_weights(tmp_path, user_errors):
    path = make().save(tmp_path / "cc")
    weights = path / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x7f" * 8)
    with pytest.raises(ValueError, match="changed after it was written"):
        sae.load(path)


def test_saelens_export_is_refused():
    with pytest.raises(ValueError, match="SAELens has no crosscoder format"):
        make().saelens_state_dict()


@pytest.mark.parametrize("kw, match", [
    (dict(n_models=1), "n_models must be an integer >= 2"),
    (dict(k=65), r"k \(65\) must not exceed d_sae \(64\)"),
    (dict(d_in=0), "d_in must be a positive integer"),
    (dict(model_names=("a", "b", "c")), "model_names has 3 names"),
    (dict(model_names=("a", "a")), "model_names must be a tuple of distinct"),
])
def test_bad_configs(kw, match, user_errors):
    with pytest.raises(ValueError, match=match):
        sae.CrosscoderConfig(**{"d_in": D, "d_sae": D_SAE, **kw})


@pytest.mark.parametrize("shape, match", [
    ((8, D), "one model's d_in: stack"),
    ((8, 3, D), r"n_models=2, d_in=16\] \(or flat rows \[..., 32\]\), got shape \[8, 3, 16\]"),
    ((8, N_MODELS, D + 1), "got shape"),
])
def test_wrong_input_shapes(shape, match, user_errors):
    cc = make()
    with pytest.raises(ValueError, match=match):
        cc(torch.randn(*shape))
    with pytest.raises(ValueError, match=match):
        cc.encode(torch.randn(*shape))


def test_trainer_names_a_bad_batch(user_errors):
    with pytest.raises(ValueError, match="batch 0 has shape"):
        sae.train(make(), [torch.randn(8, 3, D)], steps=1, progress=False)


def test_create_refuses_other_objects(user_errors):
    with pytest.raises(TypeError, match="SAEConfig or a CrosscoderConfig"):
        sae.create({"d_in": 4})


# ---- training ------------------------------------------------------------------------------

def test_sae_train_trains_it_and_saves_a_crosscoder(tmp_path):
    cc = make()
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(32, N_MODELS, D, generator=gen)
    data = []
    for _ in range(60):
        codes = torch.rand(256, 32, generator=gen) * (torch.rand(256, 32, generator=gen) < 0.1)
        data.append(torch.einsum("bf,fmd->bmd", codes, basis))
    r = sae.train(cc, data, progress=False, log_every=10, out=tmp_path, checkpoint_every=0)
    assert r.history.mse[-1] < 0.5 * r.history.mse[0]
    assert all(math.isclose(l0, K, rel_tol=1e-6) for l0 in r.history.l0)
    back = sae.load(r.saved_to)
    assert isinstance(back, xc.Crosscoder)
    assert torch.equal(back.W_dec, cc.W_dec)


# ---- decoder-norm readouts -----------------------------------------------------------------

def hand_built(decoupled: bool) -> tuple[xc.Crosscoder, torch.Tensor]:
    """Latents with known answers, d_in = 4 per model (basis e0..e3), and data for them.
    Base: 0.8·a0·e0 + a2·e2; fine-tuned: a0·e0 + a1·e1 + a2·e2.
    0: reads a0 from the fine-tune, decodes e0 there only (looks fine-tuned-only; the base has
       the concept too); 1: a1·e1, truly fine-tuned-only; 2: a2·e2 in both (shared);
    3: `decoupled`: a0 decoded as 0.8·e0 in the base only (Latent Decoupling: the base's part
       of concept 0 split off into its own latent); else a base-only latent on e3, never on."""
    cc = sae.create(sae.CrosscoderConfig(d_in=4, d_sae=4, k=4, apply_b_dec_to_input=False),
                    device="cpu")
    e = torch.eye(4)
    with torch.no_grad():
        for p in (cc.W_enc, cc.W_dec, cc.b_enc, cc.b_dec):
            p.zero_()
        enc, dec = cc.W_enc_models, cc.W_dec_models
        enc[1, :, 0], dec[0, 1] = e[0], e[0]
        enc[1, :, 1], dec[1, 1] = e[1], e[1]
        enc[0, :, 2], enc[1, :, 2] = e[2] / 2, e[2] / 2
        dec[2, 0], dec[2, 1] = e[2], e[2]
        if decoupled:
            enc[0, :, 3], dec[3, 0] = e[0] / 0.8, 0.8 * e[0]
        else:
            enc[0, :, 3], dec[3, 0] = e[3], e[3]
        cc.threshold.fill_(1e-6)
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2000, 3, generator=gen) + 0.5
    a = a * (torch.rand(2000, 3, generator=gen) < 0.5)
    base = 0.8 * a[:, :1] * e[0] + a[:, 2:3] * e[2]
    ft = a[:, :1] * e[0] + a[:, 1:2] * e[1] + a[:, 2:3] * e[2]
    return cc, torch.stack([base, ft], dim=1)


def test_decoder_norms_relative_norms_and_classify():
    cc, _ = hand_built(decoupled=True)
    norms = xc.decoder_norms(cc)
    assert norms.shape == (4, 2)
    torch.testing.assert_close(xc.relative_norms(cc), torch.tensor([1.0, 1.0, 0.5, 0.0]))
    torch.testing.assert_close(xc.relative_norms(cc, 0, base=1),
                               torch.tensor([0.0, 0.0, 0.5, 1.0]))
    assert xc.classify(cc) == ["finetuned-only", "finetuned-only", "shared", "base-only"]
    with torch.no_grad():
        cc.W_dec_models[2, 0] *= 0.5                      # ‖d_base‖ = ½‖d_ft‖: in between
        cc.W_dec_models[0, 0] = 0.1 * torch.eye(4)[3]     # 0.1 < 0.2: still exclusive
    assert xc.classify(cc)[:3] == ["finetuned-only", "finetuned-only", "other"]
    assert xc.classify(cc, shared_ratio=0.4)[2] == "shared"


def test_readout_errors(user_errors):
    cc, _ = hand_built(decoupled=False)
    with pytest.raises(ValueError, match=r"model must be a model index in \[0, 1\]"):
        xc.relative_norms(cc, 2)
    with pytest.raises(ValueError, match="both 1"):
        xc.classify(cc, 1, base=1)
    with pytest.raises(ValueError, match="exclusive_ratio .* must be below shared_ratio"):
        xc.classify(cc, exclusive_ratio=0.9, shared_ratio=0.5)
    with pytest.raises(TypeError, match="takes a Crosscoder"):
        xc.decoder_norms(sae.create(sae.SAEConfig(d_in=4, d_sae=8)))
    with pytest.raises(ValueError, match=r"batch 0 must be paired activations"):
        xc.latent_scaling(cc, torch.randn(10, 4))


# ---- Latent Scaling ------------------------------------------------------------------------

def test_latent_scaling_flags_complete_shrinkage():
    """Latent 0 looks fine-tuned-only, but the base's error still holds 0.8 of it: ν^ε ≈ 0.8;
    latent 1 is truly exclusive: ν^ε ≈ ν^r ≈ 0."""
    cc, x = hand_built(decoupled=False)
    r = xc.latent_scaling(cc, x, batch_size=512)         # default: the fine-tuned-only ones
    assert r.latents.tolist() == [0, 1]
    assert r.count.tolist() == [int((x[:, 1, 0] > 0).sum()), int((x[:, 1, 1] > 0).sum())]
    torch.testing.assert_close(r.beta_error[:, 1], torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(r.nu_error, torch.tensor([0.8, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(r.nu_recon, torch.tensor([0.0, 0.0]), atol=1e-4, rtol=0)
    assert r.exclusive().tolist() == [False, True]
    assert cc.training                                   # the mode is restored


def test_latent_scaling_flags_latent_decoupling():
    """With the base's part of concept 0 in its own base-only latent 3, the base's error is
    clean (ν^ε ≈ 0) but its reconstruction carries 0.8 of latent 0's direction: ν^r ≈ 0.8."""
    cc, x = hand_built(decoupled=True)
    r = xc.latent_scaling(cc, [x[:1000], x[1000:]], latents=[0, 1, 2])
    torch.testing.assert_close(r.nu_error, torch.tensor([0.0, 0.0, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(r.nu_recon, torch.tensor([0.8, 0.0, 1.0]), atol=1e-4, rtol=0)
    assert r.exclusive().tolist() == [False, True, False]


def test_latent_scaling_of_a_latent_that_never_fires_is_nan():
    cc, x = hand_built(decoupled=False)
    r = xc.latent_scaling(cc, x, latents=[3], owner=0, other=1)
    assert r.count.tolist() == [0] and torch.isnan(r.nu_error).all()


# ---- paired activations of real models -----------------------------------------------------

def tiny_gpt(seed: int) -> gpt.GPT:
    return gpt.GPT(GPTConfig(d_vocab=13, n_layers=2, d_model=16, n_heads=2, n_ctx=12,
                             seed=seed), device="cpu")


def test_paired_activations_equal_each_models_own_cache():
    models = [tiny_gpt(0), tiny_gpt(1)]
    tokens = torch.randint(0, 13, (5, 7), generator=torch.Generator().manual_seed(0))
    hook = "blocks.1.hook_resid_mid"
    x = xc.paired_activations(models, hook, tokens, batch_size=2)
    assert x.shape == (5 * 7, 2, 16)
    for i, m in enumerate(models):
        _, cache = m.run_with_cache(tokens, names_filter=[hook])
        torch.testing.assert_close(x[:, i], cache[hook].reshape(-1, 16), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(x[:, 0], x[:, 1])           # two different models


def test_paired_activations_keep_real_positions_only():
    models = [tiny_gpt(0), tiny_gpt(1)]
    tokens = torch.randint(0, 13, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 2:] = False
    hook = "blocks.0.hook_resid_post"
    x = xc.paired_activations(models, hook, tokens, attention_mask=mask)
    assert x.shape == (int(mask.sum()), 2, 16)
    for i, m in enumerate(models):
        _, cache = m.run_with_cache(tokens, attention_mask=mask, names_filter=[hook])
        torch.testing.assert_close(x[:, i], cache[hook][mask], atol=1e-6, rtol=1e-6)


def test_paired_activations_errors(user_errors):
    tokens = torch.randint(0, 13, (2, 5))
    models = [tiny_gpt(0), tiny_gpt(1)]
    with pytest.raises(ValueError, match="close matches"):
        xc.paired_activations(models, "blocks.0.hook_resid_pots", tokens)
    with pytest.raises(ValueError, match="at least 2 models"):
        xc.paired_activations(models[:1], "blocks.0.hook_resid_post", tokens)
    wide = gpt.GPT(GPTConfig(d_vocab=13, n_layers=2, d_model=24, n_heads=2, n_ctx=12),
                   device="cpu")
    with pytest.raises(ValueError, match="models disagree on 'blocks.0.hook_resid_post'"):
        xc.paired_activations([models[0], wide], "blocks.0.hook_resid_post", tokens)
    with pytest.raises(ValueError, match="attention_mask must be"):
        xc.paired_activations(models, "blocks.0.hook_resid_post", tokens,
                              attention_mask=torch.ones(2, 4, dtype=torch.bool))


# ---- ground truth (science tier) -----------------------------------------------------------

def ground_truth_pairs(n: int, d: int, n_each: int, *, rotate: float, seed: int, p: float = 0.06
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Paired data [n, 2, d] from 3·n_each unit features, each on with probability p at
    magnitude U(0.5, 1.5), the same in both models: shared (the base direction u in the base,
    u rotated by `rotate` radians towards a random orthogonal direction in the fine-tune),
    base-only and fine-tuned-only (zero in the other model). Returns the data, the features'
    directions [n_features, 2, d] and their groups."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    u = q[:, :3 * n_each].T                                   # orthonormal
    w = q[:, 3 * n_each:4 * n_each].T
    dirs = torch.zeros(3 * n_each, 2, d)
    s = slice(0, n_each)
    dirs[s, 0] = u[s]
    dirs[s, 1] = math.cos(rotate) * u[s] + math.sin(rotate) * w
    dirs[n_each:2 * n_each, 0] = u[n_each:2 * n_each]
    dirs[2 * n_each:, 1] = u[2 * n_each:]
    groups = ["shared"] * n_each + ["base-only"] * n_each + ["finetuned-only"] * n_each
    codes = (torch.rand(n, 3 * n_each, generator=gen) + 0.5) \
        * (torch.rand(n, 3 * n_each, generator=gen) < p)
    return torch.einsum("nf,fmd->nmd", codes, dirs), dirs, groups


@pytest.mark.science
@pytest.mark.parametrize("seed, rotate", [(0, 0.0), (1, 0.4)])
def test_relative_norms_separate_shared_and_exclusive_features(seed, rotate):
    """Every feature's best-matching latent has the relative norm of its group: shared ≈ 0.5,
    base-only ≈ 0, fine-tuned-only ≈ 1, with no overlap between the groups; the fine-tuned-only
    ones pass Latent Scaling as truly exclusive (the base explains none of them)."""
    d, n_each = 32, 8
    x, dirs, groups = ground_truth_pairs(40_000, d, n_each, rotate=rotate, seed=seed)
    cc = sae.create(sae.CrosscoderConfig(d_in=d, d_sae=64, k=2, seed=seed), device="cpu")
    sae.train(cc, itertools.cycle(x.split(512)), steps=3000, progress=False)
    unit = torch.nn.functional.normalize
    cos = unit(cc.W_dec_models.detach().flatten(1), dim=-1) @ unit(dirs.flatten(1), dim=-1).T
    best_cos, best = cos.max(0)                               # each feature's best latent
    assert float(best_cos.min()) > 0.8, best_cos              # every feature found
    rel = xc.relative_norms(cc)[best]
    by = {g: rel[[f for f, h in enumerate(groups) if h == g]] for g in set(groups)}
    assert float(by["shared"].min()) > 0.4 and float(by["shared"].max()) < 0.6, by
    assert float(by["base-only"].max()) < 0.35 and float(by["base-only"].median()) < 0.05, by
    assert float(by["finetuned-only"].min()) > 0.65, by
    assert float(by["finetuned-only"].median()) > 0.95, by
    labels = xc.classify(cc)
    agree = sum(labels[int(best[f])] == g for f, g in enumerate(groups))
    assert agree >= 0.8 * len(groups), (agree, [labels[int(j)] for j in best])
    ft = best[[f for f, g in enumerate(groups) if g == "finetuned-only"]]
    r = xc.latent_scaling(cc, x[:8192], latents=ft)
    assert float(r.nu_error.abs().max()) < 0.2 and float(r.nu_recon.abs().max()) < 0.2, r
    assert bool(r.exclusive().all())
