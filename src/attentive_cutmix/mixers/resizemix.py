"""ResizeMix (Qin et al., 2020, arXiv:2012.11101): the *whole* partner, shrunk into a box of the image.

Per sample a scale ``tau ~ U[scale_min, scale_max]`` (the paper's and OpenMixup's ``scope=(0.1, 0.8)``) gives a
box of ``int(tau * H) x int(tau * W)`` pixels (truncated, as OpenMixup's ``rand_bbox_tao``), placed uniformly *fully
inside* the image; the partner ``perm[i]`` is resized to the box and pasted there. The partner's label weight is the
box's exact area fraction (OpenMixup: "adjust lambda to exactly match pixel ratio"). Resizing is nearest-neighbour
by default (OpenMixup's ``interpolate_mode="nearest"``), bit-identical to ``F.interpolate(partner, (bh, bw))``;
``interpolation="bilinear"`` matches ``F.interpolate(..., mode="bilinear", align_corners=False)``.

Differences from OpenMixup, on purpose: a scale and box per sample (OpenMixup draws one for the batch), and the box
stays inside the image (OpenMixup centres it uniformly and clips it, squashing the partner at the border).
Every sample is resized in one batched pass: per-sample source-index maps and two gathers, no loop over the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..constants import is_number
from ..registry import Method, MixerOptions, option, register
from .base import LabelsGetter, Mixer, check_rows, mix_targets
from .geometry import box_area_fraction, boxes_to_mask, check_boxes

__all__ = ["ResizeMix", "ResizeMixOptions", "INTERPOLATIONS"]

INTERPOLATIONS = ("nearest", "bilinear")


def _axis_taps(start: torch.Tensor, length: torch.Tensor, size: int, mode: str,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output coordinate of a (B,) box ``[start, start + length)`` on an axis of ``size`` pixels: the two
    source pixels of the whole partner and the weight of the second, as ``F.interpolate`` computes them.

    Coordinates outside the box get valid (clamped) indices; the paste masks them out.
    """
    dst = torch.arange(size, device=start.device).view(1, -1) - start.view(-1, 1)
    # float32 scale and products, as PyTorch's upsampling kernels compute them: the nearest taps are bit-identical.
    scale = (torch.tensor(float(size), device=start.device) / length.clamp_min(1).to(torch.float32)).view(-1, 1)
    if mode == "nearest":
        first = (dst.to(torch.float32) * scale).floor().long().clamp(0, size - 1)
        return first, first, torch.zeros_like(scale).expand_as(first)
    src = ((dst.to(torch.float32) + 0.5) * scale - 0.5).clamp_min(0.0)  # align_corners=False
    first = src.long().clamp(0, size - 1)
    return first, (first + 1).clamp(max=size - 1), (src - first.to(torch.float32)).clamp(0.0, 1.0)


def _resize_into(source: torch.Tensor, rows: tuple[torch.Tensor, ...], cols: tuple[torch.Tensor, ...]
                 ) -> torch.Tensor:
    """(B, C, H, W) ``source`` resampled at per-sample row and column taps (from ``_axis_taps``): separable, two
    gathers (and two lerps for bilinear)."""
    b, c, h, w = source.shape

    def along(x: torch.Tensor, taps: tuple[torch.Tensor, ...], dim: int) -> torch.Tensor:
        first, second, weight = taps
        view = (b, 1, -1, 1) if dim == 2 else (b, 1, 1, -1)
        out = x.gather(dim, first.view(view).expand(b, c, h, w))
        if first is second:  # nearest: one tap
            return out
        other = x.gather(dim, second.view(view).expand(b, c, h, w))
        return torch.lerp(out, other, weight.view(view).to(x.dtype))

    return along(along(source, rows, 2), cols, 3)


