"""SnapMix against its definition (the official get_spm/snapmix), the model tap it reads, and its training paths."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from _guided_training import TINY, assert_mid_epoch_resume_is_exact, compare_grid, train_cli
from attentive_cutmix import registry
from attentive_cutmix.mixers.model_tap import class_activation_maps, tap_classifier
from attentive_cutmix.mixers.snapmix import SnapMix
from attentive_cutmix.models import create_model

K = 4


def _hand_batch():
    """Five 8x8 images, hand-made maps, boxes and partners whose label weights are worked out in the test."""
    maps = torch.zeros(5, 8, 8)
    maps[0, 0, 0] = maps[0, 0, 1] = 1.0
    maps[0, 5, 5] = 2.0  # normalised: 0.25, 0.25, 0.5
    maps[1, 1, 1], maps[1, 6, 6] = 3.0, 1.0  # 0.75, 0.25
    maps[2] = 1.0
    maps[2, 4, 4] = 5.0  # shifted by its minimum 1: all the mass at (4, 4)
    maps[3] = 2.0  # constant: NaN in the official normalisation
    maps[4, 2, 2] = maps[4, 2, 3] = 1.0  # 0.5, 0.5
    params = {"perm": torch.tensor([1, 2, 0, 4, 3]),
              "boxes": torch.tensor([[0, 4, 0, 4], [4, 8, 4, 8], [0, 2, 0, 8], [0, 8, 0, 4], [2, 4, 2, 4]]),
              # cut_boxes[i]: the box cut from image i's partner perm[i]
              "cut_boxes": torch.tensor([[0, 0, 0, 3], [3, 6, 3, 6], [4, 6, 4, 6], [2, 3, 2, 3], [0, 2, 0, 2]])}
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return images, torch.tensor([0, 1, 0, 2, 3]), maps, params


def test_label_weights_match_a_hand_computation_of_the_official_formula():
    images, labels, maps, params = _hand_batch()
    _, targets = SnapMix(K)(images, labels, maps, params=params)
    y = torch.eye(K)
    want = torch.stack([
        y[0],  # image 0: its partner's cut box is empty, so nothing is pasted (the official area1 > 0 guard)
        0.75 * y[1] + 1.0 * y[0],  # w_a = 1 - 0.25 (its (6,6) is covered), w_b = all of image 2's mass: sum 1.75
        3.0 * y[0],  # same label: w_a = 1 (nothing covered), w_b = 0.5, both become 1.5 (official), 3 in all
        0.5 * y[2] + 0.5 * y[3],  # its own map is constant (NaN): w_a falls back to 1 - area = 1 - 32/64
        0.0 * y[3] + (4 / 64) * y[2],  # all its mass covered: w_a = 0; the partner's map NaN: w_b = area = 4/64
    ])
    assert torch.allclose(targets, want, atol=1e-6)
    # The weights need not sum to 1 and are kept: the loss is the official w_a * CE(y_a) + w_b * CE(y_b).
    logits = torch.randn(5, K, generator=torch.Generator().manual_seed(1))
    w_a = torch.tensor([1.0, 0.75, 1.5, 0.5, 0.0])
    w_b = torch.tensor([0.0, 1.0, 1.5, 0.5, 4 / 64])
    official = (w_a * F.cross_entropy(logits, labels, reduction="none")
                + w_b * F.cross_entropy(logits, labels[params["perm"]], reduction="none")).mean()
    assert torch.allclose(F.cross_entropy(logits, targets), official, atol=1e-6)


def test_the_partners_cut_box_is_resized_bilinearly_into_the_paste_box_and_masks_follow():
    images, labels, maps, params = _hand_batch()
    masks = torch.arange(5 * 64).view(5, 8, 8)
    mixed, _, mixed_masks = SnapMix(K)(images, labels, maps, params=params, masks=masks)
    assert torch.equal(mixed[0], images[0]) and torch.equal(mixed_masks[0], masks[0])  # empty cut box: unmixed
    for i in range(1, 5):
        j = int(params["perm"][i])
        (y0, y1, x0, x1), (c0, c1, d0, d1) = params["boxes"][i].tolist(), params["cut_boxes"][i].tolist()
        want = images[i].clone()
        want[:, y0:y1, x0:x1] = F.interpolate(images[j:j + 1, :, c0:c1, d0:d1], size=(y1 - y0, x1 - x0),
                                              mode="bilinear", align_corners=True)[0]
        assert torch.allclose(mixed[i], want, atol=1e-6), i
        inside, cut = mixed_masks[i, y0:y1, x0:x1].contiguous(), masks[j, c0:c1, d0:d1].contiguous()
        assert torch.isin(inside, cut).all() and torch.equal(inside[[0, -1]][:, [0, -1]], cut[[0, -1]][:, [0, -1]])
        outside = torch.ones(8, 8, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(mixed_masks[i][outside], masks[i][outside])


def test_per_sample_draws_are_batched_exact_and_replayable():
    mixer = SnapMix(K, alpha=1.0)
    images, labels = torch.rand(16, 3, 12, 12), torch.arange(16) % K
    maps = torch.rand(16, 3, 3)
    params = mixer.make_params(16, 12, 12, torch.Generator().manual_seed(0))
    assert len({tuple(b) for b in params["boxes"].tolist()}) > 1  # each sample its own box
    a = mixer(images, labels, maps, params=params)
    b = mixer(images, labels, maps, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    region = mixer.region(params, 12, 12)
    assert torch.equal((a[0] != images).any(1) & ~region, torch.zeros_like(region))  # only the region changes
    bad = {**params, "cut_boxes": params["cut_boxes"] + 20}
    with pytest.raises(ValueError, match="cut_boxes"):
        mixer(images, labels, maps, params=bad)


def test_shuffled_guidance_reads_another_images_map_and_keeps_boxes_and_label_rule():
    images, labels, maps = torch.rand(8, 3, 12, 12), torch.arange(8) % K, torch.rand(8, 12, 12)
    own, shuffled = SnapMix(K, alpha=1.0), SnapMix(K, alpha=1.0, guidance="shuffled")
    p_own = own.make_params(8, 12, 12, torch.Generator().manual_seed(3))
    p_sh = shuffled.make_params(8, 12, 12, torch.Generator().manual_seed(3))
    gp = p_sh.pop("guide_perm")
    assert all(torch.equal(p_own[k], p_sh[k]) for k in p_own) and (gp != torch.arange(8)).all()
    assert torch.equal(own.region(p_own, 12, 12), shuffled.region({**p_sh, "guide_perm": gp}, 12, 12))
    mixed_sh, t_sh = shuffled(images, labels, maps, params={**p_sh, "guide_perm": gp})
    mixed_own, t_own = own(images, labels, maps[gp], params=p_own)  # the same rule on the other images' maps
    assert torch.equal(mixed_sh, mixed_own) and torch.equal(t_sh, t_own)
    assert not torch.equal(t_sh, own(images, labels, maps, params=p_own)[1])


class _Tiny(nn.Module):
    """forward_features + linear, BatchNorm and dropout: what the tap reads and must leave untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.drop = nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.Dropout(0.5)
        self.linear = nn.Linear(6, K)

    def forward_features(self, x):
        return self.drop(self.bn(self.conv(x)))

    def forward(self, x):
        return self.linear(self.forward_features(x).mean((2, 3)))


