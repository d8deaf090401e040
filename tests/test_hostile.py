"""Hostile inputs (issue 14): CIFAR-10 files built to crash, hang or exhaust the reader, and
runs killed halfway through writing a folder.

Each hostile file must be refused with one line naming the file and what was wrong (the value
clipped), with nothing allocated beyond the file's size, and with exit code 2 from the CLI.
The files are written opcode by opcode (nothing is unpickled here), and they are all read in
one worker subprocess: a regression (a segfault, a hang, a 3 GB allocation) then fails the
tests that expected a refusal instead of taking the test run down.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import pytest

from torch_svm.data.cifar10 import read_cifar10
from torch_svm.errors import FileAccessError, clipped_repr
from torch_svm.files import atomic_directory

# ----------------------------------------------------------------------------- pickle opcodes
# Protocol 2 as Python 2's cPickle wrote the official files; numpy globals under numpy.core.

_MA, _NUM = "numpy.core.multiarray", "numpy.core.numeric"
NONE, TRUE, FALSE = b"N", b"\x88", b"\x89"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"              # GLOBAL


def _str(data: bytes) -> bytes:
    """A Python 2 str (read back as bytes): SHORT_BINSTRING or BINSTRING."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])                                                  # BININT1
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)                                        # BININT
    raw = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw                                      # LONG1


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"                                          # MARK ... TUPLE


def _list(*items: bytes) -> bytes:
    return b"](" + b"".join(items) + b"e"                                         # EMPTY_LIST MARK ... APPENDS


def _dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(_str(k.encode()) + v for k, v in items.items()) + b"u"  # ... SETITEMS


def _call(func: bytes, *args: bytes) -> bytes:
    return func + _tuple(*args) + b"R"                                            # REDUCE


def _build(obj: bytes, state: bytes) -> bytes:
    return obj + state + b"b"                                                     # BUILD


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."                                              # PROTO 2 ... STOP


def _dtype(code: bytes, state: bytes = b"", byteorder: bytes = b"|") -> bytes:
    """numpy.dtype(code, False, True) and BUILD with its state (the plain one by default)."""
    plain = _tuple(_int(3), _str(byteorder), NONE, NONE, NONE, _int(-1), _int(-1), _int(0))
    return _build(_call(_global("numpy", "dtype"), _str(code), FALSE, TRUE), state or plain)


def _array(shape: Tuple[int, ...], dtype: bytes, raw: bytes, fortran: bytes = FALSE) -> bytes:
    """_reconstruct(ndarray, (0,), b'b') and BUILD with (1, shape, dtype, is_fortran, raw)."""
    empty = _call(_global(_MA, "_reconstruct"), _global("numpy", "ndarray"), _tuple(_int(0)), _str(b"b"))
    return _build(empty, _tuple(_int(1), _tuple(*map(_int, shape)), dtype, fortran, _str(raw)))


def _frombuffer(raw: bytes, dtype: bytes, shape: Tuple[int, ...], order: bytes = b"C") -> bytes:
    return _call(_global(_NUM, "_frombuffer"), _str(raw), dtype, _tuple(*map(_int, shape)), _str(order))


U1 = _dtype(b"u1")
CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
           b"ship", b"truck"]
GOOD_BATCH = _pickle(_dict(data=_array((2, 3072), U1, bytes(range(256)) * 24),
                           labels=_list(_int(3), _int(9))))
GOOD_META = _pickle(_dict(label_names=_list(*map(_str, CLASSES))))
# A void dtype whose state declares an object field and no flags: numpy then takes 8 bytes of
# the file for a PyObject pointer (the old reader segfaulted on printing it).
HIDDEN_OBJECT = _dtype(b"V8", _tuple(_int(3), _str(b"|"), NONE, _tuple(_str(b"a")),
                                     _dict(a=_tuple(_dtype(b"O8"), _int(0))), _int(8), _int(1), _int(0)))
POINTER = b"A" * 8  # 0x4141414141414141


def _batch(data: bytes, labels: bytes = _list(_int(0))) -> bytes:
    return _pickle(_dict(data=data, labels=labels))


