"""Configuration of a small decoder-only GPT.

One frozen dataclass, validated (only validated) in `__post_init__`; `d_head` and `d_mlp` are
filled in from `d_model` when left as None, so a saved config always holds the resolved sizes.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import ClassVar, Literal

from superpose import _validate as v
from superpose.transformer.surface import TLConfigSurface

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
class GPTConfig(TLConfigSurface):
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

    # Every field's rule, once (checked by `_validate.check_fields`, first thing in
    # `__post_init__`); the rules that tie fields together follow it there.
    _constraints: ClassVar[dict[str, v.Rule]] = {
        "d_vocab": v.Int(1),
        "n_layers": v.Int(1),
        "d_model": v.Int(1),
        "n_heads": v.Int(1),
        "d_head": v.Int(1) | v.Const(None),
        "d_mlp": v.Int(1) | v.Const(None),
        "n_ctx": v.Int(1),
        "attn_only": v.Bool(),
        "dropout": v.Float(ge=0, lt=1),
        "positional": v.Choice(*POSITIONALS),
        "norm": v.Choice(*NORMS),
        "act": v.Choice(*ACTS),
        "tied_embeddings": v.Bool(),
        "init_std": v.Float(gt=0),
        "ln_eps": v.Float(gt=0),
        "rotary_base": v.Float(gt=0),
        "seed": v.Int(0),
    }

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) "
                    f"when d_head is not given; pass d_head explicitly or pick n_heads among "
                    f"{[h for h in range(1, self.d_model + 1) if self.d_model % h == 0][:12]}"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        if self.positional == "rotary" and self.d_head % 2:
            raise ValueError(f"positional='rotary' rotates pairs of dimensions, so d_head must "
                             f"be even, got d_head={self.d_head}")

    # ---- TransformerLens's names for the same facts (see transformer.surface) ------------
    # Fixed facts about this architecture, in TL's terms.
    original_architecture: ClassVar[str] = "superpose.GPT"
    parallel_attn_mlp: ClassVar[bool] = False
    gated_mlp: ClassVar[bool] = False
    final_rms: ClassVar[bool] = False
    use_local_attn: ClassVar[bool] = False
    use_hook_tokens: ClassVar[bool] = False
    use_normalization_before_and_after: ClassVar[bool] = False
    ungroup_grouped_query_attention: ClassVar[bool] = False
    rotary_adjacent_pairs: ClassVar[bool] = False
    default_prepend_bos: ClassVar[bool] = False
    tokenizer_prepends_bos: ClassVar[bool] = False
    n_devices: ClassVar[int] = 1
    model_name: ClassVar[str] = "superpose-gpt"

    @property
    def positional_embedding_type(self) -> str:
        """TL's name: "standard" (a table added to the embedding: learned or sinusoidal),
        "rotary", or "none"."""
        return {"learned": "standard", "sinusoidal": "standard"}.get(self.positional,
                                                                     self.positional)

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def rotary_dim(self) -> int | None:
        return self.d_head if self.positional == "rotary" else None

