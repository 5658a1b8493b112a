"""DDP (two CPU processes, gloo): a run stopped mid-epoch by SIGTERM resumes with every rank's own running loss,
so the epoch's train_loss equals an uninterrupted run's (it used to restore rank 0's sums on every rank)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _reliability_utils import child_env, count_lines, hooks_dir, wait_for
from attentive_cutmix.serialization import safe_torch_load

pytestmark = pytest.mark.slow

OPTS = ["--dataset", "synthetic", "--synthetic-size", "256", "--image-size", "16", "--model", "cifar_resnet20",
        "--method", "cutmix", "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "6", "--log-every", "1",
        "--workers", "0", "--device", "cpu", "--no-progress", "--seed", "3"]


class _Torchrun:
    """``torchrun --nproc_per_node=2 ... train``, in its own session so a signal reaches the whole job."""

    def __init__(self, args: list[str], env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.err = logs / "stderr.txt"
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "attentive_cutmix", "train", *args]
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(argv, env=env, stdout=err, stderr=err, cwd=str(logs),
                                         start_new_session=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running():
            os.killpg(self.proc.pid, sig)

    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"torchrun hung:\n{self.stderr()[-3000:]}")


def _loss(out: Path) -> float:
    return json.loads((out / "results.json").read_text())["curve"][0]["train_loss"]


def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_train_loss(tmp_path):
    straight = _Torchrun(OPTS + ["--output-dir", str(tmp_path / "straight")], child_env(), tmp_path / "l1")
    assert straight.wait() == 0, straight.stderr()[-3000:]

    out, log = tmp_path / "run", tmp_path / "steps.log"
    job = _Torchrun(OPTS + ["--output-dir", str(out)],
                    child_env(hooks_dir(tmp_path), ACM_TEST_STEP_LOG=log, ACM_TEST_STEP_DELAY=0.5), tmp_path / "l2")
    assert wait_for(lambda: count_lines(log) >= 2 * 2, job), job.stderr()[-3000:]  # two steps on both ranks
    job.kill(signal.SIGTERM)
    job.wait()
    step = int(safe_torch_load(out / "checkpoint.pt")["step"])
    assert 0 < step < 6, job.stderr()[-3000:]

    resumed = _Torchrun(OPTS + ["--output-dir", str(out), "--resume"], child_env(), tmp_path / "l3")
    assert resumed.wait() == 0, resumed.stderr()[-3000:]
    assert _loss(out) == pytest.approx(_loss(tmp_path / "straight"), rel=1e-9, abs=0)
