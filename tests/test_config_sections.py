"""Issue 30 items 4-5: the config is five frozen sections whose fields say what they are; the field families the
package used to keep by hand are derived from them; one "does this option apply" rule serves the config and the
grids; the attention source is a type, resolved once; no caller fakes a TrainConfig."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attentive_cutmix.attention.source import CacheSpec, ExtractorSpec, resolve
from attentive_cutmix.models import create_model
from attentive_cutmix.training import config as C
from attentive_cutmix.training.config import ConfigError, TrainConfig, make_config
from attentive_cutmix.training.sections import DataConfig, MixingConfig, OptimConfig, RunConfig, applies, why_not

SRC = Path(__file__).resolve().parents[1] / "src" / "attentive_cutmix"


def test_the_field_families_are_the_ones_committed_runs_were_made_with():
    # Each family is now derived from the fields' own declarations; these are the sets the hand-kept tuples held
    # (cell ids hash everything but RUN_FIELDS, resumes compare CHECKPOINT_FIELDS): a field marked wrongly fails here.
    assert set(C.RUN_FIELDS) == {"output_dir", "resume", "auto_resume", "overwrite", "workers", "device", "progress",
                                 "eval_batch_size", "attention_cache", "build_cache", "log_every", "image_cache",
                                 "compile"}
    assert set(C.CHECKPOINT_FIELDS) == {"model", "num_classes", "image_size", "dataset", "method", "optimizer",
                                        "schedule"}
    assert set(C.VOLATILE_FIELDS) == {"resume", "auto_resume", "overwrite", "epochs", "output_dir", "workers",
                                      "device", "progress", "max_steps_per_epoch", "eval_every", "eval_batch_size",
                                      "log_every", "image_cache", "compile"}
    assert set(C.PATH_FIELDS) == {"data_dir", "val_data", "extractor", "extractor_weights", "attention_cache",
                                  "output_dir", "image_cache"}
    assert set(C.DATA_FIELDS) == {"dataset", "data_dir", "image_size", "val_fraction", "val_data", "split_seed",
                                  "train_subset", "synthetic_size"}
    assert C.SIZE_LIMITS["image_size"] == C.SIZE_LIMITS["extractor_input_size"] == 2048
    # The flat form keeps its order (config.yaml) and every option once.
    assert C.FIELDS[:3] == ("dataset", "data_dir", "val_fraction") and C.FIELDS[-1] == "progress"
    assert len(set(C.FIELDS)) == len(C.FIELDS)


def test_no_field_family_is_spelled_by_hand_outside_the_sections():
    # The old tuples' names are gone from src (the derived ones live in config.py); a new hand-kept list of data
    # options would be a string tuple starting with "dataset", "data_dir".
    text = {p: p.read_text() for p in SRC.rglob("*.py")}
    for name in (r"\bATTENTION_SOURCE\b", r"\bIDENTITY_FIELDS =", r"\bDATA_IDENTITY_FIELDS\b", r"RUN_FIELDS = \("):
        assert not [p.name for p, t in text.items() if re.search(name, t)], name
    hand = re.compile(r'\(\s*"dataset",\s*"data_dir",')
    assert [p.name for p, t in text.items() if hand.search(t)] == []


def test_no_caller_fakes_a_train_config():
    # cache-attention and visualize built TrainConfig(method="attentive-cutmix", ...) to get an extractor (the
    # defaults, TrainConfig(), are no fake).
    callers = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
               if re.search(r"TrainConfig\((?!\))", p.read_text()) and p.name != "config.py"]
    assert callers == []


def test_the_config_is_frozen_sections_read_flat():
    cfg = make_config({"method": "cutmix", "alpha": 0.5, "lr": 0.1, "optimizer": "sgd"})
    assert isinstance(cfg.optim, OptimConfig) and isinstance(cfg.data, DataConfig) and isinstance(cfg.run, RunConfig)
    assert cfg.lr is cfg.optim.lr and cfg.seed == cfg.run.seed == 0
    assert cfg.model.name == cfg.get("model") == "cifar_resnet20" and cfg.mixing.options.alpha == 0.5
    assert cfg.momentum == 0.9  # the default filled in where it applies
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run = RunConfig()  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no option 'lrr'"):
        cfg.lrr  # noqa: B018
    changed = cfg.replace(lr=0.2, alpha=2.0, output_dir="x")
    assert (changed.lr, changed.mixing.options.alpha, changed.output_dir, cfg.lr) == (0.2, 2.0, "x", 0.1)
    with pytest.raises(ConfigError, match="unknown option 'lrr'"):
        cfg.replace(lrr=1)
    # The flat form is what runs have always recorded.
    again = C.validate(TrainConfig.from_flat({k: v for k, v in cfg.to_dict().items() if v is not None}))
    assert again.to_dict() == cfg.to_dict()


def test_each_section_checks_its_own_options():
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\)"):
        DataConfig(val_fraction=1.5).checked()
    with pytest.raises(ConfigError, match="lr must be > 0"):
        OptimConfig(lr=0.0).checked()
    with pytest.raises(ConfigError, match="give either --resume .* or --overwrite"):
        RunConfig(resume=True, overwrite=True).checked()
    with pytest.raises(ConfigError, match="needs attention maps"):
        MixingConfig(method="attentive-cutmix").checked()
    with pytest.raises(ConfigError, match="--num-patches does not apply to --method cutmix"):
        MixingConfig(method="cutmix", options={"num_patches": 3}).checked()
    # A section's defaults are filled in by its own check, where they apply only.
    assert OptimConfig(optimizer="sgd").checked().momentum == 0.9 and OptimConfig().checked().momentum is None


@pytest.mark.parametrize("key, values, applies_", [
    ("momentum", {"optimizer": "sgd"}, True), ("momentum", {"optimizer": "adam"}, False),
    ("gamma", {"schedule": "step"}, True), ("gamma", {"schedule": "cosine"}, False),
    ("data_dir", {"dataset": "synthetic2"}, False), ("data_dir", {"dataset": "imagefolder"}, True),
    ("mix_off_epoch", {"method": "none"}, False), ("mix_off_epoch", {"method": "mixup"}, True),
    ("num_patches", {"method": "attentive-cutmix"}, True), ("num_patches", {"method": "mixup"}, False),
    ("extractor", {"method": "cutmix"}, False), ("extractor", {"method": "random-cells"}, False),
    ("extractor", {"method": "random-cells", "label_weight": "attention"}, True),
    ("attention_cache", {"method": "attentive-cutmix"}, True),
    ("attention_cache", {"method": "attentive-cutmix", "attention_source": "self"}, False),
    ("lr", {"method": "none"}, True),
])
def test_one_applies_rule_for_the_config_and_the_grids(key, values, applies_):
    # The grid drops an option from the cells it does not apply to by the rule the config refuses it with.
    assert applies(key, values) is applies_
    given = {**values, key: {"momentum": 0.5, "gamma": 0.5, "data_dir": "d", "mix_off_epoch": 2, "num_patches": 3,
                             "extractor": "cifar_resnet20", "attention_cache": "c.safetensors", "lr": 0.1}[key]}
    if not applies_:
        with pytest.raises(ConfigError) as err:
            make_config(given)
        assert str(err.value) == why_not(key, given)


def test_the_data_section_is_the_one_cache_key():
    a = make_config({"synthetic_size": 40, "seed": 0})
    assert a.data_identity() == dataclasses.asdict(a.data)
    assert make_config({"synthetic_size": 40, "seed": 7}).data_identity() == a.data_identity()  # training seed: no
    assert make_config({"synthetic_size": 40, "train_subset": 20}).data_identity() != a.data_identity()


def test_extractor_spec_identity_keeps_old_cache_keys_and_tells_attentions_apart():
    plain = ExtractorSpec("cifar_resnet20", weights="w.safetensors")
    assert plain.identity() == {"extractor": "cifar_resnet20", "extractor_weights": "w.safetensors",
                                "extractor_input_size": None}
    assert ExtractorSpec("vit", attention="cls_token").identity()["extractor_attention"] == "cls_token"
    with pytest.raises(ConfigError, match="unknown extractor attention 'max'"):
        ExtractorSpec("cifar_resnet20", attention="max")
    with pytest.raises(ConfigError, match="extractor_input_size must be an integer >= 1"):
        ExtractorSpec("cifar_resnet20", input_size=0)
    # A checkpoint brings its own weights: giving others was silently ignored, now it is refused.
    with pytest.raises(ConfigError, match="own weights"):
        make_config({"method": "attentive-cutmix", "extractor": "run/checkpoint.pt", "extractor_weights": "w.pt"})


def test_resolve_returns_the_runs_attention_source_once(tmp_path):
    _, _, info = make_config({"synthetic_size": [24, 8], "image_size": 16}).data.datasets(augment=False)
    train_ds, _, _ = make_config({"synthetic_size": [24, 8], "image_size": 16}).data.datasets()
    weights = tmp_path / "r20.safetensors"
    torch.manual_seed(0)
    save_file(create_model("cifar_resnet20", num_classes=info.num_classes, image_size=16).state_dict(), str(weights))
    spec, cpu = ExtractorSpec("cifar_resnet20", weights=str(weights)), torch.device("cpu")
    assert resolve(None, None, train_ds=train_ds, info=info, device=cpu).kind == "none"
    online = resolve(spec, None, train_ds=train_ds, info=info, device=cpu)
    assert online.kind == "online" and online.extractor.input_size == 16 and online.train_ds is train_ds
    with pytest.raises(ConfigError, match="does not exist; make it with"):
        resolve(spec, CacheSpec(str(tmp_path / "maps.safetensors")), train_ds=train_ds, info=info, device=cpu)
    built = resolve(spec, CacheSpec(str(tmp_path / "maps.safetensors"), build=True), train_ds=train_ds, info=info,
                    device=cpu)
    assert built.kind == "cache" and built.extractor is None and len(built.cache) == len(train_ds)
    item = built.train_ds[0]
    assert len(train_ds[0]) == 2 and len(item) == 3 and item[2].shape == (16, 16)  # items carry their maps (framed)
    # Without the extractor a cache is checked against the split only.
    assert resolve(None, CacheSpec(str(tmp_path / "maps.safetensors")), train_ds=train_ds, info=info,
                   device=cpu).kind == "cache"
