"""The three methods' candidates: the LoRA adapters' own directions (`lora_directions`,
`lora_readout`, `lora_candidate`), a diff-SAE's latent (`diff_sae_candidate`) and a
crosscoder's latent (`crosscoder_candidate`), each picked without trigger labels."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from superpose import _validate as v
from superpose import hooks, lora
from superpose.diffing.attribution import _pick, kl_attribution, kl_gradient, kl_sign
from superpose.diffing.planted import TriggerBatch, _check_pair, _check_tokens, diff_activations
from superpose.diffing.scoring import Candidate, orient, typical_activation

# ---- LoRA directions -----------------------------------------------------------------------

@dataclass
class LoRADirections:
    """The SVD of one adapter's ΔW = U diag(S) Vᵀ ([d_out, d_in], F.linear layout), top
    `rank` components: U [d_out, rank] (where it writes), V [d_in, rank] (what it reads),
    and `coords` [adapter rank, rank] with Aᵀ coords = V, so x·V = (x Aᵀ) coords: the readout
    from the adapter's hook_act."""

    weight: str
    S: Tensor
    U: Tensor
    V: Tensor
    coords: Tensor


@torch.no_grad()
def lora_directions(model: nn.Module, weights: Sequence[str] | None = None
                    ) -> dict[str, LoRADirections]:
    """`LoRADirections` of each adapted weight of `model` (all of them, or `weights`)."""
    ads = lora.adapters(model)
    if not ads:
        raise ValueError("the model has no LoRA adapters; add them with lora.add(model, ...)")
    names = list(ads) if weights is None else list(weights)
    for w in names:
        if w not in ads:
            raise ValueError(f"{w!r} has no adapter; adapted weights: {list(ads)}"
                             + (f"; close matches: {v.close_matches(w, list(ads))}"
                                if v.close_matches(w, list(ads)) else ""))
    out = {}
    for w in names:
        ad = ads[w]
        dw = lora.delta_matrix(model, w).detach().double().cpu()
        u, s, vh = torch.linalg.svd(dw, full_matrices=False)
        r = min(ad.rank, s.numel())
        u, s, vt = u[:, :r], s[:r], vh[:r].T
        a = ad.A.detach().double().cpu()                       # [rank, d_in]
        coords = torch.linalg.lstsq(a.T, vt).solution          # Aᵀ coords = V
        out[w] = LoRADirections(weight=w, S=s.float(), U=u.float(), V=vt.float(),
                                coords=coords.float())
    return out


_WRITERS = {"attn.W_O": "hook_attn_out", "mlp.W_out": "hook_mlp_out"}


def writer_hook(weight: str) -> str | None:
    """The residual-stream hook a weight writes into (`blocks.{i}.attn.W_O` ->
    `blocks.{i}.hook_attn_out`, `blocks.{i}.mlp.W_out` -> `blocks.{i}.hook_mlp_out`), or None
    for a weight whose output is not the residual stream (W_Q, W_K, W_V, W_in)."""
    m = re.fullmatch(r"(blocks\.\d+)\.(attn\.W_O|mlp\.W_out)", weight)
    return f"{m.group(1)}.{_WRITERS[m.group(2)]}" if m else None


@torch.no_grad()
def lora_readout(model: nn.Module, weight: str, tokens: Int[Tensor, "batch pos"], *,
                 component: int = 0, directions: LoRADirections | None = None,
                 batch_size: int = 64) -> Float[Tensor, "batch pos"]:
    """The rank-1 readout x·v of the adapted weight's input x on the `component`-th right
    singular vector of its ΔW, at every position of `tokens` (read from the adapter's hook
    point, x Aᵀ, summed over heads for per-head inputs)."""
    _check_tokens(tokens)
    d = directions if directions is not None else lora_directions(model, [weight])[weight]
    if not 0 <= component < d.S.numel():
        raise ValueError(f"component must be in [0, {d.S.numel() - 1}] for {weight!r}, got "
                         f"{component!r}")
    name = lora.hook_name(weight)
    hooks.check_hook_name(model, name)
    dev = next(model.parameters()).device
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        act = hooks.capture(model, [name], tokens[start:start + batch_size].to(dev))[name]
        if act.ndim == 4:                          # per-head inputs: [batch pos head rank]
            act = act.sum(2)
        out.append(act.float().cpu() @ d.coords[:, component])
    return torch.cat(out)


