"""CIFAR-10, the "python version" (``cifar-10-batches-py``), read safely.

The batches are Python 2 pickles. They are read with a restricted unpickler that can only
rebuild numpy arrays (:class:`UnsafePickleError` for anything else), so a tampered file cannot
run code. :func:`read_cifar10` reads the folder or the ``cifar-10-python.tar.gz`` archive
without unpacking it; :func:`download_cifar10` fetches the official archive (md5-checked).
Splits and preprocessing are :mod:`torch_svm.data`'s.
"""
from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from torch_svm.errors import DataFormatError
from torch_svm.utils import atomic_write_bytes, progress

__all__ = ["read_cifar10", "locate_cifar10", "download_cifar10", "UnsafePickleError",
           "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_ARCHIVE", "CIFAR10_SHAPE"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_SHAPE = (32, 32, 3)  # (H, W, C) of the rows we return; files store (C, H, W) planes

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch", "batches.meta")


class UnsafePickleError(DataFormatError):
    """A pickle asked for a global outside the numpy-array allowlist; nothing was called."""


def read_cifar10(data_dir: Union[str, Path]
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Tuple[str, ...]]:
    """Read CIFAR-10's python version from a folder or the archive, without unpacking.

    ``data_dir`` may be ``cifar-10-batches-py/``, its parent, ``cifar-10-python.tar.gz`` or a
    folder holding that archive (the folder wins when both are there).

    Returns:
        X_train: ``(50000, 32, 32, 3)`` uint8, batches 1..5 in order; y_train: ``(50000,)`` int64.
        X_test: ``(10000, 32, 32, 3)`` uint8; y_test: ``(10000,)`` int64.
        class_names: the 10 ``label_names`` of ``batches.meta``.
    (Counts are whatever the files hold; the official ones hold these.)
    """
    source = locate_cifar10(data_dir)
    contents: Dict[str, Any] = {}
    for member, fileobj, where in _open_members(source):
        contents[member] = (_read_meta if member == "batches.meta" else _read_batch)(fileobj, where)
    class_names = contents.pop("batches.meta")
    for member, (_, y) in contents.items():
        if len(y) and y.max() >= len(class_names):
            raise DataFormatError(f"{_where(source, member)}: labels must be in "
                                  f"[0, {len(class_names)}), got max {int(y.max())}")
    X_train, y_train = _stack([contents.pop(m) for m in _CIFAR_TRAIN])
    X_test, y_test = _stack([contents.pop("test_batch")])
    return X_train, y_train, X_test, y_test, class_names


def locate_cifar10(data_dir: Union[str, Path], quiet: bool = False) -> Optional[Path]:
    """The ``cifar-10-batches-py`` folder or the archive that ``data_dir`` points at."""
    path = Path(data_dir).expanduser()
    candidates = [path] if path.is_file() else [
        path if (path / "data_batch_1").exists() or path.name == _CIFAR_FOLDER else None,
        path / _CIFAR_FOLDER, path / CIFAR10_ARCHIVE]
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


def _where(source: Path, member: str) -> str:
    """How errors name a file: the path, or ``archive::member`` inside the tar."""
    return str(source / member) if source.is_dir() else f"{source}::{member}"


def _open_members(source: Path) -> Iterator[Tuple[str, IO[bytes], str]]:
    """Yield ``(name, file object, where)`` for each of the 7 CIFAR files, in storage order.

    The archive is read as a stream in one pass (gzip cannot seek back cheaply); a missing
    file raises FileNotFoundError naming it.
    """
    if source.is_dir():
        for member in _CIFAR_FILES:
            path = source / member
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR-10 file {str(path)!r} is missing: expected "
                                        f"{', '.join(_CIFAR_FILES)} in {str(source)!r}")
            with open(path, "rb") as fh:
                yield member, fh, str(path)
        return
    seen = set()
    try:
        with tarfile.open(source, "r|*") as tar:
            for info in tar:
                member = PurePosixPath(info.name).name
                if info.isfile() and member in _CIFAR_FILES and member not in seen:
                    seen.add(member)
                    yield member, tar.extractfile(info), _where(source, info.name)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, (FileNotFoundError, DataFormatError)):
            raise
        raise DataFormatError(f"{source}: not a readable tar archive (expected {CIFAR10_ARCHIVE} or a "
                              f"folder; truncated or corrupt?): {type(exc).__name__}: {exc}") from exc
    missing = [m for m in _CIFAR_FILES if m not in seen]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 archive {str(source)!r} lacks {', '.join(missing)} "
                                f"(expected {_CIFAR_FOLDER}/{{{','.join(_CIFAR_FILES)}}})")


