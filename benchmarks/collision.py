"""Where does each method's paste land on the guidance? The base image's own mass it covers, the partner's it carries.

A paste that takes the partner's most attended region and drops it where the base image's own object sits (the
centre, for most images) swaps one object for another: the label says both are there, the image shows one. For every
registered method with a region (``mixer.region`` not None: MixUp has none) this measures, per mixed image ``i`` with
partner ``j = perm[i]``, on one guidance map per image (the ResNet-56 extractor's channel mean, the maps of the
committed attention cache, upsampled to pixels and made a distribution: ``(s - min s) / sum``):

* **own covered**: the share of image ``i``'s own guidance mass under the pasted region (what the paste hides);
* **partner carried**: the share of image ``j``'s guidance mass in the pixels the paste took from it (what it
  brings). A method that pastes at the same place reads ``j``'s map under the region; one that moves or resizes the
  partner (ResizeMix) is followed pixel by pixel: the same call mixes two coordinate images (each pixel's row and
  column), so the region's pixels say which source pixel of the partner they hold, and (from the step between
  neighbours) how much of the partner each stands for: ResizeMix's box carries the whole partner, shrunk.

Each method runs with its defaults (the paper settings: 7x7 grid, N = 6; alpha = 1) on the same images, partners drawn
from the same seed; guided methods also with ``guidance="shuffled"`` (the matched control). Methods guided by the
model being trained get the ResNet-56 classifier as that model (the no-training stand-in for a trained model). No
training, CPU, one thread, seconds. With ../shared absent it falls back to a tiny synthetic set and random weights,
and says so (its numbers then mean nothing about CIFAR).

    OMP_NUM_THREADS=1 python benchmarks/collision.py [--shared ../shared] [--images 2000]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attentive_cutmix import registry
from attentive_cutmix.attention import load_extractor
from attentive_cutmix.data import build_datasets
from attentive_cutmix.mixers.base import channel_attention
from attentive_cutmix.mixers.cell_scores import attention_mass
from attentive_cutmix.models import create_model
from label_mass import judge  # the same ResNet loading as label_mass.py (a script beside this one)


def load_images(shared: Path, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``count`` un-augmented images of label_mass.py's training subset, or a synthetic stand-in without ../shared."""
    folder = shared / "data" / "cifar10-jpeg" / "train"
    if folder.is_dir():
        train, _, _ = build_datasets("imagefolder", data_dir=str(folder), val_fraction=0.1, seed=0, train_subset=5000,
                                     augment=False)
        source = f"{min(count, len(train))} CIFAR-10 JPEGs of the grid's 5,000-image training subset"
    else:
        train, _, _ = build_datasets("synthetic", synthetic_size=[max(count, 64), 16], augment=False)
        source = (f"NOTE: {folder} not found: {min(count, len(train))} synthetic 32 px images and random-init "
                  "ResNet-56 maps (a smoke run: these numbers say nothing about CIFAR)")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count]
    images = torch.stack([train[int(i)][0] for i in order])
    return images, torch.tensor([train[int(i)][1] for i in order]), source


def guidance_model(shared: Path) -> torch.nn.Module:
    """The ResNet-56 classifier (maps, and the model a model-guided method reads); random weights without ../shared."""
    if (shared / "models" / "cifar10-resnet56.safetensors").is_file():
        return judge(shared, "resnet56")
    return create_model("cifar_resnet56", num_classes=10, image_size=32).eval()


