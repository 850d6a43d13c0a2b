"""The one hook core: "is anything listening here?" for every model, the SAEs and the splice,
and "capture these activations, then stop the forward pass" for the activation store and the
SAE tools.

Fast paths (the GPT's fused attention and LayerNorm, the SAEs' sparse training steps, the toy
models' closed-form gradient) skip tensors that nobody reads. They are only correct when no
hook of *any* direction is attached: a forward hook reads or replaces the value, a forward
pre-hook sees the input, a backward hook (TransformerLens's ``dir="bwd"``) reads its gradient.
`is_hooked` is the single test all of them use, so a hook of any kind always switches a
module to its explicit path.

It reads torch's hook dicts (an O(1) check; ``nn.Module`` keeps no public accessor for them)
and the process-wide hooks of ``torch.nn.modules.module.register_module_*_hook``.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn.modules import module as _module
from transformer_lens.hook_points import HookPoint

_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
# torch's process-wide module hooks: dicts created once at import and mutated in place, so the
# references stay valid (a missing one, on an older torch, is an empty stand-in).
_GF, _GFP, _GB, _GBP = (getattr(_module, name, {}) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
    "_global_backward_pre_hooks"))


def is_hooked(point: nn.Module) -> bool:
    """True when a forward, forward-pre, backward or backward-pre hook is attached to `point`
    (or a process-wide module hook is registered). Eight dict truth tests, cheap enough to ask
    on every forward of every hook point."""
    return bool(point._forward_hooks or point._forward_pre_hooks or point._backward_hooks
                or point._backward_pre_hooks or _GF or _GFP or _GB or _GBP)


def any_hooked(points: nn.Module | Iterable[nn.Module]) -> bool:
    """`is_hooked` over every HookPoint of a HookedRootModule (or an iterable of modules)."""
    if isinstance(points, nn.Module):
        points = [m for m in points.modules() if isinstance(m, HookPoint)]
    return any(is_hooked(p) for p in points)


class FastHookPoint(HookPoint):
    """A TransformerLens HookPoint that returns its input without ``nn.Module``'s call machinery
    when no hook of any direction is attached (every training step), where a plain HookPoint
    pays for that machinery at every hook of every forward. With a hook attached it is exactly
    TL's HookPoint; tests/test_hooks.py compares the two with each kind of hook."""

    def __call__(self, x: Tensor) -> Tensor:
        return super().__call__(x) if is_hooked(self) else x


@contextlib.contextmanager
def suspended(points: nn.Module | Iterable[nn.Module]) -> Iterator[None]:
    """Run with every hook (all four directions) of `points` detached, then put them back in
    their order. `points`: a HookedRootModule (all its HookPoints) or modules."""
    if isinstance(points, nn.Module):
        points = [m for m in points.modules() if isinstance(m, HookPoint)]
    saved = [(p, {name: getattr(p, name) for name in _DICTS}) for p in points]
    try:
        for p, _ in saved:
            for name in _DICTS:
                setattr(p, name, collections.OrderedDict())
        yield
    finally:
        for p, dicts in saved:
            for name, d in dicts.items():
                setattr(p, name, d)


class _StopForward(Exception):
    """Raised by a capture hook once every requested activation is in hand."""


def capture(model: nn.Module, hook_names: Sequence[str], *model_args: Any,
            stop_early: bool = True, clone: bool = False, context: str = "",
            **model_kwargs: Any) -> dict[str, Tensor]:
    """Run `model(*model_args, **model_kwargs)` and return the output of each named HookPoint
    (detached; copied when `clone`, for a caller that keeps it past the next forward). With
    `stop_early` the forward pass ends as soon as the last of them has fired, so the layers
    after it never run. The torch hooks are removed in `finally`. A hook that never fires is a
    RuntimeError naming it (`context` is added to the message, e.g. which batch)."""
    captured: dict[str, Tensor] = {}
    wanted = list(dict.fromkeys(hook_names))

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            captured[name] = output.detach().clone() if clone else output.detach()
            if stop_early and len(captured) == len(wanted):
                raise _StopForward
        return hook

    handles = [model.hook_dict[name].register_forward_hook(make_hook(name)) for name in wanted]
    try:
        model(*model_args, **model_kwargs)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in wanted if name not in captured]
    if missing:
        raise RuntimeError(f"hook(s) {missing} did not fire in the forward pass{context}; the "
                           f"model never calls them on this input")
    return captured
