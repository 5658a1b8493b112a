"""A checkpoint that loads safely (``weights_only``) is also checked entry by entry before anything reaches a kernel.

A wrong-shaped optimiser buffer used to reach fused Adam as a raw pointer (`free(): invalid next size`, exit 134);
other tampered entries gave tracebacks or a silent "finished". Each must be a ``CheckpointError`` naming the entry.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import torch

from _reliability_utils import child_env
from attentive_cutmix.serialization import CheckpointError
from attentive_cutmix.training import make_config, train

TINY = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, model="cifar_resnet20", epochs=1,
            batch_size=16, max_steps_per_epoch=1, workers=0, progress=False, method="cutmix")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    train(make_config({**TINY, "output_dir": str(out)}))
    return out


def _first_float(state: dict) -> str:
    return next(k for k, v in state.items() if v.is_floating_point())


def _set(ckpt: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        ckpt = ckpt[key]
    ckpt[path[-1]] = value


# (tamper, entry the error must name): one entry of each kind the trainer loads.
TAMPERS = {
    "exp_avg of 3 zeros": (("optimizer", "state", 0, "exp_avg"), torch.zeros(3), r"\['state'\]\[0\]\['exp_avg'\]"),
    "exp_avg NaN": (("optimizer", "state", 0, "exp_avg"), "nan", r"\['exp_avg'\].*finite"),
    "exp_avg_sq negative": (("optimizer", "state", 1, "exp_avg_sq"), "neg", r"\['exp_avg_sq'\]"),
    "step of shape 3": (("optimizer", "state", 0, "step"), torch.zeros(3), r"\['state'\]\[0\]\['step'\]"),
    "state of parameter 999": (("optimizer", "state", 999), {"step": torch.tensor(1.0)}, r"\['state'\]\[999\]"),
    "lr a string": (("optimizer", "param_groups", 0, "lr"), "0.1", r"\['param_groups'\]\[0\]\['lr'\]"),
    "model entry a string": (("model", "conv1.weight"), "junk", r"model\['conv1.weight'\] is str"),
    "model weight NaN": (("model", "conv1.weight"), "nan", r"model\['conv1.weight'\].*finite"),
    "float rng.torch": (("rng", "torch"), torch.zeros(5056), r"rng\['torch'\].*dtype torch.uint8"),
    "short rng.mixer": (("rng", "mixer"), torch.zeros(7, dtype=torch.uint8), r"rng\['mixer'\].*shape \(5056,\)"),
    "numpy keys too large": (("rng", "numpy", "keys"), torch.full((624,), 2 ** 40), r"rng\['numpy'\]\['keys'\]"),
    "python rng cut": (("rng", "python", "state"), [1, 2, 3], r"rng\['python'\]"),
    "junk rng_per_rank": (("rng_per_rank",), [1, "x"], r"rng_per_rank\[0\]"),
    "junk partial_per_rank": (("partial_per_rank",), [[1]], r"partial_per_rank\[0\]"),
    "partial a list": (("partial",), [1, 2], r"entry partial is list"),
    "curve a string": (("curve",), "abc", r"entry curve is str"),
    "epoch -3": (("epoch",), -3, r"entry epoch is int -3"),
    "scheduler with an optimizer": (("scheduler", "optimizer"), "x", r"entry scheduler is dict"),
    "scheduler last_epoch text": (("scheduler", "last_epoch"), "1", r"scheduler\['last_epoch'\]"),
    "scaler a list": (("scaler",), [1], r"entry scaler is list"),
    "fingerprint a number": (("train_fingerprint",), 123, r"fingerprint 123 vs"),
    "step 1e9": (("step",), 10 ** 9, r"entry step is 1000000000, but epoch 2 has 2 steps"),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_every_tampered_entry_is_refused_naming_it_and_nothing_changes(name, finished, tmp_path):
    where, value, expected = TAMPERS[name]
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    if isinstance(value, str) and value == "nan":
        value = ckpt
        for key in where:
            value = value[key]
        value = value.clone()
        value.view(-1)[0] = float("nan")
    elif isinstance(value, str) and value == "neg":
        value = -torch.ones_like(ckpt["optimizer"]["state"][1]["exp_avg_sq"])
    _set(ckpt, where, value)
    torch.save(ckpt, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(str(out / "checkpoint.pt")) + ".*" + expected):
        train(make_config({**TINY, "output_dir": str(out), "resume": True, "epochs": 2}))
    assert (out / "checkpoint.pt").read_bytes() == before


def test_the_untouched_checkpoint_still_resumes(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    result = train(make_config({**TINY, "output_dir": str(out), "resume": True, "epochs": 2}))
    assert result["status"] == "finished" and result["epochs"] == 2


@pytest.mark.slow
def test_a_wrong_shaped_optimizer_buffer_is_one_line_not_a_crash(finished, tmp_path):
    # Before: free(): invalid next size, exit 134 (fused Adam on CPU); the process must survive and say which entry.
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    torch.save(ckpt, out / "checkpoint.pt")
    argv = [sys.executable, "-m", "attentive_cutmix", "train", "--config", str(out / "config.yaml"), "--resume",
            "--epochs", "2", "--output-dir", str(out)]
    proc = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "optimizer['state'][0]['exp_avg']" in proc.stderr and "Traceback" not in proc.stderr
