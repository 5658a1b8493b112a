"""Constants shared across the package, defined once."""
from __future__ import annotations

# ImageNet channel statistics: what published ImageNet (and most CIFAR) weights expect, and the default
# normalisation for image folders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]
