"""Data sets for the linear SVM: CIFAR-10 (python version, read safely) and the embedded digits.

Both go through the same CS231n-style splits and preprocessing (:func:`load_dataset`):

* train = the first ``num_train`` images of the training pool, val = the next ``num_val``,
  test = the first ``num_test`` images of the test pool, dev = ``num_dev`` images drawn
  without replacement (seeded) from train;
* pixels stay unscaled: the per-pixel mean image of the *train* split,
  :math:`\\mu = \\frac{1}{N_{train}} \\sum_i x_i`, is subtracted from every split;
* the bias trick appends a column of ones, so a row is :math:`[x - \\mu, 1]` and the last row
  of ``W: (D + 1, C)`` is the bias.

Rows are images flattened in ``image_shape = (H, W, C)`` order, as the assignment does
(``X[i, :D].reshape(image_shape)`` is an image), so a template ``W[:D, c]`` reshapes the same way.

CIFAR-10 batches are Python 2 pickles. They are read with a restricted unpickler that can only
rebuild numpy arrays (:class:`UnsafePickleError` for anything else), so a tampered file cannot
run code.
"""
from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from torch_svm.utils import atomic_write_bytes, progress

__all__ = ["DataConfig", "Dataset", "DataFormatError", "UnsafePickleError", "load_dataset",
           "read_cifar10", "read_digits", "download_cifar10", "DATASETS", "CIFAR10_URL",
           "CIFAR10_MD5"]

#: Names accepted by :func:`load_dataset`.
DATASETS = ("digits", "cifar10")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch", "batches.meta")
_CIFAR_SHAPE = (32, 32, 3)  # (H, W, C) of the rows we return; files store (C, H, W) planes
_DIGITS_SHAPE = (8, 8, 1)

# Per data set: (num_train, num_val, num_test, num_dev) used where DataConfig leaves None.
_DEFAULTS = {
    "cifar10": (49000, 1000, 1000, 500),  # the assignment's numbers; num_test=10000 for all
    "digits": (1297, 200, 300, 100),      # 1797 images: 1297 + 200 + 300 tile the file
}
_FLOAT_DTYPES = {"float32": (torch.float32, np.float32), "float64": (torch.float64, np.float64)}


class DataFormatError(ValueError):
    """A data file exists but is not what it should be (truncated, wrong keys, shapes, labels)."""


class UnsafePickleError(DataFormatError):
    """A pickle asked for a global outside the numpy-array allowlist; nothing was called."""


@dataclass
class DataConfig:
    """How to split and preprocess; ``None`` counts take the data set's default.

    Defaults: cifar10 49000 / 1000 / 1000 / 500 (train / val / test / dev), digits
    1297 / 200 / 300 / 100.
    """

    num_train: Optional[int] = None  # first images of the training pool
    num_val: Optional[int] = None    # the images right after the train split
    num_test: Optional[int] = None   # first images of the test pool (cifar10 has 10000)
    num_dev: Optional[int] = None    # drawn without replacement from train, for quick checks (None: capped at num_train)
    bias: bool = True                # append a column of ones (the bias trick), last column
    dtype: str = "float32"           # "float32" or "float64" for the X tensors
    seed: int = 0                    # seeds the dev draw only (a private generator, seed % 2**32)


