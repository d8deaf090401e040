"""The loss and its hand-written gradient against trusted references (float64 autograd,
PyTorch's MultiMarginLoss kernel, the numpy naive loops), each with a stated tolerance."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import exact_kink_problem, random_problem
from torch.autograd.gradcheck import GradcheckError

from torch_svm import (MultiMarginLoss, multi_margin_loss, svm_loss_autograd,
                       svm_loss_and_grad, svm_loss)
from torch_svm.losses import _SVMLoss  # the negative twin subclasses it
from verification.checks.reference import mml_reference, svm_loss_naive, svm_loss_vectorized

RTOL = 1e-10  # float64 paths differ only in summation order
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def problem(n=40, d=12, c=6, seed=0, scale=0.3, dtype=torch.float64):
    return random_problem(n, d, c, seed=seed, w_scale=scale, dtype=dtype)


def autograd_grad(W, X, y, reg, delta, p):
    Wr = W.clone().requires_grad_(True)
    loss = svm_loss_autograd(Wr, X, y, reg, delta=delta, p=p)
    (dW,) = torch.autograd.grad(loss, Wr)
    return loss.detach(), dW


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("delta", [0.5, 1.0, 10.0])
@pytest.mark.parametrize("reg", [0.0, 0.1, 5.0])
def test_all_paths_agree_float64(p, delta, reg):
    W, X, y = problem(seed=int(10 * delta) + p)
    ref_loss, ref_dW = autograd_grad(W, X, y, reg, delta, p)
    naive_loss, naive_dW = svm_loss_naive(W.numpy(), X.numpy(), y.numpy(), reg, delta=delta, p=p)
    vec_loss, vec_dW = svm_loss_vectorized(W.numpy(), X.numpy(), y.numpy(), reg, delta=delta, p=p)
    mml_loss, mml_dW = mml_reference(W, X, y, reg, delta=delta, p=p)
    loss, dW = svm_loss_and_grad(W, X, y, reg, delta=delta, p=p)
    Wr = W.clone().requires_grad_(True)
    fn_loss = svm_loss(Wr, X, y, reg, delta=delta, p=p)
    fn_loss.backward()
    # Forward: every loss equals the autograd reference's.
    for other in (loss, fn_loss.detach(), mml_loss, torch.tensor(naive_loss, dtype=torch.float64), torch.tensor(vec_loss, dtype=torch.float64)):
        torch.testing.assert_close(other.to(torch.float64), ref_loss, rtol=RTOL, atol=0)
    # Backward: every gradient equals the autograd reference's.
    for other in (dW, Wr.grad, mml_dW, torch.from_numpy(naive_dW), torch.from_numpy(vec_dW)):
        torch.testing.assert_close(other, ref_dW, rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("p", [1, 2])
def test_gradcheck_on_autograd_function(p):
    W, X, y = problem(n=15, d=5, c=4, seed=p)
    W.requires_grad_(True)
    X.requires_grad_(True)
    fn = lambda W, X: svm_loss(W, X, y, 0.3, delta=1.0, p=p)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (W, X))


def test_gradcheck_rejects_a_wrong_backward():
    """Negative twin: the same gradcheck fails when the backward is off by the reg term."""

    class Wrong(_SVMLoss):
        @staticmethod
        def backward(ctx, g, g_coef):
            dW, dX, *rest = _SVMLoss.backward(ctx, g, g_coef)
            return (dW - 2 * ctx.hyper[0] * ctx.saved_tensors[0], dX, *rest)

    W, X, y = problem(n=15, d=5, c=4)
    W.requires_grad_(True)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda W: Wrong.apply(W, X, y, 0.3, 1.0, 1, 0.0)[0], (W,))


def test_sgd_step_uses_hand_written_gradient():
    W, X, y = problem()
    W_auto = W.clone().requires_grad_(True)
    W_hand = W.clone().requires_grad_(True)
    for param, loss_fn in ((W_auto, svm_loss_autograd), (W_hand, svm_loss)):
        opt = torch.optim.SGD([param], lr=0.5, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            loss_fn(param, X, y, 0.1).backward()
            opt.step()
    torch.testing.assert_close(W_hand, W_auto, rtol=RTOL, atol=1e-14)


# --------------------------------------------------------------------------- the kink

def kinky_problem():
    """Several margins S_ij - S_iy + 1 exactly 0."""
    return exact_kink_problem(n=40, seed=0)


def test_kink_problem_has_exact_zero_margins():
    W, X, y = kinky_problem()
    S = X @ W
    m = S - S.gather(1, y[:, None]) + 1
    m.scatter_(1, y[:, None], 1.0)
    assert int((m == 0).sum()) >= 4


def test_kink_default_matches_naive_loop_autograd_and_pytorch_kernel():
    W, X, y = kinky_problem()
    _, dW = svm_loss_and_grad(W, X, y, 0.2)
    _, naive = svm_loss_naive(W.numpy(), X.numpy(), y.numpy(), 0.2)
    _, auto = autograd_grad(W, X, y, 0.2, 1.0, 1)
    _, mml = mml_reference(W, X, y, 0.2)
    for other in (torch.from_numpy(naive), auto, mml):
        torch.testing.assert_close(dW, other, rtol=0, atol=1e-15)


def _naive_with_kink_one(W, X, y):
    """The naive loop with ``margin >= 0``: the subgradient 1 at every kink."""
    n, c = X.shape[0], W.shape[1]
    dW = torch.zeros_like(W)
    for i in range(n):
        s = X[i] @ W
        for j in range(c):
            if j != y[i] and s[j] - s[y[i]] + 1 >= 0:
                dW[:, j] += X[i] / n
                dW[:, y[i]] -= X[i] / n
    return dW


def test_kink_value_is_a_keyword_and_interpolates():
    W, X, y = kinky_problem()
    _, g0 = svm_loss_and_grad(W, X, y, kink=0.0)
    _, g1 = svm_loss_and_grad(W, X, y, kink=1.0)
    _, gh = svm_loss_and_grad(W, X, y, kink=0.5)
    torch.testing.assert_close(g1, _naive_with_kink_one(W, X, y), rtol=0, atol=1e-15)
    assert not torch.allclose(g0, g1)                          # the kinks matter here
    torch.testing.assert_close(gh, (g0 + g1) / 2, rtol=0, atol=1e-15)
    Wr = W.clone().requires_grad_(True)
    svm_loss(Wr, X, y, kink=1.0).backward()
    torch.testing.assert_close(Wr.grad, g1, rtol=0, atol=1e-15)


def test_kink_value_irrelevant_for_squared_hinge():
    W, X, y = kinky_problem()
    _, g0 = svm_loss_and_grad(W, X, y, p=2, kink=0.0)
    _, g1 = svm_loss_and_grad(W, X, y, p=2, kink=1.0)
    torch.testing.assert_close(g0, g1, rtol=0, atol=0)


def test_multi_margin_kink_convention_matches_pytorch():
    W, X, y = kinky_problem()
    S = (X @ W).requires_grad_(True)
    ours = torch.autograd.grad(multi_margin_loss(S, y), S)[0]
    theirs = torch.autograd.grad(F.multi_margin_loss(S, y), S)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


# --------------------------------------------------------------------------- MultiMarginLoss

S_, M_ = 5, 10
MML_GRID = list(itertools.product(
    [(), (M_,), (S_, M_), (M_, S_)],   # input shapes, as PyTorch's own OpInfo samples
    [1, 2],                            # p
    [0.0, 1.0, 7.0, -3.14],            # margin
    [False, True],                     # weight uniform in (-10, 10)
    ["none", "mean", "sum"],
))


@pytest.mark.parametrize("shape,p,margin,weighted,reduction", MML_GRID)
def test_multi_margin_loss_matches_pytorch(shape, p, margin, weighted, reduction):
    g = torch.Generator().manual_seed(hash((shape, p, margin, weighted, reduction)) % 2**31)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    c = shape[-1] if shape else 1
    if len(shape) == 2:
        target = torch.randint(c, (shape[0],), generator=g)
    else:
        target = torch.randint(c, (), generator=g)
    weight = torch.rand(c, generator=g, dtype=torch.float64) * 20 - 10 if weighted else None
    x_ours = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    ours = multi_margin_loss(x_ours, target, p=p, margin=margin, weight=weight, reduction=reduction)
    ref = F.multi_margin_loss(x_ref, target, p=p, margin=margin, weight=weight, reduction=reduction)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=1e-13)
    grad_out = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(ours, x_ours, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x_ref, grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=RTOL, atol=1e-13)


def test_multi_margin_module_matches_pytorch_module():
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(5, (8,))
    w = torch.rand(5, dtype=torch.float64)
    ours = MultiMarginLoss(p=2, margin=0.5, weight=w, reduction="sum")
    ref = torch.nn.MultiMarginLoss(p=2, margin=0.5, weight=w, reduction="sum")
    torch.testing.assert_close(ours(x, y), ref(x, y), rtol=RTOL, atol=0)
    assert "p=2" in repr(ours)


def test_multi_margin_gradcheck():
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(4, (6,))
    assert torch.autograd.gradcheck(lambda x: multi_margin_loss(x, y, p=2, reduction="none"), (x,))


# --------------------------------------------------------------------------- dtypes, devices

@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_low_precision_runs_and_stays_close(dtype, tol):
    W, X, y = problem(n=64, d=16, c=5)
    ref_loss, ref_dW = svm_loss_and_grad(W, X, y, 0.1)
    loss, dW = svm_loss_and_grad(W.to(dtype), X.to(dtype), y, 0.1)
    assert loss.dtype == dtype and dW.dtype == dtype and dW.shape == W.shape
    assert abs(float(loss) - float(ref_loss)) <= tol * abs(float(ref_loss))
    assert float((dW.double() - ref_dW).abs().max()) <= tol * float(ref_dW.abs().max()) * 4
    Wr = W.to(dtype).requires_grad_(True)
    svm_loss(Wr, X.to(dtype), y, 0.1).backward()
    assert Wr.grad.dtype == dtype
    out = multi_margin_loss((X @ W).to(dtype), y)              # PyTorch's CPU kernel can't do this
    assert out.dtype == dtype


@CUDA
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    W, X, y = problem(n=256, d=32, c=10)
    loss_cpu, dW_cpu = svm_loss_and_grad(W, X, y, 0.1)
    Wc, Xc, yc = W.to("cuda", dtype), X.to("cuda", dtype), y.cuda()
    loss, dW = svm_loss_and_grad(Wc, Xc, yc, 0.1)
    assert loss.device.type == "cuda" and dW.device.type == "cuda" and dW.dtype == dtype
    tol = {torch.float64: 1e-12, torch.float32: 1e-4}.get(dtype, 5e-2)
    assert float((dW.double().cpu() - dW_cpu).abs().max()) <= tol * float(dW_cpu.abs().max())
    Wr = Wc.clone().requires_grad_(True)
    svm_loss(Wr, Xc, yc, 0.1).backward()
    assert Wr.grad.device.type == "cuda"
    out = multi_margin_loss(Xc @ Wc, yc, reduction="none")
    assert out.device.type == "cuda" and out.shape == (256,)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,match", [
    (dict(p=3), r"p must be 1 or 2, got 3"),
    (dict(p=True), r"p must be 1 or 2, got True"),
    (dict(delta=0.0), r"delta must be .*> 0, got 0.0"),
    (dict(delta=-1.0), r"delta must be .*got -1.0"),
    (dict(reg=-0.5), r"reg must be .*>= 0, got -0.5"),
    (dict(reg=float("nan")), r"reg must be .*got nan"),
    (dict(kink=1.5), r"kink .* must be in \[0, 1\], got 1.5"),
])
def test_bad_hyperparameters_name_argument_and_value(kwargs, match):
    W, X, y = problem()
    reg = kwargs.pop("reg", 0.0)
    for fn in (svm_loss_and_grad, svm_loss):
        with pytest.raises(ValueError, match=match):
            fn(W, X, y, reg, **kwargs)
    if "kink" not in kwargs:
        with pytest.raises(ValueError, match=match):
            svm_loss_autograd(W, X, y, reg, **kwargs)


def test_bad_tensors_name_argument_and_value():
    W, X, y = problem(n=10, d=4, c=3)
    with pytest.raises(ValueError, match=r"W must have shape \(D, C\) with D = X.shape\[1\] = 4, got W \(5, 3\)"):
        svm_loss_autograd(torch.zeros(5, 3, dtype=torch.float64), X, y)
    with pytest.raises(ValueError, match=r"y must have shape \(10,\).*got \(9,\)"):
        svm_loss_autograd(W, X, y[:9])
    with pytest.raises(TypeError, match=r"y must hold integer class labels, got dtype torch.float64"):
        svm_loss_autograd(W, X, y.double())
    with pytest.raises(ValueError, match=r"labels in \[0, 3\), got 3"):
        svm_loss_autograd(W, X, torch.full((10,), 3))
    with pytest.raises(ValueError, match=r"labels in \[0, 3\), got -1"):
        svm_loss_autograd(W, X, torch.full((10,), -1))
    with pytest.raises(TypeError, match=r"same dtype, got W torch.float32 and X torch.float64"):
        svm_loss_autograd(W.float(), X, y)
    with pytest.raises(TypeError, match=r"X must have a floating dtype, got torch.int64"):
        svm_loss_autograd(W, X.long(), y)
    with pytest.raises(ValueError, match=r"X must be 2-D, got shape \(40,\)"):
        svm_loss_autograd(W, torch.zeros(40, dtype=torch.float64), y)
    with pytest.raises(TypeError, match=r"W must be a torch.Tensor, got ndarray"):
        svm_loss_autograd(W.numpy(), X, y)
    with pytest.raises(ValueError, match=r"at least one example"):
        svm_loss_autograd(W, X[:0], y[:0])
    # int32 labels are accepted and give the same loss as int64
    torch.testing.assert_close(svm_loss_autograd(W, X, y.int()), svm_loss_autograd(W, X, y))


def test_multi_margin_bad_input():
    x, y = torch.randn(4, 3), torch.randint(3, (4,))
    with pytest.raises(ValueError, match=r"reduction must be one of .*got 'avg'"):
        multi_margin_loss(x, y, reduction="avg")
    with pytest.raises(ValueError, match=r"p must be 1 or 2, got 0"):
        multi_margin_loss(x, y, p=0)
    with pytest.raises(ValueError, match=r"target must hold labels in \[0, 3\), got 7"):
        multi_margin_loss(x, torch.tensor([0, 1, 7, 2]))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), one per class, got \(4,\)"):
        multi_margin_loss(x, y, weight=torch.ones(4))
    with pytest.raises(ValueError, match=r"MultiMargin|reduction"):
        MultiMarginLoss(reduction="bad")


@CUDA
def test_device_mismatch_is_named():
    W, X, y = problem()
    with pytest.raises(ValueError, match=r"same device, got W on cuda:0 and X on cpu"):
        svm_loss_autograd(W.cuda(), X, y)


@pytest.mark.parametrize("c", [10, 64, 200])
def test_both_gradient_layouts_match_autograd(c):
    """Few classes: the GEMM writes (C, D) (CIFAR-10's fast layout); from WIDE_C classes on it
    writes (D, C) directly (linear-probe shape). Both against autograd in float64."""
    from torch_svm.losses import WIDE_C, svm_loss_and_grad, svm_loss_autograd

    g = torch.Generator().manual_seed(c)
    W = (0.1 * torch.randn(33, c, generator=g, dtype=torch.float64)).requires_grad_()
    X = torch.randn(40, 33, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (40,), generator=g)
    loss, dW = svm_loss_and_grad(W.detach(), X, y, 0.3)
    ref = svm_loss_autograd(W, X, y, 0.3)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dW, W.grad, rtol=1e-12, atol=1e-12)
    assert dW.is_contiguous() == (c >= WIDE_C)


def _class_major(W):
    """W's values stored (C, D), as LinearSVM stores its W (W.T contiguous)."""
    return W.T.contiguous().T


def _met_margins_problem(c, dtype, seed=0, n=40, d=33):
    """A batch whose margins are nearly all met: W separates the classes widely, y is each
    row's best class, so few hinge terms are active (B is sparse)."""
    g = torch.Generator().manual_seed(seed)
    W = 8.0 * torch.randn(d, c, generator=g, dtype=torch.float64)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (X @ W).argmax(1)
    y[:3] = torch.tensor([1, 2, 3])                      # some rows still violate margins
    return W.to(dtype), X.to(dtype), y


@pytest.mark.parametrize("c", [10, 64, 200])
def test_class_major_w_gets_its_gradient_in_its_layout_and_matches_autograd(c):
    """LinearSVM's W is stored (C, D): the hand-written gradient comes out in that layout for
    any C (so SGD's update reads both in one order), equal to autograd's in float64."""
    g = torch.Generator().manual_seed(c)
    W = _class_major(0.1 * torch.randn(33, c, generator=g, dtype=torch.float64))
    X = torch.randn(40, 33, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (40,), generator=g)
    loss, dW = svm_loss_and_grad(W, X, y, 0.3)
    ref_loss, ref = autograd_grad(W, X, y, 0.3, 1.0, 1)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dW, ref, rtol=1e-12, atol=1e-12)
    assert dW.T.is_contiguous()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("p,kink", [(1, 0.0), (1, 0.5), (2, 0.0)])
