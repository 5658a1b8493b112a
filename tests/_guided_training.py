"""Shared by the tests of methods guided by the model being trained: tiny runs, a compare grid, an exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from attentive_cutmix.cli import main
from attentive_cutmix.serialization import safe_torch_load
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training import trainer as trainer_mod

TINY = dict(dataset="synthetic", synthetic_size=[48, 16], image_size=16, model="cifar_resnet20", batch_size=16,
            workers=0, progress=False, seed=5)
TIMING = ("images_per_s", "time_s")


def train_cli(out: Path, *flags: str) -> dict:
    """``attentive-cutmix train`` of one tiny epoch on the device path; its results.json."""
    argv = ["train", "--dataset", "synthetic", "--synthetic-size", "48", "16", "--image-size", "16", "--model",
            "cifar_resnet20", "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", "2", "--workers", "0",
            "--data-path", "device", "--no-progress", "--output-dir", str(out), *flags]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


def compare_grid(tmp_path: Path, methods: list) -> dict:
    """A one-seed ``compare`` grid over ``methods`` (names or labelled dicts); its results.json."""
    grid = tmp_path / "grid.yaml"
    settings = {**TINY, "epochs": 1, "max_steps_per_epoch": 2, "data_path": "device"}
    grid.write_text(yaml.safe_dump({"settings": settings, "axes": {"method": methods}}, sort_keys=False))
    out = tmp_path / "grid"
    assert main(["compare", str(grid), "--output-dir", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def assert_mid_epoch_resume_is_exact(tmp_path: Path, monkeypatch, opts: dict) -> tuple[dict, dict]:
    """A run of ``opts`` (two epochs of three steps) stopped in the middle of its second epoch and resumed ends with
    the same weights, bit for bit, and the same curve as the run that went straight through; both checkpoints."""
    straight = train(make_config({**opts, "output_dir": str(tmp_path / "straight")}))
    real_step = trainer_mod._Run._step

    def step_then_signal(self, batch):
        if self.epoch == 1 and self.step == 1:  # the second of three steps of epoch 2
            self.signals.requested, self.signals.name = True, "SIGTERM"  # as the handler does
        return real_step(self, batch)

    monkeypatch.setattr(trainer_mod._Run, "_step", step_then_signal)
    stopped = train(make_config({**opts, "output_dir": str(tmp_path / "resumed")}))
    assert stopped["status"] == "interrupted" and (stopped["epoch"], stopped["step"]) == (1, 2)
    monkeypatch.setattr(trainer_mod._Run, "_step", real_step)
    resumed = train(make_config({**opts, "output_dir": str(tmp_path / "resumed"), "resume": True}))

    def strip(curve):
        return [{k: v for k, v in row.items() if k not in TIMING} for row in curve]

    assert strip(resumed["curve"]) == strip(straight["curve"])
    a, b = (safe_torch_load(tmp_path / d / "checkpoint.pt") for d in ("straight", "resumed"))
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b
