"""``FeatureExtractor``: the frozen network whose last spatial feature map is the attention.

It wraps any timm backbone (CNN or transformer), any torchvision CNN, one of our CIFAR ResNets, a
checkpoint written by our trainer, or your own module; it is always in eval mode and runs under
``torch.inference_mode()`` so BatchNorm statistics never move, and it resizes and normalises its input
itself: give it images in [0, 1], or say with ``input_mean``/``input_std`` how the batch was already
normalised. ``load_extractor`` is the one way to build an extractor, from a name,
a weights file, a checkpoint or a module; the ``ExtractorSource`` it records is what attention caches
compare.

The map is always (B, C, h, w). timm models give it through timm's own API (``forward_intermediates``
in NCHW, a ``features_only`` wrapper's output format, or ``feature_info``), never by guessing the layout
of ``forward_features`` (Swin's is channels-last, a ViT's is tokens); a map whose layout cannot be
established is refused.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import ATTENTIONS, CHECKPOINT_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, is_int
from ..mixers.base import channel_attention
from ..serialization import (
    CheckpointError,
    load_state_dict_file,
    load_weights_into,
    safe_torch_load,
)

__all__ = [
    "ATTENTIONS",
    "CHECKPOINT_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ExtractorSource",
    "FeatureExtractor",
    "NotATrainingCheckpointError",
    "channel_attention",
    "is_checkpoint_path",
    "load_extractor",
]

# ATTENTIONS (constants): channel_mean, the mean over channels of the last feature map (the paper's attention);
# cls_token, a ViT's last-block class-token attention to its patch tokens, averaged over heads.
SOURCE_KINDS = ("name", "pretrained", "weights", "checkpoint", "module")
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Linear, nn.Dropout)
_TIMM_FEATURE_NETS = ("FeatureListNet", "FeatureDictNet", "FeatureHookNet", "FeatureGetterNet")


class NotATrainingCheckpointError(CheckpointError):
    """A ``.pt/.pth/.ckpt`` file that loads but was not written by ``attentive-cutmix train``."""


class _Stop(Exception):
    """Raised by the forward hook to skip the classifier head once the feature map is captured."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output = output


# --------------------------------------------------------------------------- where an extractor comes from
@dataclass(frozen=True)
class ExtractorSource:
    """Where an extractor's network and weights came from (what an attention cache header records).

    ``kind``: ``"name"`` (a model name with random weights), ``"pretrained"`` (the library's downloaded
    weights), ``"weights"`` (a weights file), ``"checkpoint"`` (a checkpoint of ``attentive-cutmix train``)
    or ``"module"`` (an ``nn.Module`` given as it is). ``name`` is the architecture (model name or module
    class); ``path`` and ``sha256`` identify the file for the two file kinds (the hash, not the path,
    identifies the weights: a cache stays valid when the file moves).
    """

    kind: str
    name: str
    path: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"ExtractorSource kind must be one of {SOURCE_KINDS}, got kind={self.kind!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ExtractorSource name must be a non-empty str, got name={self.name!r}")
        has_file = self.kind in ("weights", "checkpoint")
        if has_file != (self.path is not None) or has_file != (self.sha256 is not None):
            raise ValueError(f"ExtractorSource of kind {self.kind!r} takes path and sha256 "
                             f"{'both' if has_file else 'neither'}, got path={self.path!r}, sha256={self.sha256!r}")

    @property
    def weights_id(self) -> str:
        """The weights' identity: the file's sha256, or why there is none."""
        if self.sha256 is not None:
            return self.sha256
        return f"n/a ({'random' if self.kind == 'name' else self.kind} weights)"


def _file_source(kind: str, name: str, path: str | os.PathLike) -> ExtractorSource:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return ExtractorSource(kind, name, str(Path(path).resolve()), digest.hexdigest())


