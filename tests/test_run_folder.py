"""Run folders: a run's config continues the folder it lies in, --resume never starts elsewhere, --overwrite removes
the earlier run only once the new one has started, and the lock file is never a door to another file."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from attentive_cutmix.cli import main
from attentive_cutmix.training import ConfigError, make_config, train
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
