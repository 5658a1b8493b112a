"""A comparison grid: a YAML file of axes and shared settings, expanded into cells with stable ids.

File format (every key but ``axes`` is optional)::

    name: cifar10-reduced          # a title for the tables
    preset: paper-cifar10          # a TrainConfig preset
    settings: {epochs: 30, ...}    # TrainConfig fields shared by every cell
    method_settings:               # extra fields per method (e.g. the extractor for attentive-cutmix)
      attentive-cutmix: {extractor: cifar_resnet56, ...}
    extractors:                    # extractors that `compare` trains first; refer to them by name in `extractor:`
      synth-r20: {model: cifar_resnet20, epochs: 3}
    attention_cache: true          # attentive cells with an extractor share one cache per (data, extractor)
    localization: true             # attentive cells on the synthetic data: pasted-pixel hit rates
    axes: {dataset: [...], model: [...], method: [...], seed: [0, 1, 2], num_patches: [1, 2, 4]}
    metric: top1                   # top1 (final epoch) or best_top1, for the tables
    paper_results: {...}           # the paper's numbers, rendered alongside (see report.py)

An axis value is a plain value of that TrainConfig field, or a mapping of fields with an optional
``label`` (e.g. ``{label: cifar10-jpeg, dataset: imagefolder, data_dir: ..., val_fraction: 0.1}``).
Fields that only apply to some methods/optimisers/schedules (``num_patches``, ``alpha``, ``momentum`` ...)
are dropped from the cells they don't apply to, so one grid can sweep ``num_patches`` beside ``none``;
cells that become identical are merged.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import registry
from ..constants import is_number
from ..training.config import (
    DATA_FIELDS,
    RUN_FIELDS,
    ConfigError,
    TrainConfig,
    applies,
    check_types,
    config_keys,
    make_config,
    option_keys,
    read_yaml_file,
)

GRID_KEYS = ("name", "preset", "settings", "method_settings", "extractors", "attention_cache", "localization", "axes",
             "metric", "paper_results", "description")
METRICS = ("top1", "best_top1")
PREFIX_AXES = ("dataset", "model", "method", "seed")
EXTRACTOR_PREFIX = "extractor:"


class GridError(ConfigError):
    """A grid file that cannot be expanded (bad key, bad axis, a cell with an invalid config)."""


@dataclass
class Cell:
    """One training run of the grid: ``config`` is what the trainer gets (minus the output folder)."""

    id: str
    axes: dict[str, Any]  # axis name -> label of this cell's value (None where the axis does not apply)
    config: TrainConfig
    identity: dict[str, Any]  # the hashed part of the config
    extractor_run: str | None = None  # name in ``extractors:`` this cell's extractor comes from


@dataclass
class Grid:
    name: str
    axes: dict[str, list[Any]]
    cells: list[Cell]
    extractors: dict[str, Cell]
    attention_cache: bool = True
    localization: bool = True
    metric: str = "top1"
    paper_results: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _short_hash(obj: Any, n: int = 6) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _slug(value: Any) -> str:
    text = str(value).lower()
    text = re.sub(r"[^a-z0-9_.]+", "-", text).strip("-.")
    return text or "x"


def _axis_entry(axis: str, value: Any) -> tuple[Any, dict[str, Any]]:
    """(label, overrides) of one axis value."""
    if isinstance(value, dict):
        overrides = {str(k).replace("-", "_"): v for k, v in value.items() if k != "label"}
        label = value.get("label", overrides.get(axis, _short_hash(overrides)))
        return label, overrides
    return value, {axis: value}


def _identity(cfg: TrainConfig, extractor_identity: dict[str, Any] | None, cached: bool) -> dict[str, Any]:
    # Options at their default are left out, so adding an option whose default keeps today's behaviour
    # leaves every existing cell id (and so every finished run on disk) valid. The config is flat (the method's
    # options by name, None where they do not apply), as it was when the committed cells were made.
    defaults = TrainConfig().to_dict()
    ident = {k: v for k, v in cfg.to_dict().items() if k not in RUN_FIELDS and v != defaults.get(k, object())}
    if cfg.mixing.reads_attention:
        ident["attention_cached"] = cached
        if cfg.mixing.attention_cache is not None:
            # A cache named in the grid is what the cell trains on (its maps, its extractor): another cache is
            # another cell. The cache `compare` builds itself (attention_cache: true) follows from the config.
            ident["attention_cache"] = cfg.mixing.attention_cache
        if extractor_identity is not None:  # the extractor run's config, not its (output-folder dependent) path
            ident["extractor"] = {"trained": extractor_identity}
    return ident


# The grids that ship inside the package (examples and the paper's), so `compare examples/synthetic-tiny.yaml`
# works from any folder once the package is installed.
PACKAGED_GRIDS = Path(__file__).resolve().parent.parent / "configs"


def packaged_grids() -> list[str]:
    """Names of the packaged grid files, as ``compare`` accepts them (e.g. ``examples/synthetic-tiny.yaml``)."""
    return sorted(p.relative_to(PACKAGED_GRIDS).as_posix() for p in PACKAGED_GRIDS.glob("*/*.yaml"))


def resolve_grid_path(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file; else the packaged grid of that name (``configs/`` prefix optional)."""
    path = Path(path)
    if path.is_file() or path.is_absolute():
        return path
    name = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
    packaged = PACKAGED_GRIDS / name
    return packaged if packaged.is_file() else path


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        what = "is a folder, not a grid file" if path.is_dir() else "not found"
        raise GridError(f"grid file {path} {what}; give the path of a YAML grid, or the name of one that ships with "
                        f"the package: {', '.join(packaged_grids())}")
    return read_yaml_file(path, "grid file", GridError)


