r"""A user's data file: what it is, its arrays, their layout.

:func:`open_data_file` looks at what the path is before opening anything (a folder of
``.npy`` files, a regular ``.npz`` file; a FIFO, device or socket is named and refused, never
waited on), reads the ``.npy`` headers (:mod:`torch_svm.data.npyfile`) and checks the layout:
the names (:data:`MEMBERS`, Keras' :data:`ALIASES`), X with y (and X_val with y_val, X_test
with y_test) in pairs, shapes and dtypes. The cheap arrays are read first and whole: the
labels (one number per row) into memory; X stays in the file and is read in rows, except a
Fortran-order X, whose rows are not contiguous: it is read whole into memory when it fits.
Images ``(N, H, W[, C])`` are seen as rows ``(N, H W C)``. Every error is a
:class:`~torch_svm.errors.DataFormatError` (or, for a path that cannot be read,
:class:`~torch_svm.errors.FileAccessError`) naming the file and the array. The values (finite
X, labels in range, moments) are checked by the one pass every source goes through
(:mod:`torch_svm.data.load`).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from torch_svm.data.npyfile import Array, MemoryArray, StoredArray, open_folder, open_npz
from torch_svm.errors import (DataFormatError, FileAccessError, MissingFileError, check_memory,
                              clip, clipped_repr)
from torch_svm.files import file_kind

__all__: list = []    # internal: used by torch_svm.data

#: The arrays a data file may hold; any other name is refused.
MEMBERS = ("X", "y", "X_val", "y_val", "X_test", "y_test", "class_names")

#: Other names for them, as other tools save data sets (Keras' ``mnist.npz``: ``x_train``,
#: ``y_train``, ``x_test``, ``y_test``); a file may use one name per array.
ALIASES = {"x": "X", "X_train": "X", "x_train": "X", "y_train": "y", "x_val": "X_val",
           "x_test": "X_test"}

_CIFAR_NAMES = ("data_batch_1", "batches.meta", "cifar-10-batches-py", "cifar-10-python.tar.gz")


def open_data_file(path: Path) -> Tuple[Dict[str, Array], Optional[StoredArray],
                                         Tuple[int, ...]]:
    """The arrays of ``path`` (an ``.npz`` or a folder of ``.npy``) under their
    :data:`MEMBERS` names, their layout checked: X arrays as rows ``(N, D)`` (in the file, or in
    memory when stored in Fortran order), labels in memory. Returns them, the ``class_names``
    array (read later, once the number of classes is known; None when the file has none) and
    the shape of one sample (``(D,)``, or an image's ``(H, W[, C])``)."""
    shown = clip(str(path), 200)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MissingFileError(f"data {shown!r} does not exist; expected an .npz file or a "
                               f"folder of .npy files (X.npy, y.npy, ...)") from None
    except OSError as exc:
        raise FileAccessError(f"data {shown!r} cannot be read: "
                              f"{exc.strerror or type(exc).__name__}") from None
    allowed = MEMBERS + tuple(ALIASES)
    if stat.S_ISDIR(mode):
        arrays: Dict[str, Array] = dict(open_folder(path, allowed))
        if not arrays:
            raise DataFormatError(_empty_folder(path))
    elif stat.S_ISREG(mode):
        if path.suffix == ".npy":
            raise DataFormatError(f"{shown}: a single .npy holds one array; put X.npy and y.npy "
                                  f"in a folder and pass the folder")
        arrays = dict(open_npz(path, allowed))
    else:
        raise DataFormatError(f"data {shown!r} is {file_kind(mode)}, not an .npz file or a folder "
                              f"of .npy files")
    arrays = _canonical_names(path, arrays)
    names = arrays.pop("class_names", None)
    _check_pairs(path, arrays)
    for name in ("y", "y_val", "y_test"):                  # the cheap arrays, first and whole
        if name in arrays:
            arrays[name] = _labels(arrays[name], len(arrays["X" + name[1:]]))
    sample_shape = _as_rows(path, arrays)
    if names is not None and not (names.ndim == 1 and names.dtype.kind in "US"):
        raise DataFormatError(f"{names.where}: must be a 1-D array of strings, got dtype "
                              f"{names.dtype} shape {clip(str(names.shape), 60)}")
    return arrays, names, sample_shape


def read_class_names(names: StoredArray, num_classes: int) -> Tuple[str, ...]:
    """The class names of a file with ``num_classes`` classes (their count checked first)."""
    if names.shape[0] != num_classes:
        raise DataFormatError(f"{names.where}: class_names must name the {num_classes} classes, "
                              f"got {names.shape[0]}")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
                 for n in names.read_all().tolist())


# ----------------------------------------------------------------------------- private


