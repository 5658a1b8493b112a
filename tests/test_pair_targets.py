"""Index targets: ``target_format="pair"`` gives ``(labels_a, labels_b, lam)`` per sample, the same mix as the dense
soft targets, and ``mixed_cross_entropy`` on them equals the soft-target loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, Mix, MixUp, RandomCells, mixed_cross_entropy

K = 9
MAKERS = {
    "cutmix": lambda **kw: CutMix(K, **kw), "mixup": lambda **kw: MixUp(K, alpha=0.4, **kw),
    "cutout": lambda **kw: Cutout(K, size=4, **kw), "random-cells": lambda **kw: RandomCells(K, grid_size=4, **kw),
    "attentive": lambda **kw: AttentiveCutMix(K, num_patches=3, grid_size=4, **kw),
    "attentive-mass": lambda **kw: AttentiveCutMix(K, num_patches=3, grid_size=4, label_weight="attention", **kw),
    "mix-elem": lambda **kw: Mix(cutmix_alpha=1.0, mode="elem", num_classes=K, **kw),
    "mix-prob": lambda **kw: Mix(cutmix_alpha=1.0, mode="batch", prob=0.5, num_classes=K, **kw),
}


def _batch(b: int = 7):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, 8, 8, generator=g), torch.randint(0, K, (b,), generator=g), torch.rand(b, 4, 4)


@pytest.mark.parametrize("name", list(MAKERS))
def test_pairs_are_the_dense_targets_without_the_classes(name):
    images, labels, att = _batch()
    for seed in range(3):
        mixed, dense = MAKERS[name](label_smoothing=0.0)(images, labels, att,
                                                         generator=torch.Generator().manual_seed(seed))
        mixed_p, (a, b, lam) = MAKERS[name](label_smoothing=0.0, target_format="pair")(
            images, labels, att, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(mixed, mixed_p) and torch.equal(a, labels)
        rebuilt = torch.lerp(F.one_hot(a, K).float(), F.one_hot(b, K).float(), lam.unsqueeze(1))
        torch.testing.assert_close(rebuilt, dense, atol=1e-6, rtol=0)
        assert lam.shape == (len(labels),) and lam.dtype == torch.float32


@pytest.mark.parametrize("name", ["cutmix", "attentive", "mix-elem"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixed_cross_entropy_on_pairs_equals_the_soft_target_loss(name, smoothing):
    images, labels, att = _batch()
    logits = torch.randn(len(labels), K, generator=torch.Generator().manual_seed(5), requires_grad=True)
    _, dense = MAKERS[name](label_smoothing=smoothing)(images, labels, att, generator=torch.Generator().manual_seed(1))
    _, pairs = MAKERS[name](target_format="pair", label_smoothing=0.0)(images, labels, att,
                                                                       generator=torch.Generator().manual_seed(1))
    want = F.cross_entropy(logits, dense)
    got = mixed_cross_entropy(logits, pairs, label_smoothing=smoothing)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    grad_want, = torch.autograd.grad(want, logits)
    grad_got, = torch.autograd.grad(got, logits)
    torch.testing.assert_close(grad_got, grad_want, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(mixed_cross_entropy(logits, dense), want)  # dense targets pass straight through
    per_sample = mixed_cross_entropy(logits, pairs, label_smoothing=smoothing, reduction="none")
    torch.testing.assert_close(per_sample, F.cross_entropy(logits, dense, reduction="none"), atol=1e-6, rtol=1e-6)


def test_pairs_with_masks_dicts_and_unmixed_calls():
    images, labels, _ = _batch()
    masks = torch.randint(0, K, (7, 8, 8))
    mixed, (a, b, lam), mixed_masks = CutMix(K, target_format="pair")(images, labels, masks=masks,
                                                                     generator=torch.Generator().manual_seed(0))
    assert mixed_masks.shape == masks.shape and (lam > 0).any()
    out = CutMix(K, target_format="pair")({"image": images, "labels": labels})
    assert isinstance(out["labels"], tuple) and len(out["labels"]) == 3
    _, (a, b, lam) = CutMix(K, prob=0.0, target_format="pair")(images, labels)
    assert torch.equal(a, b) and torch.equal(lam, torch.zeros(7))


def test_pairs_refuse_smoothing_on_the_mixer_and_probability_labels():
    with pytest.raises(ValueError, match="give label_smoothing=0.1 to mixed_cross_entropy"):
        CutMix(K, label_smoothing=0.1, target_format="pair")
    with pytest.raises(ValueError, match="label_smoothing=0 on the mixer"):
        Mix(num_classes=K, target_format="pair")  # timm's default smoothing 0.1 must move to the loss
    with pytest.raises(ValueError, match="target_format must be one of"):
        CutMix(K, target_format="index")
    images, labels, _ = _batch()
    with pytest.raises(ValueError, match="probability labels"):
        CutMix(K, target_format="pair")(images, F.one_hot(labels, K).float())
    mixer = CutMix(K)
    with pytest.raises(ValueError, match="target_format must be one of"):
        mixer.target_format = "pairs"


def test_a_label_rule_whose_weights_need_not_sum_to_one_refuses_pairs():
    from attentive_cutmix import SnapMix

    images, labels, maps = _batch()
    mixer = SnapMix(K)
    mixer.target_format = "pair"
    with pytest.raises(ValueError, match="need not sum to 1"):
        mixer(images, labels, torch.rand(7, 8, 8))
