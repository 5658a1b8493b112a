"""`attentive-cutmix visualize`: the panels differ from the original exactly where each method says, and the CLI
writes a PNG."""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from attentive_cutmix.cli import main
from attentive_cutmix.experiments.visualize import figure_mixers, label_text, mix_panels
from attentive_cutmix.mixers.geometry import cells_to_pixel_mask


def _inputs():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 16, 16, generator=g) * 0.8 + 0.1  # no exact zeros: cutout's fill is visible
    labels = torch.tensor([0, 1, 2])
    att = torch.zeros(3, 4, 4)
    att[0, 0, 0], att[0, 3, 3] = 5.0, 4.0
    att[1, 1, 2], att[1, 2, 1] = 3.0, 2.0
    att[2, 0, 3], att[2, 3, 0] = 1.0, 0.5
    return images, labels, att


def test_panels_change_exactly_what_each_method_changes():
    images, labels, att = _inputs()
    extractor = lambda x: att.unsqueeze(1)  # noqa: E731  (B, 1, 4, 4) features: the planted maps
    mixers = figure_mixers(3, {"num_patches": 2, "grid_size": 4, "cutout_size": 8}, extractor=extractor)
    assert set(mixers) == {"mixup", "cutmix", "cutout", "random-cells", "attentive-cutmix"}
    p = mix_panels(images, labels, mixers, extractor=extractor, seed=1)
    expected_cells = torch.zeros(3, 4, 4, dtype=torch.bool)
    for i, cells in enumerate([[(0, 0), (3, 3)], [(1, 2), (2, 1)], [(0, 3), (3, 0)]]):
        for r, c in cells:
            expected_cells[i, r, c] = True
    assert p["heatmap"].shape == (3, 16, 16) and p["heatmap"].min() >= 0 and p["heatmap"].max() <= 1
    partner = p["partner"]
    assert (partner != torch.arange(3)).all()

    pasted = cells_to_pixel_mask(expected_cells[partner], 16, 16)
    assert torch.equal(p["attentive-cutmix_region"], pasted)  # the region outlined is the partner's top cells
    want = torch.where(pasted.unsqueeze(1), images[partner], images)
    assert torch.equal(p["attentive-cutmix"], want)  # partner's top cells pasted, the original everywhere else
    assert p["mixup_region"] is None
    for name in ("cutmix", "cutout", "random-cells"):  # every region is exactly where the image changed
        assert torch.equal(p[f"{name}_region"], (p[name] != images).any(1)), name
    lam = 2 * 16 / 256
    assert torch.allclose(p["attentive-cutmix_targets"][torch.arange(3), partner], torch.full((3,), lam))
    assert torch.allclose(p["attentive-cutmix_targets"][torch.arange(3), labels], torch.full((3,), 1 - lam))

    w = p["mixup_targets"][torch.arange(3), partner].view(3, 1, 1, 1)
    # Same partner for every mixer.
    assert torch.allclose(p["mixup"], images + w * (images[partner] - images), atol=1e-6)

    changed = (p["cutout"] != images).any(1)
    assert changed.any() and (p["cutout"].permute(1, 0, 2, 3)[:, changed] == 0).all()
    assert torch.equal(p["cutout_targets"], torch.eye(3))

    diff = (p["cutmix"] != images).any(1)
    for i in range(3):
        ys, xs = diff[i].nonzero(as_tuple=True)
        if len(ys):  # the changed pixels sit in one box, filled with the partner's pixels
            box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            assert torch.equal(p["cutmix"][i][:, box[0], box[1]], images[partner[i]][:, box[0], box[1]])
    assert torch.allclose(p["cutmix_targets"].sum(1), torch.ones(3))

    moved = (p["random-cells"] != images).any(1)  # random cells: 2 whole 4x4 cells of the same partner, same places
    assert moved.sum(dim=(1, 2)).tolist() == [32, 32, 32]
    assert torch.equal(p["random-cells"].permute(1, 0, 2, 3)[:, moved], images[partner].permute(1, 0, 2, 3)[:, moved])
    assert torch.allclose(p["random-cells_targets"][torch.arange(3), partner], torch.full((3,), lam))


def test_label_text_lists_the_weighted_classes():
    assert label_text(torch.tensor([0.12, 0.0, 0.88]), ["dog", "bird", "cat"]) == "cat 0.88 / dog 0.12"
    assert label_text(torch.tensor([0.0, 1.0, 0.0]), ["dog", "bird", "cat"]) == "bird 1.00"


def test_cli_writes_a_png(tmp_path, capsys):
    from attentive_cutmix.models import create_model

    torch.manual_seed(0)
    weights = tmp_path / "r20.safetensors"
    save_file({k: v.contiguous()
               for k, v in create_model("cifar_resnet20", num_classes=10, image_size=32).state_dict().items()},
              str(weights))
    out = tmp_path / "fig.png"
    rc = main(["visualize", "--dataset", "synthetic", "--extractor", "cifar_resnet20",
               "--extractor-weights", str(weights), "--num-images", "3", "--grid-size", "8", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    # Any method, and no extractor for one that reads none; one that does says what it needs.
    assert main(["visualize", "--dataset", "synthetic", "--method", "cutmix", "--method", "random-cells",
                 "--num-images", "2", "--out", str(tmp_path / "cut.png")]) == 0, capsys.readouterr().err
    assert (tmp_path / "cut.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["visualize", "--method", "attentive-cutmix", "--out", str(tmp_path / "a.png")]) == 1
    assert "reads an extractor's attention maps: give --extractor" in capsys.readouterr().err
    assert main(["visualize", "--extractor", "cifar_resnet20", "--extractor-weights", str(weights), "--num-images", "1",
                 "--out", str(tmp_path / "x.png")]) == 1
    assert "--num-images must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
