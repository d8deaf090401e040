r"""Arrays stored in ``.npy`` files or uncompressed ``.npz`` members, read by copying rows.

:func:`open_npz` and :func:`open_folder` parse each array's ``.npy`` header (numpy's own
readers, never an unpickler) and return a :class:`StoredArray`: the file, the offset where
the data start, the shape and the dtype. Nothing is read yet; rows are then *copied* out of the
file with ``os.pread`` (:meth:`StoredArray.read_rows`, :meth:`StoredArray.take`), which is
why a file larger than memory can be trained on: this process holds only the rows it asked
for, and the rest stays in the kernel's page cache or on disk.

Why copies and not a memory map: a map of a file that is truncated or rewritten while it is
read kills the process with SIGBUS the moment a vanished page is touched, with no message.
A copying read instead comes back short, and that is a clear error naming the file
(:class:`~torch_svm.errors.DataFormatError`). The cost is one system call per gathered row,
a few microseconds against the milliseconds of the GEMMs it feeds.

Every value taken from a header is bounded by the real size of the file before anything is
allocated: a member must hold the bytes its shape and dtype declare, zero-width dtypes and
object arrays are refused, an ``.npz`` member must be stored uncompressed (a compressed one
could only be inflated whole), and only regular files are opened (a FIFO is never waited on).
:class:`MemoryArray` gives arrays already in memory the same two read methods.
"""
from __future__ import annotations

import io
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Collection, Dict, Tuple, Union

import numpy as np

from torch_svm.errors import DataFormatError, clip
from torch_svm.files import open_regular

__all__: list = []    # internal: used by torch_svm.data

_MAX_HEADER = 1 << 16   # bytes read to parse a .npy header (numpy's own limit is 10000)
_MAX_DIMS = 32          # numpy's own limit is 64; a data array has 1 to 4


