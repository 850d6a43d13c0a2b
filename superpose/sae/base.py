"""The SAE contract every architecture shares, as a TransformerLens `HookedRootModule`.

    encode(x) -> acts [*batch, d_sae]     decode(acts) -> recon [*batch, d_in]
    forward(x) -> recon                   training_forward(x, dead_mask=...) -> TrainStepOutput

Parameters use SAELens's names and layouts (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in],
b_dec) so a folder saved here loads there and the other way round (`superpose.sae.io`).

An SAE with `cfg.reshape_activations == "hook_z"` (SAELens's key) also takes an attention z
[*batch, n_heads, d_head] with n_heads·d_head = d_in: `encode` flattens it to [*batch, d_in]
first and `forward` returns [*batch, n_heads, d_head], as SAELens 6.x does
(sae.py `process_sae_in` / `reshape_fn_in`, `reshape_fn_out`). `decode` returns [*batch, d_in]:
SAELens's decode un-flattens with a d_head remembered from the first input its encode saw
(state outliving the call; decode before any encode fails there), whereas latents alone do not
say how d_in splits into heads. `training_forward` flattens too and returns flat recon.

Hook points (SAELens's names, usable with `run_with_cache` / `run_with_hooks`):
  hook_sae_input:     [*batch, d_in]   the input (heads flattened), before scaling and the
                                       b_dec shift
  hook_sae_acts_pre:  [*batch, d_sae]  pre-activations (the magnitude path for "gated")
  hook_sae_acts_post: [*batch, d_sae]  the sparse latents
  hook_sae_recons:    [*batch, d_in]   acts @ W_dec + b_dec, before the input scale is undone
  hook_sae_output:    [*batch, d_in]   what `forward` returns
  hook_sae_error:     [*batch, d_in]   x − recon of the unhooked SAE; fires only when the SAE is
                                       spliced into a model with an error term
                                       (`superpose.sae.splice`, SAELens's use_error_term)

Unknown hook names (`run_with_hooks`, `add_hook`, `run_with_cache(names_filter=...)`) are a
ValueError with close matches (`superpose.hooks.CheckedHookNames`).

NaN or inf in the input of `forward`, `encode`, `decode` or `decode_sparse` is a ValueError
naming the method and the first bad row (one sum over the input, ~0.1% of an encode, instead
of a silently NaN result). `training_forward` leaves it to the trainer, which checks every
batch (`superpose.sae.training`).

Building an SAE checks its memory estimate first (`memory_estimate`; override with
`superpose.memory_limit`), so an absurd size fails before allocating.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from superpose import _memory, hooks, runs
from superpose import _validate as v
from superpose.sae import io
from superpose.sae.config import SAEConfig


class TrainStepOutput:
    """One training step's tensors. `loss` is the sum of `losses` (what the trainer backprops);
    `losses` holds "mse" (squared error summed over d_in, mean over the batch, as SAELens),
    "sparsity" and "aux" where the architecture has them.

    The sparse architectures' fast path passes `sparse=(rows, cols, values)` (the kept
    latents of the flattened batch) instead of dense `acts`; `.acts` then builds the dense
    [*batch, d_sae] tensor only when asked, and `fired()` / `l0()` never need it.
    """

    def __init__(self, recon: Tensor, acts: Tensor | None = None, pre_acts: Tensor | None = None,
                 loss: Tensor | None = None, losses: dict[str, Tensor] | None = None, *,
                 sparse: tuple[Tensor, Tensor, Tensor] | None = None, d_sae: int | None = None
                 ) -> None:
        if (acts is None) == (sparse is None):
            raise ValueError("TrainStepOutput takes dense acts or sparse=(rows, cols, values), "
                             "exactly one of them")
        if sparse is not None and d_sae is None:
            raise ValueError("sparse latents need d_sae to define their dense shape")
        self.recon, self.pre_acts, self.losses = recon, pre_acts, dict(losses or {})
        self.loss = loss if loss is not None else sum(
            self.losses.values(), torch.zeros((), device=recon.device, dtype=recon.dtype))
        self._acts, self.sparse, self._d_sae = acts, sparse, d_sae

    @property
    def acts(self) -> Tensor:
        """The latents, dense [*batch, d_sae] (built on first access on the sparse path)."""
        if self._acts is None:
            rows, cols, values = self.sparse
            n = self.recon.numel() // self.recon.shape[-1]
            dense = values.new_zeros(n, self._d_sae)
            dense[rows, cols] = values
            self._acts = dense.reshape(*self.recon.shape[:-1], self._d_sae)
        return self._acts

    @torch.no_grad()
    def fired(self) -> Tensor:
        """[d_sae] bool: which latents were active on at least one input of the step."""
        if self._acts is not None:
            return self._acts.reshape(-1, self._acts.shape[-1]).amax(0) > 0
        rows, cols, values = self.sparse
        out = torch.zeros(self._d_sae, dtype=torch.bool, device=values.device)
        return out.index_fill_(0, cols[values > 0], True)

    @torch.no_grad()
    def l0(self) -> float:
        """Mean number of active latents per input."""
        n = self.recon.numel() // self.recon.shape[-1]
        if self._acts is not None:
            return float((self._acts > 0).sum()) / n
        return float((self.sparse[2] > 0).sum()) / n


@dataclass
class Encoded:
    """Everything an encoder pass makes; `extra` holds architecture-specific tensors."""

    acts: Tensor
    pre_acts: Tensor
    sae_in: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)


def memory_estimate(cfg: SAEConfig) -> dict[str, int]:
    """Bytes that building an SAE of `cfg` needs, by part: "weights" (every parameter and
    buffer, in cfg.dtype) and the float32 "initialisation draw" of the decoder rows on the
    CPU."""
    d_in, d_sae = cfg.d_in, cfg.d_sae
    per_latent = {"relu": 1, "topk": 1, "batchtopk": 1, "jumprelu": 2, "gated": 3}
    n = 2 * d_in * d_sae + d_in + per_latent[cfg.architecture] * d_sae
    if cfg.architecture == "batchtopk":
        n += 1                                          # the scalar inference threshold
    return {"weights": cfg.torch_dtype.itemsize * n, "initialisation draw": 4 * d_in * d_sae}


def check_memory(cfg: SAEConfig, device: torch.device) -> None:
    """`_memory.check_allocation` for an SAE of `cfg`: the weights and the draw on the CPU,
    and the weights on `device` when that is another one."""
    parts = memory_estimate(cfg)
    detail = ", ".join(f"{k} {_memory.format_bytes(b)}" for k, b in parts.items())
    what = (f"SAE(architecture={cfg.architecture!r}, d_in={cfg.d_in}, d_sae={cfg.d_sae}, "
            f"dtype={cfg.dtype!r}) ({detail})")
    _memory.check_allocation(what, sum(parts.values()), "cpu")
    if device.type != "cpu":
        _memory.check_allocation(what, parts["weights"], device)


def check_finite(t: Tensor, what: str) -> None:
    """A ValueError naming `what` and the first row (index over the leading dimensions) that
    holds NaN or inf. One sum over `t` decides (NaN and inf propagate into it); only when it is
    not finite (a bad value, or an overflowing sum of huge ones) is `t` searched."""
    if not t.is_floating_point() or bool(torch.isfinite(t.sum())):
        return
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return
    where = bad.nonzero()[0].tolist()
    row = where[:-1] if t.ndim > 1 else where
    row_text = str(row[0]) if len(row) == 1 else str(tuple(row))
    raise ValueError(f"{what} holds NaN or inf (first at row {row_text}, value "
                     f"{t[tuple(where)].item()}, shape {list(t.shape)}); clean the activations "
                     "first (e.g. drop those rows), the result would be NaN")


class SAE(hooks.CheckedHookNames, HookedRootModule, abc.ABC):
    """Abstract sparse autoencoder; build one with `superpose.sae.create(cfg)`."""

    architecture: ClassVar[str]   # our name, the registry key saved in the config

    def __init__(self, cfg: SAEConfig, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise TypeError(f"{type(self).__name__} takes an SAEConfig, got {type(cfg).__name__}")
        if cfg.architecture != self.architecture:
            raise ValueError(f"{type(self).__name__} is the {self.architecture!r} architecture, "
                             f"but cfg.architecture is {cfg.architecture!r}; build SAEs with "
                             "superpose.sae.create(cfg)")
        self.cfg = cfg
        dev, dtype = v.resolve_device(device), cfg.torch_dtype
        check_memory(cfg, dev)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        # Decoder rows: random directions of norm decoder_init_norm; encoder tied to it at the
        # start (Anthropic April 2024 update; Gao et al. 2024, Sec. 2.4). In place: the same
        # numbers as w / norm * c without two more [d_sae, d_in] temporaries.
        w = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w.div_(w.norm(dim=-1, keepdim=True)).mul_(cfg.decoder_init_norm)
        self.W_enc = nn.Parameter(w.T.contiguous().to(dev, dtype))
        self.W_dec = nn.Parameter(w.to(dev, dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, device=dev, dtype=dtype))
        self._init_encoder(dev, dtype)
        self.hook_sae_input = HookPoint()      # [*batch, d_in]
        self.hook_sae_acts_pre = HookPoint()   # [*batch, d_sae]
        self.hook_sae_acts_post = HookPoint()  # [*batch, d_sae]
        self.hook_sae_recons = HookPoint()     # [*batch, d_in]
        self.hook_sae_output = HookPoint()     # [*batch, d_in]
        self.hook_sae_error = HookPoint()      # [*batch, d_in]  (sae.splice, error_term=True)
        self.setup()

    # ---- architecture-specific parts -------------------------------------------------------
    def _init_encoder(self, device: torch.device, dtype: torch.dtype) -> None:
        """Create the encoder's own parameters (b_enc by default)."""
        self.b_enc = nn.Parameter(torch.zeros(self.cfg.d_sae, device=device, dtype=dtype))

    @abc.abstractmethod
    def _encode(self, x: Tensor) -> Encoded:
        """The encoder pass, hooks included."""

    def _aux_losses(self, enc: Encoded, recon: Tensor, x: Tensor, *, dead_mask: Tensor | None,
                    sparsity_coefficient: float | None) -> dict[str, Tensor]:
        """Loss terms besides the MSE ("sparsity", "aux"). `sparsity_coefficient` is None for
        the architectures without a penalty (TopK, BatchTopK have no such option)."""
        return {}

    def _decode_train(self, enc: Encoded) -> Tensor:
        return self._decode(enc.acts)

    def _scale_latents(self, norms: Tensor) -> None:
        """Fold per-latent factors into the encoder so each pre-activation i is multiplied by
        norms[i] (used by `fold_decoder_norms`)."""
        self.W_enc.mul_(norms)
        self.b_enc.mul_(norms)

    # ---- the shared contract ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def _check_width(self, t: Tensor, width: int, what: str) -> None:
        if t.ndim < 1 or t.shape[-1] != width:
            raise ValueError(f"{type(self).__name__} expects {what} with last dimension "
                             f"{width}, got shape {list(t.shape)}")

    def flatten_heads(self, x: Tensor) -> Tensor:
        """`x` as [*batch, d_in]. A "hook_z" SAE (cfg.reshape_activations) flattens an input
        [*batch, n_heads, d_head] with n_heads·d_head = d_in and a last dimension other than
        d_in (SAELens: einops "... n_heads d_head -> ... (n_heads d_head)"); an input whose
        last dimension is d_in is already flat (ActivationStore's rows, the splice's
        [batch, pos, d_in]), so a 1-head z [..., 1, d_in] is taken as flat rows too."""
        if self._is_heads(x):
            return x.flatten(-2)
        if self.cfg.reshape_activations == "hook_z" and (x.ndim < 1 or
                                                         x.shape[-1] != self.cfg.d_in):
            raise ValueError(f"{type(self).__name__} (reshape_activations='hook_z') expects "
                             f"activations [..., {self.cfg.d_in}] or [..., n_heads, d_head] "
                             f"with n_heads * d_head = {self.cfg.d_in}, got shape "
                             f"{list(x.shape)}")
        return x

    def _is_heads(self, x: Tensor) -> bool:
        d_in = self.cfg.d_in
        return (self.cfg.reshape_activations == "hook_z" and x.ndim >= 2
                and x.shape[-1] != d_in and x.shape[-2] * x.shape[-1] == d_in)

    def _like_input(self, out: Tensor, x: Tensor) -> Tensor:
        """`out` [*batch, d_in] in the layout of the input `x` (heads split again)."""
        return out.unflatten(-1, x.shape[-2:]) if self._is_heads(x) else out

    def process_input(self, x: Float[Tensor, "..."]) -> Float[Tensor, "*batch d_in"]:
        """What the encoder sees: the hooked input (heads flattened for a "hook_z" SAE),
        scaled, minus b_dec (if configured)."""
        x = self.flatten_heads(x)
        self._check_width(x, self.cfg.d_in, "activations")
        x = self.hook_sae_input(x.to(self.W_enc.dtype))
        if self.cfg.activation_scale != 1.0:
            x = x * self.cfg.activation_scale
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x

    def _linear(self, x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """(sae_in @ W_enc + bias, sae_in) with sae_in = process_input(x), computed as
        x_s @ W_enc + (bias − b_dec @ W_enc) for the scaled input x_s: the same numbers, but
        autograd then needs no dense [batch, d_sae]·W_encᵀ product for b_dec's gradient (one
        matrix product fewer per training step, unless x itself requires a gradient)."""
        x = self.flatten_heads(x)
        self._check_width(x, self.cfg.d_in, "activations")
        x_s = self.hook_sae_input(x.to(self.W_enc.dtype))
        if self.cfg.activation_scale != 1.0:
            x_s = x_s * self.cfg.activation_scale
        if not self.cfg.apply_b_dec_to_input:
            return x_s @ self.W_enc + bias, x_s
        sae_in = x_s - self.b_dec
        if x_s.requires_grad or not torch.is_grad_enabled():
            return sae_in @ self.W_enc + bias, sae_in
        return x_s @ self.W_enc + (bias - self.b_dec @ self.W_enc), sae_in

    def _check_input(self, t: Tensor, method: str) -> None:
        check_finite(t, f"the input to {type(self).__name__}.{method}")

    def encode(self, x: Float[Tensor, "..."]) -> Float[Tensor, "*batch d_sae"]:
        """The latents of x [*batch, d_in] (or [*batch, n_heads, d_head] for "hook_z")."""
        self._check_input(x, "encode")
        return self._encode(x).acts

    def decode(self, acts: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_in"]:
        self._check_input(acts, "decode")
        return self._decode(acts)

    def _decode(self, acts: Tensor) -> Tensor:
        """`decode` without the input check (latents this SAE's own encoder made)."""
        self._check_width(acts, self.cfg.d_sae, "latents")
        return self._finish_decode(acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec)

    def decode_sparse(self, values: Float[Tensor, "*batch k"],
                      indices: Int[Tensor, "*batch k"]) -> Float[Tensor, "*batch d_in"]:
        """`decode` of latents that are zero except `values` at `indices` (k per row): gathers
        only those k decoder rows (embedding_bag), never the dense [batch, d_sae] matrix."""
        if values.shape != indices.shape:
            raise ValueError(f"values and indices must have one shape, got {list(values.shape)}"
                             f" and {list(indices.shape)}")
        self._check_input(values, "decode_sparse")
        return self._decode_sparse(values, indices)

    def _decode_sparse(self, values: Tensor, indices: Tensor) -> Tensor:
        k = values.shape[-1]
        out = F.embedding_bag(indices.reshape(-1, k), self.W_dec, mode="sum",
                              per_sample_weights=values.reshape(-1, k).to(self.W_dec.dtype))
        out = out.reshape(*values.shape[:-1], self.cfg.d_in)
        return self._finish_decode(out + self.b_dec)

    def _finish_decode(self, recon: Tensor) -> Tensor:
        recon = self.hook_sae_recons(recon)
        if self.cfg.activation_scale != 1.0:
            recon = recon / self.cfg.activation_scale
        return recon

    def _fast_step_output(self, x: Tensor, recon: Tensor, pre: Tensor,
                          extra: Callable[[Tensor, Tensor], dict[str, Tensor]], *,
                          acts: Tensor | None = None,
                          sparse: tuple[Tensor, Tensor, Tensor] | None = None
                          ) -> TrainStepOutput:
        """The shared tail of the architectures' fast training paths: `recon` [n, d_in]
        (b_dec added) gets the input scale undone and passes hook_sae_output; the losses are
        the MSE followed by `extra(recon, target)`; latents are dense `acts` [n, d_sae] or
        `sparse=(rows, cols, values)`."""
        recon = self.hook_sae_output(self._finish_decode(recon).reshape(x.shape))
        target = x.to(recon.dtype)
        losses = {"mse": (recon - target).pow(2).sum(-1).mean(), **extra(recon, target)}
        shape = (*x.shape[:-1], self.cfg.d_sae)
        if sparse is None:
            return TrainStepOutput(recon=recon, acts=acts.reshape(shape),
                                   pre_acts=pre.reshape(shape), losses=losses)
        return TrainStepOutput(recon=recon, pre_acts=pre.reshape(shape), losses=losses,
                               sparse=sparse, d_sae=self.cfg.d_sae)

    def forward(self, x: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
        """The reconstruction, in the shape of x (a "hook_z" SAE's [*batch, n_heads, d_head]
        input gets that shape back, as in SAELens)."""
        self._check_input(x, "forward")
        return self.hook_sae_output(self._like_input(self._decode(self._encode(x).acts), x))

    def training_forward(self, x: Float[Tensor, "..."], *,
                         dead_mask: Bool[Tensor, " d_sae"] | None = None,
                         sparsity_coefficient: float | None = None) -> TrainStepOutput:
        """Reconstruction and every loss term of one step. `dead_mask` marks the latents the
        trainer counts as dead (used by TopK's AuxK loss); `sparsity_coefficient` overrides the
        config's (for a warm-up; the penalised architectures only, others ignore it)."""
        coeff = self.cfg.sparsity_coefficient if sparsity_coefficient is None \
            else sparsity_coefficient
        x = self.flatten_heads(x)
        enc = self._encode(x)
        recon = self.hook_sae_output(self._decode_train(enc))
        target = x.to(recon.dtype)
        losses = {"mse": (recon - target).pow(2).sum(-1).mean()}
        losses.update(self._aux_losses(enc, recon, target, dead_mask=dead_mask,
                                       sparsity_coefficient=coeff))
        loss = sum(losses.values(), torch.zeros((), device=recon.device, dtype=recon.dtype))
        return TrainStepOutput(recon=recon, acts=enc.acts, pre_acts=enc.pre_acts, loss=loss,
                               losses=losses)

    # ---- decoder norms and scales ----------------------------------------------------------
    @property
    def W_dec_norms(self) -> Float[Tensor, " d_sae"]:
        """The norm of each decoder row (differentiable)."""
        return self.W_dec.norm(dim=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm (changes the function unless the norms were
        1 already; TopK trainers keep the decoder on the unit sphere this way)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def fold_decoder_norms(self) -> None:
        """Unit-norm decoder rows with the same outputs: each row's norm moves into the encoder
        (for architectures whose activation commutes with a positive per-latent scale)."""
        norms = self.W_dec.norm(dim=-1).clamp_min(1e-12)
        self._scale_latents(norms)
        self.W_dec.div_(norms[:, None])

    @torch.no_grad()
    def fold_activation_scale(self, factor: float | None = None) -> None:
        """Fold an input scale into the weights (SAELens's fold_activation_norm_scaling_factor).

        factor=None folds `cfg.activation_scale` and sets it to 1.0: the outputs do not change.
        A number means "this SAE was trained on activations multiplied by `factor`": afterwards
        it takes the raw activations directly.
        """
        own = factor is None
        s = self.cfg.activation_scale if own else factor
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (s > 0 and
                                                                          math.isfinite(s)):
            raise ValueError(f"factor must be a positive finite number, got {factor!r}")
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)
        if own:
            self.cfg = self.cfg.replace(activation_scale=1.0)

    # ---- SAELens state and saving ----------------------------------------------------------
    def saelens_state_dict(self) -> dict[str, Tensor]:
        """The weights under SAELens's names and shapes (what sae_weights.safetensors holds)."""
        return {k: t.detach() for k, t in self.state_dict().items()}

    def _from_saelens_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The inverse of `saelens_state_dict`: SAELens tensors -> our state_dict."""
        return dict(state)

    @torch.no_grad()
    def load_saelens_state_dict(self, state: dict[str, Tensor], *, source: str = "weights"
                                ) -> None:
        """Load SAELens-named tensors; wrong names or shapes fail with both lists."""
        runs.check_state_shapes(f"{source} (for {self.architecture}, d_in={self.cfg.d_in}, "
                                f"d_sae={self.cfg.d_sae})", self.saelens_state_dict(), state)
        dtype = self.W_dec.dtype
        ours = self._from_saelens_state({k: t.to(dtype) for k, t in state.items()})
        self.load_state_dict(ours)

    def save(self, path: str | Path) -> Path:
        """Write an SAELens-format folder (cfg.json + sae_weights.safetensors; see
        `superpose.sae.io`), atomically. A non-unit `cfg.activation_scale` is folded into the
        saved weights (this SAE itself is not changed)."""
        sae = self
        if self.cfg.activation_scale != 1.0:
            sae = self.copy()
            sae.fold_activation_scale()
        return io.write_folder(path, io.to_saelens_config(sae.cfg, device=str(self.device)),
                               sae.saelens_state_dict())

    def copy(self) -> SAE:
        return copy.deepcopy(self)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"architecture={c.architecture!r}, d_in={c.d_in}, d_sae={c.d_sae}"


def dense_from_sparse(values: Tensor, indices: Tensor, width: int) -> Tensor:
    """Scatter k values per row into a zero [*batch, width] tensor."""
    out = values.new_zeros(*values.shape[:-1], width)
    return out.scatter(-1, indices, values)


