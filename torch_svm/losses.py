r"""The multiclass SVM (Weston-Watkins) hinge loss with a hand-written gradient.

CS231n convention, for scores :math:`S = XW`:

.. math::

    L(W) = \frac{1}{N} \sum_{i=1}^{N} \sum_{j \ne y_i}
           \max(0,\; S_{ij} - S_{i y_i} + \Delta)^p \;+\; \lambda \sum_{k,j} W_{kj}^2

with ``W: (D, C)``, ``X: (N, D)``, ``y: (N,)`` integer labels in ``[0, C)``, ``p`` in {1, 2}
(``p = 2`` is the squared hinge), ``delta`` :math:`= \Delta > 0` and ``reg`` :math:`= \lambda \ge 0`.

Gradient. Write :math:`m_{ij} = S_{ij} - S_{iy_i} + \Delta` and let :math:`B` be the (N, C)
coefficient matrix :math:`B_{ij} = \partial L / \partial S_{ij}`:

.. math::

    B_{ij} = \frac{1}{N} g(m_{ij}) \;(j \ne y_i), \qquad
    B_{i y_i} = -\sum_{j \ne y_i} B_{ij}, \qquad
    \nabla_W L = X^\top B + 2 \lambda W, \qquad \nabla_X L = B W^\top,

with :math:`g(m) = 1[m > 0]` for ``p = 1`` and :math:`g(m) = 2\max(0, m)` for ``p = 2``.

The kink. For ``p = 1`` the hinge has no derivative at :math:`m = 0`; any value in [0, 1]
there is a valid subgradient. The hand-written gradient takes ``kink`` (default 0, as the
CS231n naive loop's ``if margin > 0`` and PyTorch's own MultiMarginLoss kernel's ``z > 0`` do).
The squared hinge is differentiable at 0 (its derivative is 0), so ``kink`` has no effect there.

Three ways to get the loss, all on the inputs' device and dtype:

* :func:`svm_loss` -- plain differentiable torch ops; ``torch.autograd`` differentiates it
  (the autograd reference; its ``relu`` takes 0 at the kink).
* :func:`svm_loss_and_grad` -- ``(loss, dW)`` from the hand-written gradient, no graph.
* :func:`svm_loss_fn` / :class:`SVMLossFunction` -- an ``autograd.Function`` whose backward
  is the hand-written gradient, so ``loss.backward()`` and ``torch.optim`` use it.

and :func:`multi_margin_loss` / :class:`MultiMarginLoss`, a drop-in for
``torch.nn.functional.multi_margin_loss`` / ``torch.nn.MultiMarginLoss`` with a hand-written
backward (it also runs in float16 and bfloat16 on the CPU, where PyTorch's kernel does not).

Performance. The forward is one GEMM ``X @ W`` and the backward one GEMM of X with the (N, C)
matrix B. On a CPU (MKL, 2 cores, N=49000, D=3073, C=10, float32; see ``benchmarks/``) the
layout matters: ``X.T @ B`` with a tall X takes 0.71 s, ``(B.T @ X).T`` 0.12 s, so the latter
is used; and ``X @ W`` runs 1.6x faster (0.10 s vs 0.16 s) when W's storage is (C, D), so the
forward multiplies by a (C, D) copy of W (D*C elements, negligible). On CUDA both are moot.
No function here synchronises host and device, except the label range check, which runs
only for CPU tensors (on CUDA an out-of-range label trips ``gather``'s device-side assert).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "svm_loss",
    "svm_loss_and_grad",
    "svm_loss_fn",
    "SVMLossFunction",
    "multi_margin_loss",
    "MultiMarginLoss",
]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# --------------------------------------------------------------------------- validation

def _check_hyper(reg: float, delta: float, p: int, kink: float) -> Tuple[float, float, int, float]:
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    try:
        delta = float(delta)
        reg = float(reg)
        kink = float(kink)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"reg, delta and kink must be real numbers, got reg={reg!r}, "
                        f"delta={delta!r}, kink={kink!r}") from exc
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a finite number > 0, got {delta!r}")
    if not (math.isfinite(reg) and reg >= 0):
        raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
    if not 0.0 <= kink <= 1.0:
        raise ValueError(f"kink (the value taken at a margin of exactly 0) must be in [0, 1], got {kink!r}")
    return reg, delta, p, kink


def _check_labels(y: Tensor, n: int, num_classes: int, name: str = "y") -> Tensor:
    """Integer labels of shape (n,) in [0, num_classes); returned as int64.

    The range check reads the labels on the host, so it runs only for CPU tensors.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer labels, got {type(y).__name__}")
    if y.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the {n} examples, got {tuple(y.shape)}")
    if y.device.type == "cpu" and n > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must hold labels in [0, {num_classes}), got {bad}")
    return y.long()


