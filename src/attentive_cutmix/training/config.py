"""``TrainConfig``: every option of ``attentive-cutmix train``, the paper presets, and YAML loading.

Precedence, lowest first: the dataclass defaults, ``--preset``, the YAML file, the command-line
flags. The mixing method's options are nested (``cfg.mixing``, the method's options dataclass from the
registry) and spelled flat in files and flags (``num_patches: 4``); options that only apply to one method,
optimiser or schedule are refused when set for another, rather than silently ignored.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .. import registry
from ..constants import CHECKPOINT_SUFFIXES, INITS, MAX_IMAGE_SIZE, is_int, is_number

DATA_PATHS = ("auto", "device", "loader")
# Where the attention maps come from: they apply to a method whose options make it read attention.
ATTENTION_SOURCE = ("extractor", "extractor_weights", "extractor_input_size", "extractor_attention", "attention_cache",
                    "build_cache")
EXTRACTOR_ATTENTIONS = ("channel_mean", "cls_token")
OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = ("constant", "cosine", "step")
AMP_MODES = ("off", "fp16", "bf16")

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

# Option -> the optimisers / schedules it applies to (checked only when it was set explicitly). The methods'
# options apply to the methods that declare them (registry).
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {"momentum": ("sgd",), "nesterov": ("sgd",)}
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {"step_size": ("step",), "gamma": ("step",), "milestones": ("step",)}
OPTIMIZER_DEFAULTS: dict[str, Any] = dict(momentum=0.9, nesterov=False, gamma=0.1)


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
    # mixing: the method (a registry name) and its options (its options dataclass; the defaults when None)
    method: str = "none"
    mixing: Any = None
    extractor: str | None = None
    extractor_weights: str | None = None
    extractor_input_size: int | None = None
    extractor_attention: str | None = None  # channel_mean (default) | cls_token (ViT-style extractors)
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
    # timm train.py's recipe; each default is "off", so existing cell ids do not change.
    warmup_epochs: int = 0  # linear lr warmup over the first N epochs, then the schedule
    clip_grad: float | None = None  # clip the global gradient norm to this value
    ema_decay: float | None = None  # also keep an EMA of the weights, evaluated and saved beside the raw weights
    mix_off_epoch: int | None = None  # mix in epochs 1..N only (timm's --mixup-off-epoch)
    # run
    seed: int = 0
    output_dir: str = "runs/train"
    resume: bool = False
    auto_resume: bool = False  # continue the run in output_dir if it has one, else start it (requeued job scripts)
    overwrite: bool = False  # a fresh run may replace the outputs of an earlier run in output_dir
    amp: str = "off"
    channels_last: bool = False
    workers: int = 2
    # auto | device (whole split on the device, batched crop/flip there) | loader (DataLoader workers)
    data_path: str = "auto"
    image_cache: str | None = None  # device path: decoded uint8 images of an image folder, kept in this file
    eval_train: bool = False  # also evaluate on the un-augmented training split (train accuracy, overfitting gap)
    log_every: int = 50  # steps between host syncs (progress bar, loss check under DDP)
    compile: bool = False  # torch.compile the model
    device: str | None = None
    preset: str | None = None
    max_steps_per_epoch: int | None = None
    eval_every: int = 1
    eval_batch_size: int | None = None
    progress: bool = True
    explicit: list[str] = field(default_factory=list, repr=False)  # options set by the user (file or flags)

    def to_dict(self) -> dict[str, Any]:
        """The config as flat ``{option: value}``: every method's options by name, None where they do not apply
        (as runs and cell ids have always recorded them)."""
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
             if f.name not in ("explicit", "mixing")}
        d.update(dict.fromkeys(registry.option_names()))
        if self.mixing is not None:
            d.update(flat_options(self.mixing))
        return d


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


# The plain fields; the methods' options (registry.option_names()) are keys of a config too.
FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("explicit", "mixing"))
PATH_FIELDS = ("data_dir", "val_data", "extractor", "extractor_weights", "attention_cache", "output_dir", "image_cache")
# A run's config.yaml records the working directory it was started from, relative to the run folder, under this key:
# the relative paths it holds count from there, wherever the file is read from (another working directory, a copy).
BASE_DIR_KEY = "base_dir"
# A method option named `epochs` would take --epochs away from the run: the config's keys are not for methods.
registry.reserve([*(f.name for f in dataclasses.fields(TrainConfig)), BASE_DIR_KEY], "TrainConfig")
_HINTS = {name: hint for name, hint in typing.get_type_hints(TrainConfig).items() if name in FIELDS}
# Upper bounds on sizes: beyond them a typo (an extra 0) allocates tens of GB or starts thousands of processes.
# grid_size and cutout_size are method options (the registry checks them too); they are here for the commands
# that take them as flags without a TrainConfig (visualize).
SIZE_LIMITS: dict[str, int] = {"image_size": MAX_IMAGE_SIZE, "extractor_input_size": MAX_IMAGE_SIZE,
                               "cutout_size": MAX_IMAGE_SIZE, "grid_size": 256, "batch_size": 16384,
                               "eval_batch_size": 16384, "workers": 256, "epochs": 100_000, "synthetic_size": 1_000_000}


def config_keys() -> tuple[str, ...]:
    """Every key a config file, a grid or ``make_config`` accepts: the plain fields and every method's options."""
    return FIELDS + registry.option_names()
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; the sampler adds the epoch to the seed

