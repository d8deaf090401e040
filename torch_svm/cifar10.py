"""CIFAR-10, the "python version" (``cifar-10-batches-py``), read safely.

The batches are Python 2 pickles, and a pickle is a small program: read naively, a tampered
file can run code, crash the process or exhaust its memory. Every file here goes through a
restricted unpickler that rebuilds only what the format holds (a dict of byte strings, lists
of ints and plain integer numpy arrays) and checks each step before numpy sees a byte:

- globals come from an allowlist of numpy's array, dtype and scalar rebuilders (and latin-1
  ``_codecs.encode``), each replaced by a checking stand-in; nothing is imported or run;
- dtypes are plain integers (``u1`` data, integer labels): object, structured, subarray,
  string and float dtypes, and dtype states that add fields or flags, are refused, so the
  file's bytes are never read as pointers;
- an array's bytes must match its declared shape exactly (no zero strides, no short or long
  buffers), and BUILD (set state) applies to those stand-ins only;
- a file is at most 64 MiB and 100,000 opcodes, and declared lengths are checked against the
  bytes present, so a small file cannot make a large allocation;
- only regular files are opened: a FIFO, device or socket named like a CIFAR file is refused,
  never waited on.

Refusals raise :class:`UnsafePickleError`; safe files that are not CIFAR-10 (shapes, labels,
class names) raise :class:`~torch_svm.errors.DataFormatError`. Both name the file and echo the
offending value, clipped. :func:`read_cifar10` reads the folder or the
``cifar-10-python.tar.gz`` archive without unpacking it; :func:`download_cifar10` fetches the
official archive (md5-checked). Splits and preprocessing are :mod:`torch_svm.data`'s.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import math
import os
import pickle
import re
import stat
import struct
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from torch_svm.errors import DataFormatError, TorchSVMError
from torch_svm.utils import atomic_write_bytes, clip, clipped_repr, progress

__all__ = ["read_cifar10", "locate_cifar10", "download_cifar10", "UnsafePickleError",
           "DownloadError", "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_ARCHIVE", "CIFAR10_SHAPE"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_SHAPE = (32, 32, 3)  # (H, W, C) of the rows we return; files store (C, H, W) planes

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch", "batches.meta")

_BATCH_ROWS = 10000            # images in each official batch file
_ROW_BYTES = 3072              # one image: 3 channel planes of 32 x 32 uint8
_NUM_CLASSES = 10
_MAX_NAME = 100                # characters in a class name
_MAX_FILE_BYTES = 64 << 20     # a real batch is 31 MB: 10000 x 3072 pixels, labels, file names
_MAX_OPCODES = 100_000         # a real batch has about 30,000 (one or two per label, file name)
_MAX_DOWNLOAD_BYTES = 512 << 20  # the archive is 163 MB


class UnsafePickleError(DataFormatError):
    """A pickle asked for something no CIFAR-10 file needs (a global outside the allowlist, a
    non-integer dtype, an array whose bytes do not match its shape, ...); it was refused before
    anything was run or allocated."""


class DownloadError(TorchSVMError, OSError):
    """Fetching the CIFAR-10 archive failed (no network, an HTTP error, an interrupted or
    oversized transfer)."""


def read_cifar10(data_dir: Union[str, Path]
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Tuple[str, ...]]:
    """Read CIFAR-10's python version from a folder or the archive, without unpacking.

    ``data_dir`` may be ``cifar-10-batches-py/``, its parent, ``cifar-10-python.tar.gz`` or a
    folder holding that archive (the folder wins when both are there).

    Returns:
        X_train: ``(50000, 32, 32, 3)`` uint8, batches 1..5 in order; y_train: ``(50000,)`` int64.
        X_test: ``(10000, 32, 32, 3)`` uint8; y_test: ``(10000,)`` int64.
        class_names: the 10 ``label_names`` of ``batches.meta``.
    (Counts are whatever the files hold, at most 10000 per batch; the official ones hold these.)

    Raises:
        FileNotFoundError: nothing at ``data_dir``, or a CIFAR file missing (names it).
        UnsafePickleError: a file tried something a CIFAR-10 pickle never does (names the file).
        DataFormatError: a file is not a regular file, or not CIFAR-10 (names the file and
            echoes the bad value, clipped).
    """
    source = locate_cifar10(data_dir)
    contents: Dict[str, Any] = {}
    for member, blob, where in _members(source):
        contents[member] = (_read_meta if member == "batches.meta" else _read_batch)(blob, where)
    class_names = contents.pop("batches.meta")
    X_train, y_train = _stack([contents.pop(m) for m in _CIFAR_TRAIN])
    X_test, y_test = _stack([contents.pop("test_batch")])
    return X_train, y_train, X_test, y_test, class_names


def locate_cifar10(data_dir: Union[str, Path], quiet: bool = False) -> Optional[Path]:
    """The ``cifar-10-batches-py`` folder or the archive that ``data_dir`` points at.

    Only names are looked at here (nothing is opened), so a FIFO or device with a CIFAR name is
    found, then refused when read.
    """
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        return path
    candidates = [path if os.path.lexists(path / "data_batch_1") or path.name == _CIFAR_FOLDER
                  else None, path / _CIFAR_FOLDER, path / CIFAR10_ARCHIVE]
    for c in candidates:
        if c is not None and c.exists():
            return c
    if quiet:
        return None
    what = "does not exist" if not path.exists() else "holds no CIFAR-10 files"
    raise FileNotFoundError(
        f"CIFAR-10 data_dir {str(path)!r} {what}: expected the {_CIFAR_FOLDER}/ folder (with "
        f"{', '.join(_CIFAR_FILES)}), its parent, or {CIFAR10_ARCHIVE} (or a folder holding it); "
        f"download the 'CIFAR-10 python version' from {CIFAR10_URL}")


def _where(archive: Path, member: str) -> str:
    """How errors name a file inside the tar: ``archive::member`` (a member path chosen by the
    archive is cut to its last 200 characters)."""
    return f"{archive}::{member if len(member) <= 200 else '...' + member[-200:]}"


def _members(source: Path) -> Iterator[Tuple[str, bytes, str]]:
    """Yield ``(name, content, where)`` for each of the 7 CIFAR files, in storage order.

    Each file's size is checked before it is read whole. The archive is read as a stream in
    one pass (gzip cannot seek back cheaply); a missing file raises FileNotFoundError naming it.
    A folder named like the archive is refused as one.
    """
    if source.is_dir() and source.name != CIFAR10_ARCHIVE:
        for member in _CIFAR_FILES:
            path = source / member
            if not os.path.lexists(path):
                raise FileNotFoundError(f"CIFAR-10 file {str(path)!r} is missing: expected "
                                        f"{', '.join(_CIFAR_FILES)} in {str(source)!r}")
            yield member, _read_file(path), str(path)
        return
    seen = set()
    with _open_regular(source) as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r|*") as tar:
                for info in tar:
                    member = PurePosixPath(info.name).name
                    if info.isfile() and member in _CIFAR_FILES and member not in seen:
                        seen.add(member)
                        where = _where(source, info.name)
                        _check_size(info.size, where)
                        yield member, tar.extractfile(info).read(), where
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            if isinstance(exc, (FileNotFoundError, DataFormatError)):
                raise
            raise DataFormatError(
                f"{source}: not a readable tar archive (expected {CIFAR10_ARCHIVE} or a folder; "
                f"truncated or corrupt?): {type(exc).__name__}: {clip(str(exc))}") from exc
    missing = [m for m in _CIFAR_FILES if m not in seen]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 archive {str(source)!r} lacks {', '.join(missing)} "
                                f"(expected {_CIFAR_FOLDER}/{{{','.join(_CIFAR_FILES)}}})")


_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file, else DataFormatError naming what it
    is. Checked twice: by name first (a socket cannot be opened at all), then on what was
    opened, with O_NONBLOCK so that a FIFO swapped in meanwhile cannot make the open wait."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return os.fdopen(fd, "rb")
        os.close(fd)
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    raise DataFormatError(f"{path}: is {kind}, not a regular file; expected a CIFAR-10 file "
                          f"({CIFAR10_ARCHIVE} or one of {', '.join(_CIFAR_FILES)})")


def _read_file(path: Path) -> bytes:
    """The content of ``path``, a regular file, its size checked first."""
    with _open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        _check_size(size, str(path))
        return fh.read(size)


def _check_size(size: int, where: str) -> None:
    if size > _MAX_FILE_BYTES:
        raise DataFormatError(f"{where}: {size} bytes, more than the {_MAX_FILE_BYTES} a CIFAR-10 "
                              "file may have (a batch is 31 MB)")


def _read_batch(blob: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """One ``data_batch_*`` / ``test_batch``: ``data (N, 3072) uint8`` with N <= 10000, and
    ``labels (N,)`` int64 in [0, 10)."""
    d = _unpickle_dict(blob, where, ("data", "labels"))
    data = d["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _ROW_BYTES and len(data) <= _BATCH_ROWS):
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else _describe(data))
        raise DataFormatError(f"{where}: 'data' must be a uint8 array of shape (N, {_ROW_BYTES}) "
                              f"with N <= {_BATCH_ROWS}, got {got}")
    return data, _read_labels(d["labels"], len(data), where)


def _read_labels(labels: Any, n: int, where: str) -> np.ndarray:
    """``labels`` (a list of ints, as the official files hold, or an integer array) as
    ``(n,)`` int64 in [0, 10)."""
    if not ((isinstance(labels, np.ndarray) and labels.ndim == 1)  # integer: no other dtype loads
            or (isinstance(labels, list) and all(type(v) is int for v in labels))):
        raise DataFormatError(f"{where}: 'labels' must be {n} integers (one per row of 'data'), "
                              f"got {_describe(labels)}")
    if len(labels) != n:
        raise DataFormatError(f"{where}: 'labels' must be {n} integers (one per row of 'data'), "
                              f"got {len(labels)}")
    if n:
        low, high = ((int(labels.min()), int(labels.max())) if isinstance(labels, np.ndarray)
                     else (min(labels), max(labels)))
        if low < 0 or high >= _NUM_CLASSES:
            raise DataFormatError(f"{where}: labels must be in [0, {_NUM_CLASSES}), got min "
                                  f"{clipped_repr(low)} and max {clipped_repr(high)}")
    return np.asarray(labels, dtype=np.int64)


def _read_meta(blob: bytes, where: str) -> Tuple[str, ...]:
    """``batches.meta``: the 10 class names."""
    names = _unpickle_dict(blob, where, ("label_names",))["label_names"]
    if not (isinstance(names, list) and len(names) == _NUM_CLASSES
            and all(isinstance(s, (str, bytes)) and 0 < len(s) <= _MAX_NAME for s in names)):
        raise DataFormatError(f"{where}: 'label_names' must be a list of {_NUM_CLASSES} class names "
                              f"(str or bytes of 1 to {_MAX_NAME} characters), got {_describe(names)}")
    return tuple(s.decode("latin-1") if isinstance(s, bytes) else s for s in names)


def _describe(value: Any) -> str:
    """A value from a file, for an error message: its type, length and clipped repr."""
    size = f" of length {len(value)}" if isinstance(value, (list, tuple, dict, str, bytes)) else ""
    return f"{type(value).__name__}{size}: {clipped_repr(value)}"


def _stack(batches: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """Batches of ``(n, 3072)`` channel planes -> ``(N, 32, 32, 3)`` uint8 and ``(N,)`` labels."""
    y = np.concatenate([y for _, y in batches])
    X = np.empty((len(y), *CIFAR10_SHAPE), dtype=np.uint8)
    start = 0
    while batches:
        data, _ = batches.pop(0)  # each batch is dropped once copied
        X[start:start + len(data)] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        start += len(data)
    return X, y


# ----------------------------------------------------------------------------- safe pickles
#
# numpy pickles an array as  _reconstruct(ndarray, (0,), b'b')  followed by BUILD with
# (1, shape, dtype, is_fortran, bytes), or (protocol 5) as  _frombuffer(bytes, dtype, shape,
# order);  a dtype as  dtype('u1', False, True)  followed by BUILD with its state; a numpy
# scalar as  scalar(dtype, bytes).  Each of these globals is replaced by a stand-in that checks
# its arguments and builds the array itself from plain values, so numpy only ever sees an
# integer dtype and a buffer of exactly the right size.

_DTYPE_CODE = re.compile(r"[iu][1248]\Z")  # what numpy writes for integer dtypes: 'u1', 'i8', ...
_BYTE_ORDERS = ("<", ">", "|", "=")


def _text(value: Any) -> Optional[str]:
    """A str, or bytes from a Python 2 pickle decoded as latin-1; None for anything else."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


