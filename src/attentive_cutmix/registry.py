"""The mixing methods, each declared once beside its class: its name, typed options, needs and label.

A method is a ``Method``: the name it has on the command line and in grid files, a dataclass of its options
(each field made with ``option``: default, help, range), a function saying whether its mixer reads attention
maps with given options, its label in tables and figures, a small example configuration, and how to build its
mixer. Every module of the ``attentive_cutmix.mixers`` package registers its methods with ``register`` where its
class is defined, and is found here without a list; a third-party package adds methods through the
``attentive_cutmix.mixers`` entry point group (``[project.entry-points."attentive_cutmix.mixers"]
mymethod = "mypackage.mymixer"``: the module is imported, and registers its methods as ours do). The no-mixing
baseline is registered here. Everything else — the config, the ``train`` flags and their checks, the grid runner,
the report, the figures, the demo — asks this module and names no method itself.

A new method is one file in ``mixers/`` (or one ``register(Method(...))`` call in any module imported before it is
used: a test file will do). Option names are flat and shared: two methods with an option of the same name
(``alpha``, ``prob``) share its flag, and must agree on its type.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import pkgutil
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Method", "MixerOptions", "NoOptions", "option", "register", "unregister", "get", "names", "methods",
           "option_names", "option_hint", "option_field", "applies_to", "check_options", "reads_attention",
           "make_mixer", "help_text", "BASELINE"]

ENTRY_POINT_GROUP = "attentive_cutmix.mixers"  # third-party methods: modules that register theirs on import
_MIXERS_PACKAGE = "attentive_cutmix.mixers"  # every module in it is imported on the first lookup
BASELINE = "none"  # the method every other one is compared with


def option(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, choices: tuple[str, ...] | None = None, limit: int | None = None,
           record_default: bool = True) -> Any:
    """A field of a method's options dataclass.

    ``minimum``/``maximum``: the closed range; ``above``: an open lower bound; ``choices``: the valid strings;
    ``limit``: the largest size accepted (beyond it a typo, an extra 0, would allocate far too much).
    ``record_default=False``: an option added after runs were made, left out of a run's flat config while it
    has its default, so the ids of the grid cells made before it stay the same.
    """
    meta = dict(help=help, minimum=minimum, maximum=maximum, above=above, choices=choices, limit=limit,
                record_default=record_default)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none (no mixing)."""


@dataclass(frozen=True)
class MixerOptions:
    """What every mixer takes."""

    prob: float = option(1.0, "probability of mixing a batch", minimum=0.0, maximum=1.0)


def _never(options: Any) -> bool:
    return False


