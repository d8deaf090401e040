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

CIFAR-10 is read by :mod:`torch_svm.cifar10` (safely: a tampered file cannot run code).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from torch_svm.cifar10 import (CIFAR10_ARCHIVE, CIFAR10_SHAPE, CIFAR10_URL, download_cifar10,
                               locate_cifar10, read_cifar10)
from torch_svm.utils import check_choice, check_int, clip

__all__ = ["DataConfig", "Dataset", "load_dataset", "read_digits", "DATASETS", "SPLIT_DEFAULTS"]

#: Names accepted by :func:`load_dataset`.
DATASETS = ("digits", "cifar10")
_DIGITS_SHAPE = (8, 8, 1)

#: Per data set: (num_train, num_val, num_test, num_dev), used where DataConfig leaves None.
SPLIT_DEFAULTS = {
    "cifar10": (49000, 1000, 1000, 500),  # the assignment's numbers; num_test=10000 for all
    "digits": (1297, 200, 300, 100),      # 1797 images: 1297 + 200 + 300 tile the file
}
_FLOAT_DTYPES = {"float32": (torch.float32, np.float32), "float64": (torch.float64, np.float64)}


@dataclass
class DataConfig:
    """How to split and preprocess; ``None`` counts take the data set's default.

    Defaults per data set: :data:`SPLIT_DEFAULTS`.
    """

    num_train: Optional[int] = None  # first images of the training pool
    num_val: Optional[int] = None    # the images right after the train split
    num_test: Optional[int] = None   # first images of the test pool (cifar10 has 10000)
    num_dev: Optional[int] = None    # drawn without replacement from train, for quick checks (None: capped at num_train)
    bias: bool = True                # append a column of ones (the bias trick), last column
    dtype: str = "float32"           # "float32" or "float64" for the X tensors
    seed: int = 0                    # seeds the dev draw only (a private generator, seed % 2**32)

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "num_test", "num_dev"):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(name, getattr(self, name),
                                              min=1 if name == "num_train" else 0))
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {clip(repr(self.bias), 100)}")
        check_choice("dtype", self.dtype, tuple(_FLOAT_DTYPES))
        self.seed = check_int("seed", self.seed, min=0, max=2**63 - 1)


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

    def num_examples(self, split: str) -> int:
        """Rows in ``split`` ("train", "val", "test" or "dev")."""
        if split not in ("train", "val", "test", "dev"):
            raise ValueError(f"split must be one of ('train', 'val', 'test', 'dev'), got {split!r:.100}")
        return len(getattr(self, f"y_{split}"))

    def to(self, device: Union[str, torch.device, None] = None,
           dtype: Optional[torch.dtype] = None) -> "Dataset":
        """The data set with every split moved to ``device`` and the X splits (and the mean
        image) cast to ``dtype``; splits already there are not copied."""
        moved = {f.name: getattr(self, f.name).to(device=device, dtype=dtype)
                 for f in fields(self) if f.name.startswith("X_")}
        moved.update({f.name: getattr(self, f.name).to(device=device)
                      for f in fields(self) if f.name.startswith("y_")})
        if dtype is not None:
            moved["mean_image"] = self.mean_image.to(dtype=dtype)
        return replace(self, **moved)


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
            f"parent, or {CIFAR10_ARCHIVE}; get the 'CIFAR-10 python version' from {CIFAR10_URL} "
            "(or pass download=True, --download on the command line)")
    if download and locate_cifar10(data_dir, quiet=True) is None:
        download_cifar10(data_dir)
    X_train, y_train, X_test, y_test, class_names = read_cifar10(data_dir)
    return _make_dataset(name, X_train.reshape(len(X_train), -1), y_train,
                         X_test.reshape(len(X_test), -1), y_test, config, class_names,
                         CIFAR10_SHAPE)


def _resolve_config(name: str, config: DataConfig) -> DataConfig:
    """Fill ``None`` counts with the data set's defaults (num_dev capped at num_train)."""
    if not isinstance(config, DataConfig):
        raise TypeError(f"config must be a DataConfig, got {type(config).__name__}")
    defaults = dict(zip(("num_train", "num_val", "num_test", "num_dev"), SPLIT_DEFAULTS[name]))
    filled = {k: d if getattr(config, k) is None else getattr(config, k)
              for k, d in defaults.items()}
    if config.num_dev is None:
        filled["num_dev"] = min(filled["num_dev"], filled["num_train"])  # a small train split
    if filled["num_dev"] > filled["num_train"]:
        raise ValueError(f"num_dev must be <= num_train ({filled['num_train']}), "
                         f"got {filled['num_dev']}")
    return replace(config, **filled)


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
