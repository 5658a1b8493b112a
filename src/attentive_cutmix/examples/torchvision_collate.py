"""Mixing in a DataLoader's ``collate_fn``, as torchvision v2 recommends for its CutMix/MixUp: one of our mixers
(or ``v2.RandomChoice`` over several) runs on each collated batch, in the loader's worker processes.

    python -m attentive_cutmix.examples.torchvision_collate
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate
from torchvision import datasets
from torchvision.transforms import v2

from attentive_cutmix import CutMix, MixUp, RandomCells


class MixCollate:
    """``collate_fn`` that mixes each batch; a class, not a lambda, so spawned workers can pickle it."""

    def __init__(self, mixer: torch.nn.Module) -> None:
        self.mixer = mixer

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixer(*default_collate(batch))


def make_loader(num_classes: int = 10, size: int = 32, batch_size: int = 8, workers: int = 2) -> DataLoader:
    transform = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)])
    data = datasets.FakeData(size=size, image_size=(3, 32, 32), num_classes=num_classes, transform=transform)
    # The mixers share torchvision's call on (images, labels); RandomChoice picks one per batch.
    mix = v2.RandomChoice([CutMix(num_classes), MixUp(num_classes, alpha=0.2), RandomCells(num_classes, grid_size=4)])
    return DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=MixCollate(mix),
                      drop_last=True)


if __name__ == "__main__":
    for images, targets in make_loader():
        print(tuple(images.shape), tuple(targets.shape), targets.sum(1))  # soft targets, rows sum to 1
