r"""The multiclass SVM (Weston-Watkins) hinge loss with a hand-written gradient.

CS231n convention, for scores :math:`S = XW`:

.. math::

    L(W) = \frac{1}{N} \sum_{i=1}^{N} \sum_{j \ne y_i}
           \max(0,\; S_{ij} - S_{i y_i} + \Delta)^p \;+\; \lambda \sum_{k,j} W_{kj}^2

with ``W: (D, C)``, ``X: (N, D)``, ``y: (N,)`` integer labels in ``[0, C)``, ``p`` in {1, 2}
(``p = 2`` is the squared hinge), ``delta`` :math:`= \Delta > 0` and ``reg`` :math:`= \lambda \ge 0`.

Gradient. Write :math:`m_{ij} = S_{ij} - S_{iy_i} + \Delta` (:func:`svm_margins`) and let
:math:`B` be the (N, C) coefficient matrix :math:`B_{ij} = \partial L / \partial S_{ij}`
(:func:`svm_coefficients`):

.. math::

    B_{ij} = \frac{1}{N} g(m_{ij}) \;(j \ne y_i), \qquad
    B_{i y_i} = -\sum_{j \ne y_i} B_{ij}, \qquad
    \nabla_W L = X^\top B + 2 \lambda W, \qquad \nabla_X L = B W^\top,

with :math:`g(m) = 1[m > 0]` for ``p = 1`` and :math:`g(m) = 2\max(0, m)` for ``p = 2``.

The kink. For ``p = 1`` the hinge has no derivative at :math:`m = 0`; any value in [0, 1]
there is a valid subgradient. The hand-written gradient takes ``kink`` (default 0, as the
CS231n naive loop's ``if margin > 0`` and PyTorch's own MultiMarginLoss kernel's ``z > 0`` do).
The squared hinge is differentiable at 0 (its derivative is 0), so ``kink`` has no effect there.

The loss, all on the inputs' device and dtype:

* :func:`svm_loss` -- the main path: a 0-d tensor whose ``backward()`` runs the hand-written
  gradient (an ``autograd.Function``), so ``torch.optim`` uses it;
* :func:`svm_loss_and_grad` -- ``(loss, dW)`` from the same hand-written gradient, no graph;
* :func:`svm_loss_autograd` -- plain differentiable torch ops that ``torch.autograd``
  differentiates (the reference the hand-written gradient is tested against; written apart
  from the margins below on purpose);
* :func:`svm_loss_multimargin` -- through PyTorch's own ``multi_margin_loss`` kernel;

The drop-in for ``torch.nn.MultiMarginLoss`` built on the same pieces is
:mod:`torch_svm.multimargin`.

PyTorch's machinery. :func:`svm_loss` (and :func:`torch_svm.multimargin.multi_margin_loss`) are ``autograd.Function``\ s
with ``setup_context`` and a generated vmap rule, so ``torch.func`` (grad, vmap, jacrev),
``torch.compile(fullgraph=True)``, ``torch.export`` and FakeTensors work on them, and their
backward is differentiable (``create_graph=True``, ``hessian``, ``gradgradcheck``). Forward-mode
AD (``jvp``, ``jacfwd``) is not supported, as for PyTorch's own ``multi_margin_loss``.

Performance. The loss is two GEMMs, ``S = X W`` forward and ``X^T B`` backward, computed as
``(B^T X)^T`` (the layout fast for a tall X on a CPU, and the one of
:class:`~torch_svm.model.LinearSVM`'s class-major W), and a dozen (N, C) element-wise ops
(``benchmarks/bench_loss.py`` measures them). On plain CPU tensors that need no graph (the
trainer's step, :func:`svm_loss_and_grad`, a backward without ``create_graph``):

* float32 GEMMs run on oneDNN (:func:`_onednn_linear`), 1.6-2.2x faster than MKL's at
  CIFAR-10's skinny 200 x 3,073 x 10 on the project's AMD CPUs;
* with many classes (``WIDE_C``) and a class-major W, once at most ``SPARSE_DENSITY`` of B is
  nonzero (most margins met: a linear probe after a few hundred steps has 1-3 % active terms),
  ``X^T B`` is summed from B's nonzeros, one bag of rows of X per class
  (:func:`_sparse_grad_W`), instead of a GEMM over every entry.

A one-pass variant that fed both GEMMs from a cache-sized block of X was measured and gave
nothing on the project's CPU: its GEMMs are compute-bound on one thread, and on two the
blocks' GEMMs wait on their threads' barrier. No
function here synchronises host and device, except the label range check, which runs only for
CPU tensors (on CUDA an out-of-range label trips ``gather``'s device-side assert).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

from torch_svm.errors import ArgumentError, ArgumentTypeError

__all__: list = []    # its names are re-exported by the package

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# --------------------------------------------------------------------------- validation

def _check_p(p: object) -> int:
    if isinstance(p, bool) or p not in (1, 2):
        raise ArgumentError(f"p must be 1 or 2, got {p!r}")
    return int(p)


def _real(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r:.200}") from None


def _finite(value: float) -> bool:
    """``math.isfinite`` as comparisons, which ``torch.compile`` can trace for a float it made
    symbolic (a hyperparameter that changes between calls); False for nan."""
    return -math.inf < value < math.inf


def validate_hyperparameters(*, reg: float = 0.0, delta: float = 1.0, p: int = 1,
                             kink: float = 0.0) -> Tuple[float, float, int, float]:
    """Check the loss's hyperparameters; return them as ``(reg, delta, p, kink)`` floats / int.

    ``reg`` finite and >= 0, ``delta`` finite and > 0, ``p`` 1 or 2, ``kink`` in [0, 1].
    Raises ValueError (TypeError for a non-number) naming the argument and echoing the value.
    """
    reg, delta, kink = _real("reg", reg), _real("delta", delta), _real("kink", kink)
    p = _check_p(p)
    if not (_finite(delta) and delta > 0):
        raise ArgumentError(f"delta must be a finite number > 0, got {delta!r}")
    if not (_finite(reg) and reg >= 0):
        raise ArgumentError(f"reg must be a finite number >= 0, got {reg!r}")
    if not 0.0 <= kink <= 1.0:
        raise ArgumentError(f"kink (the value taken at a margin of exactly 0) must be in [0, 1], got {kink!r}")
    return reg, delta, p, kink


def _readable(*tensors: Tensor) -> bool:
    """Whether these tensors' values can be read on the host (by numpy, or by a CPU kernel
    outside PyTorch's dispatch) without a device sync or breaking a trace: eager CPU tensors
    holding real data (not under ``torch.compile`` or ``torch.export``, not FakeTensors, not
    batched by ``vmap``)."""
    if torch.compiler.is_compiling():                           # first: is_fake is not traceable
        return False
    return all(t.device.type == "cpu" and not is_fake(t)
               and not torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _needs_graph(W: Tensor, X: Tensor) -> bool:
    """Whether what is computed from W and X must be differentiable (autograd records it)."""
    return torch.is_grad_enabled() and (W.requires_grad or X.requires_grad)


def _fast_cpu(W: Tensor, X: Tensor, *more: Tensor) -> bool:
    """Whether a step may use kernels autograd does not know (oneDNN's GEMM, numpy's
    nonzero): plain readable tensors (no subclass) whose results need no graph."""
    return (not _needs_graph(W, X) and _readable(W, X, *more)
            and all(type(t) in (Tensor, torch.nn.Parameter) for t in (W, X, *more)))


@functools.lru_cache(maxsize=None)
def _onednn_linear():
    """oneDNN's float32 ``x @ w.T`` on a CPU (``torch.ops.mkldnn._linear_pointwise``, the op
    ``torch.compile`` emits for a CPU linear), or None where this torch has none or it does not
    agree exactly with ``torch.mm`` on a small integer-valued probe.

    Why: at a step's skinny shapes PyTorch's ``mm`` calls MKL, which on this project's AMD
    CPUs runs CIFAR-10's 200 x 3,073 x 10 products 1.6-2.2x slower than oneDNN does
    (``benchmarks/bench_loss.py``). ``torch.backends.mkldnn.enabled = False`` turns it off.
    """
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        op = torch.ops.mkldnn._linear_pointwise
        a = torch.arange(12, dtype=torch.float32).view(3, 4)
        b = torch.arange(8, dtype=torch.float32).view(2, 4).T    # (4, 2) stored (2, 4), as W
        if not torch.equal(op(a, b.T, None, "none", [], ""), a @ b):
            return None
    except Exception:   # noqa: BLE001 - an op this torch lacks or cannot run: use torch.mm
        return None
    return op


#: oneDNN's linear is used from this many multiply-adds (N D C) on: each call costs about
#: 20-30 us more than MKL's ``mm``, so MKL is faster for small products (digits' 200 x 65 x 10:
#: 11 against 28 us; the whole digits recipe 0.26 s against 0.42 s) and oneDNN from a few
#: million on (CIFAR-10's 6.1 M: 235 against 377 us). Measured on one thread.
ONEDNN_MIN_WORK = 2**22


def _linear(W: Tensor, X: Tensor):
    """oneDNN's ``x @ w.T`` for a float32 product of W and X big enough to gain from it
    (:data:`ONEDNN_MIN_WORK`) when the step may use it (:func:`_fast_cpu` was checked by the
    caller) and mkldnn is enabled; else None."""
    if W.dtype != torch.float32 or not torch.backends.mkldnn.enabled \
            or X.shape[0] * X.shape[1] * W.shape[1] < ONEDNN_MIN_WORK:
        return None
    op = _onednn_linear()
    return None if op is None else (lambda x, w: op(x, w, None, "none", [], ""))


def _check_labels(y: Tensor, n: int, num_classes: int, name: str = "y") -> Tensor:
    """Integer labels of shape (n,) in [0, num_classes); returned as int64.

    The range check reads the labels on the host, so it runs only where that is free and
    traceable (:func:`_readable`). Elsewhere (CUDA, ``torch.compile``, ``torch.export``,
    ``vmap`` over the labels) an out-of-range label is caught by ``gather``'s own index check
    (a RuntimeError on the CPU, a device-side assert on CUDA), never read silently.
    """
    if not isinstance(y, Tensor):
        raise ArgumentTypeError(f"{name} must be a torch.Tensor of integer labels, got {type(y).__name__}")
    if y.dtype not in _INTEGER_DTYPES:
        raise ArgumentTypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ArgumentError(f"{name} must have shape ({n},) to match the {n} examples, got {tuple(y.shape)}")
    if n > 0 and _readable(y):
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ArgumentError(f"{name} must hold labels in [0, {num_classes}), got {bad}")
    return y.long()


def validate_svm_inputs(W: Tensor, X: Tensor, y: Tensor) -> Tensor:
    """Check ``W: (D, C)``, ``X: (N, D)`` (same floating dtype and device) and ``y: (N,)``
    integer labels in ``[0, C)`` (any integer dtype); return y as int64.

    Raises TypeError / ValueError naming the argument and echoing the bad shape, dtype or value.
    """
    for name, t in (("W", W), ("X", X)):
        if not isinstance(t, Tensor):
            raise ArgumentTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ArgumentTypeError(f"{name} must have a floating dtype, got {t.dtype}")
        if t.dim() != 2:
            raise ArgumentError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if W.dtype != X.dtype:
        raise ArgumentTypeError(f"W and X must have the same dtype, got W {W.dtype} and X {X.dtype}")
    if W.device != X.device:
        raise ArgumentError(f"W and X must be on the same device, got W on {W.device} and X on {X.device}")
    n, d = X.shape
    if W.shape[0] != d:
        raise ArgumentError(f"W must have shape (D, C) with D = X.shape[1] = {d}, got W {tuple(W.shape)}")
    if n == 0:
        raise ArgumentError(f"X must hold at least one example, got shape {tuple(X.shape)}")
    if W.shape[1] < 2:
        raise ArgumentError(f"W must have at least 2 classes (columns), got shape {tuple(W.shape)}")
    y = _check_labels(y, n, W.shape[1])
    if y.device != X.device:
        raise ArgumentError(f"y and X must be on the same device, got y on {y.device} and X on {X.device}")
    return y


# --------------------------------------------------------------------------- margins and B

#: Below this many classes the scores' and the gradient's GEMMs write a (C, D) result (CIFAR-10's
#: 10 x 3,073: 4x faster than (D, C) on one core). From it on, the gradient comes out in W's
#: own layout, so that SGD's update reads both in the same order (a transposed read is 30x
#: slower than a plain one): (C, D) for :class:`~torch_svm.model.LinearSVM`'s W, which is
#: stored class-major, else (D, C). Measured at batch 200, float32 (``benchmarks/bench_loss.py``).
WIDE_C = 64


def _margins(W: Tensor, X: Tensor, y: Tensor, delta: float) -> Tensor:
    idx = y.unsqueeze(1)                                        # (N, 1)
    linear = _linear(W, X) if _fast_cpu(W, X) else None
    if linear is not None:                                      # oneDNN (float32, CPU)
        scores = linear(X, W.T)                                 # (N, C)
    else:   # few classes: (W^T X^T)^T, MKL's fast layout for a (C, D) W (as the gradient's)
        scores = (W.T @ X.T).T if W.shape[1] < WIDE_C else X @ W
    correct = scores.gather(1, idx)                             # (N, 1)
    if _needs_graph(W, X):
        # out of place: gather saves the scores, and p = 2's second derivatives differentiate this
        margins = scores - correct + delta                      # (N, C)
    else:   # the same ops in place (bitwise the same margins): one (N, C) pass less per step
        margins = scores.sub_(correct).add_(delta)
    return margins.scatter_(1, idx, float("-inf"))              # j = y_i is not a term


def svm_margins(W: Tensor, X: Tensor, y: Tensor, *, delta: float = 1.0) -> Tensor:
    """The margins :math:`m_{ij} = S_{ij} - S_{iy_i} + \\Delta`, ``(N, C)``, ``-inf`` at ``j = y_i``.

    Exactly the tensor the hand-written gradient masks (same ops, dtype and layout), so a
    margin that is 0 here is at the kink in :func:`svm_loss`; ``-inf`` marks the ``j = y_i``
    entries, which are not hinge terms (``m > 0`` and ``max(0, m)`` are 0 there).
    """
    _, delta, _, _ = validate_hyperparameters(delta=delta)
    y = validate_svm_inputs(W, X, y)
    with torch.no_grad():
        return _margins(W.detach(), X.detach(), y, delta)


def _hinge(m: Tensor, p: int, kink: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Per-term losses ``max(0, m)^p`` and slopes ``g(m)`` (``kink`` at ``m == 0``, p = 1)."""
    hinge = m.clamp_min(0)
    if p == 2:
        return hinge * hinge, 2 * hinge                         # g(m) = 2 max(0, m)
    # g(m) = 1[m > 0] as sign(max(0, m)): exactly 0 or 1, piecewise constant, so no gradient
    # flows through it (detached); a vectorised kernel (torch.heaviside is 40x slower on a CPU,
    # 1 ms for 200 x 1,000 margins). kink at m == 0, where 1 - |sign(m)| is 1 (0 at -inf).
    slopes = torch.sign(hinge.detach())
    if kink:
        slopes = slopes.add_(torch.sign(m.detach()).abs_().neg_().add_(1), alpha=kink)
    return hinge, slopes


