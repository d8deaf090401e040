"""Student implementations of the CS231n SVM loss, as students write them: correct ones with
different kink conventions and precisions, and buggy ones, each with one realistic bug.

The module imports numpy only (as a student's file does), so a worker process that imports
it stays light. Every function has the assignment's signature ``f(W, X, y, reg)`` plus ``delta`` as a keyword
default, and returns ``(loss, dW)``. ``CORRECT`` and ``BUGGY`` map names to functions; each
buggy function's docstring names the bug and ``EXPECTED_DIAGNOSIS`` the pattern the verifier
should report (None where no pattern is expected).
"""
import numpy as np


def _scores_margins(W, X, y, delta):
    """Margins with the correct class zeroed, as most vectorised solutions start."""
    n = X.shape[0]
    scores = X.dot(W)                                              # (N, C)
    correct = scores[np.arange(n), y][:, None]                     # (N, 1)
    margins = scores - correct + delta
    margins[np.arange(n), y] = 0
    return margins


def _vectorized(W, X, y, reg, delta, mask, loss_margins=None):
    """The usual vectorised solution with the term coefficients given by ``mask(margins)``."""
    n = X.shape[0]
    margins = _scores_margins(W, X, y, delta)
    hinge = np.maximum(0, margins) if loss_margins is None else loss_margins
    loss = hinge.sum() / n + reg * np.sum(W * W)
    coef = mask(margins).astype(X.dtype)
    coef[np.arange(n), y] = 0
    coef[np.arange(n), y] = -coef.sum(axis=1)
    dW = X.T.dot(coef) / n + 2 * reg * W
    return loss, dW


# ----------------------------------------------------------------------------- correct

def correct_naive(W, X, y, reg, delta=1.0):
    """The assignment's loops; derivative 0 at a kink (margin > 0)."""
    dW = np.zeros(W.shape)
    num_classes, num_train = W.shape[1], X.shape[0]
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        correct_class_score = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct_class_score + delta
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * np.sum(W * W)
    dW += 2 * reg * W
    return loss, dW


def correct_vectorized(W, X, y, reg, delta=1.0):
    """Vectorised, ``margins > 0``."""
    return _vectorized(W, X, y, reg, delta, lambda m: m > 0)


def correct_ge_kink(W, X, y, reg, delta=1.0):
    """``>= 0`` on the unclamped margins: takes 1 at an exact kink (a valid subgradient)."""
    return _vectorized(W, X, y, reg, delta, lambda m: m >= 0)


def correct_float32(W, X, y, reg, delta=1.0):
    """Computes and returns in float32."""
    return _vectorized(W.astype(np.float32), X.astype(np.float32), y, np.float32(reg),
                       np.float32(delta), lambda m: m > 0)


def correct_torch(W, X, y, reg, delta=1.0):
    """torch tensors in, torch tensors out."""
    import torch                                     # here: the other students never need it

    n = X.shape[0]
    rows = torch.arange(n)
    scores = X @ W
    margins = scores - scores[rows, y][:, None] + delta
    margins[rows, y] = 0
    loss = margins.clamp(min=0).sum() / n + reg * (W * W).sum()
    coef = (margins > 0).to(X.dtype)
    coef[rows, y] = -coef.sum(1)
    return loss, X.T @ coef / n + 2 * reg * W


def correct_float16(W, X, y, reg, delta=1.0):
    """Computes and returns in float16 (judged against float16 rounding). Not in CORRECT: at
    delta 100 its loss really overflows float16 (100 * N * C > 65504)."""
    return _vectorized(W.astype(np.float16), X.astype(np.float16), y, np.float16(reg),
                       np.float16(delta), lambda m: m > 0)


def correct_longdouble(W, X, y, reg, delta=1.0):
    """Computes in numpy's longdouble (float128 on x86): loss and dW come back as float128."""
    return _vectorized(W.astype(np.longdouble), X.astype(np.longdouble), y, reg, delta,
                       lambda m: m > 0)


def correct_half_convention(W, X, y, reg, delta=1.0):
    """The older course convention, right for a course that defines it: ``0.5 * reg * sum(W*W)``
    with gradient ``reg * W`` (fails the 2020 loss, passes ``reg_convention="half"``)."""
    loss, dW = correct_vectorized(W, X, y, 0.0, delta)
    return loss + 0.5 * reg * np.sum(W * W), dW + reg * W


