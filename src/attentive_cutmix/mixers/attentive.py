"""Attentive CutMix (Walawalkar et al., ICASSP 2020), and its random-cells control.

``mixed, targets = mixer(images, labels, attention=None, *, masks=None, generator=None)``.
Output image ``i`` is image ``i`` with the ``num_patches`` most attended cells of its partner ``perm[i]``
(a random pairing in which no sample is its own partner) pasted at the same locations; target ``i`` is
``(1 - lam_i) * y_i + lam_i * y_perm[i]`` where ``lam_i`` is the exact fraction of pixels replaced.
``RandomCells`` runs the same code with uniformly random cell scores: the same grid, the same number of
cells and the same exact lambda, no extractor. Attentive CutMix minus CutMix then splits into an area
part (random cells minus CutMix) and an attention part (Attentive CutMix minus random cells).
Two variants beyond the paper: ``label_weight="attention"`` weighs the labels by the attention mass pasted and
kept instead of the area, and ``temperature > 0`` samples the cells (Gumbel-top-k) instead of taking the top N.
The machinery every mixer shares lives in ``base.py``, the grid's geometry (cell ids -> pixels) in ``geometry.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..constants import is_number
from ..registry import Method, MixerOptions, option, register
from .base import (
    LabelsGetter,
    Mixer,
    channel_attention,
    check_attention_maps,
    check_int,
    check_rows,
    mix_targets,
)
from .cell_scores import (
    _ranking_keys,
    _standardised,
    attention_mass,
    attention_mass_lam,
    attention_to_grid,
    gumbel_noise,
    top_cells,
)
from .geometry import cell_area_fraction, cell_mask, cells_to_pixel_mask, check_grid_fits, paste_cells
from .guidance import GUIDANCE_MODES, GuidedMixer, model_feature_map, require_model

__all__ = ["AttentiveCutMix", "RandomCells", "LABEL_WEIGHTS", "ATTENTION_SOURCES", "CellOptions", "AttentiveOptions"]

LABEL_WEIGHTS = ("area", "attention")
ATTENTION_SOURCES = ("extractor", "self")


# --------------------------------------------------------------------------- mixers
class AttentiveCutMix(GuidedMixer):
    """Attentive CutMix (Walawalkar et al., ICASSP 2020).

    Pastes the ``num_patches`` most attended cells of a ``grid_size x grid_size`` grid of the
    partner image onto the same locations of each image. Attention comes from ``attention=``
    (precomputed, e.g. an attention cache, in the images' frame) or from ``extractor`` run on the
    batch. ``lam`` per sample is the exact replaced-pixel fraction.

    Beyond the paper (both off by default, which is the paper's method bit for bit):
    ``label_weight="attention"`` weighs the labels by attention mass (``attention_mass_lam``) instead of
    area; ``temperature=tau > 0`` samples the cells without replacement with probability proportional to
    ``softmax(z / tau)``, ``z`` the image's standardised cell scores (Gumbel-top-k, noise from ``generator``):
    ``tau -> 0`` is the top-N choice, ``tau -> inf`` uniform subsets (the random-cells distribution).
    ``guidance="shuffled"`` is the matched control: each image's cells are chosen on the map of another image of the
    batch (an independent derangement), everything else unchanged.
    ``attention_source="self"`` takes the maps from the model being trained instead of a frozen extractor: the
    channel mean of its own last feature map on the unmixed batch (one extra forward, no grad, eval mode), got with
    ``maps = mixer.guide(images, labels, model=model)`` and passed as ``mixer(images, labels, maps)``.
    """

    _repr_fields: tuple[str, ...] = ("num_patches", "grid_size", "label_weight", "temperature", "guidance")
    attention_source = "extractor"

    @property
    def guidance_source(self) -> str:  # type: ignore[override]
        return "model" if self.attention_source == "self" else "attention"

    def __init__(self, num_classes: int, extractor: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 num_patches: int = 6, grid_size: int = 7, label_weight: str = "area", temperature: float = 0.0,
                 guidance: str = "own", attention_source: str = "extractor", prob: float = 1.0,
                 label_smoothing: float = 0.0, labels_getter: str | LabelsGetter = "default",
                 target_format: str = "dense") -> None:
        super().__init__(num_classes, prob=prob, label_smoothing=label_smoothing, labels_getter=labels_getter,
                         target_format=target_format)
        self.set_guidance(guidance)
        if attention_source not in ATTENTION_SOURCES:
            raise ValueError(f"attention_source must be one of {ATTENTION_SOURCES} (extractor: a frozen extractor's or "
                             "a cache's maps; self: the model being trained, via guide(images, labels, model=model)), "
                             f"got attention_source={attention_source!r}")
        if attention_source == "self" and extractor is not None:
            raise ValueError("attention_source='self' takes its maps from the model being trained, so extractor= "
                             "would be ignored; drop extractor= or use attention_source='extractor'")
        self.attention_source = attention_source
        self.grid_size = check_int("grid_size", grid_size, minimum=1)
        self.num_patches = check_int("num_patches", num_patches, minimum=0, maximum=grid_size ** 2,
                                     want=f"an int in [0, grid_size**2] = [0, {grid_size ** 2}]")
        if label_weight not in LABEL_WEIGHTS:
            raise ValueError(f"label_weight must be one of {LABEL_WEIGHTS} (area: the paper's pasted-area fraction; "
                             f"attention: the attention mass pasted and kept), got label_weight={label_weight!r}")
        self.label_weight = label_weight
        if not is_number(temperature) or not 0 <= temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0 (0: the top cells, the paper's choice), "
                             f"got temperature={temperature!r}")
        self.temperature = float(temperature)
        if extractor is not None and not callable(extractor):
            raise TypeError(f"extractor must be callable (e.g. a FeatureExtractor), got {type(extractor).__name__}")
        self.extractor = extractor

    def __repr__(self) -> str:
        if self.attention_source == "self":
            return super().__repr__()[:-1] + ", attention_source='self')"
        extractor = "None" if self.extractor is None else type(self.extractor).__name__
        return super().__repr__()[:-1] + f", extractor={extractor})"

    def pixel_mask(self, attention: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, H, W) bool mask of the top cells of each sample's own attention map."""
        return cells_to_pixel_mask(top_cells(attention_to_grid(attention, self.grid_size), self.num_patches),
                                   height, width)

    def check_attention(self, attention: Any, images: torch.Tensor) -> torch.Tensor | None:
        check_grid_fits(self.grid_size, *images.shape[-2:])
        if attention is None:
            if self.attention_source == "self":
                raise ValueError(f"{self._needs_attention_why()} with attention_source='self' reads the model's own "
                                 "maps: call maps = mixer.guide(images, labels, model=model), then "
                                 "mixer(images, labels, maps)")
            if self.extractor is None:
                raise ValueError(f"{self._needs_attention_why()} needs attention: pass attention=(B, h, w) maps or "
                                 "build it with extractor=load_extractor(...)")
            attention = self.extractor(images)
            if not isinstance(attention, torch.Tensor) or attention.ndim != 4:
                shape = tuple(attention.shape) if isinstance(attention, torch.Tensor) else type(attention).__name__
                raise ValueError(f"extractor must return a spatial feature map (B, C, h, w), got {shape}")
        return check_attention_maps(attention, images)

    def _needs_attention_why(self) -> str:
        return type(self).__name__

    def guide(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              model: torch.nn.Module | None = None) -> torch.Tensor | None:
        """The channel-mean map of ``images``: of the model being trained for ``attention_source="self"`` (the
        model's input: one extra forward, no grad, eval mode), else of the extractor (``None`` without one: pass maps
        yourself)."""
        if self.attention_source == "self":
            return channel_attention(model_feature_map(require_model(self, model), images))
        if self.extractor is None or not self.reads_attention:
            return None
        return channel_attention(self.extractor(images))

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        if self.temperature > 0:  # tau = 0 draws nothing beyond the pairing: the paper's method, bit for bit
            params["gumbel"] = gumbel_noise((batch_size, self.grid_size ** 2), generator)
        return self.draw_guidance(params, batch_size, generator)

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        if "gumbel" in params:
            gumbel = params["gumbel"]
            check_rows("gumbel", torch.isfinite(gumbel).all(1), gumbel, "must hold finite Gumbel noise")

    def choose_cells(self, grid: torch.Tensor | None, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, num_patches) cells of each sample's own (B, g*g) grid scores: the top ones, or sampled."""
        grid = self.needs_maps(grid)
        if self.temperature > 0:
            # Gumbel-top-k: the top k of log-weights plus Gumbel noise are k draws without replacement.
            keys = _standardised(grid) / self.temperature + params["gumbel"].to(grid.dtype)
            return keys.topk(self.num_patches, dim=1, sorted=False).indices
        return _ranking_keys(grid).topk(self.num_patches, dim=1, sorted=False).indices

    def partner_cells(self, params: dict[str, torch.Tensor],
                      attention: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(grid scores (B, g*g) or None, cells (B, num_patches))``: the cells image ``i`` receives, which are its
        partner's chosen cells, at the same locations."""
        grid = None if attention is None else attention_to_grid(attention, self.grid_size).flatten(1)
        guide = None if grid is None else self.guidance_of(grid, params)
        return grid, self.choose_cells(guide, params).index_select(0, params["perm"])

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor:
        if attention is None and self.reads_attention:
            raise ValueError(f"{self._needs_attention_why()}.region needs the attention maps the call used: pass "
                             "attention=(B, h, w) maps")
        _, cells = self.partner_cells(params, attention)
        return cells_to_pixel_mask(cell_mask(cells, self.grid_size), height, width)

    @property
    def reads_attention(self) -> bool:
        """Whether a call reads attention maps (for its cells or its labels)."""
        return True

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        g, perm = self.grid_size, params["perm"]
        if self.num_patches == 0:
            return (images.clone(), targets) + ((masks.clone(),) if masks is not None else ())
        grid, cells = self.partner_cells(params, attention)
        h, w = images.shape[-2:]
        lam = cell_area_fraction(cells, h, w, g)
        if self.label_weight == "attention":
            lam = attention_mass_lam(attention_mass(self.needs_maps(grid)), perm, cells, lam)
        mixed, mixed_masks = paste_cells(images, perm, cells, g, masks)
        out = (mixed, mix_targets(targets, perm, lam))
        return out if mixed_masks is None else (*out, mixed_masks)


class RandomCells(AttentiveCutMix):
    """The control for Attentive CutMix: ``num_patches`` cells of the grid chosen uniformly at random.

    The same grid, the same number of cells pasted at the same locations and the same exact per-sample
    ``lam`` as Attentive CutMix; only the cell scores differ (uniform noise from ``generator``, no extractor).
    ``label_weight="attention"`` weighs the labels by attention mass as ``AttentiveCutMix`` does (placement
    random, labels from attention): it then needs maps, from ``attention=`` or ``extractor``.
    """

    _repr_fields = ("num_patches", "grid_size", "label_weight")

    @property
    def guidance_source(self) -> str:  # type: ignore[override]
        return "attention" if self.label_weight == "attention" else "none"

    def __init__(self, num_classes: int, *, num_patches: int = 6, grid_size: int = 7, label_weight: str = "area",
                 extractor: Callable[[torch.Tensor], torch.Tensor] | None = None, prob: float = 1.0,
                 label_smoothing: float = 0.0, labels_getter: str | LabelsGetter = "default",
                 target_format: str = "dense") -> None:
        super().__init__(num_classes, extractor, num_patches=num_patches, grid_size=grid_size,
                         label_weight=label_weight, prob=prob, label_smoothing=label_smoothing,
                         labels_getter=labels_getter, target_format=target_format)
        if extractor is not None and label_weight != "attention":
            raise ValueError("RandomCells reads attention only for label_weight='attention'; drop extractor= or set "
                             "label_weight='attention'")

    def __repr__(self) -> str:
        return Mixer.__repr__(self)

    def _needs_attention_why(self) -> str:
        return "RandomCells(label_weight='attention')"

    def check_attention(self, attention: Any, images: torch.Tensor) -> torch.Tensor | None:
        if self.label_weight == "attention":
            return super().check_attention(attention, images)
        check_grid_fits(self.grid_size, *images.shape[-2:])
        return None  # accepted and ignored, so the mixers stay interchangeable in a loop

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        device = generator.device if generator is not None else torch.device("cpu")
        # i.i.d. scores make every set of num_patches cells equally likely.
        params["scores"] = torch.rand(batch_size, self.grid_size ** 2, generator=generator, device=device)
        return params

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        scores = params["scores"]
        check_rows("scores", torch.isfinite(scores).all(1), scores, "must hold finite cell scores")

    def choose_cells(self, grid: torch.Tensor | None, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return _ranking_keys(params["scores"]).topk(self.num_patches, dim=1, sorted=False).indices

    @property
    def reads_attention(self) -> bool:
        return self.label_weight == "attention"


# --------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class CellOptions(MixerOptions):
    """The grid methods' options (``--num-patches``, ``--grid-size``, ``--label-weight``)."""

    num_patches: int = option(6, "cells pasted", minimum=0)
    grid_size: int = option(7, "grid side", minimum=1, limit=256)
    # Beyond the paper; its default is the paper's choice and is not recorded, so earlier cell ids stay valid.
    label_weight: str = option("area", "label weights by pasted area (the paper) or by the attention mass pasted and "
                                       "kept (needs attention maps)", choices=LABEL_WEIGHTS, record_default=False)

    def check(self) -> None:
        g = self.grid_size
        if self.num_patches > g ** 2:
            raise ValueError(f"num_patches={self.num_patches} is more than the {g}x{g} grid's {g ** 2} cells; lower "
                             "--num-patches or raise --grid-size")

    def cell_kwargs(self) -> dict[str, Any]:
        return dict(num_patches=self.num_patches, grid_size=self.grid_size, label_weight=self.label_weight,
                    prob=self.prob)


@dataclass(frozen=True)
class AttentiveOptions(CellOptions):
    """Attentive CutMix's options: the grid's, and how its cells are chosen (``--cell-temperature``)."""

    cell_temperature: float = option(0.0, "0 pastes the top cells; > 0 samples them, with probability ~ "
                                          "softmax(standardised score / T) (Gumbel-top-k)", minimum=0.0,
                                     record_default=False)
    guidance: str = option("own", "own: each image's own guidance map; shuffled: the map of another image of the "
                                  "batch (the matched control)", choices=GUIDANCE_MODES, record_default=False)
    attention_source: str = option("extractor", "extractor: a frozen extractor's (or a cache's) maps; self: the model "
                                                "being trained, its own last feature map on the unmixed batch",
                                   choices=ATTENTION_SOURCES, record_default=False)


def _attentive(options: AttentiveOptions, *, num_classes: int, label_smoothing: float,
               extractor: Callable[[torch.Tensor], torch.Tensor] | None) -> AttentiveCutMix:
    return AttentiveCutMix(num_classes, extractor, temperature=options.cell_temperature, guidance=options.guidance,
                           attention_source=options.attention_source, label_smoothing=label_smoothing,
                           **options.cell_kwargs())


def _random_cells(options: CellOptions, *, num_classes: int, label_smoothing: float,
                  extractor: Callable[[torch.Tensor], torch.Tensor] | None) -> RandomCells:
    return RandomCells(num_classes, extractor=extractor, label_smoothing=label_smoothing, **options.cell_kwargs())


register(Method("random-cells", "Random cells", CellOptions, build=_random_cells, mixer=RandomCells,
                needs_attention=lambda options: options.label_weight == "attention",
                attention_condition="--label-weight attention",
                comparisons=(("cutmix", "area part: random cells vs CutMix"),), variant_reference=True, demo=True,
                order=40, example={"num_patches": 3, "grid_size": 4}))
register(Method("attentive-cutmix", "Attentive CutMix", AttentiveOptions, build=_attentive, mixer=AttentiveCutMix,
                needs_attention=lambda options: options.attention_source != "self",
                attention_condition="--attention-source extractor",
                comparisons=(("cutmix", "Attentive CutMix vs CutMix"),
                             ("random-cells", "attention part: Attentive CutMix vs random cells")),
                variant_reference=True, demo=True, order=50, example={"num_patches": 3, "grid_size": 4}))