def svm_coefficients(slopes: Tensor, y: Tensor) -> Tensor:
    """The matrix ``B`` from per-term slopes: ``B_ij = P_ij`` for ``j != y_i`` and
    ``B_{i y_i} = -sum_{j != y_i} P_ij`` (``P: (N, C)``, 0 at ``j = y_i``).

    ``X^T B`` is then the gradient with respect to W of ``sum_ij P_ij m_ij`` (divide by N
    for the loss's average). Also used by :mod:`verification` to build the gradient of any
    pattern of terms.
    """
    idx = y.unsqueeze(1)
    return slopes.scatter(1, idx, slopes.sum(dim=1, keepdim=True).neg_())


def _svm_forward(W: Tensor, X: Tensor, y: Tensor, reg: float, delta: float, p: int,
                 kink: float) -> Tuple[Tensor, Tensor]:
    """Loss and the coefficient matrix B = dL/dS (N, C), from one pass over the margins."""
    n = X.shape[0]
    terms, slopes = _hinge(_margins(W, X, y, delta), p, kink)    # (N, C), 0 at j = y_i
    coef = svm_coefficients(slopes, y).div_(n)
    w = (W.T if W.T.is_contiguous() else W).reshape(-1)         # a view in either layout
    loss = terms.sum().div_(n).add_(torch.dot(w, w), alpha=reg)  # mean hinge + reg sum W^2
    return loss, coef


