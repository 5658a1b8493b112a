"""Every mixer is differentiable w.r.t. its images, keeps channels_last, and moves dense label maps (masks=)
with the pixels they label."""
from __future__ import annotations

import pytest
import torch

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, MixUp, RandomCells

K = 5


def _params(name: str, b: int, h: int, w: int, g: int) -> dict[str, torch.Tensor]:
    """Fixed draws, so the mixer is a fixed (linear) function of the images for gradcheck."""
    perm = torch.arange(b).roll(1)
    boxes = torch.tensor([[0, h // 2, 1, w], [1, h, 0, w // 2], [2, 3, 2, 4]])[:b]
    return {"attentive": {"perm": perm}, "attentive-even": {"perm": perm},
            "cells": {"perm": perm, "scores": torch.rand(b, g * g, generator=torch.Generator().manual_seed(0))},
            "cutmix": {"perm": perm, "boxes": boxes}, "mixup": {"perm": perm, "lam": torch.tensor([0.3, 0.6, 0.9])[:b]},
            "cutout": {"boxes": boxes}}[name]


def _mixer(name: str, g: int):
    return {"attentive": AttentiveCutMix(K, num_patches=3, grid_size=g),
            "attentive-even": AttentiveCutMix(K, num_patches=2, grid_size=g),
            "cells": RandomCells(K, num_patches=3, grid_size=g), "cutmix": CutMix(K), "mixup": MixUp(K),
            "cutout": Cutout(K, size=3)}[name]


# Sizes per case: "attentive-even" has 8-px float64 cell rows (64 bytes), the segment-gather fast path.
SHAPES = {"attentive": (6, 3), "attentive-even": (16, 2), "cells": (6, 3), "cutmix": (6, 3), "mixup": (6, 3),
          "cutout": (6, 3)}


@pytest.mark.parametrize("name", list(SHAPES))
def test_gradcheck_with_respect_to_the_images(name):
    s, g = SHAPES[name]
    b = 3
    mixer = _mixer(name, g)
    labels = torch.tensor([0, 1, 2])
    attention = torch.rand(b, g, g, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = _params(name, b, s, s, g)
    images = torch.rand(b, 2, s, s, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: mixer(x, labels, attention, params=params)[0], (images,))
    mixed = mixer(images, labels, attention, params=params)[0]
    assert mixed.requires_grad and mixed.grad_fn is not None


@pytest.mark.parametrize("name", ["attentive", "attentive-even", "cells", "cutmix"])
def test_the_gradient_is_the_pasted_mask_pattern(name):
    # d(sum of out)/d(images): 1 where a pixel kept itself, plus 1 per output pixel it was pasted into.
    s, g = SHAPES[name]
    b = 3
    mixer = _mixer(name, g)
    attention = torch.rand(b, g, g, generator=torch.Generator().manual_seed(1))
    params = _params(name, b, s, s, g)
    index = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 2, s, s)
    mixed = mixer(index.contiguous(), torch.tensor([0, 1, 2]), attention, params=params)[0]
    images = torch.rand(b, 2, s, s, requires_grad=True)
    mixer(images, torch.tensor([0, 1, 2]), attention, params=params)[0].sum().backward()
    expected = torch.stack([(mixed == i).sum(0) for i in range(b)]).float()  # how often pixel (i, c, y, x) is used
    assert torch.equal(images.grad, expected)
    assert (expected == 0).any() and (expected == 2).any()  # some pixels were pasted over, some used twice


def _same_call(mixer, x, attention):
    labels = torch.arange(x.shape[0]) % K
    return mixer(x, labels, attention, generator=torch.Generator().manual_seed(3))


# --------------------------------------------------------------------------------------- masks=
def _index_batch(b: int = 6, s: int = 12):
    """Images whose every pixel is its image index + 1 (0 stays free for Cutout's fill), masks the index."""
    idx = torch.arange(b)
    images = (idx + 1).float().view(b, 1, 1, 1).expand(b, 3, s, s).contiguous()
    return images, idx % K, idx.view(b, 1, 1).expand(b, s, s).contiguous()


@pytest.mark.parametrize("name", ["attentive", "cells", "cutmix"])
def test_every_mask_pixel_comes_from_the_image_its_pixel_came_from(name):
    images, labels, masks = _index_batch()
    mixer = {"attentive": AttentiveCutMix(K, num_patches=4, grid_size=3),
             "cells": RandomCells(K, num_patches=4, grid_size=3), "cutmix": CutMix(K)}[name]
    attention = torch.rand(6, 3, 3, generator=torch.Generator().manual_seed(0))
    out, _, mixed_masks = mixer(images, labels, attention, masks=masks, generator=torch.Generator().manual_seed(4))
    source = out[:, 0].long() - 1
    assert torch.equal(mixed_masks, source)
    assert (source != masks).any()  # something was pasted
    assert mixed_masks.dtype == masks.dtype and torch.equal(masks, _index_batch()[2])  # input untouched


def test_cutout_marks_its_square_with_ignore_index():
    images, labels, masks = _index_batch()
    out, _, mixed_masks = Cutout(K, size=4, ignore_index=-7)(images, labels, masks=masks,
                                                             generator=torch.Generator().manual_seed(5))
    cut = (out == 0).all(1)
    assert cut.any() and torch.equal(mixed_masks, torch.where(cut, -7, masks))


def test_mixup_refuses_masks_with_a_clear_error():
    images, labels, masks = _index_batch()
    with pytest.raises(ValueError, match="MixUp blends whole images.*drop masks="):
        MixUp(K)(images, labels, masks=masks)
