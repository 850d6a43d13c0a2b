"""Crosscoders for model diffing: one sparse dictionary over the paired activations of several
models (a base model and its fine-tune) at the same hook, read off by its decoder norms.

    cc = sae.create(sae.CrosscoderConfig(d_in=128, n_models=2, d_sae=2048, k=32))
    x = crosscoder.paired_activations([base, ft], "blocks.1.hook_resid_post", tokens)
    sae.train(cc, batches_of(x), steps=2000)     # x: [N, n_models, d_in]
    crosscoder.relative_norms(cc); crosscoder.classify(cc); crosscoder.latent_scaling(cc, x)

The model (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features and Model
Diffing", the acausal crosscoder): the models' activations x_m at one token share one latent
code,

    f(x) = σ(Σ_m W_enc[m]ᵀ x_m + b_enc)        W_enc [n_models, d_in, d_sae], b_enc [d_sae]
    x̂_m = Σ_j f_j(x) W_dec[j, m] + b_dec[m]    W_dec [d_sae, n_models, d_in], b_dec [n_models, d_in]

so each latent j has one decoder vector per model. A latent that a fine-tune introduced has
W_dec[j, base] ≈ 0; one both models use has both. Lindsey et al.'s relative decoder norm
‖d_ft‖ / (‖d_base‖ + ‖d_ft‖) is 0 for base-only, ½ for shared, 1 for fine-tuned-only latents
(`relative_norms`, `classify`).

σ is BatchTopK as in Minder et al. 2025 ("Overcoming Sparsity Artifacts in Crosscoders to
Interpret Chat-Tuning", arXiv 2504.02922; their dictionary_learning `BatchTopKCrossCoder`):
a training batch keeps its k·batch largest *scores* f_j(x)·Σ_m ‖W_dec[j, m]‖ (activation times
the latent's summed decoder norms) and passes the kept f_j unscaled; in eval mode a latent fires
when its score exceeds one threshold θ, the running (EMA) minimum kept score of training, as our
`BatchTopKSAE` estimates its own. The L1 crosscoder of Lindsey et al. penalises
f_j·Σ_m ‖W_dec[j, m]‖, which pays to shrink a weaker model's decoder vector to exactly 0, so
shared concepts look exclusive ("Complete Shrinkage") or split into two exclusive latents
("Latent Decoupling"); BatchTopK has no such penalty. Latent Scaling (`latent_scaling`, Minder
et al. §3) tests whether an apparently exclusive latent also explains the other model.

Layout. A crosscoder is a `BatchTopKSAE` on the flattened input [*batch, n_models·d_in]
(model-major), so `sae.train(cc, data)` trains it with the SAE trainer's checkpoints, resume,
dead-latent counters, AuxK and sparse fast path (`sparse_step`: gathers over the kept entries,
never the dense [batch, d_sae] gradient). `cc.cfg` is that flat `SAEConfig`;
`cc.crosscoder_cfg` is the `CrosscoderConfig`. The parameters are the flat ones (W_enc
[n_models·d_in, d_sae], W_dec [d_sae, n_models·d_in], b_dec [n_models·d_in]); `W_enc_models`,
`W_dec_models`, `b_dec_models` are views in the per-model layout above, which is also the saved
one. The trainer's unit-norm decoder rows constrain each latent's *concatenated* decoder vector,
a gauge fix (f_j·d_j is unchanged by rescaling both), so the per-model norms, and the relative
norms, stay free.

Input: [*batch, n_models, d_in] (what `paired_activations` returns), or the flat rows
[*batch, n_models·d_in] the trainer passes. `forward` returns the input's layout; `encode`
gives [*batch, d_sae]; `decode` gives [*batch, n_models, d_in]. Hook points are the SAE's, on
the flat layout: hook_sae_input, hook_sae_recons [*batch, n_models·d_in] (view them as
[..., n_models, d_in] with `.unflatten(-1, (n_models, d_in))`), hook_sae_acts_pre/post
[*batch, d_sae], hook_sae_output in `forward`'s layout.

Saving: SAELens has no crosscoder format, so a crosscoder folder is our own: cfg.json (the
CrosscoderConfig under "superpose") and sae_weights.safetensors in the per-model layout, written
atomically by the SAE folder writer (`io.write_folder`); `sae.load(path)` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose import hooks, runs
from superpose.activations import real_rows
from superpose.sae import io
from superpose.sae.base import SAE, Encoded, TrainStepOutput
from superpose.sae.batchtopk import BatchTopKSAE
from superpose.sae.config import DTYPES, SAEConfig
from superpose.sae.sparse import batch_topk
from superpose.sae.topk import latents_unhooked, sparse_step

FORMAT = "superpose.crosscoder/1"
ARCHITECTURE = "crosscoder"             # the architecture name in a saved folder


def _names_ok(value: Any) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) >= 2
            and all(isinstance(n, str) and n for n in value) and len(set(value)) == len(value))


@dataclass(frozen=True, kw_only=True)
class CrosscoderConfig:
    """One crosscoder over `n_models` models' activations of width `d_in` each (the rule of
    every field is in `_constraints`).

    d_in: the width of one model's activation at the hook (each model's).
    n_models: how many models (>= 2): model 0 is the base, model 1 the fine-tune by convention.
    d_sae: latents (one shared dictionary). k: latents kept per input on average over a
      training batch (BatchTopK).
    k_aux, aux_coefficient: the AuxK loss on dead latents (Gao et al. 2024, App. B.1; None:
      n_models·d_in // 2 and 1/32, the SAE's defaults on the flat input).
    batchtopk_threshold_lr: the EMA rate of the eval threshold θ on the kept scores.
    decoder_init_norm: the norm of each latent's concatenated decoder vector at the start (so
      each model's part starts at ≈ 1/sqrt(n_models) of it: every latent starts shared).
    apply_b_dec_to_input: subtract b_dec before encoding; off by default, as in Lindsey et al.'s
      and Minder et al.'s crosscoders (the encoder reads the raw activations).
    model_names: a name per model, for `classify`'s labels (None: ("base", "finetuned") for two
      models, ("model0", "model1", ...) otherwise).
    hook_name, model_name: where the activations came from (metadata, saved).
    seed: the seed of the weight initialisation.
    """

    d_in: int
    d_sae: int
    n_models: int = 2
    k: int = 32
    k_aux: int | None = None
    aux_coefficient: float = 1 / 32
    batchtopk_threshold_lr: float = 0.01
    decoder_init_norm: float = 0.1
    apply_b_dec_to_input: bool = False
    dtype: str = "float32"
    model_names: tuple[str, ...] | None = None
    hook_name: str | None = None
    model_name: str | None = None
    seed: int = 0

    _constraints: ClassVar[dict[str, v.Rule]] = {
        "d_in": v.Int(1),
        "d_sae": v.Int(1),
        "n_models": v.Int(2).described("an integer >= 2 (a crosscoder pairs models; one model "
                                       "is an SAE: use sae.SAEConfig)"),
        "k": v.Int(1),
        "k_aux": v.Int(1) | v.Const(None),
        "aux_coefficient": v.Float(ge=0),
        "batchtopk_threshold_lr": v.Float(gt=0, le=1),
        "decoder_init_norm": v.Float(gt=0),
        "apply_b_dec_to_input": v.Bool(),
        "dtype": v.Choice(*DTYPES),
        "model_names": v.Check(_names_ok, "a tuple of distinct non-empty strings, one per "
                                          "model") | v.Const(None),
        "hook_name": v.Str() | v.Const(None),
        "model_name": v.Str() | v.Const(None),
        "seed": v.Int(0),
    }

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        if self.k > self.d_sae:
            raise ValueError(f"k ({self.k}) must not exceed d_sae ({self.d_sae}); choose "
                             f"k <= {self.d_sae} or a wider crosscoder")
        if self.model_names is not None:
            object.__setattr__(self, "model_names", tuple(self.model_names))
            if len(self.model_names) != self.n_models:
                raise ValueError(f"model_names has {len(self.model_names)} names "
                                 f"{list(self.model_names)} for n_models={self.n_models}; "
                                 "give one name per model")

    @property
    def names(self) -> tuple[str, ...]:
        """The models' names (`model_names`, or the defaults)."""
        if self.model_names is not None:
            return self.model_names
        if self.n_models == 2:
            return ("base", "finetuned")
        return tuple(f"model{i}" for i in range(self.n_models))

    def sae_config(self) -> SAEConfig:
        """The flat BatchTopK SAE this crosscoder is: d_in = n_models·d_in."""
        flat = self.n_models * self.d_in
        return SAEConfig(d_in=flat, d_sae=self.d_sae, architecture="batchtopk", k=self.k,
                         k_aux=self.k_aux if self.k_aux is not None else max(1, flat // 2),
                         aux_coefficient=self.aux_coefficient,
                         batchtopk_threshold_lr=self.batchtopk_threshold_lr,
                         decoder_init_norm=self.decoder_init_norm,
                         apply_b_dec_to_input=self.apply_b_dec_to_input, dtype=self.dtype,
                         hook_name=self.hook_name, model_name=self.model_name, seed=self.seed)

    def replace(self, **overrides: Any) -> CrosscoderConfig:
        """A copy with some fields changed; unknown field names are rejected."""
        return v.replace_config(self, overrides)


class Crosscoder(BatchTopKSAE):
    """A BatchTopK crosscoder (see the module docstring); build one with
    `superpose.sae.create(CrosscoderConfig(...))`."""

    def __init__(self, cfg: CrosscoderConfig, *, device: torch.device | str | None = None
                 ) -> None:
        if not isinstance(cfg, CrosscoderConfig):
            raise TypeError(f"Crosscoder takes a CrosscoderConfig, got {type(cfg).__name__}")
        super().__init__(cfg.sae_config(), device=device)
        self.crosscoder_cfg = cfg

    # ---- the per-model layout --------------------------------------------------------------
    @property
    def n_models(self) -> int:
        return self.crosscoder_cfg.n_models

    @property
    def d_in(self) -> int:
        """The width of one model's activation."""
        return self.crosscoder_cfg.d_in

    @property
    def W_enc_models(self) -> Float[Tensor, "n_models d_in d_sae"]:
        return self.W_enc.view(self.n_models, self.d_in, self.cfg.d_sae)

    @property
    def W_dec_models(self) -> Float[Tensor, "d_sae n_models d_in"]:
        return self.W_dec.view(self.cfg.d_sae, self.n_models, self.d_in)

    @property
    def b_dec_models(self) -> Float[Tensor, "n_models d_in"]:
        return self.b_dec.view(self.n_models, self.d_in)

    def _is_heads(self, x: Tensor) -> bool:
        return x.ndim >= 2 and tuple(x.shape[-2:]) == (self.n_models, self.d_in)

    def flatten_heads(self, x: Tensor) -> Tensor:
        """`x` [*batch, n_models, d_in] as the flat rows [*batch, n_models·d_in] (flat rows
        pass as they are); any other shape is a ValueError saying what is expected."""
        if self._is_heads(x):
            return x.flatten(-2)
        if x.ndim >= 1 and x.shape[-1] == self.cfg.d_in:
            return x
        n, d = self.n_models, self.d_in
        hint = ""
        if x.ndim >= 1 and x.shape[-1] == d:
            hint = (f"; the last dimension is one model's d_in: stack the {n} models' "
                    "activations at the same positions on dim -2 (crosscoder."
                    "paired_activations does)")
        raise ValueError(f"{type(self).__name__} expects paired activations [..., n_models={n}, "
                         f"d_in={d}] (or flat rows [..., {n * d}]), got shape "
                         f"{list(x.shape)}{hint}")

    def decode(self, acts: Float[Tensor, "*batch d_sae"]
               ) -> Float[Tensor, "*batch n_models d_in"]:
        """Every model's reconstruction from the latents: [*batch, n_models, d_in]."""
        return super().decode(acts).unflatten(-1, (self.n_models, self.d_in))

    def decode_sparse(self, values: Float[Tensor, "*batch k"], indices: Int[Tensor, "*batch k"]
                      ) -> Float[Tensor, "*batch n_models d_in"]:
        return super().decode_sparse(values, indices).unflatten(-1, (self.n_models, self.d_in))

    # ---- BatchTopK on decoder-norm-weighted scores (Minder et al. 2025) ---------------------
    def latent_weights(self) -> Float[Tensor, " d_sae"]:
        """Σ_m ‖W_dec[j, m]‖ per latent: the factor of f_j in the selection score (detached)."""
        return self.W_dec_models.detach().norm(dim=-1).sum(-1)

    def _encode(self, x: Tensor) -> Encoded:
        pre, sae_in = self._linear(x, self.b_enc)
        pre = self.hook_sae_acts_pre(pre)
        f = torch.relu(pre)
        scores = f * self.latent_weights()
        if not self.training:
            acts = f * (scores > self.threshold)
            return Encoded(acts=self.hook_sae_acts_post(acts), pre_acts=pre, sae_in=sae_in)
        flat_scores = scores.reshape(-1)
        n_rows = flat_scores.numel() // self.cfg.d_sae
        top = flat_scores.topk(min(self.cfg.k * n_rows, flat_scores.numel()), sorted=False)
        values = f.reshape(-1).gather(0, top.indices)
        acts = f.new_zeros(flat_scores.shape).scatter(0, top.indices, values)
        acts = self.hook_sae_acts_post(acts.reshape(pre.shape))
        return Encoded(acts=acts, pre_acts=pre, sae_in=sae_in,
                       extra={"values": values, "flat_indices": top.indices})

    def training_forward(self, x: Tensor, *, dead_mask: Tensor | None = None,
                         sparsity_coefficient: float | None = None) -> TrainStepOutput:
        x = self.flatten_heads(x)
        if not (self.training and latents_unhooked(self)):
            out = SAE.training_forward(self, x, dead_mask=dead_mask,
                                       sparsity_coefficient=sparsity_coefficient)
            if self.training:
                self.update_threshold(out.acts)
            return out
        d_sae, k = self.cfg.d_sae, self.cfg.k
        weights = self.latent_weights()

        def select(pre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            _, top = batch_topk(torch.relu(pre) * weights, k * pre.shape[0])
            flat = top.sort().values
            return flat // d_sae, flat % d_sae, pre.reshape(-1).index_select(0, flat)

        out = sparse_step(self, x, dead_mask, select)
        _, cols, values = out.sparse
        self._update_threshold_scores(values.detach() * weights.index_select(0, cols))
        return out

    @torch.no_grad()
    def update_threshold(self, acts: Tensor) -> None:
        """θ's EMA step from the dense kept latents [*batch, d_sae] (their scores)."""
        self._update_threshold_scores(acts * self.latent_weights())

    @torch.no_grad()
    def _update_threshold_scores(self, scores: Tensor) -> None:
        positive = scores[scores > 0]
        if positive.numel():
            lr = 1.0 if bool(self.threshold == 0) else self.cfg.batchtopk_threshold_lr
            self.threshold.mul_(1 - lr).add_(lr * positive.min().to(self.threshold.dtype))

    # ---- saving ----------------------------------------------------------------------------
    def crosscoder_state_dict(self) -> dict[str, Tensor]:
        """The weights in the per-model layout (what a saved folder holds)."""
        return {"W_enc": self.W_enc_models.detach(), "b_enc": self.b_enc.detach(),
                "W_dec": self.W_dec_models.detach(), "b_dec": self.b_dec_models.detach(),
                "threshold": self.threshold.detach()}

    @torch.no_grad()
    def load_crosscoder_state_dict(self, state: dict[str, Tensor], *, source: str = "weights"
                                   ) -> None:
        """Load per-model-layout tensors; wrong names or shapes fail with both lists."""
        c = self.crosscoder_cfg
        runs.check_state_shapes(f"{source} (for a crosscoder with n_models={c.n_models}, "
                                f"d_in={c.d_in}, d_sae={c.d_sae})",
                                self.crosscoder_state_dict(), state)
        for name, t in state.items():
            getattr(self, name).copy_(t.reshape(getattr(self, name).shape))

    def save(self, path: str | Path) -> Path:
        """Write a crosscoder folder (cfg.json + sae_weights.safetensors), atomically."""
        cfg_json = {"superpose": {"architecture": ARCHITECTURE, "format": FORMAT,
                                  "config": runs.to_jsonable(self.crosscoder_cfg)},
                    "note": "a superpose crosscoder; SAELens has no crosscoder format"}
        return io.write_folder(path, cfg_json, self.crosscoder_state_dict())

    def saelens_state_dict(self) -> dict[str, Tensor]:
        raise ValueError("SAELens has no crosscoder format; save a crosscoder with "
                         "cc.save(path) (our own folder, loaded by sae.load)")

    def extra_repr(self) -> str:
        c = self.crosscoder_cfg
        return f"n_models={c.n_models}, d_in={c.d_in}, d_sae={c.d_sae}, k={c.k}"


def is_crosscoder_folder(data: Any) -> bool:
    """Whether a cfg.json's contents are a crosscoder's."""
    ours = data.get("superpose") if isinstance(data, dict) else None
    return isinstance(ours, dict) and ours.get("architecture") == ARCHITECTURE


def load(path: str | Path, *, device: torch.device | str | None = None) -> Crosscoder:
    """A crosscoder saved by `Crosscoder.save` (in training mode, as `sae.load` returns SAEs)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = runs.saved_folder(path, (io.CFG_FILE, io.WEIGHTS_FILE), "a crosscoder folder")
    cfg_path, weights = folder / io.CFG_FILE, folder / io.WEIGHTS_FILE
    data = runs.read_json(cfg_path, kind=dict)
    if not is_crosscoder_folder(data):
        raise ValueError(f"{cfg_path} is not a crosscoder's (no superpose.architecture "
                         f"{ARCHITECTURE!r}); load SAE folders with sae.load")
    ours = data["superpose"]
    if ours.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} has crosscoder format {ours.get('format')!r}; this "
                         f"version reads {FORMAT!r}")
    cfg_data = dict(ours.get("config") or {})
    if isinstance(cfg_data.get("model_names"), list):
        cfg_data["model_names"] = tuple(cfg_data["model_names"])
    cfg = v.config_from_dict(CrosscoderConfig, cfg_data)
    recorded = data.get(io.HASH_KEY, {}).get(io.WEIGHTS_FILE)
    if recorded is not None and recorded != io.sha256(weights):
        raise ValueError(f"{weights} was changed after it was written: its SHA-256 is not the "
                         f"one {io.CFG_FILE} records; restore it or save the crosscoder again")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{weights} is corrupt and cannot be read ({e})") from None
    cc = Crosscoder(cfg, device="cpu")
    cc.load_crosscoder_state_dict({k: t.to(cc.W_dec.dtype) for k, t in state.items()},
                                  source=f"{folder}: {io.WEIGHTS_FILE}")
    return cc.to(v.resolve_device(device))


# ---- reading the dictionary off ------------------------------------------------------------

def _check_cc(cc: Any, where: str) -> Crosscoder:
    if not isinstance(cc, Crosscoder):
        raise TypeError(f"{where} takes a Crosscoder, got {type(cc).__name__}")
    return cc


def _check_model(cc: Crosscoder, name: str, index: Any) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < cc.n_models:
        raise ValueError(f"{name} must be a model index in [0, {cc.n_models - 1}] "
                         f"({', '.join(cc.crosscoder_cfg.names)}), got {index!r}")
    return index


@torch.no_grad()
def decoder_norms(cc: Crosscoder) -> Float[Tensor, "d_sae n_models"]:
    """‖W_dec[j, m]‖: each latent's decoder norm in each model."""
    return _check_cc(cc, "decoder_norms").W_dec_models.detach().norm(dim=-1)


@torch.no_grad()
def relative_norms(cc: Crosscoder, model: int = 1, *, base: int = 0) -> Float[Tensor, " d_sae"]:
    """Lindsey et al.'s relative decoder norm ‖d_model‖ / (‖d_base‖ + ‖d_model‖): 0 = base-only,
    0.5 = shared, 1 = `model`-only (a latent with both norms 0 gets 0.5)."""
    _check_cc(cc, "relative_norms")
    m, b = _check_model(cc, "model", model), _check_model(cc, "base", base)
    if m == b:
        raise ValueError(f"model and base are both {m}; compare two different models")
    norms = decoder_norms(cc)
    total = norms[:, m] + norms[:, b]
    return torch.where(total > 0, norms[:, m] / total.clamp_min(1e-30),
                       torch.full_like(total, 0.5))


def classify(cc: Crosscoder, model: int = 1, *, base: int = 0, exclusive_ratio: float = 0.2,
             shared_ratio: float = 0.8) -> list[str]:
    """A label per latent from its decoder norms in `base` and `model`: "<name>-only" when the
    other model's norm is below `exclusive_ratio` times its own, "shared" when the smaller norm
    is at least `shared_ratio` times the larger, "other" in between or when both are 0 (names from
    `cfg.model_names`: "base-only", "finetuned-only" by default).

    The defaults are Minder et al.'s bands on their relative norm difference
    Δ = ½((‖d_b‖ − ‖d_m‖) / max(‖d_b‖, ‖d_m‖) + 1): exclusive at Δ < 0.1 or > 0.9, shared at
    0.4 < Δ < 0.6; on Lindsey et al.'s relative norm r (`relative_norms`) these are r > 5/6 or
    r < 1/6, and 4/9 < r < 5/9. Latent Scaling (`latent_scaling`) then tests the exclusive ones.
    """
    _check_cc(cc, "classify")
    m, b = _check_model(cc, "model", model), _check_model(cc, "base", base)
    if m == b:
        raise ValueError(f"model and base are both {m}; compare two different models")
    for name, value in (("exclusive_ratio", exclusive_ratio), ("shared_ratio", shared_ratio)):
        if not v.Float(gt=0, lt=1).ok(value):
            raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if exclusive_ratio >= shared_ratio:
        raise ValueError(f"exclusive_ratio ({exclusive_ratio}) must be below shared_ratio "
                         f"({shared_ratio}): a latent cannot be both")
    norms = decoder_norms(cc)
    nm, nb = norms[:, m].tolist(), norms[:, b].tolist()
    names = cc.crosscoder_cfg.names
    labels = []
    for a, z in zip(nb, nm):
        big, small = max(a, z), min(a, z)
        if big > 0 and small < exclusive_ratio * big:
            labels.append(f"{names[b] if a > z else names[m]}-only")
        elif big > 0 and small >= shared_ratio * big:
            labels.append("shared")
        else:
            labels.append("other")
    return labels


# ---- Latent Scaling (Minder et al. 2025, §3) -----------------------------------------------

@dataclass
class LatentScaling:
    """β per latent and model, and their ratios. `beta_error[i, m]` / `beta_recon[i, m]`: the
    least-squares β with β·f_j(x)·d_j ≈ the target of model m, d_j = the latent's decoder vector
    in the model it is claimed for (`owner`); `count[i]`: inputs on which the latent fired
    (β is NaN when 0). `nu_error` = β_error[other] / β_error[owner] (ν^ε), `nu_recon` likewise
    (ν^r): near 0 for a latent that is truly exclusive to `owner`, near 1 for one that explains
    `other` as much."""

    latents: Tensor            # [n_latents] indices
    owner: int
    other: int
    beta_error: Tensor         # [n_latents, n_models]
    beta_recon: Tensor         # [n_latents, n_models]
    count: Tensor              # [n_latents]

    @property
    def nu_error(self) -> Tensor:
        return self.beta_error[:, self.other] / self.beta_error[:, self.owner]

    @property
    def nu_recon(self) -> Tensor:
        return self.beta_recon[:, self.other] / self.beta_recon[:, self.owner]

    def exclusive(self, nu_error_max: float = 0.2, nu_recon_max: float = 0.5) -> Tensor:
        """[n_latents] bool: the latents whose ν^ε and ν^r are both below the cut-offs (our
        defaults: the other model explains under a fifth of what the latent explains of its
        error, under half of its reconstruction)."""
        return (self.nu_error < nu_error_max) & (self.nu_recon < nu_recon_max)


def _batches(data: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(data, Tensor):
        return data.split(batch_size)
    return data


@torch.no_grad()
def latent_scaling(cc: Crosscoder, data: Tensor | Iterable[Tensor],
                   latents: Sequence[int] | Tensor | None = None, *, owner: int = 1,
                   other: int = 0, batch_size: int = 4096) -> LatentScaling:
    """Latent Scaling (Minder et al. 2025, §3): for each latent j, with d_j = W_dec[j, owner],
    fit in closed form β_m = argmin_β Σ_x ‖β·f_j(x)·d_j − y_m(x)‖² for every model m and two
    targets: the crosscoder's reconstruction x̂_m (β_recon, ν^r: Latent Decoupling, the concept
    reconstructed in `other` by other latents) and the error without latent j,
    x_m − x̂_m + f_j(x)·W_dec[j, m] (β_error, ν^ε: Complete Shrinkage, the concept left in
    `other`'s error). β_m = ⟨d_j, Σ_x f_j(x) y_m(x)⟩ / (‖d_j‖² Σ_x f_j(x)²).

    data: paired activations [N, n_models, d_in], or an iterable of such batches. latents:
    indices (None: those `classify` labels `owner`-only against `other`). The latents are the
    crosscoder's eval-mode ones (its threshold θ)."""
    _check_cc(cc, "latent_scaling")
    o, b = _check_model(cc, "owner", owner), _check_model(cc, "other", other)
    if o == b:
        raise ValueError(f"owner and other are both {o}; compare two different models")
    v.positive_int("batch_size", batch_size)
    names = cc.crosscoder_cfg.names
    if latents is None:
        labels = classify(cc, o, base=b)
        idx = torch.tensor([i for i, lab in enumerate(labels) if lab == f"{names[o]}-only"],
                           dtype=torch.long)
    else:
        idx = torch.as_tensor(latents, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= cc.cfg.d_sae):
            raise ValueError(f"latents must be indices in [0, {cc.cfg.d_sae - 1}], got "
                             f"{idx.tolist()[:10]}")
    dev = cc.device
    idx = idx.to(dev)
    n, k = cc.n_models, idx.numel()
    dec = cc.W_dec_models.detach().index_select(0, idx)          # [K, n_models, d_in]
    d_own = dec[:, o]                                             # [K, d_in]
    own_dot = (dec * d_own[:, None]).sum(-1)                      # [K, n_models]: ⟨d_j, d_jm⟩
    num_err = torch.zeros(k, n, dtype=torch.float64, device=dev)
    num_rec = torch.zeros_like(num_err)
    f_sq = torch.zeros(k, dtype=torch.float64, device=dev)
    count = torch.zeros(k, dtype=torch.long, device=dev)
    was_training = cc.training
    cc.eval()
    try:
        seen = 0
        for i, x in enumerate(_batches(data, batch_size)):
            if not isinstance(x, Tensor) or x.ndim != 3 or tuple(x.shape[1:]) != (n, cc.d_in):
                got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"latent_scaling: batch {i} must be paired activations "
                                 f"[batch, n_models={n}, d_in={cc.d_in}], got {got}")
            x = x.to(dev, cc.W_dec.dtype)
            seen += x.shape[0]
            f = cc.encode(x)
            recon = cc.decode(f)                                  # [B, n_models, d_in]
            fj = f.index_select(1, idx)                           # [B, K]
            proj_rec = torch.einsum("bmd,kd->bkm", recon, d_own)  # ⟨d_j, x̂_m⟩
            proj_err = torch.einsum("bmd,kd->bkm", x - recon, d_own)
            num_rec += (fj[..., None] * proj_rec).sum(0).double()
            num_err += (fj[..., None] * proj_err).sum(0).double()
            num_err += (fj.double().pow(2).sum(0))[:, None] * own_dot.double()
            f_sq += fj.double().pow(2).sum(0)
            count += (fj > 0).sum(0)
        if seen == 0:
            raise ValueError("latent_scaling: data yielded no activations")
    finally:
        cc.train(was_training)
    den = f_sq * d_own.double().pow(2).sum(-1)
    den = torch.where(den > 0, den, torch.full_like(den, float("nan")))
    return LatentScaling(latents=idx.cpu(), owner=o, other=b,
                         beta_error=(num_err / den[:, None]).float().cpu(),
                         beta_recon=(num_rec / den[:, None]).float().cpu(), count=count.cpu())


# ---- data: paired activations of real models -----------------------------------------------

@torch.no_grad()
def paired_activations(models: Sequence[nn.Module], hook_name: str,
                       tokens: Int[Tensor, "batch pos"], *, batch_size: int = 32,
                       attention_mask: Tensor | None = None
                       ) -> Float[Tensor, "n n_models d_in"]:
    """Each model's activation at `hook_name` on the same tokens, stacked at the same positions:
    [N, n_models, d_in] with N = batch·pos (or the real positions only, batch-major, when an
    `attention_mask` [batch, pos] is given; it is passed to every model). Trailing dimensions of
    the hook (e.g. hook_z's heads) are flattened into d_in. Models are run as they are (their
    train/eval mode is not changed), `batch_size` sequences at a time, each forward stopped
    after the hook (`superpose.hooks.capture`)."""
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"paired_activations needs at least 2 models (base and fine-tuned), "
                         f"got {len(models)}")
    for m in models:
        if not hasattr(m, "hook_dict"):
            raise TypeError(f"paired_activations takes hooked models (HookedRootModule), got "
                            f"{type(m).__name__}")
        hooks.check_hook_name(m, hook_name)
    if not isinstance(tokens, Tensor) or tokens.ndim != 2:
        raise ValueError("tokens must be a [batch, pos] tensor of token ids, got "
                         + (f"shape {list(tokens.shape)}" if isinstance(tokens, Tensor)
                            else type(tokens).__name__))
    v.positive_int("batch_size", batch_size)
    if attention_mask is not None and (not isinstance(attention_mask, Tensor)
                                       or attention_mask.shape != tokens.shape):
        got = list(attention_mask.shape) if isinstance(attention_mask, Tensor) \
            else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be [batch, pos] like tokens "
                         f"{list(tokens.shape)}, got {got}")
    chunks = []
    for start in range(0, tokens.shape[0], batch_size):
        tok = tokens[start:start + batch_size]
        mask = attention_mask[start:start + batch_size] if attention_mask is not None else None
        kwargs = {"attention_mask": mask} if mask is not None else {}
        rows = []
        for i, m in enumerate(models):
            act = hooks.capture(m, [hook_name], tok, context=f" (model {i})", **kwargs)[hook_name]
            r = real_rows(act, mask.bool() if mask is not None else None, what=hook_name)
            rows.append(r.reshape(r.shape[0], -1))
        shapes = [tuple(r.shape) for r in rows]
        if len(set(shapes)) > 1:
            raise ValueError(f"the models disagree on {hook_name!r}: rows of shape {shapes} "
                             "(model by model); a crosscoder pairs models with the same "
                             "hook widths (a base model and its fine-tune)")
        dev = rows[0].device
        chunks.append(torch.stack([r.to(dev) for r in rows], dim=1))
    return torch.cat(chunks)


__all__ = ["Crosscoder", "CrosscoderConfig", "LatentScaling", "classify", "decoder_norms",
           "latent_scaling", "load", "paired_activations", "relative_norms"]
