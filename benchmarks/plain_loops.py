"""The SGD loops a PyTorch user writes instead of torch-svm, for the benchmarks to run beside it.

``nn.Linear``, ``nn.MultiMarginLoss`` (times C: it averages over the classes as well as the
examples, so that x C its step is the SVM loss's), ``torch.optim.SGD`` with ``weight_decay =
2 reg`` (the SVM loss's ``reg * sum(W^2)`` as a decay per step), on inputs already in memory:

* ``gather``: ``X[randint]``, batches drawn with replacement (as the assignment draws them);
* ``dataloader``: a shuffled ``DataLoader`` over a ``TensorDataset`` (the tutorial way: each
  batch collated from single rows).
"""
from __future__ import annotations

import time
from typing import Tuple

import torch
from torch import nn

KINDS = ("gather", "dataloader")


def _warm_optim() -> None:
    """torch.optim's first step imports torch._dynamo (seconds): paid before any timing."""
    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros(1)
    torch.optim.SGD([p], lr=0.1).step()


def plain_sgd(X: torch.Tensor, y: torch.Tensor, num_classes: int, lr: float, reg: float,
              iters: int, batch_size: int = 200, *, kind: str = "gather", bias: bool = True,
              init_scale: float = 1e-3, seed: int = 0) -> Tuple[nn.Linear, float, float]:
    """``(model, seconds, cpu_seconds)`` of ``iters`` SGD steps on ``X (N, D)``, ``y (N,)``;
    the time is the loop's alone."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _warm_optim()
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(X.shape[1], num_classes, bias=bias, dtype=X.dtype)
    with torch.no_grad():
        model.weight.normal_(0.0, init_scale, generator=g)
        if bias:
            model.bias.zero_()
    criterion = nn.MultiMarginLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=2 * reg)
    if kind == "dataloader":
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y),
                                             batch_size=batch_size, shuffle=True, generator=g)
        batches = iter(())
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(iters):
        if kind == "dataloader":
            try:
                xb, yb = next(batches)
            except StopIteration:
                batches = iter(loader)
                xb, yb = next(batches)
        else:
            idx = torch.randint(0, len(y), (batch_size,), generator=g)
            xb, yb = X[idx], y[idx]
        loss = criterion(model(xb), yb) * num_classes
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, time.perf_counter() - start, time.process_time() - cpu_start


def gemm_floor(batch_size: int, d: int, c: int, iters: int) -> Tuple[float, float]:
    """``(seconds, cpu_seconds)`` of ``iters`` rounds of a step's two GEMMs alone, the floor
    a step that multiplies every entry cannot go below: scores ``(B, D) @ (D, C)`` and the
    gradient ``(D, B) @ (B, C)``, written into buffers allocated once (``torch.mm(..., out=)``),
    on torch's current threads. Each GEMM is timed in both layouts (W and the gradient as
    ``(D, C)``, or stored ``(C, D)`` as ``nn.Linear`` stores its weight) and the faster one
    counts: on some CPUs MKL runs one layout 3x slower at CIFAR-10's skinny shape."""
    g = torch.Generator().manual_seed(0)
    xb, W = torch.randn(batch_size, d, generator=g), torch.randn(d, c, generator=g)
    Wt, G = W.T.contiguous(), torch.randn(batch_size, c, generator=g)
    S, dW, dWt = torch.empty(batch_size, c), torch.empty(d, c), torch.empty(c, d)
    pairs = ((lambda: torch.mm(xb, W, out=S), lambda: torch.mm(Wt, xb.T, out=S.T)),      # scores
             (lambda: torch.mm(xb.T, G, out=dW), lambda: torch.mm(G.T, xb, out=dWt)))   # X^T G
    seconds = cpu = 0.0
    for layouts in pairs:
        best = None
        for gemm in layouts:
            gemm()
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(iters):
                gemm()
            t = (time.perf_counter() - start, time.process_time() - cpu_start)
            best = t if best is None or t[0] < best[0] else best
        seconds, cpu = seconds + best[0], cpu + best[1]
    return seconds, cpu


def accuracy(model: nn.Linear, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(X).argmax(1) == y).double().mean())
