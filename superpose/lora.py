"""Low-rank adapters (LoRA, Hu et al. 2021) on any weight of the GPT, the Encoder and the Seq2Seq.

    from superpose import gpt, lora
    lora.add(model, ["blocks.*.attn.W_Q", "blocks.*.attn.W_V"], rank=8, alpha=16)
    gpt.train(model, data, steps=500)            # only the adapters train
    lora.save(model, "results/adapter")          # adapter_config.json + adapter_model.safetensors
    lora.merge(model)                            # fold ΔW into the weights (exact; unmerge undoes)

A weight W gets ΔW = (alpha / rank) · B A with A [rank, d_in] and B [d_out, rank], where d_in is
what the weight reads and d_out what it writes (for W_Q/W_K/W_V: d_model in, n_heads·d_head
out, head-major). B starts at 0, so an adapted model starts as its base exactly; A is drawn as
PEFT draws it (Kaiming-uniform, bound 1/sqrt(d_in)), seeded. `dropout` applies to the adapter's
input only, as in the paper and PEFT.

Targets are named as a TransformerLens user writes them, with fnmatch patterns:
`blocks.*.attn.W_Q`, `blocks.0.mlp.W_out`, `blocks.*.attn.*`, `decoder.*.cross_attn.W_K`,
`embed.W_E`, `unembed.W_U` (`targets(model)` lists every one; an unknown name lists close
matches). Every weight matrix and embedding table of the three families can be adapted: the
GPT's W_E, W_pos, blocks and untied W_U; the Encoder's embed.embed.W_E, embed.pos_embed.W_pos,
embed.token_type_embed.W_token_type, blocks, mlm_head.W, pooler.W, classifier.W and untied
unembed.W_U; the Seq2Seq's W_E (W_E_tgt), W_pos, W_pos_tgt, encoder and decoder blocks (with
cross-attention) and untied unembed.W_U. Not adapted: LayerNorm gains and biases (vectors), and
a tied W_U (it is W_E's transpose: adapt W_E).

Adapting freezes every base parameter (requires_grad False), so the trainers — which optimize
only parameters that require grad — give gradients and optimizer state to the adapters alone;
`remove` restores what was trainable before.

Why a forward-time low-rank path and not `torch.nn.utils.parametrize`. A parametrization would
rebuild W + ΔW (a full d_out × d_in matrix) on every forward and backward, could not apply
dropout to the adapter's input, and would hide the adapter's r-dimensional activation x Aᵀ, which
is what a researcher reads to see what the adapter computes. Here every matmul of the parts
(`superpose.transformer.parts`) adds `scale · B (A x)` after its `F.linear` when an adapter is
attached (one dict truth test when none is), so the adapter's activation is a hook point:

    blocks.{i}.attn.lora_W_Q.hook_act    [batch pos rank]   (x Aᵀ, before B and the scale)

(`hook_name(weight)` gives it; per-head inputs — `set_use_split_qkv_input`, or W_O under
`set_use_attn_result` — give [batch pos head rank], whose sum over heads is the activation of
the flattened input). Hooks and `run_with_cache` see the adapted model. Weights read directly
(`model.W_Q`, the QK/OV circuits, `tl_parameters`) are the base's until `merge`.

PEFT does not apply: our weights are raw Parameters in TransformerLens's layout (W_Q [head
d_model d_head], W_in [d_model d_mlp], ...), read by `F.linear`, not `nn.Linear` modules.

Merge and unmerge. `merge` adds ΔW to each weight (in its own layout; W_Q/W_K/W_V are views of
the fused W_QKV) and keeps a copy of the weight it replaced; `unmerge` puts that copy back, so
merge-then-unmerge returns the base bit for bit. Merged logits equal adapter logits to float
rounding (the sum is computed in another order). Merging twice, unmerging what is not merged,
training merged adapters, and unmerging after the merged weights were edited are errors.

Save / load. `save` writes a folder with `adapter_model.safetensors` (`{weight}.lora_A`,
`{weight}.lora_B`) and `adapter_config.json` (per-weight rank, alpha, dropout; the base's class,
config and a SHA-256 fingerprint of its weights), written atomically and separate from the base.
`load` refuses a base of another class or config (naming the differing fields) and, by default,
a base whose weights differ from the one the adapters were trained on (`check_weights=False`
accepts it, e.g. to move adapters onto a further-trained base on purpose).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from superpose import _validate as v
from superpose import runs
from superpose.hooks import FastHookPoint

__all__ = ["LoRA", "add", "adapters", "delta", "delta_matrix", "hook_name", "is_merged",
           "load", "merge", "remove", "save", "targets", "unmerge", "CONFIG_FILE",
           "WEIGHTS_FILE"]

FORMAT = "superpose.lora/1"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class LoRA(nn.Module):
    """One adapter: `forward(x) = scale · B (A dropout(x))`, A [rank, d_in], B [d_out, rank].
    `act(x)` is the r-dimensional activation x Aᵀ (hook point `hook_act`)."""

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float, dropout: float, *,
                 seed: int, device: torch.device, dtype: torch.dtype,
                 embedding: bool = False) -> None:
        super().__init__()
        self.d_in, self.d_out, self.rank, self.alpha = d_in, d_out, rank, float(alpha)
        self.scale = self.alpha / rank
        self.dropout = float(dropout)
        self.embedding = embedding        # input is ids (W_E, W_pos): x Aᵀ is a row lookup
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(d_in)
        a = (torch.rand(rank, d_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        self.A = nn.Parameter(a.to(device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(d_out, rank, device=device, dtype=dtype))
        self.hook_act = FastHookPoint()   # [batch pos rank]; per-head inputs: [batch pos head rank]
        self.merged = False
        # the weight replaced by merge (exact unmerge); a buffer, so .to(device) moves it
        self.register_buffer("_backup", None, persistent=False)

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, rank={self.rank}, alpha={self.alpha:g}, "
                f"dropout={self.dropout:g}" + (", merged" if self.merged else ""))

    def act(self, x: Tensor) -> Tensor:
        """x [*batch d_in] -> x Aᵀ [*batch rank] after the adapter's dropout (for an embedding
        adapter x holds ids [*batch] and this is a row lookup)."""
        if self.embedding:
            return self.hook_act(F.embedding(x, self.A.T))
        if self.dropout > 0 and self.training:
            x = F.dropout(x, self.dropout, True)
        return self.hook_act(F.linear(x, self.A))

    def forward(self, x: Tensor) -> Tensor:
        """[*batch d_in] (or ids [*batch]) -> scale · B A x [*batch d_out]."""
        return F.linear(self.act(x), self.B) * self.scale

    def add_to(self, out: Tensor, x: Tensor) -> Tensor:
        """out + scale · B A x, the add fused into one addmm (no [*batch, d_out] temporary);
        out [*batch d_out] is what the adapted weight computed from x [*batch d_in]."""
        a = self.act(x)
        return torch.addmm(out.reshape(-1, self.d_out), a.reshape(-1, self.rank), self.B.T,
                           alpha=self.scale).view(out.shape)

    def heads_in(self, x: Float[Tensor, "batch pos head d_model"]
                 ) -> Float[Tensor, "batch pos head d_head"]:
        """W_Q/W_K/W_V with per-head inputs (TL's split path): head h reads its own copy x_h and
        writes its d_head slice of B A x_h."""
        a = self.act(x)                                          # [b p h r]
        n_heads = x.shape[2]
        b = self.B.view(n_heads, -1, self.rank)                  # [h d_head r]
        return torch.einsum("bphr,her->bphe", a, b) * self.scale

    def heads_out(self, z: Float[Tensor, "batch pos head d_head"]
                  ) -> Float[Tensor, "batch pos head d_model"]:
        """W_O per head (use_attn_result): head h's part of B A z is B (A_h z_h), A_h the
        columns of A that read head h; the per-head results sum to the adapter's output."""
        b_, p, h, dh = z.shape
        if self.dropout > 0 and self.training:
            z = F.dropout(z, self.dropout, True)
        a = self.hook_act(torch.einsum("bphe,rhe->bphr", z, self.A.view(self.rank, h, dh)))
        return F.linear(a, self.B) * self.scale

    def delta_matrix(self) -> Float[Tensor, "d_out d_in"]:
        return self.scale * (self.B @ self.A)


# ---- where adapters can go ------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One adaptable weight: the module that owns the adapter, the weight's leaf name, its
    input and output widths, and how ΔW [d_out, d_in] maps onto the stored weight."""

    owner: nn.Module
    leaf: str
    d_in: int
    d_out: int
    kind: str      # "qkv" (W_Q/W_K/W_V), "out" (W_O), "tl" (W_in, W_out, W_U), "embed"
    param: str     # the stored parameter's state-dict name (W_Q: the fused ...attn.W_QKV)

    def weight(self) -> Tensor:
        """The stored weight, or a view of it, in the layout ΔW is added to."""
        o = self.owner
        if self.kind == "qkv":
            return o.W_QKV[("W_Q", "W_K", "W_V").index(self.leaf)]   # [head d_head d_model]
        p = o._parameters.get(self.leaf)
        return p if p is not None else o._model._parameters[self.leaf]   # an unembed's W_U

    def layout(self, m: Tensor) -> Tensor:
        """ΔW [d_out, d_in] in `weight()`'s layout."""
        if self.kind == "qkv":
            w = self.weight()
            return m.reshape(w.shape)                                   # [head d_head d_model]
        if self.kind == "out":
            return m.T.reshape(self.weight().shape)                     # [head d_head d_model]
        return m.T                                                       # [d_in d_out]

    def tl_layout(self, m: Tensor) -> Tensor:
        """ΔW in TransformerLens's layout of the weight (W_Q: [head d_model d_head])."""
        return self.layout(m).transpose(-1, -2) if self.kind == "qkv" else self.layout(m)


def _attention_targets(prefix: str, attn: nn.Module) -> Iterator[tuple[str, _Target]]:
    cfg = attn.cfg
    hd = cfg.n_heads * cfg.d_head
    for leaf in ("W_Q", "W_K", "W_V"):
        yield f"{prefix}.{leaf}", _Target(attn, leaf, cfg.d_model, hd, "qkv", f"{prefix}.W_QKV")
    yield f"{prefix}.W_O", _Target(attn, "W_O", hd, cfg.d_model, "out", f"{prefix}.W_O")


def _declared_targets(name: str, mod: nn.Module) -> Iterator[tuple[str, _Target]]:
    """What a module declares: `LORA_WEIGHTS`, matrices [d_in d_out] it applies with
    `parts.linear` (the Encoder's heads; an unembed's W_U, which may live on its model), and
    `LORA_EMBEDDINGS`, tables [rows d_model] it reads with `parts.embedding`. A declared weight
    the module does not have (tied, or not in this config) is skipped."""
    prefix = f"{name}." if name else ""
    for leaf in getattr(mod, "LORA_WEIGHTS", ()):
        w, param = mod._parameters.get(leaf), f"{prefix}{leaf}"
        if w is None and hasattr(mod, "_model"):
            w, param = mod._model._parameters.get(leaf), leaf
        if w is not None:
            yield f"{prefix}{leaf}", _Target(mod, leaf, w.shape[0], w.shape[1], "tl", param)
    for leaf in getattr(mod, "LORA_EMBEDDINGS", ()):
        w = mod._parameters.get(leaf)
        if w is not None:
            yield f"{prefix}{leaf}", _Target(mod, leaf, w.shape[0], w.shape[1], "embed",
                                             f"{prefix}{leaf}")


def _targets(model: nn.Module) -> dict[str, _Target]:
    from superpose.transformer.parts import MLP, Attention
    out: dict[str, _Target] = {}
    if not isinstance(model, nn.Module):
        raise TypeError(f"LoRA adapts a superpose model (GPT, Encoder, Seq2Seq), got "
                        f"{type(model).__name__}")
    cfg = getattr(model, "cfg", None)
    if type(model).__name__ == "GPT":
        out["embed.W_E"] = _Target(model, "W_E", cfg.d_vocab, cfg.d_model, "embed", "W_E")
        if cfg.positional == "learned":
            out["pos_embed.W_pos"] = _Target(model, "W_pos", cfg.n_ctx, cfg.d_model, "embed",
                                             "W_pos")
    for name, mod in model.named_modules():
        if isinstance(mod, Attention):
            out.update(_attention_targets(name, mod))
        elif isinstance(mod, MLP):
            d_mlp = mod.W_in.shape[1]
            out[f"{name}.W_in"] = _Target(mod, "W_in", mod.W_in.shape[0], d_mlp, "tl",
                                          f"{name}.W_in")
            out[f"{name}.W_out"] = _Target(mod, "W_out", d_mlp, mod.W_out.shape[1], "tl",
                                           f"{name}.W_out")
        else:
            out.update(_declared_targets(name, mod))
    if not out:
        raise TypeError(f"{type(model).__name__} has no weights LoRA can adapt (it adapts the "
                        "attention and MLP weights of superpose's transformer parts)")
    return out


def targets(model: nn.Module) -> list[str]:
    """Every weight of `model` an adapter can go on, in forward order (TransformerLens names:
    embed.W_E, blocks.{i}.attn.W_Q ... W_O, blocks.{i}.mlp.W_in / W_out, unembed.W_U; the
    Encoder's and Seq2Seq's, e.g. embed.embed.W_E, decoder.{i}.cross_attn.W_K; see the module
    docstring)."""
    return list(_targets(model))


def _resolve(model: nn.Module, patterns: str | Sequence[str]) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, Sequence) or not patterns or not all(
            isinstance(p, str) for p in patterns):
        raise ValueError(f"targets must be a weight name or pattern (e.g. 'blocks.*.attn.W_Q') "
                         f"or a non-empty list of them, got {patterns!r}")
    names = targets(model)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            near = v.close_matches(pattern, names)
            raise ValueError(f"no weight of this {type(model).__name__} matches {pattern!r}"
                             + (f"; close matches: {near}" if near else "")
                             + f"; lora.targets(model) lists all {len(names)} (e.g. "
                               f"{names[min(1, len(names) - 1)]!r}), and patterns use * as in "
                               "'blocks.*.attn.W_Q'")
        chosen += [h for h in hits if h not in chosen]
    return [n for n in names if n in chosen]


