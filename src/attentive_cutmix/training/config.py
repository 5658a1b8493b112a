"""``TrainConfig``: every option of ``attentive-cutmix train`` in five frozen sections, the paper presets, and
config files.

A config is ``data``, ``model``, ``mixing``, ``optim`` and ``run`` sections (``training/sections.py``: each owns its
checks, its "does this option apply" rule and what of it is identity). Files and flags spell it flat, as they always
have (``num_patches: 4``, ``lr: 0.1``), and a config reads flat too (``cfg.lr`` is ``cfg.optim.lr``), except the two
names that are sections: ``cfg.model.name`` and ``cfg.mixing.options``. Precedence, lowest first: the defaults,
``--preset``, the YAML file, the command-line flags. Options that only apply to one method, optimiser or schedule
are refused when set for another, rather than silently ignored.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import registry
from ..constants import CHECKPOINT_SUFFIXES, INITS, MAX_IMAGE_SIZE, is_number
from ..errors import ConfigError
from .option_types import check_values, describe
from .run_folder import WEIGHTS_NAME
from .sections import (
    AMP_MODES,
    DATA_PATHS,
    OPTIMIZER_OPTIONS,
    OPTIMIZERS,
    SCHEDULE_OPTIONS,
    SCHEDULES,
    SECTIONS,
    DataConfig,
    MixingConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    applies,
    check_applicable,
    fields_where,
    flat_fields,
)
from .yaml_io import read_yaml_file, yaml_load

# The paper (Walawalkar et al. 2020, sec. 3) trains with batch 32 (ImageNet 64), lr 1e-3, weight
# decay 1e-5 and Xavier-normal init for 80/120/100 epochs (EfficientNet 180 on ImageNet). It does not
# name the optimiser: lr 1e-3 is Adam's usual rate (SGD would use ~0.1), so the presets choose Adam.
PRESETS: dict[str, dict[str, Any]] = {
    "paper-cifar10": dict(dataset="cifar10", epochs=80, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=1e-5,
                          init="xavier"),
    "paper-cifar100": dict(dataset="cifar100", epochs=120, batch_size=32, optimizer="adam", lr=1e-3, weight_decay=1e-5,
                           init="xavier"),
    "paper-imagenet": dict(dataset="imagenet", epochs=100, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=1e-5,
                           init="xavier", model="resnet50"),
}
EFFICIENTNET_IMAGENET_EPOCHS = 180
_WHERE = {name: (section, f.name) for name, (section, f) in flat_fields().items()}


@dataclass(frozen=True)
class TrainConfig:
    """All options of ``attentive-cutmix train`` (see ``attentive-cutmix train --help``), in sections.

    Build one with ``make_config`` (validated) or ``TrainConfig.from_flat``; change one with ``replace(**flat)``
    and ``validate`` the result.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    explicit: tuple[str, ...] = field(default=(), repr=False, compare=False)  # options the user set (file or flags)

    def __getattr__(self, name: str) -> Any:
        # Flat reads (cfg.lr): called only for names that are not attributes, so the sections themselves win.
        where = _WHERE.get(name)
        if where is None:
            if name in registry.option_names():  # an option, but the method's: not read flat
                raise AttributeError(f"{name!r} is an option of the method, read as cfg.mixing.options.{name}")
            raise AttributeError(f"{type(self).__name__} has no option {name!r}")
        return getattr(object.__getattribute__(self, where[0]), where[1])

    def get(self, name: str) -> Any:
        """The value of flat option ``name`` (``get("model")`` is the model's name)."""
        section, attr = _WHERE[name]
        return getattr(getattr(self, section), attr)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], *, explicit: typing.Iterable[str] = ()) -> TrainConfig:
        """A config (not yet validated) from flat ``{option: value}``; the method's options go to ``mixing``."""
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        options = registry.option_names()
        for key, value in values.items():
            if key in options:
                parts["mixing"].setdefault("options", {})[key] = value
            elif key in _WHERE:
                section, attr = _WHERE[key]
                parts[section][attr] = value
            else:
                raise ConfigError(f"unknown option {key!r}; valid keys: {', '.join(config_keys())}")
        return cls(data=DataConfig(**parts["data"]), model=ModelConfig(**parts["model"]),
                   mixing=MixingConfig(**parts["mixing"]), optim=OptimConfig(**parts["optim"]),
                   run=RunConfig(**parts["run"]), explicit=tuple(explicit))

    def replace(self, **flat: Any) -> TrainConfig:
        """A copy with flat options changed (not validated: ``validate`` it). A method's option updates the options
        the config holds; another ``method`` starts from that method's defaults (plus the options given here)."""
        changes: dict[str, dict[str, Any]] = {}
        if "method" in flat and flat["method"] != self.method:  # the held options are the old method's
            changes["mixing"] = {"options": {}}
        for key, value in flat.items():
            if key in registry.option_names():
                options = changes.setdefault("mixing", {}).get("options", self.mixing.options)
                if dataclasses.is_dataclass(options) and key not in {f.name for f in dataclasses.fields(options)}:
                    raise ConfigError(MixingConfig.why_not(key, {"method": self.method}) or (
                        f"replace({key}=...): the config holds the options of --method {self.method} "
                        f"({type(options).__name__}), which have no {key}"))
                options = (dataclasses.replace(options, **{key: value})  # type: ignore[type-var]
                           if dataclasses.is_dataclass(options) else {**(options or {}), key: value})
                changes["mixing"]["options"] = options
            elif key in _WHERE:
                section, attr = _WHERE[key]
                changes.setdefault(section, {})[attr] = value
            else:
                raise ConfigError(f"unknown option {key!r}; valid keys: {', '.join(config_keys())}")
        sections = {s: dataclasses.replace(getattr(self, s), **kw) for s, kw in changes.items()}
        return dataclasses.replace(self, **sections)

    def fields(self) -> dict[str, Any]:
        """The plain options as flat ``{option: value}`` (the method's options left out)."""
        return {name: self.get(name) for name in FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The config as flat ``{option: value}``: every method's options by name, None where they do not apply
        (as runs and cell ids have always recorded them)."""
        d = {name: copy.deepcopy(value) for name, value in self.fields().items()}
        d.update(dict.fromkeys(registry.option_names()))
        if self.mixing.options is not None and not isinstance(self.mixing.options, Mapping):
            d.update(flat_options(self.mixing.options))
        return d

    def data_identity(self) -> dict[str, Any]:
        """What decides the training split's images: the one key of every cache made from them."""
        return self.data.identity()


def flat_options(options: Any) -> dict[str, Any]:
    """A method's options as flat ``{name: value}``, an option marked ``record_default=False`` (``registry.option``)
    as None at its default.

    This is how a run's config records them (``config.yaml``, ``results.json``) and what a grid cell's id hashes:
    the same keys and values as before the options were nested, so committed runs and cell ids stay valid.
    """
    out = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        out[f.name] = None if not f.metadata.get("record_default", True) and value == f.default else value
    return out


# The plain options, in file order; the methods' options (registry.option_names()) are keys of a config too.
FIELDS = tuple(_WHERE)
PATH_FIELDS = fields_where("path")
# Where and how a run executes, not what it computes: left out of a grid cell's id, so cells can move machines.
RUN_FIELDS = fields_where("run")
# What a resume must match (with the dataset's class count), and what it may change without a word.
CHECKPOINT_FIELDS = ("num_classes", *fields_where("checkpoint"))
VOLATILE_FIELDS = fields_where("volatile")
DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig))
# A run's config.yaml records the working directory it was started from, relative to the run folder, under this key:
# the relative paths it holds count from there, wherever the file is read from (another working directory, a copy).
BASE_DIR_KEY = "base_dir"
# A method option named `epochs` would take --epochs away from the run: the config's keys are not for methods.
registry.reserve([*FIELDS, *SECTIONS, "explicit", BASE_DIR_KEY], "TrainConfig")
_HINTS = {name: typing.get_type_hints(SECTIONS[section])[f.name] for name, (section, f) in flat_fields().items()}
# Upper bounds on sizes: beyond them a typo (an extra 0) allocates tens of GB or starts thousands of processes.
# grid_size and cutout_size are method options (the registry checks them too); they are here for the commands
# that take them as flags without a TrainConfig (visualize).
SIZE_LIMITS: dict[str, int] = {**{name: f.metadata["limit"] for name, (_, f) in flat_fields().items()
                                  if f.metadata.get("limit")}, "cutout_size": MAX_IMAGE_SIZE, "grid_size": 256}


