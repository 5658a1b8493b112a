"""Localisation: how much of what a mixer takes from its partner lies on the partner's object, for any method.

Every mixer answers ``region(params, H, W, maps)``: the pixels of each output it replaced. On a dataset with
ground-truth boxes (the embedded synthetic one) we measure, per image, the fraction of those pixels inside the
partner's object box (the box of the image it took them from; for Cutout, which takes nothing, the image's own box).
A paste at the same location (CutMix, Attentive CutMix, random cells, SaliencyMix, FMix) compares like with like; a
method that resizes what it pastes (ResizeMix, SnapMix) is measured where the paste lands, not what it carries. The
reference is a box of the same area as each region (the image's aspect ratio, placed uniformly and fully inside the
image): what chance placement of that much area would hit. The maps a guided mixer reads come from ``extractor``
(``guidance_source == "attention"``), the images themselves (``"image"``) or ``model`` (``"model"``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ..mixers.base import Mixer, channel_attention
from ..mixers.geometry import boxes_to_mask

__all__ = ["box_mask", "pasted_hit_rate", "random_box_masks", "region_hit_rates"]


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


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else float("nan")


def _nansem(values: torch.Tensor) -> float:
    """Standard error of the mean over images (NaNs, empty pastes, left out)."""
    kept = values[~values.isnan()].to(torch.float64)
    return float(kept.std() / kept.numel() ** 0.5) if kept.numel() > 1 else float("nan")


def _maps(mixer: Mixer, images: torch.Tensor, labels: torch.Tensor,
          extractor: Callable[[torch.Tensor], torch.Tensor] | None, model: torch.nn.Module | None) -> Any:
    source = mixer.guidance_source
    if source == "attention":
        if extractor is None and getattr(mixer, "extractor", None) is None:
            raise ValueError(f"{type(mixer).__name__} reads attention maps: pass extractor= (the run's extractor)")
        return channel_attention(extractor(images)) if extractor is not None else mixer.guide(images, labels)
    if source == "model":
        if model is None:
            raise ValueError(f"{type(mixer).__name__} reads the model being trained: pass model= (e.g. the run's "
                             "final weights loaded into its architecture)")
        return mixer.guide(images, labels, model=model)
    return mixer.guide(images, labels)  # "image": from the batch itself; "none": None


@torch.no_grad()
def region_hit_rates(mixer: Mixer, dataset: Dataset, *, extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     model: torch.nn.Module | None = None, boxes: torch.Tensor | None = None, batch_size: int = 256,
                     seed: int = 0, device: torch.device | str | None = None) -> dict[str, Any] | None:
    """Mean hit rate of ``mixer``'s region on the partner's object box, and of area-matched random boxes.

    ``dataset`` yields un-augmented ``(image, label, ...)`` in [0, 1] with ground-truth boxes (``boxes``, or
    ``dataset_boxes(dataset)``) in the same frame. Returns ``{"hit", "hit_se", "random", "random_se", "area",
    "images"}`` (means over images of the per-image fraction, their standard errors, the mean region area fraction),
    or ``None`` for a mixer without a region (MixUp). Draws come from ``seed`` alone.
    """
    if not isinstance(mixer, Mixer):
        raise TypeError(f"mixer must be a Mixer (e.g. registry.make_mixer(...)), got {type(mixer).__name__}")
    if boxes is None:
        # Imported here: data loads torchvision, and this package is imported by `attentive-cutmix demo --help`.
        from ..data import dataset_boxes

        boxes = dataset_boxes(dataset)
    if len(boxes) != len(dataset):
        raise ValueError(f"boxes has {len(boxes)} rows but the dataset has {len(dataset)} images")
    device = torch.device(device) if device is not None else torch.device("cpu")
    generator, box_generator = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    hits, random, areas, start = [], [], [], 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images, labels = batch[0].to(device), batch[1].to(device)
        n, _, height, width = images.shape
        params = {k: v.to(device) for k, v in mixer.make_params(n, height, width, generator).items()}
        region = mixer.region(params, height, width, _maps(mixer, images, labels, extractor, model))
        if region is None:
            return None
        own = boxes[start:start + n].to(device)
        start += n
        partner = own.index_select(0, params["perm"]) if "perm" in params else own
        hits.append(pasted_hit_rate(region, partner).cpu())
        area = region.flatten(1).sum(1)
        areas.append(area.cpu().double() / (height * width))
        boxed = random_box_masks(area, height, width, generator=box_generator)
        random.append(pasted_hit_rate(boxed.to(device), partner).cpu())
    hit, rnd = torch.cat(hits), torch.cat(random)
    return {"hit": _nanmean(hit), "hit_se": _nansem(hit), "random": _nanmean(rnd), "random_se": _nansem(rnd),
            "area": float(torch.cat(areas).mean()), "images": int(hit.numel())}
