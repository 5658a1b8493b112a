"""Attention maps of any magnitude choose and weigh cells as the same map at unit scale (issue 34 item 17): above
~1e19 standardising overflowed (temperature sampling became uniform), above ~1e37 attention-mass weights fell to 0."""
from __future__ import annotations

import pytest
import torch

from attentive_cutmix import AttentiveCutMix
from attentive_cutmix.mixers.cell_scores import _standardised, attention_mass


def _maps() -> torch.Tensor:
    return torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)) - 0.3


@pytest.mark.parametrize("scale", [2.0 ** 70, 2.0 ** 125, 2.0 ** -120])
def test_standardising_and_mass_do_not_depend_on_the_maps_scale(scale):
    grid = _maps().flatten(1)
    assert torch.equal(_standardised(grid * scale), _standardised(grid))  # powers of two: bit for bit
    assert torch.equal(attention_mass(grid * scale), attention_mass(grid))


def test_unit_scale_maps_keep_their_old_values_bit_for_bit():
    grid = _maps().flatten(1)
    centred = grid - grid.mean(1, keepdim=True)
    std = centred.square().mean(1, keepdim=True).sqrt()
    assert torch.equal(_standardised(grid), centred / std)  # the formula before the change
    shifted = grid - grid.amin(1, keepdim=True)
    assert torch.equal(attention_mass(grid), shifted / shifted.sum(1, keepdim=True))


@pytest.mark.parametrize("scale", [1e20, 1e37])
def test_huge_maps_mix_like_the_same_maps_at_unit_scale(scale):
    images, labels, maps = torch.rand(6, 3, 8, 8), torch.arange(6) % 3, _maps() + 0.3
    for kwargs in (dict(temperature=0.5), dict(label_weight="attention")):
        mixer = AttentiveCutMix(3, num_patches=3, grid_size=4, **kwargs)
        big = mixer(images, labels, maps * scale, generator=torch.Generator().manual_seed(1))
        unit = mixer(images, labels, maps, generator=torch.Generator().manual_seed(1))
        assert torch.equal(big[0], unit[0])
        torch.testing.assert_close(big[1], unit[1], atol=1e-5, rtol=0)
