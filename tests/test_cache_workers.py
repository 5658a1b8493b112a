"""A bad image met by a DataLoader worker while an attention cache is built (``cache-attention --workers 2``,
``train --build-cache``) is raised as itself, in one line naming the file; no worker traceback inside the message,
and no temporary file left behind (issue 23, item 18)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from attentive_cutmix.attention import load_extractor
from attentive_cutmix.attention.cache import build_cache
from attentive_cutmix.cli import main
from attentive_cutmix.data import build_datasets
from attentive_cutmix.data.folders import CorruptImageError


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    bad = root / "bee" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated JPEG: the header reads, the pixels do not
    return bad


class _Mean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def test_a_worker_error_during_a_cache_build_is_one_line_naming_the_file(tmp_path):
    bad = _folder(tmp_path / "images")
    train_ds, _, _ = build_datasets("imagefolder", data_dir=tmp_path / "images", val_data=tmp_path / "images",
                                   image_size=16, augment=False)
    out = tmp_path / "c.safetensors"
    with pytest.raises(CorruptImageError) as err:
        build_cache(train_ds, _Mean(), out, meta={}, batch_size=4, workers=2, progress=False)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and str(bad) in message and "Traceback" not in message
    assert not out.exists() and not list(tmp_path.glob(".c.safetensors.*"))


def test_cli_cache_attention_with_workers_fails_in_one_line(tmp_path, capsys):
    bad = _folder(tmp_path / "images")
    weights = tmp_path / "r20.safetensors"
    save_file(load_extractor("cifar_resnet20", input_size=32).model.state_dict(), str(weights))
    images = str(tmp_path / "images")
    code = main(["cache-attention", "--dataset", "imagefolder", "--data-dir", images, "--val-data", images,
                 "--image-size", "16", "--extractor", "cifar_resnet20", "--extractor-weights", str(weights),
                 "--out", str(tmp_path / "c.safetensors"), "--workers", "2", "--batch-size", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and str(bad) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
