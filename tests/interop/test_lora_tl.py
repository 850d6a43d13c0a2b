"""LoRA against TransformerLens 3.9's HookedTransformer: an adapted GPT, merged and converted,
is a HookedTransformer with the same logits and activations as the adapters compute unmerged,
and TL's own tools read the adapter's hook point."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from superpose import lora
from superpose.gpt import GPT, GPTConfig, to_hooked_transformer


def test_merged_adapters_convert_to_a_hooked_transformer_with_the_same_numbers():
    m = GPT(GPTConfig(d_vocab=50, n_layers=2, d_model=32, n_heads=4, n_ctx=16,
                      tied_embeddings=False, seed=3))
    lora.add(m, ["blocks.*.attn.*", "blocks.*.mlp.*", "unembed.W_U"], rank=4, alpha=8)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a in lora.adapters(m).values():
            a.B.copy_(torch.randn(a.B.shape, generator=gen) * 0.2)
    x = torch.randint(0, 50, (2, 16), generator=gen)
    logits, cache = m.run_with_cache(x)
    lora.merge(m)
    ht = to_hooked_transformer(m)
    assert isinstance(ht, HookedTransformer)
    ht_logits, ht_cache = ht.run_with_cache(x)
    torch.testing.assert_close(ht_logits, logits, rtol=0, atol=5e-5)
    for name in ("blocks.0.attn.hook_q", "blocks.1.attn.hook_v", "blocks.1.mlp.hook_pre",
                 "blocks.1.hook_resid_post"):
        torch.testing.assert_close(ht_cache[name], cache[name], rtol=0, atol=5e-5, msg=name)
    # TL's ActivationCache reads the adapter's hook point like any other
    lora.unmerge(m)
    _, c2 = m.run_with_cache(x, names_filter=lora.hook_name("blocks.1.attn.W_V"))
    assert c2[lora.hook_name("blocks.1.attn.W_V")].shape == (2, 16, 4)
