"""Which GPU each torchrun rank takes, checked without a GPU (CUDA and the process group are stubbed)."""
from __future__ import annotations

import pytest
import torch

from attentive_cutmix.training import distributed as D


@pytest.fixture
def cuda_node(monkeypatch):
    """A torchrun rank 1 of 2 on one node, on a machine that says it has CUDA; records ``set_device``."""
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda **kwargs: None)
    return chosen


def test_plain_cuda_under_torchrun_takes_the_local_rank(cuda_node):
    device = D.resolve_device("cuda")
    assert device == torch.device("cuda", 1)
    assert D.setup(device) == D.DistInfo(rank=1, world_size=2, local_rank=1)
    assert cuda_node == [1]


def test_one_explicit_gpu_for_several_ranks_of_a_node_is_refused(cuda_node):
    # Before: every rank of the node trained on cuda:0, each set_device(LOCAL_RANK) notwithstanding.
    with pytest.raises(ValueError, match=r"every rank on GPU 0.*--device cuda.*CUDA_VISIBLE_DEVICES"):
        D.resolve_device("cuda:0")


def test_one_process_per_node_keeps_its_explicit_gpu(cuda_node, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    device = D.resolve_device("cuda:3")
    assert device == torch.device("cuda", 3)
    D.setup(device)
    assert cuda_node == [3]  # the GPU asked for, not cuda:LOCAL_RANK