def pixel_mass(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, h, w) maps -> (B, H, W) distributions over the pixels (nearest upsampling keeps each cell's mass even)."""
    b, h, w = maps.shape
    mass = attention_mass(maps.flatten(1).float()).view(b, 1, h, w)
    up = F.interpolate(mass, (height, width), mode="nearest").squeeze(1)
    return up / up.flatten(1).sum(1).view(b, 1, 1)


def variants() -> list[tuple[str, registry.Method, object]]:
    """(row label, method, its options): every method that mixes, and the shuffled control of each guided one."""
    rows = []
    for method in registry.methods():
        if method.mixer is None:
            continue
        options = method.options()
        rows.append((method.name, method, options))
        if "guidance" in method.option_names():
            rows.append((f"{method.name} (shuffled)", method, dataclasses.replace(options, guidance="shuffled")))
    return rows


def _step(source: torch.Tensor, region: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) mean source-coordinate step between neighbouring region pixels along ``dim`` (1 where none)."""
    both = region.narrow(dim, 1, region.shape[dim] - 1) & region.narrow(dim, 0, region.shape[dim] - 1)
    step = (source.narrow(dim, 1, source.shape[dim] - 1) - source.narrow(dim, 0, source.shape[dim] - 1)).abs()
    pairs = both.flatten(1).sum(1)
    return torch.where(pairs > 0, (step * both).flatten(1).sum(1) / pairs.clamp_min(1), 1.0)


@torch.no_grad()
def collide(mixer, images: torch.Tensor, labels: torch.Tensor, maps: torch.Tensor, mass: torch.Tensor,
            model: torch.nn.Module, seed: int) -> tuple[float, float, float] | None:
    """(mean area, own mass covered, partner mass carried) of one method on one batch, or None without a region.

    A method with no partner (Cutout erases) carries nothing: NaN."""
    b, _, h, w = images.shape
    source = mixer.guidance_source
    call_maps = {"attention": maps, "none": None}.get(source)
    if call_maps is None and source in ("image", "model"):
        call_maps = mixer.guide(images, labels, model=model)
    params = mixer.make_params(b, h, w, torch.Generator().manual_seed(seed))
    region = mixer.region(params, h, w, call_maps)
    if region is None:
        return None
    covered = (mass.flatten(1) * region.flatten(1)).sum(1)
    if "perm" not in params:
        return float(region.float().mean()), float(covered.mean()), float("nan")
    # Which partner pixel each output pixel holds: mix the pixels' own coordinates with the same draws.
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
    coords = torch.cat([rows, cols, torch.zeros_like(rows)], 1).contiguous()
    moved = mixer(coords, labels, call_maps, params=params)[0]
    src_rows, src_cols = moved[:, 0].round().long().clamp(0, h - 1), moved[:, 1].round().long().clamp(0, w - 1)
    partner = mass.index_select(0, params["perm"]).flatten(1)
    held = partner.gather(1, (src_rows * w + src_cols).flatten(1)) * region.flatten(1)
    # Each output pixel stands for the partner area it was resampled from: 1 pixel where the paste keeps the scale,
    # (H / box side)^2 where ResizeMix shrinks the whole partner into the box.
    carried = held.sum(1) * _step(src_rows, region, 1) * _step(src_cols, region, 2)
    return float(region.float().mean()), float(covered.mean()), float(carried.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--images", type=int, default=2000, help="images of the grid's training subset (default 2000)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    images, labels, source = load_images(args.shared, args.images, args.seed)
    model = guidance_model(args.shared)
    extractor = load_extractor(model, input_size=32)
    maps = torch.cat([channel_attention(extractor(images[i:i + args.batch_size]))
                      for i in range(0, len(images), args.batch_size)])  # the "cache": one map per image
    mass = pixel_mass(maps, *images.shape[-2:])
    print(f"{source}; guidance: ResNet-56 channel-mean maps {tuple(maps.shape[1:])}, upsampled to pixels")
    print("| method | region (share of pixels) | own guidance mass covered | partner's guidance mass carried | "
          "carried − covered |")
    print("|---|---:|---:|---:|---:|")
    for label, method, options in variants():
        mixer = method.make_mixer(options, num_classes=10)
        results = []
        for n, i in enumerate(range(0, len(images), args.batch_size)):
            sl = slice(i, i + args.batch_size)
            results.append(collide(mixer, images[sl], labels[sl], maps[sl], mass[sl], model, args.seed + n))
        if results[0] is None:
            continue  # no region (MixUp): nothing is pasted over
        area, covered, carried = (sum(r[k] for r in results) / len(results) for k in range(3))
        brought = ("— (erases)", "—") if carried != carried else (f"{carried:.3f}", f"{carried - covered:+.3f}")
        print(f"| {label} | {area:.3f} | {covered:.3f} | {brought[0]} | {brought[1]} |")
    print(f"\n{time.perf_counter() - start:.0f} s; a region with no link to the maps covers and carries its area on "
          "average")


if __name__ == "__main__":
    main()
