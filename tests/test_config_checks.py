"""Config and grid checks: YAML numbers, every option type-checked up front, whole grids
checked."""
from __future__ import annotations

import pytest

from attentive_cutmix.cli import main
from attentive_cutmix.experiments.grid import GridError, load_grid
from attentive_cutmix.training import ConfigError, make_config
from attentive_cutmix.training.config import FIELDS, load_yaml, yaml_load

TINY = dict(dataset="synthetic", synthetic_size=[32, 16], image_size=16, epochs=1, batch_size=16, max_steps_per_epoch=1,
            workers=0, progress=False)


def test_yaml_numbers_are_numbers_as_people_write_them(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-3\nweight_decay: 5E-4\nlabel_smoothing: .1\nmomentum: 9e-1\nepochs: 2\nseed: 1_000\n")
    values = load_yaml(config)
    assert values == {"lr": 1e-3, "weight_decay": 5e-4, "label_smoothing": 0.1, "momentum": 0.9, "epochs": 2,
                      "seed": 1000}
    assert type(values["lr"]) is float and type(values["epochs"]) is int
    assert make_config({"optimizer": "sgd"}, config_file=config).lr == 1e-3
    assert yaml_load("a: 1e3\nb: -2.5e+2\nc: '1e-3'\nd: 1e\ne: 2026-12-01") == {
        "a": 1000.0, "b": -250.0, "c": "1e-3", "d": "1e", "e": __import__("datetime").date(2026, 12, 1)}
    import yaml

    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}  # PyYAML's own loader is left as it was


@pytest.mark.parametrize("key,value,expected", [
    ("lr", "0.1", "a number"), ("lr", True, "a number"), ("lr", None, "a number"), ("lr", [0.1], "a number"),
    ("lr", float("nan"), "a number"), ("epochs", 2.5, "an integer"), ("epochs", "10", "an integer"),
    ("channels_last", "false", "true or false"), ("resume", "no", "true or false"), ("progress", 0, "true or false"),
    ("compile", "yes", "true or false"), ("overwrite", 1, "true or false"), ("nesterov", "true", "true or false"),
    ("preset", ["paper-cifar10"], "a string"), ("method", ["cutmix"], "a string"), ("data_path", 3, "a string"),
    ("log_every", "50", "an integer"), ("image_cache", 5, "a string or null"),
    ("gamma", "x", "a number or null"), ("milestones", [[2]], "a list of integers"), ("milestones", 3, "a list"),
    ("synthetic_size", [32, [16]], "an integer or a list of integers"), ("dataset", None, "a string"),
])
def test_every_option_is_type_checked_naming_key_value_and_type(key, value, expected):
    assert key in FIELDS
    options = {**TINY, key: value}
    if key in ("gamma", "milestones"):
        options["schedule"] = "step"
    if key == "nesterov":
        options["optimizer"] = "sgd"
    with pytest.raises(ConfigError) as info:
        make_config(options)
    message = str(info.value)
    assert f"option {key} must be {expected}" in message and f"{key}={value!r}" in message


@pytest.mark.parametrize("key,value", [("batch_size", 10**9), ("image_size", 100_000), ("synthetic_size", 10**9),
                                       ("synthetic_size", [10, 10**9]), ("workers", 10_000),
                                       ("eval_batch_size", 10**8), ("epochs", 10**9)])
def test_absurd_sizes_are_refused_before_anything_is_allocated(key, value):
    with pytest.raises(ConfigError, match=f"{key}=.* is beyond the largest accepted value"):
        make_config({**TINY, key: value})


def test_schedule_and_patch_options_used_later_are_checked_now():
    with pytest.raises(ConfigError, match="gamma must be >= 0"):
        make_config({**TINY, "schedule": "step", "gamma": -0.5})
    with pytest.raises(ConfigError, match="num_patches=50 is more than the 7x7 grid's 49 cells"):
        make_config({**TINY, "method": "attentive-cutmix", "num_patches": 50, "grid_size": 7,
                     "extractor": "cifar_resnet20"})
    with pytest.raises(ConfigError, match="grid_size=1000 is beyond"):
        make_config({**TINY, "method": "attentive-cutmix", "grid_size": 1000, "extractor": "cifar_resnet20"})


def test_valid_values_pass_unchanged():
    cfg = make_config({**TINY, "lr": 1, "nesterov": False, "optimizer": "sgd", "schedule": "step", "gamma": 0.5,
                       "milestones": [1], "seed": 2**63 - 1})
    assert cfg.lr == 1 and type(cfg.lr) is int and cfg.nesterov is False and cfg.seed == 2**63 - 1


