"""The kink study's figures, drawn from a :class:`~verification.study.results.StudyResults`.

Built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global backend), as
:mod:`torch_svm.plots` does, and returned as PNG bytes for the report writer. Spread over
draws is shown as error bars from the 10% to the 90% quantile (min to max below 10 draws) or
as box plots whose whiskers are those quantiles.
"""
from __future__ import annotations

import io
from typing import Callable, Dict, List, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from verification.study.results import Distribution, StudyResults

__all__: list = []      # internal: import names from here explicitly

#: The figures :func:`render_figures` draws, by file name, and what each shows.
FIGURES = {
    "mismatch.png": "mismatch rate against h for each delta, exact and naive differences",
    "prediction.png": "predicted against measured mismatch rate: box plots by h, QQ plot at the check point",
    "where.png": "mismatch rate against N at the check point and after burn-in, with the prediction",
    "margins.png": "histograms of the term margins at the check point and after burn-in",
    "ties.png": "exact ties per SGD run by precision",
}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def _spread(d: Distribution) -> Sequence[float]:
    """(below, above) the median: to q10 / q90, or to min / max under 10 draws."""
    lo, hi = (d.q10, d.q90) if d.draws >= 10 else (d.min, d.max)
    return d.median - lo, hi - d.median


def _errorbars(ax, x: Sequence[float], dists: Sequence[Distribution], **kwargs) -> None:
    x = [v for v, d in zip(x, dists) if d.draws]
    dists = [d for d in dists if d.draws]
    if dists:
        err = np.array([_spread(d) for d in dists]).T                   # (2, points)
        ax.errorbar(x, [d.median for d in dists], yerr=err, capsize=3, **kwargs)


def _rate_axis(ax, label: str) -> None:
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _mismatch(r: StudyResults) -> Figure:
    methods = [m for m in ("exact", "naive") if any(c.method == m for c in r.sweep)]
    fig = Figure(figsize=(5.2 * len(methods), 3.8))
    for i, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), i + 1)
        for k, delta in enumerate(sorted({c.delta for c in r.sweep})):
            cells = sorted((c for c in r.sweep if c.method == method and c.delta == delta),
                           key=lambda c: c.h)
            color = f"C{k}"
            # exact: the kinks' mismatches, and apart from them (dotted) those of rounding
            rates = [c.crossed_mismatch_rate if method == "exact" else c.mismatch_rate for c in cells]
            _errorbars(ax, [c.h for c in cells], rates, fmt="o-", color=color, label=f"delta={delta:g}")
            if method == "exact" and any(c.rounding_rate is not None and c.rounding_rate.median
                                         for c in cells):
                ax.plot([c.h for c in cells], [c.rounding_rate.median for c in cells], ":",
                        color=color, label="dotted: rounding, not kinks" if not k else None)
        ax.set_xscale("log")
        ax.set_xlabel("h")
        _rate_axis(ax, f"share of coordinates with rel. error > {r.config['threshold']:g}")
        draws = max(c.mismatch_rate.draws for c in r.sweep if c.method == method)
        what = ("exact: mismatches at kink crossings" if method == "exact" else
                "naive (the loss twice): kinks and rounding")
        ax.set_title(f"{what}, median of {draws} draws", fontsize=8)
        ax.legend(fontsize=8)
    return fig


def _boxes(ax, positions: Sequence[float], data: List[List[float]], color: str, label: str) -> None:
    kept = [(p, v) for p, v in zip(positions, data) if v]
    if kept:
        parts = ax.boxplot([v for _, v in kept], positions=[p for p, _ in kept], widths=0.3,
                           whis=(10, 90), showfliers=True, patch_artist=True,
                           flierprops={"markersize": 2})
        for box in parts["boxes"]:
            box.set(facecolor=color, alpha=0.6)
        ax.plot([], [], "s", color=color, alpha=0.6, label=label)


