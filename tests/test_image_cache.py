"""Image caches are checked against their header and against the data, not only by fingerprint: a tampered or
damaged tensor is refused, never trained on (issue 23, item 12)."""
from __future__ import annotations

import json
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
