"""TensorBoard scalars written in the caller's thread.

``SummaryWriter`` writes from a background thread: on a full disk that thread dies with a traceback printed by
``threading.excepthook`` and the error reaches the run only at a later call. This writes the same event file
(what ``SummaryWriter(purge_step=...)`` + ``add_scalar`` write) synchronously, so a failed write is an ``OSError``
raised where it happened.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard.summary import scalar


class ScalarEventFile:
    """One new ``events.out.tfevents.*`` file in ``folder``; ``purge_step``: TensorBoard drops the earlier files'
    points from that step on (a resumed run rewrites the epochs after its checkpoint)."""

    def __init__(self, folder: Path, *, purge_step: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        for n in range(1000):  # a second writer of this process in the same second gets its own file
            self.path = folder / f"{stem}.{n}"
            try:
                self._file = open(self.path, "xb")
                break
            except FileExistsError:
                continue
        self._records = RecordWriter(self._file)
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START)))
        self.flush()

    def _write(self, event: Event) -> None:
        self._records.write(event.SerializeToString())

    def add_scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self._write(Event(wall_time=time.time(), step=int(step), summary=scalar(key, value)))

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # its data was flushed (or its error raised) at the last epoch
                pass