# YAML 1.1 (PyYAML) reads 1e-3 and 5E4 as strings: its float pattern wants a dot. This loader also reads the
# exponent forms people write (1e-3, 1E5, +2e0, 1.e-3) as floats; everything else is PyYAML's safe loader.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


# A few kB of nested aliases ("billion laughs") expand to billions of nodes once anything walks the document (the
# constructor, a hash of it, an error message's repr). Our files have tens to hundreds of nodes.
MAX_YAML_NODES = 100_000


class YamlSizeError(yaml.YAMLError):
    """A YAML document whose aliases expand beyond ``MAX_YAML_NODES``, or that nests too deeply to read."""


def _expanded_size(root: yaml.Node) -> int:
    """Node count of the document with every alias written out, computed on the composed graph (each node once);
    a node that contains itself counts as unbounded."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion limit on deep documents
        node, done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            pending.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
            continue
        if key in pending:
            return MAX_YAML_NODES + 1  # a recursive alias
        pending.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


class _YamlLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of repeated keys without a word: `lr: 0.1` ... `lr: 0.01` must not pass unseen.
        # Merged keys (<<: *base) may be overridden, as YAML means them to be.
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"the key {key_node.value!r} is given twice (first "
                    f"on line {seen[key_node.value].line + 1}); give each key once", key_node.start_mark)
            seen[key_node.value] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_size(node) > MAX_YAML_NODES:
            raise YamlSizeError(f"its aliases (*name) expand to more than {MAX_YAML_NODES:,} values (an alias bomb, "
                                "or an alias that contains itself); write the values out or use fewer aliases")
        return node


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that reads ``1e-3`` as a number (used for config and grid files).

    Documents whose aliases expand beyond ``MAX_YAML_NODES`` values are refused before they are built
    (``YamlSizeError``, a ``yaml.YAMLError``).
    """
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except RecursionError as err:  # PyYAML composes nested collections recursively
        raise YamlSizeError("it nests collections too deeply to read") from err


def read_yaml_file(path: Path, what: str, error: type[Exception]) -> Any:
    """The YAML document in ``path`` (``yaml_load``), or ``error`` naming ``what`` file it is and what is wrong."""
    try:
        return yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise error(f"{what} {path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text ({err}); save it as UTF-8") from err


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}[hint]


