"""Replayed ``params=`` are checked against the call, and the mixer API refuses what would give wrong targets or a
raw error from inside torch: images without pixels, labels without values, fills and ignore indices that do not fit
the dtype, label maps of the wrong dtype, tampered partner indices (issue 23, items 8, 9 and 24)."""
from __future__ import annotations

import pytest
import torch

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, MixUp, RandomCells

B, K, S = 4, 3, 16


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(h: int = S, w: int = S, dtype=torch.float32):
    return torch.rand(B, 3, h, w, generator=_gen(1)).to(dtype), torch.arange(B) % K


def _unchanged_call(mixer, images, labels, **kw):
    """Call, and check the inputs were left alone whatever happened."""
    before = images.clone(), labels.clone()
    try:
        return mixer(images, labels, **kw)
    finally:
        assert torch.equal(images, before[0]) and torch.equal(labels, before[1])


# ----------------------------------------------------------------------------------------------- item 8: replays
def test_cutmix_params_drawn_for_larger_images_are_refused():
    images, labels = _batch()
    params = CutMix(K).make_params(B, 2 * S, 2 * S, _gen())
    assert (params["boxes"] > S).any()  # what made a target weight of -1.54
    with pytest.raises(ValueError, match=r"params\['boxes'\] must hold boxes .*<= 16 .*row \d+ is \[") as err:
        _unchanged_call(CutMix(K), images, labels, params=params)
    assert "another batch, image size or mixer" in str(err.value)


@pytest.mark.parametrize("mixer", [CutMix(K), Cutout(K, size=4)], ids=["cutmix", "cutout"])
@pytest.mark.parametrize("box", [[10, 2, 0, 16], [0, 16, 9, 3], [-1, 4, 0, 4]], ids=["y1<y0", "x1<x0", "negative"])
def test_inverted_or_negative_boxes_are_refused(mixer, box):
    images, labels = _batch()
    params = mixer.make_params(B, S, S, _gen())
    params["boxes"][2] = torch.tensor(box)
    with pytest.raises(ValueError, match=rf"params\['boxes'\] .*row 2 is \{box}".replace(" ", r"\s*")):
        _unchanged_call(mixer, images, labels, params=params)


@pytest.mark.parametrize("lam", [2.0, -0.5, float("nan")])
def test_mixup_lam_outside_the_unit_interval_is_refused(lam):
    images, labels = _batch()
    params = MixUp(K).make_params(B, S, S, _gen())
    params["lam"][1] = lam
    with pytest.raises(ValueError, match=r"params\['lam'\] must hold mixing weights in \[0, 1\]; row 1"):
        _unchanged_call(MixUp(K), images, labels, params=params)


def test_random_cells_params_of_another_grid_are_refused_by_shape():
    images, labels = _batch()
    params = RandomCells(K, grid_size=7).make_params(B, S, S, _gen())
    with pytest.raises(ValueError, match=r"params\['scores'\] has shape \(4, 49\) but RandomCells.make_params gives "
                                         r"\(4, 16\)"):
        _unchanged_call(RandomCells(K, grid_size=4, num_patches=2), images, labels, params=params)


def test_random_cells_non_finite_scores_are_refused():
    images, labels = _batch()
    mixer = RandomCells(K, grid_size=4, num_patches=2)
    params = mixer.make_params(B, S, S, _gen())
    params["scores"][3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"params\['scores'\] must hold finite cell scores; row 3"):
        _unchanged_call(mixer, images, labels, params=params)


def test_cutout_refuses_uint8_masks_that_cannot_hold_the_default_ignore_index():
    images, labels = _batch()
    masks = torch.zeros(B, S, S, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"ignore_index=-100 does not fit masks of dtype torch.uint8 \(\[0, 255\]\)"
                                         r".*e\.g\. 255"):
        Cutout(K, size=4)(images, labels, masks=masks, generator=_gen())
    *_, mixed = Cutout(K, size=4, ignore_index=255)(images, labels, masks=masks, generator=_gen())
    assert mixed.dtype == torch.uint8 and set(mixed.unique().tolist()) == {0, 255}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
@pytest.mark.parametrize("mixer", [CutMix(K), Cutout(K, size=4)], ids=["cutmix", "cutout"])
def test_masks_must_be_integer_label_maps(mixer, dtype):
    images, labels = _batch()
    with pytest.raises(TypeError, match=rf"masks must be per-pixel class indices in an integer dtype .* got dtype "
                                        rf"{dtype}"):
        mixer(images, labels, masks=torch.zeros(B, S, S, dtype=dtype), generator=_gen())


# ----------------------------------------------------------------------------------------------- item 24: the API
def test_labels_on_meta_with_real_images_are_named():
    images, labels = _batch()
    with pytest.raises(ValueError, match="labels are on the meta device"):
        CutMix(K)(images, labels.to("meta"))


@pytest.mark.parametrize("shape", [(B, 3, 0, S), (B, 3, S, 0), (B, 0, S, S)])
@pytest.mark.parametrize("name", ["cutmix", "mixup", "cutout"])
def test_images_without_pixels_are_refused(name, shape):
    mixer = {"cutmix": CutMix(K), "mixup": MixUp(K), "cutout": Cutout(K)}[name]
    with pytest.raises(ValueError, match=r"images has no pixels"):
        mixer(torch.rand(shape), torch.arange(B) % K)


def test_cutout_fill_that_overflows_fp16_is_named():
    images, labels = _batch(dtype=torch.float16)
    with pytest.raises(ValueError, match=r"fill=1e\+10 does not fit the images' dtype torch.float16"):
        Cutout(K, fill=1e10)(images, labels, generator=_gen())
    out, _ = Cutout(K, fill=1e10)(images.float(), labels, generator=_gen())
    assert (out == 1e10).any()


@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_cutout_non_finite_fill_is_refused(fill):
    with pytest.raises(ValueError, match="fill must be a finite number"):
        Cutout(K, fill=fill)


def test_cutout_ignore_index_beyond_int64_is_refused():
    with pytest.raises(ValueError, match=r"ignore_index must be an int in \[.*int64"):
        Cutout(K, ignore_index=10 ** 30)


def test_sampled_cells_non_finite_gumbel_noise_is_refused():
    images, labels = _batch()
    mixer = AttentiveCutMix(K, grid_size=4, num_patches=2, temperature=1.0)
    params = mixer.make_params(B, S, S, _gen())
    params["gumbel"][0, 1] = float("inf")
    with pytest.raises(ValueError, match=r"params\['gumbel'\] must hold finite Gumbel noise; row 0"):
        _unchanged_call(mixer, images, labels, attention=torch.rand(B, 4, 4), params=params)
