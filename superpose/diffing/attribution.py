"""Behavioural (KL) attribution: how much of the fine-tune's output difference from the base
(KL(p_ft || p_base)) a contribution to its residual stream carries, estimated to first order
(`kl_gradient`, `kl_attribution`), measured by ablating it (`contribution_hooks`,
`kl_ablation`), and used to fix a free sign (`kl_sign`) and to pick among candidates
(`_pick`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose import hooks
from superpose.diffing.planted import _check_pair, _check_tokens, _logits


def kl_divergence(base: nn.Module, finetuned: nn.Module, tokens: Int[Tensor, "batch pos"], *,
                  fwd_hooks: Sequence[tuple[str, Any]] = (), batch_size: int = 64
                  ) -> Float[Tensor, "batch pos"]:
    """KL(p_ft || p_base) of the two models' next-token distributions at every position of
    `tokens` (nats). `fwd_hooks`: (hook name, factory) pairs (as `steering_hooks` makes)
    applied to the fine-tune's forward only."""
    _check_pair(base, finetuned)
    _check_tokens(tokens)
    lb = _logits(base, tokens, batch_size=batch_size).log_softmax(-1)
    lf = _logits(finetuned, tokens, fwd_hooks, batch_size=batch_size).log_softmax(-1)
    return (lf.exp() * (lf - lb)).sum(-1)


def kl_gradient(base: nn.Module, finetuned: nn.Module, hook_names: str | Sequence[str],
                tokens: Int[Tensor, "batch pos"], *, batch_size: int = 32
                ) -> dict[str, Tensor]:
    """∇ of the mean KL(p_ft || p_base) over all positions of `tokens` with respect to the
    fine-tune's activation at each of `hook_names`: {name: [batch pos d]} (one forward of the
    base, one forward and backward of the fine-tune per chunk of `batch_size` sequences, all
    hooks at once). The gradient at a position includes the KL at later positions that it
    reaches through attention, which is what ablating there at every position changes."""
    _check_pair(base, finetuned)
    _check_tokens(tokens)
    names = [hook_names] if isinstance(hook_names, str) else list(dict.fromkeys(hook_names))
    if not names:
        raise ValueError("kl_gradient needs at least one hook name, got none")
    for h in names:
        hooks.check_hook_name(finetuned, h)
    v.positive_int("batch_size", batch_size)
    dev = next(finetuned.parameters()).device
    n = tokens.numel()
    out: dict[str, list[Tensor]] = {h: [] for h in names}
    for start in range(0, tokens.shape[0], batch_size):
        x = tokens[start:start + batch_size].to(dev)
        with torch.no_grad():
            lb = base(x).float().log_softmax(-1)
        leaves: dict[str, Tensor] = {}

        def make(h: str, leaves: dict[str, Tensor] = leaves) -> Any:
            def hook(act: Tensor, hook: Any = None) -> Tensor:
                # a zero leaf added to the activation: its gradient is the activation's, and
                # no path through the hook is cut (later hooks' gradients stay complete)
                z = torch.zeros_like(act, requires_grad=True)
                leaves[h] = z
                return act + z
            return hook

        with torch.enable_grad():
            lf = finetuned.run_with_hooks(x, fwd_hooks=[(h, make(h)) for h in names])
            lf = lf.float().log_softmax(-1)
            kl = (lf.exp() * (lf - lb)).sum() / n
            grads = torch.autograd.grad(kl, [leaves[h] for h in names])
        for h, g in zip(names, grads):
            out[h].append(g.detach().float().cpu())
    return {h: torch.cat(gs) for h, gs in out.items()}


def kl_attribution(base: nn.Module, finetuned: nn.Module, hook_name: str,
                   tokens: Int[Tensor, "batch pos"], directions: Float[Tensor, "n d"],
                   activations: Float[Tensor, "batch pos n"], *, grad: Tensor | None = None,
                   chunk: int = 8192) -> Float[Tensor, " n"]:
    """Behavioural attribution of `n` candidate contributions to the fine-tune's residual
    stream at `hook_name`: candidate c writes activations[..., c] · directions[c] at every
    position of `tokens`; its score is the first-order estimate of how much removing that
    contribution from the fine-tune lowers the mean KL(p_ft || p_base) over the positions,
    Σ_pos a_c(pos) · (d_c · ∇_{x(pos)} mean KL) (attribution patching: Nanda 2023, Syed et
    al. 2023). Positive: the candidate carries part of the fine-tune's output difference from
    the base; it is invariant under (a, d) -> (−a, −d). `grad`: a precomputed
    `kl_gradient(...)[hook_name]` on the same tokens (else computed here).

    Which tokens: unlabeled text the fine-tune differs on, e.g. the fine-tuning data (a
    researcher diffing a fine-tune has it, not the labels of what it planted)."""
    _check_tokens(tokens)
    if directions.ndim != 2:
        raise ValueError(f"directions must be [n_candidates, d], got {list(directions.shape)}")
    n_cand, d = directions.shape
    if tuple(activations.shape) != (*tokens.shape, n_cand):
        raise ValueError(f"activations must be [batch, pos, n_candidates] = "
                         f"{[*tokens.shape, n_cand]}, got {list(activations.shape)}")
    g = grad if grad is not None else kl_gradient(base, finetuned, hook_name, tokens)[hook_name]
    if tuple(g.shape) != (*tokens.shape, d):
        raise ValueError(f"the gradient at {hook_name!r} is {list(g.shape)}; it must be "
                         f"[batch, pos, d] = {[*tokens.shape, d]} (directions have d={d})")
    g = g.reshape(-1, d).double().cpu()
    a = activations.reshape(-1, n_cand).cpu()
    dirs = directions.detach().double().cpu()
    total = torch.zeros(n_cand, dtype=torch.float64)
    for i in range(0, g.shape[0], chunk):
        total += (a[i:i + chunk].double() * (g[i:i + chunk] @ dirs.T)).sum(0)
    return total.float()


