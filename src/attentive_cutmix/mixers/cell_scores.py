"""How grid cells are scored and chosen from attention maps: the maps pooled onto the grid, the deterministic top-N,
Gumbel-top-k sampling at a temperature, and attention mass as a distribution over cells.

Shared by Attentive CutMix (``attentive.py``) and the analyses; scale-free where it matters (a map's scale never
changes which cells are chosen).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import channel_attention
from .geometry import cell_mask

__all__ = ["attention_to_grid", "top_cell_indices", "top_cells", "gumbel_noise", "attention_mass",
           "attention_mass_lam"]


def attention_to_grid(attention: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(B, h, w) or (B, C, h, w) attention -> (B, grid_size, grid_size) float32 cell scores.

    Channels are averaged (the channel aggregate, never a single channel); a map of another
    resolution is adaptively average-pooled onto the grid.
    """
    att = channel_attention(attention)
    if att.shape[-2:] != (grid_size, grid_size):
        att = F.adaptive_avg_pool2d(att.unsqueeze(1), grid_size).squeeze(1)
    return att


def _ranking_keys(scores: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering (B, n) float scores by value, then by *lower* index on ties.

    A float32's bits, with the magnitude bits flipped for negatives, order like the floats themselves; the
    key packs that order with the reversed cell index, so one ``topk`` gives the stable-sort answer
    without a tie check that would need the host.
    """
    s = scores.to(torch.float32) + 0.0  # -0.0 -> +0.0: equal scores get equal keys
    bits = s.view(torch.int32)
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()
    n = s.shape[1]
    return ordered * n + (n - 1 - torch.arange(n, device=s.device))


def top_cell_indices(scores: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, num_patches) row-major indices of the highest cells of (B, g, g) scores, best first.

    Ties go to the lower index, so the choice is deterministic.
    """
    return _ranking_keys(scores.flatten(1)).topk(num_patches, dim=1).indices


def top_cells(scores: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Boolean (B, g, g) mask of the ``num_patches`` highest cells per sample (see ``top_cell_indices``)."""
    return cell_mask(top_cell_indices(scores, num_patches), scores.shape[-1])


def _unit_scale(scores: torch.Tensor) -> torch.Tensor:
    """(B, n) scores divided per row by the power of two at or above their largest magnitude, into [-1, 1].

    The rules that read a map's cells (top-N, standardising, attention mass) do not depend on its scale, but their
    sums overflow float32 for maps above ~1e19 (squares) or ~1e37 (sums). A power of two scales exactly: for every
    map that did not overflow before, the results are bit for bit the same.
    """
    _, exponent = torch.frexp(scores.abs().amax(1, keepdim=True))
    return torch.ldexp(scores, -exponent)


def _standardised(scores: torch.Tensor) -> torch.Tensor:
    """Per-row (x - mean) / std of (B, n) scores; 0 where a row is constant (no preference, no NaN). Scale-free:
    maps of any magnitude give the same result."""
    scores = _unit_scale(scores)
    centred = scores - scores.mean(1, keepdim=True)
    std = centred.square().mean(1, keepdim=True).sqrt()
    return torch.where(std > 0, centred / std.clamp_min(torch.finfo(scores.dtype).tiny), torch.zeros_like(centred))


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel draws ``-log(-log U)`` on the generator's device (U clamped away from 0: always finite)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=device)
    return -(-u.clamp_min(torch.finfo(u.dtype).tiny).log()).log()


def attention_mass(grid_scores: torch.Tensor) -> torch.Tensor:
    """(B, n) grid scores -> each image's attention as a distribution over its cells.

    ``p = (s - min s) / sum(s - min s)``: shifting by the minimum makes any map (negative means included) a
    mass, and the least attended cell carries none; a constant map has no preference, so it is uniform. Scale-free:
    maps of any magnitude give the same mass.
    """
    grid_scores = _unit_scale(grid_scores)
    shifted = grid_scores - grid_scores.amin(1, keepdim=True)
    total = shifted.sum(1, keepdim=True)
    uniform = torch.full_like(shifted, 1.0 / shifted.shape[1])
    return torch.where(total > 0, shifted / total.clamp_min(torch.finfo(shifted.dtype).tiny), uniform)


def attention_mass_lam(mass: torch.Tensor, perm: torch.Tensor, cells: torch.Tensor,
                       area_lam: torch.Tensor) -> torch.Tensor:
    """Partner weight per sample when labels follow attention mass instead of area.

    ``mass`` (B, n): each image's cell distribution (``attention_mass``); ``cells`` (B, N): the cells pasted
    onto image ``i`` from ``perm[i]``. The partner's share is the attention it contributed,
    ``w_p = sum_S p_perm[i]``; the image keeps ``w_o = 1 - sum_S p_i``; the partner weight is
    ``w_p / (w_o + w_p)``, and the area fraction where both are 0.
    """
    w_p = mass.index_select(0, perm).gather(1, cells).sum(1)
    w_o = (1.0 - mass.gather(1, cells).sum(1)).clamp_min(0.0)  # rounding can take a full sum past 1
    total = w_p + w_o
    return torch.where(total > 0, w_p / total.clamp_min(torch.finfo(total.dtype).tiny), area_lam.to(total.dtype))