def _meta(names: bytes) -> bytes:
    return _pickle(_dict(label_names=names))


# ----------------------------------------------------------------------------- data folders


def _folder(root: Path, **files: bytes) -> Path:
    """``root/cifar-10-batches-py`` of small valid files, ``files`` replacing some by name."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    contents = {f"data_batch_{i}": GOOD_BATCH for i in range(1, 6)}
    contents.update(test_batch=GOOD_BATCH, **{"batches.meta": GOOD_META})
    contents.update(files)
    for name, blob in contents.items():
        (folder / name).write_bytes(blob)
    return root


def _archive(root: Path, **files: bytes) -> Path:
    """``root/cifar-10-python.tar.gz`` holding such a folder (and no folder beside it)."""
    with tempfile.TemporaryDirectory() as tmp:
        _folder(Path(tmp), **files)
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(Path(tmp) / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return root / "cifar-10-python.tar.gz"


def _replaced(member: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
    """A folder whose ``member`` is made by ``make(path)`` (a FIFO, a socket, ...)."""
    def setup(root: Path) -> Path:
        _folder(root)
        path = root / "cifar-10-batches-py" / member
        path.unlink()
        make(path)
        return root
    return setup


def _socket(path: Path) -> None:
    """A Unix socket file at ``path`` (bound at a short path: socket paths are limited)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as short, socket.socket(socket.AF_UNIX) as s:
        s.bind(os.path.join(short, "s"))
        os.rename(os.path.join(short, "s"), path)


def _oversized_member(root: Path) -> Path:
    """An uncompressed tar whose first member declares 100 MB and holds a few bytes."""
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    info.size = 100 << 20
    path = root / "cifar-10-python.tar.gz"
    path.write_bytes(info.tobuf() + b"\0" * 512)
    return path


def _sparse(path: Path) -> None:
    with open(path, "wb") as fh:
        fh.truncate(65 << 20)  # 65 MB that take no disk


# ----------------------------------------------------------------------------- the cases
# id: (setup(root) -> data_dir, the error class, what the one-line message must say)

_UNSAFE, _FORMAT = "UnsafePickleError", "DataFormatError"
_DTYPE_REFUSED = r"refused numpy dtype b'V8'"

