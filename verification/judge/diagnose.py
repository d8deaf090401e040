r"""Name a common bug from the pattern of the difference between a student's result and the reference.

With ``m_ij`` the margins, ``P`` an ``(N, C)`` matrix of per-term coefficients (0 at
``j = y_i``) and ``G(P) = X^T B / N`` where ``B = P`` with ``B_{i y_i} = -sum_j P_ij``
(:func:`torch_svm.losses.svm_coefficients`), the reference gradient is ``G(1[m > 0]) + 2 r W``
with ``r`` the reference's coefficient of ``sum W^2`` (``reg``, or ``reg / 2`` in the older
``0.5 * reg`` convention). Each common bug changes ``dW`` by a known matrix times a coefficient:

* regularization gradient missing / halved / divided by N (added before ``dW /= num_train``):
  ``2 r W``, coefficient -1 / -1/2 / 1/N - 1;
* dW not divided by N / divided by C: ``G(1[m > 0])``, N-1 / 1/C-1;
* correct-class column not updated / wrong sign: the ``y_i``-column part of ``G(1[m > 0])``, -1 / -2;
* the correct class's own margin counted in its column: ``-X^T Y / N`` (``Y`` one-hot), +1;
* inactive terms counted (mask taken after clamping): ``G(1[m <= 0])``, +1;
* delta left out of the mask: ``G(1[0 < m <= delta])``, -1;
* the margin as coefficient instead of 1: ``G(max(0, m)) - G(1[m > 0])``, +1;
* examples left out (a ``return`` or ``break`` inside the loop over examples, ``range(N - 1)``):
  example ``i``'s part ``x_i b_i^T / N`` with coefficient -1 for each example left out. All
  ``N`` per-example coefficients are fitted at once (normal equations, ``N x N``); the
  diagnosis needs every one of them to be 0 or -1;

and the loss by ``r sum W^2`` (missing / halved / divided by N), the data loss (``N-1``, or
``1/C - 1``: torch's MultiMarginLoss divides by C), ``delta`` (+1: the correct class's margin,
always ``delta``, was counted) or the examples left out (``-l_i / N`` each, the same examples
as the gradient's, or an exact fit). Halved regularization in both the loss and the gradient is
named as the older course convention (``0.5 * reg * sum(W * W)`` with ``reg * W``).

:func:`diagnose` stacks the difference of every check (every point and reg) into one vector,
fits each pattern by least squares, and reports the best fit whose residual is under
:data:`RESIDUAL_LIMIT` of the difference and whose coefficient is one a known bug gives. When
none fits it says so ("no_known_pattern") rather than guess.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from torch_svm.losses import svm_coefficients
from verification.judge.evaluation import RESIDUAL_LIMIT, Diagnosis, Evaluation
from verification.judge.left_out import _examples, _loss_examples
from verification.judge.locate import locate_gradient, locate_loss

__all__: list = []      # internal: import names from here explicitly

#: The per-example fit solves an N x N system: skipped above this many examples.
_MAX_EXAMPLES = 1000
_F64 = torch.float64




def _near(c: float, target: float, tol: float = 0.02) -> bool:
    return abs(c - target) <= tol * max(1.0, abs(target))


def _grad_of(P: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``G(P) = X^T B / N`` with ``B`` :func:`torch_svm.losses.svm_coefficients` of ``P: (N, C)``."""
    return X.T @ svm_coefficients(P, y) / X.shape[0]