class _Dtype:
    """``numpy.dtype(code)`` in a CIFAR-10 pickle: a plain integer type, whose BUILD may set
    the byte order and nothing else (no fields, subarray, flags or metadata)."""

    __slots__ = ("code", "byteorder", "built")

    def __init__(self, code: str):
        self.code, self.byteorder, self.built = code, "=", False

    def __repr__(self) -> str:
        return f"dtype({self.code!r})"

    def build(self, state: Any) -> None:
        # numpy's state: (3, byteorder, subarray, names, fields, elsize, alignment, flags),
        # version 4 appends metadata; a plain integer dtype has them all empty.
        if (not self.built and isinstance(state, tuple) and len(state) in (8, 9)
                and state[0] == len(state) - 5 and _text(state[1]) in _BYTE_ORDERS
                and state[2:8] == (None, None, None, -1, -1, 0) and state[8:] in ((), (None,))):
            self.byteorder, self.built = _text(state[1]), True
            return
        raise UnsafePickleError(
            f"refused numpy dtype state {clipped_repr(state)} for {self!r}: only a plain "
            "dtype's state (a byte order; no fields, subarray or flags) is allowed, once")

    def numpy(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in ("<", ">") else dtype


class _Array:
    """``_reconstruct(ndarray, (0,), b'b')`` in a CIFAR-10 pickle: a placeholder that one BUILD
    fills from a checked ``(version, shape, dtype, is_fortran, bytes)``; then ``array``."""

    __slots__ = ("array",)

    def __init__(self, array: Optional[np.ndarray] = None):
        self.array = array

    def __repr__(self) -> str:
        return "ndarray(<no data yet>)" if self.array is None else repr(self.array)

    def build(self, state: Any) -> None:
        # numpy's state is (1, shape, dtype, is_fortran, rawdata), or the same without the 1
        if (self.array is not None or not isinstance(state, tuple) or len(state) not in (4, 5)
                or (len(state) == 5 and state[0] != 1)):
            raise UnsafePickleError(f"refused numpy array state {clipped_repr(state)}: expected "
                                    "(1, shape, dtype, is_fortran, bytes), once per array")
        shape, dtype, is_fortran, raw = state[-4:]
        if type(is_fortran) not in (bool, int) or is_fortran not in (0, 1):
            raise UnsafePickleError(f"refused numpy array state: is_fortran must be a bool, got "
                                    f"{clipped_repr(is_fortran)}")
        self.array = _array_from_bytes(raw, dtype, shape, "F" if is_fortran else "C")


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """The array a pickle declares, as a view of its bytes once they are checked: a plain
    integer dtype, 1 or 2 dimensions, and exactly ``prod(shape) * itemsize`` bytes."""
    if not isinstance(dtype, _Dtype):
        raise UnsafePickleError(f"refused numpy array with dtype {clipped_repr(dtype)}: "
                                "not a plain integer dtype")
    if not (isinstance(shape, tuple) and 1 <= len(shape) <= 2
            and all(type(n) is int and 0 <= n <= _MAX_FILE_BYTES for n in shape)):
        raise UnsafePickleError(f"refused numpy array shape {clipped_repr(shape)}: CIFAR-10 arrays "
                                f"have 1 or 2 dimensions of at most {_MAX_FILE_BYTES}")
    if order not in ("C", "F"):
        raise UnsafePickleError(f"refused numpy array order {clipped_repr(order)}: expected 'C' or 'F'")
    dt = dtype.numpy()
    nbytes = math.prod(shape) * dt.itemsize
    if type(raw) not in (bytes, bytearray) or len(raw) != nbytes:
        got = f"{len(raw)} bytes" if type(raw) in (bytes, bytearray) else type(raw).__name__
        raise UnsafePickleError(f"refused numpy array of shape {shape} and dtype {dt}: it needs "
                                f"exactly {nbytes} bytes, the file gives {got}")
    return np.frombuffer(raw, dtype=dt).reshape(shape, order=order)


def _dtype(code: Any, align: Any = False, copy: Any = True) -> _Dtype:
    """Stand-in for ``numpy.dtype``, called by numpy pickles as ``dtype('u1', False, True)``
    (align and copy change nothing for a plain integer type)."""
    text = _text(code)
    if text is None or not _DTYPE_CODE.match(text):
        raise UnsafePickleError(
            f"refused numpy dtype {clipped_repr(code)}: CIFAR-10 arrays are plain integers (u1 "
            "data, integer labels), so object, structured, string and float dtypes are never needed")
    return _Dtype(text)


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _Array:
    """Stand-in for numpy's ``_reconstruct``: numpy pickles call it as
    ``_reconstruct(ndarray, (0,), b'b')`` and give shape, dtype and data with BUILD."""
    if subtype is not _NDARRAY or shape != (0,) or _text(typecode) != "b":
        raise UnsafePickleError(f"refused numpy _reconstruct{clipped_repr((subtype, shape, typecode))}: "
                                "numpy pickles call it as _reconstruct(ndarray, (0,), b'b')")
    return _Array()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> _Array:
    """Stand-in for numpy's ``_frombuffer`` (protocol 5 pickles), with BUILD's checks."""
    return _Array(_array_from_bytes(buf, dtype, shape, _text(order)))


def _scalar(dtype: Any, raw: Any) -> int:
    """Stand-in for numpy's ``scalar`` (a numpy integer, in a list of labels): a Python int."""
    return int(_array_from_bytes(raw, dtype, (1,), "C")[0])


class _NdarrayName:
    """``numpy.ndarray`` in a pickle: only ``_reconstruct``'s first argument. Calling it would
    let the file declare any shape and strides over a short buffer, so that is refused."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"

    def __call__(self, *args: Any) -> None:
        raise UnsafePickleError("refused to call numpy.ndarray(...): numpy pickles never do; a "
                                "file that does can declare any shape over a few bytes")


_NDARRAY = _NdarrayName()


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """What ``_codecs.encode`` does in numpy's protocol-2 pickles: str -> latin-1 bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed as (str, 'latin1'), got "
                                     f"({type(text).__name__}, {clipped_repr(encoding)})")
    return text.encode("latin-1")