HOSTILE: Dict[str, Tuple[Callable[[Path], Path], str, str]] = {
    # 1. file bytes read as object pointers (these segfaulted the old reader)
    "frombuffer-hidden-object-in-meta": (
        lambda r: _folder(r, **{"batches.meta": _meta(_list(_frombuffer(POINTER, HIDDEN_OBJECT, (1,))))}),
        _UNSAFE, r"batches.meta: " + _DTYPE_REFUSED),
    "setstate-hidden-object-in-meta": (
        lambda r: _folder(r, **{"batches.meta": _meta(_list(_array((1,), HIDDEN_OBJECT, POINTER)))}),
        _UNSAFE, r"batches.meta: " + _DTYPE_REFUSED),
    "scalar-hidden-object-in-meta": (
        lambda r: _folder(r, **{"batches.meta": _meta(_list(_call(_global(_MA, "scalar"), HIDDEN_OBJECT, _str(POINTER))))}),
        _UNSAFE, r"batches.meta: " + _DTYPE_REFUSED),
    "setstate-hidden-object-as-data": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1,), HIDDEN_OBJECT, POINTER))),
        _UNSAFE, r"data_batch_1: " + _DTYPE_REFUSED),
    "setstate-hidden-object-in-archive": (
        lambda r: _archive(r, data_batch_1=_batch(_array((1,), HIDDEN_OBJECT, POINTER))),
        _UNSAFE, r"cifar-10-python.tar.gz::cifar-10-batches-py/data_batch_1: " + _DTYPE_REFUSED),
    "frombuffer-hidden-object-in-archive-meta": (
        lambda r: _archive(r, **{"batches.meta": _meta(_list(_frombuffer(POINTER, HIDDEN_OBJECT, (1,))))}),
        _UNSAFE, r"tar.gz::cifar-10-batches-py/batches.meta: " + _DTYPE_REFUSED),
    "object-dtype": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1,), _dtype(b"O8"), POINTER))),
        _UNSAFE, r"data_batch_1: refused numpy dtype b'O8'"),
    "string-dtype": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1,), _dtype(b"S8"), POINTER))),
        _UNSAFE, r"data_batch_1: refused numpy dtype b'S8'"),
    "fields-in-u1-state": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1,), _dtype(b"u1", _tuple(
            _int(3), _str(b"|"), NONE, _tuple(_str(b"a")), _dict(a=_tuple(_dtype(b"O8"), _int(0))),
            _int(8), _int(1), _int(0))), POINTER))),
        _UNSAFE, r"data_batch_1: refused numpy dtype b'O8'"),
    "subarray-in-u1-state": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1,), _dtype(b"u1", _tuple(
            _int(3), _str(b"|"), _tuple(U1, _tuple(_int(8))), NONE, NONE, _int(8), _int(1), _int(0))), POINTER))),
        _UNSAFE, r"data_batch_1: refused numpy dtype state .* for dtype\('u1'\)"),
    "flags-in-u8-state": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1,), _dtype(b"u8", _tuple(
            _int(3), _str(b"|"), NONE, NONE, NONE, _int(-1), _int(-1), _int(63))), POINTER))),
        _UNSAFE, r"data_batch_1: refused numpy dtype state"),
    "dtype-built-twice": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1,), _build(U1, _tuple(
            _int(3), _str(b"|"), NONE, NONE, NONE, _int(-1), _int(-1), _int(0))), b"x"))),
        _UNSAFE, r"data_batch_1: refused numpy dtype state .*once"),
    "build-on-a-list": (
        lambda r: _folder(r, data_batch_1=_pickle(_build(_list(), _dict(append=_int(1))))),
        _UNSAFE, r"data_batch_1: refused to set the state \(BUILD\) of a list"),
    "build-on-a-global": (
        lambda r: _folder(r, data_batch_1=_pickle(_build(_global("numpy", "dtype"),
                                                         _tuple(NONE, _dict(__defaults__=_tuple()))))),
        _UNSAFE, r"data_batch_1: refused to set the state \(BUILD\) of a function"),
    "newobj-ndarray": (
        lambda r: _folder(r, data_batch_1=_pickle(_global("numpy", "ndarray") + _tuple(_tuple(_int(9))) + b"\x81")),
        _UNSAFE, r"data_batch_1: refused pickle opcode NEWOBJ"),
    "reduce-with-bytes-as-arguments": (
        lambda r: _folder(r, data_batch_1=_pickle(_global("numpy", "dtype") + _str(b"x" * 100_000) + b"R")),
        _UNSAFE, r"data_batch_1: refused to call _dtype with bytes of length 100000: b'xxx"),
    # 2. shapes the bytes do not back (the zero-stride file took 3.26 GB, 10**9 rows crashed)
    "ndarray-called-zero-strides": (
        lambda r: _folder(r, data_batch_1=_batch(
            _call(_global("numpy", "ndarray"), _tuple(_int(10**6), _int(3072)), U1, _str(b"x" * 3072),
                  _int(0), _tuple(_int(0), _int(1))),
            _call(_global("numpy", "ndarray"), _tuple(_int(10**6)), _dtype(b"i8", byteorder=b"<"),
                  _str(bytes(8)), _int(0), _tuple(_int(0))))),
        _UNSAFE, r"data_batch_1: refused to call numpy.ndarray\(...\)"),
    "ndarray-called-1e9-rows": (
        lambda r: _folder(r, data_batch_1=_batch(
            _call(_global("numpy", "ndarray"), _tuple(_int(10**9), _int(3072)), U1, _str(b"x" * 3072),
                  _int(0), _tuple(_int(0), _int(1))))),
        _UNSAFE, r"data_batch_1: refused to call numpy.ndarray"),
    "reconstruct-with-a-shape": (
        lambda r: _folder(r, data_batch_1=_batch(_call(_global(_MA, "_reconstruct"), _global("numpy", "ndarray"),
                                                       _tuple(_int(10**9)), _str(b"b")))),
        _UNSAFE, r"data_batch_1: refused numpy _reconstruct\(numpy.ndarray, \(1000000000,\), b'b'\)"),
    "short-bytes": (
        lambda r: _folder(r, data_batch_1=_batch(_array((2, 3072), U1, b"x" * 100))),
        _UNSAFE, r"data_batch_1: refused numpy array of shape \(2, 3072\) and dtype uint8: it needs "
                 r"exactly 6144 bytes, the file gives 100 bytes"),
    "long-bytes": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1, 3072), U1, b"x" * 4000))),
        _UNSAFE, r"data_batch_1: refused numpy array .* needs exactly 3072 bytes, the file gives 4000"),
    "frombuffer-short": (
        lambda r: _folder(r, data_batch_1=_batch(_frombuffer(b"x" * 3072, U1, (10**6, 3072)))),
        _UNSAFE, r"data_batch_1: refused numpy array of shape \(1000000, 3072\)"),
    "zero-size-huge-dimension": (
        lambda r: _folder(r, data_batch_1=_batch(_array((0, 10**30), U1, b""))),
        _UNSAFE, r"data_batch_1: refused numpy array shape \(0, 10+\)"),
    "three-dimensions": (
        lambda r: _folder(r, data_batch_1=_batch(_array((1, 3, 1024), U1, bytes(3072)))),
        _UNSAFE, r"data_batch_1: refused numpy array shape \(1, 3, 1024\)"),
    "declared-3gb-binbytes8": (
        lambda r: _folder(r, data_batch_1=b"\x80\x04\x8e" + struct.pack("<Q", 3 << 30) + b"abc"),
        _FORMAT, r"data_batch_1: not a readable CIFAR-10 pickle \(truncated or corrupt\?\)"),
    "declared-3gb-bytearray8": (
        lambda r: _folder(r, data_batch_1=b"\x80\x05\x96" + struct.pack("<Q", 3 << 30) + b"abc"),
        _FORMAT, r"data_batch_1: not a readable .*BYTEARRAY8 declares 3221225472 bytes, the file holds 3"),
    "memo-index-1e9": (  # the C unpickler would grow its memo table to 10**9 slots
        lambda r: _folder(r, data_batch_1=b"\x80\x02}r" + struct.pack("<I", 10**9) + b"."),
        _FORMAT, r"data_batch_1: missing key\(s\) \['data', 'labels'\], found \[\]"),
    "a-million-empty-lists": (
        lambda r: _folder(r, data_batch_1=b"\x80\x02" + b"]" * 10**6 + b"."),
        _UNSAFE, r"data_batch_1: more than 100000 pickle opcodes"),
    "labels-that-repeat-a-100kB-string": (
        lambda r: _folder(r, data_batch_1=_batch(_array((4, 3072), U1, bytes(4 * 3072)),
                                                 b"](" + _str(b"y" * 100_000) + b"q\x01" + b"h\x01" * 3 + b"e")),
        _FORMAT, r"data_batch_1: 'labels' must be 4 integers .*got list of length 4: \[b'yyy"),
    "a-100kB-global-name": (
        lambda r: _folder(r, data_batch_1=_pickle(_global("os" * 50_000, "system"))),
        _UNSAFE, r"data_batch_1: refused to load global osos"),
    # 3. class names
    "two-million-class-names": (
        lambda r: _folder(r, **{"batches.meta": _meta(b"](" + _str(b"a") + b"q\x01" + b"h\x01" * 2 * 10**6 + b"e")}),
        _UNSAFE, r"batches.meta: more than 100000 pickle opcodes"),
    "one-class-name": (
        lambda r: _folder(r, **{"batches.meta": _meta(_list(_str(b"cat")))}),
        _FORMAT, r"batches.meta: 'label_names' must be a list of 10 class names .*got list of length 1: \[b'cat'\]"),
    "a-100kB-class-name": (
        lambda r: _folder(r, **{"batches.meta": _meta(_list(*map(_str, CLASSES[:9] + [b"z" * 100_000])))}),
        _FORMAT, r"batches.meta: 'label_names' must be a list of 10 class names"),
    # 4. not regular files (a FIFO hung the old reader forever)
    "fifo-as-batch": (_replaced("data_batch_1", os.mkfifo), _FORMAT,
                      r"data_batch_1: is a FIFO, not a regular file"),
    "fifo-as-archive": (lambda r: (os.mkfifo(r / "cifar-10-python.tar.gz"), r)[1], _FORMAT,
                        r"cifar-10-python.tar.gz: is a FIFO, not a regular file"),
    "device-as-batch": (_replaced("data_batch_1", lambda p: os.symlink("/dev/zero", p)), _FORMAT,
                        r"data_batch_1: is a character device, not a regular file"),
    "folder-as-batch": (_replaced("test_batch", os.mkdir), _FORMAT,
                        r"test_batch: is a folder, not a regular file"),
    "folder-as-archive": (lambda r: (os.mkdir(r / "cifar-10-python.tar.gz"), r)[1], _FORMAT,
                          r"cifar-10-python.tar.gz: is a folder, not a regular file"),
    "socket-as-batch": (_replaced("data_batch_1", _socket), _FORMAT,
                        r"data_batch_1: is a socket, not a regular file"),
    # sizes
    "65MB-batch": (_replaced("data_batch_1", _sparse), _FORMAT,
                   r"data_batch_1: 68157440 bytes, more than the 67108864 a CIFAR-10 file may have"),
    "archive-member-declaring-100MB": (_oversized_member, _FORMAT,
                                       r"cifar-10-python.tar.gz::cifar-10-batches-py/data_batch_1: 104857600 bytes, more than"),
}

