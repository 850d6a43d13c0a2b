"""TransformerLens's names for the facts of a transformer config.

TransformerLens's tools (ActivationCache.decompose_resid / apply_ln_to_stack,
transformer_lens.patching, SVDInterpreter, ...) read `model.cfg.<TL field>`. A config that
inherits `TLConfigSurface` answers in TL's vocabulary through class-level defaults and
read-only properties; none of them is a dataclass field, so equality, hashing and config.json
ignore them.

The runtime switches TL keeps on its config (HookedTransformer.set_use_attn_result & co.) and
the model's device and dtype are set per model on its private copy of the config
(`HookedModel._set_runtime`); the class-level values are the defaults. This module imports
nothing from the rest of the package, so every config can inherit it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch


class TLConfigSurface:
    RUNTIME: ClassVar[tuple[str, ...]] = ("use_attn_result", "use_split_qkv_input", "use_attn_in",
                                          "use_hook_mlp_in", "device", "dtype")
    use_attn_result: ClassVar[bool] = False
    use_split_qkv_input: ClassVar[bool] = False
    use_attn_in: ClassVar[bool] = False
    use_hook_mlp_in: ClassVar[bool] = False
    device: ClassVar[Any] = None
    dtype: ClassVar[torch.dtype] = torch.float32
    n_key_value_heads: ClassVar[None] = None
    use_attn_scale: ClassVar[bool] = True

    @property
    def normalization_type(self) -> str | None:
        """TL's name: "LN" (learned w, b) for pre- and post-LN, None without LayerNorm."""
        return None if self.norm == "none" else "LN"     # type: ignore[attr-defined]

    @property
    def act_fn(self) -> str:
        return self.act          # type: ignore[attr-defined]  # "gelu": exact (erf), as TL's

    @property
    def eps(self) -> float:
        return self.ln_eps                               # type: ignore[attr-defined]

    @property
    def attn_scale(self) -> float:
        return math.sqrt(self.d_head)                    # type: ignore[attr-defined]
