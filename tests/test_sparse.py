"""verification.grad_check_sparse: the assignment's lines from the same coordinates, plus a kink
verdict that explains a correct gradient's mismatches and not a wrong one's."""
import contextlib
import io
import random
from random import randrange

import numpy as np
import pytest
import torch

import mutants
from conftest import integer_problem
from torch_svm.data import DataConfig, load_dataset
from verification import grad_check_sparse
from verification.checks.numeric import svm_finite_differences
from verification.judge.points import default_points
from verification.checks.sparse import SparseCheck

_COLUMN_OK = "  ok"
_COLUMN_KINK = "  kink: the step straddles a kink, the mismatch is expected (Inline Question 1)"
_COLUMN_BAD = "  no kink explains it: a real mismatch"


def assignment_grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5):
    """The reference: CS231n's cs231n/gradient_check.py, as students have it."""
    for i in range(num_checks):
        ix = tuple([randrange(m) for m in x.shape])

        oldval = x[ix]
        x[ix] = oldval + h  # increment by h
        fxph = f(x)  # evaluate f(x + h)
        x[ix] = oldval - h  # increment by h
        fxmh = f(x)  # evaluate f(x - h)
        x[ix] = oldval  # reset

        grad_numerical = (fxph - fxmh) / (2 * h)
        grad_analytic = analytic_grad[ix]
        rel_error = abs(grad_numerical - grad_analytic) / (abs(grad_numerical) + abs(grad_analytic))
        print('numerical: %f analytic: %f, relative error: %e' % (grad_numerical, grad_analytic, rel_error))


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", config=DataConfig(dtype="float64"))
    return data.tensors("dev")[0].numpy(), data.tensors("dev")[1].numpy()


def small_w(X, seed=0):
    return np.random.default_rng(seed).standard_normal((X.shape[1], 10)) * 1e-4


def trained_w(X, y):
    """verify's trained check point (gradient descent until half the margins are active):
    margins near 0, so steps of h = 1e-3 straddle kinks at most coordinates."""
    points = default_points(torch.from_numpy(X), torch.from_numpy(y), 10, 1.0, 0)
    return points["trained"][0].numpy().copy()


def run(fn, *args, seed=0, **kwargs):
    """(stdout lines, return value) of fn after random.seed(seed), and the next random draw."""
    random.seed(seed)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), np.errstate(invalid="ignore"):
        value = fn(*args, **kwargs)
    return out.getvalue().splitlines(), value, random.random()


def check(fn, W, X, y, reg, **kwargs):
    loss, grad = fn(W, X, y, reg)
    return run(grad_check_sparse, lambda w: fn(w, X, y, reg)[0], W, grad, **kwargs)


# ------------------------------------------------------------------ the assignment's lines

@pytest.mark.parametrize("name", ["correct_naive", "correct_vectorized", "reg_grad_halved",
                                  "correct_class_not_subtracted"])
@pytest.mark.parametrize("reg", [0.0, 50.0])
def test_same_coordinates_and_lines_as_the_assignment(digits, name, reg):
    X, y = digits
    fn = {**mutants.CORRECT, **mutants.BUGGY}[name]
    W = small_w(X)
    before = W.copy()
    loss, grad = fn(W, X, y, reg)
    f = lambda w: fn(w, X, y, reg)[0]                                  # noqa: E731
    ref_lines, _, ref_next = run(assignment_grad_check_sparse, f, W, grad, 12, seed=7)
    lines, result, our_next = run(grad_check_sparse, f, W, grad, 12, seed=7)
    assert len(lines) == 13 and lines[-1].startswith("verdict: ")
    for ours, ref in zip(lines[:12], ref_lines, strict=True):
        assert ours.startswith(ref + "  "), (ours, ref)
        assert ours[len(ref):] in (_COLUMN_OK, _COLUMN_KINK, _COLUMN_BAD)
    random.seed(7)
    drawn = [tuple(randrange(m) for m in W.shape) for _ in range(12)]
    assert [line.index for line in result.lines] == drawn
    assert our_next == ref_next                                        # same draws, no more
    np.testing.assert_array_equal(W, before)                          # x restored exactly
    assert isinstance(result, SparseCheck) and len(result.lines) == 12