# The case whose CLI run the worker ends with (the old reader segfaulted on it: exit -11).
_CLI_CASE = "setstate-hidden-object-in-meta"

_WORKER = r"""
import json, resource, sys, tracemalloc
from torch_svm.data.cifar10 import read_cifar10
from torch_svm.cli import main

# A regression to a memory bomb should fail fast here, not take the machine's memory.
pages = int(open("/proc/self/statm").read().split()[0])
resource.setrlimit(resource.RLIMIT_AS, (pages * resource.getpagesize() + (1 << 30),
                                        resource.getrlimit(resource.RLIMIT_AS)[1]))
cases, cli_data_dir = json.loads(sys.argv[1]), sys.argv[2]
tracemalloc.start()
for case in cases:
    print("started", case["id"], flush=True)  # names the culprit if this process dies or hangs
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        read_cifar10(case["path"])
        verdict = dict(errors=[], message="")
    except Exception as exc:
        verdict = dict(errors=[c.__name__ for c in type(exc).__mro__], message=str(exc))
    verdict.update(id=case["id"], peak=tracemalloc.get_traced_memory()[1] - before)
    print("verdict", json.dumps(verdict), flush=True)
tracemalloc.stop()
print("started the CLI", flush=True)
sys.exit(main(["train", "--data", "cifar10", "--data-dir", cli_data_dir]))
"""


