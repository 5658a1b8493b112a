"""Training harness: ``TrainConfig``, ``train``, ``evaluate`` (the ``train`` and ``demo`` subcommands live here too)."""
from .config import PRESETS, ConfigError, TrainConfig, load_yaml, make_config
from .trainer import NonFiniteLossError, evaluate, train

__all__ = ["TrainConfig", "ConfigError", "PRESETS", "make_config", "load_yaml", "train", "evaluate", "NonFiniteLossError"]
