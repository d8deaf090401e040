r"""Finite differences that know where the kinks are.

**The SVM loss, every coordinate, in one pass.** With ``W: (D, C)``, ``X: (N, D)``,
``y: (N,) int64`` and the CS231n loss

.. math::

    L(W) = \frac{1}{N} \sum_i \sum_{j \ne y_i} \phi(m_{ij}) + \mathrm{reg} \sum W^2,
    \qquad m_{ij} = S_{ij} - S_{i y_i} + \Delta,\quad S = XW,\quad \phi(m) = \max(0, m)^p,

perturbing ``W[k, j]`` by ``t`` moves only column ``j`` of ``S``, by ``t X[:, k]``: the term
``(i, j)`` (``j != y_i``) moves by ``+t X_ik`` and, in rows with ``y_i == j``, every other term
``(i, c)`` moves by ``-t X_ik``. So the central difference of every coordinate is a sum of
*per-term* differences ``phi(m + h s) - phi(m - h s)`` with ``s = X_ik``, and
:func:`svm_finite_differences` computes all ``2 D C`` perturbed losses without re-evaluating
``X @ W``. A term whose margin stays on one side of 0 over the step changes by exactly
``phi'(m) 2 h s``, so all of those are one ``(D, N) x (N, C)`` GEMM; only the few terms with
``|m| < h max_k |X_ik|`` can cross 0, and for those the per-term difference is taken in closed
form (``a = h|s|``, ``lo/hi = m -/+ a``)::

    p = 1:  2a if lo >= 0 else max(0, hi)  =  min(max(0, hi), 2a)     (times sign(s))
    p = 2:  4ma if lo >= 0 else max(0, hi)^2

which is the exact value of ``L(w + h) - L(w - h)`` for the margins as computed, free of the
cancellation of subtracting two full losses; the regulariser adds ``4 reg w h`` exactly.
``naive=True`` instead returns what evaluating the full loss at ``w +/- h`` in the input dtype
gives (for studying rounding; ``C`` times slower).

A second pass over the few terms with ``|m| < h max_k |X_ik|`` (the only ones that can cross)
gives, per coordinate, the *kink* side information (:class:`SvmFiniteDifferences`):

* ``crossings``: the number of hinge terms whose margin changes sign strictly inside the step,
  ``m - h|s| < 0 < m + h|s|`` (a margin that is exactly 0 at an end of the step does not change
  sign there, and the central difference then equals the one-sided slope that the analytic
  gradient also takes, so it is not counted).
* ``kink_bound``: how far those crossings can move the central difference away from the
  analytic derivative with *any* valid subgradient at ``m = 0``. For a crossing term let
  ``a = h|s|`` and ``u = m / a`` in ``(-1, 1)``. Its central difference is
  ``s theta`` with ``theta = (1 + u) / 2`` for ``p = 1`` (between 0 and the slope ``s``) while
  the analytic value is
  ``s [m > 0]`` (or ``s g`` with ``g`` in ``[0, 1]`` at ``m = 0``); because rounding may put a
  near-zero margin on either side in the analytic code, we bound the gap over both sides:
  ``|s| max(theta, 1 - theta) = (|s| + |m|/h) / 2`` (``|s|/2`` at ``m = 0``, attained).
  For ``p = 2`` the loss is C^1, the analytic value ``2 max(0, m) s`` is unambiguous and the gap
  is exactly ``|s|^2 h (1 - |u|)^2 / 2 = (h|s| - |m|)^2 / (2h)`` (at most ``s^2 h / 2``). Each
  bound is divided by ``N`` and summed over the coordinate's crossing terms.
* ``magnitude``: the sum of ``|contribution|`` an analytic gradient adds up at that coordinate,
  over the terms active at ``W`` or crossing (``|s|/N`` each for ``p = 1``;
  ``2|s|(|m| + mscale)/N`` for ``p = 2``, which also covers rounding of the margin; plus
  ``2 reg |w|``). Here ``mscale = (|X||W|)_{ic} + (|X||W|)_{iy_i} + |delta|``: ``eps * mscale``
  is the rounding of a margin whose dot products are summed one term after another (a
  random walk of partial sums; blocked BLAS sums do better).
* ``side_slack``: ``p = 1`` terms that do not cross but whose margin is within the rounding
  ``tau = 4 margin_eps mscale`` of zero, where a
  correct analytic code in a lower precision may take the other side: ``|s|/N`` each.

:func:`classify_svm_gradient` then labels each coordinate of an analytic gradient from
anywhere, with ``err = |analytic - numeric|`` and
``fp_tol = fp_factor * eps(analytic.dtype) * (1 + sqrt(T) + T / 16) * magnitude + side_slack``,
with ``T`` the number of contributions summed at the coordinate (``terms``, at least ``N``):

* ``OK`` if ``err <= fp_tol``;
* ``KINK_EXPLAINED`` if not, but ``crossings >= 1`` and ``err <= kink_bound + fp_tol``;
* ``UNEXPLAINED`` otherwise: a bug in the analytic gradient.

The ``sqrt(T)`` is the random-walk growth of rounding over the ``T`` summed contributions (in a
label column ``y_i = j`` every active term of row ``i`` adds to it: up to ``N_j (C - 1)``); the
``T / 16`` covers the drift of a recursive sum of many same-sign terms (the naive loop's
``dW[:, y[i]] -= X[i]``), whose rounding grows linearly: measured up to ``0.09 T`` in units of
``2 eps magnitude`` at C up to 10,000, against a worst case of ``T / 4``;
at CIFAR-like points (``X ~ 60 randn``, ``W ~ 1e-4 randn``, ``N`` = 500 or 3000) a correct
float32 gradient reaches at most 3% of ``fp_tol`` on coordinates without crossings.

For any other scalar function, kink-aware finite differences are :mod:`verification.checks.kinkcheck`'s.

Public API: :func:`svm_finite_differences`, :func:`svm_numeric_grad`,
:class:`SvmFiniteDifferences`, :func:`classify_svm_gradient`, :class:`SvmGradientCheck`,
``OK``/``KINK_EXPLAINED``/``UNEXPLAINED``/``STATUS_NAMES``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from torch_svm.losses import svm_margins, validate_hyperparameters, validate_svm_inputs
from torch_svm.errors import ArgumentError, ArgumentTypeError

__all__ = ["svm_finite_differences", "classify_svm_gradient"]

#: Status codes of :func:`classify_svm_gradient`, and their names (``STATUS_NAMES[code]``).
OK, KINK_EXPLAINED, UNEXPLAINED = 0, 1, 2
STATUS_NAMES = ("ok", "kink_explained", "unexplained")

#: Bytes one ``(K, N, C)`` (naive) or ``(D, P)`` (crossing terms) temporary may take.
_CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------
# 1. The SVM loss
# --------------------------------------------------------------------------------------------

@dataclass
class SvmFiniteDifferences:
    """Central differences of the SVM loss and their kink side information, all ``(D, C)``."""

    grad: torch.Tensor        # (D, C) central difference (L(w+h) - L(w-h)) / 2h
    crossings: torch.Tensor   # (D, C) int64, hinge terms whose margin changes sign in the step
    kink_bound: torch.Tensor  # (D, C) max |central - analytic| the crossings can cause
    magnitude: torch.Tensor   # (D, C) sum of |contributions| an analytic gradient adds up
    side_slack: torch.Tensor  # (D, C) p=1 non-crossing terms within rounding of a kink
    n: int                    # N, the number of examples
    h: float                  # the step
    p: int                    # the hinge power
    terms: Optional[torch.Tensor] = None  # (D, C) int64, contributions summed per coordinate


def _check_args(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float, delta: float,
                p: int, h: float) -> torch.Tensor:
    """The loss's own checks (:mod:`torch_svm.losses`) plus the step; returns y as int64."""
    validate_hyperparameters(reg=reg, delta=delta, p=p)
    if not (math.isfinite(h) and h > 0):
        raise ArgumentError(f"h must be a finite number > 0, got {h!r}")
    return validate_svm_inputs(W, X, y)


