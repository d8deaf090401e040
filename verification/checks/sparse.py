r"""The assignment's ``grad_check_sparse``, line for line, plus a kink column and a verdict.

CS231n's ``cs231n/gradient_check.py`` checks a gradient at a few random coordinates::

    for _ in range(num_checks):
        ix = tuple([randrange(m) for m in x.shape])      # Python's random module
        ...                                             # f at x[ix] + h and x[ix] - h
        grad_numerical = (fxph - fxmh) / (2 * h)
        rel_error = abs(grad_numerical - grad_analytic) / (abs(grad_numerical) + abs(grad_analytic))
        print('numerical: %f analytic: %f, relative error: %e' % (...))

:func:`grad_check_sparse` draws the same coordinates from the same ``random`` state, evaluates
``f`` at the same points and prints the same text, then says on each line whether the numbers
agree and, if not, whether the step straddles a kink of the hinge (Inline Question 1):

.. math::

    d_+ = \frac{f(x + h_+ e_i) - f(x)}{h_+}, \qquad d_- = \frac{f(x) - f(x - h_- e_i)}{h_-}

with the steps ``h+``, ``h-`` as taken in ``x``'s dtype. The rule is
:func:`verification.checks.kinkcheck.kinkcheck`'s (:func:`~verification.checks.kinkcheck.kinkcheck_values`),
with tolerances for a float64 loss (``atol=1e-8``, ``rtol=1e-6``) and its rounding allowance
``rho = fp_factor eps max|f| / h``:

* **ok**: ``|analytic - central| <= atol + rtol |central| + rho``;
* **kink-explained**: not ok, but ``|d+ - d-|`` exceeds ``atol + rtol max|d+-| + 2 rho`` (the
  step straddles a kink) and the analytic value lies between ``d-`` and ``d+`` (within the
  tolerance), as any subgradient does; and the same holds again with the step ``h / 100``,
  or there the mismatch is gone (the kink lies outside the smaller step);
* **unexplained**: otherwise, a real mismatch.

Why the second step: three values of a black box cannot tell a kink from curvature. With the
assignment's ``reg = 5e1`` the regulariser alone makes ``d+ - d- = 2 reg h = 1e-3`` at every
coordinate, so at step ``h`` alone any wrong value within ``reg h = 5e-4`` of the central
difference would pass as kink-explained. Curvature shrinks with the step and a kink does not
(a kink at ``x`` keeps its jump; one elsewhere leaves the step), so the check at ``h / 100``
narrows that blind spot a hundredfold (to ``reg h / 100`` for the SVM). It costs two more
calls of ``f``, only on lines that mismatch; ``f(x)`` itself is evaluated once, before the
first coordinate. Neither touches Python's ``random``, so the coordinates stay the
assignment's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from random import randrange
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch

from torch_svm.errors import ArgumentError, ArgumentTypeError, check_int, check_real, clip
from verification.checks.kinkcheck import KinkcheckReport, kinkcheck_values

__all__ = ["grad_check_sparse"]

#: What each line says after the assignment's text, per status.
_COLUMN = {
    "ok": "ok",
    "kink_explained": "kink: the step straddles a kink, the mismatch is expected (Inline Question 1)",
    "unexplained": "no kink explains it: a real mismatch",
}
#: A kink-like line is checked again with the step h / _REFINE (curvature shrinks with it).
_REFINE = 100


@dataclass
class SparseLine:
    """One checked coordinate: the assignment's numbers and the kink verdict."""

    index: Tuple[int, ...]    # the coordinate, drawn as the assignment draws it
    numerical: float          # (f(x + h) - f(x - h)) / (2 h), as printed
    analytic: float           # analytic_grad[index]
    rel_error: float          # as printed (nan when both are 0)
    status: str               # "ok", "kink_explained" or "unexplained"
    small_step: Optional[float] = None   # the step h / 100 that told a kink from curvature


