"""A full, read-only or wrong disk at a final write is one line naming the file, never a traceback, and nothing
already written is lost: the final weights (the checkpoint is kept; --resume finishes), --image-cache, and
evaluate --json."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import safetensors.torch
from PIL import Image

import attentive_cutmix.data.device as device_module
import attentive_cutmix.training.trainer as trainer_module
from attentive_cutmix.cli import main
from attentive_cutmix.serialization import atomic_write

ARGS = ["--dataset", "synthetic", "--synthetic-size", "32", "16", "--image-size", "16", "--epochs", "1",
        "--batch-size", "16", "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress"]


def _refuse(monkeypatch, name: str, code: int = errno.ENOSPC) -> None:
    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if name in str(filename):
            raise OSError(code, os.strerror(code))
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    # Modules that imported the function by name hold their own reference: the disk is full for them too.
    for module in (trainer_module, device_module):
        monkeypatch.setattr(module, "save_file", save_file)


def test_a_full_disk_at_the_final_weights_keeps_the_checkpoint_and_resume_finishes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _refuse(monkeypatch, ".weights.safetensors.")
    assert main(["train", *ARGS, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "No space left on device" in err
    assert str(out / "weights.safetensors") in err and "--resume" in err
    assert (out / "checkpoint.pt").is_file() and not (out / "results.json").exists()
    monkeypatch.undo()
    assert main(["train", "--config", str(out / "config.yaml"), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["status"] == "finished"
    assert (out / "weights.safetensors").is_file()


def test_an_image_cache_on_a_read_only_disk_is_one_line(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(data / cls / f"{i}.png")
    _refuse(monkeypatch, ".cache.safetensors.", errno.EROFS)
    cache = tmp_path / "cache.safetensors"
    code = main(["train", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size", "16", "--epochs", "1",
                 "--batch-size", "4", "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress",
                 "--val-fraction", "0.25", "--data-path", "device", "--image-cache", str(cache),
                 "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"could not write {cache} (Read-only file system)" in err and not cache.exists()


def test_evaluate_json_into_an_impossible_path_is_one_line_after_the_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--output-dir", str(out)]) == 0
    capsys.readouterr()
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "rows.json"  # its folder is a file: NotADirectoryError
    assert main(["evaluate", str(out), "--json", str(target)]) == 1
    captured = capsys.readouterr()
    assert "top-1" in captured.out.lower() or "top1" in captured.out.lower()
    assert f"could not write {target}" in captured.err and "Traceback" not in captured.err


def test_output_write_error_is_an_os_error_with_the_original_errno_and_a_value_error(tmp_path):
    from attentive_cutmix.serialization import OutputWriteError

    (tmp_path / "f").write_text("")
    try:
        atomic_write(tmp_path / "f" / "x", lambda tmp: None)
    except OutputWriteError as err:
        assert isinstance(err, OSError) and isinstance(err, ValueError) and err.errno == errno.EEXIST
        assert str(tmp_path / "f" / "x") in str(err)
    else:
        raise AssertionError("no error")
