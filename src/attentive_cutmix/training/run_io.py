"""What a run writes and listens to: the output folder checks, metrics.jsonl, TensorBoard, results.json,
the progress bar, and the SIGTERM/SIGINT handler.

Only rank 0 writes (``enabled=False`` elsewhere). ``metrics.jsonl`` is rewritten from the
checkpoint's curve on resume, so it never holds epochs the checkpoint doesn't know about.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from ..serialization import atomic_write
from .checkpoint import CHECKPOINT_NAME
from .config import FIELDS, ConfigError
from .distributed import DistInfo


def prepare_output_dir(out: Path, *, resume: bool, is_main: bool) -> Path | None:
    """Create/check ``out`` before any work; return the checkpoint to resume from (or ``None``).

    Refuses a fresh run into a folder that already holds a checkpoint, so nobody's run is overwritten.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} exists and is not a folder; choose another --output-dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if is_main:
            with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
    except OSError as err:
        raise ConfigError(f"--output-dir {out} is not writable ({err.strerror or err}); fix its permissions or free space, "
                          "or choose another --output-dir") from err
    ckpt = out / CHECKPOINT_NAME
    if ckpt.exists() and not resume:
        raise ConfigError(f"{out} already holds a checkpoint ({ckpt}) from an earlier run; nothing was changed. To continue "
                          f"that run add --resume (e.g. `attentive-cutmix train --config {out / 'config.yaml'} --resume`), "
                          "or choose another --output-dir for a new run")
    if resume and not ckpt.exists():
        if is_main:
            warnings.warn(f"--resume: no checkpoint in {out} yet; starting a fresh run", stacklevel=2)
        return None
    return ckpt if resume else None


def resume_command(out: Path, dist: DistInfo) -> str:
    args = f"train --config {shlex.quote(str(out / 'config.yaml'))} --resume"
    if not dist.enabled:
        return f"attentive-cutmix {args}"
    nodes = max(1, dist.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    return f"torchrun --nnodes={nodes} --nproc_per_node={per_node} -m attentive_cutmix {args}"


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=False) + "\n"


class RunWriter:
    def __init__(self, out: Path, config: dict[str, Any], curve: list[dict[str, Any]], *, enabled: bool, progress: bool = True) -> None:
        self.out, self.config, self.enabled = out, config, enabled
        self.show_progress = enabled and progress and sys.stderr.isatty()
        self.tb = None
        if not enabled:
            return
        resumable = {k: v for k, v in config.items() if k in FIELDS and k != "resume"}
        atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(resumable, sort_keys=False)))
        atomic_write(out / "metrics.jsonl", lambda tmp: Path(tmp).write_text("".join(_json_line(r) for r in curve)))
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out / "tb"), purge_step=len(curve) + 1)

    def progress(self, **kwargs: Any) -> tqdm:
        return tqdm(disable=not self.show_progress, leave=False, dynamic_ncols=True, **kwargs)

    def log_epoch(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(_json_line(row))
            f.flush()
            os.fsync(f.fileno())
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, row["epoch"])
        self.tb.flush()
        if self.show_progress or self.config.get("progress"):
            top = "" if row["top1"] is None else f"  top1 {row['top1']:.2f}  top5 {row['top5']:.2f}"
            print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}{top}  {row['images_per_s']:.0f} img/s  "
                  f"lr {row['lr']:.3g}", file=sys.stderr, flush=True)

    def finish(self, curve: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        evaluated = [r for r in curve if r.get("top1") is not None]
        final = evaluated[-1] if evaluated else {}
        best = max(evaluated, key=lambda r: r["top1"], default={})
        results = {"config": self.config, "top1": final.get("top1"), "top5": final.get("top5"), "best_top1": best.get("top1"),
                   "best_top5": max((r["top5"] for r in evaluated), default=None), "epochs": len(curve), "curve": curve,
                   "wall_time_s": wall_time, "status": "finished"}
        if self.enabled:
            atomic_write(self.out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
        return results

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class StopSignals:
    """SIGTERM/SIGINT set ``requested``; the loop finishes its step, checkpoints and exits. A second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested, self.name, self.stop_after_step = False, None, False
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.name = True, signal.Signals(signum).name
        print(f"\nreceived {self.name}: finishing the current step and writing a checkpoint "
              "(press Ctrl-C again to abort without one)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


__all__ = ["prepare_output_dir", "resume_command", "RunWriter", "StopSignals"]
