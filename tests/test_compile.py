"""``--compile``: torch.compile of the model trains on the CPU (a tiny model, so inductor compiles quickly)."""
from __future__ import annotations

import json

import pytest
import torch

from attentive_cutmix.training import make_config, train
from attentive_cutmix.training import trainer as trainer_mod


def _tiny_net(name, num_classes, image_size=32, init="default"):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, num_classes))


@pytest.mark.slow
def test_compiled_model_trains_and_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "create_model", _tiny_net)
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or real_compile(model, **kw))
    out = tmp_path / "run"
    res = train(make_config(dict(dataset="synthetic", synthetic_size=[128, 32], model="cifar_resnet20", epochs=4,
                                 batch_size=32, lr=1e-2, workers=0, output_dir=str(out), progress=False,
                                 compile=True, method="cutmix")))
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Sequential)
    assert sum(p.numel() for p in compiled[0].parameters()) < 5000
    assert res["status"] == "finished"
    saved = json.loads((out / "results.json").read_text())
    losses = [row["train_loss"] for row in saved["curve"]]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert losses[-1] < losses[0], losses
    assert (out / trainer_mod.WEIGHTS_NAME).is_file()
