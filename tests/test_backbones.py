"""Every timm backbone as an extractor: NCHW maps through timm's own API, hot spots land on the right cells.

A forward hook on the model's last block plants a hot spot at a known (row, column) in the block's *native*
layout (tokens for ViT/DeiT, channels-last for Swin, NCHW for CNNs); the extractor's map must put it on that
cell, so a transposed or misread layout fails. ViT-style models also give the class token's attention.
"""
from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import TensorDataset

from attentive_cutmix import AttentiveCutMix, FeatureExtractor, load_extractor
from attentive_cutmix.attention.cache import (
    CacheMismatchError,
    build_cache,
    cache_meta,
    open_cache,
)
from attentive_cutmix.mixers.cell_scores import attention_to_grid, top_cells
from attentive_cutmix.mixers.geometry import cells_to_pixel_mask

# name -> (layout of the last block's output, channels, grid at 224 px), as timm documents them
BACKBONES = {
    "vit_tiny_patch16_224": ("tokens", 192, 14),
    "deit_tiny_patch16_224": ("tokens", 192, 14),
    "swin_tiny_patch4_window7_224": ("nhwc", 768, 7),
    "convnext_atto": ("nchw", 320, 7),
    "resnet18": ("nchw", 512, 7),
    "efficientnet_b0": ("nchw", 320, 7),
}
HOT = [(1, -2), (-2, 2)]  # one hot cell per sample, off the diagonal: a transposed map moves it


def _hot_cells(grid: int) -> list[tuple[int, int]]:
    return [(r % grid, c % grid) for r, c in HOT]


def _plant(layout: str, grid: int, prefix: int):
    """A forward hook adding a large value at each sample's hot cell, in the block's native layout."""
    def hook(_module, _inputs, out):
        out = out.clone()
        boost = 10 * float(out.abs().max())
        for i, (r, c) in enumerate(_hot_cells(grid)):
            if layout == "tokens":
                out[i, prefix + r * grid + c, :] += boost
            elif layout == "nhwc":
                out[i, r, c, :] += boost
            else:
                out[i, :, r, c] += boost
        return out
    return hook


@cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


@pytest.fixture(scope="module", params=list(BACKBONES))
def backbone(request):
    model = _model(request.param)
    return SimpleNamespace(name=request.param, model=model, layout=BACKBONES[request.param][0],
                           channels=BACKBONES[request.param][1], grid=BACKBONES[request.param][2],
                           last=dict(model.named_modules())[model.feature_info[-1]["module"]],
                           images=torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))


def test_map_is_nchw_with_the_documented_grid_and_follows_a_planted_hot_spot(backbone):
    ext = FeatureExtractor(backbone.model, input_size=224)
    g = backbone.grid
    prefix = getattr(backbone.model, "num_prefix_tokens", 0)  # class (and distillation, register) tokens
    handle = backbone.last.register_forward_hook(_plant(backbone.layout, g, prefix))
    try:
        feats = ext(backbone.images)
    finally:
        handle.remove()
    assert feats.shape == (2, backbone.channels, g, g)
    cells = top_cells(attention_to_grid(feats, g), 1)
    for i, (r, c) in enumerate(_hot_cells(g)):
        assert cells[i].nonzero().tolist() == [[r, c]], (backbone.name, i)
    # What Attentive CutMix pastes is that cell's pixels.
    mask = AttentiveCutMix(10, num_patches=1, grid_size=g).pixel_mask(feats, 224, 224)
    assert torch.equal(mask, cells_to_pixel_mask(cells, 224, 224))


def test_swin_stage_named_by_layer_is_read_channels_first():
    swin = _model("swin_tiny_patch4_window7_224")
    ext = FeatureExtractor(swin, input_size=224, layer="layers.2")
    g = 14
    handle = swin.layers[2].register_forward_hook(_plant("nhwc", g, 0))
    try:
        feats = ext(torch.rand(2, 3, 224, 224))
    finally:
        handle.remove()
    assert feats.shape == (2, 384, g, g)
    assert [top_cells(attention_to_grid(feats, g), 1)[i].nonzero().tolist() for i in range(2)] == \
        [[list(rc)] for rc in _hot_cells(g)]
    with pytest.raises(ValueError, match="feature_info stages"):
        FeatureExtractor(swin, layer="layers.2.blocks.0")  # its layout is not declared anywhere