class ResizeMix(Mixer):
    """ResizeMix: each image gets its partner, resized by a per-sample scale ``tau``, pasted in a box inside it."""

    _repr_fields = ("scale_min", "scale_max", "interpolation")

    def __init__(self, num_classes: int, *, scale_min: float = 0.1, scale_max: float = 0.8,
                 interpolation: str = "nearest", prob: float = 1.0, label_smoothing: float = 0.0,
                 labels_getter: str | LabelsGetter = "default") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, labels_getter=labels_getter)
        for name, value in (("scale_min", scale_min), ("scale_max", scale_max)):
            if not is_number(value) or not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1] (the box side as a fraction of the image side; the "
                                 f"paper's range is [0.1, 0.8]), got {name}={value!r}")
        if scale_min > scale_max:
            raise ValueError(f"scale_min must be <= scale_max, got scale_min={scale_min!r} > scale_max={scale_max!r}")
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS} (nearest: OpenMixup's default), got "
                             f"interpolation={interpolation!r}")
        self.interpolation = interpolation

    @classmethod
    def from_options(cls, options: ResizeMixOptions, *, num_classes: int, label_smoothing: float = 0.0,
                     extractor: Any = None) -> ResizeMix:
        return cls(num_classes, scale_min=options.scale_min, scale_max=options.scale_max,
                   interpolation=options.interpolation, prob=options.prob, label_smoothing=label_smoothing)

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        device = generator.device if generator is not None else torch.device("cpu")
        tau = torch.empty(batch_size, dtype=torch.float64, device=device).uniform_(self.scale_min, self.scale_max,
                                                                                  generator=generator)
        box_h, box_w = (height * tau).long(), (width * tau).long()  # truncated, as OpenMixup
        # The top-left corner uniform over the positions that keep the whole box inside the image.
        u = torch.rand(2, batch_size, dtype=torch.float64, generator=generator, device=device)
        y0 = torch.minimum((u[0] * (height - box_h + 1)).long(), height - box_h)
        x0 = torch.minimum((u[1] * (width - box_w + 1)).long(), width - box_w)
        params["boxes"] = torch.stack([y0, y0 + box_h, x0, x0 + box_w], dim=1)
        return params

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        check_boxes(params["boxes"], height, width)
        y0, y1, x0, x1 = params["boxes"].unbind(1)
        # Resizing a whole image into an empty side is undefined unless the box is empty on both axes (nothing pasted).
        check_rows("boxes", ((y1 > y0) & (x1 > x0)) | ((y1 == y0) & (x1 == x0)), params["boxes"],
                   "must hold boxes empty on both axes or on neither (a whole image cannot be resized to zero rows)")

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        perm, boxes = params["perm"], params["boxes"]
        y0, y1, x0, x1 = boxes.unbind(1)
        rows = _axis_taps(y0, y1 - y0, h, self.interpolation)
        cols = _axis_taps(x0, x1 - x0, w, self.interpolation)
        pixel_mask = boxes_to_mask(boxes, h, w)
        resized = _resize_into(images.index_select(0, perm), rows, cols)
        out = (torch.where(pixel_mask.unsqueeze(1), resized, images),
               mix_targets(targets, perm, box_area_fraction(boxes, h, w)))
        if masks is None:
            return out
        if self.interpolation != "nearest":  # labels are never interpolated
            rows, cols = _axis_taps(y0, y1 - y0, h, "nearest"), _axis_taps(x0, x1 - x0, w, "nearest")
        resized_masks = _resize_into(masks.index_select(0, perm).unsqueeze(1), rows, cols).squeeze(1)
        return out + (torch.where(pixel_mask, resized_masks, masks),)

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor:
        """The box: every pixel of it holds (a resampled pixel of) the partner."""
        return boxes_to_mask(params["boxes"], height, width)


@dataclass(frozen=True)
class ResizeMixOptions(MixerOptions):
    """ResizeMix's options (``--scale-min``, ``--scale-max``, ``--interpolation``)."""

    scale_min: float = option(0.1, "smallest box side / image side (the paper's 0.1)", above=0.0, maximum=1.0)
    scale_max: float = option(0.8, "largest box side / image side (the paper's 0.8)", above=0.0, maximum=1.0)
    interpolation: str = option("nearest", "how the partner is resized (nearest: OpenMixup's default)",
                                choices=INTERPOLATIONS)

    def check(self) -> None:
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min={self.scale_min} is above scale_max={self.scale_max}; give "
                             "--scale-min <= --scale-max")


register(Method("resizemix", "ResizeMix", ResizeMixOptions, build=ResizeMix.from_options, mixer=ResizeMix,
                comparisons=(("cutmix", "ResizeMix vs CutMix"),), order=60, example={"scale_min": 0.2}))
