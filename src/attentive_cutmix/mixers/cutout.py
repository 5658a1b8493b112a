"""Cutout (DeVries & Taylor, 2017): a ``size x size`` square per sample set to ``fill``; labels unchanged.

The centre is uniform over the image and the square is clipped at the border, as in the original. With
``masks=``, the square's label pixels become ``ignore_index`` (nothing is there to segment).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..constants import is_number
from ..registry import Method, MixerOptions, option, register
from .base import LabelsGetter, check_int
from .geometry import BoxMixer, boxes_to_mask, uniform_centres

__all__ = ["Cutout", "CutoutOptions"]


class Cutout(BoxMixer):
    """Cutout: erases a square per sample; its ``region`` is the erased square (nothing comes from a partner)."""

    _repr_fields = ("size", "fill")
    needs_partner = False  # it erases: a batch of one is cut out like any other

    def __init__(self, num_classes: int, *, size: int = 16, fill: float = 0.0, prob: float = 1.0,
                 label_smoothing: float = 0.0, ignore_index: int = -100,
                 labels_getter: str | LabelsGetter = "default", target_format: str = "dense") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, labels_getter=labels_getter,
                         target_format=target_format)
        self.size = check_int("size", size, minimum=1, hint=" (side of the square in pixels)")
        if not is_number(fill) or not math.isfinite(fill):
            raise ValueError(f"fill must be a finite number (the value of the cut-out pixels), got fill={fill!r}")
        self.fill = float(fill)
        self.ignore_index = check_int("ignore_index", ignore_index, minimum=-2 ** 63, maximum=2 ** 63 - 1,
                                      hint=" (the int64 label written into masks=)")

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        cy, cx = uniform_centres(batch_size, height, width, generator)
        half = self.size // 2
        boxes = torch.stack([(cy - half).clamp(0, height), (cy - half + self.size).clamp(0, height),
                             (cx - half).clamp(0, width), (cx - half + self.size).clamp(0, width)], dim=1)
        return {"boxes": boxes}

    def _check_fits(self, images: torch.Tensor, masks: torch.Tensor | None) -> None:
        # masked_fill would raise a bare overflow error (fp16 fill) or wrap around (-100 in uint8 masks is 156).
        if images.is_floating_point() and abs(self.fill) > torch.finfo(images.dtype).max:
            raise ValueError(f"fill={self.fill:g} does not fit the images' dtype {images.dtype} (largest "
                             f"{torch.finfo(images.dtype).max:g}); give a smaller fill or images in float32")
        if masks is not None:
            info = torch.iinfo(masks.dtype)
            if not info.min <= self.ignore_index <= info.max:
                raise ValueError(f"ignore_index={self.ignore_index} does not fit masks of dtype {masks.dtype} "
                                 f"([{info.min}, {info.max}]); give masks.long(), or an ignore_index in that range "
                                 f"(e.g. {info.max} for {masks.dtype})")

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        self._check_fits(images, masks)
        pixel_mask = boxes_to_mask(params["boxes"], h, w)
        out = (images.masked_fill(pixel_mask.unsqueeze(1), self.fill), targets)
        return out + ((masks.masked_fill(pixel_mask, self.ignore_index),) if masks is not None else ())


@dataclass(frozen=True)
class CutoutOptions(MixerOptions):
    """Cutout's options (``--cutout-size``)."""

    cutout_size: int = option(16, "square side in pixels", minimum=1, limit=2048)


def _build(options: CutoutOptions, *, num_classes: int, label_smoothing: float, extractor: Any) -> Cutout:
    return Cutout(num_classes, size=options.cutout_size, prob=options.prob, label_smoothing=label_smoothing)


register(Method("cutout", "Cutout", CutoutOptions, build=_build, mixer=Cutout, order=30, example={"cutout_size": 8}))
