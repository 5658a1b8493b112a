"""What guided mixers share: the matched *shuffled-guidance* control, and the model being trained as a guide.

``guidance="shuffled"`` runs a guided method unchanged but reads the guidance map of *another* image of the batch,
drawn by an independent derangement (``params["guide_perm"]``): region sizes, the maps' centre bias and the label
rule stay exactly the same; only the link between an image and its own map is cut. With random cells (which also
removes the spatial prior) it splits a guided method's effect into *prior* and *per-image guidance*.

Guidance from the model being trained (``guidance_source == "model"``) reads the model through ``model_tap.py``
(its last feature map, its class activation maps: one extra forward, no grad, eval mode), re-exported here.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Mixer, check_choice, check_rows, pair_permutation
from .model_tap import class_activation_maps, model_feature_map, tap_classifier, unwrap_model

__all__ = ["GUIDANCE_MODES", "GuidedMixer", "check_guidance_mode", "require_model", "class_activation_maps",
           "model_feature_map", "tap_classifier", "unwrap_model"]

GUIDANCE_MODES = ("own", "shuffled")


def check_guidance_mode(value: Any) -> str:
    return check_choice("guidance", value, GUIDANCE_MODES, " (own: each image's own map; shuffled: the map of "
                                                           "another image of the batch, the matched control)")


def require_model(mixer: Mixer, model: Any) -> nn.Module:
    """``model`` for a mixer guided by the model being trained; a ``ValueError`` saying how to call it otherwise."""
    if not isinstance(model, nn.Module):
        got = "no model" if model is None else f"a {type(model).__name__}"
        raise ValueError(f"{type(mixer).__name__} is guided by the model being trained: call "
                         f"maps = mixer.guide(images, labels, model=model) with your nn.Module (got {got}), then "
                         "mixer(images, labels, maps)")
    return model


class GuidedMixer(Mixer):
    """A mixer that reads a guidance map per image, with the ``guidance="own"|"shuffled"`` switch.

    Subclasses call ``self.guidance_of(maps, params)`` wherever they read a map, and ``super().make_params`` last-but-
    not-least: the shuffle's derangement is drawn after the method's own draws, so ``"own"`` draws exactly what the
    method drew before the switch existed.
    """

    guidance = "own"

    def set_guidance(self, mode: Any) -> None:
        self.guidance = check_guidance_mode(mode)

    def draw_guidance(self, params: dict[str, torch.Tensor], batch_size: int,
                      generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Add ``guide_perm`` (an independent derangement) to ``params`` when the guidance is shuffled."""
        if self.guidance == "shuffled":
            params["guide_perm"] = pair_permutation(batch_size, generator)
        return params

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        if "guide_perm" in params:
            gp = params["guide_perm"]
            check_rows("guide_perm", (gp >= 0) & (gp < len(gp)), gp,
                       f"must hold image indices in [0, {len(gp)}) (the batch size)")

    def guidance_of(self, maps: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The map each image is guided by: its own, or (shuffled) that of image ``guide_perm[i]``."""
        if self.guidance == "shuffled":
            return maps.index_select(0, params["guide_perm"])
        return maps
