r"""Your own data: a ``.npz`` file or a folder of ``.npy`` files, memory-mapped, never copied whole.

Layout. ``X: (N, D)`` real floating or integer numbers and ``y: (N,)`` integer labels in
``[0, C)``; optionally ``X_val``/``y_val`` and ``X_test``/``y_test`` (else those splits are
drawn from the rows of X with ``seed``), and ``class_names`` (a 1-D array of strings). In a
``.npz`` they are members (``np.savez(path, X=X, y=y)``); in a folder, files ``X.npy``,
``y.npy``, ... Any other name is refused, so that a typo (``X_valid``) is not silently ignored.

Memory mapping. Each file is mapped once, read-only, and every array is a numpy view of that
map at the offset where its data start, just after its ``.npy`` header: offset 0 of each file
in a folder; in an ``.npz`` (a zip archive) the member's data offset inside the archive, found
from the member's local zip header. Such an offset exists only for members *stored*
uncompressed, as ``np.savez`` writes them. A compressed member (``np.savez_compressed``) is
refused: it can only be read by inflating it whole into memory, which is what this module
exists to avoid; the message says how to rewrite the file. An array of Python objects (stored
as a pickle) is refused too: nothing here is ever unpickled.

Checks, in one streaming pass over each array in chunks of ``chunk_bytes``: shapes, dtypes,
labels in ``[0, C)`` and X finite, each error a :class:`~torch_svm.errors.DataFormatError`
naming the file, the array and, where it applies, the row. The same pass sums the train rows
in float64 for the mean :math:`\mu`. After each chunk its pages are handed back to the kernel
(``madvise(MADV_DONTNEED)``; the file is unchanged and a later read maps them again), so a
pass over a file larger than memory keeps the resident set at about one chunk.

Preprocessing per batch. :meth:`ArrayDataset.batch` gathers rows from the map (in sorted
order, for locality in the file, then back in the order asked), subtracts :math:`\mu` in
float64, casts to ``dtype`` and appends the bias column: a row is :math:`[x - \mu, 1]`, the
same as :func:`torch_svm.data.load_dataset` holds in memory, so ``W: (D + 1, C)`` means the
same either way. :meth:`ArrayDataset.features` streams a whole split the same way (for
accuracy), and :meth:`ArrayDataset.to_dataset` turns a small file into the in-memory
:class:`~torch_svm.data.Dataset`.
"""
from __future__ import annotations

import io
import math
import mmap
import os
import struct
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from torch_svm.data import DataConfig, Dataset
from torch_svm.errors import DataFormatError
from torch_svm.utils import check_choice, check_int, check_memory, clip

__all__ = ["ArrayConfig", "ArrayDataset", "load_arrays", "SPLITS"]

#: Splits of an :class:`ArrayDataset`; dev is drawn from train, as in ``load_dataset``.
SPLITS = ("train", "val", "test", "dev")
_MEMBERS = ("X", "y", "X_val", "y_val", "X_test", "y_test", "class_names")
_SPLIT_FRACTION = 0.1   # of X's rows, drawn for val and for test when the file holds neither
_NUM_DEV = 500          # dev rows when num_dev is None (capped at the train rows)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MAX_HEADER = 1 << 16   # bytes read to parse a .npy header (numpy's own limit is 10000)
_GATHER_ROWS = 32       # batch rows read between two releases of their pages (see batch)


@dataclass
class ArrayConfig:
    """How to split and preprocess a data file; checked when made.

    Fields named as in :class:`~torch_svm.data.DataConfig` mean the same, so one set of
    ``--num-*`` / ``--dtype`` / ``--seed`` flags fills either.
    """

    num_train: Optional[int] = None   # rows of X to train on; None: every row not drawn for val/test
    num_val: Optional[int] = None     # file has X_val: its first num_val rows (None: all); else drawn from X (None: 10 %)
    num_test: Optional[int] = None    # the same with X_test
    num_dev: Optional[int] = None     # drawn without replacement from train; None: min(500, train)
    center: bool = True               # subtract the train mean (float64, one streaming pass)
    bias: bool = True                 # append a column of ones per batch (the bias trick), last column
    num_classes: Optional[int] = None # C; None: the largest label + 1
    class_names: Optional[Tuple[str, ...]] = None  # None: the file's class_names, else "0".."C-1"
    dtype: str = "float32"            # of the batches: "float32" or "float64"
    seed: int = 0                     # the val / test / dev draws (a private generator, seed % 2**32)
    chunk_bytes: int = 16 * 2**20     # streaming chunk, counted as rows * D * 8 bytes (float64 work)
    check_finite: bool = True         # scan X for NaN / inf (one read of the file; off: trust it)

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "num_test", "num_dev", "num_classes"):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(name, getattr(self, name),
                                              min={"num_train": 1, "num_classes": 2}.get(name, 0)))
        for name in ("center", "bias", "check_finite"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got "
                                 f"{clip(repr(getattr(self, name)), 100)}")
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not all(
                    isinstance(c, str) for c in self.class_names):
                raise ValueError(f"class_names must be None or a sequence of strings, "
                                 f"got {clip(repr(self.class_names), 100)}")
            self.class_names = tuple(self.class_names)
            if self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ValueError(f"class_names must name num_classes={self.num_classes} classes, "
                                 f"got {len(self.class_names)}")
        check_choice("dtype", self.dtype, tuple(_DTYPES))
        self.seed = check_int("seed", self.seed, min=0, max=2**63 - 1)
        self.chunk_bytes = check_int("chunk_bytes", self.chunk_bytes, min=1)


