r"""What :func:`verification.judge.verify.verify` returns: :class:`VerifyReport`, its text (the CLI's
output, ``print(report)``), its JSON (``report.to_dict()``) and, in a notebook, its HTML with a
figure (``report._repr_html_()``, :func:`verdict_figure`).

The verdict leads with what failed, in this order: the code does not run (``verdict ==
"error"``), the loss is wrong, the gradient is wrong, or both, each with its numbers; the
table of coordinates lists only wrong ones. A pass says in one line how many finite
differences differ only because their step straddles a kink (explained, not errors).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from verification.checks.tolerance import rel_error
from verification.judge.diagnose import Diagnosis
from verification.judge.evaluation import CheckResult, Evaluation
from verification.checks.numeric import KINK_EXPLAINED, STATUS_NAMES
from verification.judge.worker import CapturedOutput

__all__ = ["VerifyReport"]

_SHOWN = 3000                      # points per kind and panel in the figure
_LEGEND = ("  loss: largest relative error against torch.autograd, MultiMarginLoss x C and numpy loops\n"
           "  dW: coordinates outside the reference gradient (any value at an exact kink accepted)\n"
           "      or that finite differences cannot explain by a kink")


@dataclass
class PointInfo:
    name: str
    description: str
    active_share: float           # share of hinge terms (i, j != y_i) with margin > 0
    exact_kinks: int              # hinge terms whose margin is exactly 0


@dataclass
class Coordinate:
    """One wrong coordinate of dW at one point and reg, for the table of the worst."""

    point: str
    reg: float
    index: Tuple[int, int]        # (k, j): W[k, j]
    analytic: float               # the function's dW[k, j]
    numeric: float                # the central difference
    reference: float              # the reference value nearest to analytic (any kink convention)
    rel_error: float              # against the reference (or the numeric value where dW matches it)
    kinks: int                    # hinge terms whose margin changes sign within the step
    status: str                   # finite differences: "ok", "kink_explained" or "unexplained"
    matches_reference: bool


@dataclass
class CodeFailure:
    """Why the code does not run: one line, the user's own traceback, a hint."""

    message: str
    traceback: str = ""
    hint: str = ""


@dataclass(eq=False)
class VerifyReport:
    """The verdict on one function. ``passed`` is the verdict; ``print(report)`` its text."""

    function: str
    data: str                     # what it was judged on
    error: Optional[CodeFailure] = None     # set when the code does not run (verdict "error")
    backend: str = ""
    input_dtype: str = ""
    output_dtype: str = ""        # dtype of the returned dW (the lowest seen)
    loss_type: str = ""           # what the loss was returned as
    n: int = 0
    d: int = 0
    c: int = 0
    delta: float = 1.0
    h: float = 1e-5
    reg_convention: str = "2020"
    regs: List[float] = field(default_factory=list)
    points: List[PointInfo] = field(default_factory=list)
    checks: List[CheckResult] = field(default_factory=list)
    worst: List[Coordinate] = field(default_factory=list)
    diagnosis: List[Diagnosis] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    isolated: bool = False        # the function ran in a worker process
    output: CapturedOutput = field(default_factory=CapturedOutput)
    evaluations: List[Evaluation] = field(default_factory=list, repr=False)   # for the figure

    @property
    def verdict(self) -> str:
        """"pass", "fail", or "error" (the code does not run)."""
        if self.error is not None:
            return "error"
        return "pass" if self.checks and all(c.passed for c in self.checks) else "fail"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def failed(self) -> Optional[str]:
        """"loss", "gradient", "both" or None (passed, or does not run)."""
        if self.verdict != "fail":
            return None
        loss = any(not c.loss_ok for c in self.checks)
        grad = any(not (c.grad_ok and c.fd_ok) for c in self.checks)
        return "both" if loss and grad else "loss" if loss else "gradient"

    def totals(self) -> Dict[str, int]:
        """Counts summed over every check: finite-difference statuses, wrong coordinates
        (off the reference or unexplained) and checks whose loss is wrong."""
        ke = sum(c.kink_explained for c in self.checks)
        un = sum(c.unexplained for c in self.checks)
        wrong = sum(int(ev.wrong.sum()) for ev in self.evaluations)
        return {"coordinates": sum(c.coordinates for c in self.checks), "mismatched": ke + un,
                "kink_explained": ke, "unexplained": un, "wrong_coordinates": wrong,
                "loss_wrong_checks": sum(not c.loss_ok for c in self.checks)}

    def to_dict(self) -> dict:
        out = {"verdict": self.verdict, "failed": self.failed, **self.totals()}
        out.update({f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "evaluations"})
        for check, c in zip(self.checks, out["checks"]):
            c["passed"] = check.passed
        return out

    def __str__(self) -> str:
        return "\n".join(_text(self))

    def _repr_html_(self) -> str:
        return _html(self)

    def figure(self):
        """:func:`verdict_figure` of this report."""
        return verdict_figure(self)


