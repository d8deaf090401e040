"""torch_svm.data: CIFAR-10 reading (layout, folder vs archive, safety, errors), splits and
preprocessing against a plain float64 reference, and the embedded digits.

Every CIFAR file here is a tiny one written by the test itself in the real format: Python 2
style pickles (byte-string keys, as the originals) and Python 3 protocol 2 / 5 pickles (str keys).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import struct
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_svm.data import cifar10
from torch_svm.data.cifar10 import DownloadError, UnsafePickleError, download_cifar10, read_cifar10
from torch_svm.data import DataConfig, load_dataset
from torch_svm.data.load import read_digits
from torch_svm.errors import DataFormatError, TorchSVMError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 4  # images per data batch: 20 training images in all
NUM_TEST = 6


class _Py2Pickler(pickle._Pickler):
    """Writes str/bytes as Python 2 byte strings and numpy globals under numpy.core, like the
    cPickle files in the official archive (loading with encoding="bytes" gives bytes keys)."""

    def _save_py2_string(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def _save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
            self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = _save_py2_string
    dispatch[bytes] = _save_py2_string
    dispatch[type] = _save_global


def _dump(obj, path: Path, style: str) -> None:
    if style == "py2":
        with open(path, "wb") as fh:
            _Py2Pickler(fh, protocol=2).dump(obj)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(style[-1])))


def _images(n: int, offset: int) -> np.ndarray:
    """(n, 3072) uint8 channel planes with distinct, known content."""
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _write_cifar(root: Path, style: str = "py2", archive: bool = False, per_batch: int = PER_BATCH,
                 num_test: int = NUM_TEST, **override) -> Path:
    """Write root/cifar-10-batches-py (and the tar.gz when asked); ``override`` replaces the
    content of a file by name (a dict to pickle, or raw bytes)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    contents = {f"data_batch_{b + 1}": {"batch_label": f"training batch {b + 1} of 5",
                                        "labels": [(b * per_batch + i) % 10 for i in range(per_batch)],
                                        "data": _images(per_batch, b),
                                        "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]}
                for b in range(5)}
    contents["test_batch"] = {"batch_label": "testing batch 1 of 1", "data": _images(num_test, 99),
                              "labels": [(3 * i) % 10 for i in range(num_test)],
                              "filenames": [f"t_{i}.png" for i in range(num_test)]}
    contents["batches.meta"] = {"num_cases_per_batch": per_batch, "label_names": CLASSES, "num_vis": 3072}
    contents.update(override)
    for name, obj in contents.items():
        if isinstance(obj, bytes):
            (folder / name).write_bytes(obj)
        else:
            _dump(obj, folder / name, style)
    if archive:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
    return folder


def _expected_train() -> np.ndarray:
    """(20, 32, 32, 3) uint8: the training planes transposed to (H, W, C) by hand."""
    planes = np.concatenate([_images(PER_BATCH, b) for b in range(5)])
    out = np.empty((len(planes), 32, 32, 3), np.uint8)
    for i, row in enumerate(planes):
        for c in range(3):
            for r in range(32):
                for col in range(32):
                    out[i, r, col, c] = row[c * 1024 + r * 32 + col]
    return out


SMALL = DataConfig(num_train=15, num_val=5, num_test=NUM_TEST, num_dev=4)


# ----------------------------------------------------------------------------- layout, sources


@pytest.mark.parametrize("style", ["py2", "proto2", "proto5"])
def test_channel_planes_land_in_hwc_order(tmp_path, style):
    _write_cifar(tmp_path, style)
    X_train, y_train, X_test, y_test, names = read_cifar10(tmp_path)
    assert X_train.shape == (20, 32, 32, 3) and X_train.dtype == np.uint8
    assert X_test.shape == (NUM_TEST, 32, 32, 3)
    np.testing.assert_array_equal(X_train, _expected_train())
    assert y_train.dtype == np.int64 and y_train.tolist() == [i % 10 for i in range(20)]
    assert names == tuple(CLASSES)


def test_a_known_pixel(tmp_path):
    data = np.zeros((PER_BATCH, 3072), np.uint8)
    r, c = 5, 7
    data[2, [r * 32 + c, 1024 + r * 32 + c, 2048 + r * 32 + c]] = [200, 100, 50]
    _write_cifar(tmp_path, data_batch_2={"data": data, "labels": [0] * PER_BATCH})
    X_train = read_cifar10(tmp_path)[0]
    assert X_train[PER_BATCH + 2, r, c].tolist() == [200, 100, 50]
    assert X_train[PER_BATCH + 2].sum() == 350
    # and in the feature rows of a data set: (H, W, C) flattening, then mean, then bias
    ds = load_dataset("cifar10", tmp_path, SMALL)
    row = (ds.tensors("train")[0][PER_BATCH + 2, :-1] + ds.preprocessing.mean).reshape(ds.image_shape)
    np.testing.assert_allclose(row[r, c].tolist(), [200.0, 100.0, 50.0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("style", ["py2", "proto2"])
def test_folder_parent_and_archive_read_the_same(tmp_path, style):
    folder = _write_cifar(tmp_path / "a", style, archive=True)
    archive = tmp_path / "a" / "cifar-10-python.tar.gz"
    only_archive = tmp_path / "b"
    only_archive.mkdir()
    os.replace(archive, only_archive / archive.name)
    reference = read_cifar10(folder)
    for source in (tmp_path / "a", only_archive / archive.name, only_archive):
        for got, want in zip(read_cifar10(source), reference):
            np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- splits, preprocessing


def test_splits_match_a_float64_reference(tmp_path):
    _write_cifar(tmp_path)
    ds = load_dataset("cifar10", tmp_path, SMALL)
    train = _expected_train().reshape(20, -1).astype(np.float64)
    test = read_cifar10(tmp_path)[2].reshape(NUM_TEST, -1).astype(np.float64)
    mean = train[:15].mean(axis=0)
    for X, want in ((ds.tensors("train")[0], train[:15]), (ds.tensors("val")[0], train[15:20]), (ds.tensors("test")[0], test)):
        assert X.dtype == torch.float32 and X.shape[1] == 3073
        np.testing.assert_allclose(X[:, :-1].numpy(), want - mean, rtol=0, atol=1e-4)
        assert torch.all(X[:, -1] == 1)
    assert ds.tensors("train")[1].dtype == torch.int64 and ds.tensors("train")[1].tolist() == list(range(10)) + list(range(5))
    assert ds.tensors("val")[1].tolist() == [5, 6, 7, 8, 9]
    assert ds.tensors("dev")[0].shape == (4, 3073) and ds.tensors("dev")[1].shape == (4,)
    assert ds.tensors("train")[0][:, :-1].double().mean(0).abs().max() < 1e-4  # train is centred
    np.testing.assert_allclose(ds.preprocessing.mean.numpy(), mean, rtol=1e-13, atol=0)
    assert ds.preprocessing.scale is None                      # the assignment's unscaled pixels
    assert ds.image_shape == (32, 32, 3) and ds.class_names == tuple(CLASSES) and ds.bias
    assert ds.num_features == 3073 and ds.num_classes == 10


def test_no_bias_and_float64(tmp_path):
    _write_cifar(tmp_path)
    ds = load_dataset("cifar10", tmp_path, DataConfig(num_train=15, num_val=5, num_test=2,
                                                      num_dev=3, bias=False, dtype="float64"))
    assert ds.tensors("train")[0].shape == (15, 3072) and ds.tensors("test")[0].shape == (2, 3072)
    assert ds.tensors("train")[0].dtype == torch.float64 and not ds.bias
    assert ds.tensors("train")[0].mean(0).abs().max() < 1e-9


def test_no_float64_copy(tmp_path):
    """Peak allocation while loading stays near the float32 splits themselves (a float64 copy
    of the train split alone would add 2x their size)."""
    _write_cifar(tmp_path, per_batch=400, num_test=400)
    tracemalloc.start()
    try:
        ds = load_dataset("cifar10", tmp_path, DataConfig(num_train=1900, num_val=100, num_test=400))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    floats = sum(t.numel() * t.element_size() for t in (ds.tensors("train")[0], ds.tensors("val")[0], ds.tensors("test")[0], ds.tensors("dev")[0]))
    assert peak < 1.5 * floats, (peak, floats)


def test_dev_is_drawn_from_train_and_reproducible():
    a = load_dataset("digits", config=DataConfig(seed=3))
    b = load_dataset("digits", config=DataConfig(seed=3))
    c = load_dataset("digits", config=DataConfig(seed=4))
    assert torch.equal(a.tensors("dev")[0], b.tensors("dev")[0]) and torch.equal(a.tensors("dev")[1], b.tensors("dev")[1])
    assert not torch.equal(a.tensors("dev")[0], c.tensors("dev")[0])
    # each dev row is a distinct train row with its label
    match = (a.tensors("dev")[0][:, None, :] == a.tensors("train")[0][None, :, :]).all(-1)  # (num_dev, num_train)
    rows = match.float().argmax(1)
    assert match.any(1).all() and len(set(rows.tolist())) == len(rows)
    assert torch.equal(a.tensors("train")[1][rows], a.tensors("dev")[1])


def test_digits_out_of_the_box():
    images, labels, names = read_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8 and images.max() == 16
    assert labels.dtype == np.int64 and np.bincount(labels).min() > 170
    ds = load_dataset()
    assert ds.name == "digits" and ds.class_names == tuple("0123456789")
    assert ds.image_shape == (8, 8, 1)
    shapes = [tuple(t.shape) for t in (ds.tensors("train")[0], ds.tensors("val")[0], ds.tensors("test")[0], ds.tensors("dev")[0])]
    assert shapes == [(1297, 65), (200, 65), (300, 65), (100, 65)]
    assert set(ds.tensors("train")[1].tolist()) == set(range(10)) and ds.tensors("train")[0].dtype == torch.float32
    assert ds.config == DataConfig(num_train=1297, num_val=200, num_test=300, num_dev=100,
                                   standardize=False, num_classes=10,
                                   class_names=tuple("0123456789"))
    # un-normalising gives back the stored pixels; test is the tail of the file
    restored = ds.tensors("test")[0][:, :-1] + ds.preprocessing.mean
    np.testing.assert_allclose(restored.numpy(), images[-300:].reshape(300, -1), atol=1e-4)


# ----------------------------------------------------------------------------- unsafe pickles


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func", [os.system, eval], ids=["os.system", "builtins.eval"])
@pytest.mark.parametrize("archive", [False, True], ids=["folder", "archive"])
def test_malicious_pickle_is_refused_and_does_not_run(tmp_path, func, archive):
    marker = tmp_path / "pwned"
    arg = (f"touch {marker}" if func is os.system
           else f"open({str(marker)!r}, 'w').close()")
    evil = pickle.dumps({"data": _images(PER_BATCH, 2), "labels": [0] * PER_BATCH,
                         "x": _Payload(func, arg)}, protocol=2)
    # negative twin: the payload is live, a plain pickle.loads would run it
    pickle.loads(evil)
    assert marker.exists()
    marker.unlink()

    folder = _write_cifar(tmp_path / "d", archive=archive, data_batch_3=evil)
    source = tmp_path / "d" / "cifar-10-python.tar.gz" if archive else folder
    with pytest.raises(UnsafePickleError) as info:
        load_dataset("cifar10", source, SMALL)
    message = str(info.value)
    assert "data_batch_3" in message
    refused = ("posix.system", "nt.system") if func is os.system else ("__builtin__.eval",)
    assert any(name in message for name in refused), message
    assert isinstance(info.value, ValueError)
    assert not marker.exists()


def test_codecs_encode_only_for_latin1(tmp_path):
    evil = (b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xq\x01X\x05\x00\x00\x00rot13"
            b"q\x02\x86q\x03Rq\x04.")
    assert pickle.loads(evil) == "k"  # the crafted call is valid (rot13)
    _write_cifar(tmp_path, test_batch=evil)
    with pytest.raises(DataFormatError, match="test_batch.*latin1"):
        read_cifar10(tmp_path)


# ----------------------------------------------------------------------------- broken files


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no CIFAR-10 files"):
        read_cifar10(tmp_path)


def test_missing_file_names_it(tmp_path):
    folder = _write_cifar(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        read_cifar10(tmp_path)


def test_archive_missing_member_names_it(tmp_path):
    folder = _write_cifar(tmp_path)
    (folder / "batches.meta").unlink()
    with tarfile.open(tmp_path / "x.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(FileNotFoundError, match="x.tar.gz.*batches.meta"):
        read_cifar10(tmp_path / "x.tar.gz")


def test_truncated_pickle_names_the_file(tmp_path):
    folder = _write_cifar(tmp_path)
    blob = (folder / "data_batch_4").read_bytes()
    (folder / "data_batch_4").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="data_batch_4.*truncated"):
        read_cifar10(folder)


def test_truncated_archive_names_it(tmp_path):
    _write_cifar(tmp_path, archive=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    blob = archive.read_bytes()
    cut = tmp_path / "cut" / archive.name
    cut.parent.mkdir()
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="cifar-10-python.tar.gz"):
        read_cifar10(cut)


@pytest.mark.parametrize("content, pattern", [
    ({"labels": [0] * PER_BATCH}, r"missing key\(s\) \['data'\]"),
    ({"data": _images(PER_BATCH, 0).astype(np.int64), "labels": [0] * PER_BATCH},
     r"uint8 array of shape \(N, 3072\) with N <= 10000, got int64"),
    ({"data": _images(PER_BATCH, 0).astype(np.float32), "labels": [0] * PER_BATCH},
     r"refused numpy dtype b?'f4'"),  # only integer dtypes are rebuilt at all
    ({"data": _images(PER_BATCH, 0)[:, :3000], "labels": [0] * PER_BATCH}, r"got uint8 array of shape \(4, 3000\)"),
    ({"data": _images(PER_BATCH, 0), "labels": [0] * (PER_BATCH - 1)}, r"'labels' must be 4 integers"),
    ({"data": _images(PER_BATCH, 0), "labels": [0, 1, 2, 10]}, r"labels must be in \[0, 10\), got min 0 and max 10"),
    ({"data": _images(PER_BATCH, 0), "labels": [0, -1, 2, 3]}, r"labels must be in \[0, 10\), got min -1"),
    # issue 16.7: 2**64 - 1 was reported as "got min -1" (a uint64 read as int64)
    ({"data": _images(PER_BATCH, 0), "labels": np.array([0, 2**64 - 1, 2, 3], dtype=np.uint64)},
     r"labels must be in \[0, 10\), got min 0 and max 18446744073709551615"),
    ({"data": _images(PER_BATCH, 0), "labels": [0, 2**64 - 1, 2, 3]},
     r"labels must be in \[0, 10\), got min 0 and max 18446744073709551615"),
    ({"data": _images(PER_BATCH, 0), "labels": [0, 1, 2, 3.0]}, r"'labels' must be 4 integers .*got list of length 4"),
    ([1, 2, 3], r"expected a pickled dict, got list"),
])
def test_malformed_batch_names_file_and_problem(tmp_path, content, pattern):
    _write_cifar(tmp_path, data_batch_5=content)
    with pytest.raises(DataFormatError, match=r"data_batch_5.*" + pattern):
        read_cifar10(tmp_path)


@pytest.mark.parametrize("names", [[], CLASSES[:9], CLASSES + ["extra"], CLASSES[:9] + [""],
                                   CLASSES[:9] + ["x" * 101], CLASSES[:9] + [3], "airplane"])
def test_malformed_meta(tmp_path, names):
    _write_cifar(tmp_path, **{"batches.meta": {"label_names": names}})
    with pytest.raises(DataFormatError, match=r"batches.meta: 'label_names' must be a list of 10 "
                                              r"class names \(str or bytes of 1 to 100 characters\)"):
        read_cifar10(tmp_path)


def test_batch_rows_are_capped(tmp_path, monkeypatch):
    """At most 10000 rows per batch, as the official files hold (here the cap is lowered to 3,
    so that the files stay small)."""
    monkeypatch.setattr(cifar10, "_BATCH_ROWS", 3)
    _write_cifar(tmp_path)
    with pytest.raises(DataFormatError, match=r"data_batch_1: 'data' must be a uint8 array of "
                                              r"shape \(N, 3072\) with N <= 3, got uint8 array of shape \(4, 3072\)"):
        read_cifar10(tmp_path)


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, pattern", [
    ({"name": "mnist"}, "'mnist' is neither digits, cifar10 nor an existing .npz file"),
    ({"name": "cifar10"}, "needs its folder, data_dir"),    # the CLI says --data-dir
    ({"name": "digits", "data_dir": "/tmp"}, "data_dir and download only apply"),
    ({"config": dict(num_train=1500, num_val=200)}, r"1500 \+ 200 \+ 300 = 2000"),
    ({"config": dict(num_train=0)}, "num_train must be an integer >= 1, got 0"),
    ({"config": dict(num_val=-1)}, "num_val must be an integer >= 0, got -1"),
    ({"config": dict(num_dev=2.5)}, "num_dev must be an integer >= 0, got 2.5"),
    ({"config": dict(num_train=50, num_dev=60)}, r"num_dev must be <= num_train \(50\), got 60"),
    ({"config": dict(dtype="int8")}, "dtype must be one of .*'int8'"),
    ({"config": dict(bias=1)}, "bias must be True or False, got 1"),
])
def test_bad_arguments_are_named(kwargs, pattern):
    with pytest.raises(TorchSVMError, match=pattern):
        if "config" in kwargs:                   # a config is checked when it is made
            kwargs = dict(kwargs, config=DataConfig(**kwargs["config"]))
        load_dataset(**kwargs)


def test_cifar_counts_checked_against_the_files(tmp_path):
    _write_cifar(tmp_path)
    with pytest.raises(ValueError, match=r"num_train \+ num_val must be <= 20.*16 \+ 5 = 21"):
        load_dataset("cifar10", tmp_path, DataConfig(num_train=16, num_val=5, num_dev=1))
    with pytest.raises(ValueError, match=r"num_test must be <= 6 \(the rows of cifar10 test\), got 7"):
        load_dataset("cifar10", tmp_path, DataConfig(num_train=10, num_val=5, num_test=7, num_dev=1))


def test_download_checks_md5_before_the_file_appears(tmp_path):
    """With a file:// URL, so no network: a good md5 keeps the file, a bad one leaves nothing."""
    source = tmp_path / "served.tar.gz"
    source.write_bytes(b"not really an archive")
    good = hashlib.md5(source.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"md5 .*expected {'0' * 32}"):
        download_cifar10(tmp_path / "a", url=source.as_uri(), md5="0" * 32)
    assert not (tmp_path / "a" / "cifar-10-python.tar.gz").exists()
    path = download_cifar10(tmp_path / "b", url=source.as_uri(), md5=good)
    assert path == tmp_path / "b" / "cifar-10-python.tar.gz"
    assert path.read_bytes() == source.read_bytes()


def test_download_failure_is_one_line_naming_the_url(tmp_path, monkeypatch):
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # the refused connection must be 127.0.0.1's
    missing = (tmp_path / "nowhere.tar.gz").as_uri()
    with pytest.raises(DownloadError) as info:
        download_cifar10(tmp_path / "a", url=missing)
    message = str(info.value)
    assert message.startswith(f"download of {missing} failed: [Errno 2] No such file")
    assert message.endswith("; get the archive by hand and pass --data-dir") and "\n" not in message
    assert isinstance(info.value, OSError) and "urlopen error" not in message
    with pytest.raises(DownloadError, match=r"download of http://127.0.0.1:9/x failed: .*refused"):
        download_cifar10(tmp_path / "a", url="http://127.0.0.1:9/x")  # the discard port: closed
    assert not (tmp_path / "a" / "cifar-10-python.tar.gz").exists()


# ----------------------------------------------------------------------------- real data (opt-in)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TORCH_SVM_CIFAR10"),
                    reason="set TORCH_SVM_CIFAR10 to a CIFAR-10 python-version folder or archive")
def test_real_cifar10():
    ds = load_dataset("cifar10", os.environ["TORCH_SVM_CIFAR10"], DataConfig(num_test=10000))
    assert ds.tensors("train")[0].shape == (49000, 3073) and ds.tensors("val")[0].shape == (1000, 3073)
    assert ds.tensors("test")[0].shape == (10000, 3073) and ds.tensors("dev")[0].shape == (500, 3073)
    assert torch.bincount(ds.tensors("test")[1]).tolist() == [1000] * 10
    assert ds.tensors("train")[0][:, :-1].double().mean(0).abs().max() < 1e-3


def test_default_dev_split_shrinks_with_a_small_train_split():
    ds = load_dataset("digits", config=DataConfig(num_train=30))
    assert ds.tensors("train")[0].shape[0] == 30 and ds.tensors("dev")[0].shape[0] == 30
    with pytest.raises(ValueError, match=r"num_dev must be <= num_train \(30\), got 31"):
        load_dataset("digits", config=DataConfig(num_train=30, num_dev=31))