# ----------------------------------------------------------------------- feature_info without forward_intermediates
class _ChannelsLast(nn.Module):
    """A model with timm's feature_info but no forward_intermediates, whose last stage is NHWC."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, channels, 4, stride=4)
        self.feature_info = [{"module": "last", "num_chs": channels, "reduction": 4}]
        self.last = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.body(x).permute(0, 2, 3, 1)).mean((1, 2))


def test_feature_info_stage_is_converted_from_channels_last():
    model = _ChannelsLast(5).eval()
    g = 8
    model.last.register_forward_hook(_plant("nhwc", g, 0))
    feats = FeatureExtractor(model, input_size=32)(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 5, g, g)
    assert [top_cells(attention_to_grid(feats, g), 1)[i].nonzero().tolist() for i in range(2)] == \
        [[list(rc)] for rc in _hot_cells(g)]


def test_ambiguous_or_token_layouts_are_refused_not_guessed():
    square = _ChannelsLast(8).eval()  # 32 px / 4 = 8x8 grid with 8 channels, and no usable reduction
    square.feature_info = [{"module": "last", "num_chs": 8}]
    with pytest.raises(ValueError, match="cannot tell whether it is NCHW or NHWC"):
        FeatureExtractor(square, input_size=32)(torch.rand(1, 3, 32, 32))
    tokens = _ChannelsLast(5).eval()
    tokens.last = nn.Flatten(1, 2)  # (B, 64, 5) tokens
    with pytest.raises(ValueError, match="not a 4-D map"):
        FeatureExtractor(tokens, input_size=32)(torch.rand(1, 3, 32, 32))


# ----------------------------------------------------------------------- class-token attention
def _small_vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, num_classes=10, **kw).eval()


@pytest.mark.parametrize("kw,prefix", [({}, 1), ({"reg_tokens": 4, "qk_norm": True}, 5)])
def test_cls_token_attention_equals_the_unfused_softmax(kw, prefix):
    vit = _small_vit(**kw)
    attn = vit.blocks[-1].attn
    assert vit.num_prefix_tokens == prefix
    seen = {}
    attn.fused_attn = False  # the reference: timm's own unfused path materialises the weights
    attn.attn_drop.register_forward_hook(lambda _m, _i, out: seen.__setitem__("w", out))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    got = FeatureExtractor(vit, input_size=32, attention="cls_token")(images)
    expected = seen["w"][:, :, 0, prefix:].mean(1).reshape(2, 1, 8, 8)
    assert got.shape == (2, 1, 8, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    attn.fused_attn = True
    torch.testing.assert_close(FeatureExtractor(vit, input_size=32, attention="cls_token")(images), expected,
                               rtol=1e-5, atol=1e-7)


def test_cls_token_attention_follows_a_planted_key_and_the_mixer_accepts_it():
    vit = _small_vit()
    attn = vit.blocks[-1].attn
    dim = vit.embed_dim
    with torch.no_grad():  # q = k = the token itself: the class token attends most to its own copy
        attn.qkv.weight[:2 * dim] = torch.cat([torch.eye(dim), torch.eye(dim)])
        attn.qkv.bias[:2 * dim] = 0

    def copy_class_token(_m, args):
        x = args[0].clone()
        for i, (r, c) in enumerate(_hot_cells(8)):
            x[i, 1 + r * 8 + c] = 4 * x[i, 0]
        return (x,)

    attn.register_forward_pre_hook(copy_class_token)
    ext = FeatureExtractor(vit, input_size=32, attention="cls_token")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    att = ext(images)
    mixer = AttentiveCutMix(10, ext, num_patches=1, grid_size=8)
    cells = top_cells(attention_to_grid(att, 8), 1)
    assert [cells[i].nonzero().tolist() for i in range(2)] == [[list(rc)] for rc in _hot_cells(8)]
    assert torch.equal(mixer.pixel_mask(att, 32, 32), cells_to_pixel_mask(cells, 32, 32))
    mixed, targets = mixer(images, torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert mixed.shape == images.shape and torch.allclose(targets.sum(1), torch.ones(2))
    # The channel mean of the same model is another map.
    assert FeatureExtractor(vit, input_size=32)(images).shape == (2, 64, 8, 8)


def test_cls_token_is_refused_where_there_is_none():
    with pytest.raises(ValueError, match="attention must be one of"):
        FeatureExtractor(_small_vit(), input_size=32, attention="cls")
    with pytest.raises(ValueError, match="no class token"):
        FeatureExtractor(_small_vit(class_token=False, global_pool="avg"), input_size=32, attention="cls_token")
    with pytest.raises(ValueError, match="ViT-style"):
        load_extractor("cifar_resnet20", input_size=32, attention="cls_token")
    with pytest.raises(ValueError, match="exclude each other"):
        FeatureExtractor(_small_vit(), input_size=32, attention="cls_token", layer="blocks.0")


def test_cache_records_the_attention_and_refuses_the_other(tmp_path):
    vit = _small_vit()
    cls_ext = FeatureExtractor(vit, input_size=32, attention="cls_token")
    mean_ext = FeatureExtractor(vit, input_size=32)
    info = SimpleNamespace(name="synthetic", image_size=32, train_fingerprint="f" * 64, num_train=6)
    meta = cache_meta(info, cls_ext, "vit")
    assert meta["attention"] == "cls_token" and meta["grid"] == [8, 8]
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cache = build_cache(TensorDataset(images), cls_ext, tmp_path / "c.safetensors", meta=meta, batch_size=4,
                        progress=False)
    torch.testing.assert_close(torch.stack([cache[i] for i in range(6)]).float(), cls_ext(images)[:, 0],
                               rtol=2e-3, atol=1e-4)
    assert open_cache(cache.path, expect=meta).meta["attention"] == "cls_token"
    with pytest.raises(CacheMismatchError, match="attention: expected 'channel_mean', found 'cls_token'") as err:
        open_cache(cache.path, expect=cache_meta(info, mean_ext, "vit"))
    assert str(err.value).count("expected") == 1  # the only difference
