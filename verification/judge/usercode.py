r"""Loading and calling the code that :mod:`verification.judge.verify` judges: a student's
``f(W, X, y, reg) -> (loss, dW)``.

This module runs where the student's code runs: inside the worker process of
:mod:`verification.judge.worker` (the default), or in the caller's own process when a function cannot
be sent to a worker. So it imports numpy only; torch is imported when the function is called
with torch tensors (``backend="torch"``), and a returned tensor is read through the torch the
student's code already imported.

What a function may return (:func:`parse_output`):

* the loss: a Python ``int`` or ``float``, a numpy scalar or a 0-d / one-element array of any
  real integer or floating dtype (``float16`` .. ``float128``), or a one-element torch tensor;
* ``dW``: a ``(D, C)`` numpy array of a real floating dtype or a torch tensor of ``float16``,
  ``bfloat16``, ``float32`` or ``float64``.

Each is judged in the dtype given; ``float128`` (numpy's ``longdouble``) has no torch
counterpart and is converted to ``float64`` first, which the report says.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Tuple

import numpy as np

__all__: list = []      # internal: import names from here explicitly

#: What ``backend`` may be: numpy arrays, torch tensors, or numpy first and torch if that raises.
BACKENDS = ("auto", "numpy", "torch")
#: The dtypes a returned dW is judged in (anything wider is converted to float64 first).
JUDGED_DTYPES = ("float16", "bfloat16", "float32", "float64")

#: Import names whose pip package has another name. Everything else: "the package that provides X".
_PACKAGES = {"past": "future", "cv2": "opencv-python", "PIL": "pillow", "sklearn": "scikit-learn",
             "skimage": "scikit-image", "yaml": "pyyaml"}


class UserCodeError(Exception):
    """The user's code could not be loaded or called, or returned the wrong thing.

    ``str(error)`` is one line; ``user_traceback`` the traceback of the user's own code ("" when
    there is none, e.g. a wrong return shape); ``hint`` one line saying what to do ("" if none).
    """

    def __init__(self, message: str, user_traceback: str = "", hint: str = ""):
        super().__init__(message)
        self.user_traceback = user_traceback
        self.hint = hint


@dataclass
class Returned:
    """What one call returned, checked and converted for judging."""

    loss: float                   # the loss as a float64 value
    dW: np.ndarray                # (D, C), C-contiguous, float16/float32/float64 (bfloat16 as float32)
    dtype: str                    # the dtype dW is judged in, one of JUDGED_DTYPES
    loss_type: str                # what the loss was, e.g. "numpy float128"
    notes: List[str] = field(default_factory=list)   # conversions the report must mention


# --------------------------------------------------------------------------- loading

def load_function(spec: str) -> Callable:
    """``"path/to/file.py:func"`` or ``"package.module:func"`` -> the function.

    Raises:
        ValueError: malformed spec, module not found, no such function, not callable, or a
            signature that cannot take ``(W, X, y, reg)``.
        FileNotFoundError: the file does not exist.
        UserCodeError: importing the user's code raised (with its traceback, and a hint for a
            missing module).
    """
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise ValueError(f"expected PATH.py:FUNC or package.module:FUNC, got {spec!r}")
    if (target.endswith((".py", ".ipynb")) or "/" in target or "\\" in target
            or Path(target).is_file()):
        module = _load_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise ValueError(f"no module named {exc.name!r} (from {spec!r})") from None
            raise _import_error(target, exc) from None
        except BaseException as exc:  # noqa: BLE001 - whatever the user's module raises
            raise _import_error(target, exc) from None
    fn = getattr(module, name, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"{target} has no function {name!r}; it defines {found or 'none'}")
    if not callable(fn):
        raise ValueError(f"{target}:{name} is a {type(fn).__name__}, not a function")
    check_signature(fn, f"{target}:{name}")
    return fn


def check_signature(fn: Callable, name: str) -> None:
    """ValueError when ``fn`` cannot be called as ``fn(W, X, y, reg)``."""
    try:
        inspect.signature(fn).bind(None, None, None, None)
    except TypeError:
        raise ValueError(f"{name}{inspect.signature(fn)} cannot be called as "
                         f"f(W, X, y, reg), the assignment's signature") from None
    except ValueError:  # no signature to inspect (a builtin): find out when calling it
        pass


def _load_file(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".ipynb":
        raise ValueError(f"{path} is a notebook; verify imports .py files. The assignment's "
                         f"functions live in cs231n/classifiers/linear_svm.py (torch-svm verify "
                         f"cs231n/classifiers/linear_svm.py:svm_loss_vectorized), or judge them in "
                         f"the notebook: from verification import verify; verify(svm_loss_vectorized)")
    module_name = f"_torch_svm_verify_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)                 # the user's file may import its neighbours
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - SyntaxError, SystemExit included
        sys.modules.pop(module_name, None)
        raise _import_error(str(path), exc) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_error(what: str, exc: BaseException) -> UserCodeError:
    return UserCodeError(f"importing {what} raised {one_line(exc)}", user_traceback(exc),
                         code_hint(exc))


#: Python 2 names that old solutions (2015-2016) use, and what Python 3 says instead.
_PYTHON2_NAMES = {
    "xrange": "use range (or add `from past.builtins import xrange`, pip install future)",
    "unicode": "use str", "basestring": "use str", "long": "use int", "unichr": "use chr",
    "raw_input": "use input", "reduce": "add `from functools import reduce`",
    "izip": "use zip", "imap": "use map", "cPickle": "use pickle",
}
_PYTHON2_METHODS = {"iteritems": "items", "itervalues": "values", "iterkeys": "keys",
                    "has_key": "the `in` operator"}


def code_hint(exc: BaseException) -> str:
    """One line saying what to do about an exception the user's code raised, "" if nothing
    specific: a missing module's package, Python 2 code run by Python 3, mixed tabs."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return missing_module_hint(exc.name)
    if isinstance(exc, NameError) and getattr(exc, "name", None) in _PYTHON2_NAMES:
        return f"{exc.name} is Python 2 (this code predates Python 3): {_PYTHON2_NAMES[exc.name]}"
    if isinstance(exc, AttributeError) and getattr(exc, "name", None) in _PYTHON2_METHODS:
        return (f"dict.{exc.name} is Python 2 (this code predates Python 3): use "
                f"{_PYTHON2_METHODS[exc.name]}")
    if isinstance(exc, MemoryError):
        return ("it asked for more memory than it may use (the --memory limit, when set): is an "
                "array (N, D, C) or (N, N) where (N, C) would do?")
    if isinstance(exc, TabError):
        return ("the file mixes tabs and spaces in its indentation, which Python 3 refuses: "
                "indent with spaces only (`expand -t 8 FILE > FIXED` keeps Python 2's meaning)")
    if isinstance(exc, SyntaxError) and "Missing parentheses in call to 'print'" in str(exc):
        return "print is a function in Python 3 (this code predates it): print(...)"
    if isinstance(exc, ValueError) and any(s in str(exc) for s in ("not aligned", "matmul: Input operand")):
        return ("a product's shapes do not fit: verify passes W (D, C), X (N, D), y (N,), the "
                "assignment's layout since 2016; code written for the 2015 layout, W (C, D) and "
                "X (D, N), fails like this")
    return ""


