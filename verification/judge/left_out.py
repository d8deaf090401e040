"""Naming the bug "examples left out" (a ``return`` or ``break`` inside the loop over
examples, ``range(num_train - 1)``): each example's contribution to the difference from the
reference is fitted, and the examples that contribute nothing are the ones left out. Part
of :mod:`verification.judge.diagnose`.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch

from torch_svm.losses import svm_coefficients
from verification.judge.evaluation import RESIDUAL_LIMIT, Diagnosis, Evaluation

__all__: list = []      # internal: import names from here explicitly

_F64 = torch.float64
_MAX_EXAMPLES = 1000
#: Names a regularization bug from its fitted coefficient (None: no known one).
NameReg = Callable[[float], Optional[str]]


# --------------------------------------------------------------------------- examples left out

def _left_out_message(left: List[int], n: int) -> Tuple[str, str]:
    """(pattern, message) for a set of examples whose contribution is missing."""
    if left == list(range(left[0], n)):                     # a suffix: only a prefix is used
        k = left[0]
        if k == 0:
            return "", ""
        if k == 1:
            return "prefix_of_examples", ("only example 0 is used: a `return` (or `break`) inside "
                                          "the loop over examples? it must come after the loop")
        if k == n - 1:
            return "prefix_of_examples", (f"the last example ({n - 1}) is left out: a loop that "
                                          f"stops early, e.g. range(num_train - 1)?")
        return "prefix_of_examples", (f"only the first {k} of {n} examples are used: a `break` or "
                                      f"`return` inside the loop over examples?")
    shown = ", ".join(map(str, left[:8])) + (", ..." if len(left) > 8 else "")
    return "examples_left_out", f"{len(left)} example(s) are left out: {shown}"


def _examples(evaluations: List[Evaluation], diffs: List[torch.Tensor], X: torch.Tensor,
              y: torch.Tensor, name_reg: Optional[NameReg] = None) -> Optional[Diagnosis]:
    """Fit ``diff ~ sum_i c_i x_i b_i^T / N (+ c_r 2 r W)`` over every check (normal
    equations); a diagnosis when every identifiable ``c_i`` is 0 or -1 (examples left out), or
    one example is scaled. ``name_reg(c_r)`` names a regularization bug beside the examples
    left out (two bugs: an early ``return`` with the older ``reg * W``); without it, no
    regularization column is fitted."""
    n = X.shape[0]
    if n > _MAX_EXAMPLES:
        return None
    K = X @ X.T                                                       # (N, N)
    extra = name_reg is not None and any(ev.ref_reg > 0 for ev in evaluations)
    m = n + int(extra)
    G = torch.zeros(m, m, dtype=_F64)
    r = torch.zeros(m, dtype=_F64)
    total = 0.0
    for ev, d in zip(evaluations, diffs):
        B = svm_coefficients((ev.margins > 0).to(_F64), y)            # (N, C)
        G[:n, :n] += K * (B @ B.T) / n**2
        r[:n] += ((X @ d) * B).sum(1) / n
        if extra:
            R = 2 * ev.ref_reg * ev.W                                  # the regularization gradient
            v = ((X @ R) * B).sum(1) / n
            G[:n, n] += v
            G[n, :n] += v
            G[n, n] += float((R * R).sum())
            r[n] += float((d * R).sum())
        total += float((d * d).sum())
    if total == 0 or not math.isfinite(total):
        return None
    c = torch.linalg.lstsq(G, r[:, None], driver="gelsd").solution[:, 0]
    residual = math.sqrt(max(total - 2 * float(c @ r) + float(c @ G @ c), 0.0) / total)
    if residual > RESIDUAL_LIMIT:
        return None
    reg_text, c_reg = None, float(c[n]) if extra else 0.0
    if abs(c_reg) > 0.02:
        reg_text = name_reg(c_reg)
        if reg_text is None:
            return None
    c = c[:n]
    known = G.diagonal()[:n] > 1e-12 * float(G.diagonal()[:n].max())
    rounded = c.round()
    if bool(((c - rounded).abs()[known] <= 0.02).all()) and set(rounded[known].tolist()) <= {0.0, -1.0}:
        left = [i for i in range(n) if known[i] and rounded[i] == -1]
        pattern, text = _left_out_message(left, n) if left else ("", "")
        if pattern and reg_text:
            return Diagnosis("gradient", f"{pattern}+regularization_gradient",
                             f"two bugs: {text}; and {reg_text}", [c_reg], residual, examples=left)
        if pattern:
            return Diagnosis("gradient", pattern, text, [float(v) for v in c[left][:20]], residual,
                             examples=left)
    if reg_text:
        return None
    nonzero = (c.abs() > 0.02) & known
    if int(nonzero.sum()) == 1:
        i = int(nonzero.nonzero()[0])
        return Diagnosis("gradient", "one_example_scaled",
                         f"example {i}'s contribution is {1 + float(c[i]):.4g} x what it should be",
                         [float(c[i])], residual, examples=[i])
    return None


def _loss_examples(evaluations: List[Evaluation], n: int, left: Optional[List[int]],
                   name_reg: Optional[NameReg] = None) -> Optional[Diagnosis]:
    """The loss's difference as exactly ``-sum_{i in left} l_i / N`` at every check: ``left``
    from the gradient's diagnosis, or else every suffix tried (only a prefix used); with
    ``name_reg``, also ``+ c_r r sum W^2`` with a regularization bug it names."""
    losses = torch.stack([ev.example_losses for ev in evaluations])     # (checks, N)
    d = torch.tensor([ev.loss - ev.ref_loss for ev in evaluations], dtype=_F64)
    tol = torch.tensor([4 * ev.loss_tol for ev in evaluations], dtype=_F64) + 1e-9 * d.abs()
    if left is not None:
        candidates = [left]
    else:
        suffix = losses.flip(1).cumsum(1).flip(1) / n                    # [:, k] = sum_{i>=k} l_i / N
        fits = ((d[:, None] + suffix).abs() <= tol[:, None]).all(0)
        fits[0] = False                                                  # all left out: not a prefix
        candidates = [list(range(int(k), n)) for k in fits.nonzero()[:1, 0]]
    reg_loss = torch.tensor([ev.ref_reg_loss for ev in evaluations], dtype=_F64)
    for cand in candidates:
        pred = -losses[:, cand].sum(1) / n
        pattern, text = _left_out_message(cand, n) if cand else ("", "")
        if not pattern:
            continue
        text = "the same examples are left out of the loss" if left is not None else text
        if bool(((d - pred).abs() <= tol).all()):
            return Diagnosis("loss", pattern, text, [-1.0], 0.0, examples=cand)
        if name_reg is not None and float(reg_loss.norm()) > 0:
            c = float((d - pred) @ reg_loss / (reg_loss @ reg_loss))
            reg_text = name_reg(c)
            if reg_text and bool(((d - pred - c * reg_loss).abs() <= tol).all()):
                return Diagnosis("loss", f"{pattern}+regularization_loss",
                                 f"two bugs: {text}; and {reg_text}", [-1.0, c], 0.0, examples=cand)
    return None


