r"""Run the code being judged in a worker process, so that nothing it does can touch the judge.

:func:`verification.judge.verify.verify` starts one :class:`Worker` per verdict and reuses it for
every call (points x regs): a fresh Python (``subprocess``, in a new session so that it has no
terminal), which imports numpy and the student's code only, never the judge. The parent sends
``W``, ``X`` and ``y`` as raw array bytes and the worker answers with the loss and ``dW`` the
same way; the parent never unpickles anything the worker sends (a JSON header, then bytes whose
dtype, shape and length it checks). So:

* the verdict is computed in the parent alone, from numbers the worker sent;
* ``os._exit``, ``sys.exit``, a segfault or any ``BaseException`` in the student's code, at
  import or in the function, ends or breaks the worker only: the parent reports "does not run";
* patching the verifier's functions patches the worker's copies, which judge nothing;
* a call that does not answer within ``timeout`` seconds gets the worker's process group
  killed (and a message naming the timeout);
* the worker's stdout and stderr are pipes the parent drains into :class:`CapturedOutput`
  (the first 20,000 characters of each are kept), never the parent's own stdout.

The student's code runs with one BLAS/OpenMP thread (small GEMMs on a busy machine are much
faster that way). This is process isolation, not a security sandbox: the code runs as the same
user, with the same files and network.

A function object is sent with ``cloudpickle`` (by value when it was defined in a notebook or
``__main__``, by reference otherwise, and then re-imported in the worker from the caller's
``sys.path``); a ``"PATH.py:FUNC"`` spec is imported by the worker itself.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from verification.judge.usercode import (JUDGED_DTYPES, Returned, UserCodeError, call_detecting_backend,
                                   function_name, load_function, printable)

__all__: list = []      # internal: import names from here explicitly

#: Characters of the worker's stdout and of its stderr kept for the report.
OUTPUT_LIMIT = 20_000
_FRAME = struct.Struct("<II")          # header bytes, payload bytes
_MAX_HEADER = 1 << 20
_TRANSPORT = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
_FOLDER = str(Path(__file__).resolve().parents[1])
# The worker imports verification.judge.worker without the packages' __init__ (which import
# the judge and torch): bare package modules stand in for them.
_BOOT = ("import sys, types\n"
         "for name, path in (('verification', {folder!r}), "
         "('verification.judge', {folder!r} + '/judge')):\n"
         "    package = types.ModuleType(name); package.__path__ = [path]; "
         "sys.modules[name] = package\n"
         "from verification.judge.guard import start\n"
         "start(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))")
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


@dataclass
class CapturedOutput:
    """What the worker printed: the first :data:`OUTPUT_LIMIT` characters of each stream and
    the total byte counts."""

    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0


# --------------------------------------------------------------------------- framing

def _pack(header: Dict[str, Any], arrays: Sequence[Tuple[str, np.ndarray]] = (), blob: bytes = b"") -> bytes:
    """One message: lengths, a JSON header (with the arrays' dtype and shape) and the raw bytes."""
    header = dict(header, arrays=[[name, a.dtype.name, list(a.shape)] for name, a in arrays],
                  blob=len(blob))
    payload = b"".join(np.ascontiguousarray(a).tobytes() for _, a in arrays) + blob
    head = json.dumps(header).encode()
    return _FRAME.pack(len(head), len(payload)) + head + payload


def _unpack_arrays(header: Dict[str, Any], payload: bytes, allowed: Dict[str, Any]
                   ) -> Tuple[Dict[str, np.ndarray], bytes]:
    """The arrays a message holds, each checked: a dtype of ``allowed``, a shape of
    non-negative ints, and exactly the bytes announced. ValueError otherwise."""
    specs = header.get("arrays")
    blob = header.get("blob")
    if not isinstance(specs, list) or not isinstance(blob, int) or isinstance(blob, bool) or blob < 0:
        raise ValueError("bad array list")
    out, offset = {}, 0
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str)
                and spec[1] in allowed and isinstance(spec[2], list) and len(spec[2]) <= 2
                and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in spec[2])):
            raise ValueError("bad array description")
        dtype = np.dtype(allowed[spec[1]])
        count = int(np.prod(spec[2], dtype=np.int64))
        end = offset + count * dtype.itemsize
        if end > len(payload):
            raise ValueError("array bytes missing")
        out[spec[0]] = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(spec[2]).copy()
        offset = end
    if offset + blob != len(payload):
        raise ValueError("payload length does not match its description")
    return out, payload[offset:]


# --------------------------------------------------------------------------- the worker process

