"""A registered method cannot take over a key of the training config, nor replace the baseline (issue 34,
item 6)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from attentive_cutmix import registry
from attentive_cutmix.registry import Method, option
from attentive_cutmix.training.config import ConfigError, make_config


@dataclass
class EpochsOptions:
    epochs: int = option(3, "how many epochs to mix (a name TrainConfig owns)")


def test_an_option_named_like_a_config_field_is_refused_and_epochs_stays_the_runs():
    with pytest.raises(TypeError, match=r"'clash': option 'epochs' is a field of TrainConfig"):
        registry.register(Method("clash", "Clash", EpochsOptions))
    try:  # it used to register: make_config({"method": "clash", "epochs": 3}).epochs was 10
        assert "clash" not in registry.names()
        assert make_config({"method": "cutmix", "epochs": 3}).epochs == 3
        with pytest.raises(ConfigError, match="unknown method 'clash'"):
            make_config({"method": "clash", "epochs": 3})
    finally:
        registry.unregister("clash")


def test_the_baseline_cannot_be_replaced():
    before = registry.get(registry.BASELINE)
    with pytest.raises(ValueError, match="baseline 'none' cannot be replaced"):
        registry.register(Method(registry.BASELINE, "Something else"))
    assert registry.get(registry.BASELINE) is before
