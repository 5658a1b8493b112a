"""Resume and extractor-loading errors are one line naming the file, option or key."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from attentive_cutmix.cli import main
from attentive_cutmix.models.factory import PretrainedWeightsError, create_model
from attentive_cutmix.serialization import CheckpointError
from attentive_cutmix.training import make_config, train
from attentive_cutmix.training.checkpoint import load_checkpoint

TINY = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, model="cifar_resnet20", epochs=1,
            batch_size=16, max_steps_per_epoch=1, workers=0, progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    train(make_config({**TINY, "output_dir": str(out)}))
    return out


def test_resume_with_another_optimizer_is_refused_before_the_first_step(finished, tmp_path):
    with pytest.raises(CheckpointError, match="optimizer: checkpoint 'adam' vs now 'sgd'"):
        train(make_config({**TINY, "output_dir": str(finished), "resume": True, "epochs": 2, "optimizer": "sgd"}))


@pytest.mark.parametrize("change", ["no version", "version 99", "no rng", "no scheduler", "rng without numpy",
                                    "epoch is a string", "optimizer without state"])
def test_damaged_or_foreign_version_checkpoints_name_the_file_and_key(change, finished, tmp_path):
    ckpt = torch.load(finished / "checkpoint.pt", weights_only=True)
    if change == "no version":
        del ckpt["format_version"]
    elif change == "version 99":
        ckpt["format_version"] = 99
    elif change == "no rng":
        del ckpt["rng"]
    elif change == "no scheduler":
        del ckpt["scheduler"]
    elif change == "rng without numpy":
        del ckpt["rng"]["numpy"]
    elif change == "epoch is a string":
        ckpt["epoch"] = "1"
    else:
        del ckpt["optimizer"]["state"]
    path = tmp_path / "checkpoint.pt"
    torch.save(ckpt, path)
    expected = {"no version": "format version None", "version 99": "format version 99", "no rng": "'rng' missing",
                "no scheduler": "'scheduler' missing", "rng without numpy": "'rng' has no 'numpy'",
                "epoch is a string": "'epoch' is a str",
                "optimizer without state": "'optimizer' has no 'state'"}[change]
    with pytest.raises(CheckpointError, match=f"{path}.*{expected}"):
        load_checkpoint(path)


def test_cli_resume_with_another_optimizer_is_one_line(finished, capsys):
    code = main(["train", "--config", str(finished / "config.yaml"), "--resume", "--epochs", "2", "--optimizer", "sgd",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "optimizer: checkpoint 'adam' vs now 'sgd'" in err and "Traceback" not in err


def _offline(*args, **kwargs):
    if kwargs.get("weights") is not None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    return _real_get_model(*args, **kwargs)


_real_get_model = torchvision.models.get_model


def test_offline_pretrained_extractor_names_the_flag_and_the_api(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torchvision.models, "get_model", _offline)
    with pytest.raises(PretrainedWeightsError) as info:
        create_model("resnet18", num_classes=10, pretrained=True)
    assert "--extractor-weights PATH" in str(info.value) and "load_extractor(name, weights=PATH)" in str(info.value)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)
    # The user is told up front that the weights would be downloaded, then why that failed.
    with pytest.warns(UserWarning, match="without --extractor-weights: downloading its pretrained ImageNet weights"):
        code = main(["train", "--dataset", "synthetic", "--synthetic-size", "32", "--image-size", "16", "--epochs",
                     "1", "--workers", "0", "--method", "attentive-cutmix", "--extractor", "resnet18", "--grid-size",
                     "4", "--output-dir", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--extractor-weights PATH" in err and "Traceback" not in err
