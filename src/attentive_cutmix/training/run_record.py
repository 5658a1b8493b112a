"""A run's record: what a finished run wrote into ``results.json`` (its config, what it learned of its data, its
curve and final numbers), read back typed and checked, and written by the trainer.

The record's keys are spelled here and nowhere else: the trainer builds the record with ``recorded_config`` and
``results_record``; ``compare``, ``evaluate`` and ``demo`` read it with ``RunRecord.read``. The layout is that of
every run written so far (committed grids included): ``results_record`` must keep writing it byte for byte.
"""
from __future__ import annotations

import json
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from ..serialization import atomic_write
from .config import BASE_DIR_KEY, resolve_paths
from .run_folder import RunFolder

T = TypeVar("T")
FINISHED, EXTENDING = "finished", "extending"
# The final numbers, under the keys results.json records them (and compare's grid results list them).
NUMBERS = ("top1", "top5", "best_top1", "best_top5", "wall_time_s")
SUMMARY_KEYS = ("top1", "top5", "best_top1", "best_top5", "epochs", "curve", "wall_time_s")
# What a model is rebuilt from: without these a run's weights cannot be loaded.
MODEL_KEYS = ("model", "num_classes", "image_size", "mean", "std")


def recorded_config(options: Mapping[str, Any], *, num_classes: int, classes: Sequence[str], image_size: int,
                    mean: Sequence[float], std: Sequence[float], train_fingerprint: str | None, world_size: int,
                    data_path: str, base_dir: str) -> dict[str, Any]:
    """The config a run records: its options, then what it learned of its data and where it ran from.

    ``base_dir`` is where the config's relative paths count from, relative to the run folder, so the record and
    the checkpoint stay readable from any working directory."""
    return {**options, "num_classes": num_classes, "classes": list(classes), "image_size": image_size,
            "mean": list(mean), "std": list(std), "train_fingerprint": train_fingerprint, "world_size": world_size,
            "data_path_used": data_path, BASE_DIR_KEY: base_dir}


class _Entry(Generic[T]):
    """An entry of the recorded config as a read-only attribute (``None`` where the run did not record it)."""

    def __init__(self, key: str, doc: str) -> None:
        self.key, self.__doc__ = key, doc

    @overload
    def __get__(self, config: None, owner: type | None = None) -> _Entry[T]: ...
    @overload
    def __get__(self, config: RecordedConfig, owner: type | None = None) -> T | None: ...

    def __get__(self, config: RecordedConfig | None, owner: type | None = None) -> _Entry[T] | T | None:
        return self if config is None else config.get(self.key)


class RecordedConfig(Mapping[str, Any]):
    """The flat config a run recorded (read-only mapping), with typed access to the entries readers use."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"RecordedConfig({self._values!r})"

    method = _Entry[str]("method", "The mixing method.")
    seed = _Entry[int]("seed", "The training seed.")
    model = _Entry[str]("model", "The model's name.")
    num_classes = _Entry[int]("num_classes", "How many classes the model predicts.")
    classes = _Entry[list[str]]("classes", "The class names in label order (``None`` in runs older than that record).")
    image_size = _Entry[int]("image_size", "The side the model saw.")
    mean = _Entry[list[float]]("mean", "The per-channel normalisation mean.")
    std = _Entry[list[float]]("std", "The per-channel normalisation std.")
    train_fingerprint = _Entry[str]("train_fingerprint", "The training split's fingerprint: is this the data it saw?")

    def missing_model_keys(self) -> list[str]:
        """The entries a model is rebuilt from that this config lacks (written by an older version)."""
        return [k for k in MODEL_KEYS if k not in self._values]

    def resolved(self, folder: RunFolder | str | Path) -> RecordedConfig:
        """The config with its relative paths joined to where the run was started (its recorded ``base_dir``,
        relative to ``folder``); a config recording none is returned as it is (its paths count from the working
        directory)."""
        base = self._values.get(BASE_DIR_KEY)
        if not isinstance(base, str):
            return self
        return RecordedConfig(resolve_paths(self._values, RunFolder(folder).path.resolve() / base))

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)


@dataclass(frozen=True)
class Finals:
    """A run's final numbers, as recorded (``None`` where not recorded, e.g. a run without held-out data).

    ``eval_loss`` and ``train_top1`` (``--eval-train``) are those of the last evaluated epoch."""

    top1: float | None
    top5: float | None
    best_top1: float | None
    best_top5: float | None
    epochs: int | None
    wall_time_s: float | None
    eval_loss: float | None
    train_top1: float | None


@dataclass(frozen=True)
class RunRecord:
    """A finished run's ``results.json``, checked: read it with ``RunRecord.read(folder)``.

    ``config`` is the run's options and what it learned of its data (``num_classes``, ``classes``, ``image_size``,
    ``mean``/``std``, ``train_fingerprint``); ``curve`` one row of metrics per epoch; ``finals`` the final numbers;
    ``weights`` the final weights file."""

    folder: RunFolder
    config: RecordedConfig
    finals: Finals
    curve: list[dict[str, float | None]]
    status: str

    @classmethod
    def read(cls, folder: RunFolder | str | Path) -> RunRecord:
        """The record of the run in ``folder``; ``ValueError`` naming the file and the first bad entry if it is not
        JSON or not the shape ``train`` writes (``OSError`` if there is none)."""
        folder = RunFolder(folder)
        try:
            record = json.loads(folder.results.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{folder.results} is not valid JSON ({err})") from err
        return cls.from_dict(record, folder)

    @classmethod
    def from_dict(cls, record: Any, folder: RunFolder | str | Path) -> RunRecord:
        """The record ``record`` read from ``folder``'s ``results.json``, checked as ``read`` checks it."""
        folder = RunFolder(folder)
        _check(record, folder.results)
        curve = list(record.get("curve") or [])
        last: dict[str, Any] = next((r for r in reversed(curve) if r.get("top1") is not None), {})
        finals = Finals(**{k: record.get(k) for k in (*NUMBERS, "epochs")}, eval_loss=last.get("eval_loss"),
                        train_top1=last.get("train_top1"))
        return cls(folder=folder, config=RecordedConfig(record["config"]), finals=finals, curve=curve,
                   status=record.get("status", ""))

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def weights(self) -> Path | None:
        """The final weights file, if the folder still has it (a grid may commit only the record)."""
        return self.folder.weights if self.folder.weights.is_file() else None

    def summary(self) -> dict[str, Any]:
        """The final numbers and the curve under their recorded keys, as ``compare``'s grid results list a run."""
        values = {**{k: getattr(self.finals, k) for k in (*NUMBERS, "epochs")}, "curve": self.curve}
        return {k: values[k] for k in SUMMARY_KEYS}


