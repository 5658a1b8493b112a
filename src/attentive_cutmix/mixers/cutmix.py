"""CutMix (Yun et al., ICCV 2019): one random box per sample, pasted from the partner at the same place.

``lam ~ Beta(alpha, alpha)`` per sample is the fraction kept; the box has area ``1 - lam`` around a uniform
centre, is clipped at the border, and the label weight is the clipped box's real area (timm's
``correct_lam=True``, torchvision v2's behaviour).
"""
from __future__ import annotations

import torch

from ..registry import Method, register
from .base import BetaMixer, BetaOptions, beta_sample, mix_targets
from .geometry import BoxMixer, box_area_fraction, boxes_to_mask, centred_boxes, paste, paste_masks, uniform_centres

__all__ = ["CutMix"]


class CutMix(BoxMixer, BetaMixer):
    """CutMix: each sample draws its own ``lam`` and box; ``lam`` is corrected to the clipped box's exact area."""

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        # The sampled lam is the fraction *kept*, as in the paper; the pasted box has area 1 - lam.
        area = 1.0 - beta_sample(self.alpha, batch_size, generator)
        params["boxes"] = centred_boxes(area, *uniform_centres(batch_size, height, width, generator), height, width)
        return params

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        perm, boxes = params["perm"], params["boxes"]
        pixel_mask = boxes_to_mask(boxes, h, w)
        out = (paste(images, perm, pixel_mask), mix_targets(targets, perm, box_area_fraction(boxes, h, w)))
        return out + ((paste_masks(masks, perm, pixel_mask),) if masks is not None else ())


register(Method("cutmix", "CutMix", BetaOptions, build=CutMix.from_options, mixer=CutMix, demo=True, order=20,
                example={"alpha": 1.0}))
