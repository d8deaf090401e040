r"""Making a :class:`~torch_svm.data.dataset.Dataset`: one path for every source.

A source gives raw *pools*, arrays of rows with their labels: the embedded digits (1,797
8x8 images, pre-shuffled), CIFAR-10 (read safely, :mod:`torch_svm.data.cifar10`), a data file
(``.npz`` or a folder of ``.npy``, its layout checked, read in rows,
:mod:`torch_svm.data.datafile`) or arrays you pass (:func:`from_arrays`). Then, the same for
all of them (:func:`_build`):

1. **splits** (:func:`_cut`): a split with a pool of its own takes that pool's first rows
   (digits and CIFAR-10 give the assignment's train / val / test pools; a file its X_val and
   X_test); a split without one is drawn from X with the seed, and train is the rest; dev is
   ``num_dev`` rows drawn from train;
2. **one streaming pass** (:func:`_scan`) over the rows the splits use, ``chunk_bytes`` at a
   time: X finite, labels in ``[0, C)``, and the train rows' mean and variance in float64;
3. **the preprocessing record** from those moments
   (:meth:`~torch_svm.data.preprocessing.Preprocessing.from_moments`), or the one given (a
   checkpoint's, so evaluation centres and scales as training did).

Every error names the source (and the file, array and row where it applies).
"""
from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from torch_svm.data.cifar10 import (CIFAR10_ARCHIVE, CIFAR10_SHAPE, CIFAR10_URL,
                                    download_cifar10, locate_cifar10, read_cifar10)
from torch_svm.data.config import DATASETS, SPLIT_DEFAULTS, SPLITS, DataConfig
from torch_svm.data.datafile import open_data_file, read_class_names
from torch_svm.data.dataset import Dataset, Rows
from torch_svm.data.npyfile import Array, MemoryArray, StoredArray
from torch_svm.data.preprocessing import Preprocessing
from torch_svm.errors import (ArgumentError, ArgumentTypeError, DataFormatError,
                              MissingFileError, check_memory, clip)
from torch_svm.progress import progress as progress_bar

__all__: list = []    # its names are re-exported by the package

#: Labels at or above this are refused (C = the largest label + 1 sets the width of W).
MAX_CLASSES = 1 << 24
_DIGITS_SHAPE = (8, 8, 1)
_SPLIT_FRACTION = 0.1   # of X's rows, drawn for val and for test when the source has neither
_NUM_DEV = 500          # dev rows of your own data when num_dev is None (capped at the train rows)

Pools = Dict[str, Tuple[Array, MemoryArray]]   # split -> (X (M, D), y (M,))


