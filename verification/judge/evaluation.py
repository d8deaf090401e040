r"""Judge one call of a student's function: one point ``W``, one ``reg``.

:func:`evaluate` runs the three checks of :mod:`verification.judge.verify` on what the function
returned (``loss``, ``dW: (D, C)``), with every reference in float64 on the very inputs the
function was given:

1. **loss** against ``torch.autograd`` (:func:`verification.checks.reference.autograd_reference`),
   ``C * F.multi_margin_loss`` and the numpy loops (their data loss, computed once per point,
   plus the regularization term), within the rounding of ``N C`` hinge terms;
2. **dW against the reference gradient**: per coordinate between the gradients that take 0 and
   1 at an exact kink (equal unless some margin is exactly 0), within the allowance ``fp_tol``;
3. **dW against finite differences**:
   :func:`verification.checks.numeric.svm_finite_differences` and
   :func:`verification.checks.numeric.classify_svm_gradient` label each judged coordinate ok,
   kink-explained or unexplained.

The regularization term is the one of ``reg_scale``: ``reg_scale * reg * sum(W^2)`` (1 for the
2020 assignment, 1/2 for the older course convention ``0.5 * reg * sum(W * W)``).

It returns an :class:`Evaluation`: the per-check numbers (:class:`CheckResult`, what the report
prints) and the tensors the worst coordinates, :mod:`verification.judge.diagnose` and the figure use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_svm import svm_loss_and_grad, svm_margins
from verification.checks.tolerance import max_rel_error, rel_error
from verification.checks.numeric import (STATUS_NAMES, UNEXPLAINED, SvmFiniteDifferences,
                                  classify_svm_gradient, svm_finite_differences)
from verification.checks.reference import autograd_reference, mml_reference, svm_loss_naive

__all__: list = []      # internal: import names from here explicitly

#: A pattern explains a difference when the least-squares residual is below this share of it.
RESIDUAL_LIMIT = 0.05

@dataclass
class Diagnosis:
    """One named bug (or the statement that no known one fits)."""

    what: str                     # "loss", "gradient", or "both"
    pattern: str                  # e.g. "regularization_gradient", "no_known_pattern"
    message: str                  # what to change, in the student's terms
    coefficients: List[float] = field(default_factory=list)   # the fitted coefficients
    residual: float = 0.0         # share of the difference the fit leaves unexplained
    coordinates: List[Tuple[int, int]] = field(default_factory=list)  # (k, j) where it applies
    examples: List[int] = field(default_factory=list)         # examples left out


_F64 = torch.float64


@dataclass
class CheckResult:
    """The three checks at one point and one reg (what the report prints and ``--json`` gives)."""

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


@dataclass(eq=False)  # tensors have no single truth value
class Evaluation:
    """Everything measured at one check; every tensor is float64 unless said otherwise."""

    result: CheckResult
    W: torch.Tensor               # (D, C) the point
    reg: float                    # the reg the function was called with
    ref_reg: float                # reg_scale * reg: the reference's coefficient of sum(W^2)
    margins: torch.Tensor         # (N, C) the reference margins at W, -inf at j = y_i
    dW: torch.Tensor              # (D, C) the function's
    lo: torch.Tensor              # (D, C) min of the kink=0 and kink=1 reference gradients
    hi: torch.Tensor              # (D, C) max of them
    fd: SvmFiniteDifferences      # central differences (grad, crossings, ...)
    status: torch.Tensor          # (D, C) int8, finite-difference status (numeric.STATUS_NAMES)
    fp_tol: torch.Tensor          # (D, C) rounding allowance of dW
    judged: torch.Tensor          # (D, C) bool, the coordinates judged by finite differences
    ref_bad: torch.Tensor         # (D, C) bool, outside [lo, hi] +- fp_tol (NaN included)
    loss_tol: float               # absolute allowance of the loss
    naive_data_loss: float        # the numpy loops' loss at reg 0 (reused at the point's other regs)

    @property
    def point(self) -> str:
        return self.result.point

    @property
    def loss(self) -> float:
        return self.result.loss

    @property
    def ref_loss(self) -> float:
        return self.result.reference_loss

    @property
    def ref_reg_loss(self) -> float:
        """``ref_reg * sum(W^2)``, the regularization part of the reference loss."""
        return self.ref_reg * float((self.W * self.W).sum())

    @property
    def example_losses(self) -> torch.Tensor:
        """``(N,)`` each example's hinge sum in the reference loss (before dividing by N)."""
        return self.margins.clamp(min=0).sum(1)

    @property
    def nearest(self) -> torch.Tensor:
        """``(D, C)`` the reference value nearest to dW (any value at an exact kink)."""
        return torch.minimum(torch.maximum(self.dW, self.lo), self.hi)

    @property
    def wrong(self) -> torch.Tensor:
        """``(D, C)`` bool: unexplained by finite differences (where judged) or off the reference."""
        return ((self.status == UNEXPLAINED) & self.judged) | self.ref_bad


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