def svm_finite_differences(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float = 0.0, *,
                           delta: float = 1.0, p: int = 1, h: float = 1e-5, naive: bool = False,
                           margin_eps: Optional[float] = None,
                           chunk_bytes: int = _CHUNK_BYTES) -> SvmFiniteDifferences:
    """Central differences of the SVM loss at every coordinate of ``W``, with kink information.

    See the module docstring for the formulas and bounds.

    Args:
        W: ``(D, C)`` weights. X: ``(N, D)`` examples, same dtype. y: ``(N,)`` int64 labels.
        reg: L2 strength (default 0.0). delta: the margin (default 1.0). p: hinge power, 1 or 2.
        h: the step (default 1e-5).
        naive: return ``(L(w + h) - L(w - h)) / 2h`` with both losses evaluated in full in the
            input dtype (the rounding a hand-rolled check suffers) instead of the exact per-term
            difference (default False). The kink information is the same.
        margin_eps: relative precision of the analytic code's margins, for ``side_slack``
            (default ``eps(float32)``: a correct float32 or float64 gradient is never
            unexplained; pass ``torch.finfo(torch.bfloat16).eps`` for lower precision).
        chunk_bytes: budget of one temporary (default 64 MiB; peak ~5x that).

    Returns:
        :class:`SvmFiniteDifferences`, every field ``(D, C)`` in the dtype and on the device of W.
    """
    y = _check_args(W, X, y, reg, delta, p, h)
    D, C = W.shape
    N = X.shape[0]
    margin_eps = torch.finfo(torch.float32).eps if margin_eps is None else margin_eps
    with torch.no_grad():
        W, X = W.detach(), X.detach()
        m = svm_margins(W, X, y, delta=delta)                          # (N, C), -inf at y_i
        A = X.abs() @ W.abs()                                           # (N, C) scale of |S|
        scale = A + A.gather(1, y[:, None]) + abs(delta)                # rounding of m / eps
        Y = torch.nn.functional.one_hot(y, C).to(W.dtype)               # (N, C)
        K = max(1, chunk_bytes // max(1, N * C * W.element_size()))
        if naive:
            grad = _svm_naive_differences(W, X, y, reg, delta, p, h, K)
        else:
            grad = _svm_exact_differences(m, X, y, Y, p, h, chunk_bytes) / (2 * h * N) + 2 * reg * W
        # |contributions| of the terms active at W: (|s| or 2|s|(|m| + scale)) per term
        active = (m > 0).to(m.dtype) if p == 1 else torch.where(m > 0, 2 * (m.abs() + scale), 0.0)
        magnitude = X.abs().T @ (active + Y * active.sum(1, keepdim=True))
        # how many contributions add up at each coordinate: one per active term (i, j), and
        # in the label column y_i one per active term of row i (C - 1 of them at most)
        on = (m > 0).to(m.dtype)
        terms = (X != 0).to(m.dtype).T @ (on + Y * on.sum(1, keepdim=True))
        kinks = _svm_kinks(m, X, y, p, h, 4 * margin_eps * scale, scale, chunk_bytes)
    return SvmFiniteDifferences(
        grad=grad,
        crossings=kinks["crossings"].round().to(torch.int64),
        kink_bound=kinks["bound"] / N,
        magnitude=(magnitude + kinks["magnitude"]) / N + 2 * abs(reg) * W.abs(),
        side_slack=kinks["slack"] / N,
        n=N, h=float(h), p=p,
        terms=(terms + kinks["crossings"]).round().to(torch.int64),
    )


def _svm_exact_differences(m: torch.Tensor, X: torch.Tensor, y: torch.Tensor, Y: torch.Tensor,
                           p: int, h: float, chunk_bytes: int) -> torch.Tensor:
    """``N (L(w + h) - L(w - h))`` less the regulariser, per coordinate ``(D, C)``.

    A term whose margin stays on one side of 0 over the step (``|m| >= h|s|``) changes by
    exactly ``phi'(m) 2 h s``, so all of those together are one GEMM,
    ``2h X^T (G - Y rowsum(G))`` with ``G = phi'(m)`` (``(N, C)``, 0 at ``j = y_i``). Only terms
    with ``|m| < h max_k |X_ik|`` can cross 0; for those few the exact per-term difference
    ``phi(m + h|s|) - phi(m - h|s|)`` replaces the linear one, coordinate by coordinate.
    """
    D = X.shape[1]
    G = (m > 0).to(m.dtype) if p == 1 else 2 * m.clamp(min=0)         # (N, C)
    diff = 2 * h * ((G - Y * G.sum(1, keepdim=True)).T @ X).T          # (D, C), fast layout
    reach = h * X.abs().amax(1, keepdim=True)                           # (N, 1)
    rows, cols = (m.abs() < reach).nonzero(as_tuple=True)
    P = max(1, chunk_bytes // max(1, D * m.element_size()))
    for t0 in range(0, len(rows), P):
        i, c = rows[t0:t0 + P], cols[t0:t0 + P]                          # (P,) terms
        mt, s = m[i, c], X[i].T                                         # (P,), (D, P) slopes
        a = h * s.abs()
        hi = (mt + a).clamp(min=0)
        if p == 1:
            exact = torch.minimum(hi, 2 * a)                            # 2a exactly when m >= a
        else:
            exact = torch.where(mt >= a, 4 * mt * a, hi.square())
        q = torch.sign(s) * (exact - 2 * a * G[i, c])                   # exact less linear
        diff.index_add_(1, c, q).index_add_(1, y[i], -q)
    return diff


def _svm_kinks(m: torch.Tensor, X: torch.Tensor, y: torch.Tensor, p: int, h: float, tau: torch.Tensor,
               scale: torch.Tensor, chunk_bytes: int) -> Dict[str, torch.Tensor]:
    """Crossings, kink bound, side slack and the magnitude of crossing inactive terms, ``(D, C)``.

    Only terms with ``|m| < h max_k |X_ik|`` (they may cross) or ``|m| <= tau`` (side slack)
    matter; they are few, so this works on a ``(D, P)`` table of those ``P`` terms.
    """
    D, C = X.shape[1], m.shape[1]
    absm = m.abs()
    reach = h * X.abs().amax(1, keepdim=True)                           # (N, 1)
    rows, cols = ((absm < reach) | (absm <= tau)).nonzero(as_tuple=True)
    out = {name: torch.zeros(D, C, dtype=m.dtype, device=m.device)
           for name in ("crossings", "bound", "slack", "magnitude")}
    P = max(1, chunk_bytes // max(1, D * m.element_size()))
    for t0 in range(0, len(rows), P):
        i, c = rows[t0:t0 + P], cols[t0:t0 + P]                          # (P,) terms
        mt, at = m[i, c], absm[i, c]
        a = h * X[i].abs().T                                            # (D, P) h |slope|
        cross = at < a
        if p == 1:
            per_term = {
                "bound": torch.where(cross, (a + at) / (2 * h), 0.0),
                "slack": torch.where(~cross & (at <= tau[i, c]), a / h, 0.0),
                "magnitude": torch.where(cross & (mt <= 0), a / h, 0.0),
            }
        else:
            per_term = {
                "bound": torch.where(cross, (a - at).square() / (2 * h), 0.0),
                "magnitude": torch.where(cross & (mt <= 0), 2 * (a / h) * (at + scale[i, c]), 0.0),
            }
        per_term["crossings"] = cross.to(m.dtype)
        for name, q in per_term.items():
            out[name].index_add_(1, c, q).index_add_(1, y[i], q)
    return out


def _svm_naive_differences(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float,
                           delta: float, p: int, h: float, K: int) -> torch.Tensor:
    """``(L(W + h e_kj) - L(W - h e_kj)) / 2h`` with each loss summed in full in W's dtype."""
    D, C = W.shape
    N = X.shape[0]
    S = X @ W                                                           # (N, C)
    sq = (W * W).sum()
    grad = torch.empty_like(W)
    for j in range(C):
        for k0 in range(0, D, K):
            rows = slice(k0, k0 + K)
            w = W[rows, j]                                              # (K,)
            losses = []
            for step in (h, -h):
                w_new = w + step                                        # rounded as user code would
                Sp = S.expand(w.shape[0], N, C).clone()                 # (K, N, C)
                Sp[:, :, j] += (w_new - w)[:, None] * X[:, rows].T
                mp = Sp - Sp.gather(2, y.expand(w.shape[0], N)[..., None]) + delta
                mp.scatter_(2, y.expand(w.shape[0], N)[..., None], 0.0)
                data = mp.clamp(min=0).pow(p).sum((1, 2)) / N
                losses.append(data + reg * (sq - w * w + w_new * w_new))
            grad[rows, j] = (losses[0] - losses[1]) / (2 * h)
    return grad


def svm_numeric_grad(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, reg: float = 0.0, *,
                     delta: float = 1.0, p: int = 1, h: float = 1e-5) -> torch.Tensor:
    """The ``(D, C)`` central-difference gradient of the SVM loss; see :func:`svm_finite_differences`."""
    return svm_finite_differences(W, X, y, reg, delta=delta, p=p, h=h).grad


@dataclass
class SvmGradientCheck:
    """Per-coordinate verdict of :func:`classify_svm_gradient`, every field ``(D, C)``."""

    status: torch.Tensor      # (D, C) int8: OK, KINK_EXPLAINED or UNEXPLAINED
    error: torch.Tensor       # (D, C) |analytic - numeric|
    fp_tol: torch.Tensor      # (D, C) the floating-point allowance
    allowed: torch.Tensor     # (D, C) fp_tol + kink_bound where crossings >= 1, else fp_tol

    @property
    def passed(self) -> bool:
        """True when no coordinate is unexplained."""
        return not bool((self.status == UNEXPLAINED).any())

    def counts(self) -> Dict[str, int]:
        """``{"ok": n0, "kink_explained": n1, "unexplained": n2}``."""
        return {name: int((self.status == code).sum()) for code, name in enumerate(STATUS_NAMES)}


def classify_svm_gradient(analytic: torch.Tensor, fd: SvmFiniteDifferences, *,
                          fp_factor: float = 4.0, fp_terms: Optional[int] = None) -> SvmGradientCheck:
    """Label each coordinate of an analytic SVM gradient ``ok``, ``kink_explained`` or ``unexplained``.

    Args:
        analytic: ``(D, C)`` gradient from anywhere (any floating dtype, any kink convention).
        fd: :func:`svm_finite_differences` at the same point.
        fp_factor: safety factor of the rounding allowance (default 4.0):
            ``fp_tol = fp_factor * eps(analytic.dtype) * (1 + sqrt(T) + T / 16) * magnitude
            + side_slack``, the rounding of a sum of ``T`` contributions of that magnitude
            (random walk plus the linear drift of a recursive same-sign sum).
        fp_terms: ``T``, how many roundings of that size add up. Default: per coordinate, the
            number of contributions summed there (``fd.terms``, at least N): a sum accumulated
            in the analytic dtype, as user code does; in a label column that is up to
            ``N_j (C - 1)`` terms, so the allowance grows with C as well as N. Pass 1 for code
            that accumulates in a wider type than it stores, as PyTorch's float16/bfloat16 GEMMs
            do (float32 accumulators).
    """
    if analytic.shape != fd.grad.shape:
        raise ArgumentError(f"analytic must have shape {tuple(fd.grad.shape)}, got {tuple(analytic.shape)}")
    if not analytic.is_floating_point():
        raise ArgumentTypeError(f"analytic must be floating point, got {analytic.dtype}")
    eps = torch.finfo(analytic.dtype).eps + torch.finfo(fd.grad.dtype).eps
    error = (analytic.detach().to(fd.grad) - fd.grad).abs()
    terms = fd.n if fp_terms is None else fp_terms
    if fp_terms is None and fd.terms is not None:
        T = fd.terms.clamp(min=fd.n).to(fd.grad.dtype)                   # (D, C)
        walk = 1 + T.sqrt() + T / 16
    else:
        walk = 1 + math.sqrt(terms) + terms / 16
    fp_tol = fp_factor * eps * walk * fd.magnitude + fd.side_slack
    allowed = torch.where(fd.crossings > 0, fp_tol + fd.kink_bound, fp_tol)
    status = torch.full_like(error, UNEXPLAINED, dtype=torch.int8)
    status[error <= allowed] = KINK_EXPLAINED
    status[error <= fp_tol] = OK
    return SvmGradientCheck(status=status, error=error, fp_tol=fp_tol, allowed=allowed)
