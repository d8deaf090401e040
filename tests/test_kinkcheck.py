"""Tests of verification.checks.kinkcheck, gradcheck for nonsmooth functions: an L1 term and a ReLU
network with kinks exactly at and within the step of the point, against torch.autograd.gradcheck."""
import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

from verification.checks.kinkcheck import KinkcheckError, kinkcheck

F64 = torch.float64


# -- kinkcheck: L1 ------------------------------------------------------------------------------

# exact zeros at 0 and 1, within the step (1e-6) of zero at 2 and 3, smooth elsewhere
L1_X = torch.tensor([0.0, 0.0, 3e-7, -4e-7, 0.5, -1.2], dtype=F64)


def _l1(x):
    return x.abs().sum()


@pytest.mark.parametrize("at_zero", [0.0, 1.0, -0.3])
def test_kinkcheck_l1_passes_any_subgradient(at_zero):
    analytic = torch.where(L1_X == 0, torch.full_like(L1_X, at_zero), torch.sign(L1_X))
    report = kinkcheck(_l1, L1_X, analytic)
    assert report.passed
    assert report.straddles.tolist() == [True, True, True, True, False, False]


@pytest.mark.parametrize("index, value, kind", [(2, -1.0, "straddles a kink"),   # sign flipped
                                                (4, 2.0, "!= numeric"),          # factor 2
                                                (0, 1.5, "straddles a kink")])   # outside [d-, d+]
def test_kinkcheck_l1_names_the_wrong_coordinate(index, value, kind):
    analytic = torch.sign(L1_X)
    analytic[index] = value
    with pytest.raises(KinkcheckError, match=rf"coordinate \({index},\).*{kind}") as info:
        kinkcheck(_l1, L1_X, analytic)
    assert info.value.index == (index,)
    assert f"analytic {value!r}" in str(info.value)


def test_gradcheck_fails_where_kinkcheck_passes():
    """The contrast: autograd's own |x| gradient is right, gradcheck rejects it off-centre of a kink."""
    x = L1_X.clone().requires_grad_()
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(_l1, (x,))
    (grad,) = torch.autograd.grad(_l1(x), x)
    assert kinkcheck(_l1, L1_X, grad).passed