def _plain(value: Any) -> Any:
    """Dataclasses (and lists of them) as dicts, for JSON."""
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- worst coordinates

def worst_coordinates(evaluations: List[Evaluation], k: int) -> List[Coordinate]:
    """Up to ``k`` wrong coordinates, those whose step crosses no kink first (there the central
    difference is a clean witness, and it agrees with the reference), each group by largest
    relative error: against the reference where dW is off it, else (judged by finite
    differences only) against the central difference."""
    rows = []
    for ev in evaluations:
        wrong = ev.wrong.reshape(-1)
        if not bool(wrong.any()):
            continue
        other = torch.where(ev.ref_bad, ev.nearest, ev.fd.grad)       # what dW is wrong against
        score = (ev.dW - other).abs() / (torch.maximum(ev.dW.abs(), other.abs()) + 1e-300)
        score = torch.nan_to_num(score.reshape(-1), nan=float("inf"))
        clean = ev.fd.crossings.reshape(-1) == 0
        for group, first in ((wrong & clean, 1), (wrong & ~clean, 0)):
            if bool(group.any()):
                top = torch.where(group, score, -1.0).topk(min(k, int(group.sum())))
                rows += [(first, float(v), ev, divmod(int(i), ev.W.shape[1])) for v, i in zip(*top)]
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    out = []
    for _, _, ev, (k_, j) in rows[:k]:
        a, n, ref = float(ev.dW[k_, j]), float(ev.fd.grad[k_, j]), float(ev.nearest[k_, j])
        matches = not bool(ev.ref_bad[k_, j])
        out.append(Coordinate(point=ev.point, reg=ev.reg, index=(k_, j), analytic=a, numeric=n,
                              reference=ref, rel_error=rel_error(a, n if matches else ref),
                              kinks=int(ev.fd.crossings[k_, j]),
                              status=STATUS_NAMES[int(ev.status[k_, j])], matches_reference=matches))
    return out


# --------------------------------------------------------------------------- text

def _cell(check: CheckResult, row: str, total: int) -> str:
    if row == "loss":
        worst = max(check.loss_rel_errors.values())
        return f"{'ok' if check.loss_ok else 'FAIL'} {worst:.1e}"
    if row == "reference":
        return "ok" if check.grad_ok else f"FAIL {check.grad_mismatched}/{total}"
    if not check.fd_ok:
        return f"FAIL {check.unexplained}/{check.coordinates}"
    return f"ok, {check.kink_explained} kinks" if check.kink_explained else "ok"


def _where(checks: List[CheckResult]) -> str:
    return ", ".join(f"{c.point} reg={c.reg:g}" for c in checks)


def _headline(r: VerifyReport) -> str:
    return {"loss": "FAIL: the loss is wrong (dW is right)",
            "gradient": "FAIL: the gradient dW is wrong (the loss is right)",
            "both": "FAIL: the loss and the gradient dW are both wrong"}[r.failed]


def _loss_lines(r: VerifyReport) -> List[str]:
    bad = [c for c in r.checks if not c.loss_ok]
    lines = [f"  loss: wrong at {len(bad)} of {len(r.checks)} checks ({_where(bad)}):",
             f"    {'point':<8} {'reg':>6} {'yours':>15} {'reference':>15} {'rel.error':>9} {'allowed':>8}"]
    for c in bad:
        lines.append(f"    {c.point:<8} {c.reg:>6g} {c.loss:>15.8g} {c.reference_loss:>15.8g} "
                     f"{rel_error(c.loss, c.reference_loss):>9.1e} {c.loss_tolerance:>8.1e}")
    return lines


def _gradient_lines(r: VerifyReport) -> List[str]:
    bad = [c for c in r.checks if not (c.grad_ok and c.fd_ok)]
    t = r.totals()
    worst = max(c.grad_max_rel_error for c in bad)
    return [f"  dW: {t['wrong_coordinates']} of {r.d * r.c * len(r.checks)} coordinates wrong, at "
            f"{len(bad)} of {len(r.checks)} checks ({_where(bad)}); largest relative error "
            f"against the reference {worst:.2g}"]