# ----------------------------------------------------------------------------- buggy

def reg_grad_missing(W, X, y, reg, delta=1.0):
    """The regularization gradient is never added."""
    loss, dW = correct_vectorized(W, X, y, reg, delta)
    return loss, dW - 2 * reg * W


def reg_grad_halved(W, X, y, reg, delta=1.0):
    """``reg * W`` instead of ``2 * reg * W``."""
    loss, dW = correct_vectorized(W, X, y, reg, delta)
    return loss, dW - reg * W


def correct_class_not_subtracted(W, X, y, reg, delta=1.0):
    """Loops that only add ``X[i]`` to the wrong classes' columns."""
    n = X.shape[0]
    margins = _scores_margins(W, X, y, delta)
    loss = np.maximum(0, margins).sum() / n + reg * np.sum(W * W)
    coef = (margins > 0).astype(X.dtype)
    return loss, X.T.dot(coef) / n + 2 * reg * W


def correct_class_wrong_sign(W, X, y, reg, delta=1.0):
    """``dW[:, y[i]] += X[i]`` for each positive margin instead of ``-=``."""
    n = X.shape[0]
    margins = _scores_margins(W, X, y, delta)
    loss = np.maximum(0, margins).sum() / n + reg * np.sum(W * W)
    coef = (margins > 0).astype(X.dtype)
    coef[np.arange(n), y] = coef.sum(axis=1)
    return loss, X.T.dot(coef) / n + 2 * reg * W


def no_division_by_n(W, X, y, reg, delta=1.0):
    """``dW /= num_train`` forgotten."""
    loss, dW = correct_vectorized(W, X, y, reg, delta)
    return loss, (dW - 2 * reg * W) * X.shape[0] + 2 * reg * W


def loss_divided_by_c(W, X, y, reg, delta=1.0):
    """torch.nn.MultiMarginLoss's convention: the per-example sum divided by C, loss and dW."""
    loss, dW = correct_vectorized(W, X, y, 0.0, delta)
    c = W.shape[1]
    return loss / c + reg * np.sum(W * W), dW / c + 2 * reg * W


def correct_margin_not_zeroed(W, X, y, reg, delta=1.0):
    """``margins[range(N), y] = 0`` forgotten: the loss counts delta per example, and the
    correct-class column subtracts one X[i] too many."""
    n = X.shape[0]
    scores = X.dot(W)
    margins = np.maximum(0, scores - scores[np.arange(n), y][:, None] + delta)
    loss = margins.sum() / n + reg * np.sum(W * W)
    coef = (margins > 0).astype(X.dtype)
    coef[np.arange(n), y] = -coef.sum(axis=1)
    return loss, X.T.dot(coef) / n + 2 * reg * W


def loss_counts_delta_only(W, X, y, reg, delta=1.0):
    """The loss loop runs over every class (no ``if j == y[i]: continue``), the gradient is right."""
    loss, dW = correct_vectorized(W, X, y, reg, delta)
    return loss + delta, dW


def mask_after_clamp(W, X, y, reg, delta=1.0):
    """``margins = np.maximum(0, ...)`` then ``mask = margins >= 0``: every term counts."""
    margins = np.maximum(0, _scores_margins(W, X, y, delta))
    return _vectorized(W, X, y, reg, delta, lambda m: margins >= 0, loss_margins=margins)


def mask_without_delta(W, X, y, reg, delta=1.0):
    """``scores[j] - scores[y] > 0``: delta left out of the mask."""
    return _vectorized(W, X, y, reg, delta, lambda m: m - delta > 0)


def margin_as_coefficient(W, X, y, reg, delta=1.0):
    """``dW[:, j] += margin * X[i]``: the coefficient is the margin, not 1."""
    return _vectorized(W, X, y, reg, delta, lambda m: np.maximum(0, m))


def last_example_skipped(W, X, y, reg, delta=1.0):
    """``for i in range(num_train - 1)`` but still divided by num_train."""
    n = X.shape[0]
    loss, dW = correct_vectorized(W, X[:-1], y[:-1], 0.0, delta)
    scale = (n - 1) / n
    return loss * scale + reg * np.sum(W * W), dW * scale + 2 * reg * W


