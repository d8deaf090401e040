r"""A user's data file: its arrays mapped, their layout checked, their values scanned once.

:func:`open_data_file` maps an ``.npz`` or a folder of ``.npy`` (:mod:`torch_svm.npymap`) and
checks the layout: the names (:data:`MEMBERS`), X with y (and X_val with y_val, X_test with
y_test) in pairs, shapes and dtypes. :func:`scan` is one streaming pass over the rows the
splits use, in chunks: X finite, labels in ``[0, C)``, and the train rows' moments in float64,
the mean (a plain sum) and the variance (squares about the first chunk's mean, which keeps an
offset such as pixel values from cancelling). Each chunk's pages are released after it, so
the pass holds about one chunk. Every error is a :class:`~torch_svm.errors.DataFormatError`
naming the file, the array and, where it applies, the row. :mod:`torch_svm.arrays` builds the
data set on them.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from torch_svm.errors import DataFormatError
from torch_svm.npymap import MappedArray, open_folder, open_npz, release
from torch_svm.utils import check_memory
from torch_svm.utils import progress as progress_bar

__all__ = ["MEMBERS", "ALIASES", "MAX_CLASSES", "SplitRows", "open_data_file", "scan"]

#: Labels at or above this are refused (C = the largest label + 1 sets the width of W).
MAX_CLASSES = 1 << 24

#: The arrays a data file may hold; any other name is refused.
MEMBERS = ("X", "y", "X_val", "y_val", "X_test", "y_test", "class_names")

#: Other names for them, as other tools save data sets (Keras' ``mnist.npz``: ``x_train``,
#: ``y_train``, ``x_test``, ``y_test``); a file may use one name per array.
ALIASES = {"x": "X", "X_train": "X", "x_train": "X", "y_train": "y", "x_val": "X_val",
           "x_test": "X_test"}


@dataclass(frozen=True, eq=False)
class SplitRows:
    """Rows of one mapped ``(X, y)`` pair: ``rows`` (sorted) or, when None, the first ``size``."""

    X: MappedArray                  # (M, D)
    y: MappedArray                  # (M,)
    rows: Optional[np.ndarray]      # (size,) int64, sorted
    size: int

    def file_rows(self, pos: np.ndarray) -> np.ndarray:
        """Rows of the file array at positions ``pos`` of the split."""
        return self.rows[pos] if self.rows is not None else pos


def open_data_file(path: Path) -> Tuple[Dict[str, MappedArray], Optional[Tuple[str, ...]],
                                         Optional[Tuple[int, ...]]]:
    """The arrays of ``path`` (an ``.npz`` or a folder of ``.npy``) mapped, under their
    :data:`MEMBERS` names, their layout checked; returns them, the file's class names (None
    when it has none) and the shape of one sample when X has more than two dimensions
    (images ``(N, H, W)`` or ``(N, H, W, C)``: flattened to rows as views, None otherwise)."""
    allowed = MEMBERS + tuple(ALIASES)
    if path.is_dir():
        arrays = open_folder(path, allowed)
    elif path.is_file():
        arrays = open_npz(path, allowed) if zipfile.is_zipfile(path) else _not_npz(path)
    else:
        raise FileNotFoundError(f"data {str(path)!r} does not exist; expected an .npz file or a "
                                f"folder of .npy files (X.npy, y.npy, ...)")
    arrays = _canonical_names(path, arrays)
    sample_shape = _flatten_samples(path, arrays)
    return arrays, _check_arrays(path, arrays), sample_shape


def scan(arrays: Dict[str, MappedArray], splits: Dict[str, SplitRows], *, chunk_bytes: int,
         check_finite: bool, num_classes: Optional[int], progress: bool = False
         ) -> Tuple[Tuple[np.ndarray, np.ndarray], int]:
    """One streaming pass over the rows the splits use, ``chunk_bytes`` (as float64) at a time:
    X finite (unless ``check_finite`` is False), labels >= 0 (and < ``num_classes`` when given),
    the train rows' moments (a progress bar over the rows when ``progress``). Returns
    ``((mean, variance), C)``, each moment ``(D,)`` float64, and C ``num_classes`` or the
    largest label + 1."""
    train = splits["train"]
    D = train.X.array.shape[1]
    step = max(1, chunk_bytes // (8 * D))
    total, squares, shift = np.zeros(D), np.zeros(D), None  # sum, sum of (x - shift)^2
    top = -1
    scanned = [splits[n] for n in ("train", "val", "test")
               if n == "train" or splits[n].X is not train.X]       # drawn from X: with train
    bar = progress_bar(total=sum(_rows_read(s) for s in scanned), desc="scan", unit="row",
                       enabled=progress)
    for s in scanned:
        used = _rows_read(s)
        finite = check_finite and s.X.array.dtype.kind == "f"
        for r0 in range(0, used, step):
            r1 = min(r0 + step, used)
            chunk = s.X.array[r0:r1]                               # (r1 - r0, D), a view
            if finite and not np.isfinite(chunk).all():
                bad = r0 + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                raise DataFormatError(f"{s.X.where}: row {bad} holds NaN or inf; the SVM trains "
                                      f"on finite numbers only")
            if s is train:
                if s.rows is not None:
                    lo, hi = np.searchsorted(s.rows, (r0, r1))
                    chunk = chunk[s.rows[lo:hi] - r0]              # the train rows among them
                if len(chunk):
                    shift = chunk.mean(axis=0, dtype=np.float64) if shift is None else shift
                    total += chunk.sum(axis=0, dtype=np.float64)
                    squares += np.square(chunk - shift).sum(axis=0)
            release(s.X, r0, r1)
            bar.update(r1 - r0)
        labels = s.y.array[:used]
        for r0 in range(0, used, 1 << 20):
            part = labels[r0:r0 + (1 << 20)]
            if part.min() < 0:
                bad = r0 + int(np.flatnonzero(part < 0)[0])
                raise DataFormatError(f"{s.y.where}: labels must be >= 0, got {part[bad - r0]} at "
                                      f"row {bad}; map them to 0..C-1 first (np.unique(y, "
                                      f"return_inverse=True)), or use torch_svm.sklearn."
                                      f"LinearSVMClassifier, which takes any labels")
            if num_classes is not None and part.max() >= num_classes:
                bad = r0 + int(np.flatnonzero(part >= num_classes)[0])
                raise DataFormatError(f"{s.y.where}: labels must be < num_classes="
                                      f"{num_classes}, got {part[bad - r0]} at row {bad}")
            if num_classes is None and part.max() >= MAX_CLASSES:   # C = largest + 1: W's width
                bad = r0 + int(np.flatnonzero(part >= MAX_CLASSES)[0])
                raise DataFormatError(f"{s.y.where}: labels must be < {MAX_CLASSES:,} (the largest "
                                      f"label + 1 is the number of classes, the width of W), got "
                                      f"{part[bad - r0]} at row {bad}; map them to 0..C-1 first "
                                      f"(np.unique(y, return_inverse=True))")
            top = max(top, int(part.max()))
    bar.close()    # (on an error, tqdm closes it when the frame is dropped)
    num_classes = top + 1 if num_classes is None else num_classes
    if num_classes < 2:
        raise DataFormatError(f"{arrays['y'].where}: labels must name at least 2 classes, got "
                              f"only label {top}")
    try:    # W, its gradient and SGD's buffers: (D + 1, C) each
        check_memory(f"W for {num_classes:,} classes (the largest label + 1) and {D + 1} rows",
                     4 * 8 * (D + 1) * num_classes)
    except ValueError as exc:
        raise DataFormatError(f"{arrays['y'].where}: {exc}") from None
    mean = total / train.size
    variance = np.maximum(squares / train.size - np.square(mean - shift), 0.0)
    return (mean, variance), num_classes


# ----------------------------------------------------------------------------- private


def _rows_read(s: SplitRows) -> int:
    """Rows of the file array a scan of split ``s`` reads: all of it when the split's rows are
    drawn from it, else its first ``size``."""
    return len(s.X.array) if s.rows is not None else s.size


def _not_npz(path: Path) -> Dict[str, MappedArray]:
    hint = (" (a single .npy holds one array; put X.npy and y.npy in a folder and pass the "
            "folder)" if path.suffix == ".npy" else "")
    raise DataFormatError(f"{path}: not an .npz (zip) archive; expected an .npz written by "
                          f"np.savez or a folder of .npy files{hint}")


def _canonical_names(path: Path, arrays: Dict[str, MappedArray]) -> Dict[str, MappedArray]:
    """The arrays under their :data:`MEMBERS` names; two names for one array are refused."""
    out: Dict[str, MappedArray] = {}
    given: Dict[str, str] = {}
    for name, m in arrays.items():
        member = ALIASES.get(name, name)
        if member in out:
            raise DataFormatError(f"{path}: {given[member]!r} and {name!r} both name the array "
                                  f"{member}; keep one")
        out[member], given[member] = m, name
    return out


def _flatten_samples(path: Path, arrays: Dict[str, MappedArray]) -> Optional[Tuple[int, ...]]:
    """X, X_val and X_test of more than two dimensions, ``(N, d1, d2, ...)``, as ``(N, d1 d2
    ...)`` views of the same map (C order only: a Fortran-order array would be copied whole);
    returns X's sample shape ``(d1, d2, ...)``, or None when X is 2-D."""
    present = [n for n in ("X", "X_val", "X_test") if n in arrays]
    shapes = {n: arrays[n].array.shape[1:] for n in present}
    if not any(len(s) >= 2 for s in shapes.values()):
        return None
    if len(set(shapes.values())) > 1:
        raise DataFormatError(f"{path}: {', '.join(present)} must hold samples of one shape, got "
                              + ", ".join(f"{n} {arrays[n].array.shape}" for n in present))
    for n in present:
        m = arrays[n]
        if not m.array.flags.c_contiguous:
            raise DataFormatError(f"{m.where}: an array of shape {m.array.shape} in Fortran order "
                                  f"cannot be read as rows without copying it whole; save it in "
                                  f"C order (np.ascontiguousarray) or as (N, D)")
        arrays[n] = replace(m, array=m.array.reshape(len(m.array), int(np.prod(shapes[n]))))
    return shapes["X"] if "X" in shapes else None


