"""The paper's comparison methods: CutMix, MixUp and Cutout, with the same call as ``AttentiveCutMix``.

``mixed, targets = mixer(images, labels, attention=None, generator=None)``: ``attention`` is accepted
(and ignored) so that the four mixers are interchangeable in a training loop.
"""
from __future__ import annotations

import math

import torch

from .mixing import (_apply_prob, _check_images, _check_num_classes, _check_prob, _check_smoothing, _mix_targets, _paste,
                     one_hot_targets, pair_permutation)

__all__ = ["CutMix", "MixUp", "Cutout", "boxes_to_mask"]


def _begin(mixer, images: torch.Tensor, labels: torch.Tensor,
           generator: torch.Generator | None) -> tuple[torch.Tensor, bool]:
    """Checks, soft targets, and whether this batch is mixed at all (``prob``): the preamble of every baseline."""
    _check_images(images)
    targets = one_hot_targets(labels, mixer.num_classes, images.shape[0], label_smoothing=mixer.label_smoothing,
                              device=images.device)
    return targets, _apply_prob(mixer.prob, generator)


def _check_alpha(alpha: float) -> float:
    if not float(alpha) > 0.0 or not math.isfinite(float(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got alpha={alpha!r}")
    return float(alpha)


def _sample_beta(alpha: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    # Beta(a, a) from two Gammas, drawn from the given generator (torch.distributions has no generator argument).
    gen_device = generator.device if generator is not None else torch.device("cpu")
    conc = torch.full((2, n), alpha, dtype=torch.float64, device=gen_device)
    g = torch._standard_gamma(conc, generator=generator)
    return (g[0] / (g[0] + g[1])).to(torch.float32).cpu()


def _random_boxes(lam: torch.Tensor, height: int, width: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, 4) int boxes (y0, y1, x0, x1) of area ~ lam*H*W with a uniform centre, clipped to the image."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    ratio = torch.sqrt(lam.to(torch.float64))
    cut_h, cut_w = (height * ratio).long(), (width * ratio).long()
    cy = torch.randint(0, height, (lam.shape[0],), generator=generator, device=gen_device).cpu()
    cx = torch.randint(0, width, (lam.shape[0],), generator=generator, device=gen_device).cpu()
    y0, y1 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    x0, x1 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    return torch.stack([y0, y1, x0, x1], dim=1)


def boxes_to_mask(boxes: torch.Tensor, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(B, 4) boxes (y0, y1, x0, x1), half-open -> (B, H, W) bool mask."""
    boxes = boxes.to(device)
    ys = torch.arange(height, device=device).view(1, height, 1)
    xs = torch.arange(width, device=device).view(1, 1, width)
    y0, y1, x0, x1 = (boxes[:, k].view(-1, 1, 1) for k in range(4))
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


class CutMix:
    """CutMix (Yun et al., 2019): one random box per sample, ``lam ~ Beta(alpha, alpha)``.

    Each sample draws its own ``lam`` and box; ``lam`` is then corrected to the clipped box's real
    area (timm's ``correct_lam=True``, torchvision v2's behaviour).
    """

    def __init__(self, num_classes: int, *, alpha: float = 1.0, prob: float = 1.0, label_smoothing: float = 0.0) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.alpha = _check_alpha(alpha)
        self.prob = _check_prob(prob)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def __repr__(self) -> str:
        return f"CutMix(num_classes={self.num_classes}, alpha={self.alpha}, prob={self.prob}, label_smoothing={self.label_smoothing})"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        targets, mix = _begin(self, images, labels, generator)
        if not mix:
            return images.clone(), targets
        b, _, h, w = images.shape
        perm = pair_permutation(b, generator, images.device)
        # The sampled lam is the fraction *kept*, as in the paper; the pasted box has area 1 - lam.
        boxes = _random_boxes(1.0 - _sample_beta(self.alpha, b, generator), h, w, generator)
        y0, y1, x0, x1 = boxes.unbind(1)
        lam = ((y1 - y0) * (x1 - x0)).to(torch.float32) / (h * w)  # area of the clipped box: exact
        mixed = _paste(images, perm, boxes_to_mask(boxes, h, w, images.device))
        return mixed, _mix_targets(targets, perm, lam.to(images.device))


class MixUp:
    """MixUp (Zhang et al., 2018): ``x = (1 - lam) * x_i + lam * x_perm[i]`` with per-sample ``lam ~ Beta(alpha, alpha)``."""

    def __init__(self, num_classes: int, *, alpha: float = 1.0, prob: float = 1.0, label_smoothing: float = 0.0) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.alpha = _check_alpha(alpha)
        self.prob = _check_prob(prob)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def __repr__(self) -> str:
        return f"MixUp(num_classes={self.num_classes}, alpha={self.alpha}, prob={self.prob}, label_smoothing={self.label_smoothing})"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        targets, mix = _begin(self, images, labels, generator)
        if not mix:
            return images.clone(), targets
        b = images.shape[0]
        perm = pair_permutation(b, generator, images.device)
        lam = _sample_beta(self.alpha, b, generator).to(images.device)
        weight = lam.to(images.dtype).view(b, 1, 1, 1)
        mixed = torch.lerp(images, images.index_select(0, perm), weight)
        return mixed, _mix_targets(targets, perm, lam)


class Cutout:
    """Cutout (DeVries & Taylor, 2017): a ``size x size`` square per sample set to ``fill``; labels unchanged.

    The centre is uniform over the image and the square is clipped at the border, as in the original.
    """

    def __init__(self, num_classes: int, *, size: int = 16, fill: float = 0.0, prob: float = 1.0, label_smoothing: float = 0.0) -> None:
        self.num_classes = _check_num_classes(num_classes)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (side of the square in pixels), got size={size!r}")
        self.size = size
        self.fill = float(fill)
        self.prob = _check_prob(prob)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def __repr__(self) -> str:
        return f"Cutout(num_classes={self.num_classes}, size={self.size}, fill={self.fill}, prob={self.prob})"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        targets, mix = _begin(self, images, labels, generator)
        if not mix:
            return images.clone(), targets
        b, _, h, w = images.shape
        gen_device = generator.device if generator is not None else torch.device("cpu")
        cy = torch.randint(0, h, (b,), generator=generator, device=gen_device).cpu()
        cx = torch.randint(0, w, (b,), generator=generator, device=gen_device).cpu()
        half = self.size // 2
        boxes = torch.stack([(cy - half).clamp(0, h), (cy - half + self.size).clamp(0, h),
                             (cx - half).clamp(0, w), (cx - half + self.size).clamp(0, w)], dim=1)
        mask = boxes_to_mask(boxes, h, w, images.device).unsqueeze(1)
        return images.masked_fill(mask, self.fill), targets
