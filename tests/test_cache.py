"""Attention cache: round trip, same cells as online attention, refusal of mismatched or damaged files."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset, TensorDataset

from attentive_cutmix import AttentiveCutMix
from attentive_cutmix.attention import FeatureExtractor, channel_attention, load_extractor
from attentive_cutmix.attention.cache import (
    AttentionCache,
    CacheError,
    CacheMismatchError,
    build_cache,
    cache_meta,
    open_cache,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _info(n: int, name: str = "synthetic", fingerprint: str = "f" * 64) -> SimpleNamespace:
    return SimpleNamespace(name=name, image_size=32, train_fingerprint=fingerprint, num_train=n)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    torch.manual_seed(0)
    return load_extractor("cifar_resnet20", input_size=32)


@pytest.fixture(scope="module")
def built(tmp_path_factory, extractor):
    images = _images(20)
    ds = TensorDataset(images, torch.zeros(20, dtype=torch.long))
    meta = cache_meta(_info(20), extractor)
    path = tmp_path_factory.mktemp("cache") / "att.safetensors"
    cache = build_cache(ds, extractor, path, meta=meta, batch_size=8, progress=False)  # 8 does not divide 20
    return SimpleNamespace(images=images, meta=meta, path=path, cache=cache)


def test_round_trip_matches_extractor_in_fp16(built, extractor):
    cache = built.cache
    assert len(cache) == 20 and cache.grid == (8, 8) and cache.meta["grid"] == [8, 8]
    online = channel_attention(extractor(built.images))
    cached = torch.stack([cache[i] for i in range(len(cache))])
    assert cached.dtype == torch.float16 and cached.shape == online.shape
    torch.testing.assert_close(cached.float(), online, rtol=2e-3, atol=2e-3 * float(online.abs().max()))
    assert torch.equal(cache[-1], cache[19])
    with pytest.raises(IndexError, match="out of range"):
        cache[20]


def test_file_is_a_valid_safetensors_with_json_header(built):
    with safe_open(str(built.path), "pt") as f:
        tensor = f.get_tensor("attention")
        header = json.loads(f.metadata()["attentive_cutmix"])
    assert torch.equal(tensor[3], built.cache[3])
    for key in ("dataset", "length", "fingerprint", "extractor", "source_kind", "source_name", "source_path",
                "weights_sha256", "attention", "input_size", "mean", "std", "grid", "format_version", "created_at"):
        assert key in header, key
    assert header["length"] == 20 and header["extractor"] == "cifar_resnet20"
    assert (header["source_kind"], header["source_name"], header["source_path"]) == ("name", "cifar_resnet20", None)
    assert header["attention"] == "channel_mean" and header["weights_sha256"] == "n/a (random weights)"


def _margin_ok(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Samples whose k-th and (k+1)-th scores differ by more than fp16 rounding (2**-11 relative, each) can move."""
    top = scores.flatten(1).sort(dim=1, descending=True).values
    return (top[:, k - 1] - top[:, k]) > 2.0 ** -10 * top.abs().max(dim=1).values


def _assert_same_cells(cached: torch.Tensor, online_features: torch.Tensor, grid: int) -> None:
    mixer = AttentiveCutMix(10, grid_size=grid, num_patches=6)
    online = channel_attention(online_features)
    ok = _margin_ok(online, 6)
    assert ok.float().mean() >= 0.75, "too many near-ties for the comparison to mean anything"
    same = (mixer.pixel_mask(cached.float(), 32, 32) == mixer.pixel_mask(online_features, 32, 32)).flatten(1).all(1)
    assert bool(same[ok].all()), ("cached and online attention chose different cells for samples "
                                  f"{(~same & ok).nonzero().flatten().tolist()}")


def test_cached_and_online_attention_select_same_cells(built, extractor):
    cached = torch.stack([built.cache[i] for i in range(20)])
    _assert_same_cells(cached, extractor(built.images), grid=8)  # native grid: pooling is the identity


