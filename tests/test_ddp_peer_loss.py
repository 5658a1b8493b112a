"""A DDP rank killed mid-training: the survivor says so in one line (which rank, that the checkpoint is kept, how to
continue), not with gloo's raw traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _reliability_utils import child_env

pytestmark = pytest.mark.slow

# Child-only hook: each rank writes its pid, and logs and slows its steps, so the test can kill one mid-training.
PIDS_AND_SLOW_STEPS = r'''
import os
if os.environ.get("ACM_TEST_PID_DIR") and os.environ.get("RANK"):
    import time
    from torch.optim.optimizer import register_optimizer_step_post_hook

    _dir, _rank = os.environ["ACM_TEST_PID_DIR"], os.environ["RANK"]
    with open(os.path.join(_dir, f"rank{_rank}.pid"), "w") as f:
        f.write(str(os.getpid()))

    def _step(optimizer, args, kwargs):
        with open(os.path.join(_dir, f"steps{_rank}"), "a") as f:
            f.write("s\n")
        time.sleep(0.5)

    register_optimizer_step_post_hook(_step)
'''


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_a_killed_rank_leaves_the_survivor_one_line_not_a_gloo_traceback(tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(PIDS_AND_SLOW_STEPS)
    env = child_env(ACM_TEST_PID_DIR=tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(hooks), env.get("PYTHONPATH", "")])
    logs = tmp_path / "logs"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--log-dir",
            str(logs), "--redirects", "3", "-m", "attentive_cutmix", "train", "--dataset", "synthetic",
            "--synthetic-size", "256", "--image-size", "16", "--epochs", "2", "--batch-size", "16",
            "--max-steps-per-epoch", "20", "--workers", "0", "--device", "cpu", "--no-progress", "--output-dir",
            str(tmp_path / "run")]
    job = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 240
        while _lines(tmp_path / "steps1") < 3:
            assert job.poll() is None and time.monotonic() < deadline, "the job ended or never started training"
            time.sleep(0.2)
        os.kill(int((tmp_path / "rank1.pid").read_text()), signal.SIGKILL)
        job.wait(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    survivor = next(logs.rglob("attempt_0/0/stderr.log")).read_text()
    assert "rank 0: another process of this 2-process job stopped" in survivor, survivor[-3000:]
    assert "Traceback" not in survivor and "--resume" in survivor
