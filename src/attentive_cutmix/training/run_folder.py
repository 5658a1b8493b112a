"""The run folder: what a run writes where (its layout), who holds it (the lock) and how far it got (its status).

Every file name of a run folder is spelled here and nowhere else: the trainer writes through ``RunFolder``'s
paths, and ``compare``, ``evaluate`` and ``demo`` find a run's files through them (its recorded contents are read
by ``run_record.RunRecord``). The names and layout are those of every run written so far (committed grids
included), so they must never change.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shlex
import socket
import stat
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

CHECKPOINT_NAME = "checkpoint.pt"  # fp32, everything to continue the run (written each epoch)
RESULTS_NAME = "results.json"  # the run's record, written once it finished (run_record.RunRecord)
METRICS_NAME = "metrics.jsonl"  # one JSON line per epoch, as it goes
CONFIG_NAME = "config.yaml"  # the run's options: `train --config RUN/config.yaml --resume` continues it
TB_NAME = "tb"  # TensorBoard event files (a folder)
WEIGHTS_NAME = "weights.safetensors"  # fp16 final weights
EMA_WEIGHTS_NAME = "weights_ema.safetensors"  # --ema-decay: the averaged weights
BEST_WEIGHTS_NAME = "weights_best.safetensors"  # the epoch with the best held-out top-1 so far
LOCK_NAME = ".lock"
# What a run writes into its folder; any of them there means the folder holds someone's run.
OUTPUT_NAMES = (CHECKPOINT_NAME, RESULTS_NAME, METRICS_NAME, CONFIG_NAME, TB_NAME, WEIGHTS_NAME, EMA_WEIGHTS_NAME,
                BEST_WEIGHTS_NAME)


class _File:
    """A file of the run folder as a read-only attribute: ``folder.results`` is the path of its ``results.json``."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.__doc__ = name, doc

    def __get__(self, folder: RunFolder | None, owner: type | None = None) -> Path:
        if folder is None:
            return self  # type: ignore[return-value]  # the class attribute: for help() and documentation
        return folder.path / self.name


@dataclass(frozen=True)
class RunFolder:
    """One run's output folder (``--output-dir``): its files as paths, and what they say about the run."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if isinstance(path, RunFolder):
            path = path.path
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    checkpoint = _File(CHECKPOINT_NAME, "The checkpoint (``--resume`` reads it).")
    results = _File(RESULTS_NAME, "The finished run's record.")
    metrics = _File(METRICS_NAME, "The per-epoch metrics, one JSON line each.")
    config = _File(CONFIG_NAME, "The run's options (YAML).")
    tb = _File(TB_NAME, "The TensorBoard folder.")
    weights = _File(WEIGHTS_NAME, "The final fp16 weights.")
    ema_weights = _File(EMA_WEIGHTS_NAME, "The EMA weights (``--ema-decay``).")
    best_weights = _File(BEST_WEIGHTS_NAME, "The best epoch's weights.")
    lock = _File(LOCK_NAME, "The lock file (``RunLock``).")

    def weights_files(self, which: str) -> list[Path]:
        """The files that hold the model's weights for ``which`` (``final``, ``checkpoint`` or ``auto``), in the
        order to try them."""
        files = {"final": [self.weights], "checkpoint": [self.checkpoint], "auto": [self.weights, self.checkpoint]}
        if which not in files:
            raise ValueError(f"weights must be one of {', '.join(files)}, got weights={which!r}")
        return files[which]

    def existing_outputs(self) -> list[str]:
        """The run outputs in the folder (``tb`` counts once it holds a file)."""
        found = []
        for name in OUTPUT_NAMES:
            path = self.path / name
            if path.is_dir() and any(p.is_file() for p in path.rglob("*")) or path.is_file():
                found.append(name)
        return found

    def holds_run(self) -> bool:
        """Whether the folder holds any run output (a checkpoint, metrics, results, ...)."""
        return bool(self.existing_outputs())

    def recorded_status(self) -> str | None:
        """The status ``results.json`` records (``finished``, ``extending``), ``None`` without a readable one.

        Only this one entry is read, unchecked: deciding whether to skip or resume must not fail on a damaged
        record (``RunRecord.read`` says what is wrong with it)."""
        try:
            record = json.loads(self.results.read_text())
        except (OSError, ValueError):
            return None
        status = record.get("status") if isinstance(record, dict) else None
        return status if isinstance(status, str) else None

    def is_finished(self) -> bool:
        """Whether the run finished (its record says so; one being extended for more epochs is not)."""
        return self.recorded_status() == "finished"

    def is_config_of_run(self, config_file: str | os.PathLike[str]) -> bool:
        """Whether ``config_file`` is this folder's ``config.yaml``, beside other outputs of the run."""
        path = Path(config_file)
        return (path.name == CONFIG_NAME and path.is_file()
                and bool(set(self.existing_outputs()) - {CONFIG_NAME}))


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
        self.path = RunFolder(folder).lock
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
        what = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a folder"}.get(err.errno or 0, err.strerror or str(err))
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


__all__ = ["RunFolder", "RunLock", "RunLockedError", "lock_run_dir", "release_run_dir", "wait_for_run",
           "OUTPUT_NAMES", "CHECKPOINT_NAME", "RESULTS_NAME", "METRICS_NAME", "CONFIG_NAME", "TB_NAME", "WEIGHTS_NAME",
           "EMA_WEIGHTS_NAME", "BEST_WEIGHTS_NAME", "LOCK_NAME"]
