"""Deterministic, stratified held-out split.

Each sample is ranked inside its class by a keyed hash of ``(seed, key)`` (key: the file's relative path, or
the sample's index for in-memory arrays), and the lowest ``round(val_fraction * class size)`` are held out.
The split depends only on the seed and the keys: not on file-system order, not on the other classes'
files, not on the process' random state.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Sequence

__all__ = ["stratified_split"]


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()


def stratified_split(targets: Sequence[int], keys: Sequence[str], *, val_fraction: float,
                     seed: int = 0) -> tuple[list[int], list[int]]:
    """Return ``(train_indices, val_indices)``, both sorted. Every class keeps at least one training sample
    and, when ``val_fraction > 0`` and it has two or more, gives at least one to validation."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got val_fraction={val_fraction!r}")
    if len(targets) != len(keys):
        raise ValueError(f"targets and keys must have the same length, got {len(targets)} and {len(keys)}")
    if val_fraction == 0:
        return list(range(len(targets))), []
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(targets):
        by_class[int(label)].append(index)
    held: list[int] = []
    for members in by_class.values():
        count = min(max(round(val_fraction * len(members)), 1), len(members) - 1)
        held += sorted(members, key=lambda i: _rank(seed, keys[i]))[:count]
    held_set = set(held)
    return [i for i in range(len(targets)) if i not in held_set], sorted(held)