@dataclass(repr=False)
class SparseCheck:
    """What :func:`grad_check_sparse` checked and printed."""

    lines: List[SparseLine]
    h: float
    notes: List[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(line.status == status for line in self.lines)

    @property
    def verdict(self) -> str:
        """"match" (every line ok), "explained" (mismatches only at kinks) or "unexplained"."""
        if self.count("unexplained"):
            return "unexplained"
        return "explained" if self.count("kink_explained") else "match"

    @property
    def passed(self) -> bool:
        """No unexplained mismatch."""
        return self.verdict != "unexplained"

    def summary(self) -> str:
        """The one-line verdict printed last."""
        n, kinks, bad = len(self.lines), self.count("kink_explained"), self.count("unexplained")
        if self.verdict == "match":
            return f"verdict: all {n} match"
        if self.verdict == "explained":
            return (f"verdict: {n - kinks} of {n} match; the other {kinks} mismatch only where the step "
                    f"straddles a kink of the hinge: expected, not a bug (Inline Question 1)")
        more = f" ({kinks} more explained by kinks)" if kinks else ""
        return (f"verdict: {bad} of {n} unexplained mismatches{more}: the loss or the gradient is "
                f"wrong (a finite difference cannot tell which): verify(f) compares both with the "
                f"reference")

    def __repr__(self) -> str:
        return (f"SparseCheck({len(self.lines)} coordinates: {self.count('ok')} ok, "
                f"{self.count('kink_explained')} kink-explained, {self.count('unexplained')} "
                f"unexplained; passed={self.passed})")


def _float_eps(value: Any) -> float:
    """Machine epsilon of the dtype ``value`` is computed in (Python floats: float64)."""
    if isinstance(value, torch.Tensor):
        dtype = value.dtype
        return torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps
    dtype = np.asarray(value).dtype
    return float(np.finfo(dtype).eps) if dtype.kind == "f" else float(np.finfo(np.float64).eps)


def _check_args(x: Any, analytic_grad: Any, num_checks: Any, h: Any) -> int:
    if isinstance(x, torch.Tensor):
        floating = x.dtype.is_floating_point
    elif isinstance(x, np.ndarray):
        floating = x.dtype.kind == "f"
    else:
        raise ArgumentTypeError(f"x must be a numpy array or a torch tensor, got {type(x).__name__}")
    if not floating:
        raise ArgumentTypeError(f"x must hold floating-point numbers (a step of h would be rounded away), "
                        f"got dtype {x.dtype}")
    if tuple(np.shape(analytic_grad)) != tuple(x.shape):
        raise ArgumentError(f"analytic_grad must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(np.shape(analytic_grad))}")
    check_real("h", h, min=0, min_open=True)
    return check_int("num_checks", num_checks, min=0)


def grad_check_sparse(f: Callable[[Any], Any], x: Any, analytic_grad: Any, num_checks: int = 10,
                      h: float = 1e-5, *, atol: float = 1e-8, rtol: float = 1e-6,
                      fp_factor: float = 8.0) -> SparseCheck:
    """The assignment's sparse gradient check, printing its lines plus a kink column.

    Args:
        f: ``x -> loss`` (e.g. ``lambda w: svm_loss_vectorized(w, X_dev, y_dev, 0.0)[0]``).
        x: the point, a float numpy array (or torch tensor); perturbed in place and restored.
        analytic_grad: the gradient under test, shaped like ``x``.
        num_checks: random coordinates to check (default 10), drawn with Python's ``random``
            exactly as the assignment does (``random.seed`` reproduces them).
        h: the step (default 1e-5).
        atol, rtol, fp_factor: when a line is ok and when a step straddles a kink (see the
            module docstring; defaults 1e-8, 1e-6, 8.0).

    Returns:
        :class:`SparseCheck` (``.passed``, ``.verdict``, ``.lines``). It prints, one line per
        coordinate, ``numerical: %f analytic: %f, relative error: %e`` as the assignment does,
        then the line's status; then a one-line verdict.
    """
    num_checks = _check_args(x, analytic_grad, num_checks, h)
    fx = f(x)
    try:
        float(fx)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"f must return the loss, one number, got {type(fx).__name__}: "
                        f"{clip(' '.join(repr(fx).split()), 100)}; did you forget the [0] in "
                        f"lambda w: svm_loss(w, X, y, reg)[0]?") from None
    rule = dict(atol=atol, rtol=rtol, fp_factor=fp_factor, eps=max(_float_eps(x), _float_eps(fx)))
    result = SparseCheck(lines=[], h=float(h))
    if rule["eps"] > np.finfo(np.float64).eps:
        result.notes.append(f"f or x is in a lower precision than float64 (eps {rule['eps']:.1e}), "
                            f"whose rounding swamps differences of step h={h:g}: check in float64")
    for _ in range(num_checks):
        ix = tuple([randrange(m) for m in x.shape])
        fxph, fxmh, steps = _step(f, x, ix, h)         # f(x + h), f(x - h), as the assignment

        grad_numerical = (fxph - fxmh) / (2 * h)
        grad_analytic = analytic_grad[ix]
        with np.errstate(invalid="ignore", divide="ignore"):   # 0 / 0: nan, as printed
            rel_error = abs(grad_numerical - grad_analytic) / (abs(grad_numerical) + abs(grad_analytic))
        text = 'numerical: %f analytic: %f, relative error: %e' % (grad_numerical, grad_analytic, rel_error)

        judged = _judge(fx, fxph, fxmh, steps, grad_analytic, rule)
        small_step = None
        if not bool(judged.close) and bool(judged.agrees):   # kink or curvature: a smaller step
            small_step = h / _REFINE
            judged = _judge(fx, *_step(f, x, ix, small_step), grad_analytic, rule)
        status = "ok" if small_step is None and bool(judged.close) else (
            "kink_explained" if bool(judged.agrees) else "unexplained")
        line = SparseLine(index=tuple(int(i) for i in ix), numerical=float(grad_numerical),
                          analytic=float(grad_analytic), rel_error=float(rel_error),
                          status=status, small_step=small_step)
        result.lines.append(line)
        print(f"{text}  {_COLUMN[status]}")
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    return result


def _step(f: Callable[[Any], Any], x: Any, ix: Tuple[int, ...], h: float
          ) -> Tuple[Any, Any, Tuple[float, float]]:
    """``f(x + h e_ix)``, ``f(x - h e_ix)`` (x restored after, even if f raises) and the steps
    ``(h+, h-)`` as taken in x's dtype."""
    oldval = x[ix]
    if isinstance(oldval, torch.Tensor):
        oldval = oldval.clone()                        # x[ix] is a view of x in torch
    try:
        x[ix] = oldval + h                             # increment by h
        taken_plus = float(x[ix])
        fxph = f(x)                                    # evaluate f(x + h)
        x[ix] = oldval - h
        taken_minus = float(x[ix])
        fxmh = f(x)                                    # evaluate f(x - h)
    finally:
        x[ix] = oldval                                 # reset
    return fxph, fxmh, (taken_plus - float(oldval), float(oldval) - taken_minus)


def _judge(fx: Any, fxph: Any, fxmh: Any, steps: Tuple[float, float], grad_analytic: Any,
           rule: dict) -> KinkcheckReport:
    """:func:`~verification.checks.kinkcheck.kinkcheck_values` at one coordinate, in float64."""
    t = [torch.tensor(float(v), dtype=torch.float64) for v in (fx, fxph, fxmh, *steps, grad_analytic)]
    return kinkcheck_values(*t, **rule)
