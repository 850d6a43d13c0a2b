"""ActivationStore: activations from any hooked model (or a tensor, or a disk cache) as
shuffled `[batch_size, d_in]` batches for SAE training.

    store = ActivationStore(model, "blocks.1.hook_resid_post", token_batches, batch_size=4096)
    for acts in store:                  # acts: [batch_size, d_in]
        ...

Where the rows come from:
  - a model (anything with TransformerLens's `hook_dict`: our GPT and ToyModel, TL's
    HookedRootModules and TL 4's TransformerBridge) fed from `source`, an iterable / iterator
    of model inputs or a callable returning the next input (a `(inputs, targets)` pair, as
    `TokenDataset.batches` yields, counts as `inputs`). Only the requested hooks are captured
    (a forward hook on each HookPoint, nothing else cached), under `torch.no_grad` in eval
    mode; by default the forward pass is cut short once every requested hook has fired.
    Activations `[batch, pos, ...]` become rows `[batch * pos, prod(...)]` (heads flattened,
    as SAELens does for hook_z) after dropping the first `skip_positions` positions. A
    ToyModel's activations are `[batch, inst, d]`, one independent model per instance, so
    pooling them would mix models: `instance=i` picks one (required when n_instances > 1).
  - a tensor of saved activations `[N, d_in]` (`model=None, hook_name=None`, or `from_tensor`).
  - a folder of safetensors shards written by a store with `cache_dir=` (`from_cache`).

Several hook names give rows `[n_hooks, d_in]` (the crosscoder layout); the hooks must then
share one width.

Shuffling is SAELens's buffer: fill `buffer_size` rows, permute them with a seeded generator,
yield half, refill, permute again. The same seed and the same source give the same batches.

`normalize="mean_norm"` multiplies every activation by one factor, estimated on the first
buffer, so that the mean L2 norm is sqrt(d_in) (SAELens's convention: the same SAE
hyper-parameters then work at every layer and model). `scaling_factor` reports it; an SAE
trained on scaled inputs x·s computes the same function of raw inputs x after folding:
W_enc *= s, W_dec /= s, b_dec /= s (SAELens `fold_activation_norm_scaling_factor`).
"""

from __future__ import annotations

import collections
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from superpose import _deprecation as deprecation
from superpose import _validate as v
from superpose import hooks, runs

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CACHE_FORMAT = "superpose.activations/1"
_KEY = "activations"                    # the tensor's name inside each shard
NORMALIZE = ("mean_norm",)


