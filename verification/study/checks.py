r"""The gradient check measured over draws: parts 1 to 3 of the kink study.

A *draw* (:func:`draw_point`) is a random order of the training split, whose first ``n``
examples are the checked set, and ``W = init_scale * randn(D, C)``, both from one
``torch.Generator`` seeded with the draw's seed. At each draw the hand-written gradient (kink
value 0) is compared at every coordinate with central differences (:func:`check_gradient`):
a coordinate *mismatches* when the CS231n relative error :math:`|a - b| / \max(|a|, |b|)`
exceeds ``threshold``. :func:`measure_sweep` does it at the assignment's check point for each
``delta`` and ``h`` (``exact`` differences at every draw, ``naive`` ones at the first
``naive_draws``) with the prediction of :mod:`verification.study.kinks`; :func:`measure_where` at
the same ``W`` and after a burn-in of SGD (:func:`torch_svm.train.train`), with ``n`` examples.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from torch_svm.data import Dataset
from torch_svm.losses import svm_loss_and_grad
from torch_svm.train import TrainConfig, train
from verification.study.kinks import (count_ties, crossing_terms, expected_crossing_terms,
                                margin_density_at_zero, scaled_margins, simulate_crossed_rates,
                                term_margins)
from verification.checks.tolerance import relative_errors
from verification.checks.numeric import OK, UNEXPLAINED, classify_svm_gradient, svm_finite_differences
from verification.study.results import (BurnIn, CheckCell, Distribution, MarginSummary,
                                        PredictionCell, WhereCell)

__all__: list = []      # internal: import names from here explicitly

#: Kinds of central difference: per-term closed form (no rounding), or two full losses.
METHODS = ("exact", "naive")
#: On a CPU, naive differences in (K, N, C) blocks of this size stay in cache: 2-3 times faster
#: than svm_finite_differences' default, and below torch's threading grain (no thread pool).
_CPU_CHUNK_BYTES = 2**18

Tick = Callable[[str], None]


@dataclass
class GradientCheck:
    """One draw's check of a gradient against central differences at every coordinate."""

    mismatch_rate: float
    crossed_mismatch_rate: float     # mismatching and crossed: what the kinks explain
    crossed_rate: float
    crossing_terms: int
    crossed_share: Optional[float]   # of the mismatches, at crossed coordinates (None: none)
    rounding_share: Optional[float]  # exact: of the mismatches, uncrossed and within rounding
    rounding_rate: Optional[float]   # exact: uncrossed mismatches within rounding, of all coordinates
    unexplained: Optional[int]       # exact: coordinates classify_svm_gradient cannot explain
    max_rel_error: float


