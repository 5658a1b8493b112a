"""A real full disk at every write point is one line, the previous checkpoint is intact, no temp file is left, and
the run finishes once there is space (issue 34, item 1).

The disk is a real file system that fills: a tmpfs of a few MB mounted for the test (we run as root), else a
file-size limit (``RLIMIT_FSIZE``) in a subprocess, which makes the real writers fail as a full disk does (EFBIG
instead of ENOSPC). No writer is patched: ``torch.save`` fails with its own ``RuntimeError``, safetensors with its
``SafetensorError``, text files with ``OSError``.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from _reliability_utils import image_folder
from attentive_cutmix.cli import main
from attentive_cutmix.models import create_model

ARGS = ["--dataset", "synthetic", "--synthetic-size", "32", "16", "--image-size", "16", "--batch-size", "16",
        "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress", "--schedule", "constant"]
PAGE = 4096
MB = 1 << 20


@contextlib.contextmanager
def _tmpfs(folder: Path, size: int):
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission); "
                    "test_a_file_size_limit_fails_the_real_writers_in_one_line covers the writers with RLIMIT_FSIZE")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _grow(disk: Path, size: int) -> None:
    """Make room: the file system grows, as after freeing space."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def _leave_free(disk: Path, pages: int) -> Path:
    """Fill ``disk`` with a file, leaving exactly ``pages`` free pages."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail
    filler.write_bytes(b"\0" * (free - pages) * PAGE)
    assert os.statvfs(disk).f_bavail == pages
    return filler


def _one_line_error(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def _checkpoint_epoch(out: Path) -> int:
    return int(torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")["epoch"])


def test_a_full_disk_at_the_second_checkpoint_keeps_the_first_and_resume_finishes(tmp_path, capsys):
    """torch.save's RuntimeError ('unexpected pos') on a real full disk: the epoch-1 checkpoint stays whole."""
    with _tmpfs(tmp_path / "disk", 5 * MB) as disk:  # one checkpoint (3.4 MB) fits, its successor's temp file not
        out = disk / "run"
        assert main(["train", *ARGS, "--epochs", "2", "--output-dir", str(out)]) == 1
        line = _one_line_error(capsys.readouterr().err, f"could not write the checkpoint {out / 'checkpoint.pt'}",
                               "No space left on device", "previous checkpoint there is intact", "--resume")
        assert "basic_ios" not in line and "unexpected pos" not in line
        assert _checkpoint_epoch(out) == 1 and not _temp_files(disk)
        _grow(disk, 16 * MB)
        assert main(["train", "--config", str(out / "config.yaml"), "--resume"]) == 0
        assert json.loads((out / "results.json").read_text())["epochs"] == 2
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
        events = EventAccumulator(str(out / "tb"))
        events.Reload()  # TensorBoard reads both processes' event files as one curve
        assert [e.step for e in events.Scalars("train_loss")] == [1, 2]


# The sizes leave room for the checkpoint (3.4 MB) and weights_best.safetensors (0.53 MB, written before it), not
# for the final weights after them.
@pytest.mark.parametrize("name, size, ema", [("weights.safetensors", 4.23 * MB, []),
                                             ("weights_ema.safetensors", 5.58 * MB, ["--ema-decay", "0.9"])])
def test_a_full_disk_at_the_final_weights_keeps_the_checkpoint_and_resume_writes_them(tmp_path, capsys, name, size,
                                                                                       ema):
    """safetensors' SafetensorError ('os error 28') at weights.safetensors / weights_ema.safetensors."""
    with _tmpfs(tmp_path / "disk", int(size)) as disk:
        out = disk / "run"
        assert main(["train", *ARGS, *ema, "--epochs", "1", "--output-dir", str(out)]) == 1
        line = _one_line_error(capsys.readouterr().err, f"could not write {out / name}", "No space left on device",
                               "checkpoint", "--resume")
        assert "SafetensorError" not in line and "os error" not in line
        assert _checkpoint_epoch(out) == 1 and not (out / "results.json").exists() and not _temp_files(disk)
        _grow(disk, 16 * MB)
        assert main(["train", "--config", str(out / "config.yaml"), "--resume"]) == 0
        assert json.loads((out / "results.json").read_text())["status"] == "finished"
        assert (out / name).is_file()


@pytest.mark.parametrize("free, name", [(1, "config.yaml"), (2, "tb"), (3, "metrics.jsonl")])
def test_a_full_disk_at_config_tensorboard_or_metrics_is_one_line_and_the_named_command_finishes(tmp_path, capsys,
                                                                                                   free, name):
    """The small files: with 1 page left the lock takes it and config.yaml fails; with 2, the TensorBoard event file
    (written in the run's thread: no dying writer thread); with 3, the first metrics.jsonl line (no held-out
    evaluation at epoch 1 of 2, so no weights_best.safetensors is written before it)."""
    epochs = ["--epochs", "2", "--eval-every", "2"]
    with _tmpfs(tmp_path / "disk", 1 * MB) as disk:
        out = disk / "run"
        filler = _leave_free(disk, free)
        assert main(["train", *ARGS, *epochs, "--output-dir", str(out)]) == 1
        line = _one_line_error(capsys.readouterr().err, f"could not write {out / name}", "No space left on device",
                               "No checkpoint was written yet")
        assert not _temp_files(disk) and not (out / "checkpoint.pt").exists()
        if (out / "metrics.jsonl").exists():  # no half line is left
            assert (out / "metrics.jsonl").read_text() == ""
        filler.unlink()
        _grow(disk, 16 * MB)
        command = line.split("`")[1].split()[1:] if "`" in line else ["train", *ARGS, *epochs, "--output-dir",
                                                                      str(out)]
        assert main(command) == 0
        assert json.loads((out / "results.json").read_text())["status"] == "finished"


