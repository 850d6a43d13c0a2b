"""The SAE architectures: one contract, each architecture's own mechanism, and the SAELens
folder format in both directions."""

from __future__ import annotations

import json

import pytest
import torch

from superpose import sae
from superpose.sae import io
from superpose.sae.config import ARCHITECTURE_OPTIONS

ARCHS = list(sae.ARCHITECTURES)
D_IN, D_SAE, K = 8, 32, 4


def make(arch: str, **kw) -> sae.SAE:
    if "k" in ARCHITECTURE_OPTIONS[arch]:
        kw.setdefault("k", K)
    cfg = sae.SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, **kw)
    return sae.create(cfg, device="cpu")


def randomize(s: sae.SAE, seed: int = 1) -> sae.SAE:
    """Non-trivial biases and thresholds, so save/load and SAELens checks see every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in s.parameters():
            if p.ndim == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        if hasattr(s, "log_threshold"):
            s.log_threshold.copy_(torch.full((D_SAE,), 0.02).log())
        if isinstance(s, sae.BatchTopKSAE):
            s.threshold.fill_(0.03)
    return s


def x_batch(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, D_IN, generator=torch.Generator().manual_seed(seed))


# ---- the shared contract ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_encode_decode_contract(arch):
    s = randomize(make(arch)).eval()
    x = x_batch(3, 5)
    acts = s.encode(x)
    assert acts.shape == (3, 5, D_SAE) and (acts >= 0).all()
    recon = s.decode(acts)
    assert recon.shape == x.shape
    torch.testing.assert_close(s(x), recon)
    out = s.training_forward(x)
    assert out.recon.shape == x.shape and out.acts.shape == acts.shape
    assert "mse" in out.losses
    torch.testing.assert_close(out.loss, sum(out.losses.values()))
    torch.testing.assert_close(out.losses["mse"], (out.recon - x).pow(2).sum(-1).mean())


@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_fire(arch):
    s = make(arch).eval()
    _, cache = s.run_with_cache(x_batch(6))
    names = {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
             "hook_sae_output"}
    assert names <= set(cache.keys())
    assert cache["hook_sae_acts_post"].shape == (6, D_SAE)


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_on_latents_changes_output(arch):
    """Zeroing the latents through a hook leaves only b_dec (also on TopK's sparse path)."""
    s = randomize(make(arch)).eval()
    x = x_batch(4)
    out = s.run_with_hooks(x, fwd_hooks=[("hook_sae_acts_post", lambda t, hook: t * 0)])
    torch.testing.assert_close(out, s.b_dec.detach().expand_as(out))


@pytest.mark.parametrize("arch", ARCHS)
def test_training_forward_backprops(arch):
    s = make(arch).train()
    out = s.training_forward(x_batch(16), dead_mask=torch.ones(D_SAE, dtype=torch.bool))
    out.loss.backward()
    assert s.W_enc.grad is not None and torch.isfinite(s.W_enc.grad).all()
    assert s.W_dec.grad.abs().sum() > 0


def test_seeded_initialisation():
    a, b = make("relu", seed=3), make("relu", seed=3)
    torch.testing.assert_close(a.W_dec, b.W_dec)
    assert not torch.equal(a.W_dec, make("relu", seed=4).W_dec)
    torch.testing.assert_close(a.W_dec_norms, torch.full((D_SAE,), 0.1))
    torch.testing.assert_close(a.W_enc, a.W_dec.T)


# ---- each architecture's mechanism ------------------------------------------------------------
def test_relu_sparsity_is_decoder_norm_weighted_l1():
    s = make("relu", sparsity_coefficient=2.0)
    with torch.no_grad():
        s.W_dec.mul_(torch.linspace(0.5, 3.0, D_SAE)[:, None])
    x = x_batch(10)
    out = s.training_forward(x)
    expected = 2.0 * (out.acts * s.W_dec.norm(dim=-1)).sum(-1).mean()
    torch.testing.assert_close(out.losses["sparsity"], expected)


def test_topk_exactly_k_per_row():
    s = make("topk")
    with torch.no_grad():
        s.b_enc.fill_(10.0)      # every pre-activation positive, so the ReLU keeps all k
    acts = s.encode(x_batch(2, 7))
    assert ((acts != 0).sum(-1) == K).all()
    s2 = randomize(make("topk"))
    assert ((s2.encode(x_batch(50)) != 0).sum(-1) <= K).all()


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_decode_equals_dense(arch):
    s = randomize(make(arch)).train()
    x = x_batch(3, 9)
    with torch.no_grad():
        enc = s._encode(x)
        dense = s.decode(enc.acts)
        torch.testing.assert_close(s._decode_train(enc), dense)
        if arch == "topk":
            torch.testing.assert_close(
                s.decode_sparse(enc.extra["values"], enc.extra["indices"]), dense)
            torch.testing.assert_close(s(x), dense)


def test_topk_sparse_decode_gradients_match_dense():
    s = randomize(make("topk"))
    x = x_batch(12)
    grads = []
    for sparse in (True, False):
        s.zero_grad(set_to_none=True)
        enc = s._encode(x)
        r = s.decode_sparse(enc.extra["values"], enc.extra["indices"]) if sparse \
            else s.decode(enc.acts)
        (r - x).pow(2).sum().backward()
        grads.append([p.grad.clone() for p in (s.W_enc, s.W_dec, s.b_enc, s.b_dec)])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2)


