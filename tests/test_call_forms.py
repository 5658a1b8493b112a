"""The call forms a torchvision/timm user reaches for: options checked on assignment too, a batch of one, tv_tensors,
packed ``(images, labels)`` batches and dict batches picking their images by torchvision's key priority."""
from __future__ import annotations

import warnings

import pytest
import torch

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, MixUp, RandomCells

MAKERS = {"cutmix": lambda: CutMix(5), "mixup": lambda: MixUp(5), "random-cells": lambda: RandomCells(5, grid_size=4),
          "attentive": lambda: AttentiveCutMix(5, grid_size=4), "cutout": lambda: Cutout(5, size=4)}


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, 8, 8, generator=g), torch.arange(b) % 5, torch.rand(b, 4, 4, generator=g)


@pytest.mark.parametrize("name, value, match", [
    ("prob", 2.0, r"prob must be in \[0, 1\], got prob=2.0"),
    ("prob", None, "prob must be in"),
    ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\)"),
    ("num_classes", 0, "num_classes must be a positive int"),
    ("alpha", -1.0, "alpha must be a finite number > 0"),
])
def test_options_assigned_after_construction_are_checked(name, value, match):
    mixer = CutMix(10, prob=0.5, label_smoothing=0.1)
    before = getattr(mixer, name)
    with pytest.raises(ValueError, match=match):
        setattr(mixer, name, value)
    assert getattr(mixer, name) == before
    mixer.prob = 1  # a good value is taken, as a float like the constructor's
    assert mixer.prob == 1.0 and isinstance(mixer.prob, float)


@pytest.mark.parametrize("name", ["cutmix", "mixup", "random-cells", "attentive"])
def test_a_batch_of_one_comes_back_unmixed_with_one_warning(name):
    mixer = MAKERS[name]()
    images, labels, att = _batch(1)
    with pytest.warns(UserWarning, match="batch of one image: it has no partner"):
        mixed, targets = mixer(images, labels, att, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mixed, images) and mixed is not images
    assert torch.equal(targets, torch.nn.functional.one_hot(labels, 5).float())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per mixer, not every last batch of every epoch
        mixer(images, labels, att)


def test_cutout_needs_no_partner_and_cuts_a_batch_of_one():
    images, labels, _ = _batch(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed, _ = Cutout(5, size=4)(images, labels, generator=torch.Generator().manual_seed(0))
    assert (mixed == 0).sum() > 0


@pytest.mark.parametrize("name", ["cutmix", "mixup", "random-cells", "attentive", "cutout"])
def test_tv_tensors_come_back_as_tv_tensors(name):
    tv = pytest.importorskip("torchvision.tv_tensors")
    mixer = MAKERS[name]()
    images, labels, att = _batch()
    mixed, targets = mixer(tv.Image(images), labels, att, generator=torch.Generator().manual_seed(1))
    plain, plain_targets = mixer(images, labels, att, generator=torch.Generator().manual_seed(1))
    assert type(mixed) is tv.Image and type(targets) is torch.Tensor
    assert torch.equal(mixed.as_subclass(torch.Tensor), plain) and torch.equal(targets, plain_targets)
    batch = mixer({"image": tv.Image(images), "labels": labels}, attention=att)
    assert type(batch["image"]) is tv.Image
    if mixer.accepts_masks:
        masks = tv.Mask(torch.randint(0, 5, (4, 8, 8)))
        out = mixer(tv.Image(images), labels, att, masks=masks)
        assert type(out[0]) is tv.Image and type(out[2]) is tv.Mask


@pytest.mark.parametrize("pack", [tuple, list])
def test_a_packed_batch_is_mixed_and_comes_back_as_a_tuple(pack):
    mixer = CutMix(5)
    images, labels, _ = _batch()
    out = mixer(pack([images, labels]), generator=torch.Generator().manual_seed(2))
    ref = mixer(images, labels, generator=torch.Generator().manual_seed(2))
    assert type(out) is tuple and len(out) == 2 and all(torch.equal(a, b) for a, b in zip(out, ref))
    with pytest.raises(TypeError, match=r"mixer\(\(images, labels\)\), a tuple or list of two; got a tuple of 3"):
        mixer((images, labels, labels))


@pytest.mark.parametrize("order", [("image", "images", "pixel_values"), ("images", "image", "pixel_values"),
                                   ("pixel_values", "image", "images")])
def test_dict_batches_pick_their_images_by_torchvisions_priority_not_dict_order(order):
    images, labels, _ = _batch()
    batch = {key: images.clone() for key in order}
    batch["labels"] = labels
    out = CutMix(5)(batch, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out["pixel_values"], images)  # the normalised pixel_values are the ones mixed
    assert torch.equal(out["image"], images) and torch.equal(out["images"], images)
    batch = {"image": images, "images": images.clone(), "labels": labels}
    out = CutMix(5)(batch, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out["images"], images) and torch.equal(out["image"], images)
