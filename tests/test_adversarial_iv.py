"""Small silent-result and traceback findings of the fourth adversarial pass (issue 34): each test failed on the
code before its fix."""
from __future__ import annotations

import torch

from attentive_cutmix import CutMix


def test_a_dict_batch_mixes_pixel_values_before_image_whatever_the_key_order():
    """Item 4: with {"image": raw, "pixel_values": normalised, "labels": y} the model reads pixel_values, so that is
    what is mixed to match the soft targets (the dict order used to pick `image`)."""
    g = torch.Generator().manual_seed(0)
    raw, pixels, labels = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 3, 16, 16, generator=g), torch.arange(4)
    out = CutMix(4, prob=1.0)({"image": raw, "pixel_values": pixels, "labels": labels},
                              generator=torch.Generator().manual_seed(1))
    mixed, targets = CutMix(4, prob=1.0)(pixels, labels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out["pixel_values"], mixed) and torch.equal(out["labels"], targets)
    assert out["image"] is raw and not torch.equal(mixed, pixels)
