"""SIGTERM / Ctrl-C finish the step, checkpoint and exit with 128+signal; a non-finite loss or non-finite weights
stop the run at once and never replace the last good checkpoint."""
from __future__ import annotations

import json
import os
import random
import signal

import pytest
import torch

from _reliability_utils import (
    RUN_OPTS,
    STEPS_PER_EPOCH,
    Child,
    assert_same_as_baseline,
    assert_same_weights,
    baseline_run,
    checkpoint_position,
    child_env,
    count_lines,
    hooks_dir,
    model_weights,
    snapshot,
    strip_timing,
    train_argv,
    wait_for,
)
from attentive_cutmix.cli import main as cli_main
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training import trainer as trainer_mod
from attentive_cutmix.training.trainer import NonFiniteLossError


def _argv(out, **kw):
    opts = {**RUN_OPTS, "epochs": 2, **kw}
    return train_argv(out, opts)[3:]  # without "python -m attentive_cutmix": the argv of cli.main


def _opts(out, **kw):
    return {**RUN_OPTS, "epochs": 2, "progress": False, "output_dir": str(out), **kw}


@pytest.mark.slow
def test_sigterm_subprocess_checkpoints_exits_143_and_resumes_exactly(tmp_path, tmp_path_factory):
    baseline = baseline_run(tmp_path_factory.mktemp("baseline"))
    out, log = tmp_path / "run", tmp_path / "steps.log"
    child = Child(train_argv(out, RUN_OPTS),
                  child_env(hooks_dir(tmp_path), ACM_TEST_STEP_LOG=log, ACM_TEST_STEP_DELAY=0.1), tmp_path / "logs")
    target = random.randint(STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH - 1)
    assert wait_for(lambda: count_lines(log) >= target, child), child.stderr()
    child.kill(signal.SIGTERM)
    assert child.wait() == 128 + signal.SIGTERM, child.stderr()
    assert "received SIGTERM" in child.stderr()
    assert "Resume with:" in child.stdout() and "--resume" in child.stdout()
    assert checkpoint_position(out) == count_lines(log)  # the step in flight finished and was saved: no work lost
    assert not (out / "results.json").exists()
    resumed = Child(train_argv(out, {**RUN_OPTS, "resume": True}), child_env(), tmp_path / "logs2")
    assert resumed.wait() == 0, resumed.stderr()
    assert_same_as_baseline(out, baseline)


def _signal_at(monkeypatch, epoch: int, step: int, times: int = 1, signum: int = signal.SIGINT):
    real_step = trainer_mod._Run._step

    def step_with_signal(self, batch):
        if (self.epoch + 1, self.step) == (epoch, step):
            for _ in range(times):
                os.kill(os.getpid(), signum)  # a real signal (Ctrl-C by default), delivered to this (main) thread
        return real_step(self, batch)

    monkeypatch.setattr(trainer_mod._Run, "_step", step_with_signal)
    return real_step


def test_ctrl_c_checkpoints_mid_epoch_exits_130_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    assert cli_main(_argv(tmp_path / "straight")) == 0
    real_step = _signal_at(monkeypatch, epoch=2, step=1)
    handler_before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    assert cli_main(_argv(tmp_path / "run")) == 128 + signal.SIGINT
    captured = capsys.readouterr()
    assert "Stopped by SIGINT at epoch 2, step 2" in captured.out and "--resume" in captured.out
    assert checkpoint_position(tmp_path / "run") == STEPS_PER_EPOCH + 2
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    monkeypatch.setattr(trainer_mod._Run, "_step", real_step)
    assert cli_main(_argv(tmp_path / "run", resume=True)) == 0
    got, want = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("run", "straight"))
    assert strip_timing(got["curve"]) == strip_timing(want["curve"])
    assert_same_weights(model_weights(tmp_path / "run"), model_weights(tmp_path / "straight"))


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1], ids=lambda s: signal.Signals(s).name)
def test_sighup_and_sigusr1_checkpoint_and_exit_like_sigterm(signum, tmp_path, monkeypatch, capsys):
    # A closed ssh session (SIGHUP) or a cluster's preemption notice (SIGUSR1) used to end the run at once.
    _signal_at(monkeypatch, epoch=1, step=1, signum=signum)
    handler_before = signal.getsignal(signum)
    assert cli_main(_argv(tmp_path / "run", epochs=1)) == 128 + signum
    name = signal.Signals(signum).name
    captured = capsys.readouterr()
    assert f"received {name}" in captured.err and f"Stopped by {name} at epoch 1, step 2" in captured.out
    assert checkpoint_position(tmp_path / "run") == 2 and not (tmp_path / "run" / "results.json").exists()
    assert signal.getsignal(signum) is handler_before