# ---- the three methods' candidates ---------------------------------------------------------
#
# The pick rule (rule="kl", the default): every candidate contribution to the fine-tune's
# residual stream is ranked by `kl_attribution` on unlabeled `tokens` (pass the fine-tuning
# text: the researcher has it, not the trigger labels; default: the evaluation batch's tokens,
# without its labels); the top `verify` are then ablated for real (`kl_ablation`) and the one
# whose removal lowers the KL most is the pick (verify=0: the attribution's argmax). The sign
# of a candidate whose sign is free comes from `kl_sign`. rule="legacy" keeps each method's
# own measure (LoRA: largest σ₁; diff-SAE: largest total activation; crosscoder: relative
# decoder norm); with rule="kl" the legacy pick is still reported in `info["legacy"]`.

RULES = ("kl", "legacy")


def _oriented(method: str, name: str, hook_name: str, direction: Tensor, act: Tensor,
              info: dict[str, Any], sign: int | None = None,
              pick_act: Tensor | None = None) -> Candidate:
    """Orient (`sign`, else `orient`) and scale the direction by the typical activation, on
    `pick_act` (the activation on the data the pick was made on) when given, else on `act`;
    1 when that is 0 (a candidate that never fires there keeps its unit-activation write)."""
    sign = orient(act) if sign is None else sign
    act = act * sign
    mag = typical_activation(act if pick_act is None else pick_act * sign)
    info = {**info, "sign": sign, "typical_activation": mag}
    if not mag > 0:
        info["never_fires"] = True
        mag = 1.0
    return Candidate(method=method, name=name, hook_name=hook_name,
                     direction=direction * sign * mag, activation=act, info=info)


def _readouts(model: nn.Module, weight: str, tokens: Tensor, d: LoRADirections,
              batch_size: int = 64) -> Tensor:
    """Every component's readout x·V [batch pos rank] (as `lora_readout`, all at once)."""
    name = lora.hook_name(weight)
    dev = next(model.parameters()).device
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        act = hooks.capture(model, [name], tokens[start:start + batch_size].to(dev))[name]
        if act.ndim == 4:
            act = act.sum(2)
        out.append(act.float().cpu() @ d.coords)
    return torch.cat(out)


def lora_candidate(finetuned: nn.Module, batch: TriggerBatch, *,
                   base: nn.Module | None = None, tokens: Tensor | None = None,
                   rule: Literal["kl", "legacy"] = "kl", verify: int = 3) -> Candidate:
    """The LoRA method's pick among the rank-1 components of the adapters that write into the
    residual stream (W_O, W_out): component i of ΔW = U S Vᵀ writes σ_i u_i (v_iᵀ x) at the
    writer hook. rule "kl" (needs the `base`; see the section comment): every component of
    every writer ranked by `kl_attribution` on `tokens`; rule "legacy" (and the fallback when
    no `base` is given): the writer with the largest σ₁, its first component. Direction
    σ_i u_i, activation its readout x·v_i on `batch` (oriented, scaled to its typical
    activation). `info` holds every adapter's spectrum and the other rule's pick."""
    v.choice("rule", rule, RULES)
    dirs = lora_directions(finetuned)
    writers = {w: d for w, d in dirs.items() if writer_hook(w) is not None}
    if not writers:
        raise ValueError(f"no adapter writes into the residual stream (adapted: {list(dirs)}); "
                         "adapt an attn.W_O or mlp.W_out weight to steer with its direction")
    legacy = max(writers, key=lambda w: float(writers[w].S[0]))
    info: dict[str, Any] = {"spectra": {w: x.S.tolist() for w, x in dirs.items()},
                            "legacy": {"weight": legacy, "component": 0}}
    if rule == "legacy" or base is None:
        d = writers[legacy]
        act = lora_readout(finetuned, legacy, batch.tokens, directions=d)
        info.update(weight=legacy, component=0,
                    rule="legacy" if rule == "legacy" else "legacy (no base given)")
        return _oriented("lora", f"{legacy} σ1", writer_hook(legacy), d.S[0] * d.U[:, 0],
                         act, info)
    _check_pair(base, finetuned)
    toks = batch.tokens if tokens is None else tokens
    _check_tokens(toks)
    grads = kl_gradient(base, finetuned, [writer_hook(w) for w in writers], toks)
    entries: list[tuple[str, int, Tensor, Tensor]] = []    # (weight, i, direction, readout)
    attrs = []
    for w, d in writers.items():
        h = writer_hook(w)
        reads = _readouts(finetuned, w, toks, d)                  # [batch pos rank]
        comp = (d.U * d.S).T                                      # [rank, d_model]
        attrs.append(kl_attribution(base, finetuned, h, toks, comp, reads, grad=grads[h]))
        entries += [(w, i, comp[i], reads[..., i]) for i in range(d.S.numel())]
    attr = torch.cat(attrs)
    k, pinfo = _pick(base, finetuned, toks, attr,
                     lambda i: (writer_hook(entries[i][0]), entries[i][2], entries[i][3]),
                     verify)
    w, i, direction, read = entries[k]
    h = writer_hook(w)
    names = [f"{e[0]} σ{e[1] + 1}" for e in entries]
    info.update(weight=w, component=i, rule="kl", kl_attribution=float(attr[k]),
                kl_ranking=[names[j] for j in attr.argsort(descending=True).tolist()],
                **{key: ([names[j] for j in val] if key == "kl_top" else
                         {names[j]: x for j, x in val.items()} if key == "kl_verified" else val)
                   for key, val in pinfo.items()})
    info["legacy"]["kl_rank"] = info["kl_ranking"].index(f"{legacy} σ1")
    sign = kl_sign(read, direction, grads[h])
    act = lora_readout(finetuned, w, batch.tokens, component=i, directions=writers[w])
    return _oriented("lora", f"{w} σ{i + 1}", h, direction, act, info, sign=sign,
                     pick_act=read)


