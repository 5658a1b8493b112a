"""The open harness: ``train(config, model=..., train_dataset=..., eval_dataset=...)``, and timm train.py's recipe
options (``--optimizer adamw``, ``--warmup-epochs``, ``--clip-grad``, ``--ema-decay``, ``--mix-off-epoch``), each
shown to act, with resume still exact."""
from __future__ import annotations

import argparse
import copy
import json
import os
import stat

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from attentive_cutmix.cli import train as cli_train
from attentive_cutmix.experiments.grid import _identity
from attentive_cutmix.serialization import safe_torch_load
from attentive_cutmix.training.components import build_optimizer, build_scheduler, load_scheduler_state, scheduler_state
from attentive_cutmix.training.config import ConfigError, make_config
from attentive_cutmix.training.trainer import train

NEW = ("warmup_epochs", "clip_grad", "ema_decay", "mix_off_epoch")


def _data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def _run(tmp_path, model=None, **options):
    base = dict(epochs=1, batch_size=8, workers=0, progress=False, device="cpu", output_dir=str(tmp_path))
    cfg = make_config({**base, **options})
    return train(cfg, model=model or _model(), train_dataset=_data(), eval_dataset=_data(16, seed=1), classes=4)


def _flat(state: dict) -> torch.Tensor:
    return torch.cat([v.flatten().float() for k, v in state.items() if v.is_floating_point()])


def test_train_takes_your_model_and_datasets(tmp_path):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    result = _run(tmp_path, model=model, epochs=2)
    assert not torch.equal(_flat(model.state_dict()), _flat(before))  # your module itself was trained
    assert result["status"] == "finished" and result["curve"][-1]["top1"] is not None
    saved = json.loads((tmp_path / "results.json").read_text())["config"]
    assert saved["model"] == "module:Sequential" and saved["dataset"] == "given:TensorDataset"
    assert saved["num_classes"] == 4 and saved["image_size"] == 16
    with pytest.raises(ConfigError, match=r"\['init'\] would be ignored"):
        _run(tmp_path / "c", model=_model(), init="xavier")
    with pytest.raises(ConfigError, match=r"\['dataset'\] would be ignored"):
        _run(tmp_path / "d", dataset="cifar10")
    with pytest.raises(ConfigError, match="pass classes="):
        train(make_config(dict(output_dir=str(tmp_path / "b"), workers=0, progress=False)), model=_model(),
              train_dataset=_data())


def test_optimizer_adamw_is_decoupled_weight_decay():
    cfg = make_config(dict(optimizer="adamw", weight_decay=0.05))
    optimizer = build_optimizer(cfg.optim, nn.Linear(2, 2))
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["weight_decay"] == 0.05


def test_warmup_epochs_raise_the_lr_linearly_then_follow_the_schedule():
    cfg = make_config(dict(lr=0.3, warmup_epochs=2, schedule="cosine", epochs=6))
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=cfg.lr)
    scheduler = build_scheduler(cfg.optim, optimizer)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.1, 0.2, 0.3])  # lr/3, 2 lr/3, then the cosine over the 4 epochs left
    assert lrs[3] < 0.3 and lrs[3] > lrs[4] > lrs[5] > 0


def test_warmup_with_milestones_round_trips_through_a_weights_only_checkpoint(tmp_path):
    cfg = make_config(dict(lr=0.1, warmup_epochs=1, schedule="step", milestones=[2, 3], epochs=5))
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=cfg.lr)
    scheduler = build_scheduler(cfg.optim, optimizer)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    torch.save(scheduler_state(scheduler), tmp_path / "s.pt")  # MultiStepLR's Counter inside SequentialLR
    restored_opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=cfg.lr)
    restored = build_scheduler(cfg.optim, restored_opt)
    restored_opt.load_state_dict(optimizer.state_dict())  # as the trainer restores both
    load_scheduler_state(restored, safe_torch_load(tmp_path / "s.pt"))
    for _ in range(3):
        optimizer.step(), restored_opt.step()
        scheduler.step(), restored.step()
        assert restored_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_clip_grad_bounds_the_first_update(tmp_path):
    def update_norm(out, **clip) -> float:
        model = _model()
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        _run(out, model=model, optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, max_steps_per_epoch=1,
             **clip)
        return float(torch.cat([(p.detach() - before[k]).flatten() for k, p in model.named_parameters()]).norm())

    assert update_norm(tmp_path / "a") > 0.01  # without clipping the step is larger than the clip below
    assert update_norm(tmp_path / "b", clip_grad=1e-3) <= 1e-3 * (1 + 1e-4)  # sgd, lr 1: update = clipped gradient


