"""Attention cache: run a frozen extractor once over a training set and keep its maps on disk.

The extractor's answer for an un-augmented image never changes, so Attentive CutMix needs it
only once per dataset; the data pipeline then carries each map through the same crop/flip as its
image. A cache is a valid ``.safetensors`` file holding one float16 tensor ``"attention"`` of
shape (N, h, w) (the channel mean of the extractor's native feature map) and, in the string
metadata, a JSON header saying which dataset and extractor produced it. Caches are opened with
``numpy.memmap``, so DataLoader workers and DDP ranks share the same pages and opening reads
only the header.
"""
from __future__ import annotations

import datetime
import itertools
import json
import operator
import os
import re
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..constants import is_int
from ..mixers.base import channel_attention
from ..serialization import CacheBuildInterrupted, atomic_write, signals_stop_the_build
from .extractors import ExtractorSource

__all__ = ["AttentionCache", "CacheError", "CacheMismatchError", "build_cache", "open_cache", "cache_meta",
           "FORMAT_VERSION", "is_attention_cache", "check_cache_target", "IN_MEMORY_MAX_BYTES",
           "CacheBuildInterrupted", "signals_stop_the_build"]

FORMAT_VERSION = 1
TENSOR = "attention"
META_KEY = "attentive_cutmix"
# Fields that decide whether a cache answers for a run; created_at and format_version do not. The source_*
# fields are the extractor's ExtractorSource, field by field (weights_sha256 is its sha256).
COMPARED = ("dataset", "length", "fingerprint", "image_size", "extractor", "source_kind", "source_name", "source_path",
            "weights_sha256", "attention", "layer", "input_size", "mean", "std", "grid")
_HASH = re.compile(r"[0-9a-f]{64}")
_MAX_HEADER = 100 * 1024 * 1024
_MISSING = "<missing>"
_DTYPE = np.dtype("<f2")  # safetensors data is little-endian whatever the machine
# Caches up to this size are read into memory when opened (CIFAR: ~6 MB, ImageNet at 7x7: ~125 MB), so a run stops
# depending on the file: truncating or overwriting it in place (cp, a full disk) cannot kill the run with SIGBUS.
# Larger caches are memory-mapped; build_cache replaces a file only by renaming a new one over it, which leaves
# the mapped (old) file intact for the runs that use it.
IN_MEMORY_MAX_BYTES = 256 * 2**20


class CacheError(ValueError):
    """A cache file that is missing, truncated, corrupt or not an attention cache."""


class CacheNotFoundError(CacheError, FileNotFoundError):
    """No file at the cache path."""


class CacheMismatchError(CacheError):
    """A valid cache made for another dataset or extractor than the run asks for."""


def _not_a_cache_hint(path: Path) -> str:
    # Never suggest --force here: the file may be someone's weights or checkpoint.
    return ("it is never replaced by `attentive-cutmix cache-attention` (--force replaces attention caches only): "
            "build the cache at another path, e.g. `attentive-cutmix cache-attention ... --out attention.safetensors`, "
            f"and if {path} is a damaged cache you made, delete it yourself first")


def _rebuild_hint(path: Path, meta: Mapping[str, Any] | None = None) -> str:
    """How to rebuild ``path``; only for a file whose header identifies it as an attention cache."""
    meta = meta or {}
    dataset, extractor = meta.get("dataset", "DATASET"), meta.get("extractor", "EXTRACTOR")
    return (f"rebuild it with `attentive-cutmix cache-attention --dataset {dataset} --extractor {extractor} "
            f"--out {path} --force` (same split flags as train), or delete it and run "
            f"`attentive-cutmix train ... --attention-cache {path} --build-cache`")


