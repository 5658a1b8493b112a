"""``Mix``: timm's ``Mixup`` entry point (MixUp and/or CutMix, switched), with any registered method as an arm.

``Mix(mixup_alpha=1., cutmix_alpha=0., cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode="batch",
correct_lam=True, label_smoothing=0.1, num_classes=1000)`` takes ``timm.data.Mixup``'s arguments with its meaning:

- each call (``mode="batch"``), each image (``"elem"``) or each mirrored pair (``"pair"``: images ``i`` and
  ``B-1-i`` swap the same box, or blend with the same weight) is mixed with probability ``prob``, by CutMix with
  probability ``switch_prob`` when both ``mixup_alpha`` and ``cutmix_alpha`` are > 0, else by the active one;
- ``lam ~ Beta(alpha, alpha)`` of the chosen arm is the weight of the image itself; CutMix's box has sides
  ``int(H * sqrt(1 - lam))`` around a uniform centre (timm's ``rand_bbox``, clipped), or sides drawn uniformly in
  ``cutmix_minmax`` of the image's; ``correct_lam`` (or ``cutmix_minmax``) takes the label weight from the clipped box;
- the partner of image ``i`` is image ``B-1-i`` (timm's ``x.flip(0)``), and the targets are one-hot with timm's
  smoothing (``off = label_smoothing / K``, ``on = 1 - label_smoothing + off``) mixed with the same weights.

Unlike timm it never changes the input in place, draws from a ``torch.Generator`` (``generator=``), runs batched
(no loop over the batch; in "elem"/"pair" mode with both arms active each arm is computed for the whole batch and
selected per image), accepts an odd batch (the middle image of the flip is its own partner: unmixed), and keeps the
calls every mixer has (dicts, ``masks=`` when no arm blends, ``params=`` replay, ``mixup_enabled``).

``arms={"mixup": ..., "cutmix": ...}`` replaces an arm by a ``Mixer`` or a registered method's name (built with
its default options): e.g. ``Mix(cutmix_alpha=1., arms={"cutmix": "attentive-cutmix"})`` switches between MixUp
and Attentive CutMix as timm switches between MixUp and CutMix. A replaced arm is active whatever its alpha; it
keeps its own region and label rule (e.g. the exact pasted area), its pairing becomes the flip, and ``mode`` decides
only whether and which arm mixes (its own draws stay per image).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch

from .. import registry
from ..constants import is_number
from .base import Mixer, beta_sample, check_choice, check_rows, check_unit, mix_targets
from .geometry import box_area_fraction, boxes_to_mask, check_boxes, paste, paste_masks

__all__ = ["Mix", "MIX_MODES", "ARMS"]

MIX_MODES = ("batch", "pair", "elem")
ARMS = ("mixup", "cutmix")  # timm's two arms; params["arm"] holds 0 (unmixed), 1 (mixup) or 2 (cutmix)


def _arm_alpha(name: str, value: Any) -> float:
    if not is_number(value) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be 0 (that arm off) or a finite number > 0 (Beta(alpha, alpha)), got "
                         f"{name}={value!r}")
    return float(value)


def _check_minmax(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, (tuple, list)) or len(value) != 2 or not all(is_number(v) for v in value)
            or not 0.0 < value[0] < value[1] <= 1.0):
        raise ValueError(f"cutmix_minmax must be None or (min, max) box-side ratios with 0 < min < max <= 1 "
                         f"(timm uses e.g. (0.2, 0.8)), got cutmix_minmax={value!r}")
    return float(value[0]), float(value[1])


class Mix(Mixer):
    """timm's ``Mixup`` (MixUp/CutMix switched per batch, pair or image), any registered method as an arm."""

    _repr_fields = ("mixup_alpha", "cutmix_alpha", "cutmix_minmax", "switch_prob", "mode", "correct_lam", "arms")
    _frozen_helpers = ()

    def __init__(self, mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0,
                 cutmix_minmax: tuple[float, float] | None = None, prob: float = 1.0, switch_prob: float = 0.5,
                 mode: str = "batch", correct_lam: bool = True, label_smoothing: float = 0.1,
                 num_classes: int = 1000, arms: Mapping[str, Mixer | str] | None = None,
                 generator: torch.Generator | None = None, target_format: str = "dense") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, target_format=target_format)
        self.mixup_alpha = _arm_alpha("mixup_alpha", mixup_alpha)
        self.cutmix_minmax = _check_minmax(cutmix_minmax)
        # timm forces cutmix_alpha = 1 with a min-max box: its lam then only picks the arm, the box sets the weight.
        self.cutmix_alpha = 1.0 if self.cutmix_minmax is not None else _arm_alpha("cutmix_alpha", cutmix_alpha)
        self.switch_prob = check_unit("switch_prob", switch_prob)
        self.mode = check_choice("mode", mode, MIX_MODES, " (timm's: one draw per batch, per mirrored pair or per "
                                                          "image)")
        if not isinstance(correct_lam, bool):
            raise TypeError(f"correct_lam must be a bool, got correct_lam={correct_lam!r}")
        self.correct_lam = correct_lam
        self.arms = torch.nn.ModuleDict(self._build_arms(arms))  # submodules: .to() moves their extractors
        self.active = tuple(k for k in ARMS if k in self.arms or getattr(self, f"{k}_alpha") > 0)
        if not self.active:
            raise ValueError("Mix needs an arm: give mixup_alpha > 0, cutmix_alpha > 0, cutmix_minmax, or arms=")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator  # the default draws of a call that passes none
        self.mixup_enabled = True  # timm's switch, set False by a loop at its mixup-off epoch
        # Per-pixel label maps can follow a paste, never a blend; a region exists only where every arm has one (a
        # blend changes every pixel); the label weights are a pair's (1 - lam, lam) unless an arm's rule is not.
        self.accepts_masks = all(self._arm(k).accepts_masks if k in self.arms else k == "cutmix" for k in self.active)
        self.has_region = all(self._arm(k).has_region if k in self.arms else k == "cutmix" for k in self.active)
        self.targets_sum_to_one = all(self._arm(k).targets_sum_to_one for k in self.arms)

    def _build_arms(self, arms: Mapping[str, Mixer | str] | None) -> dict[str, Mixer]:
        if arms is None:
            return {}
        if not isinstance(arms, Mapping) or not set(arms) <= set(ARMS):
            raise ValueError(f"arms must map timm's arms {ARMS} to a Mixer or a registered method name, e.g. "
                             f"arms={{'cutmix': 'attentive-cutmix'}}; got {arms!r}")
        built = {}
        for key, arm in arms.items():
            if isinstance(arm, str):
                method = registry.get(arm)
                arm = registry.make_mixer(arm, method.options(), num_classes=self.num_classes)
            if not isinstance(arm, Mixer) or isinstance(arm, Mix):
                raise TypeError(f"arms[{key!r}] must be a Mixer (not a Mix) or a registered method name, got "
                                f"{type(arm).__name__}")
            if arm.num_classes != self.num_classes:
                raise ValueError(f"arms[{key!r}] has num_classes={arm.num_classes} but Mix has "
                                 f"num_classes={self.num_classes}")
            built[key] = arm
        return built

    def _arm(self, key: str) -> Mixer:
        return cast(Mixer, self.arms[key])

    def _arm_items(self) -> list[tuple[str, Mixer]]:
        return [(key, self._arm(key)) for key in self.arms]

    def _reader(self) -> Mixer | None:
        """The arm that reads guidance maps (the first one), if any: it gets and checks the maps of a call."""
        return next((a for _, a in self._arm_items() if a.guidance_source != "none"), None)

    @property
    def guidance_source(self) -> str:  # type: ignore[override]
        reader = self._reader()
        return "none" if reader is None else reader.guidance_source

    def check_attention(self, attention: Any, images: torch.Tensor) -> torch.Tensor | None:
        reader = self._reader()
        return None if reader is None else reader.check_attention(attention, images)

    def guide(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              model: torch.nn.Module | None = None) -> torch.Tensor | None:
        reader = self._reader()
        return None if reader is None else reader.guide(images, labels, model=model)

    def draw_applies(self, generator: torch.Generator | None) -> bool:
        return self.mixup_enabled  # prob is drawn in make_params, per batch, pair or image as mode says

    def forward(self, images: Any, labels: Any = None, attention: Any = None, *, masks: Any = None,
                generator: torch.Generator | None = None, params: Any = None) -> Any:
        return super().forward(images, labels, attention, masks=masks,
                               generator=self.generator if generator is None else generator, params=params)

    # ----------------------------------------------------------------------------------------------- draws
    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        device = generator.device if generator is not None else torch.device("cpu")
        b = batch_size
        n = 1 if self.mode == "batch" else max(b // 2, 1) if self.mode == "pair" else b
        applies = torch.rand(n, generator=generator, device=device) < self.prob
        if len(self.active) == 2:
            use_cut = torch.rand(n, generator=generator, device=device) < self.switch_prob
        else:
            use_cut = torch.full((n,), self.active == ("cutmix",), device=device)
        lam = torch.ones(n, device=device)
        if "mixup" in self.active and "mixup" not in self.arms:
            lam = torch.where(use_cut, lam, beta_sample(self.mixup_alpha, n, generator))
        if "cutmix" in self.active and "cutmix" not in self.arms:
            lam = torch.where(use_cut, beta_sample(self.cutmix_alpha, n, generator), lam)
        arm = torch.where(applies, use_cut.long() + 1, 0)
        params = {"arm": arm, "lam": lam}
        if "cutmix" in self.active and "cutmix" not in self.arms:
            params["boxes"] = self._boxes(lam, n, height, width, generator)
        # One row per image: the batch's draw for every image, or pair i's for images i and B-1-i.
        index = torch.arange(b, device=device)
        rows = index.minimum(index.flip(0)).clamp_max(n - 1)  # elem: the image itself; batch: 0; pair: i or B-1-i
        params = {k: v.index_select(0, rows) for k, v in params.items()}
        if self.mode == "pair" and b % 2:
            params["arm"][b // 2] = 0  # the middle image of an odd batch has no pair
        params["perm"] = torch.arange(b - 1, -1, -1, device=device)  # timm's partner: x.flip(0)
        for key, sub in self._arm_items():
            drawn = sub.make_params(b, height, width, generator)
            drawn["perm"] = params["perm"]
            params.update({f"{key}.{k}": v for k, v in drawn.items()})
        return params

    def _boxes(self, lam: torch.Tensor, n: int, height: int, width: int,
               generator: torch.Generator | None) -> torch.Tensor:
        """timm's ``rand_bbox`` (or ``rand_bbox_minmax``) for ``n`` draws, as (n, 4) int64 (y0, y1, x0, x1)."""
        device = lam.device

        def uniform_int(low: torch.Tensor | int, high: torch.Tensor | int) -> torch.Tensor:  # in [low, high)
            span = torch.as_tensor(high, device=device) - low
            return low + (torch.rand(n, dtype=torch.float64, generator=generator, device=device)
                          * span.clamp_min(1)).long()

        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            cut_h = uniform_int(int(height * lo), int(height * hi))
            cut_w = uniform_int(int(width * lo), int(width * hi))
            y0, x0 = uniform_int(0, height - cut_h + 1), uniform_int(0, width - cut_w + 1)
            return torch.stack([y0, y0 + cut_h, x0, x0 + cut_w], dim=1)
        ratio = (1.0 - lam.to(torch.float64)).sqrt()
        cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
        cy, cx = uniform_int(0, height), uniform_int(0, width)
        return torch.stack([(cy - cut_h // 2).clamp(0, height), (cy + (cut_h + 1) // 2).clamp(0, height),
                            (cx - cut_w // 2).clamp(0, width), (cx + (cut_w + 1) // 2).clamp(0, width)], dim=1)

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        arm, lam = params["arm"], params["lam"]
        allowed = torch.tensor([0] + [ARMS.index(k) + 1 for k in self.active], device=arm.device)
        check_rows("arm", torch.isin(arm, allowed), arm, f"must hold 0 (unmixed) or an active arm's number "
                                                         f"{[ARMS.index(k) + 1 for k in self.active]}")
        check_rows("lam", (lam >= 0) & (lam <= 1), lam, "must hold weights in [0, 1]")
        if "boxes" in params:
            check_boxes(params["boxes"], height, width)
        for key, sub in self._arm_items():
            sub.check_params({k[len(key) + 1:]: v for k, v in params.items() if k.startswith(f"{key}.")},
                             height, width)

    # ----------------------------------------------------------------------------------------------- mixing
    def _arm_params(self, key: str, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k[len(key) + 1:]: v for k, v in params.items() if k.startswith(f"{key}.")}

    def _cut_weight(self, params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        if self.correct_lam or self.cutmix_minmax is not None:
            return box_area_fraction(params["boxes"], height, width)
        return 1.0 - params["lam"]

    def _run_arm(self, key: str, images: torch.Tensor, targets: torch.Tensor, params: dict[str, torch.Tensor],
                 attention: torch.Tensor | None, masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if key in self.arms:
            return self._arm(key).apply(images, targets, self._arm_params(key, params), attention, masks)
        perm, (h, w) = params["perm"], images.shape[-2:]
        if key == "mixup":
            weight = 1.0 - params["lam"]
            mixed = torch.lerp(images, images.index_select(0, perm), weight.to(images.dtype).view(-1, 1, 1, 1))
            return mixed, mix_targets(targets, perm, weight)
        pixel_mask = boxes_to_mask(params["boxes"], h, w)
        out = (paste(images, perm, pixel_mask), mix_targets(targets, perm, self._cut_weight(params, h, w)))
        return out + ((paste_masks(masks, perm, pixel_mask),) if masks is not None else ())

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        out: tuple[torch.Tensor, ...] = (images, targets) + ((masks,) if masks is not None else ())
        arm = params["arm"]
        for key in self.active:
            mixed = self._run_arm(key, images, targets, params, attention, masks)
            chosen = arm == ARMS.index(key) + 1
            out = tuple(torch.where(chosen.view(-1, *[1] * (new.ndim - 1)), new, old) for new, old in zip(mixed, out))
        return out

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor | None:
        """The pixels each image took from its partner (the chosen arm's region; none in a row left unmixed);
        ``None`` when an active arm blends whole images (MixUp), whose rows have no region."""
        if not self.has_region:
            return None
        found: torch.Tensor | None = None
        for key in self.active:
            if key in self.arms:
                region = self._arm(key).region(self._arm_params(key, params), height, width, attention)
            else:
                region = boxes_to_mask(params["boxes"], height, width) if key == "cutmix" else None
            if region is not None:
                region = region & (params["arm"] == ARMS.index(key) + 1).view(-1, 1, 1).to(region.device)
                found = region if found is None else found | region
        return found

    def _repr_value(self, key: str) -> str:
        if key == "arms":
            return "{" + ", ".join(f"{k!r}: {type(v).__name__}" for k, v in self._arm_items()) + "}"
        return super()._repr_value(key)