def evaluate(point: str, W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float,
             loss: float, dW: torch.Tensor, compute_dtype: torch.dtype, *, reg_scale: float = 1.0,
             delta: float = 1.0, h: float = 1e-5, fp_factor: float = 4.0,
             judged: Optional[torch.Tensor] = None,
             naive_data_loss: Optional[float] = None,
             loss_dtype: Optional[torch.dtype] = None) -> Evaluation:
    """The three checks of the module docstring for one call.

    Args:
        point: the point's name. W: ``(D, C)`` float64. X: ``(N, D)`` float64 (the values the
            function was given). y: ``(N,)`` int64. reg: what the function was called with.
        loss, dW: what it returned; ``dW`` ``(D, C)`` float64 (converted).
        compute_dtype: the lowest precision among the inputs and ``dW``: sets dW's allowances.
        loss_dtype: the lowest precision among the inputs and the loss as returned: sets the
            loss's allowance (default ``compute_dtype``). Each value is judged by its own
            precision: a float16 dW does not buy a float64 loss float16's allowance.
        reg_scale: the convention's factor on ``reg * sum(W^2)``.
        judged: ``(D, C)`` bool, the coordinates judged by finite differences (default: all).
        naive_data_loss: the numpy loops' data loss at this ``W`` (a previous evaluation's
            ``naive_data_loss``; default: computed, 0.2 s on CIFAR-10's dev set).
    """
    ref_reg = reg_scale * reg
    eps = torch.finfo(compute_dtype).eps + torch.finfo(_F64).eps
    if judged is None:
        judged = torch.ones(W.shape, dtype=torch.bool)
    # 1. the loss against three references
    if naive_data_loss is None:
        naive_data_loss = float(svm_loss_naive(W.numpy(), X.numpy(), y.numpy(), 0.0, delta=delta)[0])
    ref_losses = {
        "autograd": float(autograd_reference(W, X, y, ref_reg, delta=delta)[0]),
        "multimargin": float(mml_reference(W, X, y, ref_reg, delta=delta)[0]),
        "naive": naive_data_loss + ref_reg * float(np.sum(W.numpy() * W.numpy())),
    }
    ref_loss = ref_losses["autograd"]
    reg_loss = ref_reg * float((W * W).sum())
    m = svm_margins(W, X, y, delta=delta)                            # (N, C)
    loss_eps = eps if loss_dtype is None else torch.finfo(loss_dtype).eps + torch.finfo(_F64).eps
    loss_tol = _loss_tolerance(m, W, X, y, delta, ref_loss - reg_loss, reg_loss, loss_eps,
                               fp_factor)
    loss_errors = {name: rel_error(loss, value) for name, value in ref_losses.items()}
    loss_ok = all(abs(loss - value) <= loss_tol for value in ref_losses.values())
    # 2. dW against the reference gradients with either value at an exact kink
    g0 = svm_loss_and_grad(W, X, y, ref_reg, delta=delta, kink=0.0)[1]
    g1 = svm_loss_and_grad(W, X, y, ref_reg, delta=delta, kink=1.0)[1]
    lo, hi = torch.minimum(g0, g1), torch.maximum(g0, g1)
    # 3. dW against finite differences, every coordinate
    margin_eps = max(torch.finfo(torch.float32).eps, torch.finfo(compute_dtype).eps)
    fd = svm_finite_differences(W, X, y, ref_reg, delta=delta, p=1, h=h, margin_eps=margin_eps)
    verdict = classify_svm_gradient(dW.to(compute_dtype), fd, fp_factor=fp_factor)
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
    return Evaluation(result=result, W=W, reg=reg, ref_reg=ref_reg, margins=m, dW=dW, lo=lo, hi=hi,
                      fd=fd, status=status, fp_tol=verdict.fp_tol, judged=judged, ref_bad=ref_bad,
                      loss_tol=loss_tol, naive_data_loss=naive_data_loss)
