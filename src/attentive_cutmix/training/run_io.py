"""What a run writes and listens to: the output folder checks, metrics.jsonl, TensorBoard, results.json,
the progress bar, and the SIGTERM/SIGINT handler.

Only rank 0 writes (``enabled=False`` elsewhere). ``metrics.jsonl`` is rewritten from the
checkpoint's curve on resume, so it never holds epochs the checkpoint doesn't know about.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from ..constants import STOP_SIGNALS
from ..serialization import atomic_write
from .checkpoint import CHECKPOINT_NAME
from .config import BASE_DIR_KEY, ConfigError, config_keys
from .distributed import DistInfo

LOCK_NAME = ".lock"
# What a run writes into its folder; any of them there means the folder holds someone's run.
OUTPUT_NAMES = (CHECKPOINT_NAME, "results.json", "metrics.jsonl", "config.yaml", "tb", "weights.safetensors",
                "weights_ema.safetensors", "weights_best.safetensors")


class RunLockedError(ConfigError):
    """Another live process holds the run folder (its lock file names the holder)."""


class RunLock:
    """An exclusive ``flock`` on ``<folder>/.lock``: held while this object is, dropped by the OS if the process dies.

    The file holds the current holder's pid, host, start time and command, for the error message. ``release()``
    removes it (a finished run leaves no ``.lock``), while still holding it: a process that was waiting on the removed
    file finds, once it gets the lock, that the path no longer leads to that file and locks the one there now, so two
    processes never both hold the folder. A holder killed outright leaves the file behind, unlocked.
    """

    def __init__(self, folder: Path, *, wait: bool = False) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None
        while True:
            self._fd = _open_lock_file(self.path)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _holder(self._fd)
                self._close()
                raise RunLockedError(f"{folder} is in use by another run ({holder}); nothing was changed. Wait for it "
                                     "to finish, or choose another --output-dir (the lock is released as soon as that "
                                     "process ends, even if it is killed)") from None
            except OSError as err:
                self._close()
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                warnings.warn(f"{folder}: this file system does not support file locks ({err.strerror}); a second "
                              "run started in this folder would not be detected", stacklevel=3)
                return
            if _is_the_file_at(self._fd, self.path):
                break
            self._close()  # its holder removed it on release: lock the file at the path now
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(map(shlex.quote, sys.argv)),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(info).encode(), 0)
        os.fsync(self._fd)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def release(self) -> None:
        if self._fd is not None and _is_the_file_at(self._fd, self.path):
            try:
                self.path.unlink()  # while still locked: see the class docstring
            except OSError:
                pass  # a read-only folder: the unlocked file stays, harmless
        self._close()


def _is_the_file_at(fd: int, path: Path) -> bool:
    """Whether ``path`` still leads to the open file ``fd`` (not removed, not replaced)."""
    try:
        there = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    here = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)


def _open_lock_file(path: Path) -> int:
    """Open (or create) ``path`` for the lock, refusing anything but a plain file of its own.

    The lock's JSON is written into the file: a symlink or a hard link planted as ``.lock`` would have another file
    truncated and overwritten, and a folder or a FIFO there gave a traceback.
    """
    refuse = (f"{path} is not a plain lock file ({{what}}); nothing was written to it. Remove it (it is only a "
              "lock; a run recreates it) or choose another --output-dir")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as err:
        what = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a folder"}.get(err.errno, err.strerror or str(err))
        raise ConfigError(refuse.format(what=what)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise ConfigError(refuse.format(what=what))
    return fd


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65536, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is between locking and writing its name
        return "a process that has not written its name yet"


def wait_for_run(folder: Path) -> None:
    """Block until no process holds ``folder``'s run lock (returns at once if none does)."""
    RunLock(folder, wait=True).release()


# Run folders this process holds, by resolved path. The trainer takes the lock in prepare_output_dir and gives it
# back in RunWriter.close(); this table carries it between the two. Re-entrant within a process: a run that failed
# before its RunWriter existed leaves its lock here, and the next run of that folder in this process reuses it.
_HELD: dict[str, RunLock] = {}


def lock_run_dir(out: Path) -> RunLock:
    """Hold ``out``'s run lock for this process (``RunLockedError`` naming the holder if another process has it)."""
    key = str(Path(out).resolve())
    if key not in _HELD:
        _HELD[key] = RunLock(Path(out))
    return _HELD[key]


def release_run_dir(out: Path) -> None:
    """Give back ``out``'s run lock if this process holds it."""
    lock = _HELD.pop(str(Path(out).resolve()), None)
    if lock is not None:
        lock.release()


