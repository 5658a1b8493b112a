"""``build_datasets``: one call from a dataset name to ``(train_ds, eval_ds, info)``.

Items are ``(image, label)`` with ``image`` float32 (C, H, W) in [0, 1], not normalised (the trainer normalises
on device with ``info.mean``/``info.std`` after mixing). ``attention_cache`` adds a third element, the cached
map in the augmented image's frame. The eval set is, in order of precedence: a held-out part of the training
data (``val_fraction > 0``, stratified, deterministic in ``seed``), the ``val_data`` folder, or the dataset's
own test split (synthetic eval set, CIFAR test batch, ImageNet ``val/``).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..constants import IMAGENET_MEAN, IMAGENET_STD, MAX_IMAGE_SIZE, is_int, is_number
from .cifar import load_cifar
from .folders import DatasetError, ImageFiles
from .split import stratified_split
from .synthetic import SHAPES, SyntheticObjects
from .transforms import eval_transform, frame_transform, preset_for_size, train_transform
from .wrapper import AugmentedDataset

__all__ = ["DATASETS", "DatasetInfo", "build_datasets"]

DATASETS = ("synthetic", "synthetic2", "synthetic64", "cifar10", "cifar100", "imagefolder", "imagenet")
# The synthetic datasets' generator versions (data/synthetic.py STYLES): "synthetic" stays the original drawing.
SYNTHETIC_VERSIONS = {"synthetic": 1, "synthetic2": 2, "synthetic64": 1}
SYNTHETIC_SIZES = (5000, 1000)  # (train, eval) images
# The synthetic images are fixed: `seed` only drives the held-out split, so runs with different seeds
# (and their attention caches) see the same data.
SYNTHETIC_SEEDS = {"train": 0, "eval": 1}
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_STATS = (IMAGENET_MEAN, IMAGENET_STD)  # also used for arbitrary image folders


@dataclass
class DatasetInfo:
    """What the trainer needs to know about a built dataset."""

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: list[str]
    train_fingerprint: str  # sha256 identifying the training split (files + sizes, or generator parameters)
    num_train: int
    preset: str  # "cifar" | "imagenet"


@dataclass
class _Raw:
    train: Any  # dataset of (uint8 tv_tensors.Image, label), with .targets and .classes
    eval: Any  # same, or None when only a held-out split can serve as eval set
    keys: Callable[[], list[str]]  # per-sample stable keys for the split
    identity: Callable[[list[int], bool], Any]  # (train indices, split?) -> JSON-able identity of the train split
    native_size: int | None
    stats: tuple
    train_boxes: torch.Tensor | None = None
    eval_boxes: torch.Tensor | None = None


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _index_keys(n: int) -> Callable[[], list[str]]:
    return lambda: [str(i) for i in range(n)]


def _array_identity(base: Any) -> Callable[[list[int], bool], Any]:
    return lambda idx, split: {"source": base, "train_indices": _sha256(idx) if split else "all"}


def _synthetic(name: str, synthetic_size: Any) -> _Raw:
    size = 64 if name == "synthetic64" else 32
    num_train, num_eval = synthetic_size
    version = SYNTHETIC_VERSIONS[name]
    train = SyntheticObjects(num_train, size, seed=SYNTHETIC_SEEDS["train"], version=version)
    test = SyntheticObjects(num_eval, size, seed=SYNTHETIC_SEEDS["eval"], version=version)
    pixels = train.images.to(torch.float32).div_(255)
    stats = (tuple(round(float(m), 4) for m in pixels.mean((0, 2, 3))),
             tuple(round(float(s), 4) for s in pixels.std((0, 2, 3))))
    return _Raw(train, test, _index_keys(len(train)), _array_identity(train.fingerprint), size, stats,
                train.boxes, test.boxes)


def _cifar(name: str, data_dir: Path, download: bool) -> _Raw:
    train = load_cifar(name, data_dir, train=True, download=download)
    test = load_cifar(name, data_dir, train=False, download=False)
    base = {"dataset": name, "files": train.files}
    return _Raw(train, test, _index_keys(len(train)), _array_identity(base), 32, CIFAR_STATS[name])


def _folder_identity(files: ImageFiles) -> Callable[[list[int], bool], Any]:
    return lambda idx, split: {"files": files.identity(idx)}


def _imagefolder(data_dir: Path, val_data: Any, need_eval: bool, what: str = "data_dir", own_size: bool = True) -> _Raw:
    train = ImageFiles(data_dir, what=what)
    if len(train.classes) == 1:
        warnings.warn(f"{what} folder {str(data_dir)!r} has one class folder ({train.classes[0]!r}): every label is "
                      "the same, so the model can learn nothing; give a folder of class folders (<folder>/<class>/"
                      "<image>.jpg), not one class's folder", stacklevel=4)
    test = ImageFiles(val_data, classes=train.classes, what="val_data") if val_data is not None else None
    if test is None and need_eval:
        raise DatasetError(f"imagefolder {str(data_dir)!r} has no evaluation set: pass val_fraction (e.g. 0.1) to "
                           "hold out part of it, or val_data=<folder of the same class folders>")
    keys = lambda: [Path(os.path.relpath(p, train.root)).as_posix() for p in train.paths]  # noqa: E731
    return _Raw(train, test, keys, _folder_identity(train), _native_side(train, what) if own_size else None,
                IMAGENET_STATS)


def _native_side(files: ImageFiles, what: str) -> int:
    """An image folder's own size: the median shorter side over ``ImageFiles.shorter_sides`` (never one file's)."""
    sides = files.shorter_sides()
    ordered = sorted(sides.values())
    side = ordered[(len(ordered) - 1) // 2]  # the lower median: a size some image really has
    if side > MAX_IMAGE_SIZE:
        raise DatasetError(f"{what} folder {str(files.root)!r}: its images are {side} px (median shorter side), beyond "
                           f"the largest accepted {MAX_IMAGE_SIZE}; pass --image-size N (e.g. 224) to resize them")
    if ordered[0] != ordered[-1]:
        big = max(sides, key=sides.get)
        warnings.warn(f"{what} folder {str(files.root)!r}: image sizes differ (shorter sides {ordered[0]} to "
                      f"{ordered[-1]} px over {len(ordered)} images read, e.g. {big!r}); using the median, {side} px. "
                      "Pass --image-size N to choose the size yourself", stacklevel=4)
    return side


def _imagenet(data_dir: Path, val_data: Any, need_eval: bool) -> _Raw:
    raw = _imagefolder(data_dir / "train", None, False, what="imagenet train", own_size=False)
    if need_eval:
        raw.eval = ImageFiles(Path(val_data) if val_data is not None else data_dir / "val", classes=raw.train.classes,
                              what="val_data" if val_data is not None else "imagenet val")
    raw.native_size = 224
    return raw


def _check_args(name, data_dir, image_size, val_fraction, val_data, seed, synthetic_size) -> Any:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if image_size is not None and (not is_int(image_size) or image_size < 8):
        raise ValueError(f"image_size must be None (the dataset's own size) or an int >= 8, "
                         f"got image_size={image_size!r}")
    if not is_number(val_fraction) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in [0, 1), got val_fraction={val_fraction!r}")
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got seed={seed!r}")
    if val_data is not None and name not in ("imagefolder", "imagenet"):
        raise ValueError(f"val_data is only for 'imagefolder' and 'imagenet', got val_data={str(val_data)!r} with "
                         f"dataset {name!r}; use val_fraction to hold out part of the training data")
    if val_data is not None and val_fraction > 0:
        raise ValueError(f"give either val_fraction ({val_fraction}) or val_data ({str(val_data)!r}), not both")
    if name in ("imagefolder", "imagenet") and data_dir is None:
        raise ValueError(f"dataset {name!r} needs data_dir: the folder holding the images")
    if not name.startswith("synthetic"):
        if synthetic_size is not None:
            raise ValueError(f"synthetic_size only applies to the synthetic datasets, got synthetic_size="
                             f"{synthetic_size!r} with dataset {name!r}")
        return None
    if synthetic_size is None:
        return SYNTHETIC_SIZES
    if isinstance(synthetic_size, int) and not isinstance(synthetic_size, bool):
        synthetic_size = (synthetic_size, max(synthetic_size // 5, len(SHAPES)))
    sizes = tuple(synthetic_size) if isinstance(synthetic_size, (tuple, list)) else ()
    if len(sizes) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"synthetic_size must be a positive int (training images) or a pair (train, eval), "
                         f"got synthetic_size={synthetic_size!r}")
    return sizes


def build_datasets(name: str, *, data_dir: str | os.PathLike | None = None, image_size: int | None = None,
                   val_fraction: float = 0.0, val_data: str | os.PathLike | None = None, seed: int = 0,
                   download: bool = True, augment: bool = True, attention_cache: Any = None,
                   synthetic_size: int | tuple[int, int] | None = None,
                   train_subset: int | None = None) -> tuple[AugmentedDataset, AugmentedDataset, DatasetInfo]:
    """Build ``(train_ds, eval_ds, info)`` for ``name`` (one of ``DATASETS``).

    ``image_size`` None means the dataset's own size (32 for CIFAR and "synthetic", 64 for "synthetic64",
    224 for ImageNet; for an image folder the median shorter side of up to 1,000 images spread over it, with a
    warning when they differ, refused above 2048 px); the augmentation preset is
    "cifar" up to 64 px, "imagenet" above. ``augment=False`` gives the full image resized to
    ``image_size`` squared (the frame attention caches are computed in). ``data_dir`` defaults to ``./data``
    for CIFAR and is not used by the synthetic datasets. ``seed`` fixes the held-out split (keep it the same
    across training seeds so every run sees the same validation set). ``train_subset=N`` trains on a
    class-stratified, deterministic subset of about N images of the training split (reduced-scale runs).
    """
    sizes = _check_args(name, data_dir, image_size, val_fraction, val_data, seed, synthetic_size)
    held_out = val_fraction > 0
    if name.startswith("synthetic"):
        raw = _synthetic(name, sizes)
    elif name in ("cifar10", "cifar100"):
        raw = _cifar(name, Path(data_dir if data_dir is not None else "data"), download)
    elif name == "imagefolder":
        raw = _imagefolder(Path(data_dir), val_data, need_eval=not held_out, own_size=image_size is None)
    else:
        raw = _imagenet(Path(data_dir), val_data, need_eval=not held_out)

    size = image_size if image_size is not None else raw.native_size
    preset = preset_for_size(size)
    if held_out:
        train_idx, eval_idx = stratified_split(raw.train.targets, raw.keys(), val_fraction=val_fraction, seed=seed)
        eval_source = raw.train
    else:
        train_idx, eval_idx, eval_source = list(range(len(raw.train))), list(range(len(raw.eval))), raw.eval
    if train_subset is not None:
        if not is_int(train_subset) or not 1 <= train_subset <= len(train_idx):
            raise ValueError(f"train_subset must be an int in [1, {len(train_idx)}] (the training split's size), "
                             f"got train_subset={train_subset!r}")
        if train_subset < len(train_idx):
            targets, keys = raw.train.targets, raw.keys()
            _, kept = stratified_split([targets[i] for i in train_idx], [keys[i] for i in train_idx],
                                       val_fraction=train_subset / len(train_idx), seed=seed)
            train_idx = [train_idx[i] for i in kept]

    def boxes(source_boxes: torch.Tensor | None, idx: list[int]) -> torch.Tensor | None:
        # Boxes live in the un-augmented frame: the raw image resized to size x size.
        return None if source_boxes is None else source_boxes[idx] * (size / raw.native_size)

    eval_boxes = raw.train_boxes if held_out else raw.eval_boxes
    train_ds = AugmentedDataset(raw.train, train_idx,
                                train_transform(preset, size) if augment else frame_transform(size),
                                attention=attention_cache, boxes=boxes(raw.train_boxes, train_idx))
    eval_ds = AugmentedDataset(eval_source, eval_idx, eval_transform(preset, size), boxes=boxes(eval_boxes, eval_idx))
    mean, std = raw.stats
    info = DatasetInfo(name=name, num_classes=len(raw.train.classes), image_size=size, mean=tuple(mean), std=tuple(std),
                       classes=list(raw.train.classes),
                       train_fingerprint=_sha256(raw.identity(train_idx, held_out or train_subset is not None)),
                       num_train=len(train_ds), preset=preset)
    return train_ds, eval_ds, info
