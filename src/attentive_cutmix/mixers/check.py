"""``check_mixer``: the one test of the mixer contract, for ours and yours (as torchvision tests every v2 transform
with one ``check_transform``).

``check_mixer(mixer_or_method)`` takes a ``Mixer`` or a registered method's name (built from its ``example``
options) and runs it through everything the library promises of a mixer: shapes, dtypes and exact soft targets on
odd batch sizes and non-square images; ``region`` (outside it nothing changes); params replay and the explicit
generator (global RNG untouched); bad inputs refused with a clear error and nothing changed; no host read on the
meta device (sync-free); gradients with respect to the images; ``channels_last`` kept; the ``nn.Module`` behaviour
(no parameters or state, ``deepcopy``); dict batches; dense masks where the mixer declares them (``accepts_masks``),
a clear refusal otherwise. Guidance maps are made up to fit what the mixer reads (``guidance_source``): random maps
for ``"attention"``, the mixer's own for ``"image"``, a tiny CNN's for ``"model"``. Raises ``AssertionError`` naming
the failed promise.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..registry import Method, get
from .base import Mixer

__all__ = ["check_mixer", "example_mixer"]

_SIZES = ((2, 12, 10), (3, 9, 9), (5, 16, 12))  # odd batch sizes, non-square images, cells that do not divide evenly


class _TinyNet(nn.Module):
    """A CNN classifier small enough for the check: features -> global pool -> linear (what model guidance taps)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.pool(self.forward_features(x)).flatten(1))
        return out


def example_mixer(method: str | Method, num_classes: int = 5, **overrides: Any) -> Mixer:
    """The mixer of a registered method with its ``example`` options (and ``overrides``)."""
    method = get(method) if isinstance(method, str) else method
    if method.build is None:
        raise ValueError(f"method {method.name!r} does not mix (no mixer to check)")
    options = method.options(**{**method.example, **overrides})
    mixer: Mixer = method.make_mixer(options, num_classes=num_classes)
    return mixer


