"""Datasets and the attention source of a run: online extractor, an existing cache, or a cache built now."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import cache as cache_mod
from .. import data
from ..data.device import device_split, fits_on_device
from ..data.transforms import eval_transform
from ..data.wrapper import AugmentedDataset, frame_view, with_attention
from .batches import BatchSource, DeviceBatches, LoaderBatches
from .components import build_extractor
from .config import ConfigError, TrainConfig, needs_attention
from .distributed import DistInfo, barrier


def _datasets(cfg: TrainConfig):
    return data.build_datasets(cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size,
                               val_fraction=cfg.val_fraction, val_data=cfg.val_data, seed=cfg.split_seed,
                               synthetic_size=cfg.synthetic_size, train_subset=cfg.train_subset)


def build_data(cfg: TrainConfig, dist: DistInfo, device: torch.device) -> tuple[Any, Any, Any, torch.nn.Module | None]:
    """``(train_ds, eval_ds, info, online_extractor)``; train items carry attention when a cache is used.

    Rank 0 prepares (downloads, builds the cache) first; the other ranks then read what it made.
    """
    if dist.rank != 0:
        barrier(dist)
    try:
        result = _build(cfg, dist, device)
    finally:
        if dist.rank == 0:
            barrier(dist)
    return result


def _build(cfg: TrainConfig, dist: DistInfo, device: torch.device):
    # One pass: the datasets once, then the extractor, then the cache, whose maps the training split takes on.
    train_ds, eval_ds, info = _datasets(cfg)
    if not needs_attention(cfg):
        return train_ds, eval_ds, info, None
    extractor = build_extractor(cfg, info, device) if cfg.extractor is not None else None
    if cfg.attention_cache is None:
        return train_ds, eval_ds, info, extractor  # attention computed online, per batch

    path = Path(cfg.attention_cache)
    if not path.exists():
        if not cfg.build_cache or extractor is None:
            raise ConfigError(f"attention cache {path} does not exist; make it with "
                              "`attentive-cutmix cache-attention`, or add --build-cache (with --extractor) to build it "
                              "before training")
        if dist.rank == 0:
            cache_mod.build_cache(frame_view(train_ds, info.image_size), extractor, path,
                                  meta=cache_mod.cache_meta(info, extractor, cfg.extractor),
                                  batch_size=max(cfg.batch_size, 256), workers=cfg.workers, device=device,
                                  progress=cfg.progress)
    # Check the header before the data sees the maps, so a mismatch names every differing field.
    expect = (cache_mod.cache_meta(info, extractor, cfg.extractor) if extractor is not None
              else {"fingerprint": info.train_fingerprint, "length": len(train_ds)})
    cache = cache_mod.open_cache(path, expect=expect)
    return with_attention(train_ds, cache), eval_ds, info, None  # attention comes with each batch


def choose_data_path(cfg: TrainConfig, train_ds: Any, eval_ds: Any, info: Any, device: torch.device) -> str:
    """``device`` or ``loader`` for ``cfg.data_path`` (auto: the device path for small images that fit).

    The device path needs the CIFAR-style preset (images of at most 64 px: padded crop and flip) and
    datasets built by ``build_datasets``; ``auto`` also needs both splits, as uint8, to take at most
    ``MEMORY_FRACTION`` of the device's free memory.
    """
    if "image_cache" in cfg.explicit and cfg.image_cache is not None and (
            cfg.data_path == "loader" or cfg.dataset not in ("imagefolder", "imagenet")):
        raise ConfigError(f"--image-cache {cfg.image_cache} applies to image folders (imagefolder, imagenet) on the "
                          f"device path, not to dataset {cfg.dataset!r} with --data-path {cfg.data_path}; remove it")
    if cfg.data_path == "loader":
        return "loader"
    splits = [ds for ds in (train_ds, eval_ds) if ds is not None]
    supported = info.preset == "cifar" and all(isinstance(ds, AugmentedDataset) for ds in splits)
    if cfg.data_path == "device" and not supported:
        reason = (f"its images are {info.image_size} px (the device path does the CIFAR-style crop and flip of "
                  "images up to 64 px)" if info.preset != "cifar" else "its datasets are not built by build_datasets")
        raise ConfigError(f"--data-path device does not apply to dataset {info.name!r}: {reason}; "
                          "use --data-path loader")
    if cfg.data_path == "device":
        return "device"
    size = info.image_size
    need = sum(len(ds) for ds in splits) * 3 * size * size
    if needs_attention(cfg) and cfg.attention_cache is not None:
        need += len(train_ds) * size * size * 2
    return "device" if supported and fits_on_device(need, device) else "loader"


def build_batches(cfg: TrainConfig, dist: DistInfo, device: torch.device, train_ds: Any, eval_ds: Any,
                  info: Any) -> BatchSource:
    """The run's batches: the device-resident path or the loader path (``choose_data_path``), chosen once here."""
    sizes = dict(seed=cfg.seed, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
                 dist=dist)
    if choose_data_path(cfg, train_ds, eval_ds, info, device) == "device":
        def on_device(ds: Any, name: str):
            return device_split(ds, info.image_size, device, image_cache=cfg.image_cache, name=name,
                                workers=cfg.workers)

        train = on_device(train_ds, "train")
        return DeviceBatches(train, on_device(eval_ds, "eval") if eval_ds is not None and len(eval_ds) > 0 else None,
                             **sizes)
    return LoaderBatches(train_ds, eval_ds, unaugmented(train_ds, info) if cfg.eval_train else None,
                         workers=cfg.workers, pin_memory=device.type == "cuda", **sizes)


def unaugmented(train_ds: Any, info: Any) -> Any:
    """The training split with the evaluation transform (for train accuracy on the loader path)."""
    if not isinstance(train_ds, AugmentedDataset):
        raise ConfigError(f"--eval-train needs a dataset built by build_datasets; {info.name!r} is a "
                          f"{type(train_ds).__name__}")
    return AugmentedDataset(train_ds.source, train_ds.indices, eval_transform(info.preset, info.image_size))


__all__ = ["build_data", "build_batches", "choose_data_path", "unaugmented"]
