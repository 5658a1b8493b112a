"""The recipes in attentive_cutmix.examples (shipped with the package) run, at tiny size, offline, with random-init
models: a timm-style loop, a torchvision v2 collate_fn, a Lightning module and a Hugging Face Trainer with soft labels
done right."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attentive_cutmix import CutMix

EXAMPLES = Path(__import__("attentive_cutmix.examples").examples.__file__).parent


def _needs(module: str) -> None:
    # `pip install -e '.[test]'` brings the [integrations] extra; CI must never skip these silently.
    if os.environ.get("CI"):
        __import__(module)
    else:
        pytest.importorskip(module)


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # DataLoader workers pickle its classes by module name
    spec.loader.exec_module(module)
    return module


def test_timm_style_loop():
    losses = _example("timm_loop").main(steps=2, batch_size=4, image_size=32)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("workers", [0, 2])
def test_torchvision_v2_collate_fn(workers):
    loader = _example("torchvision_collate").make_loader(size=16, batch_size=4, workers=workers)
    batches = list(loader)
    assert len(batches) == 4
    for images, targets in batches:
        assert images.shape == (4, 3, 32, 32) and targets.shape == (4, 10)
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert any((targets.max(1).values < 1).any() for _, targets in batches)  # mixed: soft rows


def test_lightning_module_needs_no_registration_and_keeps_the_extractor_out_of_the_checkpoint(tmp_path):
    _needs("lightning")
    example = _example("lightning_module")
    trainer = example.main(root_dir=str(tmp_path), max_steps=2)
    module = trainer.lightning_module
    extractor = module.mixer.extractor
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())  # after fit's train()
    (ckpt_path,) = tmp_path.rglob("*.ckpt")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    assert set(state) == {f"model.{k}" for k in module.model.state_dict()}  # the classifier's, nothing else


def test_hugging_face_trainer_trains_with_soft_target_cross_entropy(tmp_path):
    _needs("transformers")
    example = _example("hf_trainer")
    calls = []
    mixer = example.attentive_mixer(10)
    mixer.register_forward_hook(lambda _m, args, out: calls.append((args[0].device, out[1].shape)))
    trainer = example.main(output_dir=str(tmp_path), max_steps=2, mixer=mixer)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    assert calls == [(trainer.args.device, (8, 10))] * 2  # mixed on the device, in the training step, soft targets
    model = trainer.model.train()
    batch = {"pixel_values": torch.rand(8, 3, 32, 32), "labels": torch.randint(0, 10, (8,))}
    trainer.mixer = CutMix(10, prob=0.0)  # training path, soft one-hot targets: the plain cross-entropy
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        expected = F.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
    torch.testing.assert_close(loss, expected)


def test_hugging_face_trainer_evaluates_unmixed_images_with_hard_labels_and_honours_label_smoothing(tmp_path):
    # Trainer runs data_collator for evaluation too: a mixer there mixed the eval set and compute_metrics got
    # soft (B, num_labels) labels; label_smoothing_factor was ignored by the custom compute_loss.
    _needs("transformers")
    example = _example("hf_trainer")
    eval_set, seen = example.RandomImages(16, seed=1), []
    trainer = example.main(output_dir=str(tmp_path), max_steps=2, eval_dataset=eval_set,
                           compute_metrics=lambda p: seen.append(p) or {}, include_for_metrics=["inputs"],
                           label_smoothing_factor=0.1)
    (prediction,) = seen
    assert prediction.label_ids.dtype.kind == "i" and prediction.label_ids.shape == (16,)
    torch.testing.assert_close(torch.from_numpy(prediction.label_ids), eval_set.labels)
    torch.testing.assert_close(torch.from_numpy(prediction.inputs), eval_set.images)  # un-mixed
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(pixel_values=eval_set.images.to(trainer.args.device)).logits.cpu()
    smoothed = F.cross_entropy(logits, eval_set.labels, label_smoothing=0.1)
    eval_loss = trainer.state.log_history[-1]["eval_loss"]
    assert eval_loss == pytest.approx(smoothed.item(), rel=1e-4)
    assert eval_loss != pytest.approx(F.cross_entropy(logits, eval_set.labels).item(), rel=1e-3)
    with pytest.raises(ValueError, match="label smoothing set twice"):
        example.main(output_dir=str(tmp_path), mixer=CutMix(10, label_smoothing=0.1),
                     label_smoothing_factor=0.1)


def test_the_problem_type_trap_is_real():
    # Why the example sets problem_type: left unset, soft labels turn the model's own loss into BCE.
    _needs("transformers")
    from transformers import ResNetConfig, ResNetForImageClassification

    model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                      num_labels=10)).eval()
    images, targets = torch.rand(4, 3, 32, 32), torch.softmax(torch.randn(4, 10), 1)
    with torch.no_grad():
        out = model(pixel_values=images, labels=targets)
    assert model.config.problem_type == "multi_label_classification"
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))
    assert not torch.allclose(out.loss, F.cross_entropy(out.logits, targets))
