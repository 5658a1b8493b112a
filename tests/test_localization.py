"""The localisation metric: exact on hand-made masks and boxes; a trained extractor's cells land on the object."""
from __future__ import annotations

import math

import pytest
import torch

from attentive_cutmix import registry
from attentive_cutmix.experiments.localization import box_mask, pasted_hit_rate, random_box_masks, region_hit_rates


def test_hit_rate_on_hand_made_masks_and_boxes():
    mask = torch.zeros(3, 10, 10, dtype=torch.bool)
    mask[0, 2, 2:6] = True  # 4 pasted pixels at x = 2..5, y = 2
    mask[1, 0:5, 0:5] = True  # 25 pixels
    boxes = torch.tensor([[3.0, 0.0, 10.0, 10.0],  # x in [3, 10): 3 of the 4 pixels
                          [0.0, 0.0, 10.0, 2.0],  # y in [0, 2): 2 rows of 5 = 10 of 25
                          [0.0, 0.0, 10.0, 10.0]])  # sample 2 pasted nothing
    rate = pasted_hit_rate(mask, boxes)
    assert rate[0].item() == pytest.approx(3 / 4)
    assert rate[1].item() == pytest.approx(10 / 25)
    assert math.isnan(rate[2].item())


def test_box_mask_uses_pixel_centres():
    boxes = torch.tensor([[2.0, 1.0, 5.0, 4.0], [2.4, 1.6, 4.6, 3.4]])
    m = box_mask(boxes, 6, 6)
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1:4, 2:5] = True
    assert torch.equal(m[0], expected)  # integer boxes: exactly the pixels between the edges
    centres = torch.zeros(6, 6, dtype=torch.bool)
    centres[2, 2:5] = True  # row centre 2.5 in [1.6, 3.4]; column centres 2.5, 3.5, 4.5 in [2.4, 4.6]
    assert torch.equal(m[1], centres)


def test_random_boxes_match_their_area():
    areas = torch.tensor([32, 100, 9, 256])
    boxes = random_box_masks(areas, 16, 16, generator=torch.Generator().manual_seed(0))
    got = boxes.flatten(1).sum(1)
    assert ((got - areas).abs() <= 0.15 * areas).all()
    for b in boxes:  # one solid rectangle, never clipped
        ys, xs = b.nonzero(as_tuple=True)
        assert b[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="mask"):
        pasted_hit_rate(torch.zeros(4, 4, dtype=torch.bool), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="boxes has 2 rows"):
        pasted_hit_rate(torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(2, 4))


@pytest.fixture(scope="module")
def trained_extractor(tmp_path_factory):
    from attentive_cutmix.attention import load_extractor
    from attentive_cutmix.training import make_config, train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("extractor")
    train(make_config(dict(dataset="synthetic", synthetic_size=600, model="cifar_resnet20", epochs=3, batch_size=64,
                           lr=0.003, workers=0, progress=False, output_dir=str(out))))
    return load_extractor(str(out / "checkpoint.pt"), input_size=32)


@pytest.mark.slow
def test_trained_extractor_pastes_the_object_far_more_often_than_random_boxes(trained_extractor):
    from attentive_cutmix.data import build_datasets

    _, eval_ds, info = build_datasets("synthetic", synthetic_size=600)  # 120 held-out images, un-augmented
    trained_extractor.mean.copy_(torch.tensor(info.mean).view(1, -1, 1, 1))
    trained_extractor.std.copy_(torch.tensor(info.std).view(1, -1, 1, 1))
    method = registry.get("attentive-cutmix")
    mixer = method.make_mixer(method.options(grid_size=8), num_classes=info.num_classes)
    rates = region_hit_rates(mixer, eval_ds, extractor=trained_extractor, seed=0)
    assert rates["images"] == len(eval_ds)
    assert rates["hit"] > rates["random"] + 0.15, rates


def _quarter_dataset():
    """Images whose object sits in the top-left quarter."""
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(8, dtype=torch.long))
    dataset.boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]]).repeat(8, 1)
    return dataset


def _peaked(row: int, col: int):
    def extractor(x):
        att = torch.zeros(len(x), 1, 4, 4)
        att[:, :, row, col] = 1.0
        return att
    return extractor


def test_one_hit_rate_for_every_method_with_a_region():
    # A map peaked in the object's quarter hits, one peaked elsewhere misses; the random reference is the same draw.
    dataset = _quarter_dataset()
    method = registry.get("attentive-cutmix")
    mixer = method.make_mixer(method.options(num_patches=1, grid_size=4), num_classes=2)
    on = region_hit_rates(mixer, dataset, extractor=_peaked(0, 1))
    off = region_hit_rates(mixer, dataset, extractor=_peaked(3, 3))
    assert on["hit"] == 1.0 and off["hit"] == 0.0 and on["hit_se"] == 0.0
    assert on["random"] == off["random"] and on["area"] == pytest.approx(1 / 16)
    for name in registry.names():  # every registered method: a rate in [0, 1], or None without a region
        m = registry.get(name)
        if m.build is None:
            continue
        options = m.example_options()
        mixer = m.make_mixer(options, num_classes=2, extractor=_peaked(0, 0) if m.needs_attention(options) else None)
        rates = region_hit_rates(mixer, dataset, extractor=_peaked(0, 0)) if mixer.guidance_source != "model" \
            else None
        if rates is not None:
            assert 0.0 <= rates["hit"] <= 1.0 and rates["images"] == 8, name
    assert region_hit_rates(registry.make_mixer("mixup", registry.get("mixup").options(), num_classes=2),
                            dataset) is None


def test_a_sampled_cells_hit_rate_is_measured_on_the_cells_it_samples():
    # Issue 34 item 3: localisation used to score the top cells whatever cell_temperature said, so a tau = 50 cell
    # reported the tau = 0 hit rate. The rate is now that of the region the mixer itself takes.
    dataset = _quarter_dataset()
    method = registry.get("attentive-cutmix")
    top = method.make_mixer(method.options(num_patches=1, grid_size=4), num_classes=2)
    sampled = method.make_mixer(method.options(num_patches=1, grid_size=4, cell_temperature=50.0), num_classes=2)
    on_top = region_hit_rates(top, dataset, extractor=_peaked(0, 1))
    on_sampled = region_hit_rates(sampled, dataset, extractor=_peaked(0, 1))
    assert on_top["hit"] == 1.0
    assert on_sampled["hit"] < 0.8  # near-uniform cells: about a quarter of them in the object's quarter
