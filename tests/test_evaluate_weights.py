"""Weights that would mislead: ``write_weights`` never turns a large value into fp16 inf, and ``evaluate`` warns
about NaN/Inf weights instead of printing a plausible top-1 (issue 23, item 13)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from attentive_cutmix.experiments.evaluate import load_run_model
from attentive_cutmix.models import create_model
from attentive_cutmix.training.trainer import WEIGHTS_NAME, write_weights

CONFIG = {"model": "cifar_resnet20", "num_classes": 3, "image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("cifar_resnet20", num_classes=3, image_size=16)


def test_write_weights_keeps_float32_where_float16_would_overflow_and_says_so(tmp_path):
    model = _model()
    with torch.no_grad():
        model.bn1.running_var.mul_(1e5).add_(1e5)  # > 65504: fp16 would store inf
    with pytest.warns(UserWarning, match=r"float32.*bn1\.running_var"):
        write_weights(model, tmp_path)
    saved = load_file(tmp_path / WEIGHTS_NAME)
    assert saved["bn1.running_var"].dtype == torch.float32
    assert torch.equal(saved["bn1.running_var"], model.bn1.running_var)
    assert saved["linear.weight"].dtype == torch.float16  # the rest is still halved
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    assert saved["bn1.num_batches_tracked"].dtype == torch.int64


def test_write_weights_in_range_is_all_float16_without_a_warning(tmp_path, recwarn):
    write_weights(_model(), tmp_path)
    assert not [w for w in recwarn if "float32" in str(w.message)]
    saved = load_file(tmp_path / WEIGHTS_NAME)
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.float16}


def test_half_where_safe_leaves_existing_non_finite_values_alone():
    from attentive_cutmix.serialization import half_where_safe

    state, kept = half_where_safe({"a": torch.tensor([float("inf"), 1.0]), "b": torch.tensor([7e4, float("nan")]),
                                   "empty": torch.zeros(0)})
    assert kept == ["b"] and state["a"].dtype == torch.float16 and state["empty"].dtype == torch.float16


def _run(tmp_path, poison: float) -> tuple:
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["linear.weight"][0, 0] = poison
    run = tmp_path / "run"
    run.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(run / WEIGHTS_NAME))
    (run / "results.json").write_text(json.dumps({"config": CONFIG, "top1": 50.0}))
    return run


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_evaluate_warns_on_non_finite_weights_naming_the_tensor(tmp_path, poison):
    run = _run(tmp_path, poison)
    with pytest.warns(UserWarning, match=r"linear\.weight \(1 of 192\).*meaningless"):
        load_run_model(run)


def test_evaluate_is_silent_on_finite_weights(tmp_path, recwarn):
    load_run_model(_run(tmp_path, 0.5))
    assert not [w for w in recwarn if "NaN" in str(w.message)]
