"""Splicing an SAE into a model: the loss when its reconstruction replaces the activation.

    r = spliced_losses(model, s, "blocks.1.hook_resid_post", tokens)
    r.clean_loss, r.spliced_loss, r.zero_ablation_loss, r.mean_ablation_loss
    r.loss_recovered, r.kl_div, r.n_tokens
    ev = evaluate(s, batches, model_fn=splice_fn(model, "blocks.1.hook_resid_post", tokens))
    ev.extra["loss_recovered"]

The model is anything with TransformerLens's hook machinery (`hook_dict`, `run_with_hooks`)
whose forward returns logits [batch, pos, d_vocab]: our GPT, Encoder and Seq2Seq
(`superpose.transformer`), TL's HookedTransformer. At the hook, the activation [batch, pos, *d]
(heads flattened for hook_z, as ActivationStore captures them) is replaced by the SAE's
output, and the loss is compared with
  - the clean model (nothing replaced),
  - zero ablation (the activation set to 0), and
  - mean ablation (set to its mean over every real position of the inputs, one more pass);
fraction of loss recovered = (L_zero − L_sae) / (L_zero − L_clean) (`evaluation.loss_recovered`;
SAELens's "ce_loss_score"), also against mean ablation. KL(clean ‖ spliced) is the mean over
every real output position of Σ_v p_clean(v) (log p_clean(v) − log p_spliced(v)).

Inputs and losses. `tokens` is either token ids [batch, pos] (a decoder-only model; the loss
is next-token cross-entropy) or a dict of the model's inputs, ActivationStore's convention
(`superpose.activations.model_call`: "tokens"/"input" positional, "labels" held back, the
rest by keyword), e.g.

    {"tokens": t, "attention_mask": m, "labels": y}          # Encoder: MLM loss where y != -100
    {"src": s, "tgt": t_in, "src_attention_mask": sm, "tgt_attention_mask": tm,
     "labels": t_out}                                       # Seq2Seq: teacher-forced loss

With a dict the loss is the cross-entropy of logits[b, t] against labels[b, t] wherever
labels != -100 (what `Encoder` / `Seq2Seq` compute with return_type="loss"); a label at a
padded output position (where the output side's mask — "tgt_attention_mask" for a two-sided
batch, else "attention_mask" — is False) is an error, so padding can never be scored. Any
other loss: `loss_fn(logits, batch) -> per-prediction losses` (a tensor of any shape, summed
and counted by its number of elements). Every tensor in the dict is split along its first
axis into chunks of `batch_size` rows.

Padding. The SAE replaces the activation at every position, padded ones included: the models
hide padded keys from every attention (and an MLP acts per position), so what stands at a
padded position reaches no real output, and only real targets are scored. The mean used by
mean ablation is over real positions only, by the mask of the hook's side
(`activations.position_mask`; `mask_key=` overrides it as in ActivationStore).

Normalised activations. An SAE trained on `ActivationStore(..., normalize="mean_norm")` batches
saw x·s (s = `store.scaling_factor`), not x. Either give `scale=s` here (the SAE then sees x·s
and its output is divided by s), or make the SAE take raw activations first: set
`cfg.activation_scale = s`, or `sae.fold_activation_scale(s)` (SAELens's
fold_activation_norm_scaling_factor). Giving `scale` to an SAE whose `cfg.activation_scale` is
not 1 is an error (it would scale twice).

Error term (`error_term=True`, SAELens's use_error_term): the model gets recon + (x − recon₀),
where recon₀ is the SAE's output with none of its own hooks running and the difference passes
`hook_sae_error`. Without hooks on the SAE the model's output is unchanged (the spliced loss
equals the clean loss), yet latents are in the graph: a hook that edits
`hook_sae_acts_post` (patching, ablating a latent) changes the output by exactly its effect,
and gradients reach the model input through the latents (the error term carries none).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose import hooks
from superpose._progress import bar
from superpose.activations import check_mask_key, model_call, position_mask, real_rows
from superpose.sae.base import SAE
from superpose.sae.evaluation import loss_recovered

log = logging.getLogger(__name__)

HookFn = Callable[[Tensor, Any], Tensor]
LossFn = Callable[[Tensor, Any], Tensor]
IGNORE_INDEX = -100


# ---- checks shared with superpose.sae.features ---------------------------------------------

def check_model(model: Any, hook_name: str) -> None:
    """`model` is a hooked module with a hook point named `hook_name` (else an error listing
    close matches, as ActivationStore gives)."""
    hook_dict = getattr(model, "hook_dict", None)
    if not isinstance(model, nn.Module) or not isinstance(hook_dict, dict) \
            or not hasattr(model, "run_with_hooks"):
        raise TypeError(f"model must be a hooked model with hook_dict and run_with_hooks (a "
                        f"TransformerLens HookedRootModule such as superpose.gpt.GPT), got "
                        f"{type(model).__name__}")
    if not isinstance(hook_name, str):
        raise ValueError(f"hook_name must be a string such as 'blocks.0.hook_resid_post', got "
                         f"{hook_name!r}")
    if hook_name not in hook_dict:
        near = v.close_matches(hook_name, list(hook_dict))
        raise ValueError(f"{type(model).__name__} has no hook point named {hook_name!r}"
                         + (f"; close matches: {near}" if near else "")
                         + f" (model.hook_dict lists all {len(hook_dict)})")


def check_tokens(tokens: Any, *, min_pos: int = 1) -> None:
    """`tokens` is an integer tensor [batch, pos] with batch >= 1 and pos >= min_pos."""
    if not isinstance(tokens, Tensor):
        raise ValueError(f"tokens must be a torch.Tensor of token ids [batch, pos], got "
                         f"{type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must hold integer token ids (torch.long), got dtype "
                         f"{tokens.dtype}; encode text with the model's tokenizer")
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < min_pos:
        hint = " (use tokens[None] for a single sequence)" if tokens.ndim == 1 else ""
        raise ValueError(f"tokens must have shape [batch, pos] with batch >= 1 and pos >= "
                         f"{min_pos}, got {list(tokens.shape)}{hint}")


def check_sae(sae: Any) -> None:
    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be a superpose.sae.SAE, got {type(sae).__name__}")


def input_scale(sae: SAE, scale: float | None) -> float:
    """The factor the hooked activations are multiplied by before the SAE sees them."""
    if scale is None:
        return 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number (the store's "
                         f"scaling_factor) or None, got {scale!r}")
    if sae.cfg.activation_scale != 1.0:
        raise ValueError(f"this SAE already scales its inputs (cfg.activation_scale="
                         f"{sae.cfg.activation_scale}), so it takes raw activations; passing "
                         f"scale={scale} as well would scale them twice. Leave scale=None")
    return float(scale)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def as_rows(act: Tensor, d_in: int, hook_name: str) -> Tensor:
    """The activation with its feature axes flattened to the SAE's width: [..., d_in]
    (hook_z's [batch, pos, head, d_head] becomes [batch, pos, head * d_head])."""
    if act.ndim >= 1 and act.shape[-1] == d_in:
        return act
    if act.ndim >= 3 and math.prod(act.shape[2:]) == d_in:
        return act.reshape(*act.shape[:2], d_in)
    raise ValueError(f"the activations at {hook_name!r} have shape {list(act.shape)}, but the "
                     f"SAE's d_in is {d_in}; use an SAE trained on this hook (its width is "
                     f"{act.shape[-1] if act.ndim < 3 else math.prod(act.shape[2:])})")


def capture(model: nn.Module, hook_name: str, tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """The activation at `hook_name` for `tokens`, the forward pass cut short right after it
    (no logits computed; `superpose.hooks.capture`)."""
    return hooks.capture(model, [hook_name], tokens)[hook_name]


# ---- the splice hook -------------------------------------------------------------------------

def _own_hooks_off(sae: SAE) -> contextlib.AbstractContextManager[None]:
    """Run the SAE with none of its own HookPoint hooks (for the clean reconstruction)."""
    return hooks.suspended(sae.hook_dict.values())


def _has_own_hooks(sae: SAE) -> bool:
    return hooks.any_hooked(sae.hook_dict.values())


def splice_hook(sae: SAE, hook_name: str = "activation", *, scale: float | None = None,
                error_term: bool = False) -> HookFn:
    """A TransformerLens hook function `fn(act, hook) -> new act` that replaces the activation
    by the SAE's reconstruction (see the module docstring for `scale` and `error_term`):

        with model.hooks(fwd_hooks=[(name, splice_hook(s, name))]):
            logits = model(tokens)
    """
    check_sae(sae)
    if not isinstance(error_term, bool):
        raise ValueError(f"error_term must be True or False, got {error_term!r}")
    s = input_scale(sae, scale)
    d_in = sae.cfg.d_in

    def fn(act: Tensor, hook: Any = None) -> Tensor:
        x = as_rows(act, d_in, hook_name).to(sae.device, sae.W_dec.dtype)
        if s != 1.0:
            x = x * s
        out = sae(x)
        if error_term:
            if _has_own_hooks(sae):
                with torch.no_grad(), _own_hooks_off(sae):
                    clean = sae(x)
            else:
                clean = out.detach()
            out = out + sae.hook_sae_error((x - clean).detach())
        if s != 1.0:
            out = out / s
        return out.to(act.device, act.dtype).reshape(act.shape)

    return fn


@contextlib.contextmanager
def spliced(model: nn.Module, sae: SAE, hook_name: str, *, scale: float | None = None,
            error_term: bool = False) -> Iterator[nn.Module]:
    """`with spliced(model, s, name): model(tokens)` runs the model with the SAE at `name`
    (TransformerLens's `model.hooks` context: the hook is removed on exit)."""
    check_model(model, hook_name)
    fn = splice_hook(sae, hook_name, scale=scale, error_term=error_term)
    with model.hooks(fwd_hooks=[(hook_name, fn)]):
        yield model


# ---- losses --------------------------------------------------------------------------------

@dataclass
class SplicedLosses:
    """Cross-entropy (nats/prediction, mean over `n_predictions`) with the activation at
    `hook_name` left alone, replaced by the SAE, zero- and mean-ablated; KL(clean ‖ spliced)
    is the mean over all `n_tokens` (real) output positions."""

    hook_name: str
    n_tokens: int                 # real output positions run (batch * pos without padding)
    n_predictions: int            # targets scored (batch * (pos - 1) for next-token)
    clean_loss: float
    spliced_loss: float
    zero_ablation_loss: float
    mean_ablation_loss: float | None
    loss_recovered: float         # vs zero ablation; nan when ablating costs nothing
    loss_recovered_mean: float | None   # the same against mean ablation
    kl_div: float
    error_term: bool = False

    @property
    def loss_delta(self) -> float:
        """How much worse the model is with the SAE spliced in (nats/token)."""
        return self.spliced_loss - self.clean_loss

    def as_dict(self) -> dict[str, float]:
        """The numbers as floats (for `EvalResult.extra` and metrics files)."""
        return {k: (float("nan") if x is None else float(x)) for k, x in asdict(self).items()
                if k not in ("hook_name",)} | {"loss_delta": self.loss_delta}


def _recovered(clean: float, sae_loss: float, ablated: float) -> float:
    try:
        return loss_recovered(clean, sae_loss, ablated)
    except ValueError:
        log.warning("ablating the activation does not change the loss (%.6g); the fraction "
                    "of loss recovered is undefined and reported as nan", clean)
        return float("nan")


# ---- inputs: token ids or a dict of the model's inputs ------------------------------------------

def check_inputs(inputs: Any, *, min_pos: int = 1) -> None:
    """`inputs` is token ids [batch, pos] (`check_tokens`) or a non-empty dict of the model's
    inputs whose tensors share their first (batch) axis."""
    if not isinstance(inputs, Mapping):
        check_tokens(inputs, min_pos=min_pos)
        return
    tensors = {k: t for k, t in inputs.items() if isinstance(t, Tensor)}
    if not tensors:
        raise ValueError(f"a dict of model inputs needs at least one tensor, got keys "
                         f"{list(inputs)}")
    sizes = {k: (t.shape[0] if t.ndim else None) for k, t in tensors.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values() or 0 in sizes.values():
        raise ValueError(f"the tensors of a dict of model inputs must share their first "
                         f"(batch) axis, of length >= 1; got {sizes}")


def _chunks(inputs: Any, batch_size: int, device: torch.device) -> list[Any]:
    if not isinstance(inputs, Mapping):
        return [c.to(device) for c in inputs.split(batch_size)]
    n = next(t.shape[0] for t in inputs.values() if isinstance(t, Tensor))
    return [{k: (t[i:i + batch_size].to(device) if isinstance(t, Tensor) else t)
             for k, t in inputs.items()} for i in range(0, n, batch_size)]


def output_mask(batch: Any) -> Tensor | None:
    """The real positions of the logits [batch, pos]: the target's mask for a two-sided
    (src/tgt) dict, else its "attention_mask"; None when unpadded."""
    return position_mask("unembed.hook_out", batch)


def next_token_losses(logits: Tensor, tokens: Tensor) -> Tensor:
    """Next-token cross-entropy [batch * (pos - 1)] of logits against token ids [batch, pos]."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(),
                           reduction="none")


def label_losses(logits: Tensor, batch: Mapping[str, Any]) -> Tensor:
    """Cross-entropy of logits[b, t] against batch["labels"][b, t] wherever it is not -100
    (the Encoder's MLM loss, the Seq2Seq's teacher-forced loss), one entry per label."""
    labels = batch.get("labels")
    if not isinstance(labels, Tensor) or labels.shape != logits.shape[:2] \
            or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        got = (f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, Tensor)
               else type(labels).__name__)
        raise ValueError(f"the loss needs batch['labels']: integer ids [batch, pos] = "
                         f"{list(logits.shape[:2])} (-100 where nothing is predicted), got {got}")
    real = labels != IGNORE_INDEX
    mask = output_mask(batch)
    if mask is not None and bool((real & ~mask.to(real.device)).any()):
        raise ValueError("batch['labels'] scores a padded position (a label other than -100 "
                         "where the output's attention mask is False); set labels to -100 at "
                         "padding")
    y = labels[real]
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= logits.shape[-1]):
        raise ValueError(f"labels must be -100 or ids in [0, {logits.shape[-1]}), got values "
                         f"in [{int(y.min())}, {int(y.max())}]")
    return F.cross_entropy(logits[real], y, reduction="none")


def _logits(model: nn.Module, batch: Any, fwd_hooks: list[tuple[str, HookFn]]) -> Tensor:
    args, kwargs = model_call(batch)
    out = model.run_with_hooks(*args, fwd_hooks=fwd_hooks, **kwargs)
    if isinstance(batch, Mapping):
        mask = output_mask(batch)
        n = next(t.shape[0] for t in batch.values() if isinstance(t, Tensor))
        ok = isinstance(out, Tensor) and out.ndim == 3 and out.shape[0] == n \
            and (mask is None or out.shape[:2] == mask.shape)
        want = f"[batch={n}, pos, d_vocab]"
    else:
        ok = isinstance(out, Tensor) and out.ndim == 3 and out.shape[:2] == batch.shape
        want = f"[batch, pos, d_vocab] for tokens {list(batch.shape)}"
    if not ok:
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits {want}, got {shape}")
    return out.float()


def _loss_sum(loss_fn: LossFn | None, logits: Tensor, batch: Any) -> tuple[float, int]:
    if loss_fn is None:
        losses = label_losses(logits, batch) if isinstance(batch, Mapping) \
            else next_token_losses(logits, batch)
    else:
        losses = loss_fn(logits, batch)
        if not isinstance(losses, Tensor) or not losses.is_floating_point():
            raise ValueError(f"loss_fn(logits, batch) must return a float tensor of "
                             f"per-prediction losses, got {type(losses).__name__}")
    return float(losses.double().sum()), losses.numel()


@torch.no_grad()
def spliced_losses(model: nn.Module, sae: SAE, hook_name: str,
                   tokens: Int[Tensor, "batch pos"] | Mapping[str, Any], *,
                   batch_size: int = 32, scale: float | None = None, error_term: bool = False,
                   mean_ablation: bool = True, progress: bool = True,
                   loss_fn: LossFn | None = None,
                   mask_key: str | Mapping[str, str | None] | None = None) -> SplicedLosses:
    """Clean, spliced, zero- and mean-ablated losses of `model` on `tokens` [batch, pos]
    (pos >= 2; next-token loss) or on a dict of the model's inputs (labels' loss, or
    `loss_fn`), `batch_size` sequences per forward pass (a progress bar with `progress=True`);
    see the module docstring.

    Both the model and the SAE run in eval mode (restored afterwards); activations go to the
    SAE's device and dtype and the reconstruction comes back to the model's.
    """
    check_model(model, hook_name)
    check_sae(sae)
    check_inputs(tokens, min_pos=2 if loss_fn is None else 1)
    v.positive_int("batch_size", batch_size)
    check_mask_key(mask_key)
    if not isinstance(mean_ablation, bool):
        raise ValueError(f"mean_ablation must be True or False, got {mean_ablation!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise ValueError(f"loss_fn must be a function (logits, batch) -> losses, got "
                         f"{type(loss_fn).__name__}")
    if isinstance(tokens, Mapping) and loss_fn is None and "labels" not in tokens:
        raise ValueError("a dict of model inputs needs 'labels' ([batch, pos], -100 where "
                         "nothing is predicted) or loss_fn=... to define the loss")
    fn = splice_hook(sae, hook_name, scale=scale, error_term=error_term)
    dev = model_device(model)
    chunks = _chunks(tokens, batch_size, dev)
    was_model, was_sae = model.training, sae.training
    model.eval()
    sae.eval()
    sums = dict(clean=0.0, spliced=0.0, zero=0.0, mean=0.0, kl=0.0)
    n_pred = n_tok = 0
    act_sum: Tensor | None = None
    n_rows = 0
    seen: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any) -> None:
        seen["act"] = act
    try:
        for i, chunk in enumerate(bar(chunks, progress=progress, desc="spliced losses",
                                      leave=False)):
            clean = _logits(model, chunk, [(hook_name, keep)])
            act = seen.pop("act")
            if i == 0:
                as_rows(act, sae.cfg.d_in, hook_name)        # a clear error before splicing
            if act.ndim >= 3:
                rows = real_rows(act, position_mask(hook_name, chunk, mask_key),
                                 what=f"activation at {hook_name!r}")
            else:
                rows = act
            part = rows.double().sum(0)
            act_sum = part if act_sum is None else act_sum + part
            n_rows += rows.shape[0]
            loss, n = _loss_sum(loss_fn, clean, chunk)
            sums["clean"] += loss
            n_pred += n
            out_mask = output_mask(chunk) if isinstance(chunk, Mapping) else None
            lp_clean = clean.log_softmax(-1)
            out = _logits(model, chunk, [(hook_name, fn)])
            sums["spliced"] += _loss_sum(loss_fn, out, chunk)[0]
            kl = (lp_clean.exp() * (lp_clean - out.log_softmax(-1))).sum(-1)   # [batch, pos]
            if out_mask is not None:
                kl = kl[out_mask.to(kl.device)]
            sums["kl"] += float(kl.double().sum())
            n_tok += kl.numel()
            zero = _logits(model, chunk, [(hook_name, lambda a, hook: torch.zeros_like(a))])
            sums["zero"] += _loss_sum(loss_fn, zero, chunk)[0]
        if mean_ablation:
            assert act_sum is not None
            mean = (act_sum / n_rows)

            def to_mean(a: Tensor, hook: Any) -> Tensor:
                return mean.to(a.device, a.dtype).expand_as(a).clone()
            for chunk in bar(chunks, progress=progress, desc="mean ablation", leave=False):
                sums["mean"] += _loss_sum(loss_fn, _logits(model, chunk, [(hook_name, to_mean)]),
                                          chunk)[0]
    finally:
        model.train(was_model)
        sae.train(was_sae)
    if n_pred == 0:
        raise ValueError("no prediction was scored (every label is -100, or loss_fn returned "
                         "nothing), so there is no loss to compare")
    clean_l, spl, zero_l = (sums[k] / n_pred for k in ("clean", "spliced", "zero"))
    mean_l = sums["mean"] / n_pred if mean_ablation else None
    return SplicedLosses(
        hook_name=hook_name, n_tokens=n_tok, n_predictions=n_pred, clean_loss=clean_l,
        spliced_loss=spl, zero_ablation_loss=zero_l, mean_ablation_loss=mean_l,
        loss_recovered=_recovered(clean_l, spl, zero_l),
        loss_recovered_mean=None if mean_l is None else _recovered(clean_l, spl, mean_l),
        kl_div=max(0.0, sums["kl"] / n_tok), error_term=error_term)


def splice_fn(model: nn.Module, hook_name: str,
              tokens: Int[Tensor, "batch pos"] | Mapping[str, Any],
              **kwargs: Any) -> Callable[[SAE], dict[str, float]]:
    """`model_fn` for `evaluate`: `sae -> spliced_losses(model, sae, hook_name, tokens,
    **kwargs).as_dict()`, so `EvalResult.extra` gets the spliced-in numbers."""
    check_model(model, hook_name)
    check_inputs(tokens, min_pos=2 if kwargs.get("loss_fn") is None else 1)
    known = ["batch_size", "scale", "error_term", "mean_ablation", "progress", "loss_fn",
             "mask_key"]
    unknown = set(kwargs) - set(known)
    if unknown:
        raise ValueError(f"splice_fn passes {known} on to spliced_losses; got unknown "
                         f"keyword(s) {sorted(unknown)}")

    def model_fn(sae: SAE) -> dict[str, float]:
        return spliced_losses(model, sae, hook_name, tokens, **kwargs).as_dict()

    return model_fn
