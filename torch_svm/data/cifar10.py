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
official archive (md5-checked). Splits and preprocessing are :mod:`torch_svm.data.load`'s.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from torch_svm.data.safe_pickle import MAX_PICKLE_BYTES, UnsafePickleError, unpickle_dict  # noqa: F401 (re-exported: callers catch it here)
from torch_svm.errors import (DataFormatError, MissingFileError, TorchSVMError, clip,
                              clipped_repr, describe)
from torch_svm.files import atomic_write_bytes, open_regular
from torch_svm.progress import progress

__all__ = ["read_cifar10", "download_cifar10"]

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
_MAX_DOWNLOAD_BYTES = 512 << 20  # the archive is 163 MB


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
    raise MissingFileError(
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
                raise MissingFileError(f"CIFAR-10 file {str(path)!r} is missing: expected "
                                        f"{', '.join(_CIFAR_FILES)} in {str(source)!r}")
            yield member, _read_file(path), str(path)
        return
    seen = set()
    with open_regular(source, expected=f"a CIFAR-10 file ({CIFAR10_ARCHIVE} or a folder)") as fh:
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
            if isinstance(exc, (TorchSVMError, FileNotFoundError)):
                raise
            raise DataFormatError(
                f"{source}: not a readable tar archive (expected {CIFAR10_ARCHIVE} or a folder; "
                f"truncated or corrupt?): {type(exc).__name__}: {clip(str(exc))}") from exc
    missing = [m for m in _CIFAR_FILES if m not in seen]
    if missing:
        raise MissingFileError(f"CIFAR-10 archive {str(source)!r} lacks {', '.join(missing)} "
                                f"(expected {_CIFAR_FOLDER}/{{{','.join(_CIFAR_FILES)}}})")


def _read_file(path: Path) -> bytes:
    """The content of ``path``, a regular file, its size checked first."""
    with open_regular(path, expected=f"a CIFAR-10 file ({CIFAR10_ARCHIVE} or one of "
                                     f"{', '.join(_CIFAR_FILES)})") as fh:
        size = os.fstat(fh.fileno()).st_size
        _check_size(size, str(path))
        return fh.read(size)


def _check_size(size: int, where: str) -> None:
    if size > MAX_PICKLE_BYTES:
        raise DataFormatError(f"{where}: {size} bytes, more than the {MAX_PICKLE_BYTES} a CIFAR-10 "
                              "file may have (a batch is 31 MB)")


def _read_batch(blob: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """One ``data_batch_*`` / ``test_batch``: ``data (N, 3072) uint8`` with N <= 10000, and
    ``labels (N,)`` int64 in [0, 10)."""
    d = unpickle_dict(blob, where, ("data", "labels"))
    data = d["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _ROW_BYTES and len(data) <= _BATCH_ROWS):
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else describe(data))
        raise DataFormatError(f"{where}: 'data' must be a uint8 array of shape (N, {_ROW_BYTES}) "
                              f"with N <= {_BATCH_ROWS}, got {got}")
    return data, _read_labels(d["labels"], len(data), where)


def _read_labels(labels: Any, n: int, where: str) -> np.ndarray:
    """``labels`` (a list of ints, as the official files hold, or an integer array) as
    ``(n,)`` int64 in [0, 10)."""
    if not ((isinstance(labels, np.ndarray) and labels.ndim == 1)  # integer: no other dtype loads
            or (isinstance(labels, list) and all(type(v) is int for v in labels))):
        raise DataFormatError(f"{where}: 'labels' must be {n} integers (one per row of 'data'), "
                              f"got {describe(labels)}")
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
    names = unpickle_dict(blob, where, ("label_names",))["label_names"]
    if not (isinstance(names, list) and len(names) == _NUM_CLASSES
            and all(isinstance(s, (str, bytes)) and 0 < len(s) <= _MAX_NAME for s in names)):
        raise DataFormatError(f"{where}: 'label_names' must be a list of {_NUM_CLASSES} class names "
                              f"(str or bytes of 1 to {_MAX_NAME} characters), got {describe(names)}")
    return tuple(s.decode("latin-1") if isinstance(s, bytes) else s for s in names)


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
        raise DataFormatError(f"download of {url} has md5 {digest.hexdigest()}, expected {md5}")
    return atomic_write_bytes(dest, b"".join(chunks))


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
