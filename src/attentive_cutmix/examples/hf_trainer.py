"""A Hugging Face ``Trainer`` on mixed batches: soft labels done right, the evaluation set left alone.

Three traps, each handled here:

* **The loss.** An image-classification model given float (B, num_labels) ``labels`` while
  ``config.problem_type`` is unset decides it is a *multi-label* problem and trains with BCE (sigmoid per class):
  silently another loss. Set ``problem_type="single_label_classification"`` and compute the cross-entropy yourself
  in ``compute_loss``: the labels never reach the model's forward.
* **The evaluation set.** ``Trainer`` runs its ``data_collator`` for evaluation and prediction batches too, so a
  mixer in the collator mixes the eval images and hands soft labels to ``compute_metrics``. The mixer runs in
  ``compute_loss`` instead, only while ``model.training``: eval batches reach the model and ``compute_metrics``
  as the dataset gave them (hard integer labels, un-mixed images).
* **Label smoothing.** ``TrainingArguments(label_smoothing_factor=...)`` acts through the ``Trainer``'s own loss,
  which a custom ``compute_loss`` replaces; it is honoured here (``F.cross_entropy(label_smoothing=...)`` takes soft
  targets too), and a mixer that smooths as well is refused rather than smoothing twice.

Mixing in ``compute_loss`` also means on the device, after ``Trainer`` moved the batch: Attentive CutMix's
extractor runs there (it is a frozen module of the mixer, moved once with ``mixer.to(args.device)``, and stays out
of the model's checkpoints). Any mixer works: ``main(mixer=CutMix(10))``. If your image processor normalises
``pixel_values``, pass its ``image_mean``/``image_std`` as ``input_mean``/``input_std`` to ``load_extractor``.

    python -m attentive_cutmix.examples.hf_trainer
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate
from transformers import ResNetConfig, ResNetForImageClassification, Trainer, TrainingArguments

from attentive_cutmix import AttentiveCutMix, load_extractor


class MixingTrainer(Trainer):
    """``Trainer`` that mixes training batches on the device and trains on the soft targets with cross-entropy.

    ``mixer``: any attentive-cutmix mixer (called as ``mixer(images, labels) -> (images, soft_targets)``).
    Evaluation and prediction batches are never mixed.
    """

    def __init__(self, *args: Any, mixer: nn.Module, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        smoothing = self.args.label_smoothing_factor
        if smoothing > 0 and getattr(mixer, "label_smoothing", 0.0) > 0:
            raise ValueError(f"label smoothing set twice: TrainingArguments(label_smoothing_factor={smoothing}) and "
                             f"{type(mixer).__name__}(label_smoothing={mixer.label_smoothing}); keep one of them")
        self.mixer = mixer.to(self.args.device)  # with its extractor, if it has one

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)  # prediction_step reads the labels from its own dict: leave it untouched
        labels = inputs.pop("labels")  # not into forward: the model would pick its own loss for them
        if model.training:  # Trainer calls compute_loss on eval batches too, with the model in eval mode
            inputs["pixel_values"], labels = self.mixer(inputs["pixel_values"], labels)
        outputs = model(**inputs)
        # Hard labels (eval) or soft targets (training): cross_entropy takes both, and smooths both alike.
        loss = F.cross_entropy(outputs.logits.float(), labels, label_smoothing=self.args.label_smoothing_factor)
        return (loss, outputs) if return_outputs else loss


class RandomImages(Dataset):
    """Stand-in for your dataset: dict items as Hugging Face datasets yield them (images in [0, 1])."""

    def __init__(self, n: int = 32, num_labels: int = 10, size: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
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


def attentive_mixer(num_labels: int = 10) -> AttentiveCutMix:
    """Attentive CutMix with a small random extractor; in a real run ``load_extractor("resnet152",
    pretrained=True, input_size=224)``, the paper's."""
    # A 🤗 model returns a ModelOutput: name the layer whose output is the map (its last stage, 4x4 at 32 px).
    extractor = load_extractor(tiny_resnet(num_labels).resnet, input_size=None, layer="encoder.stages.1")
    return AttentiveCutMix(num_labels, extractor, num_patches=4, grid_size=4)


def accuracy(prediction: Any) -> dict[str, float]:
    """``compute_metrics``: top-1 against the eval set's hard labels."""
    logits, labels = prediction.predictions, prediction.label_ids
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def main(output_dir: str = "runs/hf-example", max_steps: int = 3, num_labels: int = 10, mixer: nn.Module | None = None,
         eval_dataset: Dataset | None = None, compute_metrics: Callable[[Any], dict] | None = accuracy,
         **training_args: Any) -> MixingTrainer:
    """Train ``max_steps`` steps on random images (evaluating on ``eval_dataset`` at the end, if given);
    ``training_args`` go to ``TrainingArguments`` (``label_smoothing_factor=0.1``, ...)."""
    args = TrainingArguments(**{"output_dir": output_dir, "max_steps": max_steps, "per_device_train_batch_size": 8,
                                "per_device_eval_batch_size": 8, "learning_rate": 1e-3, "report_to": "none",
                                "save_strategy": "no", "logging_steps": 1, "remove_unused_columns": False,
                                "dataloader_num_workers": 0, "use_cpu": not torch.cuda.is_available(),
                                **training_args})
    trainer = MixingTrainer(model=tiny_resnet(num_labels), args=args, train_dataset=RandomImages(),
                            eval_dataset=eval_dataset, data_collator=default_collate,  # collates, never mixes
                            compute_metrics=compute_metrics, mixer=mixer or attentive_mixer(num_labels))
    trainer.train()
    if eval_dataset is not None:
        trainer.evaluate()
    return trainer


if __name__ == "__main__":
    trainer = main(eval_dataset=RandomImages(16, seed=1))
    print([round(r["loss"], 3) for r in trainer.state.log_history if "loss" in r],
          {k: v for k, v in trainer.state.log_history[-1].items() if k.startswith("eval_")})
