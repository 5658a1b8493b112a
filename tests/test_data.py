"""build_datasets: synthetic, CIFAR pickles, image folders, ImageNet layout, presets, attention carried by
transforms."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from attentive_cutmix.data import (
    DATASETS,
    AugmentedDataset,
    CorruptImageError,
    DatasetError,
    DatasetInfo,
    DatasetNotFoundError,
    SyntheticObjects,
    build_datasets,
    dataset_boxes,
    eval_transform,
    train_transform,
)

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "train"


# ------------------------------------------------------------------------------------------ synthetic
def test_synthetic_items_and_info():
    train, test, info = build_datasets("synthetic", synthetic_size=60)
    assert isinstance(info, DatasetInfo)
    assert ((info.name, info.num_classes, info.image_size, info.preset, info.num_train)
            == ("synthetic", 10, 32, "cifar", 60))
    assert len(train) == 60 and len(test) == 12 and len(info.classes) == 10
    assert len(info.mean) == 3 and len(info.std) == 3 and all(0 < s < 1 for s in info.std)
    image, label = train[0]
    assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert 0 <= image.min() and image.max() <= 1 and isinstance(label, int)
    assert test[0][0].shape == (3, 32, 32)
    assert build_datasets("synthetic64", synthetic_size=(20, 10))[2].image_size == 64


def test_synthetic_train_and_eval_are_different_images():
    train, test, _ = build_datasets("synthetic", synthetic_size=(30, 30), augment=False)
    assert not torch.equal(train.source.images, test.source.images)


def test_augment_false_is_the_full_image_and_deterministic():
    train, test, _ = build_datasets("synthetic", synthetic_size=20, augment=False)
    raw = train.source.images[train.indices[4]].float() / 255
    assert torch.allclose(train[4][0], raw, atol=1e-6, rtol=0) and torch.equal(train[4][0], train[4][0])
    resized, _, info = build_datasets("synthetic", synthetic_size=20, augment=False, image_size=48)
    assert info.image_size == 48 and resized[4][0].shape == (3, 48, 48)
    expected = v2.functional.resize(tv_tensors.Image(train.source.images[resized.indices[4]]), [48, 48])
    assert torch.allclose(resized[4][0], expected.float() / 255, atol=1 / 255)


def test_augment_true_crops_and_flips():
    train, _, _ = build_datasets("synthetic", synthetic_size=20)
    raw = train.source.images[train.indices[0]].float() / 255
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(12)]
    assert all(d.shape == raw.shape for d in draws)
    assert sum(not torch.allclose(d, raw, atol=1e-6) for d in draws) >= 6


def test_fingerprint_is_stable_and_tracks_the_train_split():
    fp = build_datasets("synthetic", synthetic_size=40)[2].train_fingerprint
    assert len(fp) == 64 and fp == build_datasets("synthetic", synthetic_size=40, augment=False)[2].train_fingerprint
    others = {build_datasets("synthetic", synthetic_size=41)[2].train_fingerprint,
              build_datasets("synthetic64", synthetic_size=40)[2].train_fingerprint,
              build_datasets("synthetic", synthetic_size=40, val_fraction=0.2)[2].train_fingerprint,
              build_datasets("synthetic", synthetic_size=40, val_fraction=0.2, seed=1)[2].train_fingerprint}
    assert fp not in others and len(others) == 4


def test_boxes_follow_split_positions():
    train, held, info = build_datasets("synthetic", synthetic_size=50, val_fraction=0.2, seed=3)
    base = train.source
    assert len(train) + len(held) == 50 and info.num_train == len(train)
    assert torch.equal(dataset_boxes(train), base.boxes[train.indices])
    assert torch.equal(dataset_boxes(held), base.boxes[held.indices])
    assert torch.equal(dataset_boxes(Subset(train, [2, 0])), base.boxes[[train.indices[2], train.indices[0]]])
    scaled, _, _ = build_datasets("synthetic", synthetic_size=50, image_size=64)
    assert torch.allclose(dataset_boxes(scaled), SyntheticObjects(50, 32, version=1).boxes * 2)
    with pytest.raises(TypeError, match="boxes"):
        dataset_boxes(torch.utils.data.TensorDataset(torch.zeros(2)))


# ------------------------------------------------------------------------- attention through transforms
class _OneSquare(Dataset):
    """One black image with a white 8x8 square at rows 4..11, columns 20..27."""

    classes = ["square"]
    targets = [0]

    def __len__(self):
        return 1

    def __getitem__(self, i):
        image = torch.zeros(3, 32, 32, dtype=torch.uint8)
        image[:, 4:12, 20:28] = 255
        return tv_tensors.Image(image), 0


def _square_cache():
    grid = torch.zeros(8, 8, dtype=torch.float16)  # 4 px cells: the square lies in rows 1-2, columns 5-6
    grid[1:3, 5:7] = 1
    return [grid]


def _centroid(weights):
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    total = weights.sum()
    return torch.stack([(ys * weights).sum() / total, (xs * weights).sum() / total])


def test_attention_flips_with_the_image():
    ds = AugmentedDataset(_OneSquare(), [0], v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(p=1.0),
                                                         v2.ToDtype(torch.float32, scale=True)]),
                          attention=_square_cache())
    image, _, attention = ds[0]
    assert attention.dtype == torch.float32 and attention.shape == (32, 32)
    assert image[0, 4:12, 4:12].min() == 1 and image[0, :, 20:28].max() == 0  # the square moved to columns 4..11
    peak_col = attention.amax(0).argmax().item()
    assert 4 <= peak_col < 12
    assert torch.allclose(_centroid(attention), _centroid(image[0]), atol=0.75)


def test_attention_shifts_with_padded_random_crop():
    ds = AugmentedDataset(_OneSquare(), [0], train_transform("cifar", 32), attention=_square_cache())
    torch.manual_seed(1)
    positions = set()
    for _ in range(15):
        image, _, attention = ds[0]
        obj = _centroid(image[0])
        positions.add(tuple(obj.round().tolist()))
        assert torch.allclose(_centroid(attention), obj, atol=0.75)
        assert attention.amax() == pytest.approx(1.0, abs=1e-3)
    assert len(positions) >= 5, "the crop should move the object around"


def test_padding_fills_attention_with_zero_where_the_image_is_padded():
    class White(_OneSquare):
        def __getitem__(self, i):
            return tv_tensors.Image(torch.full((3, 32, 32), 255, dtype=torch.uint8)), 0

    ds = AugmentedDataset(White(), [0], train_transform("cifar", 32), attention=[torch.ones(4, 4)])
    torch.manual_seed(0)
    padded_seen = False
    for _ in range(10):
        image, _, attention = ds[0]
        padded = image.sum(0) == 0
        padded_seen |= bool(padded.any())
        assert torch.equal(attention == 0, padded)
        assert torch.allclose(attention[~padded], torch.ones(()))
    assert padded_seen


def test_imagenet_preset_resizes_image_and_attention_together():
    class Big(_OneSquare):
        def __getitem__(self, i):
            return tv_tensors.Image(torch.randint(0, 256, (3, 120, 90), dtype=torch.uint8)), 0

    ds = AugmentedDataset(Big(), [0], train_transform("imagenet", 72), attention=[torch.rand(7, 7)])
    image, _, attention = ds[0]
    assert image.shape == (3, 72, 72) and attention.shape == (72, 72) and attention.dtype == torch.float32
    assert eval_transform("imagenet", 72)(
        tv_tensors.Image(torch.zeros(3, 120, 90, dtype=torch.uint8))).shape == (3, 72, 72)


def test_build_datasets_with_attention_cache():
    n = 40
    cache = [torch.rand(8, 8, dtype=torch.float16) for _ in range(n)]
    train, test, _ = build_datasets("synthetic", synthetic_size=n, augment=False, attention_cache=cache)
    image, label, attention = train[7]
    expected = F.interpolate(cache[7].float()[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(attention, expected, atol=1e-6)
    assert len(test[0]) == 2  # eval items never carry attention
    images, labels, maps = next(iter(DataLoader(train, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,) and maps.shape == (4, 32, 32)
    with pytest.raises(ValueError, match="39 maps.*40 images"):
        build_datasets("synthetic", synthetic_size=n, attention_cache=cache[:-1])
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        build_datasets("synthetic", synthetic_size=n, attention_cache=[torch.rand(1, 8, 8)] * n)[0][0]


# ------------------------------------------------------------------------------------------ CIFAR
def _write_cifar(root: Path, name: str, per_batch: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, batches, label_key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels"
        tests, meta, meta_key, k = ["test_batch"], "batches.meta", "label_names", 10
    else:
        folder, batches, label_key = root / "cifar-100-python", ["train"], "fine_labels"
        tests, meta, meta_key, k = ["test"], "meta", "fine_label_names", 100
    folder.mkdir(parents=True)
    written = {}
    for fname in batches + tests:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, k, per_batch).tolist()
        entry = {"batch_label": fname, "data": data, label_key: labels,
                 "filenames": [f"{i}.png" for i in range(per_batch)]}
        if name == "cifar100":
            entry["coarse_labels"] = [lab // 5 for lab in labels]
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f)
        written[fname] = (data, labels)
    with open(folder / meta, "wb") as f:
        pickle.dump({meta_key: [f"class_{i}" for i in range(k)]}, f)
    return {"folder": folder, "train": [written[b] for b in batches], "test": [written[t] for t in tests]}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickle_round_trip(tmp_path, name):
    files = _write_cifar(tmp_path, name)
    train, test, info = build_datasets(name, data_dir=tmp_path, augment=False, download=False)
    data = np.concatenate([d for d, _ in files["train"]])
    labels = sum((lab for _, lab in files["train"]), [])
    assert len(train) == len(data) and info.num_train == len(data) and len(test) == 4
    assert info.num_classes == (10 if name == "cifar10" else 100) and info.classes[3] == "class_3"
    assert (info.image_size, info.preset) == (32, "cifar")
    for i in (0, len(data) - 1):
        image, label = train[i]
        assert torch.allclose(image, torch.from_numpy(data[i].reshape(3, 32, 32)).float() / 255, atol=1e-6, rtol=0)
        assert label == labels[i]
    expected = torch.from_numpy(files["test"][0][0][2].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(test[2][0], expected, atol=1e-6, rtol=0)
    again = build_datasets(name, data_dir=tmp_path, download=True)[2]  # present: nothing to download
    assert again.train_fingerprint == info.train_fingerprint


def test_cifar_fingerprint_changes_with_the_files(tmp_path):
    _write_cifar(tmp_path / "a", "cifar10")
    files = _write_cifar(tmp_path / "b", "cifar10", per_batch=5)
    assert build_datasets("cifar10", data_dir=tmp_path / "a")[2].train_fingerprint != \
        build_datasets("cifar10", data_dir=tmp_path / "b")[2].train_fingerprint
    held = build_datasets("cifar10", data_dir=tmp_path / "b", val_fraction=0.2)
    assert len(held[0]) + len(held[1]) == 25 and held[2].num_train == len(held[0])
    assert (files["folder"] / "data_batch_1").exists()


def test_cifar_missing_offline_names_the_folder(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py") as err:
        build_datasets("cifar10", data_dir=tmp_path, download=False)
    assert str(tmp_path) in str(err.value) and isinstance(err.value, FileNotFoundError)

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python.*cifar-100-python.tar.gz"):
        build_datasets("cifar100", data_dir=tmp_path, download=True)


def test_cifar_corrupt_batch_is_a_clear_error(tmp_path):
    files = _write_cifar(tmp_path, "cifar10")
    (files["folder"] / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="corrupt"):
        build_datasets("cifar10", data_dir=tmp_path)


# ------------------------------------------------------------------------------------- image folders
def _write_tree(root: Path, counts: dict, size=(12, 10), reverse=False, seed=0) -> None:
    rng = np.random.default_rng(seed)
    items = [(c, i) for c, n in counts.items() for i in range(n)]
    for cls, i in (reversed(items) if reverse else items):
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)).save(
            root / cls / f"img{i:03d}.jpg")


def _names(ds):
    return [os.path.relpath(ds.source.paths[i], ds.source.root) for i in ds.indices]


def test_imagefolder_split_is_deterministic_and_stratified(tmp_path):
    _write_tree(tmp_path / "a", {"cat": 10, "dog": 20, "emu": 5})
    (tmp_path / "a" / "cat" / "notes.txt").write_text("not an image")
    _write_tree(tmp_path / "b", {"cat": 10, "dog": 20, "emu": 5}, reverse=True)
    train, held, info = build_datasets("imagefolder", data_dir=tmp_path / "a", val_fraction=0.2, seed=7)
    assert info.classes == ["cat", "dog", "emu"] and info.num_classes == 3
    assert (info.image_size, info.preset) == (10, "cifar")  # the first image's shorter side
    assert len(train) + len(held) == 35  # notes.txt ignored
    assert sorted(np.bincount(held.targets).tolist()) == [1, 2, 4]  # round(0.2 * n) per class
    assert set(_names(train)).isdisjoint(_names(held))
    assert train[0][0].shape == (3, 10, 10) and held[0][0].shape == (3, 10, 10)

    same_b = build_datasets("imagefolder", data_dir=tmp_path / "b", val_fraction=0.2, seed=7)
    assert _names(held) == _names(same_b[1]) and _names(train) == _names(same_b[0])
    assert info.train_fingerprint != same_b[2].train_fingerprint  # other pixels, other file sizes
    other_seed = build_datasets("imagefolder", data_dir=tmp_path / "a", val_fraction=0.2, seed=8)[1]
    assert _names(other_seed) != _names(held)

    # Adding an image to one class leaves the other classes' split alone.
    _write_tree(tmp_path / "a", {"dog": 21}, seed=1)
    grown = build_datasets("imagefolder", data_dir=tmp_path / "a", val_fraction=0.2, seed=7)[1]
    assert [n for n in _names(grown) if not n.startswith("dog")] == [n for n in _names(held) if not n.startswith("dog")]


def test_imagefolder_fingerprint_covers_the_train_split_only(tmp_path):
    _write_tree(tmp_path, {"a": 6, "b": 6})
    train, held, info = build_datasets("imagefolder", data_dir=tmp_path, val_fraction=0.34)
    assert (info.train_fingerprint
            == build_datasets("imagefolder", data_dir=tmp_path, val_fraction=0.34)[2].train_fingerprint)
    with open(held.source.paths[held.indices[0]], "ab") as f:
        f.write(b"\0" * 10)
    assert (build_datasets("imagefolder", data_dir=tmp_path, val_fraction=0.34)[2].train_fingerprint
            == info.train_fingerprint)
    with open(train.source.paths[train.indices[0]], "ab") as f:
        f.write(b"\0" * 10)
    assert (build_datasets("imagefolder", data_dir=tmp_path, val_fraction=0.34)[2].train_fingerprint
            != info.train_fingerprint)


def test_imagefolder_val_data_folder(tmp_path):
    _write_tree(tmp_path / "train", {"a": 4, "b": 3})
    _write_tree(tmp_path / "val", {"a": 2, "b": 2}, size=(20, 20))
    train, val, info = build_datasets("imagefolder", data_dir=tmp_path / "train", val_data=tmp_path / "val",
                                      image_size=16)
    assert len(train) == 7 and len(val) == 4 and val.targets == [0, 0, 1, 1]
    assert val[0][0].shape == (3, 16, 16) and train[0][0].shape == (3, 16, 16)
    _write_tree(tmp_path / "val2", {"a": 1, "c": 1})
    with pytest.raises(DatasetError, match=r"missing: \['b'\].*unexpected: \['c'\]"):
        build_datasets("imagefolder", data_dir=tmp_path / "train", val_data=tmp_path / "val2")
    with pytest.raises(DatasetError, match="val_fraction"):
        build_datasets("imagefolder", data_dir=tmp_path / "train")


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist") as err:
        build_datasets("imagefolder", data_dir=tmp_path / "nope", val_fraction=0.1)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        build_datasets("imagefolder", data_dir=tmp_path / "empty", val_fraction=0.1)
    _write_tree(tmp_path / "tree", {"a": 3})
    (tmp_path / "tree" / "b").mkdir()
    (tmp_path / "tree" / "b" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"\['b'\] contain no images"):
        build_datasets("imagefolder", data_dir=tmp_path / "tree", val_fraction=0.1)


def test_corrupt_jpeg_names_the_file(tmp_path):
    _write_tree(tmp_path, {"a": 3, "b": 3})
    bad = tmp_path / "b" / "img001.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    train, held, _ = build_datasets("imagefolder", data_dir=tmp_path, val_fraction=0.34)
    split = train if str(bad) in [train.source.paths[i] for i in train.indices] else held
    position = [split.source.paths[i] for i in split.indices].index(str(bad))
    assert split[position - 1][0].shape == (3, 10, 10)  # the others still load
    with pytest.raises(CorruptImageError, match="img001.jpg"):
        split[position]


def test_imagenet_layout(tmp_path):
    _write_tree(tmp_path / "train", {"n01": 3, "n02": 3}, size=(40, 50))
    _write_tree(tmp_path / "val", {"n01": 1, "n02": 1}, size=(40, 50))
    train, val, info = build_datasets("imagenet", data_dir=tmp_path, image_size=32)
    assert (len(train), len(val), info.num_classes, info.preset) == (6, 2, 2, "cifar")
    assert build_datasets("imagenet", data_dir=tmp_path)[2].image_size == 224
    big_train, big_val, big = build_datasets("imagenet", data_dir=tmp_path, image_size=72)
    assert big.preset == "imagenet" and big_train[0][0].shape == (3, 72, 72) and big_val[1][0].shape == (3, 72, 72)
    (tmp_path / "val" / "n02" / "img000.jpg").unlink()
    with pytest.raises(DatasetError, match="n02"):
        build_datasets("imagenet", data_dir=tmp_path)
    assert len(build_datasets("imagenet", data_dir=tmp_path, val_fraction=0.3)[1]) == 2


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="../shared/data/cifar10-jpeg not present")
def test_shared_cifar10_jpeg_loads():
    train, held, info = build_datasets("imagefolder", data_dir=SHARED_CIFAR, val_fraction=0.1)
    assert (info.num_classes, info.image_size, info.preset) == (10, 32, "cifar")
    assert len(train) + len(held) == sum(1 for _ in SHARED_CIFAR.glob("*/*.jpg"))
    assert sorted(np.bincount(held.targets).tolist()) == [round(0.1 * n) for n in sorted(np.bincount(
        held.targets + train.targets).tolist())]
    images, labels = next(iter(DataLoader(train, batch_size=8, shuffle=True)))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.shape == (8,)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"name": "mnist"}, "valid names: " + ", ".join(DATASETS)),
    ({"name": "synthetic", "val_fraction": 1.0}, "val_fraction"),
    ({"name": "synthetic", "val_fraction": -0.1}, "val_fraction"),
    ({"name": "synthetic", "image_size": 4}, "image_size"),
    ({"name": "synthetic", "val_data": "x"}, "val_data"),
    ({"name": "imagefolder", "data_dir": "x", "val_data": "y", "val_fraction": 0.1}, "not both"),
    ({"name": "imagefolder"}, "data_dir"),
    ({"name": "cifar10", "synthetic_size": 10}, "synthetic_size"),
    ({"name": "synthetic", "synthetic_size": 0}, "synthetic_size"),
    ({"name": "synthetic", "synthetic_size": (10, 2, 3)}, "synthetic_size"),
    ({"name": "synthetic", "seed": 1.5}, "seed"),
])
def test_bad_arguments(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises((ValueError, TypeError), match=match):
        build_datasets(name, **kwargs)


def test_train_subset_is_stratified_deterministic_and_inside_the_train_split():
    full, eval_ds, _ = build_datasets("synthetic", synthetic_size=(400, 20), val_fraction=0.25, augment=False)
    a, eval_a, info_a = build_datasets("synthetic", synthetic_size=(400, 20), val_fraction=0.25, augment=False,
                                       train_subset=100)
    b, _, info_b = build_datasets("synthetic", synthetic_size=(400, 20), val_fraction=0.25, augment=False,
                                  train_subset=100)
    assert len(full) == 300 and len(a) == 100 and info_a.num_train == 100
    labels = torch.tensor([a[i][1] for i in range(len(a))])
    assert labels.bincount(minlength=10).min() >= 9  # about 10 per class
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(0, 100, 7))
    assert info_a.train_fingerprint == info_b.train_fingerprint
    assert (info_a.train_fingerprint
            != build_datasets("synthetic", synthetic_size=(400, 20), val_fraction=0.25)[2].train_fingerprint)
    # The subset is drawn from the training split: the held-out set is unchanged.
    assert len(eval_a) == len(eval_ds) and torch.equal(eval_a[0][0], eval_ds[0][0])
    with pytest.raises(ValueError, match="train_subset must be an int in \\[1, 300\\]"):
        build_datasets("synthetic", synthetic_size=(400, 20), val_fraction=0.25, train_subset=301)