def _gradient_bases(ev: Evaluation, X: torch.Tensor, y: torch.Tensor, delta: float) -> Dict[str, torch.Tensor]:
    m = ev.margins                                                    # (N, C), -inf at y_i
    term = torch.ones_like(m, dtype=torch.bool).scatter_(1, y[:, None], False)  # j != y_i
    active = (m > 0).to(m.dtype)                                      # 0 at y_i
    own = svm_coefficients(active, y) - active                        # only the y_i column
    return {
        "reg": 2 * ev.ref_reg * ev.W,
        "data": _grad_of(active, X, y),
        "correct": X.T @ own / X.shape[0],
        "self": -X.T @ (~term).to(m.dtype) / X.shape[0],
        "inactive": _grad_of(((m <= 0) & term).to(m.dtype), X, y),
        "band": _grad_of(((m > 0) & (m <= delta)).to(m.dtype), X, y),
        "margin": _grad_of(m.clamp(min=0), X, y),
        "correct_margin": X.T @ (svm_coefficients(m.clamp(min=0), y) - m.clamp(min=0)) / X.shape[0],
    }


class _Context:
    """What the messages need: N, C, and the regularization convention's words."""

    def __init__(self, n: int, k: int, reg_scale: float):
        self.n, self.k, self.half, self.scale = n, k, reg_scale != 1.0, reg_scale
        self.tight = min(0.02, 0.25 / n)          # tells -1 from 1/N - 1
        self.grad_term = "reg * W" if self.half else "2 * reg * W"
        self.loss_term = "0.5 * reg * np.sum(W * W)" if self.half else "reg * np.sum(W * W)"


_Message = Callable[[Sequence[float], _Context], Optional[str]]


def _reg_grad(c, x: _Context):
    if _near(c[0], 1 / x.n - 1, x.tight):
        return (f"the regularization gradient is divided by N = {x.n}: {x.grad_term} is added "
                f"before dW /= num_train; add it after the division")
    if _near(c[0], -1, x.tight):
        return f"regularization gradient missing: add {x.grad_term} to dW"
    if not x.half and _near(c[0], -0.5):
        return ("regularization gradient halved: reg * W instead of 2 * reg * W "
                "(the derivative of reg * sum(W * W) is 2 * reg * W)")
    if x.half and _near(c[0], 1):
        return ("the regularization gradient is 2 * reg * W, twice the reg * W of the "
                "0.5 * reg * sum(W * W) convention you are judged against")
    return _reg_factor("gradient", c[0], 2 * x.scale, "reg * W", x.grad_term)


def _scale_grad(c, x: _Context):
    if _near(c[0], x.n - 1):
        return f"dW not divided by N: the data gradient is N = {x.n} times too large (dW /= num_train)"
    if _near(c[0], 1 / x.k - 1):
        return (f"the data gradient is 1/C = 1/{x.k} of the reference: it was divided by the number "
                f"of classes (torch.nn.MultiMarginLoss's convention)")
    return None


def _correct_grad(c, x: _Context):
    if _near(c[0], -1):
        return ("the correct-class column is not updated: for each positive margin, "
                "dW[:, y[i]] -= X[i] is missing")
    if _near(c[0], -2):
        return ("wrong sign on the correct-class update: dW[:, y[i]] must decrease by X[i] "
                "for each positive margin, not increase")
    return None


def _self_grad(c, x: _Context):
    if _near(c[0], 1):
        return ("the correct class's own margin (always delta > 0) is counted as a positive margin: "
                "dW[:, y[i]] loses one X[i] too many; zero margins[np.arange(N), y] before the mask")
    return None


def _inactive_grad(c, x: _Context):
    if _near(c[0], 1):
        return ("inactive margins are counted: the mask is taken after clamping "
                "(np.maximum(0, margins) >= 0 is always true); use margins > 0 on the unclamped margins")
    return None


def _band_grad(c, x: _Context):
    if _near(c[0], -1):
        return ("margins between 0 and delta are not counted: the mask leaves delta out "
                "(scores[j] - scores[y] > 0); use scores[j] - scores[y] + delta > 0")
    return None


def _margin_grad(c, x: _Context):
    if _near(c[0], 1) and _near(c[1], -1):
        return ("each term is weighted by its margin: the hinge's derivative is 1 where the "
                "margin is > 0, not the margin (that is half the squared hinge's gradient)")
    return None


