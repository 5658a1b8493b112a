"""Shared test set-up."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--every-cell", action="store_true",
                     help="re-evaluate every committed grid cell, not one per seed of each grid (test_evaluate.py)")


@pytest.fixture(autouse=True)
def one_thread():
    # CI has 2 cores; two spinning OpenMP threads are far slower than one when another process competes.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_toy_grid(tmp_path, capsys):
    """``run_toy_grid(methods, extra="")``: a 1-epoch synthetic ``compare`` grid of ``methods`` run in-process; returns
    its output folder (the tests of a method's row in the report use it)."""
    from attentive_cutmix.cli import main

    def run(axes: str, extra: str = "") -> Path:
        grid = tmp_path / "grid.yaml"
        grid.write_text("name: toy\nsettings: {dataset: synthetic, synthetic_size: [64, 16], epochs: 1, batch_size: "
                        f"32, workers: 0, progress: false}}\n{extra}axes: {axes}\n")
        out = tmp_path / "out"
        assert main(["compare", str(grid), "--output-dir", str(out)]) == 0, capsys.readouterr().err
        return out
    return run
