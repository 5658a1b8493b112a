"""FMix against its definition: a binary mask of the top ``lam`` fraction of low-frequency Fourier noise (spectrum
``~ 1 / max(f, 1 / max(H, W)) ** 3``), ``lam ~ Beta(1, 1)``, the partner's pixels where it is on, exact area labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attentive_cutmix.mixers.fmix import FMix, _frequency_scale, fourier_noise

K = 10


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct(b: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, s, s).contiguous()
    return images, torch.arange(b) % K


def _neighbour_agreement(mask: torch.Tensor) -> float:
    """Share of horizontally and vertically adjacent pixel pairs on the same side of the mask."""
    return float(torch.cat([(mask[:, 1:] == mask[:, :-1]).flatten(), (mask[:, :, 1:] == mask[:, :, :-1]).flatten()])
                 .float().mean())


def test_the_mask_is_binary_its_area_is_the_label_weight_to_the_pixel():
    b, s = 64, 23
    images, labels = _distinct(b, s)
    mixer = FMix(K)
    params = mixer.make_params(b, s, s, _gen())
    mixed, targets = mixer(images, labels, params=params)
    partner = params["perm"]
    # every pixel is the image's own or its partner's, never a blend
    own, theirs = mixed == images, mixed == images[partner]
    assert (own | theirs).all()
    region = mixer.region(params, s, s)
    assert torch.equal(region, theirs.all(1))
    assert torch.equal(region.flatten(1).sum(1), params["pixels"])
    differ = labels[partner] != labels
    area = region.flatten(1).float().mean(1)
    assert torch.equal(targets[differ, labels[partner][differ]], area[differ])
    torch.testing.assert_close(targets.sum(1), torch.ones(b))


def test_the_mask_is_the_top_pixels_of_the_noise_and_their_count_follows_beta_1_1():
    s, b = 16, 4000
    mixer = FMix(K)
    params = mixer.make_params(b, s, s, _gen(5))
    noise = fourier_noise(params["spectrum"], s, s, 3.0)
    region = mixer.region(params, s, s)
    inside = torch.where(region, noise, torch.inf).flatten(1).amin(1)
    outside = torch.where(region, -torch.inf, noise).flatten(1).amax(1)
    assert (inside > outside).all()  # every pixel on is brighter than every pixel off
    frac = (params["pixels"].double() / (s * s)).numpy()
    # Beta(1, 1) is uniform on [0, 1]: Kolmogorov-Smirnov distance to it, 1% critical value 1.63 / sqrt(n)
    ecdf = np.arange(1, b + 1) / b
    assert np.abs(np.sort(frac) - ecdf).max() < 1.63 / np.sqrt(b) + 1 / (s * s)


def test_the_spectrum_decays_as_the_official_formula():
    h, w = 12, 9
    # ecs-vlc/FMix: freqs = sqrt(fx^2 + fy^2) over (fftfreq(h), fftfreq(w)[:w//2 + 1]); scale = 1 / max(f, 1/max)^d
    fy, fx = np.fft.fftfreq(h)[:, None], np.abs(np.fft.fftfreq(w)[: w // 2 + 1])[None, :]
    expected = 1.0 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1.0 / max(h, w)) ** 3
    torch.testing.assert_close(_frequency_scale(h, w, 3.0, torch.device("cpu")),
                               torch.tensor(expected, dtype=torch.float32))


def test_low_frequencies_dominate_the_mask_is_far_smoother_than_random_pixels():
    b, s = 256, 32
    smooth = FMix(K).region(FMix(K).make_params(b, s, s, _gen()), s, s)
    flat = FMix(K, decay_power=1e-3)  # ~white noise: the same ranking rule with a flat spectrum
    white = flat.region(flat.make_params(b, s, s, _gen()), s, s)
    # random pixels of the same areas
    scattered = torch.rand(b, s, s, generator=_gen(9)) < smooth.flatten(1).float().mean(1).view(-1, 1, 1)
    assert _neighbour_agreement(smooth) > 0.9
    assert _neighbour_agreement(white) < 0.7 and _neighbour_agreement(scattered) < 0.7


def test_bad_decay_power_is_refused_naming_it():
    for bad in (0.0, -3.0, float("nan"), "3"):
        with pytest.raises(ValueError, match=r"decay_power must be in \(0, 16\].*decay_power="):
            FMix(K, decay_power=bad)


def test_replayed_pixel_counts_outside_the_image_are_refused():
    images, labels = _distinct(4, 8)
    params = FMix(K).make_params(4, 8, 8, _gen())
    params["pixels"][2] = 65
    with pytest.raises(ValueError, match=r"params\['pixels'\] must hold pixel counts in \[0, 64\].*row 2"):
        FMix(K)(images, labels, params=params)
    params = FMix(K).make_params(4, 8, 8, _gen())
    params["spectrum"][1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"params\['spectrum'\] must hold finite Fourier coefficients.*row 1"):
        FMix(K)(images, labels, params=params)
