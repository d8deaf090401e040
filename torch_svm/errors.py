"""The project's error types, and the argument checks that raise them.

Every error torch-svm raises on purpose, for bad input, bad files or a diverged run, is a
:class:`TorchSVMError`. Each subclass also derives from the builtin a caller would expect
(``ValueError`` for bad values and files, ``TypeError`` for bad types, ``OSError`` for files
that cannot be read or written), so ``except ValueError`` keeps working. The command line
turns these, and running out of memory, into one line and exit status 2; any other exception
is a bug, and its traceback is shown.

The checks (:func:`check_int`, :func:`check_real`, :func:`check_choice`,
:func:`check_memory`) name the argument and echo the value, clipped (:func:`clip`,
:func:`clipped_repr`) so that a value from an untrusted file never floods a message.
"""
from __future__ import annotations

import math
import os
import reprlib
from typing import Any, Iterable, Optional

import numpy as np

__all__ = ["TorchSVMError", "ArgumentError", "ArgumentTypeError", "DataFormatError",
           "FileAccessError", "MissingFileError", "CheckpointError"]


class TorchSVMError(Exception):
    """Base class of every error torch-svm raises on purpose (bad input, bad files, a diverged run).

    The CLI reports these as one line and exit status 2; anything else is a bug and shows a
    traceback.
    """


class ArgumentError(TorchSVMError, ValueError):
    """An argument has a bad value; the message names the argument and echoes the value."""


class ArgumentTypeError(TorchSVMError, TypeError):
    """An argument has the wrong type; the message names the argument and the type given."""


class UsageError(TorchSVMError, ValueError):
    """Bad command-line input that library validation cannot see (a flag that does not apply)."""


class DataFormatError(TorchSVMError, ValueError):
    """A data file exists but is not what it should be (truncated, wrong keys, shapes, labels)."""


class FileAccessError(TorchSVMError, OSError):
    """A file or folder cannot be read or written: permissions, a FIFO or device, a broken disk."""


class MissingFileError(FileAccessError, FileNotFoundError):
    """A file or folder that was named does not exist."""


class CheckpointError(TorchSVMError, ValueError):
    """A checkpoint file is unreadable, unsafe, or not a torch-svm LinearSVM checkpoint."""


# ----------------------------------------------------------------------------- argument checks


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (with "...") so an echoed value never floods a message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_int(name: str, value: Any, *, min: Optional[int] = None,
              max: Optional[int] = None) -> int:
    """``value`` as an int in ``[min, max]``; ArgumentError naming ``name`` and echoing the value.

    bool is refused; numpy integers are accepted.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = int(value)
        ok = (min is None or value >= min) and (max is None or value <= max)
    if not ok:
        bounds = " and ".join(b for b in (f">= {min}" if min is not None else "",
                                          f"<= {max}" if max is not None else "") if b)
        raise ArgumentError(f"{name} must be an integer{' ' + bounds if bounds else ''}, "
                         f"got {clip(repr(value), 100)}")
    return value


def check_real(name: str, value: Any, *, min: Optional[float] = None,
               max: Optional[float] = None, min_open: bool = False,
               max_open: bool = False) -> float:
    """``value`` as a finite float in the range (``min_open``/``max_open`` exclude the ends);
    ArgumentError naming ``name`` and echoing the value. bool is refused."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = (math.isfinite(value)
              and (min is None or (value > min if min_open else value >= min))
              and (max is None or (value < max if max_open else value <= max)))
    if not ok:
        bounds = " and ".join(b for b in (
            f"{'>' if min_open else '>='} {min:g}" if min is not None else "",
            f"{'<' if max_open else '<='} {max:g}" if max is not None else "") if b)
        raise ArgumentError(f"{name} must be a finite number{' ' + bounds if bounds else ''}, "
                         f"got {clip(repr(value), 100)}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; ArgumentError naming ``name`` otherwise."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise ArgumentError(f"{name} must be one of {choices}, got {clip(repr(value), 100)}")
    return value


def check_memory(what: str, nbytes: int) -> None:
    """ArgumentError naming ``what`` when ``nbytes`` exceed half of this machine's memory, before
    anything that large is allocated."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no cheap way to know
        return
    if nbytes > total // 2:
        raise ArgumentError(f"{what} would need about {nbytes / 2**30:.3g} GiB, more than half of "
                         f"this machine's {total / 2**30:.3g} GiB; use smaller sizes")


class _ClippedRepr(reprlib.Repr):
    """reprlib, which bounds containers and str, made to bound bytes too (cut before their
    repr is made) and to name huge ints by size (repr of one over 4300 digits raises)."""

    def repr_bytes(self, x: bytes, level: int) -> str:
        return self.repr_str(x, level)

    repr_bytearray = repr_bytes

    def repr_int(self, x: int, level: int) -> str:
        return f"<int of {x.bit_length()} bits>" if x.bit_length() > 256 else repr(x)


def clipped_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` in at most ``limit`` characters, made without ever building the full
    repr: for messages that echo values from untrusted files (a 30 MB string, a list of a
    million names, an int of a million digits)."""
    r = _ClippedRepr()
    r.maxstring = r.maxother = limit
    r.maxlevel = 3
    return clip(r.repr(value), limit)


def describe(value: Any) -> str:
    """A value from a file, for an error message: its type, length and clipped repr."""
    size = f" of length {len(value)}" if isinstance(value, (list, tuple, dict, str, bytes)) else ""
    return f"{type(value).__name__}{size}: {clipped_repr(value)}"