def test_line_numbers_are_the_printed_ones(digits):
    X, y = digits
    W = small_w(X)
    lines, result, _ = check(mutants.correct_vectorized, W, X, y, 50.0, num_checks=5)
    for text, line in zip(lines, result.lines):
        assert text.startswith('numerical: %f analytic: %f, relative error: %e'
                               % (line.numerical, line.analytic, line.rel_error))


def test_torch_tensor_point_gives_the_numpy_numbers(digits):
    """x as a tensor: x[ix] is a view there, and the point is still restored."""
    X, y = digits
    W = small_w(X)
    lines_np, _, _ = check(mutants.correct_vectorized, W, X, y, 50.0, num_checks=5)
    Wt = torch.from_numpy(W.copy())
    loss, grad = mutants.correct_vectorized(W, X, y, 50.0)
    f = lambda w: mutants.correct_vectorized(w.numpy(), X, y, 50.0)[0]   # noqa: E731
    lines_t, result, _ = run(grad_check_sparse, f, Wt, torch.from_numpy(grad), 5)
    assert lines_t == lines_np and result.verdict == "match"
    assert torch.equal(Wt, torch.from_numpy(W))


# ------------------------------------------------------------------ kinks

@pytest.mark.parametrize("name", ["correct_naive", "correct_vectorized", "correct_ge_kink"])
@pytest.mark.parametrize("reg", [0.0, 50.0])
def test_correct_gradient_mismatches_are_explained_by_kinks(digits, name, reg):
    X, y = digits
    W = trained_w(X, y)
    lines, result, _ = check(mutants.CORRECT[name], W, X, y, reg, num_checks=40, h=1e-3)
    assert result.passed and result.verdict == "explained"
    kinked = [line for line in result.lines if line.status == "kink_explained"]
    assert len(kinked) >= 5 and not result.count("unexplained")
    assert all(line.rel_error > 1e-6 for line in kinked)            # visible mismatches
    # the trusted reference: each explained coordinate has a hinge term crossing 0 in the step
    fd = svm_finite_differences(torch.from_numpy(W), torch.from_numpy(X), torch.from_numpy(y),
                                reg, h=1e-3)
    assert all(int(fd.crossings[line.index]) >= 1 for line in kinked)
    assert lines[-1].startswith(f"verdict: {40 - len(kinked)} of 40 match; the other {len(kinked)} mismatch only")
    assert sum(text.endswith(_COLUMN_KINK) for text in lines) == len(kinked)


@pytest.mark.parametrize("name", ["mask_after_clamp", "correct_class_wrong_sign"])
def test_wrong_gradient_at_kinks_is_unexplained(digits, name):
    """The negative twin: the same point and step, a buggy gradient."""
    X, y = digits
    W = trained_w(X, y)
    lines, result, _ = check(mutants.BUGGY[name], W, X, y, 0.0, num_checks=40, h=1e-3)
    assert not result.passed and result.verdict == "unexplained"
    assert result.count("unexplained") >= 30
    assert lines[-1].startswith(f"verdict: {result.count('unexplained')} of 40 unexplained mismatches")
    assert lines[-1].endswith(": the loss or the gradient is wrong (a finite difference cannot "
                              "tell which): verify(f) compares both with the reference")


def test_exact_kinks_any_convention_is_explained():
    """Integer data and W: many margins exactly 0; every subgradient lies between d- and d+."""
    X, y, W = (t.numpy() for t in integer_problem(seed=1))
    for name in ("correct_naive", "correct_ge_kink"):
        fn = mutants.CORRECT[name]
        _, result, _ = check(fn, W.copy(), X, y, 0.0, num_checks=60)
        assert result.passed and result.count("kink_explained") >= 5, (name, repr(result))
    _, wrong, _ = check(lambda W_, X_, y_, reg: (mutants.correct_naive(W_, X_, y_, reg)[0],
                                                 -mutants.correct_naive(W_, X_, y_, reg)[1]),
                        W.copy(), X, y, 0.0, num_checks=60)
    assert not wrong.passed