class _Verdicts:
    """What the worker said about each case, and how it ended: its exit code and stderr are
    those of ``torch-svm train`` on :data:`_CLI_CASE` (one interpreter start, not two)."""

    def __init__(self, cases: Dict[str, Path], sizes: Dict[str, int], cli_data_dir: Path):
        argv = [sys.executable, "-c", _WORKER,
                json.dumps([{"id": k, "path": str(p)} for k, p in cases.items()]), str(cli_data_dir)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, self.stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, self.stderr = proc.communicate()
        self.returncode = proc.returncode
        lines = out.splitlines()
        self.by_id = {v["id"]: v for v in (json.loads(line[8:]) for line in lines if line.startswith("verdict "))}
        self.sizes = sizes
        started = [line[8:] for line in lines if line.startswith("started ")]
        self.ending = (f"worker exit code {proc.returncode} (negative: killed by that signal), "
                       f"last started: {started[-1] if started else None}, stderr: {self.stderr[-2000:]}")

    def __getitem__(self, case: str) -> dict:
        assert case in self.by_id, f"no verdict for {case}: {self.ending}"
        return self.by_id[case]


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> _Verdicts:
    cases, sizes = {}, {}
    for case, (setup, _, _) in HOSTILE.items():
        root = tmp_path_factory.mktemp(case)
        cases[case] = setup(root)
        sizes[case] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    return _Verdicts(cases, sizes, cases[_CLI_CASE])


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_is_refused_in_one_line(verdicts, case):
    _, error, pattern = HOSTILE[case]
    verdict = verdicts[case]
    assert error in verdict["errors"], verdict
    message = verdict["message"]
    assert re.search(pattern, message), message
    assert "\n" not in message and len(message) < 1000, message
    # nothing allocated beyond the files' size, but for the small objects of at most 100,000
    # opcodes (an empty list: 64 bytes from 1 byte of file)
    assert verdict["peak"] < verdicts.sizes[case] + (8 << 20), (verdict["peak"], verdicts.sizes[case])


def test_cli_turns_a_hostile_file_into_one_line_and_exit_2(verdicts):
    """``torch-svm train --data cifar10 --data-dir DIR`` (run by the worker, last): one line on
    stderr naming the file and what was wrong, exit code 2."""
    lines = verdicts.stderr.strip().splitlines()
    assert verdicts.returncode == 2 and len(lines) == 1, verdicts.ending
    assert lines[0].startswith("torch-svm train: error: "), lines
    assert re.search(HOSTILE[_CLI_CASE][2], lines[0]), lines


def test_honest_files_written_by_hand_load(tmp_path):
    """The negative twin of the cases above: the same opcodes, honest, load (in-process: safe).
    Labels as a list, an int64 array, numpy scalars; data in C and Fortran order; protocol 5's
    _frombuffer."""
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    labels_i8 = _array((2,), _dtype(b"i8", byteorder=b"<"), np.array([4, 5], "<i8").tobytes())
    labels_be = _array((2,), _dtype(b"i4", byteorder=b">"), np.array([6, 7], ">i4").tobytes())
    scalars = _list(*(_call(_global(_MA, "scalar"), _dtype(b"i8", byteorder=b"<"), _str(struct.pack("<q", v)))
                      for v in (8, 9)))
    _folder(tmp_path, data_batch_2=_batch(_array((2, 3072), U1, rows.tobytes()), labels_i8),
            data_batch_3=_batch(_array((2, 3072), U1, rows.T.tobytes(), fortran=TRUE), labels_be),
            data_batch_4=_batch(_frombuffer(rows.tobytes(), U1, (2, 3072)), scalars))
    X_train, y_train, X_test, y_test, names = read_cifar10(tmp_path)
    assert X_train.shape == (10, 32, 32, 3) and X_test.shape == (2, 32, 32, 3)
    assert y_train.tolist() == [3, 9, 4, 5, 6, 7, 8, 9, 3, 9] and y_test.tolist() == [3, 9]
    expected = rows.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1)
    for batch in (1, 2, 3):  # batch 2 (C order), 3 (Fortran order), 4 (_frombuffer)
        np.testing.assert_array_equal(X_train[2 * batch:2 * batch + 2], expected)
    assert names == tuple(n.decode() for n in CLASSES)


