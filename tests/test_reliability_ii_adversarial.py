"""Misuse found by the adversarial pass of 2026-12-01 (issue 13): each is a clear error, and nothing is overwritten."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, MixUp, RandomCells
from attentive_cutmix.data import build_datasets
from attentive_cutmix.data.device import ImageCacheError, device_split
from attentive_cutmix.training import ConfigError, make_config, train


def _folder(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def folder_split(tmp_path):
    train_ds, _, info = build_datasets("imagefolder", data_dir=_folder(tmp_path / "d"), val_fraction=0.25)
    return train_ds, info


def test_image_cache_never_overwrites_a_weights_file(folder_split, tmp_path):
    train_ds, info = folder_split
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(3)}, str(weights))
    before = weights.read_bytes()
    with pytest.raises(ImageCacheError, match="not an image cache.*nothing was written"):
        device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=weights)
    assert weights.read_bytes() == before and torch.equal(load_file(str(weights))["w"], torch.ones(3))


def test_image_cache_that_is_a_folder_is_named(folder_split, tmp_path):
    train_ds, info = folder_split
    with pytest.raises(ImageCacheError, match="is a folder; give a file path"):
        device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=tmp_path)


def test_image_cache_is_reused_for_the_same_folder(folder_split, tmp_path):
    train_ds, info = folder_split
    path = tmp_path / "images.safetensors"
    first = device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=path)
    mtime = path.stat().st_mtime_ns
    again = device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=path)
    assert torch.equal(first.images, again.images) and path.stat().st_mtime_ns == mtime


def test_image_cache_set_where_it_cannot_apply_is_refused(tmp_path):
    cfg = make_config(dict(dataset="synthetic", synthetic_size=[32, 8], epochs=1, workers=0, progress=False,
                           image_cache=str(tmp_path / "x.safetensors"), output_dir=str(tmp_path / "run")))
    with pytest.raises(ConfigError, match="--image-cache .* applies to image folders"):
        train(cfg)


def _batch(b=4, h=16, w=16):
    return torch.rand(b, 3, h, w), torch.arange(b) % 3


@pytest.mark.parametrize("mixer", [CutMix(3), MixUp(3), RandomCells(3, grid_size=4, num_patches=2)])
def test_replayed_params_must_match_the_mixer_and_the_batch(mixer):
    images, labels = _batch()
    good = mixer.make_params(4, 16, 16, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="params must be the dict of"):
        mixer(images, labels, params={"perm": good["perm"]} if len(good) > 1 else {**good, "extra": good["perm"]})
    with pytest.raises(ValueError, match=r"params\['perm'\] must be a tensor with one row per image \(4\)"):
        mixer(images, labels, params={**good, "perm": good["perm"][:2]})


def test_bad_generator_prob_masks_and_empty_attention_are_named():
    images, labels = _batch()
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        CutMix(3)(images, labels, generator=0)
    with pytest.raises(ValueError, match="prob must be in"):
        CutMix(3, prob=None)
    with pytest.raises(ValueError, match=r"masks must have shape \(B, H, W\)=\(4, 16, 16\)"):
        CutMix(3)(images, labels, masks=torch.zeros(4, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="MixUp blends whole images"):
        MixUp(3)(images, labels, masks=torch.zeros(4, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="attention has no values"):
        AttentiveCutMix(3, grid_size=4)(images, labels, attention=torch.rand(4, 0, 4, 4))
    mixed, targets, masks = Cutout(3, size=4, ignore_index=255)(
        images, labels, masks=torch.zeros(4, 16, 16, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    assert (masks == 255).sum(dim=(1, 2)).tolist() == (mixed == 0).all(1).sum(dim=(1, 2)).tolist()


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_extractor_weights_of_a_non_float_dtype_are_refused(tmp_path, dtype):
    from attentive_cutmix import load_extractor
    from attentive_cutmix.models import create_model
    from attentive_cutmix.serialization import CheckpointError

    model = create_model("cifar_resnet20", 10, 32)
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = tmp_path / "r20-int.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"non-floating values for floating weights.*{dtype}"):
        load_extractor("cifar_resnet20", weights=path, input_size=32)


def test_a_folder_given_as_grid_file_is_named_as_a_folder(tmp_path):
    from attentive_cutmix.experiments.grid import GridError, load_grid

    with pytest.raises(GridError, match="is a folder, not a grid file"):
        load_grid(tmp_path)
    with pytest.raises(GridError, match="missing.yaml not found"):
        load_grid(tmp_path / "missing.yaml")
