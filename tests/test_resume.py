"""Resuming a run for more epochs: a schedule laid over the old length is refused, and a run stopped while being
extended is never reported as finished at its old epoch."""
from __future__ import annotations

import json
import shutil

import pytest

from attentive_cutmix.experiments.evaluate import load_run_model
from attentive_cutmix.serialization import CheckpointError
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training import trainer as trainer_module

TINY = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, model="cifar_resnet20", epochs=2,
            batch_size=16, max_steps_per_epoch=1, workers=0, progress=False)


@pytest.mark.parametrize("schedule", [{"schedule": "cosine"}, {"schedule": "step"}])
def test_more_epochs_under_a_schedule_laid_over_the_old_length_is_refused(schedule, tmp_path):
    out = tmp_path / "run"
    train(make_config({**TINY, **schedule, "output_dir": str(out)}))
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=f"--epochs 6: its {schedule['schedule']} learning-rate schedule was "
                                              "laid over 2 epochs"):
        train(make_config({**TINY, **schedule, "output_dir": str(out), "resume": True, "epochs": 6}))
    assert (out / "checkpoint.pt").read_bytes() == before


def test_more_epochs_under_fixed_milestones_continue(tmp_path):
    out = tmp_path / "run"
    opts = {**TINY, "schedule": "step", "milestones": [3], "output_dir": str(out)}
    train(make_config(opts))
    result = train(make_config({**opts, "resume": True, "epochs": 4}))
    assert [round(r["lr"], 6) for r in result["curve"]] == [0.001, 0.001, 0.001, 0.0001]


@pytest.fixture
def extended_then_killed(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(make_config({**TINY, "output_dir": str(out)}))
    real_save, saves = trainer_module._Run._save, []

    def save_then_die(self):
        real_save(self)
        saves.append(self.epoch)
        if len(saves) == 1:
            raise KeyboardInterrupt  # stands for a SIGKILL after the first extra epoch's checkpoint

    monkeypatch.setattr(trainer_module._Run, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(make_config({**TINY, "output_dir": str(out), "resume": True, "epochs": 30}))
    return out


def test_a_run_stopped_while_being_extended_is_not_finished(extended_then_killed):
    record = json.loads((extended_then_killed / "results.json").read_text())
    assert record["status"] == "extending" and record["extending_to"] == 30 and record["epochs"] == 2


def test_evaluate_measures_the_extended_runs_checkpoint_not_its_old_final_weights(extended_then_killed):
    with pytest.warns(UserWarning, match="not finished .* measuring its latest checkpoint"):
        _, _, path = load_run_model(extended_then_killed)
    assert path.name == "checkpoint.pt"


def test_resuming_it_again_finishes_it(extended_then_killed, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(extended_then_killed, out)
    result = train(make_config({**TINY, "output_dir": str(out), "resume": True, "epochs": 4}))
    record = json.loads((out / "results.json").read_text())
    assert result["epochs"] == 4 and record["status"] == "finished" and "extending_to" not in record