def test_sparse_gradient_is_taken_when_margins_are_met_and_matches_autograd(monkeypatch, dtype,
                                                                            tol, p, kink):
    """Many classes, a class-major W, few active terms: X^T B is summed from B's nonzeros
    (per-class bags of rows) instead of a GEMM. Against autograd in float64; kink 0.5 at exact
    ties (squared hinge: B's values vary)."""
    from torch_svm import losses

    calls = []
    real = losses._sparse_grad_W
    monkeypatch.setattr(losses, "_sparse_grad_W", lambda *a: calls.append(1) or real(*a))
    W, X, y = _met_margins_problem(200, dtype)
    if kink:    # an exact tie: row 5's score for class 0 one margin under its own class's
        X[5] = 0
        X[5, 0] = 1
        W[0, :] = 0
        W[0, y[5]] = 1.0
        W[0, 0] = 0.0
    W = _class_major(W)
    loss, dW = svm_loss_and_grad(W, X, y, 0.3, p=p, kink=kink)
    coef_density = float((svm_margins_active(W, X, y)).double().mean())
    assert calls and coef_density < losses.SPARSE_DENSITY, coef_density
    W64, X64 = W.double(), X.double()
    ref_loss, ref = autograd_grad(W64, X64, y, 0.3, 1.0, p)
    if kink:    # autograd takes 0 at the tie: add the kink's share of its one term
        ref = ref + kink_share(W64, X64, y, kink)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(dW.double(), ref, rtol=tol, atol=tol * float(ref.abs().max()))
    assert dW.T.is_contiguous()


