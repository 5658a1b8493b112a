"""A run's ``results.json``, read with its shape checked: a damaged or edited file is one line naming the entry,
never a traceback from the table or plot code that would read it later."""
from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

NUMBERS = ("top1", "top5", "best_top1", "best_top5", "wall_time_s")


def _number(value: Any) -> bool:
    return value is None or isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_results(record: Any, path: str | Path) -> dict[str, Any]:
    """``record`` if it has the shape ``train`` writes; ``ValueError`` naming ``path`` and the first bad entry."""
    def bad(entry: str, value: Any, expected: str) -> ValueError:
        shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
        return ValueError(f"{path} is damaged or was edited: its {entry} is {shown}, expected {expected}")

    if not isinstance(record, dict):
        raise bad("top level", record, "a mapping (written by `attentive-cutmix train`)")
    if not isinstance(record.get("config"), dict):
        raise ValueError(f"{path} has no 'config' mapping: not written by `attentive-cutmix train`")
    for key in NUMBERS:
        if not _number(record.get(key)):
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
            if not _number(value):
                raise bad(f"curve[{i}][{key!r}]", value, "a number")
    return record


def read_results(path: str | Path) -> dict[str, Any]:
    """The checked record in ``path``; ``ValueError`` naming the file if it is not JSON or not a run's record."""
    try:
        record = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    return check_results(record, path)


__all__ = ["check_results", "read_results"]
