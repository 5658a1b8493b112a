"""The mixers under ``torch.compile``: no graph break (CutMix, MixUp, random cells, Mix; Attentive CutMix with given
maps, as from a cache, at most 2) and no Dynamo warning, counted with ``torch._dynamo.explain`` on the CPU (tiny
tensors; slow only because Dynamo traces each mixer, ~3 s).
"""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from attentive_cutmix import AttentiveCutMix, CutMix, Mix, MixUp, RandomCells

K = 5
pytestmark = pytest.mark.slow

MIXERS = {"cutmix": (lambda: CutMix(K), 0), "mixup": (lambda: MixUp(K), 0),
          "random-cells": (lambda: RandomCells(K, grid_size=4), 0),
          "mix": (lambda: Mix(mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem", num_classes=K), 0),
          "attentive (cached maps)": (lambda: AttentiveCutMix(K, num_patches=3, grid_size=4, temperature=1.0), 2)}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _explain(mixer: torch.nn.Module, *args: torch.Tensor) -> tuple[object, list[str]]:
    torch._dynamo.reset()
    handler, logger = _Records(), logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            explained = torch._dynamo.explain(mixer)(*args)
    finally:
        logger.removeHandler(handler)
        torch._dynamo.reset()
    return explained, [str(w.message) for w in caught] + [r.getMessage() for r in handler.records]


@pytest.mark.parametrize("name", list(MIXERS))
def test_mixers_compile_without_graph_breaks_or_dynamo_warnings(name):
    make, most = MIXERS[name]
    g = torch.Generator().manual_seed(0)
    images, labels, maps = torch.rand(4, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 3]), torch.rand(4, 4, 4)
    explained, warned = _explain(make(), images, labels, maps)
    breaks = [str(r.reason).splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count <= most, breaks
    if most == 0:
        assert explained.graph_count == 1
    assert warned == []


def test_a_prob_below_one_costs_one_clean_break_and_no_warning():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    explained, warned = _explain(CutMix(K, prob=0.5), images, labels)
    assert explained.graph_break_count <= 1 and warned == []
