"""The attention variants beyond the paper: attention-mass labels and sampled cells (mixer, config, training)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from attentive_cutmix import AttentiveCutMix, RandomCells
from attentive_cutmix.mixers.cell_scores import attention_mass, attention_mass_lam
from attentive_cutmix.training import ConfigError, make_config, train

REPO = Path(__file__).resolve().parents[1]
R20 = REPO.parent / "shared" / "models" / "cifar10-resnet20.safetensors"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _planted(b: int, g: int, hot: int, *, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(B, g, g) maps: small scores everywhere, cell ``hot`` high."""
    att = torch.rand(b, g * g, generator=_gen(seed)) * noise
    att[:, hot] += 1.0
    return att.view(b, g, g)


# --------------------------------------------------------------------------- sampled cells
def test_temperature_zero_is_the_paper_bit_for_bit_and_draws_nothing():
    images, labels = torch.rand(16, 3, 32, 32, generator=_gen(1)), torch.arange(16) % 5
    att = torch.rand(16, 64, 8, 8, generator=_gen(2))
    g_default, g_zero = _gen(7), _gen(7)
    a = AttentiveCutMix(5, num_patches=6)(images, labels, att, generator=g_default)
    b = AttentiveCutMix(5, num_patches=6, temperature=0.0)(images, labels, att, generator=g_zero)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(g_default.get_state(), g_zero.get_state())
    assert set(AttentiveCutMix(5, temperature=0).make_params(4, 32, 32, _gen())) == {"perm"}
    assert set(AttentiveCutMix(5, temperature=1).make_params(4, 32, 32, _gen())) == {"perm", "gumbel"}


def _cell_counts(mixer: AttentiveCutMix, att: torch.Tensor, batches: int) -> torch.Tensor:
    """How often each cell of the (identical) maps was pasted, over ``batches`` calls."""
    b, g = att.shape[0], mixer.grid_size
    images = torch.zeros(b, 1, 4 * g, 4 * g)
    counts = torch.zeros(g * g)
    gen = _gen(11)
    for _ in range(batches):
        params = mixer.make_params(b, 4 * g, 4 * g, gen)
        grid = att.flatten(1)
        cells = mixer.choose_cells(grid, params)
        counts += torch.bincount(cells.flatten(), minlength=g * g)
        assert mixer(images, torch.zeros(b, dtype=torch.long), att, params=params)[0].shape == images.shape
    return counts


def test_very_high_temperature_gives_uniform_cells():
    g, n, b, batches = 5, 3, 64, 60
    att = _planted(b, g, hot=7, noise=0.5)
    counts = _cell_counts(AttentiveCutMix(3, num_patches=n, grid_size=g, temperature=1e6), att, batches)
    expected = b * batches * n / g ** 2
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # df = 24: P(chi2 > 51.2) = 0.001 for independent draws; top-k's draws are negatively correlated (fewer)
    assert chi2 < 51.2, (chi2, counts)
    # The same statistic at temperature 0 (always the planted cell and the same others) is far beyond it.
    top = _cell_counts(AttentiveCutMix(3, num_patches=n, grid_size=g), att, 2)
    assert top[7] == b * 2


def test_hot_cell_frequency_falls_as_temperature_rises():
    g, b = 5, 256
    att = _planted(b, g, hot=12, noise=0.3, seed=3)
    freq = []
    for tau in (0.0, 1.0, 2.0, 4.0, 30.0):  # the hot cell stands ~4.9 std above the rest
        mixer = AttentiveCutMix(3, num_patches=2, grid_size=g, temperature=tau)
        freq.append(float(_cell_counts(mixer, att, 4)[12]) / (4 * b))
    assert freq[0] == 1.0
    assert all(a > b for a, b in zip(freq, freq[1:])), freq
    assert freq[-1] < 0.2  # near the uniform 2/25 = 0.08


def test_sampled_cells_are_reproducible_and_mix_exactly():
    images, labels = torch.rand(8, 3, 28, 28, generator=_gen(1)), torch.arange(8) % 3
    att = torch.rand(8, 7, 7, generator=_gen(2))
    mixer = AttentiveCutMix(3, num_patches=6, temperature=1.0)
    a, b = mixer(images, labels, att, generator=_gen(5)), mixer(images, labels, att, generator=_gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    replaced = (a[0] != images).any(1).float().mean((1, 2))
    assert torch.allclose(replaced, torch.full((8,), 6 / 49), atol=1e-6)  # six 4 px cells of 28 px, as in the paper
    assert torch.allclose(a[1].sum(1), torch.ones(8))


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), "1", True])
def test_bad_temperature_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match="temperature"):
        AttentiveCutMix(3, temperature=bad)


