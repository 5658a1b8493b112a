"""FMix (Harris et al., 2020, arXiv:2002.12047): a binary mask cut from low-frequency Fourier noise.

Per sample: a complex spectrum of i.i.d. normal coefficients, each frequency ``f`` scaled by ``1 / max(f, 1 / max(H,
W)) ** decay_power`` (``decay_power = 3``, the paper's and the official code's default), is inverted to a grey-scale
image (``torch.fft.irfftn``); ``lam ~ Beta(alpha, alpha)`` (``alpha = 1``) and the ``ceil(lam * H * W)`` or
``floor(lam * H * W)`` brightest pixels (each with probability 1/2, as the official ``binarise_mask``) form the
mask. Output ``i`` is image ``i`` with its partner's pixels where the mask is 1, the same convention as CutMix here,
and the partner's label weight is the mask's exact area fraction. ``lam`` is symmetric, so which side of the mask is
called 1 does not change the distribution of the mix; the official code labels the *kept* side with lam.

As in the official code (ecs-vlc/FMix ``fmix.py``: ``fftfreqnd``, ``get_spectrum``, ``make_low_freq_image``,
``binarise_mask``) the mask is hard (its ``max_soft=0`` default); unlike it, every sample draws its own lam and mask
(the official code draws one per batch). The spectrum is drawn in ``make_params``; the inverse FFT and the per-row
ranking run batched in ``apply`` on the images' device.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from ..constants import is_number
from ..registry import Method, option, register
from .base import BetaMixer, BetaOptions, LabelsGetter, beta_sample, check_rows, mix_targets
from .geometry import paste, paste_masks

__all__ = ["FMix", "FMixOptions", "fourier_noise", "top_pixels"]


@lru_cache(maxsize=16)
def _frequency_scale(height: int, width: int, decay_power: float, device: torch.device) -> torch.Tensor:
    """(H, W//2 + 1) float32 amplitude of each rfft frequency: ``1 / max(|f|, 1 / max(H, W)) ** decay_power``."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.rfftfreq(width, dtype=torch.float64).view(1, -1)
    freqs = (fx * fx + fy * fy).sqrt()
    scale: torch.Tensor = freqs.clamp_min(1.0 / max(height, width)).pow(-decay_power).to(torch.float32).to(device)
    return scale


def fourier_noise(spectrum: torch.Tensor, height: int, width: int, decay_power: float) -> torch.Tensor:
    """(B, H, W) low-frequency grey-scale images from (B, H, W//2 + 1, 2) standard normal coefficients."""
    scale = _frequency_scale(height, width, float(decay_power), spectrum.device)
    coefficients = torch.complex(spectrum[..., 0], spectrum[..., 1]) * scale
    noise: torch.Tensor = torch.fft.irfftn(coefficients, s=(height, width), dim=(-2, -1))
    return noise


def top_pixels(noise: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the ``pixels[i]`` highest values of each (H, W) ``noise[i]`` (exactly that many)."""
    b, h, w = noise.shape
    order = noise.reshape(b, h * w).argsort(dim=1, descending=True, stable=True)
    chosen = torch.arange(h * w, device=noise.device).view(1, -1) < pixels.view(-1, 1)
    return torch.zeros_like(chosen).scatter_(1, order, chosen).view(b, h, w)


class FMix(BetaMixer):
    """FMix: per sample, the partner's pixels where a binarised low-frequency Fourier noise image is on."""

    _repr_fields = ("alpha", "decay_power")

    def __init__(self, num_classes: int, *, alpha: float = 1.0, decay_power: float = 3.0, prob: float = 1.0,
                 label_smoothing: float = 0.0, labels_getter: str | LabelsGetter = "default") -> None:
        super().__init__(num_classes, alpha=alpha, prob=prob, label_smoothing=label_smoothing,
                         labels_getter=labels_getter)
        if not is_number(decay_power) or not 0.0 < decay_power <= 16.0:
            raise ValueError(f"decay_power must be in (0, 16] (the spectrum falls as 1/f**decay_power; the paper's "
                             f"default is 3), got decay_power={decay_power!r}")
        self.decay_power = float(decay_power)

    @classmethod
    def from_options(cls, options: FMixOptions,  # type: ignore[override]
                     *, num_classes: int, label_smoothing: float = 0.0, extractor: Any = None) -> FMix:
        return cls(num_classes, alpha=options.alpha, decay_power=options.decay_power, prob=options.prob,
                   label_smoothing=label_smoothing)

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        device = generator.device if generator is not None else torch.device("cpu")
        lam = beta_sample(self.alpha, batch_size, generator).to(torch.float64) * (height * width)
        up = torch.rand(batch_size, generator=generator, device=device) > 0.5  # the official ceil-or-floor coin
        params["pixels"] = torch.where(up, lam.ceil(), lam.floor()).long()
        params["spectrum"] = torch.randn(batch_size, height, width // 2 + 1, 2, generator=generator, device=device)
        return params

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        pixels, spectrum = params["pixels"], params["spectrum"]
        check_rows("pixels", (pixels >= 0) & (pixels <= height * width), pixels,
                   f"must hold pixel counts in [0, {height * width}] (the image's pixels)")
        check_rows("spectrum", torch.isfinite(spectrum).flatten(1).all(1), spectrum,
                   "must hold finite Fourier coefficients")

    def pixel_mask(self, params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        """(B, H, W) bool: the pixels each output takes from its partner."""
        return top_pixels(fourier_noise(params["spectrum"], height, width, self.decay_power), params["pixels"])

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor:
        return self.pixel_mask(params, height, width)

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        perm = params["perm"]
        pixel_mask = self.pixel_mask(params, h, w)
        lam = params["pixels"].to(torch.float32) / (h * w)  # exactly the mask's area: it has that many pixels
        out = (paste(images, perm, pixel_mask), mix_targets(targets, perm, lam))
        return out + ((paste_masks(masks, perm, pixel_mask),) if masks is not None else ())


@dataclass(frozen=True)
class FMixOptions(BetaOptions):
    """FMix's options (``--alpha``, ``--decay-power``)."""

    decay_power: float = option(3.0, "the Fourier spectrum falls as 1/f**decay_power (the paper's 3)", above=0.0,
                                maximum=16.0)


register(Method("fmix", "FMix", FMixOptions, build=FMix.from_options, mixer=FMix,
                comparisons=(("cutmix", "FMix vs CutMix"),), order=65, example={"alpha": 1.0}))