def test_curvature_of_the_regulariser_is_not_a_kink(digits):
    """At reg 50 every coordinate has d+ - d- = 2 reg h; a reg bug must stay unexplained
    (at step h alone, errors under reg h would pass as kinks)."""
    X, y = digits
    W = small_w(X)
    _, result, _ = check(mutants.BUGGY["reg_grad_halved"], W, X, y, 50.0, num_checks=40)
    assert result.count("unexplained") == 40
    refined = [line.small_step for line in result.lines if line.small_step is not None]
    assert refined and all(step == pytest.approx(1e-7) for step in refined)
    _, ok, _ = check(mutants.correct_vectorized, W, X, y, 50.0, num_checks=40)
    assert ok.verdict == "match" and all(line.small_step is None for line in ok.lines)


def test_verdict_lines(digits):
    X, y = digits
    lines, result, _ = check(mutants.correct_vectorized, small_w(X), X, y, 0.0)
    assert lines[-1] == "verdict: all 10 match" and result.passed
    assert repr(result) == ("SparseCheck(10 coordinates: 10 ok, 0 kink-explained, 0 unexplained; "
                            "passed=True)")


def test_float32_point_gets_a_note(digits):
    X, y = digits
    W = small_w(X).astype(np.float32)
    lines, result, _ = check(mutants.correct_vectorized, W, X.astype(np.float32), y, 0.0, num_checks=3)
    assert result.notes and lines[-1].startswith("note: f or x is in a lower precision")


def test_x_restored_when_f_raises(digits):
    X, y = digits
    W = small_w(X)
    before = W.copy()
    calls = []

    def f(w):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return 1.0

    with pytest.raises(RuntimeError, match="boom"):
        grad_check_sparse(f, W, np.zeros_like(W))
    np.testing.assert_array_equal(W, before)


@pytest.mark.parametrize("x, grad, kwargs, error, match", [
    (np.zeros((3, 2), dtype=np.int64), np.zeros((3, 2)), {}, TypeError, "floating-point"),
    ([[0.0]], np.zeros((1, 1)), {}, TypeError, "numpy array or a torch tensor"),
    (np.zeros((3, 2)), np.zeros((2, 3)), {}, ValueError, r"analytic_grad must have the shape"),
    (np.zeros((3, 2)), np.zeros((3, 2)), {"h": 0.0}, ValueError, "h"),
    (np.zeros((3, 2)), np.zeros((3, 2)), {"num_checks": -1}, ValueError, "num_checks"),
])
def test_bad_arguments(x, grad, kwargs, error, match):
    with pytest.raises(error, match=match):
        grad_check_sparse(lambda w: 0.0, x, grad, **kwargs)


def test_f_returning_loss_and_grad_is_named(digits):
    X, y = digits
    W = small_w(X)
    with pytest.raises(TypeError, match=r"f must return the loss, one number, got tuple.*\[0\]"):
        grad_check_sparse(lambda w: mutants.correct_vectorized(w, X, y, 0.0), W, np.zeros_like(W))


def test_a_loss_bug_with_a_right_gradient_is_not_blamed_on_the_gradient(digits):
    """The regularization term left out of the loss, dW right: the finite differences of the
    loss disagree with dW, and only a reference can say which of the two is wrong, so the
    verdict names both and points to verify; verify then names the loss."""
    from verification import verify

    X, y = digits
    W = trained_w(X, y)
    reg = 50.0

    def loss_without_reg(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        return loss - reg * float(np.sum(W * W)), dW

    lines, result, _ = check(loss_without_reg, W, X, y, reg, num_checks=20, h=1e-3)
    assert result.verdict == "unexplained"
    assert "the loss or the gradient is wrong" in lines[-1] and "verify(f)" in lines[-1]
    assert "check your gradient" not in "\n".join(lines)
    report = verify(loss_without_reg, X, y, isolate=False)
    assert report.verdict == "fail" and report.failed == "loss"
