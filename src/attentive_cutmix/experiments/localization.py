"""Attention localisation: how much of what a mixer pastes lies on the partner's object.

Attentive CutMix pastes a partner's most attended cells; CutMix pastes a random box. On a dataset with
ground-truth boxes (the embedded synthetic one) we measure, per pasted region, the fraction of its pixels
inside the partner's object box. The pasted pixels come from the partner at the *same* location, so the
region is compared with the partner's own box in the partner's un-augmented frame. The random baseline
pastes a box of the same area as the attentive region (CutMix's shape: the image's aspect ratio, placed
uniformly and fully inside the image), so both rates are at the same lambda per sample. A second baseline
pastes ``num_patches`` cells of the same grid drawn uniformly (the random cells of the control method).
``compare_extractors`` puts several extractors (a CNN's channel mean, a ViT's channel mean or class-token
attention) side by side.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..mixers.attentive import attention_to_grid, top_cells
from ..mixers.geometry import boxes_to_mask, cells_to_pixel_mask

__all__ = [
    "attentive_masks",
    "box_mask",
    "compare_extractors",
    "localization_hit_rates",
    "pasted_hit_rate",
    "random_box_masks",
    "random_cell_masks",
]


def _check_boxes(boxes: torch.Tensor, batch: int | None = None) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a (B, 4) XYXY tensor, got {shape}")
    if batch is not None and boxes.shape[0] != batch:
        raise ValueError(f"boxes has {boxes.shape[0]} rows but the masks have batch size {batch}")


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H, W) bool: pixels whose centre lies in the XYXY box (pixel edges, so integer boxes are exact)."""
    _check_boxes(boxes)
    b = boxes.to(torch.float32)
    ys = torch.arange(height, device=b.device, dtype=torch.float32).view(1, height, 1) + 0.5
    xs = torch.arange(width, device=b.device, dtype=torch.float32).view(1, 1, width) + 0.5
    x0, y0, x1, y1 = (b[:, k].view(-1, 1, 1) for k in range(4))
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


