"""Typed results of the kink study (:mod:`verification.study.run`).

Every measured number is a :class:`Distribution` over independent draws: of the dev set and
``W`` at the check point, of the training seed where SGD is involved. ``dataclasses.asdict``
of a :class:`StudyResults` is what ``results.json`` holds (:mod:`verification.study.report`),
so a cell there reads ``{"draws", "median", "q10", "q90", "min", "max", "values"}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__: list = []      # internal: import names from here explicitly


@dataclass
class Distribution:
    """One quantity over ``draws`` independent draws: its median, 10% and 90% quantiles
    (linear interpolation), extremes and the values themselves, in draw order."""

    draws: int
    median: Optional[float]         # None when there are no draws
    q10: Optional[float]
    q90: Optional[float]
    min: Optional[float]
    max: Optional[float]
    values: List[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Distribution":
        v = [float(x) for x in values]
        if not v:
            return cls(0, None, None, None, None, None, [])
        q10, median, q90 = np.quantile(np.asarray(v), [0.1, 0.5, 0.9]).tolist()
        return cls(len(v), median, q10, q90, min(v), max(v), v)

    def share_within(self, lo: float, hi: float) -> Optional[float]:
        """Share of the values in ``[lo, hi]`` (None when there are no draws)."""
        return None if not self.values else sum(lo <= x <= hi for x in self.values) / self.draws


@dataclass
class CheckCell:
    """The gradient check (kink value 0) against one kind of central difference at every
    coordinate, over draws. Rates are shares of the ``coordinates``; a *mismatch* has a
    relative error above the study's threshold."""

    delta: float
    h: float
    method: str                      # "exact" (per-term, no rounding) or "naive" (two losses)
    n: int                           # examples per draw
    coordinates: int                 # D C
    mismatch_rate: Distribution
    crossed_mismatch_rate: Distribution  # mismatching and crossed: the mismatches kinks explain
    crossed_rate: Distribution       # coordinates with at least one crossing
    crossing_terms: Distribution     # terms some coordinate's step crosses
    crossed_share: Distribution      # of the mismatches, the share at crossed coordinates (draws with any)
    rounding_share: Optional[Distribution]  # exact: of the mismatches, the share within rounding of a ~0 gradient
    unexplained: Optional[int]       # exact: coordinates classify_svm_gradient cannot explain, all draws
    max_rel_error: Distribution
    point: str = "init"              # "init" (the check point) or "burn_in"
    rounding_rate: Optional[Distribution] = None  # exact: uncrossed mismatches within rounding
                                     # of a gradient that is 0 up to cancellation: not kinks


@dataclass
class PredictionCell:
    """Predicted (:func:`verification.study.kinks.simulate_crossed_rates`, pooled over draws) against
    measured rate of mismatches at crossed coordinates (exact differences; the kinks' share of
    the mismatch rate), and the crossing terms behind it."""

    delta: float
    h: float
    density_at_0: Distribution       # g(0) of the scaled margins, per draw
    expected_terms: Distribution     # lambda, per draw
    crossing_terms: Distribution     # measured, per draw
    predicted_rate: Distribution     # simulated, samples per draw x draws
    measured_rate: Distribution      # CheckCell.crossed_mismatch_rate, per draw
    inside_share: Optional[float]    # share of measured draws within predicted [q10, q90]
    point: str = "init"
    n: int = 0


@dataclass
class WhereCell:
    """The check (exact differences) at ``point`` with ``n`` examples, and its prediction."""

    point: str                       # "init" or "burn_in"
    n: int
    check: CheckCell
    prediction: PredictionCell
    ties: Distribution               # margins exactly 0 at that point


@dataclass
class BurnIn:
    """How the ``burn_in`` point was reached: SGD through :func:`torch_svm.train.train`."""

    iters: int
    lr: float
    reg: float
    batch_size: int
    init_scale: float
    val_accuracy: Distribution       # over training seeds


@dataclass
class MarginSummary:
    """The term margins at one point on the draw's dev set, over draws, and a histogram
    pooled over all draws (for the figure)."""

    point: str
    mean: Distribution
    std: Distribution
    share_negative: Distribution
    share_within_001: Distribution   # |m| < 0.01
    exact_zeros: Distribution
    hist_edges: List[float]
    hist_counts: List[int]


@dataclass
class KinkValueEffect:
    """Runs with one kink value against the runs with the first one, same seeds and batches."""

    kink: float
    identical: int                   # runs whose final W is bitwise equal
    runs: int
    max_abs_diff: Distribution       # max |W - W_first| per run
    val_accuracy: Distribution


@dataclass
class TieCell:
    """Exact ties during SGD for one data set and precision, over training seeds."""

    dataset: str
    precision: str                   # a dtype name, "float32+tf32" for TF32 matmuls on CUDA
    device: str
    iters: int
    batch_size: int
    lr: float
    reg: float
    ties: Distribution               # ties per run (first kink value), summed over its steps
    tie_rate: Distribution           # ties / (iters * batch * (C - 1)) terms
    steps_with_ties: Distribution
    first_tie_step: Distribution     # 1-based, runs with a tie only
    kink_values: List[KinkValueEffect]


@dataclass
class StudyResults:
    """Everything :func:`verification.study.run.run_study` measured; what the report shows."""

    config: Dict[str, Any]           # dataclasses.asdict(StudyConfig)
    data: Dict[str, Any]             # name, sizes, device, preprocessing
    sweep: List[CheckCell]           # delta x h x method at the check point
    prediction: List[PredictionCell] # delta x h at the check point
    where: List[WhereCell]           # point x n
    burn_in: BurnIn
    margins: List[MarginSummary]     # per point
    ties: List[TieCell]
    one_d: Dict[str, Any]            # verification.study.kinks.one_dimensional_example()
    seconds: Dict[str, float] = field(default_factory=dict)

    def cell(self, delta: float, h: float, method: str = "exact") -> CheckCell:
        return next(c for c in self.sweep if (c.delta, c.h, c.method) == (delta, h, method))

    def predicted(self, delta: float, h: float) -> PredictionCell:
        return next(c for c in self.prediction if (c.delta, c.h) == (delta, h))

    def summary(self) -> Dict[str, Any]:
        """The headline numbers: the mismatch table (median, q10, q90 per cell), the
        prediction at the check point, ties per precision, the one-dimensional example."""
        table: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for c in self.sweep:
            rates = {c.method: c.mismatch_rate}
            if c.method == "exact":     # the exact mismatches split: kink crossings, rounding
                rates.update(exact_kinks=c.crossed_mismatch_rate, exact_rounding=c.rounding_rate)
            for name, rate in rates.items():
                if rate is not None:
                    table.setdefault(name, {}).setdefault(f"{c.delta:g}", {})[f"{c.h:g}"] = _brief(rate)
        d, h = self.config["point_delta"], self.config["point_h"]
        p = self.predicted(d, h)
        return {
            "data": self.data["name"],
            "mismatch": table,
            "check_point": {"delta": d, "h": h,
                            "measured": _brief(p.measured_rate), "predicted": _brief(p.predicted_rate),
                            "inside_share": p.inside_share},
            "ties": [{"dataset": t.dataset, "precision": t.precision, **_brief(t.ties)}
                     for t in self.ties],
            "one_d": {"central": self.one_d["svm"]["central"], "forward": self.one_d["svm"]["forward"],
                      "analytic": self.one_d["svm"]["analytic"]},
            "seconds": self.seconds.get("total"),
        }


def _brief(d: Distribution) -> Dict[str, Any]:
    return {"draws": d.draws, "median": d.median, "q10": d.q10, "q90": d.q90}
