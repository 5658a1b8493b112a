"""``SyntheticObjects``: the embedded, offline default dataset.

Ten shapes (the classes) drawn at a random position, scale, small rotation and colour on a cluttered,
textured background: smooth colour noise, random stripes, small blobs and thin line segments. The
clutter and the colours are drawn independently of the class, so only the shape identifies it; the
object's colour is only tied to the background's brightness (bright on dark, dark on bright) so the
object always stands out. Each image has a ground-truth XYXY box and an object mask.

Everything is vectorised over images (signed-distance fields on a coordinate grid, one loop over the
ten shapes), seeded by one ``torch.Generator``, and kept in memory as uint8: 5,000 32 px images take
well under a second.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..constants import is_int

__all__ = ["SHAPES", "STYLES", "Style", "SyntheticObjects", "generate_objects"]

SHAPES = ("disc", "square", "triangle", "cross", "ring", "star", "diamond", "hexagon", "bar_pair", "ellipse")
GENERATOR_VERSION = 2  # the default drawing; add a version (never change one) so old images stay reproducible


@dataclass(frozen=True)
class Style:
    """What a generator version draws: the object's radius range (fraction of the image side) and the clutter."""

    scale: tuple[float, float]  # object radius, uniform in this range, times the image side
    stripes: float  # fraction of images with a stripe pattern
    blobs: int  # small blobs per image
    lines: int  # thin line segments per image


# Version 1 is the original drawing (dataset "synthetic", bit-identical to it). Version 2 (dataset "synthetic2", the
# demo's) draws larger objects on lighter clutter (no line segments, fewer blobs and stripes): at 16 px a mixed run
# then fits its 100 training images within the demo's budget (RESULTS.md, "The demo's regime").
STYLES = {1: Style(scale=(0.22, 0.36), stripes=0.6, blobs=3, lines=3),
          2: Style(scale=(0.28, 0.36), stripes=0.3, blobs=2, lines=0)}
_CHUNK = 1024  # images drawn at once: bounds the float32 temporaries (a 64 px chunk is ~16 MB per array)
_EXTENT = 1.25  # every shape lies within this radius (in units of the object scale) of its centre


# ------------------------------------------------------------------ signed distances (unit object scale)
def _box(u: torch.Tensor, v: torch.Tensor, hx: float, hy: float) -> torch.Tensor:
    dx, dy = u.abs() - hx, v.abs() - hy
    return torch.hypot(dx.clamp(min=0), dy.clamp(min=0)) + torch.maximum(dx, dy).clamp(max=0)


def _polygon(u: torch.Tensor, v: torch.Tensor, sides: int, apothem: float, phase: float) -> torch.Tensor:
    # Max over the half-planes: exact inside, slightly short near outer corners; enough for 1 px anti-aliasing.
    out = None
    for k in range(sides):
        a = phase + 2 * math.pi * k / sides
        side = u * math.cos(a) + v * math.sin(a)
        out = side if out is None else torch.maximum(out, side, out=out)
    return out.sub_(apothem)


def _star(u: torch.Tensor, v: torch.Tensor, points: int = 5, outer: float = 1.05, inner: float = 0.45) -> torch.Tensor:
    sector = 2 * math.pi / points
    theta = torch.atan2(v, u) + math.pi / 2  # a tip points up (v grows downwards)
    phi = (torch.remainder(theta + sector / 2, sector) - sector / 2).abs()
    r = torch.hypot(u, v)
    x, y = r * torch.cos(phi), r * torch.sin(phi)  # folded into the half-sector [tip, valley]
    vx, vy = inner * math.cos(sector / 2) - outer, inner * math.sin(sector / 2)
    nx, ny = vy / math.hypot(vx, vy), -vx / math.hypot(vx, vy)  # outward normal of the tip->valley edge
    return (x - outer) * nx + y * ny


def _ellipse(u: torch.Tensor, v: torch.Tensor, a: float = 1.05, b: float = 0.5) -> torch.Tensor:
    k = torch.hypot(u / a, v / b)
    grad = torch.hypot(u / a**2, v / b**2).clamp(min=1e-6)
    return k * (k - 1) / grad


