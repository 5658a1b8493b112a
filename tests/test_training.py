"""The trainer: exact resume (epoch boundary and mid-epoch), determinism, every method learns, clear errors."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import attentive_cutmix.data as data_pkg
from attentive_cutmix.models import create_model
from attentive_cutmix.serialization import CheckpointError, safe_torch_load
from attentive_cutmix.training import ConfigError, NonFiniteLossError, evaluate, make_config, train
from attentive_cutmix.training import trainer as trainer_mod

TIMING = ("images_per_s", "time_s")


class ToyShapes(Dataset):
    """4 classes, each a bright band in its own channel/position: learnable in a few steps."""

    def __init__(self, n: int, size: int, seed: int, cache=None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 4
        x = torch.rand(n, 3, size, size, generator=g) * 0.3
        for c in range(4):
            rows = slice((c // 2) * size // 2, (c // 2 + 1) * size // 2)
            x[self.y == c, c % 3, rows, :] += 0.6
        self.x, self.cache = x.clamp(0, 1), cache

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        image = self.x[i].flip(-1) if torch.rand(()) < 0.5 else self.x[i]  # augmentation randomness to keep exact
        return image, int(self.y[i])


def toy_build_datasets(name, *, data_dir=None, image_size=None, val_fraction=0.0, val_data=None, seed=0, download=True,
                       augment=True, attention_cache=None, synthetic_size=None, train_subset=None):
    if name != "toy":
        raise ValueError(f"unknown dataset {name!r}; valid: toy")
    size, n = image_size or 16, synthetic_size or 192
    info = SimpleNamespace(name="toy", num_classes=4, image_size=size, mean=(0.4, 0.4, 0.4), std=(0.3, 0.3, 0.3),
                           classes=list("abcd"), train_fingerprint=f"toy-{n}-{size}", num_train=n, preset="cifar")
    return ToyShapes(n, size, 0), ToyShapes(64, size, 1), info


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(data_pkg, "build_datasets", toy_build_datasets, raising=False)


def _opts(out: Path, **kw):
    base = dict(dataset="toy", model="cifar_resnet20", epochs=2, batch_size=32, workers=0, output_dir=str(out),
                progress=False, seed=3)
    return {**base, **kw}


def _strip(curve):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in curve]


def _weights(out: Path):
    return safe_torch_load(out / "checkpoint.pt")["model"]


def _assert_same_weights(a: Path, b: Path):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_resume_at_epoch_boundary_is_exact(toy, tmp_path):
    straight = train(make_config(_opts(tmp_path / "straight", method="cutmix")))
    train(make_config(_opts(tmp_path / "resumed", method="cutmix", epochs=1)))
    resumed = train(make_config(_opts(tmp_path / "resumed", method="cutmix", resume=True)))
    assert _strip(resumed["curve"]) == _strip(straight["curve"]) and len(resumed["curve"]) == 2
    _assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    results = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert results["status"] == "finished" and results["config"]["method"] == "cutmix"
    assert results["top1"] == straight["top1"] and results["config"]["num_classes"] == 4


def test_resume_mid_epoch_after_sigterm_is_exact(toy, tmp_path, monkeypatch, capsys):
    straight = train(make_config(_opts(tmp_path / "straight", method="mixup")))
    real_step = trainer_mod._Run._step

    def step_then_signal(self, batch):
        if self.epoch == 1 and self.step == 1:  # the second step of epoch 2
            self.signals.requested, self.signals.name = True, "SIGTERM"  # as the handler does
        return real_step(self, batch)

    monkeypatch.setattr(trainer_mod._Run, "_step", step_then_signal)
    stopped = train(make_config(_opts(tmp_path / "resumed", method="mixup")))
    assert stopped["status"] == "interrupted" and stopped["epoch"] == 1 and stopped["step"] == 2
    assert "--resume" in capsys.readouterr().out and not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.setattr(trainer_mod._Run, "_step", real_step)
    resumed = train(make_config(_opts(tmp_path / "resumed", method="mixup", resume=True)))
    assert _strip(resumed["curve"]) == _strip(straight["curve"])
    _assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_same_seed_twice_is_identical_and_other_seed_differs(toy, tmp_path):
    a = train(make_config(_opts(tmp_path / "a", method="cutout", epochs=1)))
    b = train(make_config(_opts(tmp_path / "b", method="cutout", epochs=1)))
    c = train(make_config(_opts(tmp_path / "c", method="cutout", epochs=1, seed=4)))
    assert _strip(a["curve"]) == _strip(b["curve"])
    _assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert a["curve"][0]["train_loss"] != c["curve"][0]["train_loss"]


@pytest.fixture(scope="module")
def baseline_checkpoint(tmp_path_factory):
    """One trained baseline for the whole module (tests that use it must not leave it changed)."""
    out = tmp_path_factory.mktemp("baseline") / "base"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_pkg, "build_datasets", toy_build_datasets, raising=False)
        train(make_config(_opts(out, epochs=1)))
    return out / "checkpoint.pt"


@pytest.mark.parametrize("method", ["none", "mixup", "cutmix", "cutout", "attentive-cutmix"])
def test_each_method_loss_decreases(method, toy, baseline_checkpoint, tmp_path):
    extra = ({"extractor": str(baseline_checkpoint), "grid_size": 4, "num_patches": 4} if method == "attentive-cutmix"
             else {})
    res = train(make_config(_opts(tmp_path / method, method=method, epochs=3, lr=3e-3, **extra)))
    losses = [row["train_loss"] for row in res["curve"]]
    assert losses[-1] < losses[0] * 0.9, losses
    assert res["top1"] > 25.0  # above chance (4 classes)


def test_reported_top1_equals_evaluate_of_checkpoint(toy, baseline_checkpoint):
    ckpt = safe_torch_load(baseline_checkpoint)
    cfg = ckpt["config"]
    model = create_model(cfg["model"], num_classes=cfg["num_classes"], image_size=cfg["image_size"])
    model.load_state_dict(ckpt["model"])
    _, eval_ds, info = toy_build_datasets("toy")
    metrics = evaluate(model, DataLoader(eval_ds, batch_size=7), info, "cpu")
    assert metrics["top1"] == pytest.approx(ckpt["curve"][-1]["top1"])
    assert metrics["count"] == len(eval_ds)


@pytest.mark.parametrize("key,value,listed", [("model", "resnet_nope", "cifar_resnet20"), ("dataset", "nope", "toy"),
                                              ("method", "cutmixx", "attentive-cutmix"), ("optimizer", "lamb", "sgd")])
def test_unknown_names_list_the_valid_ones(key, value, listed, toy, tmp_path):
    with pytest.raises(ValueError, match=listed):
        train(make_config(_opts(tmp_path / "bad", **{key: value})))
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_missing_data_folder_is_a_clear_error(tmp_path):
    if not hasattr(data_pkg, "build_datasets"):
        pytest.skip("attentive_cutmix.data.build_datasets not in the tree yet")
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ValueError, match="no-such-folder"):
        train(make_config(_opts(tmp_path / "out", dataset="imagefolder", data_dir=str(missing))))


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    # .lock only says which process holds the folder now (the run lock): not part of what a run leaves.
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_resume_from_another_models_checkpoint_changes_nothing(toy, baseline_checkpoint):
    out = baseline_checkpoint.parent
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="cifar_resnet32"):
        train(make_config(_opts(out, model="cifar_resnet32", epochs=2, resume=True)))
    with pytest.raises(CheckpointError, match="image_size: checkpoint 16 vs now 20"):
        train(make_config(_opts(out, epochs=2, resume=True, image_size=20)))
    assert _snapshot(out) == before


def test_fresh_run_into_a_used_folder_is_refused(toy, baseline_checkpoint):
    out = baseline_checkpoint.parent
    before = _snapshot(out)
    with pytest.raises(ConfigError, match="--resume"):
        train(make_config(_opts(out, epochs=1)))
    assert _snapshot(out) == before


def test_unwritable_output_dir_fails_before_training(toy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="output-dir"):
        train(make_config(_opts(blocker / "out")))
    assert blocker.read_text() == "not a folder"


def test_non_finite_loss_stops_at_once_and_keeps_last_checkpoint(toy, baseline_checkpoint, monkeypatch):
    out = baseline_checkpoint.parent
    before = _snapshot(out)
    real = trainer_mod._normalize
    monkeypatch.setattr(trainer_mod, "_normalize", lambda x, m, s: real(x, m, s) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1.*--lr.*--amp"):
        train(make_config(_opts(out, epochs=2, resume=True)))
    after = _snapshot(out)
    assert after["checkpoint.pt"] == before["checkpoint.pt"]


def test_weights_best_holds_the_epoch_with_the_best_held_out_top1(tmp_path, monkeypatch):
    # timm writes model_best; our runs kept only the last epoch's weights.
    from safetensors.torch import load_file

    opts = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, model="cifar_resnet20", batch_size=16,
                max_steps_per_epoch=1, workers=0, progress=False)
    real_evaluate, scripted = trainer_mod._Run._evaluate, iter([60.0, 55.0])

    def evaluate_scripted(self, **kw):
        return {**real_evaluate(self, **kw), "top1": next(scripted)}

    monkeypatch.setattr(trainer_mod._Run, "_evaluate", evaluate_scripted)
    result = train(make_config({**opts, "epochs": 2, "output_dir": str(tmp_path / "two")}))
    assert [row["top1"] for row in result["curve"]] == [60.0, 55.0]
    monkeypatch.setattr(trainer_mod._Run, "_evaluate", real_evaluate)
    train(make_config({**opts, "epochs": 1, "output_dir": str(tmp_path / "one")}))  # epoch 1 of the same run
    best, epoch1, last = (load_file(str(tmp_path / folder / name)) for folder, name in (
        ("two", "weights_best.safetensors"), ("one", "weights.safetensors"), ("two", "weights.safetensors")))
    assert best.keys() == epoch1.keys() and all(torch.equal(best[k], epoch1[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)
