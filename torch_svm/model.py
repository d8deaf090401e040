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

* ``"hand"`` (default): :func:`torch_svm.losses.svm_loss_fn`, whose backward is the
  hand-written gradient;
* ``"autograd"``: :func:`torch_svm.losses.svm_loss`, plain torch ops that autograd differentiates;
* ``"mml"``: ``C * torch.nn.functional.multi_margin_loss(S, y, p, margin=delta) + reg * sum(W^2)``
  (PyTorch's kernel averages over the C classes, hence the factor C).

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are a plain dict of tensors and
plain Python values, read back with ``torch.load(..., weights_only=True)``: a file cannot run
code when loaded, and a file that is not such a dict is refused with :class:`CheckpointError`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_svm.losses import svm_loss, svm_loss_fn
from torch_svm.errors import CheckpointError
from torch_svm.utils import atomic_write_bytes

__all__ = ["LinearSVM", "GRADS", "CheckpointError", "save_checkpoint", "load_checkpoint"]

#: Values accepted for ``grad`` in :meth:`LinearSVM.loss`.
GRADS = ("hand", "autograd", "mml")

_FORMAT = "torch-svm/linear-svm/1"  # bumped when the checkpoint layout changes


class LinearSVM(nn.Module):
    """A linear multiclass SVM: ``scores = X @ W`` with ``W: (D, C)`` a Parameter.

    Args:
        num_features: D, the columns of X, bias column included.
        num_classes: C >= 2.
        init_scale: W starts as ``init_scale * randn(D, C)`` (0.001 in the assignment), drawn
            from torch's global CPU generator in float64 and then cast and moved, so a seed
            gives the same start on every device and dtype.
        dtype, device: of W; X must match them.
    """

    def __init__(self, num_features: int, num_classes: int, *, init_scale: float = 0.001,
                 dtype: torch.dtype = torch.float32,
                 device: Union[str, torch.device, None] = None) -> None:
        super().__init__()
        for name, value, lowest in (("num_features", num_features, 1),
                                    ("num_classes", num_classes, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
        W = init_scale * torch.randn(num_features, num_classes, dtype=torch.float64)
        self.W = nn.Parameter(W.to(device=device, dtype=dtype))  # (D, C)

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
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {tuple(y.shape)}")
        return float((self.predict(X) == y).to(torch.float64).mean())

    def loss(self, X: Tensor, y: Tensor, reg: float = 0.0, *, grad: str = "hand",
             delta: float = 1.0, p: int = 1, kink: float = 0.0) -> Tensor:
        """The SVM loss (a 0-d tensor) on a batch ``X: (N, D)``, ``y: (N,)``.

        ``grad`` picks how ``backward()`` differentiates it (see the module docstring); ``kink``
        (the derivative taken at a margin of exactly 0) is only free with ``grad="hand"``: the
        other two take 0 there, so any other value is a ValueError for them.
        """
        if grad == "hand":
            return svm_loss_fn(self.W, X, y, reg, delta=delta, p=p, kink=kink)
        if grad not in GRADS:
            raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
        if kink != 0:
            raise ValueError(f"kink must be 0 with grad={grad!r} (only grad='hand' takes another "
                             f"value at the hinge's kink), got {kink!r}")
        if grad == "autograd":
            return svm_loss(self.W, X, y, reg, delta=delta, p=p)
        if p not in (1, 2) or isinstance(p, bool):
            raise ValueError(f"p must be 1 or 2, got {p!r}")
        scores = self(X)                                          # (N, C)
        hinge = F.multi_margin_loss(scores, y, p=p, margin=delta)  # mean_i (1/C) sum_j
        return self.num_classes * hinge + reg * (self.W * self.W).sum()


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Union[str, Path], model: LinearSVM,
                    metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``{"format", "state_dict", "metadata"}`` to ``path`` atomically with ``torch.save``.

    ``metadata`` must hold only what ``weights_only`` loading accepts: dicts, lists, tuples,
    str, int, float, bool, None and tensors (e.g. the train config, class names, image shape,
    the mean image as a tensor, the bias flag).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": _FORMAT, "state_dict": state, "metadata": dict(metadata or {})}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Union[str, Path], *, device: Union[str, torch.device] = "cpu"
                    ) -> Tuple[LinearSVM, Dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Returns ``(model, metadata)`` with the model on ``device``, in the saved dtype.
    Raises FileNotFoundError when ``path`` is missing, and CheckpointError (a ValueError) when the
    file is corrupt, carries anything but tensors and plain values (nothing in it is run), or
    is not a LinearSVM checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted input: any failure means a bad file
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"checkpoint {str(path)!r} was refused by weights_only loading "
                              f"(corrupt, or not a torch-svm checkpoint): "
                              f"{type(exc).__name__}: {first}") from exc
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is not a torch-svm LinearSVM checkpoint "
                              f"(expected format {_FORMAT!r}, got {got!r})")
    state, metadata = obj.get("state_dict"), obj.get("metadata")
    W = state.get("W") if isinstance(state, dict) else None
    if not (isinstance(W, Tensor) and W.dim() == 2 and W.is_floating_point() and W.shape[1] >= 2
            and W.shape[0] >= 1 and isinstance(metadata, dict)):
        shape = tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} must hold a floating W of shape (D, C) "
                              f"with C >= 2 and a metadata dict, got W {shape}")
    model = LinearSVM(W.shape[0], W.shape[1], dtype=W.dtype, device=device)
    with torch.no_grad():
        model.W.copy_(W)
    return model, metadata
