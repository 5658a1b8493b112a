"""attentive-cutmix: attention-guided mix augmentation for PyTorch.

``AttentiveCutMix``, ``RandomCells``, ``CutMix``, ``MixUp`` and ``Cutout`` share one call:
``mixed, targets = mixer(images, labels, attention=None, *, masks=None, generator=None)``.
Names are imported on first use, so ``import attentive_cutmix`` stays light (no timm, no model zoo).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AttentiveCutMix": "mixers.attentive", "RandomCells": "mixers.attentive",
    "CutMix": "mixers.cutmix", "MixUp": "mixers.mixup", "Cutout": "mixers.cutout",
    "Mix": "mixers.mix", "Mixer": "mixers.base", "check_mixer": "mixers.check",
    "FeatureExtractor": "attention", "channel_attention": "attention", "load_extractor": "attention",
    "mixed_cross_entropy": "losses",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attentive_cutmix' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
