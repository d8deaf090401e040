"""torch_svm.data on your data files (.npz / folder of .npy), memory-mapped.

The reference is plain numpy in float64 on arrays held in memory: the train rows' mean, rows
``[x - mu, 1]`` cast once to the dtype. Each check of a bad file has its negative twin in the
good files that load (``test_matches_in_memory_reference`` and friends).
"""
from __future__ import annotations

import os
import sys
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_svm.data import SPLITS, DataConfig, Dataset, from_arrays, load_dataset
from torch_svm.data.load import MAX_CLASSES
from torch_svm.errors import DataFormatError

N, D, C = 240, 7, 4


def _arrays(seed: int = 0, n: int = N, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, D)) * 5 + 100).astype(dtype)   # an offset: centring matters
    y = rng.integers(0, C, n)
    y[:C] = np.arange(C)                                    # every class present
    return X, y


def _save(tmp_path: Path, fmt: str, **arrays) -> Path:
    if fmt == "npz":
        np.savez(tmp_path / "data.npz", **arrays)
        return tmp_path / "data.npz"
    folder = tmp_path / "data"
    folder.mkdir()
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)
    return folder


def _reference(X: np.ndarray, rows: np.ndarray, mean: np.ndarray, dtype) -> np.ndarray:
    """Rows [x - mu, 1] of X, centred in float64 and cast once."""
    body = (X[rows].astype(np.float64) - mean).astype(dtype)
    return np.concatenate([body, np.ones((len(rows), 1), dtype)], axis=1)


