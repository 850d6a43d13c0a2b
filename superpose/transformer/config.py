"""Configurations of the encoder (BERT-style, masked language modelling) and the
encoder–decoder (the original Transformer / T5 / BART shape). The field names, meanings and
rules they share with `GPTConfig` are GPTConfig's (see its docstring); each config is one
frozen dataclass validated in `__post_init__`, with `d_head` and `d_mlp` resolved from
`d_model` when left as None.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from superpose import _validate as v
from superpose.gpt.config import Act, GPTConfig, Norm, Positional
from superpose.transformer.surface import TLConfigSurface

_SHARED = {k: GPTConfig._constraints[k] for k in (
    "d_vocab", "n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "dropout",
    "positional", "norm", "act", "tied_embeddings", "init_std", "ln_eps", "rotary_base", "seed")}


def resolve_sizes(cfg: Any) -> None:
    """Fill in d_head (d_model // n_heads) and d_mlp (4 d_model) and check the rules that tie
    the size fields together (GPTConfig's)."""
    GPTConfig.__post_init__(cfg)


class _TLSurface(TLConfigSurface):
    attn_only: ClassVar[bool] = False       # read by ActivationCache.decompose_resid & co.


@typing.no_type_check
@dataclass(frozen=True, kw_only=True)
class EncoderConfig(_TLSurface):
    """A BERT-style encoder: bidirectional self-attention over a padded batch, an MLM head and a
    pooled [CLS] output. Fields shared with GPTConfig mean the same; the defaults are BERT's
    shape (post-LN, learned positions, LayerNorm on the embedding).

    embed_ln: LayerNorm on the summed embeddings (BERT's `embed.ln`); None: on for norm="post",
      off otherwise.
    n_token_types: segment embeddings (BERT has 2, for sentence pairs); 0: none.
    mlm_head: the MLM head's transform before the unembedding — "bert" (dense d_model→d_model,
      the activation, LayerNorm: TransformerLens's BertMLMHead) or "linear" (none).
    n_classes: a linear classifier on the pooled [CLS] output; 0: none.
    """

    d_vocab: int
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_head: int | None = None
    d_mlp: int | None = None
    n_ctx: int = 128
    dropout: float = 0.0
    positional: Positional = "learned"
    norm: Norm = "post"
    act: Act = "gelu"
    tied_embeddings: bool = False
    embed_ln: bool | None = None
    n_token_types: int = 0
    mlm_head: str = "bert"
    n_classes: int = 0
    init_std: float = 0.02
    ln_eps: float = 1e-5
    rotary_base: float = 10_000.0
    seed: int = 0

    _constraints: ClassVar[dict[str, v.Rule]] = {
        **_SHARED,
        "embed_ln": v.Bool() | v.Const(None),
        "n_token_types": v.Int(0),
        "mlm_head": v.Choice("bert", "linear"),
        "n_classes": v.Int(0),
    }
    original_architecture: ClassVar[str] = "superpose.Encoder"
    model_name: ClassVar[str] = "superpose-encoder"

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        resolve_sizes(self)
        if self.embed_ln is None:
            object.__setattr__(self, "embed_ln", self.norm == "post")
        if self.embed_ln and self.norm == "none":
            raise ValueError("embed_ln=True puts a LayerNorm on the embedding, but norm='none' "
                             "asks for no LayerNorm at all; pass embed_ln=False or pick a norm")

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab


@typing.no_type_check
@dataclass(frozen=True, kw_only=True)
class Seq2SeqConfig(_TLSurface):
    """An encoder–decoder: an encoder (bidirectional self-attention over the source) and a
    decoder (causal self-attention, cross-attention to the encoder's output, MLP), trained with
    teacher forcing. Fields shared with GPTConfig mean the same, for both stacks.

    d_vocab: the source vocabulary; d_vocab_tgt: the target's (None: one shared vocabulary and
      one embedding for both sides, as T5 and BART).
    n_layers: encoder blocks; n_decoder_layers: decoder blocks (None: n_layers).
    n_ctx: the longest source; n_ctx_tgt: the longest decoder input (None: n_ctx).
    tied_embeddings: the unembedding is the target embedding's transpose.
    bos_id: the token the decoder starts from (teacher forcing shifts the target right behind
      it); eos_id: the token that ends a generated sequence; pad_id: what generation writes
      after a sequence has ended. Target-vocabulary ids; None: pass them to `generate`.
    """

    d_vocab: int
    d_vocab_tgt: int | None = None
    n_layers: int = 2
    n_decoder_layers: int | None = None
    d_model: int = 128
    n_heads: int = 4
    d_head: int | None = None
    d_mlp: int | None = None
    n_ctx: int = 64
    n_ctx_tgt: int | None = None
    dropout: float = 0.0
    positional: Positional = "learned"
    norm: Norm = "pre"
    act: Act = "gelu"
    tied_embeddings: bool = False
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    init_std: float = 0.02
    ln_eps: float = 1e-5
    rotary_base: float = 10_000.0
    seed: int = 0

    _constraints: ClassVar[dict[str, v.Rule]] = {
        **_SHARED,
        "d_vocab_tgt": v.Int(1) | v.Const(None),
        "n_decoder_layers": v.Int(1) | v.Const(None),
        "n_ctx_tgt": v.Int(1) | v.Const(None),
        "bos_id": v.Int(0) | v.Const(None),
        "eos_id": v.Int(0) | v.Const(None),
        "pad_id": v.Int(0) | v.Const(None),
    }
    original_architecture: ClassVar[str] = "superpose.Seq2Seq"
    model_name: ClassVar[str] = "superpose-seq2seq"

    def __post_init__(self) -> None:
        v.check_fields(self, self._constraints)
        if self.n_decoder_layers is None:
            object.__setattr__(self, "n_decoder_layers", self.n_layers)
        if self.n_ctx_tgt is None:
            object.__setattr__(self, "n_ctx_tgt", self.n_ctx)
        # The parts size their masks and rotary tables by n_ctx: the longer of the two sides.
        resolve_sizes(self)
        for name in ("bos_id", "eos_id", "pad_id"):
            value = getattr(self, name)
            if value is not None and value >= self.vocab_tgt:
                raise ValueError(f"{name}={value} is not a target token id: the target "
                                 f"vocabulary has {self.vocab_tgt} ids (0..{self.vocab_tgt - 1})")

    @property
    def vocab_tgt(self) -> int:
        """The target vocabulary's size (d_vocab_tgt, or the shared d_vocab)."""
        return self.d_vocab if self.d_vocab_tgt is None else self.d_vocab_tgt

    @property
    def d_vocab_out(self) -> int:
        return self.vocab_tgt

    @property
    def n_ctx_max(self) -> int:
        return max(self.n_ctx, self.n_ctx_tgt)
