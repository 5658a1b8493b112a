"""attentive-cutmix: attention-guided mix augmentation for PyTorch.

``AttentiveCutMix``, ``RandomCells``, ``CutMix``, ``MixUp``, ``Cutout`` and ``SnapMix`` share one call:
``mixed, targets = mixer(images, labels, attention=None, *, masks=None, generator=None)``.
Names are imported on first use, so ``import attentive_cutmix`` stays light (no timm, no model zoo).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real classes for type checkers and IDEs; at run time __getattr__ imports them on first use
    from .attention import FeatureExtractor, channel_attention, load_extractor
    from .losses import mixed_cross_entropy
    from .mixers.attentive import AttentiveCutMix, RandomCells
    from .mixers.base import Mixer
    from .mixers.check import check_mixer
    from .mixers.cutmix import CutMix
    from .mixers.cutout import Cutout
    from .mixers.fmix import FMix
    from .mixers.mix import Mix
    from .mixers.mixup import MixUp
    from .mixers.resizemix import ResizeMix
    from .mixers.saliencymix import SaliencyMix, fine_grained_saliency
    from .mixers.snapmix import SnapMix

__version__ = "0.1.0"

_EXPORTS = {
    "AttentiveCutMix": "mixers.attentive", "RandomCells": "mixers.attentive",
    "CutMix": "mixers.cutmix", "MixUp": "mixers.mixup", "Cutout": "mixers.cutout",
    "ResizeMix": "mixers.resizemix", "FMix": "mixers.fmix",
    "SaliencyMix": "mixers.saliencymix", "fine_grained_saliency": "mixers.saliencymix",
    "SnapMix": "mixers.snapmix",
    "Mix": "mixers.mix", "Mixer": "mixers.base", "check_mixer": "mixers.check",
    "FeatureExtractor": "attention", "channel_attention": "attention", "load_extractor": "attention",
    "mixed_cross_entropy": "losses",
}
__all__ = ["AttentiveCutMix", "RandomCells", "CutMix", "MixUp", "Cutout", "ResizeMix", "FMix", "SaliencyMix",
           "fine_grained_saliency", "SnapMix", "Mix", "Mixer", "check_mixer", "FeatureExtractor", "channel_attention",
           "load_extractor", "mixed_cross_entropy", "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attentive_cutmix' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