def _correct_from_margins(c, x: _Context):
    if _near(c[0], 1) and _near(c[1], -1):
        return ("the correct class's coefficient is minus the sum of the positive margins' values; "
                "it is minus their count: each positive margin moves dW[:, y[i]] by -X[i] "
                "(coef[np.arange(N), y] = -(margins > 0).sum(axis=1))")
    return None


_GRAD_PATTERNS: Tuple[Tuple[str, Tuple[str, ...], _Message], ...] = (
    ("regularization_gradient", ("reg",), _reg_grad),
    ("normalisation", ("data",), _scale_grad),
    ("correct_class", ("correct",), _correct_grad),
    ("correct_margin_counted", ("self",), _self_grad),
    ("mask_after_clamp", ("inactive",), _inactive_grad),
    ("mask_without_delta", ("band",), _band_grad),
    ("margin_as_coefficient", ("margin", "data"), _margin_grad),
    ("correct_class_from_margins", ("correct_margin", "correct"), _correct_from_margins),
)


def _reg_loss(c, x: _Context):
    if _near(c[0], 1 / x.n - 1, x.tight):
        return (f"the regularization loss is divided by N = {x.n}: {x.loss_term} is added "
                f"before loss /= num_train; add it after the division")
    if _near(c[0], -1, x.tight):
        return f"regularization loss missing: add {x.loss_term}"
    if not x.half and _near(c[0], -0.5):
        return ("regularization loss halved: 0.5 * reg * sum(W * W); the 2020 assignment's loss "
                "is reg * sum(W * W)")
    if x.half and _near(c[0], 1):
        return ("the regularization loss is reg * sum(W * W), twice the 0.5 * reg * sum(W * W) "
                "of the convention you are judged against")
    return _reg_factor("loss", c[0], x.scale, "reg * sum(W * W)", x.loss_term)


def _reg_factor(what: str, c: float, scale: float, term: str, expected: str) -> Optional[str]:
    """Any other factor on the regularization term (a typo such as 0.05 * reg), named by the
    fitted value: the term is ``(1 + c)`` times the expected one."""
    factor = 1 + c
    if _near(factor, 1) or _near(factor, 0):
        return None
    return (f"the regularization {what} is {factor * scale:.3g} * {term}, {factor:.3g} times the "
            f"expected {expected}: check its coefficient")


def _scale_loss(c, x: _Context):
    if _near(c[0], 1 / x.k - 1):
        return (f"the loss is 1/C = 1/{x.k} of the reference: the sum over classes was divided by C "
                f"(torch.nn.MultiMarginLoss's convention); the assignment only divides by N")
    if _near(c[0], x.n - 1):
        return f"the loss is not divided by N = {x.n} (loss /= num_train)"
    return None


def _delta_loss(c, x: _Context):
    if _near(c[0], 1):
        return ("the loss is off by delta per example: the correct class's margin (always delta) "
                "is counted; set margins[np.arange(N), y] = 0 or skip j == y[i]")
    return None


def _count_loss(c, x: _Context):
    if _near(c[0], 1) and _near(c[1], -1):
        return ("the loss counts the positive margins instead of summing them: the hinge is "
                "np.maximum(0, margins).sum(), not (margins > 0).sum()")
    return None


_LOSS_PATTERNS: Tuple[Tuple[str, Tuple[str, ...], _Message], ...] = (
    ("regularization_loss", ("reg",), _reg_loss),
    ("normalisation", ("data",), _scale_loss),
    ("correct_class_margin", ("delta",), _delta_loss),
    ("loss_counts_margins", ("count", "data"), _count_loss),
)


def _fit(d: torch.Tensor, A: torch.Tensor) -> Optional[Tuple[torch.Tensor, float]]:
    """Least squares ``d ~ A c``: ``(c, ||d - A c|| / ||d||)``, None when a column is all 0."""
    if (A.abs().amax(0) == 0).any():
        return None
    c = torch.linalg.lstsq(A, d[:, None], driver="gelsd").solution[:, 0]
    return c, float((d - A @ c).norm() / d.norm())