# ---- the adapters on a model ----------------------------------------------------------------


def _attached(model: nn.Module) -> dict[str, tuple[_Target, LoRA]]:
    found = {}
    for name, t in _targets(model).items():
        a = getattr(t.owner, f"lora_{t.leaf}", None)
        if isinstance(a, LoRA):
            found[name] = (t, a)
    return found


def adapters(model: nn.Module) -> dict[str, LoRA]:
    """Weight name -> its adapter (A, B, scale, rank, hook_act), in forward order."""
    return {name: a for name, (_, a) in _attached(model).items()}


def _adapter(model: nn.Module, weight: str) -> tuple[_Target, LoRA]:
    found = _attached(model)
    if weight not in found:
        have = list(found)
        if not have:
            raise ValueError(f"this {type(model).__name__} has no LoRA adapters; "
                             "lora.add(model, ...) first")
        near = v.close_matches(weight, have)
        raise ValueError(f"no adapter on {weight!r}" + (f"; close matches: {near}" if near
                                                          else "") + f"; adapted: {have}")
    return found[weight]


def hook_name(weight: str) -> str:
    """The hook point of the adapter on `weight` (x Aᵀ, [batch pos rank]):
    'blocks.0.attn.W_Q' -> 'blocks.0.attn.lora_W_Q.hook_act'; 'embed.W_E' -> 'lora_W_E.hook_act'
    (the GPT keeps W_E and W_pos on itself)."""
    if not isinstance(weight, str) or not weight:
        raise ValueError(f"hook_name takes a weight name such as 'blocks.0.attn.W_Q', got "
                         f"{weight!r}")
    prefix, _, leaf = weight.rpartition(".")
    if prefix in ("embed", "pos_embed"):
        prefix = ""
    return f"{prefix + '.' if prefix else ''}lora_{leaf}.hook_act"


