"""Where a run's batches come from: one small protocol, two implementations, chosen once in data set-up.

``DeviceBatches`` keeps each split as one uint8 tensor on the training device and crops and flips there;
``LoaderBatches`` decodes and augments in DataLoader workers. Both give the training batches of an epoch
from any step (so a resumed run continues *exactly*), and the un-augmented evaluation batches of the
held-out split and of the training split; both shard by rank as DDP needs.

Randomness is keyed so that resuming is exact, even mid-epoch and with any number of workers: the order
of an epoch is a function of (seed, epoch); each item's augmentation is a function of (seed, epoch, item
index) on the loader path (``EpochSeededDataset``) and of (seed, rank, epoch, step) on the device path.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.device import DeviceSplit
from ..data.loader import worker_safe_loader
from .components import derive_seed
from .distributed import DistInfo, eval_shard

Batch = tuple[torch.Tensor, ...]  # images in [0, 1], labels[, attention maps]


class BatchSource(Protocol):
    """What the trainer reads its data from."""

    path: str  # "device" or "loader": recorded in the run's config as ``data_path_used``
    has_eval: bool  # whether there is a held-out split to evaluate on

    def __len__(self) -> int:
        """The number of training items (over all ranks)."""

    def epoch(self, epoch: int, start: int = 0) -> tuple[Iterable[Batch], int]:
        """This rank's training batches of ``epoch`` from step ``start`` on, and the epoch's number of steps."""

    def evaluation(self, *, train: bool = False) -> Iterable[Batch]:
        """This rank's un-augmented batches of the held-out split (``train=True``: of the training split)."""


class EpochSeededDataset(Dataset):
    """Seeds torch's RNG from (seed, epoch, index) around each item, so augmentation doesn't depend on order or
    workers."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.epoch, index))
            return self.dataset[index]


class SkipSampler(Sampler[int]):
    """``sampler`` without its first ``skip`` indices (resuming mid-epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int = 0) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


@dataclass
class LoaderBatches:
    """The loader path: any data, decoded and augmented by ``workers`` DataLoader processes every epoch.

    ``train`` is the augmented training split; ``held_out`` and ``train_eval`` the un-augmented splits to
    evaluate (``None`` when there is none, or when train accuracy was not asked for).
    """

    train: Dataset
    held_out: Dataset | None
    train_eval: Dataset | None
    seed: int
    batch_size: int
    eval_batch_size: int
    workers: int
    dist: DistInfo
    pin_memory: bool = False
    path: str = "loader"

    def __post_init__(self) -> None:
        self._train = EpochSeededDataset(self.train, self.seed)
        self._eval = {name: eval_shard(ds, self.dist) for name, ds in
                      (("eval", self.held_out), ("train", self.train_eval)) if ds is not None and len(ds) > 0}
        self.has_eval = "eval" in self._eval

    def __len__(self) -> int:
        return len(self.train)

    def epoch(self, epoch: int, start: int = 0) -> tuple[DataLoader, int]:
        self._train.set_epoch(epoch)
        sampler = DistributedSampler(self._train, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        drop_last = len(sampler) >= self.batch_size  # never a ragged last batch (BatchNorm on 1 image), unless tiny
        loader = worker_safe_loader(self._train, workers=self.workers, batch_size=self.batch_size,
                                    sampler=SkipSampler(sampler, start * self.batch_size), drop_last=drop_last,
                                    pin_memory=self.pin_memory,
                                    generator=torch.Generator().manual_seed(derive_seed(self.seed, self.dist.rank,
                                                                                        epoch)))
        return loader, len(loader) + start

    def evaluation(self, *, train: bool = False) -> DataLoader:
        return worker_safe_loader(self._eval["train" if train else "eval"], workers=self.workers,
                                  batch_size=self.eval_batch_size, shuffle=False, pin_memory=self.pin_memory)


@dataclass
class DeviceBatches:
    """The device-resident path: each split one uint8 tensor on the device, cropped and flipped there per batch."""

    train: DeviceSplit
    held_out: DeviceSplit | None
    seed: int
    batch_size: int
    eval_batch_size: int
    dist: DistInfo
    path: str = "device"

    def __post_init__(self) -> None:
        self.has_eval = self.held_out is not None and len(self.held_out) > 0

    def __len__(self) -> int:
        return len(self.train)

    def epoch(self, epoch: int, start: int = 0) -> tuple[Iterator[Batch], int]:
        rank, world, bs = self.dist.rank, self.dist.world_size, self.batch_size
        # The same order for every method and rank of a seed: a function of (seed, epoch), sharded by rank.
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
        shard = order[rank::world].to(self.train.images.device)
        # Steps from the shortest shard: shards differ in length by one, and under DDP every rank must take as many
        # steps as the others (one more on one rank would wait in the all-reduce for ever).
        shortest = len(order) // world
        steps = shortest // bs if shortest >= bs else 1  # never a ragged last batch, unless the data is tiny

        def batches() -> Iterator[Batch]:
            for step in range(start, steps):
                # Each batch's crops and flips are a function of (seed, rank, epoch, step): resume is exact.
                gen = torch.Generator().manual_seed(derive_seed(self.seed, rank, epoch, step, 2))
                yield self.train.batch(shard[step * bs:(step + 1) * bs], gen)

        return batches(), steps

    def evaluation(self, *, train: bool = False) -> Iterator[Batch]:
        split = self.train if train else self.held_out
        return split.eval_batches(self.eval_batch_size, rank=self.dist.rank, world_size=self.dist.world_size)


__all__ = ["Batch", "BatchSource", "DeviceBatches", "LoaderBatches", "EpochSeededDataset", "SkipSampler"]
