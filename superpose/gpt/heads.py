"""Attention-head scores: which heads attend to the previous token, which do induction.

They work on any hooked transformer whose attention patterns pass TransformerLens-named hook
points ([batch, head, query, key]): `blocks.{i}.attn.hook_pattern` on our `GPT` and `Encoder`,
TransformerLens's `HookedTransformer` (3.x), `TransformerBridge` (4.x) and `HookedEncoder`;
`encoder.{i}.attn.hook_pattern`, `decoder.{i}.attn.hook_pattern` and
`decoder.{i}.cross_attn.hook_pattern` ([batch, head, tgt, src]) on our `Seq2Seq` (TL's
`HookedEncoderDecoder`). `stack=` picks one of those families ("blocks", "encoder",
"decoder", "cross"); the default is "blocks" when the model has it (a `Seq2Seq` needs an
explicit choice). The patterns are read with `run_with_cache` and a names filter, so nothing
else is cached.

    pat = gpt.attention_patterns(model, tokens)             # [layer, batch, head, q, k]
    prev = gpt.prev_token_scores(model, tokens)             # [layer, head]
    ind = gpt.induction_scores(model, seq_len=20, d_vocab=model.cfg.d_vocab, seed=0)

    # padded batches: a dict of the model's inputs (superpose.activations.model_call)
    pat = attention_patterns(enc, {"tokens": t, "attention_mask": m})
    cross = attention_patterns(s2s, {"src": s, "tgt": t, "src_attention_mask": sm,
                                     "tgt_attention_mask": tm}, stack="cross")   # [l b h tgt src]
    prev = prev_token_scores(s2s, {...}, stack="decoder")

With padding the returned pattern is 0 wherever the query or the key is a padded position
(the model already gives padded keys probability 0; rows of padded queries are dropped), and
the scores average over real positions only. Which mask belongs to which axis follows the
hook's side (`activations.position_mask`): "blocks" uses "attention_mask" for both axes,
"encoder" "src_attention_mask", "decoder" "tgt_attention_mask", and "cross" the target's
mask for queries and the source's for keys (`pattern_masks`).

Scores (Olsson et al. 2022, "In-context learning and induction heads"):
- previous-token score: mean attention from position t to t − 1, over t ≥ 1 (with padding:
  over the t where both t and t − 1 are real tokens);
- induction score: on a sequence whose second half repeats its first half (length L), mean
  attention from each position t of the second copy to t − L + 1, the token that followed the
  current token's earlier occurrence. Run on unpadded random tokens, so it takes a model
  whose forward reads token ids alone (GPT, Encoder; `stack="blocks"`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from superpose import _deprecation as deprecation
from superpose import _validate as v
from superpose.activations import model_call, position_mask
from superpose.gpt.synthetic import repeated_tokens

_PATTERNS = {
    "blocks": re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$"),
    "encoder": re.compile(r"^encoder\.(\d+)\.attn\.hook_pattern$"),
    "decoder": re.compile(r"^decoder\.(\d+)\.attn\.hook_pattern$"),
    "cross": re.compile(r"^decoder\.(\d+)\.cross_attn\.hook_pattern$"),
}
STACKS = tuple(_PATTERNS)
_PATTERN = _PATTERNS["blocks"]


def _stack_names(hook_dict: dict[str, Any], stack: str) -> list[str]:
    pat = _PATTERNS[stack]
    return sorted((n for n in hook_dict if pat.match(n)),
                  key=lambda n: int(pat.match(n).group(1)))   # type: ignore[union-attr]


def _pattern_hooks(model: nn.Module, stack: str | None = None) -> list[str]:
    hook_dict = getattr(model, "hook_dict", None)
    if not isinstance(hook_dict, dict) or not hasattr(model, "run_with_cache"):
        raise TypeError(f"model must be a TransformerLens-hooked model (hook_dict and "
                        f"run_with_cache), got {type(model).__name__}")
    if stack is not None:
        v.choice("stack", stack, STACKS)
    found = {s: _stack_names(hook_dict, s) for s in STACKS}
    have = [s for s in STACKS if found[s]]
    if not have:
        raise ValueError("model has no attention-pattern hook points named "
                         "'blocks.{i}.attn.hook_pattern' (nor encoder.{i}.attn / "
                         "decoder.{i}.attn / decoder.{i}.cross_attn), so it has no attention "
                         "heads to score")
    if stack is None:
        if not found["blocks"]:
            raise ValueError(f"{type(model).__name__} has several attention stacks ({have}); "
                             f"pass stack= one of them")
        stack = "blocks"
    if not found[stack]:
        raise ValueError(f"{type(model).__name__} has no attention patterns of stack "
                         f"{stack!r}; it has {have}")
    return found[stack]


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


def _check_inputs(inputs: Any) -> Any:
    if not isinstance(inputs, Mapping):
        return _check_tokens(inputs)
    sizes = {k: t.shape[0] for k, t in inputs.items() if isinstance(t, Tensor) and t.ndim}
    if not sizes or len(set(sizes.values())) != 1:
        raise ValueError(f"a dict of model inputs needs tensors sharing their first (batch) "
                         f"axis, got {sizes or list(inputs)}")
    return inputs


def pattern_masks(inputs: Any, stack: str = "blocks"
                  ) -> tuple[Bool[Tensor, "batch query"] | None, Bool[Tensor, "batch key"] | None]:
    """(query mask, key mask) of a stack's patterns for one batch of inputs (True at real
    tokens; None: no padding on that side): see the module docstring."""
    v.choice("stack", stack, STACKS)
    side = {"blocks": "blocks.0.attn.hook_pattern", "encoder": "encoder.0.attn.hook_pattern",
            "decoder": "decoder.0.attn.hook_pattern", "cross": "decoder.0.attn.hook_pattern"}
    q = position_mask(side[stack], inputs)
    k = position_mask("encoder.0.attn.hook_pattern", inputs) if stack == "cross" else q
    return q, k


def attention_patterns(model: nn.Module, tokens: Int[Tensor, "batch pos"] | Mapping[str, Any],
                       *, stack: str | None = None
                       ) -> Float[Tensor, "layer batch head query key"]:
    """Every layer's attention pattern for `tokens` (token ids, or a dict of the model's
    inputs), from one forward pass without gradients; 0 at padded queries and keys. `stack`:
    which patterns (module docstring)."""
    tokens = _check_inputs(tokens)
    names = _pattern_hooks(model, stack)
    stack = stack or "blocks"
    wanted = set(names)
    args, kwargs = model_call(tokens)
    with torch.no_grad():
        _, cache = model.run_with_cache(*args, names_filter=lambda n: n in wanted, **kwargs)
    pat = torch.stack([cache[n] for n in names])
    q, k = pattern_masks(tokens, stack)
    if q is not None or k is not None:
        keep = torch.ones(pat.shape[1], 1, pat.shape[-2], pat.shape[-1], dtype=torch.bool,
                          device=pat.device)
        for m, shape, axis in ((q, (-1, 1, pat.shape[-2], 1), "query"),
                               (k, (-1, 1, 1, pat.shape[-1]), "key")):
            if m is None:
                continue
            if m.shape != (pat.shape[1], shape[2] * shape[3]):
                raise ValueError(f"the {axis} mask has shape {list(m.shape)}, but the patterns "
                                 f"of stack {stack!r} are {list(pat.shape[1:])}; pass the "
                                 "mask of that side")
            keep = keep & m.to(pat.device).reshape(shape)
        pat = pat * keep
    return pat


def prev_token_scores_from(pattern: Float[Tensor, "layer batch head query key"],
                           mask: Bool[Tensor, "batch pos"] | None = None
                           ) -> Float[Tensor, "layer head"]:
    """Previous-token score from patterns already computed (`attention_patterns`); with a
    padding `mask` (True at real tokens), the mean over queries t where t and t − 1 are real."""
    if pattern.ndim != 5 or pattern.shape[-1] != pattern.shape[-2] or pattern.shape[-1] < 2:
        raise ValueError(f"pattern must be [layer, batch, head, pos, pos] with pos >= 2, got "
                         f"{list(pattern.shape)}")
    v.finite_tensor("pattern", pattern)
    q = torch.arange(1, pattern.shape[-1], device=pattern.device)
    scores = pattern[..., q, q - 1]                                  # [layer batch head pos-1]
    if mask is None:
        return scores.mean(dim=(1, 3))
    if tuple(mask.shape) != (pattern.shape[1], pattern.shape[-1]):
        raise ValueError(f"mask must be [batch, pos] = {[pattern.shape[1], pattern.shape[-1]]}, "
                         f"got {list(mask.shape)}")
    mask = mask.to(pattern.device).bool()
    w = (mask[:, 1:] & mask[:, :-1]).to(scores.dtype)                # [batch pos-1]
    if not bool(w.any()):
        raise ValueError("no position t has a real token at both t and t - 1")
    return (scores * w[None, :, None]).sum(dim=(1, 3)) / w.sum()


def prev_token_scores(model: nn.Module, tokens: Int[Tensor, "batch pos"] | Mapping[str, Any],
                      *, stack: str | None = None) -> Float[Tensor, "layer head"]:
    """Mean attention from every position t ≥ 1 to t − 1 (real text or random tokens), over
    real positions of a padded dict batch; a self-attention `stack` (not "cross")."""
    if stack == "cross":
        raise ValueError("the previous-token score compares a position with the one before it "
                         "in the same sequence; cross-attention reads another sequence (use "
                         "attention_patterns(..., stack='cross'))")
    if isinstance(tokens, Mapping):
        q, _ = pattern_masks(tokens, stack or "blocks")
        return prev_token_scores_from(attention_patterns(model, tokens, stack=stack), q)
    return prev_token_scores_from(attention_patterns(model, tokens, stack=stack))


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
    _pattern_hooks(model, "blocks")     # a Seq2Seq (no blocks.*) is told so before running
    pat = attention_patterns(model, tokens)
    return induction_scores_from(pat, seq_len, seq_len + (bos is not None))
