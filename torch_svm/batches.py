r"""Where a training run's minibatches come from, and accuracy over a whole split.

:func:`torch_svm.train.train` runs one loop over either kind of data; this module is the
seam between them. :func:`batch_source` returns

* :class:`MemoryBatches` for a :class:`~torch_svm.data.Dataset` (digits, CIFAR-10, anything
  held as tensors): the train split moves to the device once, indices are drawn there, and
  each minibatch is gathered into buffers allocated once (``index_select(..., out=)``);
* :class:`MappedBatches` for an :class:`~torch_svm.arrays.ArrayDataset` (a file, possibly
  larger than memory): indices are drawn on the CPU, and each minibatch is read from the
  memory map by :meth:`~torch_svm.arrays.ArrayDataset.batch`, centred, cast and moved to the
  device; no copy of X is ever made.

Both answer ``batch(idx) -> (X_b: (B, D), y_b: (B,))`` for indices from
:func:`batch_indices`, and ``check(W)``, the once-per-run check of the data against W.
:func:`accuracy` counts correct predictions over a split (or, in a process group, over this
process's share of it, the counts then summed over processes): in one piece for tensors,
streamed in chunks (:meth:`~torch_svm.arrays.ArrayDataset.features`) for a file.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

from torch_svm.arrays import SPLITS, ArrayDataset
from torch_svm.data import Dataset
from torch_svm.distributed import all_reduce_sum, current_world
from torch_svm.losses import validate_svm_inputs
from torch_svm.utils import progress as progress_bar

__all__ = ["MemoryBatches", "MappedBatches", "batch_source", "batch_indices", "accuracy",
           "SAMPLINGS"]

#: How minibatch indices are drawn (:func:`batch_indices`).
SAMPLINGS = ("replacement", "epoch")


class MemoryBatches:
    """Minibatches of a Dataset's train split, held on ``device``, gathered into buffers of
    ``rows`` rows (a shorter batch fills their first rows: no allocation per step)."""

    def __init__(self, data: Dataset, device: torch.device, rows: int) -> None:
        self.data = data.to(device)
        self.X, self.y = self.data.X_train, self.data.y_train    # (N, D), (N,)
        self.index_device = device
        self._Xb = self.X.new_empty(rows, self.X.shape[1])       # (rows, D): reused
        self._yb = self.y.new_empty(rows)                        # (rows,)

    @property
    def num_examples(self) -> int:
        return self.X.shape[0]

    def check(self, W: Tensor) -> None:
        """Every train row against W (shapes, dtype, device, labels), once per run."""
        self.y = validate_svm_inputs(W, self.X, self.y)

    def batch(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        """``X[idx], y[idx]`` in the reused buffers."""
        b = idx.shape[0]
        Xb, yb = self._Xb[:b], self._yb[:b]
        return torch.index_select(self.X, 0, idx, out=Xb), torch.index_select(self.y, 0, idx, out=yb)


class MappedBatches:
    """Minibatches of an ArrayDataset's train split, read from the memory map per step."""

    def __init__(self, data: ArrayDataset, device: torch.device) -> None:
        self.data, self.device = data, device
        self.index_device = torch.device("cpu")                  # the gather reads them there

    @property
    def num_examples(self) -> int:
        return self.data.num_examples("train")

    def check(self, W: Tensor) -> None:
        """W against one batch (shape, dtype, device) and the file's classes (the load pass
        checked every label)."""
        if self.data.num_classes > W.shape[1]:
            raise ValueError(f"W must have a column per class of {self.data.name} "
                             f"({self.data.num_classes}), got W {tuple(W.shape)}")
        validate_svm_inputs(W, *self.batch(torch.zeros(1, dtype=torch.int64)))

    def batch(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        return self.data.batch("train", idx, device=self.device)


def batch_source(data: Union[Dataset, ArrayDataset], device: torch.device, rows: int
                 ) -> Union[MemoryBatches, MappedBatches]:
    """The batch source for ``data``: at most ``rows`` rows per batch (buffers in memory)."""
    if isinstance(data, ArrayDataset):
        return MappedBatches(data, device)
    if isinstance(data, Dataset):
        return MemoryBatches(data, device, rows)
    raise TypeError(f"data must be a torch_svm Dataset or ArrayDataset, got {type(data).__name__}")


def batch_indices(n: int, batch_size: int, iters: int, *, sampling: str = "replacement",
                  generator: Optional[torch.Generator] = None,
                  device: Optional[torch.device] = None) -> Iterator[Tensor]:
    """Yield ``iters`` index tensors into ``range(n)``, drawn on ``device``.

    ``"replacement"``: each batch is ``batch_size`` independent uniform draws (the assignment's
    ``np.random.choice(num_train, batch_size)``). ``"epoch"``: a fresh permutation per epoch cut
    into batches, so every example is used exactly once per epoch; the last batch of an epoch
    is smaller when ``batch_size`` does not divide ``n`` (and ``batch_size`` is capped at ``n``).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if sampling == "replacement":
        for _ in range(iters):
            yield torch.randint(n, (batch_size,), generator=generator, device=device)
        return
    done = 0
    while done < iters:
        perm = torch.randperm(n, generator=generator, device=device)
        for start in range(0, n, batch_size):
            if done == iters:
                return
            yield perm[start:start + batch_size]
            done += 1


@torch.no_grad()
def accuracy(model, data: Union[Dataset, ArrayDataset], split: str, *, progress: bool = False) -> float:
    """The fraction of ``split``'s rows that ``model`` (a :class:`~torch_svm.model.LinearSVM`,
    untyped here: model.py imports this module) predicts right, computed on W's device; NaN
    for an empty split.

    In a process group (:mod:`torch_svm.distributed`) each process counts its share of the
    rows and the counts are summed, so every process returns the whole split's accuracy.
    ``progress``: a progress bar over the rows streamed from a data file's map.
    """
    world, device = current_world(), model.W.device
    counts = torch.zeros(2, dtype=torch.int64, device=device)   # correct, seen
    if isinstance(data, ArrayDataset):
        lo, hi = world.share(data.num_examples(split))
        with progress_bar(total=hi - lo, desc=f"{split} accuracy", unit="row", enabled=progress) as bar:
            for X, y in data.features(split, start=lo, stop=hi, device=device):
                counts[0] += (model.predict(X) == y).sum()
                bar.update(len(y))
        counts[1] = hi - lo
    else:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r:.100}")
        X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
        lo, hi = world.share(len(y))
        counts[0] = (model.predict(X[lo:hi].to(device)) == y[lo:hi].to(device)).sum()
        counts[1] = hi - lo
    correct, seen = all_reduce_sum(counts).tolist()
    return correct / seen if seen else math.nan