def test_real_resnet56_on_real_images_selects_same_cells(tmp_path):
    weights = SHARED / "models" / "cifar10-resnet56.safetensors"
    root = SHARED / "data" / "cifar10-jpeg" / "train"
    if not weights.is_file() or not root.is_dir():
        pytest.skip("../shared CIFAR-10 weights or images not present")
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    files = [f for d in sorted(root.iterdir()) for f in sorted(d.glob("*.jpg"))[:1]]
    images = torch.stack([pil_to_tensor(Image.open(f).convert("RGB")).float() / 255 for f in files])
    ext = load_extractor("cifar_resnet56", weights=weights, input_size=32)
    meta = cache_meta(_info(len(images), name="cifar10"), ext)
    assert len(meta["weights_sha256"]) == 64 and meta["grid"] == [8, 8]
    cache = build_cache(TensorDataset(images), ext, tmp_path / "c.safetensors", meta=meta, batch_size=4, progress=False)
    cached = torch.stack([cache[i] for i in range(len(cache))])
    _assert_same_cells(cached, ext(images), grid=8)


# --------------------------------------------------------------------------- refusals
def test_matching_expectation_is_accepted(built):
    assert open_cache(built.path, expect=built.meta).meta["fingerprint"] == built.meta["fingerprint"]


def test_mismatch_names_every_differing_field(built):
    expect = dict(built.meta, dataset="cifar10", length=21, fingerprint="0" * 64, extractor="resnet152",
                  weights_sha256="a" * 64, input_size=224, grid=[7, 7])
    with pytest.raises(CacheMismatchError) as err:
        open_cache(built.path, expect=expect)
    msg = str(err.value)
    for field, want, got in (("dataset", "cifar10", "synthetic"), ("length", 21, 20),
                             ("fingerprint", "0" * 64, "f" * 64), ("extractor", "resnet152", "cifar_resnet20"),
                             ("input_size", 224, 32), ("grid", [7, 7], [8, 8])):
        assert f"{field}: expected {want!r}, found {got!r}" in msg, field
    assert "weights_sha256" in msg and "--build-cache" in msg
    assert "cache-attention --dataset cifar10 --extractor resnet152" in msg  # the hint rebuilds for the run that asked
    for same in ("mean:", "std:", "layer:", "image_size:"):
        assert same not in msg


def test_moved_weights_with_same_hash_are_accepted(tmp_path, extractor):
    ds = TensorDataset(_images(4))
    meta = dict(cache_meta(_info(4), extractor), source_kind="weights", source_path="/old/place/w.safetensors",
                weights_sha256="b" * 64)
    path = build_cache(ds, extractor, tmp_path / "c.safetensors", meta=meta, progress=False).path
    open_cache(path, expect=dict(meta, source_path="/new/place/w.safetensors"))
    with pytest.raises(CacheMismatchError, match="weights_sha256"):
        open_cache(path, expect=dict(meta, weights_sha256="c" * 64))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*cache-attention"):
        open_cache(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("cut", [1, 100, 2000])
def test_truncated_file_is_refused(built, tmp_path, cut):
    data = built.path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:-cut])
    with pytest.raises(CacheError, match="truncated") as err:
        open_cache(bad)
    assert "cache-attention" in str(err.value)


def test_foreign_files_are_refused(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a cache at all\n" * 10)
    with pytest.raises(CacheError, match="not an attention cache"):
        open_cache(text)
    weights = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(weights))
    with pytest.raises(CacheError, match="not an attention cache"):
        open_cache(weights)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CacheError, match="too short"):
        open_cache(empty)