def pasted_hit_rate(mask: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per sample, the fraction of the pasted pixels ``mask`` (B, H, W) inside ``boxes`` (B, 4) XYXY.

    Returns float32 (B,); NaN where nothing was pasted (an empty mask has no hit rate).
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a (B, H, W) tensor of pasted pixels, got {shape}")
    _check_boxes(boxes, mask.shape[0])
    mask = mask.bool()
    inside = box_mask(boxes.to(mask.device), *mask.shape[-2:])
    pasted = mask.flatten(1).sum(1).to(torch.float32)
    hits = (mask & inside).flatten(1).sum(1).to(torch.float32)
    return torch.where(pasted > 0, hits / pasted.clamp_min(1), torch.full_like(pasted, float("nan")))


def attentive_masks(attention: torch.Tensor, *, num_patches: int, grid_size: int, height: int,
                    width: int) -> torch.Tensor:
    """(B, H, W) bool: the ``num_patches`` most attended cells of each map, as Attentive CutMix pastes them."""
    return cells_to_pixel_mask(top_cells(attention_to_grid(attention, grid_size), num_patches), height, width)


def random_box_masks(areas: torch.Tensor, height: int, width: int, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W) bool: one box per sample of about ``areas[i]`` pixels, the image's aspect ratio, fully inside."""
    areas = areas.to(torch.float64).cpu()
    h = (areas * height / width).sqrt().round().clamp(1, height)
    w = (areas / h).round().clamp(1, width)
    h, w = h.long(), w.long()
    y0 = (torch.rand(areas.shape, generator=generator, dtype=torch.float64) * (height - h + 1)).floor().long()
    x0 = (torch.rand(areas.shape, generator=generator, dtype=torch.float64) * (width - w + 1)).floor().long()
    return boxes_to_mask(torch.stack([y0, y0 + h, x0, x0 + w], 1), height, width)


def random_cell_masks(batch: int, *, num_patches: int, grid_size: int, height: int, width: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W) bool: ``num_patches`` cells of the grid per sample, drawn uniformly without replacement."""
    scores = torch.rand(batch, grid_size, grid_size, generator=generator)
    return cells_to_pixel_mask(top_cells(scores, num_patches), height, width)


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else float("nan")


def _nansem(values: torch.Tensor) -> float:
    """Standard error of the mean over images (NaNs, empty pastes, left out)."""
    kept = values[~values.isnan()].to(torch.float64)
    return float(kept.std() / kept.numel() ** 0.5) if kept.numel() > 1 else float("nan")


@torch.no_grad()
def localization_hit_rates(extractor: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, *, num_patches: int = 6,
                           grid_size: int = 7, batch_size: int = 256, seed: int = 0,
                           device: torch.device | str | None = None,
                           boxes: torch.Tensor | None = None) -> dict[str, Any]:
    """Mean pasted-pixel hit rate of Attentive CutMix (``extractor``'s top cells), area-matched random boxes and
    random cells.

    ``dataset`` yields un-augmented ``(image, label, ...)`` in [0, 1] with ground-truth boxes (``boxes``, or
    ``dataset_boxes(dataset)``) in the same frame. Rates are means over images of the per-image fraction;
    ``*_se`` are their standard errors over images. ``extractor`` returns (B, C, h, w) features (channel mean
    taken) or (B, h, w) maps.
    """
    if boxes is None:
        # Imported here: data loads torchvision, and this package is imported by `attentive-cutmix demo --help`.
        from ..data import dataset_boxes

        boxes = dataset_boxes(dataset)
    if len(boxes) != len(dataset):
        raise ValueError(f"boxes has {len(boxes)} rows but the dataset has {len(dataset)} images")
    device = torch.device(device) if device is not None else next(
        (p.device for p in getattr(extractor, "parameters", lambda: iter(()))()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    # Its own stream, so the random boxes stay what they were before this baseline existed.
    cell_generator = torch.Generator().manual_seed(seed + 1)
    attentive, random, cells, start = [], [], [], 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images = batch[0].to(device)
        n, _, height, width = images.shape
        box = boxes[start:start + n].to(device)
        start += n
        mask = attentive_masks(extractor(images), num_patches=num_patches, grid_size=grid_size, height=height,
                               width=width)
        attentive.append(pasted_hit_rate(mask, box).cpu())
        areas = mask.flatten(1).sum(1)
        boxed = random_box_masks(areas, height, width, generator=generator)
        random.append(pasted_hit_rate(boxed.to(device), box).cpu())
        drawn = random_cell_masks(n, num_patches=num_patches, grid_size=grid_size, height=height, width=width,
                                  generator=cell_generator)
        cells.append(pasted_hit_rate(drawn.to(device), box).cpu())
    att, rnd, cel = torch.cat(attentive), torch.cat(random), torch.cat(cells)
    return {"attentive": _nanmean(att), "random": _nanmean(rnd), "random_cells": _nanmean(cel),
            "attentive_se": _nansem(att), "random_se": _nansem(rnd), "random_cells_se": _nansem(cel),
            "images": int(att.numel()), "num_patches": num_patches, "grid_size": grid_size}


def compare_extractors(extractors: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], dataset: Dataset, *,
                       num_patches: int = 6, grid_size: int = 7, batch_size: int = 256, seed: int = 0,
                       device: torch.device | str | None = None) -> list[dict[str, Any]]:
    """``localization_hit_rates`` of each named extractor on the same images, boxes and random draws.

    Returns one row per extractor (``{"extractor": name, **rates}``), in the mapping's order; the random
    baselines use the same ``seed`` in every row, so they are the same draws throughout.
    """
    if not isinstance(extractors, Mapping) or not extractors:
        raise ValueError(f"extractors must be a non-empty mapping of name -> extractor, got {extractors!r}")
    from ..data import dataset_boxes

    boxes = dataset_boxes(dataset)
    return [{"extractor": name, **localization_hit_rates(ext, dataset, num_patches=num_patches, grid_size=grid_size,
                                                          batch_size=batch_size, seed=seed, device=device, boxes=boxes)}
            for name, ext in extractors.items()]
