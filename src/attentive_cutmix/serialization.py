"""Safe loading and atomic saving of weights and checkpoints.

Nothing here unpickles arbitrary objects: torch files load with ``weights_only=True`` and
weights can be safetensors. Saves go to a temporary file in the same folder, are fsynced and
renamed over the target, so a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import resource
import signal
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from .constants import STOP_SIGNALS


class CheckpointError(ValueError):
    """A weights/checkpoint file that is missing, truncated, corrupt, unsafe or for another model."""


class OutputWriteError(OSError, ValueError):
    """A file could not be written (disk full, read-only, permissions); the file there before, if any, is intact.

    An ``OSError`` with the original ``errno``/``strerror`` (handlers of ``OSError`` work unchanged) and a
    ``ValueError`` (the CLIs print it as one line, not a traceback); its message names the file.
    """

    def __init__(self, path: str | os.PathLike, err: OSError) -> None:
        super().__init__(err.errno, err.strerror or str(err))
        self.filename = str(path)
        self.message = (f"could not write {path} ({err.strerror or err}); nothing there was replaced (the file "
                        "before, if any, is intact). Free disk space or fix the folder's permissions, then run again")

    def __str__(self) -> str:
        return self.message


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# How the writers we call report a failed write without an OSError: torch.save's C++ stream loses the errno
# ("basic_ios::clear", "unexpected pos 576 vs 534", "file write failed"); safetensors' Rust I/O error keeps it as text.
_TORCH_WRITE_FAILED = ("basic_ios::clear", "unexpected pos", "file write failed", "PytorchStreamWriter failed")
_OS_ERROR_TEXT = re.compile(r"\(os error (\d+)\)")


def write_failure(err: BaseException, tmp: str | os.PathLike) -> OSError | None:
    """The ``OSError`` behind a writer's failure to write ``tmp`` (``None`` if ``err`` is not a failed write).

    On a full disk ``torch.save`` raises ``RuntimeError`` and safetensors ``SafetensorError``, never ``OSError``.
    torch's message has no errno: a full file system (no block free) is ``ENOSPC``, a file at the process's size
    limit (``RLIMIT_FSIZE``, quotas of batch systems) ``EFBIG``, anything else ``EIO`` with the writer's words.
    """
    if isinstance(err, OSError):
        return err
    text = str(err)
    if (found := _OS_ERROR_TEXT.search(text)) is not None:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    if not isinstance(err, RuntimeError) or not any(s in text for s in _TORCH_WRITE_FAILED):
        return None
    code, why = errno.EIO, f"{os.strerror(errno.EIO)}: {_first_line(err)}"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    try:
        if os.statvfs(Path(tmp).parent).f_bavail == 0:
            code = errno.ENOSPC
        elif limit != resource.RLIM_INFINITY and os.path.getsize(tmp) >= limit:
            code = errno.EFBIG
    except OSError:  # the folder is gone: say what the writer said
        pass
    return OSError(code, why if code == errno.EIO else os.strerror(code))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then fsync and rename ``tmp_path`` over ``path``; ``OutputWriteError`` if the
    disk or folder refuses it (whatever the writer raises for it: see ``write_failure``)."""
    path = Path(path)
    try:
        return _atomic_write(path, write)
    except OutputWriteError:
        raise
    except OSError as err:
        raise OutputWriteError(path, err) from err


def _atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            write(tmp)
        except Exception as err:  # a full disk as the writer reports it, judged while the temp file still exists
            if (failure := write_failure(err, tmp)) is None or failure is err:
                raise
            raise failure from err
        # mkstemp makes 0600, and writers that replace the file (safetensors' save_file) keep that: give the file
        # the permissions open() would, once it is written.
        os.chmod(tmp, _new_file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]  # an empty file raises a bare EOFError()


def safe_torch_load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} was refused: it contains objects other than tensors and plain containers "
                              "(possibly unsafe code); only weights_only-loadable files are accepted "
                              f"({_first_line(err)})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch file (truncated or corrupt?): "
                              f"{_first_line(err)}") from err


