"""Augmentation presets (torchvision.transforms.v2) that move an attention map with its image.

Every preset is geometric only, plus ``ToImage`` and ``ToDtype(float32, scale=True)`` at the ends, so
``t(image, attention)`` with ``attention`` wrapped as a 1-channel float ``tv_tensors.Image`` crops, flips and
resizes both with the same random parameters. The attention map is bilinear-resized like the image and
zero-filled where the crop pads; ``ToDtype`` leaves it unchanged because it is already float32.

- ``"cifar"`` train: RandomCrop(size, padding=4) + RandomHorizontalFlip; eval: the image as is.
- ``"imagenet"`` train: RandomResizedCrop(size) + RandomHorizontalFlip; eval: Resize(int(size / 0.875))
  + CenterCrop(size).

The ``"cifar"`` preset starts with ``Resize((size, size))``: a no-op (no copy) for images already at
``size``, so folders of other-sized images still give same-sized batches.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..constants import SMALL_IMAGE_MAX, is_int

__all__ = ["PRESETS", "train_transform", "eval_transform", "frame_transform", "preset_for_size"]

PRESETS = ("cifar", "imagenet")


def _check(preset: str, image_size: int) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if not is_int(image_size) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got image_size={image_size!r}")


def preset_for_size(image_size: int) -> str:
    """``"cifar"`` for images of at most 64 px, ``"imagenet"`` above."""
    return "cifar" if image_size <= SMALL_IMAGE_MAX else "imagenet"


def _wrap(ops: list) -> v2.Compose:
    # Geometric ops run on uint8 (cheaper); the float conversion touches images only.
    return v2.Compose([v2.ToImage(), *ops, v2.ToDtype(torch.float32, scale=True)])


def train_transform(preset: str, image_size: int) -> v2.Compose:
    """Random training augmentation of ``preset`` producing ``image_size`` x ``image_size`` float images in [0, 1]."""
    _check(preset, image_size)
    if preset == "cifar":
        ops = [v2.Resize((image_size, image_size)), v2.RandomCrop(image_size, padding=4, fill=0),
               v2.RandomHorizontalFlip()]
    else:
        ops = [v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip()]
    return _wrap(ops)


def eval_transform(preset: str, image_size: int) -> v2.Compose:
    """Deterministic evaluation transform of ``preset``."""
    _check(preset, image_size)
    if preset == "cifar":
        return _wrap([v2.Resize((image_size, image_size))])
    return _wrap([v2.Resize(int(image_size / 0.875)), v2.CenterCrop(image_size)])


def frame_transform(image_size: int) -> v2.Compose:
    """No augmentation: the full image resized to ``image_size`` x ``image_size`` (the attention cache's frame)."""
    _check("cifar", image_size)
    return _wrap([v2.Resize((image_size, image_size))])
