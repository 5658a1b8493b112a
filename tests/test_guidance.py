"""The shuffled-guidance control (``GuidedMixer``) on Attentive CutMix: each image's cells are chosen on the map of
*another* image of the batch (``params["guide_perm"]``, an independent derangement), with every region size, the
lambda values and the label rule unchanged; ``guidance="own"`` is the method bit for bit, with no extra draw."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from attentive_cutmix import AttentiveCutMix
from attentive_cutmix.attention.cache import build_cache
from attentive_cutmix.cli import main
from attentive_cutmix.data import build_datasets
from attentive_cutmix.mixers.cell_scores import attention_mass, attention_mass_lam
from attentive_cutmix.mixers.geometry import cell_mask, cells_to_pixel_mask
from attentive_cutmix.training import ConfigError, make_config

K, B, G, N, S = 10, 12, 4, 3, 32


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _planted(b: int = B) -> torch.Tensor:
    """(B, G, G) maps where map j's top N cells are j, j+1, j+2 (mod G*G): every map names its own cells."""
    att = torch.rand(b, G * G, generator=_gen(3)) * 0.1
    for j in range(b):
        for r in range(N):
            att[j, (j + r) % (G * G)] += 3.0 - r
    return att.view(b, G, G)


def _top_region(att: torch.Tensor, j: int) -> torch.Tensor:
    """(S, S) pixels of the top N cells of map j."""
    cells = att[j].flatten().topk(N).indices.view(1, -1)
    return cells_to_pixel_mask(cell_mask(cells, G), S, S)[0]


def _batch():
    return torch.rand(B, 3, S, S, generator=_gen(1)), torch.arange(B) % K


def test_shuffled_cells_come_from_the_map_of_image_guide_perm():
    images, labels = _batch()
    att = _planted()
    mixer = AttentiveCutMix(K, num_patches=N, grid_size=G, guidance="shuffled")
    params = mixer.make_params(B, S, S, _gen())
    mixed, _ = mixer(images, labels, att, params=params)
    perm, guide_perm = params["perm"], params["guide_perm"]
    for i in range(B):
        # output i receives its partner's cells; the partner's cells were chosen on the map of guide_perm[partner]
        expected = _top_region(att, int(guide_perm[perm[i]]))
        assert torch.equal(mixer.region(params, S, S, att)[i], expected)
        assert torch.equal(mixed[i][:, expected], images[perm[i]][:, expected])
        assert not torch.equal(expected, _top_region(att, int(perm[i])))  # not the partner's own cells
    own = AttentiveCutMix(K, num_patches=N, grid_size=G)
    for i in range(B):  # and "own" reads the partner's own map
        assert torch.equal(own.region({"perm": perm}, S, S, att)[i], _top_region(att, int(perm[i])))


def test_guide_perm_is_a_derangement_independent_of_the_pairing():
    mixer = AttentiveCutMix(K, num_patches=N, grid_size=G, guidance="shuffled")
    gen, same_as_pairing = _gen(), 0
    for _ in range(200):
        params = mixer.make_params(5, S, S, gen)
        gp = params["guide_perm"]
        assert sorted(gp.tolist()) == list(range(5)) and (gp != torch.arange(5)).all()
        same_as_pairing += int(torch.equal(gp, params["perm"]))
    # 24 single-cycle derangements of 5 are drawn; equal to the pairing about 1 time in 24, never always
    assert 0 < same_as_pairing < 30


@pytest.mark.parametrize("label_weight", ["area", "attention"])
def test_region_sizes_lambdas_and_the_label_rule_are_those_of_the_method(label_weight):
    b, s, g = 64, 32, 7  # a 7x7 grid on 32 px: cells of 4 and 5 px, so lambda depends on the cells chosen
    images, labels = torch.rand(b, 3, s, s, generator=_gen(1)), torch.arange(b) % K
    att = torch.rand(b, 5, 9, 9, generator=_gen(2))
    mixer = AttentiveCutMix(K, num_patches=6, grid_size=g, guidance="shuffled", label_weight=label_weight)
    params = mixer.make_params(b, s, s, _gen())
    _, targets = mixer(images, labels, att, params=params)
    region = mixer.region(params, s, s, att)
    cells = mixer.partner_cells(params, att)[1]
    assert cells.shape == (b, 6) and (cells.sort(1).values.diff(dim=1) > 0).all()  # six distinct cells each
    area = region.flatten(1).float().mean(1)
    lam = area
    if label_weight == "attention":  # the mass pasted and kept, on the images' own maps, as the method's rule
        grid = F.adaptive_avg_pool2d(att.mean(1, keepdim=True), g).flatten(1)
        lam = attention_mass_lam(attention_mass(grid), params["perm"], cells, area)
    partner = labels[params["perm"]]
    differ = partner != labels
    torch.testing.assert_close(targets[differ, partner[differ]], lam[differ])
    # The batch's regions are the method's own regions, handed to other images: with the same maps and pairing,
    # the multiset of cell sets (so every region size and area lambda) is exactly that of guidance="own".
    own = AttentiveCutMix(K, num_patches=6, grid_size=g, label_weight=label_weight)
    own_cells = own.partner_cells({"perm": params["perm"]}, att)[1]
    assert sorted(map(tuple, cells.sort(1).values.tolist())) == sorted(map(tuple, own_cells.sort(1).values.tolist()))
    own_area = own.region({"perm": params["perm"]}, s, s, att).flatten(1).float().mean(1)
    assert torch.equal(area.sort().values, own_area.sort().values) and not torch.equal(area, own_area)