def load_dataset(name: Union[str, Path] = "digits", data_dir: Union[str, Path, None] = None,
                 config: Optional[DataConfig] = None, *, download: bool = False,
                 progress: bool = False, preprocessing: Optional[Preprocessing] = None) -> Dataset:
    """Load ``name``, split and preprocess it (see the module docstring).

    Args:
        name: "digits" (embedded, needs nothing), "cifar10", or the path of your data: an
            ``.npz`` written by ``np.savez`` (uncompressed) or a folder of ``.npy`` files holding
            ``X (N, D)`` (or images ``(N, H, W[, C])``) and labels ``y (N,)`` in ``0..C-1``,
            optionally ``X_val``/``y_val``, ``X_test``/``y_test`` and ``class_names`` (Keras'
            ``x_train``/``y_train``/``x_test``/``y_test`` too). A file is read in rows as
            they are needed, never whole.
        data_dir: cifar10 only: the ``cifar-10-batches-py`` folder, its parent, the
            ``cifar-10-python.tar.gz`` archive, or a folder holding the archive.
        config: splits, preprocessing, dtype, seed; default :class:`DataConfig()`.
        download: cifar10 only: fetch the official archive into ``data_dir`` when no copy is
            found there (md5-checked).
        progress: a progress bar over the rows of a file's streaming pass.
        preprocessing: use this record (a checkpoint's) instead of the train rows' moments.

    Raises:
        ArgumentError / ArgumentTypeError: a bad argument or config value (named, echoed).
        MissingFileError: the file, or CIFAR-10's, does not exist (names the path and what was
            expected). DataFormatError: a file exists but is not what it should be.
    """
    config = _check_config(config)
    if isinstance(data_dir, DataConfig):
        raise ArgumentTypeError("data_dir must be a path (CIFAR-10's folder), got a DataConfig; "
                                "pass it as config=")
    if str(name) == "digits" or str(name) == "cifar10":
        name = str(name)
    if name != "cifar10" and (data_dir is not None or download):
        raise ArgumentError(f"data_dir and download only apply to cifar10 (--data cifar10), "
                            f"got data_dir={clip(repr(data_dir), 100)}, download={download!r} "
                            f"with {clip(str(name), 100)}")
    if name == "digits":
        images, labels, class_names = read_digits()
        X, y = images.reshape(len(images), -1), labels            # (1797, 64), a view
        counts = _counts(config, SPLIT_DEFAULTS["digits"])
        n_test = counts["num_test"]
        if counts["num_train"] + counts["num_val"] + n_test > len(X):
            raise ArgumentError(
                f"num_train + num_val + num_test must be <= {len(X)} for digits, got "
                f"{counts['num_train']} + {counts['num_val']} + {n_test} = "
                f"{counts['num_train'] + counts['num_val'] + n_test}")
        # the test split is the tail of the (pre-shuffled) file, train and val its head
        pools = _assignment_pools(X[:len(X) - n_test], y[:len(X) - n_test],
                                  X[len(X) - n_test:], y[len(X) - n_test:], counts, "digits")
        return _build("digits", "digits", pools, replace(config, **counts), class_names,
                      _DIGITS_SHAPE, standardize=False, preprocessing=preprocessing)
    if name == "cifar10":
        if data_dir is None:
            where = (f"the cifar-10-batches-py folder, its parent, or {CIFAR10_ARCHIVE}; get the "
                     f"'CIFAR-10 python version' from {CIFAR10_URL}, or let torch-svm fetch it")
            raise ArgumentError(f"cifar10 needs its folder, data_dir: {where} (download=True)")
        if download and locate_cifar10(data_dir, quiet=True) is None:
            download_cifar10(data_dir)
        X_train, y_train, X_test, y_test, class_names = read_cifar10(data_dir)
        counts = _counts(config, SPLIT_DEFAULTS["cifar10"])
        pools = _assignment_pools(X_train.reshape(len(X_train), -1), y_train,
                                  X_test.reshape(len(X_test), -1), y_test, counts, "cifar10")
        return _build("cifar10", "cifar10", pools, replace(config, **counts), class_names,
                      CIFAR10_SHAPE, standardize=False, preprocessing=preprocessing)
    path = Path(name)
    if not path.exists():
        raise MissingFileError(f"data {clip(str(name), 200)!r} is neither digits, cifar10 nor an "
                               f"existing .npz file or folder of .npy files")
    arrays, class_names, sample_shape = open_data_file(path)
    pools = {"train": (arrays["X"], arrays["y"])}
    pools.update({s: (arrays[f"X_{s}"], arrays[f"y_{s}"]) for s in ("val", "test")
                  if f"X_{s}" in arrays})
    return _build(str(name), str(path.resolve()), pools, config, class_names, sample_shape,
                  standardize=True, preprocessing=preprocessing, progress=progress)