def _allowed_globals() -> Dict[Tuple[str, str], Callable[..., Any]]:
    """The only globals a CIFAR-10 file may name, each mapped to its checking stand-in.

    Python 2 originals use ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype``; numpy 2 writes ``numpy._core``; numpy scalars use ``multiarray.scalar``;
    protocol 5 uses ``numeric._frombuffer``; protocol 2 from Python 3 encodes bytes with
    ``_codecs.encode`` (allowed for latin-1 only).
    """
    allowed: Dict[Tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()
_CALLABLE = tuple(_ALLOWED_GLOBALS.values())


class _OpcodeBudget(dict):
    """An unpickler's dispatch table that counts lookups, one per opcode, and refuses past
    :data:`_MAX_OPCODES`: an opcode of one byte can add an object of dozens (an empty list, a
    MARK), so the count bounds what a file can make the unpickler allocate."""

    def __init__(self, table: Dict[int, Callable[..., Any]]):
        super().__init__(table)
        self.left = _MAX_OPCODES

    def __getitem__(self, code: int) -> Callable[..., Any]:
        self.left -= 1
        if self.left < 0:
            raise UnsafePickleError(f"more than {_MAX_OPCODES} pickle opcodes, where a CIFAR-10 "
                                    "batch has about 30000")
        try:
            return dict.__getitem__(self, code)
        except KeyError:
            raise pickle.UnpicklingError(f"invalid pickle opcode {bytes([code])!r}") from None


# Opcodes that call or fetch things CIFAR-10 files (numpy arrays in dicts and lists) never need.
_NEVER_USED = ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID",
               "NEXT_BUFFER", "READONLY_BUFFER")


