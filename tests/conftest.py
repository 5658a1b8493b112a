"""Shared test set-up."""
from __future__ import annotations

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
