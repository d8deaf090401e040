r"""Kinks of the SVM hinge: which finite-difference steps cross them, how many, the mismatch
rate that predicts, and exact ties.

The hinge term of example ``i`` and class ``j != y_i`` is :math:`\max(0, m_{ij})` with the margin
:math:`m_{ij} = S_{ij} - S_{iy_i} + \Delta`, :math:`S = XW`, ``W: (D, C)``, ``X: (N, D)``,
``y: (N,) int64``. The words below mean one thing each, here, in :mod:`verification.study.run` and
in its report:

* **kink**: the point :math:`m = 0` of a hinge term.
* **crossing**: moving ``W[k, j]`` by ``±h`` moves the margin of term ``(i, j)`` by ``±h X_ik``
  (and, in a row with ``y_i == j``, every term ``(i, c)`` by ``∓h X_ik``); the step *crosses*
  the term's kink when :math:`|m| < h |X_{ik}|`. The central difference then lies between the
  two one-sided slopes instead of on either.
  :attr:`verification.checks.numeric.SvmFiniteDifferences.crossings` counts crossings per coordinate.
* **crossed coordinate**: a coordinate of ``W`` with at least one crossing.
* **crossing term**: a term that some coordinate's step crosses, :math:`|m| < h \max_k |X_{ik}|`
  (:func:`crossing_terms`). It crosses in every coordinate ``(k, j)`` and ``(k, y_i)`` with
  :math:`h |X_{ik}| > |m|`: up to ``2 D`` crossed coordinates per crossing term.
* **tie**: a margin that is exactly 0 in floating point, where the loss takes its *kink value*
  (``kink`` of :func:`torch_svm.losses.svm_loss`) (:func:`count_ties`).

Prediction. Write the *scaled margin* :math:`u = m / \max_k |X_{ik}|` (:func:`scaled_margins`):
a term is crossing exactly when :math:`|u| < h`. If the scaled margins have density :math:`g`
near 0 (:func:`margin_density_at_zero`) and do not depend on which term they belong to, each of
the :math:`T = N (C - 1)` terms is crossing with probability :math:`p = \min(1, 2 h g(0))`, so
the number of crossing terms is binomial, close to Poisson with mean

.. math::

    \lambda = T \min(1,\; 2 h\, g(0))

(:func:`expected_crossing_terms`), and given that a term is crossing, :math:`|u| / h` is uniform
on :math:`[0, 1]` (the density is flat near 0), so it crosses in the rows ``k`` with
:math:`|X_{ik}| > V \max_k |X_{ik}|`, :math:`V \sim U(0, 1)`. The share of crossed coordinates
is the union of those rows over the columns ``j`` and ``y_i`` of every crossing term, divided
by ``D C``; :func:`simulate_crossed_rates` draws it. A handful of crossing terms, each spoiling
up to two columns, is why the rate is so variable from draw to draw.

The one-dimensional example. :func:`one_dimensional_example` evaluates
:math:`f(w) = \max(0, wx + b)` at the kink, where the central difference is exactly 1/2, the
forward difference exactly 1 and the subgradient the code takes 0 (or ``kink``).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor

from torch_svm.losses import svm_loss_and_grad, svm_margins
from torch_svm.errors import ArgumentError

__all__: list = []      # internal: import names from here explicitly

_CHUNK_ELEMENTS = 2**23  # entries of one (terms, D) temporary in simulate_crossed_rates


def _term_mask(y: Tensor, num_classes: int) -> Tensor:
    """(N, C) bool: True at the hinge terms ``j != y_i``."""
    mask = torch.ones(y.shape[0], num_classes, dtype=torch.bool, device=y.device)
    return mask.scatter_(1, y.long()[:, None], False)


def term_margins(W: Tensor, X: Tensor, y: Tensor, delta: float) -> Tensor:
    """The margins ``m_ij`` of the ``N (C - 1)`` hinge terms (``j != y_i``), row-major, flattened.

    :func:`torch_svm.losses.svm_margins`, the very margins the hand-written gradient masks,
    so a margin that is 0 here is at the kink in :func:`torch_svm.losses.svm_loss`.
    """
    m = svm_margins(W, X, y, delta=delta)                               # (N, C), -inf at y_i
    return m[_term_mask(y, W.shape[1])]                                 # (N (C - 1),)


def scaled_margins(W: Tensor, X: Tensor, y: Tensor, delta: float) -> Tensor:
    """``u_ij = m_ij / max_k |X_ik|`` for the terms of :func:`term_margins`, same order, float64.

    ``|u|`` is the smallest step ``h`` at which some coordinate's step crosses the term.
    """
    reach = X.detach().double().abs().amax(1, keepdim=True)             # (N, 1)
    reach = reach.expand(-1, W.shape[1] - 1).flatten()                  # per term, row-major
    return term_margins(W, X, y, delta).double() / reach


def margin_density_at_zero(margins: Tensor, bandwidth: Optional[float] = None) -> float:
    r"""Gaussian kernel density estimate of ``margins`` at 0.

    :math:`\hat f(0) = \frac{1}{n b} \sum_t \varphi(m_t / b)` with bandwidth ``b`` given, or by
    Silverman's rule :math:`b = 0.9 \min(\sigma, \mathrm{IQR} / 1.34)\, n^{-1/5}` (default).
    When every margin is equal (``b = 0``) the estimate is ``inf`` if they are 0 and 0 otherwise.
    Raises ValueError for an empty ``margins`` or a bandwidth <= 0.
    """
    m = margins.detach().double().flatten()
    n = m.numel()
    if n == 0:
        raise ArgumentError("margins must not be empty")
    if bandwidth is None:
        q75, q25 = torch.quantile(m, torch.tensor([0.75, 0.25], dtype=m.dtype, device=m.device)).tolist()
        spread = [v for v in (float(m.std()) if n > 1 else 0.0, (q75 - q25) / 1.34) if v > 0]
        bandwidth = 0.9 * min(spread) * n ** -0.2 if spread else 0.0
        if bandwidth == 0.0:
            return float("inf") if bool((m == 0).any()) else 0.0
    elif not bandwidth > 0:
        raise ArgumentError(f"bandwidth must be > 0, got {bandwidth}")
    return float(torch.exp(-0.5 * (m / bandwidth) ** 2).mean()) / (bandwidth * math.sqrt(2 * math.pi))


def crossing_terms(W: Tensor, X: Tensor, y: Tensor, delta: float, h: float) -> int:
    """How many hinge terms some coordinate's step ``h`` crosses: ``|m_ij| < h max_k |X_ik|``."""
    with torch.no_grad():
        reach = h * X.abs().amax(1, keepdim=True)                       # (N, 1)
        reach = reach.expand(-1, W.shape[1] - 1).flatten()              # per term, row-major
        return int((term_margins(W, X, y, delta).abs() < reach).sum())


