"""Exact ties during SGD: part 4 of the kink study.

A *tie* is a hinge margin that is exactly 0 in floating point, where the loss takes its kink
value (``kink`` of :func:`torch_svm.losses.svm_loss`, any value in [0, 1]). The runs here are
:func:`torch_svm.train.train` itself, watched through its per-step ``callback``, which counts
the ties of each minibatch before its step with :func:`verification.study.kinks.count_ties`: the
loss's own margins (:func:`torch_svm.losses.svm_margins`), in the run's dtype and on its
device, so a tie counted is a term where the hand-written gradient used the kink value.

For each precision and training seed, one run per kink value starts from the same ``W0`` (drawn
in float64, then cast) and sees the same minibatches, so the runs differ only where a tie made
the kink value matter. On CUDA, ``float32+tf32`` is float32 with TF32 matmuls (10-bit
mantissa products), and plain ``float32`` runs with TF32 off.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import Tensor

from torch_svm.data import Dataset
from torch_svm.model import LinearSVM
from torch_svm.train import TrainConfig, train
from torch_svm.device import resolve_device
from verification.study.kinks import count_ties
from verification.study.results import Distribution, KinkValueEffect, TieCell

__all__: list = []      # internal: import names from here explicitly

#: The precision name of float32 with TF32 matmuls (CUDA only).
TF32 = "float32+tf32"


def precisions(dtypes: Sequence[str], device: torch.device, tf32: bool) -> List[str]:
    """``dtypes``, plus :data:`TF32` after float32 on a CUDA device when ``tf32``."""
    out = list(dtypes)
    if tf32 and device.type == "cuda" and "float32" in out:
        out.insert(out.index("float32") + 1, TF32)
    return out


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls on CUDA on or off inside the block, the previous setting restored after."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _run(data: Dataset, config: TrainConfig, W0: Tensor) -> Tuple[Tensor, List[int], float]:
    """One run from ``W0``: the final W, the ties of every step, the validation accuracy."""
    model = LinearSVM(*W0.shape, init_scale=0.0, dtype=data.dtype, device=W0.device)
    with torch.no_grad():
        model.W.copy_(W0)
    counts: List[int] = []

    def count(it: int, model: LinearSVM, X: Tensor, y: Tensor) -> None:
        counts.append(count_ties(model.W, X, y, config.delta))

    result = train(data, config, model=model, callback=count)
    return result.model.W.detach().clone(), counts, result.val_accuracy


def measure_ties(data: Dataset, *, precisions: Sequence[str], kinks: Sequence[float],
                 seeds: Sequence[int], config: TrainConfig, init_scale: float,
                 tick: Callable[[str], None]) -> List[TieCell]:
    """Part 4 on ``data`` (any dtype; cast per precision): for each precision, seed and kink
    value, ``config`` with that kink and seed, from ``W0 = init_scale * randn`` of the seed."""
    cells = []
    shape = (data.num_features, data.num_classes)
    device = resolve_device(config.device)
    for precision in precisions:
        cast = data.astype(precision.split("+")[0])
        finals: Dict[float, List[Tensor]] = {k: [] for k in kinks}
        accuracy: Dict[float, List[float]] = {k: [] for k in kinks}
        first: List[List[int]] = []                     # ties per step, first kink value's runs
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            W0 = init_scale * torch.randn(*shape, generator=g, dtype=torch.float64)
            for kink in kinks:
                tick(f"ties {data.name} {precision} seed={seed} kink={kink:g}")
                with _tf32(precision == TF32):
                    W, counts, acc = _run(cast, dataclasses.replace(config, kink=kink, seed=seed),
                                          W0.to(device=device, dtype=cast.dtype))
                finals[kink].append(W)
                accuracy[kink].append(acc)
                if kink == kinks[0]:
                    first.append(counts)
        ref = finals[kinks[0]]
        effects = [KinkValueEffect(
            kink=k, identical=sum(bool(torch.equal(a, b)) for a, b in zip(finals[k], ref)),
            runs=len(ref),
            max_abs_diff=Distribution.of([float((a.double() - b.double()).abs().max())
                                          for a, b in zip(finals[k], ref)]),
            val_accuracy=Distribution.of(accuracy[k])) for k in kinks]
        terms = config.iters * config.batch_size * (data.num_classes - 1)
        cells.append(TieCell(
            dataset=data.name, precision=precision, device=str(device),
            iters=config.iters, batch_size=config.batch_size, lr=config.lr, reg=config.reg,
            ties=Distribution.of([sum(c) for c in first]),
            tie_rate=Distribution.of([sum(c) / terms for c in first]),
            steps_with_ties=Distribution.of([sum(t > 0 for t in c) for c in first]),
            first_tie_step=Distribution.of([next(i + 1 for i, t in enumerate(c) if t)
                                            for c in first if any(c)]),
            kink_values=effects))
    return cells