def test_a_full_disk_at_the_image_cache_and_the_attention_cache_is_one_line(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    weights = tmp_path / "extractor.safetensors"
    save_file(create_model("cifar_resnet20", num_classes=10).state_dict(), str(weights))
    with _tmpfs(tmp_path / "disk", 256 * 1024) as disk:
        _leave_free(disk, 0)
        cache = disk / "images.safetensors"
        code = main(["train", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size", "16", "--epochs",
                     "1", "--batch-size", "4", "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress",
                     "--val-fraction", "0.25", "--data-path", "device", "--image-cache", str(cache),
                     "--output-dir", str(tmp_path / "run")])
        assert code == 1
        _one_line_error(capsys.readouterr().err, f"could not write {cache} (No space left on device)")
        attention = disk / "attention.safetensors"
        code = main(["cache-attention", "--dataset", "synthetic", "--synthetic-size", "8", "--image-size", "16",
                     "--extractor", "cifar_resnet20", "--extractor-weights", str(weights), "--out", str(attention),
                     "--no-progress"])
        assert code == 1
        _one_line_error(capsys.readouterr().err, f"{attention}", "No space left on device")
        assert not _temp_files(disk) and not cache.exists() and not attention.exists()


def test_a_stale_image_cache_on_a_full_disk_warns_and_the_run_trains_on_the_decoded_images(tmp_path):
    """Item 11: the images are decoded and in memory; a cache that cannot be replaced must not end the run."""
    data = image_folder(tmp_path / "data")
    with _tmpfs(tmp_path / "disk", 256 * 1024) as disk:
        cache = disk / "images.safetensors"
        args = ["train", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size", "16", "--epochs", "1",
                "--batch-size", "4", "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress",
                "--val-fraction", "0.25", "--data-path", "device", "--image-cache", str(cache)]
        assert main([*args, "--output-dir", str(tmp_path / "first")]) == 0
        before = cache.read_bytes()
        first = next(data.glob("a/*.png"))
        os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))  # touched: stale
        _leave_free(disk, 0)
        with pytest.warns(UserWarning, match=rf"could not write {cache} \(No space left on device\).*trains on it"):
            assert main([*args, "--output-dir", str(tmp_path / "second")]) == 0
        assert cache.read_bytes() == before and not _temp_files(disk)


def test_a_full_disk_at_the_compare_report_is_one_line(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: tiny\nsettings: {dataset: synthetic, synthetic_size: [32, 16], image_size: 16, epochs: 1}\n"
                    "axes: {method: [none, cutmix]}\n")
    with _tmpfs(tmp_path / "disk", 256 * 1024) as disk:
        out = disk / "cmp"
        out.mkdir()
        _leave_free(disk, 0)
        assert main(["compare", str(grid), "--output-dir", str(out), "--report-only"]) == 1
        _one_line_error(capsys.readouterr().err, f"could not write {out / 'results.json'}", "No space left on device")
        assert not _temp_files(disk)


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
from attentive_cutmix.cli import main
from attentive_cutmix.models import create_model
raise SystemExit(main(sys.argv[2:]))
"""


def _limited(limit: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[1] / "src"),
                                                                    os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_a_file_size_limit_fails_the_real_writers_in_one_line(tmp_path):
    """Where no tmpfs can be mounted (CI without mount rights) this still runs the real writers into a wall: a
    1.5 MB file-size limit stops torch.save at the first checkpoint (3.4 MB); a second run of the finished
    checkpoint under a 0.5 MB limit stops safetensors at weights.safetensors (0.55 MB); without a limit it finishes."""
    out = tmp_path / "run"
    done = _limited(int(1.5 * MB), "train", *ARGS, "--epochs", "1", "--output-dir", str(out))
    assert done.returncode == 1, done.stderr
    _one_line_error(done.stderr, f"could not write the checkpoint {out / 'checkpoint.pt'} (File too large)",
                    "--auto-resume")
    assert not _temp_files(out) and not (out / "checkpoint.pt").exists()
    assert main(["train", "--config", str(out / "config.yaml"), "--auto-resume"]) == 0
    (out / "results.json").unlink()
    (out / "weights.safetensors").unlink()
    done = _limited(MB // 2, "train", "--config", str(out / "config.yaml"), "--resume")
    assert done.returncode == 1, done.stderr
    _one_line_error(done.stderr, f"could not write {out / 'weights.safetensors'} (File too large)", "--resume")
    assert not _temp_files(out) and _checkpoint_epoch(out) == 1
    assert main(["train", "--config", str(out / "config.yaml"), "--resume"]) == 0
    assert (out / "weights.safetensors").is_file()
