"""The embedded SyntheticObjects dataset: deterministic, balanced, boxed, and only the shape tells the class."""
import hashlib

import pytest
import torch

from attentive_cutmix.data import SHAPES, SyntheticObjects, build_datasets, generate_objects


@pytest.fixture(scope="module")
def small32():
    return generate_objects(300, 32, seed=5)


def test_same_seed_same_pixels_different_seed_differs(small32):
    again = generate_objects(300, 32, seed=5)
    other = generate_objects(300, 32, seed=6)
    for key in ("images", "labels", "boxes", "masks"):
        assert torch.equal(small32[key], again[key]), key
    assert not torch.equal(small32["images"], other["images"])
    assert not torch.equal(small32["labels"], other["labels"])


@pytest.mark.parametrize("size", [32, 64])
def test_variants_shapes_and_dtypes(size):
    data = generate_objects(40, size, seed=0)
    assert data["images"].shape == (40, 3, size, size) and data["images"].dtype == torch.uint8
    assert data["labels"].dtype == torch.int64 and data["labels"].shape == (40,)
    assert data["masks"].shape == (40, size, size) and data["masks"].dtype == torch.bool
    boxes = data["boxes"]
    assert boxes.dtype == torch.float32 and boxes.shape == (40, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # Objects are a sizeable part of the image at both resolutions (scale is relative to the image).
    side = (boxes[:, 2:] - boxes[:, :2]).amax(1)
    assert side.min() >= 0.25 * size and side.max() <= 0.95 * size


def test_class_balance():
    labels = generate_objects(1003, 32, seed=1)["labels"]
    counts = torch.bincount(labels, minlength=len(SHAPES))
    assert len(SHAPES) >= 10 and counts.numel() == len(SHAPES)
    assert counts.max() - counts.min() <= 1


def test_boxes_are_tight_around_the_object_mask(small32):
    masks, boxes = small32["masks"], small32["boxes"].long()
    n, h, w = masks.shape
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, k].view(n, 1, 1) for k in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    assert masks.any(2).any(1).all(), "every image has an object"
    assert not (masks & ~inside).any(), "no object pixel outside its box"
    # Tight: the mask touches each of the box's four edges.
    idx = torch.arange(n)
    assert masks[idx, :, boxes[:, 0]].any(1).all() and masks[idx, :, boxes[:, 2] - 1].any(1).all()
    assert masks[idx, boxes[:, 1], :].any(1).all() and masks[idx, boxes[:, 3] - 1, :].any(1).all()


def test_object_pixels_stand_out_from_the_background(small32):
    images, masks, boxes = small32["images"].float() / 255, small32["masks"], small32["boxes"].long()
    grey = images.mean(1)  # (N, H, W)
    n, h, w = grey.shape
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, k].view(n, 1, 1) for k in range(4))
    outside_box = ~((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1))
    obj = (grey * masks).sum((1, 2)) / masks.sum((1, 2))
    bg = (grey * outside_box).sum((1, 2)) / outside_box.sum((1, 2)).clamp(min=1)
    assert ((obj - bg).abs() > 0.15).float().mean() > 0.95


def test_colour_does_not_give_away_the_class():
    data = generate_objects(2000, 32, seed=2)
    feats = data["images"].float().mean((2, 3))  # mean colour per image
    labels = data["labels"]
    train, test = slice(0, 1500), slice(1500, None)
    centroids = torch.stack([feats[train][labels[train] == k].mean(0) for k in range(len(SHAPES))])
    pred = torch.cdist(feats[test], centroids).argmin(1)
    accuracy = (pred == labels[test]).float().mean().item()
    assert accuracy < 0.2, f"mean colour predicts the class too well ({accuracy:.2f}; chance is 0.1)"