#: The sparse gradient (:func:`_sparse_grad_W`) is taken when at most this fraction of B is
#: nonzero (where a linear probe's hinge is after a few hundred steps: 1-3 %). The crossover
#: with the GEMM at 1,000 classes of 513 features, batch 200, one thread, is measured by
#: ``benchmarks/bench_loss.py --sparse``.
SPARSE_DENSITY = 0.06


def _svm_grad_W(W: Tensor, X: Tensor, coef: Tensor, reg: float) -> Tensor:
    """X^T B + 2 reg W in one GEMM (``addmm``, which also adds the regularizer's gradient), in
    the layout fast for the shape: (B^T X + 2 reg W^T)^T for few classes, else directly; or,
    for many classes on a CPU once most margins are met, from B's nonzeros alone."""
    wide = W.shape[1] >= WIDE_C
    if wide and not W.T.is_contiguous():                        # W stored (D, C)
        return torch.addmm(W, X.T, coef, beta=2 * reg)          # (D, C)
    if _fast_cpu(W, X, coef):
        if wide and coef.dtype in (torch.float32, torch.float64) and coef.is_contiguous():
            nonzero = coef.numpy() != 0                         # (a bool array: numpy finds
            if np.count_nonzero(nonzero) <= SPARSE_DENSITY * nonzero.size:   # its ones 15x
                flat = torch.from_numpy(np.flatnonzero(nonzero))  # faster than a float's)
                return _sparse_grad_W(W, X, coef, reg, flat)    # row-major positions i C + j
        linear = _linear(W, X)
        if linear is not None:                                  # oneDNN: B^T X, (C, D)
            dWt = linear(coef.T, X.T)
            return (dWt.add_(W.T, alpha=2 * reg) if reg else dWt).T
    return torch.addmm(W.T, coef.T, X, beta=2 * reg).T          # (D, C), a view of (C, D)


