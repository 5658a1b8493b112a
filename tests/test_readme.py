"""The README's Python snippets run as written: every block marked ``<!-- runnable`` is executed, in order, in one
namespace (as a reader pastes them into one session), at tiny size and offline.

Only the objects the README calls yours are provided (a ``loader``, a ``model`` ...), and the one thing a test
cannot do here is replaced: ``pretrained=True`` (a download) becomes ``pretrained=False``. Nothing else is edited.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"
OFFLINE = {"pretrained=True": "pretrained=False"}  # no network in tests: the same code, random weights
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def runnable_blocks() -> list[str]:
    return re.findall(r"^<!-- runnable[^\n]*-->\n```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def _yours() -> dict:
    """What the README's snippets take as the reader's own: data, models (tiny, random)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(2, 3, 32, 32, generator=g), torch.randint(0, 21, (2,), generator=g)) for _ in range(2)]
    return {
        "loader": batches,
        "prefetch_loader": [((x - IMAGENET_MEAN) / IMAGENET_STD, y) for x, y in batches],
        "pil_images": [Image.new("RGB", (32, 32), color=(10 * i, 200, 30)) for i in range(2)],
        "model": nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000)),
        "seg_model": nn.Conv2d(3, 21, 1),
        "images": batches[0][0], "labels": batches[0][1],
        "masks": torch.randint(0, 21, (2, 32, 32), generator=g),
    }


def test_readme_marks_its_snippets_runnable():
    blocks = runnable_blocks()
    assert len(blocks) >= 4
    assert any("normalize = " in b and "device = " in b for b in blocks)  # the own-loop snippet defines both


def test_readme_snippets_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what a snippet writes (runs/...) lands here
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(runnable_blocks()):
        for old, new in OFFLINE.items():
            block = block.replace(old, new)
        namespace.update(_yours())
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as err:  # name the block in the failure
            pytest.fail(f"README block {i} failed: {type(err).__name__}: {err}\n{block}")
        assert torch.isfinite(namespace["loss"]).all() if "loss" in block else True
