r"""A user's data file: its arrays mapped and their layout checked.

:func:`open_data_file` maps an ``.npz`` or a folder of ``.npy`` (:mod:`torch_svm.data.npymap`)
and checks the layout: the names (:data:`MEMBERS`), X with y (and X_val with y_val, X_test
with y_test) in pairs, shapes and dtypes. Every error is a
:class:`~torch_svm.errors.DataFormatError` naming the file and the array. The values (finite
X, labels in range, moments) are checked by the one streaming pass every source goes through
(:mod:`torch_svm.data.load`).
"""
from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from torch_svm.data.npymap import MappedArray, open_folder, open_npz
from torch_svm.errors import DataFormatError, MissingFileError

__all__: list = []    # internal: used by torch_svm itself

#: The arrays a data file may hold; any other name is refused.
MEMBERS = ("X", "y", "X_val", "y_val", "X_test", "y_test", "class_names")

#: Other names for them, as other tools save data sets (Keras' ``mnist.npz``: ``x_train``,
#: ``y_train``, ``x_test``, ``y_test``); a file may use one name per array.
ALIASES = {"x": "X", "X_train": "X", "x_train": "X", "y_train": "y", "x_val": "X_val",
           "x_test": "X_test"}


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
        raise MissingFileError(f"data {str(path)!r} does not exist; expected an .npz file or a "
                                f"folder of .npy files (X.npy, y.npy, ...)")
    arrays = _canonical_names(path, arrays)
    sample_shape = _flatten_samples(path, arrays)
    return arrays, _check_arrays(path, arrays), sample_shape


# ----------------------------------------------------------------------------- private


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
