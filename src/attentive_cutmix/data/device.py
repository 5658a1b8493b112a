"""The device-resident data path: a whole split as one uint8 tensor on the training device, augmented there.

For data that fits (CIFAR-sized images), decoding every image every epoch in DataLoader workers costs more
than the model. Instead each split is decoded once into ``(N, C, H, W)`` uint8 in the un-augmented frame
(the image resized to ``size x size``), moved to the device once, and each batch is cut from it with a
per-sample padded random crop and horizontal flip drawn from a seeded generator: the same distribution
as the loader path's ``RandomCrop(size, padding=4)`` + ``RandomHorizontalFlip()``. Cached attention maps,
upsampled once to the image frame, are cropped and flipped with the *same* offsets as their images.

Image folders are decoded once into an image cache file (safetensors, uint8) whose header records the
split's fingerprint, so a changed folder is noticed: its split is decoded again (with a warning), never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torchvision.transforms.v2 import functional as TF

from ..mixers.base import to_device
from ..serialization import OutputWriteError, atomic_write, signals_stop_the_build
from .loader import worker_safe_loader  # worker errors end the run with one line, never a hang

__all__ = ["DeviceSplit", "ImageCacheError", "decode_split", "device_split", "device_splits", "crop_flip",
           "fits_on_device",
           "PADDING", "MEMORY_FRACTION"]

PADDING = 4  # the CIFAR preset's RandomCrop padding (data/transforms.py)
MEMORY_FRACTION = 0.25  # auto picks the device path when the splits take at most this much of free memory
_FORMAT = 1
_META = "attentive_cutmix_images"


class ImageCacheError(ValueError):
    """An image cache that belongs to other data, or is not an image cache."""


@dataclass
class DeviceSplit:
    """One split on the device: uint8 images (N, C, H, W), int64 labels (N,), optional fp16 maps (N, H, W)."""

    images: torch.Tensor
    labels: torch.Tensor
    attention: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, index: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """Augmented float images in [0, 1], labels[, attention] of the samples ``index`` (on the device)."""
        images, attention = crop_flip(self.images.index_select(0, index),
                                      None if self.attention is None else self.attention.index_select(0, index),
                                      generator=generator)
        out = (images.float().div_(255), self.labels.index_select(0, index))
        return out if attention is None else out + (attention.float(),)

    def eval_batches(self, batch_size: int, *, rank: int = 0,
                     world_size: int = 1) -> Iterator[tuple[torch.Tensor, ...]]:
        """Un-augmented ``(images, labels)`` slices; rank ``r`` takes items r, r + W, ... (each item once)."""
        images, labels = self.images[rank::world_size], self.labels[rank::world_size]
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size].float().div_(255), labels[start:start + batch_size]


def crop_flip(images: torch.Tensor, attention: torch.Tensor | None = None, *, padding: int = PADDING,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample random crop of the zero-padded batch and horizontal flip at 50%, batched (no loop).

    ``images`` (B, C, H, W) of any dtype; ``attention`` (B, H, W) moves with the same offsets and flips.
    Offsets are uniform over the ``2 * padding + 1`` positions on each axis, as ``RandomCrop(padding=p)``.
    Draws come from ``generator`` (on its own device) and move to the images' device without a host sync.
    """
    b, c, h, w = images.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=gen_device)
    flip = torch.rand(b, generator=generator, device=gen_device) < 0.5
    device = images.device
    dy, dx, flip = to_device(draws[0], device), to_device(draws[1], device), to_device(flip, device)
    wp = w + 2 * padding
    rows = dy.view(b, 1) + torch.arange(h, device=device).view(1, h)  # in the padded frame
    cols = dx.view(b, 1) + torch.arange(w, device=device).view(1, w)
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    index = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w)

    def take(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (padding, padding, padding, padding)).flatten(2)
        return padded.gather(2, index.expand(-1, x.shape[1], -1)).view(x.shape[0], x.shape[1], h, w)

    out = take(images)
    return out, None if attention is None else take(attention.unsqueeze(1)).squeeze(1)


