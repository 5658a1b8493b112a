"""``create_model``: the paper's architectures from torchvision/timm, plus the CIFAR ResNets.

Nothing is re-implemented by hand except the CIFAR ResNet family (which neither library ships).
For small inputs (<= 64 px) the ImageNet stem is adapted the usual way: a 3x3 stride-1 first
convolution and no max-pool, so a 32 px image is not crushed to 1x1 before the last stage.
"""
from __future__ import annotations

import warnings

import timm
import torchvision
from torch import nn

from ..constants import INITS, SMALL_IMAGE_MAX, is_int
from .cifar_resnet import CIFAR_RESNET_DEPTHS, cifar_resnet

# Paper architecture -> (library, library name).
PAPER_MODELS: dict[str, tuple[str, str]] = {
    **{f"resnet{d}": ("torchvision", f"resnet{d}") for d in (18, 34, 101, 152)},
    **{f"densenet{d}": ("torchvision", f"densenet{d}") for d in (121, 169, 201)},
    "densenet264": ("timm", "densenet264d"),
    **{f"efficientnet_b{k}": ("torchvision", f"efficientnet_b{k}") for k in (0, 1, 6, 7)},
}
# Where a local weights file goes, on the command line and in Python: every "no weights" message names both.
WEIGHTS_HINT = ("give a local weights file: on the command line `--extractor-weights PATH` (train, cache-attention), "
                "in Python `load_extractor(name, weights=PATH)`")


class PretrainedWeightsError(RuntimeError, ValueError):
    """Pretrained weights could not be fetched (offline, hub down) or do not exist for this model.

    A ``RuntimeError`` as before, and a ``ValueError`` like every other bad option, so the command line
    reports it in one line.
    """


# A name's library, made explicit: `timm:resnet50`, `torchvision:resnet50`. A bare name both libraries define
# builds torchvision's, as it always has (recorded configs and checkpoints keep their meaning), with a warning.
LIBRARY_PREFIXES = ("torchvision", "timm")


def available_models() -> list[str]:
    """Names with a tested recipe. Any other torchvision or timm classifier name also works, bare or as
    ``torchvision:NAME`` / ``timm:NAME`` (needed to get timm's model where torchvision has one of the same name)."""
    return sorted(PAPER_MODELS) + sorted(CIFAR_RESNET_DEPTHS)


def _in_torchvision(name: str) -> bool:
    return name in torchvision.models.list_models(module=torchvision.models)


def _resolve(name: str) -> tuple[str, str]:
    lib, sep, rest = name.partition(":")
    if sep and lib in LIBRARY_PREFIXES:
        if not (_in_torchvision(rest) if lib == "torchvision" else timm.is_model(rest)):
            raise ValueError(f"unknown model {name!r}: {lib} has no model {rest!r}")
        return lib, rest
    if name in CIFAR_RESNET_DEPTHS:
        return "cifar", name
    resolved = PAPER_MODELS.get(name) or (("torchvision", name) if _in_torchvision(name) else None)
    if resolved is not None:
        if resolved[0] == "torchvision" and timm.is_model(name):
            # Python's default filter shows this once per name and process: a grid of cells warns once.
            warnings.warn(f"model {name!r} is defined by both torchvision and timm: building torchvision's (a bare "
                          f"name's meaning here, kept so recorded runs stay the same); write 'timm:{name}' for "
                          f"timm's, or 'torchvision:{name}' to make the choice explicit and silence this",
                          UserWarning, stacklevel=3)
        return resolved
    if timm.is_model(name):
        return "timm", name
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(available_models())} "
                     "(or any torchvision classification model / timm model name, optionally as "
                     "'torchvision:NAME' or 'timm:NAME')")


def _conv_like(conv: nn.Conv2d, *, kernel: int | None = None) -> nn.Conv2d:
    k = kernel or conv.kernel_size[0]
    return nn.Conv2d(conv.in_channels, conv.out_channels, k, stride=1, padding=k // 2, bias=conv.bias is not None)


def adapt_small_input_stem(model: nn.Module) -> nn.Module:
    """Replace the stride-4 ImageNet stem by a stride-1 stem for CIFAR-sized images (in place)."""
    if isinstance(model, torchvision.models.ResNet) or (hasattr(model, "conv1") and hasattr(model, "maxpool")):
        model.conv1 = _conv_like(model.conv1, kernel=3)
        model.maxpool = nn.Identity()
    elif hasattr(model, "features") and hasattr(model.features, "conv0"):  # DenseNets (torchvision, timm)
        feats = model.features
        feats.conv0 = _conv_like(feats.conv0, kernel=3)
        if hasattr(feats, "pool0"):
            feats.pool0 = nn.Identity()
    elif isinstance(model, torchvision.models.EfficientNet):
        model.features[0][0].stride = (1, 1)
    elif hasattr(model, "conv_stem"):  # timm EfficientNet / MobileNet family
        model.conv_stem.stride = (1, 1)
    else:
        raise ValueError(f"don't know how to adapt the stem of {type(model).__name__} to small inputs; "
                         f"use image_size > {SMALL_IMAGE_MAX} or a model with a known stem")
    return model


def xavier_init_(model: nn.Module) -> nn.Module:
    """The paper's initialisation: Xavier-normal weights for every conv and linear layer, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def create_model(name: str, num_classes: int, image_size: int = 224, init: str = "default", *,
                 pretrained: bool = False) -> nn.Module:
    """Build ``name`` for ``num_classes`` classes and ``image_size`` px inputs.

    ``init="xavier"`` re-initialises conv/linear weights Xavier-normal (the paper trains from
    scratch). ``pretrained=True`` loads the library's ImageNet weights (needs the network or a
    warm torch/timm cache) and keeps the ImageNet stem.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got init={init!r}")
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got num_classes={num_classes!r}")
    if not is_int(image_size) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got image_size={image_size!r}")
    lib, lib_name = _resolve(name)
    if lib == "cifar":
        if pretrained:
            raise PretrainedWeightsError(f"{name} has no downloadable weights; {WEIGHTS_HINT}")
        model = cifar_resnet(name, num_classes=num_classes)
    else:
        model = _build_library_model(lib, lib_name, num_classes, pretrained)
        if image_size <= SMALL_IMAGE_MAX and not pretrained:
            adapt_small_input_stem(model)
    if init == "xavier":
        xavier_init_(model)
    return model


def _build_library_model(lib: str, name: str, num_classes: int, pretrained: bool) -> nn.Module:
    try:
        if lib == "timm":
            model = timm.create_model(name, pretrained=pretrained)
            if num_classes != model.num_classes:
                model.reset_classifier(num_classes)
            return model
        if not pretrained:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        model = torchvision.models.get_model(name, weights="DEFAULT")
    except (OSError, RuntimeError) as err:  # urllib/hub errors surface as these
        if not pretrained:
            raise
        raise PretrainedWeightsError(f"could not fetch pretrained weights for {name!r} ({err.__class__.__name__}: "
                                     f"{_first_line(err)}); on an offline machine {WEIGHTS_HINT}") from err
    if num_classes != 1000:
        _reset_torchvision_head(model, num_classes)
    return model


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:300]


def _reset_torchvision_head(model: nn.Module, num_classes: int) -> None:
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, num_classes)
            return
    raise ValueError(f"cannot find the classifier of {type(model).__name__} to resize it to {num_classes} classes")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["create_model", "PretrainedWeightsError", "WEIGHTS_HINT", "LIBRARY_PREFIXES",
           "available_models", "adapt_small_input_stem", "xavier_init_", "PAPER_MODELS", "count_parameters"]
