"""Sparse training kernels: gradients that touch only the latents a step selected.

A TopK or BatchTopK step keeps k of d_sae pre-activations per input, so every gradient that
reaches the encoder is zero except at those entries. Autograd through `x @ W_enc` would still
spend two dense [batch, d_sae] matrix products on the backward pass (∂W_enc = xᵀ·g and
∂x = g·W_encᵀ). `pre_at` instead takes the pre-activations (computed once without autograd)
at a list of (row, latent) entries and back-propagates with gathers over those entries only:

    ∂W_enc[:, j] = Σ_{(b, j) selected} g_bj · x_b      (one embedding_bag, bags = latents)
    ∂b_enc[j]    = Σ_{(b, j) selected} g_bj
    ∂x_b         = Σ_{(b, j) selected} g_bj · W_enc[:, j]  (one embedding_bag, bags = rows)

which costs O(entries · d_in) instead of O(batch · d_sae · d_in). The results equal autograd's
to float rounding (tested).

The penalised architectures (ReLU, JumpReLU) keep a varying number of entries per row, often
10% of the batch or more; for them `KeptEntries` holds the entries as the index arrays of a
CSR matrix and `csr_pre` / `csr_decode` run every product as one sparse-dense matrix product
(MKL's sparse BLAS on CPU, cuSPARSE on CUDA): the decoder Σ acts·W_dec (CSR @ dense), its
gradient for the kept acts (a sampled dense-dense product, SDDMM), and the two weight
gradients (the transposed pattern @ dense). Sparse BLAS rather than gathers, because a
gather-and-dot SDDMM runs far below the library kernel's rate (figures in benchmarks/README.md).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# torch warns on the first CSR tensor of a process; the CSR tensors here never leave this module
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta",
                        category=UserWarning)


def bag_offsets(sorted_ids: Tensor, n_bags: int) -> Tensor:
    """Start offsets of bags 0..n_bags-1 in a sorted id list (empty bags allowed)."""
    return torch.searchsorted(sorted_ids, torch.arange(n_bags, device=sorted_ids.device))


class _PreAt(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, sae_in: Tensor, W_enc: Tensor, b_enc: Tensor, rows: Tensor,
                cols: Tensor, values: Tensor) -> Tensor:
        ctx.save_for_backward(sae_in, W_enc, rows, cols)
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        sae_in, W_enc, rows, cols = ctx.saved_tensors
        d_in, d_sae = W_enc.shape
        g = grad.to(W_enc.dtype)
        grad_in = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            order = cols.argsort()
            grad_w = F.embedding_bag(rows[order], sae_in, bag_offsets(cols[order], d_sae),
                                     mode="sum", per_sample_weights=g.index_select(0, order)
                                     ).T.contiguous()
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(d_sae, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        if ctx.needs_input_grad[0]:          # rows are sorted (the callers' contract)
            grad_in = F.embedding_bag(cols, W_enc.T.contiguous(),
                                      bag_offsets(rows, sae_in.shape[0]), mode="sum",
                                      per_sample_weights=g)
        return grad_in, grad_w, grad_b, None, None, None


def pre_at(sae_in: Tensor, W_enc: Tensor, b_enc: Tensor, rows: Tensor, cols: Tensor,
           values: Tensor) -> Tensor:
    """`values` (= (sae_in @ W_enc + b_enc)[rows, cols], computed by the caller without
    autograd) with the gradients of that expression, computed sparsely. sae_in: [n, d_in];
    rows, cols, values: [m] with `rows` sorted ascending."""
    return _PreAt.apply(sae_in, W_enc, b_enc, rows, cols, values)


class _DecoderGrad(torch.autograd.Function):
    """Zeros in the forward pass; in the backward pass the decoder's gradient of
    Σ values·W_dec[cols] per row, as one forward embedding_bag with latents as bags (much
    cheaper than embedding_bag's own dense backward, which `decode_rows` therefore skips)."""

    @staticmethod
    def forward(ctx: Any, W_dec: Tensor, values: Tensor, rows: Tensor, cols: Tensor,
                n_rows: int) -> Tensor:
        ctx.save_for_backward(values, rows, cols)
        ctx.d_sae = W_dec.shape[0]
        return W_dec.new_zeros(n_rows, W_dec.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        values, rows, cols = ctx.saved_tensors
        order = cols.argsort()
        grad_w = F.embedding_bag(rows[order], grad, bag_offsets(cols[order], ctx.d_sae),
                                 mode="sum", per_sample_weights=values[order])
        return grad_w, None, None, None, None


def decode_rows(values: Tensor, rows: Tensor, cols: Tensor, W_dec: Tensor, n_rows: int
                ) -> Tensor:
    """Σ_j values·W_dec[j] per row for entries (rows sorted ascending): [n_rows, d_in].
    The values' gradient comes from embedding_bag itself, the decoder's from `_DecoderGrad`."""
    values = values.to(W_dec.dtype)
    out = F.embedding_bag(cols, W_dec.detach(), bag_offsets(rows, n_rows), mode="sum",
                          per_sample_weights=values)
    if W_dec.requires_grad and torch.is_grad_enabled():
        out = out + _DecoderGrad.apply(W_dec, values.detach(), rows, cols, n_rows)
    return out


def batch_topk(acts: Tensor, total: int, *, sample: int = 65_536, margin: float = 0.01
               ) -> tuple[Tensor, Tensor]:
    """The `total` largest entries of `acts` (any shape), as (values, flat indices).

    Exact, but cheaper than one top-k over all entries: a quantile of `sample` random entries
    gives a threshold τ a little (`margin`) below the expected cut, and the top-k runs only on
    the entries ≥ τ. Those include every entry of the true answer whenever at least `total`
    of them pass, which is checked; else the full top-k runs. The sample positions come from a
    fixed seed, so the result is deterministic (and exact either way).
    """
    flat = acts.reshape(-1)
    numel = flat.numel()
    total = min(total, numel)
    if numel > 4 * sample and total < numel // 2:
        gen = torch.Generator(device=flat.device).manual_seed(0)
        pos = torch.randint(0, numel, (sample,), generator=gen, device=flat.device)
        q = max(0.0, 1.0 - total / numel - margin)
        tau = torch.quantile(flat[pos].float(), q).to(flat.dtype)
        idx = (flat >= tau).nonzero().squeeze(1)
        if total <= idx.numel() < numel // 2:
            top = flat[idx].topk(total, sorted=False)
            return top.values, idx[top.indices]
    top = flat.topk(total, sorted=False)
    return top.values, top.indices


class _EncoderLinear(torch.autograd.Function):
    """sae_in @ W_enc + b_enc for an input that needs no gradient of its own, where sae_in =
    x_s − b_dec (b_dec None: sae_in = x_s). The backward pass is autograd's, but b_dec's
    gradient is −W_enc·Σ_b g_b (no dense [batch, d_sae]·W_encᵀ product). The penalised
    architectures' fast path computes the pre-activations once this way: the sparse route
    reads them detached, the dense fallback back-propagates through them."""

    @staticmethod
    def forward(ctx: Any, sae_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None
                ) -> Tensor:
        ctx.save_for_backward(sae_in, W_enc)
        return torch.addmm(b_enc, sae_in, W_enc)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        sae_in, W_enc = ctx.saved_tensors
        g_sum = grad.sum(0)
        grad_w = sae_in.T @ grad if ctx.needs_input_grad[1] else None
        grad_b_dec = -(W_enc @ g_sum) if ctx.needs_input_grad[3] else None
        return None, grad_w, g_sum, grad_b_dec


def encoder_pre(sae_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None) -> Tensor:
    """[n, d_sae] pre-activations of the [n, d_in] `sae_in` (detached; = x_s − b_dec when b_dec
    is given, which then gets its gradient through the result)."""
    return _EncoderLinear.apply(sae_in, W_enc, b_enc, b_dec)


# ------------------------------------------------------------------------------ CSR kernels

class KeptEntries:
    """The kept (row, latent) entries of an [n, d_sae] batch in row-major order (as `nonzero`
    yields them), as the index arrays of CSR matrices: `csr(values)` is the [n, d_sae] matrix
    with those entries, `csr_t(values)` its transpose [d_sae, n] (the column-major order is
    sorted once, on first use). `rows`, `cols`: [m] int64 (what `TrainStepOutput.sparse`
    carries)."""

    def __init__(self, flat: Tensor, n: int, d_sae: int) -> None:
        self.n, self.d_sae = n, d_sae
        self.rows = flat.div(d_sae, rounding_mode="floor")
        self.cols = flat - self.rows * d_sae
        # int32 indices where they fit: MKL's sparse BLAS takes them without a conversion
        self._idx = torch.int32 if n * d_sae < 2**31 else torch.int64
        starts = torch.arange(n + 1, device=flat.device, dtype=flat.dtype) * d_sae
        self._crow = torch.searchsorted(flat, starts).to(self._idx)
        self._col = self.cols.to(self._idx)
        self._t: tuple[Tensor, Tensor, Tensor] | None = None

    @property
    def nnz(self) -> int:
        return self.cols.numel()

    def csr(self, values: Tensor) -> Tensor:
        return torch.sparse_csr_tensor(self._crow, self._col, values, (self.n, self.d_sae),
                                       check_invariants=False)

    def _transposed(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._t is None:
            # a stable sort keeps the rows ascending within each latent; int16 keys sort
            # about twice as fast as int32 ones on CPU
            key = self.cols.to(torch.int16 if self.d_sae <= 32767 else torch.int32)
            order = key.argsort(stable=True)
            ccol = torch.zeros(self.d_sae + 1, dtype=torch.int64, device=self.cols.device)
            ccol[1:] = torch.bincount(self.cols, minlength=self.d_sae).cumsum(0)
            self._t = (order, ccol.to(self._idx), self.rows.index_select(0, order).to(self._idx))
        return self._t

    def csr_t(self, values: Tensor) -> Tensor:
        order, ccol, rows = self._transposed()
        return torch.sparse_csr_tensor(ccol, rows, values.index_select(0, order),
                                       (self.d_sae, self.n), check_invariants=False)


def kept_entries(pre: Tensor, mask: Tensor, max_density: float
                 ) -> tuple[KeptEntries, Tensor] | None:
    """(entries, pre at them) for the True entries of an [n, d_sae] mask, or None when more
    than `max_density` of the entries are True (then the dense path is cheaper; counted before
    any index list is built; a cutoff of 0 always means dense)."""
    if max_density <= 0 or int(torch.count_nonzero(mask)) > max_density * mask.numel():
        return None
    flat = mask.reshape(-1).nonzero().squeeze(1)
    kept = KeptEntries(flat, mask.shape[0], mask.shape[1])
    return kept, pre.reshape(-1).index_select(0, flat)


class _CSRPre(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, sae_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None,
                kept: KeptEntries, values: Tensor) -> Tensor:
        ctx.save_for_backward(sae_in, W_enc)
        ctx.kept = kept
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        sae_in, W_enc = ctx.saved_tensors
        kept: KeptEntries = ctx.kept
        g = grad.to(W_enc.dtype).contiguous()
        grad_w = grad_b = grad_b_dec = None
        if ctx.needs_input_grad[1]:
            grad_w = (kept.csr_t(g) @ sae_in).T.contiguous()
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            g_sum = torch.zeros(kept.d_sae, dtype=g.dtype, device=g.device
                                ).index_add_(0, kept.cols, g)
            grad_b = g_sum if ctx.needs_input_grad[2] else None
            if ctx.needs_input_grad[3]:
                grad_b_dec = -(W_enc @ g_sum)
        return None, grad_w, grad_b, grad_b_dec, None, None


def csr_pre(sae_in: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None,
            kept: KeptEntries, values: Tensor) -> Tensor:
    """`values` (= ((x_s − b_dec) @ W_enc + b_enc) at the kept entries, computed by the caller
    without autograd; `sae_in` = x_s − b_dec, detached) with the gradients of that expression
    for W_enc (one sparse product), b_enc (a scatter-add) and b_dec (−W_enc·Σ g: no
    per-row product, as the input itself needs no gradient). b_dec None: sae_in = x_s."""
    return _CSRPre.apply(sae_in.detach(), W_enc, b_enc, b_dec, kept, values)


class _CSRDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, values: Tensor, W_dec: Tensor, kept: KeptEntries) -> Tensor:
        ctx.save_for_backward(values, W_dec)
        ctx.kept = kept
        return kept.csr(values) @ W_dec

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        values, W_dec = ctx.saved_tensors
        kept: KeptEntries = ctx.kept
        g = grad.contiguous()
        grad_values = grad_w = None
        if ctx.needs_input_grad[0]:          # g · W_dec[col] at every kept entry (SDDMM)
            grad_values = torch.sparse.sampled_addmm(kept.csr(values), g, W_dec.T,
                                                     beta=0.0).values()
        if ctx.needs_input_grad[1]:
            grad_w = kept.csr_t(values) @ g
        return grad_values, grad_w, None


def csr_decode(values: Tensor, W_dec: Tensor, kept: KeptEntries) -> Tensor:
    """Σ_j values·W_dec[j] per row over the kept entries: [n, d_in], by sparse products."""
    return _CSRDecode.apply(values.to(W_dec.dtype), W_dec, kept)