def _conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """(does ``value`` have type ``hint``, the value as a plain Python value)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, plain = _conform(value, arg)
            if ok:
                return True, plain
        return False, value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_conform(v, typing.get_args(hint)[0]) for v in value]
        return all(ok for ok, _ in items), [plain for _, plain in items]
    if hint is type(None):
        return value is None, value
    if hint is bool:  # never 'false', 0 or 'no': bool('false') is True
        return isinstance(value, bool), value
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        return ok, value if isinstance(value, (int, float)) or not ok else float(value)
    if hint is str:
        return isinstance(value, str), value
    raise TypeError(f"no type check for {hint!r}; add one to config._conform")  # a new field type needs one


def _why(value: Any, hint: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
            return "; a quoted number is a string in YAML: write it without quotes"
        except ValueError:
            pass
        if value.lower() in ("true", "false", "yes", "no", "on", "off") and "true or false" in _describe(hint):
            return "; write true or false without quotes"
    if isinstance(value, float) and not math.isfinite(value):
        return "; it must be finite"
    return ""


def _flat_option_hint(key: str) -> Any:
    # Flat, a method's option is null where it does not apply (as runs record them).
    hint = registry.option_hint(key)
    return None if hint is None else hint | None


def check_types(values: Mapping[str, Any], source: str = "the options") -> dict[str, Any]:
    """Check every value against its ``TrainConfig`` field type; ``ConfigError`` naming key, value and expected type.

    Returns the values as plain Python numbers (a numpy integer becomes an int). Integers are accepted where a
    number is expected and kept as they are (so a config's hash does not change); booleans are never numbers,
    and nothing but true/false is a boolean.
    """
    plain = {}
    for key, value in values.items():
        hint = _HINTS.get(key) or _flat_option_hint(key)
        if hint is None:
            plain[key] = value
            continue
        ok, plain[key] = _conform(value, hint)
        if not ok:
            kind = "null" if value is None else type(value).__name__
            raise ConfigError(f"option {key} must be {_describe(hint)}, got {key}={value!r} ({kind}) in {source}"
                              f"{_why(value, hint)}")
    return plain


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
        if any(is_number(v) and v > limit for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise ConfigError(f"{name}={value!r} is beyond the largest accepted value {limit} (it would allocate far "
                              f"more memory or processes than any run needs); is there a typo?")


def resolve_paths(values: Mapping[str, Any], base: str | os.PathLike) -> dict[str, Any]:
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


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
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
                config_file: str | os.PathLike | None = None) -> TrainConfig:
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
    options = registry.option_names()
    mixing = {k: values.pop(k) for k in list(values) if k in options}
    return validate(TrainConfig(**values, mixing=mixing, explicit=sorted(user)))


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def _positive(cfg: TrainConfig, name: str, *, allow_none: bool = True, zero_ok: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and allow_none:
        return
    if not is_int(value) or value < (0 if zero_ok else 1):
        raise ConfigError(f"{name} must be an integer >= {0 if zero_ok else 1}, got {name}={value!r}")


def _not_applicable(cfg: TrainConfig, table: dict[str, tuple[str, ...]], key: str, flag: str) -> None:
    current = getattr(cfg, key)
    for option, applies_to in table.items():
        if option in cfg.explicit and getattr(cfg, option) not in (None, False) and current not in applies_to:
            raise ConfigError(f"--{option.replace('_', '-')} does not apply to {flag} {current} (it applies to "
                              f"{', '.join(applies_to)}); remove it or change {flag}")


def _method(name: Any) -> registry.Method:
    try:
        return registry.get(name)
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method {name!r}; valid choices: {', '.join(registry.names())}") from None


def needs_attention(cfg: TrainConfig) -> bool:
    """Whether the run's mixer reads attention maps (an extractor or a cache), as its method says for its options."""
    try:
        return registry.reads_attention(cfg.method, cfg.mixing)
    except (KeyError, TypeError):
        _method(cfg.method)  # an unknown method: the ConfigError naming the valid ones
        raise


def _mixing_options(method: registry.Method, flat: Mapping[str, Any]) -> Any:
    """The method's options from flat ``{option: value}`` (None: its default); options of other methods refused."""
    given = {k: v for k, v in flat.items() if v is not None}
    for key in given:
        if key not in method.option_names():
            applies = registry.applies_to(key)
            raise ConfigError(f"--{key.replace('_', '-')} does not apply to --method {method.name} (it applies to "
                              f"{', '.join(applies)}); remove it or change --method")
    return method.options(**given)


def _check_mixing(cfg: TrainConfig) -> registry.Method:
    """``cfg.mixing`` as the method's checked options dataclass (its defaults when None)."""
    method = _method(cfg.method)
    if cfg.mixing is None or isinstance(cfg.mixing, Mapping):
        cfg.mixing = _mixing_options(method, cfg.mixing or {})
    elif type(cfg.mixing) is not method.options:
        raise ConfigError(f"mixing holds {type(cfg.mixing).__name__}, not the options of --method {cfg.method} "
                          f"({method.options.__name__}); build them with registry.get({cfg.method!r}).options(...)")
    options = dataclasses.asdict(cfg.mixing)
    unset = [k for k, v in options.items() if v is None]
    if unset:
        raise ConfigError(f"option {unset[0]} of --method {cfg.method} must be "
                          f"{_describe(registry.option_hint(unset[0]))}, got None")
    cfg.mixing = dataclasses.replace(cfg.mixing, **check_types(options, "the config"))
    try:
        registry.check_options(cfg.mixing)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return method


def _check_attention_source(cfg: TrainConfig, method: registry.Method) -> None:
    flag, condition = f"--method {cfg.method}", method.attention_condition
    if not method.needs_attention(cfg.mixing):
        given = [k for k in ATTENTION_SOURCE if k in cfg.explicit and getattr(cfg, k) not in (None, False)]
        if given and condition:
            raise ConfigError(f"--{given[0].replace('_', '-')} applies to {flag} only with {condition} (only then "
                              f"does it read attention maps); remove it or add {condition}")
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} does not apply to {flag} (it reads no attention "
                              f"maps); remove it or change --method")
        return
    what = f"{flag} {condition}".rstrip()
    if cfg.extractor is None and cfg.attention_cache is None:
        raise ConfigError(f"{what} needs attention maps: either --extractor (a model name with "
                          "--extractor-weights FILE or pretrained weights, or a checkpoint.pt written by "
                          "`attentive-cutmix train`) to compute them on the fly, or --attention-cache FILE "
                          "(made by `attentive-cutmix cache-attention`, or add --build-cache with --extractor to "
                          "make it now)")
    if cfg.build_cache and (cfg.extractor is None or cfg.attention_cache is None):
        raise ConfigError("--build-cache needs both --extractor (what to run) and --attention-cache "
                          "(where to write it)")
    if cfg.extractor_weights is not None and cfg.extractor is None:
        raise ConfigError("--extractor-weights needs --extractor naming the architecture of those weights")


