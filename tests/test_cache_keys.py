"""`compare`'s shared caches are keyed on what the training split's images are (issue 34, item 9): cells that
differ in `train_subset` or `split_seed` get their own attention cache, the seeds of one cell share one."""
from __future__ import annotations

from pathlib import Path

import yaml
from safetensors.torch import save_file

from attentive_cutmix.experiments import compare as compare_mod
from attentive_cutmix.experiments.grid import load_grid
from attentive_cutmix.models import create_model


def test_attention_caches_follow_the_split_and_subset_not_the_training_seed(tmp_path):
    weights = tmp_path / "extractor.safetensors"
    save_file(create_model("cifar_resnet20", num_classes=4).state_dict(), str(weights))
    spec = {"settings": {"dataset": "synthetic", "synthetic_size": [48, 16], "image_size": 16, "epochs": 1},
            "method_settings": {"attentive-cutmix": {"extractor": "cifar_resnet20", "extractor_weights": str(weights),
                                                     "grid_size": 4, "num_patches": 4}},
            "axes": {"method": ["attentive-cutmix"], "seed": [0, 1], "train_subset": [16, 24], "split_seed": [0, 1]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    grid = load_grid(path)
    caches: dict[tuple, set[str]] = {}
    for cell in grid.cells:
        cfg = compare_mod.resolved_config(grid, cell, tmp_path / "out", {}, log=lambda _: None)
        caches.setdefault((cfg.train_subset, cfg.split_seed), set()).add(Path(cfg.attention_cache).name)
    assert len(grid.cells) == 8 and all(len(names) == 1 for names in caches.values())  # both seeds: one cache
    assert len(set().union(*caches.values())) == 4  # each (subset, split) its own
