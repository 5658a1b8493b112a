"""DDP: two CPU processes (gloo) via torchrun train one model; rank 0 alone writes; the all-reduced
eval accuracy equals a single-process evaluation of the checkpoint over the whole eval set."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from torch.utils.data import DataLoader

from attentive_cutmix.data import build_datasets
from attentive_cutmix.models import create_model
from attentive_cutmix.serialization import safe_torch_load
from attentive_cutmix.training import evaluate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("data_path", ["device", "loader"])
def test_two_process_gloo_training_matches_single_process_evaluation(tmp_path, data_path):
    out = tmp_path / "ddp"
    # 320 train / 64 eval images.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "attentive_cutmix", "train",
           "--dataset", "synthetic", "--synthetic-size", "320", "--epochs", "2", "--batch-size", "32", "--lr", "3e-3",
           "--workers", "0", "--device", "cpu", "--max-steps-per-epoch", "4", "--output-dir", str(out), "--no-progress",
           "--data-path", data_path]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("finished:") == 1  # rank 0 alone reports

    # Written once, by rank 0: one line per epoch, no temporary files left behind.
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1, 2]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["world_size"] == 2 and results["status"] == "finished"
    assert results["config"]["data_path_used"] == data_path

    ckpt = safe_torch_load(out / "checkpoint.pt")
    cfg = ckpt["config"]
    model = create_model(cfg["model"], num_classes=cfg["num_classes"], image_size=cfg["image_size"])
    model.load_state_dict(ckpt["model"])
    _, eval_ds, info = build_datasets("synthetic", synthetic_size=320, seed=cfg["seed"])
    single = evaluate(model, DataLoader(eval_ds, batch_size=50), info, "cpu")
    assert single["count"] == len(eval_ds)
    assert results["top1"] == pytest.approx(single["top1"], abs=1e-9)
    assert results["top5"] == pytest.approx(single["top5"], abs=1e-9)
    assert lines[-1]["eval_loss"] == pytest.approx(single["loss"], rel=1e-4)  # same BatchNorm statistics on both ranks