def expected_crossing_terms(num_terms: int, h: float, density: float) -> float:
    """:math:`\\lambda = T \\min(1, 2 h g(0))`: the expected :func:`crossing_terms` of ``num_terms``
    terms whose scaled margins have density ``density`` at 0."""
    if not h > 0:
        raise ArgumentError(f"h must be > 0, got {h}")
    return num_terms * min(1.0, 2 * h * density)


def simulate_crossed_rates(X: Tensor, y: Tensor, num_classes: int, h: float, density: float, *,
                           samples: int, generator: torch.Generator) -> Tensor:
    """Draw the predicted share of crossed coordinates ``samples`` times (module docstring).

    Args:
        X: (N, D) examples.  y: (N,) int64 labels.  num_classes: C.
        h: the finite-difference step (> 0).
        density: :math:`g(0)`, the density of the scaled margins at 0 (>= 0, may be inf).
        samples: how many rates to draw.  generator: a CPU ``torch.Generator``.

    Each draw: every term ``(i, j)`` is crossing with probability ``p = min(1, 2 h g(0))``; a
    crossing term gets ``V ~ U(0, min(1, 1 / (2 h g(0))))`` and crosses the rows
    ``k`` with ``|X_ik| > V max_k |X_ik|`` of columns ``j`` and ``y_i``.

    Returns:
        (samples,) float64 shares of the ``D C`` coordinates, on the CPU.
    """
    if not h > 0:
        raise ArgumentError(f"h must be > 0, got {h}")
    if not density >= 0:
        raise ArgumentError(f"density must be >= 0, got {density}")
    absx = X.detach().to("cpu", torch.float64).abs()                    # (N, D)
    y = y.detach().cpu().long()
    (N, D), C = absx.shape, num_classes
    top = absx.amax(1)                                                  # (N,)
    p = min(1.0, 2 * h * density)
    vmax = 1.0 if p < 1 else 1.0 / (2 * h * density)
    crossing = torch.rand(samples, N, C - 1, generator=generator, dtype=torch.float64) < p
    s, i, r = crossing.nonzero(as_tuple=True)                           # (T,) crossing terms
    j = r + (r >= y[i]).long()                                          # its class, skipping y_i
    v = torch.rand(len(i), generator=generator, dtype=torch.float64) * vmax
    if len(i) == 0:
        return torch.zeros(samples, dtype=torch.float64)
    hits = torch.zeros(samples * C, D, dtype=torch.float32)             # crossings per coordinate
    step = max(1, _CHUNK_ELEMENTS // D)
    for t0 in range(0, len(i), step):
        t = slice(t0, t0 + step)
        rows = (absx[i[t]] > (v[t] * top[i[t]])[:, None]).float()       # (chunk, D)
        hits.index_add_(0, s[t] * C + j[t], rows).index_add_(0, s[t] * C + y[i[t]], rows)
    return (hits.view(samples, C * D) > 0).sum(1).double() / (C * D)


def count_ties(W: Tensor, X: Tensor, y: Tensor, delta: float) -> int:
    """How many hinge terms (``j != y_i``) have a margin of exactly 0, in the loss's arithmetic
    (:func:`torch_svm.losses.svm_margins`, W's dtype and device)."""
    return int((svm_margins(W, X, y, delta=delta) == 0).sum())          # -inf at j = y_i


def one_dimensional_example(h: float = 2.0 ** -16) -> Dict[str, object]:
    r"""The gradient check failing at a kink, in one dimension, computed.

    Two forms of the same thing:

    * ``scalar``: :math:`f(w) = \max(0, wx + b)` with ``x = 1, b = 0`` at ``w = 0`` (the kink):
      central ``(f(h) - f(-h)) / 2h``, forward ``(f(h) - f(0)) / h``, backward ``(f(0) - f(-h)) / h``.
    * ``svm``: the SVM loss with one example ``x = [1]``, two classes, ``y = 0``, ``delta = 1``
      and ``W = [[1, 0]]``, whose only margin ``W_01 - W_00 + 1`` is exactly 0; the hand-written
      gradient :func:`svm_loss_and_grad` at ``W_01`` with ``kink`` 0, 1/2 and 1, against the same
      three differences of the loss.

    ``h`` defaults to a power of two (``2**-16``, about 1.5e-5) so that every step and margin is
    exact in float64 and the differences come out as exactly 0, 1/2 and 1.

    Also ``near``: the central difference and the (kink = 0) gradient of the scalar ``f`` at
    margins ``-h, -h/2, 0, h/2, h`` from the kink: inside the step the difference is
    ``(m + h) / 2h``, the gradient 0 or 1.
    """
    def f(w: float, x: float = 1.0, b: float = 0.0) -> float:
        return max(0.0, w * x + b)

    scalar = {"w": 0.0, "x": 1.0, "b": 0.0, "h": h,
              "central": (f(h) - f(-h)) / (2 * h),
              "forward": (f(h) - f(0.0)) / h,
              "backward": (f(0.0) - f(-h)) / h,
              "subgradient": 0.0}                                       # 1[wx + b > 0]
    W = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    X = torch.tensor([[1.0]], dtype=torch.float64)
    y = torch.tensor([0])

    def loss(w01: float) -> float:
        Wp = W.clone()
        Wp[0, 1] = w01
        return float(svm_loss_and_grad(Wp, X, y, 0.0, delta=1.0)[0])

    svm = {"W": W.tolist(), "X": X.tolist(), "y": y.tolist(), "delta": 1.0, "h": h,
           "margin": float(term_margins(W, X, y, 1.0)[0]),
           "central": (loss(h) - loss(-h)) / (2 * h),
           "forward": (loss(h) - loss(0.0)) / h,
           "backward": (loss(0.0) - loss(-h)) / h,
           "analytic": {str(k): float(svm_loss_and_grad(W, X, y, 0.0, delta=1.0, kink=k)[1][0, 1])
                        for k in (0.0, 0.5, 1.0)}}
    near: List[Dict[str, float]] = []
    for frac in (-1.0, -0.5, 0.0, 0.5, 1.0):
        b = frac * h                                                    # margin at w = 0
        near.append({"margin": b, "central": (f(h, b=b) - f(-h, b=b)) / (2 * h),
                     "subgradient": float(b > 0)})
    return {"scalar": scalar, "svm": svm, "near": near}