def svm_margins_active(W, X, y):
    from torch_svm import svm_margins

    return svm_margins(W, X, y) >= 0


def kink_share(W, X, y, kink):
    """The gradient of ``kink * m_ij`` summed over the ties m_ij == 0, divided by N."""
    from torch_svm import svm_margins
    from torch_svm.losses import svm_coefficients

    ties = (svm_margins(W, X, y) == 0).to(W.dtype)
    assert ties.sum() >= 1
    return X.T @ svm_coefficients(kink * ties, y) / X.shape[0]


def test_a_sparse_gradient_that_drops_a_term_is_caught(monkeypatch):
    """Negative: the sparse path with one nonzero of B lost must fail the comparison above."""
    import numpy as np

    from torch_svm import losses

    W, X, y = _met_margins_problem(200, torch.float64)
    W = _class_major(W)
    real = np.flatnonzero
    monkeypatch.setattr(losses.np, "flatnonzero", lambda b: real(b)[:-1])
    _, dW = svm_loss_and_grad(W, X, y, 0.3)
    _, ref = autograd_grad(W, X, y, 0.3, 1.0, 1)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(dW, ref, rtol=1e-12, atol=1e-12)


def test_dense_batches_and_traced_inputs_keep_the_gemm(monkeypatch):
    """The sparse path is only for met margins on plain CPU tensors needing no graph: a batch
    with most terms active, and a W that requires grad with grad enabled, take the GEMM."""
    from torch_svm import losses

    monkeypatch.setattr(losses, "_sparse_grad_W", lambda *a: pytest.fail("sparse path taken"))
    g = torch.Generator().manual_seed(1)
    W = _class_major(1e-3 * torch.randn(33, 200, generator=g, dtype=torch.float64))
    X = torch.randn(40, 33, generator=g, dtype=torch.float64)
    y = torch.randint(0, 200, (40,), generator=g)
    svm_loss_and_grad(W, X, y, 0.3)                       # every term active
    Wm, Xm, ym = _met_margins_problem(200, torch.float64)
    Wm = _class_major(Wm).requires_grad_()
    (dW,) = torch.autograd.grad(svm_loss(Wm, Xm, ym, 0.3), Wm, create_graph=True)
    _, ref = autograd_grad(Wm.detach(), Xm, ym, 0.3, 1.0, 1)
    torch.testing.assert_close(dW, ref, rtol=1e-12, atol=1e-12)


