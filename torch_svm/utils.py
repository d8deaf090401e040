"""Small shared helpers: seeding, device and dtype resolution, CPU thread counts, argument
checks, clipped values for messages, progress bars, atomic writes of files and folders."""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import reprlib
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Optional, Union

import numpy as np
import torch

__all__ = ["set_seed", "resolve_device", "resolve_dtype", "progress", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "jsonable", "DTYPES", "clip", "check_int",
           "check_real", "check_choice", "check_memory", "clipped_repr", "describe", "open_regular",
           "atomic_directory", "cpu_cores", "auto_threads", "using_threads", "THREAD_GRAIN"]

#: Names accepted wherever a dtype is given as a string (CLI flags, configs).
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (with "...") so an echoed value never floods a message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_int(name: str, value: Any, *, min: Optional[int] = None,
              max: Optional[int] = None) -> int:
    """``value`` as an int in ``[min, max]``; ValueError naming ``name`` and echoing the value.

    bool is refused; numpy integers are accepted.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = int(value)
        ok = (min is None or value >= min) and (max is None or value <= max)
    if not ok:
        bounds = " and ".join(b for b in (f">= {min}" if min is not None else "",
                                          f"<= {max}" if max is not None else "") if b)
        raise ValueError(f"{name} must be an integer{' ' + bounds if bounds else ''}, "
                         f"got {clip(repr(value), 100)}")
    return value


def check_real(name: str, value: Any, *, min: Optional[float] = None,
               max: Optional[float] = None, min_open: bool = False,
               max_open: bool = False) -> float:
    """``value`` as a finite float in the range (``min_open``/``max_open`` exclude the ends);
    ValueError naming ``name`` and echoing the value. bool is refused."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = (math.isfinite(value)
              and (min is None or (value > min if min_open else value >= min))
              and (max is None or (value < max if max_open else value <= max)))
    if not ok:
        bounds = " and ".join(b for b in (
            f"{'>' if min_open else '>='} {min:g}" if min is not None else "",
            f"{'<' if max_open else '<='} {max:g}" if max is not None else "") if b)
        raise ValueError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, "
                         f"got {clip(repr(value), 100)}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; ValueError naming ``name`` otherwise."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {clip(repr(value), 100)}")
    return value


def check_memory(what: str, nbytes: int) -> None:
    """ValueError naming ``what`` when ``nbytes`` exceed half of this machine's memory, before
    anything that large is allocated."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no cheap way to know
        return
    if nbytes > total // 2:
        raise ValueError(f"{what} would need about {nbytes / 2**30:.3g} GiB, more than half of "
                         f"this machine's {total / 2**30:.3g} GiB; use smaller sizes")


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and every CUDA device's) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"`` (or None) -> ``cuda`` when available, else ``cpu``; anything else is checked.

    Raises ValueError naming the value when the device string is malformed or when CUDA is
    asked for on a machine without it.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {clip(repr(device), 100)}") from exc
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise ValueError(f"device {device!r} does not exist: there is one CPU device, 'cpu'")
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {clip(repr(device), 100)}")
    return dev


#: Multiply-adds per thread below which a CPU op runs on one thread (:func:`auto_threads`).
#: About 1 ms of GEMM on one core: smaller ops finish before a second thread pays off, and a
#: thread that waits for a core (a busy machine) stalls every op it takes part in.
THREAD_GRAIN = 2**25


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def auto_threads(work: int) -> int:
    """CPU threads for ops of about ``work`` multiply-adds each (an (N, D) @ (D, C) GEMM is
    ``N * D * C``): one below :data:`THREAD_GRAIN` per thread, never more than the cores.

    Small per-step GEMMs (an SGD minibatch: 200 x 3073 x 10 for CIFAR-10; every digits op)
    run on one thread: split over two they gain little on an idle machine and lose up to 10x
    when another process holds a core, because OpenMP threads spin at a barrier for the one
    that waits to be scheduled. A full pass over CIFAR-10 (49,000 x 3073 x 10) uses every core.
    """
    work = check_int("work", work, min=0)
    return max(1, min(cpu_cores(), work // THREAD_GRAIN))


@contextlib.contextmanager
def using_threads(threads: int) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` for the ``with`` block, then the count from before.

    ``with using_threads(auto_threads(n * d * c)): ...`` is how library code sizes its CPU
    threads to its work. The count is process-wide: do not nest it in threads that compute
    concurrently.
    """
    threads = check_int("threads", threads, min=1)
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def resolve_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """Map ``"float32"`` etc. (or a torch floating dtype) to a torch dtype; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {clip(repr(dtype), 100)}")


def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
             desc: str = "", enabled: bool = True, **kwargs: Any):
    """A tqdm progress bar on stderr; silent when ``enabled`` is False or stderr is not a TTY
    unless TORCH_SVM_PROGRESS=1 forces it on."""
    force = os.environ.get("TORCH_SVM_PROGRESS") == "1"
    disable = not enabled or (not force and not sys.stderr.isatty())
    if disable:   # tqdm.auto warns in a Jupyter kernel without ipywidgets, even for no bar
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False,
                dynamic_ncols=True, file=sys.stderr, **kwargs)


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """Make floats JSON-safe (inf/NaN become strings) and numpy/torch scalars plain."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def atomic_write_json(path: Union[str, Path], obj: Any) -> Path:
    """Strict JSON (through :func:`jsonable`), written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


class _ClippedRepr(reprlib.Repr):
    """reprlib, which bounds containers and str, made to bound bytes too (cut before their
    repr is made) and to name huge ints by size (repr of one over 4300 digits raises)."""

    def repr_bytes(self, x: bytes, level: int) -> str:
        return self.repr_str(x, level)

    repr_bytearray = repr_bytes

    def repr_int(self, x: int, level: int) -> str:
        return f"<int of {x.bit_length()} bits>" if x.bit_length() > 256 else repr(x)


def clipped_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` in at most ``limit`` characters, made without ever building the full
    repr: for messages that echo values from untrusted files (a 30 MB string, a list of a
    million names, an int of a million digits)."""
    r = _ClippedRepr()
    r.maxstring = r.maxother = limit
    r.maxlevel = 3
    return clip(r.repr(value), limit)


