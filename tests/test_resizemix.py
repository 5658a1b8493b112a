"""ResizeMix against its definition: the whole partner resized (``F.interpolate``) into a box of side ``int(tau * H)``,
``tau ~ U[0.1, 0.8]``, inside the image, and the partner's label weight the box's exact area."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attentive_cutmix import registry
from attentive_cutmix.mixers.resizemix import ResizeMix

K = 10


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 16, h: int = 32, w: int = 32):
    return torch.rand(b, 3, h, w, generator=_gen(1)), torch.arange(b) % K


@pytest.mark.parametrize("mode,tol", [("nearest", 0.0), ("bilinear", 1e-5)])
def test_the_box_holds_the_whole_partner_resized_by_f_interpolate(mode, tol):
    images, labels = _batch(h=32, w=24)
    mixer = ResizeMix(K, interpolation=mode)
    params = mixer.make_params(16, 32, 24, _gen())
    mixed, _ = mixer(images, labels, params=params)
    extra = {} if mode == "nearest" else {"align_corners": False}
    for i in range(16):
        y0, y1, x0, x1 = params["boxes"][i].tolist()
        partner = images[params["perm"][i]].unsqueeze(0)
        expected = F.interpolate(partner, (y1 - y0, x1 - x0), mode=mode, **extra)[0]
        torch.testing.assert_close(mixed[i, :, y0:y1, x0:x1], expected, rtol=0, atol=tol)
        outside = torch.ones(32, 24, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(mixed[i][:, outside], images[i][:, outside])


def test_box_sides_follow_the_scale_range_and_the_box_lies_inside_the_image():
    h, w = 100, 60
    boxes = ResizeMix(K).make_params(4000, h, w, _gen())["boxes"]
    y0, y1, x0, x1 = boxes.unbind(1)
    assert (y0 >= 0).all() and (y1 <= h).all() and (x0 >= 0).all() and (x1 <= w).all()
    side = (y1 - y0).float()
    assert side.min() == 10 and side.max() == 79  # int(0.1 * 100) .. int(tau * 100) with tau < 0.8
    # tau is uniform: the side's quartiles sit at 10 + 70 * (1/4, 1/2, 3/4), less the truncation's 0.5 px
    quartiles = torch.quantile(side, torch.tensor([0.25, 0.5, 0.75]))
    torch.testing.assert_close(quartiles, torch.tensor([27.0, 44.5, 62.0]), atol=2.5, rtol=0)
    # one tau scales both sides: the width is int(tau * W) for the same tau as the height
    tau_lo, tau_hi = (y1 - y0) / h, (y1 - y0 + 1) / h
    assert ((x1 - x0) >= (tau_lo * w).floor() - 1).all() and ((x1 - x0) <= (tau_hi * w).ceil()).all()
    # placement is uniform over the positions inside: both extremes occur
    fixed = ResizeMix(K, scale_min=0.5, scale_max=0.5).make_params(400, 10, 10, _gen())["boxes"]
    assert ((fixed[:, 1] - fixed[:, 0]) == 5).all() and set(fixed[:, 0].tolist()) == set(range(6))


def test_lam_is_the_exact_area_of_the_box():
    b, s = 32, 17  # an odd size: box areas are not round fractions
    images = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, s, s).contiguous()
    labels = torch.arange(b) % K
    mixer = ResizeMix(K)
    params = mixer.make_params(b, s, s, _gen(3))
    mixed, targets = mixer(images, labels, params=params)
    changed = (mixed != images).any(1).flatten(1).float().mean(1)  # a constant partner stays constant when resized
    y0, y1, x0, x1 = params["boxes"].unbind(1)
    area = ((y1 - y0) * (x1 - x0)).float() / (s * s)
    assert torch.equal(changed, area)
    partner = labels[params["perm"]]
    differ = partner != labels
    torch.testing.assert_close(targets[differ, partner[differ]], area[differ], rtol=0, atol=1e-7)
    torch.testing.assert_close(targets.sum(1), torch.ones(b))
    assert torch.equal(mixer.region(params, s, s), (mixed != images).any(1))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_label_masks_are_resized_with_nearest_into_the_same_box(mode):
    images, labels = _batch()
    masks = torch.randint(0, K, (16, 32, 32), generator=_gen(2))
    mixer = ResizeMix(K, interpolation=mode)
    params = mixer.make_params(16, 32, 32, _gen())
    _, _, mixed_masks = mixer(images, labels, masks=masks, params=params)
    for i in (0, 7):
        y0, y1, x0, x1 = params["boxes"][i].tolist()
        partner = masks[params["perm"][i]][None, None].float()
        expected = F.interpolate(partner, (y1 - y0, x1 - x0), mode="nearest")[0, 0].long()
        assert torch.equal(mixed_masks[i, y0:y1, x0:x1], expected)
    assert torch.equal(mixed_masks[~mixer.region(params, 32, 32)], masks[~mixer.region(params, 32, 32)])


@pytest.mark.parametrize("kwargs,needle", [
    ({"scale_min": 0.0}, "scale_min must be in (0, 1]"),
    ({"scale_max": 1.5}, "scale_max must be in (0, 1]"),
    ({"scale_min": 0.6, "scale_max": 0.3}, "scale_min must be <= scale_max"),
    ({"interpolation": "bicubic"}, "interpolation must be one of ('nearest', 'bilinear')"),
])
def test_bad_settings_are_refused_naming_them(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        ResizeMix(K, **kwargs)
    options = registry.get("resizemix").options
    if set(kwargs) != {"interpolation"}:
        with pytest.raises(ValueError, match="scale_m"):
            registry.check_options(options(**kwargs))


def test_a_replayed_box_empty_on_one_axis_only_is_refused():
    images, labels = _batch()
    params = ResizeMix(K).make_params(16, 32, 32, _gen())
    params["boxes"][3] = torch.tensor([4, 4, 0, 10])
    with pytest.raises(ValueError, match=r"params\['boxes'\] must hold boxes empty on both axes or on neither.*row 3"):
        ResizeMix(K)(images, labels, params=params)
    params["boxes"][3] = torch.tensor([4, 4, 6, 6])  # nothing pasted: lam 0
    _, targets = ResizeMix(K)(images, labels, params=params)
    assert targets[3, labels[3]] == 1.0