@dataclass(frozen=True, eq=False)
class StoredArray:
    """An array in a file: ``shape`` ``dtype`` values in C order from byte ``offset`` of ``fh``."""

    where: str                      # "file.npz:X" or "folder/X.npy", for messages
    fh: IO[bytes]                   # the open file (kept open while the array is used)
    offset: int                     # where the data start in the file
    shape: Tuple[int, ...]
    dtype: np.dtype
    fortran: bool = False           # stored in Fortran order (read whole, see MemoryArray)

    in_memory = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def with_shape(self, shape: Tuple[int, ...]) -> "StoredArray":
        """The same bytes seen with another C-order shape of as many values."""
        return StoredArray(self.where, self.fh, self.offset, tuple(shape), self.dtype)

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` as a new array."""
        row = self.nbytes // max(1, self.shape[0])
        return self._read(self.offset + r0 * row, (r1 - r0) * row).reshape(
            (r1 - r0,) + self.shape[1:])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as a new array, in that order; each run
        of consecutive rows is one read, the rows read in file order."""
        row = self.nbytes // max(1, self.shape[0])
        out = np.empty((len(rows),) + self.shape[1:], dtype=self.dtype)
        if len(rows) == 0:
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        bounds = np.flatnonzero(np.diff(sorted_rows) > 1) + 1       # where a run of rows breaks
        for start, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), len(order)]):
            first, last = int(sorted_rows[start]), int(sorted_rows[stop - 1])
            block = self._read(self.offset + first * row, (last - first + 1) * row)
            block = block.view(np.uint8).reshape(last - first + 1, row)
            flat[order[start:stop]] = block[sorted_rows[start:stop] - first]
        return out

    def read_all(self) -> np.ndarray:
        """The whole array, in its own order (a Fortran-order array comes back in Fortran order)."""
        data = self._read(self.offset, self.nbytes)
        return data.reshape(self.shape, order="F" if self.fortran else "C")

    def _read(self, at: int, size: int) -> np.ndarray:
        buf = bytearray(size)
        view, done = memoryview(buf), 0
        while done < size:
            try:
                got = _pread_into(self.fh.fileno(), view[done:], at + done)
            except OSError as exc:
                raise DataFormatError(f"{self.where}: cannot be read: "
                                      f"{exc.strerror or type(exc).__name__}") from None
            if got == 0:
                end = os.fstat(self.fh.fileno()).st_size
                raise DataFormatError(
                    f"{self.where}: the file ends at byte {end}, but its data need bytes up to "
                    f"{at + size}: it was truncated or rewritten while in use")
            done += got
        return np.frombuffer(buf, dtype=self.dtype)


class MemoryArray:
    """An array in memory with :class:`StoredArray`'s read methods (no copy where a view does)."""

    in_memory = True

    def __init__(self, array: np.ndarray, where: str) -> None:
        self.array, self.where = array, where
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __len__(self) -> int:
        return len(self.array)

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        return self.array[r0:r1]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


Array = Union[StoredArray, MemoryArray]


def _pread_into(fd: int, buffer: memoryview, at: int) -> int:
    """Read from byte ``at`` of ``fd`` into ``buffer``; the bytes read (0 at the end of the file)."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buffer], at)
    data = os.pread(fd, len(buffer), at)
    buffer[:len(data)] = data
    return len(data)


def open_npz(path: Path, allowed: Collection[str]) -> Dict[str, StoredArray]:
    """Every member of an ``.npz`` (named ``X`` for ``X.npy``), its header checked against the
    archive's size. A member whose name is not in ``allowed``, or appears twice, is refused."""
    fh = open_regular(path, expected="an .npz file (np.savez) or a folder of .npy files")
    size = os.fstat(fh.fileno()).st_size
    try:
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
    except Exception as exc:  # noqa: BLE001 - any failure to parse the archive: a bad file
        fh.close()
        raise DataFormatError(f"{path}: not a readable .npz (zip) archive: "
                              f"{type(exc).__name__}: {clip(str(exc), 200)}") from None
    try:
        return _npz_members(fh, path, size, infos, allowed)
    except BaseException:
        fh.close()
        raise


def _npz_members(fh: IO[bytes], path: Path, size: int, infos: list,
                 allowed: Collection[str]) -> Dict[str, StoredArray]:
    arrays: Dict[str, StoredArray] = {}
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        where = f"{path}:{clip(name, 100)}"
        _check_name(name, arrays, where, allowed)
        if info.flag_bits & 0x1:
            raise DataFormatError(f"{where}: the member is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataFormatError(
                f"{where}: the member is compressed (np.savez_compressed), so it cannot be read "
                f"in pieces and would have to be inflated whole into memory; rewrite the file "
                f"uncompressed, e.g. np.savez(out, **np.load({str(path)!r})) for a file that "
                f"fits in memory, or save each array as a .npy file in a folder")
        if not 0 <= info.header_offset < size:
            raise DataFormatError(f"{where}: corrupt zip archive: member offset "
                                  f"{info.header_offset} is outside the file ({size} bytes)")
        local = os.pread(fh.fileno(), 30, info.header_offset)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise DataFormatError(f"{where}: corrupt zip archive: no local header at offset "
                                  f"{info.header_offset}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.file_size > size:
            raise DataFormatError(f"{where}: truncated: the member needs bytes up to "
                                  f"{start + info.file_size}, the file has {size}")
        arrays[name] = _npy_header(fh, start, info.file_size, where)
    return arrays


def open_folder(path: Path, allowed: Collection[str]) -> Dict[str, StoredArray]:
    """Every ``*.npy`` file of a folder (named by its stem), each a regular file."""
    arrays: Dict[str, StoredArray] = {}
    for file in sorted(path.glob("*.npy")):
        _check_name(file.stem, arrays, str(file), allowed)
        fh = open_regular(file, expected="a .npy file")
        try:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise DataFormatError(f"{file}: the file is empty")
            arrays[file.stem] = _npy_header(fh, 0, size, str(file))
        except BaseException:
            fh.close()
            raise
    return arrays


# ----------------------------------------------------------------------------- private


def _npy_header(fh: IO[bytes], start: int, size: int, where: str) -> StoredArray:
    """The ``.npy`` array in bytes ``[start, start + size)`` of ``fh``: its header parsed and
    checked against ``size``."""
    head = io.BytesIO(os.pread(fh.fileno(), min(size, _MAX_HEADER), start))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except Exception as exc:  # noqa: BLE001 - numpy's parser raises many types on bad headers
        raise DataFormatError(f"{where}: not a readable .npy array: {type(exc).__name__}: "
                              f"{clip(' '.join(str(exc).split()), 200)}") from None
    if dtype.hasobject:
        raise DataFormatError(f"{where}: holds Python objects (dtype {dtype}), which only a "
                              f"pickle can store; torch-svm never unpickles data: save numeric "
                              f"arrays (and class names as a str array)")
    if dtype.itemsize == 0:
        raise DataFormatError(f"{where}: dtype {clip(str(dtype), 60)} has zero width: its values "
                              f"hold nothing")
    if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS
            and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise DataFormatError(f"{where}: shape {clip(str(shape), 100)} is not a shape of at most "
                              f"{_MAX_DIMS} sizes >= 0")
    data = size - head.tell()
    need = math.prod(shape) * dtype.itemsize
    if need > data:
        raise DataFormatError(f"{where}: truncated: a {dtype} array of shape {clip(str(shape), 100)} "
                              f"needs {need} bytes of data, the file holds {data}")
    return StoredArray(where, fh, start + head.tell(), tuple(shape), dtype, bool(fortran))


def _check_name(name: str, seen: Dict[str, StoredArray], where: str,
                allowed: Collection[str]) -> None:
    if name not in allowed:
        raise DataFormatError(f"{where}: {clip(repr(name), 100)} is not one of the arrays a data "
                              f"file may hold ({', '.join(allowed)}); rename or remove it")
    if name in seen:
        raise DataFormatError(f"{where}: {clip(repr(name), 100)} appears twice")

