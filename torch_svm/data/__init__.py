r"""Data for the linear SVM: one :class:`Dataset` type, one :class:`DataConfig`, every source.

Sources: the embedded digits, CIFAR-10 (``cifar-10-batches-py``, read safely), your data
file (``.npz`` or a folder of ``.npy``, memory-mapped) and arrays in memory. All of them are
split and preprocessed by one path (:mod:`torch_svm.data.load`) into a :class:`Dataset`
(:mod:`torch_svm.data.dataset`), which makes model inputs ``[(x - mu) / sigma, 1]`` from raw
rows as they are asked for, with the train rows' mean and scale kept in one
:class:`Preprocessing` record (what a checkpoint stores). No code outside this package needs
to know which source a data set came from.

Example::

    from torch_svm.data import DataConfig, load_dataset
    data = load_dataset("digits")                       # or "cifar10", data_dir; or "features.npz"
    X_dev, y_dev = data.tensors("dev")                  # (100, 65) float32, (100,) int64
    for X, y in data.chunks("test"): ...                # a split in chunks
"""
from torch_svm.data.config import DATASETS, SPLITS, DataConfig
from torch_svm.data.dataset import Dataset
from torch_svm.data.load import from_arrays, load_dataset
from torch_svm.data.preprocessing import Preprocessing

__all__ = ["Dataset", "DataConfig", "Preprocessing", "load_dataset", "from_arrays", "SPLITS",
           "DATASETS"]
