"""Our GPT <-> TransformerLens 4.x's TL-native TransformerBridge, same weights, same function.

TransformerLens 4.0 removed HookedTransformer (see `superpose.gpt.convert` for 3.x); its
replacement for a from-scratch model is `TransformerBridge.boot_native(cfg)`, a bridge around
`NativeModel` (nn.Embedding tok_embed / pos, per layer nn.LayerNorm ln1 / ln2, nn.Linear
q / k / v / o and fc_in / fc_out, a final ln_out and an nn.Linear head). `to_transformer_bridge
(model)` builds one whose logits and every hook it shares with ours equal ours to float
tolerance; `from_transformer_bridge(bridge)` is the inverse for every native bridge our GPT can
express. Anything that cannot be expressed is refused with the field and its value, never
approximated:

- our post-LN (LN after each residual add): NativeBlock is pre-LN only;
- a bridge that is not the TL-native architecture, or whose native model has RMSNorm, a gated
  MLP, grouped-query attention, parallel attention + MLP, an activation other than exact GELU
  or ReLU, a partial or scaled rotary, soft-capping, a non-default attention scale,
  bidirectional attention, a separate output vocabulary, ... is refused.

What changes form on the way (the function does not):

- sinusoidal positions become a fixed `pos` table (the native "standard" embedding), no
  positions a zero table (so for positional="none" the bridge has a hook_pos_embed, all zeros,
  that ours lacks); the conversion back gives learned positions holding that table;
- tied embeddings become an untied head equal to W_Eᵀ;
- our b_U goes into the head's bias, which the bridge keeps as a buffer (NativeModel's head
  has no bias; UnembeddingBridge registers a fixed one in its place);
- rotary: NativeRotary rotates adjacent pairs (2i, 2i+1) whatever `rotary_adjacent_pairs`
  says, ours rotates halves (i, i + d_head/2) with the same frequencies. The rows of W_Q / W_K
  (and b_Q / b_K) are permuted within each head so that native dim 2i is our dim i and 2i+1 is
  our i + d_head/2: scores, pattern and everything after them are unchanged, but the bridge's
  hook_q / hook_k hold our values with d_head in that permuted order (the conversion back undoes
  the permutation). The bridge has no hook_rot_q / hook_rot_k.

The bridge is returned unprocessed. `enable_compatibility_mode()` by default folds LayerNorm
and centers weights (TL's load-time processing) in the native model's own parameters: the
logits move by a per-position constant and the residual stream and LN hooks change; call it
with `no_processing=True` to keep exactly our values. `from_transformer_bridge` converts the
weights as they are, so a processed bridge becomes a GPT computing the processed function
(LN w = 1, b = 0, centered weights).

Not carried: dropout (the native model has none; the bridge computes our eval-mode function),
and the runtime switches use_attn_result, use_split_qkv_input, use_attn_in (TL 4.3's
AttentionBridge raises NotImplementedError for them on native models), so hook_result,
hook_q_input / hook_k_input / hook_v_input and hook_attn_in exist on our side only;
use_hook_mlp_in carries over both ways.

Hooks that share a name but not a meaning: the bridge's blocks.{i}.attn.hook_attn_scores holds
the softmaxed pattern, not the scores (TL 4.3's AttentionBridge fires it post hoc on the
pattern NativeAttention returns); ours holds the masked, scaled pre-softmax scores.

Needs transformer-lens>=4 (`transformer_lens.model_bridge.sources.native`); importing this
module does not, the functions raise an ImportError that says so. transformer-lens 3.9 ships a
preview of boot_native, refused too: its AttentionBridge fires hook_pattern after the fact, so
an edit there does not reach the output, and it lacks 4.x's fixes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from superpose.gpt.config import GPTConfig
from superpose.gpt.convert import (
    check_tl_config,
    gpt_config_from_tl,
    refuse,
    tl_config_checks,
    tl_config_fields,
)
from superpose.gpt.model import GPT, _sinusoidal_table

_ARCHITECTURE = "TransformerLensNative"


def _tl_version() -> str:
    import importlib.metadata as md
    try:
        return md.version("transformer-lens")
    except md.PackageNotFoundError:
        return "(not installed)"


def _native() -> Any:
    """transformer_lens.model_bridge.sources.native (which also attaches
    TransformerBridge.boot_native), or an ImportError naming the version needed."""
    version = _tl_version()
    try:
        from transformer_lens.model_bridge.sources import native
    except ImportError:
        raise ImportError(
            f"TransformerBridge.boot_native needs transformer-lens>=4; transformer-lens "
            f"{version} has no transformer_lens.model_bridge.sources.native. With "
            f"transformer-lens<4 use superpose.gpt.to_hooked_transformer instead"
        ) from None
    major = version.split(".", 1)[0]
    if major.isdigit() and int(major) < 4:
        # 3.x ships an early boot_native whose hook_pattern only decorates the returned
        # pattern (an edit there does not reach the output); this converter is for 4.x.
        raise ImportError(
            f"TransformerBridge.boot_native needs transformer-lens>=4 here; transformer-lens "
            f"{version}'s native bridge is a preview (hook_pattern edits do not reach the "
            f"output). With transformer-lens<4 use superpose.gpt.to_hooked_transformer instead"
        )
    return native


def _rotary_perm(d_head: int) -> torch.Tensor:
    """Native (adjacent-pair) dim j holds our (rotate-half) dim perm[j]: 2i <- i, 2i+1 <- i+h."""
    half = d_head // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).flatten()


def transformer_bridge_config(cfg: GPTConfig, *, device: Any = None) -> Any:
    """The TransformerBridgeConfig of the same architecture (TransformerLens 4.x, native)."""
    _native()
    from transformer_lens.config import TransformerBridgeConfig
    return TransformerBridgeConfig(
        **tl_config_fields(cfg, "TransformerBridge.boot_native", " (NativeBlock is pre-LN)"),
        d_mlp=cfg.d_mlp, act_fn=cfg.act, architecture=_ARCHITECTURE,
        model_name="superpose-gpt", tokenizer_prepends_bos=False,
        device=str(device) if device is not None else None,
    )


def _unwrap(module: Any) -> Any:
    """The native module behind a bridge wrapper (LinearBridge, NormalizationBridge, ...)."""
    original = getattr(module, "original_component", None)
    return original if isinstance(original, torch.nn.Module) else module


def _native_state(model: GPT, *, permute: bool = True) -> dict[str, torch.Tensor]:
    """Our weights under NativeModel's (unwrapped) names and nn.Linear / nn.Embedding layouts;
    views of ours where the layout allows (all of them with permute=False and learned
    positions). permute: rotary q / k rows in NativeRotary's adjacent-pair order."""
    cfg = model.cfg
    h, dh, d = cfg.n_heads, cfg.d_head, cfg.d_model
    out: dict[str, torch.Tensor] = {"tok_embed.weight": model.W_E}
    if cfg.positional == "learned":
        out["pos.weight"] = model.W_pos
    elif cfg.positional == "sinusoidal":
        out["pos.weight"] = _sinusoidal_table(cfg.n_ctx, d).to(model.W_E)
    elif cfg.positional == "none":
        out["pos.weight"] = torch.zeros_like(model.W_E[:1]).expand(cfg.n_ctx, d)
    perm = _rotary_perm(dh).to(model.device) if permute and cfg.positional == "rotary" else None
    for i, block in enumerate(model.blocks):
        p = f"layers.{i}."
        if cfg.norm == "pre":
            out[p + "ln1.weight"], out[p + "ln1.bias"] = block.ln1.w, block.ln1.b
        W, b = block.attn.W_QKV, block.attn.b_QKV            # [3, h, dh, d], [3, h, dh]
        for j, name in enumerate("qkv"):
            w_j, b_j = W[j], b[j]
            if perm is not None and name in "qk":
                w_j, b_j = w_j[:, perm], b_j[:, perm]
            out[p + f"attn.{name}.weight"] = w_j.reshape(h * dh, d)
            out[p + f"attn.{name}.bias"] = b_j.reshape(h * dh)
        out[p + "attn.o.weight"] = block.attn.W_O.reshape(h * dh, d).T
        out[p + "attn.o.bias"] = block.attn.b_O
        if not cfg.attn_only:
            if cfg.norm == "pre":
                out[p + "ln2.weight"], out[p + "ln2.bias"] = block.ln2.w, block.ln2.b
            out[p + "mlp.fc_in.weight"] = block.mlp.W_in.T
            out[p + "mlp.fc_in.bias"] = block.mlp.b_in
            out[p + "mlp.fc_out.weight"] = block.mlp.W_out.T
            out[p + "mlp.fc_out.bias"] = block.mlp.b_out
    if cfg.norm == "pre":
        out["ln_out.weight"], out["ln_out.bias"] = model.ln_final.w, model.ln_final.b
    out["head.weight"] = model.W_U.T
    out["head.bias"] = model.b_U
    return out


