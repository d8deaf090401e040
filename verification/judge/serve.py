"""The worker's side of :mod:`verification.judge.worker`: the channel's framing and the loop
that loads the judged function and calls it (run in the process
:mod:`verification.judge.guard` forks). It imports numpy and the user's code only, never torch
or the judge.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from verification.judge.usercode import (UserCodeError, call_detecting_backend, function_name,
                                         load_function)

__all__: list = []      # internal: import names from here explicitly

_FRAME = struct.Struct("<II")          # header bytes, payload bytes
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


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