FP16_MAX = torch.finfo(torch.float16).max


def half_where_safe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(state, kept)``: floating tensors as fp16 on the CPU, except those with a finite value beyond fp16's range
    (65504), kept as fp32 so they are not turned into inf; ``kept`` names them. Integer tensors are kept as they are.
    """
    out: dict[str, torch.Tensor] = {}
    kept: list[str] = []
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point():
            finite = v.float().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)  # inf/NaN stay what they are either way
            if v.numel() and finite.abs().amax().item() > FP16_MAX:
                kept.append(k)
                v = v.float()
            else:
                v = v.half()
        out[k] = v.contiguous()
    return out, kept


def non_finite_entries(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of floating tensors in ``state`` holding NaN or Inf, each with how many of its values do."""
    bad = []
    for k, v in state.items():
        if v.is_floating_point() and (n := int((~torch.isfinite(v)).sum())):
            bad.append(f"{k} ({n} of {v.numel()})")
    return bad


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A model state dict from a ``.safetensors`` file, a torch state dict, or one of our training checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        # Imported here: the library (mixers, FeatureExtractor on a module) must not need the [train] extra.
        from safetensors import SafetensorError
        from safetensors.torch import load_file as _load_safetensors

        try:
            return _load_safetensors(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a valid safetensors file (truncated or corrupt?): {err}") from err
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # a checkpoint written by our trainer
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__})")
    # DDP / torch.compile prefixes
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_weights_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "weights") -> None:
    """Strict ``load_state_dict`` whose error names the file and the first mismatching keys."""
    own = model.state_dict()
    # BatchNorm fills in a missing num_batches_tracked itself (older checkpoints lack it).
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    # A float parameter filled from int8 or bool values would be cast without a word (fp16 into fp32 is fine).
    dtypes = [f"{k}: file {state_dict[k].dtype} vs model {own[k].dtype}" for k in own
              if k in state_dict and own[k].is_floating_point() and not state_dict[k].is_floating_point()]
    if dtypes:
        raise CheckpointError(f"{source} holds non-floating values for floating weights of {type(model).__name__} "
                              f"({len(dtypes)} tensors, e.g. {dtypes[:2]}): a quantised or corrupt file? Give float "
                              "weights (float32, float16 or bfloat16)")
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:2]})")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts) +
                              ". Is it a checkpoint of another model or number of classes?")
    model.load_state_dict(state_dict, strict=True)


# --------------------------------------------------------------------------- writes a signal may stop
class CacheBuildInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT arrived while a cache was being built: the build stopped and its temporary file was removed.

    A ``KeyboardInterrupt`` (no ``except Exception`` swallows it); ``signum`` gives the exit code, 128 + signum.
    """

    def __init__(self, signum: int, path: str | os.PathLike, what: str = "building the attention cache") -> None:
        super().__init__(signum, str(path))
        self.signum = signum
        self.message = (f"stopped by {signal.Signals(signum).name} while {what} {path}; "
                        "nothing was written (the partial file was removed). Run the same command again to build it")

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def signals_stop_the_build(path: str | os.PathLike, what: str = "building the attention cache"):
    """SIGTERM, SIGHUP, SIGUSR1 (a scheduler's stop, by default an instant death that left an orphan ``.tmp``) and
    Ctrl-C raise ``CacheBuildInterrupted`` (saying it stopped while ``what`` ``path``), so the temporary file is
    removed on the way out; handlers are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        received.append(signum)
        raise CacheBuildInterrupted(signum, path, what)

    previous = {sig: signal.signal(sig, stop) for sig in (*STOP_SIGNALS, signal.SIGINT)}
    try:
        yield
    except CacheBuildInterrupted:
        raise
    except BaseException as err:
        if received:  # the signal also ended a DataLoader worker, whose error came first: report the signal
            raise CacheBuildInterrupted(received[0], path, what) from err
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
