"""Where a student's loss or dW differs from the reference, in words: the next step when no
known bug fits (:mod:`verification.judge.diagnose`). From the differences at every check it
says whether the difference needs ``reg > 0`` (the regularization term) or not (the data
term), at which check point it shows, which rows and columns of ``dW`` hold it, and whether it
is a multiple of the reference.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch

from verification.judge.evaluation import Evaluation

__all__: list = []      # internal: import names from here explicitly

_F64 = torch.float64


def _by(values: Dict, keep) -> float:
    return math.sqrt(sum(v * v for k, v in values.items() if keep(k)))


def _reg_words(norms: Dict, what: str) -> str:
    at0 = _by(norms, lambda k: k[1] == 0)
    atr = _by(norms, lambda k: k[1] > 0)
    total = math.hypot(at0, atr)
    if at0 <= 0.01 * total:
        return f"only with reg > 0: the regularization term of the {what}"
    if atr and abs(atr - at0) <= 0.02 * max(atr, at0):
        return f"the same with reg 0 and reg > 0: the data term of the {what}, not the regularization"
    return "with reg 0 already, and differently with reg > 0: the data term and the regularization term"


def _point_words(norms: Dict) -> str:
    points = sorted({k[0] for k in norms})
    total = _by(norms, lambda k: True)
    quiet = [p for p in points if _by(norms, lambda k: k[0] == p) <= 0.01 * total]
    if quiet and len(quiet) < len(points):
        shown = [p for p in points if p not in quiet]
        return (f"only at the {', '.join(shown)} point (none at {', '.join(quiet)}: where the "
                f"margins differ, e.g. some inactive, it shows)")
    return ""


def _few(energy: torch.Tensor, name: str, last_note: str = "") -> str:
    """"in row(s) 3, 64 of dW only" when at most 3 of the entries hold 99% of the energy."""
    if energy.numel() <= 4 or float(energy.sum()) == 0:
        return ""
    order = torch.argsort(energy, descending=True)
    share = energy[order].cumsum(0) / energy.sum()
    k = int((share < 0.99).sum()) + 1
    if k > 3:
        return ""
    picked = sorted(int(i) for i in order[:k])
    note = last_note if energy.numel() - 1 in picked else ""
    return f"in {name}{'s' if k > 1 else ''} {', '.join(map(str, picked))} of dW only{note}"


def locate_gradient(evaluations: List[Evaluation], diffs: List[torch.Tensor]) -> str:
    """Where ``dW - reference`` lives, as "; "-joined clauses."""
    norms = {(ev.point, ev.reg): float(d.norm()) for ev, d in zip(evaluations, diffs)}
    energy = sum(d.square() for d in diffs)                          # (D, C)
    parts = [_reg_words(norms, "gradient"), _point_words(norms),
             _few(energy.sum(1), "row", " (the last row: the bias row, when X has a bias column)"),
             _few(energy.sum(0), "column")]
    ref = torch.cat([(ev.dW - d).reshape(-1) for ev, d in zip(evaluations, diffs)])
    d = torch.cat([t.reshape(-1) for t in diffs])
    if float(ref.norm()) > 0:
        c = float(d @ ref / (ref @ ref))
        if float((d - c * ref).norm()) <= 0.01 * float(d.norm()):
            parts.append(f"dW is {1 + c:.4g} x the reference at every check")
    return "; ".join(p for p in parts if p)


def locate_loss(evaluations: List[Evaluation]) -> str:
    """How ``loss - reference`` behaves, as "; "-joined clauses."""
    diffs = {(ev.point, ev.reg): ev.loss - ev.ref_loss for ev in evaluations}
    parts = [_reg_words({k: abs(v) for k, v in diffs.items()}, "loss")]
    data = torch.tensor([ev.ref_loss - ev.ref_reg_loss for ev in evaluations], dtype=_F64)
    dl = torch.tensor(list(diffs.values()), dtype=_F64)
    if float(data.norm()) > 0:
        c = float(dl @ data / (data @ data))
        if float((dl - c * data).norm()) <= 0.01 * float(dl.norm()):
            parts.append(f"the data loss is {1 + c:.4g} x the reference's at every check")
    shown = ", ".join(f"{p} reg={r:g}: {v:+.4g}" for (p, r), v in diffs.items())
    parts.append(f"yours minus the reference: {shown}")
    return "; ".join(p for p in parts if p)
