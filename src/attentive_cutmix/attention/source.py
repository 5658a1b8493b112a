"""Where a run's attention maps come from, as types: ``ExtractorSpec``, ``CacheSpec`` and the one ``resolve``.

A method that reads attention gets it from a frozen extractor run on each batch (online), from a cache of that
extractor's maps over the training split (made by ``cache-attention``, or built now), or not at all. The config
says which with an ``ExtractorSpec`` (what ``--extractor`` names) and a ``CacheSpec`` (``--attention-cache``);
``resolve`` turns them into the run's ``AttentionSource`` once, in data set-up, and nothing asks again.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..constants import CHECKPOINT_SUFFIXES, is_int
from ..data.wrapper import frame_view, with_attention
from ..errors import ConfigError
from . import cache as cache_mod
from .extractors import ATTENTIONS, NotATrainingCheckpointError, load_extractor

__all__ = ["ExtractorSpec", "CacheSpec", "AttentionSource", "resolve"]


@dataclass(frozen=True)
class ExtractorSpec:
    """The frozen extractor a run reads attention from (the ``--extractor*`` options).

    ``name`` is a model name (ours, timm's, torchvision's) or a ``checkpoint.pt`` written by ``attentive-cutmix
    train``; ``weights`` a weights file for a name (None: its pretrained ImageNet weights, downloaded);
    ``input_size`` the side it sees (None: the checkpoint's size, the images' for ``cifar_*`` names, else 224);
    ``attention`` how its last map becomes a heat map (None: ``channel_mean``, the paper's).
    """

    name: str
    weights: str | None = None
    input_size: int | None = None
    attention: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, (str, os.PathLike)) or not os.fspath(self.name):
            raise ConfigError(f"--extractor must be a model name or a checkpoint path, got {self.name!r}")
        if self.input_size is not None and (not is_int(self.input_size) or self.input_size < 1):
            raise ConfigError(f"extractor_input_size must be an integer >= 1, got "
                              f"extractor_input_size={self.input_size!r}")
        if self.attention is not None and self.attention not in ATTENTIONS:
            raise ConfigError(f"unknown extractor attention {self.attention!r}; valid choices: {', '.join(ATTENTIONS)}")
        if self.weights is not None and self.is_checkpoint:
            raise ConfigError(f"--extractor {self.name} is a checkpoint with its own weights; drop --extractor-weights")

    @property
    def is_checkpoint(self) -> bool:
        """Whether ``name`` is a checkpoint of ``train`` (told by its suffix) rather than a model name."""
        return Path(self.name).suffix in CHECKPOINT_SUFFIXES  # as extractors.is_checkpoint_path tells it

    def identity(self) -> dict[str, Any]:
        """What decides the maps (a cache key): the flat options, ``extractor_attention`` only when set, so the keys
        of caches made before it existed do not change."""
        ident = {"extractor": self.name, "extractor_weights": self.weights, "extractor_input_size": self.input_size}
        return ident if self.attention is None else {**ident, "extractor_attention": self.attention}

    def build(self, *, image_size: int, device: torch.device, amp_dtype: torch.dtype | None = None,
              quiet: bool = False) -> nn.Module:
        """The frozen ``FeatureExtractor`` on ``device`` for images of ``image_size`` px (a checkpoint knows its own).

        On CUDA the extractor runs in ``amp_dtype`` (bf16, or fp16 without bf16: attention needs no fp32).
        ``quiet`` drops the warning that a name without ``weights`` downloads its pretrained weights (a command that
        asked for them with ``--pretrained``).
        """
        if device.type == "cuda" and amp_dtype is None:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        amp_dtype = amp_dtype if device.type == "cuda" else None
        attention = self.attention or "channel_mean"
        if self.is_checkpoint:
            if not Path(self.name).is_file():
                raise ConfigError(f"--extractor checkpoint not found: {self.name}")
            try:
                return load_extractor(self.name, input_size=self.input_size, attention=attention, amp_dtype=amp_dtype,
                                      device=device)
            except NotATrainingCheckpointError as err:
                raise ConfigError(f"--extractor {self.name} is not a checkpoint written by `attentive-cutmix train` "
                                  "(no config with the model's name); give a model name with --extractor-weights "
                                  "FILE instead") from err
        # Published weights (ImageNet ones, and the common CIFAR ResNet checkpoints) expect ImageNet mean/std:
        # load_extractor's default. Only our own checkpoints carry the statistics they were trained with.
        size = self.input_size or (image_size if self.name.startswith("cifar_") else 224)
        if self.weights is None and not quiet:
            warnings.warn(f"--extractor {self.name} without --extractor-weights: downloading its pretrained ImageNet "
                          "weights", stacklevel=2)
        return load_extractor(self.name, pretrained=self.weights is None, weights=self.weights, input_size=size,
                              attention=attention, amp_dtype=amp_dtype, device=device)


@dataclass(frozen=True)
class CacheSpec:
    """An attention cache file (``--attention-cache``); ``build``: make it now from the extractor when missing."""

    path: str
    build: bool = False


@dataclass(frozen=True)
class AttentionSource:
    """The run's attention, resolved once: ``online`` (``extractor`` runs on each batch), ``cache`` (the maps ride
    with the training items of ``train_ds``), or ``none``. ``train_ds``: the training split as the trainer reads it
    (with the cache, its items carry their maps)."""

    kind: Literal["none", "online", "cache"]
    train_ds: Any
    extractor: nn.Module | None = None
    cache: Any = None


def resolve(extractor: ExtractorSpec | None, cache: CacheSpec | None, *, train_ds: Any, info: Any,
            device: torch.device, amp_dtype: torch.dtype | None = None, builder: bool = True,
            batch_size: int = 256, workers: int = 0, progress: bool = False) -> AttentionSource:
    """The run's ``AttentionSource`` from its specs (both None: a method that reads no attention).

    With a cache, the extractor (when given) makes the header the cache is built with and checked against, so a
    mismatch names every differing field; without one only the training split's fingerprint and length are
    checked. ``builder``: this process builds a missing cache (rank 0); the others only open what it made.
    """
    if extractor is None and cache is None:
        return AttentionSource("none", train_ds)
    net = extractor.build(image_size=info.image_size, device=device, amp_dtype=amp_dtype) if extractor else None
    if cache is None:
        return AttentionSource("online", train_ds, extractor=net)
    path = Path(cache.path)
    missing = not path.exists()
    if missing and (not cache.build or net is None):
        raise ConfigError(f"attention cache {path} does not exist; make it with `attentive-cutmix cache-attention`, "
                          "or add --build-cache (with --extractor) to build it before training")
    meta = cache_mod.cache_meta(info, net, extractor.name) if extractor is not None else None
    if missing and builder and meta is not None:  # missing without an extractor was refused above
        cache_mod.build_cache(frame_view(train_ds, info.image_size), net, path, meta=meta, batch_size=batch_size,
                              workers=workers, device=device, progress=progress)
    expect = meta if meta is not None else {"fingerprint": info.train_fingerprint, "length": len(train_ds)}
    maps = cache_mod.open_cache(path, expect=expect)
    return AttentionSource("cache", with_attention(train_ds, maps), cache=maps)
