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

from superpose import _validate as v

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


def check_hook_name(model: nn.Module, name: Any) -> None:
    """A ValueError listing close matches when `model` (any HookedRootModule, ours or
    TransformerLens's) has no hook point `name`; TransformerLens itself raises a bare KeyError
    or caches nothing."""
    hook_dict = model.hook_dict
    if not isinstance(name, str) or name in hook_dict:
        return
    near = v.close_matches(name, list(hook_dict))
    context = model._hook_name_context() if hasattr(model, "_hook_name_context") else ""
    lister = "model.hook_names()" if hasattr(model, "hook_names") else "model.hook_dict"
    raise ValueError(f"this {type(model).__name__} has no hook point named {name!r}"
                     + (f"; close matches: {near}" if near else "") + context
                     + f"; {lister} lists all {len(hook_dict)}")


class CheckedHookNames:
    """Mixin for a HookedRootModule (put it before HookedRootModule in the bases): every way of
    naming a hook point by string — add_hook, hooks, run_with_hooks, run_with_cache's
    names_filter — checks the name first, and an unknown one is a ValueError with close
    matches. Signatures are TL 3.9's and 4.x's (extra positional arguments passed through)."""

    hook_dict: dict[str, HookPoint]

    def hook_names(self) -> list[str]:
        """Every hook point name of this model, in forward order."""
        return list(self.hook_dict)

    def _check_hook_name(self, name: Any) -> None:
        check_hook_name(self, name)          # type: ignore[arg-type]

    def _check_names_filter(self, names_filter: Any) -> None:
        if isinstance(names_filter, str):
            self._check_hook_name(names_filter)
        elif isinstance(names_filter, (list, tuple)):
            for name in names_filter:
                self._check_hook_name(name)

    def add_hook(self, name: Any, hook: Any, *args: Any, **kwargs: Any) -> None:
        self._check_hook_name(name)
        return super().add_hook(name, hook, *args, **kwargs)       # type: ignore[misc]

    def hooks(self, fwd_hooks: Any = (), bwd_hooks: Any = (), *args: Any,
              **kwargs: Any) -> contextlib.AbstractContextManager:
        for name, _ in [*fwd_hooks, *bwd_hooks]:
            self._check_hook_name(name)
        return super().hooks(list(fwd_hooks), list(bwd_hooks), *args,   # type: ignore[misc]
                             **kwargs)

    def run_with_hooks(self, *model_args: Any, fwd_hooks: Any = (), bwd_hooks: Any = (),
                       **kwargs: Any) -> Any:
        for name, _ in [*fwd_hooks, *bwd_hooks]:
            self._check_hook_name(name)
        return super().run_with_hooks(*model_args, fwd_hooks=list(fwd_hooks),  # type: ignore
                                      bwd_hooks=list(bwd_hooks), **kwargs)

    def get_caching_hooks(self, names_filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        self._check_names_filter(names_filter)
        return super().get_caching_hooks(names_filter, *args, **kwargs)  # type: ignore[misc]

    def add_caching_hooks(self, names_filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        self._check_names_filter(names_filter)
        return super().add_caching_hooks(names_filter, *args, **kwargs)  # type: ignore[misc]


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
    if not wanted:
        raise ValueError("capture needs at least one hook name, got none")
    for name in wanted:
        check_hook_name(model, name)

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
