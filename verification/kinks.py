r"""Kinks of the SVM hinge: where finite differences cross them, how many, and exact ties.

The hinge term of example ``i`` and class ``j != y_i`` is :math:`\max(0, m_{ij})` with the margin
:math:`m_{ij} = S_{ij} - S_{iy_i} + \Delta`, :math:`S = XW`, ``W: (D, C)``, ``X: (N, D)``. Moving
``W[k, j]`` by ``t`` moves the margins of the terms it touches by ``t X_ik`` (term ``(i, j)`` with
``y_i != j``, and every term ``(i, c)`` of a row with ``y_i == j``, by ``-t X_ik``). A central
difference with step ``h`` therefore *crosses* the kink of a term when

.. math::

    |m| < h\,|X_{ik}|,

and it then returns a value between the two one-sided slopes instead of either (see
:mod:`verification.numeric`, which counts the crossings exactly).

Prediction. If the margins of the touched terms have density :math:`f` near 0 and do not
depend on :math:`|X_{ik}|`, a term crosses with probability
:math:`P(|m| < h|x|) \approx \min(1, 2 h |x| f(0))`, so the expected number of crossings of
coordinate ``(k, j)`` is

.. math::

    E[\text{crossings}_{kj}] = \sum_{i:\,y_i \ne j} \min(1, 2h f(0) |X_{ik}|)
        + (C - 1) \sum_{i:\,y_i = j} \min(1, 2h f(0) |X_{ik}|)

(:func:`predict_crossings`), with :math:`f(0)` a Gaussian kernel density estimate from the term
margins (:func:`margin_density_at_zero`).

Exact ties. A margin that is exactly 0 in floating point makes the loss take its kink value
(``kink`` of :func:`torch_svm.losses.svm_loss`); :func:`count_ties` counts them, computed
exactly as the loss computes them (same ops, same dtype).

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

__all__ = ["term_margins", "margin_density_at_zero", "predict_crossings", "predict_terms_near_kink",
           "terms_near_kink", "count_ties",
           "one_dimensional_example"]


def term_margins(W: Tensor, X: Tensor, y: Tensor, delta: float) -> Tensor:
    """The margins ``m_ij`` of the ``N (C - 1)`` hinge terms (``j != y_i``), flattened.

    :func:`torch_svm.losses.svm_margins`, the very margins the hand-written gradient masks,
    so a margin that is 0 here is at the kink in :func:`torch_svm.losses.svm_loss`.
    """
    m = svm_margins(W, X, y, delta=delta)                               # (N, C), -inf at y_i
    term = torch.ones_like(m, dtype=torch.bool).scatter_(1, y.long()[:, None], False)
    return m[term]                                                      # (N (C - 1),)


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
        raise ValueError("margins must not be empty")
    if bandwidth is None:
        q75, q25 = torch.quantile(m, torch.tensor([0.75, 0.25], dtype=m.dtype, device=m.device)).tolist()
        spread = [v for v in (float(m.std()) if n > 1 else 0.0, (q75 - q25) / 1.34) if v > 0]
        bandwidth = 0.9 * min(spread) * n ** -0.2 if spread else 0.0
        if bandwidth == 0.0:
            return float("inf") if bool((m == 0).any()) else 0.0
    elif not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    return float(torch.exp(-0.5 * (m / bandwidth) ** 2).mean()) / (bandwidth * math.sqrt(2 * math.pi))


def predict_crossings(X: Tensor, y: Tensor, num_classes: int, h: float, density: float) -> Tensor:
    """Expected kink crossings of every coordinate of ``W: (D, C)`` for step ``h``.

    Args:
        X: (N, D) examples.  y: (N,) int64 labels.  num_classes: C.
        h: the finite-difference step (> 0).  density: :math:`f(0)`, the margins' density at 0.

    Returns:
        (D, C) float64 tensor (see the module docstring for the formula).
    """
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    with torch.no_grad():
        P = (2 * h * density * X.double().abs()).clamp_(max=1.0)       # (N, D) P(term crosses)
        Y = torch.nn.functional.one_hot(y, num_classes).double()       # (N, C)
        return P.T @ (1 - Y) + (num_classes - 1) * (P.T @ Y)           # (D, C)


def predict_terms_near_kink(X: Tensor, num_classes: int, h: float, density: float) -> float:
    """Expected :func:`terms_near_kink`: ``(C - 1) sum_i min(1, 2 h f(0) max_k |X_ik|)``."""
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    with torch.no_grad():
        reach = X.double().abs().amax(1)                                # (N,)
        return float((num_classes - 1) * (2 * h * density * reach).clamp_(max=1.0).sum())


def terms_near_kink(W: Tensor, X: Tensor, y: Tensor, delta: float, h: float) -> int:
    """How many hinge terms a step ``h`` on some coordinate crosses: ``|m_ij| < h max_k |X_ik|``.

    One such term crosses in every coordinate ``(k, j)`` (and ``(k, y_i)``) with
    ``h |X_ik| > |m_ij|``, so crossings come in clusters of up to ``2 D`` per term.
    """
    with torch.no_grad():
        reach = h * X.abs().amax(1, keepdim=True)                       # (N, 1)
        reach = reach.expand(-1, W.shape[1] - 1).flatten()              # per term, row-major
        return int((term_margins(W, X, y, delta).abs() < reach).sum())


def count_ties(W: Tensor, X: Tensor, y: Tensor, delta: float) -> int:
    """How many hinge terms (``j != y_i``) have a margin of exactly 0 in W's dtype."""
    return int((term_margins(W, X, y, delta) == 0).sum())


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
