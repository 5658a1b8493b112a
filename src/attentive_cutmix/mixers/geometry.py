"""Where a mixer's pixels go: boxes, even grid cells, and the paste that moves them.

Boxes are half-open ``(y0, y1, x0, x1)`` rows of int64; ``centred_boxes`` builds CutMix's box of a given area
around a given centre, clipped, and ``uniform_centres`` draws the centres: a method that guides where its box goes
(SaliencyMix) swaps the second and keeps the first.


A ``g x g`` grid on an ``H x W`` image puts its boundaries at ``round(k * size / g)`` on each axis, so cells
differ by at most one pixel and any ``g <= min(H, W)`` fits. Cells are numbered row-major (``row * g + col``).
Which cells or box a method picks, and how it weighs the labels, is the method's (its own file); this module
only says where the pixels are and moves them.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

from .base import Mixer, check_rows, to_device

__all__ = ["BoxMixer", "paste", "paste_masks", "boxes_to_mask", "box_area_fraction", "uniform_centres", "centred_boxes",
           "check_boxes", "cell_bounds", "cell_mask", "cells_to_pixel_mask", "cell_area_fraction", "check_grid_fits",
           "paste_cells"]

_T = TypeVar("_T")


def _cached(fn: Callable[..., _T]) -> Callable[..., _T]:
    """``lru_cache`` in eager mode; under ``torch.compile`` the plain function, which Dynamo traces into the graph
    (it warns on, and cannot keep, a cache)."""
    cached = functools.lru_cache(maxsize=64)(fn)

    @functools.wraps(fn)
    def call(*args: object) -> _T:
        return fn(*args) if torch.compiler.is_compiling() else cached(*args)

    return call


# Row segments shorter than this make one gather of segments slower than the dense select (BENCHMARKS.md).
_MIN_SEGMENT_BYTES = 64


def paste(images: torch.Tensor, perm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``where(mask, images[perm], images)`` for a (B, H, W) mask.

    Dense on purpose: one gather of whole images and one streaming select measured faster than
    gathering only the pasted pixels by index (CPU, 32 and 224 px; see BENCHMARKS.md). The select
    writes into the permuted copy unless autograd needs both inputs.
    """
    src = images.index_select(0, perm)  # a plain row copy: much cheaper on CPU than advanced indexing
    mask = mask.unsqueeze(1)
    if images.requires_grad and torch.is_grad_enabled():
        return torch.where(mask, src, images)
    return torch.where(mask, src, images, out=src)