def test_topk_auxk_uses_only_dead_latents():
    s = randomize(make("topk", k_aux=3))
    x = x_batch(20)
    assert s.training_forward(x).losses["aux"] == 0
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:5] = True
    out = s.training_forward(x, dead_mask=dead)
    assert out.losses["aux"] > 0
    out.losses["aux"].backward()
    assert s.W_dec.grad[5:].abs().sum() == 0 and s.W_dec.grad[:5].abs().sum() > 0


def test_batchtopk_total_active_is_k_times_batch_in_training():
    s = make("batchtopk").train()
    with torch.no_grad():
        s.b_enc.fill_(1.0)
    out = s.training_forward(x_batch(4, 6))
    assert int((out.acts != 0).sum()) == K * 24
    per_row = (out.acts != 0).sum(-1)
    assert per_row.min() >= 0 and per_row.max() <= D_SAE
    assert s.threshold > 0       # the EMA moved θ toward the smallest kept activation


def test_batchtopk_eval_uses_threshold():
    s = randomize(make("batchtopk")).eval()
    with torch.no_grad():
        s.threshold.fill_(0.5)
    x = x_batch(30)
    pre = s.process_input(x) @ s.W_enc + s.b_enc
    acts = s.encode(x)
    torch.testing.assert_close(acts, torch.where(pre > 0.5, pre, torch.zeros_like(pre)))
    assert s.training_forward(x).acts.shape == (30, D_SAE)


def test_jumprelu_ste_gradient_to_threshold_within_bandwidth():
    s = make("jumprelu", jumprelu_bandwidth=0.1, jumprelu_threshold_init=0.5)
    pre = torch.tensor([[0.52, 0.9, 0.1] + [0.0] * (D_SAE - 3)], requires_grad=True)
    from superpose.sae.jumprelu import _JumpReLU, _Step
    theta = s.threshold
    _JumpReLU.apply(pre, theta, 0.1).sum().backward()
    g = s.log_threshold.grad
    # latent 0 is within ε/2 of θ: dθ = −θ/ε = −5, times dθ/dlogθ = θ; the others are outside
    torch.testing.assert_close(g[0], torch.tensor(-5.0 * 0.5))
    assert (g[1:] == 0).all()
    s.log_threshold.grad = None
    _Step.apply(pre, s.threshold, 0.1).sum().backward()
    torch.testing.assert_close(s.log_threshold.grad[0], torch.tensor(-10.0 * 0.5))
    out = make("jumprelu").training_forward(x_batch(40))     # default θ = 0.001
    assert out.losses["sparsity"] > 0


def test_gated_losses_and_frozen_aux_decoder():
    s = randomize(make("gated"))
    out = s.training_forward(x_batch(10))
    assert set(out.losses) == {"mse", "sparsity", "aux"}
    s.zero_grad()
    out.losses["aux"].backward()
    assert s.W_dec.grad is None or s.W_dec.grad.abs().sum() == 0   # the decoder is frozen
    assert s.W_enc.grad.abs().sum() > 0 and s.b_gate.grad.abs().sum() > 0


