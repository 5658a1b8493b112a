"""The pieces a training run is assembled from: seeds, mixer, optimiser, schedule.

Every random stream is keyed by ``derive_seed`` (seed, rank, epoch, ...), so resuming is exact. The trainer takes
the optimiser, schedule and mixer in one call (``build_parts``), each lower module asked once.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import torch

from .. import registry
from .config import OptimConfig, TrainConfig

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, epoch, index ...): distinct inputs give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (int(p) + 0x632BE59BD9B4E019)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def amp_dtype(cfg: TrainConfig) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (None: off)."""
    return AMP_DTYPES[cfg.run.amp]


def build_mixer(cfg: TrainConfig, num_classes: int, extractor: torch.nn.Module | None):
    """The batch mixer of the mixing section's method and options (``None`` for ``--method none``); the loss's
    label smoothing goes into its targets."""
    return registry.make_mixer(cfg.mixing.method, cfg.mixing.options, num_classes=num_classes,
                               label_smoothing=cfg.optim.label_smoothing, extractor=extractor)


def build_parts(cfg: TrainConfig, model: torch.nn.Module, num_classes: int, extractor: torch.nn.Module | None
                ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, Any]:
    """``(optimizer, scheduler, mixer)`` of the run: what the trainer needs besides its data and model."""
    optimizer = build_optimizer(cfg.optim, model)
    return optimizer, build_scheduler(cfg.optim, optimizer), build_mixer(cfg, num_classes, extractor)


def build_optimizer(optim: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (the optimisation section's), fused where the device supports it: a fused step can skip a
    non-finite update on the device."""
    # Plain L2 weight decay, as the paper's "weight decay 1e-5" with a Keras-era Adam would be.
    common = dict(lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.optimizer == "adam":
        make = lambda **kw: torch.optim.Adam(model.parameters(), **common, **kw)  # noqa: E731
    elif optim.optimizer == "adamw":  # decoupled weight decay (Loshchilov & Hutter), timm's usual choice
        make = lambda **kw: torch.optim.AdamW(model.parameters(), **common, **kw)  # noqa: E731
    else:
        make = lambda **kw: torch.optim.SGD(model.parameters(), momentum=optim.momentum,  # noqa: E731
                                            nesterov=optim.nesterov, **common, **kw)
    try:
        return make(fused=True)
    except (RuntimeError, ValueError):  # a device without fused kernels: the trainer then checks on the host
        return make()


def build_scheduler(optim: OptimConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step`` decays by ``gamma`` every ``step_size`` epochs (default epochs // 3) or at
    ``milestones``. ``warmup_epochs=N`` first raises the lr linearly (lr/(N+1), 2 lr/(N+1), ...) over N epochs, then
    runs the schedule over the remaining epochs (its epochs, step size and milestones count from there)."""
    sched = torch.optim.lr_scheduler
    if optim.warmup_epochs:
        warmup = sched.LinearLR(optimizer, start_factor=1.0 / (optim.warmup_epochs + 1),
                                total_iters=optim.warmup_epochs)
        rest = dataclasses.replace(optim, warmup_epochs=0, epochs=max(1, optim.epochs - optim.warmup_epochs))
        return sched.SequentialLR(optimizer, [warmup, build_scheduler(rest, optimizer)],
                                  milestones=[optim.warmup_epochs])
    if optim.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=optim.epochs)
    if optim.schedule == "step":
        if optim.milestones:
            return sched.MultiStepLR(optimizer, milestones=optim.milestones, gamma=optim.gamma)
        return sched.StepLR(optimizer, step_size=optim.step_size or max(1, optim.epochs // 3), gamma=optim.gamma)
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _milestones(state: dict[str, Any], kind: type) -> dict[str, Any]:
    """``state`` with MultiStepLR's milestones as ``kind``, also inside a SequentialLR's ``_schedulers``."""
    def convert(key: str, value: Any) -> Any:
        if key == "milestones" and isinstance(value, (dict, Counter)):
            return kind(value)
        if key == "_schedulers" and isinstance(value, list):
            return [_milestones(s, kind) for s in value]
        return value

    return {k: convert(k, v) for k, v in state.items()}


def scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    # MultiStepLR keeps a collections.Counter, which weights_only loading refuses: store a dict.
    return _milestones(scheduler.state_dict(), dict)


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    scheduler.load_state_dict(_milestones(state, Counter))


__all__ = ["derive_seed", "amp_dtype", "build_mixer", "build_optimizer", "build_scheduler", "build_parts",
           "AMP_DTYPES"]