# --------------------------------------------------------------------------- decoding once
def _frame_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return images if images.shape[-2:] == (size, size) else TF.resize(images, [size, size], antialias=True)


class _Frames(torch.utils.data.Dataset):
    def __init__(self, source: Any, indices: list[int], size: int) -> None:
        self.source, self.indices, self.size = source, indices, size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        image, _ = self.source[self.indices[i]]
        return _frame_resize(image.as_subclass(torch.Tensor), self.size)


def decode_split(dataset: Any, size: int, *, workers: int = 0) -> torch.Tensor:
    """The un-augmented frame of every item of an ``AugmentedDataset`` as one uint8 (N, C, size, size) tensor.

    Array-backed sources (synthetic, CIFAR) are sliced; image files are decoded once, by ``workers`` processes.
    """
    source, indices = dataset.source, dataset.indices
    arrays = getattr(source, "images", None)
    if isinstance(arrays, torch.Tensor) and arrays.dtype == torch.uint8 and arrays.ndim == 4:
        return _frame_resize(arrays.index_select(0, torch.as_tensor(indices, dtype=torch.long)), size).contiguous()
    loader = worker_safe_loader(_Frames(source, indices, size), batch_size=256, workers=workers)
    return torch.cat(list(loader)) if len(indices) else torch.empty(0, 3, size, size, dtype=torch.uint8)


