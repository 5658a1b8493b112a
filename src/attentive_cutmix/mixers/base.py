"""What every batch mixer shares: argument checks, the pairing, exact soft targets, ``prob``, one draw step.

A mixer is called as ``mixed, targets = mixer(images, labels, attention=None, *, masks=None, generator=None)``,
or ``batch = mixer(batch)`` on a dict batch (its labels found by ``labels_getter``, as torchvision v2's CutMix does).
Mixers are ``nn.Module``s, like torchvision's v2 transforms: ``.to(device)`` moves an extractor with them, while the
extractor stays frozen, out of ``state_dict()`` and ``parameters()``, and ``train()``/``eval()`` never reach it.
Its random draws all happen in ``make_params`` (as in torchvision's v2 transforms), from the given
``torch.Generator`` only, on the generator's device; the small drawn tensors then move to the images'
device without a host sync. Value checks that would read a GPU tensor (label range, finite attention) run
exactly on the CPU and as ``torch._assert_async`` elsewhere, so a training step never waits on the host.
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..constants import is_int, is_number
from ..registry import MixerOptions, option

__all__ = ["Mixer", "BetaMixer", "check_int", "check_choice", "check_unit", "check_alpha", "one_hot_targets",
           "check_index_labels", "mix_targets", "pair_permutation", "beta_sample", "check_generator", "check_rows",
           "check_values", "check_attention_maps", "channel_attention", "to_device", "LabelsGetter", "TARGET_FORMATS"]


# --------------------------------------------------------------------------- argument checks
def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None, hint: str = "",
              want: str | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; ``ValueError`` naming ``name`` otherwise (bools are not ints).

    ``want`` replaces the generated description of what is expected (e.g. "an int in [0, grid_size**2]").
    """
    if is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    if want is not None:
        pass
    elif minimum == 1 and maximum is None:
        want = "a positive int"
    elif maximum is None:
        want = f"an int >= {minimum}" if minimum is not None else "an int"
    else:
        want = f"an int in [{minimum}, {maximum}]"
    raise ValueError(f"{name} must be {want}{hint}, got {name}={value!r}")


def check_unit(name: str, value: Any, *, closed: bool = True) -> float:
    """A float in [0, 1] (``closed``) or [0, 1); a ``ValueError`` naming ``name`` for anything else, None included."""
    if not is_number(value) or not (
            0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, {'1]' if closed else '1)'}, got {name}={value!r}")
    return float(value)


def check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _check_images(images: Any) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating tensor (convert with .float() / ToDtype(scale=True)), "
                        f"got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B=0); give at least one image")
    if 0 in images.shape[1:]:
        raise ValueError(f"images has no pixels (shape {tuple(images.shape)}); every image needs C, H and W >= 1")


def host_checks(device: torch.device) -> bool:
    """Whether a check may read values on the host: on the CPU, outside ``torch.compile`` (where reading a value is
    a graph break; the check then runs as ``torch._assert_async``, as on a GPU)."""
    return device.type == "cpu" and not torch.compiler.is_compiling()


