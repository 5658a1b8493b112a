"""Run folders: one run per folder (a lock naming its holder), and no fresh run over old outputs."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _reliability_utils import Child, child_env, hooks_dir
from attentive_cutmix.experiments.grid import load_grid
from attentive_cutmix.training import ConfigError, make_config, train
from attentive_cutmix.training.run_io import (
    LOCK_NAME,
    OUTPUT_NAMES,
    RunLock,
    RunLockedError,
    clear_earlier_outputs,
    prepare_output_dir,
    release_run_dir,
    wait_for_run,
)

TINY = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, model="cifar_resnet20", epochs=1,
            batch_size=16, max_steps_per_epoch=1, workers=0, progress=False)

HOLD = """
import sys, time
from pathlib import Path
from attentive_cutmix.training.run_io import RunLock
lock = RunLock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], env=child_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
def test_a_second_process_is_refused_with_the_holders_pid_host_and_start_and_the_lock_dies_with_it(tmp_path):
    holder = _holder(tmp_path / "run", 60)
    try:
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path / "run")
        message = str(info.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "started 20" in message
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):  # the trainer's entry point refuses too
            train(make_config({**TINY, "output_dir": str(tmp_path / "run")}))
        assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs; the OS drops the flock
        holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # a killed holder leaves the file, unlocked
    RunLock(tmp_path / "run").release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


@pytest.mark.slow
def test_wait_for_run_returns_when_the_holder_ends(tmp_path):
    holder = _holder(tmp_path / "run", 2)
    start = time.monotonic()
    wait_for_run(tmp_path / "run")
    assert time.monotonic() - start > 1 and holder.wait(10) == 0


def test_a_finished_run_releases_its_folder_and_a_failed_start_does_not_hold_it(tmp_path):
    out = tmp_path / "run"
    assert train(make_config({**TINY, "output_dir": str(out)}))["status"] == "finished"
    RunLock(out).release()  # another process could take it now
    with pytest.raises(ConfigError, match="already holds"):
        prepare_output_dir(out, resume=False, is_main=True)
    RunLock(out).release()


@pytest.mark.parametrize("keep", ["results.json", "metrics.jsonl", "config.yaml", "tb"])
def test_a_fresh_run_refuses_any_earlier_output_even_without_a_checkpoint(keep, tmp_path):
    out = tmp_path / "run"
    train(make_config({**TINY, "output_dir": str(out)}))
    for name in OUTPUT_NAMES:  # e.g. a finished run whose large checkpoint was deleted
        if name != keep and (out / name).is_dir():
            for f in (out / name).iterdir():
                f.unlink()  # an empty tb/ is not an output
        elif name != keep:
            (out / name).unlink(missing_ok=True)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_NAME}
    with pytest.raises(ConfigError, match=f"already holds the outputs of an earlier run \\({keep}\\).*--overwrite"):
        train(make_config({**TINY, "output_dir": str(out), "seed": 1}))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_NAME} == before


def test_resume_of_a_finished_run_without_checkpoint_refuses_and_overwrite_replaces_only_run_outputs(tmp_path):
    out = tmp_path / "run"
    train(make_config({**TINY, "output_dir": str(out)}))
    (out / "checkpoint.pt").unlink()
    (out / "notes.txt").write_text("mine")
    results = (out / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="finished run .* nothing to continue.*--overwrite"):
        train(make_config({**TINY, "output_dir": str(out), "resume": True}))
    assert (out / "results.json").read_bytes() == results
    with pytest.raises(ConfigError, match="either --resume .* or --overwrite"):
        make_config({**TINY, "output_dir": str(out), "resume": True, "overwrite": True})
    assert prepare_output_dir(out, resume=False, is_main=True, overwrite=True) is None
    assert (out / "results.json").read_bytes() == results  # removed only once the new run has started
    with pytest.warns(UserWarning, match="removing the earlier run's"):
        clear_earlier_outputs(out)
    release_run_dir(out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["notes.txt"]


GRID = """
name: race
settings: {dataset: synthetic, synthetic_size: [48, 16], image_size: 16, batch_size: 16, epochs: 2,
           max_steps_per_epoch: 2, workers: 0, progress: false}
extractors:
  shared: {model: cifar_resnet20, epochs: 3}
method_settings:
  attentive-cutmix: {extractor: shared, grid_size: 4, num_patches: 2}
attention_cache: false
localization: false
axes: {method: [attentive-cutmix], seed: [0, 1]}
"""


@pytest.mark.slow
def test_two_compare_jobs_sharing_an_extractor_train_it_once_and_both_finish(tmp_path):
    grid = tmp_path / "race.yaml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    ids = [cell.id for cell in load_grid(grid).cells]  # what `compare --list` prints
    assert len(ids) == 2
    # Slow steps keep the first job's extractor training running while the second job starts.
    env = child_env(hooks_dir(tmp_path), ACM_TEST_STEP_LOG=tmp_path / "steps.log", ACM_TEST_STEP_DELAY=0.5)
    jobs = [Child([sys.executable, "-m", "attentive_cutmix", "compare", str(grid), "--output-dir", str(out),
                   "--cell", i, "--no-progress"], env, tmp_path / f"job{n}") for n, i in enumerate(ids)]
    codes = [job.wait(timeout=400) for job in jobs]
    logs = [job.stderr() for job in jobs]
    assert codes == [0, 0], logs
    # One job trains the extractor; the other tries, is refused by the lock, waits, and reuses the finished one.
    assert sum(log.count("waiting for the job training it") for log in logs) == 1, logs
    assert sum(log.count("extractor shared: resuming") for log in logs) == 0, logs
    (extractor,) = (out / "extractors").iterdir()
    rows = (extractor / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((extractor / "results.json").read_text())["epochs"] == 3
    for i in ids:
        assert json.loads((out / "runs" / i / "results.json").read_text())["status"] == "finished"


def test_a_finished_run_leaves_no_lock_file_and_removing_it_never_lets_two_processes_hold_the_folder(tmp_path):
    out = tmp_path / "run"
    assert train(make_config({**TINY, "output_dir": str(out)}))["status"] == "finished"
    assert not (out / LOCK_NAME).exists()  # timm users find a stray .lock in every finished run folder
    first = RunLock(out)
    got: list[RunLock] = []
    waiter = threading.Thread(target=lambda: got.append(RunLock(out, wait=True)))  # its own open file: flock blocks
    waiter.start()
    time.sleep(0.3)  # the waiter has opened the file and blocks on it
    first.release()  # removes the file it is waiting on
    waiter.join(10)
    (second,) = got
    with pytest.raises(RunLockedError):  # the waiter holds the file at the path, not the removed one
        RunLock(out)
    second.release()
    RunLock(out).release()
