"""Small silent-result and traceback findings of the fourth adversarial pass (issue 34): each test failed on the
code before its fix."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from _reliability_utils import image_folder
from attentive_cutmix import CutMix
from attentive_cutmix.attention.cache import CacheBuildInterrupted
from attentive_cutmix.cli import main
from attentive_cutmix.data import build_datasets
from attentive_cutmix.data.device import device_split
from attentive_cutmix.experiments import compare as compare_mod
from attentive_cutmix.experiments.evaluate import read_run
from attentive_cutmix.experiments.grid import load_grid
from attentive_cutmix.serialization import CheckpointError
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training.config import ConfigError, load_yaml


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


class _SignalAt:
    """An image-folder source that delivers ``signum`` to this process when item ``at`` is decoded (a Ctrl-C or a
    scheduler's SIGTERM arriving mid-decode)."""

    def __init__(self, source, signum: int, at: int = 2) -> None:
        self.source, self.signum, self.at, self.calls = source, signum, at, 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return self.source[i]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_decoding_for_the_image_cache_is_one_line_and_leaves_no_file(tmp_path, signum):
    """Item 10: Ctrl-C used to be a 40-line KeyboardInterrupt traceback, SIGTERM an exit 143 without a word."""
    train_ds, _, info = build_datasets("imagefolder", data_dir=image_folder(tmp_path / "data"), image_size=16,
                                       val_fraction=0.25)
    train_ds.source = _SignalAt(train_ds.source, signum)
    cache = tmp_path / "images.safetensors"

    def unhandled(signum, _frame):  # what the code before the fix met: a traceback (SIGINT) or death (SIGTERM)
        raise AssertionError(f"{signal.Signals(signum).name} reached the default handler")

    before = signal.signal(signum, unhandled)
    try:
        with pytest.raises(CacheBuildInterrupted) as info_:
            device_split(train_ds, 16, torch.device("cpu"), image_cache=cache)
        assert signal.getsignal(signum) is unhandled  # restored after the decode
    finally:
        signal.signal(signum, before)
    assert info_.value.signum == signum and 128 + info_.value.signum in (130, 143)
    assert f"stopped by {signal.Signals(signum).name} while decoding the train split for the image cache {cache}" \
        in str(info_.value)
    assert list(tmp_path.glob("*.safetensors*")) == []


def test_an_image_cache_where_the_device_path_cannot_apply_is_refused_and_unused_one_is_said(tmp_path, monkeypatch):
    """Item 12: with --data-path auto, --image-cache was silently ignored whenever auto picked the loader."""
    options = dict(dataset="imagefolder", image_size=16, epochs=1, batch_size=4, max_steps_per_epoch=1, workers=0,
                   progress=False, val_fraction=0.25, image_cache=str(tmp_path / "images.safetensors"))
    big = tmp_path / "big"
    for cls in ("a", "b"):
        (big / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (80, 80)).save(big / cls / f"{i}.png")
    with pytest.raises(ConfigError, match="applies to the device path, which does not apply"):
        train(make_config({**options, "data_dir": str(big), "image_size": 80, "output_dir": str(tmp_path / "a")}))
    monkeypatch.setattr("attentive_cutmix.data.device.MEMORY_FRACTION", 0.0)  # as if memory were short
    with pytest.warns(UserWarning, match=r"--image-cache .* is not used: --data-path auto chose the loader path"):
        train(make_config({**options, "data_dir": str(image_folder(tmp_path / "data")),
                           "output_dir": str(tmp_path / "b")}))


@pytest.mark.parametrize("before, after", [(0, 1), (1, 2)])
def test_resuming_with_another_warmup_names_the_option(tmp_path, before, after):
    """Item 13: adding --warmup-epochs at resume was refused as a "damaged or edited" checkpoint (and 1 -> 2 kept
    the old warmup without a word)."""
    options = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, epochs=2, batch_size=16,
                   max_steps_per_epoch=1, workers=0, progress=False, output_dir=str(tmp_path / "run"),
                   warmup_epochs=before)
    train(make_config({**options, "epochs": 1}))
    with pytest.raises(CheckpointError, match=rf"with --warmup-epochs {after}: the run was started with "
                                              rf"--warmup-epochs {before}"):
        train(make_config({**options, "warmup_epochs": after, "resume": True}))


DAMAGED = {"a list": [], "a bad curve row": {"curve": [5, "x"]}, "a text top-1": {"top1": "high"}}