def split_fingerprint(dataset: Any, size: int) -> str | None:
    """What identifies an image-file split's decoded frames (files, sizes, order, frame size); None for arrays."""
    identity = getattr(dataset.source, "identity", None)
    if identity is None:
        return None
    # Modification times too: a file replaced by another image of the same byte size must not reuse old pixels.
    # (The image cache is a local file, so a machine-specific time is fine here, unlike the run's fingerprint.)
    paths = getattr(dataset.source, "paths", None)
    mtimes = [os.stat(paths[i]).st_mtime_ns for i in dataset.indices] if paths is not None else None
    payload = json.dumps({"files": identity(dataset.indices), "mtimes": mtimes, "size": size, "format": _FORMAT},
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_image_cache(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata per split, tensors) of an image cache; ``ImageCacheError`` for anything that is not one."""
    if path.is_dir():
        raise ImageCacheError(f"--image-cache {path} is a folder; give a file path such as "
                              f"{path / 'images.safetensors'}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META)
            tensors = {key: f.get_tensor(key) for key in f.keys()} if raw is not None else {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ImageCacheError(f"--image-cache {path} is not a readable image cache ({err}); if it is one (an "
                              "interrupted copy?), delete it and it is rebuilt, otherwise pass another "
                              "--image-cache") from err
    if raw is None:  # e.g. model weights: never overwrite a file we did not write
        raise ImageCacheError(f"--image-cache {path} is a safetensors file but not an image cache (is it a weights "
                              "file?); nothing was written. Pass another --image-cache")
    return json.loads(raw), tensors


def _check_cached(path: Path, name: str, frames: torch.Tensor, saved: dict[str, Any], expected: tuple) -> None:
    """The stored tensor must be what its header says and what this split decodes to: an edited or damaged cache
    would otherwise train on too few, resized or rescaled frames without a word."""
    found = (tuple(frames.shape), str(frames.dtype).removeprefix("torch."))
    if found != (expected, "uint8") or list(frames.shape) != saved.get("shape"):
        raise ImageCacheError(f"image cache {path}: its {name} tensor is {found[1]} {list(found[0])} but its header "
                              f"says {saved.get('shape')} and this split decodes to uint8 {list(expected)} (an "
                              "edited or damaged file); delete it to rebuild it, or pass another --image-cache")


def _cached_frames(dataset: Any, size: int, path: Path | None, workers: int, name: str) -> torch.Tensor:
    fingerprint = split_fingerprint(dataset, size)
    if path is None or fingerprint is None:
        return decode_split(dataset, size, workers=workers)
    meta, tensors = _read_image_cache(path) if path.exists() else ({}, {})
    saved = meta.get(name)
    if saved is not None and saved.get("fingerprint") == fingerprint and name in tensors:
        _check_cached(path, name, tensors[name], saved, (len(dataset.indices), 3, size, size))
        return tensors[name]
    if saved is not None:
        # Stale, never reused. Rebuilt rather than refused: the cache is derived data, and a folder copied to a
        # job's scratch disk (new modification times, same files) must not end a scheduled run.
        warnings.warn(f"image cache {path}: its {name} split was decoded from other files (fingerprint "
                      f"{saved.get('fingerprint', '?')[:12]} vs {fingerprint[:12]} now: files were added, removed, "
                      "replaced or touched, or the image size differs); decoding it again and replacing it",
                      stacklevel=4)
    # Ctrl-C or SIGTERM while decoding (minutes for a large folder): one line and 128 + signal, no temp file.
    with signals_stop_the_build(path, f"decoding the {name} split for the image cache"):
        frames = decode_split(dataset, size, workers=workers)
        # Keep the other split already stored beside this one.
        tensors = {**tensors, name: frames}
        meta = {**meta, name: {"fingerprint": fingerprint, "shape": list(frames.shape)}}
        try:
            atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_META: json.dumps(meta)}))
        except OutputWriteError as err:
            if saved is None:  # asked for a cache that cannot be written: say so rather than decode every run
                raise
            # A stale cache on a full or read-only disk: the frames are decoded and in memory, train on them.
            warnings.warn(f"{err}; the {name} split was decoded again and this run trains on it, but the next run "
                          "decodes it again", stacklevel=4)
    return frames


def _frame_maps(maps: Any, size: int, device: torch.device, chunk: int = 4096) -> torch.Tensor:
    """(N, h, w) cached maps -> (N, size, size) fp16 in the image frame, bilinear as the loader path does."""
    out = torch.empty(len(maps), size, size, dtype=torch.float16, device=device)
    for start in range(0, len(maps), chunk):
        part = maps[start:start + chunk]
        part = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part, dtype=np.float32))
        part = part.to(device=device, dtype=torch.float32).unsqueeze(1)
        out[start:start + part.shape[0]] = F.interpolate(part, size=(size, size), mode="bilinear",
                                                         align_corners=False).squeeze(1).half()
    return out


def device_split(dataset: Any, size: int, device: torch.device, *, image_cache: str | os.PathLike | None = None,
                 name: str = "train", workers: int = 0) -> DeviceSplit:
    """Decode ``dataset`` (an ``AugmentedDataset``) once and move it, with its attention maps, to ``device``."""
    frames = _cached_frames(dataset, size, None if image_cache is None else Path(image_cache), workers, name)
    labels = torch.as_tensor(dataset.targets, dtype=torch.long)
    maps = getattr(dataset, "attention", None)
    attention = None if maps is None else _frame_maps(getattr(maps, "maps", maps), size, device)
    return DeviceSplit(frames.to(device), labels.to(device), attention)


def device_splits(train: Any, held_out: Any, size: int, device: torch.device, *,
                  image_cache: str | os.PathLike | None = None, workers: int = 0
                  ) -> tuple[DeviceSplit, DeviceSplit | None]:
    """Both splits of a run on ``device`` (``device_split`` each); the held-out one is None when absent or empty."""
    kw = dict(image_cache=image_cache, workers=workers)
    return (device_split(train, size, device, name="train", **kw),
            device_split(held_out, size, device, name="eval", **kw) if held_out is not None and len(held_out) else None)


def fits_on_device(num_bytes: int, device: torch.device) -> bool:
    """The ``auto`` rule: the device path when the splits need at most ``MEMORY_FRACTION`` of free memory."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return False
    return num_bytes <= MEMORY_FRACTION * free
