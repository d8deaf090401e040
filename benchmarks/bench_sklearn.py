"""Side by side on digits: ``LinearSVMClassifier`` vs scikit-learn's linear SVMs.

Usage: ``python benchmarks/bench_sklearn.py [--repeats 5] [--threads 1] [--json]``

One split of scikit-learn's digits (1797 images, 8x8, 10 classes): 75 % train / 25 % test,
stratified, seed 0, standardized with the train split's ``StandardScaler``. Every model fits
the same standardized arrays with its default hyperparameters, ``--repeats`` times
(``random_state`` = the repeat's index); the table gives the median test accuracy, the median
fit time and the range of each. Models:

* ``LinearSVMClassifier()``: the CS231n multiclass hinge (Weston-Watkins), minibatch SGD,
  hand-written gradient, on the CPU;
* ``LinearSVC()``: liblinear, squared hinge, one-vs-rest, coordinate descent;
* ``LinearSVC(multi_class="crammer_singer")``: liblinear's joint multiclass hinge;
* ``SGDClassifier(loss="hinge")``: plain hinge, one-vs-rest, SGD with its own stopping rule.

Fit times are wall-clock on a shared machine: compare orders of magnitude, not digits.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from torch_svm.sklearn import LinearSVMClassifier

MODELS = {
    "LinearSVMClassifier()": lambda seed: LinearSVMClassifier(random_state=seed),
    "LinearSVC()": lambda seed: LinearSVC(random_state=seed),
    'LinearSVC(multi_class="crammer_singer")':
        lambda seed: LinearSVC(multi_class="crammer_singer", random_state=seed),
    'SGDClassifier(loss="hinge")': lambda seed: SGDClassifier(loss="hinge", random_state=seed),
}


def run(repeats: int) -> dict:
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    LinearSVMClassifier(iters=5).fit(X_tr, y_tr)  # torch's one-time start-up, not timed
    rows = {}
    for name, make in MODELS.items():
        accuracies, seconds = [], []
        for seed in range(repeats):
            model = make(seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # liblinear's ConvergenceWarning at its defaults
                start = time.perf_counter()
                model.fit(X_tr, y_tr)
                seconds.append(time.perf_counter() - start)
            accuracies.append(float(model.score(X_te, y_te)))
        rows[name] = {"accuracy_median": statistics.median(accuracies),
                      "accuracy_min": min(accuracies), "accuracy_max": max(accuracies),
                      "fit_seconds_median": statistics.median(seconds),
                      "fit_seconds_min": min(seconds), "fit_seconds_max": max(seconds)}
    return {"data": "digits", "n_train": len(y_tr), "n_test": len(y_te), "repeats": repeats,
            "torch_threads": torch.get_num_threads(), "models": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fits per model (default: 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 0 keeps torch's default (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"digits: {result['n_train']} train / {result['n_test']} test, standardized; "
          f"{args.repeats} fits each, medians [min, max]; torch threads {result['torch_threads']}")
    print(f"| {'model':<40} | {'test accuracy':<23} | {'fit seconds':<23} |")
    print(f"|{'-' * 42}|{'-' * 25}|{'-' * 25}|")
    for name, r in result["models"].items():
        print(f"| {name:<40} | {r['accuracy_median']:.4f} [{r['accuracy_min']:.4f}, "
              f"{r['accuracy_max']:.4f}] | {r['fit_seconds_median']:.4f} "
              f"[{r['fit_seconds_min']:.4f}, {r['fit_seconds_max']:.4f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
