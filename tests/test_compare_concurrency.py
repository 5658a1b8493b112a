"""Two ``compare`` jobs on one output folder: a cell the other job is training is left to it and waited for, never
reported as FAILED (issue 23, item 27)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import attentive_cutmix
from attentive_cutmix.cli import main
from attentive_cutmix.experiments.grid import load_grid

TINY = dict(dataset="synthetic", synthetic_size=32, image_size=16, model="cifar_resnet20", epochs=1, batch_size=16,
            max_steps_per_epoch=1, workers=0, progress=False)
HOLD = """import sys, time
from pathlib import Path
from attentive_cutmix.training.run_io import RunLock
folder, until = Path(sys.argv[1]), Path(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
lock = RunLock(folder)
print("locked", flush=True)
deadline = time.monotonic() + 300
while not until.exists() and time.monotonic() < deadline:
    time.sleep(0.2)
"""


@pytest.mark.slow
def test_a_cell_another_job_trains_is_waited_for_not_failed(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"settings": TINY, "axes": {"seed": [0, 1]}}))
    out = tmp_path / "out"
    first, second = (c.id for c in load_grid(grid).cells)
    env = {**os.environ, "PYTHONPATH": str(Path(attentive_cutmix.__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    # The "other job": holds the first cell's run lock, as a compare job training it would, until the second cell
    # is finished (so the job under test must have moved on to it, then come back).
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / "runs" / first),
                               str(out / "runs" / second / "results.json")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["compare", str(grid), "--output-dir", str(out), "--no-progress"])
    finally:
        holder.wait(timeout=330)
    log = capsys.readouterr().err
    assert code == 0, log
    assert "FAILED" not in log and "failed:" not in log
    assert f"{first}: another job is training it" in log and f"{first}: waiting for the job training it" in log
    assert log.index(f"{second}: training") < log.index(f"{first}: waiting")  # the free cell was not held up
    for cell in (first, second):
        assert json.loads((out / "runs" / cell / "results.json").read_text())["status"] == "finished"
