"""Our Encoder <-> TransformerLens's HookedEncoder (BERT), with the same weights and function.

`to_hooked_encoder(enc)` builds a `transformer_lens.HookedEncoder` (TransformerLens 3.x; 4.0
removed the class) whose MLM logits and every shared hook equal ours to float tolerance;
`from_hooked_encoder(he)` is the inverse. TransformerLens is imported inside the functions, so
the package imports without these classes.

TL's BERT is one architecture; what ours can be and it cannot is refused with a ValueError that
names the field, never approximated: norm != "post", positional != "learned",
embed_ln=False, mlm_head != "bert", act != "gelu" (TL's BertMLMHead always applies the exact
GELU), more than 2 token types, a classifier (n_classes > 0). On the way back, a HookedEncoder
with a gated MLP, an activation other than "gelu", another attention scale, soft-capping or a
separate output vocabulary is refused the same way.

What changes form (the function does not): tied embeddings become TL's untied `unembed.W_U`
equal to `W_Eᵀ`; an encoder without token types (n_token_types=0) gets TL's two-row
`W_token_type` filled with zeros (and `from_hooked_encoder` reads an all-zero table back as
n_token_types=0); TL's NSP head, which we do not have, gets zero weights. Dropout is not
carried (HookedEncoder has none; both run the same function in eval mode).

Padding: TL numbers positions 0..pos-1 whatever the mask; ours count real tokens. With right
padding (TL's and HuggingFace's default) the two agree at every real token; with left padding
they do not (ours gives the unpadded sequence's outputs, TL's does not).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from superpose.transformer.config import EncoderConfig
from superpose.transformer.encoder import Encoder

# The switches TL's BertBlock reads; use_attn_in it has no hook for (BertBlock ignores it).
_SWITCHES = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in")


class TransformerLensVersionError(ImportError, ValueError):
    """The installed TransformerLens has no HookedEncoder (4.0 removed it)."""


def _hooked_encoder_classes() -> tuple[Any, Any]:
    import transformer_lens
    try:
        from transformer_lens import HookedEncoder, HookedTransformerConfig
        if not isinstance(HookedEncoder, type):     # the submodule, not the class
            raise ImportError("transformer_lens.HookedEncoder is not a class")
    except (ImportError, AttributeError):
        import importlib.metadata as md
        try:
            version = md.version("transformer-lens")
        except md.PackageNotFoundError:
            version = getattr(transformer_lens, "__version__", "unknown")
        raise TransformerLensVersionError(
            f"transformer-lens {version} has no HookedEncoder (TransformerLens 4.0 removed it); "
            f"converting to or from a HookedEncoder needs TransformerLens 3.x "
            f"(pip install 'transformer-lens<4', as SAELens pins). Our Encoder carries TL's hook "
            f"names and ActivationCache itself, so TL's tools work on it directly"
        ) from None
    return HookedEncoder, HookedTransformerConfig


def _refuse(direction: str, field: str, value: Any, why: str) -> None:
    raise ValueError(f"cannot convert {direction}: {field}={value!r} ({why})")


def hooked_encoder_config(cfg: EncoderConfig, *, device: Any = None,
                          dtype: torch.dtype = torch.float32) -> Any:
    """The HookedTransformerConfig of TL's BERT with our sizes, or a ValueError naming the
    field of `cfg` TL's HookedEncoder cannot express."""
    _, HTConfig = _hooked_encoder_classes()
    where = "this Encoder to a HookedEncoder"
    checks = [
        ("norm", cfg.norm == "post", "TL's BertBlock is post-LN"),
        ("positional", cfg.positional == "learned", "TL's BertEmbed has a learned W_pos"),
        ("embed_ln", bool(cfg.embed_ln), "TL's BertEmbed always applies embed.ln"),
        ("mlm_head", cfg.mlm_head == "bert",
         "TL's HookedEncoder always has BertMLMHead (dense, GELU, LayerNorm)"),
        ("act", cfg.act == "gelu", "TL's BertMLMHead always applies the exact GELU, so the "
         "encoder's activation must be 'gelu' for the head to match"),
        ("n_token_types", cfg.n_token_types <= 2, "TL's BERT has exactly 2 token types"),
        ("n_classes", cfg.n_classes == 0,
         "HookedEncoder has no classifier head; its weights would be lost"),
    ]
    for field, ok, why in checks:
        if not ok:
            _refuse(where, field, getattr(cfg, field), why)
    return HTConfig(
        original_architecture="BertForMaskedLM", n_layers=cfg.n_layers, d_model=cfg.d_model,
        n_ctx=cfg.n_ctx, d_head=cfg.d_head, n_heads=cfg.n_heads, d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab, d_vocab_out=cfg.d_vocab, act_fn="gelu", eps=cfg.ln_eps,
        normalization_type="LN", positional_embedding_type="standard",
        attention_dir="bidirectional", init_weights=False, seed=cfg.seed, dtype=dtype,
        device=str(device) if device is not None else "cpu",
    )


