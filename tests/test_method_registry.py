"""The method registry: a new mixing method is one registration (here, in this file) and then trains through
``train --method`` and a ``compare`` grid, with its row in the report; the committed grid cells keep their ids."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from attentive_cutmix import registry
from attentive_cutmix.cli import main
from attentive_cutmix.cli.train import add_arguments
from attentive_cutmix.experiments.grid import load_grid
from attentive_cutmix.mixers.base import Mixer, mix_targets
from attentive_cutmix.registry import Method, MixerOptions, option
from attentive_cutmix.training.config import ConfigError, make_config

REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic", "--synthetic-size", "64", "16", "--epochs", "1", "--batch-size", "32",
        "--workers", "0", "--no-progress"]


@dataclass(frozen=True)
class BlendOptions(MixerOptions):
    blend_weight: float = option(0.25, "weight of the partner image and label", minimum=0.0, maximum=1.0)


class Blend(Mixer):
    """A toy: every image blended with its partner at one fixed weight."""

    accepts_masks = False
    has_region = False  # a blend of whole images, as MixUp

    def region(self, params, height, width, attention=None):
        return None

    def __init__(self, num_classes: int, *, weight: float, prob: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing)
        self.weight = weight

    def apply(self, images, targets, params, attention, masks):
        perm = params["perm"]
        lam = torch.full((images.shape[0],), self.weight, device=images.device)
        return torch.lerp(images, images.index_select(0, perm), self.weight), mix_targets(targets, perm, lam)


def _build(options, *, num_classes, label_smoothing, extractor):
    return Blend(num_classes, weight=options.blend_weight, prob=options.prob, label_smoothing=label_smoothing)


@pytest.fixture
def blend():
    method = registry.register(Method("blend", "Blend", BlendOptions, build=_build, mixer=Blend))
    yield method
    registry.unregister("blend")


def test_a_registered_method_trains_through_the_train_command(blend, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", "blend", "--blend-weight", "0.4", "--output-dir", str(out)]) == 0, \
        capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished" and results["config"]["method"] == "blend"
    assert results["config"]["blend_weight"] == 0.4 and results["config"]["prob"] == 1.0
    # Its flag is checked from its declared range, and refused for another method, naming the one it applies to.
    assert main(["train", *TINY, "--method", "blend", "--blend-weight", "2", "--output-dir", str(tmp_path / "x")]) == 1
    assert "blend_weight must be in [0, 1], got blend_weight=2.0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"--blend-weight does not apply to --method cutmix \(it applies to blend\)"):
        make_config({"method": "cutmix", "blend_weight": 0.5})
    assert not blend.dense_labels and not blend.needs_attention(BlendOptions())


def test_a_registered_method_runs_in_a_compare_grid_with_its_row_in_the_report(blend, run_toy_grid):
    out = run_toy_grid("{method: [none, blend], seed: [0, 1]}", "method_settings: {blend: {blend_weight: 0.5}}\n")
    cells = load_grid(out.parent / "grid.yaml").cells
    assert [c.config.mixing.options.blend_weight for c in cells if c.config.method == "blend"] == [0.5, 0.5]
    assert "| dataset | model | Baseline (no mixing) | Blend |" in (out / "table.md").read_text()
    assert "| Blend vs baseline |" in (out / "paired.md").read_text()
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted((r["labels"]["method"], r["status"]) for r in runs) == [("blend", "finished")] * 2 + \
        [("none", "finished")] * 2


COMMITTED_IDS = {
    'configs/results/cifar10-jpeg-converged.yaml': (
        'cifar10-jpeg-cifar_resnet20-none-s0-fa0761',
        'cifar10-jpeg-cifar_resnet20-mixup-s0-8dfe57',
        'cifar10-jpeg-cifar_resnet20-cutmix-s0-0c4ce0',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-eb1453',
        'cifar10-jpeg-cifar_resnet20-random-cells-s0-f75ce2',
        'cifar10-jpeg-cifar_resnet20-none-s1-d7261a',
        'cifar10-jpeg-cifar_resnet20-mixup-s1-99341b',
        'cifar10-jpeg-cifar_resnet20-cutmix-s1-dc4d37',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s1-3c0671',
        'cifar10-jpeg-cifar_resnet20-random-cells-s1-c488fe',
        'cifar10-jpeg-cifar_resnet20-none-s2-f9c1ea',
        'cifar10-jpeg-cifar_resnet20-mixup-s2-4d1a2c',
        'cifar10-jpeg-cifar_resnet20-cutmix-s2-c963da',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s2-30c0c5',
        'cifar10-jpeg-cifar_resnet20-random-cells-s2-f073d9',
    ),
    'configs/results/cifar10-jpeg-cpu-ablation.yaml': (
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-num_patches1-eb3394',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-num_patches2-ba0ffd',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-num_patches4-887825',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-num_patches6-d83754',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-num_patches10-8c07af',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-num_patches15-4b3da1',
    ),
    'configs/results/cifar10-jpeg-cpu.yaml': (
        'cifar10-jpeg-cifar_resnet20-none-s0-32cde9',
        'cifar10-jpeg-cifar_resnet20-none-s1-c6c94b',
        'cifar10-jpeg-cifar_resnet20-none-s2-733899',
        'cifar10-jpeg-cifar_resnet20-mixup-s0-cf4fa4',
        'cifar10-jpeg-cifar_resnet20-mixup-s1-c555f3',
        'cifar10-jpeg-cifar_resnet20-mixup-s2-5b58ae',
        'cifar10-jpeg-cifar_resnet20-cutmix-s0-c4f4a2',
        'cifar10-jpeg-cifar_resnet20-cutmix-s1-26d750',
        'cifar10-jpeg-cifar_resnet20-cutmix-s2-b4ded5',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-327b5d',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s1-64ab74',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s2-97ef68',
    ),
    'configs/results/cifar10-jpeg-paper-recipe.yaml': (
        'cifar10-jpeg-cifar_resnet20-none-s0-71634c',
        'cifar10-jpeg-cifar_resnet20-mixup-s0-5d3d2c',
        'cifar10-jpeg-cifar_resnet20-cutmix-s0-7e552c',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-1606c4',
        'cifar10-jpeg-cifar_resnet20-random-cells-s0-4a230f',
        'cifar10-jpeg-cifar_resnet20-none-s1-16681e',
        'cifar10-jpeg-cifar_resnet20-mixup-s1-7adbf3',
        'cifar10-jpeg-cifar_resnet20-cutmix-s1-fd3ada',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s1-e22c40',
        'cifar10-jpeg-cifar_resnet20-random-cells-s1-ecedd3',
        'cifar10-jpeg-cifar_resnet20-none-s2-b31ce0',
        'cifar10-jpeg-cifar_resnet20-mixup-s2-bbc737',
        'cifar10-jpeg-cifar_resnet20-cutmix-s2-8985db',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s2-270b58',
        'cifar10-jpeg-cifar_resnet20-random-cells-s2-d2ec3f',
    ),
    'configs/results/cifar10-jpeg-variants.yaml': (
        'cifar10-jpeg-cifar_resnet20-none-s0-fa0761',
        'cifar10-jpeg-cifar_resnet20-mixup-s0-8dfe57',
        'cifar10-jpeg-cifar_resnet20-cutmix-s0-0c4ce0',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s0-eb1453',
        'cifar10-jpeg-cifar_resnet20-random-cells-s0-f75ce2',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-mass-s0-4f81f0',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-sampled-s0-8a1cb6',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-untrained-s0-7174da',
        'cifar10-jpeg-cifar_resnet20-random-cells-mass-s0-0c759d',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-r20-s0-056f11',
        'cifar10-jpeg-cifar_resnet20-none-s1-d7261a',
        'cifar10-jpeg-cifar_resnet20-mixup-s1-99341b',
        'cifar10-jpeg-cifar_resnet20-cutmix-s1-dc4d37',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s1-3c0671',
        'cifar10-jpeg-cifar_resnet20-random-cells-s1-c488fe',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-mass-s1-418d90',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-sampled-s1-742070',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-untrained-s1-a1faab',
        'cifar10-jpeg-cifar_resnet20-random-cells-mass-s1-4493d6',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-r20-s1-3cfb63',
        'cifar10-jpeg-cifar_resnet20-none-s2-f9c1ea',
        'cifar10-jpeg-cifar_resnet20-mixup-s2-4d1a2c',
        'cifar10-jpeg-cifar_resnet20-cutmix-s2-c963da',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-s2-30c0c5',
        'cifar10-jpeg-cifar_resnet20-random-cells-s2-f073d9',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-mass-s2-0cc8d4',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-sampled-s2-185221',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-untrained-s2-d4c821',
        'cifar10-jpeg-cifar_resnet20-random-cells-mass-s2-59566c',
        'cifar10-jpeg-cifar_resnet20-attentive-cutmix-r20-s2-3b0897',
    ),
}


@pytest.mark.parametrize("grid", sorted(COMMITTED_IDS))
def test_the_committed_grids_keep_their_cell_ids(grid, blend):
    # The ids hash each cell's flat config; nesting the method options (and a method registered later, here the toy
    # one) must not change them: finished runs under results/ are found by these ids.
    assert tuple(c.id for c in load_grid(REPO / grid).cells) == COMMITTED_IDS[grid]


def test_every_method_option_is_a_train_flag_and_the_registry_names_the_methods():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest for a in parser._actions}
    assert set(registry.option_names()) <= flags
    method = next(a for a in parser._actions if a.dest == "method")
    assert tuple(method.choices) == registry.names()
    assert registry.get("random-cells").needs_attention(registry.get("random-cells").options()) is False
    assert registry.get("random-cells").needs_attention(registry.get("random-cells").options(label_weight="attention"))
    with pytest.raises(KeyError, match="unknown method 'nope'; valid choices: none, mixup"):
        registry.get("nope")


def test_the_harness_names_the_control_method_only_where_it_is_declared():
    # The registry is the one place the harness learns the methods from: the random-cells control is named where
    # its class and registration live (and in the package's public exports), nowhere in config, CLI or reports.
    src = REPO / "src" / "attentive_cutmix"
    naming = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                    if any(name in p.read_text() for name in ("random-cells", "RandomCells", "random_cells")))
    assert naming == ["__init__.py", "mixers/attentive.py"]