def _worst_lines(r: VerifyReport) -> List[str]:
    if not r.worst:
        return []
    lines = ["  wrong coordinates, worst first, those whose step crosses no kink before the others "
             "(numeric: central difference with step h; kinks: margins that cross 0 within the step):",
             f"    {'point':<8} {'reg':>6}  {'W[k, j]':<11} {'yours':>13} {'reference':>13} "
             f"{'numeric':>13} {'rel.error':>9} {'kinks':>5}"]
    for w in r.worst:
        index = f"W[{w.index[0]}, {w.index[1]}]"
        lines.append(f"    {w.point:<8} {w.reg:>6g}  {index:<11} {w.analytic:>13.6g} {w.reference:>13.6g} "
                     f"{w.numeric:>13.6g} {w.rel_error:>9.1e} {w.kinks:>5}")
    return lines


def _kink_note(r: VerifyReport) -> List[str]:
    """A line when kinks make the finite-difference row say little: the step crosses a kink at
    more than half of a check's coordinates (CIFAR-10's trained point, h = 1e-5)."""
    dense = [c for c in r.checks if c.coordinates and c.straddling > c.coordinates / 2]
    if not dense:
        return []
    worst = max(dense, key=lambda c: c.straddling / c.coordinates)
    return [f"  at {_where(dense)} the step h crosses a kink at up to {worst.straddling} of "
            f"{worst.coordinates} coordinates: there finite differences can only bound dW, and the "
            f"reference gradient row is the verdict (a smaller --h crosses fewer)"]


def _pass_lines(r: VerifyReport) -> List[str]:
    t = r.totals()
    lines = [f"PASS: the loss and dW agree with every reference at every check "
             f"({len(r.checks)} checks, {r.d * r.c} coordinates each)"]
    if t["kink_explained"]:
        lines.append(f"  {t['kink_explained']} of {t['coordinates']} finite differences differ from your "
                     f"dW only where the step h straddles a kink of the hinge, by no more than that "
                     f"crossing can cause: expected, not errors")
    else:
        lines.append(f"  all {t['coordinates']} judged coordinates agree with finite differences")
    return lines


def _text(r: VerifyReport) -> List[str]:
    if r.error is not None:
        lines = [f"verify {r.function}: DOES NOT RUN: {r.error.message}"]
        if r.error.traceback:
            lines.append(r.error.traceback.rstrip("\n"))
        if r.error.hint:
            lines.append(f"hint: {r.error.hint}")
        return lines
    lines = [f"verify {r.function}: {r.backend} inputs ({r.input_dtype}), returns dW {r.output_dtype}, "
             f"loss as {r.loss_type}",
             f"data: {r.data}, N={r.n} D={r.d} C={r.c}; delta={r.delta:g} h={r.h:g}; reg convention "
             f"{r.reg_convention} ({'0.5 * reg' if r.reg_convention == 'half' else 'reg'} * sum(W^2))"]
    for i, p in enumerate(r.points):
        lines.append(f"{'points:' if i == 0 else '':<8}{p.name:<9}{p.description:<48}{100 * p.active_share:5.1f}% "
                     f"of margins active" + (f", {p.exact_kinks} exactly 0" if p.exact_kinks else ""))
    rows = (("loss", "loss vs references"), ("reference", "dW vs reference gradient"),
            ("fd", "dW vs finite differences"))
    cells = {row: [_cell(c, row, r.d * r.c) for c in r.checks] for row, _ in rows}
    width = max([16] + [len(text) + 2 for texts in cells.values() for text in texts])
    lines += ["", (f"{'':<27}" + "".join(f"{c.point:<{width}}" for c in r.checks)).rstrip(),
              (f"{'':<27}" + "".join(f"{'reg=%g' % c.reg:<{width}}" for c in r.checks)).rstrip()]
    lines += [(f"{title:<27}" + "".join(f"{text:<{width}}" for text in cells[row])).rstrip()
              for row, title in rows]
    lines += [_LEGEND, *_kink_note(r), ""]
    if r.passed:
        lines += _pass_lines(r)
    else:
        lines.append(_headline(r))
        if r.failed in ("loss", "both"):
            lines += _loss_lines(r)
        if r.failed in ("gradient", "both"):
            lines += _gradient_lines(r)
        for d in r.diagnosis:
            what = "" if len(r.diagnosis) == 1 and d.what != "both" else f" ({d.what})"
            fit = (f" (this pattern leaves {100 * d.residual:.1f}% of the difference unexplained)"
                   if d.pattern not in ("no_known_pattern", "non_finite", "few_coordinates") else "")
            lines.append(f"  diagnosis{what}: {d.message}{fit}")
        lines += _worst_lines(r)
    lines += [f"note: {note}" for note in r.notes]
    return lines