def existing_outputs(out: Path) -> list[str]:
    """The run outputs in ``out`` (``tb`` counts once it holds a file)."""
    found = []
    for name in OUTPUT_NAMES:
        path = out / name
        if path.is_dir() and any(p.is_file() for p in path.rglob("*")) or path.is_file():
            found.append(name)
    return found


def _finished(out: Path) -> bool:
    try:
        return json.loads((out / "results.json").read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


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
                          "RUN/config.yaml --resume`. For a new run there, drop --resume (a job script that may "
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
    ckpt = out / CHECKPOINT_NAME
    existing = existing_outputs(out)
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
                              f"{shlex.quote(str(out.absolute() / 'config.yaml'))} --resume`), to replace it add "
                              "--overwrite (config: overwrite: true), or choose another --output-dir for a new run")
        return None
    if ckpt.exists():
        return ckpt
    if _finished(out):
        raise ConfigError(f"{flag}: {out} holds a finished run ({out / 'results.json'}) and no checkpoint, so "
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
    args = f"train --config {shlex.quote(str(out.absolute() / 'config.yaml'))} --resume"
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
    path = Path(config_file)
    if path.name != "config.yaml" or not path.is_file():
        return None
    folder = path.parent.absolute()
    return folder if set(existing_outputs(folder)) - {"config.yaml"} else None


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=False) + "\n"


def _mark_extending(out: Path, epochs: int) -> None:
    """A finished run resumed for more epochs is no longer finished: say so in its ``results.json`` before the first
    new step, so a run killed while being extended is never reported as finished at its old epoch."""
    path = out / "results.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(record, dict) or record.get("status") != "finished":
        return
    done = record.get("epochs")
    if isinstance(done, int) and done >= epochs:
        return
    record.update(status="extending", extending_to=epochs)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))


class RunWriter:
    def __init__(self, out: Path, config: dict[str, Any], curve: list[dict[str, Any]], *, enabled: bool,
                 progress: bool = True) -> None:
        self.out, self.config, self.enabled = out, config, enabled
        self.epochs_logged = len(curve)
        self.show_progress = enabled and progress and sys.stderr.isatty()
        self.tb = None
        if not enabled:
            return
        _mark_extending(out, int(config.get("epochs", 0)))
        keys = config_keys()
        # base_dir first: where this file's relative paths count from (the working directory the run started
        # from, relative to the run folder), so the file still means the same run read from anywhere else.
        resumable = {**({BASE_DIR_KEY: config[BASE_DIR_KEY]} if BASE_DIR_KEY in config else {}),
                     **{k: v for k, v in config.items()
                        if k in keys and k not in ("resume", "auto_resume", "overwrite")}}
        atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(resumable, sort_keys=False)))
        atomic_write(out / "metrics.jsonl", lambda tmp: Path(tmp).write_text("".join(_json_line(r) for r in curve)))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # [train-light]: metrics.jsonl has every number TensorBoard would show
            print("note: TensorBoard is not installed, so no tb/ logs (metrics.jsonl has every number); "
                  "pip install tensorboard to get them", file=sys.stderr, flush=True)
            return
        self.tb = SummaryWriter(str(out / "tb"), purge_step=len(curve) + 1)

    def progress(self, **kwargs: Any) -> tqdm:
        return tqdm(disable=not self.show_progress, leave=False, dynamic_ncols=True, **kwargs)

    def log_point(self, epoch: int, epochs: int, step: int, total: int, loss: float, images_per_s: float) -> None:
        """A line per log point when there is no progress bar to show it (stderr not a terminal: logs, CI, jobs)."""
        if self.enabled and self.config.get("progress") and not self.show_progress:
            print(f"epoch {epoch}/{epochs} step {step}/{total}: loss {loss:.4f}  {images_per_s:.0f} img/s",
                  file=sys.stderr, flush=True)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.epochs_logged += 1
        if not self.enabled:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(_json_line(row))
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
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
        results = {"config": self.config, "top1": final.get("top1"), "top5": final.get("top5"),
                   "best_top1": best.get("top1"), "best_top5": max((r["top5"] for r in evaluated), default=None),
                   "epochs": len(curve), "curve": curve,
                   "wall_time_s": wall_time, "status": "finished"}
        if self.enabled:
            atomic_write(self.out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
            release_run_dir(self.out)
        return results

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        # The trainer closes the writer before finish() writes results.json: a complete run keeps its folder
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
