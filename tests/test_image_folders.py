"""Image folders: a folder's own image size follows a stated rule over its images, never the first file; files
PIL refuses as decompression bombs, and hidden files, are handled by name (issue 23, items 10, 19, 27)."""
from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attentive_cutmix.data import build_datasets
from attentive_cutmix.data.folders import DatasetError, UnsupportedImageError

SIZE = 16


def _folder(root: Path, per_class: int = 6, size: int = SIZE) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("ant", "bee"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / cls / f"{i + 1:03d}.png")
    return root


def _big(path: Path, height: int, width: int) -> None:
    Image.new("L", (width, height)).save(path, compress_level=1)  # one colour: a small file, never decoded here


def test_one_huge_first_image_does_not_set_the_runs_image_size(tmp_path):
    root = _folder(tmp_path / "images")
    _big(root / "ant" / "000.png", 400, 500)  # sorted first: it used to make the run 400 px, ImageNet preset
    with pytest.warns(UserWarning, match=r"image sizes differ \(shorter sides 16 to 400 px .*000\.png.*median, "
                                         r"16 px.*--image-size"):
        _, _, info = build_datasets("imagefolder", data_dir=root, val_fraction=0.25)
    assert info.image_size == SIZE and info.preset == "cifar"


def test_a_folder_of_images_beyond_the_size_limit_asks_for_image_size(tmp_path):
    root = tmp_path / "images"
    for cls in ("ant", "bee"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            _big(root / cls / f"{i}.png", 2100, 2200)
    with pytest.raises(DatasetError, match=r"its images are 2100 px .*beyond the largest accepted 2048; pass "
                                           r"--image-size"):
        build_datasets("imagefolder", data_dir=root, val_fraction=0.5)
    _, _, info = build_datasets("imagefolder", data_dir=root, val_fraction=0.5, image_size=64)  # the way out
    assert info.image_size == 64


def test_a_uniform_folder_uses_its_size_without_a_warning(tmp_path):
    root = _folder(tmp_path / "images")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, info = build_datasets("imagefolder", data_dir=root, val_fraction=0.25)
    assert info.image_size == SIZE


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (PIL checks the pixel count when it opens the file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_named_not_a_traceback(tmp_path):
    root = _folder(tmp_path / "images")
    bomb = root / "bee" / "999.png"
    _png_header(bomb, 20000, 12000)
    train, held, info = build_datasets("imagefolder", data_dir=root, val_fraction=0.25)
    assert info.image_size == SIZE  # the size scan leaves it out; decoding it names it
    split = train if str(bomb) in [train.source.paths[i] for i in train.indices] else held
    position = [split.source.paths[i] for i in split.indices].index(str(bomb))
    with pytest.raises(UnsupportedImageError, match=r"999\.png' is too large to decode safely .*resize it"):
        split[position]


def test_hidden_files_and_folders_inside_class_folders_are_skipped(tmp_path):
    root = _folder(tmp_path / "images")
    (root / "ant" / "._001.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # AppleDouble, not an image
    (root / "bee" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (SIZE, SIZE)).save(root / "bee" / ".ipynb_checkpoints" / "001-checkpoint.png")
    train, held, info = build_datasets("imagefolder", data_dir=root, val_fraction=0.25)
    paths = [train.source.paths[i] for i in train.indices] + [held.source.paths[i] for i in held.indices]
    assert len(paths) == 12 and not any("/." in p for p in paths)
    assert all(image.shape == (3, SIZE, SIZE) for image, _ in (train[i] for i in range(len(train))))


def test_a_one_class_folder_warns_that_nothing_can_be_learned(tmp_path):
    root = _folder(tmp_path / "images")
    with pytest.warns(UserWarning, match=r"has one class folder \('ant'\): every label is the same"):
        build_datasets("imagefolder", data_dir=_one_class(root), val_fraction=0.25)


def _one_class(root: Path) -> Path:
    single = root.parent / "single"
    (single / "ant").mkdir(parents=True)
    for path in (root / "ant").iterdir():
        (single / "ant" / path.name).write_bytes(path.read_bytes())
    return single