def config_keys() -> tuple[str, ...]:
    """Every key a config file, a grid or ``make_config`` accepts: the plain fields and every method's options."""
    return FIELDS + registry.option_names()


def _hint(key: str) -> Any:
    # Flat, a method's option is null where it does not apply (as runs record them).
    if key in _HINTS:
        return _HINTS[key]
    hint = registry.option_hint(key)
    return None if hint is None else hint | None


def check_types(values: Mapping[str, Any], source: str = "the options") -> dict[str, Any]:
    """Check every value against its option's type; ``ConfigError`` naming key, value and expected type.

    Returns the values as plain Python numbers (a numpy integer becomes an int). Integers are accepted where a
    number is expected and kept as they are (so a config's hash does not change); booleans are never numbers,
    and nothing but true/false is a boolean.
    """
    return check_values(values, _hint, source)


def _check_keys(values: Mapping[str, Any], source: str) -> None:
    keys = config_keys()
    unknown = sorted(k for k in values if k not in keys)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} in {source}; valid keys: {', '.join(keys)}")


def check_size_limits(values: Mapping[str, Any]) -> None:
    """``ConfigError`` for any option in ``values`` beyond its ``SIZE_LIMITS`` maximum (lists: any element); for the
    commands that take these options without a full ``TrainConfig`` (``cache-attention``, ``visualize``, ``evaluate``)
    as well as for ``validate``."""
    for name, limit in SIZE_LIMITS.items():
        value = values.get(name)
        if any(is_number(v) and v > limit  # type: ignore[operator]
               for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise ConfigError(f"{name}={value!r} is beyond the largest accepted value {limit} (it would allocate far "
                              f"more memory or processes than any run needs); is there a typo?")


def resolve_paths(values: Mapping[str, Any], base: str | os.PathLike[str]) -> dict[str, Any]:
    """``values`` with each relative path option (``PATH_FIELDS``; ``extractor`` only when it names a checkpoint
    file, not a model) joined to ``base``: the paths a run recorded, made to mean what they meant when it ran."""
    resolved = dict(values)
    for key in PATH_FIELDS:
        value = resolved.get(key)
        if not isinstance(value, str) or value.startswith("~") or os.path.isabs(value):
            continue
        if key == "extractor" and Path(value).suffix not in CHECKPOINT_SUFFIXES:
            continue
        resolved[key] = os.path.normpath(os.path.join(base, value))
    return resolved


def option_keys(data: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """``data`` with option keys spelled with ``_``; ``ConfigError`` if two keys are one option (``ema_decay`` and
    ``ema-decay``: the last used to win without a word)."""
    out: dict[str, Any] = {}
    spelled: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in out:
            raise ConfigError(f"{where} gives the option {name!r} twice ({spelled[name]!r} and {key!r}); give it once")
        out[name], spelled[name] = value, key
    return out


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping of options (keys may use ``-`` or ``_``); unknown keys raise ``ConfigError``.

    A ``base_dir`` key (a run's ``config.yaml`` records one) says where the file's relative paths count from,
    itself relative to the file's folder; without it they count from the working directory, as on a command line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = read_yaml_file(path, "config file", ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value, got {type(data).__name__}")
    data = option_keys(data, str(path))
    base = data.pop(BASE_DIR_KEY, None)
    _check_keys(data, str(path))
    data = check_types(data, str(path))
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{BASE_DIR_KEY} in {path} must be a folder path (where its relative paths count from), "
                          f"got {base!r}")
    # From the file's real folder: base_dir was measured between real paths (a symlinked runs/ folder, or the
    # run read through the link's target, would otherwise count from the wrong place).
    return resolve_paths(data, path.resolve().parent / os.path.expanduser(base))


def make_config(overrides: Mapping[str, Any] | None = None, *,
                config_file: str | os.PathLike[str] | None = None) -> TrainConfig:
    """Resolve defaults < preset < ``config_file`` < ``overrides`` into a validated ``TrainConfig``."""
    overrides = dict(overrides or {})
    _check_keys(overrides, "the options")
    user = {**(load_yaml(config_file) if config_file is not None else {}), **check_types(overrides)}
    check_rebuildable(user, str(config_file or "the options"))
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
    return validate(TrainConfig.from_flat(values, explicit=sorted(user)))


def needs_attention(cfg: TrainConfig) -> bool:
    """Whether the run's mixer reads attention maps (an extractor or a cache), as its method says for its options."""
    return cfg.mixing.reads_attention


def check_rebuildable(config: Mapping[str, Any], where: str) -> None:
    """``ConfigError`` if ``config`` is a run of ``train(model=..., train_dataset=...)``: only Python has those
    objects, so a command (``--resume``, ``evaluate``) cannot rebuild it; the message says how to from Python."""
    dataset, model = str(config.get("dataset")), str(config.get("model"))
    if not (dataset.startswith("given:") or model.startswith("module:")):
        return
    raise ConfigError(f"{where} is a run of train(model=..., train_dataset=...) from Python (dataset {dataset}, "
                      f"model {model}): no command can rebuild those objects. From Python, resume it with "
                      "train(make_config({'output_dir': RUN, 'resume': True, <its options>}), model=..., "
                      f"train_dataset=..., eval_dataset=...), and evaluate it by loading RUN/{WEIGHTS_NAME} "
                      "(serialization.load_state_dict_file) into your model and calling "
                      "attentive_cutmix.training.evaluate(model, loader, info, device)")


def validate(cfg: TrainConfig) -> TrainConfig:
    """The config checked (types, names, ranges, options that do not apply), defaults filled in: a new config."""
    values = check_types(cfg.fields(), "the config")
    check_rebuildable(values, "this config")
    for key in PATH_FIELDS:  # `output_dir: ~/runs` in YAML means the home folder, as on a command line, not ./~/runs
        if isinstance(values[key], str) and values[key].startswith("~"):
            values[key] = os.path.expanduser(values[key])
    checked = TrainConfig.from_flat(values, explicit=cfg.explicit)
    checked = dataclasses.replace(checked, mixing=dataclasses.replace(checked.mixing, options=cfg.mixing.options))
    mixing = checked.mixing.checked()  # first: an option of another method is the likeliest typo
    checked = dataclasses.replace(checked, mixing=mixing, optim=checked.optim.checked(), data=checked.data.checked(),
                                  model=checked.model.checked(), run=checked.run.checked())
    check_size_limits(checked.to_dict())
    check_applicable(checked.to_dict(), checked.explicit)
    return checked


__all__ = ["TrainConfig", "ConfigError", "PRESETS", "DATA_PATHS", "OPTIMIZERS", "SCHEDULES", "AMP_MODES", "INITS",
           "OPTIMIZER_OPTIONS", "SCHEDULE_OPTIONS", "DataConfig", "ModelConfig", "MixingConfig", "OptimConfig",
           "RunConfig", "make_config", "load_yaml", "read_yaml_file", "validate", "check_types", "check_size_limits",
           "yaml_load", "SIZE_LIMITS", "needs_attention", "flat_options", "config_keys", "applies", "describe",
           "FIELDS", "PATH_FIELDS", "RUN_FIELDS", "CHECKPOINT_FIELDS", "VOLATILE_FIELDS", "DATA_FIELDS",
           "BASE_DIR_KEY", "check_rebuildable", "resolve_paths", "option_keys"]
