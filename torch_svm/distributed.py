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

Why an explicit ``all_reduce`` and not ``DistributedDataParallel``: with ``grad="hand"`` the
loop sets ``W.grad`` itself and never calls ``backward()``, so DDP's gradient hooks would not
fire; the model is one parameter, so DDP's bucketing has nothing to overlap; and the
weights :math:`B_r / B` (unequal shares when K does not divide the batch) are explicit here,
where DDP averages uniformly.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from torch_svm.errors import UsageError
from torch_svm.device import resolve_device

__all__ = ["process_group"]


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
    """``t`` replaced in place by its sum over every process (nothing to do alone)."""
    if current_world().size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@contextlib.contextmanager
def process_group(device: Union[str, torch.device] = "auto") -> Iterator[World]:
    """Join the process group torchrun describes in the environment, for the ``with`` block.

    Without ``WORLD_SIZE`` in the environment (no torchrun), or with ``WORLD_SIZE=1``, nothing
    is joined and the world is one process. Otherwise the backend is NCCL when ``device``
    resolves to CUDA (each process then computes on GPU ``LOCAL_RANK``, made the current
    device) and gloo on a CPU; the group is destroyed on the way out.

    Raises UsageError when the environment is half set (a rank without a master address) or
    asks for more GPUs than the machine has.
    """
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
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield current_world()
    finally:
        dist.destroy_process_group()
