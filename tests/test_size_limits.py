"""Size flags are held to ``SIZE_LIMITS`` by every command, not only by ``train``: ``visualize``,
``cache-attention`` and ``evaluate`` refuse a typo'd size before building data or a model (issue 23, item 25)."""
from __future__ import annotations

import pytest

import attentive_cutmix.data
from attentive_cutmix.cli import main


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data was built before the size flags were checked")

    monkeypatch.setattr(attentive_cutmix.data, "build_datasets", refuse)


COMMANDS = {
    "visualize-image-size": (["visualize", "--image-size", "100000", "--extractor", "cifar_resnet20",
                              "--extractor-weights", "w.safetensors", "--out", "fig.png"], "image_size=100000"),
    "visualize-extractor-input": (["visualize", "--extractor-input-size", "100000", "--extractor", "cifar_resnet20",
                                   "--extractor-weights", "w.safetensors", "--out", "fig.png"],
                                  "extractor_input_size=100000"),
    "visualize-grid": (["visualize", "--grid-size", "100000", "--extractor", "cifar_resnet20",
                        "--extractor-weights", "w.safetensors", "--out", "fig.png"], "grid_size=100000"),
    "cache-extractor-input": (["cache-attention", "--extractor-input-size", "100000", "--extractor", "cifar_resnet20",
                               "--extractor-weights", "w.safetensors", "--out", "c.safetensors"],
                              "extractor_input_size=100000"),
    "cache-synthetic": (["cache-attention", "--synthetic-size", "10", "100000000", "--extractor", "cifar_resnet20",
                         "--extractor-weights", "w.safetensors", "--out", "c.safetensors"], "synthetic_size="),
    "evaluate-image-size": (["evaluate", "runs/x", "--image-size", "100000"], "image_size=100000"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_refuses_sizes_beyond_the_limits_before_building_anything(name, no_data, tmp_path,
                                                                                  monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv, what = COMMANDS[name]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert what in err and "beyond the largest accepted value" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written
