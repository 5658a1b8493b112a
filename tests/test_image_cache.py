"""Image caches are checked against their header and against the data, not only by fingerprint: a tampered or
damaged tensor is refused, never trained on (issue 23, item 12)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from attentive_cutmix.data import build_datasets
from attentive_cutmix.data.device import ImageCacheError, device_split

SIZE = 16


def _split(tmp_path: Path):
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
                tmp_path / "images" / cls / f"{i}.png")
    train_ds, _, _ = build_datasets("imagefolder", data_dir=tmp_path / "images", val_fraction=0.25)
    return train_ds


def _rewrite(cache: Path, change, *, header: bool = False) -> None:
    with safe_open(str(cache), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["train"] = change(tensors["train"])
    if header:  # a consistent forgery: the header says what the tensor is
        info = json.loads(meta["attentive_cutmix_images"])
        info["train"]["shape"] = list(tensors["train"].shape)
        meta["attentive_cutmix_images"] = json.dumps(info)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(cache), metadata=meta)


TAMPER = {
    "cut": lambda t: t[:3],
    "resized": lambda t: torch.nn.functional.interpolate(t.float(), size=8).to(torch.uint8),
    "float": lambda t: t.float() / 255,
}


@pytest.mark.parametrize("header", [False, True], ids=["header-kept", "header-edited"])
@pytest.mark.parametrize("how", list(TAMPER))
def test_a_tampered_image_cache_tensor_is_refused(tmp_path, how, header):
    ds = _split(tmp_path)
    cache = tmp_path / "frames.safetensors"
    good = device_split(ds, SIZE, torch.device("cpu"), image_cache=cache).images
    assert torch.equal(device_split(ds, SIZE, torch.device("cpu"), image_cache=cache).images, good)  # reused
    _rewrite(cache, TAMPER[how], header=header)
    with pytest.raises(ImageCacheError, match=r"train tensor is .*delete it to rebuild") as err:
        device_split(ds, SIZE, torch.device("cpu"), image_cache=cache)
    assert str(cache) in str(err.value) and f"[{len(ds)}, 3, 16, 16]" in str(err.value)


def test_image_caches_and_weights_get_the_permissions_open_would_give(tmp_path):
    # mkstemp's 0600 used to survive safetensors' save_file: a cache (or weights) others could not read.
    from attentive_cutmix.models import create_model
    from attentive_cutmix.training.trainer import WEIGHTS_NAME, write_weights

    umask = os.umask(0o022)
    try:
        cache = tmp_path / "frames.safetensors"
        device_split(_split(tmp_path), SIZE, torch.device("cpu"), image_cache=cache)
        write_weights(create_model("cifar_resnet20", num_classes=2, image_size=SIZE), tmp_path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / WEIGHTS_NAME).stat().st_mode) == 0o644