@pytest.mark.parametrize("make, start", [
    (lambda: b"x" * 30_000_000, "b'xxxx"), (lambda: "y" * 30_000_000, "'yyyy"),
    (lambda: 10 ** 100_000, "<int of 332193 bits>"), (lambda: list(range(10 ** 6)), "[0, 1, 2, 3, 4, 5, ...]"),
    (lambda: [[[[["deep"]]]]], "[[[[...]]]]"), (lambda: {"k" * 1000: b"v" * 1000}, "{'kkkk"),
    (lambda: bytearray(10 ** 6), "bytearray(b'\\x00"),
], ids=["bytes", "str", "int", "list", "nested", "dict", "bytearray"])
def test_clipped_repr_never_builds_the_full_repr(make, start):
    text = clipped_repr(make())
    assert text.startswith(start) and len(text) <= 200, text


# ----------------------------------------------------------------------------- killed runs


def _killed(work: Callable[[], None]) -> None:
    """Run ``work`` in a forked child that SIGKILLs itself where ``work`` says; assert it died so."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            work()
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def _contents(folder: Path) -> Dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def _siblings(path: Path):
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_atomic_directory_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".run.tmp-{os.getpid()}-")
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
        assert not out.exists()
    assert _contents(out) == {"a": "1", "b": "1"} and _siblings(out) == []
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()
    with atomic_directory(out) as tmp:
        (tmp / "a").write_text("2")
        assert _contents(out) == {"a": "1", "b": "1"}  # readers see the old folder meanwhile
    assert _contents(out) == {"a": "2"} and _siblings(out) == []  # b, not rewritten, is gone


def test_atomic_directory_leaves_the_folder_on_error(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "a").write_text("old")
    with pytest.raises(KeyError):
        with atomic_directory(out) as tmp:
            (tmp / "a").write_text("new")
            raise KeyError("boom")
    assert _contents(out) == {"a": "old"} and _siblings(out) == []
    calls = []

    def second_rename_fails(src, dst, rename=os.rename):
        calls.append(dst)
        if len(calls) == 2:
            raise PermissionError("no")
        rename(src, dst)
    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(PermissionError):
        with atomic_directory(out) as tmp:
            (tmp / "a").write_text("new")
    monkeypatch.undo()
    assert _contents(out) == {"a": "old"} and _siblings(out) == []  # the old folder put back
    (tmp_path / "file").write_text("")
    with pytest.raises(FileAccessError, match="file.*is not a folder"):
        with atomic_directory(tmp_path / "file"):
            pass


def test_atomic_directory_after_kill_9_mid_write(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "a").write_text("old")

    def write_then_die():
        with atomic_directory(out) as tmp:
            (tmp / "a").write_text("new")
            os.kill(os.getpid(), signal.SIGKILL)

    _killed(write_then_die)
    assert _contents(out) == {"a": "old"}  # the old folder, complete
    [left] = _siblings(out)
    assert re.fullmatch(r"\.run\.tmp-\d+-\w+", left)
    with atomic_directory(out) as tmp:      # the next run cleans up first
        assert _siblings(out) == [tmp.name]
        (tmp / "a").write_text("next")
    assert _contents(out) == {"a": "next"} and _siblings(out) == []


def test_atomic_directory_after_kill_9_between_the_renames(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "a").write_text("old")

    def die_after_first_rename():
        rename = os.rename

        def rename_then_die(src, dst):
            rename(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
        os.rename = rename_then_die  # in the child only
        with atomic_directory(out) as tmp:
            (tmp / "a").write_text("new")

    _killed(die_after_first_rename)
    assert not out.exists()  # the worst moment: the old folder sits under its trash name
    trash = [p for p in tmp_path.iterdir() if ".trash-" in p.name]
    assert len(trash) == 1 and _contents(trash[0]) == {"a": "old"}
    with pytest.raises(KeyError):
        with atomic_directory(out) as tmp:  # the next run puts it back first, even if it fails
            assert _contents(out) == {"a": "old"} and _siblings(out) == [tmp.name]
            raise KeyError("boom")
    assert _contents(out) == {"a": "old"} and _siblings(out) == []


def test_atomic_directory_cleans_only_its_own_leftovers_of_dead_runs(tmp_path):
    out = tmp_path / "run"
    dead = _dead_pid()
    keep = [f".run.tmp-{os.getpid()}-live", ".run.tmp-notes", ".other.tmp-1-x", "run.tmp-1-x"]
    for name in keep + [f".run.tmp-{dead}-abc", f".run.trash-{dead}-def"]:
        (tmp_path / name).mkdir()
    (tmp_path / f".run.trash-{dead}-def" / "a").write_text("old")
    with atomic_directory(out) as tmp:
        (tmp / "a").write_text("new")
    # path was missing, so the dead run's trash was put back first, then replaced
    assert _contents(out) == {"a": "new"}
    assert _siblings(out) == sorted(keep)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
