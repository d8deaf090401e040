r"""Judge a student's SVM loss-and-gradient function ``f(W, X, y, reg) -> (loss, dW)``.

The function has the CS231n assignment's signature: ``W: (D, C)``, ``X: (N, D)``, ``y: (N,)``
int labels, ``reg`` a float; numpy arrays (the assignment's convention) or torch tensors, and it
returns the loss (a scalar) and ``dW: (D, C)``. It is meant to compute

.. math::

    L(W) = \frac{1}{N} \sum_i \sum_{j \ne y_i} \max(0,\; S_{ij} - S_{iy_i} + \Delta)
           + \mathrm{reg} \sum W^2, \qquad S = XW.

:func:`verify` calls it at every combination of

* two **points** (:func:`default_points`): ``small``, ``W = 1e-4 * randn`` as in the assignment,
  where every margin is about ``delta`` and active (so a wrong mask cannot show), and
  ``trained``, the small point after a few gradient-descent steps of the project's own loss,
  stopped once at most half of the margins are active;
* two **regularization strengths**: 0 and :attr:`VerifyConfig.reg` (the notebook's 5e1),
  multiplied by 10 until a halved regularization gradient ``reg * W`` stands out of the
  floating-point allowance at most coordinates of every point;

and runs three checks at each, all references in float64 on the very inputs it was given:

1. **loss** against ``torch.autograd``'s :func:`torch_svm.svm_loss_autograd`, ``C *
   torch.nn.functional.multi_margin_loss`` and the numpy loops of
   :func:`verification.reference.svm_loss_naive`, within the rounding of ``N C`` hinge terms;
2. **dW against the reference gradient**: a hinge term whose margin is exactly 0 may take any
   derivative in ``[0, 1]``, so ``dW`` must lie, per coordinate, between
   :func:`torch_svm.svm_loss_and_grad` with ``kink=0`` and with ``kink=1`` (equal unless some
   margin is exactly 0), within the floating-point allowance ``fp_tol``;
3. **dW against finite differences** at every coordinate (or ``sparse`` random ones):
   :func:`verification.numeric.svm_finite_differences` and
   :func:`verification.numeric.classify_svm_gradient`, which labels each coordinate ok,
   kink-explained (the step ``h`` straddles a kink and the gap is within what that can cause)
   or unexplained.

Floating-point allowances are set by the lower precision of the inputs and of the returned
``dW``, so a correct float32 implementation passes. The function passes when every check
passes everywhere; :mod:`verification.diagnose` then names the bug when the pattern of the
difference fits a common one.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_svm import svm_loss, svm_loss_and_grad, svm_margins
from torch_svm.utils import progress as progress_bar
from verification.crosscheck import max_rel_error, rel_error
from verification.numeric import (STATUS_NAMES, UNEXPLAINED, classify_svm_gradient,
                                  svm_finite_differences)
from verification.reference import autograd_reference, mml_reference, svm_loss_naive

__all__ = ["VerifyConfig", "VerifyReport", "CheckResult", "PointInfo", "Coordinate", "UserCodeError",
           "load_function", "default_points", "verify", "BACKENDS"]

BACKENDS = ("auto", "numpy", "torch")
_INPUT_DTYPES = {"float32": (torch.float32, np.float32), "float64": (torch.float64, np.float64)}
_F64 = torch.float64


class UserCodeError(Exception):
    """The user's code could not be loaded or called, or returned the wrong thing.

    ``message`` is one line; ``user_traceback`` the traceback of the user's own code ("" when
    there is none, e.g. a wrong return shape).
    """

    def __init__(self, message: str, user_traceback: str = ""):
        super().__init__(message)
        self.user_traceback = user_traceback


@dataclass
class VerifyConfig:
    """How to judge; every field has the CLI flag of the same name."""

    delta: float = 1.0            # the margin the user's code uses
    h: float = 1e-5               # finite-difference step (the assignment's grad_check_sparse)
    reg: float = 50.0             # the large reg (the notebook's 5e1); raised x10 until visible
    sparse: Optional[int] = None  # judge only this many random coordinates by finite differences
    backend: str = "auto"         # "numpy", "torch", or "auto": numpy first, then torch
    dtype: str = "float64"        # dtype of W and X handed to the function
    seed: int = 0                 # seeds the points and the sparse sample
    worst: int = 5                # how many worst coordinates to report
    fp_factor: float = 4.0        # safety factor of every rounding allowance


@dataclass
class PointInfo:
    name: str
    description: str
    active_share: float           # share of hinge terms (i, j != y_i) with margin > 0
    exact_kinks: int              # hinge terms whose margin is exactly 0


@dataclass
class CheckResult:
    """The three checks at one point and one reg."""

    point: str
    reg: float
    loss: float                           # the function's
    reference_loss: float                 # torch.autograd's svm_loss_autograd, float64
    loss_rel_errors: Dict[str, float]     # CS231n relative error against each reference
    loss_tolerance: float                 # the relative error rounding allows
    loss_ok: bool
    grad_max_rel_error: float             # against the nearest reference value, max over coordinates
    grad_mismatched: int                  # coordinates outside [kink=0, kink=1] +- fp_tol
    grad_ok: bool
    coordinates: int                      # judged by finite differences
    kink_explained: int
    unexplained: int
    straddling: int                       # judged coordinates whose step straddles >= 1 kink
    fd_max_rel_error: float               # against the central differences, max over judged coordinates
    fd_ok: bool

    @property
    def passed(self) -> bool:
        return self.loss_ok and self.grad_ok and self.fd_ok


@dataclass
class Coordinate:
    """One coordinate of dW at one point and reg, for the report of the worst."""

    point: str
    reg: float
    index: Tuple[int, int]        # (k, j): W[k, j]
    analytic: float               # the function's dW[k, j]
    numeric: float                # the central difference
    reference: float              # the reference value nearest to analytic (any kink convention)
    rel_error: float              # |analytic - numeric| / max(|analytic|, |numeric|)
    kinks: int                    # hinge terms whose margin changes sign within the step
    status: str                   # "ok", "kink_explained" or "unexplained" (finite differences)
    matches_reference: bool


@dataclass
class VerifyReport:
    function: str
    backend: str
    input_dtype: str
    output_dtype: str             # dtype of the returned dW
    n: int
    d: int
    c: int
    delta: float
    h: float
    regs: List[float]
    points: List[PointInfo]
    checks: List[CheckResult]
    worst: List[Coordinate]
    diagnosis: List[Dict[str, Any]] = field(default_factory=list)  # from verification.diagnose
    notes: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def totals(self) -> Dict[str, int]:
        """Finite-difference counts summed over every check."""
        ke = sum(c.kink_explained for c in self.checks)
        un = sum(c.unexplained for c in self.checks)
        return {"coordinates": sum(c.coordinates for c in self.checks), "mismatched": ke + un,
                "kink_explained": ke, "unexplained": un}

    def to_dict(self) -> dict:
        out = {"verdict": "pass" if self.passed else "fail", **self.totals()}
        out.update(asdict(self))
        for check, raw in zip(self.checks, out["checks"]):
            raw["passed"] = check.passed
        return out


# --------------------------------------------------------------------------- loading

def load_function(spec: str) -> Callable:
    """``"path/to/file.py:func"`` or ``"package.module:func"`` -> the function.

    Raises:
        ValueError: malformed spec, module not found, no such function, not callable, or a
            signature that cannot take ``(W, X, y, reg)``.
        FileNotFoundError: the file does not exist.
        UserCodeError: importing the user's code raised (with its traceback).
    """
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise ValueError(f"expected PATH.py:FUNC or package.module:FUNC, got {spec!r}")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _load_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise ValueError(f"no module named {exc.name!r} (from {spec!r})") from None
            raise UserCodeError(f"importing {target} raised {_one_line(exc)}", _user_traceback(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - whatever the user's module raises
            raise UserCodeError(f"importing {target} raised {_one_line(exc)}", _user_traceback(exc)) from exc
    fn = getattr(module, name, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"{target} has no function {name!r}; it defines {found or 'none'}")
    if not callable(fn):
        raise ValueError(f"{target}:{name} is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind(None, None, None, None)
    except TypeError:
        raise ValueError(f"{target}:{name}{inspect.signature(fn)} cannot be called as "
                         f"f(W, X, y, reg), the assignment's signature") from None
    except ValueError:  # no signature to inspect (a builtin): find out when calling it
        pass
    return fn


def _load_file(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
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
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - SyntaxError included
        del sys.modules[module_name]
        raise UserCodeError(f"importing {path} raised {_one_line(exc)}", _user_traceback(exc)) from exc
    finally:
        sys.path.remove(folder)
    return module


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _user_traceback(exc: BaseException) -> str:
    """The traceback without this module's and importlib's frames: the user's code only."""
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if f.filename != __file__ and not f.filename.startswith("<frozen")])
    return "".join(te.format())