def _check_svm_inputs(W: Tensor, X: Tensor, y: Tensor) -> Tensor:
    for name, t in (("W", W), ("X", X)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if W.dtype != X.dtype:
        raise TypeError(f"W and X must have the same dtype, got W {W.dtype} and X {X.dtype}")
    if W.device != X.device:
        raise ValueError(f"W and X must be on the same device, got W on {W.device} and X on {X.device}")
    n, d = X.shape
    if W.shape[0] != d:
        raise ValueError(f"W must have shape (D, C) with D = X.shape[1] = {d}, got W {tuple(W.shape)}")
    if n == 0:
        raise ValueError("X must hold at least one example, got shape " f"{tuple(X.shape)}")
    if W.shape[1] < 2:
        raise ValueError(f"W must have at least 2 classes (columns), got shape {tuple(W.shape)}")
    y = _check_labels(y, n, W.shape[1])
    if y.device != X.device:
        raise ValueError(f"y and X must be on the same device, got y on {y.device} and X on {X.device}")
    return y


# --------------------------------------------------------------------------- the SVM loss

def svm_loss(W: Tensor, X: Tensor, y: Tensor, reg: float = 0.0, *,
             delta: float = 1.0, p: int = 1) -> Tensor:
    """The loss from plain differentiable torch ops: the autograd reference.

    Args:
        W: (D, C) weights.  X: (N, D) examples.  y: (N,) integer labels in [0, C).
        reg: L2 strength lambda >= 0 (the term is ``reg * sum(W * W)``).
        delta: the margin, > 0.  p: 1 (hinge) or 2 (squared hinge).

    Returns:
        A 0-d tensor on W's device and dtype. ``torch.autograd`` takes 0 at a kink (``relu``).
    """
    reg, delta, p, _ = _check_hyper(reg, delta, p, 0.0)
    y = _check_svm_inputs(W, X, y)
    idx = y.unsqueeze(1)                                        # (N, 1)
    scores = X @ W                                              # (N, C)
    hinge = torch.relu(scores - scores.gather(1, idx) + delta)  # (N, C)
    hinge = hinge.scatter(1, idx, 0.0)                          # j = y_i is not a term
    if p == 2:
        hinge = hinge * hinge
    return hinge.sum() / X.shape[0] + reg * (W * W).sum()


def _svm_forward(W: Tensor, X: Tensor, y: Tensor, reg: float, delta: float, p: int,
                 kink: float) -> Tuple[Tensor, Tensor]:
    """Loss and the coefficient matrix B = dL/dS (N, C), from one pass over the margins."""
    n = X.shape[0]
    idx = y.unsqueeze(1)                                        # (N, 1)
    scores = X @ W.T.contiguous().T                             # (N, C); W laid out as (C, D)
    margins = scores - scores.gather(1, idx) + delta            # (N, C); = delta > 0 at j = y_i
    if p == 1:
        coef = (margins > 0).to(margins.dtype)                  # g(m) = 1[m > 0]
        if kink:
            coef += kink * (margins == 0)                       # value taken at the kink
        hinge = margins.clamp_min_(0)
    else:
        hinge = margins.clamp_min_(0)
        coef = 2 * hinge                                        # g(m) = 2 max(0, m)
        hinge = hinge * hinge
    hinge.scatter_(1, idx, 0.0)                                 # drop the j = y_i "term"
    coef.scatter_(1, idx, 0.0)
    coef.scatter_(1, idx, -coef.sum(dim=1, keepdim=True))       # B_{i,y_i} = -sum_j B_ij
    coef /= n
    loss = hinge.sum() / n + reg * (W * W).sum()
    return loss, coef


def _svm_grad_W(W: Tensor, X: Tensor, coef: Tensor, reg: float) -> Tensor:
    """X^T B + 2 reg W, as (B^T X)^T: one GEMM in the layout fast for a tall X."""
    dW = (coef.T @ X).T                                         # (D, C)
    if reg:
        dW = dW + (2 * reg) * W
    return dW


def svm_loss_and_grad(W: Tensor, X: Tensor, y: Tensor, reg: float = 0.0, *,
                      delta: float = 1.0, p: int = 1, kink: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Loss and the hand-written vectorised gradient dL/dW; builds no autograd graph.

    Args: as :func:`svm_loss`, plus ``kink`` in [0, 1], the derivative taken for a hinge
    term whose margin is exactly 0 (``p = 1`` only; default 0).

    Returns:
        ``(loss, dW)``: a 0-d tensor and a (D, C) tensor on W's device and dtype.
    """
    reg, delta, p, kink = _check_hyper(reg, delta, p, kink)
    y = _check_svm_inputs(W, X, y)
    with torch.no_grad():
        loss, coef = _svm_forward(W, X, y, reg, delta, p, kink)
        return loss, _svm_grad_W(W, X, coef, reg)


class SVMLossFunction(torch.autograd.Function):
    """``autograd.Function`` for the SVM loss whose backward is the hand-written gradient.

    ``SVMLossFunction.apply(W, X, y, reg, delta, p, kink)``; inputs are not validated here,
    use :func:`svm_loss_fn`. Gradients flow to W (``X^T B + 2 reg W``) and to X (``B W^T``);
    first order only (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, W: Tensor, X: Tensor, y: Tensor, reg: float, delta: float, p: int,
                kink: float) -> Tensor:
        loss, coef = _svm_forward(W, X, y, reg, delta, p, kink)
        ctx.save_for_backward(W, X, coef)
        ctx.reg = reg
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):
        W, X, coef = ctx.saved_tensors
        dW = dX = None
        if ctx.needs_input_grad[0]:
            dW = grad_loss * _svm_grad_W(W, X, coef, ctx.reg)
        if ctx.needs_input_grad[1]:
            dX = grad_loss * (coef @ W.T)                       # (N, D)
        return dW, dX, None, None, None, None, None


def svm_loss_fn(W: Tensor, X: Tensor, y: Tensor, reg: float = 0.0, *,
                delta: float = 1.0, p: int = 1, kink: float = 0.0) -> Tensor:
    """The SVM loss as a 0-d tensor whose ``backward()`` runs the hand-written gradient.

    Same value as :func:`svm_loss`; arguments as :func:`svm_loss_and_grad`. This is what the
    trainer uses with ``torch.optim.SGD``.
    """
    reg, delta, p, kink = _check_hyper(reg, delta, p, kink)
    y = _check_svm_inputs(W, X, y)
    return SVMLossFunction.apply(W, X, y, reg, delta, p, kink)


# --------------------------------------------------------------------------- MultiMarginLoss

_REDUCTIONS = ("none", "mean", "sum")


def _mml_terms(x: Tensor, target: Tensor, p: int, margin: float,
               weight: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Per-sample losses (N,) and dloss_i/dx_i (N, C) for a 2-D input."""
    c = x.shape[1]
    idx = target.unsqueeze(1)                                   # (N, 1)
    z = x - x.gather(1, idx) + margin                           # (N, C)
    pos = z > 0                                                 # PyTorch's kernel: z > 0
    hinge = z.clamp_min(0)
    if p == 1:
        terms, coef = hinge, pos.to(x.dtype)
    else:
        terms, coef = hinge * hinge, 2 * hinge
    if weight is not None:
        w = weight[target].unsqueeze(1)                         # (N, 1): weight[y_i]
        terms, coef = terms * w, coef * w
    terms = terms.scatter(1, idx, 0.0)
    coef = coef.scatter(1, idx, 0.0)
    coef = coef.scatter(1, idx, -coef.sum(dim=1, keepdim=True))
    return terms.sum(dim=1) / c, coef / c


class _MultiMarginLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, target: Tensor, p: int, margin: float,
                weight: Optional[Tensor], reduction: str) -> Tensor:
        losses, coef = _mml_terms(x, target, p, margin, weight)
        ctx.save_for_backward(coef)
        ctx.reduction = reduction
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        return losses.mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (coef,) = ctx.saved_tensors                             # (N, C)
        if ctx.reduction == "none":
            grad = coef * grad_out.unsqueeze(1)
        elif ctx.reduction == "sum":
            grad = coef * grad_out
        else:
            grad = coef * (grad_out / coef.shape[0])
        return grad, None, None, None, None, None


def multi_margin_loss(input: Tensor, target: Tensor, p: int = 1, margin: float = 1.0,
                      weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Drop-in for :func:`torch.nn.functional.multi_margin_loss` with a hand-written backward.

    .. math::

        \ell(x, y) = \frac{1}{C} \sum_{j \ne y} w_y \max(0,\; \text{margin} - x_y + x_j)^p

    Args:
        input: (N, C) scores, or (C,) / () for one sample.
        target: (N,) integer labels in [0, C), or 0-d for a 1-d/0-d input.
        p: 1 or 2.  margin: any real (0 and negative allowed, as in PyTorch).
        weight: optional (C,) class weights; ``weight[target]`` multiplies each term after
            the power. No gradient flows to it (as in PyTorch).
        reduction: ``"none"`` ((N,) or () for one sample), ``"mean"`` or ``"sum"``.

    The derivative at a kink (z = 0) is 0, PyTorch's convention. The sum over ``j != y``
    uses C = ``input.shape[-1]`` as the divisor, as PyTorch does. Target range is checked
    for CPU tensors only (a device sync otherwise).
    """
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(input, Tensor) or not input.is_floating_point():
        raise TypeError(f"input must be a floating-point torch.Tensor, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise TypeError(f"margin must be a real number, got {margin!r}") from None
    if not math.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin!r}")
    if input.dim() > 2:
        raise ValueError(f"input must be 0-d, 1-d (C,) or 2-d (N, C), got shape {tuple(input.shape)}")
    single = input.dim() < 2
    x = input.reshape(1, -1) if single else input               # (N, C)
    if x.shape[1] == 0:
        raise ValueError(f"input must have at least one class, got shape {tuple(input.shape)}")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of integer labels, got {type(target).__name__}")
    if single:
        if target.dim() > 1 or target.numel() != 1:
            raise ValueError(f"target must be 0-d (or shape (1,)) for an input of shape "
                             f"{tuple(input.shape)}, got shape {tuple(target.shape)}")
        target = target.reshape(1)
    target = _check_labels(target, x.shape[0], x.shape[1], name="target")
    if target.device != x.device:
        raise ValueError(f"target and input must be on the same device, got {target.device} and {x.device}")
    if weight is not None:
        if not isinstance(weight, Tensor) or weight.shape != (x.shape[1],):
            raise ValueError(f"weight must be a tensor of shape ({x.shape[1]},), got "
                             f"{tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__}")
        weight = weight.to(device=x.device, dtype=x.dtype)
    out = _MultiMarginLossFunction.apply(x, target, p, margin, weight, reduction)
    return out.reshape(()) if single and reduction == "none" else out


class MultiMarginLoss(nn.Module):
    """Drop-in for :class:`torch.nn.MultiMarginLoss` (see :func:`multi_margin_loss`).

    Args: ``p=1``, ``margin=1.0``, ``weight=None`` (a (C,) tensor, kept as a buffer),
    ``reduction="mean"``. Call as ``loss(input, target)``.
    """

    def __init__(self, p: int = 1, margin: float = 1.0, weight: Optional[Tensor] = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(p, bool) or p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.p = p
        self.margin = float(margin)
        self.reduction = reduction
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multi_margin_loss(input, target, p=self.p, margin=self.margin,
                                 weight=self.weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}, reduction={self.reduction!r}"
