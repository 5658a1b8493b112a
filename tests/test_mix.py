"""``Mix`` against its peer ``timm.data.Mixup``, draw for draw.

timm draws from numpy's global RNG and we draw from a ``torch.Generator``, so the two cannot share a seed. Instead
each test seeds numpy, asks timm's *own* parameter functions for the draws its ``__call__`` will make
(``_params_per_batch``/``_params_per_elem``, then ``cutmix_bbox_and_lam`` per box, in timm's order), reseeds numpy
and runs timm's ``Mixup``: the same draws happen again. Those draws, written as our ``params``, replayed through
``Mix`` must give timm's images and targets. Our own draws are then compared with timm's in distribution.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attentive_cutmix import AttentiveCutMix, CutMix, Mix

timm_mixup = pytest.importorskip("timm.data.mixup")

K, B, H, W = 7, 6, 12, 10


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(B, 3, H, W, generator=g), torch.randint(0, K, (B,), generator=g)


def _timm_params(peer, mode: str, seed: int) -> dict[str, torch.Tensor]:
    """timm's draws for one call after ``np.random.seed(seed)``, as ``Mix`` params (arm, lam, boxes, perm)."""
    np.random.seed(seed)
    if mode == "batch":
        lam, use_cut = peer._params_per_batch()
        lams, cuts = np.full(1, lam), np.full(1, use_cut)
    else:
        lams, cuts = peer._params_per_elem(B // 2 if mode == "pair" else B)
    boxes = np.zeros((len(lams), 4), dtype=np.int64)
    for i, (lam, cut) in enumerate(zip(lams, cuts)):
        if lam != 1.0 and cut:  # timm draws a box only for the rows it cuts, in row order
            boxes[i], _ = timm_mixup.cutmix_bbox_and_lam((3, H, W), lam, ratio_minmax=peer.cutmix_minmax,
                                                         correct_lam=peer.correct_lam)
    rows = {"batch": [0] * B, "elem": list(range(B)), "pair": [min(i, B - 1 - i) for i in range(B)]}[mode]
    arm = np.where(lams == 1.0, 0, np.where(cuts, 2, 1))
    return {"arm": torch.tensor(arm[rows]), "lam": torch.tensor(lams[rows], dtype=torch.float32),
            "boxes": torch.tensor(boxes[rows]), "perm": torch.arange(B - 1, -1, -1)}


CASES = {"mixup": dict(mixup_alpha=1.0), "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
         "switch": dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5),
         "minmax": dict(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8)),
         "uncorrected": dict(mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False),
         "prob": dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5)}


@pytest.mark.parametrize("mode", ["batch", "elem", "pair"])
@pytest.mark.parametrize("case", list(CASES))
def test_mix_replays_timms_draws_to_timms_images_and_targets(case, mode):
    kwargs = dict(CASES[case], mode=mode, label_smoothing=0.1, num_classes=K)
    peer, ours = timm_mixup.Mixup(**kwargs), Mix(**kwargs)
    images, labels = _batch()
    for seed in range(6):  # covers both arms and, with prob, unmixed draws
        params = _timm_params(peer, mode, seed)
        np.random.seed(seed)
        want_x, want_y = peer(images.clone(), labels)
        got_x, got_y = ours(images, labels, params={k: v for k, v in params.items() if k in ours.make_params(
            B, H, W, torch.Generator())})
        torch.testing.assert_close(got_x, want_x, atol=1e-6, rtol=0)
        torch.testing.assert_close(got_y, want_y.float(), atol=1e-6, rtol=0)


def test_mix_draws_like_timm_in_distribution():
    """Our generator's draws against timm's numpy draws: arm rates, Beta weights and corrected box areas."""
    kwargs = dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.7, switch_prob=0.3, mode="elem", num_classes=K)
    peer, ours = timm_mixup.Mixup(**kwargs), Mix(**kwargs)
    n = 20000
    params = ours.make_params(n, 32, 32, torch.Generator().manual_seed(0))
    arm, lam = params["arm"].numpy(), params["lam"].numpy()
    np.random.seed(0)
    t_lam, t_cut = peer._params_per_elem(n)
    t_arm = np.where(t_lam == 1.0, 0, np.where(t_cut, 2, 1))
    for k in (0, 1, 2):
        assert abs((arm == k).mean() - (t_arm == k).mean()) < 0.02
    for k in (1, 2):
        assert abs(lam[arm == k].mean() - t_lam[t_arm == k].mean()) < 0.02
        assert abs(lam[arm == k].std() - t_lam[t_arm == k].std()) < 0.02
    cut = arm == 2
    ours_area = ((params["boxes"][:, 1] - params["boxes"][:, 0]) * (params["boxes"][:, 3] - params["boxes"][:, 2]))
    t_corrected = [timm_mixup.cutmix_bbox_and_lam((32, 32), lam)[1] for lam in t_lam[t_arm == 2]]  # one at a time
    assert abs(ours_area.numpy()[cut].mean() / 1024 - (1 - np.mean(t_corrected))) < 0.02


def test_batch_mode_shares_one_draw_and_pairs_by_flipping():
    images, labels = _batch()
    params = Mix(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=K).make_params(B, H, W, torch.Generator())
    assert torch.equal(params["perm"], torch.arange(B - 1, -1, -1))
    assert (params["boxes"] == params["boxes"][0]).all() and (params["lam"] == params["lam"][0]).all()
    pair = Mix(mixup_alpha=1.0, mode="pair", num_classes=K).make_params(B, H, W, torch.Generator().manual_seed(1))
    assert torch.equal(pair["lam"], pair["lam"].flip(0)) and torch.equal(pair["arm"], pair["arm"].flip(0))


