"""Small shared helpers: seeding, device and dtype resolution, CPU thread counts, argument
checks, progress bars, atomic writes."""
from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np
import torch

__all__ = ["set_seed", "resolve_device", "resolve_dtype", "progress", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "jsonable", "DTYPES", "clip", "check_int",
           "check_real", "check_choice", "check_memory", "cpu_cores", "auto_threads",
           "using_threads", "THREAD_GRAIN"]

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


@contextmanager
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
    from tqdm.auto import tqdm

    force = os.environ.get("TORCH_SVM_PROGRESS") == "1"
    disable = not enabled or (not force and not sys.stderr.isatty())
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