def describe(value: Any) -> str:
    """A value from a file, for an error message: its type, length and clipped repr."""
    size = f" of length {len(value)}" if isinstance(value, (list, tuple, dict, str, bytes)) else ""
    return f"{type(value).__name__}{size}: {clipped_repr(value)}"


_FILE_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def open_regular(path: Union[str, Path], *, expected: str = "a regular file") -> IO[bytes]:
    """``path`` opened for binary reading if it is a regular file, else DataFormatError naming
    what it is (FileNotFoundError when missing). Checked twice: by name first (a socket cannot
    be opened at all), then on what was opened, with O_NONBLOCK so that a FIFO swapped in
    meanwhile cannot make the open wait."""
    from torch_svm.errors import DataFormatError

    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return os.fdopen(fd, "rb")
        os.close(fd)
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
    raise DataFormatError(f"{clip(str(path), 200)}: is {kind}, not a regular file; expected {expected}")


@contextlib.contextmanager
def atomic_directory(path: Union[str, Path]) -> Iterator[Path]:
    """Write the folder ``path`` so that readers, and runs killed halfway, never see it
    half-written.

    Yields a fresh empty folder ``.<name>.tmp-<pid>-XXXXXXXX`` next to ``path``; write the new
    content there. When the block ends normally it replaces ``path`` whole: the old folder (if
    any) is renamed to ``.<name>.trash-<pid>-XXXXXXXX``, the new one renamed to ``path``, then
    the trash is deleted. When the block raises (or is interrupted), the new folder is deleted
    and ``path`` is left as it was.

    What a reader of ``path`` can rely on: it is the old complete folder or the new complete
    one, never a mix of the two and never a file this run was still writing. Between the two
    renames (microseconds) ``path`` is absent; a run killed exactly there leaves the old folder
    under its trash name, and the next ``atomic_directory(path)`` renames it back first. Files
    of the old folder that the new run does not write are gone afterwards: the folder is
    replaced whole, not merged (copy them into the new folder to keep them).

    On entry, what killed runs left next to ``path`` is cleaned up: ``.<name>.tmp-<pid>-*`` and
    ``.<name>.trash-<pid>-*`` folders whose process is no longer running (names of exactly this
    pattern; a reused pid only delays the cleanup). Not meant for two live runs writing the
    same ``path`` at once (the last to finish wins). This guards against kill -9, not against
    power loss: nothing is fsynced.

    Example::

        with atomic_directory("runs/cifar") as tmp:
            torch.save(model.state_dict(), tmp / "model.pt")
            atomic_write_json(tmp / "metrics.json", metrics)
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise NotADirectoryError(f"atomic_directory: {str(path)!r} exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_after_killed_runs(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)          # mkdtemp makes 0700; give the usual mode
        yield tmp
        trash = None
        if path.exists():
            trash = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.trash-{os.getpid()}-")
            os.rename(path, trash)             # onto the empty folder just made: a name we own
        try:
            os.rename(tmp, path)
        except BaseException:
            if trash is not None:
                os.rename(trash, path)         # the old folder back in place
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _clean_after_killed_runs(path: Path) -> None:
    """Put back an old folder that a killed run left under its trash name (``path`` missing),
    then delete the temporary and trash folders of runs that are no longer running."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(tmp|trash)-(\d+)-[^/]+\Z")
    for entry in sorted(path.parent.iterdir()):
        match = pattern.match(entry.name)
        if (match is None or entry.is_symlink() or not entry.is_dir()
                or _running(int(match.group(2)))):
            continue
        if match.group(1) == "trash" and not os.path.lexists(path):
            os.rename(entry, path)             # the old complete folder, back in place
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except PermissionError:                    # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # gone, or not a pid at all
        return False
    return True
