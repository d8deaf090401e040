r"""Data-parallel SGD over several processes with ``torch.distributed``.

``torchrun --standalone --nproc-per-node K -m torch_svm train ...`` starts K processes and
tells each, through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), who it is and where to meet. :func:`process_group` joins
that group for a ``with`` block (gloo on a CPU, NCCL on CUDA, each process on GPU
``LOCAL_RANK``); a process started without torchrun is a world of one and joins nothing.
:func:`current_world` tells library code its rank and the number of processes.

The split of the work (:func:`torch_svm.train.train`). Every process draws the same global
minibatch indices (same seed, same generator), takes its contiguous share
``idx[lo:hi]`` (:meth:`World.share`) and computes the loss :math:`L_r` and gradient
:math:`g_r` of the mean over its :math:`B_r` rows, regularizer included. The whole batch's
are the weighted sums

.. math::

    L = \sum_r \frac{B_r}{B} L_r, \qquad g = \sum_r \frac{B_r}{B} g_r,

since :math:`\sum_r B_r / B = 1` carries the regularizer once and the data terms add up to
the mean over all :math:`B` rows. :func:`all_reduce_sum` adds them up in one collective per
step, so every process takes the same SGD step and K processes follow the trajectory of one
process with the same seed and batch, up to the order of float additions.

Failures. Every wait on the other processes is bounded by ``timeout`` (``--dist-timeout``):
a rank that never starts, crashes or is stopped makes the others exit with a
:class:`DistributedError` naming it (each rank posts the step it reached to the group's store,
so the one behind is known), not hang for gloo's 30 minutes. Before training the ranks agree
on their data (:func:`check_same_data`): ranks given different files stop with one line.

Why an explicit ``all_reduce`` and not ``DistributedDataParallel``: with ``grad="hand"`` the
loop sets ``W.grad`` itself and never calls ``backward()``, so DDP's gradient hooks would not
fire; the model is one parameter, so DDP's bucketing has nothing to overlap; and the
weights :math:`B_r / B` (unequal shares when K does not divide the batch) are explicit here,
where DDP averages uniformly.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, List, Tuple, Union

import numpy as np

import torch
import torch.distributed as dist
from torch import Tensor

from torch_svm.errors import TorchSVMError, UsageError, check_real, clip
from torch_svm.device import resolve_device

__all__ = ["process_group"]

#: Seconds a process waits for the others (to join, and at each collective) by default.
DIST_TIMEOUT = 300.0


class DistributedError(TorchSVMError, RuntimeError):
    """The processes of a torchrun group could not work together: one never joined, stopped
    answering or crashed (named where the group can tell), or they hold different data."""


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0                   # 0 .. size - 1; rank 0 writes, prints and shows progress
    size: int = 1                   # the number of processes (torchrun's WORLD_SIZE)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> Tuple[int, int]:
        """This rank's contiguous share ``[lo, hi)`` of ``range(n)``: sizes differ by at most
        one, the first ``n % size`` ranks taking the larger (a rank's share may be empty)."""
        base, extra = divmod(n, self.size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (self.rank < extra)


def current_world() -> World:
    """The process group this process has joined, or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def all_reduce_sum(t: Tensor) -> Tensor:
    """``t`` replaced in place by its sum over every process (nothing to do alone); a
    DistributedError naming the rank that fell behind when the others stop answering."""
    if current_world().size > 1:
        try:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        except (RuntimeError, dist.DistError) as exc:
            raise DistributedError(_collective_failure(exc)) from None
    return t


def report_progress(step: int) -> None:
    """Post this rank's step to the group's store (the roll call a failure message reads)."""
    world = current_world()
    if world.size > 1 and _STORE:
        try:
            _STORE[0].set(f"torch_svm/step/{world.rank}", str(step))
        except (RuntimeError, dist.DistError):
            pass                    # the store is rank 0's: if it is gone, the collective says so


def check_same_data(fingerprint: np.ndarray, fields: Tuple[str, ...]) -> None:
    """DistributedError unless every rank's ``fingerprint`` (int64 values named ``fields``)
    equals rank 0's: ranks that train on different data would mix them without a word."""
    world = current_world()
    if world.size == 1:
        return
    mine = torch.from_numpy(np.asarray(fingerprint, dtype=np.int64))
    gathered: List[Tensor] = [torch.empty_like(mine) for _ in range(world.size)]
    try:
        dist.all_gather(gathered, mine)
    except (RuntimeError, dist.DistError) as exc:
        raise DistributedError(_collective_failure(exc)) from None
    for rank, theirs in enumerate(gathered):
        differ = [f for f, a, b in zip(fields, gathered[0].tolist(), theirs.tolist()) if a != b]
        if differ:
            raise DistributedError(
                f"rank {rank}'s data differ from rank 0's ({', '.join(differ)}): every process "
                f"must be given the same data (--data) and split flags")


_STORE: List["dist.Store"] = []     # the group's store while a group is joined


@contextlib.contextmanager
def process_group(device: Union[str, torch.device] = "auto",
                  timeout: float = DIST_TIMEOUT) -> Iterator[World]:
    """Join the process group torchrun describes in the environment, for the ``with`` block.

    Without ``WORLD_SIZE`` in the environment (no torchrun), or with ``WORLD_SIZE=1``, nothing
    is joined and the world is one process. Otherwise the backend is NCCL when ``device``
    resolves to CUDA (each process then computes on GPU ``LOCAL_RANK``, made the current
    device) and gloo on a CPU; the group is destroyed on the way out.

    ``timeout`` (seconds) bounds every wait on the other processes. Raises UsageError when the
    environment is half set (a rank without a master address) or asks for more GPUs than the
    machine has, and DistributedError when the others do not all join within ``timeout``.
    """
    timeout = check_real("timeout", timeout, min=0, min_open=True, max=1e7)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        yield World()
        return
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UsageError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: start the "
                         f"processes with torchrun --nproc-per-node {size} -m torch_svm ...")
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK={local} needs GPU {local}, but this machine has "
                             f"{torch.cuda.device_count()}; use --nproc-per-node "
                             f"{torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
    rank = int(os.environ["RANK"])
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout))
    except (RuntimeError, ValueError, dist.DistError) as exc:
        raise DistributedError(_join_failure(exc, rank, size, timeout)) from None
    _STORE[:] = [dist.distributed_c10d._get_default_store()]
    report_progress(0)
    try:
        yield current_world()
    finally:
        _STORE.clear()
        dist.destroy_process_group()