class AttentionCache:
    """Read-only (N, h, w) float16 attention maps indexed by train-split position: in memory (``data``) or
    memory-mapped from the file."""

    def __init__(self, path: Path, meta: dict[str, Any], offset: int, shape: tuple[int, int, int], *,
                 data: np.ndarray | None = None) -> None:
        self.path, self.meta, self._offset, self._shape = Path(path), meta, offset, shape
        self.in_memory = data is not None
        self._maps = data if data is not None else np.memmap(self.path, dtype=_DTYPE, mode="r", offset=offset,
                                                             shape=shape)

    @property
    def maps(self) -> np.ndarray:
        """The whole (N, h, w) float16 array (memory-mapped: slicing reads only what it touches)."""
        return self._maps

    @property
    def grid(self) -> tuple[int, int]:
        return self._shape[1], self._shape[2]

    def __len__(self) -> int:
        return self._shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        """The (h, w) float16 map of train item ``index`` (a copy: the file is never written)."""
        i = operator.index(index)
        n = self._shape[0]
        if not -n <= i < n:
            raise IndexError(f"index {index} is out of range for an attention cache of {n} maps ({self.path})")
        return torch.from_numpy(np.array(self._maps[i]))

    # A pickled np.memmap carries a full copy of its data; ship the path instead and map it again, so spawned
    # DataLoader workers and DDP ranks share the page cache. An in-memory cache ships its maps: a worker must
    # not read a file that may have been replaced since the run opened it.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta, "offset": self._offset, "shape": self._shape,
                "data": self._maps if self.in_memory else None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["meta"], state["offset"], state["shape"], data=state.get("data"))

    def __repr__(self) -> str:
        return (f"AttentionCache({str(self.path)!r}, n={len(self)}, grid={self.grid}, "
                f"dataset={self.meta.get('dataset')!r}, extractor={self.meta.get('extractor')!r})")


# --------------------------------------------------------------------------- metadata
def cache_meta(info: Any, extractor: Any, extractor_source: str | None = None) -> dict[str, Any]:
    """The header a cache of ``extractor``'s maps over ``info``'s train split must carry.

    ``info`` is the ``DatasetInfo`` of ``build_datasets``; ``extractor`` a ``FeatureExtractor``
    (its native grid is found with one forward pass on a blank image). ``extractor_source`` is how
    the run named the extractor (the ``--extractor`` flag), recorded as ``extractor``; the
    ``source_*`` fields and ``weights_sha256`` are ``extractor.source`` (an ``ExtractorSource``) field
    by field, and ``attention`` is which attention it computes (``channel_mean`` or ``cls_token``).
    Weights files are identified by their sha256, so a cache stays valid when they move; pretrained
    and random weights cannot be hashed, and the header says so.
    """
    for attr in ("name", "source", "input_size", "mean", "std"):
        if not hasattr(extractor, attr):
            raise TypeError(f"extractor must be a FeatureExtractor (it has no .{attr}), got {type(extractor).__name__}")
    for attr in ("name", "image_size", "train_fingerprint", "num_train"):
        if not hasattr(info, attr):
            raise TypeError(f"info must be the DatasetInfo returned by build_datasets (it has no .{attr}), "
                            f"got {type(info).__name__}")
    source = extractor.source
    if not isinstance(source, ExtractorSource):
        raise TypeError(f"extractor.source must be an ExtractorSource (build the extractor with load_extractor), "
                        f"got {source!r}")
    input_size = extractor.input_size or info.image_size
    param = next(extractor.parameters(), None)
    blank = torch.zeros(1, extractor.mean.shape[1], input_size, input_size,
                        device=param.device if param is not None else "cpu")
    grid = list(extractor(blank).shape[-2:])
    return {
        "format_version": FORMAT_VERSION,
        "dataset": info.name, "length": int(info.num_train), "fingerprint": info.train_fingerprint,
        "image_size": int(info.image_size),
        "extractor": str(extractor_source if extractor_source is not None else extractor.name),
        "source_kind": source.kind, "source_name": source.name, "source_path": source.path,
        "weights_sha256": source.weights_id, "attention": getattr(extractor, "attention", "channel_mean"),
        "layer": getattr(extractor, "layer", None), "input_size": int(input_size),
        "mean": [round(float(v), 6) for v in extractor.mean.flatten().tolist()],
        "std": [round(float(v), 6) for v in extractor.std.flatten().tolist()],
        "grid": grid,
    }


