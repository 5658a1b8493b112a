"""``worker_safe_loader``: a DataLoader whose worker errors end the run at once, in one line, and whose workers
outlive a SIGTERM only for a grace period (the main process checkpoints first). Every loader of the package
(training batches, evaluation, decoding a split once) is one of these."""
from __future__ import annotations

import pickle
import random
import signal
import traceback
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..constants import STOP_SIGNALS

__all__ = ["worker_safe_loader", "WORKER_TERM_GRACE_S"]

# A worker gives up on a SIGTERM this long after it arrives. Long enough for the main process, which got the same
# signal from the shell or the cluster, to finish its step and stop its workers itself; short enough that no process
# waits on a worker for ever (at exit, multiprocessing SIGTERMs and then joins any worker still alive).
WORKER_TERM_GRACE_S = 10


def _stop_soon(signum: int, frame: Any) -> None:
    remaining = signal.alarm(WORKER_TERM_GRACE_S)
    if remaining:  # a repeated SIGTERM must not push the deadline back
        signal.alarm(remaining)


def _seed_worker(worker_id: int) -> None:
    # Ctrl-C and a cluster's SIGTERM reach the whole process group: the main process finishes its step and
    # checkpoints, so the workers must not die under it. Ctrl-C is ignored (the main process stops the workers);
    # SIGTERM only starts the grace period above, after which the default SIGALRM action ends the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    for sig in STOP_SIGNALS:  # SIGHUP, SIGUSR1 too: their default action would end the worker under the main process
        signal.signal(sig, _stop_soon)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class _ItemFailure:
    """An exception raised by ``dataset[i]`` in a worker, sent back as the item (see ``_WorkerLoader``)."""

    error: BaseException
    worker_traceback: str


def _picklable(err: BaseException) -> BaseException:
    try:
        return pickle.loads(pickle.dumps(err))
    except Exception:  # an exception with extra constructor arguments: keep its type's name and message
        return RuntimeError(f"{type(err).__name__}: {err}")


class _CatchItemErrors(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as err:
            return _ItemFailure(_picklable(err), traceback.format_exc())


class _WorkerLoader(DataLoader):
    """A DataLoader whose worker errors reach the caller as themselves, after its workers were stopped.

    Torch re-raises a worker's exception as a new one whose message is the worker's whole traceback, from a
    frame that keeps the iterator (and so its worker processes) alive in a reference cycle; with workers that
    wait out SIGTERM, the process then hung at exit. Here the worker returns the exception as its item, and
    iteration stops the workers before raising it with its own type and message (a ``CorruptImageError`` naming
    the file stays one line); the worker's traceback is attached as a note for debugging.
    """

    def __iter__(self) -> Iterator[Any]:
        iterator = super().__iter__()
        try:
            for batch in iterator:
                if isinstance(batch, _ItemFailure):
                    error = batch.error
                    if hasattr(error, "add_note"):  # Python >= 3.11
                        error.add_note(f"raised in a DataLoader worker:\n{batch.worker_traceback}")
                    raise error
                yield batch
        finally:
            shutdown = getattr(iterator, "_shutdown_workers", None)  # what the iterator's __del__ would call, now
            if shutdown is not None:
                shutdown()


def worker_safe_loader(dataset: Dataset, *, workers: int, **kwargs: Any) -> DataLoader:
    """``DataLoader(dataset, num_workers=workers, **kwargs)`` whose worker errors are raised as themselves (one line,
    e.g. a ``CorruptImageError`` naming the file) after its workers were stopped, so no process hangs on them."""
    if workers == 0:  # in-process loading raises the dataset's own exception already
        return DataLoader(dataset, num_workers=0, **kwargs)
    collate = kwargs.pop("collate_fn", None) or default_collate

    def collate_fn(batch: list[Any]) -> Any:
        failure = next((item for item in batch if isinstance(item, _ItemFailure)), None)
        return failure if failure is not None else collate(batch)

    return _WorkerLoader(_CatchItemErrors(dataset), num_workers=workers, collate_fn=collate_fn,
                         worker_init_fn=kwargs.pop("worker_init_fn", None) or _seed_worker, **kwargs)
