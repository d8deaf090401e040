"""How the defaults of :class:`torch_svm.sklearn.LinearSVMClassifier` were chosen.

Usage: ``python benchmarks/sklearn_defaults.py [--iters 1000] [--json]`` (a few minutes on 2 cores).

For each of scikit-learn's small bundled data sets (iris, wine, breast cancer, digits), the
mean 3-fold cross-validated accuracy (stratified, shuffled with seed 0) of the classifier with
its default standardization, over a grid of ``lr`` x ``reg`` at ``--iters`` steps; then, at
the chosen ``lr`` / ``reg``, over ``iters``. It prints one table per grid: each cell the
accuracy averaged over the four data sets, and the worst data set's.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import StratifiedKFold, cross_val_score

from torch_svm.sklearn import LinearSVMClassifier

LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
REGS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
ITERS = (100, 300, 1000, 3000)
DATA = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
        "digits": load_digits}


def _scores(**params) -> dict:
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    out = {}
    for name, load in DATA.items():
        X, y = load(return_X_y=True)
        clf = LinearSVMClassifier(random_state=0, **params)
        out[name] = float(cross_val_score(clf, X, y, cv=cv).mean())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000, help="steps in the lr x reg grid (default: 1000)")
    parser.add_argument("--lr", type=float, default=None, help="lr for the iters sweep (default: the grid's best)")
    parser.add_argument("--reg", type=float, default=None, help="reg for the iters sweep (default: the grid's best)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    grid = [{"lr": lr, "reg": reg, **_scores(lr=lr, reg=reg, iters=args.iters)}
            for lr in LRS for reg in REGS]
    for row in grid:
        accs = [row[k] for k in DATA]
        row.update(mean=float(np.mean(accs)), worst=float(np.min(accs)))
    best = max(grid, key=lambda r: (r["mean"], r["worst"]))
    lr = best["lr"] if args.lr is None else args.lr
    reg = best["reg"] if args.reg is None else args.reg
    sweep = [{"iters": it, **_scores(lr=lr, reg=reg, iters=it)} for it in ITERS]
    for row in sweep:
        accs = [row[k] for k in DATA]
        row.update(mean=float(np.mean(accs)), worst=float(np.min(accs)))
    if args.json:
        print(json.dumps({"grid_iters": args.iters, "grid": grid, "lr": lr, "reg": reg,
                          "iters_sweep": sweep}, indent=2))
        return 0
    print(f"mean / worst 3-fold CV accuracy over {', '.join(DATA)}; iters={args.iters}")
    print("lr \\ reg " + "".join(f"{r:>14g}" for r in REGS))
    for lr_ in LRS:
        cells = [r for r in grid if r["lr"] == lr_]
        print(f"{lr_:<9g}" + "".join(f"{c['mean']:>8.3f}/{c['worst']:.3f}" for c in cells))
    print(f"\nlr={lr:g}, reg={reg:g}:")
    for row in sweep:
        print(f"iters {row['iters']:>5}: mean {row['mean']:.3f}, worst {row['worst']:.3f}  "
              + ", ".join(f"{k} {row[k]:.3f}" for k in DATA))
    return 0


if __name__ == "__main__":
    sys.exit(main())
