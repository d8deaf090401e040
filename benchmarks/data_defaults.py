"""How the default lr / reg for your own data (``--data PATH``) were chosen.

Usage: ``python benchmarks/data_defaults.py [--iters 1500] [--seeds 2] [--cifar DIR] [--json]``
(about 10 minutes on 2 cores; ``--quick`` for a smoke run).

:func:`torch_svm.defaults.default_hypers` sizes a user's data by the mean squared norm of a
train input row, ``P = E||x~||^2``: ``lr = gain / P`` and ``reg = decay / (2 lr)`` (a weight
decay of ``decay`` per step). This script trains with the CLI's defaults otherwise (1500 SGD
steps of 200 rows, sampled with replacement, float32) over a grid of ``gain`` x ``decay``,
with and without ``standardize``, on feature sets of different kinds, each written as an
``.npz`` and trained from its memory map:

* ``digits``: the embedded 8x8 digits as raw pixels 0..16 (D = 64, C = 10);
* ``wine`` and ``breast_cancer``: scikit-learn's bundled tables, whose columns have units from
  1e-3 to 1e3 (D = 13 / 30, C = 3 / 2);
* ``probe``: a synthetic linear probe: 20,000 rows of D = 256 "embeddings", C = 100 classes
  whose means lie in a random 32-dimensional subspace, noise with a power-law spectrum, every
  column then given its own scale (log-normal) and offset, as features from a network are;
* ``cifar10`` (with ``--cifar DIR``, the cifar-10-batches-py folder): raw pixels, 49,000 train.

It prints, per setting, the validation accuracy of each set (the mean over ``--seeds``), their
mean and the worst set's shortfall from its own best setting. Val and test are 10 % of the
rows each, drawn with seed 0.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from torch_svm.data import DataConfig, load_dataset
from torch_svm.data.load import read_digits
from torch_svm.train import TrainConfig, train

GAINS = (0.1, 0.3, 1.0, 3.0, 10.0)
DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


def probe(seed: int = 0, n: int = 20000, d: int = 256, c: int = 100) -> tuple:
    """Synthetic linear-probe features: class means in a 32-dim subspace, power-law noise,
    per-column log-normal scales and offsets."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, 32)))[0]                       # (d, 32)
    means = rng.normal(size=(c, 32)) @ basis.T * 0.3                        # (c, d)
    spectrum = 4.0 / np.sqrt(np.arange(1, d + 1))                           # power law
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    y = rng.integers(0, c, n)
    noise = (rng.normal(size=(n, d)) * spectrum) @ rotation.T
    X = (means[y] + noise) * np.exp(rng.normal(size=d)) + rng.normal(size=d) * 3
    return X.astype(np.float32), y


def feature_sets(cifar: str | None) -> dict:
    from sklearn.datasets import load_breast_cancer, load_wine

    images, labels, _ = read_digits()
    sets = {"digits": (images.reshape(len(images), -1), labels),
            "wine": load_wine(return_X_y=True), "breast_cancer": load_breast_cancer(return_X_y=True),
            "probe": probe()}
    if cifar:
        from torch_svm.data.cifar10 import read_cifar10

        X, y, _, _, _ = read_cifar10(cifar)
        sets["cifar10"] = (X.reshape(len(X), -1), y)
    return sets


def run(args) -> dict:
    torch.set_num_threads(1)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, (X, y) in feature_sets(args.cifar).items():
            files[name] = Path(tmp) / f"{name}.npz"
            np.savez(files[name], X=X, y=y)
        for standardize in (False, True):
            data = {name: load_dataset(path, config=DataConfig(standardize=standardize))
                    for name, path in files.items()}
            for gain, decay in itertools.product(GAINS, DECAYS):
                row = {"standardize": standardize, "gain": gain, "decay": decay}
                for name, ds in data.items():
                    lr = gain / ds.mean_square_norm
                    accs = []
                    for seed in range(args.seeds):
                        config = TrainConfig(lr=lr, reg=decay / (2 * lr), iters=args.iters,
                                             seed=seed, device="cpu", threads=1)
                        try:
                            accs.append(train(ds, config).val_accuracy)
                        except Exception:                           # diverged
                            accs.append(0.0)
                    row[name] = statistics.mean(accs)
                table.append(row)
                print(f"standardize={standardize} gain={gain:g} decay={decay:g}: "
                      + ", ".join(f"{k} {row[k]:.3f}" for k in files), file=sys.stderr)
    names = list(files)
    best = {name: max(r[name] for r in table) for name in names}
    for r in table:
        r["mean"] = statistics.mean(r[n] for n in names)
        r["worst_shortfall"] = max(best[n] - r[n] for n in names)
    return {"iters": args.iters, "seeds": args.seeds, "sets": names, "best": best, "table": table}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1500, help="SGD steps (default: 1500)")
    parser.add_argument("--seeds", type=int, default=2, help="runs per cell (default: 2)")
    parser.add_argument("--cifar", default=None, help="cifar-10-batches-py folder (default: none)")
    parser.add_argument("--quick", action="store_true", help="100 steps, one seed: a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.seeds = 100, 1
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    names = result["sets"]
    print(f"val accuracy after {result['iters']} steps (mean of {result['seeds']} seeds); "
          f"lr = gain / E||x||^2, reg = decay / (2 lr)")
    print("| standardize | gain | decay | " + " | ".join(names) + " | mean | worst shortfall |")
    print("|---" * (len(names) + 5) + "|")
    for r in sorted(result["table"], key=lambda r: -r["mean"]):
        print(f"| {'yes' if r['standardize'] else 'no'} | {r['gain']:g} | {r['decay']:g} | "
              + " | ".join(f"{r[n]:.3f}" for n in names)
              + f" | {r['mean']:.3f} | {r['worst_shortfall']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
