"""SaliencyMix against its definition, and its saliency against OpenCV's own ``StaticSaliencyFineGrained``.

The box: CutMix's size for ``1 - lam`` around the peak of the *partner's* map, clipped, lam exact (planted peaks);
``shared_box`` one box for the batch at image 0's partner's peak (the official code); ``guidance="shuffled"`` the
same draws and label rule with another image's map. The saliency: bit-exact 8-bit maps against OpenCV on real
CIFAR-10 images (measured: 64 of 64 maps identical, 64 of 64 peaks in the same pixel, mean Pearson r 1.000) and on
synthetic images of odd sizes; OpenCV (opencv-contrib-python-headless) is a test dependency only.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attentive_cutmix import SaliencyMix, fine_grained_saliency
from attentive_cutmix.cli import main
from attentive_cutmix.mixers.saliencymix import _blur_121, saliency_peaks

K = 10
CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "train"
TINY = ["--dataset", "synthetic", "--synthetic-size", "64", "16", "--epochs", "1", "--batch-size", "32",
        "--workers", "0", "--no-progress", "--data-path", "device"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spikes(peaks: list[tuple[int, int]], h: int, w: int) -> torch.Tensor:
    """(B, h, w) maps, each 0 but for a single 1 at its planted peak."""
    maps = torch.zeros(len(peaks), h, w)
    for i, (y, x) in enumerate(peaks):
        maps[i, y, x] = 1.0
    return maps


def _marked(b: int, h: int, w: int) -> torch.Tensor:
    """Image i is the constant i + 1 (so a pasted pixel says where it came from)."""
    return (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 3, h, w).clone()


def _expected_box(lam: float, cy: int, cx: int, h: int, w: int) -> tuple[int, int, int, int]:
    """The official ``saliency_bbox``: cut = int(side * sqrt(1 - lam)), centre +- cut // 2, clipped."""
    cut_h, cut_w = int(h * np.sqrt(1.0 - lam)), int(w * np.sqrt(1.0 - lam))
    return (min(max(cy - cut_h // 2, 0), h), min(max(cy + cut_h // 2, 0), h),
            min(max(cx - cut_w // 2, 0), w), min(max(cx + cut_w // 2, 0), w))


# --------------------------------------------------------------------------- the box, from planted peaks
PEAKS = [(3, 4), (10, 20), (0, 0), (23, 23), (12, 5), (7, 17)]


@pytest.mark.parametrize("guidance", ["own", "shuffled"])
def test_each_box_is_centred_at_its_partners_peak_clipped_with_exact_lam(guidance):
    b, h, w = len(PEAKS), 24, 24
    mixer = SaliencyMix(K, guidance=guidance)
    maps, images, labels = _spikes(PEAKS, h, w), _marked(b, h, w), torch.arange(b)
    params = mixer.make_params(b, h, w, _gen(3))
    mixed, targets = mixer(images, labels, maps, params=params)
    perm = params["perm"].tolist()
    guide = params["guide_perm"].tolist() if guidance == "shuffled" else list(range(b))
    for i in range(b):
        source = guide[perm[i]]  # own: the partner's map; shuffled: the map of the image the derangement names
        y0, y1, x0, x1 = _expected_box(params["lam"][i].item(), *PEAKS[source], h, w)
        want = torch.zeros(h, w, dtype=torch.bool)
        want[y0:y1, x0:x1] = True
        assert torch.equal(mixed[i, 0] == perm[i] + 1, want), i  # the pasted pixels are the partner's, in the box
        area = (y1 - y0) * (x1 - x0) / (h * w)
        assert targets[i, perm[i]].item() == pytest.approx(area, abs=1e-7)  # exact lam from the clipped box
        assert targets[i, i].item() == pytest.approx(1 - area, abs=1e-7)
    if guidance == "shuffled":
        assert any(guide[p] != p for p in perm)  # really another image's map


def test_shuffled_guidance_keeps_the_draws_box_sizes_and_label_rule():
    b, h, w = 6, 32, 32
    own, shuffled = SaliencyMix(K), SaliencyMix(K, guidance="shuffled")
    p_own, p_shuf = own.make_params(b, h, w, _gen(7)), shuffled.make_params(b, h, w, _gen(7))
    # Draw order: perm, then lam, then (shuffled only) the independent derangement.
    assert torch.equal(p_own["perm"], p_shuf["perm"]) and torch.equal(p_own["lam"], p_shuf["lam"])
    assert set(p_shuf) - set(p_own) == {"guide_perm"} and (p_shuf["guide_perm"] != torch.arange(b)).all()
    central = _spikes([(16, 16), (14, 15), (15, 17), (17, 14), (16, 13), (13, 16)], h, w)  # no box is clipped
    boxes_own, boxes_shuf = own.boxes(p_own, h, w, central), shuffled.boxes(p_shuf, h, w, central)
    assert torch.equal(boxes_own[:, 1] - boxes_own[:, 0], boxes_shuf[:, 1] - boxes_shuf[:, 0])
    assert torch.equal(boxes_own[:, 3] - boxes_own[:, 2], boxes_shuf[:, 3] - boxes_shuf[:, 2])
    assert not torch.equal(boxes_own, boxes_shuf)  # placed at other maps' peaks
    _, t_own = own(_marked(b, h, w), torch.arange(b), central, params=p_own)
    _, t_shuf = shuffled(_marked(b, h, w), torch.arange(b), central, params=p_shuf)
    assert torch.equal(t_own, t_shuf)  # same sizes, same exact lam


def test_shared_box_is_one_box_at_the_peak_of_image_zeros_partner():
    b, h, w = len(PEAKS), 24, 24
    mixer = SaliencyMix(K, shared_box=True)
    params = mixer.make_params(b, h, w, _gen(5))
    assert (params["lam"] == params["lam"][0]).all()  # one lam for the batch
    maps = _spikes(PEAKS, h, w)
    boxes = mixer.boxes(params, h, w, maps)
    assert (boxes == boxes[0]).all()
    partner = params["perm"][0].item()
    assert tuple(boxes[0].tolist()) == _expected_box(params["lam"][0].item(), *PEAKS[partner], h, w)


def test_a_map_of_another_size_puts_its_peak_cell_centre_in_image_pixels():
    maps = _spikes([(0, 0), (3, 2), (7, 7)], 8, 8)
    cy, cx = saliency_peaks(maps, 32, 32)
    assert cy.tolist() == [2, 14, 30] and cx.tolist() == [2, 10, 30]
    ties = torch.ones(1, 4, 4)
    assert [t.item() for t in saliency_peaks(ties, 4, 4)] == [0, 0]  # the first maximum, as np.argmax


def test_region_is_the_pasted_box_and_masks_follow_it():
    b, h, w = 4, 16, 16
    mixer = SaliencyMix(K)
    images = torch.rand(b, 3, h, w, generator=_gen(1))
    masks = torch.arange(b).view(b, 1, 1).expand(b, h, w).clone()
    params = mixer.make_params(b, h, w, _gen(2))
    mixed, _, mixed_masks = mixer(images, torch.arange(b), params=params, masks=masks)
    region = mixer.region(params, h, w, mixer.guide(images))
    pasted = (mixed != images).any(1)
    assert torch.equal(pasted, region) and region.any()
    assert torch.equal(mixed_masks, torch.where(region, masks[params["perm"]], masks))
    with pytest.raises(ValueError, match=r"region needs the saliency maps .*attention=mixer.guide"):
        mixer.region(params, h, w)


def test_replay_gives_the_same_batch_and_bad_params_are_refused():
    b, h, w = 4, 16, 16
    mixer, images, labels = SaliencyMix(K), torch.rand(b, 3, h, w, generator=_gen(1)), torch.arange(b)
    first = mixer(images, labels, generator=_gen(9))
    again = mixer(images, labels, params=mixer.make_params(b, h, w, _gen(9)))
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    params = mixer.make_params(b, h, w, _gen(9))
    params["lam"][2] = 1.5
    with pytest.raises(ValueError, match=r"params\['lam'\] must hold the kept fractions lam in \[0, 1\]; row 2"):
        mixer(images, labels, params=params)
    with pytest.raises(ValueError, match=r"keys \['guide_perm', 'lam', 'perm'\]"):
        SaliencyMix(K, guidance="shuffled")(images, labels, params=mixer.make_params(b, h, w, _gen(9)))


def test_bad_options_and_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0, got alpha=0"):
        SaliencyMix(K, alpha=0)
    with pytest.raises(TypeError, match=r"shared_box must be True .* or False .*got shared_box='yes'"):
        SaliencyMix(K, shared_box="yes")
    with pytest.raises(ValueError, match=r"guidance must be one of \('own', 'shuffled'\).*guidance='other'"):
        SaliencyMix(K, guidance="other")
    with pytest.raises(ValueError, match=r"saliency needs \(B, 3, H, W\) RGB or \(B, 1, H, W\) grey images"):
        SaliencyMix(K)(torch.rand(2, 4, 8, 8), torch.arange(2))
    with pytest.raises(ValueError, match=r"attention has batch size 3 but images has 2"):
        SaliencyMix(K)(torch.rand(2, 3, 8, 8), torch.arange(2), torch.rand(3, 8, 8))


def test_a_normalised_batch_gets_a_one_time_warning():
    images = (torch.rand(4, 3, 16, 16, generator=_gen(1)) - 0.45) / 0.22
    mixer = SaliencyMix(K)
    with pytest.warns(UserWarning, match=r"reads images in \[0, 1\] .* got values in \[-2\.\d\d, 2\.\d\d\]"):
        mixer(images, torch.arange(4), generator=_gen())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixer(images, torch.arange(4), generator=_gen())  # once
        SaliencyMix(K)(torch.rand(4, 3, 16, 16), torch.arange(4), generator=_gen())  # [0, 1]: quiet


def test_it_runs_on_meta_tensors_so_it_never_reads_a_device_value():
    for mixer in (SaliencyMix(K), SaliencyMix(K, shared_box=True, guidance="shuffled")):
        images = torch.rand(8, 3, 32, 32, device="meta")
        masks = torch.zeros(8, 32, 32, dtype=torch.long, device="meta")
        mixed, targets, mixed_masks = mixer(images, torch.zeros(8, dtype=torch.long, device="meta"), masks=masks,
                                            generator=_gen())
        assert mixed.device.type == targets.device.type == mixed_masks.device.type == "meta"
        assert targets.shape == (8, K)


def test_gradients_reach_both_images_and_channels_last_is_kept():
    images = torch.rand(4, 3, 16, 16, generator=_gen(1)).contiguous(memory_format=torch.channels_last)
    images.requires_grad_(True)
    mixer = SaliencyMix(K)
    params = mixer.make_params(4, 16, 16, _gen(2))
    mixed, _ = mixer(images, torch.arange(4), params=params)
    assert mixed.is_contiguous(memory_format=torch.channels_last)
    mixed.sum().backward()
    # A pixel's gradient counts the outputs it reaches: its own image outside the box, its taker's inside it.
    region = mixer.region(params, 16, 16, mixer.guide(images)).float()
    want = (1 - region).index_add(0, params["perm"], region).unsqueeze(1).expand_as(images)
    assert region.any() and torch.equal(images.grad, want)


# --------------------------------------------------------------------------- the saliency map
def test_a_planted_bright_pixel_is_the_saliency_peak():
    # One bright pixel on a flat grey: the most "on" pixel, and no pixel darker than its surround by a whole grey
    # level (so the "off" map is empty and cannot tie at 255: the map's peak is the planted pixel alone).
    images = torch.full((4, 3, 64, 64), 0.3)
    spots = [(20, 30), (40, 25), (33, 43), (24, 24)]
    for i, (y, x) in enumerate(spots):
        images[i, :, y, x] = 1.0
    maps = fine_grained_saliency(images)
    assert (maps == 1).flatten(1).sum(1).tolist() == [1] * 4
    cy, cx = saliency_peaks(maps, 64, 64)
    assert list(zip(cy.tolist(), cx.tolist())) == spots


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _agreement(maps: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    w = ref.shape[-1]
    a, b = maps.flatten(1).argmax(1), ref.flatten(1).argmax(1)
    dist = torch.maximum((a // w - b // w).abs(), (a % w - b % w).abs())
    same = (torch.round(maps * 255) == torch.round(ref * 255)).flatten(1).all(1)
    return {"peak": (dist == 0).float().mean().item(), "peak_1px": (dist <= 1).float().mean().item(),
            "r": _pearson(maps, ref).mean().item(), "same_map": same.float().mean().item()}


def _opencv(rgb: np.ndarray) -> torch.Tensor:
    """OpenCV's map of (N, H, W, 3) uint8 RGB images (OpenCV reads BGR)."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "saliency"):
        pytest.skip("cv2 without the contrib modules (pip install opencv-contrib-python-headless)")
    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    return torch.from_numpy(np.stack([detector.computeSaliency(np.ascontiguousarray(im[..., ::-1]))[1]
                                      for im in rgb]))


def _ours(rgb: np.ndarray) -> torch.Tensor:
    return fine_grained_saliency(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255)


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="../shared/data/cifar10-jpeg not present")
def test_the_saliency_matches_opencv_on_real_cifar10_images():
    from PIL import Image
    files = [d / name for d in sorted(CIFAR_JPEG.iterdir()) for name in sorted(os.listdir(d))[:7]][:64]
    rgb = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    ref = _opencv(rgb)
    ours = _agreement(_ours(rgb), ref)
    # Measured: every 8-bit map identical, so every peak in the same pixel and r = 1.000.
    assert ours["same_map"] >= 0.95 and ours["peak"] >= 0.95 and ours["peak_1px"] >= 0.95 and ours["r"] >= 0.99
    # What the thresholds reject (measured on these 64): the grey image itself (same peak 5%, r 0.00), its blur
    # (39%, r 0.00) and a one-scale centre-surround |grey - local mean| (6%, r 0.65).
    grey = torch.from_numpy(rgb).float() @ torch.tensor([0.299, 0.587, 0.114])
    local = (grey - F.avg_pool2d(grey[:, None], 25, 1, 12, count_include_pad=False)[:, 0]).abs()
    for wrong in (grey, _blur_121(_blur_121(grey.round())), local):
        bad = _agreement(wrong / wrong.amax((1, 2), keepdim=True), ref)
        assert bad["peak"] < 0.5 and bad["r"] < 0.9 and bad["same_map"] < 0.5


@pytest.mark.parametrize("size", [(32, 32), (7, 13), (1, 9), (9, 1), (2, 5), (1, 1), (96, 80), (300, 40)])
def test_the_saliency_matches_opencv_bit_for_bit_on_any_size(size):
    rng = np.random.default_rng(0)
    h, w = size
    noise = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    smooth = np.stack([128 + 100 * np.sin(yy / 3.0 + c) * np.cos(xx / 5.0) for c in range(3)], -1).astype(np.uint8)
    flat = np.full((h, w, 3), 77, np.uint8)  # no contrast: OpenCV's 0/0 gives an all-zero map
    rgb = np.concatenate([noise, smooth[None], flat[None]])
    # (300, 40): a side over 256 px sums its windows in float64
    torch.testing.assert_close(torch.round(_ours(rgb) * 255), torch.round(_opencv(rgb) * 255), atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_saliency_is_the_same_on_the_gpu():
    images = torch.rand(16, 3, 32, 32, generator=_gen(4))
    assert torch.equal(fine_grained_saliency(images.cuda()).cpu(), fine_grained_saliency(images))
    with torch.cuda._DeviceGuard(0):
        torch.cuda.set_sync_debug_mode("error")
        try:
            SaliencyMix(K)(images.cuda(), torch.arange(16).cuda() % K, generator=torch.Generator("cuda").manual_seed(0))
        finally:
            torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------- through the harness
def test_saliencymix_trains_through_train_on_the_device_path(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", "saliencymix", "--shared-box", "true", "--guidance", "shuffled",
                 "--alpha", "0.5", "--output-dir", str(out)]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    config = results["config"]
    assert results["status"] == "finished" and config["method"] == "saliencymix"
    assert config["data_path_used"] == "device"
    assert (config["alpha"], config["shared_box"], config["guidance"]) == (0.5, True, "shuffled")


def test_saliencymix_runs_in_a_compare_grid_against_cutmix(run_toy_grid):
    out = run_toy_grid("{method: [cutmix, saliencymix], seed: [0]}")
    assert "| saliency part: SaliencyMix vs CutMix |" in (out / "paired.md").read_text()
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted((r["labels"]["method"], r["status"]) for r in runs) == [("cutmix", "finished"),
                                                                          ("saliencymix", "finished")]
    cells = [json.loads((out / "runs" / r["id"] / "results.json").read_text())["config"] for r in runs]
    assert [c["data_path_used"] for c in cells] == ["device", "device"]  # 'auto' picks it for these small images