# ----------------------------------------------------------------------------- mapped arrays


@dataclass(frozen=True, eq=False)
class _Mapped:
    """An array that is a view of a read-only map, and where it lies in that map."""

    array: np.ndarray                # the view (no copy); an empty in-memory array when size 0
    where: str                       # "file.npz:X" or "folder/X.npy", for messages
    mapping: Optional[mmap.mmap]     # None when the array is empty
    offset: int                      # byte offset of array[0] in mapping


def _map_file(path: Path) -> mmap.mmap:
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise DataFormatError(f"{path}: the file is empty")
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def _npy_view(mapping: mmap.mmap, start: int, size: int, where: str) -> _Mapped:
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
        return _Mapped(np.empty(shape, dtype), where, None, 0)
    array = np.ndarray(shape, dtype=dtype, buffer=mapping, offset=data_start,
                       order="F" if fortran else "C")
    return _Mapped(array, where, mapping, data_start)


def _open_npz(path: Path) -> Dict[str, _Mapped]:
    """Every member of an ``.npz`` as a view of one map of the whole archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise DataFormatError(f"{path}: not a readable .npz (zip) archive: {exc}") from None
    mapping = _map_file(path)
    arrays: Dict[str, _Mapped] = {}
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        where = f"{path}:{name}"
        _check_name(name, arrays, where)
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


def _open_folder(path: Path) -> Dict[str, _Mapped]:
    arrays: Dict[str, _Mapped] = {}
    for file in sorted(path.glob("*.npy")):
        _check_name(file.stem, arrays, str(file))
        mapping = _map_file(file)
        arrays[file.stem] = _npy_view(mapping, 0, len(mapping), str(file))
    return arrays


def _check_name(name: str, seen: Dict[str, _Mapped], where: str) -> None:
    if name not in _MEMBERS:
        raise DataFormatError(f"{where}: {name!r} is not one of the arrays a data file may hold "
                              f"({', '.join(_MEMBERS)}); rename or remove it")
    if name in seen:
        raise DataFormatError(f"{where}: {name!r} appears twice")


def _release(m: _Mapped, r0: int, r1: int) -> None:
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


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True, eq=False)
class _Split:
    """Rows of one mapped ``(X, y)`` pair: ``rows`` (sorted) or, when None, the first ``size``."""

    X: _Mapped                      # (M, D)
    y: _Mapped                      # (M,)
    rows: Optional[np.ndarray]      # (size,) int64, sorted
    size: int

    def file_rows(self, pos: np.ndarray) -> np.ndarray:
        return self.rows[pos] if self.rows is not None else pos


@dataclass(eq=False)
class ArrayDataset:
    """Memory-mapped splits of a data file, turned into model inputs one batch at a time.

    Nothing is preprocessed in place: the splits stay raw views of the file, and each
    :meth:`batch` / :meth:`features` chunk is gathered, centred with ``mean`` and given its
    bias column as it is read. ``mean: (D,)`` float64 is the train rows' mean
    :math:`\\mu` (None when ``config.center`` is False); inputs are rows
    :math:`[x - \\mu, 1]` of width :attr:`num_features` ``= D + bias`` in ``config.dtype``.
    Made by :func:`load_arrays`.
    """

    name: str                                   # the path as given
    class_names: Tuple[str, ...]
    mean: Optional[Tensor] = field(repr=False)  # (D,) float64, or None
    bias: bool
    config: ArrayConfig                         # with every count filled in
    _splits: Dict[str, _Split] = field(repr=False)

    @property
    def num_features(self) -> int:
        """Columns of a batch, bias column included: D + bias."""
        return self._splits["train"].X.array.shape[1] + self.bias

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def num_examples(self, split: str) -> int:
        """Rows in ``split`` (one of :data:`SPLITS`)."""
        return self._split(split).size

    def batch(self, split: str, idx: Union[Tensor, np.ndarray], *,
              device: Union[str, torch.device, None] = None) -> Tuple[Tensor, Tensor]:
        """Rows ``idx`` of ``split`` as ``(X: (B, D + bias) config.dtype, y: (B,) int64)``.

        ``idx: (B,)`` positions in the split, in any order, repeats allowed (a tensor on any
        device, or an array); row ``i`` of the result is position ``idx[i]``. The rows are read
        from the map in file order, so a batch touches each page once, 32 rows at a time with
        their pages released after each group: a fault may map a whole page-cache folio (up
        to a few MiB on recent kernels), so this bounds the pages a batch holds at once.
        """
        s = self._split(split)
        pos = idx.detach().cpu().numpy() if isinstance(idx, Tensor) else np.asarray(idx)
        if pos.ndim != 1 or (pos.size and pos.dtype.kind not in "iu"):
            raise ValueError(f"idx must be a 1-D array of integer positions, got "
                             f"shape {pos.shape} dtype {pos.dtype}")
        if pos.size and (pos.min() < 0 or pos.max() >= s.size):
            raise IndexError(f"idx must be in [0, {s.size}) for split {split!r}, got values "
                             f"from {pos.min()} to {pos.max()}")
        rows = s.file_rows(pos.astype(np.int64, copy=False))     # (B,) rows of the file
        order = np.argsort(rows, kind="stable")
        raw = np.empty((len(rows), s.X.array.shape[1]), dtype=s.X.array.dtype)  # (B, D)
        for start in range(0, len(rows), _GATHER_ROWS):           # file order in, asked order out
            group = order[start:start + _GATHER_ROWS]
            raw[group] = s.X.array[rows[group]]
            _release(s.X, int(rows[group[0]]), int(rows[group[-1]]) + 1)
        return self._inputs(raw, device), self._labels(s.y.array[rows], device)

    def features(self, split: str, *, chunk_rows: Optional[int] = None,
                 device: Union[str, torch.device, None] = None) -> Iterator[Tuple[Tensor, Tensor]]:
        """The whole of ``split`` in order, as ``(X, y)`` chunks of ``chunk_rows`` rows.

        Each chunk is as :meth:`batch` makes it; its pages are released once the next is asked
        for, so iterating holds about one chunk in memory. ``chunk_rows`` defaults to
        ``config.chunk_bytes`` worth of float64 rows.
        """
        s = self._split(split)
        step = self._chunk_rows() if chunk_rows is None else check_int("chunk_rows", chunk_rows, min=1)
        for start in range(0, s.size, step):
            stop = min(start + step, s.size)
            if s.rows is None:
                r0, r1 = start, stop
                raw, labels = s.X.array[r0:r1], s.y.array[r0:r1]  # views of the map
            else:
                rows = s.rows[start:stop]
                r0, r1 = int(rows[0]), int(rows[-1]) + 1
                raw, labels = s.X.array[rows], s.y.array[rows]
            yield self._inputs(raw, device), self._labels(labels, device)
            _release(s.X, r0, r1)

    def to_dataset(self) -> Dataset:
        """All splits in memory as the :class:`~torch_svm.data.Dataset` ``load_dataset`` returns.

        The same inputs as :meth:`batch` (``mean_image`` is ``mean``, or zeros when not
        centred; ``image_shape`` is ``(1, D, 1)``), and ``config`` a DataConfig whose fields,
        passed back as ``ArrayConfig(**asdict(config))``, cut the same splits again. Raises
        ValueError (:func:`torch_svm.utils.check_memory`) when the splits would need more than
        half of this machine's memory: train from the map with :meth:`batch` instead.
        """
        D = self.num_features - self.bias
        check_memory(f"ArrayDataset.to_dataset of {self.name} (use ArrayDataset.batch instead)",
                     sum(self.num_examples(s) for s in SPLITS) * self.num_features
                     * np.dtype(self.config.dtype).itemsize)
        splits = {}
        for split in SPLITS:
            X = torch.empty(self.num_examples(split), self.num_features,
                            dtype=_DTYPES[self.config.dtype])
            y = torch.empty(self.num_examples(split), dtype=torch.int64)
            at = 0
            for Xc, yc in self.features(split):
                X[at:at + len(yc)], y[at:at + len(yc)] = Xc, yc
                at += len(yc)
            splits[f"X_{split}"], splits[f"y_{split}"] = X, y
        mean = torch.zeros(D, dtype=torch.float64) if self.mean is None else self.mean
        c = self.config
        return Dataset(name=self.name, **splits, class_names=self.class_names,
                       image_shape=(1, D, 1), mean_image=mean.to(splits["X_train"].dtype),
                       bias=self.bias,
                       config=DataConfig(num_train=c.num_train, num_val=c.num_val,
                                         num_test=c.num_test, num_dev=c.num_dev, bias=c.bias,
                                         dtype=c.dtype, seed=c.seed))

    # -------------------------------------------------------------------------- private

    def _split(self, split: str) -> _Split:
        if split not in self._splits:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self._splits[split]

    def _chunk_rows(self) -> int:
        return max(1, self.config.chunk_bytes // (8 * max(1, self.num_features - self.bias)))

    def _inputs(self, raw: np.ndarray, device) -> Tensor:
        """``raw: (B, D)`` file rows -> ``(B, D + bias)`` centred in float64, cast once."""
        D = raw.shape[1]
        out = np.empty((len(raw), D + self.bias), dtype=self.config.dtype)
        if self.mean is None:
            out[:, :D] = raw
        else:
            np.subtract(raw, self.mean.numpy(), out=out[:, :D], dtype=np.float64,
                        casting="same_kind")
        if self.bias:
            out[:, D] = 1
        return torch.from_numpy(out).to(device)

    @staticmethod
    def _labels(y: np.ndarray, device) -> Tensor:
        return torch.from_numpy(np.array(y, dtype=np.int64)).to(device)


# ----------------------------------------------------------------------------- entry point


def load_arrays(path: Union[str, Path], config: Optional[ArrayConfig] = None) -> ArrayDataset:
    """Map the arrays of ``path`` (an ``.npz`` or a folder of ``.npy``), check them, split them.

    One streaming pass over each array checks it (and sums the train rows for the mean, when
    ``config.center``); nothing is copied whole. See the module docstring for the layout.

    Args:
        path: an ``.npz`` written by ``np.savez`` (not ``np.savez_compressed``), or a folder
            holding ``X.npy`` and ``y.npy`` (and optionally ``X_val.npy``, ...).
        config: splits, centring, bias, dtype, seed; default :class:`ArrayConfig()`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: a file or array is not what it should be (names it, and the row).
        ValueError: the config asks for more rows than the file has.
    """
    config = ArrayConfig() if config is None else config
    if not isinstance(config, ArrayConfig):
        raise TypeError(f"config must be an ArrayConfig, got {type(config).__name__}")
    path = Path(path)
    if path.is_dir():
        arrays = _open_folder(path)
    elif path.is_file():
        arrays = _open_npz(path) if zipfile.is_zipfile(path) else _not_npz(path)
    else:
        raise FileNotFoundError(f"data {str(path)!r} does not exist; expected an .npz file or a "
                                f"folder of .npy files (X.npy, y.npy, ...)")
    class_names = _check_arrays(path, arrays)
    splits, config = _make_splits(arrays, config)
    mean, num_classes = _scan(arrays, splits, config)
    names = config.class_names or class_names or tuple(str(c) for c in range(num_classes))
    if len(names) != num_classes:
        raise DataFormatError(f"{path}: class_names must name the {num_classes} classes, got "
                              f"{len(names)}: {list(names)}")
    return ArrayDataset(name=str(path), class_names=tuple(names), mean=mean, bias=config.bias,
                        config=replace(config, num_classes=num_classes), _splits=splits)


def _not_npz(path: Path) -> Dict[str, _Mapped]:
    hint = (" (a single .npy holds one array; put X.npy and y.npy in a folder and pass the "
            "folder)" if path.suffix == ".npy" else "")
    raise DataFormatError(f"{path}: not an .npz (zip) archive; expected an .npz written by "
                          f"np.savez or a folder of .npy files{hint}")


def _check_arrays(path: Path, arrays: Dict[str, _Mapped]) -> Optional[Tuple[str, ...]]:
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


def _make_splits(arrays: Dict[str, _Mapped], config: ArrayConfig
                 ) -> Tuple[Dict[str, _Split], ArrayConfig]:
    """Train / val / test / dev rows; val and test drawn from X when the file lacks them."""
    X, y = arrays["X"], arrays["y"]
    n = len(X.array)
    rng = np.random.default_rng(config.seed % 2**32)
    splits: Dict[str, _Split] = {}
    drawn: Dict[str, int] = {}
    for split in ("val", "test"):
        asked = getattr(config, f"num_{split}")
        if f"X_{split}" in arrays:
            have = len(arrays[f"X_{split}"].array)
            if asked is not None and asked > have:
                raise ValueError(f"num_{split} must be <= {have} (the rows of "
                                 f"{arrays[f'X_{split}'].where}), got {asked}")
            size = have if asked is None else asked
            splits[split] = _Split(arrays[f"X_{split}"], arrays[f"y_{split}"], None, size)
        else:
            drawn[split] = int(n * _SPLIT_FRACTION) if asked is None else asked
    left = n - sum(drawn.values())
    if left < 1 or (config.num_train or 0) > left:
        raise ValueError(f"num_train + num_val + num_test drawn from X must be <= its {n} rows "
                         f"with num_train >= 1, got num_train={config.num_train}, "
                         + ", ".join(f"num_{k}={v}" for k, v in drawn.items()))
    n_train = left if config.num_train is None else config.num_train
    if any(drawn.values()):
        perm = rng.permutation(n)
        at = 0
        for split, size in list(drawn.items()) + [("train", n_train)]:
            splits[split] = _Split(X, y, np.sort(perm[at:at + size]), size)
            at += size
    else:  # nothing drawn: train is the first n_train rows, a plain view
        splits.update({split: _Split(X, y, np.empty(0, np.int64), 0) for split in drawn})
        splits["train"] = _Split(X, y, None, n_train)
    n_dev = min(_NUM_DEV, n_train) if config.num_dev is None else config.num_dev
    if n_dev > n_train:
        raise ValueError(f"num_dev must be <= num_train ({n_train}), got {n_dev}")
    train = splits["train"]
    splits["dev"] = _Split(X, y, train.file_rows(np.sort(rng.choice(n_train, n_dev, replace=False))),
                           n_dev)
    sizes = {f"num_{s}": splits[s].size for s in SPLITS}
    return {s: splits[s] for s in SPLITS}, replace(config, **sizes)


def _scan(arrays: Dict[str, _Mapped], splits: Dict[str, _Split], config: ArrayConfig
          ) -> Tuple[Optional[Tensor], int]:
    """One streaming pass per used array: X finite, labels >= 0, the train sum; returns (mean, C)."""
    train = splits["train"]
    D = train.X.array.shape[1]
    step = max(1, config.chunk_bytes // (8 * D))
    total = np.zeros(D, dtype=np.float64)
    top = -1
    for split in ("train", "val", "test"):
        s = splits[split]
        if split != "train" and s.X is train.X:
            continue  # drawn from X: scanned with train
        used = len(s.X.array) if s.rows is not None else s.size  # rows of the file array to read
        finite = config.check_finite and s.X.array.dtype.kind == "f"
        for r0 in range(0, used, step):
            r1 = min(r0 + step, used)
            chunk = s.X.array[r0:r1]                               # (r1 - r0, D), a view
            if finite and not np.isfinite(chunk).all():
                bad = r0 + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                raise DataFormatError(f"{s.X.where}: row {bad} holds NaN or inf; the SVM trains "
                                      f"on finite numbers only")
            if split == "train" and config.center:
                if s.rows is None:
                    total += chunk.sum(axis=0, dtype=np.float64)
                else:
                    lo, hi = np.searchsorted(s.rows, (r0, r1))
                    total += chunk[s.rows[lo:hi] - r0].sum(axis=0, dtype=np.float64)
            _release(s.X, r0, r1)
        labels = s.y.array[:used]
        for r0 in range(0, used, 1 << 20):
            part = labels[r0:r0 + (1 << 20)]
            if part.min() < 0:
                bad = r0 + int(np.flatnonzero(part < 0)[0])
                raise DataFormatError(f"{s.y.where}: labels must be >= 0, got {part[bad - r0]} at "
                                      f"row {bad}; map them to 0..C-1 first (np.unique(y, "
                                      f"return_inverse=True)), or use torch_svm.sklearn."
                                      f"LinearSVMClassifier, which takes any labels")
            if config.num_classes is not None and part.max() >= config.num_classes:
                bad = r0 + int(np.flatnonzero(part >= config.num_classes)[0])
                raise DataFormatError(f"{s.y.where}: labels must be < num_classes="
                                      f"{config.num_classes}, got {part[bad - r0]} at row {bad}")
            top = max(top, int(part.max()))
    num_classes = top + 1 if config.num_classes is None else config.num_classes
    if num_classes < 2:
        raise DataFormatError(f"{arrays['y'].where}: labels must name at least 2 classes, got "
                              f"only label {top}")
    mean = torch.from_numpy(total / train.size) if config.center else None
    return mean, num_classes