def test_gradcheck_and_kinkcheck_agree_away_from_kinks():
    """Negative twin: with no kink within the step both checks pass and see no kink."""
    x = torch.tensor([0.3, -0.7, 2.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(_l1, (x,))
    report = kinkcheck(_l1, x.detach(), torch.sign(x.detach()))
    assert report.passed and not bool(report.straddles.any())


def test_kinkcheck_report_without_raising():
    analytic = torch.sign(L1_X)
    analytic[3] = 1.0                                             # wrong side of a near kink
    report = kinkcheck(_l1, L1_X, analytic, raise_exception=False)
    assert report.agrees.tolist() == [True, True, True, False, True, True]
    assert report.forward[3] == pytest.approx(1 - 2 * 0.4, abs=1e-6)        # 0.2 of the step
    assert report.backward[3] == pytest.approx(-1.0, abs=1e-9)
    assert report.numeric.shape == L1_X.shape


# -- kinkcheck: a ReLU network ------------------------------------------------------------------

def _relu_net():
    """One hidden layer. Unit 0 has pre-activation exactly 0 (inputs 0, 1), unit 1 is 2e-7, within
    the step of 0 (inputs 2, 3); input 4 reaches neither. One kink per coordinate, since two kinks
    of opposite convexity in one step are beyond the one-sided rule (see kinkcheck)."""
    A = torch.tensor([[1.0, -2.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 1.0, -1.0, 0.0],
                      [0.5, 0.5, -1.0, 0.25, 1.0],
                      [-1.0, 0.0, 2.0, 1.0, 0.5]], dtype=F64)     # (H, n)
    x = torch.tensor([0.5, -0.25, 1.5, 0.75, 1.0], dtype=F64)
    b = torch.tensor([0.0, 0.0, 0.1, -0.3], dtype=F64)
    b[0] = -(A[0] @ x)                                            # exact: dyadic numbers
    b[1] = 2e-7 - A[1] @ x
    v = torch.tensor([1.5, -2.0, 0.7, 1.1], dtype=F64)

    def f(x):
        return torch.relu(A @ x + b) @ v

    def grad(x, at_zero=0.0, flip_unit1=False):
        z = A @ x + b
        active = (z > 0).to(F64) + at_zero * (z == 0).to(F64)
        if flip_unit1:
            active[1] = 1 - active[1]
        return A.T @ (v * active)

    return f, grad, x


@pytest.mark.parametrize("at_zero", [0.0, 0.5, 1.0])
def test_kinkcheck_relu_net_passes_any_subgradient(at_zero):
    f, grad, x = _relu_net()
    report = kinkcheck(f, x, grad(x, at_zero))
    assert report.passed
    assert report.straddles.tolist() == [True, True, True, True, False]


def test_kinkcheck_relu_net_catches_the_wrong_side_and_a_factor_2():
    f, grad, x = _relu_net()
    with pytest.raises(KinkcheckError, match=r"coordinate \(2,\).*straddles a kink"):
        kinkcheck(f, x, grad(x, flip_unit1=True))
    with pytest.raises(KinkcheckError, match=r"coordinate \(0,\).*straddles a kink") as info:
        kinkcheck(f, x, 2 * grad(x))
    assert not bool(info.value.report.agrees[4])                  # the smooth coordinate too


def test_gradcheck_fails_on_the_relu_net_at_the_kinks():
    f, grad, x = _relu_net()
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(f, (x.clone().requires_grad_(),))
    xr = x.clone().requires_grad_()
    (autograd_grad,) = torch.autograd.grad(f(xr), xr)
    assert kinkcheck(f, x, autograd_grad).passed


# -- evaluation modes, warnings, errors -------------------------------------------------------

def test_kinkcheck_batched_vmapped_and_looped_agree():
    analytic = torch.sign(L1_X)
    vmapped = kinkcheck(_l1, L1_X, analytic)
    batched = kinkcheck(lambda P: P.abs().sum(-1), L1_X, analytic, batched=True)
    looped = kinkcheck(lambda x: torch.tensor(float(x.abs().sum()), dtype=F64), L1_X, analytic)  # vmap cannot
    for other in (batched, looped):
        torch.testing.assert_close(other.numeric, vmapped.numeric, rtol=0, atol=0)
        assert torch.equal(other.straddles, vmapped.straddles)


def test_kinkcheck_small_batches_agree():
    analytic = torch.sign(L1_X)
    one = kinkcheck(_l1, L1_X, analytic, max_batch=1)
    torch.testing.assert_close(one.forward, kinkcheck(_l1, L1_X, analytic).forward, rtol=0, atol=0)


def test_kinkcheck_warns_below_float64():
    x = torch.tensor([0.3, -0.7], dtype=torch.float32)
    with pytest.warns(UserWarning, match="not float64"):
        kinkcheck(_l1, x, torch.sign(x), h=1e-3)


def test_kinkcheck_is_silent_in_float64(recwarn):
    x = torch.tensor([0.3, -0.7], dtype=F64)
    kinkcheck(_l1, x, torch.sign(x))
    assert not [w for w in recwarn if "float64" in str(w.message)]


def test_kinkcheck_bad_shape_is_named():
    with pytest.raises(ValueError, match=r"shape of x \(6,\), got \(5,\)"):
        kinkcheck(_l1, L1_X, torch.zeros(5, dtype=F64))


def test_kinkcheck_names_a_non_scalar_f():
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"f must return a scalar .* got shape \(3,\) per point"):
        kinkcheck(torch.relu, x, (x > 0).double())
