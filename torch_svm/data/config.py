"""How a data set is split and preprocessed: one config for every source.

:class:`DataConfig` is filled by the command line's ``--num-*``, ``--dtype``, ``--seed`` and
``--standardize`` flags, or by hand, and read by :func:`torch_svm.data.load_dataset` and
:func:`torch_svm.data.from_arrays`. A field left None takes the source's default, and the
data set returned carries the config with every field filled in (what a checkpoint records).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from torch_svm.device import DTYPES
from torch_svm.errors import ArgumentError, check_choice, check_int, clip

__all__: list = []    # its names are re-exported by the package

#: The splits of every data set; dev is drawn from train, for quick checks.
SPLITS = ("train", "val", "test", "dev")
#: The data sets known by name; any other name is the path of a data file.
DATASETS = ("digits", "cifar10")
#: Per built-in data set: (num_train, num_val, num_test, num_dev) where the config leaves None.
SPLIT_DEFAULTS: Dict[str, Tuple[int, int, int, int]] = {
    "cifar10": (49000, 1000, 1000, 500),  # the assignment's numbers; num_test=10000 for all
    "digits": (1297, 200, 300, 100),      # 1797 images: 1297 + 200 + 300 tile the file
}
#: Dtypes the command line trains in (names of :data:`torch_svm.device.DTYPES`; a data set's
#: inputs may have any of those, as the kink study's half-precision runs do).
DATA_DTYPES = ("float32", "float64")


@dataclass
class DataConfig:
    """How to split and preprocess; checked when made. None takes the source's default.

    Splits. digits and CIFAR-10 cut their files as the assignment does: train is the first
    ``num_train`` images of the training pool, val the next ``num_val``, test the first
    ``num_test`` of the test pool. Your own data (a file or arrays) use their own val and test
    arrays when they have them (their first ``num_val`` / ``num_test`` rows), else draw them
    from X with ``seed`` (10 % each by default), and train on the rest. Every data set's dev
    split is ``num_dev`` rows drawn without replacement from train with ``seed``.

    Preprocessing. Each row becomes :math:`[(x - \\mu) / \\sigma, 1]` with the train rows'
    mean :math:`\\mu` (``center``) and standard deviation :math:`\\sigma` (``standardize``; a
    constant column keeps scale 1), computed in float64 and cast once to ``dtype``, and the
    bias column last (``bias``).
    """

    num_train: Optional[int] = None   # None: digits 1297, cifar10 49000, your data every row not in val/test
    num_val: Optional[int] = None     # None: digits 200, cifar10 1000, your data its X_val or 10 % of X
    num_test: Optional[int] = None    # None: digits 300, cifar10 1000, your data its X_test or 10 % of X
    num_dev: Optional[int] = None     # None: digits 100, cifar10 500, your data 500; at most num_train
    center: bool = True               # subtract the train mean
    standardize: Optional[bool] = None  # divide by the train std; None: off for digits and cifar10
                                        # (the assignment's unscaled pixels), on for your own data
    bias: bool = True                 # append a column of ones (the bias trick), last column
    num_classes: Optional[int] = None # C; None: the source's class names, else the largest label + 1
    class_names: Optional[Tuple[str, ...]] = None  # None: the source's, else "0".."C-1"
    dtype: str = "float32"            # of the inputs: a name of torch_svm.device.DTYPES
    seed: int = 0                     # the dev draw and your data's val / test draws (seed % 2**32)
    chunk_bytes: int = 16 * 2**20     # a streaming pass's chunk, counted as float64 rows (or scores)
    check_finite: bool = True         # scan floating X for NaN / inf once at load (off: trust it)
    in_memory: Optional[bool] = None  # train from a file's split read into memory once (None: when
                                      # it fits in a quarter of this machine's memory) or per batch

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "num_test", "num_dev", "num_classes"):
            if getattr(self, name) is not None:
                setattr(self, name, check_int(name, getattr(self, name),
                                              min={"num_train": 1, "num_classes": 2}.get(name, 0)))
        for name in ("center", "bias", "check_finite") + (
                () if self.standardize is None else ("standardize",)) + (
                () if self.in_memory is None else ("in_memory",)):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentError(f"{name} must be True or False, got "
                                    f"{clip(repr(getattr(self, name)), 100)}")
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not all(
                    isinstance(c, str) for c in self.class_names):
                raise ArgumentError(f"class_names must be None or a sequence of strings, "
                                    f"got {clip(repr(self.class_names), 100)}")
            self.class_names = tuple(self.class_names)
            if self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ArgumentError(f"class_names must name num_classes={self.num_classes} "
                                    f"classes, got {len(self.class_names)}")
        check_choice("dtype", self.dtype, tuple(DTYPES))
        self.seed = check_int("seed", self.seed, min=0, max=2**63 - 1)
        self.chunk_bytes = check_int("chunk_bytes", self.chunk_bytes, min=1, max=2**30)