def test_mix_with_a_registered_method_as_an_arm():
    images, labels = _batch()
    att = torch.rand(B, 3, 3)
    mix = Mix(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=K, label_smoothing=0.0,
              arms={"cutmix": AttentiveCutMix(K, num_patches=2, grid_size=3)})
    mixed, targets = mix(images, labels, att, generator=torch.Generator().manual_seed(0))
    # The arm's own rule (the partner's two most attended cells, the exact area), with timm's flip pairing.
    params = mix.make_params(B, H, W, torch.Generator().manual_seed(0))
    arm_params = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("cutmix.")}
    assert torch.equal(arm_params["perm"], torch.arange(B - 1, -1, -1))
    want = AttentiveCutMix(K, num_patches=2, grid_size=3)(images, labels, att, params=arm_params)
    assert torch.equal(mixed, want[0]) and torch.allclose(targets, want[1])
    by_name = Mix(cutmix_alpha=1.0, num_classes=K, arms={"cutmix": "random-cells"})
    assert type(by_name.arms["cutmix"]).__name__ == "RandomCells"
    assert by_name(images, labels)[0].shape == images.shape


def test_mix_segmentation_masks_follow_the_boxes_and_blends_refuse_them():
    images, labels = _batch()
    masks = torch.randint(0, K, (B, H, W))
    mixed, targets, mixed_masks = Mix(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=K, mode="elem")(
        images, labels, masks=masks, generator=torch.Generator().manual_seed(0))
    took = (mixed != images).any(1)
    assert torch.equal(mixed_masks[took], masks.flip(0)[took])
    with pytest.raises(ValueError, match="blends whole images"):
        Mix(num_classes=K)(images, labels, masks=masks)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mixup_alpha=0.0), "Mix needs an arm"),
    (dict(mixup_alpha=-1.0), "mixup_alpha must be 0"),
    (dict(cutmix_minmax=(0.8, 0.2)), "cutmix_minmax must be None or"),
    (dict(mode="batches"), "mode must be one of"),
    (dict(switch_prob=2.0), r"switch_prob must be in \[0, 1\]"),
    (dict(arms={"cutmix": "nonesuch"}), "unknown method 'nonesuch'"),
    (dict(arms={"saliency": CutMix(10)}), "arms must map timm's arms"),
    (dict(arms={"cutmix": CutMix(5)}), "num_classes=5 but Mix has num_classes=10"),
])
def test_mix_refuses_bad_arguments_by_name(kwargs, match):
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        Mix(num_classes=10, **kwargs)


def test_mixup_enabled_off_returns_the_batch_and_a_generator_given_once_repeats():
    images, labels = _batch()
    mix = Mix(cutmix_alpha=1.0, num_classes=K, generator=torch.Generator().manual_seed(3))
    mix.mixup_enabled = False
    mixed, targets = mix(images, labels)
    assert torch.equal(mixed, images)
    mix.mixup_enabled = True
    again = Mix(cutmix_alpha=1.0, num_classes=K, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mix(images, labels)[0], again(images, labels)[0])


@pytest.mark.parametrize("size", [(12, 10), (7, 9)])
def test_mix_boxes_follow_timms_rand_bbox_rule(size):
    """Every drawn box is timm's ``rand_bbox`` for its lam and some centre: sides ``int(H * sqrt(1 - lam))`` split
    as ``cut // 2`` above and ``(cut + 1) // 2`` below the centre, clipped (ours used ``cut // 2`` both ways)."""
    h, w = size
    params = Mix(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=K).make_params(
        4000, h, w, torch.Generator().manual_seed(0))
    lam, boxes = params["lam"].numpy(), params["boxes"].numpy()
    for (lo, hi), side in (((0, 1), h), ((2, 3), w)):
        cut = (side * np.sqrt(1 - lam)).astype(np.int64)  # as timm computes it from the float32 lam
        centres = np.arange(side)[None, :]
        starts = np.clip(centres - (cut // 2)[:, None], 0, side)
        ends = np.clip(centres + ((cut + 1) // 2)[:, None], 0, side)
        fits = (starts == boxes[:, lo, None]) & (ends == boxes[:, hi, None])
        assert fits.any(1).all()


@pytest.mark.parametrize("argv, ours", [
    (["--mixup", "0.8"], "--method mixup --alpha A"), (["--cutmix", "1.0"], "--method cutmix --alpha A"),
    (["--cutmix-minmax", "0.2", "0.8"], "Mix(cutmix_minmax="), (["--mixup-prob", "0.5"], "--prob P"),
    (["--mixup-switch-prob", "0.5"], "switch_prob=P"), (["--mixup-mode", "elem"], "Mix(mode=...)"),
    (["--mixup-off-epoch", "5"], "--mix-off-epoch N"),
])
def test_timms_mixing_flags_are_refused_naming_ours(argv, ours, capsys):
    from attentive_cutmix.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", "--epochs", "1", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{argv[0]} (timm's train.py) is not supported here" in err and ours in err


@pytest.mark.parametrize("kwargs", [dict(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem"),
                                    dict(mixup_alpha=0.8, cutmix_alpha=1.0, mode="pair", prob=0.7),
                                    dict(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8)),
                                    dict(mixup_alpha=0.0, cutmix_alpha=1.0, arms={"cutmix": "attentive-cutmix"})],
                         ids=["cutmix-elem", "switch-pair", "minmax", "attentive-arm"])
def test_mix_keeps_the_mixer_contract(kwargs):
    from attentive_cutmix import check_mixer

    check_mixer(Mix(num_classes=5, label_smoothing=0.0, **kwargs))