def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _serve(request_fd: int, reply_fd: int) -> None:
    """The worker's loop: ``load``, ``data``, then ``call`` requests until ``exit`` or EOF."""
    for name in _ONE_THREAD:
        os.environ.setdefault(name, "1")
    fn, X, y, backend = None, None, None, "auto"
    requests = {"uint8": np.uint8, "int64": np.int64, "float32": np.float32, "float64": np.float64}
    while True:
        try:
            head_len, payload_len = _FRAME.unpack(_read_exact(request_fd, _FRAME.size))
            header = json.loads(_read_exact(request_fd, head_len))
            arrays, blob = _unpack_arrays(header, _read_exact(request_fd, payload_len), requests)
        except EOFError:
            return
        op = header["op"]
        reply: Dict[str, Any] = {"ok": True}
        out_arrays: List[Tuple[str, np.ndarray]] = []
        try:
            if op == "exit":
                return
            if op == "load":
                sys.path[:] = header["sys_path"]
                if header.get("spec"):
                    fn = load_function(header["spec"])
                else:
                    fn = _unpickle_function(blob)
                reply["name"] = function_name(fn)
            elif op == "data":
                X, y = arrays["X"], arrays["y"]
            elif op == "call":
                backend, returned = call_detecting_backend(
                    fn, header["backend"] if backend == "auto" else backend, arrays["W"], X, y, header["reg"])
                reply.update(backend=backend, loss=returned.loss, loss_type=returned.loss_type,
                             dtype=returned.dtype, notes=returned.notes)
                out_arrays = [("dW", returned.dW)]
        except UserCodeError as exc:
            reply = {"ok": False, "message": str(exc), "traceback": exc.user_traceback, "hint": exc.hint,
                     "usage": False}
        except (ValueError, OSError) as exc:      # a bad spec: no such file or function
            reply = {"ok": False, "message": " ".join(str(exc).split()), "traceback": "", "hint": "",
                     "usage": True}
        _write_all(reply_fd, _pack(reply, out_arrays))


def _unpickle_function(blob: bytes):
    import pickle

    try:
        fn = pickle.loads(blob)
    except BaseException as exc:  # noqa: BLE001 - re-creating the function runs the user's imports
        from verification.judge.usercode import one_line, user_traceback

        raise UserCodeError(f"re-creating the function in the worker process raised {one_line(exc)}",
                            user_traceback(exc)) from None
    return fn


# --------------------------------------------------------------------------- the parent's side

