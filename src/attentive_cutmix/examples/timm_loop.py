"""A timm-style training loop with Attentive CutMix: the mixer where timm's ``mixup_fn`` goes, soft targets into
timm's ``SoftTargetCrossEntropy``, the extractor kept on the model's device by ``.to(device)``.

    python -m attentive_cutmix.examples.timm_loop     # a few steps on random data (offline, random weights)

In a real run, ``load_extractor("resnet152", pretrained=True)`` is the paper's extractor; if your loader
normalises on the device (timm's ``PrefetchLoader``), pass ``input_mean``/``input_std`` to ``load_extractor``.
"""
from __future__ import annotations

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.loss import SoftTargetCrossEntropy

from attentive_cutmix import AttentiveCutMix, load_extractor


def main(steps: int = 3, batch_size: int = 8, image_size: int = 64, num_classes: int = 10,
         device: str = "cuda" if torch.cuda.is_available() else "cpu") -> list[float]:
    """Train for ``steps`` steps on random batches; returns the losses."""
    model = timm.create_model("resnet18", num_classes=num_classes, pretrained=False).to(device)
    # The extractor sees 224 px (a 7x7 map), whatever the batch's size; the paper's 6 of 7x7 cells.
    extractor = load_extractor(timm.create_model("resnet18", pretrained=False), input_size=224)
    mixer = AttentiveCutMix(num_classes, extractor, num_patches=6, grid_size=7).to(device)  # moves the extractor
    criterion = SoftTargetCrossEntropy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=device).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        images = torch.rand(batch_size, 3, image_size, image_size, generator=generator).to(device)  # in [0, 1]
        labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
        images, targets = mixer(images, labels, generator=generator)  # timm: x, y = mixup_fn(x, y)
        loss = criterion(model((images - mean) / std), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


if __name__ == "__main__":
    print("losses:", [f"{v:.3f}" for v in main()])