def _sparse_grad_W(W: Tensor, X: Tensor, coef: Tensor, reg: float, flat: Tensor) -> Tensor:
    """X^T B + 2 reg W, for a W stored (C, D), from the nonzeros of B at row-major positions
    ``flat``: column j of X^T B is the sum of B_ij X_i over its nonzero rows i, a bag of rows
    of X per class (``embedding_bag`` with per-sample weights: one pass over the nonzeros, in
    row order within a class), instead of a GEMM over every entry of B."""
    n, c = coef.shape
    cls, rows = flat % c, flat // c
    order = torch.argsort(cls, stable=True)                     # group by class, rows in order
    counts = torch.bincount(cls, minlength=c)
    offsets = torch.cumsum(counts, 0).sub_(counts)              # where each class's bag starts
    bags = F.embedding_bag(rows[order], X, offsets, mode="sum",
                           per_sample_weights=coef.view(-1)[flat[order]])   # (C, D)
    return (bags.add_(W.T, alpha=2 * reg) if reg else bags).T   # (D, C), a view of (C, D)


def _svm_loss_and_grad(W: Tensor, X: Tensor, y: Tensor, reg: float, delta: float, p: int,
                       kink: float) -> Tuple[Tensor, Tensor]:
    """``(loss, dW)`` for inputs already validated (y int64): what
    :func:`svm_loss_and_grad` computes after its checks, and what the trainer calls at every
    step, having checked its data once per run."""
    loss, coef = _svm_forward(W, X, y, reg, delta, p, kink)
    return loss, _svm_grad_W(W, X, coef, reg)


