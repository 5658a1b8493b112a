"""Training checkpoints: atomic save, safe load, compatibility checks, RNG states.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so it loads with
``torch.load(weights_only=True)``; numpy and Python RNG states are converted to tensors/lists.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..serialization import CheckpointError, atomic_torch_save, safe_torch_load
from .config import BASE_DIR_KEY, CHECKPOINT_FIELDS, VOLATILE_FIELDS, resolve_paths
from .run_folder import CHECKPOINT_NAME, RunFolder

FORMAT_VERSION = 1
# What must match for a checkpoint to be resumed into a run is config.CHECKPOINT_FIELDS (the fields marked so; the
# optimiser's and the schedule's saved states only load into the same classes: Adam has no 'momentum' buffer).
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
    """Write ``state`` to ``output_dir``'s checkpoint file atomically (temp file, fsync, rename)."""
    path = RunFolder(output_dir).checkpoint
    try:
        return atomic_torch_save({**state, "format_version": FORMAT_VERSION}, path)
    except OSError as err:  # disk full, quota, permissions: the old checkpoint is still whole, say so
        kept = ("the previous checkpoint there is intact. Free disk space or fix the folder's permissions, then "
                "continue with --resume" if path.exists() else "no earlier checkpoint exists. Free disk space or fix "
                "the folder's permissions, then start the run again there with --auto-resume")
        raise CheckpointError(f"could not write the checkpoint {path} ({err.strerror or err}); {kept}") from err


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


# ----------------------------------------------------------------------------------------------------------- checks
# ``weights_only=True`` keeps code out, not bad values: an optimiser buffer of the wrong shape reaches a fused kernel
# as a raw pointer and corrupts memory (`free(): invalid next size`, a segfault). So every entry is checked against
# the live objects it will be loaded into before anything is loaded.
_PY_RNG_WORDS = 625  # Mersenne Twister: 624 words and the position
_NP_RNG_WORDS = 624


class _Found(str):
    """What an entry holds, in words (e.g. "missing"), rather than a value to show."""


def _kind(value: Any) -> str:
    if isinstance(value, _Found):
        return str(value)
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:120]


