"""Batches already normalised before mixing (timm's prefetcher, Hugging Face ``pixel_values``): the extractor is
told what was applied (``input_mean``/``input_std``) and picks the same cells as on [0, 1] images; a batch far
outside [0, 1] without those statistics gets a one-time warning on the CPU."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from attentive_cutmix import AttentiveCutMix, FeatureExtractor, load_extractor
from attentive_cutmix.constants import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 4, stride=4), nn.ReLU())


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 10


def _mix(extractor: FeatureExtractor, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    mixer = AttentiveCutMix(10, extractor, num_patches=6, grid_size=8)
    return mixer(images, labels, generator=torch.Generator().manual_seed(2))


def test_normalised_batch_with_its_statistics_chooses_the_same_cells():
    images, labels = _batch()
    normalised = (images - MEAN) / STD
    plain = FeatureExtractor(_net(), input_size=None)
    told = FeatureExtractor(_net(), input_size=None, input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither call may warn
        mixed, targets = _mix(plain, images, labels)
        mixed_n, targets_n = _mix(told, normalised, labels)
    assert torch.equal(targets, targets_n)  # same cells: same exact lambda per sample, same partners
    torch.testing.assert_close(mixed_n * STD + MEAN, mixed, atol=1e-5, rtol=0)  # pasted in the batch's own space
    torch.testing.assert_close(told(normalised), plain(images), atol=1e-5, rtol=1e-5)


def test_normalised_batch_without_its_statistics_warns_once_and_picks_other_cells():
    images, labels = _batch()
    normalised = (images - MEAN) / STD
    plain = FeatureExtractor(_net(), input_size=None)
    mixed, _ = _mix(plain, images, labels)
    with pytest.warns(UserWarning, match=r"input_mean=\.\.\., input_std=\.\.\."):
        mixed_n, _ = _mix(plain, normalised, labels)
    pasted, pasted_n = (mixed != images).any(1), (mixed_n * STD + MEAN - images).abs().gt(1e-5).any(1)
    assert not torch.equal(pasted, pasted_n)  # the trap: other cells pasted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _mix(plain, normalised, labels)  # one-time: the second batch is quiet


def test_load_extractor_passes_the_statistics_and_checks_them():
    extractor = load_extractor(_net(), input_size=32, input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
    assert extractor.input_mean == IMAGENET_MEAN and "input_mean" in repr(extractor)
    with pytest.raises(ValueError, match="input_mean and input_std together"):
        load_extractor(_net(), input_mean=IMAGENET_MEAN)
    with pytest.raises(ValueError, match="3 finite entries"):
        load_extractor(_net(), input_mean=(0.5,), input_std=(0.5,))
    with pytest.raises(ValueError, match="input_std > 0"):
        load_extractor(_net(), input_mean=IMAGENET_MEAN, input_std=(0.2, 0.0, 0.2))


def test_wrong_statistics_are_caught_too():
    # Statistics that do not match the batch leave it outside [0, 1] after the conversion: warned as well.
    images, _ = _batch()
    told = FeatureExtractor(_net(), input_size=None, input_mean=(0.5, 0.5, 0.5), input_std=(2.0, 2.0, 2.0))
    with pytest.warns(UserWarning, match="after undoing input_mean"):
        told((images - MEAN) / STD * 4)
