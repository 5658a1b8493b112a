"""create_model builds every paper architecture and the CIFAR ResNets, and each runs a forward pass."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from attentive_cutmix.models import PAPER_MODELS, available_models, create_model

BIG = {"efficientnet_b6", "efficientnet_b7", "densenet264"}  # one 1x3x32x32 forward only: they are large


@pytest.mark.parametrize("name", available_models())
def test_every_model_builds_and_runs_forward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_size=32).eval()
    batch = 1 if name in BIG else 2
    with torch.no_grad():
        logits = model(torch.rand(batch, 3, 32, 32))
    assert logits.shape == (batch, 7)
    assert torch.isfinite(logits).all()


def test_every_paper_model_is_listed():
    assert set(PAPER_MODELS) <= set(available_models())
    for name in ("resnet18", "resnet34", "resnet101", "resnet152", "densenet121", "densenet169", "densenet201",
                 "densenet264", "efficientnet_b0", "efficientnet_b1", "efficientnet_b6", "efficientnet_b7"):
        assert name in PAPER_MODELS


def test_small_input_stem_keeps_spatial_resolution():
    small = create_model("resnet18", num_classes=10, image_size=32)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    big = create_model("resnet18", num_classes=10, image_size=224)
    assert big.conv1.stride == (2, 2) and not isinstance(big.maxpool, nn.Identity)


def test_xavier_init_is_applied():
    torch.manual_seed(0)
    default = create_model("cifar_resnet20", num_classes=10, image_size=32)
    torch.manual_seed(0)
    xavier = create_model("cifar_resnet20", num_classes=10, image_size=32, init="xavier")
    w = xavier.conv1.weight
    fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
    expected_std = (2.0 / (fan_in + fan_out)) ** 0.5
    assert w.std().item() == pytest.approx(expected_std, rel=0.25)
    assert not torch.equal(w, default.conv1.weight)


@pytest.mark.parametrize("kwargs,needle", [(dict(name="resnet_nope"), "cifar_resnet20"), (dict(init="he"), "init"),
                                           (dict(num_classes=0), "num_classes")])
def test_bad_arguments_name_the_problem(kwargs, needle):
    args = dict(name="cifar_resnet20", num_classes=10, image_size=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        create_model(args.pop("name"), **args)


def test_a_name_both_libraries_define_is_never_resolved_silently():
    # resnet50 / convnext_tiny / efficientnet_b0 used to build torchvision's without a word, whatever a timm user
    # meant. A bare name keeps that meaning (recorded runs must not change), but says so and names timm's spelling.
    import timm
    import torchvision

    from attentive_cutmix.attention import load_extractor

    with pytest.warns(UserWarning, match="both torchvision and timm.*'timm:efficientnet_b0'"):
        bare = create_model("efficientnet_b0", num_classes=3, image_size=32)
    assert isinstance(bare, torchvision.models.EfficientNet)
    assert isinstance(create_model("timm:efficientnet_b0", num_classes=3, image_size=32), timm.models.EfficientNet)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit library, a timm-only name, a tag, a CIFAR name: no warning
        assert isinstance(create_model("torchvision:resnet18", num_classes=3), torchvision.models.ResNet)
        assert isinstance(create_model("resnet10t", num_classes=3), timm.models.ResNet)
        assert isinstance(create_model("resnet18.a1_in1k", num_classes=3), timm.models.ResNet)
        create_model("cifar_resnet20", num_classes=3, image_size=32)
        assert isinstance(load_extractor("timm:resnet18", input_size=64).model, timm.models.ResNet)
    with pytest.raises(ValueError, match="unknown model 'timm:resnet_nope': timm has no model 'resnet_nope'"):
        create_model("timm:resnet_nope", num_classes=3)
    with pytest.raises(ValueError, match="torchvision has no model 'resnet10t'"):
        create_model("torchvision:resnet10t", num_classes=3)
