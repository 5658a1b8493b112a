"""Attentive CutMix, and what every batch mixer shares (checks, pairing, exact lambda, soft targets).

The paper's baselines (CutMix, MixUp, Cutout) live in ``baselines.py``. All four share one call: ``mixed, targets = mixer(images, labels, attention=None, generator=None)``.
Output image ``i`` is image ``i`` with content taken from partner ``perm[i]`` (a random pairing in
which no sample is its own partner), and target ``i`` is ``(1 - lam_i) * y_i + lam_i * y_perm[i]``,
where ``lam_i`` is the exact fraction of image ``i``'s pixels that came from the partner.
Masks and ``lam`` are computed in float32 whatever the image dtype; nothing loops over the batch.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "AttentiveCutMix", "one_hot_targets",
    "pair_permutation", "attention_to_grid", "top_cell_indices", "top_cells", "cell_bounds", "cells_to_pixel_mask",
]


# --------------------------------------------------------------------------- checks
def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating tensor (convert with .float() / ToDtype(scale=True)), got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B=0); give at least one image")


def _check_prob(prob: float) -> float:
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got prob={prob!r}")
    return float(prob)


def _check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got label_smoothing={label_smoothing!r}")
    return float(label_smoothing)


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got num_classes={num_classes!r}")
    return num_classes


def one_hot_targets(labels: torch.Tensor, num_classes: int, batch_size: int, *,
                    label_smoothing: float = 0.0, device: torch.device | None = None) -> torch.Tensor:
    """Validate ``labels`` (int64 (B,) or probabilities (B, num_classes)) and return float32 (B, num_classes)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    device = labels.device if device is None else device
    if labels.ndim == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"class-index labels must be an integer tensor, got dtype {labels.dtype}")
        if labels.shape[0] != batch_size:
            raise ValueError(f"labels has {labels.shape[0]} entries but images has batch size {batch_size}")
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}) (num_classes={num_classes}), got values in [{lo}, {hi}]")
        targets = F.one_hot(labels.long().to(device), num_classes).float()
    elif labels.ndim == 2:
        if labels.shape != (batch_size, num_classes):
            raise ValueError(f"probability labels must have shape (B, num_classes)=({batch_size}, {num_classes}), got {tuple(labels.shape)}")
        if not labels.is_floating_point():
            raise TypeError(f"probability labels must be floating, got dtype {labels.dtype}")
        targets = labels.to(device=device, dtype=torch.float32)
    else:
        raise ValueError(f"labels must have shape (B,) or (B, num_classes), got shape {tuple(labels.shape)}")
    if label_smoothing > 0:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return targets


