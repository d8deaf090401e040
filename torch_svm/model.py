r"""The linear SVM classifier and its checkpoint format.

:class:`LinearSVM` holds one weight matrix ``W: (D, C)`` and scores ``S = X W``. There is no
separate bias: the bias trick makes the last input column all ones (``torch_svm.data`` appends
it), so the last row ``W[-1]`` is the per-class bias and ``W[:-1, c]`` is the template of
class ``c`` (an image once reshaped to ``image_shape``).

Its :meth:`LinearSVM.loss` is the CS231n multiclass SVM loss

.. math::

    L(W) = \frac{1}{N} \sum_i \sum_{j \ne y_i} \max(0,\; S_{ij} - S_{iy_i} + \Delta)^p
           + \lambda \sum W^2

differentiated in one of three ways (``grad``), all with the same value:

* ``"hand"`` (default): :func:`torch_svm.losses.svm_loss`, whose backward is the
  hand-written gradient;
* ``"autograd"``: :func:`torch_svm.losses.svm_loss_autograd`, plain torch ops that autograd differentiates;
* ``"mml"``: :func:`torch_svm.losses.svm_loss_multimargin`, through PyTorch's own
  ``multi_margin_loss`` kernel.

Checkpoints are :mod:`torch_svm.checkpoint`'s; accuracy over a data set is
:mod:`torch_svm.evaluate`'s.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from torch_svm.errors import ArgumentError, check_int, check_real, clip
from torch_svm.losses import svm_loss, svm_loss_autograd, svm_loss_multimargin

__all__ = ["LinearSVM"]

#: Values accepted for ``grad`` in :meth:`LinearSVM.loss`: how ``backward()`` differentiates.
GRADS = {"hand": svm_loss, "autograd": svm_loss_autograd, "mml": svm_loss_multimargin}


class LinearSVM(nn.Module):
    """A linear multiclass SVM: ``scores = X @ W`` with ``W: (D, C)`` a Parameter, stored
    class-major (``W.T`` is contiguous, the layout of ``nn.Linear``'s weight).

    Args:
        num_features: D, the columns of X, bias column included.
        num_classes: C >= 2.
        init_scale: W starts as ``init_scale * randn(D, C)`` (0.001 in the assignment), drawn
            in float64 on the CPU and then cast and moved, so a seed gives the same start on
            every device and dtype.
        dtype, device: of W; X must match them.
        generator: the CPU ``torch.Generator`` of the draw (default: torch's global one).
    """

    def __init__(self, num_features: int, num_classes: int, *, init_scale: float = 0.001,
                 dtype: torch.dtype = torch.float32,
                 device: Union[str, torch.device, None] = None,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        check_int("num_features", num_features, min=1)
        check_int("num_classes", num_classes, min=2)
        init_scale = check_real("init_scale", init_scale, min=0)
        W = init_scale * torch.randn(int(num_features), int(num_classes), dtype=torch.float64,
                                     generator=generator)
        # stored class-major, as nn.Linear stores its (C, D) weight: W.T is contiguous. A step's
        # GEMMs are fastest so for few classes (CIFAR-10: 2x on one core), and the hand-written
        # gradient comes out in that layout, also from its per-class sparse path
        # (torch_svm.losses._svm_grad_W), so SGD's update reads W and its gradient in one order
        self.W = nn.Parameter(W.T.to(device=device, dtype=dtype).contiguous().T)  # (D, C)

    @property
    def num_features(self) -> int:
        return self.W.shape[0]

    @property
    def num_classes(self) -> int:
        return self.W.shape[1]

    def forward(self, X: Tensor) -> Tensor:
        """Scores ``(N, C)`` for ``X: (N, D)``."""
        return X @ self.W

    @torch.no_grad()
    def predict(self, X: Tensor) -> Tensor:
        """Predicted labels ``(N,)`` int64: the highest-scoring class per row."""
        return self(X).argmax(dim=1)

    @torch.no_grad()
    def accuracy(self, X: Tensor, y: Tensor) -> float:
        """Fraction of rows of X whose predicted label equals y (reads one number back)."""
        if y.shape != (X.shape[0],):
            raise ArgumentError(f"y must have shape ({X.shape[0]},) to match X, got {tuple(y.shape)}")
        return float((self.predict(X) == y).to(torch.float64).mean())

    def loss(self, X: Tensor, y: Tensor, reg: float = 0.0, *, grad: str = "hand",
             delta: float = 1.0, p: int = 1, kink: float = 0.0) -> Tensor:
        """The SVM loss (a 0-d tensor) on a batch ``X: (N, D)``, ``y: (N,)``.

        ``grad`` picks how ``backward()`` differentiates it (see the module docstring); ``kink``
        (the derivative taken at a margin of exactly 0) is only free with ``grad="hand"``: the
        other two take 0 there, so any other value is an ArgumentError for them.
        """
        if grad == "hand":
            return svm_loss(self.W, X, y, reg, delta=delta, p=p, kink=kink)
        if grad not in GRADS:
            raise ArgumentError(f"grad must be one of {tuple(GRADS)}, got {clip(repr(grad), 200)}")
        if kink != 0:
            raise ArgumentError(f"kink must be 0 with grad={grad!r} (only grad='hand' takes another "
                             f"value at the hinge's kink), got {kink!r}")
        return GRADS[grad](self.W, X, y, reg, delta=delta, p=p)
