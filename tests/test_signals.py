"""Signals while an attention cache is being built: Ctrl-C during `cache-attention` and SIGTERM during
`train --build-cache` stop with one line and exit 128 + signal, and leave no partial file (the build used to end in a
KeyboardInterrupt traceback, or silently under SIGTERM's default action with an orphan `.tmp`)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import save_file
from tqdm.auto import tqdm

from _reliability_utils import child_env
from attentive_cutmix.attention import cache as cache_module
from attentive_cutmix.attention import load_extractor
from attentive_cutmix.cli import main

# A hook for the child process only: the first cached batch sends this process the signal.
SIGNAL_ON_FIRST_BATCH = r'''
import os, signal
if os.environ.get("ACM_TEST_CACHE_SIGNAL"):
    from tqdm.auto import tqdm
    import attentive_cutmix.attention.cache as cache

    class _SignalOnFirstBatch(tqdm):
        def update(self, n=1):
            os.kill(os.getpid(), int(os.environ["ACM_TEST_CACHE_SIGNAL"]))
            return super().update(n)

    cache.tqdm = _SignalOnFirstBatch
'''


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "r20.safetensors"
    save_file(load_extractor("cifar_resnet20", input_size=32).model.state_dict(), str(path))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".c."))


def test_ctrl_c_during_cache_attention_is_one_line_exit_130_and_leaves_nothing(weights, tmp_path, monkeypatch,
                                                                                capsys):
    class SignalOnFirstBatch(tqdm):
        def update(self, n=1):
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to this (main) thread
            return super().update(n)

    monkeypatch.setattr(cache_module, "tqdm", SignalOnFirstBatch)
    handler_before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "cache" / "c.safetensors"
    out.parent.mkdir()
    code = main(["cache-attention", "--dataset", "synthetic", "--synthetic-size", "40", "12", "--extractor",
                 "cifar_resnet20", "--extractor-weights", str(weights), "--out", str(out), "--workers", "0",
                 "--batch-size", "8", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGINT and "Traceback" not in err
    assert f"stopped by SIGINT while building the attention cache {out}; nothing was written" in err
    assert not out.exists() and _leftovers(out.parent) == []
    assert signal.getsignal(signal.SIGINT) is handler_before


@pytest.mark.slow
def test_sigterm_during_train_build_cache_exits_143_with_one_line_and_no_orphan(weights, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SIGNAL_ON_FIRST_BATCH)
    env = child_env(ACM_TEST_CACHE_SIGNAL=int(signal.SIGTERM))
    env["PYTHONPATH"] = os.pathsep.join([str(hooks), env.get("PYTHONPATH", "")])
    cache = tmp_path / "cache" / "c.safetensors"
    cache.parent.mkdir()
    argv = [sys.executable, "-m", "attentive_cutmix", "train", "--dataset", "synthetic", "--synthetic-size", "40",
            "12", "--method", "attentive-cutmix", "--extractor", "cifar_resnet20", "--extractor-weights", str(weights),
            "--attention-cache", str(cache), "--build-cache", "--grid-size", "8", "--epochs", "1", "--batch-size", "8",
            "--max-steps-per-epoch", "1", "--workers", "0", "--no-progress", "--output-dir", str(tmp_path / "run")]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "stopped by SIGTERM while building the attention cache" in proc.stderr and "Traceback" not in proc.stderr
    assert not cache.exists() and _leftovers(cache.parent) == []
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_sigterm_to_demo_ends_its_training_workers_and_frees_every_run_folder(tmp_path):
    from attentive_cutmix.training.run_io import RunLock

    out, logs = tmp_path / "demo", tmp_path / "logs"
    logs.mkdir()
    with open(logs / "stdout.txt", "w") as so, open(logs / "stderr.txt", "w") as se:
        demo = subprocess.Popen([sys.executable, "-m", "attentive_cutmix", "demo", "--quick", "--jobs", "2",
                                 "--output-dir", str(out)], env=child_env(), stdout=so, stderr=se,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.rglob("metrics.jsonl")):  # a training has started in a worker
            assert demo.poll() is None and time.monotonic() < deadline, (logs / "stderr.txt").read_text()[-3000:]
            time.sleep(0.2)
        demo.send_signal(signal.SIGTERM)  # the demo process alone, as `kill PID` or a scheduler does
        code = demo.wait(timeout=240)
        err = (logs / "stderr.txt").read_text()
        assert code == 128 + signal.SIGTERM, err[-3000:]
        assert "demo stopped; run the same command again" in err and "Traceback" not in err
        for lock in out.rglob(".lock"):  # no worker still trains: every run folder can be taken at once
            RunLock(lock.parent).release()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)  # whatever is left of the job, if the test failed