def _active(owner: nn.Module) -> dict[str, LoRA]:
    """The owner's attached, unmerged adapters by leaf name (what the parts' forward reads)."""
    return {name[5:]: m for name, m in owner._modules.items()
            if name.startswith("lora_") and isinstance(m, LoRA) and not m.merged}


def _refresh(owner: nn.Module) -> None:
    owner._lora = _active(owner)


def add(model: nn.Module, targets: str | Sequence[str], *, rank: int = 8,
        alpha: float | int | None = None, dropout: float | int = 0.0, seed: int = 0
        ) -> list[str]:
    """Attach an adapter to every weight matching `targets` (names or fnmatch patterns, see
    `targets(model)`) and freeze the base. `alpha` defaults to `rank` (scale 1). Returns the
    adapted weight names. Nothing changes if any check fails."""
    v.positive_int("rank", rank)
    alpha = float(rank) if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
            math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number (the adapter's scale is alpha/rank), "
                         f"got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
            0 <= dropout < 1):
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    v.non_negative_int("seed", seed)
    names = _resolve(model, targets)
    table = _targets(model)
    attached = _attached(model)
    if any(a.merged for _, a in attached.values()):
        raise ValueError("this model's adapters are merged into its weights; lora.unmerge(model) "
                         "(or lora.remove(model) to keep the merged weights) before adding more")
    for name in names:
        t = table[name]
        if name in attached:
            raise ValueError(f"{name} already has an adapter (rank {attached[name][1].rank}); "
                             "lora.remove(model) first to replace it")
        if rank > min(t.d_in, t.d_out):
            raise ValueError(f"rank {rank} is above min(d_in, d_out) = min({t.d_in}, {t.d_out}) "
                             f"of {name}: a rank-{rank} update of a {t.d_out}×{t.d_in} matrix "
                             f"is impossible; use rank <= {min(t.d_in, t.d_out)}")
    w = next(model.parameters())
    if not hasattr(model, "_lora_trainable"):     # what was trainable before the first add
        model._lora_trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        t = table[name]
        a = LoRA(t.d_in, t.d_out, rank, float(alpha), float(dropout),
                 seed=(seed * 1_000_003 + zlib.crc32(name.encode())) % 2**62,
                 device=w.device, dtype=w.dtype, embedding=t.kind == "embed")
        a.train(model.training)
        t.owner.add_module(f"lora_{t.leaf}", a)
        _refresh(t.owner)
    _setup(model)
    return names