# --------------------------------------------------------------------------- calling

def _function_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _call(fn: Callable, backend: str, W: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
          reg: float) -> Tuple[float, torch.Tensor]:
    """Call ``fn`` on fresh copies (it may write into them) and check what it returns."""
    if backend == "numpy":
        args = (W.numpy().copy(), X.numpy().copy(), y.numpy().copy(), float(reg))
    else:
        args = (W.clone(), X.clone(), y.clone(), float(reg))
    name = _function_name(fn)
    try:
        out = fn(*args)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any error of the user's code
        raise UserCodeError(f"{name} raised {_one_line(exc)} when called with {backend} inputs",
                            _user_traceback(exc)) from exc
    return _parse_output(out, tuple(W.shape), name)


def _parse_output(out: Any, shape: Tuple[int, int], name: str) -> Tuple[float, torch.Tensor]:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise UserCodeError(f"{name} must return (loss, dW), got {_describe(out)}")
    loss, dW = out
    value = loss.detach().cpu().numpy() if isinstance(loss, torch.Tensor) else loss
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserCodeError(f"{name} must return the loss as a number, got {_describe(loss)}")
    if isinstance(dW, np.ndarray):
        if not np.issubdtype(dW.dtype, np.floating) or dW.dtype == np.float16:
            raise UserCodeError(f"{name} must return dW as float32 or float64, got {_describe(dW)}")
        dW = torch.from_numpy(np.array(dW))
    elif isinstance(dW, torch.Tensor):
        if dW.dtype not in (torch.float32, torch.float64):
            raise UserCodeError(f"{name} must return dW as float32 or float64, got {_describe(dW)}")
        dW = dW.detach().cpu().clone()
    else:
        raise UserCodeError(f"{name} must return dW as a numpy array or torch tensor, got {_describe(dW)}")
    if tuple(dW.shape) != shape:
        raise UserCodeError(f"{name} returned dW of shape {tuple(dW.shape)}; it must have W's shape {shape}")
    return float(value), dW


