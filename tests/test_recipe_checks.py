"""Recipe options that would silently train something else are refused or dropped where they do not apply
(issue 34, items 2, 15, 19)."""
from __future__ import annotations

import pytest
import yaml

from attentive_cutmix.experiments.grid import GridError, load_grid
from attentive_cutmix.training.config import ConfigError, make_config, yaml_load


def test_mix_off_epoch_zero_is_refused_not_a_run_that_mixes_nothing():
    # timm's --mixup-off-epoch 0 means "never turn mixing off"; here it turned mixing off from the first epoch,
    # giving weights bit-identical to --method none under the name cutmix.
    with pytest.raises(ConfigError, match=r"mix_off_epoch=0 .*omit --mix-off-epoch"):
        make_config({"method": "cutmix", "mix_off_epoch": 0})
    assert make_config({"method": "cutmix", "mix_off_epoch": 1}).mix_off_epoch == 1


def test_warmup_beyond_the_run_is_refused():
    with pytest.raises(ConfigError, match=r"warmup_epochs=5 is beyond epochs=3.*at most 3"):
        make_config({"epochs": 3, "warmup_epochs": 5})
    assert make_config({"epochs": 3, "warmup_epochs": 3}).warmup_epochs == 3


def test_a_grid_setting_mix_off_epoch_does_not_apply_to_its_none_cells(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"settings": {"dataset": "synthetic", "epochs": 2, "mix_off_epoch": 1},
                                    "axes": {"method": ["none", "cutmix"]}}))
    cells = {c.config.method: c.config for c in load_grid(path).cells}
    assert cells["none"].mix_off_epoch is None and cells["cutmix"].mix_off_epoch == 1


def test_axis_values_that_give_one_config_are_refused_not_trained_twice(tmp_path):
    """Item 16: `label_smoothing: [0, 0.0]` made two cells of one config hash, trained and reported twice."""
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"settings": {"dataset": "synthetic", "epochs": 1},
                                    "axes": {"method": ["cutmix"], "label_smoothing": [0, 0.0, 0.1]}}))
    with pytest.raises(GridError, match=r"cells .*label_smoothing0-.* and .*label_smoothing0.0-.* are the same config"):
        load_grid(path)
    path.write_text(yaml.safe_dump({"settings": {"dataset": "synthetic", "epochs": 1},
                                    "axes": {"method": ["none", "cutmix"], "alpha": [0.5, 1.0]}}))
    assert len(load_grid(path).cells) == 3  # an axis that does not apply to `none` still gives one none cell


def test_config_files_refuse_repeated_keys_two_spellings_of_one_option_and_name_a_non_utf8_file(tmp_path):
    """Item 23: repeated keys and `ema_decay` beside `ema-decay` resolved last-wins without a word; a non-UTF-8
    file's error had no file name."""
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.1\nepochs: 2\nlr: 0.01\n")
    with pytest.raises(ConfigError, match=rf"(?s){path} is not valid YAML: .*the key 'lr' is given twice \(first"):
        make_config(config_file=path)
    path.write_text("ema_decay: 0.9\nema-decay: 0.99\n")
    with pytest.raises(ConfigError, match=rf"{path} gives the option 'ema_decay' twice \('ema_decay' and 'ema-"):
        make_config(config_file=path)
    path.write_text("base: &base {lr: 0.1}\nrun:\n  <<: *base\n  lr: 0.2\n")  # a merge key may be overridden
    assert load_yaml_text(path)["run"]["lr"] == 0.2
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"config file {path} is not UTF-8 text"):
        make_config(config_file=path)
    grid = tmp_path / "grid.yaml"
    grid.write_bytes("name: caf\xe9\naxes: {method: [none]}\n".encode("latin-1"))
    with pytest.raises(GridError, match=rf"grid file {grid} is not UTF-8 text"):
        load_grid(grid)
    grid.write_text(yaml.safe_dump({"settings": {"epochs": 1, "alpha": 0.5}}) + "settings: {epochs: 2}\n")
    with pytest.raises(GridError, match="'settings' is given twice"):
        load_grid(grid)


def test_a_data_folder_for_generated_images_is_refused_and_does_not_apply_in_a_grid(tmp_path):
    """Item 23: `--data-dir` with a synthetic dataset was silently ignored."""
    with pytest.raises(ConfigError, match="--data-dir does not apply to dataset 'synthetic'"):
        make_config({"dataset": "synthetic", "data_dir": str(tmp_path)})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"settings": {"epochs": 1, "data_dir": str(tmp_path)},
                                    "axes": {"dataset": ["synthetic", "imagefolder"]}}))
    cells = {c.config.dataset: c.config for c in load_grid(path).cells}
    assert cells["synthetic"].data_dir is None and cells["imagefolder"].data_dir == str(tmp_path)


def load_yaml_text(path):
    return yaml_load(path.read_text())
