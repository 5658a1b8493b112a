"""The attention layer: where guidance maps come from.

- ``extractors``: ``FeatureExtractor`` and ``load_extractor``, the one factory (a model name, a weights file, a
  training checkpoint or a module), and the ``ExtractorSource`` an attention cache records;
- ``cache``: build and open an attention cache (an extractor's maps over a training set, on disk);
- ``source``: where a run's attention comes from, as types (``ExtractorSpec``, ``CacheSpec``) and the one
  ``resolve`` into its ``AttentionSource``.

The extractor's names are offered here, as ``attentive_cutmix.attention`` always offered them. Importing this
package imports no model zoo (timm, torchvision.models): ``load_extractor`` imports them when it builds a model.
The cache and the run's sources are imported from their modules.
"""
from __future__ import annotations

from . import extractors
from .extractors import *  # noqa: F403 (the names of extractors.__all__, listed once there)

__all__ = list(extractors.__all__)