def _maps(mixer: Mixer, images: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor | None:
    source = mixer.guidance_source
    if source == "attention":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(images.shape[0], 4, 4, generator=g).to(images.device)
    if source == "model":
        torch.manual_seed(seed)
        return mixer.guide(images, labels, model=_TinyNet(mixer.num_classes).to(images.device))
    return mixer.guide(images, labels)  # "image": the maps the mixer makes from the batch itself; "none": None


def _expect(ok: bool, what: str, mixer: Mixer) -> None:
    if not ok:
        raise AssertionError(f"{type(mixer).__name__}: {what}")


def _call(mixer: Mixer, images: torch.Tensor, labels: torch.Tensor, maps: torch.Tensor | None, seed: int,
          **kwargs: Any) -> Any:
    return mixer(images, labels, maps, generator=torch.Generator().manual_seed(seed), **kwargs)


def _check_call(mixer: Mixer, b: int, h: int, w: int, k: int) -> None:
    g = torch.Generator().manual_seed(b * 100 + h)
    images, labels = torch.rand(b, 3, h, w, generator=g), torch.randint(0, k, (b,), generator=g)
    before = images.clone()
    maps = _maps(mixer, images, labels, seed=b)
    rng = torch.get_rng_state()
    # A mixer guided by the batch itself makes its maps in the call; the region below reads the same maps.
    mixed, targets = _call(mixer, images, labels, None if mixer.guidance_source == "image" else maps, seed=7)
    _expect(torch.equal(torch.get_rng_state(), rng), "a call changed torch's global RNG state (draw only from the "
            "generator)", mixer)
    torch.manual_seed(12345)
    again = _call(mixer, images, labels, maps, seed=7)
    torch.set_rng_state(rng)
    _expect(torch.equal(again[0], mixed) and torch.equal(again[1], targets), "the result depends on torch's global "
            "RNG (draw only from the generator)", mixer)
    _expect(torch.equal(images, before), "a call changed its input images in place", mixer)
    _expect(mixed.shape == images.shape and mixed.dtype == images.dtype, f"mixed images have shape "
            f"{tuple(mixed.shape)}/{mixed.dtype}, expected {tuple(images.shape)}/{images.dtype}", mixer)
    _expect(targets.shape == (b, k) and targets.dtype == torch.float32 and bool(torch.isfinite(targets).all()),
            f"targets must be finite float32 ({b}, {k}), got {tuple(targets.shape)}/{targets.dtype}", mixer)
    if mixer.targets_sum_to_one:
        _expect(torch.allclose(targets.sum(1), torch.ones(b), atol=1e-5), "target rows must sum to 1", mixer)
    # Replay: the same params give the same result; the same generator seed gives the same params.
    gen = torch.Generator().manual_seed(7)
    applies = mixer.draw_applies(gen)  # what a call decides first (prob), from the same stream
    params = mixer.make_params(b, h, w, gen)
    if applies:
        replayed = mixer(images, labels, maps, params=params)
        _expect(all(torch.equal(x, y) for x, y in zip(replayed, (mixed, targets))),
                "mixer(..., params=make_params(..., generator seeded s)) differs from mixer(..., generator seeded s)",
                mixer)
    else:
        _expect(torch.equal(mixed, images), "a call that prob skipped changed the images", mixer)
    region = mixer.region(params, h, w, maps)
    _expect((region is not None) == mixer.has_region, f"has_region is {mixer.has_region} but region() returned "
            f"{'a mask' if region is not None else None}", mixer)
    if region is not None:
        _expect(region.shape == (b, h, w) and region.dtype == torch.bool,
                f"region must be a (B, H, W) bool mask, got {tuple(region.shape)}/{region.dtype}", mixer)
        outside = ~region.unsqueeze(1).expand_as(images)
        _expect(torch.equal(mixed[outside], images[outside]), "pixels outside region() changed", mixer)


def _check_bad_inputs(mixer: Mixer, k: int) -> None:
    images, labels = torch.rand(4, 3, 12, 12), torch.randint(0, k, (4,))
    maps = _maps(mixer, images, labels, seed=0)
    cases: list[tuple[tuple[Any, ...], type[Exception], str]] = [
             ((images.numpy(), labels), TypeError, "images"), ((images[0], labels), ValueError, "images"),
             (((images * 255).to(torch.uint8), labels), TypeError, "images"), ((images[:0], labels[:0]), ValueError,
                                                                               "empty batch"),
             ((images, labels[:3]), ValueError, "labels"), ((images, labels + k), ValueError, "labels"),
             ((images, labels - k), ValueError, "labels"), ((images, labels.float()), TypeError, "labels"),
             ((images, torch.full((4, k + 1), 1.0 / (k + 1))), ValueError, "num_classes"),
             ((images, labels.view(4, 1, 1)), ValueError, "labels")]
    for args, error, word in cases:
        kept = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        try:
            mixer(*args, maps if args[0].shape[:1] == (4,) else None, generator=torch.Generator().manual_seed(0))
        except error as err:
            _expect(word in str(err), f"the {error.__name__} for a bad {word} does not name it: {err}", mixer)
        else:
            raise AssertionError(f"{type(mixer).__name__}: a bad {word} was accepted (expected {error.__name__})")
        _expect(all(not isinstance(a, torch.Tensor) or torch.equal(a, b) for a, b in zip(args, kept)),
                "a refused call changed its inputs", mixer)
    try:
        mixer(images, labels, maps, generator=0)
    except TypeError as err:
        _expect("generator" in str(err), f"the error for a bad generator does not name it: {err}", mixer)
    else:
        raise AssertionError(f"{type(mixer).__name__}: generator=0 was accepted")
    params = mixer.make_params(4, 12, 12, torch.Generator().manual_seed(0))
    if "perm" in params:  # replayed partners must be images of this batch, as integers
        for perm, error in (([1, 2, 3, 4], ValueError), ([1, -1, 3, 0], ValueError), ([1.0, 2.0, 3.0, 0.0], TypeError)):
            try:
                mixer(images, labels, maps, params={**params, "perm": torch.tensor(perm)})
            except error as err:
                _expect("perm" in str(err), f"the error for a tampered params['perm'] does not name it: {err}", mixer)
            else:
                raise AssertionError(f"{type(mixer).__name__}: params['perm']={perm} was accepted")
    one = mixer(images[:1], labels[:1], None if maps is None else maps[:1], generator=torch.Generator().manual_seed(0))
    _expect(torch.allclose(one[1], _one_hot(labels[:1], k, mixer.label_smoothing)),
            "a batch of one (no partner) must keep its label", mixer)


def _one_hot(labels: torch.Tensor, k: int, smoothing: float) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).float() * (1 - smoothing) + smoothing / k


def _check_meta(mixer: Mixer, k: int) -> None:
    # A meta tensor has no values: any host read (.item(), bool(t), .tolist()) raises, so running through proves
    # the call never waits on the device.
    images, labels = torch.rand(4, 3, 12, 12, device="meta"), torch.randint(0, k, (4,), device="meta")
    maps = None
    if mixer.guidance_source in ("attention", "model"):
        maps = torch.rand(4, 4, 4, device="meta")  # an "image" mixer makes its own, on meta
    mixed, targets = _call(mixer, images, labels, maps, seed=0)
    _expect(mixed.device.type == "meta" and targets.shape == (4, k), "the call on meta tensors did not stay there",
            mixer)
    soft = torch.rand(4, k, device="meta").softmax(1)
    _expect(_call(mixer, images, soft, maps, seed=0)[1].device.type == "meta", "probability labels on meta", mixer)
    if mixer.accepts_masks:
        masks = torch.randint(0, k, (4, 12, 12), device="meta")
        _expect(_call(mixer, images, labels, maps, seed=0, masks=masks)[2].device.type == "meta",
                "masks on meta did not stay there", mixer)