# --------------------------------------------------------------------------- the SVM loss

class _SVMLoss(torch.autograd.Function):
    """The SVM loss whose backward is the hand-written gradient (inputs validated by
    :func:`svm_loss`). Gradients flow to W (``X^T B + 2 reg W``) and to X (``B W^T``).

    ``forward`` returns ``(loss, B)``; B is saved for the backward and marked non-differentiable.
    The backward is built from differentiable ops, so second derivatives are right: under
    ``create_graph=True`` (``hessian``, ``gradgradcheck``, ``torch.func``) autograd
    differentiates ``X^T B + 2 reg W`` and ``B W^T``. For ``p = 1`` B is piecewise constant, so
    the saved one serves (the W-Hessian is ``2 reg I``); for ``p = 2``, ``B = 2/N max(0, m)``
    depends on W and X, and the backward rebuilds it with grad enabled through
    :func:`_svm_forward`, which must stay differentiable ops (the ``2 X^T D X`` blocks;
    ``tests/test_dropin.py`` checks them). Without ``create_graph`` (``loss.backward()``) it
    uses the saved B and builds no graph. ``generate_vmap_rule``: ``vmap`` runs the same
    forward and backward over a batch.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(W: Tensor, X: Tensor, y: Tensor, reg: float, delta: float, p: int,
                kink: float) -> Tuple[Tensor, Tensor]:
        return _svm_forward(W, X, y, reg, delta, p, kink)       # (loss, B: (N, C))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        W, X, y, *ctx.hyper = inputs                            # hyper: reg, delta, p, kink
        coef = output[1]
        ctx.mark_non_differentiable(coef)
        ctx.set_materialize_grads(False)                        # no (N, C) zeros for B's grad
        ctx.save_for_backward(W, X, y, coef)

    @staticmethod
    def backward(ctx, grad_loss: Optional[Tensor], _grad_coef: Optional[Tensor]):
        if grad_loss is None:                                   # grads not materialised
            return None, None, None, None, None, None, None
        W, X, y, coef = ctx.saved_tensors
        reg, delta, p, kink = ctx.hyper
        if p == 2 and _building_graph(W, X):                    # create_graph: B as a function of W, X
            _, coef = _svm_forward(W, X, y, reg, delta, p, kink)
        dW = dX = None
        if ctx.needs_input_grad[0]:
            dW = grad_loss * _svm_grad_W(W, X, coef, reg)       # (D, C)
        if ctx.needs_input_grad[1]:
            dX = grad_loss * (coef @ W.T)                       # (N, D)
        return dW, dX, None, None, None, None, None


def _building_graph(*saved: Optional[Tensor]) -> bool:
    """True in a backward run with ``create_graph=True`` whose result must be differentiable
    in one of the ``saved`` inputs: the backward then recomputes what it saved, with grad on."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in saved)


