"""Datasets and the attention source of a run: online extractor, an existing cache, or a cache built now.

``prepare_data`` is the trainer's one call: datasets (built from the config or given), attention source and batches.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import torch

from ..attention.source import AttentionSource, resolve
from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..data.datasets import DatasetInfo
from ..data.device import MEMORY_FRACTION, device_splits, fits_on_device
from ..data.transforms import eval_transform
from ..data.wrapper import AugmentedDataset
from .batches import BatchSource, DeviceBatches, LoaderBatches
from .components import AMP_DTYPES
from .config import DATA_FIELDS, ConfigError, TrainConfig
from .distributed import DistInfo, patient_barrier, patient_group


def prepare_data(cfg: TrainConfig, dist: DistInfo, device: torch.device, given: dict[str, Any] | None = None
                 ) -> tuple[Any, BatchSource, torch.nn.Module | None]:
    """``(info, batches, online_extractor)`` of the run, with ``given`` the datasets passed to ``train()`` (if any)."""
    given = given or {}
    if given.get("train_dataset") is not None:
        train_ds, eval_ds, info, source = given_data(cfg, given, device)
    else:
        if given.get("eval_dataset") is not None:
            raise ConfigError("eval_dataset= needs train_dataset= too (the run's classes and image size come "
                              "from the training set)")
        train_ds, eval_ds, info, source = build_data(cfg, dist, device)
    batches = build_batches(cfg, dist, device, train_ds, eval_ds, info, cached_attention=source.kind == "cache")
    return info, batches, source.extractor


def build_data(cfg: TrainConfig, dist: DistInfo, device: torch.device) -> tuple[Any, Any, Any, AttentionSource]:
    """``(train_ds, eval_ds, info, attention_source)``; train items carry attention when a cache is used.

    Rank 0 prepares (downloads, builds the cache) first; the other ranks then read what it made.
    """
    group = patient_group(dist)  # made by every rank now; its barrier outlasts a cache build of hours
    if dist.rank != 0:
        patient_barrier(dist, group)
    try:
        result = _build(cfg, dist, device)
    finally:
        if dist.rank == 0:
            patient_barrier(dist, group)
    return result


def _build(cfg: TrainConfig, dist: DistInfo, device: torch.device):
    # One pass: the datasets once, then the run's attention source (its extractor, its cache), resolved once.
    train_ds, eval_ds, info = cfg.data.datasets()
    source = resolve(cfg.mixing.extractor_spec, cfg.mixing.cache_spec, train_ds=train_ds, info=info, device=device,
                     amp_dtype=AMP_DTYPES[cfg.run.amp], builder=dist.rank == 0,
                     batch_size=max(cfg.optim.batch_size, 256),
                     workers=cfg.run.workers, progress=cfg.run.progress)
    return source.train_ds, eval_ds, info, source


def given_data(cfg: TrainConfig, given: dict[str, Any], device: torch.device
               ) -> tuple[Any, Any, Any, AttentionSource]:
    """``(train_ds, eval_ds, info, attention_source)`` for datasets passed to ``train()`` (not built from ``cfg``).

    Items are ``(image, label)``, the image a float (C, H, W) tensor in [0, 1]; the run takes the loader path and
    an online extractor (a cache is built from the harness's own datasets only).
    """
    train_ds, eval_ds = given["train_dataset"], given.get("eval_dataset")
    ignored = [k for k in (*DATA_FIELDS, "image_cache") if k in cfg.explicit]
    if ignored:  # never silently ignored
        raise ConfigError(f"train_dataset= replaces the dataset options, so {ignored} would be ignored; remove them")
    for name, ds in (("train_dataset", train_ds), ("eval_dataset", eval_ds)):
        if ds is not None and not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
            raise ConfigError(f"{name} must be a map-style Dataset (__getitem__ and __len__), got {type(ds).__name__}")
    if len(train_ds) == 0:
        raise ConfigError("train_dataset is empty")
    image = train_ds[0][0] if isinstance(train_ds[0], (tuple, list)) else None
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        raise ConfigError("train_dataset items must be (image, label) with a float (C, H, W) image tensor in [0, 1] "
                          "(e.g. torchvision v2's ToImage() + ToDtype(torch.float32, scale=True)), got "
                          f"{type(train_ds[0]).__name__} holding {type(image).__name__}")
    if image.numel() and float(image.amax()) > 1.5:  # one item, once: a cheap look, not a scan of the data
        warnings.warn(f"train_dataset's first image has values up to {float(image.amax()):g}: the trainer expects "
                      "images in [0, 1] (it normalises them with mean/std after mixing); convert with torchvision "
                      "v2's ToDtype(torch.float32, scale=True) or divide by 255", stacklevel=4)
    classes = given.get("classes")
    classes = classes if classes is not None else getattr(train_ds, "classes", None)
    if isinstance(classes, bool) or not (classes is None or isinstance(classes, (int, list, tuple))):
        raise ConfigError(f"classes must be the class names (a list) or their count (an int), got {classes!r}")
    if isinstance(classes, int):
        classes = [str(i) for i in range(classes)]
    if not classes:
        raise ConfigError(f"cannot tell the number of classes of {type(train_ds).__name__} (it has no .classes); pass "
                          "classes= (their names, or their count) to train()")
    if cfg.mixing.cache_spec is not None:
        raise ConfigError("--attention-cache is built from the harness's own datasets; with train_dataset= use an "
                          "online --extractor")
    channels = image.shape[0]
    mean = tuple(given.get("mean") or IMAGENET_MEAN[:channels])
    std = tuple(given.get("std") or IMAGENET_STD[:channels])
    # What can be told of arbitrary data without reading it all (items may be randomly augmented): its sizes and
    # classes, so a resume onto other data is refused; the same sizes with other images are not detected.
    shape = {"train": len(train_ds), "eval": None if eval_ds is None else len(eval_ds), "image": list(image.shape),
             "classes": [str(c) for c in classes], "type": type(train_ds).__name__}
    fingerprint = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
    info = DatasetInfo(name=f"given:{type(train_ds).__name__}", num_classes=len(classes), image_size=image.shape[-1],
                       mean=mean, std=std, classes=[str(c) for c in classes], train_fingerprint=fingerprint,
                       num_train=len(train_ds), preset="given")
    source = resolve(cfg.mixing.extractor_spec, None, train_ds=train_ds, info=info, device=device,
                     amp_dtype=AMP_DTYPES[cfg.run.amp])
    return train_ds, eval_ds, info, source


def choose_data_path(cfg: TrainConfig, train_ds: Any, eval_ds: Any, info: Any, device: torch.device, *,
                     cached_attention: bool = False) -> str:
    """``device`` or ``loader`` for ``cfg.run.data_path`` (auto: the device path for small images that fit).

    The device path needs the CIFAR-style preset (images of at most 64 px: padded crop and flip) and
    datasets built by ``build_datasets``; ``auto`` also needs both splits, as uint8 (and ``cached_attention``'s
    maps), to take at most ``MEMORY_FRACTION`` of the device's free memory.
    """
    if "image_cache" in cfg.explicit and cfg.run.image_cache is not None and (
            cfg.run.data_path == "loader" or cfg.data.dataset not in ("imagefolder", "imagenet")):
        raise ConfigError(f"--image-cache {cfg.run.image_cache} applies to image folders (imagefolder, imagenet) on "
                          f"the device path, not to dataset {cfg.data.dataset!r} with --data-path {cfg.run.data_path}; "
                          "remove it")
    if cfg.run.data_path == "loader":
        return "loader"
    splits = [ds for ds in (train_ds, eval_ds) if ds is not None]
    supported = info.preset == "cifar" and all(isinstance(ds, AugmentedDataset) for ds in splits)
    if cfg.run.data_path == "device" and not supported:
        reason = (f"its images are {info.image_size} px (the device path does the CIFAR-style crop and flip of "
                  "images up to 64 px)" if info.preset != "cifar" else "its datasets are not built by build_datasets")
        raise ConfigError(f"--data-path device does not apply to dataset {info.name!r}: {reason}; "
                          "use --data-path loader")
    if cfg.run.data_path == "device":
        return "device"
    size = info.image_size
    need = sum(len(ds) for ds in splits) * 3 * size * size
    if cached_attention:
        need += len(train_ds) * size * size * 2
    chosen = "device" if supported and fits_on_device(need, device) else "loader"
    image_cache = cfg.run.image_cache if "image_cache" in cfg.explicit else None
    if chosen == "loader" and image_cache is not None:  # never silently unused
        if not supported:
            raise ConfigError(f"--image-cache {image_cache} applies to the device path, which does not apply to "
                              f"dataset {info.name!r} (images of {size} px; it takes the CIFAR-style preset up to "
                              "64 px): remove --image-cache")
        warnings.warn(f"--image-cache {cfg.run.image_cache} is not used: --data-path auto chose the loader path (both "
                      f"splits, {need / 2**20:.0f} MiB, take more than {MEMORY_FRACTION:.0%} of the free memory of "
                      f"{device}); pass --data-path device to decode into memory anyway, or remove --image-cache",
                      stacklevel=3)
    return chosen


def build_batches(cfg: TrainConfig, dist: DistInfo, device: torch.device, train_ds: Any, eval_ds: Any,
                  info: Any, *, cached_attention: bool = False) -> BatchSource:
    """The run's batches: the device-resident path or the loader path (``choose_data_path``), chosen once here."""
    sizes = dict(seed=cfg.run.seed, batch_size=cfg.optim.batch_size,
                 eval_batch_size=cfg.run.eval_batch_size or cfg.optim.batch_size,
                 dist=dist)
    if choose_data_path(cfg, train_ds, eval_ds, info, device, cached_attention=cached_attention) == "device":
        train, held_out = device_splits(train_ds, eval_ds, info.image_size, device, image_cache=cfg.run.image_cache,
                                        workers=cfg.run.workers)
        return DeviceBatches(train, held_out, **sizes)
    return LoaderBatches(train_ds, eval_ds, unaugmented(train_ds, info) if cfg.run.eval_train else None,
                         workers=cfg.run.workers, pin_memory=device.type == "cuda", **sizes)


def unaugmented(train_ds: Any, info: Any) -> Any:
    """The training split with the evaluation transform (for train accuracy on the loader path)."""
    if not isinstance(train_ds, AugmentedDataset):
        raise ConfigError(f"--eval-train needs a dataset built by build_datasets; {info.name!r} is a "
                          f"{type(train_ds).__name__}")
    return AugmentedDataset(train_ds.source, train_ds.indices, eval_transform(info.preset, info.image_size))


__all__ = ["prepare_data", "build_data", "build_batches", "choose_data_path", "given_data", "unaugmented"]