def _prediction(r: StudyResults) -> Figure:
    delta, h = r.config["point_delta"], r.config["point_h"]
    cells = sorted((c for c in r.prediction if c.delta == delta), key=lambda c: -c.h)
    fig = Figure(figsize=(10.5, 4.0))
    ax = fig.add_subplot(1, 2, 1)
    x = np.arange(len(cells))
    _boxes(ax, x - 0.17, [c.predicted_rate.values for c in cells], "tab:orange", "predicted")
    _boxes(ax, x + 0.17, [c.measured_rate.values for c in cells], "tab:blue", "measured")
    ax.set_xticks(x, [f"{c.h:g}" for c in cells])
    ax.set_xlabel("h")
    _rate_axis(ax, "mismatch rate")
    ax.set_title(f"delta = {delta:g}; boxes: quartiles, whiskers: 10-90%", fontsize=9)
    ax.legend(fontsize=8)

    cell = r.predicted(delta, h)
    if not (cell.measured_rate.median or cell.predicted_rate.median):
        # nothing crosses at the check point's h: the QQ plot where kinks show
        busiest = max(cells, key=lambda c: (c.measured_rate.median, c.predicted_rate.median))
        cell, h = busiest, busiest.h
    ax = fig.add_subplot(1, 2, 2)
    measured = np.sort(np.asarray(cell.measured_rate.values))
    if measured.size and cell.predicted_rate.draws:
        probs = (np.arange(measured.size) + 0.5) / measured.size
        predicted = np.quantile(np.asarray(cell.predicted_rate.values), probs)
        ax.plot(predicted, measured, "o", ms=4)
        top = max(predicted.max(), measured.max(), 1e-3) * 1.05
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="measured = predicted")
        ax.axvspan(cell.predicted_rate.q10, cell.predicted_rate.q90, color="tab:orange",
                   alpha=0.15, label="predicted 10-90%")
        ax.legend(fontsize=8)
    inside = "-" if cell.inside_share is None else f"{100 * cell.inside_share:.0f}%"
    ax.set_xlabel("predicted quantile")
    ax.set_ylabel("measured quantile")
    ax.set_title(f"QQ at delta = {delta:g}, h = {h:g}: {cell.measured_rate.draws} draws, "
                 f"{inside} inside the predicted 10-90%", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def _where(r: StudyResults) -> Figure:
    fig = Figure(figsize=(5.6, 3.9))
    ax = fig.add_subplot()
    for point, color in (("init", "tab:blue"), ("burn_in", "tab:red")):
        cells = sorted((w for w in r.where if w.point == point), key=lambda w: w.n)
        if not cells:
            continue
        ns = [w.n for w in cells]
        _errorbars(ax, ns, [w.check.crossed_mismatch_rate for w in cells], fmt="o-", color=color,
                   label=f"{point}, measured at kink crossings")
        ax.plot(ns, [w.check.mismatch_rate.median for w in cells], ":", color=color,
                label=f"{point}, all mismatches (with rounding)")
        pred = [w.prediction.predicted_rate for w in cells]
        ax.plot(ns, [d.median for d in pred], "--", color=color, label=f"{point}, predicted")
        ax.fill_between(ns, [d.q10 for d in pred], [d.q90 for d in pred], color=color, alpha=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("N examples")
    _rate_axis(ax, "mismatch rate (exact differences)")
    ax.set_title(f"delta = {r.config['point_delta']:g}, h = {r.config['point_h']:g}, "
                 f"median and 10-90% over draws", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _margins(r: StudyResults) -> Figure:
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.add_subplot()
    for m in r.margins:
        ax.stairs(m.hist_counts, m.hist_edges, label=f"{m.point} ({m.mean.draws} draws pooled)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(f"margin m (delta = {r.config['point_delta']:g}, dev set of each draw)")
    ax.set_ylabel("terms")
    ax.legend(fontsize=8)
    return fig


def _ties(r: StudyResults) -> Figure:
    fig = Figure(figsize=(1.2 + 0.9 * max(1, len(r.ties)), 3.8))
    ax = fig.add_subplot()
    if r.ties:
        ax.boxplot([t.ties.values for t in r.ties], whis=(10, 90))
        ax.set_xticks(range(1, len(r.ties) + 1),
                      [f"{t.dataset}\n{t.precision}" for t in r.ties], fontsize=7)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("exact ties per SGD run")
    ax.set_title("ties in the loss's own margins, over training seeds", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


_DRAW: Dict[str, Callable[[StudyResults], Figure]] = {
    "mismatch.png": _mismatch, "prediction.png": _prediction, "where.png": _where,
    "margins.png": _margins, "ties.png": _ties,
}


def render_figures(results: StudyResults) -> Dict[str, bytes]:
    """Every figure of :data:`FIGURES`, as PNG bytes by file name."""
    return {name: _png(_DRAW[name](results)) for name in FIGURES}