def _describe(obj: Any) -> str:
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return f"{type(obj).__module__.split('.')[0]} {type(obj).__name__} of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"{type(obj).__name__} {obj!r}"[:200]


def _detect_backend(fn: Callable, backend: str, W, X, y) -> Tuple[str, Tuple[float, torch.Tensor]]:
    """The backend to use and the first call's result: numpy first in ``auto``, then torch."""
    if backend != "auto":
        return backend, _call(fn, backend, W, X, y, 0.0)
    try:
        return "numpy", _call(fn, "numpy", W, X, y, 0.0)
    except UserCodeError as numpy_error:
        try:
            return "torch", _call(fn, "torch", W, X, y, 0.0)
        except UserCodeError as torch_error:
            raise UserCodeError(f"{numpy_error} (with torch inputs: {torch_error})",
                                numpy_error.user_traceback) from None


# --------------------------------------------------------------------------- points

def _active_share(W, X, y, delta) -> float:
    return float((svm_margins(W, X, y, delta=delta) > 0).sum()) / (X.shape[0] * (W.shape[1] - 1))


def default_points(X: torch.Tensor, y: torch.Tensor, num_classes: int, delta: float = 1.0,
                   seed: int = 0, max_steps: int = 200) -> Dict[str, Tuple[torch.Tensor, str]]:
    """The two points :func:`verify` uses: ``{name: (W (D, C) float64, description)}``.

    ``small``: ``1e-4 * randn``. ``trained``: gradient descent on the project's loss
    (:func:`torch_svm.svm_loss`, ``torch.optim.SGD``, reg 0) from ``small``, with the step
    ``0.1 * delta / rms(X dW)`` at the start, stopped once at most half the margins are active.
    """
    X = X.to(_F64)
    g = torch.Generator().manual_seed(seed)
    small = 1e-4 * torch.randn(X.shape[1], num_classes, generator=g, dtype=_F64)
    W = small.clone().requires_grad_(True)
    _, dW0 = svm_loss_and_grad(small, X, y, 0.0, delta=delta)
    lr = 0.1 * delta / max(float((X @ dW0).square().mean().sqrt()), 1e-300)
    opt = torch.optim.SGD([W], lr=lr)
    steps = 0
    while steps < max_steps and _active_share(W.detach(), X, y, delta) > 0.5:
        opt.zero_grad()
        svm_loss(W, X, y, 0.0, delta=delta).backward()
        opt.step()
        steps += 1
    return {"small": (small, "W = 1e-4 * randn, the assignment's"),
            "trained": (W.detach(), f"after {steps} gradient-descent steps of the SVM loss")}


