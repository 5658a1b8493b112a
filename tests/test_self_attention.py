"""Attentive CutMix with attention_source="self": cells chosen on the model being trained's own last feature map."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from _guided_training import TINY, assert_mid_epoch_resume_is_exact, compare_grid, train_cli
from attentive_cutmix import AttentiveCutMix, registry
from attentive_cutmix.mixers.geometry import cells_to_pixel_mask
from attentive_cutmix.training import ConfigError, make_config
from attentive_cutmix.training.config import needs_attention

K = 3


class _Pooled(nn.Module):
    """A model whose last feature map is its input pooled onto a 4x4 grid: a cell is hot where the image is."""

    def __init__(self) -> None:
        super().__init__()
        self.pool, self.bn, self.linear = nn.AvgPool2d(4), nn.BatchNorm2d(3), nn.Linear(3, K)

    def forward_features(self, x):
        return self.pool(x) * 1.0 + 0.0 * self.bn(x[:, :, ::4, ::4])  # BN on the path: its stats must not move

    def forward(self, x):
        return self.linear(self.forward_features(x).mean((2, 3)))


def _planted(b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 16, 16) images, dark but for two bright 4x4 cells per image; the (B, 4, 4) planted cells."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(b, 3, 16, 16, generator=gen) * 0.1
    planted = torch.zeros(b, 4, 4, dtype=torch.bool)
    for i in range(b):
        for cell in torch.randperm(16, generator=gen)[:2].tolist():
            r, c = divmod(cell, 4)
            planted[i, r, c] = True
            images[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return images, planted


def test_self_attention_pastes_the_partners_cells_that_the_models_own_map_plants():
    images, planted = _planted()
    model = _Pooled().train()
    stats = model.bn.running_mean.clone()
    mixer = AttentiveCutMix(K, num_patches=2, grid_size=4, attention_source="self")
    assert mixer.guidance_source == "model" and not mixer.extractor
    maps = mixer.guide(images, torch.arange(4) % K, model=model)
    assert model.training and model.bn.training and torch.equal(model.bn.running_mean, stats)
    params = mixer.make_params(4, 16, 16, torch.Generator().manual_seed(1))
    mixed, targets = mixer(images, torch.arange(4) % K, maps, params=params)
    perm = params["perm"]
    want = cells_to_pixel_mask(planted[perm], 16, 16)
    assert torch.equal(mixer.region(params, 16, 16, maps), want)
    assert torch.equal(mixed, torch.where(want.unsqueeze(1), images[perm], images))


def test_shuffled_self_attention_picks_the_cells_of_another_images_map():
    images, planted = _planted(6)
    maps = AttentiveCutMix(K, num_patches=2, grid_size=4, attention_source="self").guide(images, model=_Pooled())
    mixer = AttentiveCutMix(6, num_patches=2, grid_size=4, attention_source="self", guidance="shuffled")
    params = mixer.make_params(6, 16, 16, torch.Generator().manual_seed(2))
    gp, perm = params["guide_perm"], params["perm"]
    region = mixer.region(params, 16, 16, maps)
    assert torch.equal(region, cells_to_pixel_mask(planted[gp][perm], 16, 16))  # the other image's planted cells
    assert (region.sum((1, 2)) == 2 * 16).all()  # the same number of cells, the same area
    _, targets = mixer(images, torch.arange(6), maps, params=params)
    lam = 2 * 16 / 256  # the label rule (area) unchanged
    assert torch.allclose(targets[torch.arange(6), perm], torch.full((6,), lam))
    assert not torch.equal(region, cells_to_pixel_mask(planted[perm], 16, 16))  # not the partner's own cells


def test_self_attention_needs_no_extractor_and_refuses_one():
    method = registry.get("attentive-cutmix")
    assert not method.needs_attention(method.options(attention_source="self"))
    cfg = make_config({**TINY, "method": "attentive-cutmix", "attention_source": "self"})
    assert not needs_attention(cfg)
    with pytest.raises(ConfigError, match="--extractor applies to --method attentive-cutmix only with "
                                          "--attention-source extractor"):
        make_config({**TINY, "method": "attentive-cutmix", "attention_source": "self", "extractor": "cifar_resnet20"})
    with pytest.raises(ValueError, match="drop extractor= or use attention_source='extractor'"):
        AttentiveCutMix(K, nn.Identity(), attention_source="self")
    with pytest.raises(ValueError, match="attention_source must be one of"):
        AttentiveCutMix(K, attention_source="model")
    mixer = AttentiveCutMix(K, grid_size=4, attention_source="self")
    with pytest.raises(ValueError, match=r"maps = mixer.guide\(images, labels, model=model\)"):
        mixer(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="guided by the model being trained"):
        mixer.guide(torch.rand(2, 3, 16, 16))
    with pytest.raises(TypeError, match="cannot take guidance from a Sequential"):
        mixer.guide(torch.rand(2, 3, 16, 16), model=nn.Sequential(nn.Conv2d(3, 3, 1)))


@pytest.mark.slow
def test_self_attention_trains_on_both_data_paths_through_a_grid_and_resumes_exactly(tmp_path, monkeypatch):
    flags = ("--method", "attentive-cutmix", "--attention-source", "self", "--grid-size", "4", "--num-patches", "3")
    assert train_cli(tmp_path / "cli", *flags, "--guidance", "shuffled")["status"] == "finished"
    runs = compare_grid(tmp_path, [{"label": "self-attention", "method": "attentive-cutmix",
                                    "attention_source": "self", "grid_size": 4}])["runs"]
    assert runs[0]["status"] == "finished" and runs[0]["config"]["attention_source"] == "self"
    assert_mid_epoch_resume_is_exact(tmp_path, monkeypatch, {**TINY, "epochs": 2, "method": "attentive-cutmix",
                                                             "attention_source": "self", "grid_size": 4,
                                                             "data_path": "loader"})
