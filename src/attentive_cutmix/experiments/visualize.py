"""``attentive-cutmix visualize``: a figure like the paper's Fig. 1/2 for a few images.

One row per image: the original, the extractor's heat map (channel mean) with its top-N grid cells outlined,
then the result of every registered mixing method (MixUp, CutMix, Cutout, random cells, Attentive CutMix, ...),
with the label weights under each. All mixers pair image i with the same partner (the same seeded pairing), so
the row compares like with like.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .. import registry
from ..mixers.attentive import attention_to_grid, top_cells
from ..mixers.base import channel_attention, pair_permutation
from ..mixers.geometry import cell_bounds
from ..serialization import atomic_write


def _mixing_methods() -> list[registry.Method]:
    return [m for m in registry.methods() if m.build is not None]


def _figure_options(method: registry.Method, settings: dict[str, Any]) -> Any:
    """The method's default options, with the figure's grid and Cutout square where the method has them."""
    names = method.option_names()
    return method.options(**{k: v for k, v in settings.items() if k in names})


def mix_panels(images: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor, *, num_classes: int,
               num_patches: int = 6, grid_size: int = 7, cutout_size: int | None = None,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Everything the figure shows, as tensors (for tests and other plots).

    ``images`` (B, C, H, W) in [0, 1], ``labels`` (B,), ``attention`` (B, h, w) or (B, C, h, w) in the images'
    frame. Returns ``original``, ``heatmap`` (B, H, W) in [0, 1], ``cells`` (B, g, g) bool (each image's own
    top cells), ``partner`` (B,), and per registered mixing method (by name) the mixed images and
    ``<method>_targets`` (B, K).
    """
    if images.shape[0] < 2:
        raise ValueError(f"mixing needs at least 2 images, got {images.shape[0]}; use --num-images 2 or more")
    b, _, h, w = images.shape
    att = channel_attention(attention)
    heat = F.interpolate(att.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
    lo, hi = heat.flatten(1).min(1).values.view(b, 1, 1), heat.flatten(1).max(1).values.view(b, 1, 1)
    heat = (heat - lo) / (hi - lo).clamp_min(1e-12)
    settings = dict(num_patches=num_patches, grid_size=grid_size, cutout_size=cutout_size or max(1, h // 2))
    gen = torch.Generator().manual_seed(seed)
    perm = pair_permutation(b, gen)
    panels: dict[str, torch.Tensor] = {
        "original": images, "heatmap": heat, "cells": top_cells(attention_to_grid(att, grid_size), num_patches),
        "partner": perm,
    }
    for method in _mixing_methods():
        options = _figure_options(method, settings)
        mixer = method.make_mixer(options, num_classes=num_classes)
        # Each mixer draws its own parameters, then all of them use the same partners, so a row compares like with like.
        params = mixer.make_params(b, h, w, gen)
        if "perm" in params:  # Cutout pairs no images, and its params are checked to hold only what it draws
            params["perm"] = perm
        # A method guided by the model being trained has no model here: the extractor's map stands in for its maps.
        reads = method.needs_attention(options) or mixer.guidance_source == "model"
        mixed, targets = mixer(images, labels, att if reads else None, params=params)
        panels[method.name], panels[f"{method.name}_targets"] = mixed, targets
    return panels


def label_text(targets: torch.Tensor, classes: Sequence[str], top: int = 2) -> str:
    """E.g. ``"cat 0.88 / dog 0.12"``: the classes with weight in the target, largest first."""
    weights, idx = targets.float().topk(min(top, targets.numel()))
    parts = [f"{classes[int(i)]} {float(v):.2f}" for v, i in zip(weights, idx) if float(v) > 0.005]
    return " / ".join(parts)


def _outline(ax: Any, cells: torch.Tensor, h: int, w: int, color: str) -> None:
    from matplotlib.patches import Rectangle

    g = cells.shape[-1]
    ys, xs = cell_bounds(h, g).tolist(), cell_bounds(w, g).tolist()
    for r, c in cells.nonzero().tolist():
        ax.add_patch(Rectangle((xs[c] - 0.5, ys[r] - 0.5), xs[c + 1] - xs[c], ys[r + 1] - ys[r], fill=False, ec=color,
                               lw=1.5))


def draw_figure(panels: dict[str, torch.Tensor], labels: torch.Tensor, classes: Sequence[str], path: str, *,
                num_patches: int, grid_size: int, title: str | None = None) -> None:
    """Write the PNG: rows = images; columns = original, heat map + cells, each method's result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = panels["original"]
    b, _, h, w = images.shape
    methods = [m for m in _mixing_methods() if m.name in panels]
    cols = ["original", "heatmap", *(m.name for m in methods)]
    titles = {"original": "original", "heatmap": "attention + chosen cells", **{m.name: m.label for m in methods}}
    outlined = {m.name for m in methods if m.name == 'attentive-cutmix'}  # methods that paste the partner's top cells
    fig, axes = plt.subplots(b, len(cols), figsize=(2.1 * len(cols), 2.35 * b + 0.5), squeeze=False)
    show = lambda t: t.permute(1, 2, 0).clamp(0, 1).cpu().numpy()  # noqa: E731
    for i in range(b):
        partner = int(panels["partner"][i])
        for j, col in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == "original":
                ax.imshow(show(images[i]), interpolation="nearest")
                text = f"{classes[int(labels[i])]} (#{i})"
            elif col == "heatmap":
                ax.imshow(show(images[i]), interpolation="nearest")
                ax.imshow(panels["heatmap"][i].cpu().numpy(), cmap="jet", alpha=0.5, interpolation="bilinear")
                _outline(ax, panels["cells"][i], h, w, "white")
                text = f"top {num_patches} of {grid_size}x{grid_size}"
            else:
                ax.imshow(show(panels[col][i]), interpolation="nearest")
                if col in outlined:
                    _outline(ax, panels["cells"][partner], h, w, "yellow")  # the partner's cells, pasted here
                text = label_text(panels[f"{col}_targets"][i], classes)
            ax.set_xlabel(text, fontsize=8)
            if i == 0:
                ax.set_title(titles[col], fontsize=9)
        axes[i][0].set_ylabel(f"partner #{partner}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)


def figure_for_dataset(dataset: Any, extractor: Any, info: Any, out: str, *, num_images: int = 4, num_patches: int = 6,
                       grid_size: int = 7, seed: int = 0, device: Any = "cpu", title: str | None = None) -> str:
    """Draw ``num_images`` images of ``dataset`` (un-augmented, items ``(image, label, ...)``) with
    ``extractor``'s maps."""
    if num_images < 2:
        raise ValueError(f"num_images must be at least 2 (mixing pairs images), got num_images={num_images}")
    if num_images > len(dataset):
        raise ValueError(f"num_images={num_images} exceeds the dataset's {len(dataset)} images")
    index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_images]
    items = [dataset[int(i)] for i in index]
    images = torch.stack([it[0] for it in items]).to(device)
    labels = torch.tensor([int(it[1]) for it in items], device=device)
    attention = channel_attention(extractor(images))
    panels = mix_panels(images, labels, attention, num_classes=info.num_classes, num_patches=num_patches,
                        grid_size=grid_size, seed=seed)
    draw_figure(panels, labels.cpu(), info.classes, out, num_patches=num_patches, grid_size=grid_size, title=title)
    return out


__all__ = ["mix_panels", "label_text", "draw_figure", "figure_for_dataset"]
