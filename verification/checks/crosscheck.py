"""Run every implementation of the SVM loss on one problem and compare them pairwise.

Methods (each gives a loss and dW for the same ``(W, X, y, reg)``):

==============  ==================================================================  =========
name            what                                                                dtype
==============  ==================================================================  =========
hand            :func:`torch_svm.svm_loss_and_grad` (hand-written gradient)          input
function        :func:`torch_svm.svm_loss` + ``backward()`` (autograd.Function)   input
autograd        ``torch.autograd`` on :func:`torch_svm.svm_loss_autograd`                     input
mml             ``C * F.multi_margin_loss`` + reg, PyTorch's own backward kernel     input
naive           :func:`verification.checks.reference.svm_loss_naive` (numpy loops)          float64
vectorized      :func:`verification.checks.reference.svm_loss_vectorized` (numpy)          float64
finite-diff     central differences over every coordinate                            float64
==============  ==================================================================  =========

For every pair the report gives the relative error of the loss and the largest relative error
of the gradient over coordinates, ``|a - b| / max(|a|, |b|)`` (0 when both are 0), the formula
of the CS231n notes. Analytic pairs must agree within a tolerance set by the lower of the two
precisions (:data:`TOLERANCES`). Finite differences disagree with the analytic gradient where
the interval ``[w - h, w + h]`` straddles a kink of the hinge; those coordinates are counted
and reported, and only mismatches that the kink analysis cannot explain fail the check.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_svm import svm_loss, svm_loss_and_grad
from verification.checks.tolerance import (_SCALED, TOLERANCES, max_rel_error, rel_error,
                                           scaled_error)
from verification.checks.numeric import classify_svm_gradient, svm_finite_differences
from verification.checks.reference import (autograd_reference, mml_reference, svm_loss_naive,
                                    svm_loss_vectorized)

__all__ = ["cross_check", "CrossCheckReport"]

FD_NAME = "finite-diff"


@dataclass
class PairResult:
    a: str
    b: str
    loss_rel_error: Optional[float]   # None when one side has no loss of its own (finite-diff)
    grad_rel_error: float             # CS231n elementwise relative error, max over coordinates
    grad_scaled_error: float          # max|a - b| / max(|a|, |b|) over all coordinates
    tolerance: Optional[float]        # None when not judged by tolerance (finite-diff)
    passed: bool
    note: str = ""


@dataclass
class CrossCheckReport:
    n: int
    d: int
    c: int
    delta: float
    reg: float
    p: int
    h: float
    dtype: str
    device: str
    losses: Dict[str, Optional[float]]
    pairs: List[PairResult]
    skipped: Dict[str, str] = field(default_factory=dict)
    finite_diff: Dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(pair.passed for pair in self.pairs)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["passed"] = self.passed
        return out


def _to_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _function_method(W, X, y, reg, *, delta, p):
    Wr = W.detach().clone().requires_grad_(True)
    loss = svm_loss(Wr, X, y, reg, delta=delta, p=p)
    loss.backward()
    return loss.detach(), Wr.grad


def _numpy_method(fn):
    def run(W, X, y, reg, *, delta, p):
        return fn(_to_numpy(W), _to_numpy(X), y.cpu().numpy(), reg, delta=delta, p=p)
    return run


#: name -> (fn(W, X, y, reg, *, delta, p) -> (loss, dW), whether it computes in float64 always).
ANALYTIC_METHODS: Dict[str, Tuple[Callable, bool]] = {
    "hand": (svm_loss_and_grad, False),
    "function": (_function_method, False),
    "autograd": (autograd_reference, False),
    "mml": (mml_reference, False),
    "naive": (_numpy_method(svm_loss_naive), True),
    "vectorized": (_numpy_method(svm_loss_vectorized), True),
}


def cross_check(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float = 0.0, *,
                delta: float = 1.0, p: int = 1, h: float = 1e-5,
                methods: Optional[Dict[str, Tuple[Callable, bool]]] = None,
                finite_diff: bool = True) -> CrossCheckReport:
    """Run every method on ``(W, X, y, reg)`` and compare each pair.

    Args:
        W: (D, C), X: (N, D) in the dtype and on the device to test; y: (N,) int64.
        reg, delta, p: the loss's parameters.  h: the finite-difference step.
        methods: override :data:`ANALYTIC_METHODS` (tests use this to plant a wrong gradient).
        finite_diff: include the central finite-difference gradient.

    Returns:
        A :class:`CrossCheckReport`; ``report.passed`` is False when any analytic pair differs
        beyond its tolerance or a finite-difference mismatch is not explained by a kink.
    """
    methods = dict(ANALYTIC_METHODS if methods is None else methods)
    results: Dict[str, Tuple[Optional[float], np.ndarray, torch.dtype]] = {}
    skipped: Dict[str, str] = {}
    for name, (fn, is_float64) in methods.items():
        try:
            loss, dW = fn(W, X, y, reg, delta=delta, p=p)
        except (RuntimeError, NotImplementedError) as exc:
            # PyTorch's MultiMarginLoss has no CPU kernel for float16/bfloat16.
            skipped[name] = " ".join(str(exc).split())[:200]
            continue
        results[name] = (float(loss), _to_numpy(dW), torch.float64 if is_float64 else W.dtype)

    fd = None
    fd_stats: Dict[str, float] = {}
    checks = {}
    if finite_diff:
        # Exact per-term central differences in float64, with the kink side information; the
        # side slack covers margins within rounding of a kink at the tested precision.
        W64, X64 = W.detach().to(torch.float64), X.detach().to(torch.float64)
        margin_eps = max(torch.finfo(torch.float32).eps, torch.finfo(W.dtype).eps)
        fd = svm_finite_differences(W64, X64, y, reg, delta=delta, p=p, h=h, margin_eps=margin_eps)
        fd_stats = {"coordinates": fd.grad.numel(), "straddling": int((fd.crossings > 0).sum())}
        # PyTorch's half-precision GEMMs accumulate in float32: one rounding, not N.
        checks = {name: classify_svm_gradient(torch.from_numpy(grad).to(dtype), fd,
                                              fp_terms=1 if dtype in _SCALED else None)
                  for name, (_, grad, dtype) in results.items()}
        results[FD_NAME] = (None, _to_numpy(fd.grad), torch.float64)

    pairs = []
    for a, b in itertools.combinations(results, 2):
        loss_a, grad_a, dtype_a = results[a]
        loss_b, grad_b, dtype_b = results[b]
        grad_err = max_rel_error(grad_a, grad_b)
        grad_scaled = scaled_error(grad_a, grad_b)
        if FD_NAME in (a, b):
            # Judge the analytic side coordinate by coordinate: a mismatch straddling a kink
            # within the bound it can cause is explained; anything else is a failure.
            counts = checks[a if b == FD_NAME else b].counts()
            note = (f"{counts['kink_explained'] + counts['unexplained']} of "
                    f"{fd_stats['coordinates']} coordinates mismatch: "
                    f"{counts['kink_explained']} explained by kinks, "
                    f"{counts['unexplained']} unexplained")
            pairs.append(PairResult(a, b, None, grad_err, grad_scaled, None,
                                    counts["unexplained"] == 0, note))
            continue
        loss_err = rel_error(loss_a, loss_b)
        low = dtype_a if TOLERANCES[dtype_a] >= TOLERANCES[dtype_b] else dtype_b
        tol = TOLERANCES[low]
        note = ""
        if low not in _SCALED:
            grad_ok = grad_err <= tol
        elif checks:
            # In half precision a margin within rounding of 0 may land on either side of the
            # kink, moving one term by |x|/N: judge each coordinate against the two sides'
            # rounding allowances (which include that slack) instead of one flat tolerance.
            allowed = torch.from_numpy(_to_numpy(checks[a].fp_tol + checks[b].fp_tol))
            grad_ok = bool((torch.from_numpy(np.abs(grad_a - grad_b)) <= allowed).all())
            note = "gradient judged per coordinate against the rounding bound of its dtype"
        else:
            grad_ok = grad_scaled <= tol
            note = "gradient judged by the scaled error"
        pairs.append(PairResult(a, b, loss_err, grad_err, grad_scaled, tol,
                                loss_err <= tol and grad_ok, note))

    n, d = X.shape
    return CrossCheckReport(
        n=n, d=d, c=W.shape[1], delta=float(delta), reg=float(reg), p=p, h=h,
        dtype=str(W.dtype).replace("torch.", ""), device=str(W.device),
        losses={name: r[0] for name, r in results.items()}, pairs=pairs, skipped=skipped,
        finite_diff=fd_stats,
    )