@dataclass(eq=False)  # tensors have no single truth value
class Dataset:
    """The splits as torch tensors, with what is needed to read them back as images.

    ``X_*: (N, D + bias)`` in ``config.dtype``, rows :math:`[x - \\mu, 1]`; ``y_*: (N,)``
    int64 in ``[0, num_classes)``; ``mean_image: (D,)`` the train mean :math:`\\mu`, so
    ``(X[i, :D] + mean_image).reshape(image_shape)`` is the original image.
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    X_dev: torch.Tensor
    y_dev: torch.Tensor
    class_names: Tuple[str, ...]
    image_shape: Tuple[int, int, int]  # (H, W, C); D = H * W * C
    mean_image: torch.Tensor           # (D,)
    bias: bool
    config: DataConfig                 # with every default filled in

    @property
    def num_features(self) -> int:
        """Columns of X, bias column included: D + bias."""
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------- entry point


def load_dataset(name: str = "digits", data_dir: Union[str, Path, None] = None,
                 config: Optional[DataConfig] = None, *, download: bool = False) -> Dataset:
    """Load ``name`` ("digits" or "cifar10"), split and preprocess it as in CS231n.

    Args:
        name: "digits" (embedded, needs nothing) or "cifar10".
        data_dir: for cifar10 only: the ``cifar-10-batches-py`` folder, its parent, the
            ``cifar-10-python.tar.gz`` archive, or a folder holding the archive.
        config: counts, bias, dtype and dev seed; default :class:`DataConfig()`.
        download: for cifar10 only: fetch the official archive into ``data_dir`` when no copy
            is found there (md5-checked). Off by default; never needed for digits.

    Raises:
        ValueError: bad name, config value or argument combination (names it, echoes it).
        FileNotFoundError: cifar10 files missing (names the path and what was expected).
        DataFormatError / UnsafePickleError: a file exists but is corrupt or unsafe.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    config = _resolve_config(name, DataConfig() if config is None else config)
    if name == "digits":
        if data_dir is not None or download:
            raise ValueError(f"data_dir and download only apply to name='cifar10'; digits is "
                             f"embedded, got data_dir={data_dir!r}, download={download!r}")
        images, labels, class_names = read_digits()
        n = len(labels)
        used = config.num_train + config.num_val + config.num_test
        if used > n:
            raise ValueError(f"num_train + num_val + num_test must be <= {n} for digits, got "
                             f"{config.num_train} + {config.num_val} + {config.num_test} = {used}")
        flat = images.reshape(n, -1)  # (1797, 64), a view
        # The test split is the tail of the (pre-shuffled) file, train and val its head.
        return _make_dataset(name, flat[:n - config.num_test], labels[:n - config.num_test],
                             flat[n - config.num_test:], labels[n - config.num_test:],
                             config, class_names, _DIGITS_SHAPE)
    if data_dir is None:
        raise ValueError(
            "name='cifar10' needs data_dir (--data-dir DIR): the cifar-10-batches-py folder, its "
            f"parent, or {_CIFAR_ARCHIVE}; get the 'CIFAR-10 python version' from {CIFAR10_URL} "
            "(or pass download=True, --download on the command line)")
    if download and _locate_cifar10(data_dir, quiet=True) is None:
        download_cifar10(data_dir)
    X_train, y_train, X_test, y_test, class_names = read_cifar10(data_dir)
    return _make_dataset(name, X_train.reshape(len(X_train), -1), y_train,
                         X_test.reshape(len(X_test), -1), y_test, config, class_names,
                         _CIFAR_SHAPE)


def _resolve_config(name: str, config: DataConfig) -> DataConfig:
    """Fill ``None`` counts with the data set's defaults and check every field."""
    if not isinstance(config, DataConfig):
        raise TypeError(f"config must be a DataConfig, got {type(config).__name__}")
    defaults = dict(zip(("num_train", "num_val", "num_test", "num_dev"), _DEFAULTS[name]))
    filled = {k: d if getattr(config, k) is None else getattr(config, k)
              for k, d in defaults.items()}
    if config.num_dev is None and isinstance(filled["num_train"], (int, np.integer)):
        filled["num_dev"] = min(filled["num_dev"], filled["num_train"])  # a small train split
    for field, value in filled.items():
        lowest = 1 if field == "num_train" else 0
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
            raise ValueError(f"{field} must be an integer >= {lowest}, got {value!r}")
    if filled["num_dev"] > filled["num_train"]:
        raise ValueError(f"num_dev must be <= num_train ({filled['num_train']}), "
                         f"got {filled['num_dev']}")
    if not isinstance(config.bias, bool):
        raise ValueError(f"bias must be True or False, got {config.bias!r}")
    if config.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_FLOAT_DTYPES)}, got {config.dtype!r}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {config.seed!r}")
    return replace(config, **{k: int(v) for k, v in filled.items()})


