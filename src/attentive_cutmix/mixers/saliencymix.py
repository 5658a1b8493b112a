"""SaliencyMix (Uddin et al., ICLR 2021): CutMix's box, centred at the peak of the partner's saliency map.

Per sample, ``lam ~ Beta(alpha, alpha)`` (``alpha = 1``, the official ``--beta 1``: SaliencyMix/SaliencyMix,
``SaliencyMix_CIFAR/command.sh``) is the fraction kept; the box has CutMix's size for area ``1 - lam``
(``geometry.centred_boxes``), is centred at the most salient pixel of the partner ``perm[i]`` (the first maximum in
row-major order, as ``np.argmax``), clipped at the border, and pasted from the partner at the same place; the label
weight is the clipped box's exact area. The paper draws a box per image; ``shared_box=True`` is the official
code's batch-level box instead: one ``lam`` and one box for the whole batch, centred at the saliency peak of image
0's partner (``saliency_bbox(images[rand_index[0]], lam)`` there). The official CIFAR runs mix a batch with
probability 0.5 (``--salmix_prob 0.5``); ``prob`` defaults to 1 here, as CutMix's does, so the pair stays matched:
give both ``--prob 0.5`` for that schedule.

The saliency is OpenCV's ``StaticSaliencyFineGrained`` (Montabone & Soto, 2010), what the official code calls,
rebuilt batched in torch on the images' device (``fine_grained_saliency``) and tested against OpenCV's own
output. Images are RGB in [0, 1] (what the trainer mixes); OpenCV's algorithm reads 8-bit grey, so they are
quantised to 0..255 first. The official code passes the *normalised float32* tensor instead, and OpenCV's
``calcIntensityChannel`` then reads its float grey image as bytes (``gray.at<uchar>``): that map is unrelated to
the image (Pearson r ~ 0 with the 8-bit image's map on CIFAR-10); we compute the saliency the paper describes.
The map scales its "on" and "off" parts to 255 each, so every map has at least two maxima (1000 of 1000 CIFAR-10
images; median 2), and the official ``np.argmax`` takes the first in row-major order: the peaks lean to the top
(mean row 9.9 of 32, 27% in the top 4 rows). We keep that rule, so the control is of the method as it runs.

``guidance="shuffled"`` is the matched control: the box is centred at the peak of another image's map (an
independent derangement, drawn after ``perm`` and ``lam``), with the same ``lam`` draws and label rule.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..registry import Method, option, register
from .base import (
    BetaMixer,
    BetaOptions,
    LabelsGetter,
    beta_sample,
    channel_attention,
    check_attention_maps,
    check_rows,
    mix_targets,
)
from .geometry import box_area_fraction, boxes_to_mask, centred_boxes, paste, paste_masks
from .guidance import GUIDANCE_MODES, GuidedMixer

__all__ = ["SaliencyMix", "SaliencyMixOptions", "fine_grained_saliency", "saliency_peaks"]

# --------------------------------------------------------------------------- OpenCV's fine-grained saliency
# Half-sizes of the centre-surround windows (staticSaliencyFineGrained.cpp, ``neighborhoods``).
_NEIGHBOURHOODS = (12, 24, 48, 28, 56, 112)
# cvtColor BGR2GRAY on 8-bit images: 15-bit fixed-point weights (bit-exact with OpenCV over all 2^24 colours).
_GREY_WEIGHTS = (9798, 19235, 3735)  # R, G, B
_RANGE_SLACK = 0.5  # how far outside [0, 1] a batch may stray before it is taken for a normalised one


def _blur_121(grey: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``GaussianBlur(ksize=3, sigma=0)`` on 8-bit values: the [1, 2, 1]/4 kernel on each axis, borders
    mirrored without the edge pixel (BORDER_REFLECT_101), the exact sum rounded half up (OpenCV's fixed point)."""
    def axis(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        mirror = 1 if n > 1 else 0  # a 1-pixel axis mirrors onto itself
        padded = torch.cat([t.narrow(dim, mirror, 1), t, t.narrow(dim, n - 1 - mirror, 1)], dim)
        return padded.narrow(dim, 0, n) + 2 * padded.narrow(dim, 1, n) + padded.narrow(dim, 2, n)
    return torch.floor((axis(axis(grey, 2), 1) + 8) / 16)


def _to_byte(scaled: torch.Tensor) -> torch.Tensor:
    """C++'s ``(uchar)`` of a non-negative value: truncation; 0/0 (a map with no contrast) gives 0, as on x86."""
    return torch.trunc(scaled).nan_to_num(0.0).clamp_max(255.0)


def _windows(size: int, n: int, like: torch.Tensor) -> torch.Tensor:
    """(size, size) 0/1: row ``i`` marks the window ``[i - n + 1, i + n + 1)`` clipped to ``[0, size)`` (getMean's)."""
    i = torch.arange(size, device=like.device)
    inside = (i.view(1, -1) >= i.view(-1, 1) - n + 1) & (i.view(1, -1) < i.view(-1, 1) + n + 1)
    return inside.to(like.dtype)


def _window_sums(grey: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ grey @ cols.T``: each pixel's window sum, exact whatever the float32 matmul precision (TF32, bf16).

    Every matmul input is an integer in [0, 255] (exact in TF32 and bf16) and every sum stays below 2^24 (exact in
    their float32 accumulation): the column sums are split into 256 * high + low before the row pass. Needs
    ``255 * H * W < 2^24`` and sides up to 256; larger images go through float64, where nothing is rounded.
    """
    b, h, w = grey.shape
    across = (grey.reshape(-1, w) @ cols.T).view(b, h, w)
    if grey.dtype == torch.float64:
        return rows @ across
    high = torch.floor(across / 256)
    return 256 * (rows @ high) + rows @ (across - 256 * high)


def fine_grained_saliency(images: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``StaticSaliencyFineGrained().computeSaliency`` of a batch: (B, H, W) float32 in [0, 1].

    ``images``: (B, 3, H, W) RGB or (B, 1, H, W) grey, floats in [0, 1] (quantised to 8 bits, as OpenCV reads
    them). Steps as in ``staticSaliencyFineGrained.cpp``: grey, two 3x3 Gaussian blurs, an integral image; at 6
    scales, each pixel against the mean of its window without itself ("on": brighter than its surround, "off":
    darker, each truncated to an integer); on and off summed over scales and each scaled to [0, 255] by its
    maximum; their sum scaled by the larger maximum. Batched, on the images' device, no host sync.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"saliency needs (B, 3, H, W) RGB or (B, 1, H, W) grey images, got shape "
                         f"{tuple(images.shape)}")
    x = (images.detach().to(torch.float32).clamp(0.0, 1.0) * 255.0).round()
    if x.shape[1] == 3:
        r, g, b = x.unbind(1)
        wr, wg, wb = _GREY_WEIGHTS
        grey = torch.floor((r * wr + g * wg + b * wb + 2 ** 14) / 2 ** 15)  # < 2^24: exact in float32
    else:
        grey = x[:, 0]
    grey = _blur_121(_blur_121(grey))
    _, h, w = grey.shape
    on, off = torch.zeros_like(grey), torch.zeros_like(grey)
    if h * w == 1:  # no surround: OpenCV's 0/0 makes the pixel neither on nor off
        return on
    # mixScales divides in float32 and scales in double; float64 keeps that bit-exact (MPS has none: float32 there).
    wide = torch.float32 if grey.device.type == "mps" else torch.float64
    # Window sums in float32 up to 256 x 256 px (exact, see _window_sums); larger images in float64 (not on MPS).
    small = 255 * h * w < 2 ** 24 and max(h, w) <= 256
    summed = grey if small or wide == torch.float32 else grey.to(torch.float64)
    for n in _NEIGHBOURHOODS:
        # getMean: the window [p - n + 1, p + n + 1) on each axis clipped to the image, less the pixel itself; its sum
        # exact, as OpenCV's float32 integral image gives it (exactly, up to 256 x 256 px), then in float32.
        rows, cols = _windows(h, n, summed), _windows(w, n, summed)
        window = _window_sums(summed, rows, cols).to(torch.float32)
        others = (rows.sum(1).view(h, 1) * cols.sum(1).view(1, w) - 1).to(torch.float32)
        diff = (grey - (window - grey) / others).trunc()  # (uchar) of grey - mean, or of mean - grey
        on += diff.clamp_min(0.0)  # brighter than the surround
        off -= diff.clamp_max(0.0)  # darker
    on, off = ((t / t.amax((1, 2), keepdim=True)).to(wide) * 255.0 for t in (on, off))
    on, off = _to_byte(on), _to_byte(off)
    top = torch.maximum(on.amax((1, 2), keepdim=True), off.amax((1, 2), keepdim=True))
    # mixOnOff; on + off never exceeded the larger maximum on real images (OpenCV's cast is undefined there).
    return (_to_byte(255.0 * (on + off) / top) / 255.0).to(torch.float32)


def saliency_peaks(maps: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) row and column of each (B, h, w) map's maximum (the first in row-major order, as ``np.argmax``), in
    the pixels of an ``height x width`` image (a map of another size is mapped cell centre to pixel)."""
    h, w = maps.shape[-2:]
    flat = maps.flatten(1).argmax(1)
    py, px = flat // w, flat % w
    if (h, w) != (height, width):
        py, px = (2 * py + 1) * height // (2 * h), (2 * px + 1) * width // (2 * w)
    return py, px


# --------------------------------------------------------------------------- the mixer
class SaliencyMix(GuidedMixer, BetaMixer):
    """SaliencyMix: per sample a CutMix box of area ``1 - lam`` centred at the partner's saliency peak.

    The maps come from the batch itself (``guidance_source = "image"``): a call computes
    ``fine_grained_saliency(images)`` unless ``attention=`` gives the (B, h, w) maps (e.g. from ``guide``).
    ``lam`` per sample is the exact fraction of pixels pasted. ``shared_box=True``: one ``lam`` and one box for the
    batch (the official code), centred at the peak of image 0's partner. ``guidance="shuffled"``: the peak of
    another image's map (the matched control).
    """

    _repr_fields = ("alpha", "shared_box", "guidance")
    guidance_source = "image"

    def __init__(self, num_classes: int, *, alpha: float = 1.0, shared_box: bool = False, guidance: str = "own",
                 prob: float = 1.0, label_smoothing: float = 0.0,
                 labels_getter: str | LabelsGetter = "default") -> None:
        super().__init__(num_classes, alpha=alpha, prob=prob, label_smoothing=label_smoothing,
                         labels_getter=labels_getter)
        if not isinstance(shared_box, bool):
            raise TypeError(f"shared_box must be True (one box for the batch, the official code) or False (a box "
                            f"per image, the paper), got shared_box={shared_box!r}")
        self.shared_box = shared_box
        self.set_guidance(guidance)
        self._range_warned = False

    def guide(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              model: torch.nn.Module | None = None) -> torch.Tensor:
        """The (B, H, W) saliency maps a call on ``images`` reads (``fine_grained_saliency``)."""
        if images.device.type == "cpu" and not self._range_warned:  # free on the CPU; a GPU check would sync
            lo, hi = (float(v) for v in torch.aminmax(images.detach()))
            if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
                self._range_warned = True
                warnings.warn(f"SaliencyMix reads images in [0, 1] (8-bit, as OpenCV's saliency) but got values in "
                              f"[{lo:.2f}, {hi:.2f}]: they are clipped, so the saliency peaks are not those of the "
                              "images. Mix before normalising (as the trainer does), or pass your own maps as "
                              "attention=", stacklevel=3)
        return fine_grained_saliency(images)

    def check_attention(self, attention: Any, images: torch.Tensor) -> torch.Tensor:
        if attention is None:
            return self.guide(images)
        return channel_attention(check_attention_maps(attention, images))

    def make_params(self, batch_size: int, height: int, width: int,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = super().make_params(batch_size, height, width, generator)
        # The sampled lam is the fraction kept, as in the paper; shared: one draw for the batch, as the official code.
        lam = beta_sample(self.alpha, 1 if self.shared_box else batch_size, generator)
        params["lam"] = lam.expand(batch_size).clone()
        return self.draw_guidance(params, batch_size, generator)

    def check_params(self, params: dict[str, torch.Tensor], height: int, width: int) -> None:
        super().check_params(params, height, width)
        lam = params["lam"]
        check_rows("lam", (lam >= 0) & (lam <= 1), lam, "must hold the kept fractions lam in [0, 1]")

    def boxes(self, params: dict[str, torch.Tensor], height: int, width: int,
              maps: torch.Tensor) -> torch.Tensor:
        """(B, 4) the box each image receives: around the peak of its partner's (guiding) map, clipped."""
        guide = self.guidance_of(maps, params).index_select(0, params["perm"])
        if self.shared_box:
            guide = guide[:1]
        cy, cx = saliency_peaks(guide, height, width)
        b = params["perm"].shape[0]
        area = 1.0 - params["lam"]
        return centred_boxes(area, cy.expand(b), cx.expand(b), height, width)

    def region(self, params: dict[str, torch.Tensor], height: int, width: int,
               attention: torch.Tensor | None = None) -> torch.Tensor:
        if attention is None:
            raise ValueError("SaliencyMix.region needs the saliency maps the call used: pass attention=mixer.guide("
                             "images)")
        return boxes_to_mask(self.boxes(params, height, width, channel_attention(attention)), height, width)

    def apply(self, images: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
              params: dict[str, torch.Tensor], attention: torch.Tensor | None,
              masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        _, _, h, w = images.shape
        perm = params["perm"]
        boxes = self.boxes(params, h, w, self.needs_maps(attention))
        pixel_mask = boxes_to_mask(boxes, h, w)
        out = (paste(images, perm, pixel_mask), mix_targets(targets, perm, box_area_fraction(boxes, h, w)))
        return out + ((paste_masks(masks, perm, pixel_mask),) if masks is not None else ())


# --------------------------------------------------------------------------- registration
@dataclass(frozen=True)
class SaliencyMixOptions(BetaOptions):
    """SaliencyMix's options: ``--alpha`` (shared with CutMix, its control), ``--guidance``, ``--shared-box``."""

    guidance: str = option("own", "own: each image's own guidance map; shuffled: the map of another image of the "
                                  "batch (the matched control)", choices=GUIDANCE_MODES, record_default=False)
    shared_box: bool = option(False, "one lam and one box for the whole batch, at the saliency peak of image 0's "
                                     "partner (the official code); default: a box per image (the paper)",
                              record_default=False)


def _build(options: SaliencyMixOptions, *, num_classes: int, label_smoothing: float, extractor: Any) -> SaliencyMix:
    return SaliencyMix(num_classes, alpha=options.alpha, shared_box=options.shared_box, guidance=options.guidance,
                       prob=options.prob, label_smoothing=label_smoothing)


register(Method("saliencymix", "SaliencyMix", SaliencyMixOptions, build=_build, mixer=SaliencyMix,
                comparisons=(("cutmix", "saliency part: SaliencyMix vs CutMix"),), order=60,
                example={"alpha": 1.0}))