def reg_grad_divided_by_n(W, X, y, reg, delta=1.0):
    """Loops, then ``dW += 2 * reg * W`` before ``dW /= num_train``: the reg gradient is / N."""
    dW = np.zeros(W.shape)
    num_classes, num_train = W.shape[1], X.shape[0]
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        correct_class_score = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct_class_score + delta
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
    loss /= num_train
    loss += reg * np.sum(W * W)
    dW += 2 * reg * W
    dW /= num_train
    return loss, dW


def return_inside_loop(W, X, y, reg, delta=1.0):
    """The finishing lines indented into the loop over examples: only example 0 is used."""
    dW = np.zeros(W.shape)
    num_classes, num_train = W.shape[1], X.shape[0]
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        correct_class_score = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct_class_score + delta
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
        loss /= num_train
        dW /= num_train
        loss += reg * np.sum(W * W)
        dW += 2 * reg * W
        return loss, dW


def first_half_only(W, X, y, reg, delta=1.0):
    """``if i == num_train // 2: break`` left in the loop over examples."""
    n = X.shape[0]
    k = n // 2
    loss, dW = correct_vectorized(W, X[:k], y[:k], 0.0, delta)
    return loss * k / n + reg * np.sum(W * W), dW * k / n + 2 * reg * W


def one_coordinate_wrong(W, X, y, reg, delta=1.0):
    """A debugging leftover: ``dW[3, 2] *= 0.5``."""
    loss, dW = correct_vectorized(W, X, y, reg, delta)
    dW[3, 2] *= 0.5
    return loss, dW


def bias_row_not_regularized(W, X, y, reg, delta=1.0):
    """The loss regularizes every row, the gradient skips the bias row (the last)."""
    loss, dW = correct_vectorized(W, X, y, reg, delta)
    dW[-1] -= 2 * reg * W[-1]
    return loss, dW


# The three below are taken from real students' files (public CS231n solutions, 2016-2017).

def gradient_left_as_zeros(W, X, y, reg, delta=1.0):
    """The loss is done, the gradient's TODO block is empty: the starter's zeros come back."""
    loss, _ = correct_vectorized(W, X, y, reg, delta)
    return loss, np.zeros(W.shape)


def starter_code_unchanged(W, X, y, reg, delta=1.0):
    """The assignment's starter code returned as it is: loss 0.0 and dW zeros."""
    return 0.0, np.zeros(W.shape)


def reg_loss_coefficient_typo(W, X, y, reg, delta=1.0):
    """``loss += .1 * reg * np.sum(W * W)`` (a typo for ``reg``): the gradient is right."""
    loss, dW = correct_vectorized(W, X, y, reg, delta)
    return loss - 0.9 * reg * np.sum(W * W), dW


def two_gradient_bugs(W, X, y, reg, delta=1.0):
    """The correct-class update missing and ``reg * W`` for ``2 * reg * W``, both at once."""
    loss, dW = correct_class_not_subtracted(W, X, y, reg, delta)
    return loss, dW - reg * W


def return_inside_loop_half_reg(W, X, y, reg, delta=1.0):
    """Two bugs, one in each part: the finishing lines indented into the loop over examples
    (only example 0 is used) with the older ``0.5 * reg * sum(W * W)`` and ``reg * W``."""
    dW = np.zeros(W.shape)
    num_classes, num_train = W.shape[1], X.shape[0]
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - scores[y[i]] + delta
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
        loss /= num_train
        dW /= num_train
        loss += 0.5 * reg * np.sum(W * W)
        dW += reg * W
        return loss, dW


def correct_class_from_margin_values(W, X, y, reg, delta=1.0):
    """The correct class's coefficient is minus the sum of the positive margins' values, not
    minus their count: ``coef[range(N), y] = -np.maximum(0, margins).sum(axis=1)``."""
    n = X.shape[0]
    margins = _scores_margins(W, X, y, delta)
    loss = np.maximum(0, margins).sum() / n + reg * np.sum(W * W)
    coef = (margins > 0).astype(X.dtype)
    coef[np.arange(n), y] = -np.maximum(0, margins).sum(axis=1)
    return loss, X.T.dot(coef) / n + 2 * reg * W


def loss_counts_positive_margins(W, X, y, reg, delta=1.0):
    """The loss counts the positive margins instead of summing them: ``(margins > 0).sum()``;
    the gradient is right."""
    n = X.shape[0]
    margins = _scores_margins(W, X, y, delta)
    _, dW = correct_vectorized(W, X, y, reg, delta)
    return (margins > 0).sum() / n + reg * np.sum(W * W), dW


