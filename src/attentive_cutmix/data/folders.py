"""Class-folder trees (ImageFolder layout): scanning with clear errors, and image decoding that names bad files.

``root/<class>/<image>``: classes are the sub-folder names, sorted; files are found by torchvision's
``make_dataset`` (sorted walk, its image-extension filter, so stray non-image files are ignored). The
order of samples is therefore independent of the file system's listing order.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

__all__ = ["DatasetError", "DatasetNotFoundError", "CorruptImageError", "UnsupportedImageError", "ImageFiles",
           "load_image", "to_rgb_array"]


class DatasetError(ValueError):
    """A dataset cannot be used as given (empty folder, mismatched classes, bad arguments)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not where they were looked for (caught by ``except ValueError`` or
    ``FileNotFoundError``)."""


class CorruptImageError(DatasetError):
    """An image file exists but cannot be decoded."""


class UnsupportedImageError(DatasetError):
    """An image file that decodes, but in a mode with no well-defined 8-bit RGB reading (32-bit float, ...)."""


# Modes PIL converts to RGB by the standard formulas (checked against pixel values in the tests): grey
# replicated, palettes looked up, CMYK as (255 - C)(255 - K) / 255, YCbCr/LAB/HSV by their colour
# transforms. Alpha is dropped (colour channels as stored; RGBa is un-premultiplied), as torchvision's loader does.
_PIL_RGB_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
# 16-bit grey (16-bit PNG, TIFF and PGM files; PIL reads some as "I"). PIL's own conversion clips these at 255,
# which turns almost every image into a white one: scale the 16-bit range to 8 bits instead.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def to_rgb_array(img: Image.Image, path: str | os.PathLike = "<image>") -> np.ndarray:
    """The (H, W, 3) uint8 RGB pixels of a decoded PIL image, by the rule of its mode (see above);
    ``UnsupportedImageError`` naming ``path`` for modes with no such rule (32-bit float ``F``, ``La``)."""
    if img.mode == "RGB":
        return np.array(img)
    if img.mode in _PIL_RGB_MODES:
        return np.array(img.convert("RGB"))
    if img.mode in _SIXTEEN_BIT_MODES:
        values = np.array(img).astype(np.int64)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise UnsupportedImageError(f"image file {str(path)!r} holds 32-bit integer pixels in [{low}, {high}], "
                                        "outside the 16-bit range [0, 65535] this loader scales to 8 bits; convert it "
                                        "to an 8-bit (or 16-bit) PNG first")
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    why = "32-bit float pixels have no fixed range ([0, 1]? [0, 255]?)" if img.mode == "F" else "no RGB reading"
    raise UnsupportedImageError(f"image file {str(path)!r} has PIL mode {img.mode!r}: {why}; convert it to an 8-bit "
                                "RGB or greyscale image (e.g. PNG) first")


def load_image(path: str | os.PathLike) -> tv_tensors.Image:
    """Decode ``path`` with PIL to a uint8 RGB ``tv_tensors.Image`` (3, H, W); undecodable files raise
    ``CorruptImageError``, files in a mode without an RGB reading ``UnsupportedImageError``, both naming the file."""
    try:
        with Image.open(path) as img:
            img.load()  # the full decode happens here, so truncated files fail here
            array = to_rgb_array(img, path)
    except DatasetError:
        raise
    except Image.DecompressionBombError as err:  # not an OSError: it would escape as a traceback naming no file
        raise UnsupportedImageError(f"image file {str(path)!r} is too large to decode safely ({err}); resize it, "
                                    "or move it out of the folder") from err
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"cannot decode image file {str(path)!r} ({err}); delete or replace it") from err
    # About 1.5x faster than pil_to_tensor(img.convert("RGB")) on small JPEGs (no conversion of RGB files).
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous())


def _is_visible_image(root: Path, path: str) -> bool:
    """An image file by torchvision's extension filter that is not hidden and not inside a hidden folder (macOS
    ``._x.jpg`` resource forks, ``.ipynb_checkpoints``), as hidden class folders are skipped."""
    hidden = any(part.startswith(".") for part in Path(os.path.relpath(path, root)).parts)
    return not hidden and has_file_allowed_extension(path, IMG_EXTENSIONS)


def _checked_sizes(root: Path, paths: list[str], what: str) -> list[int]:
    """The size of every file, after refusing broken symlinks, symlink loops and folders reached twice."""
    sizes, real_folders = [], {}
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError as err:
            if err.errno == errno.ELOOP:
                problem = "is a symlink loop"
            elif os.path.islink(path):
                problem = f"is a broken symlink (to {os.readlink(path)!r}, which does not exist)"
            else:
                problem = f"cannot be read ({err.strerror or err})"
            raise DatasetError(f"{what} folder {str(root)!r}: image file {path!r} {problem}; remove or fix it") from err
        folder = os.path.dirname(path)
        if folder not in real_folders:
            real_folders[folder] = os.path.realpath(folder)
    seen: dict[str, str] = {}
    for folder, real in real_folders.items():
        if real in seen:  # a directory symlink loop (walked until ELOOP), or two links to one folder
            raise DatasetError(f"{what} folder {str(root)!r}: {seen[real]!r} and {folder!r} are the same folder "
                               "(through a symlink, perhaps a symlink loop), so its images would be counted twice; "
                               "remove the symlink")
        seen[real] = folder
    return sizes


def _find_classes(root: Path, what: str) -> list[str]:
    if not root.exists():
        raise DatasetNotFoundError(f"{what} folder {str(root)!r} does not exist; point {what} at a folder "
                                   "of class sub-folders (<folder>/<class>/<image>.jpg)")
    if not root.is_dir():
        raise DatasetError(f"{what}={str(root)!r} is a file, not a folder of class sub-folders")
    try:
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    except OSError as err:  # e.g. no read permission: a plain error, not a traceback
        raise DatasetError(f"cannot read {what} folder {str(root)!r} ({err.strerror or err}); "
                           "check its permissions") from err
    if not classes:
        raise DatasetError(f"{what} folder {str(root)!r} has no class sub-folders; "
                           "expected <folder>/<class>/<image>.jpg")
    return classes


# Headers read to find an image folder's own size (about 0.3 ms each): every image up to this many, else this
# many spread evenly over the sorted file list.
SIZE_SAMPLE = 1000


class ImageFiles(Dataset):
    """The images of a class-folder tree; items are ``(uint8 tv_tensors.Image, label)``, decoded on access."""

    def __init__(self, root: str | os.PathLike, *, classes: list[str] | None = None, what: str = "data_dir") -> None:
        self.root = Path(root)
        found = _find_classes(self.root, what)
        if classes is not None and found != list(classes):
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise DatasetError(f"{what} folder {str(self.root)!r} must have the same class folders as the training "
                               f"data; missing: {missing or 'none'}, unexpected: {extra or 'none'}")
        counts = {name: 0 for name in found}
        samples = make_dataset(str(self.root), {c: i for i, c in enumerate(found)}, allow_empty=True,
                               is_valid_file=lambda path: _is_visible_image(self.root, path))
        for _, label in samples:
            counts[found[label]] += 1
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise DatasetError(f"{what} folder {str(self.root)!r}: class folder(s) {empty} contain no images "
                               f"(looked for {', '.join(IMG_EXTENSIONS)}); add images or remove the folder(s)")
        self.classes = found
        self.paths = [path for path, _ in samples]
        self.targets = [label for _, label in samples]
        self._sizes = _checked_sizes(self.root, self.paths, what)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, int]:
        return load_image(self.paths[index]), self.targets[index]

    def identity(self, indices: list[int] | None = None) -> list[tuple[str, int]]:
        """``(relative path, size in bytes)`` per sample, in sample order: what a fingerprint hashes."""
        chosen = range(len(self.paths)) if indices is None else indices
        return [(Path(os.path.relpath(self.paths[i], self.root)).as_posix(), self._sizes[i]) for i in chosen]

    def shorter_sides(self, sample: int = SIZE_SAMPLE) -> dict[str, int]:
        """The shorter side (px) of up to ``sample`` images spread evenly over the folder (every image in smaller
        folders), read from their headers only: ``{path: side}`` in sample order."""
        picks = sorted(set(np.linspace(0, len(self.paths) - 1, min(sample, len(self.paths))).round().astype(int)))
        sides, first_error = {}, None
        for i in picks:
            path = self.paths[i]
            try:
                with Image.open(path) as img:
                    sides[path] = min(img.size)
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                # Left out here; decoding it names it (CorruptImageError), as for files outside the sample.
                first_error = first_error or CorruptImageError(f"cannot read image file {path!r} ({err}); delete or "
                                                               "replace it")
        if not sides and first_error is not None:
            raise first_error
        return sides
