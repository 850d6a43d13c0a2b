"""Transformers from one set of parts (`transformer.parts`): the decoder-only GPT
(`superpose.gpt`), a BERT-style encoder for masked language modelling, and an encoder–decoder
with cross-attention. Hook names are TransformerLens's (`HookedTransformer`, `HookedEncoder`,
`HookedEncoderDecoder`).

    from superpose import transformer
    enc = transformer.Encoder(transformer.EncoderConfig(d_vocab=100))
    s2s = transformer.Seq2Seq(transformer.Seq2SeqConfig(d_vocab=100, bos_id=1, eos_id=2))
    logits, cache = s2s.run_with_cache(src, tgt, src_attention_mask=m)
    cache["decoder.0.cross_attn.hook_pattern"]            # [batch, head, tgt, src]
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: superpose.gpt builds on transformer.parts / base / surface, and
# transformer.config reads superpose.gpt.config, so importing a submodule must not import them
# all (that would be a cycle).
_EXPORTS = {
    "HookSwitchError": "base", "EncoderConfig": "config", "Seq2SeqConfig": "config",
    "from_hooked_encoder": "convert", "to_hooked_encoder": "convert", "Encoder": "encoder",
    "mlm_loss": "encoder", "KVCache": "parts", "Seq2Seq": "seq2seq", "TrainConfig": "training",
    "train_mlm": "training", "train_seq2seq": "training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"superpose.transformer.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'superpose.transformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