def svm_loss(W: Tensor, X: Tensor, y: Tensor, reg: float = 0.0, *,
             delta: float = 1.0, p: int = 1, kink: float = 0.0) -> Tensor:
    """The SVM loss as a 0-d tensor whose ``backward()`` runs the hand-written gradient.

    Args:
        W: (D, C) weights.  X: (N, D) examples.  y: (N,) integer labels in [0, C).
        reg: L2 strength lambda >= 0 (the term is ``reg * sum(W * W)``).
        delta: the margin, > 0.  p: 1 (hinge) or 2 (squared hinge).
        kink: in [0, 1], the derivative taken for a hinge term whose margin is exactly 0
            (``p = 1`` only; default 0).

    Returns:
        A 0-d tensor on W's device and dtype; gradients flow to W and X, to any order
        (``create_graph=True``, ``hessian``), and ``torch.func`` (grad, vmap, jacrev) and
        ``torch.compile`` work on it.

    Example::

        >>> W = torch.zeros(3, 2, requires_grad=True)
        >>> loss = svm_loss(W, torch.ones(4, 3), torch.tensor([0, 1, 0, 1]), reg=0.1)
        >>> loss.backward()  # W.grad is the hand-written X^T B + 2 reg W
    """
    reg, delta, p, kink = validate_hyperparameters(reg=reg, delta=delta, p=p, kink=kink)
    y = validate_svm_inputs(W, X, y)
    return _SVMLoss.apply(W, X, y, reg, delta, p, kink)[0]