class _Checker:
    """Raises ``CheckpointError`` naming the checkpoint, the entry, what it holds and what it must hold."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path

    def fail(self, entry: str, value: Any, expected: str) -> None:
        raise CheckpointError(f"{self.path}: entry {entry} is {_kind(value)}, expected {expected}; the checkpoint is "
                              "damaged or was edited, and nothing was loaded or changed. Resume from another copy, or "
                              "start a fresh run with another --output-dir")

    def number(self, entry: str, value: Any, *, integer: bool = False, low: float | None = None,
               high: float | None = None) -> None:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        ok = ok and not isinstance(value, bool) and (isinstance(value, int) or math.isfinite(value))
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            bounds = "" if low is None and high is None else f" in [{low}, {high}]"
            self.fail(entry, value, f"a finite {'integer' if integer else 'number'}{bounds}")

    def tensor(self, entry: str, value: Any, *, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype | None = None,
               floating: bool = False, finite: bool = False) -> None:
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_quantized:
            self.fail(entry, value, f"a dense tensor of shape {tuple(shape)}")
        if tuple(value.shape) != tuple(shape):
            self.fail(entry, value, f"shape {tuple(shape)}")
        if dtype is not None and value.dtype != dtype:
            self.fail(entry, value, f"dtype {dtype}")
        if floating and not value.is_floating_point():
            self.fail(entry, value, "a floating-point tensor")
        if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            self.fail(entry, _Found("non-finite (NaN/Inf)"), "finite values")

    def like(self, entry: str, value: Any, live: Any, *, exact: bool = False) -> None:
        """``value`` has the structure of ``live``: numbers finite, flags flags, lists as long, dicts with its keys
        (``exact``: and no others)."""
        if isinstance(live, bool) or live is None:
            if live is not None and not isinstance(value, bool) or live is None and not (
                    value is None or isinstance(value, (bool, int, float, str))):
                self.fail(entry, value, f"a value like {live!r}")
        elif isinstance(live, (int, float)):
            self.number(entry, value, integer=isinstance(live, int))
        elif isinstance(live, str):
            if not isinstance(value, str):
                self.fail(entry, value, "a string")
        elif isinstance(live, (list, tuple)):
            if not isinstance(value, (list, tuple)) or len(value) != len(live):
                self.fail(entry, value, f"a list of {len(live)}")
            for i, (v, w) in enumerate(zip(value, live)):
                self.like(f"{entry}[{i}]", v, w)
        elif isinstance(live, dict):
            if not isinstance(value, dict) or exact and value.keys() - live.keys():
                self.fail(entry, value, f"a dict with keys {sorted(map(str, live))}")
            for key, w in live.items():
                if key not in value:
                    self.fail(f"{entry}[{key!r}]", _Found("missing"), "present")
                self.like(f"{entry}[{key!r}]", value[key], w)
        elif isinstance(live, torch.Tensor):
            self.tensor(entry, value, shape=live.shape, dtype=live.dtype, finite=True)


def _check_model(c: _Checker, saved: Any, entry: str = "model") -> None:
    if not isinstance(saved, dict):
        c.fail(entry, saved, "a dict of tensors (a state dict)")
    for key, value in saved.items():
        if not isinstance(value, torch.Tensor):
            c.fail(f"{entry}[{key!r}]", value, "a tensor")
        # Unknown/missing keys and other shapes are reported all at once by load_weights_into.
        c.tensor(f"{entry}[{key!r}]", value, shape=value.shape, finite=True)


def _check_optimizer(c: _Checker, saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    live_groups = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if not isinstance(groups, (list, tuple)) or len(groups) != len(live_groups):
        c.fail("optimizer['param_groups']", groups, f"a list of {len(live_groups)} parameter groups")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for g, (group, live) in enumerate(zip(groups, live_groups)):
        entry = f"optimizer['param_groups'][{g}]"
        if not isinstance(group, dict):
            c.fail(entry, group, "a dict")
        ids = group.get("params")
        if not isinstance(ids, (list, tuple)) or list(ids) != live["params"]:
            c.fail(f"{entry}['params']", ids, f"the parameter ids {live['params'][:3]}... ({len(live['params'])})")
        for key, value in live.items():
            if key != "params":
                c.like(f"{entry}[{key!r}]", group.get(key), value)
    state = saved["state"]
    if not isinstance(state, dict):
        c.fail("optimizer['state']", state, "a dict")
    for index, buffers in state.items():
        entry = f"optimizer['state'][{index!r}]"
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(params):
            c.fail(entry, index, f"the state of a parameter id in [0, {len(params) - 1}]")
        if not isinstance(buffers, dict):
            c.fail(entry, buffers, "a dict of tensors")
        param = params[index]
        for name, value in buffers.items():
            where = f"{entry}[{name!r}]"
            if name == "step":  # a 0-d count (float32 for fused/capturable optimisers)
                if isinstance(value, torch.Tensor):
                    c.tensor(where, value, shape=(), finite=True)
                    value = value.item()
                c.number(where, value, low=0)
            elif value is None and name == "momentum_buffer":  # SGD before its first step
                continue
            else:
                c.tensor(where, value, shape=param.shape, floating=True, finite=True)
                if name.endswith("exp_avg_sq") and bool((value < 0).any()):
                    c.fail(where, _Found("negative in places"), "a non-negative second moment")


def _check_rng(c: _Checker, entry: str, rng: Any, mixer_generator: torch.Generator | None) -> None:
    if not isinstance(rng, dict):
        c.fail(entry, rng, f"a dict with {list(REQUIRED_RNG)}")
    for key in REQUIRED_RNG:
        if key not in rng:
            c.fail(f"{entry}[{key!r}]", _Found("missing"), "present")
    c.tensor(f"{entry}['torch']", rng["torch"], shape=torch.get_rng_state().shape, dtype=torch.uint8)
    if mixer_generator is not None and "mixer" in rng:
        c.tensor(f"{entry}['mixer']", rng["mixer"], shape=mixer_generator.get_state().shape, dtype=torch.uint8)
    npst = rng["numpy"]
    if not isinstance(npst, dict) or npst.get("kind") != "MT19937":
        c.fail(f"{entry}['numpy']", npst, "numpy's MT19937 state")
    c.tensor(f"{entry}['numpy']['keys']", npst.get("keys"), shape=(_NP_RNG_WORDS,), dtype=torch.int64)
    if bool(((npst["keys"] < 0) | (npst["keys"] >= 2 ** 32)).any()):
        c.fail(f"{entry}['numpy']['keys']", _Found("outside [0, 2**32) in places"), "32-bit words")
    c.number(f"{entry}['numpy']['pos']", npst.get("pos"), integer=True, low=0, high=_NP_RNG_WORDS)
    c.number(f"{entry}['numpy']['has_gauss']", npst.get("has_gauss"), integer=True, low=0, high=1)
    c.number(f"{entry}['numpy']['cached_gaussian']", npst.get("cached_gaussian"))
    py = rng["python"]
    words = py.get("state") if isinstance(py, dict) else None
    if (not isinstance(py, dict) or py.get("version") != 3 or not isinstance(words, (list, tuple))
            or len(words) != _PY_RNG_WORDS or not all(isinstance(w, int) and 0 <= w < 2 ** 32 for w in words)
            or not words[-1] <= _PY_RNG_WORDS - 1 or not (py.get("gauss") is None or isinstance(py["gauss"], float))):
        c.fail(f"{entry}['python']", py, f"Python's random state (version 3, {_PY_RNG_WORDS} 32-bit words)")
    cuda = rng.get("cuda")
    if cuda is not None and (not isinstance(cuda, (list, tuple)) or not all(
            isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1 for t in cuda)):
        c.fail(f"{entry}['cuda']", cuda, "a list of CUDA generator states (uint8 tensors)")


def validate_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike, *, optimizer: torch.optim.Optimizer,
                        scheduler_state: dict[str, Any], scaler: torch.amp.GradScaler,
                        mixer_generator: torch.Generator | None = None) -> None:
    """Check every entry of a loaded checkpoint against the live objects it will be loaded into.

    Model tensors (a tensor each, finite), optimiser groups and buffers (one per parameter, its shape, finite),
    schedule, scaler, RNG states (sizes and ranges), position, running sums and curve. ``CheckpointError`` naming
    the first bad entry; nothing is loaded.
    """
    c = _Checker(path)
    _check_model(c, ckpt["model"])
    if ckpt.get("ema") is not None:  # --ema-decay: evaluated each epoch and saved as weights_ema.safetensors
        _check_model(c, ckpt["ema"], "ema")
    _check_optimizer(c, ckpt["optimizer"], optimizer)
    # Every key of a schedule's state lands in its __dict__ (an extra 'optimizer' would replace the optimiser).
    c.like("scheduler", {k: v for k, v in ckpt["scheduler"].items() if k != "milestones"},
           {k: v for k, v in scheduler_state.items() if k != "milestones"}, exact=True)
    if "milestones" in scheduler_state:
        milestones = ckpt["scheduler"].get("milestones")
        if not isinstance(milestones, dict) or not all(
                isinstance(k, int) and isinstance(v, int) and k > 0 and v > 0 for k, v in milestones.items()):
            c.fail("scheduler['milestones']", milestones, "a dict of epoch: count (positive integers)")
    live_scaler = scaler.state_dict()
    saved_scaler = ckpt.get("scaler")
    if saved_scaler is not None and not isinstance(saved_scaler, dict):
        c.fail("scaler", saved_scaler, "a dict")
    if live_scaler and saved_scaler:
        c.like("scaler", saved_scaler, live_scaler)
        c.number("scaler['scale']", saved_scaler["scale"], low=1e-30)
    c.number("epoch", ckpt["epoch"], integer=True, low=0)
    c.number("step", ckpt.get("step", 0), integer=True, low=0)
    curve = ckpt.get("curve", [None] * ckpt["epoch"])
    if not isinstance(curve, list) or "curve" in ckpt and not all(isinstance(row, dict) for row in curve):
        c.fail("curve", curve, "a list of per-epoch rows (dicts)")
    if len(curve) != ckpt["epoch"]:
        c.fail("curve", _Found(f"{len(curve)} rows"), f"one row per finished epoch ({ckpt['epoch']})")
    partials = ckpt.get("partial_per_rank")
    if partials is not None and not isinstance(partials, (list, tuple)):
        c.fail("partial_per_rank", partials, "a list of each rank's running sums")
    for entry, partial in [("partial", ckpt.get("partial"))] + [
            (f"partial_per_rank[{rank}]", p) for rank, p in enumerate(partials or [])]:
        if partial is not None:
            c.like(entry, partial, {"loss_sum": 0.0, "images": 0, "time_s": 0.0})
            c.number(f"{entry}['images']", partial["images"], integer=True, low=0)
    c.number("wall_time_s", ckpt.get("wall_time_s", 0.0), low=0)
    fingerprint = ckpt.get("train_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        c.fail("train_fingerprint", fingerprint, "a string")
    _check_rng(c, "rng", ckpt["rng"], mixer_generator)
    per_rank = ckpt.get("rng_per_rank")
    if per_rank is not None:
        if not isinstance(per_rank, (list, tuple)):
            c.fail("rng_per_rank", per_rank, "a list of each rank's RNG states")
        for rank, rng in enumerate(per_rank):
            _check_rng(c, f"rng_per_rank[{rank}]", rng, mixer_generator)


def _check_schedule_length(saved: dict[str, Any], config: dict[str, Any], path: str | os.PathLike) -> None:
    """A schedule laid over the run's epochs (cosine; step with its size derived from --epochs) restores its old
    length from the checkpoint: other --epochs would restart or skew it without a word, so it is refused."""
    before, now = saved.get("epochs"), config.get("epochs")
    by_length = config.get("schedule") == "cosine" or (
        config.get("schedule") == "step" and not config.get("milestones") and config.get("step_size") is None)
    if before == now or not by_length or before is None:
        return
    raise CheckpointError(f"cannot resume {path} with --epochs {now}: its {config.get('schedule')} learning-rate "
                          f"schedule was laid over {before} epochs and would not stretch to {now} (cosine would "
                          "restart from the top). Nothing was changed. Resume with --epochs "
                          f"{before}, or train {now} epochs as a new run (another --output-dir)")


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: str | os.PathLike) -> list[str]:
    """Raise ``CheckpointError`` if ``ckpt`` belongs to another model/dataset/method; return the other changed
    options."""
    saved = ckpt["config"]
    clashes = [f"{k}: checkpoint {saved.get(k)!r} vs now {config.get(k)!r}"
               for k in CHECKPOINT_FIELDS if saved.get(k) != config.get(k)]
    if clashes:
        raise CheckpointError(f"cannot resume from {path}: it was written by a different run ({'; '.join(clashes)}). "
                              "Nothing was changed. Resume with the original options, or start a fresh run with "
                              "another --output-dir")
    _check_schedule_length(saved, config, path)
    # The warmup is part of the schedule's saved state (its phase and length): another one would not load (it was
    # refused as a damaged file) or would keep the old length without a word. Checkpoints before it had none.
    warmup_saved, warmup_now = saved.get("warmup_epochs") or 0, config.get("warmup_epochs") or 0
    if warmup_saved != warmup_now:
        raise CheckpointError(f"cannot resume {path} with --warmup-epochs {warmup_now}: the run was started with "
                              f"--warmup-epochs {warmup_saved}, and its learning-rate schedule (saved with the "
                              "checkpoint) keeps that warmup. Nothing was changed. Resume with --warmup-epochs "
                              f"{warmup_saved}, or start a new run (another --output-dir)")
    fp_saved, fp_now = ckpt.get("train_fingerprint"), config.get("train_fingerprint")
    if fp_saved is not None and fp_now is not None and fp_saved != fp_now:
        raise CheckpointError(f"cannot resume from {path}: the training data changed since it was written "
                              f"(fingerprint {str(fp_saved)[:12]} vs {fp_now[:12]}). Nothing was changed.")
    volatile = {*VOLATILE_FIELDS, "explicit", BASE_DIR_KEY}  # how to start and report, not what is trained
    # Paths are compared by where they lead: the same data read from another working directory is no change.
    folder = Path(path).absolute().parent
    saved, config = _located(saved, folder), _located(config, folder)
    return sorted(k for k in config if k not in volatile and k in saved and saved[k] != config[k])


def _located(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``config`` with its relative paths made absolute: from its ``base_dir`` (relative to the run ``folder``)
    where it records one, else from the working directory."""
    base = config.get(BASE_DIR_KEY)
    return resolve_paths(config, Path(folder).resolve() / base if isinstance(base, str) else Path.cwd())


__all__ = ["CHECKPOINT_NAME", "FORMAT_VERSION",
           "capture_rng", "restore_rng", "save_checkpoint", "load_checkpoint", "check_compatible",
           "validate_checkpoint"]