_SDF = {
    "disc": lambda u, v: torch.hypot(u, v) - 0.85,
    "square": lambda u, v: _box(u, v, 0.72, 0.72),
    "triangle": lambda u, v: _polygon(u, v, 3, 0.58, math.pi / 2),
    "cross": lambda u, v: torch.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0)),
    "ring": lambda u, v: (torch.hypot(u, v) - 0.78).abs() - 0.2,
    "star": _star,
    "diamond": lambda u, v: _polygon(u, v, 4, 0.72, math.pi / 4),
    "hexagon": lambda u, v: _polygon(u, v, 6, 0.82, 0.0),
    "bar_pair": lambda u, v: torch.minimum(_box(u, v - 0.55, 1.0, 0.2), _box(u, v + 0.55, 1.0, 0.2)),
    "ellipse": _ellipse,
}
# Free rotation for these; others keep a small jitter: square vs diamond stays a shape cue.
_FREE_ROTATION = {"disc", "ring", "bar_pair", "ellipse"}


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * (high - low) + low


def _smooth_noise(gen: torch.Generator, n: int, size: int, cells: int = 4) -> torch.Tensor:
    coarse = torch.rand((n, 3, cells, cells), generator=gen) - 0.5
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _background(gen: torch.Generator, n: int, size: int, dark: torch.Tensor, ys: torch.Tensor,
                xs: torch.Tensor, style: Style) -> torch.Tensor:
    px = size / 32  # clutter is specified at 32 px and scales with the image
    base = torch.rand((n, 3, 1, 1), generator=gen) * 0.3 + torch.where(dark, 0.08, 0.62).view(n, 1, 1, 1)
    img = _smooth_noise(gen, n, size).mul_(0.25).add_(base)
    # Stripes on ~60% of the images: random period, orientation, phase and colour.
    on = (torch.rand((n, 1, 1, 1), generator=gen) < style.stripes).float()
    period, angle = _uniform(gen, (n, 1, 1), 3 * px, 10 * px), _uniform(gen, (n, 1, 1), 0, math.pi)
    phase, amp = _uniform(gen, (n, 1, 1), 0, 2 * math.pi), _uniform(gen, (n, 1, 1, 1), 0.04, 0.12)
    wave = torch.sin(2 * math.pi / period * (xs * torch.cos(angle) + ys * torch.sin(angle)) + phase)
    img.add_(on * amp * (torch.rand((n, 3, 1, 1), generator=gen) * 2 - 1) * wave.unsqueeze(1))
    for _ in range(style.blobs):  # small blobs: much smaller than any object, any colour
        cx, cy = _uniform(gen, (n, 1, 1), 0, size), _uniform(gen, (n, 1, 1), 0, size)
        sigma = _uniform(gen, (n, 1, 1), 0.7 * px, 1.6 * px)
        alpha = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)).mul_(0.9).unsqueeze(1)
        img.lerp_(torch.rand((n, 3, 1, 1), generator=gen).expand_as(img), alpha)
    for _ in range(style.lines):  # thin line segments
        cx, cy = _uniform(gen, (n, 1, 1), 0, size), _uniform(gen, (n, 1, 1), 0, size)
        half, angle = _uniform(gen, (n, 1, 1), 2 * px, 5 * px), _uniform(gen, (n, 1, 1), 0, math.pi)
        ux, uy = torch.cos(angle), torch.sin(angle)
        t = ((xs - cx) * ux + (ys - cy) * uy).clamp(-half, half)
        dist = torch.hypot(xs - cx - t * ux, ys - cy - t * uy)
        alpha = (0.5 * px + 0.5 - dist).clamp_(0, 1).mul_(0.9).unsqueeze(1)
        img.lerp_(torch.rand((n, 3, 1, 1), generator=gen).expand_as(img), alpha)
    return img


