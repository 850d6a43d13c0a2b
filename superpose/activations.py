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

Padded batches (the encoder and the encoder–decoder of `superpose.transformer`). A source
batch is a tensor (`model(x)`), an `(inputs, targets)` pair, or a dict of the model's inputs
(`model_call`): `"tokens"` / `"input"` go in positionally, `"labels"` is dropped (no
activation needs it), every other key is a keyword argument, e.g.

    {"tokens": t, "attention_mask": m}                                   # Encoder (and GPT)
    {"src": s, "tgt": t, "src_attention_mask": sm, "tgt_attention_mask": tm}   # Seq2Seq

Rows are then taken at real positions only, by the mask of the hook's side (`position_mask`):
with `mask_key=None` (the default) a one-sided batch (no `src`/`tgt` keys) uses
`"attention_mask"` for every hook, and a two-sided batch uses `"tgt_attention_mask"` for
the decoder's hooks (`decoder.*`, `decoder_final_ln.*`, `hook_tgt_*`, `unembed.*`) and
`"src_attention_mask"` for all others (`encoder.*`, `hook_embed`, ...). A mask missing from
the batch means no padding on that side. `mask_key="key"` names the mask for every hook,
`mask_key={hook: "key" or None}` per hook (a hook left out keeps the default; None: every
position). Rows come in batch-major, position order (`act[mask]`), and `skip_positions`
then drops the first real positions of each sequence (with left padding too). The disk
cache and `resume` work with dict batches unchanged: the cache holds the masked rows, and
`mask_key` is one of the settings a resume must repeat.

Shuffling is SAELens's buffer: fill `buffer_size` rows, permute them with a seeded generator,
yield half, refill, permute again. The same seed and the same source give the same batches.

The disk cache (`cache_dir=`) is written so that nothing partial or damaged ever loads as if
it were whole: shards of `shard_size` raw rows are written atomically (temporary file, fsync,
rename) and `manifest.json` is rewritten after each one, listing every shard's row count, size
and SHA-256 and, last of all, `"complete": true` once the source is used up (or the store is
closed). `from_cache` checks the manifest (its own checksum included), every shard's size up
front and every shard's hash when it is read; any mismatch is one ValueError naming the file.
A cache whose writer was killed is refused unless `allow_partial=True`; `resume=True` with the
same `cache_dir`, model, source and settings continues it after the last complete shard (the
cached rows are read back, not recomputed), and ends with the files an uninterrupted run
writes, bit for bit.

`normalize="mean_norm"` multiplies every activation by one factor, estimated on the first
buffer, so that the mean L2 norm is sqrt(d_in) (SAELens's convention: the same SAE
hyper-parameters then work at every layer and model). `scaling_factor` reports it; an SAE
trained on scaled inputs x·s computes the same function of raw inputs x after folding:
W_enc *= s, W_dec /= s, b_dec /= s (SAELens `fold_activation_norm_scaling_factor`).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from superpose import _deprecation as deprecation
from superpose import _memory as memory
from superpose import _validate as v
from superpose import hooks, runs

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CACHE_FORMAT = "superpose.activations/2"
OLD_FORMATS = ("superpose.activations/1",)
_KEY = "activations"                    # the tensor's name inside each shard
_SHARD = re.compile(r"^shard_\d{5,}\.safetensors$")
NORMALIZE = ("mean_norm",)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
# The NaN/inf check looks at 8 MiB at a time: its temporaries are ~3x that, so checking a tensor
# peaks at ~1.1x its size, not 2.8x (benchmarks/activation_memory.py).
_CHECK_BYTES = 1 << 23

# ---- padded batches: the dict-of-inputs convention (shared with sae.splice and gpt.heads) ------

POSITIONAL_KEYS = ("tokens", "input")       # passed positionally: forward(input, ...)
TARGET_PREFIXES = ("decoder.", "decoder_final_ln.", "hook_tgt_", "unembed.")
_TWO_SIDED = ("src", "tgt", "src_attention_mask", "tgt_attention_mask")


