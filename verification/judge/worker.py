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
faster that way), and with ``memory`` GiB of address space when given (an allocation past it
raises MemoryError in that code, which the report names). This is process isolation, not a
security sandbox: the code runs as the same user, with the same files and network.

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
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from verification.judge.serve import _FRAME, _ONE_THREAD, _pack, _unpack_arrays
from verification.judge.usercode import (JUDGED_DTYPES, Returned, UserCodeError, call_detecting_backend,
                                         function_name, printable)

__all__: list = []      # internal: import names from here explicitly

#: Characters of the worker's stdout and of its stderr kept for the report.
OUTPUT_LIMIT = 20_000
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
         "start(*map(int, sys.argv[1:5]))")


#: The workers of this process still running (for :func:`stop_all`).
_LIVE: "weakref.WeakSet[Worker]" = weakref.WeakSet()


def stop_all() -> None:
    """Kill every worker this process started that still runs (grade, interrupted: the
    verdicts being computed end with an error that nobody reads)."""
    for worker in list(_LIVE):
        worker._kill()


@dataclass
class CapturedOutput:
    """What the worker printed: the first :data:`OUTPUT_LIMIT` characters of each stream and
    the total byte counts."""

    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0


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

    def __init__(self, *, timeout: float = 60.0, memory: Optional[float] = None):
        self.timeout = float(timeout)
        self.name = "the function"
        request_r, self._request_w = os.pipe()
        self._reply_r, reply_w = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{k: "1" for k in _ONE_THREAD})
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT.format(folder=_FOLDER), str(os.getpid()),
                 str(request_r), str(reply_w), str(int((memory or 0) * 2**30))],
                pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, env=env)
        finally:
            os.close(request_r)
            os.close(reply_w)
        os.set_blocking(self._request_w, False)
        os.set_blocking(self._reply_r, False)
        self._stdout, self._stderr = _Capture(self._proc.stdout), _Capture(self._proc.stderr)
        self._shape: Tuple[int, ...] = ()
        _LIVE.add(self)

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