def draw_point(X: Tensor, y: Tensor, n: int, init_scale: float, num_classes: int,
               seed: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(order, X[order[:n]], y[order[:n]], W)``: a random order of the rows and
    ``W = init_scale * randn(D, C)`` float64, from one generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(X.shape[0], generator=g).to(X.device)
    W = init_scale * torch.randn(X.shape[1], num_classes, generator=g, dtype=torch.float64)
    return order, X[order[:n]], y[order[:n]], W.to(X.device)


def check_gradient(W: Tensor, X: Tensor, y: Tensor, analytic: Tensor, *, delta: float, h: float,
                   method: str, threshold: float, reg: float = 0.0) -> GradientCheck:
    """Compare ``analytic`` (D, C) with the ``method`` central differences of step ``h``."""
    chunk = {"chunk_bytes": _CPU_CHUNK_BYTES} if method == "naive" and W.device.type == "cpu" else {}
    fd = svm_finite_differences(W, X, y, reg, delta=delta, h=h, naive=method == "naive", **chunk)
    rel = relative_errors(analytic, fd.grad)                           # (D, C)
    bad, crossed = rel > threshold, fd.crossings > 0
    n_bad = int(bad.sum())
    rounding = rounding_rate = unexplained = None
    if method == "exact":
        status = classify_svm_gradient(analytic, fd).status
        n_round = int((bad & ~crossed & (status == OK)).sum())
        rounding = n_round / n_bad if n_bad else None
        rounding_rate = n_round / bad.numel()
        unexplained = int((status == UNEXPLAINED).sum())
    return GradientCheck(
        mismatch_rate=n_bad / bad.numel(),
        crossed_mismatch_rate=float((bad & crossed).double().mean()),
        crossed_rate=float(crossed.double().mean()),
        crossing_terms=crossing_terms(W, X, y, delta, h),
        crossed_share=int((bad & crossed).sum()) / n_bad if n_bad else None,
        rounding_share=rounding, rounding_rate=rounding_rate, unexplained=unexplained,
        max_rel_error=float(rel.max()))


def _check_cell(checks: Sequence[GradientCheck], *, delta: float, h: float, method: str,
                n: int, coordinates: int, point: str = "init") -> CheckCell:
    def dist(name: str) -> Distribution:
        return Distribution.of([getattr(c, name) for c in checks if getattr(c, name) is not None])

    return CheckCell(
        delta=delta, h=h, method=method, n=n, coordinates=coordinates, point=point,
        mismatch_rate=dist("mismatch_rate"), crossed_mismatch_rate=dist("crossed_mismatch_rate"),
        crossed_rate=dist("crossed_rate"),
        crossing_terms=dist("crossing_terms"), crossed_share=dist("crossed_share"),
        rounding_share=dist("rounding_share") if method == "exact" else None,
        rounding_rate=dist("rounding_rate") if method == "exact" else None,
        unexplained=sum(c.unexplained for c in checks) if method == "exact" else None,
        max_rel_error=dist("max_rel_error"))


class _Prediction:
    """Collects, per draw, the density at 0, lambda and simulated rates of one cell."""

    def __init__(self) -> None:
        self.density: List[float] = []
        self.expected: List[float] = []
        self.rates: List[float] = []

    def add(self, X: Tensor, y: Tensor, num_classes: int, h: float, density: float,
            samples: int, generator: torch.Generator) -> None:
        self.density.append(density)
        self.expected.append(expected_crossing_terms(X.shape[0] * (num_classes - 1), h, density))
        self.rates += simulate_crossed_rates(X, y, num_classes, h, density, samples=samples,
                                             generator=generator).tolist()

    def cell(self, check: CheckCell, *, point: str = "init") -> PredictionCell:
        predicted = Distribution.of(self.rates)
        measured = check.crossed_mismatch_rate
        inside = measured.share_within(predicted.q10, predicted.q90) if predicted.draws else None
        return PredictionCell(
            delta=check.delta, h=check.h, density_at_0=Distribution.of(self.density),
            expected_terms=Distribution.of(self.expected), crossing_terms=check.crossing_terms,
            predicted_rate=predicted, measured_rate=measured, inside_share=inside,
            point=point, n=check.n)


def measure_sweep(data: Dataset, *, deltas: Sequence[float], hs: Sequence[float], draws: int,
                  naive_draws: int, init_scale: float, reg: float, threshold: float,
                  bandwidth: Optional[float], samples: int, seed: int,
                  tick: Tick, device: Optional[torch.device] = None
                  ) -> Tuple[List[CheckCell], List[PredictionCell]]:
    """Parts 1 and 2: the check at the assignment's point for every ``delta`` x ``h``, over
    ``draws`` draws (seeds ``seed, seed + 1, ...``) of the dev set and W, on ``device``."""
    n, C = data.config.num_dev, data.num_classes
    X_train, y_train = data.tensors("train", device=device)
    checks: Dict[Tuple[float, float, str], List[GradientCheck]] = defaultdict(list)
    predictions: Dict[Tuple[float, float], _Prediction] = defaultdict(_Prediction)
    simulation = torch.Generator().manual_seed(seed)
    for d in range(draws):
        _, X, y, W = draw_point(X_train, y_train, n, init_scale, C, seed + d)
        for delta in deltas:
            _, analytic = svm_loss_and_grad(W, X, y, reg, delta=delta)
            density = margin_density_at_zero(scaled_margins(W, X, y, delta), bandwidth)
            for h in hs:
                for method in METHODS[:2 if d < naive_draws else 1]:
                    tick(f"draw {d + 1}/{draws} delta={delta:g} h={h:g} {method}")
                    checks[delta, h, method].append(check_gradient(
                        W, X, y, analytic, delta=delta, h=h, method=method,
                        threshold=threshold, reg=reg))
                predictions[delta, h].add(X, y, C, h, density, samples, simulation)
    sweep = [_check_cell(rows, delta=delta, h=h, method=method, n=n, coordinates=W.numel())
             for (delta, h, method), rows in checks.items()]
    prediction = [predictions[c.delta, c.h].cell(c) for c in sweep if c.method == "exact"]
    return sweep, prediction


def _margin_summary(point: str, margins: List[Tensor]) -> MarginSummary:
    def dist(f: Callable[[Tensor], float]) -> Distribution:
        return Distribution.of([f(m) for m in margins])

    counts, edges = np.histogram(torch.cat(margins).cpu().numpy(), bins=100)
    return MarginSummary(
        point=point, mean=dist(lambda m: float(m.mean())), std=dist(lambda m: float(m.std())),
        share_negative=dist(lambda m: float((m < 0).double().mean())),
        share_within_001=dist(lambda m: float((m.abs() < 0.01).double().mean())),
        exact_zeros=dist(lambda m: int((m == 0).sum())),
        hist_edges=edges.tolist(), hist_counts=counts.tolist())


def measure_where(data: Dataset, *, ns: Sequence[int], draws: int, delta: float, h: float,
                  init_scale: float, burn_in: TrainConfig, reg: float, threshold: float,
                  bandwidth: Optional[float], samples: int, seed: int,
                  tick: Tick, device: Optional[torch.device] = None
                  ) -> Tuple[List[WhereCell], BurnIn, List[MarginSummary]]:
    """Part 3: the check (exact differences, ``delta``, ``h``) at the check point's W
    (``init``) and after ``burn_in`` (SGD from a fresh ``burn_in.init_scale * randn``, training
    seed = the draw's seed) on the first ``n`` examples of the draw's order, for each ``n``."""
    C, n_dev = data.num_classes, data.config.num_dev
    X_train, y_train = data.tensors("train", device=device)
    ns = sorted({min(n, X_train.shape[0]) for n in ns})
    checks: Dict[Tuple[str, int], List[GradientCheck]] = defaultdict(list)
    predictions: Dict[Tuple[str, int], _Prediction] = defaultdict(_Prediction)
    ties: Dict[Tuple[str, int], List[int]] = defaultdict(list)
    margins: Dict[str, List[Tensor]] = defaultdict(list)
    accuracy, trained = [], burn_in
    simulation = torch.Generator().manual_seed(seed)
    for d in range(draws):
        order, _, _, W_init = draw_point(X_train, y_train, n_dev, init_scale, C, seed + d)
        tick(f"burn-in {d + 1}/{draws}")
        result = train(data, dataclasses.replace(burn_in, seed=seed + d))
        accuracy.append(result.val_accuracy)
        trained = result.config
        for point, W in (("init", W_init), ("burn_in", result.model.W.detach())):
            margins[point].append(term_margins(W, X_train[order[:n_dev]],
                                               y_train[order[:n_dev]], delta).double())
            for n in ns:
                tick(f"draw {d + 1}/{draws} {point} N={n}")
                X, y = X_train[order[:n]], y_train[order[:n]]
                _, analytic = svm_loss_and_grad(W, X, y, reg, delta=delta)
                checks[point, n].append(check_gradient(W, X, y, analytic, delta=delta, h=h,
                                                       method="exact", threshold=threshold, reg=reg))
                ties[point, n].append(count_ties(W, X, y, delta))
                density = margin_density_at_zero(scaled_margins(W, X, y, delta), bandwidth)
                predictions[point, n].add(X, y, C, h, density, samples, simulation)
    cells = []
    for (point, n), rows in checks.items():
        check = _check_cell(rows, delta=delta, h=h, method="exact", n=n,
                            coordinates=data.num_features * C, point=point)
        cells.append(WhereCell(point=point, n=n, check=check,
                               prediction=predictions[point, n].cell(check, point=point),
                               ties=Distribution.of(ties[point, n])))
    info = BurnIn(iters=trained.iters, lr=trained.lr, reg=trained.reg,
                  batch_size=trained.batch_size, init_scale=trained.init_scale,
                  val_accuracy=Distribution.of(accuracy))
    return cells, info, [_margin_summary(point, m) for point, m in margins.items()]
