"""The one-pass loss + gradient (X read block by block) and the margins it masks.

References: ``verification.reference.autograd_reference`` (torch.autograd on plain ops, float64)
and the exact arithmetic of integer data, where every margin is exact whatever the GEMM's
blocking or summation order, so the terms at a kink can be counted and compared exactly.
"""
import pytest
import torch

from conftest import random_problem
from torch_svm import losses
from torch_svm.losses import svm_coefficients, svm_loss, svm_loss_and_grad, svm_margins
from torch_svm.utils import THREAD_GRAIN, using_threads
from verification.reference import autograd_reference

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def _many_blocks(n=2000, d=600, seed=0, **kw):
    """A problem that spans several row blocks (D = 600 float64 rows: 873 per 4 MiB block)."""
    W, X, y = random_problem(n, d, 10, seed=seed, **kw)
    assert len(losses._row_blocks(X, 10)) >= 3
    return W, X, y


@pytest.mark.parametrize("p, reg", [(1, 0.0), (1, 0.3), (2, 0.3)])
def test_one_pass_matches_autograd_over_several_blocks(p, reg):
    W, X, y = _many_blocks(w_scale=0.05)
    loss, dW = svm_loss_and_grad(W, X, y, reg, p=p)
    ref_loss, ref_dW = autograd_reference(W, X, y, reg, p=p)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(dW, ref_dW, rtol=1e-10, atol=1e-13)
    Wr = W.clone().requires_grad_(True)                         # the autograd.Function path
    fn_loss = svm_loss(Wr, X, y, reg, p=p)
    fn_loss.backward()
    torch.testing.assert_close(Wr.grad, dW, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(fn_loss.detach(), loss, rtol=1e-12, atol=0)


def test_a_lost_block_is_caught(monkeypatch):
    """Negative twin: a pass that skips its last block no longer matches the reference."""
    W, X, y = _many_blocks(w_scale=0.05)
    ref_loss, ref_dW = autograd_reference(W, X, y, 0.3)
    blocks = losses._row_blocks
    monkeypatch.setattr(losses, "_row_blocks", lambda X, c: blocks(X, c)[:-1])
    loss, dW = svm_loss_and_grad(W, X, y, 0.3)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(dW, ref_dW, rtol=1e-10, atol=1e-13)
    assert loss < ref_loss


@pytest.mark.parametrize("threads", [1, 2])
def test_margins_are_the_blocks_the_gradient_masks(threads, monkeypatch):
    """svm_margins is computed with the same GEMM calls as the one-pass gradient's blocks,
    at any thread count (a multi-threaded GEMM rounds a row of a big product differently)."""
    monkeypatch.setattr(losses, "THREAD_GRAIN", 2**16)              # small blocks on 2 threads
    W, X, y = _many_blocks(seed=1)
    with using_threads(threads):
        blocks = losses._row_blocks(X, 10)
        whole = svm_margins(W, X, y)
        parts = torch.cat([losses._block_margins(W, X[b], y[b], 1.0) for b in blocks])
    assert torch.equal(whole, parts)


def test_kink_terms_seen_by_the_gradient_are_the_zero_margins():
    """Integer data: margins are exact, some exactly 0. The gradient with kink = 1 minus the
    one with kink = 0 is exactly the zero-margin terms' X^T B / N: the one-pass gradient
    treats as kinks exactly the terms svm_margins reports at 0, in every block."""
    g = torch.Generator().manual_seed(0)
    n, d, c = 4096, 300, 10                                  # 1/n exact: all sums exact
    X = torch.randint(-3, 4, (n, d), generator=g).to(F64)
    W = torch.randint(-1, 2, (d, c), generator=g).to(F64)
    y = torch.randint(c, (n,), generator=g)
    assert len(losses._row_blocks(X, c)) >= 2
    zero = (svm_margins(W, X, y) == 0).to(F64)                  # (N, C)
    assert zero.sum() > 100
    _, at0 = svm_loss_and_grad(W, X, y, kink=0.0)
    _, at1 = svm_loss_and_grad(W, X, y, kink=1.0)
    expected = X.T @ svm_coefficients(zero, y) / n
    assert torch.equal(at1 - at0, expected)
    # negative twin: one kink term fewer is seen
    i, j = zero.nonzero()[0].tolist()
    zero[i, j] = 0
    assert not torch.equal(at1 - at0, X.T @ svm_coefficients(zero, y) / n)


def test_blocks_hold_a_threads_worth_of_work():
    X = torch.empty(1, 3073).expand(49000, 3073)                   # shape only, no memory
    with using_threads(1):
        one = losses._row_blocks(X, 10)
    with using_threads(2):
        two = losses._row_blocks(X, 10)
    rows = lambda blocks: blocks[0].stop - blocks[0].start
    assert rows(one) * 3073 * 4 <= losses._BLOCK_BYTES               # one core's cache
    assert rows(two) == 2 * THREAD_GRAIN // (3073 * 10)              # enough work per thread
    for blocks in (one, two):                                         # they tile the rows
        assert blocks[0].start == 0 and blocks[-1].start < 49000 <= blocks[-1].stop
        assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
    assert len(losses._row_blocks(X[:100], 10)) == 1
