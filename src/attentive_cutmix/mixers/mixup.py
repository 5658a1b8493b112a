"""MixUp (Zhang et al., ICLR 2018): ``x = (1 - lam) * x_i + lam * x_perm[i]``, per-sample ``lam ~ Beta(alpha, alpha)``.

It blends whole images, so it has no region and refuses per-pixel label maps (``masks=``).
"""
from __future__ import annotations

import torch

from ..registry import Method, register
from .base import BetaMixer, BetaOptions, beta_sample, check_rows, mix_targets

__all__ = ["MixUp"]


class MixUp(BetaMixer):
    """MixUp with a per-sample ``lam`` (timm's ``mode="elem"``, without its one-λ-per-batch default)."""

    accepts_masks = False
    has_region = False

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        params["lam"] = beta_sample(self.alpha, batch_size, generator)
        return params

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        lam = params["lam"]
        check_rows("lam", (lam >= 0) & (lam <= 1), lam, "must hold mixing weights in [0, 1]")

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> None:
        return None  # every pixel is a blend: no region comes from the partner alone

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        perm, lam = params["perm"], params["lam"]
        weight = lam.to(images.dtype).view(-1, 1, 1, 1)
        mixed = torch.lerp(images, images.index_select(0, perm), weight)
        return mixed, mix_targets(targets, perm, lam)


register(Method("mixup", "MixUp", BetaOptions, build=MixUp.from_options, mixer=MixUp, demo=True, order=10,
                example={"alpha": 1.0}))