def test_the_cam_is_the_classifier_weighted_relu_features_upsampled_and_normalised():
    torch.manual_seed(0)
    model, images, labels = _Tiny().eval(), torch.randn(3, 3, 8, 8), torch.tensor([2, 0, 3])
    feats = model.forward_features(images).relu()  # (3, 6, 4, 4)
    cam = torch.stack([(model.linear.weight[c].view(6, 1, 1) * feats[i]).sum(0) + model.linear.bias[c]
                       for i, c in enumerate(labels.tolist())]).detach()
    up = F.interpolate(cam.unsqueeze(1), size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    up = up - up.flatten(1).min(1).values.view(3, 1, 1)
    want = up / up.sum((1, 2), keepdim=True)
    assert torch.allclose(SnapMix(K).guide(images, labels, model=model), want, atol=1e-6)


def test_guide_restores_every_training_flag_and_changes_no_buffer_and_unwraps():
    torch.manual_seed(0)
    model, images, labels = _Tiny().train(), torch.randn(4, 3, 8, 8), torch.arange(4)
    model.drop.eval()  # a mixed state must come back as it was, module by module
    flags = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    maps = SnapMix(K).guide(images, labels, model=model)
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BN running stats untouched
    assert not maps.requires_grad
    assert torch.equal(SnapMix(K).guide(images, labels, model=nn.DataParallel(model)), maps)  # the raw module read
    again = SnapMix(K).guide(images, labels, model=model)
    assert torch.equal(again, maps)  # eval mode: no dropout draw, the same maps


def test_the_tap_finds_cifar_torchvision_and_timm_classifiers():
    timm = pytest.importorskip("timm")
    x, labels = torch.rand(2, 3, 32, 32), torch.tensor([1, 3])
    for model in (create_model("cifar_resnet20", num_classes=K, image_size=32), torchvision.models.resnet18(
            num_classes=K), timm.create_model("resnet18", num_classes=K), timm.create_model("convnext_atto",
                                                                                            num_classes=K)):
        model.eval()
        tap = tap_classifier(model)
        with torch.no_grad():
            feats = tap.features(x)
            shift = feats - feats.amin() if tap.norm is not None else feats  # ReLU is the identity on it
            logits = model(x) if shift is feats else model.forward_head(shift)
            cams = tap.activation_maps(shift, labels)
        # The map's spatial mean is the class's logit: the CAM decomposes the classifier exactly.
        assert torch.allclose(cams.mean((1, 2)), logits[[0, 1], labels], atol=1e-5), type(model).__name__


def test_a_model_without_a_linear_classifier_is_refused_with_what_is_needed():
    mlp_head = _Tiny()
    mlp_head.linear = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, K))
    for model, why in ((nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), "no linear, fc, classifier or head"),
                       (mlp_head, "has a Linear before the final Linear")):
        with pytest.raises(TypeError, match=f"cannot take guidance from a {type(model).__name__}: .*{why}.*final "
                                            "nn.Linear classifier"):
            class_activation_maps(model, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"guide\(images, labels, model=model\)"):
        SnapMix(K).guide(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"maps = mixer.guide\(images, labels, model=model\)"):
        SnapMix(K)(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


def test_snapmix_runs_on_meta_tensors_so_it_never_reads_the_device_and_is_differentiable():
    images, labels = torch.rand(8, 3, 16, 16, device="meta"), torch.randint(0, K, (8,), device="meta")
    maps = SnapMix(K).guide(images, labels, model=_Tiny().to("meta"))
    mixed, targets, masks = SnapMix(K)(images, labels, maps, masks=torch.zeros(8, 16, 16, dtype=torch.long,
                                                                               device="meta"))
    assert mixed.shape == images.shape and targets.shape == (8, K) and masks.shape == (8, 16, 16)
    images = torch.rand(4, 3, 8, 8, requires_grad=True)
    SnapMix(K)(images, torch.arange(4), torch.rand(4, 8, 8))[0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_snapmix_is_registered_with_cutmix_as_its_comparison():
    method = registry.get("snapmix")
    assert method.label == "SnapMix" and ("cutmix", "SnapMix vs CutMix") in method.comparisons
    assert not method.needs_attention(method.options()) and method.dense_labels
    assert method.make_mixer(method.options(), num_classes=K).guidance_source == "model"


@pytest.mark.slow
def test_snapmix_trains_through_train_a_compare_grid_and_resumes_exactly(tmp_path, monkeypatch):
    model, images, labels = _Tiny(), torch.randn(4, 3, 8, 8), torch.arange(4)
    compiled = torch.compile(model)  # its raw module is read (importing dynamo costs seconds: here, not above)
    assert torch.equal(SnapMix(K).guide(images, labels, model=compiled), SnapMix(K).guide(images, labels, model=model))
    assert train_cli(tmp_path / "cli", "--method", "snapmix", "--guidance", "shuffled")["status"] == "finished"
    runs = compare_grid(tmp_path, ["cutmix", "snapmix"])["runs"]
    assert [r["config"]["method"] for r in runs] == ["cutmix", "snapmix"] and all(
        r["status"] == "finished" for r in runs)
    assert_mid_epoch_resume_is_exact(tmp_path, monkeypatch, {**TINY, "epochs": 2, "method": "snapmix",
                                                             "data_path": "device"})