# --------------------------------------------------------------------------- scale and safety
class _Pool(torch.nn.Module):
    """A cheap 'extractor' whose map is the image itself (so stored values can be checked exactly)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _io_read_bytes() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def test_large_cache_is_memory_mapped_not_read(tmp_path):
    n = 60_000
    maps = torch.rand(n, 1, 7, 7, generator=torch.Generator().manual_seed(1)).half().float()
    path = build_cache(TensorDataset(maps), _Pool(), tmp_path / "big.safetensors", meta={"dataset": "big"},
                       batch_size=8192, progress=False).path
    assert path.stat().st_size > 5_000_000
    before = _io_read_bytes()
    cache = open_cache(path, in_memory=False)  # what a cache above IN_MEMORY_MAX_BYTES gets without asking
    after = _io_read_bytes()
    assert isinstance(cache.maps, np.memmap)
    if before is not None:
        assert after - before < 100_000, f"open_cache read {after - before} bytes of a {path.stat().st_size}-byte file"
    for i in (0, 12_345, n - 1):
        assert torch.equal(cache[i].float(), maps[i, 0])
    # Pickling (spawned DataLoader workers, DDP) ships the path, not the maps.
    blob = pickle.dumps(cache)
    assert len(blob) < 10_000
    clone = pickle.loads(blob)
    assert (isinstance(clone, AttentionCache) and isinstance(clone.maps, np.memmap)
            and torch.equal(clone[777], cache[777]))


class _Failing(Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        if i == 30:
            raise RuntimeError("disk went away")
        return torch.rand(3, 32, 32), 0


def test_failed_build_leaves_existing_cache_untouched(built, tmp_path, extractor):
    target = tmp_path / "keep.safetensors"
    target.write_bytes(built.path.read_bytes())
    with pytest.raises(RuntimeError, match="disk went away"):
        build_cache(_Failing(), extractor, target, meta={}, batch_size=8, progress=False)
    assert target.read_bytes() == built.path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_build_validates_arguments(tmp_path, extractor):
    ds = TensorDataset(_images(4))
    with pytest.raises(ValueError, match="length=5"):
        build_cache(ds, extractor, tmp_path / "a", meta={"length": 5}, progress=False)
    with pytest.raises(ValueError, match="grid"):
        build_cache(ds, extractor, tmp_path / "a", meta={"grid": [7, 7]}, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        build_cache(ds, extractor, tmp_path / "a", meta={}, batch_size=0, progress=False)
    with pytest.raises(TypeError, match="JSON"):
        build_cache(ds, extractor, tmp_path / "a", meta={"x": object()}, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        build_cache(ds, lambda x: torch.full((len(x), 2, 4, 4), float("nan")), tmp_path / "a", meta={}, progress=False)
    with pytest.raises(ValueError, match="float16's range"):
        build_cache(ds, lambda x: torch.full((len(x), 4, 4), 1e6), tmp_path / "a", meta={}, progress=False)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- through the data pipeline
class _Brightness(torch.nn.Module):
    """An 'extractor' whose 8x8 map is the image's pooled brightness: it peaks on the synthetic object."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), 8)


def _crop_flip(x: torch.Tensor, dy: int, dx: int, flip: bool, pad: int = 4) -> torch.Tensor:
    """RandomCrop(padding=pad) at offset (dy, dx) then an optional horizontal flip, on a (..., H, W) tensor."""
    h, w = x.shape[-2:]
    out = F.pad(x, (pad, pad, pad, pad))[..., dy:dy + h, dx:dx + w]
    return out.flip(-1) if flip else out


