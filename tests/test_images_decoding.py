"""Image decoding: every PIL mode decodes to the right RGB pixels or is refused by name;
broken symlinks, symlink loops and folders reached twice are refused naming the path."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from attentive_cutmix.data import build_datasets
from attentive_cutmix.data.folders import DatasetError, ImageFiles, UnsupportedImageError, load_image, to_rgb_array

RAMP8 = np.arange(0, 240, 20, dtype=np.uint8).reshape(3, 4)  # 12 distinct grey levels
RAMP16 = np.array([[0, 257, 1000, 30000], [40000, 50000, 60000, 65535], [128, 255, 256, 12345]], dtype=np.uint16)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[:, :, None], 3, axis=2).astype(np.uint8)


def _rgb_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)


def _case(mode: str) -> tuple[Image.Image, np.ndarray | None]:
    """An image of ``mode`` with distinct pixels, and the RGB uint8 pixels it must load as (None: refused)."""
    rgb = _rgb_values()
    alpha = np.full((3, 4), 77, dtype=np.uint8)
    if mode == "1":
        bits = RAMP8 > 100
        return Image.fromarray(bits), _grey(bits * 255)
    if mode == "L":
        return Image.fromarray(RAMP8, "L"), _grey(RAMP8)
    if mode == "LA":
        return Image.fromarray(np.dstack([RAMP8, alpha]), "LA"), _grey(RAMP8)
    if mode in ("P", "PA"):
        palette = _rgb_values().reshape(-1, 3)  # 12 colours, one per pixel
        img = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), "P")
        img.putpalette(palette.flatten().tolist() + [0] * (768 - palette.size))
        return (img if mode == "P" else img.convert("PA")), palette.reshape(3, 4, 3)
    if mode == "RGB":
        return Image.fromarray(rgb, "RGB"), rgb
    if mode in ("RGBA", "RGBX"):
        return Image.fromarray(np.dstack([rgb, alpha]), mode), rgb
    if mode == "RGBa":  # premultiplied: colour = stored * 255 / alpha (alpha 255 keeps it)
        return Image.fromarray(np.dstack([rgb, np.full((3, 4), 255, np.uint8)]), "RGBa"), rgb
    if mode == "CMYK":
        cmyk = np.random.default_rng(1).integers(0, 256, (3, 4, 4), dtype=np.uint8)
        k = cmyk[:, :, 3:].astype(np.int64)
        expected = np.round((255 - cmyk[:, :, :3].astype(np.int64)) * (255 - k) / 255)
        return Image.fromarray(cmyk, "CMYK"), expected.astype(np.uint8)
    if mode in ("YCbCr", "LAB", "HSV"):  # colour transforms: round-trip our RGB through the mode (PIL's formulas)
        return Image.fromarray(rgb, "RGB").convert(mode), None if mode != "HSV" else rgb
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        raw = RAMP16.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
        img = Image.frombytes(mode, (4, 3), raw) if mode != "I" else Image.fromarray(RAMP16.astype(np.int32), "I")
        return img, _grey(np.round(RAMP16.astype(np.float64) * 255 / 65535))
    return Image.new(mode, (4, 3)), None


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_mode_pil_knows_loads_as_its_pixel_values_or_is_refused_by_name(mode):
    img, expected = _case(mode)
    assert img.mode == mode
    if mode in ("F", "La"):
        with pytest.raises(UnsupportedImageError, match=f"x.png' has PIL mode '{mode}'"):
            to_rgb_array(img, "x.png")
        return
    out = to_rgb_array(img, "x.png")
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3)
    if expected is None:  # YCbCr / LAB: within 8-bit quantisation of the RGB they were made from
        assert np.abs(out.astype(int) - _rgb_values().astype(int)).max() <= {"YCbCr": 3, "LAB": 16}[mode], mode
    else:
        # rounding; 8-bit hue
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= {"CMYK": 1, "HSV": 4}.get(mode, 0), mode
    assert len(np.unique(out.reshape(-1, 3), axis=0)) >= 2, f"{mode} loaded as a constant image"


@pytest.mark.parametrize("mode,suffix", [("I;16", ".png"), ("I;16", ".tiff"), ("I", ".tiff"), ("I", ".pgm"),
                                         ("CMYK", ".jpg"), ("LA", ".png"), ("P", ".png"), ("1", ".png"), ("L", ".bmp")])
def test_image_files_of_each_mode_load_from_disk(mode, suffix, tmp_path):
    img, expected = _case(mode)
    path = tmp_path / f"img{suffix}"
    img.save(path)
    loaded = load_image(path).permute(1, 2, 0).numpy()
    tolerance = 40 if suffix == ".jpg" else 0  # JPEG is lossy
    assert np.abs(loaded.astype(int) - expected.astype(int)).max() <= tolerance


def test_float_and_out_of_range_integer_images_are_refused_naming_the_file(tmp_path):
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), "F").save(tmp_path / "f.tiff")
    with pytest.raises(UnsupportedImageError, match="f.tiff' has PIL mode 'F': 32-bit float"):
        load_image(tmp_path / "f.tiff")
    Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), "I").save(tmp_path / "i.tiff")
    with pytest.raises(UnsupportedImageError, match=r"i.tiff' holds 32-bit integer pixels in \[-5, 70000\]"):
        load_image(tmp_path / "i.tiff")


def _tree(root):
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / name / f"{i}.png")


@pytest.mark.parametrize("kind", ["broken", "loop"])
def test_broken_symlinks_and_symlink_loops_are_named(kind, tmp_path):
    _tree(tmp_path / "d")
    link = tmp_path / "d" / "a" / "x.png"
    if kind == "broken":
        link.symlink_to(tmp_path / "gone.png")
    else:
        link.symlink_to(tmp_path / "d" / "a" / "y.png")
        (tmp_path / "d" / "a" / "y.png").symlink_to(link)
    message = "is a broken symlink" if kind == "broken" else "is a symlink loop"
    with pytest.raises(DatasetError, match=f"image file '{link}' {message}"):
        build_datasets("imagefolder", data_dir=tmp_path / "d")


def test_a_folder_symlink_loop_is_refused_not_walked_into_duplicates(tmp_path):
    _tree(tmp_path / "d")
    os.symlink(tmp_path / "d" / "a", tmp_path / "d" / "a" / "again")
    with pytest.raises(DatasetError, match="are the same folder .*symlink loop"):
        ImageFiles(tmp_path / "d")