def _check_autograd_and_layout(mixer: Mixer, k: int) -> None:
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(4, 3, 12, 12, generator=g), torch.randint(0, k, (4,), generator=g)
    maps = _maps(mixer, images, labels, seed=1)
    leaf = images.clone().requires_grad_(True)
    mixed, _ = _call(mixer, leaf, labels, maps, seed=3)
    _expect(mixed.requires_grad, "the output is not differentiable with respect to the images", mixer)
    mixed.sum().backward()
    _expect(leaf.grad is not None and bool(torch.isfinite(leaf.grad).all()), "the images' gradient is not finite",
            mixer)
    plain = _call(mixer, images, labels, maps, seed=3)
    cl = _call(mixer, images.contiguous(memory_format=torch.channels_last), labels, maps, seed=3)
    _expect(cl[0].is_contiguous(memory_format=torch.channels_last), "a channels_last batch came back in another "
            "memory format", mixer)
    _expect(torch.equal(cl[0], plain[0]) and torch.equal(cl[1], plain[1]), "channels_last changed the result", mixer)
    half = _call(mixer, images.to(torch.bfloat16), labels, maps, seed=3)
    _expect(half[0].dtype == torch.bfloat16, f"bf16 images came back as {half[0].dtype}", mixer)
    batch = mixer({"pixel_values": images, "labels": labels}, attention=maps,
                  generator=torch.Generator().manual_seed(3))
    _expect(torch.equal(batch["pixel_values"], plain[0]) and torch.equal(batch["labels"], plain[1]),
            "a dict batch gave another result than the tuple call", mixer)


def _check_module(mixer: Mixer, k: int) -> None:
    _expect(isinstance(mixer, nn.Module), "a mixer must be an nn.Module", mixer)
    _expect(list(mixer.parameters()) == [] and mixer.state_dict() == {}, "a mixer must hold no parameters or state",
            mixer)
    _expect(isinstance(repr(mixer), str) and type(mixer).__name__ in repr(mixer), "repr must name the class", mixer)
    images, labels = torch.rand(4, 3, 12, 12), torch.randint(0, k, (4,))
    maps = _maps(mixer, images, labels, seed=2)
    a = _call(mixer, images, labels, maps, seed=5)
    b = _call(copy.deepcopy(mixer).train(), images, labels, maps, seed=5)
    _expect(all(torch.equal(x, y) for x, y in zip(a, b)), "a deepcopy (in train mode) mixes differently", mixer)


def _check_masks(mixer: Mixer, k: int) -> None:
    g = torch.Generator().manual_seed(4)
    images, labels = torch.rand(3, 3, 12, 10, generator=g), torch.randint(0, k, (3,), generator=g)
    masks = torch.randint(0, k, (3, 12, 10), generator=g)
    maps = _maps(mixer, images, labels, seed=4)
    if not mixer.accepts_masks:
        try:
            _call(mixer, images, labels, maps, seed=0, masks=masks)
        except ValueError as err:
            _expect("masks" in str(err), f"the refusal of masks= does not name it: {err}", mixer)
            return
        raise AssertionError(f"{type(mixer).__name__}: accepts_masks is False but masks= was accepted")
    params = mixer.make_params(3, 12, 10, torch.Generator().manual_seed(0))
    mixed, targets, mixed_masks = mixer(images, labels, maps, masks=masks, params=params)
    plain = mixer(images, labels, maps, params=params)
    _expect(torch.equal(mixed, plain[0]) and torch.equal(targets, plain[1]), "masks= changed the images or targets",
            mixer)
    _expect(mixed_masks.shape == masks.shape and mixed_masks.dtype == masks.dtype, "mixed masks have another "
            "shape or dtype than the masks", mixer)
    region = mixer.region(params, 12, 10, maps)
    if region is not None:
        _expect(torch.equal(mixed_masks[~region], masks[~region]), "mask pixels outside region() changed", mixer)


def check_mixer(mixer_or_method: Mixer | str | Method, *, num_classes: int = 5) -> None:
    """Run the mixer contract (see the module docstring) on a mixer or a registered method's example mixer.

    A mixer given as an instance must have ``num_classes == num_classes``. Returns ``None``; raises
    ``AssertionError`` naming the first broken promise.
    """
    if isinstance(mixer_or_method, Mixer):
        mixer, k = mixer_or_method, mixer_or_method.num_classes
    else:
        mixer, k = example_mixer(mixer_or_method, num_classes), num_classes
    _check_module(mixer, k)
    for b, h, w in _SIZES:
        _check_call(mixer, b, h, w, k)
    _check_bad_inputs(mixer, k)
    _check_meta(mixer, k)
    _check_autograd_and_layout(mixer, k)
    _check_masks(mixer, k)
