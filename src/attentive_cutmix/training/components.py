"""The pieces a training run is assembled from: seeds, mixer, attention source, optimiser, schedule.

Every random stream is keyed by ``derive_seed`` (seed, rank, epoch, ...), so resuming is exact.
"""
from __future__ import annotations

import pickle
import random
import signal
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..baselines import CutMix, Cutout, MixUp
from ..mixing import AttentiveCutMix, RandomCells
from .config import ConfigError, TrainConfig

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, epoch, index ...): distinct inputs give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (int(p) + 0x632BE59BD9B4E019)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


# A worker gives up on a SIGTERM this long after it arrives. Long enough for the main process, which got the same
# signal from the shell or the cluster, to finish its step and stop its workers itself; short enough that no process
# waits on a worker for ever (at exit, multiprocessing SIGTERMs and then joins any worker still alive).
WORKER_TERM_GRACE_S = 10


def _stop_soon(signum: int, frame: Any) -> None:
    remaining = signal.alarm(WORKER_TERM_GRACE_S)
    if remaining:  # a repeated SIGTERM must not push the deadline back
        signal.alarm(remaining)


def _seed_worker(worker_id: int) -> None:
    # Ctrl-C and a cluster's SIGTERM reach the whole process group: the main process finishes its step and
    # checkpoints, so the workers must not die under it. Ctrl-C is ignored (the main process stops the workers);
    # SIGTERM only starts the grace period above, after which the default SIGALRM action ends the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _stop_soon)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class _ItemFailure:
    """An exception raised by ``dataset[i]`` in a worker, sent back as the item (see ``_WorkerLoader``)."""

    error: BaseException
    worker_traceback: str


def _picklable(err: BaseException) -> BaseException:
    try:
        return pickle.loads(pickle.dumps(err))
    except Exception:  # an exception with extra constructor arguments: keep its type's name and message
        return RuntimeError(f"{type(err).__name__}: {err}")


class _CatchItemErrors(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as err:
            return _ItemFailure(_picklable(err), traceback.format_exc())


class _WorkerLoader(DataLoader):
    """A DataLoader whose worker errors reach the caller as themselves, after its workers were stopped.

    Torch re-raises a worker's exception as a new one whose message is the worker's whole traceback, from a
    frame that keeps the iterator (and so its worker processes) alive in a reference cycle; with workers that
    wait out SIGTERM, the process then hung at exit. Here the worker returns the exception as its item, and
    iteration stops the workers before raising it with its own type and message (a ``CorruptImageError`` naming
    the file stays one line); the worker's traceback is attached as a note for debugging.
    """

    def __iter__(self) -> Iterator[Any]:
        iterator = super().__iter__()
        try:
            for batch in iterator:
                if isinstance(batch, _ItemFailure):
                    error = batch.error
                    if hasattr(error, "add_note"):  # Python >= 3.11
                        error.add_note(f"raised in a DataLoader worker:\n{batch.worker_traceback}")
                    raise error
                yield batch
        finally:
            shutdown = getattr(iterator, "_shutdown_workers", None)  # what the iterator's __del__ would call, now
            if shutdown is not None:
                shutdown()


def worker_safe_loader(dataset: Dataset, *, workers: int, **kwargs: Any) -> DataLoader:
    """``DataLoader(dataset, num_workers=workers, **kwargs)`` whose worker errors are raised as themselves (one line,
    e.g. a ``CorruptImageError`` naming the file) after its workers were stopped, so no process hangs on them."""
    if workers == 0:  # in-process loading raises the dataset's own exception already
        return DataLoader(dataset, num_workers=0, **kwargs)
    collate = kwargs.pop("collate_fn", None) or default_collate

    def collate_fn(batch: list[Any]) -> Any:
        failure = next((item for item in batch if isinstance(item, _ItemFailure)), None)
        return failure if failure is not None else collate(batch)

    return _WorkerLoader(_CatchItemErrors(dataset), num_workers=workers, collate_fn=collate_fn,
                         worker_init_fn=kwargs.pop("worker_init_fn", None) or _seed_worker, **kwargs)


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
    attention = cfg.extractor_attention or "channel_mean"
    if is_checkpoint_path(spec):
        if not Path(spec).is_file():
            raise ConfigError(f"--extractor checkpoint not found: {spec}")
        try:
            return load_extractor(spec, input_size=cfg.extractor_input_size, attention=attention, amp_dtype=amp_dtype,
                                  device=device)
        except NotATrainingCheckpointError as err:
            raise ConfigError(f"--extractor {spec} is not a checkpoint written by `attentive-cutmix train` (no config "
                              "with the model's name); give a model name with --extractor-weights FILE "
                              "instead") from err
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
    cells = dict(num_patches=cfg.num_patches, grid_size=cfg.grid_size, label_weight=cfg.label_weight or "area")
    if cfg.method == "random-cells":
        return RandomCells(num_classes, extractor=extractor, **cells, **common)
    return AttentiveCutMix(num_classes, extractor, temperature=cfg.cell_temperature or 0.0, **cells, **common)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam or SGD, fused where the device supports it: a fused step can skip a non-finite update on the device."""
    # Plain L2 weight decay, as the paper's "weight decay 1e-5" with a Keras-era Adam would be.
    if cfg.optimizer == "adam":
        make = lambda **kw: torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)  # noqa: E731
    else:
        make = lambda **kw: torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,  # noqa: E731
                                            nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, **kw)
    try:
        return make(fused=True)
    except (RuntimeError, ValueError):  # a device without fused kernels: the trainer then checks on the host
        return make()


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step`` decays by ``gamma`` every ``step_size`` epochs (default epochs // 3) or at
    ``milestones``."""
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


__all__ = ["derive_seed", "worker_safe_loader", "build_extractor", "build_mixer", "build_optimizer", "build_scheduler",
           "AMP_DTYPES"]
