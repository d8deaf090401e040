"""A restricted unpickler for numpy-array pickles, the format of CIFAR-10's batch files.

A pickle is a small program: read naively, a tampered file can run code, crash the process or
exhaust its memory. :func:`unpickle_dict` rebuilds only what that format holds (a dict of byte
strings, lists of ints and plain integer numpy arrays) and checks each step before numpy sees a
byte; anything else raises :class:`UnsafePickleError` before it is run or allocated. See
:mod:`torch_svm.cifar10` for what it refuses and why.
"""
from __future__ import annotations

import io
import math
import pickle
import re
import struct
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from torch_svm.errors import DataFormatError, clip, clipped_repr, describe

__all__: list = []    # internal: used by torch_svm itself

MAX_PICKLE_BYTES = 64 << 20    # a real CIFAR-10 batch is 31 MB: 10000 x 3072 pixels, labels, file names
MAX_OPCODES = 100_000          # a real batch has about 30,000 (one or two per label, file name)


class UnsafePickleError(DataFormatError):
    """A pickle asked for something no CIFAR-10 file needs (a global outside the allowlist, a
    non-integer dtype, an array whose bytes do not match its shape, ...); it was refused before
    anything was run or allocated."""



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
            and all(type(n) is int and 0 <= n <= MAX_PICKLE_BYTES for n in shape)):
        raise UnsafePickleError(f"refused numpy array shape {clipped_repr(shape)}: CIFAR-10 arrays "
                                f"have 1 or 2 dimensions of at most {MAX_PICKLE_BYTES}")
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
    :data:`MAX_OPCODES`: an opcode of one byte can add an object of dozens (an empty list, a
    MARK), so the count bounds what a file can make the unpickler allocate."""

    def __init__(self, table: Dict[int, Callable[..., Any]]):
        super().__init__(table)
        self.left = MAX_OPCODES

    def __getitem__(self, code: int) -> Callable[..., Any]:
        self.left -= 1
        if self.left < 0:
            raise UnsafePickleError(f"more than {MAX_OPCODES} pickle opcodes, where a CIFAR-10 "
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
    that CIFAR-10 files never use, and at most :data:`MAX_OPCODES` opcodes. About as fast as
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
            raise UnsafePickleError(f"refused to call {what} with {describe(args)}: only "
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


def unpickle_dict(blob: bytes, where: str, keys: Tuple[str, ...]) -> Dict[str, Any]:
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