def _draw_chunk(gen: torch.Generator, labels: torch.Tensor, size: int,
                style: Style) -> tuple[torch.Tensor, torch.Tensor]:
    n = labels.numel()
    grid = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    ys, xs = grid.view(1, size, 1), grid.view(1, 1, size)
    dark = torch.rand(n, generator=gen) < 0.5
    img = _background(gen, n, size, dark, ys, xs, style)

    scale = _uniform(gen, (n,), *style.scale) * size  # object radius in pixels
    margin = _EXTENT * scale + 0.5
    cx = margin + torch.rand(n, generator=gen) * (size - 2 * margin)
    cy = margin + torch.rand(n, generator=gen) * (size - 2 * margin)
    jitter = _uniform(gen, (n,), -math.radians(10), math.radians(10))
    free = _uniform(gen, (n,), 0, math.pi)
    free_class = torch.tensor([s in _FREE_ROTATION for s in SHAPES])[labels]
    angle = torch.where(free_class, free, jitter)
    cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    dx, dy = (xs - cx.view(n, 1, 1)) / scale.view(n, 1, 1), (ys - cy.view(n, 1, 1)) / scale.view(n, 1, 1)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos  # object frame: rotate the grid by -angle

    sdf = torch.empty((n, size, size))
    for k, shape in enumerate(SHAPES):
        sel = labels == k
        if sel.any():
            sdf[sel] = _SDF[shape](u[sel], v[sel]) * scale[sel].view(-1, 1, 1)  # unit distances -> pixels
    cover = (0.5 - sdf).clamp(0, 1).unsqueeze(1)  # ~1 px anti-aliased edge

    colour = torch.rand((n, 3, 1, 1), generator=gen) * 0.38 + torch.where(dark, 0.6, 0.02).view(n, 1, 1, 1)
    fill = _smooth_noise(gen, n, size).mul_(0.12).add_(colour)
    img.lerp_(fill, cover)
    img.add_(torch.randn(img.shape, generator=gen).mul_(0.02))
    images = img.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return images, cover.squeeze(1) >= 0.5


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (pixel edges: x1, y1 exclusive) of boolean masks (N, H, W)."""
    cols, rows = masks.any(1).to(torch.uint8), masks.any(2).to(torch.uint8)
    w, h = cols.shape[1], rows.shape[1]
    x0, y0 = cols.argmax(1), rows.argmax(1)
    x1, y1 = w - cols.flip(1).argmax(1), h - rows.flip(1).argmax(1)
    return torch.stack([x0, y0, x1, y1], 1).float()


def generate_objects(num_samples: int, image_size: int = 32, seed: int = 0, *,
                     version: int = GENERATOR_VERSION) -> dict[str, torch.Tensor]:
    """Draw ``num_samples`` images in generator ``version``'s style (``STYLES``). Returns ``images`` uint8
    (N, 3, S, S), ``labels`` int64 (N,) (balanced: counts differ by at most one), ``boxes`` float32 (N, 4) XYXY
    pixels and ``masks`` bool (N, S, S)."""
    if not is_int(num_samples) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got num_samples={num_samples!r}")
    if not is_int(image_size) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16 (shapes need room), got image_size={image_size!r}")
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got seed={seed!r}")
    if isinstance(version, bool) or version not in STYLES:
        raise ValueError(f"version must be one of {sorted(STYLES)} (the generator versions), got version={version!r}")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(num_samples, generator=gen) % len(SHAPES)
    chunks = [_draw_chunk(gen, part, image_size, STYLES[version]) for part in labels.split(_CHUNK)]
    masks = torch.cat([m for _, m in chunks])
    return {"images": torch.cat([i for i, _ in chunks]), "labels": labels, "boxes": _mask_boxes(masks), "masks": masks}


class SyntheticObjects(Dataset):
    """Procedurally generated shapes on clutter; deterministic for a given ``(num_samples, image_size, seed,
    version)`` (``version``: the generator's drawing style, ``STYLES``; 1 is the original one).

    Items are ``(image, label)`` with ``image`` a uint8 ``tv_tensors.Image`` (3, S, S) (or ``transform(image)``).
    ``boxes`` (N, 4) XYXY and ``masks`` (N, S, S) give each object's ground-truth location.
    """

    def __init__(self, num_samples: int = 5000, image_size: int = 32, *, seed: int = 0, transform=None,
                 version: int = GENERATOR_VERSION) -> None:
        data = generate_objects(num_samples, image_size, seed, version=version)
        self.images, self.labels = data["images"], data["labels"]
        self.boxes, self.masks = data["boxes"], data["masks"]
        self.num_samples, self.image_size, self.seed, self.version = num_samples, image_size, seed, version
        self.transform = transform
        self.classes = list(SHAPES)
        self.targets = self.labels.tolist()

    @property
    def fingerprint(self) -> str:
        """sha256 over the generator parameters: equal parameters draw equal pixels."""
        params = {"generator": "SyntheticObjects", "version": self.version,
                  "num_samples": self.num_samples, "image_size": self.image_size, "seed": self.seed}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int):
        image = tv_tensors.Image(self.images[index])
        return (image if self.transform is None else self.transform(image)), self.targets[index]
