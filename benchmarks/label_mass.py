"""Do the mixed labels say what the mixed images show? A pretrained judge's class mass on mixed images vs λ.

Mixing methods label ``x̃`` with ``(1 - λ)·y_own + λ·y_partner``. Pasting a partner's most salient cells
(Attentive CutMix) may carry more of the partner's class than its area fraction λ says; random cells of the same
area carry what the area carries. This script measures it: for the same images and partners, each method's mixed
batch goes through a *judge* — a pretrained CIFAR-10 ResNet-20 from ../shared, a different network from the
ResNet-56 that picks Attentive CutMix's cells — and we compare the judge's probability of the partner's class
with λ, over pairs of different classes.

Settings are those of the evidence grid (configs/results/cifar10-jpeg-converged.yaml): the grid's 5,000-image
training subset of the real CIFAR-10 JPEGs, un-augmented; 7x7 grid, N = 6; CutMix and MixUp with α = 1. CPU,
one thread, well under a minute.

    python configs/results/make_untrained_extractor.py     # once: the untrained extractor's weights
    OMP_NUM_THREADS=1 python benchmarks/label_mass.py [--shared ../shared] [--images 2000]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from attentive_cutmix.constants import IMAGENET_MEAN, IMAGENET_STD
from attentive_cutmix.data import build_datasets
from attentive_cutmix.models import create_model
from attentive_cutmix.serialization import load_state_dict_file, load_weights_into
from attentive_cutmix.training import make_config
from attentive_cutmix.training.components import build_mixer

R56 = dict(extractor="cifar_resnet56", extractor_input_size=32,
           extractor_weights="{shared}/models/cifar10-resnet56.safetensors")
CELLS = dict(grid_size=7, num_patches=6)
UNTRAINED = Path(__file__).resolve().parents[1] / "results/extractors/cifar_resnet56-untrained-seed0.safetensors"
# (row label, the grid's options for it): the paper's methods, then the variants of the variants grid
# (configs/results/cifar10-jpeg-variants.yaml) with their fixed settings.
METHODS: tuple[tuple[str, dict], ...] = (
    ("cutmix", dict(method="cutmix", alpha=1.0)),
    ("mixup", dict(method="mixup", alpha=1.0)),
    ("random-cells", dict(method="random-cells", **CELLS)),
    ("attentive-cutmix", dict(method="attentive-cutmix", **CELLS, **R56)),
    ("attentive-cutmix-mass", dict(method="attentive-cutmix", **CELLS, **R56, label_weight="attention")),
    ("attentive-cutmix-sampled", dict(method="attentive-cutmix", **CELLS, **R56, cell_temperature=1.0)),
    ("attentive-cutmix-untrained", dict(method="attentive-cutmix", **CELLS, **{
        **R56, "extractor_weights": "{untrained}"})),
    ("attentive-cutmix-r20", dict(method="attentive-cutmix", **CELLS, **{
        **R56, "extractor": "cifar_resnet20", "extractor_weights": "{shared}/models/cifar10-resnet20.safetensors"})),
    ("random-cells-mass", dict(method="random-cells", **CELLS, **R56, label_weight="attention")),
    # issue 31's methods: the shuffled-guidance control, and the guidance-free peers with their defaults
    ("attentive-cutmix-shuffled", dict(method="attentive-cutmix", **CELLS, **R56, guidance="shuffled")),
    ("resizemix", dict(method="resizemix")),
    ("fmix", dict(method="fmix", alpha=1.0)),
)


def judge(shared: Path, name: str) -> torch.nn.Module:
    model = create_model(f"cifar_{name}", num_classes=10, image_size=32)
    path = shared / "models" / f"cifar10-{name}.safetensors"
    load_weights_into(model, load_state_dict_file(path), source=str(path))
    return model.eval()


@torch.no_grad()
def probabilities(model: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return torch.cat([model((images[i:i + batch] - mean) / std).softmax(1) for i in range(0, len(images), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--images", type=int, default=2000, help="images of the grid's training subset (default 2000)")
    parser.add_argument("--judge", default="resnet20", choices=("resnet20", "resnet56"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--untrained-weights", type=Path, default=UNTRAINED,
                        help=f"the untrained ResNet-56's weights (default {UNTRAINED})")
    args = parser.parse_args()
    if not args.untrained_weights.is_file():
        raise SystemExit(f"label_mass.py: no untrained extractor weights at {args.untrained_weights}; make them with "
                         "`python configs/results/make_untrained_extractor.py [PATH]` (or pass --untrained-weights)")
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = dict(dataset="imagefolder", data_dir=str(args.shared / "data" / "cifar10-jpeg" / "train"),
                val_fraction=0.1, split_seed=0, train_subset=5000)
    train_ds, _, info = build_datasets(data["dataset"], data_dir=data["data_dir"], val_fraction=0.1, seed=0,
                                       train_subset=5000, augment=False)
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(args.seed))[:args.images]
    images = torch.stack([train_ds[int(i)][0] for i in order])
    labels = torch.tensor([train_ds[int(i)][1] for i in order])
    model = judge(args.shared, args.judge)
    clean = probabilities(model, images)
    clean_top1 = 100 * (clean.argmax(1) == labels).float().mean()
    print(f"{len(images)} training-subset images; judge cifar10-{args.judge}: top-1 {clean_top1:.1f}% un-mixed")
    print("| method | partner's label weight λ | judge's prob. of partner class | of own class | "
          "judge says partner (%) | says own (%) |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, options in METHODS:
        options = {k: v.format(shared=args.shared, untrained=args.untrained_weights) if isinstance(v, str) else v
                   for k, v in options.items()}
        cfg = make_config({**data, **options})
        spec = cfg.mixing.extractor_spec
        extractor = spec.build(image_size=info.image_size, device=torch.device("cpu")) if spec is not None else None
        mixer = build_mixer(cfg, info.num_classes, extractor)
        mixed, targets = [], []
        gen = torch.Generator().manual_seed(args.seed)  # the same partners for every method
        for i in range(0, len(images), 500):
            m, t = mixer(images[i:i + 500], labels[i:i + 500], generator=gen)
            mixed.append(m)
            targets.append(t)
        mixed, targets = torch.cat(mixed), torch.cat(targets)
        own = labels
        weights = targets.clone()
        weights[torch.arange(len(own)), own] = 0  # what is left is the partner's class weight (λ)
        partner = weights.argmax(1)
        keep = weights.amax(1) > 0  # pairs of different classes (and, for MixUp/CutMix, λ > 0)
        lam = weights.amax(1)[keep]  # the label's partner weight: the area, or the attention mass
        p = probabilities(model, mixed)[keep]
        idx = torch.arange(len(p))
        p_partner, p_own = p[idx, partner[keep]], p[idx, own[keep]]
        says = p.argmax(1)
        print(f"| {method} (n={int(keep.sum())}) | {lam.mean():.3f} | {p_partner.mean():.3f} | {p_own.mean():.3f} | "
              f"{100 * (says == partner[keep]).float().mean():.1f} | {100 * (says == own[keep]).float().mean():.1f} |")
    print(f"\n{time.perf_counter() - start:.0f} s; λ = 6/49 = {6 / 49:.3f} for the cell methods on a 7x7 grid of 32 px "
          f"(uneven cells: exact per-sample area)")


if __name__ == "__main__":
    main()
