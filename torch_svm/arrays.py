r"""Your own data: a ``.npz`` file or a folder of ``.npy`` files, memory-mapped, never copied whole.

Layout. ``X: (N, D)`` real floating or integer numbers and ``y: (N,)`` integer labels in
``[0, C)``; optionally ``X_val``/``y_val`` and ``X_test``/``y_test`` (else those splits are
drawn from the rows of X with ``seed``), and ``class_names`` (a 1-D array of strings). In a
``.npz`` they are members (``np.savez(path, X=X, y=y)``); in a folder, files ``X.npy``,
``y.npy``, ... Keras' names are understood too (``x_train``, ``y_train``, ``x_test``,
``y_test``: :data:`~torch_svm.datafile.ALIASES`); any other name is refused, so that a typo
(``X_valid``) is not silently ignored. Images ``X: (N, H, W)`` or ``(N, H, W, C)`` (C order)
are read as rows ``(N, H W C)`` of the same map, and the weight templates drawn as images.
The files are mapped read-only by :mod:`torch_svm.npymap` (uncompressed members only; no
pickles) and checked by :mod:`torch_svm.datafile` in one streaming pass (layout, finite X,
labels in ``[0, C)``), which also takes the train rows' mean :math:`\mu` and standard
deviation :math:`\sigma` in float64.

Preprocessing per batch. :meth:`ArrayDataset.batch` gathers rows from the map (in sorted
order, for locality in the file, then back in the order asked), subtracts :math:`\mu`
(``center``) and divides by :math:`\sigma` (``standardize``) in float64, casts to ``dtype``
and appends the bias column: a row is :math:`[(x - \mu) / \sigma, 1]`, with centring alone
the same as :func:`torch_svm.data.load_dataset` holds in memory, so ``W: (D + 1, C)`` means
the same either way. :meth:`ArrayDataset.features` streams a whole split (or a range of it)
the same way (for accuracy), and :meth:`ArrayDataset.to_dataset` turns a small file into the
in-memory :class:`~torch_svm.data.Dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from torch_svm.data import DataConfig, Dataset
from torch_svm.datafile import SplitRows, open_data_file, scan
from torch_svm.errors import DataFormatError
from torch_svm.npymap import MappedArray, release
from torch_svm.utils import check_choice, check_int, check_memory, clip

__all__ = ["ArrayConfig", "ArrayDataset", "load_arrays", "SPLITS"]

#: Splits of an :class:`ArrayDataset`; dev is drawn from train, as in ``load_dataset``.
SPLITS = ("train", "val", "test", "dev")
_SPLIT_FRACTION = 0.1   # of X's rows, drawn for val and for test when the file holds neither
_NUM_DEV = 500          # dev rows when num_dev is None (capped at the train rows)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_GATHER_ROWS = 32       # batch rows read between two releases of their pages (see batch)


@dataclass
class ArrayConfig:
    """How to split and preprocess a data file; checked when made.

    Fields named as in :class:`~torch_svm.data.DataConfig` mean the same, so one set of
    ``--num-*`` / ``--dtype`` / ``--seed`` flags fills either.
    """

    num_train: Optional[int] = None   # rows of X to train on; None: every row not drawn for val/test
    num_val: Optional[int] = None     # file has X_val: its first num_val rows (None: all); else drawn from X (None: 10 %)
    num_test: Optional[int] = None    # the same with X_test
    num_dev: Optional[int] = None     # drawn without replacement from train; None: min(500, train)
    center: bool = True               # subtract the train mean (float64, one streaming pass)
    standardize: bool = True          # divide by the train standard deviation (constant columns: by 1), as the CLI
    bias: bool = True                 # append a column of ones per batch (the bias trick), last column
    num_classes: Optional[int] = None # C; None: the largest label + 1
    class_names: Optional[Tuple[str, ...]] = None  # None: the file's class_names, else "0".."C-1"
    dtype: str = "float32"            # of the batches: "float32" or "float64"
    seed: int = 0                     # the val / test / dev draws (a private generator, seed % 2**32)
    chunk_bytes: int = 16 * 2**20     # streaming chunk, counted as rows * D * 8 bytes (float64 work)
    check_finite: bool = True         # scan X for NaN / inf (one read of the file; off: trust it)

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "num_test", "num_dev", "num_classes"):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(name, getattr(self, name),
                                              min={"num_train": 1, "num_classes": 2}.get(name, 0)))
        for name in ("center", "standardize", "bias", "check_finite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got "
                                 f"{clip(repr(getattr(self, name)), 100)}")
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not all(
                    isinstance(c, str) for c in self.class_names):
                raise ValueError(f"class_names must be None or a sequence of strings, "
                                 f"got {clip(repr(self.class_names), 100)}")
            self.class_names = tuple(self.class_names)
            if self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ValueError(f"class_names must name num_classes={self.num_classes} classes, "
                                 f"got {len(self.class_names)}")
        check_choice("dtype", self.dtype, tuple(_DTYPES))
        self.seed = check_int("seed", self.seed, min=0, max=2**63 - 1)
        self.chunk_bytes = check_int("chunk_bytes", self.chunk_bytes, min=1)


# ----------------------------------------------------------------------------- dataset


@dataclass(eq=False)
class ArrayDataset:
    """Memory-mapped splits of a data file, turned into model inputs one batch at a time.

    Nothing is preprocessed in place: the splits stay raw views of the file, and each
    :meth:`batch` / :meth:`features` chunk is gathered, centred with ``mean``, scaled by
    ``scale`` and given its bias column as it is read. ``mean: (D,)`` float64 is the train
    rows' mean :math:`\\mu` (None when ``config.center`` is False), ``scale: (D,)`` float64
    their standard deviation :math:`\\sigma` (None unless ``config.standardize``); inputs are
    rows :math:`[(x - \\mu) / \\sigma, 1]` of width :attr:`num_features` ``= D + bias`` in
    ``config.dtype``. ``mean_square_norm`` is :math:`\\mathbb{E}\\,\\|\\tilde x\\|^2` over
    those train inputs (bias column included), from the same moments: the scale of the data
    that :func:`torch_svm.train.default_hypers` sizes the learning rate by. Made by
    :func:`load_arrays`.
    """

    name: str                                   # the path as given
    class_names: Tuple[str, ...]
    mean: Optional[Tensor] = field(repr=False)  # (D,) float64, or None
    scale: Optional[Tensor] = field(repr=False) # (D,) float64 > 0, or None
    mean_square_norm: float                     # E ||x~||^2 of a train input row
    bias: bool
    config: ArrayConfig                         # with every count filled in
    sample_shape: Optional[Tuple[int, ...]]     # X's (d1, d2, ...) when it was (N, d1, d2, ...)
    _splits: Dict[str, SplitRows] = field(repr=False)

    @property
    def num_features(self) -> int:
        """Columns of a batch, bias column included: D + bias."""
        return self._splits["train"].X.array.shape[1] + self.bias

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """``(H, W, C)`` when X held images, ``(N, H, W)`` or ``(N, H, W, C)`` with C 1 or 3
        (so a template reshapes to a picture, as in :class:`~torch_svm.data.Dataset`); else
        ``(1, D, 1)``: a row is no image."""
        s = self.sample_shape
        if s is not None and (len(s) == 2 or (len(s) == 3 and s[2] in (1, 3))):
            return (s[0], s[1], s[2] if len(s) == 3 else 1)
        return (1, self.num_features - self.bias, 1)

    @property
    def mean_image(self) -> Tensor:
        """The mean subtracted from every row, ``(D,)`` float64: ``mean``, or zeros."""
        D = self.num_features - self.bias
        return torch.zeros(D, dtype=torch.float64) if self.mean is None else self.mean

    def num_examples(self, split: str) -> int:
        """Rows in ``split`` (one of :data:`SPLITS`)."""
        return self._split(split).size

    def batch(self, split: str, idx: Union[Tensor, np.ndarray], *,
              device: Union[str, torch.device, None] = None) -> Tuple[Tensor, Tensor]:
        """Rows ``idx`` of ``split`` as ``(X: (B, D + bias) config.dtype, y: (B,) int64)``.

        ``idx: (B,)`` positions in the split, in any order, repeats allowed (a tensor on any
        device, or an array); row ``i`` of the result is position ``idx[i]``. The rows are read
        from the map in file order, so a batch touches each page once, 32 rows at a time with
        their pages released after each group: a fault may map a whole page-cache folio (up
        to a few MiB on recent kernels), so this bounds the pages a batch holds at once.
        """
        s = self._split(split)
        pos = idx.detach().cpu().numpy() if isinstance(idx, Tensor) else np.asarray(idx)
        if pos.ndim != 1 or (pos.size and pos.dtype.kind not in "iu"):
            raise ValueError(f"idx must be a 1-D array of integer positions, got "
                             f"shape {pos.shape} dtype {pos.dtype}")
        if pos.size and (pos.min() < 0 or pos.max() >= s.size):
            raise IndexError(f"idx must be in [0, {s.size}) for split {split!r}, got values "
                             f"from {pos.min()} to {pos.max()}")
        rows = s.file_rows(pos.astype(np.int64, copy=False))     # (B,) rows of the file
        order = np.argsort(rows, kind="stable")
        raw = np.empty((len(rows), s.X.array.shape[1]), dtype=s.X.array.dtype)  # (B, D)
        for start in range(0, len(rows), _GATHER_ROWS):           # file order in, asked order out
            group = order[start:start + _GATHER_ROWS]
            raw[group] = s.X.array[rows[group]]
            release(s.X, int(rows[group[0]]), int(rows[group[-1]]) + 1)
        return self._inputs(raw, device), self._labels(s.y.array[rows], device)

    def features(self, split: str, *, start: int = 0, stop: Optional[int] = None,
                 chunk_rows: Optional[int] = None, device: Union[str, torch.device, None] = None
                 ) -> Iterator[Tuple[Tensor, Tensor]]:
        """Positions ``[start, stop)`` of ``split`` (default: all of it) in order, as ``(X, y)``
        chunks of ``chunk_rows`` rows.

        Each chunk is as :meth:`batch` makes it; its pages are released once the next is asked
        for, so iterating holds about one chunk in memory. ``chunk_rows`` defaults to
        ``config.chunk_bytes`` worth of float64 rows.
        """
        s = self._split(split)
        stop = s.size if stop is None else check_int("stop", stop, min=0, max=s.size)
        start = check_int("start", start, min=0, max=stop)
        step = self._chunk_rows() if chunk_rows is None else check_int("chunk_rows", chunk_rows, min=1)
        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            if s.rows is None:
                r0, r1 = lo, hi
                raw, labels = s.X.array[r0:r1], s.y.array[r0:r1]  # views of the map
            else:
                rows = s.rows[lo:hi]
                r0, r1 = int(rows[0]), int(rows[-1]) + 1
                raw, labels = s.X.array[rows], s.y.array[rows]
            yield self._inputs(raw, device), self._labels(labels, device)
            release(s.X, r0, r1)

    def to_dataset(self) -> Dataset:
        """All splits in memory as the :class:`~torch_svm.data.Dataset` ``load_dataset`` returns.

        The same inputs as :meth:`batch` (``mean_image`` is ``mean``, or zeros when not
        centred; ``image_shape`` is ``(1, D, 1)``), and ``config`` a DataConfig whose fields,
        passed back as ``ArrayConfig(**asdict(config))``, cut the same splits again (a
        DataConfig has no ``standardize``: pass it again). Raises
        ValueError (:func:`torch_svm.utils.check_memory`) when the splits would need more than
        half of this machine's memory: train from the map with :meth:`batch` instead.
        """
        check_memory(f"ArrayDataset.to_dataset of {self.name} (use ArrayDataset.batch instead)",
                     sum(self.num_examples(s) for s in SPLITS) * self.num_features
                     * np.dtype(self.config.dtype).itemsize)
        splits = {}
        for split in SPLITS:
            X = torch.empty(self.num_examples(split), self.num_features,
                            dtype=_DTYPES[self.config.dtype])
            y = torch.empty(self.num_examples(split), dtype=torch.int64)
            at = 0
            for Xc, yc in self.features(split):
                X[at:at + len(yc)], y[at:at + len(yc)] = Xc, yc
                at += len(yc)
            splits[f"X_{split}"], splits[f"y_{split}"] = X, y
        c = self.config
        return Dataset(name=self.name, **splits, class_names=self.class_names,
                       image_shape=self.image_shape,
                       mean_image=self.mean_image.to(splits["X_train"].dtype),
                       bias=self.bias,
                       config=DataConfig(num_train=c.num_train, num_val=c.num_val,
                                         num_test=c.num_test, num_dev=c.num_dev, bias=c.bias,
                                         dtype=c.dtype, seed=c.seed))

    # -------------------------------------------------------------------------- private

    def _split(self, split: str) -> SplitRows:
        if split not in self._splits:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self._splits[split]

    def _chunk_rows(self) -> int:
        # a chunk's rows of X, or of its scores (rows, C) when C is the wider
        return max(1, self.config.chunk_bytes // (8 * max(1, self.num_features - self.bias,
                                                           self.num_classes)))

    def _inputs(self, raw: np.ndarray, device) -> Tensor:
        """``raw: (B, D)`` file rows -> ``(B, D + bias)`` centred and scaled in float64, cast once."""
        D = raw.shape[1]
        out = np.empty((len(raw), D + self.bias), dtype=self.config.dtype)
        if self.scale is not None:
            body = raw.astype(np.float64)                           # (B, D)
            if self.mean is not None:
                body -= self.mean.numpy()
            out[:, :D] = np.divide(body, self.scale.numpy(), out=body)
        elif self.mean is None:
            out[:, :D] = raw
        else:
            np.subtract(raw, self.mean.numpy(), out=out[:, :D], dtype=np.float64,
                        casting="same_kind")
        if self.bias:
            out[:, D] = 1
        return torch.from_numpy(out).to(device)

    @staticmethod
    def _labels(y: np.ndarray, device) -> Tensor:
        return torch.from_numpy(np.array(y, dtype=np.int64)).to(device)


# ----------------------------------------------------------------------------- entry point


def load_arrays(path: Union[str, Path], config: Optional[ArrayConfig] = None, *,
                progress: bool = False) -> ArrayDataset:
    """Map the arrays of ``path`` (an ``.npz`` or a folder of ``.npy``), check them, split them.

    One streaming pass over each array checks it (and takes the train rows' mean and
    variance); nothing is copied whole. See the module docstring for the layout.

    Args:
        path: an ``.npz`` written by ``np.savez`` (not ``np.savez_compressed``), or a folder
            holding ``X.npy`` and ``y.npy`` (and optionally ``X_val.npy``, ...).
        config: splits, centring, bias, dtype, seed; default :class:`ArrayConfig()`.
        progress: a progress bar over the rows of the streaming pass (on stderr).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: a file or array is not what it should be (names it, and the row).
        ValueError: the config asks for more rows than the file has.
    """
    config = ArrayConfig() if config is None else config
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, got {type(config).__name__}")
    path = Path(path)
    arrays, class_names, sample_shape = open_data_file(path)
    splits, config = _make_splits(arrays, config)
    moments, num_classes = scan(arrays, splits, chunk_bytes=config.chunk_bytes,
                                check_finite=config.check_finite, num_classes=config.num_classes,
                                progress=progress)
    names = config.class_names or class_names or tuple(str(c) for c in range(num_classes))
    if len(names) != num_classes:
        raise DataFormatError(f"{path}: class_names must name the {num_classes} classes, got "
                              f"{len(names)}: {list(names)}")
    return ArrayDataset(name=str(path), class_names=tuple(names), **_preprocessing(moments, config),
                        bias=config.bias, config=replace(config, num_classes=num_classes),
                        sample_shape=sample_shape, _splits=splits)


def _make_splits(arrays: Dict[str, MappedArray], config: ArrayConfig
                 ) -> Tuple[Dict[str, SplitRows], ArrayConfig]:
    """Train / val / test / dev rows; val and test drawn from X when the file lacks them."""
    X, y = arrays["X"], arrays["y"]
    n = len(X.array)
    rng = np.random.default_rng(config.seed % 2**32)
    splits: Dict[str, SplitRows] = {}
    drawn: Dict[str, int] = {}
    for split in ("val", "test"):
        asked = getattr(config, f"num_{split}")
        if f"X_{split}" in arrays:
            have = len(arrays[f"X_{split}"].array)
            if asked is not None and asked > have:
                raise ValueError(f"num_{split} must be <= {have} (the rows of "
                                 f"{arrays[f'X_{split}'].where}), got {asked}")
            size = have if asked is None else asked
            splits[split] = SplitRows(arrays[f"X_{split}"], arrays[f"y_{split}"], None, size)
        else:
            drawn[split] = int(n * _SPLIT_FRACTION) if asked is None else asked
    left = n - sum(drawn.values())
    if left < 1 or (config.num_train or 0) > left:
        raise ValueError(f"num_train + num_val + num_test drawn from X must be <= its {n} rows "
                         f"with num_train >= 1, got num_train={config.num_train}, "
                         + ", ".join(f"num_{k}={v}" for k, v in drawn.items()))
    n_train = left if config.num_train is None else config.num_train
    if any(drawn.values()):
        perm = rng.permutation(n)
        at = 0
        for split, size in list(drawn.items()) + [("train", n_train)]:
            splits[split] = SplitRows(X, y, np.sort(perm[at:at + size]), size)
            at += size
    else:  # nothing drawn: train is the first n_train rows, a plain view
        splits.update({split: SplitRows(X, y, np.empty(0, np.int64), 0) for split in drawn})
        splits["train"] = SplitRows(X, y, None, n_train)
    n_dev = min(_NUM_DEV, n_train) if config.num_dev is None else config.num_dev
    if n_dev > n_train:
        raise ValueError(f"num_dev must be <= num_train ({n_train}), got {n_dev}")
    train = splits["train"]
    splits["dev"] = SplitRows(X, y, train.file_rows(np.sort(rng.choice(n_train, n_dev, replace=False))),
                           n_dev)
    sizes = {f"num_{s}": splits[s].size for s in SPLITS}
    return {s: splits[s] for s in SPLITS}, replace(config, **sizes)


def _preprocessing(moments: Tuple[np.ndarray, np.ndarray], config: ArrayConfig) -> Dict[str, object]:
    """``mean``, ``scale`` and ``mean_square_norm`` of an ArrayDataset from the train moments.

    A constant column (standard deviation within rounding of 0) keeps scale 1, as
    ``sklearn.preprocessing.StandardScaler`` does. The mean square norm of an input row
    :math:`\\tilde x = [(x - c) / s, 1]` is :math:`\\sum_j (\\sigma_j^2 + (\\mu_j - c_j)^2) / s_j^2`
    (+ 1 for the bias column), with :math:`c = \\mu` or 0 and :math:`s = \\sigma` or 1.
    """
    mean, variance = moments
    std = np.sqrt(variance)
    constant = std <= 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    scale = np.where(constant, 1.0, std) if config.standardize else None
    power = variance + (0.0 if config.center else np.square(mean))      # E (x_j - c_j)^2
    if scale is not None:
        power = power / np.square(scale)
    return {"mean": torch.from_numpy(mean) if config.center else None,
            "scale": torch.from_numpy(scale) if scale is not None else None,
            "mean_square_norm": float(power.sum()) + config.bias}
