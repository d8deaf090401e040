r"""One data set type for every source: :class:`Dataset`.

A data set is four splits (:data:`~torch_svm.data.config.SPLITS`) of raw rows, a
:class:`~torch_svm.data.preprocessing.Preprocessing` record that turns a raw row into a model
input, the class names and the shape of one raw sample. Each split is rows of a raw pool
(:class:`Rows`): an array in memory (the embedded digits, CIFAR-10, arrays you pass) or a
file (your ``.npz`` or folder of ``.npy``), read by copying the rows asked for. Nothing is
preprocessed in place; inputs are made as they are asked for:

* :meth:`Dataset.batch` gathers rows by position (a minibatch);
* :meth:`Dataset.chunks` streams a range of a split in chunks (accuracy over a split);
* :meth:`Dataset.tensors` gives a whole split as tensors;
* :meth:`Dataset.batches` is what a training loop draws minibatches from.

Where the rows live decides how, and only here: a split held in memory is preprocessed once
per device, the first time it is asked for, and kept (minibatches are then gathered on the
device into buffers allocated once); a split stored in a file is read from it at every batch
and chunk, by copying just those rows (:mod:`torch_svm.data.npyfile`), so a file larger than
memory is never held whole. Either way the inputs are the same numbers.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from torch_svm.data.config import SPLITS, DataConfig
from torch_svm.data.npyfile import Array, MemoryArray
from torch_svm.data.preprocessing import Preprocessing, exact_in
from torch_svm.device import DTYPES
from torch_svm.errors import (ArgumentError, ArgumentTypeError, DataFormatError, check_int,
                              check_memory, clip)

__all__: list = []    # its names are re-exported by the package

Device = Union[str, torch.device, None]


@dataclass(frozen=True, eq=False)
class Rows:
    """The rows of one split: positions ``rows`` of a raw pool, or (``rows`` None) its first
    ``size``. ``X`` is in memory or in a file (read by copying rows); ``y`` is in memory."""

    X: Array                        # (M, D) raw rows
    y: MemoryArray                  # (M,) integer labels
    rows: Optional[np.ndarray]      # (size,) int64 positions in the pool, or None
    size: int

    @property
    def stored(self) -> bool:
        """Whether X is read from a file at every use (else it is in memory)."""
        return not self.X.in_memory

    def pool_rows(self, pos: np.ndarray) -> np.ndarray:
        """Rows of the pool at positions ``pos`` of the split."""
        return self.rows[pos] if self.rows is not None else pos

    def read(self, pos: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(raw (B, D), labels (B,))`` at positions ``pos``, in that order."""
        rows = self.pool_rows(pos)
        return self.X.take(rows), self.y.array[rows]

    def read_range(self, lo: int, hi: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(raw, labels)`` of positions ``[lo, hi)`` (a view where it can be)."""
        if self.rows is None:
            return self.X.read_rows(lo, hi), self.y.array[lo:hi]
        rows = self.rows[lo:hi]
        return self.X.take(rows), self.y.array[rows]


@dataclass(eq=False)
class Dataset:
    """Splits of raw rows and the preprocessing that makes them inputs (module docstring).

    Inputs are ``X: (B, D + bias)`` in ``config.dtype`` and labels ``y: (B,)`` int64 in
    ``[0, num_classes)``. Made by :func:`torch_svm.data.load_dataset` and
    :func:`torch_svm.data.from_arrays`.
    """

    name: str                                   # "digits", "cifar10", the file's path as given, "arrays"
    source: Optional[str]                       # what load_dataset loads again (a file: its absolute
                                                # path); None for arrays
    class_names: Tuple[str, ...]
    preprocessing: Preprocessing
    config: DataConfig                          # every field filled in
    sample_shape: Tuple[int, ...]               # one raw row's shape: (H, W, C) images, (D,) features
    mean_square_norm: float                     # E ||x~||^2 of a train input (the lr default's scale)
    splits: Dict[str, Rows] = field(repr=False)
    _cache: Dict[Tuple[str, str], Tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ what it holds

    @property
    def num_features(self) -> int:
        """Columns of an input, bias column included: D + bias."""
        return self.splits["train"].X.shape[1] + self.preprocessing.bias

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def bias(self) -> bool:
        return self.preprocessing.bias

    @property
    def dtype(self) -> torch.dtype:
        """The inputs' dtype (``config.dtype``)."""
        return getattr(torch, self.config.dtype)

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """``(H, W, C)`` when a raw row is an image (``(H, W)`` or ``(H, W, C)`` with C 1 or 3),
        so that a class template ``W[:D, c]`` reshapes to a picture; else ``(1, D, 1)``."""
        s = self.sample_shape
        if len(s) == 2 or (len(s) == 3 and s[2] in (1, 3)):
            return (s[0], s[1], s[2] if len(s) == 3 else 1)
        return (1, self.num_features - self.bias, 1)

    def num_examples(self, split: str) -> int:
        """Rows in ``split`` (one of :data:`~torch_svm.data.config.SPLITS`)."""
        return self._rows(split).size

    # ------------------------------------------------------------------ inputs

    def batch(self, split: str, idx: Union[Tensor, np.ndarray], *,
              device: Device = None) -> Tuple[Tensor, Tensor]:
        """Positions ``idx: (B,)`` of ``split`` (any order, repeats allowed; a tensor on any
        device or an array) as ``(X (B, D + bias), y (B,))`` on ``device``."""
        s = self._rows(split)
        pos = idx.detach().cpu().numpy() if isinstance(idx, Tensor) else np.asarray(idx)
        if pos.ndim != 1 or (pos.size and pos.dtype.kind not in "iu"):
            raise ArgumentError(f"idx must be a 1-D array of integer positions, got shape "
                                f"{pos.shape} dtype {pos.dtype}")
        if pos.size and (pos.min() < 0 or pos.max() >= s.size):
            raise ArgumentError(f"idx must be in [0, {s.size}) for split {split!r}, got values "
                                f"from {pos.min()} to {pos.max()}")
        pos = pos.astype(np.int64, copy=False)
        if not s.stored:
            X, y = self.tensors(split, device=device)
            index = torch.from_numpy(pos).to(X.device)
            return X.index_select(0, index), y.index_select(0, index)
        raw, labels = s.read(pos)
        return self._inputs(raw, labels, device, split, pos)

    def chunks(self, split: str, *, start: int = 0, stop: Optional[int] = None,
               chunk_rows: Optional[int] = None, device: Device = None
               ) -> Iterator[Tuple[Tensor, Tensor]]:
        """Positions ``[start, stop)`` of ``split`` (default: all of it), in order, as ``(X, y)``
        chunks of at most ``chunk_rows`` rows (default: one chunk for a split in memory,
        ``config.chunk_bytes`` worth of float64 rows or scores for one stored in a file)."""
        s = self._rows(split)
        stop = s.size if stop is None else check_int("stop", stop, min=0, max=s.size)
        start = check_int("start", start, min=0, max=stop)
        if chunk_rows is not None:
            chunk_rows = check_int("chunk_rows", chunk_rows, min=1)
        if not s.stored:
            X, y = self.tensors(split, device=device)
            step = chunk_rows or max(1, stop - start)
            for lo in range(start, stop, step):
                yield X[lo:min(lo + step, stop)], y[lo:min(lo + step, stop)]
            return
        step = chunk_rows or self._chunk_rows()
        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            raw, labels = s.read_range(lo, hi)
            yield self._inputs(raw, labels, device, split, np.arange(lo, hi))

    def tensors(self, split: str, *, device: Device = None) -> Tuple[Tensor, Tensor]:
        """The whole of ``split`` as ``(X (N, D + bias), y (N,))`` on ``device``.

        A split in memory is made once per device and kept; a split in a file is read in chunks
        into new tensors each call, refused (ArgumentError) when they would need more than
        half of this machine's memory: stream it with :meth:`chunks` instead.
        """
        s = self._rows(split)
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (split, str(device))
        if key in self._cache:
            return self._cache[key]
        check_memory(f"split {split!r} of {clip(self.name, 200)} as tensors (stream it with "
                     f"Dataset.chunks instead)",
                     s.size * (self.num_features * self.dtype.itemsize + 8))
        X = torch.empty(s.size, self.num_features, dtype=self.dtype)
        y = torch.empty(s.size, dtype=torch.int64)
        step = self._chunk_rows()
        for lo in range(0, s.size, step):
            hi = min(lo + step, s.size)
            raw, labels = s.read_range(lo, hi)
            X[lo:hi], y[lo:hi] = self._inputs(raw, labels, None, split, np.arange(lo, hi))
        X, y = X.to(device), y.to(device)
        if not s.stored:
            self._cache[key] = (X, y)
        return X, y

    def astype(self, dtype: str) -> "Dataset":
        """The same data set with inputs in ``dtype`` (a name of
        :data:`torch_svm.device.DTYPES`); the raw rows are shared, nothing is copied."""
        return replace(self, config=replace(self.config, dtype=dtype), _cache={})

    def batches(self, split: str, device: torch.device, rows: int) -> "Batches":
        """What a training loop draws minibatches of ``split`` from, on ``device``, at most
        ``rows`` rows each (:class:`Batches`)."""
        return Batches(self, split, torch.device(device), rows)

    def check_model(self, W: Tensor) -> None:
        """ArgumentError unless ``W`` is ``(num_features, num_classes)`` and fits the inputs
        (dtype, device; :func:`torch_svm.losses.validate_svm_inputs` on one row)."""
        from torch_svm.losses import validate_svm_inputs

        if not isinstance(W, Tensor):
            raise ArgumentTypeError(f"W must be a torch.Tensor, got {type(W).__name__}")
        if tuple(W.shape) != (self.num_features, self.num_classes):
            raise ArgumentError(
                f"W must have shape ({self.num_features}, {self.num_classes}) for "
                f"{clip(self.name, 200)}: {self.num_features - self.bias} features"
                f"{' + the bias column' if self.bias else ''} by {self.num_classes} classes, "
                f"got W {tuple(W.shape)}")
        validate_svm_inputs(W, *self.batch("train", np.zeros(1, np.int64), device=W.device))

    def trains_in_memory(self, split: str) -> bool:
        """Whether :meth:`batches` gathers ``split`` from memory: always for a split in memory;
        for one in a file, ``config.in_memory``, or (None) when its inputs fit in a quarter of
        this machine's memory. Read once (about 0.5 s for 160,000 x 513 float32) they are
        gathered per batch with ``index_select``; read per batch from the file, each batch
        costs a read per row and the preprocessing again (2x slower at linear-probe shape)."""
        s = self._rows(split)
        if not s.stored or self.config.in_memory is not None:
            return not s.stored or bool(self.config.in_memory)
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return False
        return s.size * (self.num_features * self.dtype.itemsize + 8) <= total // 4

    #: What :meth:`fingerprint` holds, in order.
    FINGERPRINT = ("train rows", "val rows", "test rows", "features", "classes", "dtype",
                   "content", "labels")

    def fingerprint(self) -> np.ndarray:
        """``(8,)`` int64 that two processes compare to know they hold the same data (names in
        :data:`FINGERPRINT`): the split sizes, D, C, the dtype, and hashes of the first and
        last rows of train and of the labels."""
        s = self.splits["train"]
        rows = np.unique([0, max(s.size - 1, 0)])[:s.size].astype(np.int64)
        raw, labels = s.read(rows)
        content = hashlib.sha256(np.ascontiguousarray(raw).tobytes()).digest()
        every = s.y.array if s.rows is None else s.y.array[s.rows]
        tags = hashlib.sha256(np.ascontiguousarray(every[:s.size]).tobytes()).digest()
        values = [self.num_examples(x) for x in ("train", "val", "test")] + [
            self.num_features, self.num_classes, sorted(DTYPES).index(self.config.dtype),
            int.from_bytes(content[:8], "little", signed=True),
            int.from_bytes(tags[:8], "little", signed=True)]
        return np.array(values, dtype=np.int64)

    # ------------------------------------------------------------------ private

    def _rows(self, split: str) -> Rows:
        if split not in self.splits:
            raise ArgumentError(f"split must be one of {SPLITS}, got {clip(repr(split), 100)}")
        return self.splits[split]

    def _chunk_rows(self) -> int:
        # a chunk's rows of X as float64, or of its scores (rows, C) when C is the wider
        D = self.num_features - self.bias
        return max(1, self.config.chunk_bytes // (8 * max(1, D, self.num_classes)))

    def _inputs(self, raw: np.ndarray, labels: np.ndarray, device: Device, split: str,
                pos: np.ndarray) -> Tuple[Tensor, Tensor]:
        """Inputs of raw rows at positions ``pos`` of ``split``. Rows read from a file again
        are checked again: NaN written into it after the load pass is named, not trained on."""
        s = self.splits[split]
        if s.stored and self.config.check_finite and raw.dtype.kind == "f" \
                and not np.isfinite(raw).all():
            bad = int(np.flatnonzero(~np.isfinite(raw).all(axis=1))[0])
            raise DataFormatError(f"{s.X.where}: row {int(s.pool_rows(pos[bad:bad + 1])[0])} holds "
                                  f"NaN or inf now (it was finite when loaded): the file changed "
                                  f"while in use")
        native = self.config.dtype in ("float32", "float64")      # numpy has no bfloat16
        X = torch.from_numpy(self.preprocessing.apply(raw, np.dtype(
            self.config.dtype if native else "float64")))
        y = torch.from_numpy(np.array(labels, dtype=np.int64))
        return X.to(device=device, dtype=self.dtype), y.to(device)


#: Inputs of at least this many bytes are gathered raw where they can be (:class:`Batches`):
#: past a last-level cache a minibatch's rows come from main memory, where a quarter of the
#: bytes is the faster gather; inputs that fit in cache gather faster without the two extra
#: passes (the embedded digits train 6 % slower raw).
RAW_GATHER_BYTES = 64 * 2**20


class Batches:
    """Minibatches of one split for a training loop.

    ``batch(idx)`` returns ``(X_b (B, D + bias), y_b (B,))`` for indices drawn on
    ``index_device``. A split in memory is moved to the device once and each batch gathered
    there into buffers of ``rows`` rows allocated once (a shorter batch fills their first rows;
    a caller that keeps a batch must copy it); a split in a file is read from it per batch.

    Raw rows that the inputs' dtype holds exactly (:func:`~torch_svm.data.preprocessing.exact_in`:
    CIFAR-10's uint8 pixels), of a split whose inputs would take at least
    :data:`RAW_GATHER_BYTES`, are moved to the device as they are and each batch is gathered
    raw and preprocessed there (:meth:`Preprocessing.apply_to`): the same numbers as
    :meth:`Dataset.tensors`, from a quarter of the memory, and a quarter of the bytes to
    gather from main memory, which bounds a one-thread gather of random rows. On one CPU
    thread a CIFAR-10 minibatch takes about 0.2 ms this way against 0.3 ms gathered as
    float32 inputs (``benchmarks/bench_train.py``'s step breakdown).
    """

    def __init__(self, data: Dataset, split: str, device: torch.device, rows: int) -> None:
        self.data, self.split, self.device = data, split, device
        self.num_examples = data.num_examples(split)
        s = data.splits[split]
        self._stored = s.stored and not data.trains_in_memory(split)
        self.index_device = torch.device("cpu") if self._stored else device
        self._raw = None
        if self._stored:
            return
        if self.num_examples * data.num_features * data.dtype.itemsize >= RAW_GATHER_BYTES:
            self._raw = self._raw_rows(s, data.dtype, device)
        if self._raw is None:
            self._X, self._y = data.tensors(split, device=device)       # (N, D), (N,)
            self._Xb = self._X.new_empty(rows, self._X.shape[1])         # (rows, D): reused
        else:
            self._X, self._pool_rows, self._y = self._raw
            self._rawb = self._X.new_empty(rows, self._X.shape[1])       # (rows, D) raw: reused
            self._Xb = torch.ones(rows, data.num_features, dtype=data.dtype, device=device)
            self._mean, self._scale = data.preprocessing.on(data.dtype, device)
        self._yb = self._y.new_empty(rows)

    @staticmethod
    def _raw_rows(s: Rows, dtype: torch.dtype, device: torch.device):
        """``(raw pool (M, D), pool rows of the split (N,) or None, labels (N,))`` on
        ``device`` when the split's raw rows are in memory and exact in ``dtype``; else None."""
        raw, native = getattr(s.X, "array", None), {torch.float32: np.float32,
                                                     torch.float64: np.float64}.get(dtype)
        if raw is None or native is None or not exact_in(raw.dtype, native):
            return None
        labels = s.y.array[:s.size] if s.rows is None else s.y.array[s.rows]
        rows = None if s.rows is None else torch.from_numpy(s.rows.astype(np.int64)).to(device)
        pool = np.ascontiguousarray(raw if s.rows is not None else raw[:s.size])
        with warnings.catch_warnings():     # a read-only array (a user's): it is only read
            warnings.filterwarnings("ignore", message=".*not writable", category=UserWarning)
            pool = torch.from_numpy(pool)
        return (pool.to(device), rows,
                torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device))

    def batch(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        if self._stored:
            return self.data.batch(self.split, idx, device=self.device)
        b = idx.shape[0]
        y = torch.index_select(self._y, 0, idx, out=self._yb[:b])
        if self._raw is None:
            return torch.index_select(self._X, 0, idx, out=self._Xb[:b]), y
        at = idx if self._pool_rows is None else self._pool_rows.index_select(0, idx)
        raw = torch.index_select(self._X, 0, at, out=self._rawb[:b])
        return self.data.preprocessing.apply_to(self._Xb[:b], raw, self._mean, self._scale), y
