"""Tests of verification.checks.numeric: SVM finite differences and their kink analysis.

References here are deliberately plain: the full loss evaluated at ``W +/- h e_kj`` in a loop,
and an analytic SVM gradient written from the formula with a selectable kink convention.
"""
import pytest
import torch
from conftest import exact_kink_problem, random_problem

from verification.checks.kinkcheck import KinkcheckError, kinkcheck
from verification.checks.numeric import (
    KINK_EXPLAINED,
    OK,
    UNEXPLAINED,
    classify_svm_gradient,
    svm_finite_differences,
    svm_numeric_grad,
)

F64 = torch.float64


# -- plain references -------------------------------------------------------------------------

def _margins(W, X, y, delta):
    S = X @ W                                                       # (N, C)
    m = S - S.gather(1, y[:, None]) + delta
    return m.scatter(1, y[:, None], float("-inf"))                  # no term at j = y_i


def _loss(W, X, y, reg, delta=1.0, p=1):
    return _margins(W, X, y, delta).clamp(min=0).pow(p).sum() / X.shape[0] + reg * (W * W).sum()


def _loop_numeric_grad(W, X, y, reg, delta, p, h):
    G = torch.empty_like(W)
    for k in range(W.shape[0]):
        for j in range(W.shape[1]):
            E = torch.zeros_like(W)
            E[k, j] = h
            G[k, j] = (_loss(W + E, X, y, reg, delta, p) - _loss(W - E, X, y, reg, delta, p)) / (2 * h)
    return G


def _loop_crossings(W, X, y, delta, h):
    """Terms whose margin has opposite strict signs at W + h e_kj and W - h e_kj."""
    count = torch.zeros(W.shape, dtype=torch.int64)
    for k in range(W.shape[0]):
        for j in range(W.shape[1]):
            E = torch.zeros_like(W)
            E[k, j] = h
            mp, mm = _margins(W + E, X, y, delta), _margins(W - E, X, y, delta)
            count[k, j] = int(((mp > 0) & (mm < 0) | (mp < 0) & (mm > 0)).sum())
    return count


def _svm_grad(W, X, y, reg, *, delta=1.0, p=1, at_zero=0.0, bug=None):
    """Analytic gradient; ``at_zero`` is the subgradient taken at a margin of exactly 0 (p=1)."""
    m = _margins(W, X, y, delta)
    if p == 1:
        coeff = (m > 0).to(W.dtype) + at_zero * (m == 0).to(W.dtype)
    else:
        coeff = 2 * m.clamp(min=0)
    if bug != "no_column":
        coeff.scatter_(1, y[:, None], -coeff.sum(1, keepdim=True))
    grad = X.T @ coeff / X.shape[0]
    if bug != "no_reg":
        grad = grad + 2 * reg * W
    return 2 * grad if bug == "factor2" else grad


def _problem(N, D, C, *, seed=0, x_scale=1.0, w_scale=0.5, dtype=F64):
    return random_problem(N, D, C, seed=seed, x_scale=x_scale, w_scale=w_scale, dtype=dtype)


def _kinky_problem():
    """Several margins exactly at 0 (delta 1), for steps up to 0.05."""
    return (*exact_kink_problem(), 1.0)


# -- svm_numeric_grad against the loop --------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("h", [1e-5, 0.05])
def test_svm_numeric_grad_matches_loop(p, h):
    W, X, y = _problem(30, 6, 4)
    expected = _loop_numeric_grad(W, X, y, 0.3, 1.0, p, h)
    torch.testing.assert_close(svm_numeric_grad(W, X, y, 0.3, p=p, h=h), expected, rtol=0, atol=1e-9)
    naive = svm_finite_differences(W, X, y, 0.3, p=p, h=h, naive=True).grad
    torch.testing.assert_close(naive, expected, rtol=0, atol=1e-9)


def test_svm_numeric_grad_loop_comparison_is_sharp():
    """Negative twin: one changed label moves the loop's answer beyond the tolerance used above."""
    W, X, y = _problem(30, 6, 4)
    y2 = y.clone()
    y2[0] = (y[0] + 1) % 4
    expected = _loop_numeric_grad(W, X, y2, 0.3, 1.0, 1, 1e-5)
    assert (svm_numeric_grad(W, X, y, 0.3, h=1e-5) - expected).abs().max() > 1e-3


def test_svm_numeric_grad_is_exact_for_p2_off_kinks():
    """Away from kinks the squared hinge is quadratic, so the central difference is exact."""
    W, X, y = _problem(40, 5, 3)
    fd = svm_finite_differences(W, X, y, 0.1, p=2, h=1e-3)
    assert int(fd.crossings.sum()) == 0
    torch.testing.assert_close(fd.grad, _svm_grad(W, X, y, 0.1, p=2), rtol=1e-12, atol=1e-12)


# -- kink counting and bound --------------------------------------------------------------------

def test_crossings_match_a_loop_over_perturbed_margins():
    W, X, y, delta = _kinky_problem()
    fd = svm_finite_differences(W, X, y, delta=delta, h=0.05)
    expected = _loop_crossings(W, X, y, delta, 0.05)
    assert int(expected.sum()) > 0
    assert torch.equal(fd.crossings, expected)