def missing_module_hint(module: str) -> str:
    """One line saying what to install for ``import module`` (``past`` -> ``pip install future``)."""
    top = module.split(".")[0]
    package = _PACKAGES.get(top)
    if package:
        return f"the module {top!r} comes from the {package!r} package: pip install {package}"
    return f"install the package that provides the module {top!r} (often: pip install {top})"


def one_line(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line (clipped to 300 characters)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def user_traceback(exc: BaseException) -> str:
    """The traceback without this package's and importlib's frames: the user's code only."""
    here = str(Path(__file__).resolve().parents[1])        # all of verification/
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not f.filename.startswith(here) and not f.filename.startswith("<frozen")])
    return "".join(te.format())


def function_name(fn: Callable) -> str:
    """The function's name as reports print it: escaped (:func:`printable`), so a crafted
    ``__name__`` holding newlines cannot write lines of its own into a report."""
    inner = getattr(fn, "func", None)           # functools.partial
    if inner is not None and callable(inner):
        return function_name(inner)
    name = getattr(fn, "__name__", None)
    return printable(name if isinstance(name, str) and name else type(fn).__name__)


def printable(text: str, limit: int = 100) -> str:
    """``text`` with every character that is not printable (newline, carriage return, escape
    sequences, other controls) written as its escape, clipped to ``limit`` characters."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text)[:4 * limit])
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------- calling

def call_function(fn: Callable, backend: str, W: np.ndarray, X: np.ndarray, y: np.ndarray,
                  reg: float, *, catch_interrupt: bool = True) -> Returned:
    """``fn(W, X, y, reg)`` on fresh copies (it may write into them), as numpy arrays or torch
    tensors, with its output checked by :func:`parse_output`.

    Raises:
        UserCodeError: ``fn`` raised anything (``SystemExit`` and other ``BaseException``
            subclasses included; ``KeyboardInterrupt`` too unless ``catch_interrupt`` is False),
            or returned the wrong thing.
    """
    if backend == "numpy":
        args = (W.copy(), X.copy(), y.copy(), float(reg))
    elif backend == "torch":
        import torch

        args = (torch.from_numpy(W.copy()), torch.from_numpy(X.copy()), torch.from_numpy(y.copy()),
                float(reg))
    else:
        raise ValueError(f"backend must be 'numpy' or 'torch' here, got {backend!r}")
    name = function_name(fn)
    try:
        out = fn(*args)
    except KeyboardInterrupt:
        if not catch_interrupt:
            raise
        raise UserCodeError(f"{name} raised KeyboardInterrupt when called with {backend} inputs") from None
    except BaseException as exc:  # noqa: BLE001 - anything the user's code raises
        raise UserCodeError(f"{name} raised {one_line(exc)} when called with {backend} inputs",
                            user_traceback(exc), code_hint(exc)) from None
    return parse_output(out, W.shape, name)


def call_detecting_backend(fn: Callable, backend: str, W: np.ndarray, X: np.ndarray, y: np.ndarray,
                           reg: float, **kwargs: Any) -> Tuple[str, Returned]:
    """The backend to use and the first call's result. ``auto``: numpy first; torch tensors only
    when the numpy call raised and torch is imported (by the function's module, or the caller):
    a function that ran but returned the wrong thing is reported as such."""
    if backend != "auto":
        return backend, call_function(fn, backend, W, X, y, reg, **kwargs)
    try:
        return "numpy", call_function(fn, "numpy", W, X, y, reg, **kwargs)
    except UserCodeError as numpy_error:
        if not numpy_error.user_traceback or "torch" not in sys.modules:
            raise       # it ran (the return value is wrong), or its code never imported torch
        try:
            return "torch", call_function(fn, "torch", W, X, y, reg, **kwargs)
        except UserCodeError as torch_error:
            if not torch_error.user_traceback:       # ran with torch: that is the message
                raise
            raise UserCodeError(f"{numpy_error} (torch inputs raise too: {_exception_part(torch_error)})",
                                numpy_error.user_traceback, numpy_error.hint) from None


def _exception_part(error: UserCodeError) -> str:
    text = str(error)
    text = text.split(" raised ", 1)[-1].rsplit(" when called", 1)[0]
    return text if len(text) <= 120 else text[:117] + "..."


# --------------------------------------------------------------------------- the return value

def parse_output(out: Any, shape: Tuple[int, ...], name: str) -> Returned:
    """Check ``out == (loss, dW)`` and convert it (see the module docstring for what is accepted)."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise UserCodeError(f"{name} must return (loss, dW), got {describe(out)}")
    loss, dW = out
    try:
        return _parse_pair(loss, dW, shape, name)
    except UserCodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the returned objects' own code raised
        raise UserCodeError(f"{name} returned (loss, dW) as ({_kind(loss)}, {_kind(dW)}), which "
                            f"could not be read as numbers: reading them raised {one_line(exc)}"
                            ) from None


def _kind(obj: Any) -> str:
    """What ``obj`` is, without running its code: its type, and a tensor's layout and device."""
    text = type(obj).__module__ + "." + type(obj).__qualname__
    if _is_torch_tensor(obj):
        text += f" ({obj.layout}, {obj.device.type})"
    return printable(text, 100)


def _parse_pair(loss: Any, dW: Any, shape: Tuple[int, ...], name: str) -> Returned:
    for what, value in (("loss", loss), ("dW", dW)):
        if _is_torch_tensor(value) and (value.layout != sys.modules["torch"].strided
                                        or value.device.type == "meta"):
            raise UserCodeError(f"{name} returned {what} as a {value.layout} tensor on device "
                                f"'{value.device.type}', which holds no dense values: return "
                                f"a dense tensor (.to_dense(), or compute it on a real device)")
    if tuple(getattr(loss, "shape", ())) == tuple(shape) and (
            isinstance(dW, (int, float)) or tuple(getattr(dW, "shape", (0,))) in ((), (1,))):
        raise UserCodeError(f"{name} returned (dW, loss): the assignment's order is (loss, dW)")
    notes: List[str] = []
    value, loss_type = _loss_value(loss, name, notes)
    grad, dtype = _gradient(dW, name, notes)
    if tuple(grad.shape) != tuple(shape):
        transposed = " (W.T's shape: is dW transposed?)" if tuple(grad.shape) == tuple(shape)[::-1] else ""
        raise UserCodeError(f"{name} returned dW of shape {tuple(grad.shape)}; it must have W's "
                            f"shape {tuple(shape)}{transposed}")
    return Returned(loss=value, dW=np.ascontiguousarray(grad), dtype=dtype, loss_type=loss_type,
                    notes=notes)


def _is_torch_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _loss_value(loss: Any, name: str, notes: List[str]) -> Tuple[float, str]:
    bad = UserCodeError(f"{name} must return the loss as a number (a float, an int, a numpy "
                        f"scalar or a one-element array or tensor), got {describe(loss)}")
    if isinstance(loss, bool) or isinstance(loss, np.bool_):
        raise bad
    if isinstance(loss, int):
        try:
            return float(loss), "python int"
        except OverflowError:
            notes.append("the loss is an int too large for a float (taken as inf)")
            return (math.inf if loss > 0 else -math.inf), "python int"
    if isinstance(loss, float):
        return float(loss), "python float"
    if _is_torch_tensor(loss):
        if loss.numel() != 1 or loss.is_complex() or loss.dtype == sys.modules["torch"].bool:
            raise bad
        return float(loss.detach().cpu().double().reshape(()).item()), \
            f"torch {str(loss.dtype).replace('torch.', '')} tensor"
    if isinstance(loss, np.ndarray):
        if loss.size != 1:
            raise bad
        loss = loss.reshape(())[()]
    if isinstance(loss, np.generic) and loss.dtype.kind in "fiu":
        kind = f"numpy {loss.dtype.name}"
        if loss.dtype.kind == "f" and loss.dtype.itemsize > 8:
            notes.append(f"the loss is {loss.dtype.name}: judged in float64 after conversion")
        with np.errstate(over="ignore"):
            return float(np.float64(loss)), kind
    raise bad


def _gradient(dW: Any, name: str, notes: List[str]) -> Tuple[np.ndarray, str]:
    if _is_torch_tensor(dW):
        dtype = str(dW.dtype).replace("torch.", "")
        if dtype not in JUDGED_DTYPES:
            raise UserCodeError(f"{name} must return dW as a floating tensor (float16, bfloat16, "
                                f"float32 or float64), got {describe(dW)}")
        t = dW.detach().cpu()
        return (t.float() if dtype == "bfloat16" else t).numpy().copy(), dtype
    if isinstance(dW, np.ndarray):
        arr = np.asarray(dW)
        if arr.dtype.kind != "f":
            raise UserCodeError(f"{name} must return dW as a floating array (float16 to float128), "
                                f"got {describe(dW)}")
        if arr.dtype.itemsize > 8:
            notes.append(f"dW is {arr.dtype.name}: judged in float64 after conversion")
            with np.errstate(over="ignore"):
                arr = arr.astype(np.float64)
        return np.array(arr, dtype=arr.dtype.newbyteorder("=")), arr.dtype.name
    raise UserCodeError(f"{name} must return dW as a numpy array or torch tensor, got {describe(dW)}")


def describe(obj: Any) -> str:
    """A short description of a value for messages (type, shape and dtype of arrays)."""
    if isinstance(obj, np.ndarray) or _is_torch_tensor(obj):
        return (f"{type(obj).__module__.split('.')[0]} {type(obj).__name__} of shape "
                f"{tuple(obj.shape)} and dtype {obj.dtype}")
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    try:
        text = f"{type(obj).__name__} {obj!r}"
    except BaseException:  # noqa: BLE001 - a hostile __repr__
        text = type(obj).__name__
    return text if len(text) <= 200 else text[:197] + "..."
