"""What the three transformer families share as TransformerLens `HookedRootModule`s: the
runtime switches (set_use_attn_result & co.), hook-name checks, `run_with_cache` returning an
`ActivationCache`, save/load, and the checks of token and mask inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import ActivationCache, HookedRootModule

from superpose import runs
from superpose.hooks import CheckedHookNames


class HookSwitchError(ValueError, AssertionError):
    """A hook on a hook point that is switched off (hook_result before set_use_attn_result(True),
    ...). A ValueError like every bad input here, and an AssertionError, which is what
    HookedTransformer raises and what TL-style code catches."""


def check_tokens(what: str, tokens: Any, d_vocab: int, n_ctx: int, *,
                 vocab_name: str = "d_vocab", ctx_name: str = "n_ctx") -> None:
    """Raise a ValueError naming the problem if `tokens` is not a valid [batch pos] input of
    ids below `d_vocab` and at most `n_ctx` long (the config fields `vocab_name`, `ctx_name`:
    named in the messages)."""
    if not isinstance(tokens, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of token ids, got "
                         f"{type(tokens).__name__}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{what} must hold integer token ids (torch.long), got dtype "
                         f"{tokens.dtype}")
    if tokens.ndim != 2 or tokens.numel() == 0:
        raise ValueError(f"{what} must have shape [batch, pos] with batch, pos >= 1, got "
                         f"{list(tokens.shape)}" + (f" (use {what}[None] for a single "
                                                     "sequence)" if tokens.ndim == 1 else ""))
    if tokens.shape[1] > n_ctx:
        raise ValueError(f"{what}: sequence length {tokens.shape[1]} exceeds the model's "
                         f"context {ctx_name}={n_ctx}; crop to {what}[:, -{n_ctx}:] or split it")
    lo, hi = (t.item() for t in torch.aminmax(tokens))
    if lo < 0 or hi >= d_vocab:
        raise ValueError(f"{what}: token ids must lie in [0, {vocab_name}={d_vocab}), got "
                         f"values in [{lo}, {hi}]")


def check_mask(what: str, mask: Any, tokens: Tensor) -> Tensor | None:
    """An attention mask [batch pos] (bool or 0/1 integers, True/1 at real tokens) as a bool
    tensor on the tokens' device; None stays None (no padding). Every sequence needs one real
    token."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise ValueError(f"{what} must be a tensor [batch, pos] (True or 1 at real tokens, "
                         f"False or 0 at padding), got {type(mask).__name__}")
    if mask.shape != tokens.shape:
        raise ValueError(f"{what} must have the tokens' shape {list(tokens.shape)} (True or 1 "
                         f"at real tokens), got {list(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or mask.is_complex() or not bool(
                ((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{what} must be bool or hold only 0 and 1 (1 at real tokens), "
                             f"got dtype {mask.dtype}")
        mask = mask.bool()
    empty = (~mask.any(-1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"{what}: sequence(s) {empty[:10].tolist()} are all padding (no True "
                         "in their row); drop them from the batch")
    return mask.to(tokens.device)


class HookedModel(CheckedHookNames, HookedRootModule):
    """The surface the GPT, the encoder and the encoder–decoder share. A subclass sets
    `CONFIG` (its config class) and owns a private copy of its config as `self.cfg`."""

    CONFIG: type

    def _own_config(self, cfg: Any) -> Any:
        """Check that `cfg` is this model's config class and keep a private copy as `self.cfg`:
        TL's runtime switches (set_use_attn_result, ...) and the device are set on it, and must
        not leak into another model built from the same config."""
        if not isinstance(cfg, self.CONFIG):
            name = self.CONFIG.__name__
            raise TypeError(f"{type(self).__name__} takes {'an' if name[0] in 'AEIOU' else 'a'} "
                            f"{name}, got {type(cfg).__name__}")
        self.cfg = dataclasses.replace(cfg)
        return self.cfg

    _SWITCHED = (("attn.hook_result", "use_attn_result", "set_use_attn_result"),
                 ("hook_q_input", "use_split_qkv_input", "set_use_split_qkv_input"),
                 ("hook_k_input", "use_split_qkv_input", "set_use_split_qkv_input"),
                 ("hook_v_input", "use_split_qkv_input", "set_use_split_qkv_input"),
                 ("hook_mlp_in", "use_hook_mlp_in", "set_use_hook_mlp_in"),
                 ("hook_attn_in", "use_attn_in", "set_use_attn_in"),
                 ("hook_cross_attn_in", "use_attn_in", "set_use_attn_in"))

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """nn.Module's `.to()` / `.cuda()` / `.half()` path; keeps cfg.device and cfg.dtype (read
        by TransformerLens's tools) equal to the weights'."""
        out = super()._apply(fn, *args, **kwargs)
        p = next(self.parameters())
        self._set_runtime(device=p.device, dtype=p.dtype)
        return out

    def _set_runtime(self, **values: Any) -> None:
        for name, value in values.items():
            if name not in type(self.cfg).RUNTIME:
                raise AttributeError(f"{name} is not a runtime switch of {type(self.cfg).__name__}")
            object.__setattr__(self.cfg, name, value)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- switches ----------------------------------------------------------------------------

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Compute each head's output separately so `...attn.hook_result` [batch pos head
        d_model] fires (more memory; the fused out-projection is skipped)."""
        self._set_runtime(use_attn_result=bool(use_attn_result))

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Give each head its own copy of the query, key and value inputs: hook_q_input /
        hook_k_input / hook_v_input [batch pos head d_model]."""
        self._set_runtime(use_split_qkv_input=bool(use_split_qkv_input))

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Give each head its own copy of its input: hook_attn_in (and hook_cross_attn_in)."""
        self._set_runtime(use_attn_in=bool(use_attn_in))

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Fire hook_mlp_in (a copy of the MLP's input, before its LayerNorm)."""
        if getattr(self.cfg, "attn_only", False):
            raise ValueError("this model is attention-only (attn_only=True): it has no MLP input")
        self._set_runtime(use_hook_mlp_in=bool(use_hook_mlp_in))

    def check_hooks_to_add(self, hook_point: Any, hook_point_name: str, hook: Any,
                           *args: Any, **kwargs: Any) -> None:
        """As HookedTransformer: a hook on a switched-off hook point would never fire, so
        adding one is an error that names the switch."""
        for suffix, flag, setter in self._SWITCHED:
            if hook_point_name.endswith(suffix) and not getattr(self.cfg, flag):
                raise HookSwitchError(f"{hook_point_name} only fires after "
                                      f"model.{setter}(True); call it before adding this hook")

    def run_with_hooks(self, *model_args: Any, fwd_hooks: Any = (), bwd_hooks: Any = (),
                       **kwargs: Any) -> Any:
        """TL's run_with_hooks; an unknown hook name lists close matches, and a hook on a
        switched-off hook point (hook_result, hook_q_input, ...) is an error naming the switch
        (TL would add it and never call it)."""
        for name, hook in [*fwd_hooks, *bwd_hooks]:
            if isinstance(name, str):
                self._check_hook_name(name)
                self.check_hooks_to_add(None, name, hook)
        return super().run_with_hooks(*model_args, fwd_hooks=list(fwd_hooks),
                                      bwd_hooks=list(bwd_hooks), **kwargs)

    def run_with_cache(self, *model_args: Any, **kwargs: Any
                       ) -> tuple[Any, ActivationCache]:
        """`(output, cache)` as on a TL HookedTransformer: the cache is an `ActivationCache`.
        Keyword arguments are TL's (names_filter, device, remove_batch_dim, incl_bwd, ...) and
        the model's forward's."""
        out, cache = super().run_with_cache(*model_args, **kwargs)
        return out, ActivationCache(cache, self,
                                    has_batch_dim=not kwargs.get("remove_batch_dim", False))

    # ---- save / load -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write `config.json` + `model.safetensors` into the folder `path` (atomically). A model
        with LoRA adapters is refused (`lora.save` saves them, apart from the base)."""
        from superpose import lora
        lora.check_unadapted(self, "model.save", merged_ok=False)
        return runs.save_module(path, self, self.cfg)

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None) -> Any:
        """Load a model written by `save`; a missing, corrupt or mismatched file fails clearly."""
        return runs.load_module(path, cls, cls.CONFIG, device=device)
