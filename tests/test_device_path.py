"""The device-resident data path: same augmentation distribution as the loader path, maps moved with their
images, exact mid-epoch resume, a changed image folder noticed, the auto rule, and --eval-train on both paths."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

import attentive_cutmix.data.device as device_mod
from _guided_training import assert_mid_epoch_resume_is_exact
from attentive_cutmix.attention.cache import build_cache
from attentive_cutmix.data import build_datasets
from attentive_cutmix.data.device import PADDING, DeviceSplit, ImageCacheError, crop_flip, decode_split, device_split
from attentive_cutmix.data.transforms import train_transform
from attentive_cutmix.serialization import safe_torch_load
from attentive_cutmix.training import ConfigError, data_setup, evaluate, make_config, train
from attentive_cutmix.training import trainer as trainer_mod
from attentive_cutmix.training.data_setup import unaugmented
from attentive_cutmix.training.distributed import DistInfo

SIZE = 8  # >= PADDING, so every crop keeps image pixels from which its offset can be read
POSITIONS = 2 * PADDING + 1


def _chi2_bound(dof: int, z: float = 3.72) -> float:
    """Upper chi-square quantile (Wilson-Hilferty); z=3.72 is the one-sided 1e-4 level."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def _coordinate_image() -> torch.Tensor:
    """uint8 (3, S, S): channel 0 = row + 1, channel 1 = col + 1, channel 2 = 1; 0 only where the crop pads."""
    rows = torch.arange(1, SIZE + 1).view(SIZE, 1).expand(SIZE, SIZE)
    return torch.stack([rows, rows.t(), torch.ones(SIZE, SIZE, dtype=torch.long)]).to(torch.uint8)


def _expected_crop(dy: int, dx: int, flip: bool) -> torch.Tensor:
    padded = F.pad(_coordinate_image(), (PADDING,) * 4)
    out = padded[:, dy:dy + SIZE, dx:dx + SIZE]
    return out.flip(-1) if flip else out


def _read_offsets(crop: torch.Tensor) -> tuple[int, int, bool]:
    """(dy, dx, flip) of one augmented coordinate image, after checking every pixel against them."""
    crop = crop.long()
    inside = crop[2] == 1
    i, j = (int(v) for v in inside.nonzero()[0])
    dy = int(crop[0, i, j]) - 1 - i + PADDING
    cols = crop[1][inside.any(1).nonzero()[0, 0]]  # a row that shows the image
    seen = cols[cols > 0]
    flip = len(seen) > 1 and bool(seen[0] > seen[-1])
    dx = int(crop[1, i, j]) - 1 + PADDING - ((SIZE - 1 - j) if flip else j)
    assert torch.equal(crop, _expected_crop(dy, dx, flip).long()), (dy, dx, flip)
    return dy, dx, flip


def _assert_uniform(offsets: list[tuple[int, int, bool]]) -> None:
    n = len(offsets)
    dys, dxs, flips = (np.array(v) for v in zip(*offsets))
    for axis in (dys, dxs):
        counts = np.bincount(axis, minlength=POSITIONS)
        assert len(counts) == POSITIONS  # no offset outside [0, 2p]
        chi2 = float(((counts - n / POSITIONS) ** 2 / (n / POSITIONS)).sum())
        assert chi2 < _chi2_bound(POSITIONS - 1), counts
    # The joint (dy, dx, flip) cells: independence of the three draws too.
    joint = np.bincount((dys * POSITIONS + dxs) * 2 + flips, minlength=2 * POSITIONS ** 2)
    expect = n / len(joint)
    assert float(((joint - expect) ** 2 / expect).sum()) < _chi2_bound(len(joint) - 1)
    assert abs(int(flips.sum()) - n / 2) < 4.5 * math.sqrt(n / 4)