def paste_masks(masks: torch.Tensor, perm: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """The dense-label counterpart of ``paste``: (B, H, W) label maps mixed with the same pixel mask."""
    return torch.where(pixel_mask, masks.index_select(0, perm), masks)


@_cached
def _arange(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def boxes_to_mask(boxes: torch.Tensor, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(B, 4) boxes (y0, y1, x0, x1), half-open -> (B, H, W) bool mask."""
    device = boxes.device if device is None else torch.device(device)
    boxes = to_device(boxes, device)
    ys, xs = _arange(height, device).view(1, height, 1), _arange(width, device).view(1, 1, width)
    y0, y1, x0, x1 = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def box_area_fraction(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B,) float32 exact fraction of an ``height x width`` image covered by each (y0, y1, x0, x1) box."""
    y0, y1, x0, x1 = boxes.unbind(1)
    return ((y1 - y0) * (x1 - x0)).to(torch.float32) / (height * width)


def uniform_centres(batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) row and column of a uniformly drawn pixel per sample, on the generator's device."""
    device = generator.device if generator is not None else torch.device("cpu")
    cy = torch.randint(0, height, (batch_size,), generator=generator, device=device)
    cx = torch.randint(0, width, (batch_size,), generator=generator, device=device)
    return cy, cx


def centred_boxes(area: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4) int64 boxes of CutMix's size rule around (cy, cx), clipped to the image.

    The box has sides ``H * sqrt(area)`` and ``W * sqrt(area)`` (truncated, as the reference code does), so its
    clipped area can be below ``area``: callers take λ from the box (``box_area_fraction``), never from ``area``.
    """
    ratio = torch.sqrt(area.to(torch.float64)).to(cy.device)
    cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
    y0, y1 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    x0, x1 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    return torch.stack([y0, y1, x0, x1], dim=1)


def check_boxes(boxes: torch.Tensor, height: int, width: int, name: str = "boxes") -> None:
    """Replayed ``params[name]`` must be half-open (y0, y1, x0, x1) boxes inside an ``height x width`` image."""
    y0, y1, x0, x1 = boxes.unbind(1)
    ok = (y0 >= 0) & (y0 <= y1) & (y1 <= height) & (x0 >= 0) & (x0 <= x1) & (x1 <= width)
    check_rows(name, ok, boxes, f"must hold boxes (y0, y1, x0, x1) with 0 <= y0 <= y1 <= {height} and "
                                   f"0 <= x0 <= x1 <= {width} (the images' height and width)")


def _bounds(size: int, grid_size: int) -> list[int]:
    # floor(k * size / g + 1/2) in integer arithmetic: exact for every size, no float rounding.
    return [(2 * k * size + grid_size) // (2 * grid_size) for k in range(grid_size + 1)]


def cell_bounds(size: int, grid_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Pixel boundaries ``round(k * size / grid_size)`` for k = 0..grid_size (cells differ by at most 1 px)."""
    return torch.tensor(_bounds(size, grid_size), device=device)


def check_grid_fits(grid_size: int, height: int, width: int) -> None:
    """Raise ``ValueError`` unless every cell of the grid gets at least one pixel."""
    if grid_size > min(height, width):
        raise ValueError(f"grid_size={grid_size} does not fit images of size {height}x{width}: each cell needs at "
                         "least one pixel")


@_cached
def _cell_of_pixel(size: int, grid_size: int, device: torch.device) -> torch.Tensor:
    bounds = _bounds(size, grid_size)
    return torch.tensor([k for k in range(grid_size) for _ in range(bounds[k + 1] - bounds[k])], device=device)


@_cached
def _cell_areas(height: int, width: int, grid_size: int, device: torch.device) -> torch.Tensor:
    rows, cols = _bounds(height, grid_size), _bounds(width, grid_size)
    return torch.tensor([(rows[i + 1] - rows[i]) * (cols[j + 1] - cols[j])
                         for i in range(grid_size) for j in range(grid_size)], dtype=torch.float32, device=device)


def cell_area_fraction(cells: torch.Tensor, height: int, width: int, grid_size: int) -> torch.Tensor:
    """(B,) exact fraction of the image covered by each sample's (B, N) distinct cell ids."""
    # Cells are disjoint, so the covered fraction is their summed area: exact, per sample.
    return _cell_areas(height, width, grid_size, cells.device)[cells].sum(1) / (height * width)


def cell_mask(cells: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(B, N) cell ids -> (B, g, g) boolean cell mask."""
    b, g = cells.shape[0], grid_size
    return torch.zeros(b, g * g, dtype=torch.bool, device=cells.device).scatter_(1, cells, True).view(b, g, g)


def cells_to_pixel_mask(cells: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Expand a (B, g, g) cell mask to a (B, H, W) pixel mask using ``cell_bounds`` on each axis."""
    g, device = cells.shape[-1], cells.device
    return cells.index_select(2, _cell_of_pixel(width, g, device)).index_select(1, _cell_of_pixel(height, g, device))


def _paste_segments(images: torch.Tensor, perm: torch.Tensor, cells: torch.Tensor, grid_size: int) -> torch.Tensor:
    """``paste`` for a grid that divides the image evenly: one ``index_select`` of cell-row segments.

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


def paste_cells(images: torch.Tensor, perm: torch.Tensor, cells: torch.Tensor, grid_size: int,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Paste the (B, N) cells ``cells[i]`` of image ``perm[i]`` onto image ``i``; the same for ``masks`` if given.

    Returns ``(mixed images, mixed masks or None)``. A grid that divides a contiguous batch into wide enough
    cells takes the one-gather segment path; any other grid (or a batch with masks) the dense masked select.
    Both give the same bits.
    """
    h, w = images.shape[-2:]
    segments = (h % grid_size == 0 and w % grid_size == 0 and images.is_contiguous() and masks is None
                and (w // grid_size) * images.element_size() >= _MIN_SEGMENT_BYTES)
    if segments:
        return _paste_segments(images, perm, cells, grid_size), None
    pixel_mask = cells_to_pixel_mask(cell_mask(cells, grid_size), h, w)
    mixed_masks = None if masks is None else paste_masks(masks, perm, pixel_mask)
    return paste(images, perm, pixel_mask), mixed_masks


class BoxMixer(Mixer):
    """A mixer whose ``params["boxes"]`` hold one (y0, y1, x0, x1) box per sample, which is its region."""

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        check_boxes(params["boxes"], height, width)

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor:
        return boxes_to_mask(params["boxes"], height, width)
