"""Recipe options that would silently train something else are refused or dropped where they do not apply
(issue 34, items 2, 15, 19)."""
from __future__ import annotations

import pytest
import yaml

from attentive_cutmix.experiments.grid import GridError, load_grid
from attentive_cutmix.training.config import ConfigError, make_config


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
