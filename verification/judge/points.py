r"""The two points where :func:`verification.judge.verify.verify` checks a function.

* ``small``: ``W = 1e-4 * randn`` as in the assignment (or the caller's ``W``, named ``yours``).
  Most margins are about ``delta`` and active there (the report prints the share), so a wrong
  mask barely shows;
* ``trained``: plain gradient descent on the data loss from there, stopped once at most half
  of the margins are active, where mask bugs show.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from torch_svm.device import DTYPES
from torch_svm.losses import svm_coefficients, svm_margins
from verification.judge.devdata import VerifyData, cached_arrays

__all__: list = []      # internal: import names from here explicitly

_F64 = torch.float64


def active_share(m: torch.Tensor) -> float:
    return float((m > 0).sum()) / (m.shape[0] * (m.shape[1] - 1))


def _small(seed: int, d: int, c: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1e-4 * torch.randn(d, c, generator=g, dtype=_F64)


def _descend(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, delta: float,
             max_steps: int) -> Tuple[torch.Tensor, int]:
    """Plain gradient descent ``W -= lr * X^T B / N`` on the data loss (``B`` of the active
    margins, :func:`torch_svm.losses.svm_coefficients`) with ``lr = 0.1 * delta / rms(X dW)``
    at the start, until at most half the margins are active or ``max_steps``."""
    W, n, lr = W.clone(), X.shape[0], None
    for steps in range(max_steps + 1):
        m = svm_margins(W, X, y, delta=delta)                        # (N, C)
        if steps == max_steps or active_share(m) <= 0.5:
            return W, steps
        dW = X.T @ svm_coefficients((m > 0).to(_F64), y) / n          # (D, C)
        if lr is None:
            lr = 0.1 * delta / max(float((X @ dW).square().mean().sqrt()), 1e-300)
        W -= lr * dW
    raise AssertionError("unreachable")


def default_points(X: torch.Tensor, y: torch.Tensor, num_classes: int, delta: float = 1.0,
                   seed: int = 0, max_steps: int = 200, *, start: Optional[torch.Tensor] = None
                   ) -> Dict[str, Tuple[torch.Tensor, str]]:
    """The two points :func:`verify` uses: ``{name: (W (D, C) float64, description)}``.

    ``small``: ``1e-4 * randn`` (or ``start``, then named ``yours``). ``trained``: plain
    gradient descent on the data loss from there, stopped once at most half the margins are
    active (or after ``max_steps``).
    """
    X = X.to(_F64)
    if start is None:
        first = ("small", _small(seed, X.shape[1], num_classes), "W = 1e-4 * randn, the assignment's")
    else:
        first = ("yours", start.detach().to(_F64).clone(), "the W you passed")
    W, steps = _descend(first[1], X, y, delta, max_steps)
    return {first[0]: (first[1], first[2]),
            "trained": (W, f"after {steps} gradient-descent steps from {first[0]}")}


def cached_points(data: VerifyData, delta: float, dtype: str, seed: int
                  ) -> Dict[str, Tuple[torch.Tensor, str]]:
    """:func:`default_points` for ``data`` with inputs in ``dtype`` ("float32" or "float64"),
    through the cache of :mod:`verification.judge.devdata` (keyed by the data's key, delta, dtype and
    seed) when the data has a key."""
    shape = (data.X.shape[1], data.num_classes)

    def compute() -> Dict[str, np.ndarray]:
        small = _small(seed, *shape)
        W, steps = _descend(small, data.X.to(DTYPES[dtype]).to(_F64), data.y,
                            delta, 200)
        return {"small": small.numpy(), "trained": W.numpy(), "steps": np.array(steps)}

    arrays = cached_arrays(
        "points", f"{data.cache_key}-{delta!r}-{dtype}-{seed}", compute,
        lambda a: (set(a) == {"small", "trained", "steps"} and a["small"].shape == shape
                   and a["trained"].shape == shape and a["small"].dtype == np.float64
                   and a["trained"].dtype == np.float64 and bool(np.isfinite(a["trained"]).all())
                   and a["steps"].shape == () and a["steps"].dtype.kind == "i"),
        cache=data.cache_key is not None)
    return {"small": (torch.from_numpy(arrays["small"]), "W = 1e-4 * randn, the assignment's"),
            "trained": (torch.from_numpy(arrays["trained"]),
                        f"after {int(arrays['steps'])} gradient-descent steps from small")}
