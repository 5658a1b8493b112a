"""Paths in config and grid files mean what they mean on a command line: ``~`` is the home folder (issue 23,
item 27)."""
from __future__ import annotations

from pathlib import Path

import pytest

from attentive_cutmix.training.config import make_config


@pytest.mark.parametrize("key", ["output_dir", "data_dir", "val_data", "image_cache"])
def test_a_tilde_in_a_yaml_path_is_the_home_folder(tmp_path, monkeypatch, key):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "c.yaml"
    extra = {"data_dir": "dataset: imagefolder\n", "val_data": "dataset: imagefolder\ndata_dir: d\n",
             "image_cache": "dataset: imagefolder\ndata_dir: d\nval_fraction: 0.1\ndata_path: device\n"}.get(key, "")
    config.write_text(f"{extra}{key}: ~/x\n")
    cfg = make_config(config_file=config)
    assert getattr(cfg, key) == str(tmp_path / "home" / "x")
    assert not Path("~").exists()


def test_a_path_without_a_tilde_is_left_as_written():
    assert make_config({"output_dir": "runs/a~b"}).output_dir == "runs/a~b"