# --------------------------------------------------------------------------- attention-mass labels
def test_attention_mass_is_a_distribution_and_uniform_for_a_constant_map():
    s = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0], [-3.0, -1.0, -1.0, -3.0]])
    p = attention_mass(s)
    assert torch.allclose(p[0], torch.tensor([0.0, 1.0, 2.0, 5.0]) / 8)
    assert torch.allclose(p[1], torch.full((4,), 0.25))
    assert torch.allclose(p[2], torch.tensor([0.0, 0.5, 0.5, 0.0]))


def test_attention_labels_follow_the_formula_on_a_hand_made_pair():
    # 2x2 grid, one cell pasted, two images paired with each other.
    att = torch.tensor([[[0.0, 4.0], [1.0, 1.0]],   # image 0: mass 0, 2/3, 1/6, 1/6 -> its top cell is 1
                        [[3.0, 0.0], [1.0, 0.0]]])  # image 1: mass 3/4, 0, 1/4, 0   -> its top cell is 0
    images, labels = torch.rand(2, 3, 8, 8, generator=_gen()), torch.tensor([0, 1])
    params = {"perm": torch.tensor([1, 0])}
    _, targets = AttentiveCutMix(2, num_patches=1, grid_size=2, label_weight="attention")(
        images, labels, att, params=params)
    # image 0 receives image 1's cell 0: w_p = p_1(0) = 3/4, w_o = 1 - p_0(0) = 1 -> partner weight 3/7
    # image 1 receives image 0's cell 1: w_p = p_0(1) = 2/3, w_o = 1 - p_1(1) = 1 -> partner weight 2/5
    assert torch.allclose(targets, torch.tensor([[4 / 7, 3 / 7], [2 / 5, 3 / 5]]))
    _, area = AttentiveCutMix(2, num_patches=1, grid_size=2)(images, labels, att, params=params)
    assert torch.allclose(area, torch.tensor([[0.75, 0.25], [0.25, 0.75]]))


def test_attention_labels_fall_back_to_area_when_both_weights_are_zero():
    mass = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # all mass on cell 0
    cells = torch.tensor([[0], [0]])  # cell 0 of the partner, which also holds all of the image's own mass
    lam = attention_mass_lam(mass, torch.tensor([1, 0]), cells, torch.tensor([0.25, 0.25]))
    assert torch.allclose(lam, torch.tensor([1.0, 1.0]))  # w_p = 1, w_o = 0: the partner's label only
    lam = attention_mass_lam(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 0]),
                             torch.tensor([[0], [1]]), torch.tensor([0.3, 0.4]))
    assert torch.allclose(lam, torch.tensor([0.3, 0.4]))  # w_p = 0 and w_o = 0: the area fraction


def test_attention_labels_rows_sum_to_one_and_gradients_flow():
    images = torch.rand(6, 3, 32, 32, generator=_gen(3), requires_grad=True)
    att = torch.randn(6, 16, 8, 8, generator=_gen(4))
    mixed, targets = AttentiveCutMix(4, label_weight="attention", temperature=1.0)(
        images, torch.arange(6) % 4, att, generator=_gen(5))
    assert torch.allclose(targets.sum(1), torch.ones(6)) and (targets >= 0).all()
    mixed.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_random_cells_with_attention_labels_needs_maps_and_uses_them():
    images, labels = torch.rand(4, 3, 14, 14, generator=_gen()), torch.arange(4) % 2
    with pytest.raises(ValueError, match="label_weight='attention'.*needs attention"):
        RandomCells(2, label_weight="attention")(images, labels, generator=_gen())
    with pytest.raises(ValueError, match="extractor"):
        RandomCells(2, extractor=lambda x: x)
    att = torch.rand(4, 7, 7, generator=_gen(9))
    gen_a, gen_b = _gen(2), _gen(2)
    mixed_a, t_area = RandomCells(2)(images, labels, att, generator=gen_a)
    mixed_b, t_mass = RandomCells(2, label_weight="attention")(images, labels, att, generator=gen_b)
    assert torch.equal(mixed_a, mixed_b)  # the same random cells: only the labels change
    assert not torch.allclose(t_area, t_mass)