def _setup(model: nn.Module) -> None:
    if hasattr(model, "setup"):       # a HookedRootModule: rebuild hook_dict / mod_dict
        model.setup()


def remove(model: nn.Module) -> list[str]:
    """Detach every adapter (a merged one's ΔW stays in the weights: merge-then-remove bakes
    the fine-tune in) and make trainable again what was trainable before `add`."""
    found = _attached(model)
    for t, _ in found.values():
        delattr(t.owner, f"lora_{t.leaf}")
        _refresh(t.owner)
    trainable = set(getattr(model, "_lora_trainable", []))
    if hasattr(model, "_lora_trainable"):
        del model._lora_trainable
    for n, p in model.named_parameters():
        if n in trainable:
            p.requires_grad_(True)
    _setup(model)
    return list(found)


def is_merged(model: nn.Module) -> bool:
    """True when the model's adapters are merged into its weights."""
    found = _attached(model)
    return bool(found) and all(a.merged for _, a in found.values())


@torch.no_grad()
def merge(model: nn.Module) -> list[str]:
    """Add every adapter's ΔW into its weight (the adapters stay attached, inactive, so
    `unmerge` can take them out again). Merging twice is an error."""
    found = _attached(model)
    if not found:
        raise ValueError(f"this {type(model).__name__} has no LoRA adapters to merge; "
                         "lora.add(model, ...) first")
    merged = [n for n, (_, a) in found.items() if a.merged]
    if merged:
        raise ValueError(f"the adapters are already merged ({merged[:3]}...); merging twice "
                         "would add ΔW twice. lora.unmerge(model) first")
    for _, (t, a) in found.items():
        w = t.weight()
        a._backup = w.detach().clone()
        w.add_(t.layout(a.delta_matrix()).to(w.dtype))
        a.merged = True
        _refresh(t.owner)
    return list(found)