def _join_failure(exc: BaseException, rank: int, size: int, timeout: float) -> str:
    """Why the group could not be joined, naming the ranks that did not come."""
    text = " ".join(str(exc).split())
    joined = re.search(r"(\d+)/(\d+) clients joined", text)
    if joined and int(joined.group(1)) == 1:
        missing = ", ".join(str(r) for r in range(size) if r != rank)
        return (f"rank {rank} of {size}: no other process joined within {timeout:g} s "
                f"(--dist-timeout): rank(s) {missing} never started or cannot reach "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}")
    if joined:
        return (f"rank {rank} of {size}: only {joined.group(1)} of {size} processes joined within "
                f"{timeout:g} s (--dist-timeout); start all {size} (torchrun --nproc-per-node)")
    return (f"rank {rank} of {size}: could not join the group within {timeout:g} s "
            f"(--dist-timeout): {clip(text, 300)}")


def _collective_failure(exc: BaseException) -> str:
    """Why a collective failed: the rank whose posted step is behind (stopped or crashed)."""
    world = current_world()
    steps = {}
    if _STORE:
        for r in range(world.size):
            try:
                _STORE[0].wait([f"torch_svm/step/{r}"], timedelta(seconds=1))
                steps[r] = int(_STORE[0].get(f"torch_svm/step/{r}"))
            except (RuntimeError, ValueError, dist.DistError):
                steps[r] = None
    cause = clip(" ".join(str(exc).split()), 200)
    if steps and all(v is not None for v in steps.values()) and len(set(steps.values())) > 1:
        low = min(steps.values())
        behind = [r for r, v in steps.items() if v == low]
        return (f"rank {world.rank} of {world.size}: rank(s) {', '.join(map(str, behind))} "
                f"stopped answering at step {low} (the others reached {max(steps.values())}): "
                f"stopped, crashed or too slow for --dist-timeout ({cause})")
    gone = [r for r, v in steps.items() if v is None]
    if gone:
        return (f"rank {world.rank} of {world.size}: rank(s) {', '.join(map(str, gone))} cannot "
                f"be reached (crashed, or rank 0's store is gone): {cause}")
    return (f"rank {world.rank} of {world.size}: another process stopped answering (stopped, "
            f"crashed or too slow for --dist-timeout): {cause}")
