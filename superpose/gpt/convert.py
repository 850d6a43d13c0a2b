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


def tl_config_fields(cfg: GPTConfig, target: str, post_ln_why: str = "") -> dict[str, Any]:
    """The config fields HookedTransformerConfig and TransformerBridgeConfig share, for our
    architecture; `target` names the TL class in the post-LN refusal."""
    if cfg.norm == "post":
        raise ValueError(f"norm='post' (LayerNorm after each residual add) has no {target} "
                         f"equivalent{post_ln_why}; convert a pre-LN or norm='none' GPT")
    rotary = cfg.positional == "rotary"
    return dict(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_ctx=cfg.n_ctx, d_head=cfg.d_head,
        n_heads=cfg.n_heads, d_vocab=cfg.d_vocab, d_vocab_out=cfg.d_vocab,
        normalization_type=cfg.normalization_type, attn_only=cfg.attn_only, eps=cfg.ln_eps,
        positional_embedding_type="rotary" if rotary else "standard",
        rotary_dim=cfg.d_head if rotary else None, rotary_base=cfg.rotary_base,
        default_prepend_bos=False, original_architecture="superpose.GPT", init_weights=False,
        seed=cfg.seed, dtype=torch.float32,
    )


def hooked_transformer_config(cfg: GPTConfig, *, device: Any = None) -> Any:
    """The HookedTransformerConfig of the same architecture (TransformerLens 3.x)."""
    _, HTConfig = _hooked_transformer_classes()
    return HTConfig(
        **tl_config_fields(cfg, "HookedTransformer"),
        d_mlp=None if cfg.attn_only else cfg.d_mlp, act_fn=None if cfg.attn_only else cfg.act,
        rotary_adjacent_pairs=False, device=str(device) if device is not None else "cpu",
    )


def to_hooked_transformer(model: GPT) -> Any:
    """A TransformerLens 3.x HookedTransformer with `model`'s weights (copied) on its device:
    same logits, same values at every hook both have (TL's hook names are ours)."""
    if not isinstance(model, GPT):
        raise TypeError(f"to_hooked_transformer takes a superpose GPT, got {type(model).__name__}")
    from superpose import lora
    lora.check_unadapted(model, "to_hooked_transformer", merged_ok=True)
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


def refuse(source: str, field: str, value: Any, why: str) -> None:
    raise ValueError(f"cannot convert this {source}: {field}={value!r} ({why}); our GPT has "
                     f"pre-LN or no LayerNorm, exact GELU or ReLU MLPs, learned or full-d_head "
                     f"rotary positions")


def tl_config_checks(c: Any, norm_type: str | None, act_fn: str | None,
                     positional: str) -> list[tuple[str, bool, str]]:
    """(field, expressible, why) for what every TL config (HookedTransformer's, a native
    TransformerBridge's) can hold that our GPT cannot; the converters add their own."""
    return [
        ("normalization_type", norm_type in ("LN", "LNPRE", None), "RMSNorm is not implemented"),
        ("final_rms", not getattr(c, "final_rms", False), "RMSNorm is not implemented"),
        ("gated_mlp", not getattr(c, "gated_mlp", False), "the MLP is not gated"),
        ("act_fn", c.attn_only or act_fn in ("gelu", "relu"),
         "only the exact GELU ('gelu') and ReLU"),
        ("n_key_value_heads", getattr(c, "n_key_value_heads", None) in (None, c.n_heads),
         "grouped-query attention is not implemented"),
        ("parallel_attn_mlp", not getattr(c, "parallel_attn_mlp", False),
         "attention and MLP run in sequence here"),
        ("positional_embedding_type", positional in ("standard", "rotary"),
         "only learned and rotary positions"),
        ("d_vocab_out", getattr(c, "d_vocab_out", -1) in (-1, c.d_vocab),
         "input and output vocabularies match"),
        ("output_logits_soft_cap", getattr(c, "output_logits_soft_cap", -1.0) <= 0,
         "no logit soft-capping"),
        ("attn_scores_soft_cap", getattr(c, "attn_scores_soft_cap", -1.0) <= 0,
         "no attention soft-capping"),
    ]


def check_tl_config(source: str, c: Any, checks: list[tuple[str, bool, str]]) -> None:
    for field, ok, why in checks:
        if not ok:
            refuse(source, field, getattr(c, field, None), why)


def gpt_config_from_tl(c: Any, norm_type: str | None, act_fn: str | None, positional: str,
                       *, seed: int = 0) -> GPTConfig:
    """Our GPTConfig for a TL config that passed the checks."""
    return GPTConfig(
        d_vocab=c.d_vocab, n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads,
        d_head=c.d_head, d_mlp=c.d_mlp if not c.attn_only else None, n_ctx=c.n_ctx,
        attn_only=c.attn_only, norm="none" if norm_type is None else "pre",
        positional="rotary" if positional == "rotary" else "learned",
        act=act_fn if not c.attn_only else "gelu", ln_eps=c.eps,
        rotary_base=float(getattr(c, "rotary_base", 10_000)), seed=seed,
    )


def config_from_hooked_transformer(ht_cfg: Any, *, seed: int = 0) -> GPTConfig:
    """Our GPTConfig for a HookedTransformerConfig, or a ValueError naming the field our GPT
    cannot express."""
    c, source = ht_cfg, "HookedTransformer"
    norm_type = c.normalization_type.upper() if c.normalization_type else None
    positional = c.positional_embedding_type
    check_tl_config(source, c, tl_config_checks(c, norm_type, c.act_fn, positional) + [
        ("use_local_attn", not getattr(c, "use_local_attn", False), "attention is global"),
        ("use_normalization_before_and_after",
         not getattr(c, "use_normalization_before_and_after", False), "one LN per sublayer"),
        ("use_attn_scale", getattr(c, "use_attn_scale", True)
         and math.isclose(getattr(c, "attn_scale", math.sqrt(c.d_head)), math.sqrt(c.d_head)),
         "scores are divided by sqrt(d_head)"),
        ("original_architecture", c.original_architecture is None
         or "olmo" not in str(c.original_architecture).lower(),
         "OLMo's post-norm puts LN before the residual add"),
        ("attn_types", getattr(c, "attn_types", None) is None, "attention is global"),
    ])
    if positional == "rotary":
        if c.rotary_dim != c.d_head:
            refuse(source, "rotary_dim", c.rotary_dim,
                   f"the rotary covers all of d_head={c.d_head}")
        if getattr(c, "rotary_adjacent_pairs", False):
            refuse(source, "rotary_adjacent_pairs", True, "rotary uses the rotate-half layout")
        scaling = getattr(c, "use_NTK_by_parts_rope", False)
        if scaling:
            refuse(source, "use_NTK_by_parts_rope", scaling, "no rope scaling")
    return gpt_config_from_tl(c, norm_type, c.act_fn, positional, seed=seed)


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