def test_cached_map_moves_with_its_image_through_build_datasets(tmp_path):
    from attentive_cutmix.data import build_datasets

    raw, _, info = build_datasets("synthetic", synthetic_size=48, augment=False)
    cache = build_cache(raw, _Brightness(), tmp_path / "syn.safetensors", meta={"dataset": info.name}, batch_size=16,
                        progress=False)
    plain, _, _ = build_datasets("synthetic", synthetic_size=48, augment=False, attention_cache=cache)
    augmented, _, _ = build_datasets("synthetic", synthetic_size=48, augment=True, attention_cache=cache)
    candidates = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)]
    seen = set()
    torch.manual_seed(0)
    for i in range(24):
        image0, label0, att0 = plain[i]
        image, label, att = augmented[i]
        assert label == label0 and att.shape == image.shape[-2:] and att.dtype == torch.float32
        # The un-augmented map is the cached one, upsampled to the image.
        grid = cache[i].float()[None, None]
        assert any(torch.allclose(att0, F.interpolate(grid, size=att0.shape, **mode)[0, 0], atol=1e-3)
                   for mode in (dict(mode="bilinear", align_corners=False), dict(mode="nearest"), dict(mode="bicubic")))
        matches = [c for c in candidates if torch.allclose(_crop_flip(image0, *c), image, atol=1e-6)]
        assert matches, f"item {i}: the augmented image is no padded crop/flip of the original"
        dy, dx, flip = matches[0]
        inside = _crop_flip(torch.ones_like(att0), dy, dx, flip) > 0  # pixels that came from the image, not the padding
        torch.testing.assert_close(att[inside], _crop_flip(att0, dy, dx, flip)[inside], atol=1e-5, rtol=1e-5)
        seen.add((flip, (dy, dx) != (4, 4)))
    assert {(True, True), (False, True)} <= seen, f"the random augmentations did not cover flips and shifts: {seen}"


def test_cli_writes_a_cache_train_accepts_and_refuses_to_overwrite(tmp_path, capsys):
    from attentive_cutmix.attention.source import ExtractorSpec
    from attentive_cutmix.cli import main
    from attentive_cutmix.data import build_datasets

    weights = tmp_path / "r20.safetensors"
    save_file(load_extractor("cifar_resnet20", input_size=32).model.state_dict(), str(weights))
    out = tmp_path / "c.safetensors"
    argv = ["cache-attention", "--dataset", "synthetic", "--synthetic-size", "40", "12", "--val-fraction", "0.25",
            "--extractor", "cifar_resnet20", "--extractor-weights", str(weights), "--out", str(out),
            "--workers", "0", "--batch-size", "16", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "8x8" in printed and "images/s" in printed
    assert "train --dataset synthetic --val-fraction 0.25 --synthetic-size 40 12" in printed
    # The trainer's own expectation for the same flags accepts it.
    spec = ExtractorSpec("cifar_resnet20", weights=str(weights))
    train_ds, _, info = build_datasets("synthetic", synthetic_size=(40, 12), val_fraction=0.25, augment=False)
    extractor = spec.build(image_size=32, device=torch.device("cpu"))
    cache = open_cache(out, expect=cache_meta(info, extractor, "cifar_resnet20"))
    assert len(cache) == len(train_ds) == 30
    # Another split is refused, naming what differs.
    _, _, other = build_datasets("synthetic", synthetic_size=(40, 12), val_fraction=0.5, augment=False)
    with pytest.raises(CacheMismatchError, match="length: expected 20, found 30"):
        open_cache(out, expect=cache_meta(other, extractor, "cifar_resnet20"))
    before = out.read_bytes()
    assert main(argv) == 1
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*argv, "--force", "--pretrained"]) == 1  # weights and --pretrained together
    assert "not both" in capsys.readouterr().err


def test_train_refuses_a_cache_of_another_split_naming_every_field(tmp_path):
    from attentive_cutmix.cli import main
    from attentive_cutmix.training import train
    from attentive_cutmix.training.config import make_config

    weights = tmp_path / "r20.safetensors"
    save_file(load_extractor("cifar_resnet20", input_size=32).model.state_dict(), str(weights))
    out = tmp_path / "c.safetensors"
    common = ["--dataset", "synthetic", "--synthetic-size", "40", "12", "--extractor", "cifar_resnet20",
              "--extractor-weights", str(weights)]
    assert main(["cache-attention", *common, "--val-fraction", "0.25", "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 0
    cfg = make_config(dict(dataset="synthetic", synthetic_size=[40, 12], val_fraction=0.5, method="attentive-cutmix",
                           extractor="cifar_resnet20", extractor_weights=str(weights), attention_cache=str(out),
                           grid_size=8, epochs=1, workers=0, progress=False, output_dir=str(tmp_path / "run")))
    with pytest.raises(CacheMismatchError) as err:
        train(cfg)
    assert "length: expected 20, found 30" in str(err.value) and "fingerprint" in str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