class ActivationStore:
    """Shuffled activation batches; see the module docstring.

    Arguments (all but the first three keyword-only):
      model, hook_name: a hooked model and one hook name or a list of them; `None, None` when
        `source` is a tensor of activations or a cache folder.
      source: model inputs (iterable, iterator or callable), or a Tensor [N, d_in] / folder.
      batch_size: rows per yielded batch (the last batch of a finite source may be smaller).
      buffer_size: rows in the shuffling buffer (default 16 * batch_size); half of it is
        yielded between refills, so larger means better mixing and more memory.
      seed: seeds the shuffling; nothing else here is random.
      device: where batches live (None: CUDA when available, else CPU). Model inputs are moved
        to the model's own device.
      dtype: dtype of the buffer, the batches and the cache shards (default float32).
      skip_positions / skip_bos: drop the first positions of every sequence; `skip_bos=True`
        is `skip_positions=1` (for tokenizers that prepend BOS; our char tokenizer does not).
      instance: for a ToyModel, which instance's activations to capture.
      normalize: None, "mean_norm", or a float (a scaling factor found before).
      stop_early: cut the forward pass short after the last requested hook (default True).
      cache_dir: also write every captured (raw, unscaled) row to safetensors shards of
        `shard_size` rows there, with a manifest; read back with `from_cache`. Call `close()`
        (or use `with store:`) to write the last partial shard of an endless source.
      epochs: passes over a tensor or cache source (None: forever; each pass reshuffled).
    """

    def __init__(self, model: nn.Module | None, hook_name: str | list[str] | None,
                 source: Any, *, batch_size: int = 4096, buffer_size: int | None = None,
                 seed: int = 0, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, skip_positions: int = 0,
                 skip_bos: bool = False, instance: int | None = None,
                 normalize: str | float | None = None, stop_early: bool = True,
                 cache_dir: str | Path | None = None, shard_size: int = 65_536,
                 epochs: int | None = 1) -> None:
        v.positive_int("batch_size", batch_size)
        if buffer_size is None:
            buffer_size = 16 * batch_size
        v.positive_int("buffer_size", buffer_size)
        if buffer_size < batch_size:
            raise ValueError(f"buffer_size must be at least batch_size={batch_size}, got "
                             f"{buffer_size}; the buffer yields whole batches")
        v.non_negative_int("seed", seed)
        v.non_negative_int("skip_positions", skip_positions)
        if not isinstance(skip_bos, bool):
            raise ValueError(f"skip_bos must be True or False, got {skip_bos!r}")
        if skip_bos and skip_positions not in (0, 1):
            raise ValueError(f"skip_bos=True means skip_positions=1, but skip_positions="
                             f"{skip_positions} was also given; pass only one of them")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if isinstance(normalize, str):
            v.choice("normalize", normalize, NORMALIZE)
        elif normalize is not None:
            v.positive_float("normalize", normalize)
            if float(normalize) > torch.finfo(dtype).max:
                raise ValueError(f"normalize={normalize!r} overflows {dtype} (largest "
                                 f"{torch.finfo(dtype).max:.3g}); a scaling factor must fit the "
                                 "activations' dtype")
        v.positive_int("shard_size", shard_size)
        if epochs is not None:
            v.positive_int("epochs", epochs)
        self.batch_size, self.buffer_size, self.seed = batch_size, buffer_size, seed
        self.device = v.resolve_device(device)
        self.dtype = dtype
        self.skip_positions = max(skip_positions, int(skip_bos))
        self.normalize = normalize
        self.stop_early = stop_early
        self.epochs = epochs
        self.n_tokens_seen = 0             # rows yielded so far
        self.n_batches_captured = 0        # model (or source) batches consumed so far
        self._gen = torch.Generator().manual_seed(seed)
        self._scale: Tensor | None = None  # [n_hooks, 1] or [1]: multiplies raw rows
        if normalize is not None and not isinstance(normalize, str):
            self._scale = torch.tensor([float(normalize)], device=self.device, dtype=dtype)
        self._kept: Tensor | None = None   # the half of the buffer carried into the next fill
        self._ready: collections.deque[Tensor] = collections.deque()
        self._peeked: Tensor | None = None
        self._exhausted = False
        self._row_shape: tuple[int, ...] | None = None
        self._writer: _ShardWriter | None = None
        self._toy = False
        self.model = model

        if model is None:
            if hook_name is not None:
                raise ValueError("hook_name needs a model; with model=None, source must be a "
                                 "tensor of activations or a cache folder and hook_name None")
            self.hook_names: list[str] = []
            self.instance = None
            if isinstance(source, Tensor):
                self._init_tensor(source)
            elif isinstance(source, (str, Path)):
                self._init_cache(Path(source))
            else:
                raise ValueError("with model=None, source must be a Tensor [N, d_in] of "
                                 "activations or the path of a cache folder, got "
                                 f"{type(source).__name__}")
        else:
            self._init_model(model, hook_name, source, instance)
        if cache_dir is not None:
            if model is None:
                raise ValueError("cache_dir writes activations captured from a model; a tensor "
                                 "or cache source is already on hand")
            self._writer = _ShardWriter(Path(cache_dir), shard_size, self)

    # ---- construction helpers ----------------------------------------------------------------

    def _init_model(self, model: nn.Module, hook_name: Any, source: Any,
                    instance: int | None) -> None:
        hook_dict = getattr(model, "hook_dict", None)
        if not isinstance(model, nn.Module) or not isinstance(hook_dict, dict):
            raise TypeError(f"model must be a hooked model with a hook_dict (a TransformerLens "
                            f"HookedRootModule or TransformerBridge), got {type(model).__name__}")
        names = [hook_name] if isinstance(hook_name, str) else hook_name
        if not isinstance(names, (list, tuple)) or not names \
                or not all(isinstance(n, str) for n in names):
            raise ValueError(f"hook_name must be a hook name or a non-empty list of them, got "
                             f"{hook_name!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"hook_name lists a hook twice: {list(names)}")
        for name in names:
            if name not in hook_dict:
                near = v.close_matches(name, list(hook_dict))
                raise ValueError(
                    f"{type(model).__name__} has no hook point named {name!r}"
                    + (f"; close matches: {near}" if near else "")
                    + f" (model.hook_dict lists all {len(hook_dict)})")
        self.hook_names = list(names)
        from superpose.toy.model import ToyModel
        self._toy = isinstance(model, ToyModel)
        if self._toy:
            n_inst = model.cfg.n_instances
            if instance is None and n_inst > 1:
                raise ValueError(f"this ToyModel has n_instances={n_inst} independent models; "
                                 f"pass instance=i (0 <= i < {n_inst}) to pick whose "
                                 "activations to capture")
            instance = 0 if instance is None else instance
            if isinstance(instance, bool) or not isinstance(instance, int) \
                    or not 0 <= instance < n_inst:
                raise ValueError(f"instance must be an integer in [0, {n_inst}), got "
                                 f"{instance!r}")
            if self.skip_positions:
                raise ValueError("skip_positions / skip_bos apply to sequence models; a "
                                 "ToyModel's activations have no position axis")
        elif instance is not None:
            raise ValueError(f"instance= selects a ToyModel instance; {type(model).__name__} "
                             "has none (leave it None)")
        self.instance = instance
        if isinstance(source, Tensor):
            raise ValueError("with a model, source must yield batches of model inputs (an "
                             "iterable, iterator or callable); to feed one fixed tensor of "
                             "inputs pass e.g. tokens.split(32)")
        if isinstance(source, Iterable):
            inputs: Iterator[Any] = iter(source)
        elif callable(source):
            inputs = _call_forever(source)
        else:
            raise ValueError(f"source must be an iterable, an iterator or a callable of model "
                             f"inputs, got {type(source).__name__}")
        self._chunks: Iterator[Tensor] = self._model_chunks(inputs)

    def _init_tensor(self, acts: Tensor) -> None:
        if acts.ndim not in (2, 3) or acts.shape[0] == 0 or not acts.dtype.is_floating_point:
            raise ValueError(f"a tensor source must be float activations [N, d_in] (or [N, "
                             f"n_hooks, d_in]) with N >= 1, got {acts.dtype} "
                             f"{list(acts.shape)}")
        bad = ~torch.isfinite(acts).flatten(1).all(dim=1)
        if bad.any():
            raise ValueError(f"source tensor holds NaN/inf activations (first in row "
                             f"{int(bad.nonzero()[0])}); they would poison training")
        self._row_shape = tuple(acts.shape[1:])
        chunk = self.batch_size

        def chunks() -> Iterator[Tensor]:
            for _ in self._epoch_range():
                yield from acts.split(chunk)
        self._chunks = chunks()

    def _init_cache(self, folder: Path) -> None:
        self._manifest = _read_manifest(folder)
        m = self._manifest
        self.hook_names = list(m["hook_names"])
        self._row_shape = tuple(m["row_shape"])
        if m["scaling_factors"] is not None and self.normalize is None:
            self._scale = torch.tensor(m["scaling_factors"], device=self.device,
                                       dtype=self.dtype).reshape(-1, 1)
            if len(self._row_shape) == 1:
                self._scale = self._scale.reshape(1)
        shards = [folder / s["file"] for s in m["shards"]]
        counts = [s["count"] for s in m["shards"]]

        def chunks() -> Iterator[Tensor]:
            for _ in self._epoch_range():
                for i in torch.randperm(len(shards), generator=self._gen).tolist():
                    rows = _load_shard(shards[i], counts[i], self._row_shape)
                    rows = rows[torch.randperm(len(rows), generator=self._gen)]
                    yield rows.to(self.device, self.dtype)
        self._chunks = chunks()

    @classmethod
    def from_tensor(cls, acts: Float[Tensor, " n *d_in"], **kwargs: Any) -> ActivationStore:
        """Batches of a tensor of activations [N, d_in], shuffled through the buffer."""
        return cls(None, None, acts, **kwargs)

    @classmethod
    def from_cache(cls, path: str | Path, *args: int, batch_size: int = 4096, seed: int = 0,
                   **kwargs: Any) -> ActivationStore:
        """Read a cache written with `cache_dir=`: shards in a seeded order, each permuted,
        through the shuffling buffer. The manifest's scaling factor is applied (the batches
        match what the writing store yielded) unless `normalize=` says otherwise. Every option
        is keyword-only (the constructor's, such as `device=`, pass through); `batch_size` and
        `seed` positionally are deprecated."""
        if len(args) > 2:
            raise TypeError(f"ActivationStore.from_cache() takes path and then keywords, got "
                            f"{len(args)} more positional arguments; pass batch_size=..., "
                            "seed=...")
        if args:
            if batch_size != 4096 or (len(args) > 1 and seed != 0):
                raise TypeError("ActivationStore.from_cache() got batch_size/seed both "
                                "positionally and by keyword; pass them only as "
                                "batch_size=..., seed=...")
            deprecation.warn("passing batch_size and seed positionally to "
                             "ActivationStore.from_cache() is deprecated; pass "
                             "batch_size=..., seed=...")
            batch_size = args[0]
            if len(args) > 1:
                seed = args[1]
        return cls(None, None, Path(path), batch_size=batch_size, seed=seed, **kwargs)

    def _epoch_range(self) -> Iterator[int]:
        e = 0
        while self.epochs is None or e < self.epochs:
            yield e
            e += 1

    # ---- capture -----------------------------------------------------------------------------

    def _model_chunks(self, inputs: Iterator[Any]) -> Iterator[Tensor]:
        model = self.model
        assert model is not None
        param = next(model.parameters(), None)
        model_device = param.device if param is not None else torch.device("cpu")
        for i, x in enumerate(inputs):
            if isinstance(x, (tuple, list)):
                x = x[0]                                   # (inputs, targets)
            if isinstance(x, Tensor):
                x = x.to(model_device)
            acts = self._capture(x, i)
            rows = [self._rows(acts[n], n) for n in self.hook_names]
            if len(rows) > 1:
                widths = {n: r.shape[1] for n, r in zip(self.hook_names, rows)}
                if len(set(widths.values())) > 1:
                    raise ValueError(f"hooks captured together must share one width, got "
                                     f"{widths}; use one store per hook")
            out = (rows[0] if len(rows) == 1 else torch.stack(rows, dim=1))
            out = out.to(self.device, self.dtype)
            if self._row_shape is None:
                self._row_shape = tuple(out.shape[1:])
            bad = ~torch.isfinite(out).flatten(1).all(dim=1)
            if bad.any():
                raise ValueError(
                    f"NaN/inf activations at {self.hook_names} in source batch {i} (0-based; "
                    f"first bad row {int(bad.nonzero()[0])} of {len(out)}); refusing to yield "
                    "them. Check the inputs of that batch and the model's weights")
            yield out

    def _capture(self, x: Any, batch_index: int) -> dict[str, Tensor]:
        """One forward pass in eval mode without gradients, capturing only `self.hook_names`
        (`superpose.hooks.capture`: cut short after the last one when `stop_early`)."""
        model = self.model
        assert model is not None
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                captured = hooks.capture(model, self.hook_names, x, stop_early=self.stop_early,
                                         clone=True, context=f" of source batch {batch_index}")
        finally:
            model.train(was_training)
        self.n_batches_captured += 1
        return captured

    def _rows(self, act: Tensor, name: str) -> Tensor:
        """[batch, pos, ...] -> [batch * (pos - skip), prod(...)]; a ToyModel's
        [batch, inst, d] -> [batch, d] of the chosen instance."""
        if self._toy:
            return act[:, self.instance]
        if act.ndim < 2:
            raise ValueError(f"hook {name!r} gave activations of shape {list(act.shape)}; "
                             "expected [batch, d] or [batch, pos, ...]")
        if act.ndim == 2:
            if self.skip_positions:
                raise ValueError(f"hook {name!r} has no position axis (shape "
                                 f"{list(act.shape)}), so skip_positions cannot apply")
            return act
        if self.skip_positions >= act.shape[1]:
            raise ValueError(f"skip_positions={self.skip_positions} leaves nothing of sequences "
                             f"of length {act.shape[1]}")
        act = act[:, self.skip_positions:]
        return act.reshape(act.shape[0] * act.shape[1], -1)

    def _next_rows(self) -> Tensor | None:
        """The next chunk of rows, written to the cache (raw) and then scaled; None at the end."""
        if self._peeked is not None:
            rows, self._peeked = self._peeked, None
        else:
            rows = next(self._chunks, None)
            if rows is None:
                return None
            if self.model is None:
                self.n_batches_captured += 1
        if self._writer is not None:
            self._writer.add(rows)
        return rows * self._scale if self._scale is not None else rows

    # ---- the shuffling buffer ----------------------------------------------------------------

    def _fill(self) -> None:
        parts = [self._kept] if self._kept is not None and len(self._kept) else []
        n = sum(len(p) for p in parts)
        while n < self.buffer_size and not self._exhausted:
            rows = self._next_rows()
            if rows is None:
                self._exhausted = True
                if self._writer is not None:
                    self._writer.flush()
                break
            parts.append(rows)
            n += len(rows)
        if n == 0:
            return
        buf = torch.cat(parts) if len(parts) > 1 else parts[0]
        if self.normalize == "mean_norm" and self._scale is None:
            self._scale = self._estimate_scale(buf)   # nothing scaled yet: buf is all raw
            buf = buf * self._scale
            if self._writer is not None:
                self._writer.write_manifest()
        buf = buf[torch.randperm(n, generator=self._gen).to(buf.device)]
        if self._exhausted:
            out, self._kept = buf, None
        else:
            n_out = max(self.batch_size, n // 2 // self.batch_size * self.batch_size)
            out, self._kept = buf[:n_out], buf[n_out:]
        self._ready.extend(out.split(self.batch_size))

    def _estimate_scale(self, buf: Tensor) -> Tensor:
        d = buf.shape[-1]
        norms = buf.float().norm(dim=-1)                  # [n] or [n, n_hooks]
        mean = norms.mean(dim=0)
        if (mean <= 0).any():
            raise ValueError("normalize='mean_norm': the activations are all zero, so no scale "
                             "gives them norm sqrt(d_in)")
        scale = (math.sqrt(d) / mean).to(self.dtype)
        return scale.reshape(1) if buf.ndim == 2 else scale.reshape(-1, 1)

    # ---- public surface ----------------------------------------------------------------------

    def __iter__(self) -> ActivationStore:
        return self

    def __next__(self) -> Float[Tensor, " batch *d_in"]:
        if not self._ready:
            self._fill()
        if not self._ready:
            raise StopIteration
        batch = self._ready.popleft()
        self.n_tokens_seen += len(batch)
        return batch

    def next_batch(self) -> Float[Tensor, " batch *d_in"]:
        """The next batch; raises StopIteration when a finite source is used up."""
        return next(self)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row: (d_in,), or (n_hooks, d_in) for several hooks."""
        if self._row_shape is None:          # a model source: run the first batch to see
            self._peeked = next(self._chunks, None)
            if self._peeked is None:
                raise ValueError("the source yielded no batches, so the width is unknown")
            self._row_shape = tuple(self._peeked.shape[1:])
        return self._row_shape

    @property
    def d_in(self) -> int:
        """Width of each activation vector (runs one model batch the first time if needed)."""
        return self.row_shape[-1]

    @property
    def scaling_factors(self) -> list[float] | None:
        """One factor per hook that multiplies the raw activations (None: not normalised, or
        not estimated yet, which happens on the first batch)."""
        return None if self._scale is None else [float(s) for s in self._scale.flatten()]

    @property
    def scaling_factor(self) -> float | None:
        """The factor for a single-hook store: yielded = raw * scaling_factor."""
        f = self.scaling_factors
        if f is not None and len(f) > 1:
            raise ValueError(f"this store has one factor per hook ({f}); use scaling_factors")
        return None if f is None else f[0]

    def close(self) -> None:
        """Write the last partial cache shard (no-op without `cache_dir`)."""
        if self._writer is not None:
            self._writer.flush()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call_forever(fn: Callable[[], Any]) -> Iterator[Any]:
    while True:
        x = fn()
        if isinstance(x, Iterator):
            raise ValueError("source() returned an iterator, not a batch; pass the iterator "
                             "itself (source=fn()) instead of the function")
        yield x


# ---- the disk cache ------------------------------------------------------------------------------


class _ShardWriter:
    """Appends raw rows; writes `shard_size`-row safetensors shards atomically, then rewrites
    the manifest (so it only ever lists complete shards)."""

    def __init__(self, folder: Path, shard_size: int, store: ActivationStore) -> None:
        if (folder / MANIFEST_FILE).exists():
            raise FileExistsError(f"{folder} already holds an activation cache; read it with "
                                  "ActivationStore.from_cache or choose a new cache_dir")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.shard_size, self.store = folder, shard_size, store
        self.pending: list[Tensor] = []
        self.n_pending = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, rows: Tensor) -> None:
        self.pending.append(rows.detach().to("cpu"))
        self.n_pending += len(rows)
        if self.n_pending >= self.shard_size:
            allrows = torch.cat(self.pending)
            n_full = len(allrows) // self.shard_size * self.shard_size
            for piece in allrows[:n_full].split(self.shard_size):
                self._write(piece)
            rest = allrows[n_full:]
            self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)

    def flush(self) -> None:
        if self.n_pending:
            self._write(torch.cat(self.pending))
            self.pending, self.n_pending = [], 0

    def _write(self, rows: Tensor) -> None:
        from safetensors.torch import save_file

        name = f"shard_{len(self.shards):05d}.safetensors"
        tensors = {_KEY: rows.contiguous()}
        runs.atomic_write(self.folder / name, lambda p: save_file(tensors, str(p)))
        self.shards.append({"file": name, "count": len(rows)})
        self.write_manifest()

    def write_manifest(self) -> None:
        s = self.store
        if not self.shards:
            return
        row_shape = s._row_shape
        runs.write_json(self.folder / MANIFEST_FILE, {
            "format": CACHE_FORMAT,
            "hook_names": s.hook_names,
            "d_in": row_shape[-1] if row_shape else None,
            "row_shape": list(row_shape) if row_shape else None,
            "dtype": str(s.dtype).removeprefix("torch."),
            "count": sum(sh["count"] for sh in self.shards),
            "skip_positions": s.skip_positions,
            "instance": s.instance,
            "scaling_factors": s.scaling_factors,     # raw rows are stored; this scales them
            "shards": self.shards,
        })

    def __repr__(self) -> str:
        return f"_ShardWriter({self.folder}, {len(self.shards)} shards)"


def _read_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; expected an activation cache "
                                f"holding {MANIFEST_FILE} and safetensors shards")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {MANIFEST_FILE}, so it is not an activation "
                                "cache (write one with ActivationStore(..., cache_dir=...))")
    m = runs.read_json(path)
    keys = ("format", "hook_names", "row_shape", "dtype", "count", "scaling_factors", "shards")
    missing = [k for k in keys if not isinstance(m, dict) or k not in m]
    if missing or m["format"] != CACHE_FORMAT or not m["shards"] or not m["row_shape"]:
        raise ValueError(f"{path} is not a valid activation-cache manifest (format "
                         f"{CACHE_FORMAT!r}; missing keys {missing}, or no shards listed)")
    total = 0
    for sh in m["shards"]:
        f = folder / sh["file"]
        if not f.is_file():
            raise FileNotFoundError(f"activation cache {folder}: shard {sh['file']} listed in "
                                    f"{MANIFEST_FILE} is missing")
        total += sh["count"]
    if total != m["count"]:
        raise ValueError(f"{path}: shard counts sum to {total} but count says {m['count']}")
    return m


def _load_shard(path: Path, count: int, row_shape: tuple[int, ...]) -> Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        rows = load_file(str(path))[_KEY]
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"activation-cache shard {path} is corrupt and cannot be read ({e}); "
                         "re-create the cache") from None
    if tuple(rows.shape) != (count, *row_shape):
        raise ValueError(f"activation-cache shard {path} holds shape {list(rows.shape)}, but "
                         f"the manifest says [{count}, {', '.join(map(str, row_shape))}]")
    bad = ~torch.isfinite(rows).flatten(1).all(dim=1)
    if bad.any():
        raise ValueError(f"activation-cache shard {path} holds NaN/inf (first in row "
                         f"{int(bad.nonzero()[0])})")
    return rows
