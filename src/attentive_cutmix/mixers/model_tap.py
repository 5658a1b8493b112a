"""Guidance from the model being trained: its last spatial feature map and its final linear classifier.

A mixer guided by the model (``guidance_source == "model"``: Attentive CutMix with ``attention_source="self"``,
SnapMix) runs ONE extra forward of the model on the unmixed batch, with no gradient and every module in eval mode
(BatchNorm uses and keeps its running statistics, dropout is off), then restores each module's own training flag.
It reads the raw module (``unwrap_model``: not a DDP or ``torch.compile`` wrapper) and runs under the caller's
autocast, if any. Nothing here draws random numbers or changes the model's state, so a resumed run stays exact.

``tap_classifier(model)`` finds, for a CNN that ends in global average pooling and a linear classifier:

* our CIFAR ResNets and timm CNNs: ``forward_features(x)`` and ``linear`` / ``get_classifier()`` (timm's pooling
  must be ``avg``; a LayerNorm between the pooling and the classifier, as in ConvNeXt's head, is allowed);
* torchvision CNNs: the input of ``avgpool`` (a global ``AdaptiveAvgPool2d``) and ``fc`` or ``classifier`` (a
  ``Linear``, or a ``Sequential`` of dropout/flatten/a LayerNorm ending in one ``Linear``: ResNet, RegNet,
  EfficientNet, ConvNeXt).

Anything else (a ViT's tokens, an MLP head, max pooling) is refused with a ``TypeError`` naming the model's type.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

__all__ = ["ClassifierTap", "tap_classifier", "unwrap_model", "frozen_forward", "model_feature_map",
           "class_activation_maps"]

_NEEDS = ("a CNN whose last spatial feature map (B, C, h, w) feeds global average pooling and a final nn.Linear "
          "classifier (our CIFAR ResNets: forward_features + linear; timm CNNs: forward_features + "
          "get_classifier(); torchvision CNNs: avgpool + fc/classifier)")
_PASS_THROUGH = (nn.Dropout, nn.Flatten, nn.Identity)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module itself under DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) if isinstance(
            model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
        else:
            return model


@contextmanager
def frozen_forward(model: nn.Module) -> Iterator[None]:
    """No gradient, every module in eval mode; afterwards each module's own ``training`` flag exactly as it was.

    The flags are set directly (not through ``train()``/``eval()``, which a module may override to do more)."""
    flags = [(m, m.training) for m in model.modules()]
    for m, _ in flags:
        m.training = False
    try:
        with torch.no_grad():
            yield
    finally:
        for m, was in flags:
            m.training = was


class _Stop(Exception):
    """Ends the forward at the pooling once its input is caught (the head is computed by the tap itself)."""


def _refuse(model: nn.Module, why: str) -> TypeError:
    return TypeError(f"cannot take guidance from a {type(model).__name__}: {why}; model guidance needs {_NEEDS}")


@dataclass
class ClassifierTap:
    """Where a model's last spatial feature map and its linear classifier are (see ``tap_classifier``)."""

    model: nn.Module
    linear: nn.Linear
    norm: nn.LayerNorm | None  # a LayerNorm over the pooled channels before the classifier (ConvNeXt), or None
    pool: nn.Module | None  # torchvision: the avgpool whose input is the feature map (else forward_features)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The (B, C, h, w) map the classifier pools (call it inside ``frozen_forward``)."""
        if self.pool is None:
            out = cast(Callable[[torch.Tensor], torch.Tensor], self.model.forward_features)(images)
        else:
            caught: list[torch.Tensor] = []

            def catch(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                caught.append(args[0])
                raise _Stop

            handle = self.pool.register_forward_pre_hook(catch)
            try:
                self.model(images)
            except _Stop:
                pass
            finally:
                handle.remove()
            if not caught:
                raise _refuse(self.model, "its forward never reached its avgpool")
            out = caught[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[1] != self.linear.in_features:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise _refuse(self.model, f"its feature map has shape {shape}, not (B, C={self.linear.in_features}, h, w) "
                                      "(the classifier's input width)")
        return out

    def activation_maps(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, h, w) float32 class activation maps of ``features`` for each image's class ``labels``.

        As SnapMix's official code: ReLU'd features weighted by the class's classifier row, plus its bias, at every
        location. With a LayerNorm between pooling and classifier the pooled vector's own statistics normalise
        every location, so the maps' spatial mean is still exactly the logit of the ReLU'd features.
        """
        g = features.float().relu()
        if self.norm is not None:
            pooled = g.mean((2, 3))
            mu = pooled.mean(1).view(-1, 1, 1, 1)
            sd = (pooled.var(1, unbiased=False) + self.norm.eps).sqrt().view(-1, 1, 1, 1)
            g = (g - mu) / sd
            if self.norm.weight is not None:
                g = g * self.norm.weight.float().view(1, -1, 1, 1)
            if self.norm.bias is not None:
                g = g + self.norm.bias.float().view(1, -1, 1, 1)
        if labels.ndim == 2:  # probability labels: the class with the most weight
            labels = labels.argmax(1)
        labels = labels.to(device=g.device, dtype=torch.long)
        weight = self.linear.weight.float().index_select(0, labels)  # only each image's own class row is needed
        cam = torch.einsum("bchw,bc->bhw", g, weight)
        if self.linear.bias is not None:
            cam = cam + self.linear.bias.float().index_select(0, labels).view(-1, 1, 1)
        return cam


def _check_global_avg(model: nn.Module, pool: nn.Module) -> None:
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        size = pool.output_size
        if size in (1, (1, 1)):
            return
        raise _refuse(model, f"its avgpool pools to {size}, not to one value per channel")
    kind = getattr(pool, "pool_type", None)  # timm's SelectAdaptivePool2d
    if kind is not None and kind != "avg":
        raise _refuse(model, f"its global pooling is {kind!r}, not 'avg' (a class activation map needs average "
                             "pooling)")


def _linear_head(model: nn.Module, head: nn.Module) -> tuple[nn.Linear, nn.LayerNorm | None]:
    """The Linear (and an optional LayerNorm before it) of a classifier module, or a refusal saying what is in it."""
    if isinstance(head, nn.Linear):
        return head, None
    layers = list(head) if isinstance(head, nn.Sequential) else [
        m for m in (getattr(head, k, None) for k in ("global_pool", "norm", "flatten", "pre_logits", "drop", "fc"))
        if m is not None]
    if not layers or not isinstance(layers[-1], nn.Linear):
        raise _refuse(model, f"its classifier {type(head).__name__} does not end in an nn.Linear")
    norm = None
    for layer in layers[:-1]:
        if isinstance(layer, nn.LayerNorm) and norm is None:
            norm = layer
        elif getattr(layer, "pool_type", None) is not None:
            _check_global_avg(model, layer)
        elif not isinstance(layer, _PASS_THROUGH):
            raise _refuse(model, f"its classifier has a {type(layer).__name__} before the final Linear (only "
                                 "dropout, flatten and one LayerNorm keep the classifier linear in the features)")
    return layers[-1], norm


def tap_classifier(model: nn.Module) -> ClassifierTap:
    """Find ``model``'s last spatial feature map and final linear classifier (see the module's docstring).

    ``TypeError`` naming the model's type and what is needed when it has no such pair."""
    model = unwrap_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (the model being trained), got {type(model).__name__}")
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):  # timm
        head = get_classifier()
        if not isinstance(head, nn.Linear):
            raise _refuse(model, f"get_classifier() returns a {type(head).__name__}, not an nn.Linear (a timm model "
                                 "made with num_classes=0 has no classifier)")
        parent = getattr(model, "head", None)
        linear, norm = _linear_head(model, parent) if isinstance(parent, nn.Module) and \
            getattr(parent, "fc", None) is head else (head, None)
        pool = getattr(model, "global_pool", None)
        if isinstance(pool, nn.Module):
            _check_global_avg(model, pool)
        if not callable(getattr(model, "forward_features", None)):
            raise _refuse(model, "it has get_classifier() but no forward_features()")
        return ClassifierTap(model, linear, norm, None)
    head = next((h for h in (getattr(model, k, None) for k in ("linear", "fc", "classifier", "head"))
                 if isinstance(h, nn.Module)), None)
    if head is None:
        raise _refuse(model, "it has no linear, fc, classifier or head module, nor get_classifier()")
    linear, norm = _linear_head(model, head)
    if callable(getattr(model, "forward_features", None)):
        return ClassifierTap(model, linear, norm, None)
    pool = getattr(model, "avgpool", None)
    if not isinstance(pool, nn.Module):
        raise _refuse(model, "it has neither forward_features() nor an avgpool module to read its feature map at")
    _check_global_avg(model, pool)
    return ClassifierTap(model, linear, norm, pool)


def model_feature_map(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's last spatial feature map (B, C, h, w) of ``images``: one forward, no grad, eval mode (flags
    restored), under the caller's autocast."""
    tap = tap_classifier(model)
    with frozen_forward(tap.model):
        return tap.features(images)


def class_activation_maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, h, w) float32 class activation maps of ``images`` for their own ``labels`` at the feature resolution
    (``ClassifierTap.activation_maps``): one forward, no grad, eval mode (flags restored)."""
    tap = tap_classifier(model)
    with frozen_forward(tap.model):
        return tap.activation_maps(tap.features(images), labels)

