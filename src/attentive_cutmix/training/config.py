"""``TrainConfig``: every option of ``attentive-cutmix train``, the paper presets, and YAML loading.

Precedence, lowest first: the dataclass defaults, ``--preset``, the YAML file, the command-line
flags. Options that only apply to one method, optimiser or schedule default to ``None`` ("use the
method's default"), so an option set explicitly for a method it does not apply to is an error
rather than silently ignored.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

METHODS = ("none", "mixup", "cutmix", "cutout", "attentive-cutmix")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "step")
AMP_MODES = ("off", "fp16", "bf16")
INITS = ("default", "xavier")

# The paper (Walawalkar et al. 2020, sec. 3) trains with batch 32 (ImageNet 64), lr 1e-3, weight
# decay 1e-5 and Xavier-normal init for 80/120/100 epochs (EfficientNet 180 on ImageNet). It does not
# name the optimiser: lr 1e-3 is Adam's usual rate (SGD would use ~0.1), so the presets choose Adam.
PRESETS: dict[str, dict[str, Any]] = {
    "paper-cifar10": dict(dataset="cifar10", epochs=80, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=1e-5, init="xavier"),
    "paper-cifar100": dict(dataset="cifar100", epochs=120, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=1e-5, init="xavier"),
    "paper-imagenet": dict(dataset="imagenet", epochs=100, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=1e-5, init="xavier",
                           model="resnet50"),
}
EFFICIENTNET_IMAGENET_EPOCHS = 180

# Option -> the methods / optimisers / schedules it applies to (checked only when it was set explicitly).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "num_patches": ("attentive-cutmix",), "grid_size": ("attentive-cutmix",), "extractor": ("attentive-cutmix",),
    "extractor_weights": ("attentive-cutmix",), "extractor_input_size": ("attentive-cutmix",),
    "attention_cache": ("attentive-cutmix",), "build_cache": ("attentive-cutmix",),
    "alpha": ("mixup", "cutmix"), "cutout_size": ("cutout",), "prob": ("mixup", "cutmix", "cutout", "attentive-cutmix"),
}
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {"momentum": ("sgd",), "nesterov": ("sgd",)}
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {"step_size": ("step",), "gamma": ("step",), "milestones": ("step",)}
METHOD_DEFAULTS: dict[str, Any] = dict(num_patches=6, grid_size=7, alpha=1.0, prob=1.0, cutout_size=16, momentum=0.9,
                                       nesterov=False, gamma=0.1)


class ConfigError(ValueError):
    """A training configuration that cannot run (bad name, bad value, conflicting options)."""


@dataclass
class TrainConfig:
    """All options of ``attentive-cutmix train`` (see ``attentive-cutmix train --help``)."""

    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    val_fraction: float = 0.0
    val_data: str | None = None
    image_size: int | None = None
    synthetic_size: int | list[int] | None = None  # train images, or [train, eval]
    split_seed: int = 0  # the held-out split; independent of `seed` so every training seed sees the same split
    train_subset: int | None = None  # train on a stratified subset of about N images (reduced-scale runs)
    # model
    model: str = "cifar_resnet20"
    init: str = "default"
    # mixing
    method: str = "none"
    num_patches: int | None = None
    grid_size: int | None = None
    alpha: float | None = None
    prob: float | None = None
    cutout_size: int | None = None
    extractor: str | None = None
    extractor_weights: str | None = None
    extractor_input_size: int | None = None
    attention_cache: str | None = None
    build_cache: bool | None = None
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float = 1e-5
    schedule: str = "constant"
    step_size: int | None = None
    gamma: float | None = None
    milestones: list[int] | None = None
    label_smoothing: float = 0.0
    # run
    seed: int = 0
    output_dir: str = "runs/train"
    resume: bool = False
    amp: str = "off"
    channels_last: bool = False
    workers: int = 2
    device: str | None = None
    preset: str | None = None
    max_steps_per_epoch: int | None = None
    eval_every: int = 1
    eval_batch_size: int | None = None
    progress: bool = True
    explicit: list[str] = field(default_factory=list, repr=False)  # options set by the user (file or flags)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("explicit")
        return d


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "explicit")


def _check_keys(values: Mapping[str, Any], source: str) -> None:
    unknown = sorted(k for k in values if k not in FIELDS)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} in {source}; valid keys: {', '.join(FIELDS)}")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of options (keys may use ``-`` or ``_``); unknown keys raise ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    _check_keys(data, str(path))
    return data


def make_config(overrides: Mapping[str, Any] | None = None, *, config_file: str | os.PathLike | None = None) -> TrainConfig:
    """Resolve defaults < preset < ``config_file`` < ``overrides`` into a validated ``TrainConfig``."""
    overrides = dict(overrides or {})
    _check_keys(overrides, "the options")
    user = {**(load_yaml(config_file) if config_file is not None else {}), **overrides}
    preset = user.get("preset")
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
        model = user.get("model", values.get("model"))
        if preset == "paper-imagenet" and str(model).startswith("efficientnet") and "epochs" not in user:
            values["epochs"] = EFFICIENTNET_IMAGENET_EPOCHS
    values.update(user)
    return validate(TrainConfig(**values, explicit=sorted(user)))


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def _positive(cfg: TrainConfig, name: str, *, allow_none: bool = True, zero_ok: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        raise ConfigError(f"{name} must be an integer >= {0 if zero_ok else 1}, got {name}={value!r}")


def _not_applicable(cfg: TrainConfig, table: dict[str, tuple[str, ...]], key: str, flag: str) -> None:
    current = getattr(cfg, key)
    for option, applies_to in table.items():
        if option in cfg.explicit and getattr(cfg, option) not in (None, False) and current not in applies_to:
            raise ConfigError(f"--{option.replace('_', '-')} does not apply to {flag} {current} (it applies to "
                              f"{', '.join(applies_to)}); remove it or change {flag}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check names and ranges, reject options that don't apply, and fill in the method defaults."""
    _choice("method", cfg.method, METHODS)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("schedule", cfg.schedule, SCHEDULES)
    _choice("amp mode", cfg.amp, AMP_MODES)
    _choice("init", cfg.init, INITS)
    _not_applicable(cfg, METHOD_OPTIONS, "method", "--method")
    _not_applicable(cfg, OPTIMIZER_OPTIONS, "optimizer", "--optimizer")
    _not_applicable(cfg, SCHEDULE_OPTIONS, "schedule", "--schedule")
    for name in ("epochs", "batch_size", "eval_every"):
        _positive(cfg, name, allow_none=False)
    sizes = cfg.synthetic_size if isinstance(cfg.synthetic_size, (list, tuple)) else [cfg.synthetic_size]
    if len(sizes) not in (1, 2) or any(n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1) for n in sizes):
        raise ConfigError(f"synthetic_size must be a positive int (train images) or a pair [train, eval], got {cfg.synthetic_size!r}")
    if isinstance(cfg.synthetic_size, tuple):
        cfg.synthetic_size = list(cfg.synthetic_size)
    for name in ("image_size", "num_patches", "grid_size", "cutout_size", "extractor_input_size",
                 "step_size", "max_steps_per_epoch", "eval_batch_size"):
        _positive(cfg, name, zero_ok=name == "num_patches")
    _positive(cfg, "workers", allow_none=False, zero_ok=True)
    if not (isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and cfg.seed >= 0):
        raise ConfigError(f"seed must be an integer >= 0, got seed={cfg.seed!r}")
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be > 0, got lr={cfg.lr!r}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got weight_decay={cfg.weight_decay!r}")
    if not (isinstance(cfg.split_seed, int) and not isinstance(cfg.split_seed, bool) and cfg.split_seed >= 0):
        raise ConfigError(f"split_seed must be an integer >= 0, got split_seed={cfg.split_seed!r}")
    if cfg.train_subset is not None and (isinstance(cfg.train_subset, bool) or not isinstance(cfg.train_subset, int)
                                         or cfg.train_subset < 1):
        raise ConfigError(f"train_subset must be a positive int (number of training images), got train_subset={cfg.train_subset!r}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got val_fraction={cfg.val_fraction!r}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got label_smoothing={cfg.label_smoothing!r}")
    if cfg.prob is not None and not 0.0 <= cfg.prob <= 1.0:
        raise ConfigError(f"prob must be in [0, 1], got prob={cfg.prob!r}")
    if cfg.alpha is not None and not cfg.alpha > 0:
        raise ConfigError(f"alpha must be > 0, got alpha={cfg.alpha!r}")
    if cfg.schedule == "step" and cfg.step_size is not None and cfg.milestones:
        raise ConfigError("give either --step-size or --milestones for --schedule step, not both")
    if cfg.milestones is not None and (not isinstance(cfg.milestones, list) or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in cfg.milestones)):
        raise ConfigError(f"milestones must be a list of positive epoch numbers, got milestones={cfg.milestones!r}")
    if cfg.method == "attentive-cutmix":
        if cfg.extractor is None and cfg.attention_cache is None:
            raise ConfigError("--method attentive-cutmix needs attention maps: either --extractor (a model name with "
                              "--extractor-weights FILE or pretrained weights, or a checkpoint.pt written by `attentive-cutmix "
                              "train`) to compute them on the fly, or --attention-cache FILE (made by `attentive-cutmix "
                              "cache-attention`, or add --build-cache with --extractor to make it now)")
        if cfg.build_cache and (cfg.extractor is None or cfg.attention_cache is None):
            raise ConfigError("--build-cache needs both --extractor (what to run) and --attention-cache (where to write it)")
        if cfg.extractor_weights is not None and cfg.extractor is None:
            raise ConfigError("--extractor-weights needs --extractor naming the architecture of those weights")
    applies = {**METHOD_OPTIONS, **OPTIMIZER_OPTIONS, **SCHEDULE_OPTIONS}
    for key, default in METHOD_DEFAULTS.items():  # defaults only where they apply, so the saved config stays honest
        selector = cfg.method if key in METHOD_OPTIONS else cfg.optimizer if key in OPTIMIZER_OPTIONS else cfg.schedule
        if getattr(cfg, key) is None and selector in applies[key]:
            setattr(cfg, key, default)
    cfg.build_cache = bool(cfg.build_cache)
    return cfg


__all__ = ["TrainConfig", "ConfigError", "PRESETS", "METHODS", "OPTIMIZERS", "SCHEDULES", "AMP_MODES",
           "make_config", "load_yaml", "validate"]