def is_checkpoint_path(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a training checkpoint (by its suffix) rather than a model."""
    return Path(spec).suffix in CHECKPOINT_SUFFIXES


def _state_of_checkpoint(ckpt: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, training config) of a loaded checkpoint of ``attentive-cutmix train``."""
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(cfg, dict) or "model" not in cfg or "num_classes" not in cfg or not isinstance(state, dict):
        raise NotATrainingCheckpointError(f"{path} is not a checkpoint written by `attentive-cutmix train` (no config "
                                          "with model and num_classes); pass a model name and weights=PATH instead")
    # DDP and torch.compile prefixes, as load_state_dict_file strips them
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    return state, cfg


def _load_network(spec: str | os.PathLike, *, pretrained: bool, weights: str | os.PathLike | None,
                  num_classes: int | None, image_size: int | None) -> tuple[nn.Module, ExtractorSource, dict[str, Any]]:
    """(network, its source, the training config of a checkpoint or {}): every file is read once to load it."""
    from ..models import (
        create_model,  # timm and the torchvision zoo load only when a model is built
    )

    if is_checkpoint_path(spec):
        path = Path(spec)
        if pretrained or weights is not None or num_classes is not None:
            raise ValueError(f"{path} is a checkpoint with its own weights and classes; drop pretrained=, weights= and "
                             "num_classes=")
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path} (a name ending in {'/'.join(CHECKPOINT_SUFFIXES)} is "
                                  "read as a checkpoint of `attentive-cutmix train`)")
        state, cfg = _state_of_checkpoint(safe_torch_load(path), path)
        net = create_model(cfg["model"], num_classes=int(cfg["num_classes"]),
                           image_size=int(cfg.get("image_size", 224)))
        load_weights_into(net, state, source=str(path))
        return net, _file_source("checkpoint", str(cfg["model"]), path), cfg
    name = os.fspath(spec)
    size = image_size or 224
    if weights is None:
        net = create_model(name, num_classes=num_classes or (10 if name.startswith("cifar_") else 1000),
                           image_size=size, pretrained=pretrained)
        return net, ExtractorSource("pretrained" if pretrained else "name", name), {}
    if pretrained:
        raise ValueError("give either pretrained=True (download) or weights=PATH (local file), not both")
    state = load_state_dict_file(weights)  # its message names a missing or damaged file
    if num_classes is None:
        num_classes = _infer_num_classes(state, source=str(weights))
    net = create_model(name, num_classes=num_classes, image_size=size)
    load_weights_into(net, state, source=str(weights))
    return net, _file_source("weights", name, weights), {}


# --------------------------------------------------------------------------- the timm side
def _timm_feature_info(model: nn.Module) -> list[dict[str, Any]]:
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)  # a features_only wrapper keeps a FeatureInfo object
    if isinstance(info, (list, tuple)) and info and all(isinstance(d, dict) and "num_chs" in d for d in info):
        return list(info)
    return []


def _has_forward_intermediates(model: nn.Module) -> bool:
    method = getattr(model, "forward_intermediates", None)
    if not callable(method):
        return False
    params = inspect.signature(method).parameters
    return all(p in params for p in ("indices", "output_fmt", "intermediates_only"))


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.split(".")[0] == "timm"


def _to_nchw(out: Any, *, num_chs: int, grid: tuple[int, int] | None, what: str) -> torch.Tensor:
    """An NCHW map from a 4-D output whose channel count is known; refused where the layout stays ambiguous."""
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{what} is {shape}, not a 4-D map: its grid cannot be established (tokens need the "
                         "model's forward_intermediates); pass layer='...' naming a stage with a (B, C, h, w) output")
    first, last = out.shape[1] == num_chs, out.shape[3] == num_chs
    if first and last and grid is not None:  # C equals a side: the expected grid decides
        first, last = tuple(out.shape[2:]) == grid, tuple(out.shape[1:3]) == grid
    if first and not last:
        return out
    if last and not first:
        return out.permute(0, 3, 1, 2)
    raise ValueError(f"{what} has shape {tuple(out.shape)} and the model declares {num_chs} channels: cannot tell "
                     "whether it is NCHW or NHWC, so it is refused rather than guessed; pass layer='...' naming "
                     "another stage")


def _cls_attention_module(model: nn.Module) -> nn.Module:
    """The last block's attention module of a timm ViT with a class token, or a ValueError saying why not."""
    blocks = getattr(model, "blocks", None)
    has_blocks = isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0
    attn = getattr(blocks[-1], "attn", None) if has_blocks else None
    from timm.layers import (
        Attention,  # only ViT-style models reach here, and they are timm models
    )

    why = None
    if not _has_forward_intermediates(model) or not isinstance(attn, Attention):
        why = "it has no blocks[-1].attn of timm's Attention type (a ViT, DeiT or DINO-style model has)"
    elif getattr(model, "cls_token", None) is None or int(getattr(model, "num_prefix_tokens", 0)) < 1:
        why = "it has no class token (class_token=False)"
    if why is not None:
        raise ValueError(f"attention='cls_token' needs a ViT-style timm model with a class token, but "
                         f"{type(model).__name__} does not qualify: {why}; use attention='channel_mean'")
    return attn


