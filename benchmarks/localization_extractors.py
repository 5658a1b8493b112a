"""Which attention finds objects? Pasted-pixel hit rates of a small CNN and a small ViT on the synthetic set.

Trains ``cifar_resnet20`` and a small timm ``VisionTransformer`` (32 px, 4 px patches: an 8x8 token grid, the
CNN's grid too) for a few epochs on the embedded synthetic dataset with the same loop, data, augmentation and
optimiser, then measures on the held-out images how much of what Attentive CutMix would paste (the top
``--num-patches`` cells of an 8x8 grid) lies inside the partner's object box: for the CNN's channel mean, the
ViT's channel mean and the ViT's class-token attention, against area-matched random boxes and random cells.
The untrained (random-init) networks are measured as well, as a control. CPU only, one thread.

    python benchmarks/localization_extractors.py            # about 6 minutes on one core
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from attentive_cutmix import registry
from attentive_cutmix.attention import FeatureExtractor
from attentive_cutmix.data import build_datasets, dataset_boxes
from attentive_cutmix.experiments.localization import region_hit_rates
from attentive_cutmix.models import create_model


def small_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=4, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0,
                             num_classes=10)


def train(model: nn.Module, train_ds, eval_ds, *, mean, std, epochs: int, lr: float, seed: int) -> float:
    """Adam, cosine schedule, cross-entropy on the augmented train split; returns held-out top-1."""
    torch.manual_seed(seed)
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    loader = DataLoader(train_ds, batch_size=64, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader), pct_start=0.15)
    model.train()
    for _ in range(epochs):
        for images, labels, *_ in loader:
            loss = F.cross_entropy(model((images - mean_t) / std_t), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels, *_ in DataLoader(eval_ds, batch_size=256):
            correct += int((model((images - mean_t) / std_t).argmax(1) == labels).sum())
    return correct / len(eval_ds)


def compare_extractors(extractors: dict, eval_ds, *, num_patches: int, grid_size: int, seed: int) -> list[dict]:
    """Hit rates of Attentive CutMix's cells under each extractor and of random cells, on the same draws."""
    boxes = dataset_boxes(eval_ds)

    def mixer(name: str):
        method = registry.get(name)
        return method.make_mixer(method.options(num_patches=num_patches, grid_size=grid_size), num_classes=10)

    cells = region_hit_rates(mixer("random-cells"), eval_ds, boxes=boxes, seed=seed)
    return [{"extractor": name, **region_hit_rates(mixer("attentive-cutmix"), eval_ds, extractor=ext, boxes=boxes,
                                                   seed=seed), "random_cells": cells["hit"],
             "random_cells_se": cells["hit_se"]} for name, ext in extractors.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=2500, help="synthetic training images (default 2500)")
    parser.add_argument("--eval-size", type=int, default=1000, help="held-out images measured (default 1000)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of each network (default 8)")
    parser.add_argument("--num-patches", type=int, default=6, help="cells pasted, of an 8x8 grid (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    train_ds, eval_ds, info = build_datasets("synthetic", synthetic_size=(args.train_size, args.eval_size))
    torch.manual_seed(args.seed)
    cnn, vit = create_model("cifar_resnet20", num_classes=10, image_size=32), small_vit()
    stats = {"input_size": 32, "mean": info.mean, "std": info.std}

    def extractors(tag: str, cnn: nn.Module, vit: nn.Module) -> dict[str, FeatureExtractor]:
        return {f"cifar_resnet20 {tag}, channel mean": FeatureExtractor(cnn, **stats),
                f"ViT {tag}, channel mean": FeatureExtractor(vit, **stats),
                f"ViT {tag}, class-token attention": FeatureExtractor(vit, attention="cls_token", **stats)}

    kw = {"num_patches": args.num_patches, "grid_size": 8, "seed": args.seed}
    # Copies: an extractor freezes its network, and these two are trained next.
    rows = compare_extractors(extractors("untrained", copy.deepcopy(cnn), copy.deepcopy(vit)), eval_ds, **kw)
    accuracy = {}
    for name, model, lr in (("cifar_resnet20", cnn, 3e-3), ("ViT", vit, 1e-3)):
        t0 = time.perf_counter()
        accuracy[name] = train(model, train_ds, eval_ds, mean=info.mean, std=info.std, epochs=args.epochs, lr=lr,
                               seed=args.seed)
        print(f"trained {name}: held-out top-1 {accuracy[name]:.3f} in {time.perf_counter() - t0:.0f} s", flush=True)
    rows += compare_extractors(extractors("trained", cnn, vit), eval_ds, **kw)

    def cell(mean: float, se: float) -> str:
        return f"{mean:.3f} ± {se:.3f}"

    print(f"\n{rows[0]['images']} held-out synthetic images, 32 px; {args.num_patches} of 8x8 cells "
          f"(λ = {args.num_patches / 64:.3f}); hit rate = fraction of pasted pixels inside the partner's object box "
          "(mean ± s.e. over images)\n")
    print("| extractor | attention's cells | random box, same area | random cells |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['extractor']} | {cell(r['hit'], r['hit_se'])} | {cell(r['random'], r['random_se'])} | "
              f"{cell(r['random_cells'], r['random_cells_se'])} |")
    print(f"\nheld-out top-1 after {args.epochs} epochs: "
          + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
