"""The sections of a run's config: data, model, mixing, optimisation, run. Each is frozen and owns its options'
checks, its "does this option apply" rule and what of it is identity.

What an option *is* is said once, at its field (``opt``): ``run`` (where and how a run executes, not what it
computes: left out of a grid cell's id), ``checkpoint`` (a resume must match it), ``volatile`` (a resume may change
it without a word), ``path`` (a relative path, counted from where the run started) and ``limit`` (the largest value
a typo should not get past). The tuples the rest of the package used to keep by hand are derived from these.
Every field of ``DataConfig`` decides the training split's images: that section *is* the data identity, the one key
every cache uses.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import registry
from ..constants import ATTENTIONS, INITS, MAX_IMAGE_SIZE, is_int
from ..errors import ConfigError
from .option_types import check_values, describe
from .run_folder import CHECKPOINT_NAME

if TYPE_CHECKING:  # the specs load the extractor code (torchvision's model zoo): on first use, not with --help
    from ..attention.source import CacheSpec, ExtractorSpec

DATA_PATHS = ("auto", "device", "loader")
OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = ("constant", "cosine", "step")
AMP_MODES = ("off", "fp16", "bf16")
# Option -> the optimisers / schedules it applies to. The methods' options apply to the methods that declare them.
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {"momentum": ("sgd",), "nesterov": ("sgd",)}
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {"step_size": ("step",), "gamma": ("step",), "milestones": ("step",)}
OPTIMIZER_DEFAULTS: dict[str, Any] = dict(momentum=0.9, nesterov=False, gamma=0.1)
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; the sampler adds the epoch to the seed


def opt(default: Any = None, *, run: bool = False, checkpoint: bool = False, volatile: bool = False,
        path: bool = False, limit: int | None = None, flat: str | None = None) -> Any:
    """A config field with what it is (see the module docstring); ``flat``: its name in files and flags."""
    meta = dict(run=run, checkpoint=checkpoint, volatile=volatile, path=path, limit=limit, flat=flat)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def positive(section: Any, name: str, *, allow_none: bool = True, zero_ok: bool = False) -> None:
    value = getattr(section, name)
    if value is None and allow_none:
        return
    if not is_int(value) or value < (0 if zero_ok else 1):
        raise ConfigError(f"{name} must be an integer >= {0 if zero_ok else 1}, got {name}={value!r}")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


@dataclass(frozen=True)
class DataConfig:
    """What the run trains and evaluates on; every field decides the training split's images."""

    dataset: str = opt("synthetic", checkpoint=True)
    data_dir: str | None = opt(path=True)
    val_fraction: float = opt(0.0)
    val_data: str | None = opt(path=True)
    image_size: int | None = opt(checkpoint=True, limit=MAX_IMAGE_SIZE)
    synthetic_size: int | list[int] | None = opt(limit=1_000_000)  # train images, or [train, eval]
    split_seed: int = opt(0)  # the held-out split; independent of `seed`: every training seed sees the same split
    train_subset: int | None = opt()  # train on a stratified subset of about N images (reduced-scale runs)

    def checked(self) -> DataConfig:
        sizes = self.synthetic_size if isinstance(self.synthetic_size, (list, tuple)) else [self.synthetic_size]
        if len(sizes) not in (1, 2) or any(n is not None and (not is_int(n) or n < 1) for n in sizes):
            raise ConfigError(f"synthetic_size must be a positive int (train images) or a pair [train, eval], "
                              f"got {self.synthetic_size!r}")
        positive(self, "image_size")
        if not 0 <= self.split_seed <= MAX_SEED:
            raise ConfigError(f"split_seed must be an integer in [0, 2**63 - 1], got split_seed={self.split_seed!r}")
        if self.train_subset is not None and (not is_int(self.train_subset) or self.train_subset < 1):
            raise ConfigError(f"train_subset must be a positive int (number of training images), "
                              f"got train_subset={self.train_subset!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got val_fraction={self.val_fraction!r}")
        synthetic = list(self.synthetic_size) if isinstance(self.synthetic_size, tuple) else self.synthetic_size
        return dataclasses.replace(self, synthetic_size=synthetic)

    def identity(self) -> dict[str, Any]:
        """The options that decide the training split's images: the key of every cache made from them."""
        return dataclasses.asdict(self)

    def datasets(self, *, augment: bool = True) -> tuple[Any, Any, Any]:
        """``(train_ds, eval_ds, info)`` of this data (``data.build_datasets``), training items augmented or not."""
        from ..data import build_datasets  # on first use: torchvision's datasets do not load with a config

        given = self.synthetic_size
        sizes: int | tuple[int, int] | None  # [train] is train images, [train, eval] the pair (as flags)
        if isinstance(given, list):
            sizes = given[0] if len(given) == 1 else (given[0], given[1])
        else:
            sizes = given
        return build_datasets(self.dataset, data_dir=self.data_dir, image_size=self.image_size,
                              val_fraction=self.val_fraction, val_data=self.val_data, seed=self.split_seed,
                              synthetic_size=sizes, train_subset=self.train_subset, augment=augment)

    @staticmethod
    def why_not(key: str, values: Mapping[str, Any]) -> str | None:
        dataset = values.get("dataset", "synthetic")
        if key in ("data_dir", "val_data") and str(dataset).startswith("synthetic"):  # generated: no folder is read
            return (f"{_flag(key)} does not apply to dataset {dataset!r} (its images are generated, no folder is "
                    "read); remove it, or choose --dataset imagefolder, cifar10 ...")
        return None


