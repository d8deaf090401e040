"""Where and in what precision torch-svm computes: devices, dtypes and CPU threads.

:func:`resolve_device` turns ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a checked
``torch.device``; :data:`DTYPES` is the one table of dtype names (every command's ``--dtype``,
every config's ``dtype``), :func:`resolve_dtype` reads it. :func:`auto_threads` sizes the CPU
thread count to the work of one op, :class:`CoreWatch` a training loop's to the idle cores,
and :func:`using_threads` applies a count for a block.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, List, Optional, Tuple, Union

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
#: holds up where nothing watches the cores (a training loop does: :class:`CoreWatch`).
#: A full pass over the data (evaluation) still uses every core.
THREAD_GRAIN = 2**28


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(cpu_set())


def cpu_set() -> List[int]:
    """Those cores' numbers (all of ``os.cpu_count()`` where the OS has no affinity mask)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def auto_threads(work: int) -> int:
    """CPU threads for ops of about ``work`` multiply-adds each (an (N, D) @ (D, C) GEMM is
    ``N * D * C``): one below :data:`THREAD_GRAIN` per thread, never more than the cores.

    Small GEMMs (verify's 500 x 3073 x 10; every digits op) run on one thread: on two, they
    run many times slower while another process holds a core, because OpenMP threads spin at
    a barrier for the one that waits to be scheduled (``benchmarks/bench_train.py``). A
    training loop, which can watch for that, uses :class:`CoreWatch` instead for steps of
    :data:`SPLIT_WORK` or more. A full pass over CIFAR-10 (49,000 x 3073 x 10) uses every core.
    """
    work = check_int("work", work, min=0)
    return max(1, min(cpu_cores(), work // THREAD_GRAIN))


#: A training step of at least this many multiply-adds (N D C) runs on every idle core
#: (:class:`CoreWatch`): on an idle 2-core machine two threads train CIFAR-10's recipe
#: (200 x 3073 x 10 = 6.1 M per step) about 1.45x faster than one and a linear probe's
#: (200 x 513 x 1,000) about 1.4x; below it (the digits' 0.13 M) a second thread is slower.
SPLIT_WORK = 2**22

#: Cores that other processes keep busy, on average over a watch's interval, from which the
#: loop gives one of its threads back (:meth:`CoreWatch.threads`); it takes one again once
#: a whole core but :data:`IDLE_SLACK` is idle beyond its threads (a hysteresis: no flapping
#: around a neighbour that keeps half a core busy).
BUSY_CORE = 0.5
IDLE_SLACK = 0.2


class CoreWatch:
    """The CPU threads for a loop of small parallel ops, shrunk when other processes take cores.

    A loop whose ops are too short to amortise a thread that waits for a core (a training
    step: tens of microseconds per parallel region) runs on every core that is idle when it
    starts, and gives threads back as soon as other processes keep cores busy: OpenMP threads
    spin at each op's barrier for the one that waits to be scheduled, so two threads next to a
    process that spins on one of two cores train CIFAR-10's recipe 4-6x slower than one
    (``benchmarks/bench_train.py``'s busy rows). What other processes use is read from the
    kernel (Linux ``/proc``), at no cost to the loop:

    * at the start, the threads that are running or waiting to run (``/proc/loadavg``), less
      this process's own, read a few times (the fewest counts: a persistent neighbour is
      always there, a passing one is not);
    * then, over each interval of at least ``interval`` seconds that :meth:`threads` is called
      after, the CPU time of the cores this process may use (``/proc/stat``) less its own
      (``/proc/self/stat``), both in the kernel's ticks.

    The count goes down as soon as others take a core, and up again once they leave (a
    neighbour that used a core for one interval costs one interval on fewer threads; one
    that spins costs one interval of the slow, spinning kind). Stolen time (another virtual
    machine on the host's core) counts as others'. Where ``/proc`` is missing (not Linux) the
    count stays where it started: every core.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.cpus = cpu_set()
        self.cores = len(self.cpus)
        busy = _others_running()
        self.start = max(1, self.cores - (busy or 0))
        self._mark = _ticks(self.cpus)

    def threads(self, current: int) -> int:
        """The thread count to run on from now: ``current``, one fewer for each core that
        other processes kept busy (:data:`BUSY_CORE` or more of one, on average since the last
        reading at least ``interval`` ago), or one more when a core beyond ``current`` was
        idle (:data:`IDLE_SLACK`). Sets torch's count when it changes."""
        if self._mark is None or time.perf_counter() - self._mark[0] < self.interval:
            return current
        now = _ticks(self.cpus)
        if now is None:
            return current
        (t0, all0, own0), (t1, all1, own1) = self._mark, now
        self._mark = now
        others = max(0.0, (all1 - all0) - (own1 - own0)) / (_HZ * (t1 - t0))
        idle = self.cores - others                  # cores this process could use
        if current > 1 and idle <= current - BUSY_CORE:
            threads = max(1, int(idle + BUSY_CORE))
        elif current < self.cores and idle >= current + 1 - IDLE_SLACK:
            threads = current + 1
        else:
            return current
        torch.set_num_threads(threads)
        return threads


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _others_running(reads: int = 5) -> Optional[int]:
    """Threads of other processes running or runnable now (the fewest of ``reads`` readings),
    or None without ``/proc``."""
    counts = []
    try:
        for _ in range(reads):
            with open("/proc/loadavg") as fh:
                running = int(fh.read().split()[3].split("/")[0])
            own = 0
            for task in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{task}/stat") as fh:
                        own += fh.read().rsplit(")", 1)[1].split()[0] == "R"
                except OSError:     # a thread that ended
                    pass
            counts.append(max(0, running - own))
    except (OSError, ValueError, IndexError):
        return None
    return min(counts)


def _ticks(cpus: List[int]) -> Optional[Tuple[float, int, int]]:
    """``(seconds, busy ticks of cpus, this process's ticks)`` now, or None without ``/proc``."""
    try:
        with open("/proc/stat") as fh:
            lines = fh.read().splitlines()
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])                 # utime + stime, every thread
        wanted, busy = {f"cpu{c}" for c in cpus}, 0
        for line in lines:
            name, *values = line.split()
            if name in wanted:      # user nice system idle iowait irq softirq steal ...
                v = [int(x) for x in values[:8]]
                busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    except (OSError, ValueError, IndexError):
        return None
    return time.perf_counter(), busy, own


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
