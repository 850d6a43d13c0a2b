"""Shared by the TransformerLens parity tests (test_tl_*.py, test_gpt_tl.py, test_gpt_bridge.py,
interop/test_hooked_transformer_parity.py): a HookedTransformer of our GPT's architecture, where
TransformerLens still has the class, and random biases / LayerNorm weights so that no
comparison passes by accident."""

from __future__ import annotations

from typing import Any

import torch

from superpose.gpt import GPTConfig

try:  # TransformerLens 3.x only; removed in 4.0
    from transformer_lens import HookedTransformer, HookedTransformerConfig
except ImportError:
    HookedTransformer = HookedTransformerConfig = None

HAS_HT = HookedTransformer is not None
KINDS = ["gpt", "ht"] if HAS_HT else ["gpt"]


def ht_config(cfg: GPTConfig) -> Any:
    """The HookedTransformerConfig of the same architecture (pre-LN, learned positions), with
    TL's own initialisation."""
    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_ctx=cfg.n_ctx, d_head=cfg.d_head,
        n_heads=cfg.n_heads, d_mlp=None if cfg.attn_only else cfg.d_mlp, d_vocab=cfg.d_vocab,
        act_fn="gelu", normalization_type="LN", attn_only=cfg.attn_only,
        positional_embedding_type="standard", seed=cfg.seed, device="cpu")


def randomize(model: torch.nn.Module, seed: int = 1, ln: bool = False) -> None:
    """Random biases (b_*) and, with ln, random LayerNorm w / b: a trained model's weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("b_") or (ln and leaf == "b"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif ln and leaf == "w":
                p.copy_(1 + torch.randn(p.shape, generator=gen) * 0.1)


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """Add scale·N(0, 1) to every LayerNorm weight (w), LayerNorm bias (b) and bias (b_*), so
    that a hook read before or after a weight cannot agree with its twin by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("w", "b") or leaf.startswith("b_"):
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return model