def _mix_targets(targets: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    lam = lam.to(torch.float32).unsqueeze(1)
    return (1.0 - lam) * targets + lam * targets[perm]


def pair_permutation(batch_size: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Random partner index for each sample, never the sample itself when ``batch_size >= 2``.

    The paper gives every image patches from *another* image: a plain ``randperm`` leaves about one
    sample per batch paired with itself (unmixed). We walk a random ordering as one cycle instead.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(batch_size, generator=generator, device=gen_device)
    perm = torch.empty_like(order)
    perm[order] = order.roll(-1)
    return perm.to(device) if device is not None else perm


def _apply_prob(prob: float, generator: torch.Generator | None) -> bool:
    if prob >= 1.0:
        return True
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return bool(torch.rand((), generator=generator, device=gen_device) < prob)


def _paste(images: torch.Tensor, perm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``where(mask, images[perm], images)`` for a (B, H, W) mask, written into the permuted copy.

    Dense on purpose: one gather of whole images and one streaming select measured faster than
    gathering only the pasted pixels by index (CPU, 32 and 224 px; see BENCHMARKS.md).
    """
    src = images.index_select(0, perm)  # a plain row copy: much cheaper on CPU than advanced indexing
    return torch.where(mask.unsqueeze(1), src, images, out=src)


# Row segments shorter than this make one gather of segments slower than the dense select (BENCHMARKS.md).
_MIN_SEGMENT_BYTES = 64


def _paste_segments(images: torch.Tensor, perm: torch.Tensor, cells: torch.Tensor, grid_size: int) -> torch.Tensor:
    """``_paste`` for a grid that divides the image evenly: one ``index_select`` of cell-row segments.

    Viewed as rows of one cell width, every output row is a row of the image itself or, inside a
    pasted cell, the same row of the partner; gathering them writes the output in a single pass.
    ``cells`` holds each sample's pasted cell indices (B, N), row-major.
    """
    b, c, h, w = images.shape
    g, device = grid_size, images.device
    ch, cw = h // g, w // g
    per_image = c * h * g  # segments of width cw in one image
    r, col = (cells // g).view(b, -1, 1, 1), (cells % g).view(b, -1, 1, 1)
    channel, row = torch.arange(c, device=device).view(1, 1, c, 1), torch.arange(ch, device=device).view(1, 1, 1, ch)
    local = ((channel * h + r * ch + row) * g + col).flatten(1)  # (B, N*C*ch) segment ids inside the image
    source = torch.arange(b * per_image, device=device).view(b, per_image)
    source.scatter_(1, local, local + (perm * per_image).view(b, 1))
    return images.view(-1, cw).index_select(0, source.view(-1)).view_as(images)


# --------------------------------------------------------------------------- attentive cells
def _bounds(size: int, grid_size: int) -> list[int]:
    # floor(k * size / g + 1/2) in integer arithmetic: exact for every size, no float rounding.
    return [(2 * k * size + grid_size) // (2 * grid_size) for k in range(grid_size + 1)]


def cell_bounds(size: int, grid_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Pixel boundaries ``round(k * size / grid_size)`` for k = 0..grid_size (cells differ by at most 1 px)."""
    return torch.tensor(_bounds(size, grid_size), device=device)


def _cell_of_pixel(size: int, grid_size: int, device: torch.device | None) -> torch.Tensor:
    bounds = _bounds(size, grid_size)
    return torch.tensor([k for k in range(grid_size) for _ in range(bounds[k + 1] - bounds[k])], device=device)


def attention_to_grid(attention: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(B, h, w) or (B, C, h, w) attention -> (B, grid_size, grid_size) float32 cell scores.

    Channels are averaged (the channel aggregate, never a single channel); a map of another
    resolution is adaptively average-pooled onto the grid.
    """
    att = attention.to(torch.float32)
    if att.ndim == 4:
        att = att.mean(dim=1)
    if att.shape[-2:] != (grid_size, grid_size):
        att = F.adaptive_avg_pool2d(att.unsqueeze(1), grid_size).squeeze(1)
    return att


def top_cell_indices(scores: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, num_patches) row-major indices of the highest cells of (B, g, g) scores, best first.

    Ties go to the lower index (stable sort), so the choice is deterministic.
    """
    return torch.sort(scores.flatten(1), dim=1, descending=True, stable=True).indices[:, :num_patches]


def _top_cell_set(scores: torch.Tensor, num_patches: int) -> torch.Tensor:
    """The cells of ``top_cell_indices`` as a set (B, num_patches), in no particular order.

    ``topk`` is several times cheaper than a stable sort; its set is the same unless the
    num_patches-th and the next score tie, and only then do we pay for the stable sort.
    """
    flat = scores.flatten(1)
    if 0 < num_patches < flat.shape[1]:
        best = flat.topk(num_patches, dim=1, sorted=False)
        if bool((flat >= best.values.amin(1, keepdim=True)).sum(1).eq(num_patches).all()):
            return best.indices
    return top_cell_indices(scores, num_patches)


def top_cells(scores: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Boolean (B, g, g) mask of the ``num_patches`` highest cells per sample (see ``top_cell_indices``)."""
    b, g, _ = scores.shape
    cells = torch.zeros(b, g * g, dtype=torch.bool, device=scores.device)
    cells.scatter_(1, _top_cell_set(scores, num_patches), True)
    return cells.view(b, g, g)


def cells_to_pixel_mask(cells: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Expand a (B, g, g) cell mask to a (B, H, W) pixel mask using ``cell_bounds`` on each axis."""
    g, device = cells.shape[-1], cells.device
    return cells.index_select(2, _cell_of_pixel(width, g, device)).index_select(1, _cell_of_pixel(height, g, device))


# --------------------------------------------------------------------------- mixers
class AttentiveCutMix:
    """Attentive CutMix (Walawalkar et al., ICASSP 2020).

    Pastes the ``num_patches`` most attended cells of a ``grid_size x grid_size`` grid of the
    partner image onto the same locations of each image. Attention comes from ``attention=``
    (precomputed, e.g. an attention cache, in the images' frame) or from ``extractor`` run on the
    batch. ``lam`` per sample is the exact replaced-pixel fraction.
    """

    def __init__(self, num_classes: int, extractor: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 num_patches: int = 6, grid_size: int = 7, prob: float = 1.0, label_smoothing: float = 0.0) -> None:
        self.num_classes = _check_num_classes(num_classes)
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f"grid_size must be a positive int, got grid_size={grid_size!r}")
        if isinstance(num_patches, bool) or not isinstance(num_patches, int) or not 0 <= num_patches <= grid_size ** 2:
            raise ValueError(f"num_patches must be an int in [0, grid_size**2] = [0, {grid_size ** 2}], got num_patches={num_patches!r}")
        if extractor is not None and not callable(extractor):
            raise TypeError(f"extractor must be callable (e.g. a FeatureExtractor), got {type(extractor).__name__}")
        self.extractor = extractor
        self.num_patches = num_patches
        self.grid_size = grid_size
        self.prob = _check_prob(prob)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def __repr__(self) -> str:
        return (f"AttentiveCutMix(num_classes={self.num_classes}, num_patches={self.num_patches}, "
                f"grid_size={self.grid_size}, prob={self.prob}, label_smoothing={self.label_smoothing}, "
                f"extractor={'None' if self.extractor is None else type(self.extractor).__name__})")

    def pixel_mask(self, attention: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, H, W) bool mask of the top cells of each sample's own attention map."""
        return cells_to_pixel_mask(top_cells(attention_to_grid(attention, self.grid_size), self.num_patches), height, width)

    def _check_attention(self, attention: torch.Tensor, images: torch.Tensor) -> None:
        if not isinstance(attention, torch.Tensor):
            raise TypeError(f"attention must be a torch.Tensor, got {type(attention).__name__}")
        if attention.ndim not in (3, 4):
            raise ValueError(f"attention must have shape (B, h, w) or (B, C, h, w), got shape {tuple(attention.shape)}")
        if attention.shape[0] != images.shape[0]:
            raise ValueError(f"attention has batch size {attention.shape[0]} but images has {images.shape[0]}")
        if attention.device != images.device:
            raise ValueError(f"attention is on {attention.device} but images are on {images.device}; move it with attention.to(images.device)")
        if not attention.is_floating_point():
            raise TypeError(f"attention must be a floating tensor, got dtype {attention.dtype}")
        if not bool(torch.isfinite(attention).all()):
            raise ValueError("attention contains NaN or Inf values; check the extractor or the attention cache")
        h, w = images.shape[-2:]
        if self.grid_size > min(h, w):
            raise ValueError(f"grid_size={self.grid_size} does not fit images of size {h}x{w}: each cell needs at least one pixel")

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images(images)
        b, _, h, w = images.shape
        targets = one_hot_targets(labels, self.num_classes, b, label_smoothing=self.label_smoothing, device=images.device)
        if attention is None:
            if self.extractor is None:
                raise ValueError("AttentiveCutMix needs attention: pass attention=(B, h, w) maps or build it with extractor=FeatureExtractor(...)")
            attention = self.extractor(images)
            if not isinstance(attention, torch.Tensor) or attention.ndim != 4:
                shape = tuple(attention.shape) if isinstance(attention, torch.Tensor) else type(attention).__name__
                raise ValueError(f"extractor must return a spatial feature map (B, C, h, w), got {shape}")
        self._check_attention(attention, images)
        if self.num_patches == 0 or not _apply_prob(self.prob, generator):
            return images.clone(), targets
        g = self.grid_size
        perm = pair_permutation(b, generator, images.device)
        cells = _top_cell_set(attention_to_grid(attention, g), self.num_patches)[perm]  # the partner's map
        rows, cols = _bounds(h, g), _bounds(w, g)
        area = torch.tensor([[(rows[i + 1] - rows[i]) * (cols[j + 1] - cols[j]) for j in range(g)] for i in range(g)],
                            dtype=torch.float32, device=images.device).flatten()
        # Cells are disjoint, so the replaced fraction is their summed area: exact, per sample.
        lam = area[cells].sum(1) / (h * w)
        if h % g == 0 and w % g == 0 and (w // g) * images.element_size() >= _MIN_SEGMENT_BYTES and images.is_contiguous():
            mixed = _paste_segments(images, perm, cells, g)
        else:
            mask = torch.zeros(b, g * g, dtype=torch.bool, device=images.device).scatter_(1, cells, True)
            mixed = _paste(images, perm, cells_to_pixel_mask(mask.view(b, g, g), h, w))
        return mixed, _mix_targets(targets, perm, lam)