def svm_loss_and_grad(W: Tensor, X: Tensor, y: Tensor, reg: float = 0.0, *,
                      delta: float = 1.0, p: int = 1, kink: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Loss and the hand-written vectorised gradient dL/dW; builds no autograd graph.

    Args: as :func:`svm_loss`.

    Returns:
        ``(loss, dW)``: a 0-d tensor and a (D, C) tensor on W's device and dtype.
    """
    reg, delta, p, kink = validate_hyperparameters(reg=reg, delta=delta, p=p, kink=kink)
    y = validate_svm_inputs(W, X, y)
    with torch.no_grad():
        return _svm_loss_and_grad(W, X, y, reg, delta, p, kink)


def svm_loss_autograd(W: Tensor, X: Tensor, y: Tensor, reg: float = 0.0, *,
                      delta: float = 1.0, p: int = 1) -> Tensor:
    """The loss from plain differentiable torch ops, for ``torch.autograd`` to differentiate.

    The reference the hand-written gradient is checked against, so it is written apart from
    :func:`svm_margins` (``X @ W``, ``relu``, ``scatter``). Arguments as :func:`svm_loss`;
    autograd's ``relu`` takes 0 at a kink.
    """
    reg, delta, p, _ = validate_hyperparameters(reg=reg, delta=delta, p=p)
    y = validate_svm_inputs(W, X, y)
    idx = y.unsqueeze(1)                                        # (N, 1)
    scores = X @ W                                              # (N, C)
    hinge = torch.relu(scores - scores.gather(1, idx) + delta)  # (N, C)
    hinge = hinge.scatter(1, idx, 0.0)                          # j = y_i is not a term
    if p == 2:
        hinge = hinge * hinge
    return hinge.sum() / X.shape[0] + reg * (W * W).sum()


def svm_loss_multimargin(W: Tensor, X: Tensor, y: Tensor, reg: float = 0.0, *,
                         delta: float = 1.0, p: int = 1) -> Tensor:
    """The loss through PyTorch's own kernel: ``C * F.multi_margin_loss(X @ W, y, p,
    margin=delta) + reg * sum(W^2)`` (the kernel averages over the C classes, hence ``C``).

    Differentiated by PyTorch's backward kernel; it takes 0 at a kink. PyTorch has no CPU
    kernel for float16/bfloat16: those raise RuntimeError.
    """
    reg, delta, p, _ = validate_hyperparameters(reg=reg, delta=delta, p=p)
    y = validate_svm_inputs(W, X, y)
    hinge = F.multi_margin_loss(X @ W, y, p=p, margin=delta)    # mean_i (1/C) sum_j
    return W.shape[1] * hinge + reg * (W * W).sum()