@dataclass(frozen=True)
class ModelConfig:
    """The network trained (``model`` in files and flags) and its initialisation."""

    name: str = opt("cifar_resnet20", checkpoint=True, flat="model")
    init: str = opt("default")

    def checked(self) -> ModelConfig:
        choice("init", self.init, INITS)
        return self

    @staticmethod
    def why_not(key: str, values: Mapping[str, Any]) -> str | None:
        return None


def method_of(name: Any) -> registry.Method:
    """The registry's method ``name``, or ``ConfigError`` naming the valid ones."""
    try:
        return registry.get(name)
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method {name!r}; valid choices: {', '.join(registry.names())}") from None


def _reads_attention(values: Mapping[str, Any]) -> bool:
    """Whether the method of flat ``values``, with their options, reads attention (True if unclear: the config check
    then names the problem)."""
    try:
        method = registry.get(values.get("method", "none"))
        return method.needs_attention(method.options(**{k: v for k, v in values.items()
                                                        if k in method.option_names() and v is not None}))
    except (KeyError, TypeError, ValueError):
        return True


@dataclass(frozen=True)
class MixingConfig:
    """The method (a registry name), its options (its options dataclass) and where its attention comes from."""

    method: str = opt("none", checkpoint=True)
    options: Any = field(default=None, metadata=dict(flat=None))  # spelled flat: each option by its own name
    extractor: str | None = opt(path=True)  # a path only when it names a checkpoint (config.resolve_paths)
    extractor_weights: str | None = opt(path=True)
    extractor_input_size: int | None = opt(limit=MAX_IMAGE_SIZE)
    extractor_attention: str | None = opt()  # channel_mean (default) | cls_token (ViT-style extractors)
    attention_cache: str | None = opt(run=True, path=True)
    build_cache: bool | None = opt(run=True)

    # Cached: a section is frozen, so each is computed once per config (the registry is asked once, not per read).
    @functools.cached_property
    def reads_attention(self) -> bool:
        """Whether the method, with these options, reads attention maps (an extractor or a cache)."""
        return registry.reads_attention(self.method, self.options)

    @functools.cached_property
    def extractor_spec(self) -> ExtractorSpec | None:
        """The extractor the run reads attention from, or None (no attention, or only a cache)."""
        if self.extractor is None or not self.reads_attention:
            return None
        from ..attention.source import ExtractorSpec

        return ExtractorSpec(self.extractor, weights=self.extractor_weights, input_size=self.extractor_input_size,
                             attention=self.extractor_attention)

    @functools.cached_property
    def cache_spec(self) -> CacheSpec | None:
        """The attention cache the run reads (and builds, with ``build_cache``), or None."""
        if self.attention_cache is None or not self.reads_attention:
            return None
        from ..attention.source import CacheSpec

        return CacheSpec(self.attention_cache, build=bool(self.build_cache))

    def checked(self) -> MixingConfig:
        """The options as the method's checked dataclass (its defaults where unset); the attention source checked."""
        method = method_of(self.method)
        options = self.options
        if options is None or isinstance(options, Mapping):
            given = {k: v for k, v in (options or {}).items() if v is not None}
            for key in given:
                if key not in method.option_names():
                    raise ConfigError(self.why_not(key, {"method": self.method}) or f"unknown option {key!r}")
            options = method.options(**given)
        elif type(options) is not method.options:
            raise ConfigError(f"mixing holds {type(options).__name__}, not the options of --method {self.method} "
                              f"({method.options.__name__}); build them with "
                              f"registry.get({self.method!r}).options(...)")
        values = dataclasses.asdict(options)
        unset = [k for k, v in values.items() if v is None]
        if unset:
            raise ConfigError(f"option {unset[0]} of --method {self.method} must be "
                              f"{describe(registry.option_hint(unset[0]))}, got None")
        options = dataclasses.replace(options, **check_values(values, registry.option_hint, "the config"))
        try:
            registry.check_options(options)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.extractor_attention is not None:  # None is the channel mean: grids written before keep their ids
            choice("extractor attention", self.extractor_attention, ATTENTIONS)
        positive(self, "extractor_input_size")
        checked = dataclasses.replace(self, options=options, build_cache=bool(self.build_cache))
        if checked.reads_attention:
            checked._check_source(method)
        # The attention source is made here, once: the run reads these attributes, it does not ask again.
        _ = checked.extractor_spec, checked.cache_spec
        return checked

    def _check_source(self, method: registry.Method) -> None:
        if self.extractor is None and self.attention_cache is None:
            raise ConfigError(f"{f'--method {self.method} {method.attention_condition}'.rstrip()} needs attention "
                              "maps: either --extractor (a model name with --extractor-weights FILE or pretrained "
                              f"weights, or a {CHECKPOINT_NAME} written by `attentive-cutmix train`) to compute them "
                              "on the fly, or --attention-cache FILE (made by `attentive-cutmix cache-attention`, or "
                              "add --build-cache with --extractor to make it now)")
        if self.build_cache and (self.extractor is None or self.attention_cache is None):
            raise ConfigError("--build-cache needs both --extractor (what to run) and --attention-cache "
                              "(where to write it)")
        if self.extractor_weights is not None and self.extractor is None:
            raise ConfigError("--extractor-weights needs --extractor naming the architecture of those weights")

    @staticmethod
    def why_not(key: str, values: Mapping[str, Any]) -> str | None:
        name = values.get("method", "none")
        if key in registry.option_names() and name not in registry.applies_to(key):
            return (f"{_flag(key)} does not apply to --method {name} (it applies to "
                    f"{', '.join(registry.applies_to(key))}); remove it or change --method")
        if key in ATTENTION_FIELDS and not _reads_attention(values):
            condition = registry.get(name).attention_condition if name in registry.names() else ""
            if condition:
                return (f"{_flag(key)} applies to --method {name} only with {condition} (only then does it read "
                        f"attention maps); remove it or add {condition}")
            return (f"{_flag(key)} does not apply to --method {name} (it reads no attention maps); remove it or "
                    "change --method")
        return None


