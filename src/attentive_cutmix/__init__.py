"""attentive-cutmix: attention-guided mix augmentation for PyTorch.

``AttentiveCutMix``, ``CutMix``, ``MixUp`` and ``Cutout`` share one call:
``mixed, targets = mixer(images, labels, attention=None, generator=None)``.
"""
from .attention import FeatureExtractor, channel_attention
from .baselines import CutMix, Cutout, MixUp
from .mixing import AttentiveCutMix

__version__ = "0.1.0"
__all__ = ["AttentiveCutMix", "CutMix", "MixUp", "Cutout", "FeatureExtractor", "channel_attention", "__version__"]
