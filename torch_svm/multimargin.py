r"""A drop-in for :func:`torch.nn.functional.multi_margin_loss` and :class:`torch.nn.MultiMarginLoss`
with a hand-written backward, built from the same hinge pieces as :mod:`torch_svm.losses`.

.. math::

    \ell(x, y) = \frac{1}{C} \sum_{j \ne y} w_y \max(0,\; \text{margin} - x_y + x_j)^p

It matches PyTorch on PyTorch's own test inputs, also runs in float16 and bfloat16 on the CPU
(where PyTorch's kernel does not), gives a gradient for ``weight``, works under ``torch.func``,
``torch.compile(fullgraph=True)`` and ``torch.export``, and its backward is differentiable. A NaN
score propagates (PyTorch's kernel drops the term). See the README's "Differences from PyTorch".
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from torch_svm.errors import ArgumentError, ArgumentTypeError
from torch_svm.losses import (_building_graph, _check_labels, _check_p, _finite, _hinge, _real,
                              svm_coefficients)

__all__: list = []    # its names are re-exported by the package

_REDUCTIONS = ("none", "mean", "sum")


def _mml_terms(x: Tensor, target: Tensor, p: int, margin: float) -> Tuple[Tensor, Tensor]:
    """Unweighted per-sample losses ``t_i = (1/C) sum_{j != y_i} max(0, z_ij)^p`` (N,) and
    their slopes ``dt_i/dx_i`` (N, C) for a 2-D input, ``z_ij = margin - x_{i y_i} + x_ij``."""
    c = x.shape[1]
    idx = target.unsqueeze(1)                                   # (N, 1)
    z = (x - x.gather(1, idx) + margin).scatter_(1, idx, float("-inf"))  # (N, C); not a term at y
    terms, slopes = _hinge(z, p)                                # PyTorch's kernel: z > 0
    return terms.sum(dim=1) / c, svm_coefficients(slopes, target) / c


class _MultiMarginLossFunction(torch.autograd.Function):
    """``multi_margin_loss`` on a 2-D input (validated by :func:`multi_margin_loss`).

    ``loss_i = w_{y_i} t_i`` (``w = 1`` without a weight), reduced. The backward is
    ``dL/dx_i = g_i w_{y_i} dt_i/dx_i`` and ``dL/dw_c = sum_{i: y_i = c} g_i t_i`` with
    ``g_i = dL/dloss_i`` (1/N for the mean). ``forward`` returns ``(out, dt/dx, t)`` (``t``
    only with a weight), the last two saved and non-differentiable. As in :class:`_SVMLoss`,
    under ``create_graph=True`` the backward rebuilds them from x with grad enabled when
    they depend on it: ``dt/dx`` for ``p = 2``, ``t`` when the weight gradient is built.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, target: Tensor, p: int, margin: float, weight: Optional[Tensor],
                reduction: str) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        unweighted, coef = _mml_terms(x, target, p, margin)     # (N,), (N, C)
        losses = unweighted
        if weight is not None:
            losses = unweighted * weight[target]                # (N,): w_{y_i} t_i
        else:
            unweighted = None                                   # no weight gradient to build
        if reduction == "sum":
            losses = losses.sum()
        elif reduction == "mean":
            losses = losses.mean()
        return losses, coef, unweighted

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, target, ctx.p, ctx.margin, weight, ctx.reduction = inputs
        _, coef, unweighted = output
        ctx.mark_non_differentiable(*(t for t in (coef, unweighted) if t is not None))
        ctx.set_materialize_grads(False)                        # no zeros for their grads
        ctx.save_for_backward(x, target, weight, coef, unweighted)

    @staticmethod
    def backward(ctx, grad_out: Optional[Tensor], _grad_coef, _grad_unweighted):
        if grad_out is None:                                    # grads not materialised
            return None, None, None, None, None, None
        x, target, weight, coef, unweighted = ctx.saved_tensors
        if (ctx.p == 2 or ctx.needs_input_grad[4]) and _building_graph(x):  # create_graph
            unweighted, coef = _mml_terms(x, target, ctx.p, ctx.margin)
        g = grad_out / x.shape[0] if ctx.reduction == "mean" else grad_out  # dL/dloss_i: (N,) or 0-d
        dx = dw = None
        if ctx.needs_input_grad[0]:
            if weight is not None:
                g_w = g * weight[target]                        # (N,): g_i w_{y_i}
                dx = coef * g_w.unsqueeze(1)                    # (N, C)
            else:
                dx = coef * (g.unsqueeze(1) if g.dim() else g)  # a 0-d g: one fast scalar multiply
        if ctx.needs_input_grad[4]:
            g_n = g.expand(x.shape[0])                          # (N,)
            dw = torch.zeros_like(weight).index_add(0, target, unweighted * g_n)  # (C,)
        return dx, None, None, None, dw, None


def _check_reduction(reduction: object) -> str:
    if reduction not in _REDUCTIONS:
        raise ArgumentError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r:.200}")
    return reduction


def _check_margin(margin: object) -> float:
    margin = _real("margin", margin)
    if not _finite(margin):
        raise ArgumentError(f"margin must be finite, got {margin!r}")
    return margin


