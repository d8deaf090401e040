r"""Independent references for the multiclass SVM loss and its gradient.

.. math::

    L(W) = \frac{1}{N} \sum_i \sum_{j \ne y_i} \max(0,\; S_{ij} - S_{iy_i} + \Delta)^p
           + \lambda \sum W^2, \qquad S = XW

* :func:`svm_loss_naive` -- explicit loops over ``i`` and ``j`` in numpy float64, written for
  obviousness (the CS231n ``svm_loss_naive``, extended to ``p = 2``). No torch.
* :func:`svm_loss_vectorized` -- the same in vectorised numpy float64. No torch.
* :func:`autograd_reference` -- ``torch.autograd`` applied to :func:`torch_svm.svm_loss_autograd`.
* :func:`mml_reference` -- ``C * torch.nn.functional.multi_margin_loss`` on the scores
  (PyTorch's own kernel divides the per-sample sum by C), plus the reg term, differentiated
  by autograd through PyTorch's backward kernel.

All take ``(W, X, y, reg)`` with ``W: (D, C)``, ``X: (N, D)``, ``y: (N,)`` and return
``(loss, dW)``. All take the derivative 0 at an exact kink (``margin > 0``).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["svm_loss_naive", "svm_loss_vectorized", "autograd_reference", "mml_reference"]


def svm_loss_naive(W, X, y, reg: float, *, delta: float = 1.0, p: int = 1) -> Tuple[float, np.ndarray]:
    """Loops over examples ``i`` and classes ``j``; numpy float64; returns ``(loss, dW)``."""
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    num_train, num_classes = X.shape[0], W.shape[1]
    loss = 0.0
    dW = np.zeros_like(W)
    for i in range(num_train):
        scores = X[i].dot(W)
        correct_class_score = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct_class_score + delta
            if margin > 0:
                loss += margin ** p
                slope = 1.0 if p == 1 else 2.0 * margin
                dW[:, j] += slope * X[i]
                dW[:, y[i]] -= slope * X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * np.sum(W * W)
    dW += 2 * reg * W
    return float(loss), dW


def svm_loss_vectorized(W, X, y, reg: float, *, delta: float = 1.0, p: int = 1,
                        dtype=np.float64) -> Tuple[float, np.ndarray]:
    """No loops; numpy, float64 unless ``dtype`` says otherwise (the benchmarks time float32);
    returns ``(loss, dW)``."""
    W = np.asarray(W, dtype=dtype)
    X = np.asarray(X, dtype=dtype)
    y = np.asarray(y)
    n = X.shape[0]
    rows = np.arange(n)
    scores = X @ W                                               # (N, C)
    margins = scores - scores[rows, y][:, None] + delta          # (N, C)
    margins[rows, y] = 0.0
    hinge = np.maximum(0.0, margins)
    loss = np.sum(hinge ** p) / n + reg * np.sum(W * W)
    coef = (margins > 0).astype(W.dtype) if p == 1 else 2.0 * hinge
    coef[rows, y] = -coef.sum(axis=1)
    dW = X.T @ coef / n + 2 * reg * W
    return float(loss), dW


def _differentiate(loss_fn, W, X, y, reg: float, delta: float, p: int):
    """``(loss, dW)`` of ``loss_fn(W, X, y, reg, delta=, p=)`` by ``torch.autograd``."""
    import torch

    W = W.detach().requires_grad_(True)
    loss = loss_fn(W, X, y, reg, delta=delta, p=p)
    (dW,) = torch.autograd.grad(loss, W)
    return loss.detach(), dW


def autograd_reference(W, X, y, reg: float, *, delta: float = 1.0, p: int = 1):
    """``torch.autograd`` gradient of :func:`torch_svm.svm_loss_autograd` (plain torch ops) in
    the inputs' dtype. Returns ``(loss, dW)`` as torch tensors on W's device."""
    from torch_svm import svm_loss_autograd

    return _differentiate(svm_loss_autograd, W, X, y, reg, delta, p)


def mml_reference(W, X, y, reg: float, *, delta: float = 1.0, p: int = 1):
    """:func:`torch_svm.svm_loss_multimargin` (``C * F.multi_margin_loss`` + reg) and its
    gradient from PyTorch's backward kernel. Returns torch tensors.

    PyTorch's CPU kernel has no float16/bfloat16 version: those raise RuntimeError.
    """
    from torch_svm import svm_loss_multimargin

    return _differentiate(svm_loss_multimargin, W, X, y, reg, delta, p)