@dataclass(frozen=True)
class Method:
    """A mixing method, as the harness sees it.

    ``build(options, num_classes=, label_smoothing=, extractor=)`` returns the mixer (``mixer`` is its class);
    ``needs_attention(options)`` whether it reads attention maps (an extractor or a cache) with those options,
    and ``attention_condition`` the flags that make it read them when that depends on its options.
    ``comparisons``: ``(other method, what this one minus the other isolates)`` for the paired report (every
    method is also compared with the baseline); grid variants (axis labels that are no method name) are paired
    with each method marked ``variant_reference``. ``demo``: shown in ``attentive-cutmix demo``. ``order``: its
    place in lists and tables. ``example``: a small configuration of its options (a few cells, a small grid) that
    ``check_mixer`` and the figures use.
    """

    name: str
    label: str
    options: type = NoOptions
    build: Callable[..., Any] | None = None
    mixer: type | None = None
    needs_attention: Callable[[Any], bool] = _never
    attention_condition: str = ""
    comparisons: tuple[tuple[str, str], ...] = ()
    variant_reference: bool = False
    demo: bool = False
    order: int = 100
    example: dict[str, Any] = field(default_factory=dict)

    @property
    def dense_labels(self) -> bool:
        """Whether its mixer also mixes (B, H, W) label masks (``masks=``, segmentation)."""
        return bool(getattr(self.mixer, "accepts_masks", False))

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))

    def example_options(self) -> Any:
        """Its options with ``example`` applied (its defaults elsewhere)."""
        return self.options(**self.example)

    def make_mixer(self, options: Any, *, num_classes: int, label_smoothing: float = 0.0,
                   extractor: Any = None) -> Any:
        """The batch mixer for these options (``None`` for a method that does not mix)."""
        if self.build is None:
            return None
        return self.build(options, num_classes=num_classes, label_smoothing=label_smoothing, extractor=extractor)


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` (replacing one of the same name, so a module can be reloaded); returns it."""
    if not dataclasses.is_dataclass(method.options):
        raise TypeError(f"Method {method.name!r}: options must be a dataclass type, got {method.options!r}")
    hints = typing.get_type_hints(method.options)
    for other in _REGISTRY.values():
        if other.name == method.name:
            continue
        theirs = typing.get_type_hints(other.options)
        clash = [k for k in hints if k in theirs and hints[k] != theirs[k]]
        if clash:
            raise TypeError(f"Method {method.name!r}: option {clash[0]!r} has type {hints[clash[0]]} but "
                            f"{other.name!r} declares it as {theirs[clash[0]]}; options of one name share a flag")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove the method called ``name`` (e.g. a test's own method, after the test)."""
    if name == BASELINE:
        raise ValueError(f"the baseline {BASELINE!r} cannot be removed: every comparison refers to it")
    _REGISTRY.pop(name, None)


register(Method(BASELINE, "Baseline (no mixing)", order=0, demo=True))


_loaded = False


def _load_builtins() -> None:
    """Import every module of ``mixers/`` and every entry point of ``ENTRY_POINT_GROUP`` once: each registers its
    methods where they are defined. A broken third-party entry point is reported and skipped, never fatal."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module(_MIXERS_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{_MIXERS_PACKAGE}.{info.name}")
    _loaded = True  # before the plugins: one that asks the registry must not load them again
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # a user's broken plugin must not stop every command
            warnings.warn(f"mixing-method entry point {entry.name!r} ({entry.value}) failed to load and was skipped: "
                          f"{type(err).__name__}: {err}", stacklevel=2)


def methods() -> list[Method]:
    """Every registered method, in display order."""
    _load_builtins()
    return sorted(_REGISTRY.values(), key=lambda m: m.order)


def names() -> tuple[str, ...]:
    return tuple(m.name for m in methods())


def get(name: str) -> Method:
    """The method called ``name``; ``KeyError`` naming the valid names otherwise."""
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; valid choices: {', '.join(names())}")
    return _REGISTRY[name]


def option_names() -> tuple[str, ...]:
    """Every option of every method, each once, in display order."""
    seen: dict[str, None] = {}
    for method in methods():
        seen.update(dict.fromkeys(method.option_names()))
    return tuple(seen)


def _field(name: str) -> tuple[Method, dataclasses.Field]:
    for method in methods():
        for f in dataclasses.fields(method.options):
            if f.name == name:
                return method, f
    raise KeyError(name)


def option_hint(name: str) -> Any:
    """The type of option ``name`` (None if no method has it)."""
    try:
        method, _ = _field(name)
    except KeyError:
        return None
    return typing.get_type_hints(method.options)[name]


def option_field(name: str) -> dataclasses.Field:
    return _field(name)[1]


def applies_to(name: str) -> tuple[str, ...]:
    """The methods that have option ``name``."""
    return tuple(m.name for m in methods() if name in m.option_names())


def _bounds_text(meta: dict[str, Any]) -> str:
    lo, hi, above = meta["minimum"], meta["maximum"], meta["above"]
    if lo is not None and hi is not None:
        return f"in [{lo:g}, {hi:g}]"
    if above is not None:
        return f"> {above:g}"
    return f">= {lo:g}" if lo is not None else ""


def check_options(options: Any) -> None:
    """Check every option's range and choices, then the options' own ``check()`` if they define one.

    ``ValueError`` naming the option, its value and what is valid. Types are the caller's to check (the config
    checks every value against its field's type first).
    """
    for f in dataclasses.fields(options):
        value, meta = getattr(options, f.name), f.metadata
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ValueError(f"unknown {f.name.replace('_', ' ')} {value!r}; valid choices: "
                             f"{', '.join(meta['choices'])}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi, above = meta.get("minimum"), meta.get("maximum"), meta.get("above")
            if ((lo is not None and not value >= lo) or (hi is not None and not value <= hi)
                    or (above is not None and not value > above)):
                kind = "an integer " if isinstance(f.default, int) else ""
                raise ValueError(f"{f.name} must be {kind}{_bounds_text(meta)}, got {f.name}={value!r}")
            if meta.get("limit") is not None and value > meta["limit"]:
                raise ValueError(f"{f.name}={value!r} is beyond the largest accepted value {meta['limit']} (it would "
                                 "allocate far more memory than any run needs); is there a typo?")
    check = getattr(options, "check", None)
    if check is not None:
        check()


def reads_attention(name: str, options: Any = None) -> bool:
    """Whether method ``name`` with ``options`` (its defaults when None) reads attention maps (an extractor or a
    cache): one question, answered here, so a caller need not look the method up and then ask it."""
    method = get(name)
    return method.needs_attention(options if options is not None else method.options())


def make_mixer(name: str, options: Any, *, num_classes: int, label_smoothing: float = 0.0,
               extractor: Any = None) -> Any:
    """The batch mixer of method ``name`` with ``options`` (``None`` for a method that does not mix)."""
    return get(name).make_mixer(options, num_classes=num_classes, label_smoothing=label_smoothing, extractor=extractor)


def help_text(name: str) -> str:
    """The ``--flag`` help of option ``name``: the methods it applies to, what it does, its default."""
    f = option_field(name)
    defaults = {m.name: next(g.default for g in dataclasses.fields(m.options) if g.name == name)
                for m in methods() if name in m.option_names()}
    if len(set(map(repr, defaults.values()))) > 1:  # a shared flag whose methods default differently
        default = "defaults " + ", ".join(f"{m} {d}" for m, d in defaults.items())
    else:
        default = f"default {f.default}"
    return f"{', '.join(applies_to(name))}: {f.metadata['help']} ({default})"
