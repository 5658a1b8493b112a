"""``FeatureExtractor``: the frozen CNN whose last convolutional feature map is the attention.

It wraps any torchvision or timm CNN (or one of our CIFAR ResNets, or a checkpoint written by our
trainer), is always in eval mode and runs under ``torch.inference_mode()`` so BatchNorm statistics
never move, and resizes and normalises its input itself: give it images in [0, 1].
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models import create_model
from .serialization import CheckpointError, load_state_dict_file, load_weights_into, safe_torch_load

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Linear, nn.Dropout)


class _Stop(Exception):
    """Raised by the forward hook to skip the classifier head once the feature map is captured."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output = output


class FeatureExtractor(nn.Module):
    """Frozen CNN returning its final convolutional feature map (B, C, h, w) in float32.

    Args:
        model: a model name (torchvision, timm, ``cifar_resnet*``), a path to a checkpoint written by
            ``attentive-cutmix train``, or an ``nn.Module``.
        pretrained: load the library's ImageNet weights for a named model (needs the network).
        weights: a local weights file (``.safetensors``, a torch state dict, or our checkpoint).
        num_classes: classifier width of ``weights``; inferred from the file when omitted.
        input_size: images are resized to ``input_size x input_size``; ``None`` keeps their size.
        mean, std: normalisation applied after resizing (inputs are expected in [0, 1]); default: the
            statistics a training checkpoint records, else ImageNet's.
        layer: name of the module whose output is the feature map; by default ``forward_features``
            (timm, CIFAR ResNets) or the last spatial top-level stage (torchvision).
        amp_dtype: run in this reduced precision under autocast on CUDA (e.g. ``torch.float16``).
    """

    def __init__(self, model: str | os.PathLike | nn.Module, *, pretrained: bool = False, weights: str | os.PathLike | None = None,
                 num_classes: int | None = None, input_size: int | None = 224, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, layer: str | None = None, amp_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        saved_stats: dict = {}
        if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1):
            raise ValueError(f"input_size must be a positive int or None, got input_size={input_size!r}")
        self.name = model if isinstance(model, str) else type(model).__name__
        self.source = "module"
        if isinstance(model, nn.Module):
            if pretrained or weights is not None or num_classes is not None:
                raise ValueError("pretrained=, weights= and num_classes= apply to a model *name*; load weights into your module yourself")
            net = model
        elif isinstance(model, (str, os.PathLike)) and Path(model).suffix in (".pt", ".pth", ".ckpt") and Path(model).exists():
            net, saved_stats = self._from_training_checkpoint(Path(model))
            self.source = f"checkpoint:{Path(model).resolve()}"
        elif isinstance(model, str):
            net = self._from_name(model, pretrained=pretrained, weights=weights, num_classes=num_classes, input_size=input_size)
            self.source = f"weights:{Path(weights).resolve()}" if weights is not None else ("pretrained" if pretrained else "random")
        else:
            raise TypeError(f"model must be a name, a checkpoint path or an nn.Module, got {type(model).__name__}")
        mean = tuple(mean if mean is not None else saved_stats.get("mean", IMAGENET_MEAN))
        std = tuple(std if std is not None else saved_stats.get("std", IMAGENET_STD))
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must have one entry per channel and std > 0, got mean={mean}, std={std}")
        self.model = net.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.input_size = input_size
        self.layer = layer
        self.amp_dtype = amp_dtype
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        if layer is not None:
            names = dict(self.model.named_modules())
            if layer not in names:
                top = [n for n, _ in self.model.named_children()]
                raise ValueError(f"layer={layer!r} is not a module of {type(self.model).__name__}; top-level modules: {top}")

    # ----------------------------------------------------------------- construction
    @staticmethod
    def _from_name(name: str, *, pretrained: bool, weights, num_classes: int | None, input_size: int | None) -> nn.Module:
        image_size = input_size or 224
        if weights is None:
            return create_model(name, num_classes=num_classes or (10 if name.startswith("cifar_") else 1000),
                                image_size=image_size, pretrained=pretrained)
        if pretrained:
            raise ValueError("give either pretrained=True (download) or weights=PATH (local file), not both")
        state = load_state_dict_file(weights)
        if num_classes is None:
            num_classes = _infer_num_classes(state, source=str(weights))
        net = create_model(name, num_classes=num_classes, image_size=image_size)
        load_weights_into(net, state, source=str(weights))
        return net

    @staticmethod
    def _from_training_checkpoint(path: Path) -> tuple[nn.Module, dict]:
        ckpt = safe_torch_load(path)
        cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
        if not isinstance(cfg, dict) or "model" not in cfg or "num_classes" not in cfg:
            raise CheckpointError(f"{path} is not a checkpoint written by `attentive-cutmix train` (no config with model and "
                                  "num_classes); pass a model name and weights=PATH instead")
        net = create_model(cfg["model"], num_classes=int(cfg["num_classes"]), image_size=int(cfg.get("image_size", 224)))
        load_weights_into(net, load_state_dict_file(path), source=str(path))
        return net, {k: cfg[k] for k in ("mean", "std") if k in cfg}

    def train(self, mode: bool = True) -> "FeatureExtractor":
        # An extractor is frozen: BatchNorm must keep its pretrained statistics whatever the caller does.
        super().train(False)
        return self

    # ----------------------------------------------------------------- forward
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if self.input_size is not None and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=self.input_size < min(x.shape[-2:]))
        return (x - self.mean) / self.std

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is None and hasattr(self.model, "forward_features"):
            return self.model.forward_features(x)
        if self.layer is None:
            self.layer = self._find_layer(x)
        module = dict(self.model.named_modules())[self.layer]

        def hook(_m, _i, out):
            raise _Stop(out)

        handle = module.register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop as stop:
            return stop.output
        finally:
            handle.remove()
        raise RuntimeError(f"layer {self.layer!r} was not called during the forward pass of {type(self.model).__name__}")

    def _find_layer(self, x: torch.Tensor) -> str:
        """The last top-level child whose output is a spatial (B, C, h, w) map and not a pooling/head layer."""
        outputs: dict[str, tuple[int, ...]] = {}
        handles = [m.register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, tuple(out.shape) if isinstance(out, torch.Tensor) else ()))
                   for n, m in self.model.named_children() if not isinstance(m, _POOLING)]
        try:
            self.model(x[:1])
        finally:
            for h in handles:
                h.remove()
        spatial = [n for n, shape in outputs.items() if len(shape) == 4]
        if not spatial:
            raise ValueError(f"{type(self.model).__name__} returns no spatial feature map from any top-level module "
                             f"(outputs: {outputs}); pass layer='...' naming a convolutional stage")
        return spatial[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) images in [0, 1] -> (B, C, h, w) float32 feature map."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            desc = f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a floating (B, C, H, W) tensor in [0, 1], got {desc}")
        if images.shape[1] != self.mean.shape[1]:
            raise ValueError(f"images have {images.shape[1]} channels but the extractor normalises {self.mean.shape[1]}")
        param = next(self.model.parameters(), None)
        if param is not None and param.device != images.device:
            raise ValueError(f"images are on {images.device} but the extractor is on {param.device}; call extractor.to({str(images.device)!r})")
        self.model.eval()
        with torch.inference_mode():
            use_amp = self.amp_dtype is not None and images.device.type == "cuda"
            with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32, enabled=use_amp):
                feats = self._features(self.preprocess(images))
        if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise ValueError(f"the extractor's feature map must be (B, C, h, w), got {shape}; pass layer='...' naming a convolutional stage")
        # Leave inference mode so the result can be used by autograd-tracked code downstream.
        return feats.float().clone()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, source={self.source!r}, input_size={self.input_size}, layer={self.layer!r}"


def _infer_num_classes(state: dict[str, torch.Tensor], *, source: str = "the weights") -> int:
    """Width of the last 2-D weight (the classifier) in a state dict."""
    linear = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not linear:
        raise CheckpointError(f"cannot infer num_classes from {source} (no linear layer): is it the weights of another "
                              "model? Otherwise pass num_classes=")
    return int(linear[-1].shape[0])


def channel_attention(features: torch.Tensor) -> torch.Tensor:
    """Aggregate a (B, C, h, w) feature map over channels into a (B, h, w) heat map (channel mean)."""
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    return features.float().mean(dim=1)