def _best(d: torch.Tensor, columns: Dict[str, torch.Tensor], patterns, x: _Context,
          what: str) -> Optional[Diagnosis]:
    """The pattern that fits ``d`` best with a named coefficient; failing that, the best pair of
    one-column patterns, each with a named coefficient (two bugs at once, e.g. the
    correct-class update missing and the regularization gradient halved)."""
    best = None
    for name, bases, message in patterns:
        fitted = _fit(d, torch.stack([columns[b] for b in bases], 1))
        if fitted is None or fitted[1] > RESIDUAL_LIMIT:
            continue
        coef = [float(v) for v in fitted[0]]
        text = message(coef, x)
        if text is not None and (best is None or fitted[1] < best.residual):
            best = Diagnosis(what, name, text, coef, fitted[1])
    if best is not None:
        return best
    single = [(name, bases[0], message) for name, bases, message in patterns if len(bases) == 1]
    for (n1, b1, m1), (n2, b2, m2) in itertools.combinations(single, 2):
        fitted = _fit(d, torch.stack([columns[b1], columns[b2]], 1))
        if fitted is None or fitted[1] > RESIDUAL_LIMIT:
            continue
        c1, c2 = (float(v) for v in fitted[0])
        t1, t2 = m1([c1], x), m2([c2], x)
        if t1 and t2 and (best is None or fitted[1] < best.residual):
            best = Diagnosis(what, f"{n1}+{n2}", f"two bugs: {t1}; and {t2}", [c1, c2], fitted[1])
    return best


# --------------------------------------------------------------------------- the two parts

def _diagnose_loss(evaluations: List[Evaluation], x: _Context, delta: float,
                   left: Optional[List[int]]) -> Optional[Diagnosis]:
    if not all(math.isfinite(ev.loss) for ev in evaluations):
        return Diagnosis("loss", "non_finite", "the loss is NaN or inf (an overflow, a division by "
                         "zero, or an int too large for a float?)")
    if all(abs(ev.loss - ev.ref_loss) <= ev.loss_tol for ev in evaluations):
        return None
    if all(ev.loss == 0 for ev in evaluations):
        return Diagnosis("loss", "zero_loss", "the loss is 0 at every check: it is not computed "
                         "(the starter code's loss = 0.0 is returned as it is); fill in the part "
                         "that computes the loss")
    found = _loss_examples(evaluations, x.n, left, lambda c: _reg_loss([c], x))
    if found is None:
        dL = torch.tensor([ev.loss - ev.ref_loss for ev in evaluations], dtype=_F64)
        columns = {
            "reg": torch.tensor([ev.ref_reg_loss for ev in evaluations], dtype=_F64),
            "data": torch.tensor([ev.ref_loss - ev.ref_reg_loss for ev in evaluations], dtype=_F64),
            "delta": torch.full((len(evaluations),), float(delta), dtype=_F64),
            "count": torch.tensor([float((ev.margins > 0).sum()) / x.n for ev in evaluations],
                                  dtype=_F64),
        }
        found = _best(dL, columns, _LOSS_PATTERNS, x, "loss")
    return found or Diagnosis("loss", "no_known_pattern", "no known bug fits how the loss differs "
                              f"from the reference; where it differs: {locate_loss(evaluations)}")