# ---- norms and scales -------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_normalisation(arch):
    s = randomize(make(arch)).eval()
    with torch.no_grad():
        s.W_dec.mul_(torch.linspace(0.3, 2.0, D_SAE)[:, None])
    x = x_batch(25)
    before = s(x)
    if arch in ("topk", "batchtopk"):
        with pytest.raises(ValueError, match="normalize_decoder"):
            s.fold_decoder_norms()
    else:
        s.fold_decoder_norms()
        torch.testing.assert_close(s(x), before, atol=1e-5, rtol=1e-5)
    s.normalize_decoder()
    torch.testing.assert_close(s.W_dec_norms, torch.ones(D_SAE))


@pytest.mark.parametrize("arch", ARCHS)
def test_activation_scale_folds_without_changing_outputs(arch):
    s = randomize(make(arch, activation_scale=3.0)).eval()
    x = x_batch(20)
    before = s(x)
    s.fold_activation_scale()
    assert s.cfg.activation_scale == 1.0
    torch.testing.assert_close(s(x), before, atol=1e-5, rtol=1e-5)


# ---- save / load ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, tmp_path):
    s = randomize(make(arch, hook_name="blocks.0.hook_resid_post", activation_scale=2.0)).eval()
    x = x_batch(15)
    s.save(tmp_path / "s")
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == ["cfg.json", "sae_weights.safetensors"]
    loaded = sae.load(tmp_path / "s", device="cpu").eval()
    assert type(loaded) is type(s) and loaded.cfg.activation_scale == 1.0
    assert loaded.cfg == s.cfg.replace(activation_scale=1.0)
    torch.testing.assert_close(loaded(x), s(x), atol=1e-5, rtol=1e-5)
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(arch, arch)
    assert cfg["normalize_activations"] == "none"
    assert cfg["hook_name"] == cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"


def test_failed_save_keeps_previous_folder(tmp_path, monkeypatch):
    s = randomize(make("relu"))
    s.save(tmp_path / "s")
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        make("topk").save(tmp_path / "s")
    after = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}
    assert after == before


def _write_saelens_folder(path, cfg: dict, tensors: dict) -> None:
    from safetensors.torch import save_file
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: t.contiguous() for k, t in tensors.items()},
              str(path / "sae_weights.safetensors"))


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_load_folder_written_by_saelens(arch, tmp_path):
    """A folder laid out as SAELens 6.x `save_model` writes it (keys from sae_lens/saes/sae.py
    `SAEConfig.to_dict`), checked against the forward pass computed by hand."""
    g = torch.Generator().manual_seed(5)
    W_enc, W_dec = torch.randn(D_IN, D_SAE, generator=g), torch.randn(D_SAE, D_IN, generator=g)
    b_enc, b_dec = 0.1 * torch.randn(D_SAE, generator=g), 0.1 * torch.randn(D_IN, generator=g)
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    apply_b_dec = arch != "jumprelu"            # Gemma Scope JumpReLUs do not subtract b_dec
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "reshape_activations": "none", "architecture": arch,
           "metadata": {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_pre",
                        "sae_lens_version": "6.5.0"}}
    if arch == "topk":
        cfg["k"] = K
    if arch == "jumprelu":
        tensors["threshold"] = torch.rand(D_SAE, generator=g)
    _write_saelens_folder(tmp_path / "f", cfg, tensors)
    loaded = sae.load(tmp_path / "f", device="cpu").eval()
    assert loaded.cfg.hook_name == "blocks.3.hook_resid_pre"

    x = x_batch(11)
    pre = (x - b_dec * apply_b_dec) @ W_enc + b_enc
    if arch == "standard":
        acts = pre.relu()
    elif arch == "topk":
        top = pre.topk(K, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    else:
        acts = pre.relu() * (pre > tensors["threshold"])
    torch.testing.assert_close(loaded.encode(x), acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded(x), acts @ W_dec + b_dec, atol=1e-5, rtol=1e-5)


def _saelens_topk_tensors(seed: int = 5):
    """Random SAELens-named tensors with decoder rows of norms 0.3..2."""
    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(D_IN, D_SAE, generator=g) / D_IN ** 0.5
    W_dec = torch.randn(D_SAE, D_IN, generator=g)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * torch.linspace(0.3, 2.0, D_SAE)[:, None]
    b_enc, b_dec = 0.1 * torch.randn(D_SAE, generator=g), 0.1 * torch.randn(D_IN, generator=g)
    return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}


def _saelens_cfg(arch: str, **kw) -> dict:
    return {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none",
            "reshape_activations": "none", "architecture": arch,
            "metadata": {"sae_lens_version": "6.54.12"}, **kw}


