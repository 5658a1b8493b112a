"""SnapMix (Huang, Wang and Tao, AAAI 2021): a resized box of the partner, labels weighted by class activation maps.

Read from the official code, github.com/Shaoli-Huang/SnapMix ``utils/mixmethod.py`` (``get_spm``, ``snapmix``):

* The guidance is the class activation map of the **model being trained**, for each image's own label: its last
  feature map, ReLU'd, weighted by that class's classifier row plus its bias at every location, upsampled
  (bilinear) to the image, shifted by its minimum and normalised to sum 1 (``guide(images, labels, model=model)``).
* Two boxes of CutMix's size rule, each from its own ``λ ~ Beta(β, β)`` (area ``1 - λ``, uniform centre, clipped):
  the partner's *cut* box is resized (bilinear, ``align_corners=True``) into the image's *paste* box.
* Label weights from the maps: ``w_a = 1 - (own map's mass inside the paste box)``, ``w_b = (partner's map's mass
  inside its cut box)``. They need not sum to 1, and are kept so: the targets are ``w_a·y_a + w_b·y_b``, and since
  cross-entropy is linear in its targets, ``F.cross_entropy(logits, targets)`` equals the official
  ``w_a·CE(logits, y_a) + w_b·CE(logits, y_b)`` exactly. A pair of the same label gets ``w_a + w_b`` on *both*
  terms (the official ``lam_a[same] += lam_b[same]; lam_b[same] += lam_a[same]``, so twice the sum in all); a NaN
  weight (a constant map) falls back to the area, ``1 - box area`` and ``box area``; an empty box mixes nothing.
* The official defaults: ``prob=1``, ``β=5`` ("we used prob=1., beta=5 for SnapMix in most of the experiments",
  its README; its command line's generic ``--beta`` default is 1).

Beyond the official code, which draws one pair of boxes and one λ per batch, each sample draws its own (as our
CutMix does), batched: the resize of every sample's box into its own box is one ``grid_sample``. Its CAM forward
runs in eval mode (the official one runs the model in training mode, so BatchNorm uses and updates the batch's
statistics); partners are a derangement (the official ``randperm`` pairs about one image per batch with itself).
``masks=`` follow the pixels, the partner's resized with nearest sampling. ``guidance="shuffled"`` is the matched
control: each image's map is another image's (an independent derangement); boxes and the label rule unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..registry import Method, MixerOptions, option, register
from .base import LabelsGetter, beta_sample, check_alpha, check_attention_maps
from .geometry import box_area_fraction, boxes_to_mask, centred_boxes, check_boxes, uniform_centres
from .guidance import GUIDANCE_MODES, GuidedMixer, class_activation_maps, require_model

__all__ = ["SnapMix", "SnapMixOptions", "normalised_maps", "snapmix_weights", "resize_boxes"]

_EPS = 1e-8  # the official denominators' epsilon


def normalised_maps(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, h, w) maps -> (B, H, W) float32: upsampled (bilinear, ``align_corners=False``) where needed, shifted by
    each map's minimum and divided by its sum, as the official ``get_spm``; a constant map is NaN (0 / 0) there."""
    maps = maps.to(torch.float32)
    if maps.shape[-2:] != (height, width):
        maps = F.interpolate(maps.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    shifted = maps - maps.flatten(1).amin(1).view(-1, 1, 1)
    return shifted / shifted.sum((1, 2), keepdim=True)


def snapmix_weights(mass: torch.Tensor, perm: torch.Tensor, paste_mask: torch.Tensor, cut_mask: torch.Tensor,
                    same: torch.Tensor, area: torch.Tensor, mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_a, w_b)``: the official label weights of each image and its partner.

    ``mass`` (B, H, W) normalised maps; ``paste_mask``/``cut_mask`` (B, H, W): image ``i``'s paste box, and the box
    cut from its partner ``perm[i]`` (in the partner's frame); ``same`` (B,) bool: same label as the partner;
    ``area`` (B,) the paste box's
    area fraction; ``mixed`` (B,) bool: both boxes non-empty (otherwise ``(1, 0)``: nothing was pasted).
    """
    partner = mass.index_select(0, perm)
    w_a = 1 - (mass * paste_mask).sum((1, 2)) / (mass.sum((1, 2)) + _EPS)
    w_b = (partner * cut_mask).sum((1, 2)) / (partner.sum((1, 2)) + _EPS)
    w_a, w_b = torch.where(same, w_a + w_b, w_a), torch.where(same, w_b + w_a, w_b)
    area = area.to(w_a.dtype)
    w_a, w_b = torch.where(w_a.isnan(), 1 - area, w_a), torch.where(w_b.isnan(), area, w_b)
    return torch.where(mixed, w_a, torch.ones_like(w_a)), torch.where(mixed, w_b, torch.zeros_like(w_b))


def _source_coords(paste: torch.Tensor, cut: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) float64 source coordinate along one axis of every output pixel: inside the paste box
    ``[p0, p1)`` pixel ``p0 + j`` reads the cut box ``[c0, c1)`` at ``c0 + j * (n_c - 1) / (n_p - 1)``
    (``align_corners=True``, as ``F.interpolate``; 0 for a one-pixel box)."""
    (p0, p1), (c0, c1) = paste.double().unbind(1), cut.double().unbind(1)
    scale = torch.where(p1 - p0 > 1, (c1 - c0 - 1) / (p1 - p0 - 1).clamp_min(1), torch.zeros_like(p0))
    j = torch.arange(size, device=paste.device, dtype=torch.float64).view(1, -1) - p0.view(-1, 1)
    return (c0.view(-1, 1) + j * scale.view(-1, 1)).clamp(0, size - 1)


def resize_boxes(images: torch.Tensor, cut: torch.Tensor, paste: torch.Tensor,
                 masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each image's ``cut`` box resized (bilinear, ``align_corners=True``) onto its ``paste`` box, batched.

    Returns full (B, C, H, W) images whose pixels inside ``paste`` hold the resized box (elsewhere: unspecified),
    and the same for (B, H, W) ``masks`` with nearest sampling. One ``grid_sample`` for the batch.
    """
    b, _, h, w = images.shape
    sy, sx = _source_coords(paste[:, :2], cut[:, :2], h), _source_coords(paste[:, 2:], cut[:, 2:], w)
    # grid_sample's align_corners=True puts -1 and +1 on the first and last pixel centres.
    gy, gx = sy * (2 / max(h - 1, 1)) - 1, sx * (2 / max(w - 1, 1)) - 1
    grid = torch.stack([gx.view(b, 1, w).expand(b, h, w), gy.view(b, h, 1).expand(b, h, w)], dim=-1)
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()  # coordinates need fp32
    resized = F.grid_sample(work, grid.to(work.dtype), mode="bilinear", padding_mode="border",
                            align_corners=True).to(images.dtype)
    if masks is None:
        return resized, None
    ry, rx = sy.round().long().view(b, h, 1), sx.round().long().view(b, 1, w)
    return resized, masks.flatten(1).gather(1, (ry * w + rx).view(b, -1)).view(b, h, w)


class SnapMix(GuidedMixer):
    """SnapMix (Huang et al., AAAI 2021); see the module's docstring for the rule and where it departs from the code.

    ``maps = mixer.guide(images, labels, model=model); mixed, targets = mixer(images, labels, maps)``: ``guide`` runs
    one extra forward of the model (no grad, eval mode, flags restored) on the unmixed batch, as the model takes it.
    """

    _repr_fields = ("alpha", "guidance")
    targets_sum_to_one = False  # w_a + w_b need not be 1 (the official rule): check_mixer does not ask it
    guidance_source = "model"

    def __init__(self, num_classes: int, *, alpha: float = 5.0, guidance: str = "own", prob: float = 1.0,
                 label_smoothing: float = 0.0, labels_getter: str | LabelsGetter = "default") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, labels_getter=labels_getter)
        self.alpha = check_alpha(alpha)
        self.set_guidance(guidance)

    def guide(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              model: torch.nn.Module | None = None) -> torch.Tensor:
        """(B, H, W) class activation maps of ``images`` for their own ``labels``, normalised to sum 1 (a constant
        map comes back as zeros: finite, and read as the official code reads its NaN map)."""
        if labels is None:
            raise ValueError("SnapMix.guide needs labels: each image's map is that of its own class")
        cams = class_activation_maps(require_model(self, model), images, labels)
        return normalised_maps(cams, *images.shape[-2:]).nan_to_num(0.0)

    def check_attention(self, attention: Any, images: torch.Tensor) -> torch.Tensor:
        if attention is None:
            raise ValueError("SnapMix weighs its labels by the model's class activation maps: call "
                             "maps = mixer.guide(images, labels, model=model), then mixer(images, labels, maps)")
        if isinstance(attention, torch.Tensor) and attention.ndim != 3:
            raise ValueError(f"SnapMix reads one class activation map per image, (B, h, w), got shape "
                             f"{tuple(attention.shape)}")
        return check_attention_maps(attention, images)

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        # λ: image i's paste box ``boxes[i]``; then λ1: the box cut from its partner perm[i], ``cut_boxes[i]``.
        for key in ("boxes", "cut_boxes"):
            area = 1.0 - beta_sample(self.alpha, batch_size, generator)
            params[key] = centred_boxes(area, *uniform_centres(batch_size, height, width, generator), height, width)
        return self.draw_guidance(params, batch_size, generator)

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        check_boxes(params["boxes"], height, width)
        check_boxes(params["cut_boxes"], height, width, "cut_boxes")

    @staticmethod
    def _mixed_rows(params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        # The official code pastes only when both boxes have pixels.
        return (box_area_fraction(params["boxes"], height, width) > 0) & \
            (box_area_fraction(params["cut_boxes"], height, width) > 0)

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor:
        mixed = self._mixed_rows(params, height, width).view(-1, 1, 1)
        return boxes_to_mask(params["boxes"], height, width) & mixed

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        perm, paste, cut = params["perm"], params["boxes"], params["cut_boxes"]
        region = self.region(params, h, w)
        resized, resized_masks = resize_boxes(images.index_select(0, perm), cut, paste,
                                              None if masks is None else masks.index_select(0, perm))
        mixed = torch.where(region.unsqueeze(1), resized, images)
        mass = normalised_maps(self.guidance_of(self.needs_maps(attention), params), h, w)
        same = (targets == targets.index_select(0, perm)).all(1)
        w_a, w_b = snapmix_weights(mass, perm, boxes_to_mask(paste, h, w), boxes_to_mask(cut, h, w), same,
                                   box_area_fraction(paste, h, w), self._mixed_rows(params, h, w))
        out = (mixed, w_a.unsqueeze(1) * targets + w_b.unsqueeze(1) * targets.index_select(0, perm))
        if masks is None or resized_masks is None:
            return out
        return (*out, torch.where(region, resized_masks, masks))


# --------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class SnapMixOptions(MixerOptions):
    """SnapMix's options: β of both boxes (``--alpha``, the official default 5) and the guidance switch."""

    alpha: float = option(5.0, "Beta(alpha, alpha)", above=0.0)
    guidance: str = option("own", "own: each image's own guidance map; shuffled: the map of another image of the "
                                  "batch (the matched control)", choices=GUIDANCE_MODES, record_default=False)


def _build(options: SnapMixOptions, *, num_classes: int, label_smoothing: float, extractor: Any) -> SnapMix:
    return SnapMix(num_classes, alpha=options.alpha, guidance=options.guidance, prob=options.prob,
                   label_smoothing=label_smoothing)


register(Method("snapmix", "SnapMix", SnapMixOptions, build=_build, mixer=SnapMix,
                comparisons=(("cutmix", "SnapMix vs CutMix"),), order=60, example={"alpha": 1.0}))