def _diagnose_gradient(evaluations: List[Evaluation], X: torch.Tensor, y: torch.Tensor,
                       delta: float, x: _Context) -> Optional[Diagnosis]:
    bad = sorted({tuple(kj) for ev in evaluations for kj in (~torch.isfinite(ev.dW)).nonzero().tolist()})
    if bad:
        where = ", ".join(f"W[{a}, {b}]" for a, b in bad[:5]) + (", ..." if len(bad) > 5 else "")
        return Diagnosis("gradient", "non_finite", f"dW is NaN or inf at {len(bad)} coordinate(s): {where}",
                         coordinates=bad[:100])
    if not any(bool(ev.wrong.any()) for ev in evaluations):
        return None
    if not any(bool(ev.dW.any()) for ev in evaluations):
        return Diagnosis("gradient", "zero_gradient", "dW is all zeros at every check: the gradient "
                         "is not computed (the starter code's dW = np.zeros(W.shape) is returned "
                         "as it is); fill in the part that computes dW")
    diffs = [ev.dW - ev.nearest for ev in evaluations]
    bases = [_gradient_bases(ev, X, y, delta) for ev in evaluations]
    d = torch.cat([t.reshape(-1) for t in diffs])
    columns = {name: torch.cat([b[name].reshape(-1) for b in bases]) for name in bases[0]}
    found = (_best(d, columns, _GRAD_PATTERNS, x, "gradient")
             or _examples(evaluations, diffs, X, y, lambda c: _reg_grad([c], x)))
    if found is None:
        wrong = sorted({tuple(kj) for ev in evaluations for kj in ev.wrong.nonzero().tolist()})
        if len(wrong) <= 3 and d.numel() > 10 * len(evaluations):
            where = ", ".join(f"W[{a}, {b}]" for a, b in wrong)
            found = Diagnosis("gradient", "few_coordinates",
                              f"dW is wrong only at {where}; every other coordinate is right",
                              coordinates=wrong)
    return found or Diagnosis("gradient", "no_known_pattern", "no known bug fits how dW differs "
                              f"from the reference; where it differs: {locate_gradient(evaluations, diffs)} "
                              f"(the worst coordinates are below)")


def _convention(loss: Optional[Diagnosis], grad: Optional[Diagnosis], x: _Context) -> Optional[Diagnosis]:
    """Both halves of the regularization in the other convention: one diagnosis, named."""
    if not (loss and grad and loss.pattern == "regularization_loss"
            and grad.pattern == "regularization_gradient"):
        return None
    target = 1.0 if x.half else -0.5
    if not (_near(loss.coefficients[0], target) and _near(grad.coefficients[0], target)):
        return None
    if x.half:
        return Diagnosis("both", "full_reg_convention",
                         "the regularization is the 2020 assignment's, reg * sum(W * W) with gradient "
                         "2 * reg * W: consistent with itself, but you are judged against the older "
                         "0.5 * reg * sum(W * W) convention; judge with --reg-convention 2020 "
                         "(reg_convention='2020') if your course uses the 2020 loss",
                         [loss.coefficients[0], grad.coefficients[0]], max(loss.residual, grad.residual))
    return Diagnosis("both", "half_reg_convention",
                     "the regularization follows the older course convention, 0.5 * reg * sum(W * W) "
                     "with gradient reg * W: consistent with itself, but the 2020 assignment's loss is "
                     "reg * sum(W * W) with gradient 2 * reg * W; if your course defines the 0.5 "
                     "convention, judge with --reg-convention half (reg_convention='half')",
                     [loss.coefficients[0], grad.coefficients[0]], max(loss.residual, grad.residual))


def diagnose(evaluations: List[Evaluation], X: torch.Tensor, y: torch.Tensor, delta: float,
             reg_scale: float = 1.0) -> List[Diagnosis]:
    """Diagnoses of the loss and of the gradient (at most one each, or one for both), from the
    per-check :class:`~verification.judge.evaluation.Evaluation` of :func:`verification.judge.verify.verify`.

    Args:
        evaluations: every check (point x reg). X: ``(N, D)`` float64. y: ``(N,)`` int64.
        delta: the margin. reg_scale: the regularization convention judged against (1 or 0.5).
    """
    x = _Context(X.shape[0], evaluations[0].W.shape[1], reg_scale)
    grad = _diagnose_gradient(evaluations, X, y, delta, x)
    left = grad.examples if grad is not None and grad.pattern.split("+")[0] in (
        "prefix_of_examples", "examples_left_out") else None
    loss = _diagnose_loss(evaluations, x, delta, left)
    both = _convention(loss, grad, x)
    return [both] if both else [d for d in (loss, grad) if d is not None]
