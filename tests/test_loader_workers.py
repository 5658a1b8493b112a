"""DataLoader workers: a worker error ends the run at once, in one line naming the file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from _reliability_utils import child_env
from attentive_cutmix.data.loader import WORKER_TERM_GRACE_S, _seed_worker, worker_safe_loader
from attentive_cutmix.training.config import FIELDS


def _folder_with_a_truncated_jpeg(root):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    bad = root / "a" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    return bad


@pytest.mark.slow
def test_worker_error_with_the_default_two_workers_exits_1_at_once_in_one_line(tmp_path):
    bad = _folder_with_a_truncated_jpeg(tmp_path / "data")
    config = tmp_path / "run.yaml"
    # The loader path is the one with worker processes (the device path decodes images up front).
    config.write_text("data_path: loader\n" if "data_path" in FIELDS else "{}\n")
    argv = [sys.executable, "-m", "attentive_cutmix", "train", "--config", str(config), "--dataset", "imagefolder",
            "--data-dir", str(tmp_path / "data"), "--val-fraction", "0.2", "--image-size", "16", "--epochs", "1",
            "--batch-size", "4", "--output-dir", str(tmp_path / "out"), "--no-progress"]  # --workers: the default, 2
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"train hung after a worker error; stderr:\n{err.stderr}") from None
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - start < 60
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(bad) in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr, proc.stderr


class _Fails(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        if index == 5:
            raise KeyError(f"item {index} is broken")  # torch's own re-raise would turn this into its traceback text
        return torch.tensor([index])


def test_worker_exception_keeps_its_type_and_message_and_the_workers_are_stopped():
    loader = worker_safe_loader(_Fails(), workers=2, batch_size=2)
    iterator = iter(loader)
    with pytest.raises(KeyError) as info:
        list(iterator)
    assert info.value.args == ("item 5 is broken",)
    assert "Traceback" not in str(info.value)
    assert [p for p in __import__("multiprocessing").active_children() if p.daemon] == []


def _worker_then_sleep(ready) -> None:
    _seed_worker(0)
    ready.set()
    time.sleep(120)


@pytest.mark.slow
def test_a_worker_outlives_a_sigterm_by_the_grace_period_only():
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    worker = ctx.Process(target=_worker_then_sleep, args=(ready,), daemon=True)
    worker.start()
    assert ready.wait(30)
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(1)
    assert worker.is_alive(), "a worker must not die under a main process that is finishing its step"
    os.kill(worker.pid, signal.SIGTERM)  # a repeated SIGTERM does not postpone the end
    worker.join(WORKER_TERM_GRACE_S + 10)
    assert not worker.is_alive(), "the worker ignored SIGTERM for ever"
    assert worker.exitcode == -signal.SIGALRM


class _SignalsItself(torch.utils.data.Dataset):
    """Each item sends its worker process a signal, as a cluster's preemption notice reaches the process group."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        os.kill(os.getpid(), self.signum)
        return torch.tensor(i)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1], ids=lambda s: signal.Signals(s).name)
def test_workers_outlive_sighup_and_sigusr1_as_they_do_sigterm(signum):
    # Their default action ended the worker at once: the run died with a DataLoader error instead of checkpointing.
    loader = worker_safe_loader(_SignalsItself(signum), workers=1, batch_size=2)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