def _native_tensors(native_model: Any) -> dict[str, torch.Tensor]:
    """NativeModel's parameters and the head's bias buffer under unwrapped names
    (`layers.0.attn.q.weight`, not `layers.0._original_component.attn....`)."""
    out = {}
    for name, t in [*native_model.named_parameters(), *native_model.named_buffers()]:
        out[name.replace("_original_component.", "")] = t
    return out


def to_transformer_bridge(model: GPT) -> Any:
    """A TransformerLens 4.x TransformerBridge (TransformerBridge.boot_native) with `model`'s
    weights (copied) on its device: same logits, same values at every hook both have."""
    if not isinstance(model, GPT):
        raise TypeError(f"to_transformer_bridge takes a superpose GPT, got "
                        f"{type(model).__name__}")
    from superpose import lora
    lora.check_unadapted(model, "to_transformer_bridge", merged_ok=True)
    _native()
    from transformer_lens.model_bridge import TransformerBridge
    cfg = model.cfg
    bridge_cfg = transformer_bridge_config(cfg, device=model.W_E.device)
    weight = model.W_E
    bridge = TransformerBridge.boot_native(bridge_cfg, device=weight.device, dtype=weight.dtype)
    targets = _native_tensors(bridge.original_model)
    state = _native_state(model)
    skip = ("causal_mask", "cos_cached", "sin_cached")
    missing = sorted(n for n in targets if n not in state and not n.endswith(skip))
    unexpected = sorted(n for n in state if n not in targets)
    if missing or unexpected:
        raise RuntimeError(f"NativeModel's layout differs from what this converter expects: "
                           f"missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for name, source in state.items():
            target = targets[name]
            if target.shape != source.shape:
                raise RuntimeError(f"NativeModel's {name} has shape {tuple(target.shape)}, "
                                   f"ours {tuple(source.shape)}")
            target.copy_(source.detach().to(target.device, target.dtype))
    # TL 4.3's AttentionBridge raises NotImplementedError for use_attn_result,
    # use_split_qkv_input and use_attn_in: only hook_mlp_in's switch carries over.
    if cfg.use_hook_mlp_in and not cfg.attn_only:
        bridge.set_use_hook_mlp_in(True)
    return bridge.train(model.training)


def config_from_transformer_bridge(bridge: Any, *, seed: int = 0) -> GPTConfig:
    """Our GPTConfig for a TL-native TransformerBridge, or a ValueError naming the field (of
    its cfg or native model) that our GPT cannot express."""
    native = _native()
    c, source = bridge.cfg, "TransformerBridge"
    m = bridge.original_model
    arch = getattr(c, "architecture", None)
    if arch != _ARCHITECTURE or not isinstance(m, native.NativeModel):
        refuse(source, "architecture", arch, f"only {_ARCHITECTURE} "
               f"(TransformerBridge.boot_native) bridges; the original model is a "
               f"{type(m).__name__}")
    norm_type = c.normalization_type.upper() if c.normalization_type else None
    act_fn = (c.act_fn or "gelu").lower()
    attn = _unwrap(_unwrap(m.layers[0]).attn)
    positional = (getattr(c, "positional_embedding_type", None) or "standard").lower()
    check_tl_config(source, c, tl_config_checks(c, norm_type, act_fn, positional) + [
        ("attention_dir", getattr(c, "attention_dir", "causal") == "causal",
         "attention is causal"),
        ("attn_scale", math.isclose(attn.scale, math.sqrt(c.d_head), rel_tol=1e-9),
         f"scores are divided by sqrt(d_head)={math.sqrt(c.d_head):g}, this bridge divides "
         f"by {attn.scale:g}"),
    ])
    if positional == "rotary":
        rotary = m.rotary
        if rotary.rotary_dim != c.d_head:
            refuse(source, "rotary_dim", c.rotary_dim,
                   f"the rotary covers all of d_head={c.d_head}")
        if rotary.position_scale != 1.0 or rotary.effective_base != float(c.rotary_base):
            refuse(source, "rope_scaling", getattr(c, "rope_scaling", None), "no rope scaling")
    return gpt_config_from_tl(c, norm_type, act_fn, positional, seed=seed)


def from_transformer_bridge(bridge: Any, *, device: Any = None) -> GPT:
    """Our GPT with a TL-native TransformerBridge's weights (copied): same logits and hooks.
    Refuses, naming the field and value, a bridge our GPT cannot express."""
    if not hasattr(bridge, "cfg") or not hasattr(bridge, "original_model"):
        raise TypeError(f"from_transformer_bridge takes a TransformerLens TransformerBridge, "
                        f"got {type(bridge).__name__}")
    cfg = config_from_transformer_bridge(bridge)
    source = _native_tensors(bridge.original_model)
    dev = device if device is not None else source["tok_embed.weight"].device
    model = GPT(cfg, device="cpu")
    targets = _native_state(model, permute=False)   # views of our weights
    inverse = None
    if cfg.positional == "rotary":      # our dim perm[j] is native dim j
        perm = _rotary_perm(cfg.d_head)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(cfg.d_head)
    with torch.no_grad():
        for name, target in targets.items():
            if name in source:
                value = source[name].detach().to("cpu", torch.float32)
            elif name.split(".")[-2] in ("ln1", "ln2", "ln_out"):
                # LNPre (NativeLayerNormPre): LayerNorm without w, b
                value = torch.ones_like(target) if name.endswith("weight") else target * 0
            else:
                raise ValueError(f"the TransformerBridge's native model has no weight {name!r}")
            if inverse is not None and name.endswith((".attn.q.weight", ".attn.q.bias",
                                                      ".attn.k.weight", ".attn.k.bias")):
                value = value.reshape(cfg.n_heads, cfg.d_head, -1)[:, inverse]
                value = value.reshape(target.shape)
            target.copy_(value)
    if getattr(bridge.cfg, "use_hook_mlp_in", False) and not cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    return model.to(dev).train(bridge.training)
