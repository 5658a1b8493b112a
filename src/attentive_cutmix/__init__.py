"""attentive-cutmix: attention-guided mix augmentation for PyTorch.

``AttentiveCutMix``, ``CutMix``, ``MixUp`` and ``Cutout`` share one call:
``mixed, targets = mixer(images, labels, attention=None, generator=None)``.
"""
from .attention import FeatureExtractor, channel_attention
from .mixing import AttentiveCutMix, CutMix, Cutout, MixUp

__version__ = "0.1.0"
__all__ = ["AttentiveCutMix", "CutMix", "MixUp", "Cutout", "FeatureExtractor", "channel_attention", "__version__"]