def _check_arrays(path: Path, arrays: Dict[str, MappedArray]) -> Optional[Tuple[str, ...]]:
    """Names present in pairs, shapes and dtypes; returns the file's class names, if any."""
    for X_name, y_name in (("X", "y"), ("X_val", "y_val"), ("X_test", "y_test")):
        if (X_name in arrays) != (y_name in arrays) or (X_name == "X" and X_name not in arrays):
            missing = y_name if X_name in arrays else X_name
            raise DataFormatError(f"{path}: {missing!r} is missing (found {sorted(arrays)}); "
                                  f"a data file holds X and y, and optionally X_val with y_val and "
                                  f"X_test with y_test")
        if X_name not in arrays:
            continue
        X, y = arrays[X_name], arrays[y_name]
        if X.array.ndim != 2 or X.array.shape[1] < 1 or (X_name == "X" and len(X.array) < 1):
            raise DataFormatError(f"{X.where}: must be a 2-D array (N, D) with N, D >= 1, got "
                                  f"shape {X.array.shape}")
        if X.array.dtype.kind not in "fiu":
            raise DataFormatError(f"{X.where}: must hold real floating or integer numbers, got "
                                  f"dtype {X.array.dtype}")
        if X.array.shape[1] != arrays["X"].array.shape[1]:
            raise DataFormatError(f"{X.where}: must have D = {arrays['X'].array.shape[1]} columns "
                                  f"like X, got shape {X.array.shape}")
        if y.array.shape != (len(X.array),):
            raise DataFormatError(f"{y.where}: must be 1-D with one label per row of {X_name}, "
                                  f"shape ({len(X.array)},), got shape {y.array.shape}")
        if y.array.dtype.kind not in "iu":
            raise DataFormatError(f"{y.where}: labels must be integers, got dtype {y.array.dtype}")
    if "class_names" not in arrays:
        return None
    names = arrays["class_names"]
    if names.array.ndim != 1 or names.array.dtype.kind not in "US":
        raise DataFormatError(f"{names.where}: must be a 1-D array of strings, got dtype "
                              f"{names.array.dtype} shape {names.array.shape}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.array.tolist())
