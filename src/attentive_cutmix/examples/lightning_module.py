"""Attentive CutMix in a Lightning module: the mixer is an attribute like any layer. Being an ``nn.Module``, it
moves to the module's device with its extractor, while the extractor stays frozen, in eval mode, and out of the
checkpoint (no hand registration, no 100 MB of extractor weights in every ``.ckpt``).

    python -m attentive_cutmix.examples.lightning_module
"""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attentive_cutmix import AttentiveCutMix, load_extractor


def small_cnn(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, num_classes))


class MixedClassifier(L.LightningModule):
    def __init__(self, num_classes: int = 10, extractor: nn.Module | None = None) -> None:
        super().__init__()
        self.model = small_cnn(num_classes)
        # In a real run: load_extractor("resnet152", pretrained=True, input_size=224). A module with
        # input_size=None sees the batches at their own size (32 px here), as FeatureExtractor does: no upsampling.
        extractor = extractor or load_extractor(nn.Sequential(*list(small_cnn(num_classes))[:5]), input_size=None)
        self.mixer = AttentiveCutMix(num_classes, extractor, num_patches=4, grid_size=4)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch  # in [0, 1], already on the module's device
        mixed, targets = self.mixer(images, labels)
        loss = F.cross_entropy(self(mixed), targets)  # soft targets: cross_entropy takes probabilities
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.log("val_acc", (self(images).argmax(1) == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)  # the extractor has no parameters here: frozen


def random_loader(n: int = 32, num_classes: int = 10, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, num_classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size)


def main(root_dir: str = "runs/lightning-example", max_steps: int = 4) -> L.Trainer:
    trainer = L.Trainer(max_steps=max_steps, default_root_dir=root_dir, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="auto", devices=1, limit_val_batches=2)
    trainer.fit(MixedClassifier(), random_loader(), random_loader(16))
    return trainer


if __name__ == "__main__":
    trainer = main()
    print("checkpoint:", trainer.checkpoint_callback.best_model_path)