def from_arrays(X: Any, y: Any, *, X_val: Any = None, y_val: Any = None, X_test: Any = None,
                y_test: Any = None, config: Optional[DataConfig] = None, name: str = "arrays",
                preprocessing: Optional[Preprocessing] = None) -> Dataset:
    """A data set of arrays in memory (numpy arrays, or anything ``np.asarray`` reads, torch
    tensors included): ``X (N, D)`` real numbers and ``y (N,)`` integer labels in ``0..C-1``,
    optionally val and test arrays; split and preprocessed as a data file would be (your own
    data: standardized by default). Used by the scikit-learn estimator and by verify.
    """
    config = _check_config(config)
    pools = {}
    for split, (Xs, ys) in {"train": (X, y), "val": (X_val, y_val), "test": (X_test, y_test)}.items():
        if (Xs is None) != (ys is None):
            raise ArgumentError(f"X_{split} and y_{split} go together, got only "
                                f"{'y' if Xs is None else 'X'}_{split}".replace("X_train", "X")
                                .replace("y_train", "y"))
        if Xs is None:
            continue
        xa = np.asarray(Xs.detach().cpu() if hasattr(Xs, "detach") else Xs)
        ya = np.asarray(ys.detach().cpu() if hasattr(ys, "detach") else ys)
        label = "X" if split == "train" else f"X_{split}"
        if xa.ndim != 2 or xa.dtype.kind not in "fiub":
            raise ArgumentError(f"{label} must be a 2-D array (N, D) of real numbers, got "
                                f"shape {xa.shape} dtype {xa.dtype}")
        if ya.shape != (len(xa),) or ya.dtype.kind not in "iu":
            raise ArgumentError(f"{label.replace('X', 'y')} must be 1-D integer labels, one per "
                                f"row of {label} ({len(xa)},), got shape {ya.shape} dtype {ya.dtype}")
        pools[split] = (MemoryArray(xa, label), MemoryArray(ya, label.replace("X", "y")))
    if pools["train"][0].shape[0] < 1 or pools["train"][0].shape[1] < 1:
        raise ArgumentError(f"X must have N, D >= 1, got shape {pools['train'][0].shape}")
    return _build(name, None, pools, config, None, (pools["train"][0].shape[1],),
                  standardize=True, preprocessing=preprocessing)


def read_digits() -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    """The embedded scikit-learn digits (UCI optical digits, BSD-3), pre-shuffled once:
    images ``(1797, 8, 8, 1)`` uint8 in 0..16, labels ``(1797,)`` int64, names "0".."9"."""
    ref = resources.files("torch_svm").joinpath("_data/digits.npz")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    return images.reshape(-1, *_DIGITS_SHAPE), labels, tuple(str(d) for d in range(10))


# ----------------------------------------------------------------------------- private


def _check_config(config: Optional[DataConfig]) -> DataConfig:
    if config is None:
        return DataConfig()
    if not isinstance(config, DataConfig):
        raise ArgumentTypeError(f"config must be a DataConfig, got {type(config).__name__}")
    return config


def _counts(config: DataConfig, defaults: Tuple[int, int, int, int]) -> Dict[str, int]:
    """A built-in data set's split sizes: the config's, or its defaults (dev capped at train)."""
    names = ("num_train", "num_val", "num_test", "num_dev")
    counts = {k: d if getattr(config, k) is None else getattr(config, k)
              for k, d in zip(names, defaults)}
    if config.num_dev is None:
        counts["num_dev"] = min(counts["num_dev"], counts["num_train"])   # a small train split
    return counts


def _assignment_pools(pool: np.ndarray, pool_y: np.ndarray, test_pool: np.ndarray,
                      test_y: np.ndarray, counts: Dict[str, int], name: str) -> Pools:
    """CS231n's cuts: train the first ``num_train`` rows of the pool, val the next ``num_val``,
    test the test pool."""
    n_tr, n_val = counts["num_train"], counts["num_val"]
    if n_tr + n_val > len(pool):
        raise ArgumentError(f"num_train + num_val must be <= {len(pool)} (the {name} training "
                            f"pool), got {n_tr} + {n_val} = {n_tr + n_val}")

    def mem(a: np.ndarray, what: str) -> MemoryArray:
        return MemoryArray(a, f"{name} {what}")

    return {"train": (mem(pool[:n_tr], "train"), mem(pool_y[:n_tr], "train labels")),
            "val": (mem(pool[n_tr:n_tr + n_val], "val"), mem(pool_y[n_tr:n_tr + n_val], "val labels")),
            "test": (mem(test_pool, "test"), mem(test_y, "test labels"))}