# --------------------------------------------------------------------------- config and training
def test_config_options_apply_only_where_they_mean_something(tmp_path):
    with pytest.raises(ConfigError, match="--label-weight does not apply to --method cutmix"):
        make_config({"method": "cutmix", "label_weight": "attention"})
    with pytest.raises(ConfigError, match="--cell-temperature does not apply to --method random-cells"):
        make_config({"method": "random-cells", "cell_temperature": 1.0})
    with pytest.raises(ConfigError, match="only with --label-weight attention"):
        make_config({"method": "random-cells", "extractor": "cifar_resnet20"})
    with pytest.raises(ConfigError, match="random-cells --label-weight attention needs attention maps"):
        make_config({"method": "random-cells", "label_weight": "attention"})
    with pytest.raises(ConfigError, match="unknown label weight"):
        make_config({"method": "random-cells", "label_weight": "mass"})
    with pytest.raises(ConfigError, match="cell_temperature must be >= 0"):
        make_config({"method": "attentive-cutmix", "extractor": "x", "cell_temperature": -1.0})
    # The paper's choices spelled out are stored as the defaults (so cell ids do not change).
    cfg = make_config({"method": "attentive-cutmix", "extractor": "x", "label_weight": "area", "cell_temperature": 0})
    assert (cfg.mixing.options.label_weight, cfg.mixing.options.cell_temperature) == ("area", 0)
    assert cfg.to_dict()["label_weight"] is None and cfg.to_dict()["cell_temperature"] is None


@pytest.mark.skipif(not R20.is_file(), reason="needs ../shared/models")
@pytest.mark.parametrize("method,extra", [
    ("attentive-cutmix", {"label_weight": "attention", "cell_temperature": 1.0}),
    ("random-cells", {"label_weight": "attention"}),
])
@pytest.mark.parametrize("cached", [True, False])
def test_variants_train_on_the_device_path_cached_and_online(method, extra, cached, tmp_path):
    opts = dict(dataset="synthetic", synthetic_size=[64, 16], model="cifar_resnet20", epochs=1, batch_size=16,
                workers=0, progress=False, data_path="device", method=method, extractor="cifar_resnet20",
                extractor_weights=str(R20), extractor_input_size=32, output_dir=str(tmp_path / "run"), **extra)
    if cached:
        opts.update(attention_cache=str(tmp_path / "maps.safetensors"), build_cache=True)
    res = train(make_config(opts))
    assert res["status"] == "finished" and res["curve"][-1]["train_loss"] > 0
    assert res["config"]["label_weight"] == "attention"


def test_the_untrained_extractor_script_makes_the_weights_the_committed_cells_used(tmp_path, monkeypatch):
    script = REPO / "configs" / "results" / "make_untrained_extractor.py"
    spec = importlib.util.spec_from_file_location("make_untrained_extractor", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from safetensors.torch import load_file

    out = tmp_path / "untrained.safetensors"
    module.main([str(out)])
    assert module.state_digest(load_file(str(out))) == module.DIGEST  # the same weights on this machine and torch
    assert module.state_digest(module.untrained_state(seed=1)) != module.DIGEST
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:  # a flag is never taken for the output path
        module.main(["--help"])
    assert stop.value.code == 0 and not (tmp_path / "--help").exists()
    grid = (REPO / "configs" / "results" / "cifar10-jpeg-variants.yaml").read_text()
    assert str(module.OUT.relative_to(REPO)) in grid


@pytest.mark.slow
@pytest.mark.skipif(not R20.is_file(), reason="needs ../shared/models")
def test_variants_train_under_ddp_with_a_cache(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "attentive_cutmix", "train", "--dataset", "synthetic", "--synthetic-size", "128", "32", "--epochs", "1",
           "--batch-size", "16", "--workers", "0", "--device", "cpu", "--output-dir", str(out), "--no-progress",
           "--data-path", "device", "--method", "attentive-cutmix", "--label-weight", "attention",
           "--cell-temperature", "1", "--extractor", "cifar_resnet20", "--extractor-weights", str(R20),
           "--extractor-input-size", "32", "--attention-cache", str(tmp_path / "maps.safetensors"), "--build-cache"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "finished" and results["config"]["world_size"] == 2
    assert results["config"]["label_weight"] == "attention" and results["config"]["cell_temperature"] == 1.0
