"""CutMix and MixUp against timm's ``Mixup`` and torchvision's v2 ``CutMix``/``MixUp``.

Peers draw one lambda per batch; ours draws one per sample. We compare the distribution of the
*kept* fraction (the weight on a sample's own label) and the soft-target semantics: the weight on
the own label must equal the fraction of the image's own pixels that survive (CutMix), or the
interpolation weight on its own pixels (MixUp).
"""
from __future__ import annotations

import numpy as np
import timm.data.mixup as timm_mixup
import torch
import torchvision.transforms.v2 as v2

from attentive_cutmix import CutMix, MixUp

K = 10
H = W = 32


def _distinct(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 3, H, W).contiguous() / (b + 1)
    return images, torch.arange(b) % K


def _own_pixel_fraction(mixed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (mixed == images).all(1).flatten(1).float().mean(1)


def _ours_kept(mixer, n_batches: int, b: int = K) -> np.ndarray:
    g = torch.Generator().manual_seed(0)
    images, labels = _distinct(b)
    kept = []
    for _ in range(n_batches):
        _, targets = mixer(images, labels, generator=g)
        kept.append(targets[torch.arange(b), labels])
    return torch.cat(kept).numpy()


def _ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.linspace(0, 1, 201)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / a.size
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())


def test_cutmix_lambda_distribution_matches_timm_and_torchvision():
    np.random.seed(0)
    torch.manual_seed(0)
    ours = _ours_kept(CutMix(num_classes=K, alpha=1.0), n_batches=240)
    timm = timm_mixup.Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="batch", correct_lam=True, label_smoothing=0.0,
                            num_classes=K)
    tv = v2.CutMix(num_classes=K, alpha=1.0)
    timm_kept, tv_kept = [], []
    for _ in range(1500):
        x, y = _distinct(2)
        _, t = timm(x.clone(), y)
        timm_kept.append(float(t[0, y[0]]))
        _, t = tv(x.clone(), y)
        tv_kept.append(float(t[0, y[0]]))
    timm_kept, tv_kept = np.array(timm_kept), np.array(tv_kept)
    # Kolmogorov-Smirnov distance; the critical value at alpha=0.001 for these sizes is ~0.05.
    assert _ks_distance(ours, timm_kept) < 0.06
    assert _ks_distance(ours, tv_kept) < 0.06
    assert abs(ours.mean() - timm_kept.mean()) < 0.03
    # A deliberately wrong distribution is told apart: the test can fail.
    assert _ks_distance(ours, np.random.beta(2.0, 2.0, size=ours.size)) > 0.06


def test_mixup_lambda_distribution_matches_peers():
    np.random.seed(1)
    torch.manual_seed(1)
    ours = _ours_kept(MixUp(num_classes=K, alpha=0.4), n_batches=240)
    timm = timm_mixup.Mixup(mixup_alpha=0.4, cutmix_alpha=0.0, mode="batch", label_smoothing=0.0, num_classes=K)
    tv = v2.MixUp(num_classes=K, alpha=0.4)
    timm_kept, tv_kept = [], []
    for _ in range(1500):
        x, y = _distinct(2)
        timm_kept.append(float(timm(x.clone(), y)[1][0, y[0]]))
        tv_kept.append(float(tv(x.clone(), y)[1][0, y[0]]))
    assert _ks_distance(ours, np.array(timm_kept)) < 0.06
    assert _ks_distance(ours, np.array(tv_kept)) < 0.06


def test_cutmix_soft_target_semantics():
    """Weight on the own label == fraction of own pixels kept (the semantics timm and torchvision share)."""
    b = 8
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        images, labels = _distinct(b)
        labels = torch.arange(b)  # all different, so label weights are unambiguous
        mixed, t = CutMix(num_classes=b, alpha=1.0)(images, labels, generator=g)
        kept = _own_pixel_fraction(mixed, images)
        assert torch.allclose(t[torch.arange(b), labels].float(), kept, atol=1e-6)
        assert torch.allclose(t.sum(1).float(), torch.ones(b), atol=1e-6)


def test_mixup_soft_target_semantics():
    """Pixel = w * own + (1 - w) * partner, with w the weight on the own label (as in timm and torchvision)."""
    b = 8
    images, _ = _distinct(b)
    labels = torch.arange(b)
    mixed, t = MixUp(num_classes=b, alpha=1.0)(images, labels, generator=torch.Generator().manual_seed(5))
    w = t[torch.arange(b), labels].float()
    partner = t.clone().float()
    partner[torch.arange(b), labels] = 0
    j = partner.argmax(1)
    has_partner = partner.max(1).values > 0
    expected = w.view(b, 1, 1, 1) * images + (1 - w.view(b, 1, 1, 1)) * images[j]
    assert has_partner.any()
    assert torch.allclose(mixed[has_partner], expected[has_partner], atol=1e-5)
