"""FeatureExtractor: frozen, normalised, finds the last spatial map of torchvision/timm/CIFAR CNNs."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from attentive_cutmix import AttentiveCutMix, FeatureExtractor, channel_attention, load_extractor
from attentive_cutmix.attention import IMAGENET_MEAN, IMAGENET_STD
from attentive_cutmix.serialization import CheckpointError

SHARED = Path(__file__).resolve().parents[2] / "shared"
RESNET56 = SHARED / "models" / "cifar10-resnet56.safetensors"
CIFAR_JPEG = SHARED / "data" / "cifar10-jpeg" / "train"


def _bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


def test_stays_in_eval_and_batchnorm_stats_never_move():
    ext = load_extractor("cifar_resnet20", input_size=32)
    before = _bn_stats(ext.model)
    ext.train()  # a training loop calling .train() on everything must not unfreeze it
    assert not ext.training and not ext.model.training
    for _ in range(5):
        ext(torch.rand(8, 3, 32, 32))
    ext.model.train()  # even if someone flips the inner model, forward puts it back
    ext(torch.rand(8, 3, 32, 32))
    after = _bn_stats(ext.model)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not any(p.requires_grad for p in ext.parameters())


def test_normalises_with_imagenet_statistics_and_resizes():
    seen = {}

    class Probe(nn.Module):
        def forward_features(self, x):
            seen["x"] = x
            return x

    ext = FeatureExtractor(Probe(), input_size=16)
    images = torch.full((2, 3, 8, 8), 0.5)
    out = ext(images)
    assert out.shape == (2, 3, 16, 16)
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(seen["x"][0, :, 0, 0], expected, atol=1e-6)
    ext_none = FeatureExtractor(Probe(), input_size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert torch.equal(ext_none(images), images)


@pytest.mark.parametrize("builder,layer,grid", [
    (lambda: torchvision.models.resnet18(), "layer4", 2),
    (lambda: torchvision.models.densenet121(), "features", 2),
    (lambda: torchvision.models.efficientnet_b0(), "features", 2),
])
def test_finds_last_spatial_stage_of_torchvision_models(builder, layer, grid):
    ext = FeatureExtractor(builder(), input_size=64)
    out = ext(torch.rand(2, 3, 32, 32))
    assert ext.layer == layer
    assert out.ndim == 4 and out.shape[-2:] == (grid, grid)


def test_timm_models_use_forward_features():
    ext = FeatureExtractor(timm.create_model("resnet18", pretrained=False), input_size=64)
    assert ext(torch.rand(2, 3, 32, 32)).shape == (2, 512, 2, 2)


def test_named_models_with_small_input_stems():
    assert load_extractor("resnet18", input_size=32)(torch.rand(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    assert load_extractor("cifar_resnet20", input_size=32)(torch.rand(1, 3, 32, 32)).shape == (1, 64, 8, 8)


def test_explicit_layer_and_errors():
    ext = FeatureExtractor(torchvision.models.resnet18(), input_size=64, layer="layer3")
    assert ext(torch.rand(1, 3, 64, 64)).shape == (1, 256, 4, 4)
    with pytest.raises(ValueError, match="layer='layer9'"):
        FeatureExtractor(torchvision.models.resnet18(), layer="layer9")
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(ValueError, match="no spatial feature map"):
        FeatureExtractor(mlp, input_size=8)(torch.rand(2, 3, 8, 8))
    ext = load_extractor("cifar_resnet20", input_size=32)
    with pytest.raises(ValueError, match="channels"):
        ext(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="floating"):
        ext(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="input_size"):
        load_extractor("cifar_resnet20", input_size=0)
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        load_extractor("resnet9000")


def test_weights_files_load_strictly(tmp_path):
    src = torchvision.models.resnet18(num_classes=7)
    sf = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(sf))
    ext = load_extractor("resnet18", weights=sf, input_size=224)  # num_classes inferred from the file
    assert torch.equal(ext.model.fc.weight, src.fc.weight)
    pt = tmp_path / "w.pt"
    torch.save(src.state_dict(), pt)
    assert torch.equal(load_extractor("resnet18", weights=pt).model.conv1.weight, src.conv1.weight)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_extractor("resnet34", weights=sf)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(sf.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_extractor("resnet18", weights=truncated)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "evil.pt"
    torch.save({"fc.weight": Evil()}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        load_extractor("resnet18", weights=bad)
    assert not marker.exists()


@pytest.mark.skipif(not (RESNET56.exists() and CIFAR_JPEG.exists()), reason="../shared CIFAR data/models not present")
def test_real_pretrained_resnet56_attention_is_not_uniform():
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    files = [sorted((CIFAR_JPEG / c).glob("*.jpg"))[0] for c in ("airplane", "cat", "ship", "truck")]
    images = torch.stack([pil_to_tensor(Image.open(f).convert("RGB")) for f in files]).float() / 255
    ext = load_extractor("cifar_resnet56", weights=RESNET56, input_size=32)
    feats = ext(images)
    assert feats.shape == (4, 64, 8, 8)
    heat = feats.mean(1).flatten(1)
    # The channel-mean heat map varies strongly across cells: max well above mean.
    assert (heat.std(1) / heat.mean(1).abs().clamp_min(1e-6) > 0.2).all()
    # And the pretrained network is right about these images (it is a real extractor).
    logits = ext.model.forward_head(feats)
    assert (logits.argmax(1) == torch.tensor([0, 3, 8, 9])).float().mean() >= 0.75
    # Attentive CutMix with it runs end to end and pastes exactly 6 cells of an 8x8 grid.
    mixed, targets = AttentiveCutMix(num_classes=10, extractor=ext, num_patches=6, grid_size=8)(
        images, torch.tensor([0, 3, 8, 9]))
    assert torch.allclose(targets.max(1).values, torch.full((4,), 1 - 6 / 64))


def test_extractors_are_built_by_load_extractor_only():
    with pytest.raises(TypeError, match=r"model must be an nn.Module, got str; .*load_extractor"):
        FeatureExtractor("cifar_resnet20", input_size=32)
    by_name = load_extractor("cifar_resnet20")
    assert by_name.name == "cifar_resnet20" and by_name.source.kind == "name" and by_name.input_size == 32
    module = FeatureExtractor(torchvision.models.resnet18(), input_size=32)
    assert module.name == "ResNet" and module.source.kind == "module"


def test_channel_attention_is_the_channel_mean_and_refuses_other_shapes():
    feats = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(channel_attention(feats), feats.mean(1))
    torch.testing.assert_close(channel_attention(feats.mean(1).half()), feats.mean(1).half().float())
    with pytest.raises(ValueError, match=r"\(B, C, h, w\) features or a \(B, h, w\) map, got \(2, 5\)"):
        channel_attention(torch.randn(2, 5))