def test_shape_does_give_away_the_class():
    # The class is in the object's shape: nearest-centroid on normalised, box-cropped masks beats chance widely.
    data = generate_objects(1500, 32, seed=3)
    masks, boxes, labels = data["masks"].float(), data["boxes"].long(), data["labels"]
    crops = torch.stack([torch.nn.functional.interpolate(m[None, None, y0:y1, x0:x1], size=(12, 12), mode="area")[0, 0]
                         for m, (x0, y0, x1, y1) in zip(masks, boxes.tolist())]).flatten(1)
    train, test = slice(0, 1000), slice(1000, None)
    centroids = torch.stack([crops[train][labels[train] == k].mean(0) for k in range(len(SHAPES))])
    accuracy = (torch.cdist(crops[test], centroids).argmin(1) == labels[test]).float().mean().item()
    assert accuracy > 0.6


def test_dataset_items_and_fingerprint():
    ds = SyntheticObjects(30, 32, seed=4)
    image, label = ds[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and isinstance(label, int)
    assert torch.equal(image, ds.images[3]) and label == int(ds.labels[3])
    assert len(ds) == 30 and ds.classes == list(SHAPES)
    assert ds.fingerprint == SyntheticObjects(30, 32, seed=4).fingerprint
    assert len({ds.fingerprint, SyntheticObjects(30, 32, seed=5).fingerprint,
                SyntheticObjects(31, 32, seed=4).fingerprint, SyntheticObjects(30, 64, seed=4).fingerprint}) == 4
    scaled = SyntheticObjects(30, 32, seed=4, transform=lambda img: img.float() / 255)
    assert torch.allclose(scaled[3][0], ds.images[3].float() / 255)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_samples": 0}, "num_samples"), ({"num_samples": 2.5}, "num_samples"),
    ({"num_samples": 4, "image_size": 8}, "image_size"), ({"num_samples": 4, "seed": "x"}, "seed"),
    ({"num_samples": 4, "version": 3}, "version"), ({"num_samples": 4, "version": True}, "version"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        generate_objects(**kwargs)


def _digest(data: dict) -> str:
    digest = hashlib.sha256()
    for key in ("images", "labels", "boxes", "masks"):
        digest.update(data[key].numpy().tobytes())
    return digest.hexdigest()


# sha256 of generate_objects(300, size, seed=7) before generator versions existed (commit 0f1f43e).
VERSION_1 = {32: "162d901fcc0c685ddab373978612576fe086fbc4c6d6a9bb1b0b5c48a25656b6",
             64: "6d3b0eb2720c235c32f7107e23e3ea1871359f1213be53d2cecb869eac95bd62"}


@pytest.mark.parametrize("size", [32, 64])
def test_version_1_draws_the_original_images_bit_for_bit(size):
    assert _digest(generate_objects(300, size, seed=7, version=1)) == VERSION_1[size]


def test_version_2_is_the_default_and_its_own_dataset_while_synthetic_stays_version_1():
    new, old = generate_objects(300, 32, seed=7), generate_objects(300, 32, seed=7, version=1)
    assert _digest(new) == _digest(generate_objects(300, 32, seed=7, version=2)) != _digest(old)
    assert torch.equal(new["labels"], old["labels"])  # the same classes, drawn larger on lighter clutter
    area = lambda d: ((d["boxes"][:, 2] - d["boxes"][:, 0]) * (d["boxes"][:, 3] - d["boxes"][:, 1])).mean()  # noqa: E731
    assert area(new) > 1.1 * area(old)
    # The old fingerprint (attention caches are keyed by it) is unchanged; the new version has its own.
    assert SyntheticObjects(30, 32, seed=4, version=1).fingerprint == \
        "3e4958a56ace78ae06006a2a4b44e126579f40ed2c0abac5407d58784e4c7d59"
    assert SyntheticObjects(30, 32, seed=4).fingerprint != SyntheticObjects(30, 32, seed=4, version=1).fingerprint
    v1, v2 = build_datasets("synthetic", synthetic_size=20)[0], build_datasets("synthetic2", synthetic_size=20)[0]
    assert (v1.source.version, v2.source.version) == (1, 2)
    assert torch.equal(v1.source.images, generate_objects(20, 32, seed=v1.source.seed, version=1)["images"])
