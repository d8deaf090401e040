"""``torch-svm tune``: grid or random search over learning rate x regularization (x iterations)."""
from __future__ import annotations

import argparse
import time
from typing import Callable, List

from torch_svm.cli._common import (DRY_RUN_ITERS, DRY_RUN_SETTINGS, accuracy_text, add_data_args,
                                   add_train_args, check_out, int_flag, load_data, new_parser,
                                   print_json, train_config)
from torch_svm.cli.train import sizes, summary, written
from torch_svm.distributed import process_group
from torch_svm.train import MAX_ITERS, save_run
from torch_svm.defaults import DEFAULT_GRIDS, USER_GRID, default_grid, parse_values
from torch_svm.tune import TuneConfig, tune
from torch_svm.errors import clip
from torch_svm.files import atomic_directory


def _values(lo: float, hi: float, *, integer: bool = False) -> Callable[[str], List[float]]:
    """argparse type for :func:`torch_svm.defaults.parse_values`, every value in ``[lo, hi]``."""

    def parse(text: str) -> List[float]:
        try:
            values = parse_values(text, integer=integer)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        bad = [v for v in values if not lo <= v <= hi]
        if bad:
            raise argparse.ArgumentTypeError(f"expected values from {lo:g} to {hi:g}, got {bad[0]:g} "
                                             f"in {clip(repr(text), 60)}")
        return values

    parse.__name__ = "values"
    return parse


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "tune", help="search learning rate x regularization on val",
                   description="Train one linear SVM per setting (a grid, or --random K log-uniform "
                               "draws from the ranges the lists span), rank by validation "
                               "accuracy, keep the best model and report its test accuracy once. "
                               "Diverged settings are reported as such.")
    add_data_args(p)
    lrs = "; ".join(f"{k} {v[0]}" for k, v in DEFAULT_GRIDS.items())
    regs = "; ".join(f"{k} {v[1]}" for k, v in DEFAULT_GRIDS.items())
    p.add_argument("--lr", type=_values(1e-30, 1e10), default=None,
                   help=f"learning rates, 'a,b' or 'lo:hi:n' log-spaced (default: per data set: {lrs}; "
                        f"PATH: the default lr x {', '.join(f'{f:.3g}' for f in USER_GRID[0])})")
    p.add_argument("--reg", type=_values(0, 1e30), default=None,
                   help=f"regularization strengths, as --lr (default: per data set: {regs}; "
                        f"PATH: the default reg x {', '.join(f'{f:g}' for f in USER_GRID[1])})")
    p.add_argument("--iters", type=_values(1, MAX_ITERS, integer=True), default=[1500],
                   help="iteration counts, as --lr (default: 1500)")
    p.add_argument("--random", type=int_flag(0, 10**6), default=0,
                   help="0: the full grid; K > 0: K random settings, log-uniform between the "
                        "smallest and largest --lr and --reg, iterations drawn from --iters")
    add_train_args(p, hypers=False)
    p.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    out = check_out(args.out)
    data = load_data(args)
    grid_lr, grid_reg = default_grid(data)
    lrs, regs, iters, random = args.lr or grid_lr, args.reg or grid_reg, args.iters, args.random
    if args.dry_run:   # at most DRY_RUN_SETTINGS settings of DRY_RUN_ITERS iterations each
        iters = [min(iters[0], DRY_RUN_ITERS)]
        if random:
            random = min(random, DRY_RUN_SETTINGS)
        else:
            lrs, regs = lrs[:DRY_RUN_SETTINGS], regs[:1]
    config = TuneConfig(lrs=lrs, regs=regs, iters=iters, random=random,
                        base=train_config(args, lr=None, reg=None, iters=max(iters)))
    with process_group(config.base.device, timeout=args.dist_timeout) as world:   # torchrun: each setting on K processes
        result = tune(data, config, progress=not args.json and world.main)
    if not world.main:
        return 0
    best = result.best_result
    metrics = {**summary(data, best), "test_accuracy": result.test_accuracy,
               "seconds": result.seconds, "total_seconds": time.perf_counter() - start,
               "out": args.out, "dry_run": args.dry_run, "best": result.best, "table": result.table}
    paths = []
    if out is not None:
        from torch_svm.plots import plot_tune

        with atomic_directory(out) as folder:      # readers see the old run or this one, whole
            paths = save_run(folder, data, best, metrics) + [plot_tune(result.table, folder / "tune.png")]
    if args.json:
        print_json(metrics)
        return 0
    print(f"torch-svm tune: {data.name}, {sizes(data)}, {len(result.table)} settings, "
          f"{'random' if args.random else 'grid'} search, ranked by val accuracy"
          + (f" (dry run: {DRY_RUN_ITERS} iterations each, not a search)" if args.dry_run else ""))
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
          f"val {b['val_accuracy']:.4f}, test {accuracy_text(result.test_accuracy)} (test measured once, "
          f"for this setting only); {result.seconds:.1f} s in all")
    if out is not None:
        print(f"{written(paths)} to {args.out}")
    return 0