# Where the attention comes from: every field of the mixing section but the method and its options.
ATTENTION_FIELDS = tuple(f.name for f in dataclasses.fields(MixingConfig) if f.name not in ("method", "options"))


@dataclass(frozen=True)
class OptimConfig:
    """How the weights are fitted: epochs, batch, optimiser, schedule and timm train.py's recipe (each off by
    default, so existing cell ids do not change)."""

    epochs: int = opt(10, volatile=True, limit=100_000)
    batch_size: int = opt(128, limit=16384)
    optimizer: str = opt("adam", checkpoint=True)
    lr: float = opt(1e-3)
    momentum: float | None = opt()
    nesterov: bool | None = opt()
    weight_decay: float = opt(1e-5)
    schedule: str = opt("constant", checkpoint=True)
    step_size: int | None = opt()
    gamma: float | None = opt()
    milestones: list[int] | None = opt()
    label_smoothing: float = opt(0.0)
    warmup_epochs: int = opt(0)  # linear lr warmup over the first N epochs, then the schedule
    clip_grad: float | None = opt()  # clip the global gradient norm to this value
    ema_decay: float | None = opt()  # also keep an EMA of the weights, evaluated and saved beside the raw weights
    mix_off_epoch: int | None = opt()  # mix in epochs 1..N only (timm's --mixup-off-epoch)

    def checked(self) -> OptimConfig:
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("schedule", self.schedule, SCHEDULES)
        positive(self, "epochs", allow_none=False)
        positive(self, "batch_size", allow_none=False)
        positive(self, "step_size")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got lr={self.lr!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got weight_decay={self.weight_decay!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got label_smoothing={self.label_smoothing!r}")
        for name in ("momentum", "gamma"):  # read only at the first step / the first decay: check them now
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {name}={getattr(self, name)!r}")
        if self.schedule == "step" and self.step_size is not None and self.milestones:
            raise ConfigError("give either --step-size or --milestones for --schedule step, not both")
        if self.milestones is not None and (not isinstance(self.milestones, list) or any(
                not is_int(m) or m < 1 for m in self.milestones)):
            raise ConfigError(f"milestones must be a list of positive epoch numbers, got "
                              f"milestones={self.milestones!r}")
        self._check_recipe()
        # Defaults only where they apply, so the saved config stays honest.
        defaults = {k: v for k, v in OPTIMIZER_DEFAULTS.items() if getattr(self, k) is None and self.why_not(
            k, {"optimizer": self.optimizer, "schedule": self.schedule}) is None}
        return dataclasses.replace(self, **defaults)

    def _check_recipe(self) -> None:
        positive(self, "warmup_epochs", allow_none=False, zero_ok=True)
        if is_int(self.epochs) and self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs} is beyond epochs={self.epochs}: the learning rate "
                              f"would never reach --lr; give --warmup-epochs at most {self.epochs} (or more --epochs)")
        if self.mix_off_epoch == 0:  # timm's --mixup-off-epoch 0 means "never"; ours would silently be --method none
            raise ConfigError("mix_off_epoch=0 would train every epoch on plain images: a run that mixes nothing. To "
                              "mix in every epoch omit --mix-off-epoch (timm's --mixup-off-epoch 0 means that); to mix "
                              "in epochs 1..N give N >= 1")
        positive(self, "mix_off_epoch")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError(f"clip_grad must be > 0 (the largest gradient norm), got clip_grad={self.clip_grad!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1), e.g. 0.9998, got ema_decay={self.ema_decay!r}")

    @staticmethod
    def why_not(key: str, values: Mapping[str, Any]) -> str | None:
        for table, selector, default in ((OPTIMIZER_OPTIONS, "optimizer", "adam"),
                                         (SCHEDULE_OPTIONS, "schedule", "constant")):
            current = values.get(selector, default)
            if key in table and current not in table[key]:
                return (f"{_flag(key)} does not apply to --{selector} {current} (it applies to "
                        f"{', '.join(table[key])}); remove it or change --{selector}")
        if key == "mix_off_epoch" and values.get("method", "none") == "none":  # nothing is mixed: nothing to stop
            return ("--mix-off-epoch does not apply to --method none (nothing is mixed); remove it or choose a mixing "
                    "method")
        return None