@torch.no_grad()
def unmerge(model: nn.Module) -> list[str]:
    """Undo `merge` exactly: every weight gets back the value it had before. Refused when the
    merged weights were changed since (they no longer equal base + ΔW)."""
    found = _attached(model)
    if not found or not any(a.merged for _, a in found.values()):
        raise ValueError("nothing to unmerge: the adapters are not merged (lora.merge(model) "
                         "first)")
    for name, (t, a) in found.items():
        w = t.weight()
        expect = a._backup + t.layout(a.delta_matrix()).to(w.dtype)
        tol = 1e-5 * (1 + float(expect.abs().max()))
        if a._backup is None or not torch.allclose(w, expect, rtol=0, atol=tol):
            raise ValueError(f"{name} changed since lora.merge (it no longer equals base + ΔW), "
                             "so unmerging would lose that change; nothing was unmerged. "
                             "Keep the merged model, or lora.remove(model) to drop the adapters")
    for _, (t, a) in found.items():
        t.weight().copy_(a._backup)
        a._backup, a.merged = None, False
        _refresh(t.owner)
    return list(found)


def check_trainable(model: nn.Module) -> None:
    """Raise when the model carries merged adapters (their parameters would get no gradient);
    the trainers call this before training."""
    if any(a.merged for a in adapters_if_any(model).values()):
        raise ValueError("this model's LoRA adapters are merged into its weights, so training "
                         "would not reach them; lora.unmerge(model) before training, or "
                         "lora.remove(model) to train the merged weights themselves")


