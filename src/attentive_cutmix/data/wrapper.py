"""``AugmentedDataset``: a split of a raw dataset, its transform, and optionally cached attention maps.

The raw dataset yields un-transformed ``(uint8 tv_tensors.Image, label)``. With an attention cache, map ``i``
(the extractor's grid, e.g. 8x8) is bilinear-upsampled to the raw image's size and passed through the
*same* transform call as the image, so a crop or flip moves it exactly as it moves the pixels.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors

from .transforms import frame_transform

__all__ = ["AugmentedDataset", "dataset_boxes", "attention_in_image_frame", "frame_view", "with_attention"]


def attention_in_image_frame(attention: torch.Tensor, height: int, width: int) -> tv_tensors.Image:
    """(h, w) map -> float32 1-channel ``tv_tensors.Image`` (1, height, width), bilinear-upsampled."""
    if not isinstance(attention, torch.Tensor) or attention.ndim != 2:
        shape = tuple(attention.shape) if isinstance(attention, torch.Tensor) else type(attention).__name__
        raise ValueError(f"attention_cache items must be (h, w) tensors, got {shape}")
    grid = attention.to(torch.float32)[None, None]
    if grid.shape[-2:] != (height, width):
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
    return tv_tensors.Image(grid[0])


class AugmentedDataset(Dataset):
    """Positions ``0..len-1`` map to ``source[indices[i]]``; items are ``(image, label)`` or, with
    ``attention``, ``(image, label, attention)`` where ``attention[i]`` belongs to position ``i``."""

    def __init__(self, source: Dataset, indices: Sequence[int], transform: Callable, *, attention: Any = None,
                 boxes: torch.Tensor | None = None) -> None:
        self.source, self.indices, self.transform = source, list(indices), transform
        self.classes = list(source.classes)
        self.targets = [source.targets[i] for i in self.indices]
        if attention is not None:
            if not (hasattr(attention, "__len__") and hasattr(attention, "__getitem__")):
                raise TypeError(f"attention_cache must support len() and [i], got {type(attention).__name__}")
            if len(attention) != len(self.indices):
                raise ValueError(f"attention_cache has {len(attention)} maps but the training split has "
                                 f"{len(self.indices)} images; build the cache on this dataset and split "
                                 "(same val_fraction, split seed and train_subset)")
        self.attention = attention
        if boxes is not None:
            self.boxes = boxes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.source[self.indices[index]]
        if self.attention is None:
            return self.transform(image).as_subclass(torch.Tensor), label
        attention = attention_in_image_frame(self.attention[index], *image.shape[-2:])
        image, attention = self.transform(image, attention)
        # Plain tensors out: tv_tensors subclasses would ride through collate and the trainer for nothing.
        return image.as_subclass(torch.Tensor), label, attention[0].as_subclass(torch.Tensor)


def frame_view(dataset: AugmentedDataset, image_size: int) -> AugmentedDataset:
    """The same split un-augmented: each image resized to ``image_size`` squared (the frame attention caches use)."""
    return AugmentedDataset(dataset.source, dataset.indices, frame_transform(image_size),
                            boxes=getattr(dataset, "boxes", None))


def with_attention(dataset: AugmentedDataset, attention: Any) -> AugmentedDataset:
    """The same split and transform whose items carry ``attention[i]`` (checked to have one map per item)."""
    return AugmentedDataset(dataset.source, dataset.indices, dataset.transform, attention=attention,
                            boxes=getattr(dataset, "boxes", None))


def dataset_boxes(ds: Dataset) -> torch.Tensor:
    """Ground-truth XYXY boxes (N, 4) aligned with ``ds``'s positions (follows ``torch.utils.data.Subset``)."""
    if isinstance(ds, Subset):
        return dataset_boxes(ds.dataset)[torch.as_tensor(ds.indices, dtype=torch.long)]
    boxes = getattr(ds, "boxes", None)
    if boxes is None:
        raise TypeError(f"{type(ds).__name__} has no ground-truth boxes; only the synthetic datasets "
                        "('synthetic', 'synthetic2', 'synthetic64') have them")
    return boxes
