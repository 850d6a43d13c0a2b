"""Our GPT <-> TransformerLens's HookedTransformer, with the same weights and the same function.

`to_hooked_transformer(model)` builds a HookedTransformer (TransformerLens 3.x; 4.x removed the
class) whose logits and every shared hook equal ours to float tolerance; `from_hooked_transformer
(ht)` is the inverse for every HookedTransformer our GPT can express. Anything it cannot express
is refused with the config field and its value, never approximated:

- our post-LN (LN after each residual add) has no HookedTransformer equivalent;
- a HookedTransformer with RMSNorm, parallel attention + MLP, a gated MLP, grouped-query
  attention, local attention, ALiBi / shortformer positions, GELU variants other than the exact
  one, a partial or adjacent-pair rotary, a separate output vocabulary, ... is refused.

What changes form on the way (the function does not): sinusoidal positions become a fixed
`W_pos` table ("standard"), no positions become a zero `W_pos`, and tied embeddings become an
untied `W_U` equal to `W_Eᵀ`. `LNPre` (LayerNorm with w, b folded away) loads as LN with w = 1,
b = 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from superpose.gpt.config import GPTConfig
from superpose.gpt.model import GPT


def _hooked_transformer_classes() -> tuple[Any, Any]:
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        import importlib.metadata as md
        version = md.version("transformer-lens")
        raise ImportError(
            f"transformer-lens {version} has no HookedTransformer (TransformerLens 4.0 removed "
            f"it); install transformer-lens<4 (as SAELens does) to convert, or use our GPT "
            f"with TL's tools directly: it carries the HookedTransformer surface itself"
        ) from None
    return HookedTransformer, HookedTransformerConfig


def hooked_transformer_config(cfg: GPTConfig, *, device: Any = None) -> Any:
    """The HookedTransformerConfig of the same architecture (TransformerLens 3.x)."""
    _, HTConfig = _hooked_transformer_classes()
    if cfg.norm == "post":
        raise ValueError("norm='post' (LayerNorm after each residual add) has no "
                         "HookedTransformer equivalent; convert a pre-LN or norm='none' GPT")
    return HTConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_ctx=cfg.n_ctx, d_head=cfg.d_head,
        n_heads=cfg.n_heads, d_mlp=None if cfg.attn_only else cfg.d_mlp, d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab, act_fn=None if cfg.attn_only else cfg.act,
        normalization_type=cfg.normalization_type, attn_only=cfg.attn_only, eps=cfg.ln_eps,
        positional_embedding_type="rotary" if cfg.positional == "rotary" else "standard",
        rotary_dim=cfg.d_head if cfg.positional == "rotary" else None,
        rotary_base=cfg.rotary_base, rotary_adjacent_pairs=False, default_prepend_bos=False,
        original_architecture="superpose.GPT", init_weights=False, seed=cfg.seed,
        device=str(device) if device is not None else "cpu", dtype=torch.float32,
    )


def to_hooked_transformer(model: GPT) -> Any:
    """A TransformerLens 3.x HookedTransformer with `model`'s weights (copied) on its device:
    same logits, same values at every hook both have (TL's hook names are ours)."""
    if not isinstance(model, GPT):
        raise TypeError(f"to_hooked_transformer takes a superpose GPT, got {type(model).__name__}")
    HookedTransformer, _ = _hooked_transformer_classes()
    cfg = model.cfg
    ht = HookedTransformer(hooked_transformer_config(cfg, device=model.device))
    state = {k: t.detach().clone() for k, t in model.tl_parameters().items()}
    if cfg.positional == "none":
        state["pos_embed.W_pos"] = torch.zeros(cfg.n_ctx, cfg.d_model, device=model.device)
    missing, unexpected = ht.load_state_dict(state, strict=False)
    params = {n for n, _ in ht.named_parameters()}
    if unexpected or set(missing) & params:
        raise RuntimeError(f"HookedTransformer's layout differs from ours: missing "
                           f"{sorted(set(missing) & params)}, unexpected {sorted(unexpected)}")
    for flag in ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in"):
        setattr(ht.cfg, flag, getattr(cfg, flag))
    ht.tokenizer = None
    return ht.to(model.device).train(model.training)


def _refuse(field: str, value: Any, why: str) -> None:
    raise ValueError(f"cannot convert this HookedTransformer: {field}={value!r} ({why}); our "
                     f"GPT has pre-LN or no LayerNorm, exact GELU or ReLU MLPs, learned or "
                     f"rotary (rotate-half, full d_head) positions")


def config_from_hooked_transformer(ht_cfg: Any, *, seed: int = 0) -> GPTConfig:
    """Our GPTConfig for a HookedTransformerConfig, or a ValueError naming the field our GPT
    cannot express."""
    c = ht_cfg
    checks = [
        ("normalization_type", c.normalization_type in ("LN", "LNPre", None),
         "RMSNorm is not implemented"),
        ("positional_embedding_type", c.positional_embedding_type in ("standard", "rotary"),
         "only learned and rotary positions"),
        ("act_fn", c.attn_only or c.act_fn in ("gelu", "relu"),
         "only the exact GELU ('gelu') and ReLU"),
        ("parallel_attn_mlp", not getattr(c, "parallel_attn_mlp", False),
         "attention and MLP run in sequence here"),
        ("gated_mlp", not getattr(c, "gated_mlp", False), "the MLP is not gated"),
        ("n_key_value_heads", getattr(c, "n_key_value_heads", None) in (None, c.n_heads),
         "grouped-query attention is not implemented"),
        ("use_local_attn", not getattr(c, "use_local_attn", False), "attention is global"),
        ("final_rms", not getattr(c, "final_rms", False), "RMSNorm is not implemented"),
        ("use_normalization_before_and_after",
         not getattr(c, "use_normalization_before_and_after", False), "one LN per sublayer"),
        ("d_vocab_out", c.d_vocab_out in (-1, c.d_vocab), "input and output vocabularies match"),
        ("use_attn_scale", getattr(c, "use_attn_scale", True)
         and math.isclose(getattr(c, "attn_scale", math.sqrt(c.d_head)), math.sqrt(c.d_head)),
         "scores are divided by sqrt(d_head)"),
        ("original_architecture", c.original_architecture is None
         or "olmo" not in str(c.original_architecture).lower(),
         "OLMo's post-norm puts LN before the residual add"),
        ("attn_types", getattr(c, "attn_types", None) is None, "attention is global"),
        ("output_logits_soft_cap", getattr(c, "output_logits_soft_cap", -1.0) <= 0,
         "no logit soft-capping"),
        ("attn_scores_soft_cap", getattr(c, "attn_scores_soft_cap", -1.0) <= 0,
         "no attention soft-capping"),
    ]
    for field, ok, why in checks:
        if not ok:
            _refuse(field, getattr(c, field, None), why)
    if c.positional_embedding_type == "rotary":
        if c.rotary_dim != c.d_head:
            _refuse("rotary_dim", c.rotary_dim, f"the rotary covers all of d_head={c.d_head}")
        if getattr(c, "rotary_adjacent_pairs", False):
            _refuse("rotary_adjacent_pairs", True, "rotary uses the rotate-half layout")
        scaling = getattr(c, "use_NTK_by_parts_rope", False)
        if scaling:
            _refuse("use_NTK_by_parts_rope", scaling, "no rope scaling")
    return GPTConfig(
        d_vocab=c.d_vocab, n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads,
        d_head=c.d_head, d_mlp=c.d_mlp if not c.attn_only else None, n_ctx=c.n_ctx,
        attn_only=c.attn_only, norm="none" if c.normalization_type is None else "pre",
        positional="rotary" if c.positional_embedding_type == "rotary" else "learned",
        act=c.act_fn if not c.attn_only else "gelu", ln_eps=c.eps,
        rotary_base=float(getattr(c, "rotary_base", 10_000)), seed=seed,
    )


def from_hooked_transformer(ht: Any, *, device: Any = None) -> GPT:
    """Our GPT with a HookedTransformer's weights (copied): same logits and hooks. Refuses,
    naming the field and value, an architecture our GPT cannot express."""
    if not hasattr(ht, "cfg") or not hasattr(ht, "state_dict"):
        raise TypeError(f"from_hooked_transformer takes a TransformerLens HookedTransformer, got "
                        f"{type(ht).__name__}")
    cfg = config_from_hooked_transformer(ht.cfg)
    state = {k: t.detach() for k, t in ht.state_dict().items()}
    dev = device if device is not None else next(ht.parameters()).device
    model = GPT(cfg, device="cpu")
    targets = model.tl_parameters()
    with torch.no_grad():
        for name, target in targets.items():
            if name in state:
                target.copy_(state[name].to(target.dtype))
            elif name.endswith(".w"):          # LNPre: LayerNorm without weight
                target.fill_(1.0)
            elif name.endswith(".b"):
                target.zero_()
            else:
                raise ValueError(f"the HookedTransformer has no weight {name!r}")
    for flag in ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in"):
        if getattr(ht.cfg, flag, False) and not (flag == "use_hook_mlp_in" and cfg.attn_only):
            getattr(model, f"set_{flag}")(True)
    return model.to(dev).train(ht.training)
