"""The paper's comparison methods: CutMix, MixUp and Cutout, with the same call as ``AttentiveCutMix``.

``mixed, targets = mixer(images, labels, attention=None, *, masks=None, generator=None)``: ``attention`` is
accepted (and ignored) so that the mixers are interchangeable in a training loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ._mixer import (
    LabelsGetter,
    Mixer,
    beta_sample,
    boxes_to_mask,
    check_alpha,
    check_boxes,
    check_int,
    check_rows,
    mix_targets,
    paste,
    paste_masks,
)
from .constants import is_number
from .registry import Method, MixerOptions, option, register

__all__ = ["CutMix", "MixUp", "Cutout", "boxes_to_mask", "BetaOptions", "CutoutOptions"]


def _random_boxes(lam: torch.Tensor, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, 4) int boxes (y0, y1, x0, x1) of area ~ lam*H*W with a uniform centre, clipped to the image."""
    device = lam.device
    ratio = torch.sqrt(lam.to(torch.float64))
    cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
    cy = torch.randint(0, height, (lam.shape[0],), generator=generator, device=device)
    cx = torch.randint(0, width, (lam.shape[0],), generator=generator, device=device)
    y0, y1 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    x0, x1 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    return torch.stack([y0, y1, x0, x1], dim=1)


class _BetaMixer(Mixer):
    """A mixer whose per-sample ``lam`` is drawn from Beta(alpha, alpha) (CutMix, MixUp)."""

    _repr_fields = ("alpha",)

    def __init__(self, num_classes: int, *, alpha: float = 1.0, prob: float = 1.0, label_smoothing: float = 0.0,
                 labels_getter: str | LabelsGetter = "default") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, labels_getter=labels_getter)
        self.alpha = check_alpha(alpha)


class CutMix(_BetaMixer):
    """CutMix (Yun et al., 2019): one random box per sample, ``lam ~ Beta(alpha, alpha)``.

    Each sample draws its own ``lam`` and box; ``lam`` is then corrected to the clipped box's real
    area (timm's ``correct_lam=True``, torchvision v2's behaviour).
    """

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        # The sampled lam is the fraction *kept*, as in the paper; the pasted box has area 1 - lam.
        params["boxes"] = _random_boxes(1.0 - beta_sample(self.alpha, batch_size, generator), height, width, generator)
        return params

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        check_boxes(params["boxes"], height, width)

    def apply(self, images: torch.Tensor, targets: torch.Tensor, params: dict[str, torch.Tensor],
              attention: torch.Tensor | None, masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        perm, boxes = params["perm"], params["boxes"]
        y0, y1, x0, x1 = boxes.unbind(1)
        lam = ((y1 - y0) * (x1 - x0)).to(torch.float32) / (h * w)  # area of the clipped box: exact
        pixel_mask = boxes_to_mask(boxes, h, w)
        out = (paste(images, perm, pixel_mask), mix_targets(targets, perm, lam))
        return out + ((paste_masks(masks, perm, pixel_mask),) if masks is not None else ())


class MixUp(_BetaMixer):
    """MixUp (Zhang et al., 2018): ``x = (1 - lam) * x_i + lam * x_perm[i]`` with per-sample
    ``lam ~ Beta(alpha, alpha)``."""

    accepts_masks = False

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        params["lam"] = beta_sample(self.alpha, batch_size, generator)
        return params

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        lam = params["lam"]
        check_rows("lam", (lam >= 0) & (lam <= 1), lam, "must hold mixing weights in [0, 1]")

    def apply(self, images: torch.Tensor, targets: torch.Tensor, params: dict[str, torch.Tensor],
              attention: torch.Tensor | None, masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        perm, lam = params["perm"], params["lam"]
        weight = lam.to(images.dtype).view(-1, 1, 1, 1)
        mixed = torch.lerp(images, images.index_select(0, perm), weight)
        return mixed, mix_targets(targets, perm, lam)


class Cutout(Mixer):
    """Cutout (DeVries & Taylor, 2017): a ``size x size`` square per sample set to ``fill``; labels unchanged.

    The centre is uniform over the image and the square is clipped at the border, as in the original.
    With ``masks=``, the square's label pixels become ``ignore_index`` (nothing is there to segment).
    """

    _repr_fields = ("size", "fill")

    def __init__(self, num_classes: int, *, size: int = 16, fill: float = 0.0, prob: float = 1.0,
                 label_smoothing: float = 0.0, ignore_index: int = -100,
                 labels_getter: str | LabelsGetter = "default") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, labels_getter=labels_getter)
        self.size = check_int("size", size, minimum=1, hint=" (side of the square in pixels)")
        if not is_number(fill) or not math.isfinite(fill):
            raise ValueError(f"fill must be a finite number (the value of the cut-out pixels), got fill={fill!r}")
        self.fill = float(fill)
        self.ignore_index = check_int("ignore_index", ignore_index, minimum=-2 ** 63, maximum=2 ** 63 - 1,
                                      hint=" (the int64 label written into masks=)")

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        device = generator.device if generator is not None else torch.device("cpu")
        cy = torch.randint(0, height, (batch_size,), generator=generator, device=device)
        cx = torch.randint(0, width, (batch_size,), generator=generator, device=device)
        half = self.size // 2
        boxes = torch.stack([(cy - half).clamp(0, height), (cy - half + self.size).clamp(0, height),
                             (cx - half).clamp(0, width), (cx - half + self.size).clamp(0, width)], dim=1)
        return {"boxes": boxes}

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        check_boxes(params["boxes"], height, width)

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

    def apply(self, images: torch.Tensor, targets: torch.Tensor, params: dict[str, torch.Tensor],
              attention: torch.Tensor | None, masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        self._check_fits(images, masks)
        pixel_mask = boxes_to_mask(params["boxes"], h, w)
        out = (images.masked_fill(pixel_mask.unsqueeze(1), self.fill), targets)
        return out + ((masks.masked_fill(pixel_mask, self.ignore_index),) if masks is not None else ())


# --------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class BetaOptions(MixerOptions):
    """MixUp's and CutMix's options (``--alpha``)."""

    alpha: float = option(1.0, "Beta(alpha, alpha)", above=0.0)


@dataclass(frozen=True)
class CutoutOptions(MixerOptions):
    """Cutout's options (``--cutout-size``)."""

    cutout_size: int = option(16, "square side in pixels", minimum=1, limit=2048)


def _beta(cls: type[_BetaMixer]) -> Any:
    def build(options: BetaOptions, *, num_classes: int, label_smoothing: float, extractor: Any) -> _BetaMixer:
        return cls(num_classes, alpha=options.alpha, prob=options.prob, label_smoothing=label_smoothing)

    return build


def _cutout(options: CutoutOptions, *, num_classes: int, label_smoothing: float, extractor: Any) -> Cutout:
    return Cutout(num_classes, size=options.cutout_size, prob=options.prob, label_smoothing=label_smoothing)


register(Method("mixup", "MixUp", BetaOptions, build=_beta(MixUp), mixer=MixUp, demo=True, order=10))
register(Method("cutmix", "CutMix", BetaOptions, build=_beta(CutMix), mixer=CutMix, demo=True, order=20))
register(Method("cutout", "Cutout", CutoutOptions, build=_cutout, mixer=Cutout, order=30))