# --------------------------------------------------------------------------- checking

@dataclass
class _Evaluation:
    """Tensors of one check, kept for the worst coordinates and the diagnosis."""

    point: str
    reg: float
    W: torch.Tensor               # (D, C) float64
    dW: torch.Tensor              # (D, C) the function's, float64
    lo: torch.Tensor              # (D, C) min of the kink=0 and kink=1 reference gradients
    hi: torch.Tensor              # (D, C) max of them
    fd_grad: torch.Tensor         # (D, C) central differences
    crossings: torch.Tensor       # (D, C) int64
    status: torch.Tensor          # (D, C) int8, finite-difference status
    fp_tol: torch.Tensor          # (D, C)
    judged: torch.Tensor          # (D, C) bool, the coordinates judged by finite differences
    ref_bad: torch.Tensor         # (D, C) bool, outside [lo, hi] +- fp_tol
    loss: float
    ref_loss: float
    ref_reg_loss: float           # reg * sum(W^2)
    example_losses: torch.Tensor  # (N,) the reference's per-example hinge sums
    loss_tol: float               # absolute


def _loss_tolerance(m: torch.Tensor, W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, delta: float,
                    data_loss: float, reg_loss: float, eps: float, fp_factor: float) -> float:
    """Rounding of the loss: each active margin is off by up to ``eps * scale_ij`` (the scale of
    ``|S|`` it is computed from) and summing ``N C`` terms adds ``eps sqrt(N C)`` relative."""
    N, D = X.shape
    C = W.shape[1]
    A = X.abs() @ W.abs()                                            # (N, C)
    scale = math.sqrt(D) * (A + A.gather(1, y[:, None])) + abs(delta)
    margin_rounding = float((scale * (m > 0)).sum()) / N
    return fp_factor * eps * (margin_rounding + math.sqrt(N * C) * data_loss
                              + math.sqrt(D * C) * reg_loss)


def _evaluate(point: str, W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float,
              loss: float, dW: torch.Tensor, compute_dtype: torch.dtype, judged: torch.Tensor,
              config: VerifyConfig) -> Tuple[CheckResult, _Evaluation]:
    delta = config.delta
    eps = torch.finfo(compute_dtype).eps + torch.finfo(_F64).eps
    # 1. the loss against three references
    ref_losses = {
        "autograd": float(autograd_reference(W, X, y, reg, delta=delta)[0]),
        "multimargin": float(mml_reference(W, X, y, reg, delta=delta)[0]),
        "naive": svm_loss_naive(W.numpy(), X.numpy(), y.numpy(), reg, delta=delta)[0],
    }
    ref_loss = ref_losses["autograd"]
    reg_loss = reg * float((W * W).sum())
    m = svm_margins(W, X, y, delta=delta)
    loss_tol = _loss_tolerance(m, W, X, y, delta, ref_loss - reg_loss, reg_loss, eps, config.fp_factor)
    loss_errors = {name: rel_error(loss, value) for name, value in ref_losses.items()}
    loss_ok = all(abs(loss - value) <= loss_tol for value in ref_losses.values())
    # 2. dW against the reference gradients with either value at an exact kink
    g0 = svm_loss_and_grad(W, X, y, reg, delta=delta, kink=0.0)[1]
    g1 = svm_loss_and_grad(W, X, y, reg, delta=delta, kink=1.0)[1]
    lo, hi = torch.minimum(g0, g1), torch.maximum(g0, g1)
    # 3. dW against finite differences, every coordinate
    fd = svm_finite_differences(W, X, y, reg, delta=delta, p=1, h=config.h)
    verdict = classify_svm_gradient(dW.to(compute_dtype), fd, fp_factor=config.fp_factor)
    ref_bad = ~((dW >= lo - verdict.fp_tol) & (dW <= hi + verdict.fp_tol))  # NaN is bad too
    nearest = torch.minimum(torch.maximum(dW, lo), hi)
    status = verdict.status
    counts = {name: int(((status == code) & judged).sum()) for code, name in enumerate(STATUS_NAMES)}
    sel = judged.nonzero(as_tuple=True)
    result = CheckResult(
        point=point, reg=reg, loss=loss, reference_loss=ref_loss, loss_rel_errors=loss_errors,
        loss_tolerance=loss_tol / max(abs(ref_loss), 1e-300), loss_ok=loss_ok,
        grad_max_rel_error=max_rel_error(dW.numpy(), nearest.numpy()),
        grad_mismatched=int(ref_bad.sum()), grad_ok=not bool(ref_bad.any()),
        coordinates=int(judged.sum()), kink_explained=counts["kink_explained"],
        unexplained=counts["unexplained"], straddling=int(((fd.crossings > 0) & judged).sum()),
        fd_max_rel_error=max_rel_error(dW[sel].numpy(), fd.grad[sel].numpy()),
        fd_ok=counts["unexplained"] == 0,
    )
    hinge = m.clamp(min=0)
    evaluation = _Evaluation(point=point, reg=reg, W=W, dW=dW, lo=lo, hi=hi, fd_grad=fd.grad,
                             crossings=fd.crossings, status=status, fp_tol=verdict.fp_tol,
                             judged=judged, ref_bad=ref_bad, loss=loss, ref_loss=ref_loss,
                             ref_reg_loss=reg_loss, example_losses=hinge.sum(1), loss_tol=loss_tol)
    return result, evaluation