def check_unadapted(model: nn.Module, what: str, *, merged_ok: bool) -> None:
    """Raise when `model` carries adapters that `what` (a conversion, a save) would
    silently drop: unmerged ones always, merged ones unless `merged_ok` (their ΔW is in the
    weights then)."""
    found = adapters_if_any(model)
    live = [n for n, a in found.items() if not (merged_ok and a.merged)]
    if not live:
        return
    if merged_ok:
        raise ValueError(f"{what} reads the weights, and this model's LoRA adapters "
                         f"({live[:3]}{'...' if len(live) > 3 else ''}) are not merged into "
                         "them, so their effect would be lost; lora.merge(model) first")
    raise ValueError(f"{what} would drop this model's LoRA adapters ({live[:3]}"
                     f"{'...' if len(live) > 3 else ''}); lora.save(model, path) saves them "
                     "(separately from the base), or lora.merge(model); lora.remove(model) "
                     "bakes them into a plain model to save")


def adapters_if_any(model: nn.Module) -> dict[str, LoRA]:
    """`adapters(model)`, or {} for a model LoRA does not know (no error)."""
    try:
        return adapters(model)
    except TypeError:
        return {}


def delta_matrix(model: nn.Module, weight: str) -> Float[Tensor, "d_out d_in"]:
    """ΔW = scale · B A of the adapter on `weight`, [d_out, d_in] (F.linear's layout: the
    adapter adds ΔW x to what the weight computes from x)."""
    return _adapter(model, weight)[1].delta_matrix().detach()


