"""Configuration of a small decoder-only GPT.

One frozen dataclass, validated (only validated) in `__post_init__`; `d_head` and `d_mlp` are
filled in from `d_model` when left as None, so a saved config always holds the resolved sizes.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from superpose import _validate as v

Positional = Literal["learned", "sinusoidal", "rotary", "none"]
POSITIONALS: tuple[str, ...] = ("learned", "sinusoidal", "rotary", "none")
Norm = Literal["pre", "post", "none"]
NORMS: tuple[str, ...] = ("pre", "post", "none")
Act = Literal["gelu", "relu"]
ACTS: tuple[str, ...] = ("gelu", "relu")


# `no_type_check`: under pytest every function in superpose.gpt is run-time type checked; the
# config must still raise its own ValueError (field, value, what is allowed), not a beartype
# error about `int`, so it opts out of that checker.
@typing.no_type_check
@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """A decoder-only transformer. Every field is keyword-only; only `d_vocab` is required.

    positional: how tokens learn where they are.
      - "learned":    a trained W_pos [n_ctx, d_model] added to the embedding (GPT-2).
      - "sinusoidal": the fixed sin/cos table of Vaswani et al. 2017, added to the embedding.
      - "rotary":     q and k rotated by position in each head (RoPE, Su et al. 2021; the
                      GPT-NeoX "rotate half" layout over the whole d_head).
      - "none":       no position signal; the causal mask alone (Haviv et al. 2022).
    norm: where LayerNorm goes.
      - "pre":  x + f(LN(x)), plus a final LN before the unembedding (GPT-2; trains without
                warm-up).
      - "post": LN(x + f(x)) after every residual add, no final LN (the original Transformer).
      - "none": no LayerNorm at all.
    attn_only: blocks without MLPs (as in the induction-head papers).
    tied_embeddings: unembed with W_Eᵀ (Press & Wolf 2017) instead of a separate W_U.
    dropout: on the embedding, the attention pattern and each block output; train mode only.
    init_std: std of every weight at init; the two residual-writing projections (W_O, W_out)
      are further scaled by 1/sqrt(number of residual writes), as in GPT-2.
    seed: seeds the initial weights (the model is the same on every device).
    """

    d_vocab: int
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_head: int | None = None          # None: d_model // n_heads
    d_mlp: int | None = None           # None: 4 * d_model (GPT-2's ratio)
    n_ctx: int = 128
    attn_only: bool = False
    dropout: float = 0.0
    positional: Positional = "learned"
    norm: Norm = "pre"
    act: Act = "gelu"
    tied_embeddings: bool = False
    init_std: float = 0.02             # GPT-2's initializer range
    ln_eps: float = 1e-5               # torch's and GPT-2's LayerNorm epsilon
    rotary_base: float = 10_000.0      # RoPE's frequency base (the paper's value)
    seed: int = 0

    def __post_init__(self) -> None:
        v.positive_int("d_vocab", self.d_vocab)
        v.positive_int("n_layers", self.n_layers)
        v.positive_int("d_model", self.d_model)
        v.positive_int("n_heads", self.n_heads)
        v.positive_int("n_ctx", self.n_ctx)
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) "
                    f"when d_head is not given; pass d_head explicitly or pick n_heads among "
                    f"{[h for h in range(1, self.d_model + 1) if self.d_model % h == 0][:12]}"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        v.positive_int("d_head", self.d_head)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        v.positive_int("d_mlp", self.d_mlp)
        for name in ("attn_only", "tied_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        v.choice("positional", self.positional, POSITIONALS)
        v.choice("norm", self.norm, NORMS)
        v.choice("act", self.act, ACTS)
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        v.positive_float("init_std", self.init_std)
        v.positive_float("ln_eps", self.ln_eps)
        v.positive_float("rotary_base", self.rotary_base)
        v.non_negative_int("seed", self.seed)
        if self.positional == "rotary" and self.d_head % 2:
            raise ValueError(f"positional='rotary' rotates pairs of dimensions, so d_head must "
                             f"be even, got d_head={self.d_head}")
        for name in ("dropout", "init_std", "ln_eps", "rotary_base"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # ---- TransformerLens's names for the same facts ------------------------------------------
    # TransformerLens's tools (ActivationCache.decompose_resid / apply_ln_to_stack,
    # transformer_lens.patching, SVDInterpreter, ...) read `model.cfg.<TL field>`. These read-only
    # properties answer in TL's vocabulary; they are not fields, so they are never saved.

    # Runtime switches TL keeps on its config (HookedTransformer.set_use_attn_result & co.) and
    # the model's device and dtype. A GPT owns a private copy of its config and sets these on it
    # (`GPT._set_runtime`); they are not dataclass fields, so equality, hashing and config.json
    # ignore them. The class-level values are the defaults.
    RUNTIME: ClassVar[tuple[str, ...]] = ("use_attn_result", "use_split_qkv_input", "use_attn_in",
                                          "use_hook_mlp_in", "device", "dtype")
    use_attn_result: ClassVar[bool] = False
    use_split_qkv_input: ClassVar[bool] = False
    use_attn_in: ClassVar[bool] = False
    use_hook_mlp_in: ClassVar[bool] = False
    device: ClassVar[Any] = None
    dtype: ClassVar[torch.dtype] = torch.float32
    # Fixed facts about this architecture, in TL's terms.
    original_architecture: ClassVar[str] = "superpose.GPT"
    n_key_value_heads: ClassVar[None] = None
    parallel_attn_mlp: ClassVar[bool] = False
    gated_mlp: ClassVar[bool] = False
    final_rms: ClassVar[bool] = False
    use_local_attn: ClassVar[bool] = False
    use_hook_tokens: ClassVar[bool] = False
    use_attn_scale: ClassVar[bool] = True
    use_normalization_before_and_after: ClassVar[bool] = False
    ungroup_grouped_query_attention: ClassVar[bool] = False
    rotary_adjacent_pairs: ClassVar[bool] = False
    default_prepend_bos: ClassVar[bool] = False
    tokenizer_prepends_bos: ClassVar[bool] = False
    n_devices: ClassVar[int] = 1
    model_name: ClassVar[str] = "superpose-gpt"

    @property
    def normalization_type(self) -> str | None:
        """TL's name: "LN" (learned w, b) for pre- and post-LN, None without LayerNorm."""
        return None if self.norm == "none" else "LN"

    @property
    def positional_embedding_type(self) -> str:
        """TL's name: "standard" (a table added to the embedding: learned or sinusoidal),
        "rotary", or "none"."""
        return {"learned": "standard", "sinusoidal": "standard"}.get(self.positional,
                                                                     self.positional)

    @property
    def act_fn(self) -> str:
        return self.act          # "gelu" is the exact (erf) GELU, as TL's "gelu"

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def eps(self) -> float:
        return self.ln_eps

    @property
    def rotary_dim(self) -> int | None:
        return self.d_head if self.positional == "rotary" else None

    @property
    def attn_scale(self) -> float:
        return math.sqrt(self.d_head)