def _empty_folder(path: Path) -> str:
    """Why a folder holds no arrays, with the fix when it is CIFAR-10 or holds other files."""
    found = sorted(p.name for p in path.iterdir())[:5] if os.access(path, os.R_OK) else []
    if any(name in found or (path / name).exists() for name in _CIFAR_NAMES):
        return (f"{path}: this folder holds CIFAR-10, not .npy arrays: use --data cifar10 "
                f"--data-dir {clip(str(path), 200)} (load_dataset('cifar10', data_dir))")
    return (f"{path}: the folder holds no .npy files (found {clipped_repr(found)}); a data "
            f"folder holds X.npy and y.npy, and optionally X_val.npy, y_val.npy, X_test.npy, "
            f"y_test.npy, class_names.npy")


def _canonical_names(path: Path, arrays: Dict[str, Array]) -> Dict[str, Array]:
    """The arrays under their :data:`MEMBERS` names; two names for one array are refused."""
    out: Dict[str, Array] = {}
    given: Dict[str, str] = {}
    for name, m in arrays.items():
        member = ALIASES.get(name, name)
        if member in out:
            raise DataFormatError(f"{path}: {given[member]!r} and {name!r} both name the array "
                                  f"{member}; keep one")
        out[member], given[member] = m, name
    return out


def _check_pairs(path: Path, arrays: Dict[str, Array]) -> None:
    """X with y, X_val with y_val, X_test with y_test; shapes and dtypes of each pair."""
    for X_name, y_name in (("X", "y"), ("X_val", "y_val"), ("X_test", "y_test")):
        if (X_name in arrays) != (y_name in arrays) or (X_name == "X" and X_name not in arrays):
            missing = y_name if X_name in arrays else X_name
            raise DataFormatError(f"{path}: {missing!r} is missing (found {sorted(arrays)}); "
                                  f"a data file holds X and y, and optionally X_val with y_val and "
                                  f"X_test with y_test")
        if X_name not in arrays:
            continue
        X, y = arrays[X_name], arrays[y_name]
        if X.ndim < 2 or 0 in X.shape[1:] or (X_name == "X" and X.shape[0] < 1):
            raise DataFormatError(f"{X.where}: must be a 2-D array (N, D) (or images (N, H, W[, "
                                  f"C])) with N, D >= 1, got shape {clip(str(X.shape), 100)}")
        if X.dtype.kind not in "fiu":
            raise DataFormatError(f"{X.where}: must hold real floating or integer numbers, got "
                                  f"dtype {clip(str(X.dtype), 60)}")
        if y.shape != (X.shape[0],):
            raise DataFormatError(f"{y.where}: must be 1-D with one label per row of {X_name}, "
                                  f"shape ({X.shape[0]},), got shape {clip(str(y.shape), 100)}")
        if y.dtype.kind not in "iu":
            raise DataFormatError(f"{y.where}: labels must be integers, got dtype "
                                  f"{clip(str(y.dtype), 60)}")


def _labels(y: StoredArray, n: int) -> MemoryArray:
    """The labels of ``n`` rows, read whole (their bytes are bounded by the file's size)."""
    check_memory(f"the labels {y.where}", y.nbytes)
    return MemoryArray(y.read_all(), y.where)


def _as_rows(path: Path, arrays: Dict[str, Array]) -> Tuple[int, ...]:
    """X, X_val and X_test as rows ``(N, D)``: images ``(N, d1, d2, ...)`` flattened (C order),
    a Fortran-order array read whole into memory. Returns X's sample shape ``(d1, ...)``."""
    present = [n for n in ("X", "X_val", "X_test") if n in arrays]
    shapes = {n: tuple(arrays[n].shape[1:]) for n in present}
    if len(set(shapes.values())) > 1 and any(len(s) >= 2 for s in shapes.values()):
        raise DataFormatError(f"{path}: {', '.join(present)} must hold samples of one shape, got "
                              + ", ".join(f"{n} {arrays[n].shape}" for n in present))
    if any(len(s) == 1 for s in shapes.values()) and len({s[0] for s in shapes.values()}) > 1:
        first = arrays["X"].shape[1]
        bad = next(n for n in present if arrays[n].shape[1] != first)
        raise DataFormatError(f"{arrays[bad].where}: must have D = {first} columns like X, got "
                              f"shape {arrays[bad].shape}")
    for n in present:
        m = arrays[n]
        D = int(np.prod(m.shape[1:]))
        if m.fortran:
            check_memory(f"{m.where} (stored in Fortran order, so read whole)", m.nbytes)
            arrays[n] = MemoryArray(np.ascontiguousarray(m.read_all()).reshape(m.shape[0], D),
                                    m.where)
        elif m.ndim > 2:
            arrays[n] = m.with_shape((m.shape[0], D))
    return shapes["X"]