def _check_recipe(cfg: TrainConfig) -> None:
    """warmup_epochs, clip_grad, ema_decay, mix_off_epoch: ranges."""
    _positive(cfg, "warmup_epochs", allow_none=False, zero_ok=True)
    if is_int(cfg.epochs) and cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(f"warmup_epochs={cfg.warmup_epochs} is beyond epochs={cfg.epochs}: the learning rate would "
                          f"never reach --lr; give --warmup-epochs at most {cfg.epochs} (or more --epochs)")
    if cfg.mix_off_epoch == 0:  # timm's --mixup-off-epoch 0 means "never"; ours would silently be --method none
        raise ConfigError(f"mix_off_epoch=0 would train every epoch on plain images: a --method {cfg.method} run that "
                          "mixes nothing. To mix in every epoch omit --mix-off-epoch (timm's --mixup-off-epoch 0 "
                          "means that); to mix in epochs 1..N give N >= 1")
    _positive(cfg, "mix_off_epoch")
    if cfg.clip_grad is not None and not cfg.clip_grad > 0:
        raise ConfigError(f"clip_grad must be > 0 (the largest gradient norm), got clip_grad={cfg.clip_grad!r}")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in (0, 1), e.g. 0.9998, got ema_decay={cfg.ema_decay!r}")


