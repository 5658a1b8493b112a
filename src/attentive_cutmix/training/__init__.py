"""Training harness: ``TrainConfig``, ``train``, ``evaluate``; imported on first use, so ``--help`` stays light."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config", "ConfigError": "config", "PRESETS": "config", "make_config": "config",
    "load_yaml": "config",
    "train": "trainer", "evaluate": "trainer", "NonFiniteLossError": "trainer",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attentive_cutmix.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
