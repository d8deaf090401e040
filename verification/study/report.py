"""The kink study's report: ``report.md``, ``results.json`` and the figures, from a
:class:`~verification.study.results.StudyResults`; every number in the text comes from it.

A distribution is written ``median [q10, q90]`` with at least 10 draws and
``median (min to max)`` below that; each table says over how many draws.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, List, Optional, Union

from torch_svm.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from torch_svm.errors import ArgumentTypeError
from verification.study.figures import render_figures
from verification.study.results import CheckCell, Distribution, StudyResults

__all__: list = []      # internal: import names from here explicitly


def write_report(results: StudyResults, out_dir: Union[str, Path]) -> List[Path]:
    """Write ``results.json``, the figures (:data:`verification.study.figures.FIGURES`) and ``report.md`` into ``out_dir``, each
    atomically. Returns the paths written."""
    if not isinstance(results, StudyResults):
        raise ArgumentTypeError(f"results must be a StudyResults, got {type(results).__name__}")
    out = Path(out_dir)
    paths = [atomic_write_json(out / "results.json", dataclasses.asdict(results))]
    paths += [atomic_write_bytes(out / name, png) for name, png in render_figures(results).items()]
    paths.append(atomic_write_text(out / "report.md", render_markdown(results)))
    return paths


# --------------------------------------------------------------------------- formatting


def _pct(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{100 * x:.3g}%" if abs(x) >= 1e-4 else f"{100 * x:.1e}%"


def _num(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x == 0 or abs(x) >= 1e-9 else f"{'-' if x < 0 else ''}<1e-9"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _dist(d: Optional[Distribution], fmt: Callable[[Optional[float]], str] = _pct) -> str:
    """``median [q10, q90]`` (10 draws or more), ``median (min to max)``, or one value."""
    if d is None or not d.draws:
        return "-"
    if fmt(d.min) == fmt(d.max):
        return fmt(d.median)
    if d.draws >= 10:
        return f"{fmt(d.median)} [{fmt(d.q10)}, {fmt(d.q90)}]"
    return f"{fmt(d.median)} ({fmt(d.min)} to {fmt(d.max)})"


def _draws(cells) -> str:
    """How many draws the cells hold: ``"40"`` or ``"3 to 40"``."""
    counts = sorted({c.mismatch_rate.draws for c in cells})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def _table(r: StudyResults, method: str, cell_text: Callable[[CheckCell], str]) -> List[str]:
    cells = [c for c in r.sweep if c.method == method]
    hs = sorted({c.h for c in cells}, reverse=True)
    lines = ["| delta \\ h | " + " | ".join(f"{h:g}" for h in hs) + " |",
             "|---|" + "---|" * len(hs)]
    for delta in sorted({c.delta for c in cells}):
        lines.append(f"| {delta:g} | " + " | ".join(cell_text(r.cell(delta, h, method)) for h in hs) + " |")
    return lines


# --------------------------------------------------------------------------- sections


def _intro(r: StudyResults) -> List[str]:
    cfg, data = r.config, r.data
    coords = r.sweep[0].coordinates
    return [
        f"# Kinks in the SVM gradient check ({data['name']})", "",
        f"Check point: W = {cfg['init_scale']:g} * randn{_scale_note(r)} and a {data['n_dev']}-example dev set "
        f"drawn from the {data['n_train']}-example training split, {data['preprocessing']}, "
        f"D = {data['features']}, C = {data['classes']} ({coords} coordinates, every one checked), "
        f"reg = {cfg['reg']:g}, float64. Every number is a distribution over independent draws "
        f"of the dev set and W (draw d uses seed {cfg['seed']} + d), written **median [10%, 90% "
        f"quantiles]**, or median (min to max) with fewer than 10 draws; `results.json` holds every "
        f"value. A coordinate *mismatches* when the CS231n relative error |a - b| / max(|a|, |b|) "
        f"between the analytic gradient (kink value 0) and the central difference exceeds "
        f"{cfg['threshold']:g}. The step of a coordinate *crosses* a term's kink when the term's "
        f"margin m changes sign inside it (|m| < h|x_ik|); a *crossed coordinate* has at least one "
        f"crossing; a *crossing term* is crossed by some coordinate's step (|m| < h max_k |x_ik|); "
        f"a *tie* is a margin exactly 0 in floating point.", ""]


def _scale_note(r: StudyResults) -> str:
    if r.data["name"] != "digits" or r.config["init_scale"] != 1e-2:
        return ""
    return (" (not the assignment's 1e-4: on digits' 65 pixels of 0-16 that leaves every margin "
            "within about 0.005 of delta, where no step crosses a kink; 1e-2 spreads them as "
            "1e-4 does on CIFAR-10's unscaled pixels)")


def _sweep(r: StudyResults) -> List[str]:
    exact = [c for c in r.sweep if c.method == "exact"]
    naive = [c for c in r.sweep if c.method == "naive"]
    unexplained = sum(c.unexplained or 0 for c in exact)
    checks = sum(c.mismatch_rate.draws for c in exact)
    L = ["## 1. Mismatch rate by delta and h", "",
         f"**Exact** central differences (per-term closed form, no rounding error), "
         f"{_draws(exact)} draws: the mismatches at kink crossings, which the kinks explain",
         "", *_table(r, "exact", lambda c: _dist(c.crossed_mismatch_rate)), "",
         "and, apart from them, the uncrossed mismatches within floating-point rounding of a "
         "gradient that is 0 up to cancellation (rounding, not kinks; the exact differences "
         "leave only that):", "",
         *_table(r, "exact", lambda c: "-" if c.rounding_rate is None else _dist(c.rounding_rate)), ""]
    if naive:
        L += [f"**Naive** central differences (the loss evaluated twice in float64, as "
              f"`grad_check_sparse` does) at the first {_draws(naive)} of those draws:", "",
              *_table(r, "naive", lambda c: _dist(c.mismatch_rate)), ""]
    L += ["Share of coordinates crossed (exact):", "",
          *_table(r, "exact", lambda c: _dist(c.crossed_rate)), "",
          "Of the exact mismatches, the share at crossed coordinates / the share within "
          "floating-point rounding of a gradient that is 0 up to cancellation (median over the "
          "draws with any mismatch):", "",
          *_table(r, "exact", lambda c: "-" if not c.crossed_share.draws else
                  f"{_pct(c.crossed_share.median)} / {_pct(c.rounding_share.median)}"), "",
          f"Coordinates `classify_svm_gradient` cannot explain (neither a crossing nor rounding): "
          f"{unexplained} in {checks} exact checks.", "", "![mismatch](mismatch.png)", ""]
    return L


def _prediction(r: StudyResults) -> List[str]:
    cfg = r.config
    delta, h = cfg["point_delta"], cfg["point_h"]
    shown = [c for c in r.prediction if c.predicted_rate.max or c.measured_rate.max]
    silent = sorted({c.delta for c in r.prediction} - {c.delta for c in shown})
    bandwidth = "Silverman bandwidth" if cfg["bandwidth"] is None else f"bandwidth {cfg['bandwidth']:g}"
    L = ["## 2. Predicted against measured mismatch rate", "",
         f"Prediction (`verification.study.kinks`): with u = m / max_k |x_ik| the scaled margin, a term "
         f"is crossing when |u| < h. From g(0), the density of the draw's scaled margins at 0 "
         f"(Gaussian KDE, {bandwidth}), each of the N (C - 1) terms is crossing with probability "
         f"min(1, 2h g(0)) (expected crossing terms: lambda = N (C - 1) min(1, 2h g(0))), and a "
         f"crossing term crosses in the rows k with |x_ik| > V max_k |x_ik|, V ~ U(0, 1), of its "
         f"two columns. {cfg['prediction_samples']} simulated rates per draw, pooled over the "
         f"draws, make the predicted distribution of the share of crossed coordinates. It is "
         f"compared with the measured share of coordinates that mismatch *and* are crossed (the "
         f"mismatches the kinks explain; the all-mismatch rate of part 1 is shown beside it); "
         f"*inside*: the share of measured draws within the predicted 10-90% range.", ""]
    if shown:
        L += ["| delta | h | g(0) | crossing terms, expected | crossing terms, measured | "
              "predicted | measured, crossed mismatches | measured, all mismatches | inside |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in shown:
        L.append(f"| {c.delta:g} | {c.h:g} | {_dist(c.density_at_0, _num)} | "
                 f"{_dist(c.expected_terms, _num)} | {_dist(c.crossing_terms, _num)} | "
                 f"{_dist(c.predicted_rate)} | {_dist(c.measured_rate)} | "
                 f"{_dist(r.cell(c.delta, c.h).mismatch_rate)} | {_pct(c.inside_share)} |")
    if silent:
        L += [""] * bool(shown) + [f"At delta {', '.join(f'{d:g}' for d in silent)} no coordinate "
                                    f"mismatched at a crossing in any draw and the prediction is 0 "
                                    f"at every h."]
    p = r.predicted(delta, h)
    m, q = p.measured_rate, p.predicted_rate
    within = q.q10 <= m.median <= q.q90
    L += ["", f"At the assignment's setting (delta {delta:g}, h {h:g}), over {m.draws} draws the "
              f"share of coordinates mismatching at a crossing has median {_pct(m.median)} and "
              f"ranges from {_pct(m.min)} to {_pct(m.max)} (10-90%: {_pct(m.q10)} to "
              f"{_pct(m.q90)}); the prediction has median {_pct(q.median)}, 10-90% range "
              f"{_pct(q.q10)} to {_pct(q.q90)}. The measured median lies "
              f"{'inside' if within else 'outside'} that range, and {_pct(p.inside_share)} of "
              f"the draws do. Crossing terms per draw: median {_num(p.crossing_terms.median)}, "
              f"expected {_num(p.expected_terms.median)}. Each crossing term crosses in up to 2D "
              f"coordinates of two columns, so a handful of them, a count close to Poisson, "
              f"decides the rate of a draw.", "", "![prediction](prediction.png)", ""]
    return L


def _where(r: StudyResults) -> List[str]:
    cfg, b = r.config, r.burn_in
    L = ["## 3. Where the check is made", "",
         f"delta = {cfg['point_delta']:g}, h = {cfg['point_h']:g}, exact differences. `init`: the "
         f"check point's W = {cfg['init_scale']:g} * randn; `burn_in`: after {b.iters} SGD steps of "
         f"`torch_svm.train.train` (lr {b.lr:g}, reg {b.reg:g}, batch {b.batch_size}, float64, from "
         f"{b.init_scale:g} * randn; validation accuracy {_dist(b.val_accuracy, _num)}). N: the first "
         f"N examples of the draw's random order of the training split; "
         f"{_plural(r.where[0].check.mismatch_rate.draws, 'draw')} (training seed = draw seed).", "",
         "| point | N | mismatch rate | crossed mismatches | predicted | crossing terms | expected | exact ties |",
         "|---|---|---|---|---|---|---|---|"]
    for w in r.where:
        L.append(f"| {w.point} | {w.n} | {_dist(w.check.mismatch_rate)} | "
                 f"{_dist(w.check.crossed_mismatch_rate)} | {_dist(w.prediction.predicted_rate)} | "
                 f"{_dist(w.check.crossing_terms, _num)} | {_dist(w.prediction.expected_terms, _num)} | "
                 f"{_dist(w.ties, _num)} |")
    L.append("")
    for m in r.margins:
        L.append(f"- term margins on the dev set at `{m.point}`: mean {_dist(m.mean, _num)}, std "
                 f"{_dist(m.std, _num)}, {_dist(m.share_negative)} negative, "
                 f"{_dist(m.share_within_001)} within 0.01 of the kink, "
                 f"{_dist(m.exact_zeros, _num)} exactly 0.")
    return L + ["", "![where](where.png) ![margins](margins.png)", ""]


def _ties(r: StudyResults) -> List[str]:
    if not r.ties:
        return []
    t0, kinks = r.ties[0], r.config["tie_kinks"]
    L = ["## 4. Exact ties during SGD, by precision", "",
         f"{t0.iters} steps of `torch_svm.train.train`, batch {t0.batch_size}, delta "
         f"{r.config['point_delta']:g}, {_plural(t0.ties.draws, 'training seed')}; W starts at "
         f"{r.config['train_init_scale']:g} * randn drawn in float64 and cast. Ties are counted "
         f"in each minibatch before its step, through the trainer's callback, with the loss's "
         f"own margins (`torch_svm.losses.svm_margins`, the tensor the hand-written gradient "
         f"masks, in the run's dtype), in the kink value {kinks[0]:g} runs. Each seed runs once "
         f"per kink value on the same minibatches; *identical*: final W bitwise equal to the "
         f"kink value {kinks[0]:g} run.", "",
         "| data | precision | lr, reg | ties per run | tie rate | steps with ties | " +
         " | ".join(f"kink {k:g}: identical, max abs diff, val acc" for k in kinks[1:]) + " |",
         "|---|---|---|---|---|---|" + "---|" * (len(kinks) - 1)]
    for t in r.ties:
        effects = [f"{e.identical}/{e.runs}, {_dist(e.max_abs_diff, _num)}, "
                   f"{_dist(e.val_accuracy, _num)}" for e in t.kink_values[1:]]
        L.append(f"| {t.dataset} | {t.precision} ({t.device}) | {t.lr:g}, {t.reg:g} | "
                 f"{_dist(t.ties, _num)} | {_dist(t.tie_rate)} | {_dist(t.steps_with_ties, _num)} | "
                 + " | ".join(effects) + " |")
    return L + ["", "![ties](ties.png)", ""]


def _one_d(r: StudyResults) -> List[str]:
    one = r.one_d
    s, sc = one["svm"], one["scalar"]
    L = ["## 5. The one-dimensional example", "",
         f"f(w) = max(0, w x + b) with x = {sc['x']:g}, b = {sc['b']:g} at w = {sc['w']:g} (the kink), "
         f"h = 2^-16 = {sc['h']:.6g}:", "",
         f"- central difference (f(h) - f(-h)) / 2h = **{sc['central']!r}**",
         f"- forward difference (f(h) - f(0)) / h = **{sc['forward']!r}**, backward = {sc['backward']!r}",
         f"- subgradient the code takes (`margin > 0`) = **{sc['subgradient']!r}**", "",
         f"The same through the library: the SVM loss with one example x = [1], y = 0, delta = 1, "
         f"W = {s['W']}, whose margin is exactly {s['margin']!r}: central difference at W[0, 1] = "
         f"{s['central']!r}, forward {s['forward']!r}, backward {s['backward']!r}; "
         f"`svm_loss_and_grad` gives " +
         ", ".join(f"{v!r} with kink={k}" for k, v in s["analytic"].items()) + ".", "",
         "Near the kink (margin b at w = 0):", "", "| margin | central difference | subgradient |",
         "|---|---|---|"]
    L += [f"| {n['margin']:.4g} | {n['central']!r} | {n['subgradient']!r} |" for n in one["near"]]
    return L + [""]


def render_markdown(results: StudyResults) -> str:
    """The report as Markdown."""
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in results.seconds.items())
    parts = (_intro, _sweep, _prediction, _where, _ties, _one_d)
    lines = [line for part in parts for line in part(results)]
    return "\n".join(lines + ["## Runtime", "", f"{secs} (device {results.data['device']}, {results.data['threads']} "
                                            f"CPU thread(s)).", ""])
