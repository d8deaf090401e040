r"""``.npy`` arrays as views of a read-only memory map, from an ``.npz`` archive or a folder.

Each file is mapped once, read-only, and every array is a numpy view of that map at the
offset where its data start, just after its ``.npy`` header: offset 0 of each file in a
folder; in an ``.npz`` (a zip archive) the member's data offset inside the archive, found from
the member's local zip header. Such an offset exists only for members *stored* uncompressed,
as ``np.savez`` writes them. A compressed member (``np.savez_compressed``) is refused: it can
only be read by inflating it whole into memory, which is what mapping exists to avoid; the
message says how to rewrite the file. An array of Python objects (stored as a pickle) is
refused too: nothing here is ever unpickled.

:func:`release` hands the pages of a range of rows back to the kernel
(``madvise(MADV_DONTNEED)``; the file is unchanged and a later read maps them again), so a
pass over a file larger than memory keeps the resident set at about one chunk.
:mod:`torch_svm.data.load` builds data sets on these views.
"""
from __future__ import annotations

import io
import math
import mmap
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Dict, Optional

import numpy as np

from torch_svm.errors import DataFormatError

__all__: list = []    # internal: used by torch_svm itself

_MAX_HEADER = 1 << 16   # bytes read to parse a .npy header (numpy's own limit is 10000)


@dataclass(frozen=True, eq=False)
class MappedArray:
    """An array that is a view of a read-only map, and where it lies in that map; or, with
    ``mapping`` None, an array in memory (nothing to release)."""

    array: np.ndarray                # the view (no copy); an empty in-memory array when size 0
    where: str                       # "file.npz:X", "folder/X.npy" or "cifar10 train", for messages
    mapping: Optional[mmap.mmap]     # None: in memory (an empty array of a file included)
    offset: int                      # byte offset of array[0] in mapping


def open_npz(path: Path, allowed: Collection[str]) -> Dict[str, MappedArray]:
    """Every member of an ``.npz`` (named ``X`` for ``X.npy``) as a view of one map of the
    whole archive. A member whose name is not in ``allowed``, or appears twice, is refused."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise DataFormatError(f"{path}: not a readable .npz (zip) archive: {exc}") from None
    mapping = _map_file(path)
    arrays: Dict[str, MappedArray] = {}
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        where = f"{path}:{name}"
        _check_name(name, arrays, where, allowed)
        if info.flag_bits & 0x1:
            raise DataFormatError(f"{where}: the member is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataFormatError(
                f"{where}: the member is compressed (np.savez_compressed), so it cannot be "
                f"memory-mapped and would have to be inflated whole into memory; rewrite the "
                f"file uncompressed, e.g. np.savez(out, **np.load({str(path)!r})) for a file "
                f"that fits in memory, or save each array as a .npy file in a folder")
        local = mapping[info.header_offset:info.header_offset + 30]
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise DataFormatError(f"{where}: corrupt zip archive: no local header at offset "
                                  f"{info.header_offset}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.file_size > len(mapping):
            raise DataFormatError(f"{where}: truncated: the member needs bytes up to "
                                  f"{start + info.file_size}, the file has {len(mapping)}")
        arrays[name] = _npy_view(mapping, start, info.file_size, where)
    return arrays


def open_folder(path: Path, allowed: Collection[str]) -> Dict[str, MappedArray]:
    """Every ``*.npy`` file of a folder (named by its stem), each mapped on its own."""
    arrays: Dict[str, MappedArray] = {}
    for file in sorted(path.glob("*.npy")):
        _check_name(file.stem, arrays, str(file), allowed)
        mapping = _map_file(file)
        arrays[file.stem] = _npy_view(mapping, 0, len(mapping), str(file))
    return arrays


def release(m: MappedArray, r0: int, r1: int) -> None:
    """Hand the pages holding rows ``[r0, r1)`` back to the kernel (best effort).

    Only drops them from this process's resident set: the map is read-only and file-backed,
    so the next read of those rows maps them again from the page cache or the file.
    """
    if m.mapping is None or not hasattr(mmap, "MADV_DONTNEED") or r1 <= r0:
        return
    a = m.array
    if a.flags.c_contiguous:
        lo, hi = m.offset + r0 * a.strides[0], m.offset + r1 * a.strides[0]
    else:  # Fortran order: a row chunk touches every column, so release the whole array
        lo, hi = m.offset, m.offset + a.nbytes
    lo -= lo % mmap.PAGESIZE
    try:
        m.mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except OSError:
        pass


# ----------------------------------------------------------------------------- private


def _map_file(path: Path) -> mmap.mmap:
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise DataFormatError(f"{path}: the file is empty")
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def _npy_view(mapping: mmap.mmap, start: int, size: int, where: str) -> MappedArray:
    """The ``.npy`` array in ``mapping[start:start + size]`` as a view of the map."""
    head = io.BytesIO(mapping[start:start + min(size, _MAX_HEADER)])
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except ValueError as exc:
        raise DataFormatError(f"{where}: not a readable .npy array: {exc}") from None
    if dtype.hasobject:
        raise DataFormatError(f"{where}: holds Python objects (dtype {dtype}), which only a "
                              f"pickle can store; torch-svm never unpickles data: save numeric "
                              f"arrays (and class names as a str array)")
    data_start, need = start + head.tell(), math.prod(shape) * dtype.itemsize
    if need > size - head.tell():
        raise DataFormatError(f"{where}: truncated: a {dtype} array of shape {shape} needs "
                              f"{need} bytes of data, the file holds {size - head.tell()}")
    if need == 0:
        return MappedArray(np.empty(shape, dtype), where, None, 0)
    array = np.ndarray(shape, dtype=dtype, buffer=mapping, offset=data_start,
                       order="F" if fortran else "C")
    return MappedArray(array, where, mapping, data_start)


def _check_name(name: str, seen: Dict[str, MappedArray], where: str,
                allowed: Collection[str]) -> None:
    if name not in allowed:
        raise DataFormatError(f"{where}: {name!r} is not one of the arrays a data file may hold "
                              f"({', '.join(allowed)}); rename or remove it")
    if name in seen:
        raise DataFormatError(f"{where}: {name!r} appears twice")
