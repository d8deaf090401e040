r"""Default hyperparameters per data set: the learning rate and regularization of a run
(:func:`default_hypers`, :func:`default_init_scale`) and the grid a search covers
(:func:`default_grid`), and :func:`parse_values`, which reads a list of values as people write
them.

digits and CIFAR-10, preprocessed as the assignment does, keep hand-chosen recipes
(:data:`DEFAULT_HYPERS`, :data:`DEFAULT_GRIDS`); any other data are sized by the mean squared
norm of their inputs, so the defaults follow the units of your features.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from torch_svm.data import Dataset
from torch_svm.errors import ArgumentError, ArgumentTypeError, clip

__all__ = ["default_hypers", "default_grid"]

#: Default (lr, reg) per data set, used where TrainConfig leaves them None.
#: cifar10: the assignment's recipe. digits: pixels 0..16 (not 0..255) in 65 columns give
#: gradients about 1e4 times smaller than CIFAR's, so the step is larger and the
#: regularization weaker. Chosen on the validation split from lr 1e-4..1e-2 x reg 0..10 (val
#: accuracy 0.93-0.97 over that whole range: digits are forgiving).
DEFAULT_HYPERS: Dict[str, Tuple[float, float]] = {
    "cifar10": (1e-7, 2.5e4),
    "digits": (1e-3, 1.0),
}
#: Defaults for any other data (your own features): ``lr = USER_LR_GAIN / E||x~||^2`` and
#: ``reg`` such that the weight decay of one step, ``2 lr reg``, is ``USER_DECAY``
#: (:func:`default_hypers`). Chosen with ``benchmarks/data_defaults.py`` over gains 0.1..10 and
#: decays 0..1e-2 on five feature sets: gain 1 with decay 0 or 1e-4 had the best mean
#: validation accuracy, within 0.02 of each set's best setting; decay 1e-3 cost 0.03 on the
#: 100-class set, 1e-2 up to 0.26; gains 0.3 and 3 were within 0.01 of 1, 10 lost 0.04.
USER_LR_GAIN = 1.0
USER_DECAY = 1e-4

#: Default search per data set: (learning rates, regularization strengths), as parse_values spells them.
DEFAULT_GRIDS: Dict[str, Tuple[str, str]] = {
    "cifar10": ("1e-7,5e-7", "1e3,5e3,2.5e4"),
    "digits": ("1e-4:1e-2:3", "1e-2:1:3"),
}
#: Your own data: (lr factors, reg factors) applied to :func:`default_hypers`.
USER_GRID: Tuple[Tuple[float, ...], Tuple[float, ...]] = ((1 / 3, 1.0, 3.0), (0.1, 1.0, 10.0))



def default_hypers(data: Dataset) -> Tuple[float, float]:
    r"""The default ``(lr, reg)`` for ``data``.

    digits and CIFAR-10 with the assignment's preprocessing (centred, unscaled pixels):
    :data:`DEFAULT_HYPERS`. Any other data (your own, or standardized pixels) are sized by the
    mean squared norm of their train inputs :math:`P = \mathbb{E}\,\|\tilde x\|^2` (bias column
    included, after centring and scaling):

    .. math::

        \text{lr} = \frac{g}{P}, \qquad \text{reg} = \frac{d}{2\,\text{lr}},

    with :math:`g` = :data:`USER_LR_GAIN` and :math:`d` = :data:`USER_DECAY`, each rounded to
    two significant digits. The step :math:`1 / P` does not depend on the units of the
    features, and it stays below :math:`2 / \lambda_{max}` of the inputs' second-moment
    matrix (whose trace is :math:`P`), the bound past which a linear model's SGD diverges;
    :math:`2\,\text{lr}\,\text{reg} = d` is the fraction by which the regularizer shrinks W
    at each step. Both hand-chosen recipes sit near that step: lr
    :math:`\cdot P` is about 1 for digits (lr 1e-3) and for CIFAR-10 (lr 1e-7).
    """
    recipe = assignment_recipe(data)
    if recipe is not None:
        return recipe
    lr = float(f"{USER_LR_GAIN / data.mean_square_norm:.2g}")
    return lr, float(f"{USER_DECAY / (2 * lr):.2g}")


def default_init_scale(data: Dataset) -> float:
    r"""The default ``init_scale`` for ``data``: the assignment's 0.001 for digits and
    CIFAR-10, and for other data 0.001 divided by the root mean square input entry
    :math:`\sqrt{P / D}` (two significant digits), so that the first scores are as small as
    0.001 makes them on unit-variance features, whatever the units of yours."""
    if assignment_recipe(data) is not None:
        return 0.001
    return float(f"{0.001 / math.sqrt(data.mean_square_norm / data.num_features):.2g}")


def assignment_recipe(data: Dataset) -> Optional[Tuple[float, float]]:
    """The assignment's (lr, reg) (:data:`DEFAULT_HYPERS`) when ``data`` is a data set it was tuned for, preprocessed as
    the assignment does (centred, unscaled); else None."""
    if not isinstance(data, Dataset):
        raise ArgumentTypeError(f"data must be a torch_svm.data.Dataset, got {type(data).__name__}")
    if data.config.standardize or not data.config.center:
        return None
    return DEFAULT_HYPERS.get(data.source)


def default_grid(data: Dataset) -> Tuple[List[float], List[float]]:
    """The default (learning rates, regularization strengths) to search for ``data``:
    :data:`DEFAULT_GRIDS` for digits and CIFAR-10 as the assignment preprocesses them, else :data:`USER_GRID` around the data's
    default lr and reg (two significant digits)."""
    if assignment_recipe(data) is not None:
        lrs, regs = DEFAULT_GRIDS[data.source]
        return parse_values(lrs), parse_values(regs)
    lr, reg = default_hypers(data)
    return ([float(f"{lr * f:.2g}") for f in USER_GRID[0]],
            [float(f"{reg * f:.2g}") for f in USER_GRID[1]])


def parse_values(text: str, *, integer: bool = False) -> List[float]:
    """``"a,b,c"`` (a list) or ``"lo:hi:n"`` (``n`` log-spaced values from lo to hi, 0 < lo <= hi).

    With ``integer`` the values are rounded to ints. Raises ArgumentError echoing the text.
    """
    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            lo, hi, n = float(lo), float(hi), int(n)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi and 1 <= n <= 10_000):
                raise ValueError
            values = np.geomspace(lo, hi, n).tolist() if n > 1 else [lo]
        else:
            values = [float(v) for v in text.split(",")]
        if not all(math.isfinite(v) for v in values):
            raise ValueError
        if integer:
            values = [int(round(v)) for v in values]
    except (ValueError, OverflowError):
        raise ArgumentError(f"expected a list 'a,b,c' or a log range 'lo:hi:n' (0 < lo <= hi, "
                         f"1 <= n <= 10000) of finite numbers, got {clip(repr(text), 100)}") from None
    return values
