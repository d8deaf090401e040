r"""Kink-aware finite differences for any scalar function: a ``gradcheck`` for nonsmooth code.

:func:`kinkcheck` is ``torch.autograd.gradcheck`` for nonsmooth
functions. With ``d+ = (f(x + h e_i) - f(x)) / h`` and ``d- = (f(x) - f(x - h e_i)) / h`` a
coordinate *straddles a kink* when ``|d+ - d-|`` exceeds what the tolerance, smooth curvature and
rounding allow (see :func:`kinkcheck`); there the analytic value must lie between ``d-`` and
``d+`` (the proposal of Caffe issue #1334), elsewhere it must match the central difference.

Public API: :func:`kinkcheck`, :func:`kinkcheck_values` (its rule on values already
computed), :class:`KinkcheckReport`, :class:`KinkcheckError`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Callable, Tuple

import torch
from torch_svm.errors import ArgumentError, ArgumentTypeError

__all__ = ["kinkcheck", "KinkcheckReport"]

#: Bytes one stack of points handed to ``f`` may take.
_STACK_BYTES = 64 * 2**20


class KinkcheckError(RuntimeError):
    """:func:`kinkcheck` found a coordinate where the analytic gradient is wrong.

    ``index`` is the coordinate (a tuple into ``x``); ``report`` the full :class:`KinkcheckReport`.
    """

    def __init__(self, message: str, index: Tuple[int, ...], report: "KinkcheckReport"):
        super().__init__(message)
        self.index = index
        self.report = report


@dataclass
class KinkcheckReport:
    """Per-coordinate result of :func:`kinkcheck`; every tensor has the shape of ``x``."""

    numeric: torch.Tensor     # central difference (f(x+h) - f(x-h)) / (2h)
    forward: torch.Tensor     # d+ = (f(x+h) - f(x)) / h
    backward: torch.Tensor    # d- = (f(x) - f(x-h)) / h
    analytic: torch.Tensor    # the gradient under test
    straddles: torch.Tensor   # bool, the one-sided slopes disagree: the step straddles a kink
    agrees: torch.Tensor      # bool, the analytic value is accepted at this coordinate
    tolerance: torch.Tensor   # the allowance used at each coordinate
    close: torch.Tensor       # bool, the analytic value matches the central difference

    @property
    def passed(self) -> bool:
        """True when every coordinate agrees."""
        return bool(self.agrees.all())


def _evaluate_stack(f: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor,
                    batched: bool) -> torch.Tensor:
    """``f`` at each row of ``points: (B, *x.shape)`` -> ``(B,)``: batched, vmapped or looped."""
    if batched:
        values = f(points)
    else:
        try:
            values = torch.func.vmap(f)(points)
        except Exception:  # noqa: BLE001 - any f vmap cannot trace falls back to the plain loop
            values = torch.stack([torch.as_tensor(f(p)) for p in points])
    if values.numel() != points.shape[0]:
        per_point = tuple(values.shape[1:]) if values.dim() else ()
        raise ArgumentError(f"f must return a scalar (a 0-d tensor) for each point, got shape "
                         f"{per_point} per point; did you forget .sum()?")
    return values.reshape(-1)


def kinkcheck(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, analytic: torch.Tensor, *,
              h: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, fp_factor: float = 8.0,
              raise_exception: bool = True, batched: bool = False,
              max_batch: int = 4096) -> KinkcheckReport:
    r"""Check ``analytic`` (the gradient of the scalar ``f`` at ``x``) by kink-aware finite differences.

    For each coordinate ``i``, with the steps actually taken in ``x``'s dtype
    (``h+ = (x_i + h) - x_i``, ``h- = x_i - (x_i - h)``):

    .. math::

        d_+ = \frac{f(x + h_+ e_i) - f(x)}{h_+},\quad
        d_- = \frac{f(x) - f(x - h_- e_i)}{h_-},\quad
        c = \frac{f(x + h_+ e_i) - f(x - h_- e_i)}{h_+ + h_-}.

    Rounding of ``f`` moves a one-sided slope by up to
    ``rho = fp_factor * eps(dtype) * max(|f(x)|, |f(x+h)|, |f(x-h)|) / h`` and the allowance for
    a match is ``tol = atol + rtol * max(|d+|, |d-|) + rho``. The coordinate straddles a kink
    (``straddles``) when ``|d+ - d-| > tol + rho``: a smooth ``f`` gives ``|d+ - d-| = h |f''|``, so
    a kink is declared only where the curvature would exceed ``(atol + rtol|f'|)/h`` (1e1 with
    the defaults). There the analytic value must lie in ``[min(d-, d+) - tol, max(d-, d+) + tol]``;
    any subgradient does, and so does ``f'(x)`` of a smooth ``f`` with monotone ``f'`` on the
    step, so a misjudged curvature only weakens the check there, never fails a correct gradient.
    Elsewhere ``|analytic - c| <= atol + rtol * |c| + rho`` (``torch.allclose`` style).

    The interval rule needs the slope to be monotone over the step: one kink, or several of one
    convexity. Two kinks of opposite convexity inside one step (two ReLU units switching in
    opposite directions along the same coordinate) can put a valid subgradient outside
    ``[d-, d+]``; a smaller ``h`` separates them.

    Args:
        f: maps a tensor shaped like ``x`` to a scalar tensor; with ``batched=True`` it maps
            ``(B, *x.shape)`` to ``(B,)``. Otherwise ``torch.func.vmap(f)`` is tried, and a plain
            loop used when vmap cannot trace ``f``.
        x: the point. A warning is issued unless it is float64.
        analytic: the gradient to check, shape of ``x``.
        h: the step (default 1e-6, as ``torch.autograd.gradcheck``'s ``eps``).
        atol, rtol: tolerances (defaults 1e-5 and 1e-3, as ``torch.autograd.gradcheck``).
        fp_factor: safety factor of the rounding allowance ``rho`` (default 8.0).
        raise_exception: raise :class:`KinkcheckError` naming the first failing coordinate
            (default True); otherwise return the report either way.
        batched: ``f`` accepts a stack of points (default False).
        max_batch: most points per evaluation of ``f`` (default 4096; fewer when ``x`` is large,
            so a stack stays within 64 MiB).

    Returns:
        :class:`KinkcheckReport`.
    """
    if not (x.is_floating_point() and analytic.is_floating_point()):
        raise ArgumentTypeError(f"x and analytic must be floating point, got {x.dtype} and {analytic.dtype}")
    if analytic.shape != x.shape:
        raise ArgumentError(f"analytic must have the shape of x {tuple(x.shape)}, got {tuple(analytic.shape)}")
    if not (math.isfinite(h) and h > 0):
        raise ArgumentError(f"h must be a finite number > 0, got {h!r}")
    if x.dtype != torch.float64:
        warnings.warn(f"kinkcheck: x is {x.dtype}, not float64; rounding of f at step h={h} "
                      f"may swamp the differences and make the check meaningless", stacklevel=2)
    with torch.no_grad():
        x = x.detach()
        flat = x.reshape(-1)
        n = flat.numel()
        h_plus = (flat + h) - flat                                     # (n,) steps as taken
        h_minus = flat - (flat - h)
        batch = max(1, min(max_batch, _STACK_BYTES // max(1, n * x.element_size())))
        values = []
        for start in range(0, 2 * n + 1, batch):
            idx = torch.arange(start, min(start + batch, 2 * n + 1), device=x.device)
            # point 0 is x, points 1..n are x + h e_i, points n+1..2n are x - h e_i
            coord = (idx - 1) % n
            step = torch.where(idx == 0, 0.0, torch.where(idx <= n, h_plus[coord], -h_minus[coord]))
            points = flat.repeat(len(idx), 1)                            # (B, n)
            points[torch.arange(len(idx), device=x.device), coord] += step
            values.append(_evaluate_stack(f, points.reshape(-1, *x.shape), batched))
        fx = torch.cat(values).to(x.dtype)
        report = kinkcheck_values(fx[0], fx[1:n + 1], fx[n + 1:], h_plus, h_minus,
                                  analytic.detach().reshape(-1).to(x.dtype), atol=atol, rtol=rtol,
                                  fp_factor=fp_factor, eps=torch.finfo(x.dtype).eps)
    report = KinkcheckReport(*(getattr(report, f.name).reshape(x.shape) for f in fields(report)))
    if raise_exception and not report.passed:
        raise _kinkcheck_error(report)
    return report


def kinkcheck_values(f0: torch.Tensor, f_plus: torch.Tensor, f_minus: torch.Tensor,
                     h_plus: torch.Tensor, h_minus: torch.Tensor, analytic: torch.Tensor, *,
                     atol: float, rtol: float, fp_factor: float, eps: float) -> KinkcheckReport:
    """:func:`kinkcheck`'s rule on values already computed, for callers that evaluate ``f``
    themselves (:func:`verification.checks.sparse.grad_check_sparse`).

    Args:
        f0, f_plus, f_minus: ``f(x)``, ``f(x + h+ e_i)``, ``f(x - h- e_i)``, float tensors
            (``f0`` may be one value shared by every coordinate).
        h_plus, h_minus: the steps as taken in ``x``'s dtype, shaped like ``f_plus``.
        analytic: the gradient under test at those coordinates.
        atol, rtol, fp_factor: as :func:`kinkcheck`. eps: the machine epsilon of the rounding
            of ``f`` (the coarsest of ``x``'s dtype and the dtype ``f`` computes in).

    Returns:
        :class:`KinkcheckReport` shaped like ``f_plus``.
    """
    forward = (f_plus - f0) / h_plus
    backward = (f0 - f_minus) / h_minus
    central = (f_plus - f_minus) / (h_plus + h_minus)
    fmax = torch.maximum(torch.maximum(f_plus.abs(), f_minus.abs()), f0.abs())
    rho = fp_factor * eps * fmax / torch.minimum(h_plus, h_minus)
    tol = atol + rtol * torch.maximum(forward.abs(), backward.abs()) + rho
    straddles = (forward - backward).abs() > tol + rho
    inside = ((analytic >= torch.minimum(forward, backward) - tol)
              & (analytic <= torch.maximum(forward, backward) + tol))
    close = (analytic - central).abs() <= atol + rtol * central.abs() + rho
    return KinkcheckReport(central, forward, backward, analytic, straddles,
                           torch.where(straddles, inside, close), tol, close)


def _kinkcheck_error(report: KinkcheckReport) -> KinkcheckError:
    """The error naming the first failing coordinate, its values, and how many failed."""
    failed = (~report.agrees).nonzero()
    index = tuple(int(v) for v in failed[0])
    a, c = float(report.analytic[index]), float(report.numeric[index])
    fw, bw, tol = float(report.forward[index]), float(report.backward[index]), float(report.tolerance[index])
    if bool(report.straddles[index]):
        what = (f"the step straddles a kink and analytic {a!r} lies outside the one-sided slopes "
                f"[d- = {bw!r}, d+ = {fw!r}] (tolerance {tol:.3g})")
    else:
        what = f"analytic {a!r} != numeric {c!r} (|diff| = {abs(a - c):.3g}, d- = {bw!r}, d+ = {fw!r})"
    return KinkcheckError(f"kinkcheck failed at coordinate {index} ({len(failed)} of "
                          f"{report.agrees.numel()} failed): {what}", index, report)