def _read_batch(fileobj: IO[bytes], where: str) -> Tuple[np.ndarray, np.ndarray]:
    """One ``data_batch_*`` / ``test_batch``: ``data (N, 3072) uint8`` and ``labels (N,)``."""
    d = _unpickle_dict(fileobj, where, ("data", "labels"))
    data, labels = d["data"], d["labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072):
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise DataFormatError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), got {got}")
    try:
        y = np.asarray(labels)
    except Exception:  # ragged or exotic: reported below like any other bad value
        y = np.asarray(None)
    if y.ndim != 1 or len(y) != len(data) or (len(y) and y.dtype.kind not in "iu"):
        raise DataFormatError(f"{where}: 'labels' must be {len(data)} integers (one per row of "
                              f"'data'), got {type(labels).__name__} of shape {y.shape} "
                              f"dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataFormatError(f"{where}: labels must be >= 0, got min {int(y.min())}")
    return data, y


def _read_meta(fileobj: IO[bytes], where: str) -> Tuple[str, ...]:
    """``batches.meta``: the class names."""
    names = _unpickle_dict(fileobj, where, ("label_names",))["label_names"]
    if not isinstance(names, list) or not names or not all(isinstance(s, (str, bytes)) for s in names):
        raise DataFormatError(f"{where}: 'label_names' must be a non-empty list of strings, "
                              f"got {names!r:.200}")
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


# ----------------------------------------------------------------------------- safe pickles


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """What ``_codecs.encode`` does in numpy's protocol-2 pickles: str -> latin-1 bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed as (str, 'latin1'), got "
                                     f"({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _numpy_globals() -> Dict[Tuple[str, str], Callable[..., Any]]:
    """The only globals a CIFAR batch may name, resolved without importing ``numpy.core``.

    Python 2 originals use ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype``; numpy 2 writes ``numpy._core``; scalars use ``multiarray.scalar``;
    protocol 5 uses ``numeric._frombuffer``; protocol 2 from Python 3 encodes bytes with
    ``_codecs.encode`` (allowed for latin-1 only).
    """
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.empty(1).__reduce_ex__(5)[0]
    allowed: Dict[Tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_ALLOWED_GLOBALS = _numpy_globals()


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler whose globals come from :data:`_ALLOWED_GLOBALS` only (never imported)."""

    def __init__(self, fileobj: IO[bytes], where: str):
        super().__init__(fileobj, encoding="bytes")  # Python 2 str -> bytes, as numpy expects
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._where}: refused to load global {module}.{name}: a CIFAR-10 batch only "
                "rebuilds numpy arrays, so this file was not made by CIFAR-10 (nothing was run)"
            ) from None


def _unpickle_dict(fileobj: IO[bytes], where: str, keys: Tuple[str, ...]) -> Dict[str, Any]:
    """Unpickle a dict safely, with bytes keys decoded, and check that ``keys`` are present."""
    try:
        obj = _SafeUnpickler(fileobj, where).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # untrusted input: any failure means a bad file, reported as such
        raise DataFormatError(f"{where}: not a readable CIFAR-10 pickle (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    d = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataFormatError(f"{where}: missing key(s) {missing}, found {sorted(map(str, d))}")
    return d


# ----------------------------------------------------------------------------- download


def download_cifar10(root: Union[str, Path], *, url: str = CIFAR10_URL,
                     md5: str = CIFAR10_MD5) -> Path:
    """Fetch the official ``cifar-10-python.tar.gz`` (about 163 MB) into ``root``.

    Kept when already there with the right md5. The md5 is checked before the file appears
    (atomic write), so an interrupted or corrupt download leaves nothing behind.
    Raises ValueError naming both digests when the md5 does not match.
    """
    dest = Path(root).expanduser() / CIFAR10_ARCHIVE
    if dest.is_file() and _md5_file(dest) == md5:
        return dest
    digest, chunks = hashlib.md5(), []
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress(total=total, desc="cifar-10", unit="B", unit_scale=True) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                chunks.append(chunk)
                bar.update(len(chunk))
    if digest.hexdigest() != md5:
        raise ValueError(f"download of {url} has md5 {digest.hexdigest()}, expected {md5}")
    return atomic_write_bytes(dest, b"".join(chunks))


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