def _damage(path: Path, how: str) -> None:
    record = json.loads(path.read_text())
    damage = DAMAGED[how]
    path.write_text(json.dumps(damage if isinstance(damage, list) else {**record, **damage}))


def test_a_damaged_results_json_is_one_line_in_evaluate_and_a_resumable_cell_in_compare(tmp_path, capsys):
    """Item 14: a damaged results.json in a finished run gave 17-line tracebacks in `evaluate` and 33-36 in
    `compare` (tables and plots read it)."""
    out = tmp_path / "run"
    train(make_config(dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, epochs=1, batch_size=16,
                           max_steps_per_epoch=1, workers=0, progress=False, output_dir=str(out))))
    good = (out / "results.json").read_text()
    for how in DAMAGED:
        (out / "results.json").write_text(good)
        _damage(out / "results.json", how)
        capsys.readouterr()
        assert main(["evaluate", str(out)]) == 1, how
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert str(out / "results.json") in err and "--resume" in err
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({"settings": {"dataset": "synthetic", "epochs": 1},
                                         "axes": {"method": ["none"]}}))
    grid = load_grid(grid_file)
    cell = grid.cells[0]
    run_dir = tmp_path / "cmp" / "runs" / cell.id
    shutil.copytree(out, run_dir)
    compare_mod._write_cell_file(run_dir, cell)
    for how in DAMAGED:
        (run_dir / "results.json").write_text(good)
        _damage(run_dir / "results.json", how)
        assert compare_mod.cell_status(run_dir, cell.identity) == "resumable", how  # resuming writes it again
        compare_mod.write_report(grid, tmp_path / "cmp", log=lambda _: None)
        assert json.loads((tmp_path / "cmp" / "results.json").read_text())["runs"][0]["status"] == "resumable"


def _tensors(n: int = 32, *, top: float = 1.0, label: int | None = None) -> TensorDataset:
    g = torch.Generator().manual_seed(n)
    labels = torch.randint(0, 4, (n,), generator=g) if label is None else torch.full((n,), label)
    return TensorDataset(torch.rand(n, 3, 16, 16, generator=g) * top, labels)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_runs_of_python_objects_say_how_to_continue_and_their_data_is_checked(tmp_path, capsys):
    """Item 18: runs of train(model=..., train_dataset=...) were dead ends for `evaluate` and CLI `--resume`; a
    resume onto other data was silent; out-of-range labels with `none`, and classes=True, were raw tracebacks;
    images in [0, 255] passed without a word."""
    out = tmp_path / "run"
    options = dict(epochs=1, batch_size=8, max_steps_per_epoch=1, workers=0, progress=False, output_dir=str(out))
    train(make_config(options), model=_net(), train_dataset=_tensors(), eval_dataset=_tensors(16), classes=4)
    capsys.readouterr()
    for argv in (["evaluate", str(out)], ["train", "--config", str(out / "config.yaml"), "--resume"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and "train(model=..., train_dataset=...) from Python" in err, err
        assert "'resume': True" in err and "load_state_dict_file" in err
    with pytest.raises(CheckpointError, match="the training data changed"):
        train(make_config({**options, "epochs": 2, "resume": True}), model=_net(), train_dataset=_tensors(24),
              eval_dataset=_tensors(16), classes=4)
    fresh = {**options, "output_dir": str(tmp_path / "other")}
    with pytest.raises(ValueError, match=r"labels outside \[0, 4\)"):
        train(make_config(fresh), model=_net(), train_dataset=_tensors(label=7), classes=4)
    with pytest.raises(ConfigError, match="classes must be the class names"):
        train(make_config({**fresh, "overwrite": True}), model=_net(), train_dataset=_tensors(), classes=True)
    with pytest.warns(UserWarning, match=r"values up to 2\d\d.*\[0, 1\]"):
        train(make_config({**fresh, "overwrite": True}), model=_net(), train_dataset=_tensors(top=255.0), classes=4)


def test_resuming_a_run_with_fewer_epochs_than_it_has_done_is_refused(tmp_path):
    """Item 20: `--auto-resume --epochs 1` on a finished 2-epoch run left results.json (2 epochs) and config.yaml
    (1) disagreeing."""
    out = tmp_path / "run"
    options = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, epochs=2, batch_size=16,
                   max_steps_per_epoch=1, workers=0, progress=False, output_dir=str(out))
    train(make_config(options))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(CheckpointError, match=r"holds 2 finished epochs, more than --epochs 1.*--epochs 2 or more"):
        train(make_config({**options, "epochs": 1, "auto_resume": True}))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before