def _is_number(value: Any) -> bool:
    return value is None or isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check(record: Any, path: Path) -> None:
    """``ValueError`` naming ``path`` and the first entry of ``record`` that is not the shape ``train`` writes."""
    def bad(entry: str, value: Any, expected: str) -> ValueError:
        shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
        return ValueError(f"{path} is damaged or was edited: its {entry} is {shown}, expected {expected}")

    if not isinstance(record, dict):
        raise bad("top level", record, "a mapping (written by `attentive-cutmix train`)")
    if not isinstance(record.get("config"), dict):
        raise ValueError(f"{path} has no 'config' mapping: not written by `attentive-cutmix train`")
    for key in NUMBERS:
        if not _is_number(record.get(key)):
            raise bad(f"'{key}'", record[key], "a number")
    if not isinstance(record.get("epochs", 0), int):
        raise bad("'epochs'", record["epochs"], "an integer")
    if not isinstance(record.get("status", ""), str):
        raise bad("'status'", record["status"], "a string")
    curve = record.get("curve") or []
    if not isinstance(curve, list):
        raise bad("'curve'", curve, "a list of per-epoch rows")
    for i, row in enumerate(curve):
        if not isinstance(row, dict):
            raise bad(f"curve[{i}]", row, "a mapping of numbers")
        for key, value in row.items():
            if not _is_number(value):
                raise bad(f"curve[{i}][{key!r}]", value, "a number")


# ------------------------------------------------------------------------------------------ the writer's side
def results_record(config: dict[str, Any], curve: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
    """The record of a run that finished: its config, final and best numbers, and the whole curve."""
    evaluated = [r for r in curve if r.get("top1") is not None]
    final = evaluated[-1] if evaluated else {}
    best = max(evaluated, key=lambda r: r["top1"], default={})
    return {"config": config, "top1": final.get("top1"), "top5": final.get("top5"),
            "best_top1": best.get("top1"), "best_top5": max((r["top5"] for r in evaluated), default=None),
            "epochs": len(curve), "curve": curve, "wall_time_s": wall_time, "status": FINISHED}


def write_results(folder: RunFolder, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``folder``'s ``results.json``, atomically."""
    return atomic_write(folder.results, lambda tmp: _write_text(tmp, json.dumps(record, indent=2)))


def _write_text(path: str, text: str) -> None:
    Path(path).write_text(text)


def mark_extending(folder: RunFolder, epochs: int) -> None:
    """A finished run resumed for more epochs is no longer finished: say so in its ``results.json`` before the first
    new step, so a run killed while being extended is never reported as finished at its old epoch."""
    try:
        record = json.loads(folder.results.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(record, dict) or record.get("status") != FINISHED:
        return
    done = record.get("epochs")
    if isinstance(done, int) and done >= epochs:
        return
    record.update(status=EXTENDING, extending_to=epochs)
    write_results(folder, record)


__all__ = ["RunRecord", "RecordedConfig", "Finals", "recorded_config", "results_record", "write_results",
           "mark_extending", "FINISHED", "EXTENDING"]