@pytest.mark.parametrize("seed", [2**63, 2**64, -1])
def test_out_of_range_seed_is_one_line_on_the_command_line(seed, tmp_path, capsys):
    code = main(["train", "--dataset", "synthetic", "--synthetic-size", "32", "--epochs", "1", "--workers", "0",
                 "--output-dir", str(tmp_path / "out"), "--no-progress", "--seed", str(seed)])
    err = capsys.readouterr().err
    assert code == 1 and f"seed must be an integer in [0, 2**63 - 1], got seed={seed}" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_config_file_with_a_quoted_boolean_is_refused_naming_the_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("resume: 'no'\n")
    with pytest.raises(ConfigError, match=f"option resume must be true or false, got resume='no' .* in {config}"):
        make_config(TINY, config_file=config)


def _grid(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


SETTINGS = "settings: {dataset: synthetic, synthetic_size: 32, image_size: 16, epochs: 1, workers: 0}\n"


@pytest.mark.parametrize("paper", ["[1, 2]", "{synthetic: 3}", "{synthetic: {cifar_resnet20: [1]}}",
                                   "{synthetic: {cifar_resnet20: {none: high}}}"])
def test_grid_paper_results_of_the_wrong_shape_are_refused_at_load(paper, tmp_path):
    with pytest.raises(GridError, match="paper_results"):
        load_grid(_grid(tmp_path, SETTINGS + f"axes: {{seed: [0]}}\npaper_results: {paper}\n"))


def test_grid_axis_values_sharing_a_label_but_not_a_config_are_refused(tmp_path):
    text = SETTINGS + "axes:\n  lr: [{label: fast, lr: 0.1}, {label: fast, lr: 0.01}]\n"
    with pytest.raises(GridError, match="two values labelled 'fast' with different settings"):
        load_grid(_grid(tmp_path, text))
    same = SETTINGS + "axes:\n  lr: [{label: fast, lr: 0.1}, {label: fast, lr: 0.1}]\n"
    with pytest.raises(GridError, match="lists 'fast' twice"):  # issue 23: a repeat is refused, not merged silently
        load_grid(_grid(tmp_path, same))


@pytest.mark.parametrize("entry", ["{label: cutmix, method: mixup}", "{label: cutmix, alpha: 0.5}"])
def test_a_method_axis_label_that_names_another_method_is_refused(entry, tmp_path):
    # The report reads a method axis label that is a registry name as that method (its display label, its
    # comparisons): MixUp labelled "cutmix" would be shown and compared as CutMix.
    with pytest.raises(GridError, match="labelled 'cutmix'.*names another method"):
        load_grid(_grid(tmp_path, SETTINGS + f"axes:\n  method: [none, {entry}]\n"))
    own = load_grid(_grid(tmp_path, SETTINGS + "axes:\n  method: [none, {label: cutmix, method: cutmix, alpha: 0.5}, "
                                               "{label: mixup-02, method: mixup, alpha: 0.2}]\n"))
    assert [c.axes["method"] for c in own.cells] == ["none", "cutmix", "mixup-02"]


@pytest.mark.parametrize("text,match", [
    (SETTINGS + "axes: {seed: [0]}\nlocalization: 'false'\n", "localization"),
    (SETTINGS + "axes: {seed: [0]}\nattention_cache: 'no'\n", "attention_cache"),
    (SETTINGS + "axes: {lr: [1e-3, 'x']}\n", "option lr must be a number"),
    (SETTINGS + "axes: {method: [[none, cutmix]]}\n", "option method must be a string"),
    (SETTINGS + "axes: {seed: [0]}\nmethod_settings: {cutmixx: {alpha: 1}}\n", "unknown method"),
])
def test_grid_files_are_checked_completely_before_any_cell_trains(text, match, tmp_path):
    with pytest.raises(GridError, match=match):
        load_grid(_grid(tmp_path, text))


def test_grid_numbers_in_exponent_form_are_numbers(tmp_path):
    grid = load_grid(_grid(tmp_path, SETTINGS + "axes: {lr: [1e-3, 1e-2]}\n"))
    assert sorted(c.config.lr for c in grid.cells) == [1e-3, 1e-2]


def test_a_folder_given_as_grid_file_is_named_as_a_folder(tmp_path):
    with pytest.raises(GridError, match="is a folder, not a grid file"):
        load_grid(tmp_path)
    with pytest.raises(GridError, match="missing.yaml not found"):
        load_grid(tmp_path / "missing.yaml")
