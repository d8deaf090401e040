"""Small shared helpers: seeding, device and dtype resolution, progress bars, atomic writes."""
from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch

__all__ = ["set_seed", "resolve_device", "resolve_dtype", "progress", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "jsonable", "DTYPES"]

#: Names accepted wherever a dtype is given as a string (CLI flags, configs).
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and every CUDA device's) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"`` (or None) -> ``cuda`` when available, else ``cpu``; anything else is checked.

    Raises ValueError naming the value when the device string is malformed or when CUDA is
    asked for on a machine without it.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """Map ``"float32"`` etc. (or a torch floating dtype) to a torch dtype; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
             desc: str = "", enabled: bool = True, **kwargs: Any):
    """A tqdm progress bar on stderr; silent when ``enabled`` is False or stderr is not a TTY
    unless TORCH_SVM_PROGRESS=1 forces it on."""
    from tqdm.auto import tqdm

    force = os.environ.get("TORCH_SVM_PROGRESS") == "1"
    disable = not enabled or (not force and not sys.stderr.isatty())
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False,
                dynamic_ncols=True, file=sys.stderr, **kwargs)


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """Make floats JSON-safe (inf/NaN become strings) and numpy/torch scalars plain."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def atomic_write_json(path: Union[str, Path], obj: Any) -> Path:
    """Strict JSON (through :func:`jsonable`), written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")
