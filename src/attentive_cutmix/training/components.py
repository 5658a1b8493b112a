"""The pieces a training run is assembled from: data loaders, mixer, attention source, optimiser, schedule.

Randomness is keyed so that resuming is exact, even mid-epoch and with any number of workers:
the sampler's order is a function of (seed, epoch); each item's augmentation is a function of
(seed, epoch, item index) (``EpochSeededDataset``); the mixer draws from its own generator.
"""
from __future__ import annotations

import itertools
import random
import signal
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..baselines import CutMix, Cutout, MixUp
from ..mixing import AttentiveCutMix
from .config import ConfigError, TrainConfig
from .distributed import DistInfo

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, epoch, index ...): distinct inputs give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (int(p) + 0x632BE59BD9B4E019)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class EpochSeededDataset(Dataset):
    """Seeds torch's RNG from (seed, epoch, index) around each item, so augmentation doesn't depend on order or workers."""

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


def _seed_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the main process finishes its step and checkpoints, so the
    # workers must not die under it (it stops them itself).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(dataset: EpochSeededDataset, cfg: TrainConfig, dist: DistInfo, *, epoch: int, skip_batches: int,
                 device: torch.device) -> DataLoader:
    dataset.set_epoch(epoch)
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.seed)
    sampler.set_epoch(epoch)
    drop_last = len(sampler) >= cfg.batch_size  # never a ragged last batch (BatchNorm on 1 image), unless the data is tiny
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=SkipSampler(sampler, skip_batches * cfg.batch_size),
                      num_workers=cfg.workers, drop_last=drop_last, pin_memory=device.type == "cuda",
                      worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, dist.rank, epoch)))


def eval_loader(dataset: Dataset, cfg: TrainConfig, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                      pin_memory=device.type == "cuda", worker_init_fn=_seed_worker)


def is_checkpoint_path(spec: str) -> bool:
    from ..attention import is_checkpoint_path as by_suffix

    return by_suffix(spec)


def build_extractor(cfg: TrainConfig, info: Any, device: torch.device) -> torch.nn.Module:
    """The frozen ``FeatureExtractor`` named by ``--extractor`` (a model name or one of our checkpoints).

    A thin wrapper over ``attention.load_extractor`` that reads the run's flags and words errors as flags.
    """
    from ..attention import NotATrainingCheckpointError, load_extractor

    spec, amp_dtype = cfg.extractor, AMP_DTYPES[cfg.amp] if device.type == "cuda" else None
    if device.type == "cuda" and amp_dtype is None:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16  # attention needs no fp32
    # Not a TrainConfig field yet: the option exists for whoever adds the flag.
    attention = getattr(cfg, "extractor_attention", "channel_mean")
    if is_checkpoint_path(spec):
        if not Path(spec).is_file():
            raise ConfigError(f"--extractor checkpoint not found: {spec}")
        try:
            return load_extractor(spec, input_size=cfg.extractor_input_size, attention=attention, amp_dtype=amp_dtype,
                                  device=device)
        except NotATrainingCheckpointError as err:
            raise ConfigError(f"--extractor {spec} is not a checkpoint written by `attentive-cutmix train` (no config "
                              "with the model's name); give a model name with --extractor-weights FILE instead") from err
    # Published weights (ImageNet ones, and the common CIFAR ResNet checkpoints) expect ImageNet mean/std:
    # load_extractor's default. Only our own checkpoints carry the statistics they were trained with.
    size = cfg.extractor_input_size or (info.image_size if spec.startswith("cifar_") else 224)
    if cfg.extractor_weights is None:
        warnings.warn(f"--extractor {spec} without --extractor-weights: downloading its pretrained ImageNet weights",
                      stacklevel=2)
    return load_extractor(spec, pretrained=cfg.extractor_weights is None, weights=cfg.extractor_weights,
                          input_size=size, attention=attention, amp_dtype=amp_dtype, device=device)


def build_mixer(cfg: TrainConfig, num_classes: int, extractor: torch.nn.Module | None):
    """The batch mixer of ``cfg.method`` (``None`` for ``--method none``)."""
    common = dict(prob=cfg.prob, label_smoothing=cfg.label_smoothing)
    if cfg.method == "none":
        return None
    if cfg.method == "mixup":
        return MixUp(num_classes, alpha=cfg.alpha, **common)
    if cfg.method == "cutmix":
        return CutMix(num_classes, alpha=cfg.alpha, **common)
    if cfg.method == "cutout":
        return Cutout(num_classes, size=cfg.cutout_size, **common)
    return AttentiveCutMix(num_classes, extractor, num_patches=cfg.num_patches, grid_size=cfg.grid_size, **common)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # Plain L2 weight decay, as the paper's "weight decay 1e-5" with a Keras-era Adam would be.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step`` decays by ``gamma`` every ``step_size`` epochs (default epochs // 3) or at ``milestones``."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        if cfg.milestones:
            return sched.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
        return sched.StepLR(optimizer, step_size=cfg.step_size or max(1, cfg.epochs // 3), gamma=cfg.gamma)
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    # MultiStepLR keeps a collections.Counter, which weights_only loading refuses: store a dict.
    return {k: dict(v) if k == "milestones" else v for k, v in scheduler.state_dict().items()}


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    from collections import Counter

    scheduler.load_state_dict({k: Counter(v) if k == "milestones" else v for k, v in state.items()})


__all__ = ["derive_seed", "EpochSeededDataset", "SkipSampler", "train_loader", "eval_loader", "build_extractor",
           "build_mixer", "build_optimizer", "build_scheduler", "AMP_DTYPES"]
