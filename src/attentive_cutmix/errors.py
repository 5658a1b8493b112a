"""The package's configuration error, defined at the bottom so every layer can raise it."""
from __future__ import annotations


class ConfigError(ValueError):
    """A training configuration that cannot run (bad name, bad value, conflicting options)."""


__all__ = ["ConfigError"]
