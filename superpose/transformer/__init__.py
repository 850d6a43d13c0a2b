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

from superpose.transformer.base import HookSwitchError
from superpose.transformer.config import EncoderConfig, Seq2SeqConfig
from superpose.transformer.convert import from_hooked_encoder, to_hooked_encoder
from superpose.transformer.encoder import Encoder, mlm_loss
from superpose.transformer.parts import KVCache
from superpose.transformer.seq2seq import Seq2Seq
from superpose.transformer.training import TrainConfig, train_mlm, train_seq2seq

__all__ = ["Encoder", "EncoderConfig", "HookSwitchError", "KVCache", "Seq2Seq", "Seq2SeqConfig",
           "TrainConfig", "from_hooked_encoder", "mlm_loss", "to_hooked_encoder", "train_mlm",
           "train_seq2seq"]
