"""What a run writes and listens to: the output folder checks, the per-epoch metrics, TensorBoard, the final
record, the progress bar, and the SIGTERM/SIGINT handler. Where each goes is ``run_folder.RunFolder``'s.

Only rank 0 writes (``enabled=False`` elsewhere). The metrics file is rewritten from the checkpoint's curve on
resume, so it never holds epochs the checkpoint doesn't know about.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from ..constants import STOP_SIGNALS
from ..serialization import OutputWriteError, atomic_write
from .config import BASE_DIR_KEY, ConfigError, config_keys
from .distributed import DistInfo
from .run_folder import (
    CONFIG_NAME,
    LOCK_NAME,
    OUTPUT_NAMES,
    RunFolder,
    RunLock,
    RunLockedError,
    lock_run_dir,
    release_run_dir,
    wait_for_run,
)
from .run_record import mark_extending, results_record, write_results


def existing_outputs(out: Path) -> list[str]:
    """The run outputs in ``out`` (``tb`` counts once it holds a file)."""
    return RunFolder(out).existing_outputs()


def clear_earlier_outputs(out: Path) -> None:
    """``--overwrite``: remove the earlier run's outputs from ``out``, once the new run has been fully set up.

    Called by the trainer after every option, file and folder was checked and the model built: a run that fails to
    start leaves the earlier one whole. Only what a run writes goes, never a file the user put in the folder; a
    symlink (e.g. ``tb`` pointing elsewhere) is removed as a link, never followed.
    """
    existing = existing_outputs(out)
    if not existing:
        return
    warnings.warn(f"--overwrite: removing the earlier run's {', '.join(existing)} from {out}", stacklevel=3)
    for name in OUTPUT_NAMES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def prepare_output_dir(out: Path, *, resume: bool, is_main: bool, overwrite: bool = False,
                       auto_resume: bool = False) -> Path | None:
    """Create/check ``out`` and lock it before any work; return the checkpoint to resume from (or ``None``).

    The main process holds ``out``'s run lock from here until ``RunWriter.close()`` (another live run there:
    ``RunLockedError`` naming it). A fresh run refuses a folder that holds any run output (checkpoint, results,
    metrics, config, TensorBoard events) unless ``overwrite`` (the trainer removes those outputs, and nothing else,
    with ``clear_earlier_outputs`` once the new run is set up). ``resume`` needs a checkpoint: anything else is an
    error that changes nothing. ``auto_resume`` continues from a checkpoint if there is one and otherwise starts the
    run there (a job script that is requeued), but never over a finished run's results.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} exists and is not a folder; choose another --output-dir")
    if resume and not auto_resume and not existing_outputs(out):  # e.g. a relative --output-dir from elsewhere
        raise ConfigError(f"--resume: there is no run to continue in {out.absolute()} (no checkpoint, config or "
                          "metrics); nothing was created. Check --output-dir (a relative path counts from the working "
                          "directory), or pass the run's own config: `attentive-cutmix train --config "
                          f"RUN/{CONFIG_NAME} --resume`. For a new run there, drop --resume (a job script that may "
                          "start or continue it: --auto-resume)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if is_main:
            with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
    except OSError as err:
        raise ConfigError(f"--output-dir {out} is not writable ({err.strerror or err}); fix its permissions or "
                          "free space, or choose another --output-dir") from err
    if is_main:
        lock_run_dir(out)
    try:
        return _resume_point(out, resume=resume, auto_resume=auto_resume, is_main=is_main, overwrite=overwrite)
    except BaseException:
        if is_main:
            release_run_dir(out)
        raise


def _resume_point(out: Path, *, resume: bool, auto_resume: bool, is_main: bool, overwrite: bool) -> Path | None:
    folder = RunFolder(out)
    ckpt = folder.checkpoint
    existing = folder.existing_outputs()
    flag = "--auto-resume" if auto_resume else "--resume"
    if (resume or auto_resume) and overwrite:
        raise ConfigError(f"{flag} and --overwrite exclude each other")
    if overwrite:  # the earlier outputs stay until the new run has started (clear_earlier_outputs)
        return None
    if not (resume or auto_resume):
        if existing:
            what = (f"a checkpoint ({ckpt})" if ckpt.exists()
                    else f"the outputs of an earlier run ({', '.join(existing)})")
            raise ConfigError(f"{out} already holds {what}; nothing was changed. To continue that run add --resume "
                              f"(e.g. `attentive-cutmix train --config "
                              f"{shlex.quote(str(folder.config.absolute()))} --resume`), to replace it add "
                              "--overwrite (config: overwrite: true), or choose another --output-dir for a new run")
        return None
    if ckpt.exists():
        return ckpt
    if folder.is_finished():
        raise ConfigError(f"{flag}: {out} holds a finished run ({folder.results}) and no checkpoint, so "
                          "there is nothing to continue; nothing was changed. To train it again from scratch and "
                          "replace its results add --overwrite (config: overwrite: true), or choose another "
                          "--output-dir")
    if not auto_resume:  # outputs of a run stopped before its first checkpoint: starting again must be asked for
        raise ConfigError(f"--resume: {out} holds no checkpoint, only {', '.join(existing)} of a run stopped before "
                          "its first one, so there is nothing to continue; nothing was changed. To start that run "
                          "again there use --auto-resume instead of --resume (or --overwrite)")
    if is_main:
        warnings.warn(f"--auto-resume: no checkpoint in {out}"
                      + (f" (only {', '.join(existing)} of a run stopped before its first)" if existing else "")
                      + "; starting the run there from the beginning", stacklevel=3)
    return None


def resume_command(out: Path, dist: DistInfo) -> str:
    # Absolute: the command is printed to be pasted anywhere, e.g. into a job script run from another folder.
    args = f"train --config {shlex.quote(str(RunFolder(out).config.absolute()))} --resume"
    if not dist.enabled:
        return f"attentive-cutmix {args}"
    nodes = max(1, dist.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    return f"torchrun --nnodes={nodes} --nproc_per_node={per_node} -m attentive_cutmix {args}"


def run_folder_of(config_file: str | os.PathLike) -> Path | None:
    """The run folder a ``config.yaml`` belongs to: the folder it lies in, if that holds a run's other outputs.

    A run's ``config.yaml`` records the ``output_dir`` it was started with; a copied folder, or a relative path
    read from another working directory, would point elsewhere. The folder the file lies in is the run.
    """
    folder = Path(config_file).parent.absolute()
    return folder if RunFolder(folder).is_config_of_run(config_file) else None


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=False) + "\n"


def _guarded(path: Path, write: Any) -> Any:
    """``write()``, with a failed write (full disk, quota) as ``OutputWriteError`` naming ``path``."""
    try:
        return write()
    except OSError as err:
        if isinstance(err, OutputWriteError):
            raise
        raise OutputWriteError(path, err) from err


def _append(path: Path, text: str) -> None:
    """Append ``text`` durably; on failure cut the file back, so no half line is left (resume rewrites it anyway)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    size = os.fstat(fd).st_size
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)


class RunWriter:
    def __init__(self, out: Path, config: dict[str, Any], curve: list[dict[str, Any]], *, enabled: bool,
                 progress: bool = True) -> None:
        self.out, self.config, self.enabled = out, config, enabled
        self.folder = RunFolder(out)
        self.epochs_logged = len(curve)
        self.show_progress = enabled and progress and sys.stderr.isatty()
        self.tb = None
        if not enabled:
            return
        mark_extending(self.folder, int(config.get("epochs", 0)))
        keys = config_keys()
        # base_dir first: where this file's relative paths count from (the working directory the run started
        # from, relative to the run folder), so the file still means the same run read from anywhere else.
        resumable = {**({BASE_DIR_KEY: config[BASE_DIR_KEY]} if BASE_DIR_KEY in config else {}),
                     **{k: v for k, v in config.items()
                        if k in keys and k not in ("resume", "auto_resume", "overwrite")}}
        atomic_write(self.folder.config,
                     lambda tmp: Path(tmp).write_text(yaml.safe_dump(resumable, sort_keys=False)))
        atomic_write(self.folder.metrics, lambda tmp: Path(tmp).write_text("".join(_json_line(r) for r in curve)))
        try:  # tensorboard's protobufs: imported by runs that write, not by --help
            from .events import ScalarEventFile
        except ImportError:  # [train-light]: the metrics file has every number TensorBoard would show
            print(f"note: TensorBoard is not installed, so no {self.folder.tb.name}/ logs ({self.folder.metrics.name} "
                  "has every number); pip install tensorboard to get them", file=sys.stderr, flush=True)
            return
        self.tb = _guarded(self.folder.tb, lambda: ScalarEventFile(self.folder.tb, purge_step=len(curve) + 1))

    def progress(self, **kwargs: Any) -> tqdm:
        return tqdm(disable=not self.show_progress, leave=False, dynamic_ncols=True, **kwargs)

    def log_point(self, epoch: int, step: int, total: int, loss: float, images_per_s: float) -> None:
        """A line per log point when there is no progress bar to show it (stderr not a terminal: logs, CI, jobs)."""
        if self.enabled and self.config.get("progress") and not self.show_progress:
            print(f"epoch {epoch}/{self.config['epochs']} step {step}/{total}: loss {loss:.4f}  "
                  f"{images_per_s:.0f} img/s", file=sys.stderr, flush=True)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.epochs_logged += 1
        if not self.enabled:
            return
        _guarded(self.folder.metrics, lambda: _append(self.folder.metrics, _json_line(row)))
        if self.tb is not None:
            scalars = {k: v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
            _guarded(self.tb.path, lambda: (self.tb.add_scalars(scalars, row["epoch"]), self.tb.flush()))
        if self.show_progress or self.config.get("progress"):
            top = "" if row["top1"] is None else f"  top1 {row['top1']:.2f}  top5 {row['top5']:.2f}"
            print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}{top}  {row['images_per_s']:.0f} img/s  "
                  f"lr {row['lr']:.3g}", file=sys.stderr, flush=True)

    def finish(self, curve: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        results = results_record(self.config, curve, wall_time)
        if self.enabled:
            write_results(self.folder, results)
            release_run_dir(self.out)
        return results

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        # The trainer closes the writer before finish() writes the record: a complete run keeps its folder
        # locked until then, so no other process ever sees it with every epoch done but no results.
        if self.enabled and self.epochs_logged < int(self.config.get("epochs", 0)):
            release_run_dir(self.out)


class StopSignals:
    """SIGTERM, SIGHUP, SIGUSR1 (``STOP_SIGNALS``) and SIGINT set ``requested``; the loop finishes its step,
    checkpoints and exits. A second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested, self.name, self.stop_after_step = False, None, False
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (*STOP_SIGNALS, signal.SIGINT):
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


__all__ = ["prepare_output_dir", "resume_command", "clear_earlier_outputs", "run_folder_of", "RunWriter",
           "StopSignals", "RunLock", "RunLockedError", "lock_run_dir", "release_run_dir", "wait_for_run",
           "existing_outputs", "OUTPUT_NAMES", "LOCK_NAME"]
