r"""Name a common bug from the pattern of the difference between a student's result and the reference.

With ``m_ij`` the margins, ``P`` an ``(N, C)`` matrix of per-term coefficients (0 at
``j = y_i``) and ``G(P) = X^T B / N`` where ``B = P`` with ``B_{i y_i} = -sum_j P_ij``, the
reference gradient is ``G(1[m > 0]) + 2 reg W``. Each common bug changes ``dW`` by a known
matrix times a coefficient:

* regularization gradient missing / halved: ``2 reg W``, coefficient -1 / -1/2;
* dW not divided by N / divided by C: ``G(1[m > 0])``, N-1 / 1/C-1;
* correct-class column not updated / wrong sign: the ``y_i``-column part of ``G(1[m > 0])``, -1 / -2;
* the correct class's own margin counted in its column: ``-X^T Y / N`` (``Y`` one-hot), +1;
* inactive terms counted (mask taken after clamping): ``G(1[m <= 0])``, +1;
* delta left out of the mask: ``G(1[0 < m <= delta])``, -1;
* the margin as coefficient instead of 1: ``G(max(0, m)) - G(1[m > 0])``, +1;
* one example wrong: example ``i``'s part of ``G(1[m > 0])``, -1 when it is skipped;

and the loss by ``reg sum W^2`` (missing / halved: -1 / -1/2), the data loss (``N-1``, or
``1/C - 1``: torch's MultiMarginLoss divides by C), ``delta`` (+1: the correct class's margin,
always ``delta``, was counted) or one example's hinge sum over N. :func:`diagnose` stacks the
difference of every check (every point and reg) into one vector, fits each pattern by least
squares, and reports the best fit whose residual is under 5 % of the difference.
"""
from __future__ import annotations

import math

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from torch_svm.losses import svm_coefficients, svm_margins

__all__ = ["diagnose", "RESIDUAL_LIMIT"]

#: A pattern explains a difference when the least-squares residual is below this share of it.
RESIDUAL_LIMIT = 0.05


def _near(c: float, target: float) -> bool:
    return abs(c - target) <= 0.02 * max(1.0, abs(target))


