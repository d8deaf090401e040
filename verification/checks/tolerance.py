"""The one place relative errors and rounding allowances are defined, for every checker.

* :func:`rel_error` / :func:`relative_errors` / :func:`max_rel_error`: the CS231n notes'
  ``|a - b| / max(|a|, |b|)`` (0 where both are 0), for scalars, arrays and tensors;
* :func:`scaled_error`: ``max|a - b| / max(|a|, |b|)`` over all entries, for 16-bit floats;
* :data:`TOLERANCES`: the error accepted between two analytic methods, by precision.

(``grad_check_sparse`` prints the assignment's own ``|a - b| / (|a| + |b|)``, which students
compare with their notebook; it judges with the rule of :mod:`verification.checks.numeric`.)
"""
from __future__ import annotations

from typing import Dict, Union

import numpy as np
import torch
from torch import Tensor

__all__: list = []      # internal: import names from here explicitly

#: Largest error accepted between two analytic methods, by the lower precision of the pair.
#: float64 and float32 are judged by the CS231n elementwise relative error (float64 pairs agree
#: to ~1e-13 in practice; the margin covers ill-conditioned entries). In float16 and bfloat16
#: a small gradient entry that is a difference of larger terms keeps no correct digits, so the
#: elementwise relative error says nothing; those pairs are judged by the scaled error
#: ``max|a - b| / max(|a|, |b|)`` over all entries (:func:`scaled_error`).
TOLERANCES: Dict[torch.dtype, float] = {
    torch.float64: 1e-8,
    torch.float32: 1e-3,
    torch.bfloat16: 5e-2,
    torch.float16: 1e-2,
}
_SCALED = (torch.float16, torch.bfloat16)

def rel_error(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|)``, 0 when both are 0 (the CS231n notes' formula)."""
    denom = max(abs(a), abs(b))
    return 0.0 if denom == 0 else abs(a - b) / denom


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Elementwise :func:`rel_error`, maximised over all coordinates."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.maximum(np.abs(a), np.abs(b))
    err = np.divide(np.abs(a - b), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(err.max()) if err.size else 0.0


def scaled_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b|`` over all entries divided by the largest ``|a|`` or ``|b|`` (0 if both 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = max(float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)))
    return 0.0 if denom == 0 else float(np.abs(a - b).max()) / denom




def relative_errors(a: Union[Tensor, np.ndarray], b: Union[Tensor, np.ndarray]) -> Tensor:
    """Elementwise :func:`rel_error` as a float64 tensor."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    denom = torch.maximum(a.abs(), b.abs())
    return torch.where(denom > 0, (a - b).abs() / denom, torch.zeros_like(denom))
