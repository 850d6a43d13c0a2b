"""Attention-head scores: which heads attend to the previous token, which do induction.

They work on any hooked transformer whose attention patterns pass hook points named
`blocks.{i}.attn.hook_pattern` ([batch, head, query, key]): our `GPT`, TransformerLens's
`HookedTransformer` (3.x) and `TransformerBridge` (4.x). The patterns are read with
`run_with_cache` and a names filter, so nothing else is cached.

    pat = gpt.attention_patterns(model, tokens)             # [layer, batch, head, q, k]
    prev = gpt.prev_token_scores(model, tokens)             # [layer, head]
    ind = gpt.induction_scores(model, seq_len=20, d_vocab=model.cfg.d_vocab, seed=0)

Scores (Olsson et al. 2022, "In-context learning and induction heads"):
- previous-token score: mean attention from position t to t − 1, over t ≥ 1;
- induction score: on a sequence whose second half repeats its first half (length L), mean
  attention from each position t of the second copy to t − L + 1, the token that followed the
  current token's earlier occurrence.
"""

from __future__ import annotations

import re

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _deprecation as deprecation
from superpose import _validate as v
from superpose.gpt.synthetic import repeated_tokens

_PATTERN = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")


def _pattern_hooks(model: nn.Module) -> list[str]:
    hook_dict = getattr(model, "hook_dict", None)
    if not isinstance(hook_dict, dict) or not hasattr(model, "run_with_cache"):
        raise TypeError(f"model must be a TransformerLens-hooked model (hook_dict and "
                        f"run_with_cache), got {type(model).__name__}")
    names = sorted((n for n in hook_dict if _PATTERN.match(n)),
                   key=lambda n: int(_PATTERN.match(n).group(1)))
    if not names:
        raise ValueError("model has no attention-pattern hook points named "
                         "'blocks.{i}.attn.hook_pattern', so it has no attention heads to score")
    return names


def _check_tokens(tokens: Tensor) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"tokens must be an integer tensor [batch, pos], got "
                        f"{type(tokens).__name__}"
                        + (f" of dtype {tokens.dtype}" if isinstance(tokens, Tensor) else ""))
    if tokens.ndim == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [batch, pos] with pos >= 2, got {list(tokens.shape)}")
    return tokens


def attention_patterns(model: nn.Module, tokens: Int[Tensor, "batch pos"]
                       ) -> Float[Tensor, "layer batch head query key"]:
    """Every layer's attention pattern for `tokens`, from one forward pass without gradients."""
    tokens = _check_tokens(tokens)
    names = _pattern_hooks(model)
    wanted = set(names)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    return torch.stack([cache[n] for n in names])


def prev_token_scores_from(pattern: Float[Tensor, "layer batch head query key"]
                           ) -> Float[Tensor, "layer head"]:
    """Previous-token score from patterns already computed (`attention_patterns`)."""
    if pattern.ndim != 5 or pattern.shape[-1] != pattern.shape[-2] or pattern.shape[-1] < 2:
        raise ValueError(f"pattern must be [layer, batch, head, pos, pos] with pos >= 2, got "
                         f"{list(pattern.shape)}")
    v.finite_tensor("pattern", pattern)
    q = torch.arange(1, pattern.shape[-1], device=pattern.device)
    return pattern[..., q, q - 1].mean(dim=(1, 3))


def prev_token_scores(model: nn.Module, tokens: Int[Tensor, "batch pos"]
                      ) -> Float[Tensor, "layer head"]:
    """Mean attention from every position t ≥ 1 to t − 1 (real text or random tokens)."""
    return prev_token_scores_from(attention_patterns(model, tokens))


def induction_scores_from(pattern: Float[Tensor, "layer batch head query key"], repeat: int,
                          copy_start: int) -> Float[Tensor, "layer head"]:
    """Induction score from patterns already computed: mean attention from each position
    t ≥ copy_start to t − repeat + 1. For `repeated_tokens(batch_size, L, ...)`: repeat = L,
    copy_start = L (one more for each token put in front, such as a BOS)."""
    v.positive_int("repeat", repeat)
    v.positive_int("copy_start", copy_start)
    if pattern.ndim != 5 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"pattern must be [layer, batch, head, pos, pos], got "
                         f"{list(pattern.shape)}")
    v.finite_tensor("pattern", pattern)
    n_pos = pattern.shape[-1]
    if copy_start < repeat - 1 or copy_start >= n_pos:
        raise ValueError(f"copy_start must be in [repeat - 1, pos) = [{repeat - 1}, {n_pos}), "
                         f"got {copy_start}: the second copy starts where the first one ends")
    q = torch.arange(copy_start, n_pos, device=pattern.device)
    return pattern[..., q, q - repeat + 1].mean(dim=(1, 3))


def induction_scores(model: nn.Module, *, seq_len: int, d_vocab: int, batch_size: int = 32,
                     seed: int = 0, bos: int | None = None,
                     batch: int | None = None) -> Float[Tensor, "layer head"]:
    """Induction score per head on `batch_size` random sequences of `seq_len` tokens repeated
    once (`repeated_tokens`; with `bos`, every row starts with that token): random tokens leave
    nothing to predict but the repeat, so only a copying circuit can score high. The tokens
    are drawn from `seed` on the CPU (the same on every device), then run on the model's
    device. `batch=` is the deprecated name of `batch_size=`."""
    batch_size = deprecation.renamed_argument(
        "induction_scores", "batch", "batch_size",
        batch if batch is not None else deprecation.UNSET, batch_size, default=32)
    v.positive_int("seq_len", seq_len)
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    total = 2 * seq_len + (bos is not None)
    if isinstance(n_ctx, int) and total > n_ctx:
        raise ValueError(f"2 * seq_len{' + 1 (bos)' if bos is not None else ''} = {total} "
                         f"exceeds the model's context n_ctx={n_ctx}; use seq_len <= "
                         f"{(n_ctx - (bos is not None)) // 2}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tokens = repeated_tokens(batch_size, seq_len, d_vocab, generator=seed, bos=bos,
                             device=device)
    pat = attention_patterns(model, tokens)
    return induction_scores_from(pat, seq_len, seq_len + (bos is not None))