def check_values(ok: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the 0-d bool ``ok`` holds; without a host sync off the CPU."""
    if host_checks(ok.device):
        if not bool(ok):
            raise ValueError(message)
    elif ok.device.type != "meta":  # a meta tensor has no values to check
        torch._assert_async(ok, message)


def check_rows(name: str, ok: torch.Tensor, value: torch.Tensor, rule: str) -> None:
    """``ValueError`` unless every entry of the (B,) bool ``ok`` holds; on the CPU it names the first bad row of
    ``params[name]`` (``value``), elsewhere it is checked without a host sync."""
    message = f"params[{name!r}] {rule}"
    if host_checks(ok.device):
        if bad := (~ok).nonzero().flatten()[:1].tolist():
            raise ValueError(f"{message}; row {bad[0]} is {value[bad[0]].tolist()} (drawn for another batch, image "
                             "size or mixer?)")
    else:
        check_values(ok.all(), message)


def check_index_labels(labels: torch.Tensor, num_classes: int, batch_size: int,
                       device: torch.device | str) -> torch.Tensor:
    """(B,) integer class indices in [0, num_classes), as int64 on ``device`` (no host sync off the CPU)."""
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"class-index labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape[0] != batch_size:
        raise ValueError(f"labels has {labels.shape[0]} entries but images has batch size {batch_size}")
    labels = labels.to(device=device, dtype=torch.long, non_blocking=True)
    if host_checks(labels.device):  # exact, and the message can say which values
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}) (num_classes={num_classes}), got values "
                             f"in [{lo}, {hi}]")
    else:
        check_values(((labels >= 0) & (labels < num_classes)).all(),
                     f"labels must lie in [0, {num_classes}) (num_classes={num_classes})")
    return labels


def one_hot_targets(labels: torch.Tensor, num_classes: int, batch_size: int, *,
                    label_smoothing: float = 0.0, device: torch.device | None = None) -> torch.Tensor:
    """Validate ``labels`` (int64 (B,) or probabilities (B, num_classes)) and return float32 (B, num_classes)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    device = labels.device if device is None else device
    if labels.device.type == "meta" and torch.device(device).type != "meta":
        raise ValueError(f"labels are on the meta device (no values) but the images are on {device}; give labels "
                         "with values, on the images' device")
    if labels.ndim == 1:
        labels = check_index_labels(labels, num_classes, batch_size, device)
        # one_hot reads the maximum label to size its output: scatter into a known width instead (no sync).
        targets = torch.zeros(batch_size, num_classes, device=device).scatter_(
            1, labels.clamp(0, num_classes - 1).unsqueeze(1), 1.0)
    elif labels.ndim == 2:
        if labels.shape != (batch_size, num_classes):
            raise ValueError(f"probability labels must have shape (B, num_classes)=({batch_size}, {num_classes}), "
                             f"got {tuple(labels.shape)}")
        if not labels.is_floating_point():
            raise TypeError(f"probability labels must be floating, got dtype {labels.dtype}")
        targets = labels.to(device=device, dtype=torch.float32)
    else:
        raise ValueError(f"labels must have shape (B,) or (B, num_classes), got shape {tuple(labels.shape)}")
    if label_smoothing > 0:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return targets


def mix_targets(targets: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``(1 - lam_i) * t_i + lam_i * t_perm[i]`` per sample, in float32."""
    lam = lam.to(torch.float32).unsqueeze(1)
    return (1.0 - lam) * targets + lam * targets.index_select(0, perm)


# --------------------------------------------------------------------------- draws
def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a small drawn tensor to ``device`` without making the host wait for the device."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def pair_permutation(batch_size: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Random partner index for each sample, never the sample itself when ``batch_size >= 2``.

    The paper gives every image patches from *another* image: a plain ``randperm`` leaves about one
    sample per batch paired with itself (unmixed). We walk a random ordering as one cycle instead.
    """
    order = torch.randperm(batch_size, generator=generator, device=_gen_device(generator))
    perm = torch.empty_like(order)
    perm[order] = order.roll(-1)
    return perm if device is None else to_device(perm, torch.device(device))


def beta_sample(alpha: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` draws of Beta(alpha, alpha) as float32, exact down to tiny ``alpha``.

    Beta = G1 / (G1 + G2) with Gi ~ Gamma(alpha) underflows to 0/0 when alpha << 1 (a Gamma(0.001) draw
    is below 1e-300 most of the time). We work with log G = log Gamma(alpha + 1) + log(U) / alpha (the
    Gamma boost identity) and take sigmoid(log G1 - log G2), which never forms the tiny numbers.
    """
    device = _gen_device(generator)
    boosted = torch._standard_gamma(torch.full((2, n), alpha + 1.0, dtype=torch.float64, device=device),
                                    generator=generator)
    uniform = torch.rand(2, n, dtype=torch.float64, generator=generator, device=device)
    log_g = boosted.log() + uniform.clamp_min(torch.finfo(torch.float64).tiny).log() / alpha
    return torch.sigmoid(log_g[0] - log_g[1]).to(torch.float32)


# --------------------------------------------------------------------------- the base class
LabelsGetter = Callable[[Any], torch.Tensor]


def default_labels_getter(batch: Any) -> torch.Tensor:
    """torchvision v2's heuristic: the entry named ``labels`` (any case), else the first whose name contains
    ``label``."""
    if not isinstance(batch, Mapping):
        raise ValueError(f"the default labels_getter reads a dict batch, got {type(batch).__name__}; pass "
                         "labels_getter=callable(batch) -> labels")
    keys = [k for k in batch if isinstance(k, str)]
    key = next((k for k in keys if k.lower() == "labels"), None) or next((k for k in keys if "label" in k.lower()),
                                                                          None)
    if key is None:
        raise ValueError(f"no labels in the batch: none of its keys {list(batch)} is or contains 'labels'; pass "
                         "labels_getter=lambda batch: batch[...] to the mixer")
    found: torch.Tensor = batch[key]
    return found


_IMAGE_KEYS = ("pixel_values", "images", "image")


def _image_key(batch: Mapping[Any, Any], labels: torch.Tensor | None) -> Any:
    """The entry holding the images: ``pixel_values``/``images``/``image`` (any case), else the only floating
    4-D tensor."""
    for name in _IMAGE_KEYS:  # torchvision's priority, whatever the batch's order
        named = [k for k in batch if isinstance(k, str) and k.lower() == name]
        if named:
            return named[0]
    found = [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v is not labels and v.ndim == 4
             and v.is_floating_point()]
    if len(found) != 1:
        raise ValueError(f"cannot tell which entry of the batch holds the images (keys {list(batch)}): name it "
                         f"one of {_IMAGE_KEYS}, or call mixer(images, labels)")
    return found[0]


def _tv_wrapper(images: Any, masks: Any) -> Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None:
    """For ``tv_tensors`` inputs, the function that wraps a call's output like them; ``None`` for plain tensors.

    torchvision is looked up only where the input is one of its tensors (then it is already imported): the library
    itself never needs it.
    """
    tv = sys.modules.get("torchvision.tv_tensors")
    if tv is None or not any(isinstance(t, tv.TVTensor) for t in (images, masks)):
        return None

    def wrap(out: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        mixed = tv.wrap(out[0], like=images) if isinstance(images, tv.TVTensor) else out[0]
        if len(out) == 3 and isinstance(masks, tv.TVTensor):
            return mixed, out[1], tv.wrap(out[2], like=masks)
        return (mixed, *out[1:])

    return wrap


TARGET_FORMATS = ("dense", "pair")


def check_choice(name: str, value: Any, choices: tuple[str, ...], meaning: str = "") -> str:
    """``value`` if it is one of ``choices``; a ``ValueError`` naming ``name``, the choices (and ``meaning``)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}{meaning}, got {name}={value!r}")
    return str(value)


def _check_target_format(value: Any) -> str:
    return check_choice("target_format", value, TARGET_FORMATS, " (dense: (B, num_classes) soft targets; pair: "
                                                                "(labels_a, labels_b, lam) for mixed_cross_entropy)")


_MASK_KEYS = ("mask", "masks")


def _mask_key(batch: Mapping[Any, Any]) -> Any:
    """The entry holding per-pixel label maps: ``mask``/``masks`` (any case), else the only ``tv_tensors.Mask``."""
    named = [k for k in batch if isinstance(k, str) and k.lower() in _MASK_KEYS]
    tv = sys.modules.get("torchvision.tv_tensors")
    typed = [] if tv is None else [k for k, v in batch.items() if isinstance(v, tv.Mask)]
    found = list(dict.fromkeys(named + typed))
    if len(found) > 1:
        raise ValueError(f"the batch has several per-pixel label maps ({found}); a mixer mixes one: keep one, or "
                         "call mixer(images, labels, masks=masks)")
    return found[0] if found else None


def _has_labels(batch: Mapping[Any, Any]) -> bool:
    return any(isinstance(k, str) and "label" in k.lower() for k in batch)


def _is_mask_like(labels: torch.Tensor, images: Any) -> bool:
    """Whether ``labels`` are per-pixel maps of ``images`` (B, H, W) rather than per-image labels."""
    return (isinstance(images, torch.Tensor) and images.ndim == 4 and labels.ndim == 3
            and labels.shape == (images.shape[0], *images.shape[-2:]) and not labels.is_floating_point())


def _draw_below_traced(prob: float, generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator, device=_gen_device(generator)) < prob)


# A Python decision from a drawn value: under torch.compile one clean graph break (run eagerly) instead of a traced
# .item() and its warning.
_draw_below = cast(Callable[[float, "torch.Generator | None"], bool], torch.compiler.disable(_draw_below_traced))


def _dispatch_module_apply(hook: Callable[..., Any]) -> Callable[..., Any]:
    """A mixer's ``apply(images, targets, params, attention, masks)`` that still answers ``nn.Module.apply(fn)``.

    The contract's ``apply`` shadows ``nn.Module.apply``, which a parent module calls on every child (e.g.
    ``model.apply(init_weights)`` on a LightningModule holding a mixer): one callable argument is that call.
    """
    @functools.wraps(hook)
    def apply(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], torch.Tensor):
            return nn.Module.apply(self, args[0])
        return hook(self, *args, **kwargs)

    apply.__dict__["_dispatches"] = True
    return apply


class Mixer(nn.Module):
    """Base of the mixers: the common options, ``__repr__``, the call preamble, ``prob`` and the draw step.

    A subclass sets ``_repr_fields``, implements ``make_params(batch_size, height, width, generator)`` (every
    random draw of a call, on the generator's device) and ``apply(images, targets, params, attention, masks)``.
    An ``nn.Module`` as torchvision's v2 transforms are; the attributes named in ``_frozen_helpers`` (the
    extractor) are held outside the module tree: ``.to(device)`` moves them (device only: they compute
    in their own dtype), but they are in neither ``state_dict()`` nor ``parameters()``, and
    ``train()``/``eval()`` leave them in eval mode.
    """

    _repr_fields: tuple[str, ...] = ()
    _frozen_helpers: tuple[str, ...] = ("extractor",)
    accepts_masks = True
    has_region = True  # False for a mixer that blends whole images (its region() is None)
    targets_sum_to_one = True  # False for a label rule whose two weights need not sum to 1 (SnapMix)
    # Where the maps a call reads come from (``guidance_source``): "none" (CutMix, MixUp, Cutout, random cells),
    # "attention" (a frozen extractor or a cache, passed as attention=), "image" (computed from the batch itself,
    # e.g. saliency) or "model" (the model being trained: ``maps = guide(images, labels, model=model)``, then
    # ``mixer(images, labels, maps)``).
    guidance_source = "none"
    # Whether a call pairs each image with a partner of the batch (not Cutout): a batch of one then has none.
    needs_partner = True
    # The options checked on every assignment, not only in __init__ (subclasses extend the dict).
    _checked_fields: dict[str, Callable[[Any], Any]] = {
        "num_classes": lambda v: check_int("num_classes", v, minimum=1),
        "prob": lambda v: check_unit("prob", v),
        "label_smoothing": lambda v: check_unit("label_smoothing", v, closed=False),
        "target_format": lambda v: _check_target_format(v),
    }

    def __init__(self, num_classes: int, *, prob: float = 1.0, label_smoothing: float = 0.0,
                 labels_getter: str | LabelsGetter = "default", target_format: str = "dense") -> None:
        super().__init__()
        self.num_classes = num_classes  # checked by __setattr__, here and on any later assignment
        self.prob = prob
        self.label_smoothing = label_smoothing
        self.target_format = target_format
        self._check_pair_smoothing()
        self._warned_single = False
        if labels_getter != "default" and not callable(labels_getter):
            raise TypeError(f"labels_getter must be 'default' or a callable(batch) -> labels, got "
                            f"{type(labels_getter).__name__}")
        self.labels_getter: LabelsGetter = default_labels_getter if isinstance(labels_getter, str) else labels_getter

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hook = cls.__dict__.get("apply")
        if hook is not None and not getattr(hook, "_dispatches", False):
            cls.apply = _dispatch_module_apply(hook)  # type: ignore[method-assign]

    def __setattr__(self, name: str, value: Any) -> None:
        check = self._checked_fields.get(name)
        if check is not None:  # `mixer.prob = 2.0` after construction is refused as the constructor would
            value = check(value)
        if name in self._frozen_helpers:
            if isinstance(value, nn.Module):
                value.requires_grad_(False).eval()  # an extractor is frozen, whatever module it is
            object.__setattr__(self, name, value)  # not a submodule: no state_dict, parameters or train()
        else:
            super().__setattr__(name, value)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Mixer:
        super()._apply(fn, recurse)
        # Follow the mixer's device, never its dtype (a .half() of the whole model must not reach the extractor).
        for name in self._frozen_helpers:
            helper = self.__dict__.get(name)
            if isinstance(helper, nn.Module):
                current = next(itertools.chain(helper.parameters(), helper.buffers()), None)
                if current is None:
                    continue  # no tensors: nothing to move
                # Probe on the extractor's own device: a dtype-only fn (.half(), .to(torch.bfloat16)) leaves it
                # there, while a move to a device moves it. A probe on the CPU would send a GPU extractor back.
                device = fn(torch.empty(0, device=current.device)).device
                if device != current.device:
                    helper.to(device)
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Mixer:
        # A copy of the model (timm's ModelEmaV3, torch's AveragedModel, copy.deepcopy) shares the frozen extractor:
        # it never trains, and copying it would double its memory (60 M parameters for a ResNet-152).
        for name in self._frozen_helpers:
            helper = self.__dict__.get(name)
            if helper is not None:
                memo[id(helper)] = helper
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __repr__(self) -> str:
        fields = ("num_classes", *self._repr_fields, "prob", "label_smoothing")
        return f"{type(self).__name__}(" + ", ".join(f"{k}={self._repr_value(k)}" for k in fields) + ")"

    def _repr_value(self, key: str) -> str:
        return repr(getattr(self, key))

    def draw_applies(self, generator: torch.Generator | None) -> bool:
        """Whether this call mixes at all (``prob``); consumes one draw only when ``0 < prob < 1``."""
        if self.prob >= 1.0:
            return True
        if self.prob <= 0.0:
            return False
        if generator is not None and generator.device.type == "cuda":
            # A CUDA (Philox) generator's state, its seed and offset, lives on the host: decide from it there, and
            # move the offset on one Philox round (4) so the next call differs, instead of reading back a GPU draw
            # (a wait for the GPU on every call).
            seed, offset = generator.initial_seed(), generator.get_offset()
            generator.set_offset(offset + 4)
            host = torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + offset) % 2**63)  # no numpy needed
            return bool(torch.rand((), generator=host) < self.prob)
        return _draw_below(self.prob, generator)

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Every random draw of one call: at least ``perm``; subclasses add their own."""
        return {"perm": pair_permutation(batch_size, generator)}

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Mix with the drawn ``params``: ``(mixed, targets[, mixed masks])``.

        The contract's hook shadows ``nn.Module.apply(fn)`` (hence the type-ignore on every definition); a call with
        one callable still does what ``nn.Module.apply`` does (``__init_subclass__`` dispatches), so a parent's
        ``model.apply(init_weights)`` reaches its mixer unharmed."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, H, W) bool: the pixels of each output that the call with ``params`` (and the ``attention`` it read)
        replaced, i.e. took from the partner (or, for Cutout, erased); ``None`` for a method that blends whole images
        (MixUp). Localisation, figures and reports read every method through this alone."""
        raise NotImplementedError(f"{type(self).__name__} must implement region(params, height, width, attention)")

    def check_attention(self, attention: Any, images: torch.Tensor) -> torch.Tensor | None:
        """The attention a call uses (``None`` for mixers that do not read it)."""
        return None

    def needs_maps(self, maps: torch.Tensor | None) -> torch.Tensor:
        """``maps`` where a guided method reads them: ``check_attention`` gives every call its maps, a direct
        ``apply``/``region`` call may come without."""
        if maps is None:
            raise ValueError(f"{type(self).__name__} needs its guidance maps here: pass attention=(B, h, w) maps")
        return maps

    def guide(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              model: nn.Module | None = None) -> torch.Tensor | None:
        """The guidance maps (B, h, w) a call on ``images`` reads, or ``None`` for a mixer that reads none.

        For ``guidance_source == "model"`` the trainer (or your loop) calls this with the model being trained and
        passes the result as ``attention=``; analyses (localisation, figures) call it to get the maps ``region`` needs.
        """
        return None

    def forward(self, images: torch.Tensor | Mapping[str, Any], labels: torch.Tensor | None = None,
                attention: torch.Tensor | None = None, *, masks: torch.Tensor | None = None,
                generator: torch.Generator | None = None,
                params: dict[str, torch.Tensor] | None = None) -> tuple[Any, ...] | dict[str, Any]:
        """Mix a batch. Returns ``(mixed, targets)``, or ``(mixed, targets, mixed_masks)`` when ``masks`` is given
        (``targets`` is ``None`` for ``mixer(images, masks=masks)``, segmentation without image labels).

        ``params`` (from ``make_params``) replaces the draws, e.g. to give several mixers the same partners.
        A dict batch (``mixer(batch)``) comes back as a dict with its images mixed and its labels replaced by the
        soft targets; its labels are found by ``labels_getter``, its images under ``pixel_values``, ``images`` or
        ``image`` (or as its only floating 4-D tensor), its per-pixel label maps under ``mask``/``masks`` (or as a
        ``tv_tensors.Mask``) or as ``labels`` of shape (B, H, W) (Hugging Face segmentation batches); the maps are
        mixed with the images' pixel mask. Every other entry passes through.
        """
        if isinstance(images, Mapping):
            return self._forward_dict(images, labels, attention, masks=masks, generator=generator, params=params)
        if isinstance(images, (tuple, list)) and labels is None:  # a packed batch, as torchvision v2 takes it
            if len(images) != 2:
                raise TypeError(f"a packed batch is mixer((images, labels)), a tuple or list of two; got a "
                                f"{type(images).__name__} of {len(images)}")
            return tuple(self.forward(images[0], images[1], attention, masks=masks, generator=generator,
                                      params=params))
        wrap = _tv_wrapper(images, masks)
        if wrap is not None:  # tv_tensors in, tv_tensors out (torchvision v2's behaviour); plain tensors inside
            images = images.as_subclass(torch.Tensor)
            masks = None if masks is None else masks.as_subclass(torch.Tensor)
            return wrap(cast(tuple[torch.Tensor, ...], self.forward(images, labels, attention, masks=masks,
                                                                   generator=generator, params=params)))
        if labels is None and masks is None:
            raise TypeError(f"{type(self).__name__} needs labels: call mixer(images, labels), mixer(images, "
                            "masks=masks) for segmentation without image labels, or mixer(batch) on a dict batch")
        _check_images(images)
        check_generator(generator)
        b, _, h, w = images.shape
        if labels is None:  # segmentation alone: the masks carry the labels; targets come back as None
            out = self._mix(images, torch.zeros(b, 1, device=images.device), attention, masks, generator, params)[0]
            return (out[0], None, *out[2:])
        if self.target_format == "pair":
            return self._forward_pairs(images, labels, attention, masks=masks, generator=generator, params=params)
        targets = one_hot_targets(labels, self.num_classes, b, label_smoothing=self.label_smoothing,
                                  device=images.device)
        return self._mix(images, targets, attention, masks, generator, params)[0]

    def _mix(self, images: torch.Tensor, targets: torch.Tensor, attention: Any, masks: Any,
             generator: torch.Generator | None,
             params: Any) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor] | None]:
        """The call after its labels: ``(output, the params it used or None when it did not mix)``."""
        b, _, h, w = images.shape
        if masks is not None:
            self._check_masks(masks, images)
        attention = self.check_attention(attention, images)
        if params is None:
            if b == 1 and self.needs_partner:
                self._warn_single()
                return (images.clone(), targets) + ((masks.clone(),) if masks is not None else ()), None
            if not self.draw_applies(generator):
                return (images.clone(), targets) + ((masks.clone(),) if masks is not None else ()), None
            params = self.make_params(b, h, w, generator)
        else:
            self._check_params(params, b, h, w)
        params = {k: to_device(v, images.device) for k, v in params.items()}
        out = self.apply(images, targets, params, attention, masks)
        if not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
            out = (out[0].contiguous(memory_format=torch.channels_last), *out[1:])
        return out, params

    def _check_pair_smoothing(self) -> None:
        if self.target_format == "pair" and self.label_smoothing > 0:
            raise ValueError(f"target_format='pair' returns class indices, which carry no smoothing: set "
                             f"label_smoothing=0 on the mixer and give label_smoothing={self.label_smoothing} to "
                             "mixed_cross_entropy (or the loss) instead")

    def _forward_pairs(self, images: torch.Tensor, labels: Any, attention: Any, *, masks: Any,
                       generator: torch.Generator | None, params: Any) -> tuple[Any, ...]:
        """``target_format="pair"``: ``(mixed, (labels_a, labels_b, lam)[, mixed_masks])``, never (B, K) targets.

        The call mixes a (B, B) identity instead of one-hot targets (every method's label rule is a per-sample
        blend of its image's and its partner's targets), so row ``i`` holds the weight image ``i`` kept,
        ``1 - lam_i``, on its diagonal: exact, and independent of the number of classes.
        """
        self._check_pair_smoothing()
        if not self.targets_sum_to_one:
            raise ValueError(f"{type(self).__name__}'s label weights need not sum to 1, so they are no "
                             "(labels_a, labels_b, lam) pair: use target_format='dense'")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
            raise ValueError("target_format='pair' needs class-index labels of shape (B,); probability labels "
                             "(B, num_classes) need target_format='dense'")
        b = images.shape[0]
        labels = check_index_labels(labels, self.num_classes, b, images.device)
        out, used = self._mix(images, torch.eye(b, device=images.device), attention, masks, generator, params)
        partner = used["perm"] if used is not None and "perm" in used else torch.arange(b, device=images.device)
        pairs = (labels, labels.index_select(0, partner), 1.0 - out[1].diagonal())
        return (out[0], pairs, *out[2:])

    def _warn_single(self) -> None:
        if not self._warned_single:
            self._warned_single = True
            warnings.warn(f"{type(self).__name__} got a batch of one image: it has no partner to mix with, so it comes "
                          "back unmixed (with its one-hot targets). Drop the last incomplete batch "
                          "(DataLoader(drop_last=True)) or use batches of 2 or more", stacklevel=4)

    def _forward_dict(self, batch: Mapping[str, Any], labels: Any, attention: torch.Tensor | None,
                      **kwargs: Any) -> dict[str, Any]:
        if labels is not None:
            raise TypeError("a dict batch carries its own labels: call mixer(batch) (labels_getter finds them), "
                            "not mixer(batch, labels)")
        if kwargs.pop("masks", None) is not None:
            raise ValueError("masks= is for mixer(images, labels, masks=masks); a dict batch carries its masks under "
                             "'mask' or 'masks' (or as a tv_tensors.Mask)")
        mask_key = _mask_key(batch)
        if mask_key is not None and self.labels_getter is default_labels_getter and not _has_labels(batch):
            found = None  # segmentation alone: no image labels
        else:
            found = self.labels_getter(batch)
        label_keys = [k for k, v in batch.items() if v is found]
        if found is not None and (not isinstance(found, torch.Tensor) or not label_keys):
            raise ValueError("labels_getter must return one of the batch's own tensors (the mixer writes the soft "
                             f"targets back in its place), got {type(found).__name__}")
        image_key = _image_key(batch, found)
        images = batch[image_key]
        if found is not None and _is_mask_like(found, images):  # HF segmentation: `labels` is the (B, H, W) map
            if mask_key is not None:
                raise ValueError(f"the batch has per-pixel maps under both {label_keys[0]!r} and {mask_key!r}; "
                                 "keep one")
            mask_key, found = label_keys[0], None
        masks = None if mask_key is None else batch[mask_key]
        out = cast(tuple[Any, ...], self.forward(images, found, attention, masks=masks, **kwargs))
        result: dict[Any, Any] = {**batch, image_key: out[0]}
        if found is not None:
            result[label_keys[0]] = out[1]
        if mask_key is not None:
            result[mask_key] = out[2]
        return result

    def _check_params(self, params: Any, batch_size: int, height: int, width: int) -> None:
        # What make_params draws for this very call: the keys, shapes and kinds of dtype a replay must have.
        expected = self.make_params(batch_size, height, width, torch.Generator())
        if not isinstance(params, dict) or set(params) != set(expected):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"params must be the dict of {type(self).__name__}.make_params() with keys "
                             f"{sorted(expected)}, got {got}")
        for key, value in params.items():
            if not isinstance(value, torch.Tensor) or value.shape[:1] != (batch_size,):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"params[{key!r}] must be a tensor with one row per image ({batch_size}), got {shape}")
            want = expected[key]
            if value.shape != want.shape:
                raise ValueError(f"params[{key!r}] has shape {tuple(value.shape)} but {type(self).__name__}."
                                 f"make_params gives {tuple(want.shape)} for {batch_size} images of {height}x{width}: "
                                 "drawn for another mixer or image size?")
            if (value.is_floating_point(), value.dtype == torch.bool) != (want.is_floating_point(), False):
                raise TypeError(f"params[{key!r}] must be {'a floating' if want.is_floating_point() else 'an integer'} "
                                f"tensor like make_params' {want.dtype}, got {value.dtype}")
        self.check_params(params, height, width)

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        """Value checks of replayed ``params`` (keys, shapes and dtypes already match): the partners must be images
        of this batch. Subclasses add their own keys' rules."""
        if "perm" in params:
            perm = params["perm"]
            check_rows("perm", (perm >= 0) & (perm < len(perm)), perm,
                       f"must hold partner indices in [0, {len(perm)}) (the batch size)")

    def _check_masks(self, masks: Any, images: torch.Tensor) -> None:
        if not self.accepts_masks:
            raise ValueError(f"{type(self).__name__} blends whole images, so per-pixel label maps cannot follow it; "
                             "drop masks= (use CutMix, Attentive CutMix or random cells for segmentation)")
        if not isinstance(masks, torch.Tensor):
            raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}")
        b, _, h, w = images.shape
        if masks.shape != (b, h, w):
            raise ValueError(f"masks must have shape (B, H, W)=({b}, {h}, {w}) like the images, "
                             f"got {tuple(masks.shape)}")
        if masks.device != images.device:
            raise ValueError(f"masks are on {masks.device} but images are on {images.device}; move them with "
                             "masks.to(images.device)")
        if masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool:
            raise TypeError(f"masks must be per-pixel class indices in an integer dtype (e.g. masks.long()), got "
                            f"dtype {masks.dtype}")


def check_alpha(alpha: Any) -> float:
    if not is_number(alpha) or not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number > 0, got alpha={alpha!r}")
    return float(alpha)


# --------------------------------------------------------------------------- mixers drawing lam ~ Beta(alpha, alpha)
@dataclass(frozen=True)
class BetaOptions(MixerOptions):
    """The options of a method whose per-sample lam is Beta(alpha, alpha) (``--alpha``)."""

    alpha: float = option(1.0, "Beta(alpha, alpha)", above=0.0)


class BetaMixer(Mixer):
    """A mixer whose per-sample ``lam`` is drawn from Beta(alpha, alpha) (CutMix, MixUp, ...)."""

    _repr_fields: tuple[str, ...] = ("alpha",)
    _checked_fields = {**Mixer._checked_fields, "alpha": check_alpha}

    def __init__(self, num_classes: int, *, alpha: float = 1.0, prob: float = 1.0, label_smoothing: float = 0.0,
                 labels_getter: str | LabelsGetter = "default", target_format: str = "dense") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, labels_getter=labels_getter,
                         target_format=target_format)
        self.alpha = alpha  # checked by __setattr__

    @classmethod
    def from_options(cls, options: BetaOptions, *, num_classes: int, label_smoothing: float = 0.0,
                     extractor: Any = None) -> BetaMixer:
        """The mixer of a run's ``--alpha``/``--prob`` (the registry's ``build``)."""
        return cls(num_classes, alpha=options.alpha, prob=options.prob, label_smoothing=label_smoothing)


def channel_attention(features: torch.Tensor) -> torch.Tensor:
    """The attention of a (B, C, h, w) feature map: its channel mean, (B, h, w) float32 (the paper's aggregate,
    never a single channel). A (B, h, w) map is already one and passes through as float32."""
    if not isinstance(features, torch.Tensor) or features.ndim not in (3, 4):
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"an extractor's output must be (B, C, h, w) features or a (B, h, w) map, got {shape}")
    att = features.to(torch.float32)
    return att.mean(dim=1) if att.ndim == 4 else att


def check_attention_maps(attention: Any, images: torch.Tensor) -> torch.Tensor:
    """Check a batch of (B, h, w) or (B, C, h, w) attention maps against its images; return it unchanged.

    Any resolution is allowed (a mixer pools it onto its own grid); the finite check never syncs a GPU.
    """
    if not isinstance(attention, torch.Tensor):
        raise TypeError(f"attention must be a torch.Tensor, got {type(attention).__name__}")
    if attention.ndim not in (3, 4):
        raise ValueError(f"attention must have shape (B, h, w) or (B, C, h, w), got shape {tuple(attention.shape)}")
    if attention.shape[0] != images.shape[0]:
        raise ValueError(f"attention has batch size {attention.shape[0]} but images has {images.shape[0]}")
    if attention.numel() == 0:
        raise ValueError(f"attention has no values (shape {tuple(attention.shape)}); every sample needs a map "
                         "with at least one channel and one cell")
    if attention.device != images.device:
        raise ValueError(f"attention is on {attention.device} but images are on {images.device}; move it with "
                         "attention.to(images.device)")
    if not attention.is_floating_point():
        raise TypeError(f"attention must be a floating tensor, got dtype {attention.dtype}")
    check_values(torch.isfinite(attention).all(),
                 "attention contains NaN or Inf values; check the extractor or the attention cache")
    return attention