def _grad_of(P: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``G(P) = X^T B / N`` with ``B`` :func:`torch_svm.losses.svm_coefficients` of ``P: (N, C)``."""
    return X.T @ svm_coefficients(P, y) / X.shape[0]


def _gradient_bases(ev, X: torch.Tensor, y: torch.Tensor, delta: float) -> Dict[str, torch.Tensor]:
    m = svm_margins(ev.W, X, y, delta=delta)                          # (N, C), -inf at y_i
    term = torch.ones_like(m, dtype=torch.bool).scatter_(1, y[:, None], False)  # j != y_i
    active = (m > 0).to(m.dtype)                                      # 0 at y_i
    own = svm_coefficients(active, y) - active                        # only the y_i column
    return {
        "reg": 2 * ev.reg * ev.W,
        "data": _grad_of(active, X, y),
        "correct": X.T @ own / X.shape[0],
        "self": -X.T @ (~term).to(m.dtype) / X.shape[0],
        "inactive": _grad_of(((m <= 0) & term).to(m.dtype), X, y),
        "band": _grad_of(((m > 0) & (m <= delta)).to(m.dtype), X, y),
        "margin": _grad_of(m.clamp(min=0), X, y),
        "_B": svm_coefficients(active, y),                            # per-example rows
    }


# name, bases, and the message for the fitted coefficients (None: no named bug)
_Message = Callable[[Sequence[float], int, int], Optional[str]]


def _reg_grad(c, n, k):
    if _near(c[0], -1):
        return "regularization gradient missing: add 2 * reg * W to dW"
    if _near(c[0], -0.5):
        return ("regularization gradient halved: reg * W instead of 2 * reg * W "
                "(the derivative of reg * sum(W * W) is 2 * reg * W)")
    return f"regularization gradient is {1 + c[0]:.4g} x 2 * reg * W instead of 2 * reg * W"


def _scale_grad(c, n, k):
    if _near(c[0], n - 1):
        return f"dW not divided by N: the data gradient is N = {n} times too large (dW /= num_train)"
    if _near(c[0], 1 / k - 1):
        return (f"the data gradient is 1/C = 1/{k} of the reference: it was divided by the number "
                f"of classes (torch.nn.MultiMarginLoss's convention)")
    return f"the data gradient is {1 + c[0]:.4g} x the reference (a wrong normalisation)"


def _correct_grad(c, n, k):
    if _near(c[0], -1):
        return ("the correct-class column is not updated: for each positive margin, "
                "dW[:, y[i]] -= X[i] is missing")
    if _near(c[0], -2):
        return ("wrong sign on the correct-class update: dW[:, y[i]] must decrease by X[i] "
                "for each positive margin, not increase")
    return f"the correct-class update is {1 + c[0]:.4g} x what it should be"


def _self_grad(c, n, k):
    if _near(c[0], 1):
        return ("the correct class's own margin (always delta > 0) is counted as a positive margin: "
                "dW[:, y[i]] loses one X[i] too many; zero margins[np.arange(N), y] before the mask")
    return None


def _inactive_grad(c, n, k):
    if _near(c[0], 1):
        return ("inactive margins are counted: the mask is taken after clamping "
                "(np.maximum(0, margins) >= 0 is always true); use margins > 0 on the unclamped margins")
    return None


def _band_grad(c, n, k):
    if _near(c[0], -1):
        return ("margins between 0 and delta are not counted: the mask leaves delta out "
                "(scores[j] - scores[y] > 0); use scores[j] - scores[y] + delta > 0")
    return None


def _margin_grad(c, n, k):
    if _near(c[0], 1) and _near(c[1], -1):
        return ("each term is weighted by its margin: the hinge's derivative is 1 where the "
                "margin is > 0, not the margin (that is half the squared hinge's gradient)")
    return None


_GRAD_PATTERNS = (
    ("regularization_gradient", ("reg",), _reg_grad),
    ("normalisation", ("data",), _scale_grad),
    ("correct_class", ("correct",), _correct_grad),
    ("correct_margin_counted", ("self",), _self_grad),
    ("mask_after_clamp", ("inactive",), _inactive_grad),
    ("mask_without_delta", ("band",), _band_grad),
    ("margin_as_coefficient", ("margin", "data"), _margin_grad),
)


def _reg_loss(c, n, k):
    if _near(c[0], -1):
        return "regularization loss missing: add reg * np.sum(W * W)"
    if _near(c[0], -0.5):
        return ("regularization loss halved: 0.5 * reg * sum(W * W); the assignment's loss "
                "is reg * sum(W * W)")
    return f"regularization loss is {1 + c[0]:.4g} x reg * sum(W * W)"


def _scale_loss(c, n, k):
    if _near(c[0], 1 / k - 1):
        return (f"the loss is 1/C = 1/{k} of the reference: the sum over classes was divided by C "
                f"(torch.nn.MultiMarginLoss's convention); the assignment only divides by N")
    if _near(c[0], n - 1):
        return f"the loss is not divided by N = {n} (loss /= num_train)"
    return f"the data loss is {1 + c[0]:.4g} x the reference (a wrong normalisation)"


def _delta_loss(c, n, k):
    if _near(c[0], 1):
        return ("the loss is off by delta per example: the correct class's margin (always delta) "
                "is counted; set margins[np.arange(N), y] = 0 or skip j == y[i]")
    return f"the loss is off by {c[0]:.4g} x delta per example"


_LOSS_PATTERNS = (
    ("regularization_loss", ("reg",), _reg_loss),
    ("normalisation", ("data",), _scale_loss),
    ("correct_class_margin", ("delta",), _delta_loss),
)


def _fit(d: torch.Tensor, A: torch.Tensor) -> Optional[tuple]:
    """Least squares ``d ~ A c``: ``(c, ||d - A c|| / ||d||)``, None when a column is all 0."""
    if (A.abs().amax(0) == 0).any():
        return None
    c = torch.linalg.lstsq(A, d[:, None], driver="gelsd").solution[:, 0]
    return c, float((d - A @ c).norm() / d.norm())


def _best(d: torch.Tensor, columns: Dict[str, torch.Tensor], patterns, n: int, k: int,
          what: str) -> Optional[Dict[str, Any]]:
    best = None
    for name, bases, message in patterns:
        fitted = _fit(d, torch.stack([columns[b] for b in bases], 1))
        if fitted is None or fitted[1] > RESIDUAL_LIMIT:
            continue
        coef = [float(v) for v in fitted[0]]
        text = message(coef, n, k)
        if text is not None and (best is None or fitted[1] < best["residual"]):
            best = {"what": what, "pattern": name, "message": text, "coefficients": coef,
                    "residual": fitted[1]}
    return best


def _one_example(d_parts, B_parts, X, what: str, n: int) -> Optional[Dict[str, Any]]:
    """The best fit ``d ~ c_i * (example i's part)`` over ``i``, from per-check pieces.

    For the gradient a piece is ``(diff (D, C), B (N, C))``, example i's part ``x_i b_i^T / N``;
    for the loss ``(diff scalar, l (N,))``, example i's part ``l_i / N``.
    """
    num = torch.zeros(n, dtype=torch.float64)
    den = torch.zeros(n, dtype=torch.float64)
    total = 0.0
    for d, B in zip(d_parts, B_parts):
        total += float((d * d).sum())
        if what == "gradient":
            num += ((X @ d) * B).sum(1) / n
            den += X.square().sum(1) * B.square().sum(1) / n**2
        else:
            num += d * B / n
            den += B.square() / n**2
    if total == 0:
        return None
    score = torch.where(den > 0, num.square() / den.clamp(min=1e-300), 0.0)
    i = int(score.argmax())
    residual = max(total - float(score[i]), 0.0) ** 0.5 / total ** 0.5
    if den[i] == 0 or residual > RESIDUAL_LIMIT:
        return None
    c = float(num[i] / den[i])
    text = (f"example {i} is left out (a loop that stops early, e.g. range(num_train - 1)?)"
            if _near(c, -1) else f"example {i}'s contribution is {1 + c:.4g} x what it should be")
    return {"what": what, "pattern": "one_example", "message": text, "coefficients": [c],
            "residual": residual, "example": i}


def diagnose(evaluations: List[Any], X: torch.Tensor, y: torch.Tensor, delta: float) -> List[Dict[str, Any]]:
    """Diagnoses of the loss and of the gradient (at most one each), as dicts with ``what``
    ("loss" or "gradient"), ``pattern``, ``message``, ``coefficients``, ``residual`` (share of
    the difference the fit leaves), from the per-check evaluations of :func:`verification.verify.verify`."""
    n, k = X.shape[0], evaluations[0].W.shape[1]
    out = []
    # the loss: one difference per check
    dL = torch.tensor([ev.loss - ev.ref_loss for ev in evaluations], dtype=torch.float64)
    if not all(math.isfinite(ev.loss) for ev in evaluations):
        out.append({"what": "loss", "pattern": "non_finite", "coefficients": [], "residual": 0.0,
                    "message": "the loss is NaN or inf (a division by zero, or log/exp overflow?)"})
    elif any(abs(ev.loss - ev.ref_loss) > ev.loss_tol for ev in evaluations):
        columns = {
            "reg": torch.tensor([ev.ref_reg_loss for ev in evaluations], dtype=torch.float64),
            "data": torch.tensor([ev.ref_loss - ev.ref_reg_loss for ev in evaluations], dtype=torch.float64),
            "delta": torch.full((len(evaluations),), float(delta), dtype=torch.float64),
        }
        found = (_best(dL, columns, _LOSS_PATTERNS, n, k, "loss")
                 or _one_example(list(dL), [ev.example_losses for ev in evaluations], X, "loss", n))
        if found is not None:
            out.append(found)
    # the gradient: the differences of every check stacked into one vector
    bad = sorted({tuple(kj) for ev in evaluations for kj in (~torch.isfinite(ev.dW)).nonzero().tolist()})
    if bad:
        where = ", ".join(f"W[{a}, {b}]" for a, b in bad[:5]) + (", ..." if len(bad) > 5 else "")
        out.append({"what": "gradient", "pattern": "non_finite", "coefficients": [], "residual": 0.0,
                    "message": f"dW is NaN or inf at {len(bad)} coordinate(s): {where}",
                    "coordinates": [list(w) for w in bad]})
    elif any(bool(ev.ref_bad.any()) for ev in evaluations):
        diffs = [ev.dW - torch.minimum(torch.maximum(ev.dW, ev.lo), ev.hi) for ev in evaluations]
        bases = [_gradient_bases(ev, X, y, delta) for ev in evaluations]
        d = torch.cat([t.reshape(-1) for t in diffs])
        columns = {name: torch.cat([b[name].reshape(-1) for b in bases])
                   for name in bases[0] if not name.startswith("_")}
        found = (_best(d, columns, _GRAD_PATTERNS, n, k, "gradient")
                 or _one_example(diffs, [b["_B"] for b in bases], X, "gradient", n))
        if found is None:
            wrong = sorted({tuple(kj) for ev in evaluations for kj in ev.ref_bad.nonzero().tolist()})
            if len(wrong) <= 3 and d.numel() > 10 * len(evaluations):
                where = ", ".join(f"W[{a}, {b}]" for a, b in wrong)
                found = {"what": "gradient", "pattern": "few_coordinates",
                         "message": f"dW is wrong only at {where}; every other coordinate is right",
                         "coefficients": [], "residual": 0.0, "coordinates": [list(w) for w in wrong]}
        if found is not None:
            out.append(found)
    return out