def _visible_reg(reg: float, at_zero: List[_Evaluation], notes: List[str]) -> float:
    """``reg``, times 10 until ``reg |W|`` (the error of a halved regularization gradient) is
    over 10x the rounding allowance ``fp_tol`` of the reg-0 check at half of the coordinates of
    every point (at most 6 times)."""
    chosen = reg
    for _ in range(7):
        if all(float((chosen * ev.W.abs() > 10 * ev.fp_tol).double().mean()) >= 0.5 for ev in at_zero):
            if chosen != reg:
                notes.append(f"reg {reg:g} leaves the regularization gradient within rounding at "
                             f"some point; used reg {chosen:g}")
            return chosen
        chosen *= 10
    notes.append(f"the regularization gradient stays within rounding up to reg {chosen / 10:g}; "
                 f"regularization bugs may go unseen")
    return reg


def _worst(evaluations: List[_Evaluation], k: int) -> List[Coordinate]:
    """Up to ``k`` coordinates, the worst first: wrong ones (unexplained or off the reference)
    by relative error, then kink-explained ones."""
    rows = []
    for ev in evaluations:
        wrong = ((ev.status == UNEXPLAINED) & ev.judged) | ev.ref_bad
        flagged = wrong | ((ev.status != 0) & ev.judged)
        nearest = torch.minimum(torch.maximum(ev.dW, ev.lo), ev.hi)
        err = torch.maximum((ev.dW - nearest).abs(), (ev.dW - ev.fd_grad).abs())
        score = err / (torch.maximum(ev.dW.abs(), nearest.abs()) + ev.fp_tol + 1e-300)
        score = score / (1 + score) + 2 * wrong                       # in [0, 1), wrong ones 2 up
        score = torch.where(flagged, score, -1.0).reshape(-1)
        top = score.topk(min(k, score.numel()))
        rows += [(float(v), ev, divmod(int(i), ev.W.shape[1])) for v, i in zip(*top) if v >= 0]
    rows.sort(key=lambda r: r[0], reverse=True)
    out = []
    for _, ev, (k_, j) in rows[:k]:
        a, n = float(ev.dW[k_, j]), float(ev.fd_grad[k_, j])
        ref = float(torch.clamp(ev.dW[k_, j], ev.lo[k_, j], ev.hi[k_, j]))
        out.append(Coordinate(point=ev.point, reg=ev.reg, index=(k_, j), analytic=a, numeric=n,
                              reference=ref, rel_error=rel_error(a, n), kinks=int(ev.crossings[k_, j]),
                              status=STATUS_NAMES[int(ev.status[k_, j])],
                              matches_reference=not bool(ev.ref_bad[k_, j])))
    return out


