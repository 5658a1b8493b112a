"""ResizeMix and FMix keep the mixer contract: replay through ``params``, dense label masks, no host sync (meta
tensors), channels_last, gradients w.r.t. the images, and training through ``train --method`` on the device path and
in a ``compare`` grid."""
from __future__ import annotations

import json

import pytest
import torch

from attentive_cutmix import registry
from attentive_cutmix.cli import main

K = 10
METHODS = ["resizemix", "fmix"]
TINY = ["--dataset", "synthetic", "--synthetic-size", "64", "16", "--epochs", "1", "--batch-size", "32",
        "--workers", "0", "--no-progress", "--data-path", "device", "--model", "cifar_resnet20"]


def _mixer(name: str, **options):
    method = registry.get(name)
    return method.make_mixer(method.options(**options), num_classes=K)


def _batch(device: str = "cpu", b: int = 8, s: int = 16):
    gen = torch.Generator().manual_seed(1)
    return (torch.rand(b, 3, s, s, generator=gen).to(device), (torch.arange(b) % K).to(device),
            torch.randint(0, K, (b, s, s), generator=gen).to(device))


@pytest.mark.parametrize("name", METHODS)
def test_params_replay_the_call_and_the_generator_alone_decides(name):
    images, labels, masks = _batch()
    mixer = _mixer(name)
    first = mixer(images, labels, masks=masks, generator=torch.Generator().manual_seed(4))
    params = mixer.make_params(8, 16, 16, torch.Generator().manual_seed(4))
    for again in (mixer(images, labels, masks=masks, generator=torch.Generator().manual_seed(4)),
                  mixer(images, labels, masks=masks, params=params)):
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = mixer(images, labels, masks=masks, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(first[0], other[0])
    # the label masks move with exactly the pixels the region says came from the partner
    region = mixer.region(params, 16, 16)
    assert torch.equal(first[2][~region], masks[~region]) and (first[2][region] != masks[region]).any()
    with pytest.raises(ValueError, match="params must be the dict of"):
        mixer(images, labels, params={"perm": params["perm"]})


@pytest.mark.parametrize("name", METHODS)
def test_a_call_runs_on_meta_tensors_so_it_never_reads_a_device_value(name):
    images, labels, masks = _batch("meta")
    mixed, targets, mixed_masks = _mixer(name)(images, labels, masks=masks,
                                               generator=torch.Generator().manual_seed(0))
    assert mixed.device.type == targets.device.type == mixed_masks.device.type == "meta"
    assert mixed.shape == images.shape and targets.shape == (8, K) and mixed_masks.shape == masks.shape


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_in_channels_last_out_with_the_same_values_and_gradients_flow(name):
    images, labels, _ = _batch()
    mixer = _mixer(name)
    params = mixer.make_params(8, 16, 16, torch.Generator().manual_seed(2))
    plain = mixer(images, labels, params=params)[0]
    cl = mixer(images.contiguous(memory_format=torch.channels_last), labels, params=params)[0]
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, plain)
    small = mixer.make_params(3, 6, 6, torch.Generator().manual_seed(2))
    leaf = torch.rand(3, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: mixer(x, labels[:3], params=small)[0], (leaf,))

@pytest.mark.parametrize("name,flags", [("resizemix", ["--scale-min", "0.2", "--interpolation", "bilinear"]),
                                        ("fmix", ["--decay-power", "2"])])
def test_it_trains_through_train_on_the_device_path(name, flags, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", name, *flags, "--output-dir", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished" and results["config"]["method"] == name
    assert results["curve"][-1]["train_loss"] > 0
    key, value = flags[0].lstrip("-").replace("-", "_"), float(flags[1])
    assert results["config"][key] == value


@pytest.mark.slow
def test_both_run_in_a_compare_grid_with_their_rows_in_the_report(tmp_path, capsys):
    settings = "{dataset: synthetic, synthetic_size: [64, 16], epochs: 1, batch_size: 32, workers: 0, progress: false}"
    (tmp_path / "grid.yaml").write_text(f"name: peers\nsettings: {settings}\n"
                                        "axes: {method: [cutmix, resizemix, fmix], seed: [0]}\n")
    assert main(["compare", str(tmp_path / "grid.yaml"), "--output-dir", str(tmp_path / "out")]) == 0, \
        capsys.readouterr().err
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert sorted((r["labels"]["method"], r["status"]) for r in runs) == [
        ("cutmix", "finished"), ("fmix", "finished"), ("resizemix", "finished")]
    assert "| CutMix | ResizeMix | FMix |" in (tmp_path / "out" / "table.md").read_text()
    paired = (tmp_path / "out" / "paired.md").read_text()
    assert all(f"| {label} vs CutMix |" in paired for label in ("ResizeMix", "FMix"))