def test_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(make_config(_opts(out, epochs=1)))
    before = snapshot(out)
    _signal_at(monkeypatch, epoch=2, step=1, times=2)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(_opts(out, resume=True)))
    assert snapshot(out)["checkpoint.pt"] == before["checkpoint.pt"]
    assert not list(out.glob(".checkpoint.pt.*.tmp"))
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_nan_loss_stops_the_cli_at_the_next_sync_point_naming_epoch_step_and_causes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli_main(_argv(out, epochs=1)) == 0
    before = snapshot(out)
    real_step = trainer_mod._Run._step
    steps, weights_after = [], []

    def nan_images_in_epoch_2(self, batch):
        steps.append((self.epoch + 1, self.step))
        if self.epoch + 1 == 2 and self.step == 2:  # the step after the bad one: its update was skipped
            weights_after.append(all(bool(torch.isfinite(p).all()) for p in self.model.parameters()))
        if self.epoch + 1 == 2 and self.step == 1:
            batch = [batch[0] * float("nan"), *batch[1:]]  # the mixer passes NaN pixels through; the loss catches them
        return real_step(self, batch)

    monkeypatch.setattr(trainer_mod._Run, "_step", nan_images_in_epoch_2)
    assert cli_main(_argv(out, resume=True) + ["--log-every", "3"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "epoch 2, step 2" in err and "--lr" in err and "--amp" in err
    assert "Traceback" not in err
    assert steps[-1] == (2, 2)  # stopped at the first sync point after it (step 3), no later step ran
    assert weights_after == [True]  # the non-finite update never reached the weights (BatchNorm stats did, unsaved)
    after = snapshot(out)
    assert after["checkpoint.pt"] == before["checkpoint.pt"]
    # The finished run's numbers are kept; only its status says it is being extended (issue 23, item 14).
    was, now = (json.loads(s[0]) for s in (before["results.json"], after["results.json"]))
    assert now.pop("status") == "extending" and now.pop("extending_to") == 2 and was.pop("status") == "finished"
    assert now == was


def _finite(state):
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def test_weights_broken_by_the_last_step_of_an_epoch_are_never_checkpointed(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(make_config(_opts(out, epochs=1)))
    before = snapshot(out)
    real_step = trainer_mod._Run._step

    def break_weights_after_last_step(self, batch):
        result = real_step(self, batch)  # its loss was finite
        if self.epoch + 1 == 2 and self.step == STEPS_PER_EPOCH - 1:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return result

    monkeypatch.setattr(trainer_mod._Run, "_step", break_weights_after_last_step)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*--lr"):
        train(make_config(_opts(out, resume=True)))
    assert snapshot(out)["checkpoint.pt"] == before["checkpoint.pt"]
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_huge_learning_rate_stops_with_a_clear_error_and_no_broken_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+.*--lr") as info:
        train(make_config(_opts(out, optimizer="sgd", lr=1e8)))
    # lr 1e8 breaks the first epoch: the error comes before any checkpoint, so none with NaN/Inf can exist.
    assert "epoch 1," in str(info.value)
    assert not (out / "checkpoint.pt").exists()