def _comparable(meta: Mapping[str, Any]) -> dict[str, Any]:
    def norm(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return round(v, 6) if isinstance(v, float) else v

    out = {k: norm(meta.get(k, _MISSING)) for k in COMPARED}
    legacy = meta.get("extractor_source")
    if "source_kind" not in meta and isinstance(legacy, str):
        # Headers written before ExtractorSource: "weights:/abs/path", "checkpoint:/abs/path", "pretrained",
        # "random" or "module", and `extractor` was the model's name for all but checkpoints.
        # A checkpoint's architecture was not recorded: such a header is refused, naming source_name.
        kind, _, where = legacy.partition(":")
        out.update(source_kind={"random": "name"}.get(kind, kind), source_path=where or None,
                   source_name=meta.get("extractor", _MISSING) if kind != "checkpoint" else _MISSING)
    if "attention" not in meta:
        out["attention"] = "channel_mean"  # the only attention there was before the field existed
    if _HASH.fullmatch(str(meta.get("weights_sha256", ""))):
        # The file's content identifies the weights; where it lives on this machine does not.
        out["source_path"] = None
        if out["source_kind"] == "checkpoint":
            out["extractor"] = "checkpoint"  # the run names a checkpoint by its path
    return out


def _differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    exp, got = _comparable(expected), _comparable(found)
    return [f"{k}: expected {expected.get(k, _MISSING)!r}, found {found.get(k, _MISSING)!r}"
            for k in COMPARED if k in expected and exp[k] != got[k]]


# --------------------------------------------------------------------------- open
def _read_header(path: Path, f: Any) -> tuple[dict[str, Any], int, int]:
    """(parsed safetensors header, data offset, file size) from the open file ``f``; CacheError if this is no
    safetensors file."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        raise CacheError(f"{path} is not an attention cache: {size} bytes is too short for a safetensors header; "
                         f"{_not_a_cache_hint(path)}")
    (n,) = struct.unpack("<Q", head)
    if n == 0 or n > _MAX_HEADER or n > size - 8:
        raise CacheError(f"{path} is not an attention cache (not a safetensors file, or truncated inside its header: "
                         f"header length {n}, file size {size}); {_not_a_cache_hint(path)}")
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{path} is not an attention cache (its safetensors header is not JSON: {err}); "
                         f"{_not_a_cache_hint(path)}") from err
    if not isinstance(header, dict):
        raise CacheError(f"{path} is not an attention cache (malformed safetensors header); {_not_a_cache_hint(path)}")
    return header, 8 + n, size


def _cache_metadata(header: Mapping[str, Any]) -> Any:
    metadata = header.get("__metadata__")
    return metadata.get(META_KEY) if isinstance(metadata, dict) else None


def is_attention_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file whose header says it is an attention cache (even a truncated or stale one)."""
    try:
        with open(path, "rb") as f:
            header, _, _ = _read_header(Path(path), f)
    except (OSError, CacheError):
        return False
    return isinstance(header.get(TENSOR), dict) and _cache_metadata(header) is not None


def check_cache_target(path: str | os.PathLike, *, force: bool = False,
                       protected: tuple[str | os.PathLike | None, ...] = ()) -> None:
    """Refuse an output path for ``build_cache`` (before any work): ``CacheError`` naming the path and the fix.

    Refused: a folder; one of the ``protected`` files (the extractor's weights or checkpoint), whatever its
    type; an existing file without ``force``; with ``force``, an existing file that is not an attention cache
    (``force`` replaces caches only).
    """
    path = Path(path)
    for other in protected:
        if other is not None and Path(other).exists() and path.exists() and os.path.samefile(path, other):
            raise CacheError(f"--out {path} is the extractor's own weights/checkpoint file {other}; writing the cache "
                             "there would destroy it. Choose another --out, e.g. attention.safetensors")
    if path.is_dir():
        raise CacheError(f"--out {path} is a directory; give a file path such as {path / 'attention.safetensors'}")
    if not path.exists():
        return
    if not is_attention_cache(path):
        raise CacheError(f"--out {path} exists and is not an attention cache; {_not_a_cache_hint(path)}")
    if not force:
        raise CacheError(f"--out {path} is an existing attention cache; pass --force to replace it, or choose "
                         "another --out")


def open_cache(path: str | os.PathLike, *, expect: Mapping[str, Any] | None = None,
               in_memory: bool | None = None) -> AttentionCache:
    """Open and validate a cache; with ``expect`` (from ``cache_meta``) refuse one made for another run.

    ``in_memory=None`` reads the maps into memory if they take at most ``IN_MEMORY_MAX_BYTES`` and memory-maps
    larger ones; ``True``/``False`` force either. Raises ``CacheNotFoundError`` for a missing file, ``CacheError``
    for a truncated, corrupt or foreign file, ``CacheMismatchError`` naming every field that differs from ``expect``.
    """
    path = Path(path)
    if expect is not None:
        if not isinstance(expect, Mapping):
            raise TypeError(f"expect must be a dict from cache_meta(), got {type(expect).__name__}")
        unknown = set(expect) - set(COMPARED) - {"format_version", "created_at"}
        if unknown:
            raise ValueError(f"expect has unknown fields {sorted(unknown)}; valid fields: {list(COMPARED)}")
    if not path.is_file():
        raise CacheNotFoundError(f"attention cache not found: {path}; build it with `attentive-cutmix cache-attention "
                                 f"--dataset ... --extractor ... --out {path}` or pass --build-cache to train")
    with open(path, "rb") as f:  # header and maps from one open file: the same file even if it is replaced meanwhile
        header, offset, size = _read_header(path, f)
        meta, shape = _validated(path, header, offset, size, expect)
        nbytes = 2 * int(np.prod(shape))
        if in_memory if in_memory is not None else nbytes <= IN_MEMORY_MAX_BYTES:
            data = np.empty(shape, dtype=_DTYPE)
            f.seek(offset)
            if f.readinto(memoryview(data).cast("B")) != nbytes:
                raise CacheError(f"{path} was truncated while it was being read; {_rebuild_hint(path, meta)}")
            _check_finite(path, data, meta)
            return AttentionCache(path, meta, offset, shape, data=data)
    cache = AttentionCache(path, meta, offset, shape)
    _check_finite(path, cache.maps, meta)
    return cache


def _check_finite(path: Path, maps: np.ndarray, meta: Mapping[str, Any], chunk_bytes: int = 64 << 20) -> None:
    """``CacheError`` naming the file and the first positions if any map holds NaN/Inf: found once, when the cache
    opens, not when a mixer meets that sample mid-epoch. Mapped caches are read in chunks of ``chunk_bytes``."""
    n, per_map = len(maps), 2 * int(np.prod(maps.shape[1:]))
    rows = max(1, chunk_bytes // per_map)
    bad: list[int] = []
    for start in range(0, n, rows):
        block = np.asarray(maps[start:start + rows]).reshape(min(rows, n - start), -1)
        bad.extend((start + np.flatnonzero(~np.isfinite(block).all(axis=1))).tolist())
    if bad:
        raise CacheError(f"{path} holds non-finite (NaN/Inf) attention in {len(bad)} of {n} maps (train-split "
                         f"positions {bad[:5]}{' ...' if len(bad) > 5 else ''}): a damaged file, or an extractor that "
                         f"gave NaN; {_rebuild_hint(path, meta)}")


def _validated(path: Path, header: dict[str, Any], offset: int, size: int, expect: Mapping[str, Any] | None
               ) -> tuple[dict[str, Any], tuple[int, int, int]]:
    entry, raw_meta = header.get(TENSOR), _cache_metadata(header)
    if not isinstance(entry, dict) or raw_meta is None:
        raise CacheError(f"{path} is a safetensors file but not an attention cache (no {TENSOR!r} tensor with "
                         f"{META_KEY!r} metadata; is it a weights file?); {_not_a_cache_hint(path)}")
    try:
        meta = json.loads(raw_meta)
        shape = tuple(int(s) for s in entry["shape"])
        begin, end = (int(x) for x in entry["data_offsets"])
        dtype = entry["dtype"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CacheError(f"{path} has a corrupt attention-cache header ({err!r}); {_rebuild_hint(path)}") from err
    hint = _rebuild_hint(path, meta if isinstance(meta, dict) else None)
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CacheError(f"{path} has cache format version {version!r}; this version reads {FORMAT_VERSION}; {hint}")
    if dtype != "F16" or len(shape) != 3 or min(shape) < 1 or (begin, end) != (0, 2 * int(np.prod(shape))):
        raise CacheError(f"{path} has a corrupt attention tensor entry (dtype {dtype}, shape {shape}, "
                         f"offsets {[begin, end]}; expected F16 (N, h, w) from offset 0); {hint}")
    expected_size = offset + end
    if size < expected_size:
        raise CacheError(f"{path} is truncated: {size} bytes on disk but its header describes {expected_size} "
                         f"({shape[0]} maps of {shape[1]}x{shape[2]}); an interrupted copy or a full disk? {hint}")
    if size > expected_size:
        raise CacheError(f"{path} is corrupt: {size} bytes on disk but its header describes {expected_size}; {hint}")
    if meta.get("length") != shape[0] or list(meta.get("grid", [])) != list(shape[1:]):
        raise CacheError(f"{path} is corrupt: header says length {meta.get('length')} and grid {meta.get('grid')} "
                         f"but the tensor is {list(shape)}; {hint}")
    if expect is not None:
        diffs = _differences(expect, meta)
        if diffs:
            raise CacheMismatchError(f"attention cache {path} was built for another run; differing fields:\n  "
                                     + "\n  ".join(diffs) + f"\n{_rebuild_hint(path, {**meta, **expect})}")
    return meta, shape


# --------------------------------------------------------------------------- build
def _header_bytes(meta: Mapping[str, Any], shape: tuple[int, int, int]) -> bytes:
    header = {TENSOR: {"dtype": "F16", "shape": list(shape), "data_offsets": [0, 2 * int(np.prod(shape))]},
              "__metadata__": {"format": "pt", META_KEY: json.dumps(meta, sort_keys=True)}}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header so the data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def _best_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")




def build_cache(dataset: Dataset, extractor: Any, path: str | os.PathLike, *, meta: Mapping[str, Any],
                batch_size: int = 256, workers: int = 0, device: str | torch.device | None = None,
                progress: bool = True) -> AttentionCache:
    """Run ``extractor`` over ``dataset`` (the un-augmented train split) and write the cache atomically.

    Maps are the channel mean of the extractor's native feature map, stored as float16 and written
    batch by batch into a memory-mapped temporary file that is fsynced and renamed over ``path``,
    so memory stays flat at any dataset size and an interrupted build leaves nothing behind.
    ``meta`` comes from ``cache_meta``; its ``length`` and ``grid`` (if given) must match what is built.
    An existing ``path`` is replaced only if it is an attention cache (``check_cache_target(path, force=True)``).
    """
    check_cache_target(path, force=True)  # whoever calls us, a weights file or a folder is never overwritten
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"dataset must be a map-style Dataset with __len__, got {type(dataset).__name__}")
    n = len(dataset)
    if n < 1:
        raise ValueError("dataset is empty: nothing to cache")
    if not callable(extractor):
        raise TypeError(f"extractor must be callable (a FeatureExtractor), got {type(extractor).__name__}")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict from cache_meta(info, extractor), got {type(meta).__name__}")
    if "length" in meta and meta["length"] != n:
        raise ValueError(f"meta says length={meta['length']} but the dataset has {n} items; "
                         "was meta made for another split?")
    for name, value in (("batch_size", batch_size), ("workers", workers)):
        if not is_int(value) or value < (1 if name == "batch_size" else 0):
            raise ValueError(f"{name} must be an int >= {1 if name == 'batch_size' else 0}, got {name}={value!r}")
    meta = dict(meta, format_version=FORMAT_VERSION, length=n,
                created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    try:
        json.dumps(meta)
    except TypeError as err:
        raise TypeError(f"meta must hold only JSON values (str, numbers, lists, None): {err}") from err
    device = _best_device(device)
    param = next(extractor.parameters(), None) if isinstance(extractor, torch.nn.Module) else None
    home = param.device if param is not None else None
    from ..data.loader import worker_safe_loader  # a worker's error is raised as itself, in one line

    loader = worker_safe_loader(dataset, workers=workers, batch_size=batch_size, shuffle=False,
                                pin_memory=device.type == "cuda")

    def maps_of(batch: Any) -> np.ndarray:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        with torch.inference_mode():
            feats = extractor(images.to(device, non_blocking=True))
            att = channel_attention(feats).to(torch.float16)
            # Refused now rather than by the mixer hours into a training run.
            if not bool(torch.isfinite(att).all()):
                raise ValueError("the extractor produced NaN/Inf attention (or values beyond float16's range, 65504); "
                                 "check its weights and input normalisation")
        return att.cpu().numpy()

    def write(tmp: str, bar: tqdm) -> None:
        batches = iter(loader)
        first = maps_of(next(batches))  # its shape is the grid, which the header needs before the data
        shape = (n, *first.shape[1:])
        if "grid" in meta and list(meta["grid"]) != list(shape[1:]):
            raise ValueError(f"meta says grid={meta['grid']} but the extractor produces {list(shape[1:])} maps")
        meta["grid"] = list(shape[1:])
        head = _header_bytes(meta, shape)
        with open(tmp, "wb") as f:
            f.write(head)
            f.truncate(len(head) + 2 * int(np.prod(shape)))
        out = np.memmap(tmp, dtype=_DTYPE, mode="r+", offset=len(head), shape=shape)
        done = 0
        for maps in itertools.chain([first], map(maps_of, batches)):
            if done + len(maps) > n:
                raise ValueError(f"the dataset yielded more than its len()={n} items")
            out[done:done + len(maps)] = maps
            done += len(maps)
            bar.update(len(maps))
        if done != n:
            raise ValueError(f"the dataset yielded {done} items but its len() is {n}")
        out.flush()
        del out

    if home is not None:
        extractor.to(device)
    try:
        with signals_stop_the_build(path), tqdm(total=n, unit="img", desc="caching attention",
                                                 disable=not progress) as bar:
            atomic_write(path, lambda tmp: write(tmp, bar))
    finally:
        if home is not None:
            extractor.to(home)
    return open_cache(path)
