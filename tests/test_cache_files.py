"""Attention cache files: --force replaces caches only, hints never name other files, no SIGBUS."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from _reliability_utils import child_env
from attentive_cutmix.attention.cache import CacheError, build_cache, check_cache_target, open_cache


def _pool(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(images, 4)


def _cache(path, n=12, seed=0):
    images = torch.rand(n, 2, 16, 16, generator=torch.Generator().manual_seed(seed))
    return build_cache(TensorDataset(images), _pool, path, meta={"dataset": "t"}, progress=False)


def test_weights_file_is_never_overwritten_and_its_hint_never_says_force(tmp_path):
    weights = tmp_path / "extractor.safetensors"
    save_file({"conv.weight": torch.ones(2, 2)}, str(weights))
    before = weights.read_bytes()
    with pytest.raises(CacheError) as info:
        open_cache(weights)  # what `train --attention-cache <weights>` reports
    assert "--force" not in str(info.value).replace("--force replaces attention caches only", "")
    assert f"--out {weights}" not in str(info.value)
    with pytest.raises(CacheError, match="not an attention cache"):
        _cache(weights)  # build_cache itself refuses, whoever calls it (cache-attention --force included)
    with pytest.raises(CacheError, match="not an attention cache"):
        check_cache_target(weights, force=True)
    with pytest.raises(CacheError, match="extractor's own weights"):
        check_cache_target(weights, force=True, protected=(str(weights),))
    assert weights.read_bytes() == before


def test_cli_cache_attention_force_onto_weights_is_refused(tmp_path, capsys):
    from attentive_cutmix.cli import main

    weights = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(3)}, str(weights))
    before = weights.read_bytes()
    code = main(["cache-attention", "--dataset", "synthetic", "--synthetic-size", "8", "--image-size", "16",
                 "--extractor", "cifar_resnet20", "--extractor-weights", str(weights), "--out", str(weights), "--force",
                 "--no-progress"])
    assert code == 1 and weights.read_bytes() == before
    assert str(weights) in capsys.readouterr().err


def test_check_cache_target_needs_force_for_a_cache_and_refuses_folders(tmp_path):
    cache = _cache(tmp_path / "a.safetensors").path
    check_cache_target(tmp_path / "new.safetensors")
    check_cache_target(cache, force=True)
    with pytest.raises(CacheError, match="pass --force"):
        check_cache_target(cache)
    with pytest.raises(CacheError, match="is a directory"):
        check_cache_target(tmp_path, force=True)
    replaced = _cache(cache, seed=1)  # --force: a cache may be replaced by a cache
    assert replaced.path == cache


def test_a_truncated_cache_is_still_a_clear_error_at_open(tmp_path):
    path = _cache(tmp_path / "c.safetensors").path
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CacheError, match="is truncated.*--force"):  # it is a cache: rebuilding it is the fix
        open_cache(path)


READ_AFTER_TRUNCATION = """
import os, sys, torch
from attentive_cutmix.attention.cache import open_cache
path = sys.argv[1]
cache = open_cache(path)
before = [cache[i].clone() for i in range(len(cache))]
os.truncate(path, 8)  # e.g. `cp other.safetensors` over it, or a full disk while rewriting in place
after = [cache[i] for i in range(len(cache))]
assert all(torch.equal(a, b) for a, b in zip(before, after))
print("ok", cache.in_memory)
"""


@pytest.mark.slow
def test_a_small_cache_in_use_survives_truncation_in_place(tmp_path):
    path = _cache(tmp_path / "c.safetensors", n=64).path
    proc = subprocess.run([sys.executable, "-c", READ_AFTER_TRUNCATION, str(path)], env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode} (-7 is SIGBUS): {proc.stderr}"
    assert proc.stdout.split() == ["ok", "True"]


def test_a_mapped_cache_in_use_survives_build_cache_replacing_it(tmp_path):
    path = _cache(tmp_path / "c.safetensors").path
    mapped = open_cache(path, in_memory=False)
    old = [mapped[i].clone() for i in range(len(mapped))]
    _cache(path, seed=5)  # replaced by rename: the mapped file lives on for this reader
    assert all(torch.equal(mapped[i], old[i]) for i in range(len(mapped)))
    assert not torch.equal(open_cache(path)[0], old[0])
