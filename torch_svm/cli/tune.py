"""``torch-svm tune``: grid or random search over learning rate x regularization (x iterations)."""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, List

import numpy as np

from torch_svm.cli._common import print_json
from torch_svm.cli.train import (add_data_args, add_train_args, load_data, new_parser,
                                 run_summary, set_threads, train_config, write_outputs)
from torch_svm.train import TuneConfig, tune

#: Default search per data set: (lrs, regs) as the flags would spell them.
DEFAULT_GRIDS = {
    "cifar10": ("1e-7,5e-7", "1e3,5e3,2.5e4"),
    "digits": ("1e-4:1e-2:3", "1e-2:1:3"),
}


def _values(cast: Callable[[float], float], what: str) -> Callable[[str], List[float]]:
    """argparse type: ``a,b,c`` (a list) or ``lo:hi:n`` (n log-spaced values from lo to hi)."""

    def parse(text: str) -> List[float]:
        try:
            if ":" in text:
                lo, hi, n = text.split(":")
                lo, hi, n = float(lo), float(hi), int(n)
                if not (lo > 0 and hi >= lo and n >= 1):
                    raise ValueError
                values = np.geomspace(lo, hi, n).tolist() if n > 1 else [lo]
            else:
                values = [float(v) for v in text.split(",")]
            values = [cast(v) for v in values]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} as a list 'a,b,c' or a log range 'lo:hi:n' (0 < lo <= hi, "
                f"n >= 1), got {text!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected finite {what}, got {text!r}")
        return values

    return parse


def _round_int(value: float) -> int:
    return int(round(value))


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "tune", help="search learning rate x regularization on val",
                   description="Train one linear SVM per setting (a grid, or --random K log-uniform "
                               "draws from the ranges the lists span), rank by validation "
                               "accuracy, keep the best model and report its test accuracy once. "
                               "Diverged settings are reported as such.")
    add_data_args(p)
    grids = "; ".join(f"{k} {v[0]}" for k, v in DEFAULT_GRIDS.items())
    p.add_argument("--lr", type=_values(float, "learning rates"), default=None,
                   help=f"learning rates, 'a,b' or 'lo:hi:n' log-spaced (default: per data set: {grids})")
    p.add_argument("--reg", type=_values(float, "regularization strengths"), default=None,
                   help="regularization strengths, as --lr (default: per data set: "
                        + "; ".join(f"{k} {v[1]}" for k, v in DEFAULT_GRIDS.items()) + ")")
    p.add_argument("--iters", type=_values(_round_int, "iteration counts"), default="1500",
                   help="iteration counts, as --lr")
    p.add_argument("--random", type=int, default=0,
                   help="0: the full grid; K > 0: K random settings, log-uniform between the "
                        "smallest and largest --lr and --reg, iterations drawn from --iters")
    add_train_args(p, hypers=False)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.random < 0:
        raise ValueError(f"--random must be >= 0, got {args.random}")
    set_threads(args)
    start = time.perf_counter()
    data = load_data(args)
    grid_lr, grid_reg = DEFAULT_GRIDS[data.name]
    config = TuneConfig(lrs=args.lr or _values(float, "")(grid_lr),
                        regs=args.reg or _values(float, "")(grid_reg),
                        iters=args.iters, random=args.random, base=train_config(args))
    result = tune(data, config, progress=not args.json)
    best = result.best_result
    metrics = {**run_summary(data, best), "test_accuracy": result.test_accuracy,
               "final_loss": best.loss_history[-1], "seconds": result.seconds,
               "total_seconds": time.perf_counter() - start, "device": str(best.model.W.device),
               "out": args.out, "best": result.best, "table": result.table,
               "config": dataclasses.asdict(best.config)}
    if args.out:
        from torch_svm.plots import plot_tune

        write_outputs(args.out, data, best, metrics)
        plot_tune(result.table, Path(args.out) / "tune.png")
    if args.json:
        print_json(metrics)
        return 0
    print(f"torch-svm tune: {data.name}, {len(result.table)} settings, "
          f"{'random' if args.random else 'grid'} search, ranked by val accuracy")
    print(f"{'lr':>10} {'reg':>10} {'iters':>6} {'train':>7} {'val':>7} {'seconds':>8}")
    for row in result.table:
        if row["diverged"]:
            tail = f"{'diverged':>15}"
        else:
            tail = f"{row['train_accuracy']:7.4f} {row['val_accuracy']:7.4f} {row['seconds']:8.2f}"
        mark = "  <- best" if row is result.best else ""
        print(f"{row['lr']:10.3g} {row['reg']:10.3g} {row['iters']:6d} {tail}{mark}")
    b = result.best
    print(f"best: lr={b['lr']:g} reg={b['reg']:g} iters={b['iters']}: train {b['train_accuracy']:.4f}, "
          f"val {b['val_accuracy']:.4f}, test {result.test_accuracy:.4f} (test measured once, "
          f"for this setting only); {result.seconds:.1f} s in all")
    if args.out:
        print(f"wrote model.pt, metrics.json, loss.png, weights.png, tune.png to {args.out}")
    return 0
