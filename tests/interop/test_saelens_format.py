"""SAE folders both ways against the real SAELens 6.x: every architecture it registers, written
by `save_model` (inference and training SAEs) and by `TrainingSAE.save_inference_model`, loads
here computing what SAELens loads from that folder (encode, decode and forward within 1e-5),
or is refused with a ValueError naming the field and value; and each of our architectures,
saved here, loads through both `SAE.load_from_disk` and `TrainingSAE.load_from_disk` computing
our function.

SAELens registers its classes in sae_lens/__init__.py (`register_sae_class`,
`register_sae_training_class`); the tests walk both registries, so an architecture a new
SAELens adds fails `test_every_saelens_architecture_is_handled` until it is supported or
refused on purpose (`superpose.sae.io.FROM_SAELENS` / `REFUSED_SAELENS`)."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
from sae_lens import SAE as LensSAE
from sae_lens import TrainingSAE as LensTrainingSAE
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY

from superpose import sae
from superpose.sae.io import FROM_SAELENS, REFUSED_SAELENS

pytestmark = pytest.mark.science   # the interop tier (make test-science)

D_IN, D_SAE, K, TOL = 16, 64, 4, 1e-5
N_HEADS, D_HEAD = 4, 4
HOOK, HOOK_Z = "blocks.0.hook_resid_post", "blocks.0.attn.hook_z"
TOPK_LIKE = ("topk", "abstopk", "batchtopk", "matryoshka_batchtopk")

# config keywords SAELens's classes need beyond d_in and d_sae (only those a class has are used)
EXTRA = {"k": K, "matryoshka_widths": [16, D_SAE], "d_out": D_IN, "n_heads": 2,
         "bottleneck_factor": 2}


def _lens_registry(training: bool) -> dict:
    return SAE_TRAINING_CLASS_REGISTRY if training else SAE_CLASS_REGISTRY


def build(name: str, training: bool, seed: int = 0, **flags):
    """A SAELens SAE of architecture `name` with random non-trivial weights: decoder rows of
    norms 0.3..2, nonzero biases, thresholds where some latents fire and some do not."""
    cls, cfg_cls = _lens_registry(training)[name]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    kw = {k: x for k, x in {**EXTRA, **flags}.items() if k in fields}
    if "d_out" in fields:                  # transcoders refuse apply_b_dec_to_input
        kw.setdefault("apply_b_dec_to_input", False)
    cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw)
    cfg.metadata.hook_name = HOOK_Z if flags.get("reshape_activations") == "hook_z" else HOOK
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = cls(cfg)
    fill(s, seed)
    return s


@torch.no_grad()
def fill(s, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, t in [*s.named_parameters(), *s.named_buffers()]:
        shape = t.shape
        if name == "W_enc":
            new = torch.randn(shape, generator=g) / shape[0] ** 0.5
        elif name == "W_dec":
            new = torch.randn(shape, generator=g)
            norms = 0.3 + 1.7 * torch.rand(shape[0], 1, generator=g)
            new = new / new.norm(dim=-1, keepdim=True) * norms
        elif name == "threshold":
            new = 0.05 + 0.5 * torch.rand(shape, generator=g)
        elif name == "topk_threshold":
            new = torch.tensor(0.3)
        elif name == "r_mag":
            new = 0.3 * torch.randn(shape, generator=g)
        elif t.ndim == 1:
            new = 0.1 * torch.randn(shape, generator=g)
        else:
            new = torch.randn(shape, generator=g) / shape[-1] ** 0.5
        t.copy_(new.to(t.dtype))


def dense(t: torch.Tensor) -> torch.Tensor:
    return t.to_dense() if t.is_sparse else t


def inputs(reshape: str = "none", seed: int = 1) -> torch.Tensor:
    x = torch.randn(6, 9, D_IN, generator=torch.Generator().manual_seed(seed))
    return x.unflatten(-1, (N_HEADS, D_HEAD)) if reshape == "hook_z" else x


@torch.no_grad()
def max_diffs(ours: sae.SAE, theirs, x: torch.Tensor) -> dict[str, float]:
    """Max |ours − theirs| of encode(x), decode(random latents) and forward(x); asserts the
    shapes SAELens returns (decode excepted for hook_z: ours stays flat, see SAE.decode)."""
    a_t, a_o = dense(theirs.encode(x)), ours.encode(x)
    assert a_o.shape == a_t.shape
    assert (a_t > 0).any() and (a_t == 0).any(), "the test SAE must have some latents active"
    g = torch.Generator().manual_seed(3)
    lat = torch.rand(a_t.shape, generator=g) * (torch.rand(a_t.shape, generator=g) < 0.2)
    d_t, d_o = theirs.decode(lat), ours.decode(lat)
    assert d_o.shape == (*a_t.shape[:-1], D_IN)
    f_t, f_o = theirs(x), ours(x)
    assert f_o.shape == f_t.shape == x.shape
    return {"encode": float((a_o - a_t).abs().max()),
            "decode": float((d_o - d_t.reshape(d_o.shape)).abs().max()),
            "forward": float((f_o - f_t).abs().max())}


def assert_same(ours: sae.SAE, theirs, x: torch.Tensor) -> None:
    d = max_diffs(ours, theirs, x)
    assert max(d.values()) <= TOL, d


def lens_load(path, training: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls = LensTrainingSAE if training else LensSAE
        return cls.load_from_disk(str(path), device="cpu")


def lens_load_cfg(path) -> dict:
    return json.loads((path / "cfg.json").read_text())


# ---- SAELens -> here ----------------------------------------------------------------------------
# (architecture, a training SAE?, config flags): every flag that changes the function
LENS_CASES = [
    ("standard", False, {}),
    ("standard", True, {}),
    ("standard", True, {"apply_b_dec_to_input": False}),
    ("gated", False, {}),
    ("gated", True, {}),
    ("gated", False, {"apply_b_dec_to_input": False}),
    ("jumprelu", False, {}),
    ("jumprelu", True, {}),
    ("jumprelu", True, {"apply_b_dec_to_input": False}),
    ("topk", False, {"rescale_acts_by_decoder_norm": False}),
    ("topk", False, {"rescale_acts_by_decoder_norm": True}),
    ("topk", True, {"rescale_acts_by_decoder_norm": True}),
    ("topk", True, {"rescale_acts_by_decoder_norm": False}),
    ("topk", True, {"rescale_acts_by_decoder_norm": True, "use_sparse_activations": True,
                    "apply_b_dec_to_input": False}),
    ("batchtopk", True, {"rescale_acts_by_decoder_norm": True}),
    ("batchtopk", True, {"rescale_acts_by_decoder_norm": False}),
    ("matryoshka_batchtopk", True, {"rescale_acts_by_decoder_norm": True}),
    ("matryoshka_batchtopk", True, {"rescale_acts_by_decoder_norm": False,
                                    "apply_b_dec_to_input": False}),
    ("standard", False, {"reshape_activations": "hook_z"}),
    ("topk", False, {"reshape_activations": "hook_z", "rescale_acts_by_decoder_norm": True}),
    ("jumprelu", True, {"reshape_activations": "hook_z"}),
]


def _case_id(case) -> str:
    name, training, flags = case
    return "-".join([name, "training" if training else "inference",
                     *(f"{k}={x}" for k, x in flags.items())])


@pytest.mark.parametrize("case", LENS_CASES, ids=_case_id)
def test_saelens_save_model_loads_here(case, tmp_path):
    """`save_model` of the SAELens SAE: ours equals the SAE itself and every SAELens loader
    that reads the folder (a batchtopk folder only loads as a TrainingSAE)."""
    # catches: read_saelens_config mapping an architecture or flag wrongly (FROM_SAELENS, the
    # defaults of apply_b_dec_to_input and rescale_acts_by_decoder_norm, reshape_activations),
    # saelens_tensors not folding decoder norms into W_enc / b_enc / W_dec, not exponentiating
    # log_threshold or not spreading topk_threshold over the latents, or an encode / decode /
    # forward (ReLU, gated's gate and magnitude paths, JumpReLU's threshold, TopK's k, hook_z
    # flattening) whose numbers or shapes differ from SAELens's by more than 1e-5.
    name, training, flags = case
    s = build(name, training, **flags)
    s.save_model(str(tmp_path / "m"))
    ours = sae.load(tmp_path / "m", device="cpu")
    assert ours.architecture == FROM_SAELENS[name]
    assert ours.cfg.reshape_activations == flags.get("reshape_activations", "none")
    hook_z = flags.get("reshape_activations") == "hook_z"
    # a TrainingSAE never reshapes (sae.py TrainingSAE.__init__): it takes flat rows
    refs = [(s, inputs("none" if training else flags.get("reshape_activations", "none")))]
    if training:
        refs.append((lens_load(tmp_path / "m", training=True), inputs()))
    if name in SAE_CLASS_REGISTRY:
        refs.append((lens_load(tmp_path / "m", training=False),
                     inputs("hook_z" if hook_z else "none")))
    for theirs, x in refs:
        assert_same(ours, theirs, x)


@pytest.mark.parametrize("case", [c for c in LENS_CASES if c[1]], ids=_case_id)
def test_saelens_save_inference_model_loads_here(case, tmp_path):
    """`save_inference_model` of a training SAE (TopK folds its decoder norms there; BatchTopK
    and Matryoshka become JumpReLU with θ = topk_threshold): ours equals SAE.load_from_disk.
    A BatchTopK training checkpoint loaded here computes that same JumpReLU in eval mode."""
    # catches: a loader that misreads what save_inference_model writes (TopK with its decoder norms
    # folded in, BatchTopK / Matryoshka rewritten as JumpReLU with theta = topk_threshold), or our
    # BatchTopK in eval mode not computing that JumpReLU with its threshold (a batch top-k would
    # give other latents).
    name, training, flags = case
    s = build(name, training, **flags)
    s.save_inference_model(str(tmp_path / "i"))
    ours = sae.load(tmp_path / "i", device="cpu").eval()
    theirs = lens_load(tmp_path / "i", training=False)
    x = inputs(flags.get("reshape_activations", "none"))
    assert_same(ours, theirs, x)
    if name in ("batchtopk", "matryoshka_batchtopk"):
        assert type(theirs).__name__ == "JumpReLUSAE"
        s.save_model(str(tmp_path / "m"))
        checkpoint = sae.load(tmp_path / "m", device="cpu").eval()
        assert isinstance(checkpoint, sae.BatchTopKSAE)
        assert_same(checkpoint, theirs, x)


def test_every_saelens_architecture_is_handled():
    """A new SAELens architecture must be supported (and given a case above) or refused."""
    # catches: FROM_SAELENS / REFUSED_SAELENS missing an architecture SAELens registers (its folders
    # would hit 'unknown SAE architecture' rather than load or be refused on purpose), or a
    # supported architecture with no case in LENS_CASES (untested).
    names = set(SAE_CLASS_REGISTRY) | set(SAE_TRAINING_CLASS_REGISTRY)
    unhandled = names - set(FROM_SAELENS) - set(REFUSED_SAELENS)
    assert not unhandled, f"SAELens architectures neither supported nor refused: {unhandled}"
    assert names & set(FROM_SAELENS) == {c[0] for c in LENS_CASES}


REGISTERED = [(n, False) for n in sorted(SAE_CLASS_REGISTRY)] + \
             [(n, True) for n in sorted(SAE_TRAINING_CLASS_REGISTRY)]


@pytest.mark.parametrize("name,training", REGISTERED,
                         ids=[f"{n}-{'training' if t else 'inference'}" for n, t in REGISTERED])
def test_every_registered_architecture_loads_or_is_refused(name, training, tmp_path):
    """Each registered class with its default config, through save_model (and
    save_inference_model for training classes): the same function, or a clear refusal."""
    # catches: an architecture in REFUSED_SAELENS that load() accepts anyway, or refuses without
    # naming the field and why; or a supported one whose default config, as SAELens's save_model /
    # save_inference_model writes it, loads here computing a different function.
    s = build(name, training)
    folders = [("m", s.save_model)]
    if training:
        folders.append(("i", s.save_inference_model))
    for sub, save in folders:
        save(str(tmp_path / sub))
        written = lens_load_cfg(tmp_path / sub)["architecture"]
        if written in REFUSED_SAELENS:
            with pytest.raises(ValueError, match=rf"architecture='{written}' is not supported: "
                                                 rf"{REFUSED_SAELENS[written][:20]}"):
                sae.load(tmp_path / sub)
            continue
        assert written in FROM_SAELENS, f"new SAELens architecture {written!r}"
        ours = sae.load(tmp_path / sub, device="cpu")
        if sub == "i":
            ours.eval()
        if sub == "m" and training:
            theirs = lens_load(tmp_path / sub, training=True)
        else:
            theirs = lens_load(tmp_path / sub, training=False)
        assert_same(ours, theirs, inputs())


@pytest.mark.parametrize("norm", ["expected_average_only_in", "constant_norm_rescale",
                                  "layer_norm", "covariance_whitening"])
def test_normalize_activations_is_refused(norm, tmp_path):
    # catches: read_saelens_config ignoring normalize_activations (the SAE would load without
    # SAELens's input normalisation and compute a different function) instead of refusing with the
    # field and value named, for inference and training folders alike.
    for training in (False, True):
        s = build("standard", training, normalize_activations=norm)
        s.save_model(str(tmp_path / f"{training}"))
        with pytest.raises(ValueError, match=f"normalize_activations='{norm}' is not supported"):
            sae.load(tmp_path / f"{training}")


def test_non_integer_batchtopk_k_is_refused(tmp_path):
    # catches: _whole rounding or truncating a fractional BatchTopK k (SAELens keeps k x batch
    # latents per batch, so ours would keep a different number) instead of refusing with k=2.5
    # named.
    build("batchtopk", True, k=2.5).save_model(str(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"k=2\.5 is not supported"):
        sae.load(tmp_path / "m")


def test_negative_jumprelu_threshold_is_refused(tmp_path):
    """SAELens's inference JumpReLU computes ReLU(z)·1[z > θ], its training one z·1[z > θ]:
    with θ < 0 they differ, and ours keeps log θ."""
    # catches: a JumpReLU that accepts a negative threshold (ours stores log theta, so it would turn
    # into NaN, and SAELens's inference and training JumpReLU disagree there) instead of refusing.
    s = build("jumprelu", True)
    with torch.no_grad():
        s.threshold[0] = -0.1
    s.save_model(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="threshold is negative"):
        sae.load(tmp_path / "m")


# ---- here -> SAELens ----------------------------------------------------------------------------
@torch.no_grad()
def ours_random(arch: str, **kw) -> sae.SAE:
    if arch in ("topk", "batchtopk"):
        kw.setdefault("k", K)
    s = sae.create(sae.SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch,
                                 hook_name=HOOK_Z if kw.get("reshape_activations") else HOOK,
                                 **kw), device="cpu")
    g = torch.Generator().manual_seed(7)
    s.W_enc.copy_(torch.randn(D_IN, D_SAE, generator=g) / D_IN ** 0.5)
    w = torch.randn(D_SAE, D_IN, generator=g)
    s.W_dec.copy_(w / w.norm(dim=-1, keepdim=True) * (0.3 + 1.7 * torch.rand(D_SAE, 1,
                                                                               generator=g)))
    for name, p in s.named_parameters():
        if p.ndim == 1 and name != "log_threshold":
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    if arch == "jumprelu":
        s.log_threshold.copy_((0.05 + 0.5 * torch.rand(D_SAE, generator=g)).log())
    if arch == "batchtopk":
        s.threshold.fill_(0.3)
    return s.eval()


OURS_CASES = [(a, kw) for a in sae.ARCHITECTURES
              for kw in ({}, {"apply_b_dec_to_input": False}, {"reshape_activations": "hook_z"})]


@pytest.mark.parametrize("arch,kw", OURS_CASES,
                         ids=[f"{a}-{'-'.join(map(str, kw.values())) or 'default'}"
                              for a, kw in OURS_CASES])
def test_saelens_loads_ours_and_we_load_theirs(arch, kw, tmp_path):
    """Ours saved here: SAE.load_from_disk and TrainingSAE.load_from_disk compute our function
    (BatchTopK's is its eval-mode JumpReLU); SAELens's save_model of that loads back here."""
    # catches: SAE.save / to_saelens_config writing a cfg.json or tensors SAELens reads as another
    # function (a wrong TO_SAELENS name, TopK without rescale_acts_by_decoder_norm=false so
    # TrainingSAE rescales, apply_b_dec_to_input or reshape_activations dropped, our BatchTopK not
    # written as a JumpReLU with its threshold, log_threshold / threshold confused), or a folder
    # SAELens saves back that does not load here as the same function and reshape flag.
    s = ours_random(arch, **kw)
    s.save(tmp_path / "ours")
    x = inputs(kw.get("reshape_activations", "none"))
    theirs = lens_load(tmp_path / "ours", training=False)
    assert_same(s, theirs, x)
    training = lens_load(tmp_path / "ours", training=True)
    assert_same(s, training, inputs())            # TrainingSAE never reshapes hook_z input
    for lens, sub in ((theirs, "theirs"), (training, "theirs_training")):
        lens.save_model(str(tmp_path / sub))
        back = sae.load(tmp_path / sub, device="cpu").eval()
        assert back.cfg.reshape_activations == s.cfg.reshape_activations
        assert_same(back, theirs, x)


def test_hook_z_shapes_match_saelens(tmp_path):
    """SAELens sae.py: encode flattens [..., n_heads, d_head], forward returns that shape;
    its decode un-flattens with the d_head its first encode saw, ours stays flat."""
    # catches: hook_z input [..., n_heads, d_head] not flattened before encode (wrong latent shape),
    # a forward that does not return the input's [..., n_heads, d_head] shape, or a decode of flat
    # latents that does not return flat [..., d_in] rows.
    s = build("topk", False, reshape_activations="hook_z")
    s.save_model(str(tmp_path / "z"))
    ours = sae.load(tmp_path / "z", device="cpu")
    x = inputs("hook_z")
    with torch.no_grad():
        assert ours.encode(x).shape == s.encode(x).shape == (6, 9, D_SAE)
        assert ours(x).shape == s(x).shape == x.shape
        assert s.decode(s.encode(x)).shape == x.shape
        assert ours.decode(ours.encode(x)).shape == (6, 9, D_IN)