def _tl_state(enc: Encoder) -> dict[str, torch.Tensor]:
    """Our weights under TL HookedEncoder's names and layouts."""
    cfg = enc.cfg
    W_E = enc.W_E
    s: dict[str, torch.Tensor] = {
        "embed.embed.W_E": W_E,
        "embed.pos_embed.W_pos": enc.W_pos,
        "embed.ln.w": enc.embed.ln.w, "embed.ln.b": enc.embed.ln.b,
        "mlm_head.W": enc.mlm_head.W, "mlm_head.b": enc.mlm_head.b,
        "mlm_head.ln.w": enc.mlm_head.ln.w, "mlm_head.ln.b": enc.mlm_head.ln.b,
        "unembed.W_U": enc.W_U, "unembed.b_U": enc.b_U,
        "pooler.W": enc.pooler.W, "pooler.b": enc.pooler.b,
        "nsp_head.W": W_E.new_zeros(cfg.d_model, 2), "nsp_head.b": W_E.new_zeros(2),
    }
    types = W_E.new_zeros(2, cfg.d_model)
    if cfg.n_token_types:
        types[: cfg.n_token_types] = enc.embed.token_type_embed.W_token_type
    s["embed.token_type_embed.W_token_type"] = types
    for i, block in enumerate(enc.blocks):
        a, p = block.attn, f"blocks.{i}."
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            s[p + "attn." + name] = getattr(a, name)
        for ln in ("ln1", "ln2"):
            s[p + ln + ".w"] = getattr(block, ln).w
            s[p + ln + ".b"] = getattr(block, ln).b
        for name in ("W_in", "b_in", "W_out", "b_out"):
            s[p + "mlp." + name] = getattr(block.mlp, name)
    return {k: t.detach().clone().contiguous() for k, t in s.items()}


def to_hooked_encoder(enc: Encoder) -> Any:
    """A TransformerLens 3.x `HookedEncoder` with `enc`'s weights (copied), on its device and
    dtype: the same MLM logits, and the same values at every hook both have (TL's names are
    ours). Raises TransformerLensVersionError (an ImportError and a ValueError) on
    TransformerLens 4.x, and a ValueError naming the field for an encoder TL's BERT cannot
    express (see the module docstring)."""
    if not isinstance(enc, Encoder):
        raise TypeError(f"to_hooked_encoder takes a superpose Encoder, got {type(enc).__name__}")
    from superpose import lora
    lora.check_unadapted(enc, "to_hooked_encoder", merged_ok=True)
    HookedEncoder, _ = _hooked_encoder_classes()
    dtype = enc.W_E.dtype
    tl_cfg = hooked_encoder_config(enc.cfg, device=enc.device, dtype=dtype)
    import warnings
    with warnings.catch_warnings():     # "HookedEncoder is deprecated": we know
        warnings.simplefilter("ignore", DeprecationWarning)
        he = HookedEncoder(tl_cfg, move_to_device=False)
    state = _tl_state(enc)
    missing, unexpected = he.load_state_dict(state, strict=False)
    params = {n for n, _ in he.named_parameters()}
    if unexpected or set(missing) & params:
        raise RuntimeError(f"HookedEncoder's layout differs from ours: missing "
                           f"{sorted(set(missing) & params)}, unexpected {sorted(unexpected)}")
    for flag in _SWITCHES:
        setattr(he.cfg, flag, getattr(enc.cfg, flag))
    he.to(enc.device, print_details=False)
    return he.train(enc.training)