def test_ema_weights_are_the_average_evaluated_and_saved_beside_the_raw_weights(tmp_path):
    model = _model()
    start = copy.deepcopy(model.state_dict())
    _run(tmp_path, model=model, ema_decay=0.75, max_steps_per_epoch=1)
    ckpt = safe_torch_load(tmp_path / "checkpoint.pt")
    for key, value in ckpt["model"].items():  # one step: ema = d * w0 + (1 - d) * w1 (buffers copied, as timm does)
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(ckpt["ema"][key], 0.75 * start[key] + 0.25 * value)
    assert (tmp_path / "weights_ema.safetensors").is_file() and (tmp_path / "weights.safetensors").is_file()
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"ema_top1", "ema_top5", "ema_eval_loss"} <= set(row)


class _Recorder(nn.Module):
    """A model that keeps the inputs it was trained on, per call."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _model()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.inner(x)


def test_mix_off_epoch_trains_the_last_epochs_on_plain_images(tmp_path):
    model = _Recorder()
    _run(tmp_path, model=model, method="cutmix", epochs=2, mix_off_epoch=1, max_steps_per_epoch=2)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    plain = (_data().tensors[0] - mean) / std

    def all_plain(batch: torch.Tensor) -> bool:  # every image is one of the dataset's, unmixed
        return all(((plain - img).abs().amax(dim=(1, 2, 3)) < 1e-5).any() for img in batch)

    first, second = model.seen[:2], model.seen[2:]
    assert len(second) == 2
    assert not any(all_plain(b) for b in first)  # epoch 1: CutMix pasted boxes
    assert all(all_plain(b) for b in second)  # epoch 2: mixing off
    with pytest.raises(ConfigError, match="mix-off-epoch does not apply"):
        make_config(dict(method="none", mix_off_epoch=1))


def test_resume_is_exact_with_every_option_on(tmp_path):
    options = dict(method="cutmix", optimizer="adamw", warmup_epochs=1, clip_grad=0.5, ema_decay=0.9,
                   mix_off_epoch=2, max_steps_per_epoch=2)
    _run(tmp_path / "straight", epochs=3, **options)
    _run(tmp_path / "resumed", epochs=1, **options)
    _run(tmp_path / "resumed", epochs=3, resume=True, **options)
    a, b = (safe_torch_load(tmp_path / d / "checkpoint.pt") for d in ("straight", "resumed"))
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert [r["lr"] for r in a["curve"]] == [r["lr"] for r in b["curve"]]


def test_the_flags_reach_the_config_and_defaults_keep_cell_ids():
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    args = parser.parse_args(["--method", "cutmix", "--optimizer", "adamw", "--warmup-epochs", "2", "--clip-grad",
                              "1.5", "--ema-decay", "0.999", "--mix-off-epoch", "8"])
    args.command = "train"
    cfg = cli_train.config_from_args(args)
    assert (cfg.optimizer, cfg.warmup_epochs, cfg.clip_grad, cfg.ema_decay, cfg.mix_off_epoch) == \
        ("adamw", 2, 1.5, 0.999, 8)
    assert not set(NEW) & set(_identity(make_config({"method": "cutmix"}), None, False))
    assert set(NEW) <= set(_identity(cfg, None, False))
    for bad in (dict(ema_decay=1.0), dict(clip_grad=0.0), dict(warmup_epochs=-1)):
        with pytest.raises(ConfigError):
            make_config(bad)


def test_every_output_file_gets_the_same_mode_weights_included(tmp_path):
    umask = os.umask(0o022)
    try:
        _run(tmp_path, ema_decay=0.9, max_steps_per_epoch=1)
    finally:
        os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}
    assert {"weights.safetensors", "weights_ema.safetensors", "checkpoint.pt", "results.json"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


class _Bar:
    """Stands in for tqdm: records the step of every loss shown."""

    def __init__(self, **_: object) -> None:
        self.n, self.shown = 0, []

    def update(self, k: int) -> None:
        self.n += k

    def set_postfix(self, **values: object) -> None:
        self.shown.append((self.n, values["loss"]))

    def close(self) -> None:
        pass


def test_the_loss_shows_from_the_first_step_and_a_log_line_per_log_point_without_a_terminal(tmp_path, monkeypatch,
                                                                                          capsys):
    from attentive_cutmix.training import run_io

    bars: list[_Bar] = []
    monkeypatch.setattr(run_io.RunWriter, "progress", lambda self, **kw: bars.append(_Bar(**kw)) or bars[-1])
    _run(tmp_path, progress=True, log_every=2, max_steps_per_epoch=3)
    assert [step for step, _ in bars[0].shown] == [1, 2, 3]  # the first step's loss, then every 2nd and the end
    err = capsys.readouterr().err  # not a terminal under pytest: one line per log point
    lines = [line for line in err.splitlines() if line.startswith("epoch 1/1 step")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/1 step 1/3", "epoch 1/1 step 2/3", "epoch 1/1 step 3/3"]
    assert all("loss " in line and "img/s" in line for line in lines)
