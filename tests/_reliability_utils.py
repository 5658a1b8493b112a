"""Helpers for the reliability tests: real `attentive-cutmix train` subprocesses with test-only hooks.

The hooks live in a generated ``sitecustomize.py`` put on ``PYTHONPATH`` of the child process only, so
the library has no test code in it and the command is the user's own ``python -m attentive_cutmix train``:

* ``ACM_TEST_STEP_LOG=FILE``: append one line per optimiser step (a global post-step hook), so the
  test knows how much work the process had done when it was killed; ``ACM_TEST_STEP_DELAY`` sleeps
  after each step so kills land inside training rather than in the interpreter's start-up.
* ``ACM_TEST_SLOW_SAVE=SECONDS``: ``torch.save`` to a checkpoint temp file writes half the bytes,
  fsyncs, sleeps, then writes the rest, so a test can SIGKILL the process in the middle of the write.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from attentive_cutmix.serialization import safe_torch_load

TIMING = ("images_per_s", "time_s")

SITECUSTOMIZE = r'''
import os
if os.environ.get("ACM_TEST_STEP_LOG"):
    import io, time
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    _log, _delay = os.environ["ACM_TEST_STEP_LOG"], float(os.environ.get("ACM_TEST_STEP_DELAY", "0"))

    def _after_step(optimizer, args, kwargs):
        with open(_log, "a") as f:
            f.write("step\n")
        if _delay:
            time.sleep(_delay)

    register_optimizer_step_post_hook(_after_step)
    _slow = float(os.environ.get("ACM_TEST_SLOW_SAVE", "0"))
    if _slow:
        _real_save = torch.save

        def _half_then_sleep(obj, f, *args, **kwargs):
            name = os.path.basename(str(f))
            if not (name.startswith(".checkpoint.pt.") and name.endswith(".tmp")):
                return _real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            _real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            with open(f, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(_slow)
                fh.write(data[len(data) // 2:])

        torch.save = _half_then_sleep
'''


def hooks_dir(root: Path) -> Path:
    folder = root / "hooks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def train_argv(out: Path, opts: dict[str, Any]) -> list[str]:
    argv = [sys.executable, "-m", "attentive_cutmix", "train", "--output-dir", str(out), "--no-progress"]
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def child_env(hooks: Path | None = None, **extra: Any) -> dict[str, str]:
    env = dict(os.environ)
    # One thread: two spinning OpenMP threads on a shared 2-core box are far slower, and every run
    # compared for bit-equality must use the same thread count.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if hooks is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(hooks)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Child:
    """A `train` subprocess whose stdout/stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, argv: list[str], env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = logs / "stdout.txt", logs / "stderr.txt"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=str(logs))

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"train subprocess hung; stderr:\n{self.stderr()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def wait_for(predicate, child: Child, *, timeout: float = 180, interval: float = 0.01) -> bool:
    """Poll ``predicate()`` until true (-> True) or the child exits first (-> False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if not child.running():
            return bool(predicate())
        time.sleep(interval)
    child.kill()
    raise AssertionError(f"timed out waiting; child stderr:\n{child.stderr()}")


def count_lines(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def strip_timing(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in curve]


def model_weights(out: Path) -> dict[str, torch.Tensor]:
    return safe_torch_load(out / "checkpoint.pt")["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"weights differ at {key}"


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file under ``folder``: 'nothing the user had was modified'."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_malicious_pickle(path: Path, marker: Path, *, zip_format: bool = True) -> Path:
    """Write a file that creates ``marker`` when unpickled: torch's zip format, or a raw pickle."""
    payload = {"model": _Payload(marker), "config": {"model": "cifar_resnet20"}}
    if zip_format:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


def payload_is_live(marker_dir: Path | None = None) -> bool:
    """Prove the payload really executes when loaded unsafely (so a test of its refusal can fail)."""
    with tempfile.TemporaryDirectory(dir=marker_dir) as d:
        marker = Path(d) / "pwned"
        file = plant_malicious_pickle(Path(d) / "evil.pt", marker)
        obj = torch.load(file, weights_only=False)  # deliberately unsafe, in a temp dir: proves the payload is live
        obj["model"].close()
        return marker.exists()


# A tiny run: 5 epochs x 3 steps of cifar_resnet20 on 16 px synthetic images, one checkpoint per epoch.
RUN_OPTS: dict[str, Any] = dict(dataset="synthetic", synthetic_size=96, image_size=16, model="cifar_resnet20",
                                method="cutmix", epochs=5, batch_size=16, max_steps_per_epoch=3, workers=0, seed=7)
STEPS_PER_EPOCH, TOTAL_STEPS = 3, 15
_BASELINES: dict[str, Path] = {}


def baseline_run(root: Path) -> Path:
    """The uninterrupted subprocess run of ``RUN_OPTS`` (made once per test session, shared by the test files)."""
    if "run" not in _BASELINES:
        out = root / "baseline"
        child = Child(train_argv(out, RUN_OPTS), child_env(), root / "baseline-logs")
        assert child.wait() == 0, child.stderr()
        _BASELINES["run"] = out
    return _BASELINES["run"]


def checkpoint_position(out: Path) -> int:
    """Global step the checkpoint in ``out`` resumes from (0 without one); it must load safely."""
    from attentive_cutmix.training.checkpoint import load_checkpoint

    path = out / "checkpoint.pt"
    if not path.exists():
        return 0
    ckpt = load_checkpoint(path)  # weights_only; raises CheckpointError if half-written
    return int(ckpt["epoch"]) * STEPS_PER_EPOCH + int(ckpt.get("step", 0))


def assert_same_as_baseline(out: Path, baseline: Path) -> None:
    import json

    got, want = (json.loads((d / "results.json").read_text()) for d in (out, baseline))
    assert got["status"] == "finished"
    assert strip_timing(got["curve"]) == strip_timing(want["curve"])
    assert (got["top1"], got["top5"], got["best_top1"]) == (want["top1"], want["top5"], want["best_top1"])
    assert_same_weights(model_weights(out), model_weights(baseline))


def image_folder(root: Path, n: int = 6) -> Path:
    """Two class folders of ``n`` 16 px PNGs each (greys 0, 40, 80 ...)."""
    import numpy as np
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    return root
