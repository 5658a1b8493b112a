"""A third-party mixing method in one file: paste the partner's centre square (the done-when of issue 30).

tests/test_one_file_method.py installs it as a package with an ``attentive_cutmix.mixers`` entry point and uses it
through every part of the harness, with no other file of the project edited.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from attentive_cutmix.mixers.base import Mixer, mix_targets
from attentive_cutmix.mixers.geometry import box_area_fraction, boxes_to_mask, check_boxes, paste, paste_masks
from attentive_cutmix.registry import Method, MixerOptions, option, register


class CentreSquare(Mixer):
    """Paste the partner's centre square of side ``side * min(H, W)`` at the same place."""

    _repr_fields = ("side",)

    def __init__(self, num_classes: int, *, side: float = 0.5, prob: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing)
        self.side = side

    def make_params(self, batch_size, height, width, generator=None):
        params = super().make_params(batch_size, height, width, generator)
        s = max(1, int(self.side * min(height, width)))
        y0, x0 = (height - s) // 2, (width - s) // 2
        params["boxes"] = torch.tensor([[y0, y0 + s, x0, x0 + s]]).repeat(batch_size, 1)
        return params

    def check_params(self, params, height, width):
        super().check_params(params, height, width)
        check_boxes(params["boxes"], height, width)

    def region(self, params, height, width, attention=None):
        return boxes_to_mask(params["boxes"], height, width)

    def apply(self, images, targets, params, attention, masks):
        h, w = images.shape[-2:]
        mask = self.region(params, h, w).to(images.device)
        lam = box_area_fraction(params["boxes"], h, w)
        out = (paste(images, params["perm"], mask), mix_targets(targets, params["perm"], lam))
        return out + ((paste_masks(masks, params["perm"], mask),) if masks is not None else ())


@dataclass(frozen=True)
class CentreOptions(MixerOptions):
    centre_side: float = option(0.5, "side of the pasted centre square, as a fraction of the image", above=0.0,
                                maximum=1.0)


register(Method("centre-square", "Centre square", CentreOptions, mixer=CentreSquare, example={"centre_side": 0.5},
                build=lambda o, *, num_classes, label_smoothing, extractor: CentreSquare(
                    num_classes, side=o.centre_side, prob=o.prob, label_smoothing=label_smoothing)))