@pytest.mark.parametrize("fmt", ["npz", "folder"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_in_memory_reference(tmp_path, fmt, dtype):
    X, y = _arrays()
    ds = load_dataset(_save(tmp_path, fmt, X=X, y=y), config=DataConfig(dtype=dtype, seed=3, standardize=False))
    assert isinstance(ds, Dataset)
    assert (ds.num_classes, ds.num_features, ds.class_names) == (C, D + 1, ("0", "1", "2", "3"))
    sizes = {s: ds.num_examples(s) for s in SPLITS}
    assert sizes == {"train": N - 2 * 24, "val": 24, "test": 24, "dev": N - 2 * 24}
    rows = {s: ds.splits[s].rows for s in SPLITS}
    assert sorted(np.concatenate([rows["train"], rows["val"], rows["test"]])) == list(range(N))
    mean = X[rows["train"]].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(ds.preprocessing.mean.numpy(), mean, rtol=1e-13, atol=0)
    data = ds
    assert isinstance(data, Dataset)
    for split in ("train", "val", "test", "dev"):
        ref = _reference(X, rows[split], ds.preprocessing.mean.numpy(), dtype)
        np.testing.assert_array_equal(data.tensors(split)[0].numpy(), ref)
        np.testing.assert_array_equal(data.tensors(split)[1].numpy(), y[rows[split]])
    assert data.tensors("train")[0].dtype == getattr(torch, dtype) and data.tensors("train")[1].dtype == torch.int64
    assert data.config.num_train == N - 48 and data.image_shape == (1, D, 1)
    # the same arrays from memory: the same splits, the same inputs, bit for bit
    same = from_arrays(X, y, config=DataConfig(dtype=dtype, seed=3, standardize=False))
    for split in SPLITS:
        assert torch.equal(same.tensors(split)[0], data.tensors(split)[0])
        assert torch.equal(same.tensors(split)[1], data.tensors(split)[1])


def test_batch_gathers_in_any_order(tmp_path):
    X, y = _arrays()
    ds = load_dataset(_save(tmp_path, "npz", X=X, y=y))
    data = ds
    idx = torch.tensor([5, 0, 5, 191, 3, 100])             # unsorted, a repeat
    Xb, yb = ds.batch("train", idx)
    assert torch.equal(Xb, data.tensors("train")[0][idx]) and torch.equal(yb, data.tensors("train")[1][idx])
    Xb, yb = ds.batch("val", np.array([3, 1]))
    assert torch.equal(Xb, data.tensors("val")[0][[3, 1]]) and torch.equal(yb, data.tensors("val")[1][[3, 1]])
    Xb, yb = ds.batch("test", np.array([], dtype=np.int64))
    assert Xb.shape == (0, D + 1) and yb.shape == (0,)
    with pytest.raises(ValueError, match=r"idx must be in \[0, 192\).*from -1 to 5"):
        ds.batch("train", torch.tensor([-1, 5]))                # no silent wrap-around
    with pytest.raises(ValueError, match=r"\[0, 24\).*24"):
        ds.batch("val", [24])
    with pytest.raises(ValueError, match="idx must be a 1-D array of integer positions"):
        ds.batch("train", np.array([0.5]))
    with pytest.raises(ValueError, match=r"split must be one of .*got 'validation'"):
        ds.batch("validation", [0])


@pytest.mark.parametrize("raw_dtype, dtype, center, standardize, raw", [
    (np.uint8, "float32", True, False, True),      # CIFAR-10's pixels: gathered raw
    (np.uint8, "float32", True, True, True),       # centred and scaled on the device
    (np.uint8, "float32", False, False, True),     # only cast
    (np.int16, "float64", True, True, True),
    (np.int32, "float32", True, False, False),     # 31 bits: not exact in float32
    (np.float32, "float32", True, True, False),    # as wide as the inputs: nothing to gain
])
def test_training_batches_from_raw_rows_equal_the_inputs(raw_dtype, dtype, center, standardize,
                                                         raw, monkeypatch):
    """A training loop's minibatches are the split's inputs, bit for bit, whether gathered
    raw and preprocessed on the device (integer rows exact in the dtype, inputs of at least
    RAW_GATHER_BYTES: here any) or gathered from the preprocessed split; the dev split's rows
    are positions in the train pool."""
    from torch_svm.data import dataset
    from torch_svm.data.preprocessing import exact_in

    monkeypatch.setattr(dataset, "RAW_GATHER_BYTES", 0)
    X, y = _arrays(n=N)
    pixels = (X - 60).astype(raw_dtype)
    pixels.setflags(write=False)                               # read-only: no warning either
    ds = from_arrays(pixels, y, config=DataConfig(dtype=dtype, seed=1, center=center,
                                                  standardize=standardize, num_dev=40))
    assert exact_in(ds.splits["train"].X.dtype, np.dtype(dtype)) == raw
    idx = torch.tensor([5, 0, 5, 9, 3, 7])                    # unsorted, a repeat
    for split in ("train", "dev", "val"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            batches = ds.batches(split, torch.device("cpu"), 8)
        assert (batches._raw is not None) == raw
        for take in (idx, idx[:2]):                          # a shorter batch reuses the buffers
            Xb, yb = batches.batch(take)
            X_all, y_all = ds.tensors(split)
            assert Xb.dtype == getattr(torch, dtype) and Xb.shape == (len(take), D + 1)
            assert torch.equal(Xb, X_all[take]) and torch.equal(yb, y_all[take])
    monkeypatch.setattr(dataset, "RAW_GATHER_BYTES", ds.tensors("train")[0].nbytes + 1)
    assert ds.batches("train", torch.device("cpu"), 8)._raw is None     # small: in cache
    monkeypatch.setattr(dataset, "RAW_GATHER_BYTES", 0)
    if raw and center:                                        # a preprocessing step dropped is seen
        batches = ds.batches("train", torch.device("cpu"), 8)
        batches._mean = None
        assert not torch.equal(batches.batch(idx)[0], ds.tensors("train")[0][idx])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_raw_batches_on_cuda_equal_the_inputs(monkeypatch):
    """On a GPU the raw pool moves there as uint8 and each batch is centred and scaled there:
    the same numbers as the split's inputs made on the CPU."""
    from torch_svm.data import dataset

    monkeypatch.setattr(dataset, "RAW_GATHER_BYTES", 0)
    X, y = _arrays(n=N)
    ds = from_arrays((X - 60).astype(np.uint8), y, config=DataConfig(standardize=True, num_dev=40))
    for split in ("train", "dev"):
        batches = ds.batches(split, torch.device("cuda"), 8)
        assert batches._raw is not None and batches._X.dtype == torch.uint8
        idx = torch.tensor([5, 0, 5, 9, 3, 7], device="cuda")
        Xb, yb = batches.batch(idx)
        X_all, y_all = ds.tensors(split)
        assert Xb.is_cuda and torch.equal(Xb.cpu(), X_all[idx.cpu()])
        assert torch.equal(yb.cpu(), y_all[idx.cpu()])


def test_exact_in():
    from torch_svm.data.preprocessing import exact_in

    assert exact_in(np.uint8, np.float32) and exact_in(np.int16, np.float32)
    assert exact_in(np.uint16, np.float32) and exact_in(np.int32, np.float64)
    assert not exact_in(np.int32, np.float32) and not exact_in(np.int64, np.float64)
    assert not exact_in(np.float16, np.float32) and not exact_in(np.bool_, np.float32)
    assert not exact_in(np.uint8, np.uint16)


def test_features_streams_the_split_in_chunks(tmp_path):
    X, y = _arrays()
    ds = load_dataset(_save(tmp_path, "folder", X=X, y=y))
    data = ds
    for split in ("train", "test"):
        chunks = list(ds.chunks(split, chunk_rows=7))
        assert [len(c[1]) for c in chunks][:2] == [7, 7]
        assert torch.equal(torch.cat([c[0] for c in chunks]), data.tensors(split)[0])
        assert torch.equal(torch.cat([c[1] for c in chunks]), data.tensors(split)[1])
    with pytest.raises(ValueError, match="chunk_rows must be an integer >= 1, got 0"):
        next(ds.chunks("train", chunk_rows=0))


def test_features_of_a_range_are_those_rows(tmp_path):
    """features(start=, stop=) streams positions [start, stop): a rank's share of a split."""
    X, y = _arrays()
    ds = load_dataset(_save(tmp_path, "npz", X=X, y=y))
    data = ds
    for split, (lo, hi) in (("train", (50, 131)), ("val", (0, 24)), ("test", (24, 24))):
        chunks = list(ds.chunks(split, start=lo, stop=hi, chunk_rows=16))
        got = torch.cat([c[0] for c in chunks]) if chunks else torch.empty(0, D + 1)
        assert torch.equal(got, data.tensors(split)[0][lo:hi])
        assert sum(len(c[1]) for c in chunks) == hi - lo
    with pytest.raises(ValueError, match=r"stop must be an integer >= 0 and <= 24, got 25"):
        next(ds.chunks("val", stop=25))
    with pytest.raises(ValueError, match=r"start must be an integer >= 0 and <= 3, got 4"):
        next(ds.chunks("val", start=4, stop=3))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_standardize_and_moments_match_numpy(tmp_path, dtype):
    """standardize: rows [(x - mu) / sigma, 1] against numpy's float64 mean and std (ddof 0) of
    the train rows (X has an offset of 100), a constant column kept at scale 1;
    mean_square_norm is the mean squared norm of
    the train inputs as batches make them, in each preprocessing."""
    X, y = _arrays()
    X[:, 2] = 7.0                                            # a constant column
    path = _save(tmp_path, "npz", X=X, y=y)
    ds = load_dataset(path, config=DataConfig(standardize=True, dtype=dtype, chunk_bytes=8 * D * 50))
    rows = ds.splits["train"].rows
    train = X[rows].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    scale = np.where(np.arange(D) == 2, 1.0, std)
    np.testing.assert_allclose(ds.preprocessing.scale.numpy(), scale, rtol=1e-12)
    assert ds.preprocessing.scale[2] == 1.0 and std[2] == 0
    tol = {"float32": 1e-6, "float64": 1e-13}[dtype]
    for split in ("train", "test"):
        r = ds.splits[split].rows
        ref = (X[r].astype(np.float64) - mean) / scale
        got = torch.cat([c[0] for c in ds.chunks(split)]).numpy()
        np.testing.assert_allclose(got[:, :D], ref, rtol=tol, atol=tol)
        assert (got[:, D] == 1).all()
    for config in (DataConfig(), DataConfig(standardize=False), DataConfig(center=False),
                   DataConfig(center=False, standardize=True, bias=False)):
        ds = load_dataset(path, config=replace(config, dtype="float64", chunk_bytes=8 * D * 50))
        inputs = torch.cat([c[0] for c in ds.chunks("train")]).numpy()
        expected = np.square(inputs).sum(axis=1).mean()
        assert ds.mean_square_norm == pytest.approx(expected, rel=1e-12), config


def test_file_splits_counts_and_options(tmp_path):
    X, y = _arrays(0)
    Xv, yv = _arrays(1, n=30)
    Xt, yt = _arrays(2, n=20)
    names = np.array(["a", "b", "c", "d"])
    path = _save(tmp_path, "npz", X=X, y=y, X_val=Xv, y_val=yv, X_test=Xt, y_test=yt,
                 class_names=names)
    ds = load_dataset(path, config=DataConfig(num_train=100, num_val=10, center=False, standardize=False,
                                       bias=False))
    assert ds.class_names == ("a", "b", "c", "d") and ds.preprocessing.mean is None and ds.num_features == D
    assert {s: ds.num_examples(s) for s in SPLITS} == {"train": 100, "val": 10, "test": 20,
                                                       "dev": 100}
    data = ds
    np.testing.assert_array_equal(data.tensors("train")[0].numpy(), X[:100])      # first rows, raw
    np.testing.assert_array_equal(data.tensors("val")[0].numpy(), Xv[:10])
    np.testing.assert_array_equal(data.tensors("test")[1].numpy(), yt)
    assert data.preprocessing.mean is None and data.preprocessing.scale is None
    ds = load_dataset(path, config=DataConfig(num_classes=6, class_names=tuple("uvwxyz"), num_dev=5))
    assert ds.num_classes == 6 and ds.class_names[-1] == "z" and ds.num_examples("dev") == 5
    with pytest.raises(ValueError, match=r"num_val must be <= 30 \(the rows of .*X_val\), got 31"):
        load_dataset(path, config=DataConfig(num_val=31))
    with pytest.raises(ValueError, match="num_dev must be <= num_train"):
        load_dataset(path, config=DataConfig(num_train=3, num_dev=4))


def test_seeded_split_is_reproducible(tmp_path):
    X, y = _arrays()
    path = _save(tmp_path, "npz", X=X, y=y)
    a, b, c = (load_dataset(path, config=DataConfig(seed=s)) for s in (0, 0, 1))
    assert np.array_equal(a.splits["val"].rows, b.splits["val"].rows)
    assert not np.array_equal(a.splits["val"].rows, c.splits["val"].rows)
    d = load_dataset(path, config=DataConfig(num_val=0, num_test=0))
    assert d.splits["train"].rows is None and d.num_examples("train") == N  # a plain view


def test_integer_pixels_and_fortran_order(tmp_path):
    X, y = _arrays()
    pixels = (X - X.min()).astype(np.uint8)
    ds = load_dataset(_save(tmp_path, "folder", X=np.asfortranarray(pixels), y=y.astype(np.int16)),
                     config=DataConfig(num_val=0, num_test=0, standardize=False))
    mean = pixels.astype(np.float64).mean(axis=0)
    X32 = ds.tensors("train")[0].numpy()
    # uint8 is exact in float32, so the centring is float32 arithmetic (what a minibatch
    # gathered raw computes on the device), within rounding of the float64 reference
    body = pixels.astype(np.float32) - mean.astype(np.float32)
    np.testing.assert_array_equal(X32, np.concatenate([body, np.ones((N, 1), np.float32)], 1))
    np.testing.assert_allclose(X32, _reference(pixels, np.arange(N), mean, np.float32),
                               rtol=0, atol=float(np.spacing(np.float32(255))))


def test_members_are_read_in_rows_at_their_offset(tmp_path):
    """np.savez members are read at their offset inside the zip, value for value np.load's, and
    only the rows asked for: X stays in the file (the labels, one number a row, are read)."""
    X, y = _arrays()
    path = _save(tmp_path, "npz", y=y, X_val=X[:5], y_val=y[:5], X=X)  # X not the first member
    ds = load_dataset(path)
    for split in ("train", "val"):
        assert ds.splits[split].stored
    stored = ds.splits["train"].X
    with np.load(path) as z:
        np.testing.assert_array_equal(stored.read_rows(0, N), z["X"])
        np.testing.assert_array_equal(stored.take(np.array([7, 3, 3, 200])), z["X"][[7, 3, 3, 200]])
        np.testing.assert_array_equal(ds.splits["val"].y.array, z["y_val"])


@pytest.mark.parametrize("fmt", ["npz", "folder"])
def test_fortran_order_is_read_whole_into_memory(tmp_path, fmt):
    """Rows of a Fortran-order array are not contiguous in the file: such an X (images too) is
    read whole, in C order, and gives the inputs its C-order twin gives."""
    X, y = _arrays()
    images = X[:, :6].reshape(N, 2, 3)
    (tmp_path / "f").mkdir()
    (tmp_path / "c").mkdir()
    fortran = load_dataset(_save(tmp_path / "f", fmt, X=np.asfortranarray(images), y=y))
    plain = load_dataset(_save(tmp_path / "c", fmt, X=images, y=y))
    assert not fortran.splits["train"].stored and plain.splits["train"].stored
    assert fortran.sample_shape == plain.sample_shape == (2, 3)
    for split in SPLITS:
        assert torch.equal(fortran.tensors(split)[0], plain.tensors(split)[0])


def test_digits_as_a_file_reproduce_load_dataset(tmp_path, one_thread):
    """The embedded digits written as a data file (splits as load_dataset cuts them) give the
    same inputs as load_dataset("digits"), and train() runs on them: the CLI's future path."""
    from torch_svm.data import load_dataset
    from torch_svm.data.load import read_digits
    from torch_svm.train import TrainConfig, train

    images, labels, _ = read_digits()
    flat = images.reshape(len(images), -1)                   # (1797, 64) uint8
    path = _save(tmp_path, "npz", X=flat[:1297], y=labels[:1297], X_val=flat[1297:1497],
                 y_val=labels[1297:1497], X_test=flat[1497:], y_test=labels[1497:],
                 class_names=np.array([str(d) for d in range(10)]))
    ours = load_dataset(path, config=DataConfig(num_dev=100, standardize=False))
    ref = load_dataset("digits")
    for split in ("train", "val", "test"):  # one preprocessing path: the same inputs
        assert torch.equal(ours.tensors(split)[0], ref.tensors(split)[0])
        assert torch.equal(ours.tensors(split)[1], ref.tensors(split)[1])
    assert ours.class_names == ref.class_names
    assert torch.equal(ours.preprocessing.mean, ref.preprocessing.mean)
    dev = np.random.default_rng(0).choice(1297, 100, replace=False)  # every data set's draw
    assert torch.equal(ours.tensors("dev")[0], ref.tensors("train")[0][dev])
    assert torch.equal(ref.tensors("dev")[0], ref.tensors("train")[0][dev])
    config = TrainConfig(lr=1e-3, reg=1.0, iters=100, device="cpu")
    a, b = train(ours, config), train(ref, config)
    assert abs(a.val_accuracy - b.val_accuracy) <= 0.01 and a.val_accuracy > 0.85


def test_tensors_refuses_what_memory_cannot_hold(tmp_path, monkeypatch):
    X, y = _arrays()
    ds = load_dataset(_save(tmp_path, "npz", X=X, y=y))
    monkeypatch.setattr("os.sysconf", lambda name: 64 if name == "SC_PHYS_PAGES" else 128)
    with pytest.raises(ValueError, match=r"split 'train' of .*data.npz as tensors \(stream it"):
        ds.tensors("train")


def test_the_saved_data_config_cuts_the_same_splits_again(tmp_path):
    """What a checkpoint records (the filled config) reloads the same rows: evaluate's path."""
    from dataclasses import asdict

    X, y = _arrays()
    path = _save(tmp_path, "npz", X=X, y=y)
    first = load_dataset(path, config=DataConfig(num_train=150, num_dev=20, seed=7, dtype="float64"))
    saved = asdict(first.config)
    again = load_dataset(path, config=DataConfig(**saved))
    for split in SPLITS:
        assert np.array_equal(again.splits[split].rows, first.splits[split].rows)
    assert again.config.dtype == "float64"


# ----------------------------------------------------------------------------- bad files


def _bad(X, y, **extra):
    return dict(X=X, y=y, **extra)


X0, Y0 = _arrays()
X_NAN = X0.copy()
X_NAN[17, 3] = np.nan
X_INF = X0.astype(np.float64)
X_INF[200, 0] = -np.inf
Y_NEG = Y0.copy()
Y_NEG[9] = -1
Y_U64 = Y0.astype(np.uint64)
Y_U64[5] = 2**64 - 1          # once reported as "got min -1"; then C = 2**64 took the memory
Y_HUGE = Y0.astype(np.int64)
Y_HUGE[6] = 2**40
Y_WIDE = Y0.astype(np.int64)
Y_WIDE[7] = MAX_CLASSES - 1   # allowed as a label, but W would be (5001, 2**24)

BAD = {
    "X 1-D": (_bad(X0[:, 0], Y0), r"X(\.npy)?: must be a 2-D array \(N, D\).*got shape \(240,\)"),
    "X empty": (_bad(X0[:0], Y0[:0]), r"must be a 2-D array \(N, D\) .*with N, D >= 1, got shape \(0, 7\)"),
    "X complex": (_bad(X0.astype(np.complex64), Y0), "real floating or integer.*complex64"),
    "X bool": (_bad(X0 > 100, Y0), "real floating or integer.*bool"),
    "y 2-D": (_bad(X0, Y0[:, None]), r"y.*one label per row of X, shape \(240,\), got shape \(240, 1\)"),
    "y short": (_bad(X0, Y0[:-1]), r"shape \(240,\), got shape \(239,\)"),
    "y float": (_bad(X0, Y0.astype(np.float64)), "labels must be integers, got dtype float64"),
    "y negative": (_bad(X0, Y_NEG), r"labels must be >= 0, got -1 at row 9.*LinearSVMClassifier"),
    "y uint64 max": (_bad(X0, Y_U64), r"labels must be < 16,777,216 .*got 18446744073709551615 at row 5"),
    "y 2**40": (_bad(X0, Y_HUGE), r"labels must be < 16,777,216 .*got 1099511627776 at row 6"),
    "y wide W": (_bad(np.zeros((N, 5000), np.float32), Y_WIDE),
                 r"W for 16,777,216 classes \(the largest label \+ 1\) and 5001 rows would need about"),
    "one class": (_bad(X0, np.zeros(N, np.int64)), "at least 2 classes, got only label 0"),
    "NaN": (_bad(X_NAN, Y0), "X.*row 17 holds NaN or inf"),
    "inf": (_bad(X_INF, Y0), "X.*row 200 holds NaN or inf"),
    "y missing": ({"X": X0}, r"'y' is missing \(found \['X'\]\)"),
    "y_val alone": (_bad(X0, Y0, X_val=X0[:3]), "'y_val' is missing"),
    "X_val columns": (_bad(X0, Y0, X_val=X0[:3, :2], y_val=Y0[:3]), "D = 7 columns like X"),
    "unknown member": (_bad(X0, Y0, X_valid=X0[:3]), "'X_valid' is not one of the arrays"),
    "object array": (_bad(X0, Y0, class_names=np.array(["a", 1], dtype=object)),
                     "holds Python objects.*never unpickles"),
    "class names count": (_bad(X0, Y0, class_names=np.array(["a", "b"])),
                          "class_names must name the 4 classes, got 2"),
    "two names for X": (_bad(X0, Y0, x_train=X0), "'X' and 'x_train' both name the array X; keep one"),
    "sample shapes differ": (_bad(X0[:, :6].reshape(N, 2, 3), Y0, X_test=X0[:5, :6], y_test=Y0[:5]),
                             r"X, X_test must hold samples of one shape, got X \(240, 2, 3\), X_test \(5, 6\)"),
}


@pytest.mark.parametrize("fmt", ["npz", "folder"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_arrays_are_refused_naming_file_and_array(tmp_path, fmt, case):
    arrays, pattern = BAD[case]
    path = _save(tmp_path, fmt, **arrays)
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_labels_beyond_num_classes(tmp_path):
    path = _save(tmp_path, "npz", X=X0, y=Y0)
    with pytest.raises(DataFormatError, match="labels must be < num_classes=3, got 3 at row 3"):
        load_dataset(path, config=DataConfig(num_classes=3))


def test_finite_check_can_be_skipped(tmp_path):
    ds = load_dataset(_save(tmp_path, "npz", X=X_NAN, y=Y0), config=DataConfig(check_finite=False,
                                                                        center=False))
    assert ds.num_examples("train") == N - 48


def test_compressed_npz_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "small.npz"
    np.savez_compressed(path, X=X0, y=Y0)
    with pytest.raises(DataFormatError, match=r"small.npz:X: the member is compressed "
                                              r"\(np.savez_compressed\).*np.savez\(out"):
        load_dataset(path)


def test_corrupt_and_missing_files(tmp_path):
    path = _save(tmp_path, "folder", X=X0, y=Y0)
    data = (path / "X.npy").read_bytes()
    (path / "X.npy").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataFormatError, match=r"X.npy: truncated: a float32 array of shape "
                                              r"\(240, 7\) needs 6720 bytes"):
        load_dataset(path)
    (path / "X.npy").write_bytes(b"not an array at all")
    with pytest.raises(DataFormatError, match="X.npy: not a readable .npy array"):
        load_dataset(path)
    (path / "X.npy").write_bytes(b"")
    with pytest.raises(DataFormatError, match="X.npy: the file is empty"):
        load_dataset(path)
    npz = _save(tmp_path, "npz", X=X0, y=Y0)
    npz.write_bytes(npz.read_bytes()[:3000])                  # the central directory is gone
    with pytest.raises(DataFormatError, match="not a readable .npz"):
        load_dataset(npz)
    single = tmp_path / "X.npy"
    np.save(single, X0)
    with pytest.raises(DataFormatError, match="put X.npy and y.npy in a folder"):
        load_dataset(single)
    with pytest.raises(FileNotFoundError, match="'nowhere.npz' is neither digits, cifar10 nor an existing .npz"):
        load_dataset("nowhere.npz")


def test_npz_member_with_a_lying_size_is_refused(tmp_path):
    """A zip whose member claims more bytes than the archive holds: refused, not read past."""
    path = tmp_path / "data.npz"
    np.savez(path, X=X0, y=Y0)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        size = zf.getinfo("X.npy").file_size
    entry = raw.find(b"PK\x01\x02")                           # central directory entries
    while raw[entry + 46:entry + 51] != b"X.npy":
        entry = raw.find(b"PK\x01\x02", entry + 4)
    raw[entry + 20:entry + 28] = (size * 100).to_bytes(4, "little") * 2  # both sizes
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="data.npz:X: truncated"):
        load_dataset(path)


@pytest.mark.parametrize("field, value, message", [
    ("num_train", 0, "num_train must be an integer >= 1, got 0"),
    ("num_val", -1, "num_val must be an integer >= 0, got -1"),
    ("num_classes", 1, "num_classes must be an integer >= 2, got 1"),
    ("center", 1, "center must be True or False, got 1"),
    ("dtype", "int8", "dtype must be one of .*got 'int8'"),
    ("seed", -1, "seed must be an integer >= 0 and <= 9223372036854775807, got -1"),
    ("chunk_bytes", 0, "chunk_bytes must be an integer >= 1 and <= 1073741824, got 0"),
    ("in_memory", 1, "in_memory must be True or False, got 1"),
    ("chunk_bytes", 2**62, "chunk_bytes must be .* <= 1073741824, got 4611686018427387904"),
    ("class_names", "abc", "class_names must be None or a sequence of strings, got 'abc'"),
])
def test_config_is_checked_when_made(field, value, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**{field: value})
    with pytest.raises(ValueError, match="class_names must name num_classes=3 classes, got 2"):
        DataConfig(num_classes=3, class_names=["a", "b"])
    with pytest.raises(TypeError, match="config must be a DataConfig"):
        load_dataset("x.npz", config={"num_train": 3})
    with pytest.raises(TypeError, match="data_dir must be a path .* pass it as config="):
        load_dataset("x.npz", DataConfig())


def test_more_rows_asked_than_the_file_has(tmp_path):
    path = _save(tmp_path, "npz", X=X0, y=Y0)
    with pytest.raises(ValueError, match="must be <= its 240 rows.*num_val=200, num_test=40"):
        load_dataset(path, config=DataConfig(num_val=200, num_test=40))
    with pytest.raises(ValueError, match="num_train=500"):
        load_dataset(path, config=DataConfig(num_train=500))


# ----------------------------------------------------------------------------- memory


def _status() -> dict:
    """This process's VmRSS, VmHWM, RssAnon, RssFile in MiB (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _peak_growth(fn) -> float:
    """Growth of the peak resident set while ``fn()`` runs, in MiB (peak reset first)."""
    Path("/proc/self/clear_refs").write_text("5")            # VmHWM := VmRSS
    before = _status()["VmRSS"]
    fn()
    return _status()["VmHWM"] - before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_streaming_keeps_the_resident_set_bounded(tmp_path):
    """A 96 MiB X (sparse on disk, so quick to make): the load pass and a features pass grow
    the peak resident set by a few chunks (4 MiB each), not by the file, and a batch leaves
    none of its pages resident; reading the same file plainly through np.load(mmap_mode="r")
    grows the peak by the whole file (the twin: the measurement sees mapped pages).

    (A batch's own transient peak is not asserted: on kernels that map page-cache folios whole,
    a fault maps up to a folio (2 MiB) of clean page cache, released right after the gather.)
    """
    folder = tmp_path / "big"
    folder.mkdir()
    n, d = 96 * 2**20 // (256 * 4), 256
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    X[::1000] = 1.0                                          # a few pages of data, rest holes
    X.flush()
    del X
    np.save(folder / "y.npy", np.arange(n) % 3)
    held = {}
    config = DataConfig(chunk_bytes=4 * 2**20, num_val=0, num_test=0)
    assert _peak_growth(lambda: held.update(ds=load_dataset(folder, config=config))) < 32
    ds = held["ds"]
    assert ds.preprocessing.mean[0] == pytest.approx(1.0 / 1000, rel=0.01)
    assert _peak_growth(lambda: sum(len(y) for _, y in ds.chunks("train"))) < 32
    before = _status()
    ds.batch("train", np.arange(0, n, 97))
    after = _status()
    assert after["RssFile"] - before["RssFile"] < 16 and after["RssAnon"] - before["RssAnon"] < 16
    plain = np.load(folder / "X.npy", mmap_mode="r")
    assert _peak_growth(lambda: plain.sum(dtype=np.float64)) > 80


# ----------------------------------------------------------------------------- python -m torch_svm


def test_python_dash_m_runs_the_cli(monkeypatch, capsys):
    """``python -m torch_svm`` is the torch-svm command line (run in-process: no torch start-up)."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["torch_svm", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("torch_svm", run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage: torch-svm" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["torch_svm", "no-such-command"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("torch_svm", run_name="__main__")
    assert exit_info.value.code == 2


@pytest.mark.parametrize("fmt", ["npz", "folder"])
def test_images_and_keras_names_are_rows_of_the_same_map(tmp_path, fmt):
    """Keras' mnist.npz layout (x_train (N, H, W), y_train, x_test, y_test): the same data set as
    the flattened (N, D) file under the usual names, bit for bit, read as views of the map;
    the sample shape becomes the image shape the weight templates are drawn in."""
    X, y = _arrays()
    images = np.ascontiguousarray(X[:, :6]).reshape(N, 2, 3)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    named = load_dataset(_save(tmp_path / "a", fmt, x_train=images[:200], y_train=y[:200],
                              x_test=images[200:], y_test=y[200:]))
    flat = load_dataset(_save(tmp_path / "b", fmt, X=X[:200, :6], y=y[:200], X_test=X[200:, :6],
                             y_test=y[200:]))
    assert named.image_shape == (2, 3, 1) and flat.image_shape == (1, 6, 1)
    assert named.sample_shape == (2, 3) and flat.sample_shape == (6,)
    for split in SPLITS:
        assert named.num_examples(split) == flat.num_examples(split)
        (a, ya), = named.chunks(split, chunk_rows=10**6)
        (b, yb), = flat.chunks(split, chunk_rows=10**6)
        assert torch.equal(a, b) and torch.equal(ya, yb)
    rgb = load_dataset(_save(tmp_path, "npz", X=np.ascontiguousarray(X[:, :6]).reshape(N, 1, 2, 3), y=y))
    assert rgb.image_shape == (1, 2, 3)                        # (H, W, C) with C = 3


# --------------------------------------------------------------- the file changes while in use


def _train_while(tmp_path, change):
    """Train on a folder of .npy files; at step 3 ``change(X path)`` alters X.npy."""
    from torch_svm.train import TrainConfig, train

    X, y = _arrays(n=2000)
    folder = _save(tmp_path, "folder", X=X, y=y)
    data = load_dataset(folder, config=DataConfig(num_train=1600, in_memory=False))

    def callback(it, *_):
        if it == 3:
            change(folder / "X.npy")
    return folder, lambda: train(data, TrainConfig(iters=30, batch_size=500, device="cpu"),
                                 callback=callback, progress=False)


@pytest.mark.parametrize("keep", [0, 128, 128 + 4 * D * 1000])
def test_a_file_truncated_during_training_is_named_not_a_crash(tmp_path, keep):
    """Rows are copied by pread, never mapped: a cut file reads short, which is a one-line
    DataFormatError naming the file (a mapped read would die of SIGBUS, signal 7)."""
    def cut(path):
        with open(path, "r+b") as fh:
            fh.truncate(keep)
    folder, run = _train_while(tmp_path, cut)
    with pytest.raises(DataFormatError, match=rf"{folder / 'X.npy'}.*(shorter|changed|truncated)"):
        run()


def test_nan_written_during_training_names_the_row_not_the_learning_rate(tmp_path):
    """The load pass found X finite; NaN written into it later is named with its row when a
    batch reads it, instead of surfacing as a diverged loss blamed on the learning rate."""
    def poison(path):
        X = np.load(path, mmap_mode="r+")
        X[:] = np.nan
        X.flush()
    folder, run = _train_while(tmp_path, poison)
    with pytest.raises(DataFormatError, match=r"X.npy: row \d+ holds NaN or inf now .*changed"):
        run()


# --------------------------------------------------------------------------- reader fuzz


def _mutants(blob: bytes, rng: np.random.Generator, count: int):
    """``count`` damaged copies of ``blob``: bytes flipped or overwritten (biased to the
    headers, where the parsers are), spans cut out or duplicated, the end cut off."""
    interesting = [b"'", b"(", b")", b",", b":", b"{", b"}", b"\x00", b"\xff", b"9", b"-",
                   b"<", b"|", b"O", b"V", b"U", b" ", b"\n", b"True", b"1e999"]
    for _ in range(count):
        data = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(0, 5))
            hot = int(rng.integers(0, min(len(data), 400))) if rng.random() < 0.8 else \
                int(rng.integers(0, len(data)))
            if kind == 0:
                data[hot] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:
                token = interesting[int(rng.integers(0, len(interesting)))]
                data[hot:hot + len(token)] = token
            elif kind == 2:
                del data[hot:hot + int(rng.integers(1, 40))]
            elif kind == 3:
                data[hot:hot] = data[hot:hot + int(rng.integers(1, 40))]
            else:
                del data[int(rng.integers(0, len(data))):]
            if not data:
                data = bytearray(b"\x93")
        yield bytes(data)


@pytest.mark.parametrize("fmt", ["npz", "X.npy", "y.npy", "class_names.npy"])
def test_reader_fuzz_every_damaged_file_is_one_error_naming_it(tmp_path, fmt):
    """800 mutated copies of a good file (with class names): each loads (the damage missed
    what matters) or raises a TorchSVMError whose message names the file. Any other
    exception (a tokenizer error, zipfile's NotImplementedError, a bare numpy message) is
    a traceback the user would see, and fails the test."""
    from torch_svm.errors import TorchSVMError

    X, y = _arrays(n=40)
    names = np.array(["cat", "dog", "emu", "fox"])
    good = _save(tmp_path, "npz" if fmt == "npz" else "folder", X=X, y=y, class_names=names)
    target = good if fmt == "npz" else good / fmt
    blob = target.read_bytes()
    rng = np.random.default_rng(len(fmt))
    loaded = refused = 0
    for i, data in enumerate(_mutants(blob, rng, 800)):
        target.write_bytes(data)
        try:
            load_dataset(good, config=DataConfig(num_train=20))
            loaded += 1
        except TorchSVMError as exc:
            assert str(target) in str(exc) or str(good) in str(exc), (i, str(exc))
            refused += 1
    assert refused > 400, (loaded, refused)                # the fuzz reaches the parsers


# ------------------------------------------------ special files, lying headers, huge values


def _raw_npy(path: Path, descr: str, shape, body: bytes = b"", size: int = 0) -> None:
    """A .npy file with the header given (whatever it claims), then ``body``; ``size``
    extends it sparsely (no disk used) to that many bytes."""
    import struct

    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (64 - (len(header) + 11) % 64) + b"\n"
    with open(path, "wb") as fh:
        fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body)
        if size:
            fh.truncate(size)


def _folder(tmp_path: Path, **files) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    X, y = _arrays()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    for name, make in files.items():
        (folder / f"{name}.npy").unlink(missing_ok=True)
        make(folder / f"{name}.npy")
    return folder


HOSTILE_FILES = {
    # 3e8 zero-width strings in 12 KB: was a 4.7 GB peak
    "zero_width_class_names": (dict(class_names=lambda p: _raw_npy(p, "<U0", (300_000_000,))),
                               "class_names.npy: dtype <U0 has zero width"),
    # a zero-width X asked for 74 GiB
    "zero_width_X": (dict(X=lambda p: _raw_npy(p, "|V0", (N, 10**9))), "X.npy: dtype |V0 has zero width"),
    "negative_shape": (dict(X=lambda p: _raw_npy(p, "<f4", (-N, D))), "X.npy: shape (-240, 7) is not a shape"),
    "zero_by_1e20": (dict(X=lambda p: _raw_npy(p, "<f4", (0, 10**20))), "X.npy: must be a 2-D array"),
    "65_dimensions": (dict(X=lambda p: _raw_npy(p, "<f4", (1,) * 65)), "X.npy: shape (1, 1, 1"),
    "X_is_a_fifo": (dict(X=lambda p: os.mkfifo(p)), "X.npy: is a FIFO, not a regular file"),
    # sparse 240 x 2**26 X (64 GB apparent) and a label of 99: refused from the labels, before
    # any of X is read (was 2.8 GB of memory)
    "bad_label_before_huge_X": (
        dict(X=lambda p: _raw_npy(p, "<f4", (N, 2**26), size=128 + N * 2**26 * 4),
             y=lambda p: np.save(p, np.r_[99, np.zeros(N - 1, np.int64)])),
        "y.npy: W for 100 classes"),
    # squares overflow float64: was "lr must be a finite number > 0, got nan"
    "values_near_1e200": (dict(X=lambda p: np.save(p, _arrays()[0].astype(np.float64) * 1e200)),
                          "X.npy: column 0 holds values so large that their mean or variance overflows"),
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX special files")
@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_files_are_refused_naming_file_and_cause(tmp_path, case):
    import resource
    import time

    files, words = HOSTILE_FILES[case]
    folder = _folder(tmp_path, **files)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(DataFormatError) as info:
        load_dataset(folder)
    assert words in str(info.value) and str(folder) in str(info.value), str(info.value)
    assert time.monotonic() - start < 10                          # no hang, no scan of 64 GB
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib                            # memory in proportion to the file


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX special files")
@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/null"])
def test_special_files_as_data_are_named_for_what_they_are(tmp_path, capsys, special):
    from conftest import run_cli

    path = special
    if special == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)
    code, _, err = run_cli(capsys, "train", "--data", path, "--iters", "2")
    kind = "a FIFO" if special == "fifo" else "a character device"
    assert code == 2 and len(err) == 1 and f"'{path}' is {kind}" in err[0], err


def test_an_empty_split_is_reported_empty_not_nan(tmp_path, capsys):
    """X_val with 0 rows: the accuracy is "none (empty split)" (JSON null), never "nan"."""
    import json

    from conftest import run_cli

    X, y = _arrays()
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y, X_val=X[:0], y_val=y[:0])
    code, out, err = run_cli(capsys, "train", "--data", str(tmp_path / "d.npz"), "--iters", "5")
    assert code == 0 and "val accuracy none (empty split)" in out and "nan" not in out
    code, out, _ = run_cli(capsys, "train", "--data", str(tmp_path / "d.npz"), "--iters", "5",
                           "--json")
    assert code == 0 and json.loads(out)["val_accuracy"] is None