def _check_weight(weight: object) -> Optional[Tensor]:
    """None or a one-dimensional tensor of class weights (its length is checked against C later)."""
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise ArgumentTypeError(f"weight must be None or a 1-D torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 1:
        raise ArgumentError(f"weight must be one-dimensional, (C,), got shape {tuple(weight.shape)}")
    return weight


def multi_margin_loss(input: Tensor, target: Tensor, p: int = 1, margin: float = 1.0,
                      weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    r"""Drop-in for :func:`torch.nn.functional.multi_margin_loss` with a hand-written backward.

    .. math::

        \ell(x, y) = \frac{1}{C} \sum_{j \ne y} w_y \max(0,\; \text{margin} - x_y + x_j)^p

    Args:
        input: (N, C) scores, or (C,) / () for one sample.
        target: (N,) integer labels in [0, C); for a (C,) / () input, 0-d or shape (1,).
        p: 1 or 2.  margin: any finite real (0 and negative allowed, as in PyTorch).
        weight: optional (C,) class weights; ``weight[target]`` multiplies each term after
            the power. Gradients flow to it too (PyTorch raises): ``dL/dw_c`` sums the
            unweighted losses of the samples of class c, reduced like the loss.
        reduction: ``"none"`` ((N,); for one sample the target's shape), ``"mean"`` or ``"sum"``.

    Returns:
        The loss on the input's device and dtype, float16 and bfloat16 included (on the CPU
        too, where PyTorch's kernel has none). Gradients flow to ``input`` and ``weight``, to
        any order; ``torch.func`` (grad, vmap, jacrev), ``torch.compile(fullgraph=True)`` and
        ``torch.export`` work on it.

    Differences from PyTorch, on purpose: a NaN score gives a NaN loss (PyTorch's kernel
    tests ``z > 0``, false for NaN, and drops the term: a finite, even zero, loss that hides
    the NaN); bad arguments raise ValueError / TypeError naming the argument (PyTorch:
    RuntimeError from the kernel).
    The derivative at a kink (z = 0) is 0 and the sum over ``j != y`` divides by
    C = ``input.shape[-1]``, as in PyTorch. The target range is checked on the host for eager
    CPU tensors only; elsewhere ``gather``'s index check catches an out-of-range label.

    Example::

        >>> x, y = torch.randn(4, 3, requires_grad=True), torch.tensor([0, 2, 1, 2])
        >>> multi_margin_loss(x, y, p=2).backward()  # x.grad from the hand-written backward
    """
    p = _check_p(p)
    _check_reduction(reduction)
    if not isinstance(input, Tensor) or not input.is_floating_point():
        raise ArgumentTypeError(f"input must be a floating-point torch.Tensor, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")
    margin = _check_margin(margin)
    if input.dim() > 2:
        raise ArgumentError(f"input must be 0-d, 1-d (C,) or 2-d (N, C), got shape {tuple(input.shape)}")
    single = input.dim() < 2
    x = input.reshape(1, -1) if single else input               # (N, C)
    if x.shape[1] == 0:
        raise ArgumentError(f"input must have at least one class, got shape {tuple(input.shape)}")
    weight = _check_weight(weight)
    if weight is not None and weight.shape != (x.shape[1],):
        raise ArgumentError(f"weight must have shape ({x.shape[1]},), one per class, got {tuple(weight.shape)}")
    if not isinstance(target, Tensor):
        raise ArgumentTypeError(f"target must be a torch.Tensor of integer labels, got {type(target).__name__}")
    out_shape = target.shape                                    # one sample, "none": the target's
    if single:
        if target.dim() > 1 or target.numel() != 1:
            raise ArgumentError(f"target must be 0-d (or shape (1,)) for an input of shape "
                             f"{tuple(input.shape)}, got shape {tuple(target.shape)}")
        target = target.reshape(1)
    target = _check_labels(target, x.shape[0], x.shape[1], name="target")
    if target.device != x.device:
        raise ArgumentError(f"target and input must be on the same device, got {target.device} and {x.device}")
    if weight is not None:
        weight = weight.to(device=x.device, dtype=x.dtype)
    out = _MultiMarginLossFunction.apply(x, target, p, margin, weight, reduction)[0]
    return out.reshape(out_shape) if single and reduction == "none" else out


class MultiMarginLoss(nn.Module):
    """Drop-in for :class:`torch.nn.MultiMarginLoss` (see :func:`multi_margin_loss`).

    Args: ``p=1``, ``margin=1.0`` (finite), ``weight=None`` (a 1-D (C,) tensor, kept as a
    buffer; checked here, its length at the call), ``reduction="mean"``. Call as
    ``loss(input, target)``.
    """

    def __init__(self, p: int = 1, margin: float = 1.0, weight: Optional[Tensor] = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.p = _check_p(p)
        self.margin = _check_margin(margin)
        self.reduction = _check_reduction(reduction)
        self.register_buffer("weight", _check_weight(weight))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return multi_margin_loss(input, target, p=self.p, margin=self.margin,
                                 weight=self.weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}, reduction={self.reduction!r}"