def encoder_config_from_tl(c: Any, *, n_token_types: int = 2, seed: int = 0) -> EncoderConfig:
    """Our EncoderConfig for a HookedEncoder's HookedTransformerConfig, or a ValueError naming
    the field our Encoder cannot express."""
    where = "this HookedEncoder to an Encoder"
    d_head = c.d_head
    checks = [
        ("attention_dir", getattr(c, "attention_dir", "causal") == "bidirectional",
         "our Encoder's attention is bidirectional (HookedTransformerConfig's default is "
         "'causal'; HookedEncoder.from_pretrained sets 'bidirectional')"),
        ("act_fn", c.act_fn == "gelu", "our MLP and MLM head use one activation, and TL's "
         "BertMLMHead always applies the exact GELU"),
        ("gated_mlp", not getattr(c, "gated_mlp", False), "our MLP is not gated"),
        ("attn_only", not getattr(c, "attn_only", False), "every block has an MLP"),
        ("d_vocab_out", getattr(c, "d_vocab_out", -1) in (-1, c.d_vocab),
         "input and output vocabularies match"),
        ("n_key_value_heads", getattr(c, "n_key_value_heads", None) in (None, c.n_heads),
         "grouped-query attention is not implemented"),
        ("use_attn_scale", getattr(c, "use_attn_scale", True)
         and math.isclose(getattr(c, "attn_scale", math.sqrt(d_head)), math.sqrt(d_head)),
         "scores are divided by sqrt(d_head)"),
        ("attn_scores_soft_cap", getattr(c, "attn_scores_soft_cap", -1.0) <= 0,
         "no attention soft-capping"),
        ("output_logits_soft_cap", getattr(c, "output_logits_soft_cap", -1.0) <= 0,
         "no logit soft-capping"),
        ("n_devices", getattr(c, "n_devices", 1) == 1, "one device"),
    ]
    for field, ok, why in checks:
        if not ok:
            _refuse(where, field, getattr(c, field, None), why)
    return EncoderConfig(
        d_vocab=c.d_vocab, n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads,
        d_head=d_head, d_mlp=c.d_mlp, n_ctx=c.n_ctx, norm="post", positional="learned",
        act="gelu", tied_embeddings=False, embed_ln=True, n_token_types=n_token_types,
        mlm_head="bert", n_classes=0, ln_eps=c.eps, seed=seed,
    )


def from_hooked_encoder(he: Any, *, n_token_types: int | None = None, device: Any = None,
                        tokenizer: Any = None) -> Encoder:
    """Our Encoder with a TransformerLens `HookedEncoder`'s weights (copied): the same MLM
    logits, pooled output and hook values (TL's NSP head is dropped: we have none).

    n_token_types: None reads TL's table: 0 when it is all zeros (what `to_hooked_encoder`
      writes for an encoder without token types; the function is the same), else 2.
    device: where the Encoder goes (None: the HookedEncoder's device).
    tokenizer: attached to the Encoder (TL's HuggingFace tokenizer is not carried over: ours
      has another interface).
    """
    if not hasattr(he, "cfg") or not hasattr(he, "state_dict") or not hasattr(he, "mlm_head"):
        raise TypeError(f"from_hooked_encoder takes a TransformerLens HookedEncoder, got "
                        f"{type(he).__name__}")
    state = {k: t.detach() for k, t in he.named_parameters()}
    types = state["embed.token_type_embed.W_token_type"]
    if n_token_types is None:
        n_token_types = 0 if not bool(types.any()) else 2
    if n_token_types not in (0, 1, 2):
        raise ValueError(f"n_token_types must be None, 0, 1 or 2 (TL's BERT has 2 token "
                         f"types), got {n_token_types!r}")
    cfg = encoder_config_from_tl(he.cfg, n_token_types=n_token_types)
    dev = device if device is not None else next(he.parameters()).device
    enc = Encoder(cfg, device="cpu", tokenizer=tokenizer)
    with torch.no_grad():
        # The Encoder's parameters under TL's names: views into them, written in place.
        fused_views: dict[str, torch.Tensor] = {}
        for i, block in enumerate(enc.blocks):
            p = f"blocks.{i}.attn."
            for j, n in enumerate("QKV"):
                fused_views[p + f"W_{n}"] = block.attn.W_QKV[j].transpose(-1, -2)
                fused_views[p + f"b_{n}"] = block.attn.b_QKV[j]
        ours = dict(enc.named_parameters())
        for name, src in state.items():
            if name.startswith("nsp_head."):
                continue
            if name == "embed.token_type_embed.W_token_type":
                if n_token_types:
                    ours[name].copy_(src[:n_token_types].to(ours[name].dtype))
                continue
            target = fused_views.get(name, ours.get(name))
            if target is None:
                raise ValueError(f"the HookedEncoder has a weight {name!r} our Encoder has no "
                                 f"place for")
            target.copy_(src.to(target.dtype))
        missing = set(ours) - set(state) - {"embed.token_type_embed.W_token_type"}
        missing -= {n for n in ours if ".attn.W_QKV" in n or ".attn.b_QKV" in n}
        if missing:
            raise ValueError(f"the HookedEncoder lacks weights our Encoder needs: "
                             f"{sorted(missing)}")
    for flag in _SWITCHES:
        if getattr(he.cfg, flag, False):
            getattr(enc, f"set_{flag}")(True)
    return enc.to(dev).train(he.training)