def _mapping(data: dict[str, Any], key: str, path: Path, *, options: bool = True) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise GridError(f"`{key}:` in {path} must be a mapping, got {type(value).__name__}")
    return option_keys(value, f"`{key}:` in {path}") if options else {str(k): v for k, v in value.items()}


def _check_top_level(data: dict[str, Any], path: Path) -> None:
    """Types of the keys that are read only after training (the report) or read loosely (bool('false') is True)."""
    for key in ("attention_cache", "localization"):
        if key in data and not isinstance(data[key], bool):
            raise GridError(f"`{key}:` in {path} must be true or false, got {data[key]!r}")
    for key in ("name", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise GridError(f"`{key}:` in {path} must be a string, got {data[key]!r}")
    paper = data.get("paper_results")
    if paper is None:
        return
    shape = "`paper_results: {dataset: {model: {method: top1}}}`"
    if not isinstance(paper, dict):
        raise GridError(f"`paper_results:` in {path} must be a mapping {shape}, got {type(paper).__name__}")
    for dataset, models in paper.items():
        if not isinstance(models, dict):
            raise GridError(f"`paper_results.{dataset}` in {path} must map model names to methods ({shape}), "
                            f"got {models!r}")
        for model, methods in models.items():
            if not isinstance(methods, dict):
                raise GridError(f"`paper_results.{dataset}.{model}` in {path} must map methods to numbers ({shape}), "
                                f"got {methods!r}")
            for method, number in methods.items():
                if not is_number(number):
                    raise GridError(f"`paper_results.{dataset}.{model}.{method}` in {path} must be a number, "
                                    f"got {number!r}")


def _check_axes(axes: dict[str, list[Any]], path: Path) -> None:
    """Every axis value has its option's type (a nested list is no method name); two values of one axis with the
    same label would be merged into one 'mean ± std' in the tables, and a method labelled with another method's name
    would be reported as that one: refuse them."""
    for axis, values in axes.items():
        seen: dict[str, dict[str, Any]] = {}
        for value in values:
            label, overrides = _axis_entry(axis, value)
            try:
                check_types(overrides, f"axis {axis!r} of {path}")
            except ConfigError as err:
                raise GridError(str(err)) from err
            if str(label) in seen and seen[str(label)] == overrides:
                raise GridError(f"axis {axis!r} in {path} lists {str(label)!r} twice ({values}); each value would be "
                                "one cell, so the repeat would be merged away without a word. List it once")
            if axis == "method" and str(label) in registry.names() and overrides.get("method") != label:
                # the report shows and compares a label that is a method's name as that method
                runs = repr(overrides["method"]) if "method" in overrides else "the method of `settings:`"
                raise GridError(f"axis 'method' in {path} has a value labelled {str(label)!r} that runs {runs}: the "
                                "label names another method, so the tables would show and compare it as that one. "
                                f"Give it its own `label:` (e.g. {label}-variant), or `method: {label}`")
            previous = seen.setdefault(str(label), overrides)
            if previous != overrides:
                raise GridError(f"axis {axis!r} in {path} has two values labelled {str(label)!r} with different "
                                f"settings ({previous} and {overrides}); the tables would merge them. Give each its "
                                "own `label:`")


def _make(values: dict[str, Any], where: str) -> TrainConfig:
    values = {k: v for k, v in values.items() if applies(k, values)}
    try:
        return make_config(values)
    except ConfigError as err:
        raise GridError(f"{where}: {err}") from err


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and expand a grid file into cells (validated ``TrainConfig`` each, stable ids).

    ``path`` is a file, or the name of a packaged grid (``packaged_grids()``, e.g. ``examples/synthetic-tiny.yaml``).
    """
    path = resolve_grid_path(path)
    return expand_grid(_load(path), path)


def expand_grid(data: Any, path: str | os.PathLike) -> Grid:
    """Expand a grid given as a mapping (the contents of a grid file; ``path`` names it in messages)."""
    path = Path(path)
    if not isinstance(data, dict):
        raise GridError(f"grid file {path} must hold a mapping with at least `axes:`, got {type(data).__name__}")
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise GridError(f"unknown key(s) {unknown} in grid file {path}; valid keys: {', '.join(GRID_KEYS)} "
                        f"(training options go under `settings:`)")
    settings = _mapping(data, "settings", path)
    if data.get("preset") is not None:
        settings = {"preset": data["preset"], **settings}
    _check_top_level(data, path)
    method_settings = data.get("method_settings") or {}
    if not isinstance(method_settings, dict) or not all(isinstance(v, dict) for v in method_settings.values()):
        raise GridError(f"`method_settings:` in {path} must map method names to mappings of options")
    unknown_methods = sorted(str(m) for m in method_settings if m not in registry.names())
    if unknown_methods:
        raise GridError(f"`method_settings:` in {path} names unknown method(s) {unknown_methods}; valid: "
                        f"{', '.join(registry.names())}")
    axes = data.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise GridError(f"grid file {path} needs `axes:`, a mapping of option -> list of values, e.g. "
                        "`axes: {method: [none, cutmix], seed: [0, 1]}`")
    axes = {str(k).replace("-", "_"): (v if isinstance(v, list) else [v]) for k, v in axes.items()}
    for name, values in axes.items():
        if name not in config_keys():
            raise GridError(f"unknown axis {name!r} in {path}; an axis must be a training option: "
                            f"{', '.join(config_keys())}")
        if not values:
            raise GridError(f"axis {name!r} in {path} has no values")
    _check_axes(axes, path)
    metric = data.get("metric", "top1")
    if metric not in METRICS:
        raise GridError(f"unknown metric {metric!r} in {path}; valid: {', '.join(METRICS)}")
    cache = bool(data.get("attention_cache", True))

    extractors: dict[str, Cell] = {}
    for name, spec in _mapping(data, "extractors", path, options=False).items():
        if not isinstance(spec, dict):
            raise GridError(f"extractor {name!r} in {path} must be a mapping of training options")
        # The extractor trains on the grid's data (its section) and runs where the cells run.
        shared = (*DATA_FIELDS, "preset", "workers", "device", "progress")
        values = {**{k: v for k, v in settings.items() if k in shared},
                  **{str(k).replace("-", "_"): v for k, v in spec.items()}}
        cfg = _make(values, f"extractor {name!r} in {path}")
        ident = _identity(cfg, None, False)
        extractors[name] = Cell(id=f"{_slug(name)}-{_short_hash(ident)}", axes={}, config=cfg, identity=ident)

    names = list(axes)
    cells: dict[str, Cell] = {}
    by_config: dict[str, str] = {}  # identity hash -> the first cell id with it
    for combo in itertools.product(*(axes[n] for n in names)):
        values, labels = dict(settings), {}
        entries = [_axis_entry(n, v) for n, v in zip(names, combo)]
        for _, overrides in entries:  # method first: method_settings sit below the axis values
            if "method" in overrides:
                values["method"] = overrides["method"]
        values.update({str(k).replace("-", "_"): v
                       for k, v in (method_settings.get(values.get("method", "none")) or {}).items()})
        for n, (label, overrides) in zip(names, entries):
            values.update(overrides)
            labels[n] = label if all(applies(k, values) for k in overrides) else None
        extractor_run = None
        if isinstance(values.get("extractor"), str) and values["extractor"] in extractors:
            extractor_run = values["extractor"]
            values["extractor"] = f"{EXTRACTOR_PREFIX}{extractor_run}"  # resolved to a checkpoint path at run time
        where = f"cell {labels} of {path}"
        cfg = _make(values, where)
        cached = (cache and cfg.mixing.reads_attention and cfg.mixing.extractor is not None
                  and cfg.mixing.attention_cache is None)
        ident = _identity(cfg, extractors[extractor_run].identity if extractor_run else None, cached)
        named = {a: labels[a] if labels.get(a) is not None else cfg.get(a) for a in PREFIX_AXES}
        prefix = "-".join(_slug(named[a]) if a != "seed" else f"s{named[a]}" for a in PREFIX_AXES)
        extra = "-".join(f"{_slug(a)}{_slug(labels[a])}" for a in names
                         if a not in PREFIX_AXES and labels[a] is not None)
        cell_id = "-".join(p for p in (prefix, extra, _short_hash(ident)) if p)
        twin = by_config.setdefault(_short_hash(ident, 64), cell_id)
        if twin != cell_id:  # e.g. an axis listing 0 and 0.0: one config, trained and reported twice
            raise GridError(f"cells {twin} and {cell_id} of {path} are the same config (axis values {labels} give "
                            "the same settings as another cell's, e.g. 0 and 0.0): list each setting once")
        if cell_id not in cells:  # axes that don't apply to a cell make duplicates: keep one
            cells[cell_id] = Cell(id=cell_id, axes=labels, config=cfg, identity=ident, extractor_run=extractor_run)
    return Grid(name=str(data.get("name") or path.stem), axes=axes, cells=list(cells.values()), extractors=extractors,
                attention_cache=cache, localization=bool(data.get("localization", True)), metric=metric,
                paper_results=data.get("paper_results") or {}, source=str(path))


__all__ = ["Cell", "Grid", "GridError", "load_grid", "expand_grid", "packaged_grids", "resolve_grid_path",
           "RUN_FIELDS", "METRICS"]