def _build(name: str, source: Optional[str], pools: Pools, config: DataConfig,
           class_names: Union[Tuple[str, ...], StoredArray, None], sample_shape: Tuple[int, ...], *,
           standardize: bool, preprocessing: Optional[Preprocessing],
           progress: bool = False) -> Dataset:
    """Splits, the scan, the preprocessing record: the data set (module docstring). The
    classes are ``config.num_classes``, else a built-in data set's names (``source``), else the
    largest label + 1."""
    if config.standardize is None:
        config = replace(config, standardize=standardize)
    splits, config = _cut(pools, config)
    num_classes = config.num_classes or (len(class_names) if source in DATASETS else None)
    (mean, variance), num_classes = _scan(name, splits, config, num_classes, progress)
    if isinstance(class_names, StoredArray) and config.class_names is None:  # a file's, read now
        class_names = read_class_names(class_names, num_classes)
    names = config.class_names or class_names or tuple(str(c) for c in range(num_classes))
    if len(names) != num_classes:
        raise DataFormatError(f"{name}: class_names must name the {num_classes} classes, got "
                              f"{len(names)}: {clip(str(list(names)), 200)}")
    if preprocessing is None:
        preprocessing = Preprocessing.from_moments(mean, variance, splits["train"].size,
                                                   center=config.center,
                                                   standardize=config.standardize, bias=config.bias)
    elif preprocessing.bias != config.bias:
        raise ArgumentError(f"preprocessing.bias={preprocessing.bias} and config.bias="
                            f"{config.bias} must agree")
    return Dataset(name=name, source=source, class_names=tuple(names), preprocessing=preprocessing,
                   config=replace(config, num_classes=num_classes, class_names=tuple(names)),
                   sample_shape=tuple(sample_shape),
                   mean_square_norm=preprocessing.mean_square_norm(mean, variance), splits=splits)


def _cut(pools: Pools, config: DataConfig) -> Tuple[Dict[str, Rows], DataConfig]:
    """Train / val / test / dev rows of the pools (module docstring, step 1); returns them and
    the config with every count filled in."""
    X, y = pools["train"]
    n = len(X)
    rng = np.random.default_rng(config.seed % 2**32)
    splits: Dict[str, Rows] = {}
    drawn: Dict[str, int] = {}
    for split in ("val", "test"):
        asked = getattr(config, f"num_{split}")
        if split in pools:
            Xs, ys = pools[split]
            have = len(Xs)
            if asked is not None and asked > have:
                raise ArgumentError(f"num_{split} must be <= {have} (the rows of {Xs.where}), "
                                    f"got {asked}")
            splits[split] = Rows(Xs, ys, None, have if asked is None else asked)
        else:
            drawn[split] = int(n * _SPLIT_FRACTION) if asked is None else asked
    left = n - sum(drawn.values())
    if left < 1 or (config.num_train or 0) > left:
        raise ArgumentError(f"num_train + num_val + num_test drawn from X must be <= its {n} rows "
                            f"with num_train >= 1, got num_train={config.num_train}, "
                            + ", ".join(f"num_{k}={v}" for k, v in drawn.items()))
    n_train = left if config.num_train is None else config.num_train
    if any(drawn.values()):
        perm = rng.permutation(n)
        at = 0
        for split, size in list(drawn.items()) + [("train", n_train)]:
            splits[split] = Rows(X, y, np.sort(perm[at:at + size]), size)
            at += size
    else:  # nothing drawn: train is the first n_train rows, a plain view
        splits.update({split: Rows(X, y, np.empty(0, np.int64), 0) for split in drawn})
        splits["train"] = Rows(X, y, None, n_train)
    n_dev = min(_NUM_DEV, n_train) if config.num_dev is None else config.num_dev
    if n_dev > n_train:
        raise ArgumentError(f"num_dev must be <= num_train ({n_train}), got {n_dev}")
    dev = np.random.default_rng(config.seed % 2**32).choice(n_train, size=n_dev, replace=False)
    splits["dev"] = Rows(X, y, splits["train"].pool_rows(dev.astype(np.int64)), n_dev)
    sizes = {f"num_{s}": splits[s].size for s in SPLITS}
    return {s: splits[s] for s in SPLITS}, replace(config, **sizes)


def _rows_read(s: Rows) -> int:
    """Rows of the pool a scan of split ``s`` reads: all of it when the split's rows are
    drawn from it, else its first ``size``."""
    return len(s.X) if s.rows is not None else s.size


