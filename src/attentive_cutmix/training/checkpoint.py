"""Training checkpoints: atomic save, safe load, compatibility checks, RNG states.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so it loads with
``torch.load(weights_only=True)``; numpy and Python RNG states are converted to tensors/lists.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..serialization import CheckpointError, atomic_torch_save, safe_torch_load

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
# Fields that must match for a checkpoint to be resumed into a run (anything else may change, e.g. epochs). The
# optimiser's and the schedule's saved states only load into the same classes (Adam has no 'momentum' buffer).
IDENTITY_FIELDS = ("model", "num_classes", "image_size", "dataset", "method", "optimizer", "schedule")
# What the trainer reads from a checkpoint without a default, and the type each must have.
REQUIRED: dict[str, type] = {"format_version": int, "model": dict, "optimizer": dict, "scheduler": dict, "epoch": int,
                             "rng": dict, "config": dict}
REQUIRED_RNG = ("torch", "numpy", "python")


def capture_rng(mixer_generator: torch.Generator | None = None) -> dict[str, Any]:
    """All RNG states that training consumes, in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if mixer_generator is not None:
        state["mixer"] = mixer_generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], mixer_generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if mixer_generator is not None and "mixer" in state:
        mixer_generator.set_state(state["mixer"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(state: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write ``state`` to ``output_dir/checkpoint.pt`` atomically (temp file, fsync, rename)."""
    path = Path(output_dir) / CHECKPOINT_NAME
    try:
        return atomic_torch_save({**state, "format_version": FORMAT_VERSION}, path)
    except OSError as err:  # disk full, quota, permissions: the old checkpoint is still whole, say so
        raise CheckpointError(f"could not write the checkpoint {path} ({err.strerror or err}); the previous checkpoint "
                              "there (if any) is intact. Free disk space or fix the folder's permissions, then "
                              "continue with --resume") from err


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by the trainer (``weights_only=True``); ``CheckpointError`` if it isn't one."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a training checkpoint written by `attentive-cutmix train` "
                              f"(expected keys {list(REQUIRED)}, found {keys})")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; this version of attentive-cutmix "
                              f"reads version {FORMAT_VERSION}. Resume it with the version that wrote it, or start a "
                              "fresh run with another --output-dir")
    problems = [f"{k!r} missing" if k not in ckpt else f"{k!r} is a {type(ckpt[k]).__name__}"
                for k, kind in REQUIRED.items() if not isinstance(ckpt.get(k), kind) or isinstance(ckpt.get(k), bool)]
    for key, inner in (("rng", REQUIRED_RNG), ("optimizer", ("state", "param_groups"))):
        problems += [f"{key!r} has no {k!r}" for k in inner if isinstance(ckpt.get(key), dict) and k not in ckpt[key]]
    if problems:
        raise CheckpointError(f"{path} is an incomplete or damaged training checkpoint ({'; '.join(problems)}); "
                              "nothing was changed. Resume from another copy, or start a fresh run with another "
                              "--output-dir")
    return ckpt


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: str | os.PathLike) -> list[str]:
    """Raise ``CheckpointError`` if ``ckpt`` belongs to another model/dataset/method; return the other changed
    options."""
    saved = ckpt["config"]
    clashes = [f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}"
               for k in IDENTITY_FIELDS if saved.get(k) != config.get(k)]
    if clashes:
        raise CheckpointError(f"cannot resume from {path}: it was written by a different run ({'; '.join(clashes)}). "
                              "Nothing was changed. Resume with the original options, or start a fresh run with "
                              "another --output-dir")
    fp_saved, fp_now = ckpt.get("train_fingerprint"), config.get("train_fingerprint")
    if fp_saved is not None and fp_now is not None and fp_saved != fp_now:
        raise CheckpointError(f"cannot resume from {path}: the training data changed since it was written "
                              f"(fingerprint {fp_saved[:12]} vs {fp_now[:12]}). Nothing was changed.")
    volatile = {"resume", "overwrite",  # how to start, not what is trained
                "epochs", "output_dir", "workers", "device", "progress", "max_steps_per_epoch", "eval_every",
                "eval_batch_size", "log_every", "image_cache", "compile", "explicit"}
    return sorted(k for k in config if k not in volatile and k in saved and saved[k] != config[k])


__all__ = ["CHECKPOINT_NAME", "FORMAT_VERSION",
           "capture_rng", "restore_rng", "save_checkpoint", "load_checkpoint", "check_compatible"]