def _refuse_opcode(name: str) -> Callable[[Any], None]:
    def refuse(self: Any) -> None:
        raise UnsafePickleError(f"refused pickle opcode {name}: CIFAR-10 files never use it")
    return refuse


class _SafeUnpickler(pickle._Unpickler):
    """Python's pure-Python unpickler (its opcodes can be overridden, unlike the C one's) with
    globals from :data:`_ALLOWED_GLOBALS` only (never imported), REDUCE calling only those,
    BUILD applying only to the numpy stand-ins, lengths checked before allocating, no opcodes
    that CIFAR-10 files never use, and at most :data:`_MAX_OPCODES` opcodes. About as fast as
    the C unpickler on a real batch: it holds 30,000 opcodes and one 30 MB string."""

    def __init__(self, blob: bytes):
        # io.BytesIO never returns more than is there; Python 2 str -> bytes, as numpy expects
        super().__init__(io.BytesIO(blob), encoding="bytes")
        self.dispatch = _OpcodeBudget(type(self).dispatch)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {clip(f'{module}.{name}')}: a CIFAR-10 batch only "
                "rebuilds numpy arrays, so this file was not made by CIFAR-10 (nothing was run)"
            ) from None

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in _CALLABLE) or type(args) is not tuple:
            what = getattr(func, "__name__", None) or clipped_repr(func)
            raise UnsafePickleError(f"refused to call {what} with {_describe(args)}: only "
                                    "numpy's rebuilders are called, with a tuple of arguments")
        self.stack[-1] = func(*args)

    def load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, (_Array, _Dtype)):
            raise UnsafePickleError(f"refused to set the state (BUILD) of a {type(target).__name__}: "
                                    "CIFAR-10 pickles only set numpy arrays' and dtypes' state")
        target.build(state)

    def load_bytearray8(self) -> None:
        # The stdlib allocates bytearray(declared size) before reading; read first instead.
        # Appended as bytes: only the numpy stand-ins read it, and a 30 MB copy is saved.
        size, = struct.unpack("<Q", self.read(8))
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 declares {size} bytes, the file holds {len(data)}")
        self.append(data)

    dispatch = {**pickle._Unpickler.dispatch,
                **{getattr(pickle, name)[0]: _refuse_opcode(name) for name in _NEVER_USED},
                pickle.REDUCE[0]: load_reduce, pickle.BUILD[0]: load_build,
                pickle.BYTEARRAY8[0]: load_bytearray8}