def _scan(name: str, splits: Dict[str, Rows], config: DataConfig, num_classes: Optional[int],
          progress: bool) -> Tuple[Tuple[np.ndarray, np.ndarray], int]:
    """One streaming pass over the rows the splits use (module docstring, step 2), the cheap
    checks first: the labels, then the size of W they imply, then X. Returns
    ``((mean, variance), C)``, each moment ``(D,)`` float64, C ``num_classes`` or the largest
    label + 1."""
    train = splits["train"]
    D = train.X.shape[1]
    scanned = [splits[s] for s in ("train", "val", "test")
               if s == "train" or splits[s].X is not train.X]       # drawn from X: with train
    top = max(_check_labels(s.y, _rows_read(s), num_classes) for s in scanned)
    num_classes = top + 1 if num_classes is None else num_classes
    if num_classes < 2:
        raise DataFormatError(f"{train.y.where}: labels must name at least 2 classes, got only "
                              f"label {top}")
    try:    # W, its gradient and SGD's buffers: (D + 1, C) each
        check_memory(f"W for {num_classes:,} classes (the largest label + 1) and {D + 1} rows",
                     4 * 8 * (D + 1) * num_classes)
    except ArgumentError as exc:
        raise DataFormatError(f"{train.y.where}: {exc}") from None
    step = max(1, config.chunk_bytes // (8 * D))
    total, squares, shift = np.zeros(D), np.zeros(D), None    # sum, sum of (x - shift)^2
    bar = progress_bar(total=sum(_rows_read(s) for s in scanned), desc="scan", unit="row",
                       enabled=progress)
    for s in scanned:
        finite = config.check_finite and s.X.dtype.kind == "f"
        used = _rows_read(s)
        for r0 in range(0, used, step):
            r1 = min(r0 + step, used)
            chunk = s.X.read_rows(r0, r1)                          # (r1 - r0, D)
            if finite and not np.isfinite(chunk).all():
                bad = r0 + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                raise DataFormatError(f"{s.X.where}: row {bad} holds NaN or inf; the SVM trains "
                                      f"on finite numbers only")
            if s is train:
                if s.rows is not None:
                    lo, hi = np.searchsorted(s.rows, (r0, r1))
                    chunk = chunk[s.rows[lo:hi] - r0]              # the train rows among them
                if len(chunk):
                    with np.errstate(over="ignore", invalid="ignore"):  # checked once, below
                        shift = chunk.mean(axis=0, dtype=np.float64) if shift is None else shift
                        total += chunk.sum(axis=0, dtype=np.float64)
                        squares += np.square(chunk - shift).sum(axis=0)
            bar.update(r1 - r0)
    bar.close()    # (on an error, tqdm closes it when the frame is dropped)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = total / train.size
        variance = np.maximum(squares / train.size - np.square(mean - shift), 0.0)
    if not (np.isfinite(mean).all() and np.isfinite(variance).all()):
        col = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(variance)))[0])
        raise DataFormatError(f"{train.X.where}: column {col} holds values so large that their "
                              f"mean or variance overflows float64; rescale the data first")
    return (mean, variance), num_classes


def _check_labels(y: MemoryArray, used: int, num_classes: Optional[int]) -> int:
    """Labels of the first ``used`` rows of ``y`` are in ``[0, num_classes)`` (or below
    :data:`MAX_CLASSES` when C is unknown), checked in chunks; returns the largest."""
    top = -1
    labels = y.array[:used]
    for r0 in range(0, used, 1 << 20):
        part = labels[r0:r0 + (1 << 20)]
        if part.min() < 0:
            bad = r0 + int(np.flatnonzero(part < 0)[0])
            raise DataFormatError(f"{y.where}: labels must be >= 0, got {part[bad - r0]} at "
                                  f"row {bad}; map them to 0..C-1 first (np.unique(y, "
                                  f"return_inverse=True)), or use torch_svm.sklearn."
                                  f"LinearSVMClassifier, which takes any labels")
        if num_classes is not None and part.max() >= num_classes:
            bad = r0 + int(np.flatnonzero(part >= num_classes)[0])
            raise DataFormatError(f"{y.where}: labels must be < num_classes={num_classes}, got "
                                  f"{part[bad - r0]} at row {bad}")
        if num_classes is None and part.max() >= MAX_CLASSES:   # C = largest + 1: W's width
            bad = r0 + int(np.flatnonzero(part >= MAX_CLASSES)[0])
            raise DataFormatError(f"{y.where}: labels must be < {MAX_CLASSES:,} (the largest "
                                  f"label + 1 is the number of classes, the width of W), got "
                                  f"{part[bad - r0]} at row {bad}; map them to 0..C-1 first "
                                  f"(np.unique(y, return_inverse=True))")
        top = max(top, int(part.max()))
    return top