def test_own_guidance_is_the_default_bit_for_bit_and_draws_nothing_more():
    images, labels = _batch()
    att = torch.rand(B, 8, 8, generator=_gen(2))
    g_default, g_own, g_shuffled = _gen(7), _gen(7), _gen(7)
    a = AttentiveCutMix(K, num_patches=N, grid_size=G)(images, labels, att, generator=g_default)
    b = AttentiveCutMix(K, num_patches=N, grid_size=G, guidance="own")(images, labels, att, generator=g_own)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(g_default.get_state(), g_own.get_state())
    AttentiveCutMix(K, num_patches=N, grid_size=G, guidance="shuffled")(images, labels, att, generator=g_shuffled)
    assert not torch.equal(g_default.get_state(), g_shuffled.get_state())  # the shuffle is one more draw
    # ... drawn after the method's own: the pairing is the same as "own" draws
    p_own = AttentiveCutMix(K, guidance="own").make_params(B, S, S, _gen(7))
    p_shuffled = AttentiveCutMix(K, guidance="shuffled").make_params(B, S, S, _gen(7))
    assert set(p_own) == {"perm"} and torch.equal(p_own["perm"], p_shuffled["perm"])


def test_params_replay_a_shuffled_call_and_bad_ones_are_refused():
    images, labels = _batch()
    att = _planted()
    mixer = AttentiveCutMix(K, num_patches=N, grid_size=G, guidance="shuffled")
    first = mixer(images, labels, att, generator=_gen(4))
    params = mixer.make_params(B, S, S, _gen(4))
    again = mixer(images, labels, att, params=params)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    params["guide_perm"][2] = B
    with pytest.raises(ValueError, match=rf"params\['guide_perm'\] must hold image indices in \[0, {B}\).*row 2"):
        mixer(images, labels, att, params=params)
    with pytest.raises(ValueError, match=r"params must be the dict of AttentiveCutMix.make_params\(\) with keys "
                                         r"\['guide_perm', 'perm'\]"):
        mixer(images, labels, att, params={"perm": params["perm"]})


def test_bad_guidance_values_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"guidance must be one of \('own', 'shuffled'\).*guidance='random'"):
        AttentiveCutMix(K, guidance="random")
    with pytest.raises(ConfigError, match="guidance"):
        make_config({"method": "attentive-cutmix", "guidance": "nope", "attention_cache": "x.safetensors"})
    with pytest.raises(ConfigError, match=r"--guidance does not apply to --method cutmix"):
        make_config({"method": "cutmix", "guidance": "shuffled"})


def test_train_attentive_cutmix_shuffled_with_an_attention_cache_on_the_device_path(tmp_path, capsys):
    raw, _, info = build_datasets("synthetic", synthetic_size=[64, 16], augment=False)
    cache = tmp_path / "maps.safetensors"
    build_cache(raw, lambda x: F.adaptive_avg_pool2d(x, 8), cache, meta={"fingerprint": info.train_fingerprint},
                batch_size=32, progress=False)
    out = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--synthetic-size", "64", "16", "--epochs", "1", "--batch-size", "32",
            "--workers", "0", "--no-progress", "--data-path", "device", "--method", "attentive-cutmix",
            "--guidance", "shuffled", "--num-patches", "3", "--grid-size", "4", "--attention-cache", str(cache),
            "--output-dir", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished" and results["config"]["guidance"] == "shuffled"
    assert results["curve"][-1]["train_loss"] > 0
