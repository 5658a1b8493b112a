"""``attentive-cutmix visualize``: a figure like the paper's Fig. 1/2 for a few images.

One row per image: the original, the extractor's heat map (channel mean) when there is an extractor, then the
result of every registered mixing method (or those named), with its ``region`` outlined (the pixels it replaced)
and the label weights under each. All mixers pair image i with the same partner (the same seeded pairing), so
the row compares like with like.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .. import registry
from ..mixers.base import Mixer, channel_attention, pair_permutation
from ..serialization import atomic_write


def figure_mixers(num_classes: int, options: dict[str, Any] | None = None, *, methods: Sequence[str] | None = None,
                  extractor: Any = None) -> dict[str, Mixer]:
    """Each named method's mixer (default: every registered mixing method) with ``options`` where it has them (its
    defaults elsewhere); a method that reads an extractor's maps is left out when no ``extractor`` is given."""
    chosen = [registry.get(m) for m in methods] if methods else [m for m in registry.methods() if m.build is not None]
    mixers = {}
    for method in chosen:
        names = method.option_names()
        opts = method.options(**{k: v for k, v in (options or {}).items() if k in names})
        registry.check_options(opts)
        reads = method.needs_attention(opts)
        if reads and extractor is None:
            if methods:
                raise ValueError(f"method {method.name!r} reads an extractor's attention maps: give --extractor")
            continue
        mixers[method.name] = method.make_mixer(opts, num_classes=num_classes, extractor=extractor if reads else None)
    return mixers


def mix_panels(images: torch.Tensor, labels: torch.Tensor, mixers: dict[str, Mixer], *, extractor: Any = None,
               model: torch.nn.Module | None = None, seed: int = 0) -> dict[str, Any]:
    """Everything the figure shows, as tensors (for tests and other plots).

    ``images`` (B, C, H, W) in [0, 1], ``labels`` (B,). Returns ``original``, ``partner`` (B,), ``heatmap``
    (B, H, W) in [0, 1] of ``extractor``'s channel mean (``None`` without one), and per mixer name the mixed
    images, ``<name>_targets`` (B, K) and ``<name>_region`` ((B, H, W) bool, or ``None``). Every mixer pairs image
    i with the same partner, so a row compares like with like.
    """
    if images.shape[0] < 2:
        raise ValueError(f"mixing needs at least 2 images, got {images.shape[0]}; use --num-images 2 or more")
    b, _, h, w = images.shape
    heat = None
    if extractor is not None:
        att = channel_attention(extractor(images))
        heat = F.interpolate(att.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
        lo, hi = heat.flatten(1).min(1).values.view(b, 1, 1), heat.flatten(1).max(1).values.view(b, 1, 1)
        heat = (heat - lo) / (hi - lo).clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    perm = pair_permutation(b, gen)
    panels: dict[str, Any] = {"original": images, "heatmap": heat, "partner": perm}
    for name, mixer in mixers.items():
        # Each mixer draws its own parameters, then all of them use the same partners.
        params = mixer.make_params(b, h, w, gen)
        if "perm" in params:  # Cutout pairs no images, and its params are checked to hold only what it draws
            params["perm"] = perm
        if mixer.guidance_source == "model" and model is None:
            # No model being trained here: the extractor's map stands in for the model's own.
            maps = None if heat is None else channel_attention(extractor(images))
        elif mixer.guidance_source in ("attention", "image", "model"):
            maps = mixer.guide(images, labels, model=model)
        else:
            maps = None
        mixed, targets = mixer(images, labels, maps, params=params)
        panels[name], panels[f"{name}_targets"] = mixed, targets
        panels[f"{name}_region"] = mixer.region(params, h, w, maps)
    return panels


def label_text(targets: torch.Tensor, classes: Sequence[str], top: int = 2) -> str:
    """E.g. ``"cat 0.88 / dog 0.12"``: the classes with weight in the target, largest first."""
    weights, idx = targets.float().topk(min(top, targets.numel()))
    parts = [f"{classes[int(i)]} {float(v):.2f}" for v, i in zip(weights, idx) if float(v) > 0.005]
    return " / ".join(parts)


def _outline(ax: Any, region: torch.Tensor, color: str) -> None:
    """Outline a (H, W) bool region: its boundary, on pixel edges."""
    if region.any():
        padded = F.pad(region.float(), (1, 1, 1, 1)).cpu().numpy()
        h, w = region.shape
        xs, ys = [x - 1 for x in range(w + 2)], [y - 1 for y in range(h + 2)]
        ax.contour(xs, ys, padded, levels=[0.5], colors=color, linewidths=1.2)


def draw_figure(panels: dict[str, Any], labels: torch.Tensor, classes: Sequence[str], path: str, *,
                labels_of: dict[str, str], title: str | None = None) -> None:
    """Write the PNG: rows = images; columns = original, heat map (with an extractor), each method's result with its
    region outlined. ``labels_of``: mixer name -> column title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = panels["original"]
    b = images.shape[0]
    cols = ["original", *(["heatmap"] if panels["heatmap"] is not None else []), *labels_of]
    titles = {"original": "original", "heatmap": "extractor attention", **labels_of}
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
                text = "channel mean"
            else:
                ax.imshow(show(panels[col][i]), interpolation="nearest")
                region = panels.get(f"{col}_region")
                if region is not None:
                    _outline(ax, region[i], "yellow")  # the pixels this method replaced
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


def figure_for_dataset(dataset: Any, info: Any, out: str, *, methods: Sequence[str] | None = None,
                       options: dict[str, Any] | None = None, extractor: Any = None, num_images: int = 4,
                       seed: int = 0, device: Any = "cpu", title: str | None = None) -> str:
    """Draw ``num_images`` images of ``dataset`` (un-augmented, items ``(image, label, ...)``) mixed by each method
    (``figure_mixers``)."""
    if num_images < 2:
        raise ValueError(f"num_images must be at least 2 (mixing pairs images), got num_images={num_images}")
    if num_images > len(dataset):
        raise ValueError(f"num_images={num_images} exceeds the dataset's {len(dataset)} images")
    index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_images]
    items = [dataset[int(i)] for i in index]
    images = torch.stack([it[0] for it in items]).to(device)
    labels = torch.tensor([int(it[1]) for it in items], device=device)
    mixers = figure_mixers(info.num_classes, options, methods=methods, extractor=extractor)
    if extractor is None:  # no model being trained here, and no extractor map to stand in for its own
        mixers = {k: m for k, m in mixers.items() if m.guidance_source != "model"}
    panels = mix_panels(images, labels, mixers, extractor=extractor, seed=seed)
    draw_figure(panels, labels.cpu(), info.classes, out, labels_of={k: registry.get(k).label for k in mixers},
                title=title)
    return out


__all__ = ["figure_mixers", "mix_panels", "label_text", "draw_figure", "figure_for_dataset"]
