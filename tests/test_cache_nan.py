"""A non-finite map in an attention cache is found when the cache opens, naming the file and the positions
(issue 34, item 21): it used to surface only when a mixer drew that sample, mid-epoch, naming neither."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from attentive_cutmix.attention.cache import CacheError, build_cache, open_cache


def _pool(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.avg_pool2d(images, 4)


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_nan_map_is_refused_when_the_cache_opens_naming_file_and_position(tmp_path, in_memory):
    path = tmp_path / "attention.safetensors"
    images = torch.rand(12, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    cache = build_cache(TensorDataset(images), _pool, path, meta={"dataset": "t"}, progress=False)
    h, w = cache.grid
    with open(path, "r+b") as f:  # damage map 5 on disk: one float16 NaN
        f.seek(cache._offset + 5 * h * w * 2 + 2)
        f.write(np.array([np.nan], dtype=np.float16).tobytes())
    with pytest.raises(CacheError, match=rf"{path} holds non-finite \(NaN/Inf\) attention in 1 of 12 maps "
                                         r"\(train-split positions \[5\]\)"):
        open_cache(path, in_memory=in_memory)