def contribution_hooks(hook_name: str, direction: Float[Tensor, " d"],
                       activation: Float[Tensor, "batch pos"], *, scale: float | int = -1.0
                       ) -> list[tuple[str, Any]]:
    """Forward-hook factories (as `steering_hooks`) that add `scale` · activation(pos) ·
    direction at every position at `hook_name`: scale −1 removes a candidate's contribution
    (what `kl_attribution` estimates to first order)."""
    d = direction.detach().float()
    act = activation.detach().float()

    def factory(start: int, rows: int) -> Any:
        a = act[start:start + rows]

        def hook(x: Tensor, hook: Any = None) -> Tensor:
            return x + scale * a.to(x)[..., None] * d.to(x)
        return hook

    return [(hook_name, factory)]


def kl_ablation(base: nn.Module, finetuned: nn.Module, hook_name: str,
                tokens: Int[Tensor, "batch pos"], direction: Float[Tensor, " d"],
                activation: Float[Tensor, "batch pos"], *, scale: float | int = 1.0) -> float:
    """The measured drop of the mean KL(p_ft || p_base) over `tokens` when `scale` ×
    (activation · direction) is removed from the fine-tune at `hook_name` (a real ablation,
    to check `kl_attribution`, whose estimate is scale × the attribution for small scales)."""
    hooks.check_hook_name(finetuned, hook_name)
    if tuple(activation.shape) != tuple(tokens.shape):
        raise ValueError(f"activation must be [batch, pos] like tokens {list(tokens.shape)}, "
                         f"got {list(activation.shape)}")
    before = kl_divergence(base, finetuned, tokens).mean()
    after = kl_divergence(base, finetuned, tokens, fwd_hooks=contribution_hooks(
        hook_name, direction, activation, scale=-scale)).mean()
    return float(before - after)


def kl_sign(activation: Float[Tensor, "batch pos"], direction: Float[Tensor, " d"],
            grad: Float[Tensor, "batch pos d"]) -> int:
    """+1 or −1: the orientation of a candidate whose sign is free, fixed by the behaviour
    (no labels): its activation is made positive where removing its contribution lowers the
    KL (the sign of Σ_pos a(pos) · max(0, a(pos) d·∇KL(pos)))."""
    a = activation.detach().double().flatten()
    attr = a * (grad.detach().double().reshape(-1, direction.numel())
                @ direction.detach().double())
    return 1 if float((a * attr.clamp(min=0)).sum()) >= 0 else -1


def _verify(base: nn.Module, finetuned: nn.Module, tokens: Tensor,
            entries: list[tuple[str, Tensor, Tensor]]) -> list[float]:
    return [kl_ablation(base, finetuned, h, tokens, d, a) for h, d, a in entries]


def _pick(base: nn.Module, finetuned: nn.Module, tokens: Tensor, attr: Tensor,
          entry: Any, verify: int) -> tuple[int, dict[str, Any]]:
    """The candidate index chosen from attributions `attr` [n]: among the top `verify`, the
    largest measured KL drop (`entry(i)` -> (hook, direction, activation) on `tokens`)."""
    v.non_negative_int("verify", verify)
    order = attr.argsort(descending=True).tolist()
    info: dict[str, Any] = {"kl_top": order[:5],
                            "kl_top_attribution": [round(float(attr[i]), 5) for i in order[:5]]}
    if verify == 0:
        return order[0], info
    top = order[:verify]
    drops = _verify(base, finetuned, tokens, [entry(i) for i in top])
    info["kl_verified"] = {int(i): round(dr, 5) for i, dr in zip(top, drops)}
    return top[max(range(len(top)), key=lambda k: drops[k])], info