def test_float32_gemms_on_onednn_match_mkl_and_can_be_turned_off():
    """float32 on a CPU: the step's GEMMs run on oneDNN where torch has it (faster than MKL at
    a step's skinny shapes); the loss and gradient agree with the MKL path, which
    ``torch.backends.mkldnn.flags(enabled=False)`` selects, and with float64 autograd."""
    from torch_svm.losses import _linear, _onednn_linear

    if _onednn_linear() is None:
        pytest.skip("this torch has no oneDNN linear")
    # small products stay on MKL (oneDNN's per-call cost is larger than digits' GEMMs)
    assert _linear(torch.zeros(65, 10), torch.zeros(200, 65)) is None
    assert _linear(torch.zeros(3073, 10), torch.zeros(200, 3073)) is not None
    assert _linear(torch.zeros(3073, 10, dtype=torch.float64),
                   torch.zeros(200, 3073, dtype=torch.float64)) is None
    g = torch.Generator().manual_seed(3)
    W = _class_major(1e-2 * torch.randn(3073, 10, generator=g))
    X = 50 * torch.randn(200, 3073, generator=g)
    y = torch.randint(0, 10, (200,), generator=g)
    loss, dW = svm_loss_and_grad(W, X, y, 2.5e4)
    torch.backends.mkldnn.enabled = False     # (flags() would also warn about TF32)
    try:
        loss_mkl, dW_mkl = svm_loss_and_grad(W, X, y, 2.5e4)
    finally:
        torch.backends.mkldnn.enabled = True
    ref_loss, ref = autograd_grad(W.double(), X.double(), y, 2.5e4, 1.0, 1)
    scale = float(ref.abs().max())
    for l, d in ((loss, dW), (loss_mkl, dW_mkl)):
        torch.testing.assert_close(l.double(), ref_loss, rtol=1e-5, atol=0)
        torch.testing.assert_close(d.double(), ref, rtol=0, atol=1e-5 * scale)
        assert d.T.is_contiguous()