CORRECT = {f.__name__: f for f in (correct_naive, correct_vectorized, correct_ge_kink,
                                   correct_float32, correct_torch, correct_longdouble)}

BUGGY = {f.__name__: f for f in (reg_grad_missing, reg_grad_halved, correct_class_not_subtracted,
                                 correct_class_wrong_sign, no_division_by_n, loss_divided_by_c,
                                 correct_margin_not_zeroed, loss_counts_delta_only,
                                 mask_after_clamp, mask_without_delta, margin_as_coefficient,
                                 last_example_skipped, one_coordinate_wrong,
                                 bias_row_not_regularized, reg_grad_divided_by_n,
                                 return_inside_loop, first_half_only, correct_half_convention,
                                 gradient_left_as_zeros, starter_code_unchanged, reg_loss_coefficient_typo,
                                 two_gradient_bugs, return_inside_loop_half_reg,
                                 correct_class_from_margin_values, loss_counts_positive_margins)}

#: every (what, pattern) the diagnosis must name for each bug, and nothing else ("no_known_pattern"
#: where no known bug fits: the honest answer)
EXPECTED_DIAGNOSIS = {
    "reg_grad_missing": {("gradient", "regularization_gradient")},
    "reg_grad_halved": {("gradient", "regularization_gradient")},
    "correct_class_not_subtracted": {("gradient", "correct_class")},
    "correct_class_wrong_sign": {("gradient", "correct_class")},
    "no_division_by_n": {("gradient", "normalisation")},
    "loss_divided_by_c": {("loss", "normalisation"), ("gradient", "normalisation")},
    "loss_counts_delta_only": {("loss", "correct_class_margin")},
    "correct_margin_not_zeroed": {("loss", "correct_class_margin"), ("gradient", "correct_margin_counted")},
    "mask_after_clamp": {("gradient", "mask_after_clamp")},
    "mask_without_delta": {("gradient", "mask_without_delta")},
    "margin_as_coefficient": {("gradient", "margin_as_coefficient")},
    "last_example_skipped": {("loss", "prefix_of_examples"), ("gradient", "prefix_of_examples")},
    "one_coordinate_wrong": {("gradient", "few_coordinates")},
    "bias_row_not_regularized": {("gradient", "no_known_pattern")},
    "reg_grad_divided_by_n": {("gradient", "regularization_gradient")},
    "return_inside_loop": {("loss", "prefix_of_examples"), ("gradient", "prefix_of_examples")},
    "first_half_only": {("loss", "prefix_of_examples"), ("gradient", "prefix_of_examples")},
    "correct_half_convention": {("both", "half_reg_convention")},
    "gradient_left_as_zeros": {("gradient", "zero_gradient")},
    "starter_code_unchanged": {("loss", "zero_loss"), ("gradient", "zero_gradient")},
    "reg_loss_coefficient_typo": {("loss", "regularization_loss")},
    "two_gradient_bugs": {("gradient", "regularization_gradient+correct_class")},
    "return_inside_loop_half_reg": {("loss", "prefix_of_examples+regularization_loss"),
                                    ("gradient", "prefix_of_examples+regularization_gradient")},
    "correct_class_from_margin_values": {("gradient", "correct_class_from_margins")},
    "loss_counts_positive_margins": {("loss", "loss_counts_margins")},
}

#: words the message must hold, where the pattern alone does not tell two bugs apart
EXPECTED_WORDS = {
    "reg_grad_missing": "missing",
    "reg_grad_halved": "halved",
    "reg_grad_divided_by_n": "divided by N",
    "return_inside_loop": "only example 0",
    "first_half_only": "first 50 of 100",
    "last_example_skipped": "last example",
    "correct_half_convention": "older course convention",
    "gradient_left_as_zeros": "dW is all zeros",
    "reg_loss_coefficient_typo": "0.1 * reg * sum(W * W), 0.1 times the expected",
    "two_gradient_bugs": "two bugs: regularization gradient halved",
    "return_inside_loop_half_reg": "two bugs: only example 0 is used",
    "correct_class_from_margin_values": "minus their count",
    "loss_counts_positive_margins": "counts the positive margins",
}