def verify(fn: Callable, X: torch.Tensor, y: torch.Tensor, num_classes: Optional[int] = None,
           config: Optional[VerifyConfig] = None, *,
           points: Optional[Dict[str, Tuple[torch.Tensor, str]]] = None,
           progress: bool = False) -> VerifyReport:
    """Judge ``fn(W, X, y, reg) -> (loss, dW)``; see the module docstring.

    Args:
        fn: the function under test.
        X: ``(N, D)`` examples (any floating dtype; cast to ``config.dtype`` for ``fn``).
        y: ``(N,)`` integer labels.
        num_classes: C (default ``y.max() + 1``).
        config: :class:`VerifyConfig` (default: all defaults).
        points: ``{name: (W (D, C), description)}`` instead of :func:`default_points`.
        progress: show a progress bar over the point x reg checks on stderr.

    Returns:
        :class:`VerifyReport`; ``report.passed``.

    Raises:
        UserCodeError: ``fn`` raised, or returned something other than ``(scalar, (D, C) array)``.
        ValueError: bad config values or inputs.
    """
    from verification.diagnose import diagnose

    config = VerifyConfig() if config is None else config
    if config.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {config.backend!r}")
    if config.dtype not in _INPUT_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_INPUT_DTYPES)}, got {config.dtype!r}")
    if not (math.isfinite(config.delta) and config.delta > 0):
        raise ValueError(f"delta must be a finite number > 0, got {config.delta!r}")
    if not (math.isfinite(config.h) and config.h > 0):
        raise ValueError(f"h must be a finite number > 0, got {config.h!r}")
    if not (math.isfinite(config.reg) and config.reg > 0):
        raise ValueError(f"reg must be a finite number > 0, got {config.reg!r}")
    if config.sparse is not None and config.sparse <= 0:
        raise ValueError(f"sparse must be a positive number of coordinates, got {config.sparse!r}")
    y = torch.as_tensor(y).to(torch.int64)
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    in_dtype = _INPUT_DTYPES[config.dtype][0]
    X = X.detach().cpu().to(in_dtype).to(_F64)          # references see the inputs fn sees
    if points is None:
        points = default_points(X, y, num_classes, config.delta, config.seed)
    Ws = {name: W.detach().cpu().to(in_dtype).to(_F64) for name, (W, _) in points.items()}
    notes: List[str] = []
    D, C = next(iter(Ws.values())).shape
    judged = torch.ones(D, C, dtype=torch.bool)
    if config.sparse is not None and config.sparse < D * C:
        g = torch.Generator().manual_seed(config.seed)
        judged = torch.zeros(D * C, dtype=torch.bool)
        judged[torch.randperm(D * C, generator=g)[:config.sparse]] = True
        judged = judged.reshape(D, C)

    def inputs(W):
        return W.to(in_dtype), X.to(in_dtype), y

    first_name = next(iter(Ws))
    backend, first = _detect_backend(fn, config.backend, *inputs(Ws[first_name]))
    checks: Dict[Tuple[str, float], Tuple[CheckResult, _Evaluation]] = {}
    out_dtypes = set()

    def check(name: str, reg: float) -> _Evaluation:
        if (name, reg) == (first_name, 0.0):
            loss, dW = first
        else:
            loss, dW = _call(fn, backend, *inputs(Ws[name]), reg)
        out_dtypes.add(dW.dtype)
        compute = torch.float32 if torch.float32 in (dW.dtype, in_dtype) else _F64
        checks[name, reg] = _evaluate(name, Ws[name], X, y, reg, loss, dW.to(_F64), compute,
                                      judged, config)
        return checks[name, reg][1]

    with progress_bar(total=2 * len(Ws), desc="verify", enabled=progress) as bar:
        at_zero = []
        for name in Ws:
            at_zero.append(check(name, 0.0))
            bar.update(1)
        regs = [0.0, _visible_reg(config.reg, at_zero, notes)]
        for name in Ws:
            check(name, regs[1])
            bar.update(1)
    order = [(name, reg) for name in Ws for reg in regs]
    results = [checks[key][0] for key in order]
    evaluations = [checks[key][1] for key in order]
    report = VerifyReport(
        function=_function_name(fn), backend=backend, input_dtype=config.dtype,
        output_dtype="float32" if torch.float32 in out_dtypes else "float64",
        n=X.shape[0], d=D, c=C, delta=config.delta, h=config.h, regs=regs,
        points=[PointInfo(name, description, _active_share(Ws[name], X, y, config.delta),
                          int((svm_margins(Ws[name], X, y, delta=config.delta) == 0).sum()))
                for name, (_, description) in points.items()],
        checks=results, worst=_worst(evaluations, config.worst), notes=notes)
    if not report.passed:
        report.diagnosis = diagnose(evaluations, X, y, config.delta)
    return report
