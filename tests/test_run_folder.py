"""Run folders: a run's config continues the folder it lies in, its relative paths mean what they meant when it ran,
--resume never starts elsewhere nor afresh (--auto-resume may start), --overwrite removes the earlier run only once
the new one has started, and the lock file is never a door to another file."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from attentive_cutmix.cli import main
from attentive_cutmix.experiments.evaluate import evaluate_runs
from attentive_cutmix.training import ConfigError, load_yaml, make_config, train
from attentive_cutmix.training.distributed import DistInfo
from attentive_cutmix.training.run_io import LOCK_NAME, RunLock, release_run_dir, resume_command

TINY = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, model="cifar_resnet20", epochs=1,
            batch_size=16, max_steps_per_epoch=1, workers=0, progress=False)
OUTPUTS = ("checkpoint.pt", "results.json", "metrics.jsonl", "weights.safetensors", "config.yaml")


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "runs" / "base"
    train(make_config({**TINY, "output_dir": str(out)}))
    return out


def test_a_copied_run_folder_resumes_the_copy_and_never_touches_the_original(base, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    before = _bytes(base)
    assert main(["train", "--config", str(copy / "config.yaml"), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert _bytes(base) == before
    assert '"epochs": 2' in (copy / "results.json").read_text()
    assert f"records output_dir {base}" in capsys.readouterr().err


def test_resume_by_output_dir_alone_continues_with_the_runs_own_options(base, tmp_path, capsys):
    # The README's `train --output-dir runs/x --resume` used to compare the defaults (image_size 32, 10 epochs...)
    # with the checkpoint and refuse; it now reads the run's config.yaml, as `--config RUN/config.yaml` does.
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    assert main(["train", "--output-dir", str(copy), "--resume", "--epochs", "2"]) == 0
    assert '"epochs": 2' in (copy / "results.json").read_text()
    assert load_yaml(copy / "config.yaml")["image_size"] == 16
    before = _bytes(copy)  # a flag given now is checked against the checkpoint as with --config
    assert main(["train", "--output-dir", str(copy), "--resume", "--epochs", "3", "--image-size", "32"]) == 1
    assert "image_size: checkpoint 16 vs now 32" in capsys.readouterr().err and _bytes(copy) == before


def test_resume_from_another_working_directory_continues_the_run_not_a_new_one(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    train(make_config({**TINY, "output_dir": "runs/st"}))  # relative, as a user types it
    monkeypatch.chdir(tmp_path / "b")
    config = tmp_path / "a" / "runs" / "st" / "config.yaml"
    assert main(["train", "--config", str(config), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert not (tmp_path / "b" / "runs").exists()
    assert '"epochs": 2' in (tmp_path / "a" / "runs" / "st" / "results.json").read_text()


def test_resume_with_no_run_in_the_folder_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(ConfigError, match=f"no run to continue in {tmp_path / 'nothing'}"):
        train(make_config({**TINY, "output_dir": str(tmp_path / "nothing"), "resume": True}))
    assert not (tmp_path / "nothing").exists()


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee"):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_relative_paths_in_a_run_config_count_from_where_the_run_started(tmp_path, monkeypatch, recwarn):
    """Data, cache and output paths typed relative to one working directory still find the run's data when the
    run is resumed, or re-evaluated, from another (issue 23, item 5)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    _image_folder(tmp_path / "a" / "data")
    monkeypatch.chdir(tmp_path / "a")
    opts = {**TINY, "dataset": "imagefolder", "data_dir": "data", "val_fraction": 0.25, "data_path": "device",
            "image_cache": "caches/images.safetensors", "output_dir": "runs/st"}
    del opts["synthetic_size"]
    train(make_config(opts))
    config = tmp_path / "a" / "runs" / "st" / "config.yaml"
    written = yaml.safe_load(config.read_text())
    assert written["data_dir"] == "data" and written["base_dir"] == "../.."  # as typed, and where they count from
    monkeypatch.chdir(tmp_path / "b")
    assert load_yaml(config)["data_dir"] == str(tmp_path / "a" / "data")
    recwarn.clear()
    assert main(["train", "--config", str(config), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert not [w for w in recwarn if "changed options" in str(w.message)]  # the same data is no change
    assert list(tmp_path.joinpath("b").iterdir()) == []  # no data, cache or run looked for or made here
    assert '"epochs": 2' in (tmp_path / "a" / "runs" / "st" / "results.json").read_text()
    (row,) = evaluate_runs([tmp_path / "a" / "runs" / "st"])  # re-measured on its own held-out images
    assert row["data_dir"] == str(tmp_path / "a" / "data") and row["data_matches"]
    assert row["top1"] == row["recorded_top1"]


def test_a_hand_written_base_dir_counts_from_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "proj" / "cfg").mkdir(parents=True)
    config = tmp_path / "proj" / "cfg" / "c.yaml"
    config.write_text("base_dir: ..\ndata_dir: data\nextractor: cifar_resnet20\nextractor_weights: w/e.safetensors\n"
                      "val_data: /abs/val\n")
    monkeypatch.chdir(tmp_path)
    values = load_yaml(config)
    assert values["data_dir"] == str(tmp_path / "proj" / "data")
    assert values["extractor_weights"] == str(tmp_path / "proj" / "w" / "e.safetensors")
    assert values["extractor"] == "cifar_resnet20" and values["val_data"] == "/abs/val"  # a name; absolute
    config.write_text("base_dir: 3\n")
    with pytest.raises(ConfigError, match="base_dir in .* must be a folder path"):
        load_yaml(config)


def test_resume_with_no_checkpoint_is_an_error_and_auto_resume_starts_the_run(tmp_path):
    out = tmp_path / "st"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")  # a run killed before its first checkpoint
    (out / "config.yaml").write_text("seed: 0\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="holds no checkpoint.*use --auto-resume instead"):
        train(make_config({**TINY, "output_dir": str(out), "resume": True}))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME} == before
    with pytest.warns(UserWarning, match="--auto-resume: no checkpoint in .* starting the run there"):
        assert train(make_config({**TINY, "output_dir": str(out), "auto_resume": True}))["status"] == "finished"


def test_auto_resume_starts_an_empty_folder_then_continues_it(tmp_path):
    out = tmp_path / "job"
    with pytest.warns(UserWarning, match="--auto-resume: no checkpoint"):
        assert main(["train", "--output-dir", str(out), "--auto-resume", "--dataset", "synthetic", "--synthetic-size",
                     "32", "16", "--image-size", "16", "--model", "cifar_resnet20", "--epochs", "1", "--batch-size",
                     "16", "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress"]) == 0
    first = (out / "checkpoint.pt").read_bytes()
    assert "auto_resume" not in yaml.safe_load((out / "config.yaml").read_text())  # how to start, not what
    assert main(["train", "--config", str(out / "config.yaml"), "--auto-resume", "--epochs", "2", "--no-progress"]) == 0
    assert '"epochs": 2' in (out / "results.json").read_text() and (out / "checkpoint.pt").read_bytes() != first
    with pytest.raises(ConfigError, match="--auto-resume and --overwrite exclude each other|not both"):
        make_config({**TINY, "output_dir": str(out), "auto_resume": True, "overwrite": True})


def test_the_printed_resume_command_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert f"--config {tmp_path / 'runs' / 'x' / 'config.yaml'} --resume" in resume_command(Path("runs/x"), DistInfo())


def test_overwrite_with_a_bad_option_keeps_the_earlier_run_whole(base, tmp_path, capsys):
    out = tmp_path / "ow"
    shutil.copytree(base, out)
    before = _bytes(out)
    code = main(["train", "--output-dir", str(out), "--overwrite", "--dataset", "imagefolder", "--data-dir",
                 str(tmp_path / "NOPE"), "--no-progress"])
    assert code == 1 and "NOPE" in capsys.readouterr().err
    assert _bytes(out) == before


def test_overwrite_replaces_the_run_and_removes_a_tb_symlink_not_its_target(base, tmp_path):
    out = tmp_path / "ow"
    shutil.copytree(base, out)
    shutil.rmtree(out / "tb")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (out / "tb").symlink_to(elsewhere, target_is_directory=True)
    (out / "notes.txt").write_text("mine too")
    with pytest.warns(UserWarning, match="removing the earlier run's"):
        result = train(make_config({**TINY, "output_dir": str(out), "overwrite": True, "seed": 3}))
    assert result["status"] == "finished" and result["config"]["seed"] == 3
    assert (elsewhere / "keep.txt").read_text() == "mine" and (out / "notes.txt").read_text() == "mine too"
    assert not (out / "tb").is_symlink() and any((out / "tb").iterdir())


@pytest.mark.parametrize("plant", ["symlink", "folder", "hard link"])
def test_a_lock_that_is_not_a_plain_file_is_refused_and_nothing_is_written_through_it(plant, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = out / LOCK_NAME
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "folder":
        lock.mkdir()
    else:
        os.link(victim, lock)
    with pytest.raises(ConfigError, match=f"{lock} is not a plain lock file"):
        RunLock(out)
    with pytest.raises(ConfigError, match="not a plain lock file"):  # the trainer's entry point, one clear line
        train(make_config({**TINY, "output_dir": str(out)}))
    release_run_dir(out)
    assert victim.read_text() == "precious"