@torch.no_grad()
def _encode_rows(s: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    was = s.training
    s.eval()
    try:
        return torch.cat([s.encode(c.to(s.W_dec.device, s.W_dec.dtype)).cpu()
                          for c in x.split(batch_size)])
    finally:
        s.train(was)


def _rows_for(tokens: Tensor, rows: Tensor | None, what: str) -> None:
    if rows is not None and rows.shape[0] != tokens.numel():
        raise ValueError(f"{what} has {rows.shape[0]} rows but tokens {list(tokens.shape)} has "
                         f"{tokens.numel()} positions; pass the activations of these tokens")


def diff_sae_candidate(s: nn.Module, base: nn.Module, finetuned: nn.Module, hook_name: str,
                       batch: TriggerBatch, *, train_diffs: Tensor | None = None,
                       tokens: Tensor | None = None, rule: Literal["kl", "legacy"] = "kl",
                       verify: int = 3) -> Candidate:
    """The diff-SAE's pick. rule "kl" (see the section comment): latent j contributes
    f_j · W_dec[j] to the ft − base difference; the latents are ranked by `kl_attribution` of
    removing that from the fine-tune on `tokens` (with `train_diffs` their ft − base
    activations, else computed). rule "legacy": the latent with the largest total activation
    on `train_diffs` (default: the batch's). Direction its decoder row, activation its value
    on `batch`'s diffs."""
    v.choice("rule", rule, RULES)
    diffs = diff_activations(base, finetuned, hook_name, batch.tokens)
    f = _encode_rows(s, diffs)
    f_pick = f if train_diffs is None else _encode_rows(s, train_diffs)
    mass = f_pick.sum(0)
    top = mass.topk(min(5, mass.numel()))
    legacy = int(mass.argmax())
    info: dict[str, Any] = {"legacy": {"latent": legacy, "top_latents": top.indices.tolist(),
                                       "top_mass": [round(float(m), 3) for m in top.values]}}
    dec = s.W_dec.detach().float().cpu()
    if rule == "legacy":
        info.update(latent=legacy, rule="legacy")
        return _oriented("diff-sae", f"latent {legacy}", hook_name, dec[legacy],
                         f[:, legacy].view(batch.tokens.shape), info)
    toks = batch.tokens if tokens is None else tokens
    _check_tokens(toks)
    _rows_for(toks, train_diffs, "train_diffs")
    if tokens is None or train_diffs is None:
        f_tok = f if tokens is None else _encode_rows(
            s, diff_activations(base, finetuned, hook_name, toks))
    else:
        f_tok = f_pick
    g = kl_gradient(base, finetuned, hook_name, toks)[hook_name]
    acts = f_tok.view(*toks.shape, -1)
    attr = kl_attribution(base, finetuned, hook_name, toks, dec, acts, grad=g)
    j, pinfo = _pick(base, finetuned, toks, attr,
                     lambda i: (hook_name, dec[i], acts[..., i]), verify)
    ranking = attr.argsort(descending=True).tolist()
    info.update(latent=j, rule="kl", kl_attribution=float(attr[j]), **pinfo)
    info["legacy"]["kl_rank"] = ranking.index(legacy)
    sign = kl_sign(acts[..., j], dec[j], g)
    return _oriented("diff-sae", f"latent {j}", hook_name, dec[j],
                     f[:, j].view(batch.tokens.shape), info, sign=sign,
                     pick_act=acts[..., j])


def crosscoder_candidate(cc: nn.Module, base: nn.Module, finetuned: nn.Module,
                         hook_name: str, batch: TriggerBatch, *,
                         train_pairs: Tensor | None = None, tokens: Tensor | None = None,
                         rule: Literal["kl", "legacy"] = "kl", verify: int = 3,
                         kl_decoder: Literal["finetuned", "difference"] = "finetuned"
                         ) -> Candidate:
    """The crosscoder's pick. rule "kl" (see the section comment): every latent that fires on
    `tokens` (with `train_pairs` their paired activations, else computed) is ranked by
    `kl_attribution` of removing its contribution f_j · W_dec[j, ft] from the fine-tune
    (`kl_decoder="difference"`: f_j · (W_dec[j, ft] − W_dec[j, base]), i.e. moving the
    fine-tune toward the base along the latent). rule "legacy": the latents `classify` calls
    fine-tuned-only and Latent Scaling confirms (ν^ε, ν^r small; if none passes, all
    fine-tuned-only ones; if none, every latent that fires on `train_pairs`), ranked by the
    relative decoder norm, ties by the difference explained on `train_pairs`
    (Σ f_j · ‖W_dec[j, ft] − W_dec[j, base]‖; default data: the batch's paired activations).
    Direction (for steering) W_dec[j, ft] − W_dec[j, base], activation f_j on `batch`."""
    from superpose.sae import crosscoder as xc

    v.choice("rule", rule, RULES)
    v.choice("kl_decoder", kl_decoder, ("finetuned", "difference"))
    _check_pair(base, finetuned)
    pairs = xc.paired_activations([base, finetuned], hook_name, batch.tokens)
    data = pairs if train_pairs is None else train_pairs
    labels = xc.classify(cc)
    names = cc.crosscoder_cfg.names
    ft_only = [i for i, lab in enumerate(labels) if lab == f"{names[1]}-only"]
    exclusive: list[int] = []
    if ft_only:
        ls = xc.latent_scaling(cc, data, ft_only)
        ok = ls.exclusive() & (ls.count > 0)
        exclusive = [i for i, keep in zip(ft_only, ok.tolist()) if keep]
    dec = cc.W_dec_models.detach().float().cpu()
    diff_dec = dec[:, 1] - dec[:, 0]
    f_data = _encode_rows(cc, data)
    mass = f_data.sum(0) * diff_dec.norm(dim=-1)
    alive = [i for i in range(cc.cfg.d_sae) if float(mass[i]) > 0]
    pool = exclusive or ft_only or alive or list(range(cc.cfg.d_sae))
    rel = xc.relative_norms(cc).cpu()
    ranked = sorted(pool, key=lambda i: (-float(rel[i]), -float(mass[i])))
    info: dict[str, Any] = {
        "n_finetuned_only": len(ft_only), "n_exclusive": len(exclusive),
        "pool": "exclusive" if exclusive else ("finetuned-only" if ft_only else "all"),
        "label_counts": dict(Counter(labels)),
        "legacy": {"latent": ranked[0], "top_latents": ranked[:5],
                   "relative_norm": float(rel[ranked[0]])}}
    f_eval = _encode_rows(cc, pairs)
    if rule == "legacy":
        j = ranked[0]
        info.update(latent=j, rule="legacy", relative_norm=float(rel[j]))
        return _oriented("crosscoder", f"latent {j}", hook_name, diff_dec[j],
                         f_eval[:, j].view(batch.tokens.shape), info)
    toks = batch.tokens if tokens is None else tokens
    _check_tokens(toks)
    _rows_for(toks, train_pairs, "train_pairs")
    if tokens is None or train_pairs is None:
        f_tok = f_eval if tokens is None else _encode_rows(
            cc, xc.paired_activations([base, finetuned], hook_name, toks))
    else:
        f_tok = f_data
    fired = (f_tok > 0).any(0)
    g = kl_gradient(base, finetuned, hook_name, toks)[hook_name]
    acts = f_tok.view(*toks.shape, -1)
    writes = dec[:, 1] if kl_decoder == "finetuned" else diff_dec
    attr = kl_attribution(base, finetuned, hook_name, toks, writes, acts, grad=g)
    attr_other = kl_attribution(base, finetuned, hook_name, toks,
                                diff_dec if kl_decoder == "finetuned" else dec[:, 1], acts,
                                grad=g)
    attr = torch.where(fired, attr, torch.full_like(attr, -math.inf))
    j, pinfo = _pick(base, finetuned, toks, attr,
                     lambda i: (hook_name, writes[i], acts[..., i]), verify)
    ranking = attr.argsort(descending=True).tolist()
    other = int(torch.where(fired, attr_other, torch.full_like(attr, -math.inf)).argmax())
    info.update(latent=j, rule="kl", kl_decoder=kl_decoder, kl_attribution=float(attr[j]),
                relative_norm=float(rel[j]), kl_top_other_decoder=other, **pinfo)
    info["legacy"]["kl_rank"] = ranking.index(ranked[0])
    sign = kl_sign(acts[..., j], writes[j], g)
    return _oriented("crosscoder", f"latent {j}", hook_name, diff_dec[j],
                     f_eval[:, j].view(batch.tokens.shape), info, sign=sign,
                     pick_act=acts[..., j])
