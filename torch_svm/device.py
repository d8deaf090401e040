"""Where and in what precision torch-svm computes: devices, dtypes and CPU threads.

:func:`resolve_device` turns ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a checked
``torch.device``; :data:`DTYPES` is the one table of dtype names (every command's ``--dtype``,
every config's ``dtype``), :func:`resolve_dtype` reads it. :func:`auto_threads` sizes the CPU
thread count to the work of one op, and :func:`using_threads` applies it for a block.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Union

import torch

from torch_svm.errors import ArgumentError, check_int, clip

__all__ = ["resolve_device", "DTYPES"]

#: Names accepted wherever a dtype is given as a string (CLI flags, configs).
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"`` (or None) -> ``cuda`` when available, else ``cpu``; anything else is checked.

    Raises ArgumentError naming the value when the device string is malformed or when CUDA is
    asked for on a machine without it.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ArgumentError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {clip(repr(device), 100)}") from exc
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise ArgumentError(f"device {device!r} does not exist: there is one CPU device, 'cpu'")
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ArgumentError(f"device {device!r} was requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ArgumentError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ArgumentError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {clip(repr(device), 100)}")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """Map ``"float32"`` etc. (or a torch floating dtype) to a torch dtype; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise ArgumentError(f"dtype must be one of {sorted(DTYPES)}, got {clip(repr(dtype), 100)}")


#: Multiply-adds per thread below which a CPU op runs on one thread (:func:`auto_threads`):
#: a GEMM of about ten milliseconds on one core. Below it a second thread gains little, and
#: on a busy machine a thread that waits for a core stalls every op it takes part in. At
#: linear-probe shape (200 x 513 x 1,000 per step, ``benchmarks/bench_scale.py --compare``)
#: two threads train 1.35x faster on an idle 2-core machine and 2.6x slower while another
#: process spins on a core (12k against 33k examples/s): one thread is the choice that
#: holds up. A full pass over the data (evaluation) still uses every core.
THREAD_GRAIN = 2**28


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
    run on one thread: on two, the CIFAR-10 recipe trains about 1.3x faster on an idle 2-core
    machine and about 4x slower while another process holds a core, because OpenMP threads
    spin at a barrier for the one that waits to be scheduled (``benchmarks/bench_train.py``).
    A full pass over CIFAR-10 (49,000 x 3073 x 10) uses every core.
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