@dataclass(frozen=True)
class RunConfig:
    """Where and how the run executes: its seed and folder, precision, data path and reporting."""

    seed: int = opt(0)
    output_dir: str = opt("runs/train", run=True, volatile=True, path=True)
    resume: bool = opt(False, run=True, volatile=True)
    auto_resume: bool = opt(False, run=True, volatile=True)  # continue the run in output_dir if any, else start
    overwrite: bool = opt(False, run=True, volatile=True)  # a fresh run may replace an earlier run's outputs
    amp: str = opt("off")
    channels_last: bool = opt(False)
    workers: int = opt(2, run=True, volatile=True, limit=256)
    # auto | device (whole split on the device, batched crop/flip there) | loader (DataLoader workers)
    data_path: str = opt("auto")
    image_cache: str | None = opt(run=True, path=True, volatile=True)  # decoded uint8 images of an image folder
    eval_train: bool = opt(False)  # also evaluate on the un-augmented training split (train accuracy, gap)
    log_every: int = opt(50, run=True, volatile=True)  # steps between host syncs (progress, DDP loss check)
    compile: bool = opt(False, run=True, volatile=True)  # torch.compile the model
    device: str | None = opt(run=True, volatile=True)
    preset: str | None = opt()
    max_steps_per_epoch: int | None = opt(volatile=True)
    eval_every: int = opt(1, volatile=True)
    eval_batch_size: int | None = opt(run=True, volatile=True, limit=16384)
    progress: bool = opt(True, run=True, volatile=True)

    def checked(self) -> RunConfig:
        choice("amp mode", self.amp, AMP_MODES)
        choice("data path", self.data_path, DATA_PATHS)
        for name in ("eval_every", "log_every"):
            positive(self, name, allow_none=False)
        for name in ("max_steps_per_epoch", "eval_batch_size"):
            positive(self, name)
        positive(self, "workers", allow_none=False, zero_ok=True)
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer in [0, 2**63 - 1], got seed={self.seed!r}")
        if (self.resume or self.auto_resume) and self.overwrite:
            raise ConfigError(f"give either {'--resume' if self.resume else '--auto-resume'} (continue the run in "
                              "--output-dir) or --overwrite (replace it), not both")
        return self

    @staticmethod
    def why_not(key: str, values: Mapping[str, Any]) -> str | None:
        return None