def model_call(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """`(args, kwargs)` so that `model(*args, **kwargs)` runs one source batch: a dict puts
    `"tokens"` (or `"input"`) first, drops `"labels"` and passes the rest by keyword; anything
    else is the one positional input."""
    if not isinstance(batch, Mapping):
        return (batch,), {}
    if not all(isinstance(k, str) for k in batch):
        raise ValueError(f"a dict batch maps the model's argument names to inputs; got keys "
                         f"{list(batch)}")
    first = [k for k in POSITIONAL_KEYS if k in batch]
    if len(first) > 1:
        raise ValueError("a dict batch gives the model's first input once, as 'tokens' or "
                         "'input', got both")
    args = (batch[first[0]],) if first else ()
    kwargs = {k: x for k, x in batch.items() if k not in POSITIONAL_KEYS and k != "labels"}
    return args, kwargs


def default_mask_key(hook_name: str, batch: Mapping[str, Any]) -> str:
    """Which mask of a dict batch belongs to `hook_name` (see the module docstring): a
    two-sided batch (src/tgt keys) gives the decoder's hooks "tgt_attention_mask" and the
    others "src_attention_mask"; a one-sided batch gives every hook "attention_mask"."""
    if any(k in batch for k in _TWO_SIDED):
        return "tgt_attention_mask" if hook_name.startswith(TARGET_PREFIXES) \
            else "src_attention_mask"
    return "attention_mask"


def check_mask_key(mask_key: Any) -> None:
    """`mask_key` is None, a key, or a dict {hook name: key or None}."""
    if mask_key is None or isinstance(mask_key, str):
        return
    if isinstance(mask_key, Mapping) and all(
            isinstance(k, str) and (x is None or isinstance(x, str)) for k, x in mask_key.items()):
        return
    raise ValueError(f"mask_key must be None (the mask of the hook's side), the key of a mask "
                     f"in the batch dict, or a dict {{hook_name: key or None}}, got {mask_key!r}")


def position_mask(hook_name: str, batch: Any, mask_key: str | Mapping[str, str | None] | None
                  = None) -> Tensor | None:
    """The bool mask [batch, pos] (True at real tokens) of the positions of `hook_name` that
    hold real tokens, for one source batch; None when every position is real (a tensor batch,
    or no mask for that side in the dict). See the module docstring for `mask_key`."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    key: str | None
    if isinstance(mask_key, Mapping) and hook_name in mask_key:
        key = mask_key[hook_name]
        explicit = True
    elif isinstance(mask_key, str):
        key, explicit = mask_key, True
    else:
        key, explicit = None, False
    if not isinstance(batch, Mapping):
        if explicit and key is not None:
            raise ValueError(f"mask_key={mask_key!r} names a mask in a dict batch, but the "
                             f"source batch is a {type(batch).__name__}; pass batches as dicts "
                             "of the model's inputs, mask included")
        return None
    if not explicit:
        key = default_mask_key(hook_name, batch)
    if key is None:
        return None
    if key not in batch:
        if explicit:
            raise ValueError(f"mask_key {key!r} (for {hook_name!r}) is not a key of the batch "
                             f"dict, which has {sorted(batch)}")
        return None
    mask = batch[key]
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.ndim != 2 or mask.dtype.is_floating_point \
            or mask.is_complex():
        raise ValueError(f"batch[{key!r}] must be a bool or 0/1 tensor [batch, pos], got "
                         + (f"{mask.dtype} {list(mask.shape)}" if isinstance(mask, Tensor)
                            else type(mask).__name__))
    return mask.bool()


def real_rows(act: Tensor, mask: Tensor | None, skip: int = 0, *, what: str = "activation"
              ) -> Tensor:
    """[batch, pos, ...] -> [n, ...]: the positions where `mask` [batch, pos] is True, after
    the first `skip` real positions of each sequence; batch-major, position order."""
    if mask is None:
        act = act[:, skip:]
        return act.reshape(act.shape[0] * act.shape[1], *act.shape[2:])
    if tuple(mask.shape) != tuple(act.shape[:2]):
        raise ValueError(f"the {what} has shape {list(act.shape)}, but its mask is "
                         f"{list(mask.shape)}: the mask must be [batch, pos] of this hook's "
                         "positions (a two-sided model: src_attention_mask for encoder hooks, "
                         "tgt_attention_mask for decoder.* hooks; pass mask_key= to choose)")
    mask = mask.to(act.device)
    if skip:
        mask = mask & (mask.long().cumsum(1) > skip)
    return act[mask]


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
        `shard_size` rows there, with a manifest; read back with `from_cache`. The cache is
        marked complete when the source is used up, or by `close()` (which also writes the last
        partial shard: needed for an endless source; `with store:` closes only when its block
        ends without an exception, so an interrupted cache stays resumable).
      resume: with `cache_dir` holding a cache that was interrupted, continue it: its rows are
        read back (verified) and yielded as before, the source's batches that produced them
        are skipped (not run), and capturing goes on after the last complete shard. The model,
        source and settings must be the same. On a complete cache it replays the cache and
        writes nothing; on an empty folder it starts afresh.
      allow_partial: reading a cache (`from_cache`) whose writer did not finish is an error;
        True reads the rows that are there, with a warning.
      epochs: passes over a tensor or cache source (None: forever; each pass reshuffled).
      mask_key: which mask of a dict batch marks each hook's real positions (None: the
        hook's side, by its name; a key; or {hook_name: key or None}); only real positions
        become rows. See the module docstring.
    """

    def __init__(self, model: nn.Module | None, hook_name: str | list[str] | None,
                 source: Any, *, batch_size: int = 4096, buffer_size: int | None = None,
                 seed: int = 0, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, skip_positions: int = 0,
                 skip_bos: bool = False, instance: int | None = None,
                 normalize: str | float | None = None, stop_early: bool = True,
                 cache_dir: str | Path | None = None, shard_size: int = 65_536,
                 epochs: int | None = 1, resume: bool = False,
                 allow_partial: bool = False,
                 mask_key: str | Mapping[str, str | None] | None = None) -> None:
        v.positive_int("batch_size", batch_size)
        check_mask_key(mask_key)
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
        for name, flag in (("resume", resume), ("allow_partial", allow_partial)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if resume and cache_dir is None:
            raise ValueError("resume=True continues an activation cache; pass cache_dir=..., "
                             "the folder it is written to")
        if allow_partial and (model is not None or not isinstance(source, (str, Path))):
            raise ValueError("allow_partial=True applies to reading a cache folder "
                             "(ActivationStore.from_cache); leave it False here")
        self.batch_size, self.buffer_size, self.seed = batch_size, buffer_size, seed
        self.device = v.resolve_device(device)
        self.dtype = dtype
        self.skip_positions = max(skip_positions, int(skip_bos))
        self.normalize = normalize
        self.stop_early = stop_early
        self.mask_key = dict(mask_key) if isinstance(mask_key, Mapping) else mask_key
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
        self._buffer_checked = False
        self._source_len: int | None = None
        self._toy = False
        self.model = model

        if model is None:
            if hook_name is not None:
                raise ValueError("hook_name needs a model; with model=None, source must be a "
                                 "tensor of activations or a cache folder and hook_name None")
            if mask_key is not None:
                raise ValueError("mask_key picks the real positions of model inputs; a tensor "
                                 "or cache source holds rows already")
            self.hook_names: list[str] = []
            self.instance = None
            if isinstance(source, Tensor):
                self._init_tensor(source)
            elif isinstance(source, (str, Path)):
                self._init_cache(Path(source), allow_partial)
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
            self._writer = _ShardWriter(Path(cache_dir), shard_size, self, resume)
            if self._writer.resumed is not None:
                self._chunks = self._resumed_chunks(self._writer.resumed, self._writer.folder)
                if self._writer.complete:          # nothing left to write: replay the cache
                    self._writer = None

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
        if isinstance(source, Sized) and not isinstance(source, (str, bytes)):
            try:
                self._source_len = len(source)
            except TypeError:
                self._source_len = None
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
        self._inputs = inputs
        self._chunks: Iterator[Tensor] = self._model_chunks(enumerate(inputs))

    def _init_tensor(self, acts: Tensor) -> None:
        if acts.ndim not in (2, 3) or acts.shape[0] == 0 or not acts.dtype.is_floating_point:
            raise ValueError(f"a tensor source must be float activations [N, d_in] (or [N, "
                             f"n_hooks, d_in]) with N >= 1, got {acts.dtype} "
                             f"{list(acts.shape)}")
        bad = first_nonfinite_row(acts)
        if bad is not None:
            raise ValueError(f"source tensor holds NaN/inf activations (first in row {bad}); "
                             "they would poison training")
        self._row_shape = tuple(acts.shape[1:])
        chunk = self.batch_size

        def chunks() -> Iterator[Tensor]:
            for _ in self._epoch_range():
                yield from acts.split(chunk)
        self._chunks = chunks()

    def _init_cache(self, folder: Path, allow_partial: bool) -> None:
        self._manifest = m = _read_manifest(folder, allow_partial=allow_partial)
        self.hook_names = list(m["hook_names"])
        self._row_shape = tuple(m["row_shape"])
        cached_dtype = DTYPES[m["dtype"]]
        if m["scaling_factors"] is not None and self.normalize is None:
            self._scale = torch.tensor(m["scaling_factors"], device=self.device,
                                       dtype=self.dtype).reshape(-1, 1)
            if len(self._row_shape) == 1:
                self._scale = self._scale.reshape(1)
        elif self.normalize is None and m.get("normalize") == "mean_norm":
            # a partial cache whose writer stopped before it estimated its factor: never serve
            # unscaled rows where scaled ones were asked for, estimate it here instead
            self.normalize = "mean_norm"
        shards = [(folder / s["file"], s) for s in m["shards"]]

        def chunks() -> Iterator[Tensor]:
            for _ in self._epoch_range():
                for i in torch.randperm(len(shards), generator=self._gen).tolist():
                    rows = _load_shard(*shards[i], self._row_shape, cached_dtype)
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

    def _model_chunks(self, inputs: Iterable[tuple[int, Any]]) -> Iterator[Tensor]:
        for i, x in inputs:
            yield self._capture_rows(x, i)

    def _capture_rows(self, x: Any, i: int) -> Tensor:
        """Source batch `i` -> its rows [n, *row_shape], checked finite."""
        model = self.model
        assert model is not None
        param = next(model.parameters(), None)
        model_device = param.device if param is not None else torch.device("cpu")
        if isinstance(x, (tuple, list)):
            x = x[0]                                   # (inputs, targets)
        if isinstance(x, Tensor):
            x = x.to(model_device)
        elif isinstance(x, Mapping):
            x = {k: (t.to(model_device) if isinstance(t, Tensor) else t) for k, t in x.items()}
        masks = [position_mask(n, x, self.mask_key) for n in self.hook_names]
        if any(not (m is None and masks[0] is None) and not (
                m is not None and masks[0] is not None and m.shape == masks[0].shape
                and torch.equal(m, masks[0])) for m in masks[1:]):
            raise ValueError(f"hooks captured together must have their real positions in "
                             f"common, but {self.hook_names} read different masks (source and "
                             "target sides?); use one store per side")
        acts = self._capture(x, i)
        rows = [self._rows(acts[n], n, m) for n, m in zip(self.hook_names, masks)]
        if len(rows) > 1 and len({r.shape[0] for r in rows}) > 1:
            raise ValueError(f"hooks captured together must have their real positions in "
                             f"common, but their masks differ ({self.hook_names}: "
                             f"{[r.shape[0] for r in rows]} rows); use one store per side")
        if len(rows) > 1:
            widths = {n: r.shape[1] for n, r in zip(self.hook_names, rows)}
            if len(set(widths.values())) > 1:
                raise ValueError(f"hooks captured together must share one width, got "
                                 f"{widths}; use one store per hook")
        out = (rows[0] if len(rows) == 1 else torch.stack(rows, dim=1))
        out = out.to(self.device, self.dtype)
        if self._row_shape is None:
            self._row_shape = tuple(out.shape[1:])
        bad = first_nonfinite_row(out)
        if bad is not None:
            raise ValueError(
                f"NaN/inf activations at {self.hook_names} in source batch {i} (0-based; "
                f"first bad row {bad} of {len(out)}); refusing to yield "
                "them. Check the inputs of that batch and the model's weights")
        return out

    def _resumed_chunks(self, m: dict[str, Any], folder: Path) -> Iterator[Tensor]:
        """Continue an interrupted cache: replay the cached rows batch by batch (as the source
        yielded them), skip the source batches that produced them, check that the source and
        model still give the cached rows where the two overlap, then capture as usual."""
        n_done, carry = m["batches"], m["carry"]
        dtype, row_shape = DTYPES[m["dtype"]], tuple(m["row_shape"])
        shards = iter(m["shards"])
        tail: list[Tensor] = []                        # rows read but not yet yielded
        n_tail = 0

        def take(n: int) -> Tensor:
            nonlocal tail, n_tail
            while n_tail < n:
                entry = next(shards)
                tail.append(_load_shard(folder / entry["file"], entry, row_shape, dtype))
                n_tail += len(tail[-1])
            rows = torch.cat(tail) if len(tail) > 1 else tail[0]
            tail, n_tail = ([rows[n:]] if n_tail > n else []), n_tail - n
            return rows[:n]

        last = None
        for size, times in m["batch_rows"]:
            for _ in range(times):
                last = take(size)
                yield last.to(self.device, self.dtype)
        if carry:
            last = take(carry)                         # the head of batch n_done: re-captured
        check = n_done if carry else n_done - 1        # the batch compared with the cache
        inputs = self._inputs
        for i in range(check):
            if next(inputs, _END) is _END:
                raise ValueError(self._resume_mismatch(
                    folder, f"the source ended after {i} batches, but the cache holds {n_done}"))
        x = next(inputs, _END)
        if x is _END:
            raise ValueError(self._resume_mismatch(
                folder, f"the source ended after {check} batches, but the cache holds rows of "
                        f"batch {check}"))
        rows = self._capture_rows(x, check)
        assert last is not None
        got = rows[:len(last)]
        if got.shape != last.shape or not torch.allclose(got.float(), last.float(),
                                                         rtol=1e-4, atol=1e-5):
            diff = (f"max difference {(got.float() - last.float()).abs().max().item():.3g}"
                    if got.shape == last.shape else
                    f"shape {list(got.shape)} against {list(last.shape)}")
            raise ValueError(self._resume_mismatch(
                folder, f"source batch {check} gives other activations than the cache holds "
                        f"({diff})"))
        if carry:
            yield rows
        yield from self._model_chunks(enumerate(inputs, start=check + 1))

    def _resume_mismatch(self, folder: Path, what: str) -> str:
        return (f"resume=True: {what}; the model, the source or the settings differ from the "
                f"run that wrote the activation cache {folder}. Resume with the same ones, or "
                "write a new cache to another cache_dir")

    def _capture(self, x: Any, batch_index: int) -> dict[str, Tensor]:
        """One forward pass in eval mode without gradients, capturing only `self.hook_names`
        (`superpose.hooks.capture`: cut short after the last one when `stop_early`)."""
        model = self.model
        assert model is not None
        was_training = model.training
        model.eval()
        try:
            args, kwargs = model_call(x)
            with torch.no_grad():
                captured = hooks.capture(model, self.hook_names, *args,
                                         stop_early=self.stop_early, clone=True,
                                         context=f" of source batch {batch_index}", **kwargs)
        finally:
            model.train(was_training)
        self.n_batches_captured += 1
        return captured

    def _rows(self, act: Tensor, name: str, mask: Tensor | None = None) -> Tensor:
        """[batch, pos, ...] -> [batch * (pos - skip), prod(...)], or [n_real - skipped,
        prod(...)] with a padding mask [batch, pos]; a ToyModel's [batch, inst, d] ->
        [batch, d] of the chosen instance."""
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
        rows = real_rows(act, mask, self.skip_positions, what=f"activation at {name!r}")
        return rows.reshape(rows.shape[0], -1)

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
                    self._writer.finish()
                break
            parts.append(rows)
            n += len(rows)
        if n == 0:
            return
        if not self._buffer_checked:
            self._buffer_checked = True
            row = math.prod(parts[0].shape[1:]) * parts[0].element_size()
            # the kept half, the rows joined to it, and their permuted copy
            memory.check_allocation(f"the shuffling buffer (buffer_size={self.buffer_size} rows "
                                    f"of {list(parts[0].shape[1:])})",
                                    3 * max(self.buffer_size, n) * row, parts[0].device)
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
        """Write the last partial cache shard and mark the cache complete (no-op without
        `cache_dir`): the rows captured so far are the cache. Not needed when the source was
        used up (that completes the cache on its own)."""
        if self._writer is not None:
            self._writer.finish()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:        # interrupted: leave the cache resumable, not "complete"
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
    the manifest (so it only ever lists complete shards, with their sizes and hashes); marks
    it complete in `finish`. With `resume`, picks up an interrupted cache in `folder`."""

    def __init__(self, folder: Path, shard_size: int, store: ActivationStore,
                 resume: bool) -> None:
        self.folder, self.shard_size, self.store = folder, shard_size, store
        self.pending: list[Tensor] = []
        self.n_pending = 0
        self.shards: list[dict[str, Any]] = []
        self.batch_rows: list[list[int]] = []      # rows per source batch, run-length coded
        self.skip = 0                              # rows still to come that are on disk
        self.complete = False
        self.resumed: dict[str, Any] | None = None
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"cache_dir {folder} is a file; pass a folder (it is created if "
                             "missing)")
        if (folder / MANIFEST_FILE).exists():
            if not resume:
                raise FileExistsError(
                    f"{folder} already holds an activation cache; read it with "
                    "ActivationStore.from_cache, continue an interrupted one with "
                    "resume=True, or choose a new cache_dir")
            m = _read_manifest(folder, allow_partial=True, warn=False)
            if m["format"] != CACHE_FORMAT:
                raise ValueError(f"{folder / MANIFEST_FILE} was written by an older version "
                                 f"({m['format']}), which cannot be resumed; write a new cache")
            mine = self.settings()
            theirs = {k: m.get(k) for k in mine}
            differ = {k: (theirs[k], mine[k]) for k in mine if theirs[k] != mine[k]
                      and not (k == "expected_batches" and None in (theirs[k], mine[k]))}
            if differ:
                pairs = differ.items()
                raise ValueError(
                    f"resume=True: the activation cache {folder} was written with other "
                    f"settings ({', '.join(f'{k}={a!r}, now {b!r}' for k, (a, b) in pairs)}); "
                    "resume with the same ones or write a new cache to another cache_dir")
            self.shards, self.skip, self.complete = list(m["shards"]), m["count"], m["complete"]
            self.resumed = m
            store._row_shape = tuple(m["row_shape"])
        runs.remove_leftovers(folder)               # what a killed writer left half-written
        folder.mkdir(parents=True, exist_ok=True)

    def settings(self) -> dict[str, Any]:
        """What a resumed store must share with the one that started the cache."""
        s = self.store
        norm = s.normalize if s.normalize is None or isinstance(s.normalize, str) \
            else float(s.normalize)
        return {"hook_names": list(s.hook_names), "dtype": str(s.dtype).removeprefix("torch."),
                "skip_positions": s.skip_positions, "instance": s.instance,
                "normalize": norm, "shard_size": self.shard_size,
                "expected_batches": s._source_len, "mask_key": s.mask_key}

    def add(self, rows: Tensor) -> None:
        n = len(rows)
        if self.batch_rows and self.batch_rows[-1][0] == n:
            self.batch_rows[-1][1] += 1
        else:
            self.batch_rows.append([n, 1])
        if self.skip:                               # replayed from disk while resuming
            k = min(self.skip, n)
            rows, self.skip = rows[k:], self.skip - k
            if not len(rows):
                return
        self.pending.append(rows.detach().to("cpu"))
        self.n_pending += len(rows)
        if self.n_pending >= self.shard_size:
            allrows = torch.cat(self.pending)
            n_full = len(allrows) // self.shard_size * self.shard_size
            for piece in allrows[:n_full].split(self.shard_size):
                self._write(piece)
            rest = allrows[n_full:]
            self.pending, self.n_pending = ([rest] if len(rest) else []), len(rest)

    def finish(self) -> None:
        """Write the last partial shard and mark the cache complete (not while a resumed
        store is still replaying what is on disk: then the cache stays as it was)."""
        if self.complete or self.skip:
            return
        if self.n_pending:
            self._write(torch.cat(self.pending), manifest=False)
            self.pending, self.n_pending = [], 0
        self.complete = True
        self.write_manifest()

    def _write(self, rows: Tensor, *, manifest: bool = True) -> None:
        from safetensors.torch import save

        name = f"shard_{len(self.shards):05d}.safetensors"
        data = save({_KEY: rows.contiguous()})

        def write(path: Path) -> None:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        runs.atomic_write(self.folder / name, write)
        self.shards.append({"file": name, "count": len(rows), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
        if manifest:
            self.write_manifest()

    def _covered(self) -> tuple[list[list[int]], int]:
        """The source batches whose rows are all on disk (run-length coded), and how many rows
        of the next batch are on disk too."""
        left = sum(sh["count"] for sh in self.shards)
        done: list[list[int]] = []
        for size, times in self.batch_rows:
            full = min(times, left // size) if size else times
            if full:
                done.append([size, full])
            left -= full * size
            if full < times:
                break
        return done, left

    def write_manifest(self) -> None:
        s = self.store
        if not self.shards:
            return
        row_shape = s._row_shape
        done, carry = self._covered()
        body = {
            "format": CACHE_FORMAT,
            **self.settings(),
            "d_in": row_shape[-1] if row_shape else None,
            "row_shape": list(row_shape) if row_shape else None,
            "count": sum(sh["count"] for sh in self.shards),
            "scaling_factors": s.scaling_factors,     # raw rows are stored; this scales them
            "batches": sum(t for _, t in done),
            "carry": carry,
            "batch_rows": done,
            "shards": self.shards,
            "complete": self.complete,                # written last
        }
        body = runs.to_jsonable(body)
        body["manifest_sha256"] = _manifest_hash(body)
        runs.write_json(self.folder / MANIFEST_FILE, body)

    def __repr__(self) -> str:
        return f"_ShardWriter({self.folder}, {len(self.shards)} shards)"


_END = object()


def first_nonfinite_row(x: Tensor, chunk_bytes: int = _CHECK_BYTES) -> int | None:
    """Index of the first row of `x` holding NaN or inf, or None. Looks at `chunk_bytes` of
    `x` at a time, so the check costs a small fraction of `x`'s memory, not a multiple of it."""
    if x.ndim == 0 or len(x) == 0:
        return None
    per_row = max(1, x[0].numel() * x.element_size())
    step = max(1, chunk_bytes // per_row)
    for start in range(0, len(x), step):
        part = x[start:start + step]
        ok = torch.isfinite(part)
        if not bool(ok.all()):
            return start + int((~ok.reshape(len(part), -1).all(dim=1)).nonzero()[0])
    return None


def _manifest_hash(body: dict[str, Any]) -> str:
    text = json.dumps({k: x for k, x in body.items() if k != "manifest_sha256"},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} is not a valid activation-cache manifest: {what}; the cache is "
                      "damaged or was edited by hand. Re-create it (or, if its writer was "
                      "interrupted, continue it with resume=True)")


def _is_count(x: Any, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _read_manifest(folder: Path, *, allow_partial: bool = False,
                   warn: bool = True) -> dict[str, Any]:
    """The manifest of the cache in `folder`, checked: its own hash, every field's type, the
    shard names (plain names inside the folder), each shard's presence and size, the row
    counts, and completeness (a partial cache is refused unless `allow_partial`)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; expected an activation cache "
                                f"holding {MANIFEST_FILE} and safetensors shards")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {MANIFEST_FILE}, so it is not an activation "
                                "cache (write one with ActivationStore(..., cache_dir=...))")
    m = runs.read_json(path)
    if not isinstance(m, dict):
        raise _bad(path, f"it holds a JSON {type(m).__name__}, not an object")
    fmt = m.get("format")
    if fmt not in (CACHE_FORMAT, *OLD_FORMATS):
        raise _bad(path, f"format {fmt!r}, expected {CACHE_FORMAT!r}")
    keys = ("hook_names", "row_shape", "dtype", "count", "scaling_factors", "shards")
    if fmt == CACHE_FORMAT:
        keys += ("complete", "batches", "carry", "batch_rows", "manifest_sha256")
    missing = [k for k in keys if k not in m]
    if missing:
        raise _bad(path, f"missing keys {missing}")
    if fmt == CACHE_FORMAT and m["manifest_sha256"] != _manifest_hash(m):
        raise _bad(path, "its checksum does not match its content (it was edited after it "
                         "was written)")
    if not (isinstance(m["hook_names"], list)
            and all(isinstance(h, str) for h in m["hook_names"])):
        raise _bad(path, f"hook_names must be a list of names, got {m['hook_names']!r}")
    rs = m["row_shape"]
    if not (isinstance(rs, list) and len(rs) in (1, 2) and all(_is_count(d, 1) for d in rs)):
        raise _bad(path, f"row_shape must be [d_in] or [n_hooks, d_in], got {rs!r}")
    if m["dtype"] not in DTYPES:
        raise _bad(path, f"dtype {m['dtype']!r} is not one of {sorted(DTYPES)}")
    sf = m["scaling_factors"]
    if sf is not None and not (isinstance(sf, list) and len(sf) in (1, rs[0])
                               and all(isinstance(f, (int, float)) and not isinstance(f, bool)
                                       and math.isfinite(f) and f > 0 for f in sf)):
        raise _bad(path, f"scaling_factors must be null or positive finite numbers, got {sf!r}")
    shards = m["shards"]
    if not isinstance(shards, list) or not shards:
        raise _bad(path, "no shards listed")
    total = 0
    for sh in shards:
        name = sh.get("file") if isinstance(sh, dict) else None
        if not isinstance(name, str) or not _SHARD.match(name):
            raise _bad(path, f"shard name {name!r} is not of the form shard_00000.safetensors "
                             "(a cache only reads files inside its own folder)")
        if not _is_count(sh.get("count"), 1):
            raise _bad(path, f"shard {name} has row count {sh.get('count')!r}")
        if not (folder / name).is_file():
            raise FileNotFoundError(f"activation cache {folder}: shard {name} listed in "
                                    f"{MANIFEST_FILE} is missing")
        total += sh["count"]
    for sh in shards:                   # sizes after presence: a missing shard is named first
        f, name = folder / sh["file"], sh["file"]
        if fmt == CACHE_FORMAT:
            if not (_is_count(sh.get("bytes")) and isinstance(sh.get("sha256"), str)):
                raise _bad(path, f"shard {name} lacks its size or SHA-256")
            size = f.stat().st_size
            if size != sh["bytes"]:
                raise ValueError(f"activation-cache shard {f} is corrupt: it holds {size} "
                                 f"bytes, {MANIFEST_FILE} says {sh['bytes']} (truncated or "
                                 "replaced after it was written); re-create the cache")
    if total != m["count"]:
        raise _bad(path, f"shard counts sum to {total} but count says {m['count']}")
    if fmt != CACHE_FORMAT:
        m = {**m, "complete": True}
        if warn:
            log.warning("activation cache %s was written by an older version (%s): its shards "
                        "carry no hashes and its completeness cannot be checked", folder, fmt)
    elif not m["complete"]:
        expected = m.get("expected_batches")
        where = (f"{m['batches']} of {expected} source batches" if expected is not None
                 else f"{m['batches']} source batches, the source's length unknown")
        what = (f"activation cache {folder} is incomplete: its writer stopped after "
                f"{m['count']} rows ({where})")
        if not allow_partial:
            raise ValueError(f"{what}. Continue it with ActivationStore(model, hook_name, "
                             f"source, cache_dir=..., resume=True) and the same settings, or "
                             "read the rows that are there with allow_partial=True")
        if warn:
            warnings.warn(f"{what}; reading those rows (allow_partial=True)"
                          + ("; its scaling factor was never estimated, so it is estimated "
                             "again from these rows" if m["scaling_factors"] is None
                             and m.get("normalize") == "mean_norm" else ""), stacklevel=4)
    return m


def _load_shard(path: Path, entry: dict[str, Any], row_shape: tuple[int, ...],
                dtype: torch.dtype) -> Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"activation-cache shard {path} cannot be read ({e})") from None
    if "bytes" in entry and len(data) != entry["bytes"]:
        raise ValueError(f"activation-cache shard {path} is corrupt: it holds {len(data)} "
                         f"bytes, {MANIFEST_FILE} says {entry['bytes']}; re-create the cache")
    if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"activation-cache shard {path} is corrupt: its SHA-256 differs from "
                         f"the one in {MANIFEST_FILE} (it changed after it was written); "
                         "re-create the cache")
    try:
        rows = load(data)[_KEY]
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"activation-cache shard {path} is corrupt and cannot be read ({e}); "
                         "re-create the cache") from None
    count = entry["count"]
    if tuple(rows.shape) != (count, *row_shape) or rows.dtype != dtype:
        raise ValueError(f"activation-cache shard {path} holds {rows.dtype} "
                         f"{list(rows.shape)}, but the manifest says {dtype} "
                         f"[{count}, {', '.join(map(str, row_shape))}]")
    bad = first_nonfinite_row(rows)
    if bad is not None:
        raise ValueError(f"activation-cache shard {path} holds NaN/inf (first in row {bad})")
    return rows
