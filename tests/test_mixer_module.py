"""Mixers are ``nn.Module``s (as torchvision's v2 transforms are): the extractor moves with ``.to()``, stays frozen,
out of ``state_dict()`` and ``parameters()``, and in eval mode whatever ``train()``/``eval()`` do; dict batches
with a ``labels_getter`` as torchvision v2's CutMix/MixUp take them."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attentive_cutmix import AttentiveCutMix, CutMix, FeatureExtractor, MixUp, RandomCells


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 4, stride=4))


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3])


class _Model(nn.Module):  # a model holding a mixer, as a Lightning module does
    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)
        self.mixer = mixer


def test_the_extractor_stays_out_of_a_parents_checkpoint_and_optimiser():
    extractor = FeatureExtractor(_net(), input_size=None)
    parent = _Model(AttentiveCutMix(10, extractor, grid_size=8))
    assert set(parent.state_dict()) == {"net.weight", "net.bias"}
    assert len(list(parent.parameters())) == 2
    parent.load_state_dict(_Model(AttentiveCutMix(10, grid_size=8)).state_dict())  # strict: nothing missing


def test_train_and_eval_never_change_the_extractors_mode_and_it_is_frozen():
    net = _net().train()
    mixer = AttentiveCutMix(10, net, grid_size=8)  # any module as the extractor: frozen on arrival
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    parent = _Model(mixer)
    parent.train()
    assert mixer.training and not net.training
    running = net[1].running_mean.clone()
    mixer(*_batch())
    assert torch.equal(net[1].running_mean, running)  # BatchNorm statistics did not move
    parent.eval()
    parent.train()
    assert not net.training


def test_to_moves_the_extractor_but_never_changes_its_dtype():
    extractor = FeatureExtractor(_net(), input_size=None)
    parent = _Model(AttentiveCutMix(10, extractor, grid_size=8))
    parent.to(torch.float64)
    assert parent.net.weight.dtype == torch.float64
    assert next(extractor.parameters()).dtype == torch.float32  # it computes in float32 (amp_dtype for less)
    parent.to("meta")  # a device move, without a GPU
    assert next(extractor.parameters()).device.type == "meta" and extractor.mean.device.type == "meta"


@pytest.mark.parametrize("convert", [lambda m: m.half(), lambda m: m.bfloat16(), lambda m: m.to(torch.float16),
                                     lambda m: m.double(), lambda m: m.float()],
                         ids=["half", "bfloat16", "to-dtype", "double", "float"])
def test_a_dtype_only_conversion_leaves_the_extractor_where_it_is(convert):
    # model.cuda().bfloat16(): the dtype step must not send the extractor back to the CPU. The meta device stands
    # in for the GPU (an extractor there cannot be copied to the CPU, so a wrong move raises).
    extractor = FeatureExtractor(_net(), input_size=None).to("meta")
    parent = _Model(AttentiveCutMix(10, extractor, grid_size=8))
    convert(parent)
    param = next(extractor.parameters())
    assert param.device.type == "meta" and extractor.mean.device.type == "meta"
    assert param.dtype == torch.float32


def test_a_device_move_with_a_dtype_moves_the_extractor_and_keeps_its_dtype():
    extractor = FeatureExtractor(_net(), input_size=None)
    parent = _Model(AttentiveCutMix(10, extractor, grid_size=8))
    parent.to("meta", torch.bfloat16)
    param = next(extractor.parameters())
    assert param.device.type == "meta" and param.dtype == torch.float32
    assert parent.net.weight.device.type == "meta" and parent.net.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("copier", ["deepcopy", "AveragedModel", "ModelEmaV3"])
def test_a_copy_of_the_model_shares_the_frozen_extractor(copier):
    extractor = FeatureExtractor(_net(), input_size=None)
    parent = _Model(AttentiveCutMix(10, extractor, grid_size=8))
    if copier == "deepcopy":
        copied = copy.deepcopy(parent)
    elif copier == "AveragedModel":
        copied = torch.optim.swa_utils.AveragedModel(parent).module
    else:
        copied = pytest.importorskip("timm.utils").ModelEmaV3(parent, decay=0.9).module
    assert copied.mixer is not parent.mixer and copied.mixer.extractor is extractor
    assert copied.net.weight is not parent.net.weight  # the rest is a real copy
    images, labels = _batch()
    a = parent.mixer(images, labels, generator=torch.Generator().manual_seed(3))
    b = copied.mixer(images, labels, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    copied.mixer.prob = 0.5  # the mixer's own settings are copied, not shared
    assert parent.mixer.prob == 1.0


@pytest.mark.parametrize("make", [lambda: CutMix(10), lambda: MixUp(10), lambda: RandomCells(10),
                                  lambda: AttentiveCutMix(10, FeatureExtractor(_net(), input_size=None), grid_size=8)],
                         ids=["cutmix", "mixup", "random-cells", "attentive"])
def test_a_parents_module_apply_reaches_the_mixer_unharmed(make):
    # Mixer.apply (the contract's hook) shadows nn.Module.apply(fn), which a parent calls on every child.
    parent = _Model(make())
    visited = []
    parent.apply(visited.append)
    assert parent.mixer in visited and parent.net in visited and parent in visited
    images, labels = _batch()
    mixed, targets = parent.mixer(images, labels)  # the mixing hook still works
    assert mixed.shape == images.shape


def test_dict_batches_with_the_default_labels_getter_match_the_tuple_call():
    images, labels = _batch()
    ids = torch.arange(4)
    for mixer in (CutMix(10), MixUp(10), RandomCells(10, grid_size=8)):
        out = mixer({"pixel_values": images, "labels": labels, "id": ids}, generator=torch.Generator().manual_seed(1))
        mixed, targets = mixer(images, labels, generator=torch.Generator().manual_seed(1))
        assert set(out) == {"pixel_values", "labels", "id"} and out["id"] is ids
        assert torch.equal(out["pixel_values"], mixed) and torch.equal(out["labels"], targets)
    out = CutMix(10)({"image": images, "label": labels})  # torchvision's heuristic: a key containing "label"
    assert out["label"].shape == (4, 10)


def test_dict_batches_with_a_labels_getter_and_clear_errors():
    images, labels = _batch()
    mixer = CutMix(10, labels_getter=lambda batch: batch["target"])
    out = mixer({"img": images, "target": labels})
    assert out["img"].shape == images.shape and out["target"].shape == (4, 10)
    with pytest.raises(ValueError, match="none of its keys"):
        CutMix(10)({"img": images, "y": labels})
    with pytest.raises(TypeError, match="carries its own labels"):
        CutMix(10)({"img": images, "labels": labels}, labels)
    with pytest.raises(TypeError, match="labels_getter must be"):
        CutMix(10, labels_getter=3)
    with pytest.raises(TypeError, match="needs labels"):
        CutMix(10)(images)