def delta(model: nn.Module, weight: str) -> Tensor:
    """ΔW in the weight's TransformerLens layout (W_Q: [head d_model d_head], W_O: [head d_head
    d_model], W_in: [d_model d_mlp], W_E: [d_vocab d_model]): merge adds exactly this."""
    t, a = _adapter(model, weight)
    return t.tl_layout(a.delta_matrix().detach())


# ---- save / load ----------------------------------------------------------------------------


def _base_state(model: nn.Module) -> dict[str, Tensor]:
    """The base's parameters (state-dict names) as they are without adapters: a merged
    weight's value from before the merge."""
    out = {n: p.detach() for n, p in model.state_dict().items() if ".lora_" not in f".{n}"}
    for _, (t, a) in _attached(model).items():
        if a.merged:
            if t.kind == "qkv":
                out[t.param] = out[t.param].clone()
                out[t.param][("W_Q", "W_K", "W_V").index(t.leaf)] = a._backup
            else:
                out[t.param] = a._backup
    return out


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of the base weights (names, shapes, float32 bytes on the CPU), adapters excluded
    and merged weights taken as before the merge: the identity `load` checks adapters against."""
    h = hashlib.sha256()
    for name, p in sorted(_base_state(model).items()):
        t = p.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{list(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _base_info(model: nn.Module) -> dict[str, Any]:
    from superpose.train.checkpoint import model_config
    cfg = model_config(model) or {}
    runtime = set(getattr(type(getattr(model, "cfg", None)), "RUNTIME", ()))
    return {"class": type(model).__name__,
            "config": {k: val for k, val in cfg.items() if k not in runtime}}


def save(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters (not the base) to the folder `path`, atomically: adapter_config.json
    + adapter_model.safetensors. Works merged or not (the adapters themselves are saved)."""
    found = _attached(model)
    if not found:
        raise ValueError(f"this {type(model).__name__} has no LoRA adapters to save; "
                         "lora.add(model, ...) first")
    tensors: dict[str, Tensor] = {}
    spec: dict[str, Any] = {}
    for name, (_, a) in found.items():
        tensors[f"{name}.lora_A"] = a.A.detach()
        tensors[f"{name}.lora_B"] = a.B.detach()
        spec[name] = {"rank": a.rank, "alpha": a.alpha, "dropout": a.dropout}
    config = {"format": FORMAT, "peft_type": "LORA", "adapters": spec,
              "base": {**_base_info(model), "fingerprint": fingerprint(model)}}
    return _write_folder(Path(path), config, tensors)