def check_rebuildable(config: Mapping[str, Any], where: str) -> None:
    """``ConfigError`` if ``config`` is a run of ``train(model=..., train_dataset=...)``: only Python has those
    objects, so a command (``--resume``, ``evaluate``) cannot rebuild it; the message says how to from Python."""
    dataset, model = str(config.get("dataset")), str(config.get("model"))
    if not (dataset.startswith("given:") or model.startswith("module:")):
        return
    raise ConfigError(f"{where} is a run of train(model=..., train_dataset=...) from Python (dataset {dataset}, "
                      f"model {model}): no command can rebuild those objects. From Python, resume it with "
                      "train(make_config({'output_dir': RUN, 'resume': True, <its options>}), model=..., "
                      "train_dataset=..., eval_dataset=...), and evaluate it by loading RUN/weights.safetensors "
                      "(serialization.load_state_dict_file) into your model and calling "
                      "attentive_cutmix.training.evaluate(model, loader, info, device)")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check types, names and ranges, reject options that don't apply, and fill in the defaults."""
    for key, value in check_types({k: getattr(cfg, k) for k in FIELDS}, "the config").items():
        setattr(cfg, key, value)
    check_rebuildable({"dataset": cfg.dataset, "model": cfg.model}, "this config")
    for key in PATH_FIELDS:  # `output_dir: ~/runs` in YAML means the home folder, as on a command line, not ./~/runs
        value = getattr(cfg, key)
        if isinstance(value, str) and value.startswith("~"):
            setattr(cfg, key, os.path.expanduser(value))
    method = _check_mixing(cfg)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("schedule", cfg.schedule, SCHEDULES)
    _choice("amp mode", cfg.amp, AMP_MODES)
    _choice("init", cfg.init, INITS)
    _choice("data path", cfg.data_path, DATA_PATHS)
    if cfg.extractor_attention is not None:  # None is the channel mean, so grids written before keep their cell ids
        _choice("extractor attention", cfg.extractor_attention, EXTRACTOR_ATTENTIONS)
    _not_applicable(cfg, OPTIMIZER_OPTIONS, "optimizer", "--optimizer")
    _not_applicable(cfg, SCHEDULE_OPTIONS, "schedule", "--schedule")
    for name in ("epochs", "batch_size", "eval_every", "log_every"):
        _positive(cfg, name, allow_none=False)
    sizes = cfg.synthetic_size if isinstance(cfg.synthetic_size, (list, tuple)) else [cfg.synthetic_size]
    if len(sizes) not in (1, 2) or any(n is not None and (not is_int(n) or n < 1) for n in sizes):
        raise ConfigError(f"synthetic_size must be a positive int (train images) or a pair [train, eval], "
                          f"got {cfg.synthetic_size!r}")
    if isinstance(cfg.synthetic_size, tuple):
        cfg.synthetic_size = list(cfg.synthetic_size)
    for name in ("image_size", "extractor_input_size", "step_size", "max_steps_per_epoch", "eval_batch_size"):
        _positive(cfg, name)
    _positive(cfg, "workers", allow_none=False, zero_ok=True)
    for name in ("seed", "split_seed"):
        if not 0 <= getattr(cfg, name) <= MAX_SEED:
            raise ConfigError(f"{name} must be an integer in [0, 2**63 - 1], got {name}={getattr(cfg, name)!r}")
    check_size_limits(cfg.to_dict())
    if (cfg.resume or cfg.auto_resume) and cfg.overwrite:
        flag = "--resume" if cfg.resume else "--auto-resume"
        raise ConfigError(f"give either {flag} (continue the run in --output-dir) or --overwrite (replace it), "
                          "not both")
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be > 0, got lr={cfg.lr!r}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got weight_decay={cfg.weight_decay!r}")
    if cfg.train_subset is not None and (not is_int(cfg.train_subset)
                                         or cfg.train_subset < 1):
        raise ConfigError(f"train_subset must be a positive int (number of training images), "
                          f"got train_subset={cfg.train_subset!r}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got val_fraction={cfg.val_fraction!r}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got label_smoothing={cfg.label_smoothing!r}")
    for name in ("momentum", "gamma"):  # read only at the first step / the first decay: check them now
        if getattr(cfg, name) is not None and not getattr(cfg, name) >= 0:
            raise ConfigError(f"{name} must be >= 0, got {name}={getattr(cfg, name)!r}")
    if cfg.schedule == "step" and cfg.step_size is not None and cfg.milestones:
        raise ConfigError("give either --step-size or --milestones for --schedule step, not both")
    if cfg.milestones is not None and (not isinstance(cfg.milestones, list) or any(
            not is_int(m) or m < 1 for m in cfg.milestones)):
        raise ConfigError(f"milestones must be a list of positive epoch numbers, got milestones={cfg.milestones!r}")
    _check_recipe(cfg)
    for key in ("data_dir", "val_data"):  # the synthetic images are generated: a folder given for them is not read
        if key in cfg.explicit and getattr(cfg, key) is not None and str(cfg.dataset).startswith("synthetic"):
            raise ConfigError(f"--{key.replace('_', '-')} does not apply to dataset {cfg.dataset!r} (its images are "
                              "generated, no folder is read); remove it, or choose --dataset imagefolder, cifar10 ...")
    if cfg.method == "none" and "mix_off_epoch" in cfg.explicit and cfg.mix_off_epoch is not None:
        raise ConfigError("--mix-off-epoch does not apply to --method none (nothing is mixed); remove it or choose a "
                          "mixing method")
    _check_attention_source(cfg, method)
    applies = {**OPTIMIZER_OPTIONS, **SCHEDULE_OPTIONS}
    for key, default in OPTIMIZER_DEFAULTS.items():  # defaults only where they apply, so the saved config stays honest
        selector = cfg.optimizer if key in OPTIMIZER_OPTIONS else cfg.schedule
        if getattr(cfg, key) is None and selector in applies[key]:
            setattr(cfg, key, default)
    cfg.build_cache = bool(cfg.build_cache)
    return cfg


__all__ = ["TrainConfig", "ConfigError", "PRESETS", "DATA_PATHS", "OPTIMIZERS", "SCHEDULES", "AMP_MODES", "INITS",
           "make_config", "load_yaml", "read_yaml_file", "validate", "check_types", "check_size_limits", "yaml_load",
           "SIZE_LIMITS",
           "needs_attention", "flat_options", "config_keys", "FIELDS", "PATH_FIELDS", "BASE_DIR_KEY",
           "check_rebuildable", "resolve_paths", "option_keys"]
