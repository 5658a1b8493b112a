"""Small silent-result and traceback findings of the fourth adversarial pass (issue 34): each test failed on the
code before its fix."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from _reliability_utils import image_folder
from attentive_cutmix import CutMix
from attentive_cutmix.experiments.evaluate import read_run
from attentive_cutmix.serialization import CheckpointError
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training.config import load_yaml


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


def test_nan_ema_weights_in_a_checkpoint_are_refused_at_resume(tmp_path):
    """Item 5: the checkpoint's `ema` entry is checked like `model` (NaN EMA weights resumed with rc 0, were evaluated
    and saved to weights_ema.safetensors without a word)."""
    out = tmp_path / "run"
    options = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, epochs=1, batch_size=16,
                   max_steps_per_epoch=1, workers=0, progress=False, ema_decay=0.9, output_dir=str(out))
    train(make_config(options))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    key = next(k for k, v in ckpt["ema"].items() if v.is_floating_point())
    ckpt["ema"][key].view(-1)[0] = float("nan")
    torch.save(ckpt, out / "checkpoint.pt")
    before = (out / "weights_ema.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(f"ema[{key!r}]") + ".*NaN"):
        train(make_config({**options, "epochs": 2, "resume": True}))
    assert (out / "weights_ema.safetensors").read_bytes() == before


def test_a_run_under_a_symlinked_folder_finds_its_data_through_the_real_path(tmp_path, monkeypatch):
    """Item 7: base_dir is measured between real paths. With runs -> ../scratch/deep/runs, reading the run through
    the link's target used to count its relative paths from scratch/deep (where a same-named folder would be read)."""
    project, real_runs = tmp_path / "project", tmp_path / "scratch" / "deep" / "runs"
    real_runs.mkdir(parents=True)
    image_folder(project / "data")
    (project / "runs").symlink_to(Path("..") / "scratch" / "deep" / "runs", target_is_directory=True)
    monkeypatch.chdir(project)
    train(make_config(dict(dataset="imagefolder", data_dir="data", image_size=16, epochs=1, batch_size=4,
                           max_steps_per_epoch=1, workers=0, progress=False, val_fraction=0.25,
                           output_dir="runs/r")))
    monkeypatch.chdir(tmp_path)
    for folder in (real_runs / "r", project / "runs" / "r"):
        assert read_run(folder)[0]["data_dir"] == str(project / "data")
        assert load_yaml(folder / "config.yaml")["data_dir"] == str(project / "data")