def _make_dataset(name: str, pool: np.ndarray, pool_y: np.ndarray, test_pool: np.ndarray,
                  test_y: np.ndarray, config: DataConfig, class_names: Tuple[str, ...],
                  image_shape: Tuple[int, int, int]) -> Dataset:
    """Split uint8 pools ``(N, D)`` as the config says, subtract the train mean, add the bias.

    Memory: each split is allocated once in the target dtype and filled from uint8 in place,
    so the peak is the float splits plus the uint8 pools, with no float64 copy.
    """
    n_tr, n_val, n_te = config.num_train, config.num_val, config.num_test
    if n_tr + n_val > len(pool):
        raise ValueError(f"num_train + num_val must be <= {len(pool)} (the {name} training pool), "
                         f"got {n_tr} + {n_val} = {n_tr + n_val}")
    if n_te > len(test_pool):
        raise ValueError(f"num_test must be <= {len(test_pool)} for {name}, got {n_te}")
    torch_dtype, np_dtype = _FLOAT_DTYPES[config.dtype]
    train_u8 = pool[:n_tr]                                     # (num_train, D) uint8, a view
    mean = train_u8.mean(axis=0, dtype=np.float64)             # (D,) exact; no float64 copy
    mean_cast = mean.astype(np_dtype)

    def features(images: np.ndarray) -> torch.Tensor:
        out = np.empty((len(images), images.shape[1] + config.bias), dtype=np_dtype)  # (n, D+1)
        body = out[:, :images.shape[1]]
        body[...] = images                                     # uint8 -> float, once
        body -= mean_cast                                      # in place
        if config.bias:
            out[:, -1] = 1
        return torch.from_numpy(out)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    X_train = features(train_u8)
    dev = np.random.default_rng(config.seed % 2**32).choice(n_tr, size=config.num_dev, replace=False)
    dev_t = torch.from_numpy(dev)
    return Dataset(
        name=name,
        X_train=X_train, y_train=labels(pool_y[:n_tr]),
        X_val=features(pool[n_tr:n_tr + n_val]), y_val=labels(pool_y[n_tr:n_tr + n_val]),
        X_test=features(test_pool[:n_te]), y_test=labels(test_y[:n_te]),
        X_dev=X_train[dev_t], y_dev=labels(pool_y[:n_tr][dev]),
        class_names=tuple(class_names), image_shape=image_shape,
        mean_image=torch.from_numpy(mean).to(torch_dtype), bias=config.bias, config=config,
    )


# ----------------------------------------------------------------------------- digits


def read_digits() -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    """The embedded scikit-learn digits (UCI optical digits, BSD-3), pre-shuffled once.

    Returns:
        images: ``(1797, 8, 8, 1)`` uint8, values 0..16.
        labels: ``(1797,)`` int64, 0..9.
        class_names: ``("0", ..., "9")``.
    """
    ref = resources.files("torch_svm").joinpath("_data/digits.npz")
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    return images.reshape(-1, *_DIGITS_SHAPE), labels, tuple(str(d) for d in range(10))


# ----------------------------------------------------------------------------- CIFAR-10


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
    source = _locate_cifar10(data_dir)
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


def _locate_cifar10(data_dir: Union[str, Path], quiet: bool = False) -> Optional[Path]:
    """The ``cifar-10-batches-py`` folder or the archive that ``data_dir`` points at."""
    path = Path(data_dir).expanduser()
    candidates = [path] if path.is_file() else [
        path if (path / "data_batch_1").exists() or path.name == _CIFAR_FOLDER else None,
        path / _CIFAR_FOLDER, path / _CIFAR_ARCHIVE]
    for c in candidates:
        if c is not None and c.exists():
            return c
    if quiet:
        return None
    what = "does not exist" if not path.exists() else "holds no CIFAR-10 files"
    raise FileNotFoundError(
        f"CIFAR-10 data_dir {str(path)!r} {what}: expected the {_CIFAR_FOLDER}/ folder (with "
        f"{', '.join(_CIFAR_FILES)}), its parent, or {_CIFAR_ARCHIVE} (or a folder holding it); "
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
        raise DataFormatError(f"{source}: not a readable tar archive (expected {_CIFAR_ARCHIVE} or a "
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
    X = np.empty((len(y), *_CIFAR_SHAPE), dtype=np.uint8)
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
    dest = Path(root).expanduser() / _CIFAR_ARCHIVE
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
