"""Segmentation without image labels: ``mixer(images, masks=masks)``, Hugging Face batches whose ``labels`` is the
(B, H, W) map, and dict batches carrying their maps under ``mask``/``masks`` (or as a ``tv_tensors.Mask``)."""
from __future__ import annotations

import pytest
import torch

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, Mix, MixUp, RandomCells

K = 5
MAKERS = {"cutmix": lambda: CutMix(K), "random-cells": lambda: RandomCells(K, grid_size=4),
          "attentive": lambda: AttentiveCutMix(K, num_patches=3, grid_size=4), "cutout": lambda: Cutout(K, size=4),
          "mix": lambda: Mix(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=K)}


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(b, 3, 8, 8, generator=g), torch.randint(0, K, (b,), generator=g),
            torch.randint(0, K, (b, 8, 8), generator=g), torch.rand(b, 4, 4, generator=g))


@pytest.mark.parametrize("name", list(MAKERS))
def test_masks_alone_are_mixed_like_a_labelled_call(name):
    images, labels, masks, att = _batch()
    mixer = MAKERS[name]()
    mixed, targets, mixed_masks = mixer(images, masks=masks, attention=att, generator=torch.Generator().manual_seed(1))
    want = mixer(images, labels, att, masks=masks, generator=torch.Generator().manual_seed(1))
    assert targets is None
    assert torch.equal(mixed, want[0]) and torch.equal(mixed_masks, want[2])
    assert not torch.equal(mixed_masks, masks)


def test_masks_alone_still_refused_by_a_blend_and_nothing_at_all_is_refused():
    images, _, masks, _ = _batch()
    with pytest.raises(ValueError, match="blends whole images"):
        MixUp(K)(images, masks=masks)
    with pytest.raises(TypeError, match=r"mixer\(images, masks=masks\) for segmentation without image labels"):
        CutMix(K)(images)


def test_a_hugging_face_batch_whose_labels_are_the_maps():
    images, _, masks, _ = _batch()
    out = CutMix(K)({"pixel_values": images, "labels": masks}, generator=torch.Generator().manual_seed(2))
    mixed, _, want_masks = CutMix(K)(images, masks=masks, generator=torch.Generator().manual_seed(2))
    assert set(out) == {"pixel_values", "labels"}
    assert torch.equal(out["pixel_values"], mixed) and torch.equal(out["labels"], want_masks)


@pytest.mark.parametrize("key", ["mask", "masks", "Masks"])
def test_dict_batches_carry_their_maps_with_or_without_labels(key):
    images, labels, masks, _ = _batch()
    out = CutMix(K)({"image": images, key: masks, "label": labels, "id": "x"},
                    generator=torch.Generator().manual_seed(3))
    want = CutMix(K)(images, labels, masks=masks, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out["image"], want[0]) and torch.equal(out["label"], want[1])
    assert torch.equal(out[key], want[2]) and out["id"] == "x"
    alone = CutMix(K)({"image": images, key: masks}, generator=torch.Generator().manual_seed(3))
    assert torch.equal(alone["image"], want[0]) and torch.equal(alone[key], want[2])


def test_tv_tensor_masks_in_a_dict_and_clear_errors():
    tv = pytest.importorskip("torchvision.tv_tensors")
    images, labels, masks, _ = _batch()
    out = CutMix(K)({"image": tv.Image(images), "segmentation": tv.Mask(masks), "labels": labels})
    assert type(out["image"]) is tv.Image and type(out["segmentation"]) is tv.Mask
    assert not torch.equal(out["segmentation"].as_subclass(torch.Tensor), masks)
    with pytest.raises(ValueError, match="several per-pixel label maps"):
        CutMix(K)({"image": images, "mask": masks, "masks": masks, "labels": labels})
    with pytest.raises(ValueError, match="both 'labels' and 'mask'"):
        CutMix(K)({"image": images, "mask": masks, "labels": masks.clone()})
    with pytest.raises(ValueError, match="carries its masks under 'mask' or 'masks'"):
        CutMix(K)({"image": images, "labels": labels}, masks=masks)