def test_device_crop_flip_draws_uniform_offsets_and_fair_flips():
    n = 8000
    batch = _coordinate_image().unsqueeze(0).expand(n, -1, -1, -1).contiguous()
    out, _ = crop_flip(batch, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    _assert_uniform([_read_offsets(crop) for crop in out])


def test_loader_transform_draws_the_same_distribution():
    n = 4000
    transform = train_transform("cifar", SIZE)
    torch.manual_seed(0)  # v2 transforms draw from the global RNG
    image = _coordinate_image()
    crops = [(transform(image) * 255).round().to(torch.uint8) for _ in range(n)]
    _assert_uniform([_read_offsets(crop) for crop in crops])


def test_attention_map_moves_with_its_image_and_is_zero_in_the_padding():
    n, s = 5, 12
    idx = torch.arange(n).view(n, 1, 1)
    rows, cols = torch.arange(1, s + 1).view(1, s, 1), torch.arange(1, s + 1).view(1, 1, s)
    images = torch.stack([rows.expand(n, s, s), cols.expand(n, s, s), (idx + 1).expand(n, s, s)], 1).to(torch.uint8)
    # Every map pixel names its sample and coordinates; exact in float16 (integers below 2048).
    maps = (idx * 300 + rows * 16 + cols).to(torch.float16)
    split = DeviceSplit(images, torch.arange(n) * 10, maps)
    index = torch.tensor([3, 1, 0, 4, 2] * 40)
    x, labels, att = split.batch(index, torch.Generator().manual_seed(1))
    assert att.dtype == torch.float32 and att.shape == (len(index), s, s)
    assert torch.equal(labels, index * 10)
    code = (x * 255).round().long()
    expected = torch.where(code[:, 2] > 0, (code[:, 2] - 1) * 300 + code[:, 0] * 16 + code[:, 1], 0)
    assert torch.equal(att.long(), expected)
    assert torch.equal(code[:, 2].amax((1, 2)) - 1, index)  # each crop shows its own sample
    padded = code[:, 2] == 0
    assert padded.any() and (~padded).all(2).any()  # the padding was exercised ...
    flipped = code[:, 1, :, 1:] < code[:, 1, :, :-1]
    assert (flipped & ~padded[:, :, 1:] & ~padded[:, :, :-1]).any()  # ... and so was the flip


class _RedTimes255(torch.nn.Module):
    """A stand-in extractor: its map is the red channel in 0..255 (exact in the cache's float16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] * 255).round()


def test_cached_maps_follow_their_images_end_to_end(tmp_path):
    raw, _, info = build_datasets("synthetic", synthetic_size=24, augment=False)
    cache = build_cache(raw, _RedTimes255(), tmp_path / "att.safetensors", meta={"dataset": info.name},
                        batch_size=8, progress=False)
    train_ds, _, _ = build_datasets("synthetic", synthetic_size=24, attention_cache=cache)
    split = device_split(train_ds, info.image_size, torch.device("cpu"))
    x, _, att = split.batch(torch.arange(24).repeat(4), torch.Generator().manual_seed(2))
    red = (x[:, 0] * 255).round()
    assert torch.equal(att, red)  # padding included: both zero there
    assert att.flatten(1).std(1).min() > 0  # real structure in every map, so a misplaced map would differ


# ------------------------------------------------------------------------------------------ trainer
def _opts(out: Path, **kw):
    base = dict(dataset="synthetic", synthetic_size=[48, 16], model="cifar_resnet20", epochs=2, batch_size=16,
                workers=0, output_dir=str(out), progress=False, seed=5, data_path="device")
    return {**base, **kw}


def _checkpoint(out: Path):
    return safe_torch_load(out / "checkpoint.pt")


def test_mid_epoch_resume_on_the_device_path_is_exact(tmp_path, monkeypatch):
    opts = {k: v for k, v in _opts(tmp_path, method="cutmix").items() if k != "output_dir"}
    a, b = assert_mid_epoch_resume_is_exact(tmp_path, monkeypatch, opts)
    assert a["config"]["data_path_used"] == b["config"]["data_path_used"] == "device"


def _write_folder(root: Path, per_class: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for cls in ("ant", "bee"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = "png" if i % 2 else "jpg"  # both decoders
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / cls / f"{i:02d}.{ext}")


def _folder_opts(tmp_path: Path, out: str, cache: Path):
    return dict(dataset="imagefolder", data_dir=str(tmp_path / "images"), val_fraction=0.25, model="cifar_resnet20",
                epochs=1, batch_size=4, workers=0, output_dir=str(tmp_path / out), progress=False,
                data_path="device", image_cache=str(cache))


def test_an_unchanged_folder_reuses_the_image_cache(tmp_path):
    _write_folder(tmp_path / "images")
    cache = tmp_path / "frames.safetensors"
    train(make_config(_folder_opts(tmp_path, "first", cache)))
    stamp = cache.stat().st_mtime_ns
    train(make_config(_folder_opts(tmp_path, "second", cache)))
    assert cache.stat().st_mtime_ns == stamp  # read, not rebuilt


def _cached_split(cache: Path, name: str) -> torch.Tensor:
    return load_file(cache)[name]


def _decoded(tmp_path: Path, name: str) -> torch.Tensor:
    """What the folder decodes to now, without any cache."""
    train_ds, eval_ds, info = build_datasets("imagefolder", data_dir=tmp_path / "images", val_fraction=0.25)
    return decode_split(train_ds if name == "train" else eval_ds, info.image_size)


def test_a_file_added_to_the_folder_rebuilds_the_cache_with_a_warning(tmp_path):
    _write_folder(tmp_path / "images")
    cache = tmp_path / "frames.safetensors"
    train(make_config(_folder_opts(tmp_path, "first", cache)))
    Image.fromarray(np.zeros((SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / "images" / "ant" / "99.png")
    with pytest.warns(UserWarning, match="train split was decoded from other files.*decoding it again") as rec:
        train(make_config(_folder_opts(tmp_path, "second", cache)))
    assert any(str(cache) in str(w.message) for w in rec)
    assert torch.equal(_cached_split(cache, "train"), _decoded(tmp_path, "train"))  # the new frames, stored


def test_a_folder_copied_elsewhere_with_new_times_trains_and_keeps_the_other_split(tmp_path):
    # A job that stages its data on scratch: the same files, new modification times.
    _write_folder(tmp_path / "images")
    cache = tmp_path / "frames.safetensors"
    train(make_config(_folder_opts(tmp_path, "first", cache)))
    for f in (tmp_path / "images").rglob("*.*"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="decoding it again"):
        train(make_config(_folder_opts(tmp_path, "second", cache)))
    assert (tmp_path / "second" / "results.json").is_file()
    for name in ("train", "eval"):
        assert torch.equal(_cached_split(cache, name), _decoded(tmp_path, name))


@pytest.mark.parametrize("split", ["train", "eval"])
def test_a_replaced_file_rebuilds_the_split_that_holds_it(tmp_path, split):
    _write_folder(tmp_path / "images")
    cache = tmp_path / "frames.safetensors"
    train(make_config(_folder_opts(tmp_path, "first", cache)))
    train_ds, eval_ds, _ = build_datasets("imagefolder", data_dir=tmp_path / "images", val_fraction=0.25)
    ds = train_ds if split == "train" else eval_ds
    victim = Path(ds.source.paths[ds.indices[0]])
    before = victim.stat().st_size
    # Another image of another byte size: what the fingerprint (path, size) can see.
    Image.fromarray(np.full((SIZE, SIZE, 3), 7, dtype=np.uint8)).save(victim, format=victim.suffix[1:].replace(
        "jpg", "jpeg"))
    assert victim.stat().st_size != before
    with pytest.warns(UserWarning, match=f"its {split} split was decoded from other files"):
        train(make_config(_folder_opts(tmp_path, "second", cache)))
    assert torch.equal(_cached_split(cache, split), _decoded(tmp_path, split))  # never the old pixels


def test_device_path_on_large_images_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--data-path device does not apply .*96 px.*--data-path loader"):
        train(make_config(_opts(tmp_path / "big", image_size=96, synthetic_size=[8, 8], batch_size=4)))
    assert not (tmp_path / "big" / "checkpoint.pt").exists()


def test_auto_picks_the_device_path_when_the_data_fits(tmp_path, monkeypatch):
    asked = []
    real = device_mod.fits_on_device
    monkeypatch.setattr(data_setup, "fits_on_device", lambda n, device: asked.append(n) or real(n, device))
    run = trainer_mod._Run(make_config(_opts(tmp_path / "auto", data_path="auto")), DistInfo(), torch.device("cpu"))
    assert run.batches.path == "device" and len(run.batches.train) == 48 and len(run.batches.held_out) == 16
    assert asked == [(48 + 16) * 3 * 32 * 32]  # both splits as uint8


def test_auto_falls_back_to_the_loader_path_when_the_data_does_not_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(data_setup, "fits_on_device", lambda n, device: False)
    run = trainer_mod._Run(make_config(_opts(tmp_path / "auto", data_path="auto")), DistInfo(), torch.device("cpu"))
    assert run.batches.path == "loader" and len(run.batches) == 48 and len(run.batches.held_out) == 16


@pytest.mark.parametrize("path", ["device", "loader"])
def test_eval_train_adds_train_accuracy_to_every_evaluated_row(tmp_path, path):
    out = tmp_path / path
    res = train(make_config(_opts(out, data_path=path, eval_train=True, epochs=3, eval_every=2)))
    curve = res["curve"]
    assert [row["top1"] is not None for row in curve] == [False, True, True]  # epochs 2 and 3 (the last)
    assert "train_top1" not in curve[0]
    for row in curve[1:]:
        assert 0.0 <= row["train_top1"] <= 100.0 and row["train_eval_loss"] > 0
    # The figure is the final model's accuracy on the un-augmented training split.
    ckpt = _checkpoint(out)
    assert ckpt["config"]["data_path_used"] == path
    model = trainer_mod.create_model("cifar_resnet20", num_classes=ckpt["config"]["num_classes"], image_size=32)
    model.load_state_dict(ckpt["model"])
    train_ds, _, info = build_datasets("synthetic", synthetic_size=[48, 16])
    metrics = evaluate(model, DataLoader(unaugmented(train_ds, info), batch_size=16), info, "cpu")
    assert metrics["top1"] == pytest.approx(curve[-1]["train_top1"])
    assert metrics["loss"] == pytest.approx(curve[-1]["train_eval_loss"], rel=1e-5)


def test_every_rank_takes_the_same_number_of_steps(tmp_path):
    # Under torchrun the ranks' shards of the permutation differ in length by one (127 images: 64 and 63); a
    # rank with one step fewer would leave the other waiting in DDP's all-reduce for ever.
    cfg = make_config(_opts(tmp_path / "ddp", synthetic_size=[127, 8], batch_size=32))
    run = trainer_mod._Run(cfg, DistInfo(), torch.device("cpu"))
    steps, sizes = [], []
    for rank in range(2):
        batches, total = dataclasses.replace(run.batches, dist=DistInfo(rank=rank, world_size=2)).epoch(1)
        steps.append(total)
        sizes.append([len(batch[1]) for batch in batches])
    assert steps == [1, 1] and sizes == [[32], [32]]


# --------------------------------------------------------------------------- image cache misuse (never overwrites)
def _folder(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def folder_split(tmp_path):
    train_ds, _, info = build_datasets("imagefolder", data_dir=_folder(tmp_path / "d"), val_fraction=0.25)
    return train_ds, info


def test_image_cache_never_overwrites_a_weights_file(folder_split, tmp_path):
    train_ds, info = folder_split
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(3)}, str(weights))
    before = weights.read_bytes()
    with pytest.raises(ImageCacheError, match="not an image cache.*nothing was written"):
        device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=weights)
    assert weights.read_bytes() == before and torch.equal(load_file(str(weights))["w"], torch.ones(3))


def test_image_cache_that_is_a_folder_is_named(folder_split, tmp_path):
    train_ds, info = folder_split
    with pytest.raises(ImageCacheError, match="is a folder; give a file path"):
        device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=tmp_path)


def test_image_cache_is_reused_for_the_same_folder(folder_split, tmp_path):
    train_ds, info = folder_split
    path = tmp_path / "images.safetensors"
    first = device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=path)
    mtime = path.stat().st_mtime_ns
    again = device_split(train_ds, info.image_size, torch.device("cpu"), image_cache=path)
    assert torch.equal(first.images, again.images) and path.stat().st_mtime_ns == mtime


def test_image_cache_set_where_it_cannot_apply_is_refused(tmp_path):
    cfg = make_config(dict(dataset="synthetic", synthetic_size=[32, 8], epochs=1, workers=0, progress=False,
                           image_cache=str(tmp_path / "x.safetensors"), output_dir=str(tmp_path / "run")))
    with pytest.raises(ConfigError, match="--image-cache .* applies to image folders"):
        train(cfg)