def _unpickle_dict(blob: bytes, where: str, keys: Tuple[str, ...]) -> Dict[str, Any]:
    """Unpickle a dict safely, with bytes keys decoded and arrays in place of their stand-ins,
    and check that ``keys`` are present."""
    try:
        obj = _SafeUnpickler(blob).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{where}: {exc}") from None
    except Exception as exc:  # untrusted input: any failure means a bad file, reported as such
        raise DataFormatError(f"{where}: not a readable CIFAR-10 pickle (truncated or corrupt?): "
                              f"{type(exc).__name__}: {clip(str(exc))}") from exc
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    d = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataFormatError(f"{where}: missing key(s) {missing}, found {clipped_repr(list(d))}")
    for k in keys:
        if isinstance(d[k], _Array):
            if d[k].array is None:
                raise UnsafePickleError(f"{where}: '{k}' is a numpy array that was never given its "
                                        "data (no BUILD)")
            d[k] = d[k].array
    return d


# ----------------------------------------------------------------------------- download


def download_cifar10(root: Union[str, Path], *, url: str = CIFAR10_URL,
                     md5: str = CIFAR10_MD5) -> Path:
    """Fetch the official ``cifar-10-python.tar.gz`` (about 163 MB) into ``root``.

    Kept when already there with the right md5. The md5 is checked before the file appears
    (atomic write), so an interrupted or corrupt download leaves nothing behind.

    Raises:
        DownloadError (an OSError): the transfer failed; one line naming the URL and why.
        ValueError: the md5 does not match (names both digests).
    """
    dest = Path(root).expanduser() / CIFAR10_ARCHIVE
    if dest.is_file() and _md5_file(dest) == md5:
        return dest
    digest, chunks, size = hashlib.md5(), [], 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress(total=total, desc="cifar-10", unit="B", unit_scale=True) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    size += len(chunk)
                    if size > _MAX_DOWNLOAD_BYTES:
                        raise ValueError(f"more than {_MAX_DOWNLOAD_BYTES} bytes, where the "
                                         "archive has 163 MB")
                    digest.update(chunk)
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # URLError's own text is "<urlopen error ...>"; its reason says what went wrong
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise DownloadError(f"download of {url} failed: {clip(str(reason) or type(exc).__name__)}; "
                            "get the archive by hand and pass --data-dir") from exc
    if digest.hexdigest() != md5:
        raise ValueError(f"download of {url} has md5 {digest.hexdigest()}, expected {md5}")
    return atomic_write_bytes(dest, b"".join(chunks))


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
