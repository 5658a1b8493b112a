"""CIFAR-10/100 through torchvision's own parser, held in memory as one uint8 tensor.

torchvision checks every batch file's md5 before parsing. We replace that check by a presence check:
re-hashing 160 MB on every start is slow, and it makes it impossible to test the loading code on small
files written in the real format. A truncated or foreign file still fails, while unpickling, with an
error naming the folder. Downloading (``download=True``) uses torchvision's downloader, which verifies
the archive's md5.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors

from .folders import DatasetError, DatasetNotFoundError

__all__ = ["CifarArrays", "load_cifar"]


class _PresenceMixin:
    def _check_integrity(self) -> bool:
        folder = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(folder, name)) for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class _CIFAR10(_PresenceMixin, datasets.CIFAR10):
    pass


class _CIFAR100(_PresenceMixin, datasets.CIFAR100):
    pass


_PARSERS = {"cifar10": _CIFAR10, "cifar100": _CIFAR100}


@dataclass
class CifarArrays(Dataset):
    """One CIFAR split in memory; items are ``(uint8 tv_tensors.Image (3, 32, 32), label)``."""

    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    targets: list[int]
    classes: list[str]
    files: list[tuple[str, int]]  # (file name, size in bytes) of the batch files read

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, int]:
        return tv_tensors.Image(self.images[index]), self.targets[index]


def _expected_files(parser: type) -> list[str]:
    return [name for name, _ in parser.train_list + parser.test_list] + [parser.meta["filename"]]


def load_cifar(name: str, root: str | os.PathLike, *, train: bool, download: bool) -> CifarArrays:
    """Parse the training (``train=True``) or test split of ``name`` ("cifar10" | "cifar100") under ``root``."""
    parser = _PARSERS[name]
    folder = Path(root) / parser.base_folder
    where = (f"put the extracted folder {parser.base_folder}/ ({', '.join(_expected_files(parser))}) "
             f"or the archive {parser.filename} in {str(root)!r}")
    missing = [f for f in _expected_files(parser) if not (folder / f).is_file()]
    if missing and not download:
        raise DatasetNotFoundError(f"{name} not found: {str(folder)!r} lacks {', '.join(missing)}; {where}, "
                                   "or pass download=True on a machine with internet access")
    try:
        ds = parser(str(root), train=train, download=download and bool(missing))
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError) as err:
        raise DatasetError(f"{name} files in {str(folder)!r} are corrupt or not CIFAR python pickles ({err!r}); "
                           f"delete them and download again, or {where}") from err
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError on bad archives
        if missing:
            raise DatasetNotFoundError(
                f"could not download {name} into {str(root)!r} ({err}); offline? {where}") from err
        raise DatasetError(f"cannot read the {name} files in {str(folder)!r} ({err})") from err
    names = [f for f, _ in (parser.train_list if train else parser.test_list)] + [parser.meta["filename"]]
    return CifarArrays(
        images=torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
        targets=[int(t) for t in ds.targets],
        classes=list(ds.classes),
        files=[(f, (folder / f).stat().st_size) for f in names],
    )