def _class_token_attention(attn: nn.Module, x: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """(B, N - num_prefix): the class token's attention to each patch token, averaged over heads.

    Fused attention (scaled_dot_product_attention) never materialises the weights, so they are
    recomputed from the module's own projections, the way its unfused path computes them.
    """
    b, n, _ = x.shape
    heads = attn.num_heads
    q_dim = attn.qkv.out_features // 3
    qkv = attn.qkv(x).reshape(b, n, 3, heads, q_dim // heads).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d)
    q, k = attn.q_norm(qkv[0][:, :, :1]), attn.k_norm(qkv[1])
    logits = (q.float() * attn.scale) @ k.float().transpose(-2, -1)  # (B, heads, 1, N)
    return logits.softmax(dim=-1)[:, :, 0, num_prefix:].mean(dim=1)


# --------------------------------------------------------------------------- the extractor
class FeatureExtractor(nn.Module):
    """Frozen network returning its final spatial feature map (B, C, h, w) in float32.

    Build one with ``load_extractor`` (from a model name, a weights file, a training checkpoint or a
    module); this class holds the built network and where it came from.

    Args:
        model: the network (any ``nn.Module``); it is frozen and kept in eval mode.
        source: where its weights came from (recorded in attention cache headers). Default:
            ``ExtractorSource("module", <class name>)``.
        name: how the caller named it (default: the source's name).
        input_size: images are resized to ``input_size x input_size``; ``None`` keeps their size.
        mean, std: the network's own normalisation, applied after resizing to images in [0, 1]; default:
            the statistics a training checkpoint records, else ImageNet's.
        input_mean, input_std: the normalisation already applied to the batches you pass (timm's prefetcher,
            Hugging Face ``pixel_values``); the extractor undoes it (``x * input_std + input_mean``) before its
            own. ``None`` (default): batches are in [0, 1]; on the CPU a batch far outside [0, 1] gets a
            one-time warning, since its cells would differ from those of the same images in [0, 1].
        layer: name of the module whose output is the feature map. By default: a timm model's last
            ``forward_intermediates`` map in NCHW (else its last ``feature_info`` stage, its layout
            established from the declared channel count); ``forward_features`` of other models (CIFAR
            ResNets; it must be NCHW); the last spatial top-level stage of a torchvision CNN.
        attention: ``"channel_mean"`` returns the feature map (its channel mean is the attention);
            ``"cls_token"`` returns a (B, 1, h, w) map of a ViT's last-block class-token attention to
            its patch tokens, averaged over heads (class, distillation and register tokens excluded).
        amp_dtype: run in this reduced precision under autocast on CUDA (e.g. ``torch.float16``).
    """

    def __init__(self, model: nn.Module, *, source: ExtractorSource | None = None, name: str | None = None,
                 input_size: int | None = 224, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, layer: str | None = None, attention: str = "channel_mean",
                 amp_dtype: torch.dtype | None = None, input_mean: Sequence[float] | None = None,
                 input_std: Sequence[float] | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}; build an extractor from a model "
                            "name, a weights file or a checkpoint with load_extractor(...)")
        if input_size is not None and (not is_int(input_size) or input_size < 1):
            raise ValueError(f"input_size must be a positive int or None, got input_size={input_size!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got attention={attention!r}")
        if source is not None and not isinstance(source, ExtractorSource):
            raise TypeError(f"source must be an ExtractorSource, got {type(source).__name__}")
        mean = tuple(mean if mean is not None else IMAGENET_MEAN)
        std = tuple(std if std is not None else IMAGENET_STD)
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must have one entry per channel and std > 0, got mean={mean}, std={std}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source: ExtractorSource = source or ExtractorSource("module", type(model).__name__)
        self.name = name if name is not None else self.source.name
        self.input_size = input_size
        self.layer = layer
        self.attention = attention
        self.amp_dtype = amp_dtype
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.input_mean, self.input_std = _input_stats(input_mean, input_std, channels=len(mean))
        if self.input_mean is not None:
            self.register_buffer("_in_mean", torch.tensor(self.input_mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("_in_std", torch.tensor(self.input_std).view(1, -1, 1, 1), persistent=False)
        self._range_warned = False
        self._layer_channels: int | None = None
        if layer is not None:
            self._check_layer(layer)
        if attention == "cls_token":
            if layer is not None:
                raise ValueError(f"layer={layer!r} and attention='cls_token' exclude each other: the class-token "
                                 "attention is always the last block's")
            _cls_attention_module(self.model)

    def _check_layer(self, layer: str) -> None:
        names = dict(self.model.named_modules())
        if layer not in names:
            top = [n for n, _ in self.model.named_children()]
            raise ValueError(f"layer={layer!r} is not a module of {type(self.model).__name__}; "
                             f"top-level modules: {top}")
        stages = {d.get("module"): int(d["num_chs"]) for d in _timm_feature_info(self.model)}
        if layer in stages:
            self._layer_channels = stages[layer]
        elif _is_timm(self.model):
            # timm stages may be channels-last (Swin) or tokens (ViT): only a declared stage has a known layout.
            raise ValueError(f"layer={layer!r} of the timm model {type(self.model).__name__} is not one of its "
                             f"feature_info stages {list(stages)}, so the layout of its output cannot be established; "
                             "name one of those stages, or pass layer=None for the last one")

    def train(self, mode: bool = True) -> FeatureExtractor:
        # An extractor is frozen: BatchNorm must keep its pretrained statistics whatever the caller does.
        super().train(False)
        return self

    # ----------------------------------------------------------------- forward
    def to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """The batch in [0, 1] float32: ``input_mean``/``input_std`` undone when given."""
        x = images.to(torch.float32)
        if self.input_mean is not None:
            x = x * self._in_std + self._in_mean
        if x.device.type == "cpu" and not self._range_warned:  # free on the CPU; a GPU check would sync
            lo, hi = (float(v) for v in torch.aminmax(x))
            if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
                self._range_warned = True
                given = (f"after undoing input_mean={self.input_mean}, input_std={self.input_std}"
                         if self.input_mean is not None else "")
                warnings.warn(f"{type(self).__name__} expects images in [0, 1] but got values in [{lo:.2f}, {hi:.2f}]"
                              f"{' ' + given if given else ''}: its attention, and so the cells chosen, differ from "
                              "those of the same images in [0, 1]. If the batch is already normalised (timm's "
                              "prefetcher, Hugging Face pixel_values), pass the statistics applied to it as "
                              "input_mean=..., input_std=... to load_extractor/FeatureExtractor", stacklevel=4)
        return x

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = self.to_unit_range(images)
        if self.input_size is not None and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=self.input_size < min(x.shape[-2:]))
        return (x - self.mean) / self.std

    def _hooked(self, x: torch.Tensor, layer: str) -> Any:
        """The output of module ``layer`` in a forward pass stopped right after it."""
        def hook(_m, _i, out):
            raise _Stop(out)

        handle = dict(self.model.named_modules())[layer].register_forward_hook(hook)
        try:
            self.model(x)
        except _Stop as stop:
            return stop.output
        finally:
            handle.remove()
        raise RuntimeError(f"layer {layer!r} was not called during the forward pass of {type(self.model).__name__}")

    def _grid_of(self, x: torch.Tensor, reduction: Any) -> tuple[int, int] | None:
        if isinstance(reduction, int) and reduction > 0:
            return x.shape[-2] // reduction, x.shape[-1] // reduction
        return None

    def _timm_features(self, x: torch.Tensor) -> torch.Tensor:
        model, info = self.model, _timm_feature_info(self.model)
        if _has_forward_intermediates(model):
            out = model.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)[-1]
            chs = int(info[-1]["num_chs"]) if info else None
            if not isinstance(out, torch.Tensor) or out.ndim != 4 or (chs is not None and out.shape[1] != chs
                                                                       and out.shape[-1] == chs):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"{type(model).__name__}.forward_intermediates(output_fmt='NCHW') returned {shape}, "
                                 f"which is not NCHW with the {chs} channels its feature_info declares; refused rather "
                                 "than guessed: pass layer='...' naming one of its feature_info stages")
            return out
        if type(model).__name__ in _TIMM_FEATURE_NETS and info:  # timm.create_model(..., features_only=True)
            outs = model(x)
            out = list(outs.values())[-1] if isinstance(outs, dict) else outs[-1]
            fmt = str(getattr(getattr(model, "output_fmt", None), "value", getattr(model, "output_fmt", "NCHW")))
            if fmt not in ("NCHW", "NHWC") or not isinstance(out, torch.Tensor) or out.ndim != 4:
                raise ValueError(f"the features_only model {type(model).__name__} outputs {fmt} "
                                 f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}; "
                                 "only NCHW or NHWC maps can be read")
            return out if fmt == "NCHW" else out.permute(0, 3, 1, 2)
        if info and "module" in info[-1]:
            last = info[-1]
            return _to_nchw(self._hooked(x, last["module"]), num_chs=int(last["num_chs"]),
                            grid=self._grid_of(x, last.get("reduction")), what=f"feature_info stage {last['module']!r}")
        raise ValueError(f"{type(model).__name__} is a timm model with neither forward_intermediates nor feature_info, "
                         "so the layout of its feature map cannot be established; pass layer='...' naming a module "
                         "whose output is (B, C, h, w)")

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is not None:
            out = self._hooked(x, self.layer)
            if self._layer_channels is None:
                return out
            info = {d.get("module"): d for d in _timm_feature_info(self.model)}[self.layer]
            return _to_nchw(out, num_chs=self._layer_channels, grid=self._grid_of(x, info.get("reduction")),
                            what=f"layer {self.layer!r}")
        if _has_forward_intermediates(self.model) or _timm_feature_info(self.model) or _is_timm(self.model):
            return self._timm_features(x)
        if hasattr(self.model, "forward_features"):
            return self.model.forward_features(x)
        self.layer = self._find_layer(x)
        return self._hooked(x, self.layer)

    def _cls_token_map(self, x: torch.Tensor) -> torch.Tensor:
        attn, store = _cls_attention_module(self.model), {}
        prefix = int(self.model.num_prefix_tokens)

        def hook(module, args, kwargs, _out):
            if kwargs.get("attn_mask") is not None or kwargs.get("is_causal"):
                raise ValueError("attention='cls_token' cannot read a masked or causal attention")
            store["weights"] = _class_token_attention(module, args[0] if args else kwargs["x"], prefix)

        handle = attn.register_forward_hook(hook, with_kwargs=True)
        try:
            feats = self._timm_features(x)
        finally:
            handle.remove()
        b, _, h, w = feats.shape
        weights = store["weights"]
        if weights.shape != (b, h * w):
            raise ValueError(f"the class token attends to {weights.shape[-1]} patch tokens but the feature map is "
                             f"{h}x{w}; cannot lay the attention out on the grid")
        return weights.reshape(b, 1, h, w)

    def _find_layer(self, x: torch.Tensor) -> str:
        """The last top-level child whose output is a spatial (B, C, h, w) map and not a pooling/head layer."""
        outputs: dict[str, tuple[int, ...]] = {}

        def record(name: str) -> Callable:
            return lambda _m, _i, out: outputs.__setitem__(name, tuple(out.shape) if isinstance(out, torch.Tensor)
                                                           else ())

        handles = [m.register_forward_hook(record(n)) for n, m in self.model.named_children()
                   if not isinstance(m, _POOLING)]
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
        """(B, C_in, H, W) images in [0, 1] (or normalised by ``input_mean``/``input_std``) -> (B, C, h, w) float32
        map ((B, 1, h, w) for ``cls_token``)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            desc = (f"shape {tuple(images.shape)}, dtype {images.dtype}" if isinstance(images, torch.Tensor)
                    else type(images).__name__)
            raise ValueError(f"images must be a floating (B, C, H, W) tensor in [0, 1], got {desc}")
        if images.shape[1] != self.mean.shape[1]:
            raise ValueError(f"images have {images.shape[1]} channels but the extractor normalises "
                             f"{self.mean.shape[1]}")
        param = next(self.model.parameters(), None)
        if param is not None and param.device != images.device:
            raise ValueError(f"images are on {images.device} but the extractor is on {param.device}; "
                             f"call extractor.to({str(images.device)!r})")
        self.model.eval()
        with torch.inference_mode():
            use_amp = self.amp_dtype is not None and images.device.type == "cuda"
            with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32, enabled=use_amp):
                x = self.preprocess(images)
                feats = self._cls_token_map(x) if self.attention == "cls_token" else self._features(x)
        if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise ValueError(f"the extractor's feature map must be (B, C, h, w), got {shape}; "
                             "pass layer='...' naming a convolutional stage")
        # Leave inference mode so the result can be used by autograd-tracked code downstream.
        return feats.float().clone()

    def extra_repr(self) -> str:
        given = f", input_mean={self.input_mean}, input_std={self.input_std}" if self.input_mean is not None else ""
        return (f"name={self.name!r}, source={self.source.kind!r}, attention={self.attention!r}, "
                f"input_size={self.input_size}, layer={self.layer!r}{given}")


# How far outside [0, 1] a batch may reach before it is taken for a normalised one (a normalised batch spans
# about [-2, 2.6]; resampling and MixUp-like blends stay well inside this margin).
_RANGE_SLACK = 0.5


def _input_stats(mean: Sequence[float] | None, std: Sequence[float] | None,
                 channels: int) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``input_mean``/``input_std`` checked: both or neither, one finite entry per channel, std > 0."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError(f"give input_mean and input_std together (the normalisation already applied to the batch), "
                         f"got input_mean={mean!r}, input_std={std!r}")
    try:
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError) as err:
        raise ValueError(f"input_mean and input_std must be sequences of numbers, one per channel, got "
                         f"input_mean={mean!r}, input_std={std!r}") from err
    if len(mean) != channels or len(std) != channels or not all(math.isfinite(v) for v in mean + std) \
            or any(s <= 0 for s in std):
        raise ValueError(f"input_mean and input_std must have {channels} finite entries (one per channel) and "
                         f"input_std > 0, got input_mean={mean}, input_std={std}")
    return mean, std


def load_extractor(spec: str | os.PathLike | nn.Module, *, weights: str | os.PathLike | None = None,
                   pretrained: bool = False, num_classes: int | None = None, input_size: int | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None, layer: str | None = None,
                   attention: str = "channel_mean", amp_dtype: torch.dtype | None = None,
                   device: str | torch.device | None = None, input_mean: Sequence[float] | None = None,
                   input_std: Sequence[float] | None = None) -> FeatureExtractor:
    """Build a frozen ``FeatureExtractor`` from a model name, a weights file, a training checkpoint or a module.

    ``spec`` ending in ``.pt``/``.pth``/``.ckpt`` is a checkpoint of ``attentive-cutmix train``: its config
    gives the model, classes, image size and normalisation, and it is read once. A model name takes
    ``weights=FILE`` or ``pretrained=True`` (else random weights). ``input_size=None`` means the
    checkpoint's image size, 32 for ``cifar_*`` names, 224 for other names, and for a module the batches' own
    size (no resize, as ``FeatureExtractor(module, input_size=None)``). ``extractor.source`` says which of these
    it was (an ``ExtractorSource``); attention caches compare it field by field. ``input_mean``/``input_std``:
    the normalisation already applied to the batches it will see (see ``FeatureExtractor``).
    """
    if isinstance(input_size, bool) or not (input_size is None or isinstance(input_size, int) and input_size >= 1):
        raise ValueError(f"input_size must be a positive int or None (the model's own size), "
                         f"got input_size={input_size!r}")
    saved: dict[str, Any] = {}
    if isinstance(spec, nn.Module):
        if pretrained or weights is not None or num_classes is not None:
            raise ValueError("pretrained=, weights= and num_classes= apply to a model name; load weights into your "
                             "module yourself")
        net, source, name = spec, ExtractorSource("module", type(spec).__name__), type(spec).__name__
    elif isinstance(spec, (str, os.PathLike)):
        name = os.fspath(spec)
        if input_size is None and not is_checkpoint_path(spec):
            input_size = 32 if name.startswith("cifar_") else 224
        net, source, saved = _load_network(spec, pretrained=pretrained, weights=weights, num_classes=num_classes,
                                           image_size=input_size)
    else:
        raise TypeError(f"spec must be a model name, a checkpoint path or an nn.Module, got {type(spec).__name__}")
    extractor = FeatureExtractor(net, source=source, name=name,
                                 # a module's None stays None: resizing a user's batches is their call, not ours
                                 input_size=input_size if input_size is not None or isinstance(spec, nn.Module)
                                 else int(saved.get("image_size", 224)),
                                 mean=mean if mean is not None else saved.get("mean"),
                                 std=std if std is not None else saved.get("std"), layer=layer, attention=attention,
                                 amp_dtype=amp_dtype, input_mean=input_mean, input_std=input_std)
    return extractor.to(device) if device is not None else extractor


def _infer_num_classes(state: dict[str, torch.Tensor], *, source: str = "the weights") -> int:
    """Width of the last 2-D weight (the classifier) in a state dict."""
    linear = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not linear:
        raise CheckpointError(f"cannot infer num_classes from {source} (no linear layer): is it the weights of another "
                              "model? Otherwise pass num_classes=")
    return int(linear[-1].shape[0])