def format_output(output: CapturedOutput, limit_lines: int = 20) -> str:
    """What the judged code printed, for showing apart from the report ("" if nothing)."""
    parts = []
    for name, text, total in (("stdout", output.stdout, output.stdout_bytes),
                              ("stderr", output.stderr, output.stderr_bytes)):
        if not total:
            continue
        lines = text.splitlines()
        shown = lines[:limit_lines]
        more = len(lines) > limit_lines or total > len(text.encode("utf-8", "replace"))
        parts.append(f"--- your code printed {total} bytes on {name}"
                     + (f"; the first {len(shown)} lines:" if more else ":"))
        parts += shown
    return "\n".join(parts)


# --------------------------------------------------------------------------- notebook

def verdict_figure(report: VerifyReport, *, dpi: int = 80):
    """Your dW's error (yours - the nearest reference value) against the reference dW for every
    judged coordinate, one panel per check, so an error shows at its own scale: agreeing points
    on the zero line in grey, kink-explained orange (the finite difference differed there),
    wrong ones red (each kind
    thinned evenly to at most 3,000 points; the legend counts all). A
    :class:`matplotlib.figure.Figure` (no pyplot, no backend change); None without checks."""
    from matplotlib.figure import Figure

    if not report.evaluations:
        return None
    fig = Figure(figsize=(2.7 * len(report.evaluations), 3.0), dpi=dpi)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9, wspace=0.3)
    axes = fig.subplots(1, len(report.evaluations), squeeze=False)[0]
    for ax, ev in zip(axes, report.evaluations):
        ref, yours = ev.nearest[ev.judged].numpy(), ev.dW[ev.judged].numpy()
        error = yours - ref                   # what is wrong, at its own scale (not dW's)
        wrong = ev.wrong[ev.judged].numpy()
        kink = (ev.status == KINK_EXPLAINED)[ev.judged].numpy() & ~wrong
        ok = ~(wrong | kink)
        for mask, colour, label in ((ok, "0.6", "agrees"), (kink, "tab:orange", "kink-explained"),
                                    (wrong, "tab:red", "wrong")):
            index = mask.nonzero()[0]
            if len(index):
                shown = index[::-(-len(index) // _SHOWN)]                 # at most _SHOWN, evenly
                ax.scatter(ref[shown], error[shown], s=4, c=colour, label=f"{label} ({len(index)})",
                           linewidths=0)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_title(f"{ev.point}, reg={ev.reg:g}", fontsize=9)
        ax.set_xlabel("reference dW", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left", markerscale=2)
    axes[0].set_ylabel("yours - reference", fontsize=8)
    return fig


def _html(r: VerifyReport) -> str:
    e = html.escape
    if r.error is not None:
        body = [f"<p><b style='color:#b00'>DOES NOT RUN</b>: {e(r.error.message)}</p>"]
        if r.error.traceback:
            body.append(f"<pre>{e(r.error.traceback)}</pre>")
        if r.error.hint:
            body.append(f"<p>hint: {e(r.error.hint)}</p>")
        return "<div>" + "".join(body) + "</div>"
    text = _text(r)
    start = next(i for i, line in enumerate(text) if line.startswith(("PASS", "FAIL")))
    colour = "#080" if r.passed else "#b00"
    body = [f"<p><b style='color:{colour}'>{e(text[start])}</b></p>",
            "<pre>" + e("\n".join(line for line in text[start + 1:] if not line.startswith("    "))) + "</pre>"]
    if r.worst:
        heads = ("point", "reg", "W[k, j]", "yours", "reference", "numeric", "rel. error", "kinks")
        rows = "".join(f"<tr><td>{e(w.point)}</td><td>{w.reg:g}</td><td>W[{w.index[0]}, {w.index[1]}]</td>"
                       f"<td>{w.analytic:.6g}</td><td>{w.reference:.6g}</td><td>{w.numeric:.6g}</td>"
                       f"<td>{w.rel_error:.1e}</td><td>{w.kinks}</td></tr>" for w in r.worst)
        body.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + f"</tr>{rows}</table>")
    fig = verdict_figure(r)
    if fig is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        body.append(f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>")
    printed = format_output(r.output)
    if printed:
        body.append(f"<details><summary>output of your code</summary><pre>{e(printed)}</pre></details>")
    body.append("<details><summary>every check</summary><pre>" + e("\n".join(text[:start])) + "</pre></details>")
    return "<div>" + "".join(body) + "</div>"
