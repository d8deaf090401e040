"""Side by side: ``torch.autograd.gradcheck``, the assignment's ``grad_check_sparse`` and
``torch-svm verify`` on the same student implementations and the same inputs.

Usage: ``python benchmarks/side_by_side.py`` (prints a Markdown table; about 10 s on 2 cores).

Inputs (digits, C = 10):

* ``small``: the dev split (mean-subtracted unscaled pixels, bias column), ``W = 1e-4 * randn``
  as in the assignment: every margin is about 1 and active;
* ``trained``: the same data, ``W`` after a few gradient-descent steps (verify's own second
  point): about 40 % of the margins active;
* ``exact kinks``: raw integer pixels (0..16) with a bias column and integer ``W`` in
  ``{-1, 0, 1}``: margins are integers and some are exactly 0, where the hinge has a kink.

Each method is run at reg 0 and reg 50 (the notebook's 5e1) and fails when either fails:

* gradcheck: ``torch.autograd.gradcheck`` (float64, eps 1e-6, atol 1e-5, rtol 1e-3) on an
  ``autograd.Function`` whose forward is the student's loss and whose backward is the student's
  dW: the student's gradient against finite differences of the student's own loss;
* grad_check_sparse: the assignment's rule, 10 random coordinates, ``h = 1e-5``, central
  differences of the student's own loss, relative error ``|n - a| / (|n| + |a|)``; it fails
  when one of the 10 exceeds 1e-7 (the CS231n notes: "relative error < 1e-7 you should be happy");
* verify: :func:`verification.judge.verify.verify` at that point only (``points=``), defaults otherwise;
  the last column is ``torch-svm verify``'s default: the digits dev split at both ``small`` and
  ``trained``.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import mutants  # noqa: E402

from torch_svm.data import DataConfig, load_dataset
from torch_svm.data.load import read_digits  # noqa: E402
from verification.judge.verify import default_points, verify  # noqa: E402

IMPLEMENTATIONS = ("correct_vectorized", "correct_ge_kink", "reg_grad_halved", "mask_after_clamp",
                   "loss_counts_delta_only", "mask_without_delta")
REGS = (0.0, 50.0)


def _student_function(fn, X, y, reg):
    """``autograd.Function``: the student's loss forward, the student's dW backward."""
    class Student(torch.autograd.Function):
        @staticmethod
        def forward(ctx, W):
            loss, dW = fn(W.detach().numpy(), X, y, reg)
            ctx.save_for_backward(torch.as_tensor(np.asarray(dW, dtype=np.float64)))
            return torch.tensor(float(loss), dtype=torch.float64)

        @staticmethod
        def backward(ctx, grad):
            (dW,) = ctx.saved_tensors
            return grad * dW
    return Student.apply


def gradcheck_passes(fn, W, X, y) -> bool:
    for reg in REGS:
        Wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
        if not torch.autograd.gradcheck(_student_function(fn, X, y, reg), (Wt,), eps=1e-6,
                                        atol=1e-5, rtol=1e-3, raise_exception=False):
            return False
    return True


def grad_check_sparse_passes(fn, W, X, y, num_checks=10, h=1e-5, threshold=1e-7) -> bool:
    """The assignment's cs231n.gradient_check.grad_check_sparse, judged by ``threshold``."""
    rng = random.Random(0)
    for reg in REGS:
        x = W.copy()
        analytic = fn(x, X, y, reg)[1]
        for _ in range(num_checks):
            ix = tuple(rng.randrange(m) for m in x.shape)
            old = x[ix]
            x[ix] = old + h
            fxph = fn(x, X, y, reg)[0]
            x[ix] = old - h
            fxmh = fn(x, X, y, reg)[0]
            x[ix] = old
            numeric = (fxph - fxmh) / (2 * h)
            rel = abs(numeric - analytic[ix]) / max(abs(numeric) + abs(analytic[ix]), 1e-300)
            if rel > threshold:
                return False
    return True


def inputs():
    """``{name: (X (N, D) float64 tensor, y, W (D, C) float64 tensor)}``."""
    ds = load_dataset("digits", config=DataConfig(dtype="float64"))
    X, y = ds.tensors("dev")[0], ds.tensors("dev")[1]
    points = default_points(X, y, 10)
    images, labels, _ = read_digits()
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(labels), generator=g)[:100]
    Xi = torch.from_numpy(images.reshape(len(labels), -1)[pick.numpy()].astype(np.float64))
    Xi = torch.cat([Xi, torch.ones(len(pick), 1, dtype=torch.float64)], 1)   # bias column
    Wi = torch.randint(-1, 2, (Xi.shape[1], 10), generator=g).to(torch.float64)
    yi = torch.from_numpy(labels[pick.numpy()].astype(np.int64))
    return {"small": (X, y, points["small"][0]), "trained": (X, y, points["trained"][0]),
            "exact kinks": (Xi, yi, Wi)}


def main() -> None:
    torch.set_num_threads(1)
    problems = inputs()
    methods = ("gradcheck", "grad_check_sparse", "verify")
    header = ["implementation"] + [f"{m} @ {p}" for p in problems for m in methods] + ["verify, default"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in IMPLEMENTATIONS:
        fn = mutants.CORRECT.get(name) or mutants.BUGGY[name]
        correct = name in mutants.CORRECT
        cells = []
        for point, (X, y, W) in problems.items():
            Xn, yn, Wn = X.numpy(), y.numpy(), W.numpy()
            verdicts = (gradcheck_passes(fn, Wn, Xn, yn), grad_check_sparse_passes(fn, Wn, Xn, yn),
                        verify(fn, X, y, points={point: (W, point)}, isolate=False).passed)
            for ok in verdicts:
                word = "pass" if ok else "FAIL"
                cells.append(word if ok == correct else f"**{word}** ({'missed' if ok else 'false alarm'})")
        X, y, _ = problems["small"]
        ok = verify(fn, X, y, isolate=False).passed
        cells.append(("pass" if ok else "FAIL") if ok == correct else f"**{'pass' if ok else 'FAIL'}** (missed)")
        label = f"{name} ({'correct' if correct else 'bug'})"
        print("| " + " | ".join([label] + cells) + " |")
    kinks = problems["exact kinks"]
    S = kinks[0] @ kinks[2]
    m = S - S.gather(1, kinks[1][:, None]) + 1
    zeros = int((m == 0).sum())
    print(f"\nexact kinks: {zeros} of {m.numel() - len(m)} margins are exactly 0")


if __name__ == "__main__":
    main()
