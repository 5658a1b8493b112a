"""Even grid cells on any image size: cell ids -> pixel bounds, areas, masks and pastes.

A ``g x g`` grid on an ``H x W`` image puts its boundaries at ``round(k * size / g)`` on each axis, so cells
differ by at most one pixel and any ``g <= min(H, W)`` fits. Cells are numbered row-major (``row * g + col``).
Which cells a method picks, and how it weighs the labels, is the method's (``mixing.py``); this module only
says where the cells are and moves their pixels.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ._mixer import paste, paste_masks

__all__ = ["cell_bounds", "cell_mask", "cells_to_pixel_mask", "cell_area_fraction", "check_grid_fits", "paste_cells"]

# Row segments shorter than this make one gather of segments slower than the dense select (BENCHMARKS.md).
_MIN_SEGMENT_BYTES = 64


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


@lru_cache(maxsize=64)
def _cell_of_pixel(size: int, grid_size: int, device: torch.device) -> torch.Tensor:
    bounds = _bounds(size, grid_size)
    return torch.tensor([k for k in range(grid_size) for _ in range(bounds[k + 1] - bounds[k])], device=device)


@lru_cache(maxsize=64)
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