def _write_folder(folder: Path, config: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    """The weights to a temporary file, then the config (holding the weights' SHA-256) renamed
    into place, then the weights: an interrupted save leaves the previous one whole, or fails
    `load`'s hash check — never mixed files that load."""
    from safetensors.torch import save_file

    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; adapters are saved into a folder (made if "
                         "missing)")
    flat = {k: t.detach().cpu().contiguous().clone() for k, t in tensors.items()}

    def weights_then_config(tmp: Path) -> None:
        save_file(flat, str(tmp))
        runs.write_json(folder / CONFIG_FILE,
                        {**config, "sha256": {WEIGHTS_FILE: runs.sha256_file(tmp)}})

    runs.atomic_write(folder / WEIGHTS_FILE, weights_then_config)
    return folder


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    folder = Path(path)
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"no adapter folder at {str(folder)!r} (lora.save writes "
                                f"{CONFIG_FILE} + {WEIGHTS_FILE} there)")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ValueError(f"{folder}: {p.name} is missing; this is not a complete adapter "
                             "folder written by lora.save")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is corrupt (not JSON: {e}); re-save the adapters") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(
            config.get("adapters"), dict) or not isinstance(config.get("base"), dict):
        raise ValueError(f"{cfg_path} is not a superpose LoRA config (format {FORMAT!r} with "
                         "'adapters' and 'base'); was it written by lora.save?")
    want = (config.get("sha256") or {}).get(WEIGHTS_FILE)
    if want != runs.sha256_file(w_path):
        raise ValueError(f"{w_path} does not match the hash in {CONFIG_FILE} (an interrupted "
                         "or mixed save); re-save the adapters")
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{w_path} is corrupt or truncated ({e}); re-save the adapters") from None
    return config, tensors


def load(model: nn.Module, path: str | Path, *, check_weights: bool = True) -> list[str]:
    """Attach the adapters saved in `path` to `model` (its base). The base must be of the same
    class and config, and (unless check_weights=False) have the same weights as the base they
    were trained on; the model must have no adapters yet. Nothing changes if a check fails."""
    config, tensors = _read(Path(path))
    base = config["base"]
    mine = _base_info(model)
    if base.get("class") != mine["class"]:
        raise ValueError(f"{path}: these adapters are for a {base.get('class')}, not a "
                         f"{mine['class']}")
    theirs = base.get("config", {})
    diff = sorted(k for k in set(theirs) | set(mine["config"])
                  if theirs.get(k) != mine["config"].get(k))
    if diff:
        shown = ", ".join(f"{k}: saved {theirs.get(k)!r} vs this model {mine['config'].get(k)!r}"
                          for k in diff[:6])
        raise ValueError(f"{path}: these adapters were trained on a {base.get('class')} with "
                         f"another config ({shown}); load them onto the base they were trained "
                         "on")
    if _attached(model):
        raise ValueError("this model already has adapters; lora.remove(model) before loading "
                         "others")
    if check_weights and base.get("fingerprint") != fingerprint(model):
        raise ValueError(f"{path}: these adapters were trained on a base with other weights "
                         "(same config, different weight fingerprint): they would compute "
                         "something else here. Load the base they were trained on, or pass "
                         "check_weights=False to attach them anyway")
    spec = config["adapters"]
    table = _targets(model)
    for name, s in spec.items():
        if name not in table:
            raise ValueError(f"{path}: adapter on {name!r}, which this model does not have")
        for key in ("lora_A", "lora_B"):
            if f"{name}.{key}" not in tensors:
                raise ValueError(f"{path}: {WEIGHTS_FILE} lacks {name}.{key}; the folder is "
                                 "incomplete, re-save the adapters")
        t, r = table[name], s.get("rank")
        a_shape, b_shape = (r, t.d_in), (t.d_out, r)
        if (tuple(tensors[f"{name}.lora_A"].shape) != a_shape
                or tuple(tensors[f"{name}.lora_B"].shape) != b_shape):
            raise ValueError(f"{path}: {name}'s A/B have shapes "
                             f"{list(tensors[f'{name}.lora_A'].shape)} / "
                             f"{list(tensors[f'{name}.lora_B'].shape)}, expected {list(a_shape)} "
                             f"/ {list(b_shape)} (rank {r}); the files disagree, re-save them")
    names = []
    for name, s in spec.items():
        add(model, name, rank=int(s["rank"]), alpha=float(s["alpha"]),
            dropout=float(s["dropout"]))
        a = table[name].owner._modules[f"lora_{table[name].leaf}"]
        with torch.no_grad():
            a.A.copy_(tensors[f"{name}.lora_A"])
            a.B.copy_(tensors[f"{name}.lora_B"])
        names.append(name)
    return names