class _Capture(threading.Thread):
    """Drains one pipe of the worker, keeping the first OUTPUT_LIMIT bytes."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self._stream, self.head, self.total = stream, bytearray(), 0
        self.start()

    def run(self) -> None:
        try:
            for chunk in iter(lambda: self._stream.read1(1 << 16), b""):
                self.total += len(chunk)
                if len(self.head) < OUTPUT_LIMIT:
                    self.head += chunk[:OUTPUT_LIMIT - len(self.head)]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        return bytes(self.head).decode("utf-8", errors="replace")


class Worker:
    """A worker process that loads one function and calls it; see the module docstring.

    Use as a context manager (the process is killed on exit)::

        with Worker(timeout=60) as worker:
            name = worker.load(spec="student.py:svm_loss")
            worker.set_data(X, y)                  # numpy arrays, sent once
            backend, returned = worker.call(W, reg, "auto")

    Every method raises :class:`~verification.judge.usercode.UserCodeError` when the code cannot be
    loaded or called, ends the process, does not answer in time or sends a malformed reply, and
    ValueError / FileNotFoundError for a bad spec (no such file, no such function).
    """

    def __init__(self, *, timeout: float = 60.0):
        self.timeout = float(timeout)
        self.name = "the function"
        request_r, self._request_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{k: "1" for k in _ONE_THREAD})
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT.format(folder=_FOLDER), str(os.getpid()),
                 str(request_r), str(reply_w)],
                pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, env=env)
        finally:
            os.close(request_r)
            os.close(reply_w)
        os.set_blocking(self._request_w, False)
        os.set_blocking(self._reply_r, False)
        self._stdout, self._stderr = _Capture(self._proc.stdout), _Capture(self._proc.stderr)
        self._shape: Tuple[int, ...] = ()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests

    def load(self, *, spec: Optional[str] = None, pickled: bytes = b"") -> str:
        """Import ``spec`` (``PATH.py:FUNC`` / ``package.module:FUNC``) or unpickle ``pickled``
        in the worker; returns the function's name."""
        header = {"op": "load", "spec": spec, "sys_path": [p for p in sys.path if isinstance(p, str)]}
        reply, _ = self._request(header, (), pickled, "importing the code")
        name = reply.get("name")
        if not isinstance(name, str):
            raise self._malformed("load")
        self.name = printable(name)
        return self.name

    def set_data(self, X: np.ndarray, y: np.ndarray) -> None:
        self._request({"op": "data"}, (("X", X), ("y", y)), b"", "receiving the data")

    def call(self, W: np.ndarray, reg: float, backend: str) -> Tuple[str, Returned]:
        """``fn(W, X, y, reg)`` in the worker; ``backend`` "auto" is detected on the first call."""
        self._shape = tuple(W.shape)
        reply, arrays = self._request({"op": "call", "reg": float(reg), "backend": backend},
                                      (("W", W),), b"", f"{self.name}(W, X, y, reg)")
        try:
            notes = reply["notes"]
            ok = (reply["backend"] in ("numpy", "torch") and type(reply["loss"]) is float
                  and isinstance(reply["loss_type"], str) and reply["dtype"] in JUDGED_DTYPES
                  and isinstance(notes, list) and all(isinstance(n, str) for n in notes)
                  and set(arrays) == {"dW"} and arrays["dW"].shape == self._shape)
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise self._malformed("call")
        return reply["backend"], Returned(loss=reply["loss"], dW=arrays["dW"], dtype=reply["dtype"],
                                          loss_type=printable(reply["loss_type"]),
                                          notes=[printable(n, 300) for n in notes[:10]])

    def close(self) -> CapturedOutput:
        """Stop the worker (politely, then its whole process group) and return its output."""
        if self._proc.poll() is None:
            try:
                os.write(self._request_w, _pack({"op": "exit"}))
            except OSError:
                pass
            try:
                self._proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        for fd in (self._request_w, self._reply_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._request_w = self._reply_r = -1
        for capture in (self._stdout, self._stderr):
            capture.join(timeout=1.0)
        return self.output()

    def output(self) -> CapturedOutput:
        return CapturedOutput(self._stdout.text(), self._stderr.text(), self._stdout.total,
                              self._stderr.total)

    # -- the channel

    def _kill(self) -> None:
        """End the worker and everything it started: the guard (verification/judge/guard.py)
        kills every descendant on SIGTERM; its process group is killed too, in case the
        guard itself was stopped."""
        if self._proc.poll() is None:
            try:
                self._proc.terminate()
                self._proc.wait(timeout=3.0)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass

    def _malformed(self, what: str) -> UserCodeError:
        self._kill()
        return UserCodeError(f"the worker process running {self.name} sent a malformed reply to "
                             f"'{what}' (did the code write to verify's channel?)")

    def _request(self, header: Dict[str, Any], arrays, blob: bytes, what: str
                 ) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        deadline = time.monotonic() + self.timeout
        try:
            self._exchange_send(_pack(header, arrays, blob), deadline, what)
            head_len, payload_len = _FRAME.unpack(self._recv(_FRAME.size, deadline, what))
            if head_len > _MAX_HEADER or payload_len > 8 * max(int(np.prod(self._shape)), 1) + 64:
                raise ValueError("frame too large")
            reply = json.loads(self._recv(head_len, deadline, what))
            arrays_in, _ = _unpack_arrays(reply, self._recv(payload_len, deadline, what), _TRANSPORT)
            if not isinstance(reply.get("ok"), bool):
                raise ValueError("no status")
        except (ValueError, TypeError, AttributeError, RecursionError, struct.error):
            raise self._malformed(header["op"]) from None
        if not reply["ok"]:
            message, trace, hint = (str(reply.get(k, ""))[:limit] for k, limit in
                                    (("message", 2000), ("traceback", 20000), ("hint", 300)))
            if reply.get("usage") is True:
                from torch_svm.errors import UsageError   # here: the worker never imports torch

                self._kill()
                raise UsageError(message)
            raise UserCodeError(message or f"{what} failed in the worker process", trace, hint)
        return reply, arrays_in

    def _exchange_send(self, data: bytes, deadline: float, what: str) -> None:
        view = memoryview(data)
        with selectors.DefaultSelector() as sel:
            sel.register(self._request_w, selectors.EVENT_WRITE)
            while view:
                self._wait(sel, deadline, what)
                try:
                    view = view[os.write(self._request_w, view):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise self._ended(what) from None

    def _recv(self, n: int, deadline: float, what: str) -> bytes:
        chunks, got = [], 0
        with selectors.DefaultSelector() as sel:
            sel.register(self._reply_r, selectors.EVENT_READ)
            while got < n:
                self._wait(sel, deadline, what)
                try:
                    chunk = os.read(self._reply_r, min(n - got, 1 << 20))
                except BlockingIOError:
                    continue
                if not chunk:
                    raise self._ended(what)
                chunks.append(chunk)
                got += len(chunk)
        return b"".join(chunks)

    def _wait(self, sel: selectors.BaseSelector, deadline: float, what: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(timeout=left):
            self._kill()
            raise UserCodeError(f"{what} did not finish within {self.timeout:g} s (timeout); "
                                f"the worker process was stopped")

    def _ended(self, what: str) -> UserCodeError:
        try:
            status = self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._kill()
            status = self._proc.returncode
        how = (f"was killed by signal {-status}" if status is not None and status < 0
               else f"exited with status {status}")
        return UserCodeError(f"the worker process ended during {what}: it {how} "
                             f"(os._exit, a crash, or something killed it)")


class InProcess:
    """Calls the function in this process instead, with :class:`Worker`'s interface (for
    ``isolate=False`` and for functions that cannot be sent to a worker); prints go where the
    caller's go, and nothing is isolated."""

    def __init__(self, fn: Callable):
        self.fn, self.name = fn, function_name(fn)
        self.X = self.y = np.empty(0)

    def set_data(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = X, y

    def call(self, W: np.ndarray, reg: float, backend: str) -> Tuple[str, Returned]:
        return call_detecting_backend(self.fn, backend, W, self.X, self.y, reg, catch_interrupt=False)

    def close(self) -> CapturedOutput:
        return CapturedOutput()
