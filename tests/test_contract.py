"""One contract, driven by the registry: ``check_mixer`` over every registered method (no hand-kept list), and proof
that the check itself catches each kind of broken mixer."""
from __future__ import annotations

import pytest
import torch

from attentive_cutmix import CutMix, check_mixer, registry
from attentive_cutmix.mixers.base import mix_targets


@pytest.mark.parametrize("name", [m.name for m in registry.methods() if m.build is not None])
def test_every_registered_method_keeps_the_mixer_contract(name):
    check_mixer(name)


def test_an_instance_is_checked_with_its_own_classes():
    check_mixer(CutMix(7, alpha=0.5, prob=0.5, label_smoothing=0.1))


class _GlobalRng(CutMix):
    def make_params(self, batch_size, height, width, generator=None):
        torch.rand(1)  # a draw from the global stream: replay and resume would break
        return super().make_params(batch_size, height, width, generator)


class _OutsideRegion(CutMix):
    def apply(self, images, targets, params, attention, masks):
        out = super().apply(images, targets, params, attention, masks)
        return (out[0] * 0.5, *out[1:])  # changes pixels region() says are untouched


class _NoReplay(CutMix):
    def apply(self, images, targets, params, attention, masks):
        params = self.make_params(*images.shape[:1], *images.shape[-2:], torch.Generator().manual_seed(99))
        return super().apply(images, targets, params, attention, masks)


class _HostRead(CutMix):
    def apply(self, images, targets, params, attention, masks):
        if bool(images.sum() > 0):  # reads a device value on the host: a sync on a GPU
            pass
        return super().apply(images, targets, params, attention, masks)


class _WrongTargets(CutMix):
    def apply(self, images, targets, params, attention, masks):
        mixed, _ = super().apply(images, targets, params, attention, None)
        return (mixed, mix_targets(targets, params["perm"], params["boxes"][:, 0] * 0.0) * 1.5)


@pytest.mark.parametrize("broken,message", [
    (_GlobalRng, "global RNG"), (_OutsideRegion, "outside region"), (_NoReplay, "outside region|params"),
    (_HostRead, "meta"), (_WrongTargets, "sum to 1"),
])
def test_the_check_catches_each_broken_promise(broken, message):
    with pytest.raises((AssertionError, RuntimeError), match=message):
        check_mixer(broken(5))
