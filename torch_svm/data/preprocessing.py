r"""The preprocessing record: what turns a raw row into a model input, and back.

A raw row :math:`x` (``D`` numbers: pixels, features) becomes the input

.. math::

    \tilde x = [(x - \mu) / \sigma,\; 1]

with :math:`\mu` the train rows' mean (``mean``; None: not centred), :math:`\sigma` their
standard deviation (``scale``; None: not scaled) and the bias column last (``bias``). The
arithmetic is the inputs' dtype when it holds every raw value exactly (:func:`exact_in`:
uint8 pixels in float32), else float64, cast once; either way the same raw row gives the
same input from a memory-mapped file, from arrays in memory or from CIFAR-10, and from
:meth:`Preprocessing.apply` (numpy) as from :meth:`Preprocessing.apply_to` (torch, on the
device, as a training loop makes minibatches from raw pixels, a quarter of the bytes).

:meth:`Preprocessing.from_moments` makes the record from the train rows' moments; a column
is constant (scale 1, as ``sklearn.preprocessing.StandardScaler`` keeps it) when its variance
is within the rounding of the float64 moments themselves, relative to the column's own mean
and variance, so features of any magnitude (1e-16 or 1e16) are scaled. A checkpoint stores the
record (:meth:`to_metadata`) and evaluation applies it again (:meth:`from_metadata`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from torch_svm.errors import CheckpointError, clip

__all__: list = []    # its names are re-exported by the package


def exact_in(raw: np.dtype, dtype: np.dtype) -> bool:
    """Whether every value of integer dtype ``raw`` is exact in the floating ``dtype``, and
    takes fewer bytes (uint8, int16 in float32; int32 too in float64): then preprocessing is
    done in ``dtype``, and minibatches can be gathered raw and preprocessed on the device."""
    raw, dtype = np.dtype(raw), np.dtype(dtype)
    return (raw.kind in "iu" and dtype.kind == "f" and raw.itemsize < dtype.itemsize
            and raw.itemsize * 8 - (raw.kind == "i") <= np.finfo(dtype).nmant + 1)


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """``mean: (D,)`` and ``scale: (D,)`` float64 (or None), and whether a bias column follows."""

    mean: Optional[Tensor]     # (D,) float64, subtracted; None: not centred
    scale: Optional[Tensor]    # (D,) float64 > 0, divided by; None: not scaled
    bias: bool                 # a column of ones appended, last

    @classmethod
    def from_moments(cls, mean: np.ndarray, variance: np.ndarray, n: int, *, center: bool,
                     standardize: bool, bias: bool) -> "Preprocessing":
        """The record for train rows of ``mean`` and ``variance`` ``(D,)`` float64 over ``n`` rows.

        A column is constant when ``variance <= n eps variance + (n eps mean)^2`` (the error
        bound of the float64 two-pass variance, as scikit-learn's ``_is_constant_feature``):
        its scale is then 1.
        """
        scale = None
        if standardize:
            eps = np.finfo(np.float64).eps
            constant = variance <= n * eps * variance + np.square(n * eps * mean)
            scale = torch.from_numpy(np.where(constant, 1.0, np.sqrt(variance)))
        return cls(torch.from_numpy(mean.copy()) if center else None, scale, bias)

    def apply(self, raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``raw: (B, D)`` rows of any real dtype -> ``(B, D + bias)`` inputs in ``dtype``."""
        D = raw.shape[1]
        out = np.empty((len(raw), D + self.bias), dtype=dtype)
        if self.mean is None and self.scale is None:
            out[:, :D] = raw
        else:   # in out's dtype where it holds raw exactly (what apply_to computes, op for op)
            work = out.dtype if exact_in(raw.dtype, out.dtype) else np.dtype(np.float64)
            body = raw.astype(work)                                   # (B, D)
            if self.mean is not None:
                body -= self.mean.numpy().astype(work, copy=False)
            if self.scale is not None:
                body /= self.scale.numpy().astype(work, copy=False)
            out[:, :D] = body
        if self.bias:
            out[:, D] = 1
        return out

    def apply_to(self, out: Tensor, raw: Tensor, mean: Optional[Tensor],
                 scale: Optional[Tensor]) -> Tensor:
        """:meth:`apply` in torch, into ``out: (B, D + bias)`` whose bias column already holds
        ones, for ``raw: (B, D)`` that :func:`exact_in` its dtype, with ``mean`` and ``scale``
        this record's, cast once to that dtype on ``out``'s device (:meth:`on`). The same
        numbers as :meth:`apply`: the same IEEE operations, in the same order."""
        body = out[:, :raw.shape[1]]
        body.copy_(raw)                         # one pass each: a mixed-dtype sub is 1.5x slower
        if mean is not None:
            body.sub_(mean)
        if scale is not None:
            body.div_(scale)
        return out

    def on(self, dtype: torch.dtype, device: torch.device) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``(mean, scale)`` in ``dtype`` on ``device``, as :meth:`apply_to` takes them."""
        return tuple(None if t is None else t.to(device=device, dtype=dtype)
                     for t in (self.mean, self.scale))

    def mean_square_norm(self, mean: np.ndarray, variance: np.ndarray) -> float:
        r""":math:`\mathbb{E}\,\|\tilde x\|^2` of an input row, from the raw train moments:
        :math:`\sum_j (\mathrm{var}_j + (\mathrm{mean}_j - c_j)^2) / s_j^2` (+ 1 for the bias
        column) with :math:`c` the subtracted mean (or 0) and :math:`s` the scale (or 1)."""
        shift = 0.0 if self.mean is None else self.mean.numpy()
        power = variance + np.square(mean - shift)
        if self.scale is not None:
            power = power / np.square(self.scale.numpy())
        return float(power.sum()) + self.bias

    def mean_image(self, D: int) -> Tensor:
        """The mean subtracted from every row, ``(D,)`` float64: ``mean``, or zeros."""
        return torch.zeros(D, dtype=torch.float64) if self.mean is None else self.mean

    def to_metadata(self, D: int) -> Dict[str, Any]:
        """What a checkpoint stores: ``mean_image`` (zeros when not centred), ``feature_scale``
        (None when not scaled) and ``bias``; tensors and plain values only."""
        return {"mean_image": self.mean_image(D).clone(),
                "feature_scale": None if self.scale is None else self.scale.clone(),
                "bias": bool(self.bias)}

    @classmethod
    def from_metadata(cls, metadata: Dict[str, Any], D: int, *, center: bool,
                      where: str) -> "Preprocessing":
        """The record a checkpoint stored for rows of ``D`` raw columns; CheckpointError, naming
        ``where``, when a value is missing, of the wrong shape, not finite or (scale) not > 0.
        ``center`` False reads the mean as none (older checkpoints stored zeros)."""
        values = {}
        for key in ("mean_image", "feature_scale"):
            value = metadata.get(key)
            if value is None and key == "feature_scale":
                values[key] = None
                continue
            if not (isinstance(value, Tensor) and value.shape == (D,)
                    and value.is_floating_point()):
                got = (f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, Tensor)
                       else type(value).__name__)
                raise CheckpointError(f"checkpoint {where}: {key} must be a floating tensor of "
                                      f"shape ({D},), got {clip(got, 60)}")
            if not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"checkpoint {where}: tensor {key} holds NaN or inf")
            if key == "feature_scale" and not bool((value > 0).all()):
                raise CheckpointError(f"checkpoint {where}: tensor {key} must be > 0, got "
                                      f"{float(value.min()):g} at its smallest")
            values[key] = value.to(torch.float64)
        bias = metadata.get("bias")
        if not isinstance(bias, bool):
            raise CheckpointError(f"checkpoint {where}: bias must be True or False, got "
                                  f"{clip(repr(bias), 60)}")
        return cls(values["mean_image"] if center else None, values["feature_scale"], bias)