@pytest.mark.parametrize("rescale", [True, False])
def test_topk_rescale_acts_by_decoder_norm_loads_as_saelens_computes_it(rescale, tmp_path):
    """SAELens topk_sae.py with rescale_acts_by_decoder_norm: acts = TopK(z·n), recon =
    (acts / n) @ W_dec + b_dec, n the decoder row norms (what TopKTrainingSAE.save_model
    writes, unnormalised rows included). The loader folds n into the weights."""
    t = _saelens_topk_tensors()
    _write_saelens_folder(tmp_path / "f", _saelens_cfg("topk", k=K,
                                                       rescale_acts_by_decoder_norm=rescale), t)
    loaded = sae.load(tmp_path / "f", device="cpu").eval()
    n = t["W_dec"].norm(dim=-1) if rescale else torch.ones(D_SAE)
    x = x_batch(40)
    z = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * n
    top = z.topk(K, dim=-1)
    acts = torch.zeros_like(z).scatter(-1, top.indices, top.values.relu())
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), acts, atol=1e-5, rtol=1e-5)
        any_acts = torch.rand(7, D_SAE, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(loaded.decode(any_acts), (any_acts / n) @ t["W_dec"]
                                   + t["b_dec"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(x), (acts / n) @ t["W_dec"] + t["b_dec"],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
def test_batchtopk_training_checkpoint_loads(arch, tmp_path):
    """A BatchTopKTrainingSAE.save_model folder (batchtopk_sae.py): batch top-k of ReLU(z·n) in
    training, and in eval mode the JumpReLU with θ = topk_threshold that its
    save_inference_model writes (threshold in units of z·n)."""
    t = _saelens_topk_tensors()
    t["topk_threshold"] = torch.tensor(0.2, dtype=torch.float64)
    cfg = _saelens_cfg(arch, k=float(K), rescale_acts_by_decoder_norm=True,
                       topk_threshold_lr=0.05, matryoshka_widths=[8, D_SAE])
    _write_saelens_folder(tmp_path / "f", cfg, t)
    loaded = sae.load(tmp_path / "f", device="cpu")
    assert isinstance(loaded, sae.BatchTopKSAE) and loaded.cfg.batchtopk_threshold_lr == 0.05
    n = t["W_dec"].norm(dim=-1)
    x = x_batch(10)
    z = (((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * n).relu()
    top = z.flatten().topk(K * 10)
    batch = torch.zeros(10 * D_SAE).scatter(0, top.indices, top.values).reshape(10, D_SAE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.train().encode(x), batch, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(x), (batch / n) @ t["W_dec"] + t["b_dec"],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.eval().encode(x), z * (z > 0.2), atol=1e-5,
                                   rtol=1e-5)


def test_saelens_refusals_name_the_field_and_value(tmp_path, user_errors):
    """What SAELens can write that these SAEs do not compute is refused, never loaded wrong."""
    t = _saelens_topk_tensors()
    cases = [
        (_saelens_cfg("standard", normalize_activations="layer_norm"),
         "normalize_activations='layer_norm' is not supported"),
        (_saelens_cfg("standard", normalize_activations="constant_norm_rescale"),
         "normalize_activations='constant_norm_rescale' is not supported"),
        (_saelens_cfg("standard", normalize_activations="expected_average_only_in"),
         "normalize_activations='expected_average_only_in' is not supported.*scale that is "
         "not in this folder"),
        (_saelens_cfg("standard", normalize_activations="covariance_whitening"),
         "normalize_activations='covariance_whitening' is not supported"),
        (_saelens_cfg("standard", reshape_activations="hook_q"),
         "reshape_activations='hook_q' is not supported"),
        (_saelens_cfg("abstopk", k=K), "architecture='abstopk' is not supported"),
        (_saelens_cfg("transcoder", d_out=D_IN), "architecture='transcoder' is not supported"),
        (_saelens_cfg("batchtopk", k=2.5), "k=2.5 is not supported"),
        (_saelens_cfg("topk", k=K, rescale_acts_by_decoder_norm="yes"),
         "rescale_acts_by_decoder_norm='yes' is not supported"),
        ({"d_in": D_IN, "d_sae": D_SAE, "activation_fn_str": "tanh-relu"},
         "activation_fn='tanh-relu' is not supported"),
        (_saelens_cfg("standard", reshape_activations="hook_z",
                      metadata={"hook_name": "blocks.0.hook_resid_pre",
                                "sae_lens_version": "6.0.0"}),
         "reshape_activations='hook_z' is for attention z hooks"),
        (_saelens_cfg("standard", metadata={"hook_name": "blocks.0.attn.hook_z",
                                            "hook_head_index": 2, "sae_lens_version": "6.0.0"}),
         "hook_head_index=2 is not supported"),
    ]
    for i, (cfg, message) in enumerate(cases):
        _write_saelens_folder(tmp_path / f"c{i}", cfg, t)
        with pytest.raises(ValueError, match=message):
            sae.load(tmp_path / f"c{i}")
    bad = dict(t, threshold=torch.full((D_SAE,), -0.1))
    _write_saelens_folder(tmp_path / "neg", _saelens_cfg("jumprelu"), bad)
    with pytest.raises(ValueError, match="threshold is negative"):
        sae.load(tmp_path / "neg")
    zero = dict(t, W_dec=t["W_dec"].clone().index_fill_(0, torch.tensor([3]), 0.0))
    _write_saelens_folder(tmp_path / "zero", _saelens_cfg(
        "topk", k=K, rescale_acts_by_decoder_norm=True), zero)
    with pytest.raises(ValueError, match=r"rescale_acts_by_decoder_norm=True is not "
                                         r"supported: decoder rows \[3\] have norm 0"):
        sae.load(tmp_path / "zero")
    scaled = dict(t, scaling_factor=torch.full((D_SAE,), 2.0))
    _write_saelens_folder(tmp_path / "sf", _saelens_cfg("standard"), scaled)
    with pytest.raises(ValueError, match="scaling_factor='not all 1' is not supported"):
        sae.load(tmp_path / "sf")


def test_pre_6_saelens_config_loads(tmp_path):
    """A pre-6.0 cfg.json (no sae_lens_version): hook_point, activation_fn_str="topk" with
    activation_fn_kwargs.k, an all-ones scaling_factor (SAELens drops it)."""
    t = dict(_saelens_topk_tensors(), scaling_factor=torch.ones(D_SAE))
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "torch.float32",
           "hook_point": "blocks.1.hook_resid_pre", "activation_fn_str": "topk",
           "activation_fn_kwargs": {"k": K}, "normalize_activations": False}
    _write_saelens_folder(tmp_path / "f", cfg, t)
    loaded = sae.load(tmp_path / "f", device="cpu")
    assert isinstance(loaded, sae.TopKSAE) and loaded.cfg.k == K
    assert loaded.cfg.hook_name == "blocks.1.hook_resid_pre"


def test_topk_folder_writes_rescale_false(tmp_path):
    """SAELens's TopKTrainingSAEConfig defaults rescale_acts_by_decoder_norm to true, so our
    (unit-norm-free) TopK folders must say false."""
    make("topk").save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["rescale_acts_by_decoder_norm"] is False and cfg["k"] == K


# ---- hook_z: [..., n_heads, d_head] input -------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_hook_z_takes_heads_and_returns_their_shape(arch, tmp_path):
    """SAELens sae.py reshape_fn_in / reshape_fn_out: [..., n_heads, d_head] is flattened
    before encoding and forward returns that shape; flat [..., d_in] rows still work."""
    s = randomize(make(arch, reshape_activations="hook_z",
                       hook_name="blocks.0.attn.hook_z")).eval()
    x = x_batch(3, 5).unflatten(-1, (2, D_IN // 2))            # [3, 5, 2, 4]
    flat = x.flatten(-2)
    with torch.no_grad():
        acts = s.encode(x)
        assert acts.shape == (3, 5, D_SAE)
        torch.testing.assert_close(acts, s.encode(flat))
        out = s(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out.flatten(-2), s(flat))
        assert s.decode(acts).shape == (3, 5, D_IN)
        _, cache = s.run_with_cache(x)
        assert cache["hook_sae_input"].shape == (3, 5, D_IN)
        assert cache["hook_sae_output"].shape == x.shape
    train = s.train().training_forward(x)
    torch.testing.assert_close(train.recon, s.training_forward(flat).recon)
    s.save(tmp_path / "z")
    assert json.loads((tmp_path / "z" / "cfg.json").read_text())["reshape_activations"] \
        == "hook_z"
    back = sae.load(tmp_path / "z", device="cpu").eval()
    assert back.cfg.reshape_activations == "hook_z"
    with torch.no_grad():
        torch.testing.assert_close(back(x), s.eval()(x), atol=1e-5, rtol=1e-5)


def test_hook_z_errors(user_errors):
    with pytest.raises(ValueError, match="reshape_activations must be one of"):
        sae.SAEConfig(d_in=8, d_sae=4, reshape_activations="heads")
    with pytest.raises(ValueError, match="hook_name is 'blocks.0.hook_resid_post'"):
        sae.SAEConfig(d_in=8, d_sae=4, reshape_activations="hook_z",
                      hook_name="blocks.0.hook_resid_post")
    s = make("relu", reshape_activations="hook_z")
    with pytest.raises(ValueError, match=r"\[\.\.\., n_heads, d_head\] with n_heads \* d_head "
                                         r"= 8, got shape \[3, 3, 3\]"):
        s(torch.randn(3, 3, 3))
    with pytest.raises(ValueError, match="last dimension 8"):
        make("relu")(torch.randn(3, 2, 4))            # no reshaping without hook_z


# ---- bad input --------------------------------------------------------------------------------
def test_config_errors(user_errors):
    with pytest.raises(ValueError, match=r"k \(64\) must not exceed d_sae \(32\)"):
        sae.SAEConfig(d_in=8, d_sae=32, architecture="topk", k=64)
    with pytest.raises(ValueError, match=r"architecture must be one of \['relu', 'topk', "
                                         r".*got 'topkk' \(did you mean 'topk'\?\)"):
        sae.SAEConfig(d_in=8, d_sae=32, architecture="topkk")
    with pytest.raises(ValueError, match="d_sae must be a positive integer, got 0"):
        sae.SAEConfig(d_in=8, d_sae=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        sae.SAEConfig(d_in=8, d_sae=4, dtype="float8")
    with pytest.raises(ValueError, match="unknown SAEConfig field"):
        sae.SAEConfig(d_in=8, d_sae=4).replace(kk=3)
    with pytest.raises(ValueError, match="is the 'relu' architecture"):
        sae.ReLUSAE(sae.SAEConfig(d_in=8, d_sae=4, architecture="gated"))


def test_input_errors(user_errors):
    s = make("topk")
    with pytest.raises(ValueError, match=r"expects activations with last dimension 8, got "
                                         r"shape \[3, 5\]"):
        s(torch.randn(3, 5))
    with pytest.raises(ValueError, match="last dimension 32"):
        s.decode(torch.randn(3, 5))
    with pytest.raises(ValueError, match="dead_mask must be a bool tensor"):
        s.training_forward(x_batch(3), dead_mask=torch.ones(D_SAE))


def test_load_errors(tmp_path, user_errors):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        sae.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no cfg.json; it is not an SAE folder"):
        sae.load(tmp_path / "empty")

    s = randomize(make("relu"))
    s.save(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    cfg["superpose"]["d_sae"] = cfg["d_sae"] = 16      # both libraries' keys edited alike
    (tmp_path / "a" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"sae_weights.safetensors \(for relu, d_in=8, "
                                         r"d_sae=16\): its weights do not fit the model .*"
                                         r"shape file/model \{.*'W_dec': \(\(32, 8\), "
                                         r"\(16, 8\)\)"):
        sae.load(tmp_path / "a")

    s.save(tmp_path / "b")
    cfg = json.loads((tmp_path / "b" / "cfg.json").read_text())
    del cfg["superpose"]
    cfg["architecture"] = "standrad"
    (tmp_path / "b" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"unknown SAE architecture 'standrad'.*did you mean "
                                         r"'standard'"):
        sae.load(tmp_path / "b")

    s.save(tmp_path / "c")
    (tmp_path / "c" / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="was changed after it was written"):
        sae.load(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "cfg.json").read_text())
    del cfg[io.HASH_KEY]                              # as a folder SAELens wrote: no hash
    (tmp_path / "c" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="is corrupt and cannot be read"):
        sae.load(tmp_path / "c")

    s.save(tmp_path / "d")
    (tmp_path / "d" / "cfg.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        sae.load(tmp_path / "d")
    assert io.CFG_FILE == "cfg.json"


# ---- options per architecture -----------------------------------------------------------------
# Each architecture's own options and defaults, written out here rather than read from
# config.ARCHITECTURE_OPTIONS, so a changed default or a lost entry in that table fails.
DEFAULTS = {
    "relu": {"sparsity_coefficient": 1.0},
    "topk": {"k": 32, "k_aux": 32, "aux_coefficient": 1 / 32},
    "batchtopk": {"k": 32, "k_aux": 32, "aux_coefficient": 1 / 32,
                  "batchtopk_threshold_lr": 0.01},
    "jumprelu": {"sparsity_coefficient": 1.0, "jumprelu_threshold_init": 0.001,
                 "jumprelu_bandwidth": 0.001},
    "gated": {"sparsity_coefficient": 1.0},
}
OPTIONS = sorted({o for opts in DEFAULTS.values() for o in opts})
FOREIGN = [(a, o) for a in DEFAULTS for o in OPTIONS if o not in DEFAULTS[a]]
SOME_VALUE = {"k": 8, "k_aux": 3, "aux_coefficient": 0.5, "sparsity_coefficient": 0.3,
              "jumprelu_threshold_init": 0.2, "jumprelu_bandwidth": 0.05,
              "batchtopk_threshold_lr": 0.1}


@pytest.mark.parametrize("arch", list(DEFAULTS))
def test_each_architecture_gets_its_own_defaults_and_none_of_the_others(arch):
    assert sorted(DEFAULTS) == sorted(sae.ARCHITECTURES)
    cfg = sae.SAEConfig(d_in=64, d_sae=128, architecture=arch)
    assert {o: getattr(cfg, o) for o in OPTIONS} == \
        {o: DEFAULTS[arch].get(o) for o in OPTIONS}


@pytest.mark.parametrize("arch", list(DEFAULTS))
def test_each_architecture_takes_its_own_options(arch):
    given = {o: SOME_VALUE[o] for o in DEFAULTS[arch]}
    cfg = sae.SAEConfig(d_in=64, d_sae=128, architecture=arch, **given)
    assert {o: getattr(cfg, o) for o in given} == given
    assert sae.create(cfg, device="cpu").cfg == cfg


@pytest.mark.parametrize("arch,option", FOREIGN)
def test_an_option_of_another_architecture_is_refused(arch, option, user_errors):
    users = [a for a in DEFAULTS if option in DEFAULTS[a]]
    with pytest.raises(ValueError) as e:
        sae.SAEConfig(d_in=64, d_sae=128, architecture=arch, **{option: SOME_VALUE[option]})
    msg = str(e.value)
    assert msg.startswith(f"{option}={SOME_VALUE[option]!r} does not apply to architecture "
                          f"{arch!r}")
    assert str(users) in msg and f"leave {option} out (None)" in msg


def test_relu_given_k_is_refused_naming_k(user_errors):
    with pytest.raises(ValueError, match=r"k=16 does not apply to architecture 'relu' \(only "
                                         r"\['topk', 'batchtopk'\] use k\)"):
        sae.SAEConfig(d_in=8, d_sae=32, k=16)


def test_k_aux_default_follows_d_in():
    assert sae.SAEConfig(d_in=10, d_sae=32, architecture="topk", k=4).k_aux == 5
    assert sae.SAEConfig(d_in=1, d_sae=32, architecture="batchtopk", k=4).k_aux == 1


def test_replace_to_another_architecture_needs_the_old_options_cleared(user_errors):
    cfg = sae.SAEConfig(d_in=8, d_sae=32, architecture="topk", k=4)
    with pytest.raises(ValueError, match="k=4 does not apply to architecture 'relu'"):
        cfg.replace(architecture="relu")
    relu = cfg.replace(architecture="relu", k=None, k_aux=None, aux_coefficient=None)
    assert relu.sparsity_coefficient == 1.0 and relu.k is None


# ---- configs saved before options were refused ------------------------------------------------
def _old_superpose_block(**fields) -> dict:
    """Our "superpose" block as format_version 1 wrote it: every SAEConfig field, the options of
    the other architectures included (ignored by that version)."""
    return {"format_version": 1, "d_in": D_IN, "d_sae": D_SAE, "architecture": "relu",
            "k": 32, "k_aux": None, "aux_coefficient": 0.03125, "sparsity_coefficient": 1.0,
            "jumprelu_threshold_init": 0.001, "jumprelu_bandwidth": 0.001,
            "batchtopk_threshold_lr": 0.01, "decoder_init_norm": 0.1,
            "apply_b_dec_to_input": True, "activation_scale": 1.0, "dtype": "float32",
            "reshape_activations": "none", "hook_name": "blocks.0.hook_resid_post",
            "model_name": None, "seed": 0, **fields}


@pytest.mark.parametrize("arch,fields,expected", [
    ("relu", {"k": 16, "sparsity_coefficient": 0.3},
     {"sparsity_coefficient": 0.3, "k": None, "k_aux": None, "aux_coefficient": None}),
    ("topk", {"k": 4}, {"k": 4, "k_aux": D_IN // 2, "sparsity_coefficient": None}),
    ("batchtopk", {"k": 4, "k_aux": 3, "batchtopk_threshold_lr": 0.05},
     {"k": 4, "k_aux": 3, "batchtopk_threshold_lr": 0.05, "jumprelu_bandwidth": None}),
    ("jumprelu", {"jumprelu_bandwidth": 0.1}, {"jumprelu_bandwidth": 0.1, "k": None}),
])
def test_folder_saved_by_format_version_1_still_loads(arch, fields, expected, tmp_path):
    s = randomize(make(arch, **{k: x for k, x in fields.items() if k in DEFAULTS[arch]})).eval()
    s.save(tmp_path / "s")
    path = tmp_path / "s" / "cfg.json"
    cfg = json.loads(path.read_text())
    cfg["superpose"] = _old_superpose_block(architecture=arch, **fields)
    path.write_text(json.dumps(cfg))
    loaded = sae.load(tmp_path / "s", device="cpu").eval()
    assert type(loaded) is type(s)
    assert {k: getattr(loaded.cfg, k) for k in expected} == expected
    x = x_batch(9)
    torch.testing.assert_close(loaded(x), s(x), atol=1e-6, rtol=1e-6)


def test_folder_of_format_version_2_refuses_a_foreign_option(tmp_path, user_errors):
    make("relu").save(tmp_path / "s")
    path = tmp_path / "s" / "cfg.json"
    cfg = json.loads(path.read_text())
    assert cfg["superpose"]["format_version"] == 2 and cfg["superpose"]["k"] is None
    cfg["superpose"]["k"] = 8
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"cfg.json: k=8 does not apply to architecture 'relu'"):
        sae.load(tmp_path / "s")
    cfg["superpose"]["format_version"] = 3
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"format_version=3; this superpose reads versions 1 "
                                         r"and 2"):
        sae.load(tmp_path / "s")


# ---- the package's import structure -----------------------------------------------------------
def _sae_imports() -> dict[str, tuple[set[str], list[str]]]:
    """For each module of superpose/sae: (the superpose.sae modules it imports at top level,
    the superpose imports it makes inside functions or classes)."""
    import ast
    import pathlib

    import superpose.sae as package

    modules = {p.stem: p for p in pathlib.Path(package.__file__).parent.glob("*.py")}
    out = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top, nested = set(), []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            ours = [t for t in targets if t.split(".")[0] == "superpose"]
            if not ours:
                continue
            if node in tree.body:
                top |= {t.split(".")[2] for t in ours
                        if t.startswith("superpose.sae.") and t.split(".")[2] in modules}
            else:
                nested.append(f"line {node.lineno}: {ours[0]}")
        out[name] = (top - {name}, nested)
    return out


def test_sae_modules_import_superpose_only_at_top_level():
    nested = {m: n for m, (_, n) in _sae_imports().items() if n}
    assert nested == {}, f"function-local superpose imports (hidden cycles?): {nested}"


def test_sae_modules_form_a_dag():
    graph = {m: deps for m, (deps, _) in _sae_imports().items() if m != "__init__"}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError(f"import cycle: {' -> '.join([*path[path.index(m):], m])}")
        if m not in done:
            for d in sorted(graph.get(m, ())):
                visit(d, [*path, m])
            done.add(m)

    for m in sorted(graph):
        visit(m, [])
    # the layering: the config and the folder format need no SAE class
    assert graph["config"] == set() and graph["io"] == {"config"}


def test_registry_config_table_and_format_agree():
    from superpose.sae.config import ARCHITECTURE_OPTIONS

    assert list(sae.ARCHITECTURES) == list(ARCHITECTURE_OPTIONS) == list(io.TO_SAELENS)
    for name, cls in sae.ARCHITECTURES.items():
        assert cls.architecture == name
    assert set(io.TO_SAELENS.values()) <= set(io.FROM_SAELENS)