def test_no_crossings_at_a_small_step():
    """Negative twin: far from exact zeros a small step crosses nothing and every coordinate is ok."""
    W, X, y = _problem(30, 6, 4)
    fd = svm_finite_differences(W, X, y, 0.3, h=1e-7)
    assert int(fd.crossings.sum()) == 0
    assert classify_svm_gradient(_svm_grad(W, X, y, 0.3), fd).counts()["ok"] == W.numel()


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("at_zero", [0.0, 0.5, 1.0])
def test_reference_gradient_is_never_unexplained_at_kinks(p, at_zero):
    W, X, y, delta = _kinky_problem()
    for h in (1e-6, 0.05, 0.2):
        fd = svm_finite_differences(W, X, y, 0.2, delta=delta, p=p, h=h)
        check = classify_svm_gradient(_svm_grad(W, X, y, 0.2, delta=delta, p=p, at_zero=at_zero), fd)
        assert check.passed, check.counts()
    assert check.counts()["kink_explained"] > 0            # the large step does straddle kinks


def test_kink_bound_is_attained_for_p1_at_an_exact_zero():
    """One term at m = 0 exactly: the central difference is s/2 and the bound is |s|/2."""
    X = torch.tensor([[2.0]], dtype=F64)
    W = torch.tensor([[0.5, 0.0]], dtype=F64)             # m = 2 * 0 - 2 * 0.5 + 1 = 0 exactly
    y = torch.tensor([0])
    fd = svm_finite_differences(W, X, y, delta=1.0, h=1e-3)
    torch.testing.assert_close(fd.grad, torch.tensor([[-1.0, 1.0]], dtype=F64))
    torch.testing.assert_close(fd.kink_bound, torch.tensor([[1.0, 1.0]], dtype=F64))
    assert fd.crossings.tolist() == [[1, 1]]


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("bug", ["no_reg", "no_column", "factor2"])
def test_buggy_gradients_are_unexplained(p, bug):
    W, X, y, delta = _kinky_problem()
    fd = svm_finite_differences(W, X, y, 0.2, delta=delta, p=p, h=0.05)
    check = classify_svm_gradient(_svm_grad(W, X, y, 0.2, delta=delta, p=p, bug=bug), fd)
    assert check.counts()["unexplained"] > 0


def test_status_codes_follow_the_rule():
    W, X, y, delta = _kinky_problem()
    fd = svm_finite_differences(W, X, y, 0.2, delta=delta, h=0.05)
    check = classify_svm_gradient(_svm_grad(W, X, y, 0.2, delta=delta, bug="factor2"), fd)
    assert torch.equal(check.status == OK, check.error <= check.fp_tol)
    kink = (check.status == KINK_EXPLAINED)
    assert bool((fd.crossings[kink] > 0).all()) and bool((check.error[kink] <= check.allowed[kink]).all())
    assert bool((check.error[check.status == UNEXPLAINED] > check.allowed[check.status == UNEXPLAINED]).all())


# -- float32 user code at pixel-like scale ------------------------------------------------------

@pytest.mark.parametrize("p", [1, 2])
def test_float32_reference_passes_against_float64_differences(p):
    W, X, y = _problem(300, 80, 10, seed=1, x_scale=60.0, w_scale=1e-4)
    fd = svm_finite_differences(W, X, y, 2.5e4, p=p)
    analytic = _svm_grad(W.float(), X.float(), y, 2.5e4, p=p)
    check = classify_svm_gradient(analytic, fd)
    assert check.passed, check.counts()


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("bug", ["no_reg", "no_column", "factor2"])
def test_float32_buggy_gradients_are_unexplained(p, bug):
    W, X, y = _problem(300, 80, 10, seed=1, x_scale=60.0, w_scale=1e-4)
    fd = svm_finite_differences(W, X, y, 2.5e4, p=p)
    check = classify_svm_gradient(_svm_grad(W.float(), X.float(), y, 2.5e4, p=p, bug=bug), fd)
    assert check.counts()["unexplained"] > W.numel() // 10


def test_chunking_does_not_change_the_answer():
    W, X, y = _problem(50, 9, 5, x_scale=3.0)
    whole = svm_finite_differences(W, X, y, 0.1, h=0.02)
    small = svm_finite_differences(W, X, y, 0.1, h=0.02, chunk_bytes=1)
    for name in ("grad", "crossings", "kink_bound", "magnitude", "side_slack"):
        torch.testing.assert_close(getattr(small, name), getattr(whole, name), rtol=1e-13, atol=0)


@pytest.mark.parametrize("kwargs, message", [({"p": 3}, "p must be 1 or 2, got 3"),
                                             ({"h": 0.0}, "h must be a finite number > 0, got 0.0")])
def test_bad_arguments_are_named(kwargs, message):
    W, X, y = _problem(4, 3, 2)
    with pytest.raises(ValueError, match=message):
        svm_finite_differences(W, X, y, **kwargs)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_svm_finite_differences_on_cuda_match_cpu():
    W, X, y = _problem(200, 30, 10, x_scale=60.0, w_scale=1e-3)
    cpu = svm_finite_differences(W, X, y, 0.5, h=1e-3)
    gpu = svm_finite_differences(W.cuda(), X.cuda(), y.cuda(), 0.5, h=1e-3)
    torch.testing.assert_close(gpu.grad.cpu(), cpu.grad, rtol=1e-10, atol=1e-10)
    assert torch.equal(gpu.crossings.cpu(), cpu.crossings)


# -- kinkcheck on the SVM loss as a plain function ---------------------------------------------

def test_kinkcheck_svm_loss():
    W, X, y, delta = _kinky_problem()
    f = lambda w: _loss(w.reshape(W.shape), X, y, 0.2, delta)  # noqa: E731
    assert kinkcheck(f, W, _svm_grad(W, X, y, 0.2, delta=delta, at_zero=1.0)).passed
    with pytest.raises(KinkcheckError):
        kinkcheck(f, W, _svm_grad(W, X, y, 0.2, delta=delta, bug="no_column"))
