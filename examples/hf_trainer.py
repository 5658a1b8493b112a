"""A Hugging Face ``Trainer`` on mixed batches, with soft labels done right.

The trap: an image-classification model given float (B, num_labels) ``labels`` while ``config.problem_type`` is
unset decides it is a *multi-label* problem and trains with BCE (sigmoid per class): silently another loss. Set
``problem_type="single_label_classification"`` and compute the soft-target cross-entropy yourself in
``compute_loss``: the labels never reach the model's forward (which would try hard-label cross-entropy on them).

The mixer runs in the data collator on the collated dict batch: it finds ``pixel_values`` and ``labels`` (its
``labels_getter``) and returns the dict with mixed images and soft targets.

    python examples/hf_trainer.py
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate
from transformers import ResNetConfig, ResNetForImageClassification, Trainer, TrainingArguments

from attentive_cutmix import CutMix


class SoftTargetTrainer(Trainer):
    """``Trainer`` whose loss is the cross-entropy with the mixer's soft targets (rows summing to 1)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("labels")  # not into forward: the model would pick its own loss for them
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs.logits.float(), targets)
        return (loss, outputs) if return_outputs else loss


class MixCollator:
    """Collate a list of ``{"pixel_values", "labels"}`` items, then mix the dict batch."""

    def __init__(self, mixer: torch.nn.Module) -> None:
        self.mixer = mixer

    def __call__(self, items: list[dict]) -> dict:
        return self.mixer(default_collate(items))


class RandomImages(Dataset):
    """Stand-in for your dataset: dict items as Hugging Face datasets yield them (images in [0, 1])."""

    def __init__(self, n: int = 32, num_labels: int = 10, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.images, self.labels = torch.rand(n, 3, size, size, generator=g), torch.randint(0, num_labels, (n,),
                                                                                              generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def tiny_resnet(num_labels: int = 10) -> ResNetForImageClassification:
    """Random-init; in a real run: ``from_pretrained(checkpoint, num_labels=..., problem_type=...)``."""
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=num_labels,
                          problem_type="single_label_classification")  # the one line that avoids the BCE trap
    return ResNetForImageClassification(config)


def main(output_dir: str = "runs/hf-example", max_steps: int = 3, num_labels: int = 10) -> SoftTargetTrainer:
    args = TrainingArguments(output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=8,
                             learning_rate=1e-3, report_to="none", save_strategy="no", logging_steps=1,
                             remove_unused_columns=False, dataloader_num_workers=0,
                             use_cpu=not torch.cuda.is_available())
    trainer = SoftTargetTrainer(model=tiny_resnet(num_labels), args=args, train_dataset=RandomImages(),
                                data_collator=MixCollator(CutMix(num_labels)))
    trainer.train()
    return trainer


if __name__ == "__main__":
    trainer = main()
    print([round(r["loss"], 3) for r in trainer.state.log_history if "loss" in r])