Section = type[DataConfig] | type[ModelConfig] | type[MixingConfig] | type[OptimConfig] | type[RunConfig]
SECTIONS: dict[str, Section] = {"data": DataConfig, "model": ModelConfig, "mixing": MixingConfig, "optim": OptimConfig,
                             "run": RunConfig}


def flat_fields() -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    """Each option's flat name -> (its section, its field), in file order; the method's options are not fields."""
    out = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name != "options":
                out[f.metadata.get("flat") or f.name] = (section, f)
    return out


def fields_where(kind: str) -> tuple[str, ...]:
    """The flat names of the options whose field says ``kind`` (``run``, ``checkpoint``, ``volatile``, ``path``)."""
    return tuple(name for name, (_, f) in flat_fields().items() if f.metadata.get(kind))


def why_not(key: str, values: Mapping[str, Any]) -> str | None:
    """Why option ``key`` does not apply to a config with flat ``values`` (its section's rule), or None."""
    where = flat_fields().get(key)
    section: Section = SECTIONS[where[0]] if where else MixingConfig  # a method's options: the mixing section's
    return section.why_not(key, values)


def applies(key: str, values: Mapping[str, Any]) -> bool:
    """Whether option ``key`` applies to a config with flat ``values`` (a grid drops it from cells where not)."""
    return why_not(key, values) is None


def check_applicable(values: Mapping[str, Any], explicit: Collection[str]) -> None:
    """``ConfigError`` for the first option set explicitly (not None/False) that does not apply."""
    for key in explicit:
        if values.get(key) not in (None, False) and (reason := why_not(key, values)) is not None:
            raise ConfigError(reason)


__all__ = ["DataConfig", "ModelConfig", "MixingConfig", "OptimConfig", "RunConfig", "SECTIONS", "opt",
           "flat_fields", "fields_where", "why_not", "applies", "check_applicable", "method_of",
           "DATA_PATHS", "OPTIMIZERS", "SCHEDULES", "AMP_MODES", "OPTIMIZER_OPTIONS",
           "SCHEDULE_OPTIONS", "OPTIMIZER_DEFAULTS", "MAX_SEED"]
