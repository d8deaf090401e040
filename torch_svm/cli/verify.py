"""``torch-svm verify PATH.py:FUNC``: judge a student's ``f(W, X, y, reg) -> (loss, dW)``."""
from __future__ import annotations

import argparse
import sys

import torch

from torch_svm.cli._common import add_json_arg, add_seed_arg, float_flag, int_flag, print_json

_DATA = ("digits", "cifar10", "random")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="judge your svm_loss_autograd(W, X, y, reg) -> (loss, dW) (the CS231n signature)",
        description="Load FUNCTION (PATH.py:FUNC or package.module:FUNC) with the assignment's "
                    "signature f(W, X, y, reg) -> (loss, dW), numpy or torch, and check it at "
                    "W = 1e-4 * randn and at a partly trained W, with reg 0 and a large reg: "
                    "its loss against torch.autograd, torch.nn.MultiMarginLoss and numpy loops, "
                    "its dW against the reference gradient (any value at an exact kink accepted) "
                    "and against central finite differences at every coordinate, each mismatch "
                    "explained by a kink of the hinge or not. Names common bugs from the pattern "
                    "of the difference. Exit 0 pass, 1 fail, 2 when the function cannot be "
                    "loaded or called or returns the wrong thing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("function", metavar="FUNCTION", help="PATH.py:FUNC or package.module:FUNC")
    p.add_argument("--data", default="digits", choices=_DATA,
                   help="digits (embedded), cifar10 (needs --data-dir) or random integer-valued "
                        "data; CS231n preprocessing (mean-subtracted unscaled pixels, bias column)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 python version folder or archive")
    p.add_argument("--n", type=int_flag(1, 10**6), default=None,
                   help="examples (a dev split drawn from train); default: digits 100, "
                        "cifar10 500, random 100")
    p.add_argument("--delta", type=float_flag(0, 1e30, min_open=True), default=1.0, help="the margin your code uses")
    p.add_argument("--reg", type=float_flag(0, 1e30, min_open=True), default=50.0,
                   help="the large regularization strength, checked besides reg=0 (raised x10 "
                        "while its gradient is within rounding)")
    p.add_argument("--h", type=float_flag(0, 1, min_open=True), default=1e-5,
                   help="finite-difference step (the assignment's grad_check_sparse uses 1e-5)")
    p.add_argument("--sparse", type=int_flag(1, 10**9), default=None, metavar="K",
                   help="compare only K random coordinates with finite differences "
                        "(default: every coordinate)")
    p.add_argument("--backend", default="auto", choices=("auto", "numpy", "torch"),
                   help="pass numpy arrays or torch tensors; auto tries numpy first")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                   help="dtype of W and X passed to your function")
    p.add_argument("--worst", type=int_flag(1, 10**4), default=5, help="worst coordinates to show")
    add_seed_arg(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def _load_data(args):
    """``(X float64, y, C, description)`` for --data."""
    if args.data == "random":
        if args.data_dir is not None:
            raise ValueError("--data-dir only applies to --data cifar10")
        n, d, c = args.n or 100, 32, 10
        g = torch.Generator().manual_seed(args.seed)
        X = torch.randint(-8, 9, (n, d), generator=g).to(torch.float64)
        X = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], 1)        # bias column
        return X, torch.randint(c, (n,), generator=g), c, "random integer-valued data"
    from torch_svm.data import DataConfig, load_dataset

    config = DataConfig(num_dev=args.n, dtype="float32", seed=args.seed,
                        **({"num_val": 0, "num_test": 0} if args.data == "cifar10" else {}))
    try:
        ds = load_dataset(args.data, args.data_dir, config)
    except ValueError as exc:
        if args.n is not None and str(exc).startswith("num_dev must be"):
            raise ValueError(f"--n must be at most the size of the {args.data} training split "
                             f"({exc}), got --n {args.n}") from exc
        raise
    return ds.X_dev.to(torch.float64), ds.y_dev, ds.num_classes, f"{args.data} dev split"


def _cell(check, row: str, total: int) -> str:
    if row == "loss":
        worst = max(check.loss_rel_errors.values())
        return f"{'ok' if check.loss_ok else 'FAIL'} {worst:.1e}"
    if row == "reference":
        return "ok" if check.grad_ok else f"FAIL {check.grad_mismatched}/{total}"
    if not check.fd_ok:
        return f"FAIL {check.unexplained}/{check.coordinates}"
    return f"ok, {check.kink_explained} kinks" if check.kink_explained else "ok"


def _print_table(report, args, description: str) -> None:
    print(f"torch-svm verify {args.function}: {report.backend} inputs, your dW is {report.output_dtype}")
    print(f"data: {description}, N={report.n} D={report.d} C={report.c}; delta={report.delta:g} "
          f"h={report.h:g} inputs {report.input_dtype}")
    for i, point in enumerate(report.points):
        label = "points:" if i == 0 else ""
        print(f"{label:<8}{point.name:<9}{point.description:<52}{100 * point.active_share:5.1f}% of "
              f"margins active" + (f", {point.exact_kinks} exactly 0" if point.exact_kinks else ""))
    print()
    heads = [(f"{c.point}", f"reg={c.reg:g}") for c in report.checks]
    print(f"{'':<27}" + "".join(f"{h:<16}" for h, _ in heads))
    print(f"{'':<27}" + "".join(f"{r:<16}" for _, r in heads))
    for row, title in (("loss", "loss vs references"), ("reference", "dW vs reference gradient"),
                       ("fd", "dW vs finite differences")):
        print(f"{title:<27}" + "".join(f"{_cell(c, row, report.d * report.c):<16}" for c in report.checks))
    print("  loss: largest relative error against torch.autograd, MultiMarginLoss x C and the "
          "numpy loops; dW: coordinates outside the reference (either value at an exact kink) "
          "or unexplained by finite differences")
    if report.worst:
        print()
        print("worst coordinates (numeric: central difference with step h; kinks: margins that "
              "cross 0 within the step):")
        print(f"  {'point':<8} {'reg':>6}  {'W[k, j]':<10} {'yours':>13} {'numeric':>13} "
              f"{'reference':>13} {'rel.error':>9} {'kinks':>5}  verdict")
        for w in report.worst:
            if w.status == "unexplained" or not w.matches_reference:
                verdict = "WRONG"
            else:
                verdict = "ok: the step straddles a kink" if w.status == "kink_explained" else "ok"
            index = f"W[{w.index[0]}, {w.index[1]}]"
            print(f"  {w.point:<8} {w.reg:>6g}  {index:<10} {w.analytic:>13.6g} {w.numeric:>13.6g} "
                  f"{w.reference:>13.6g} {w.rel_error:>9.1e} {w.kinks:>5}  {verdict}")
    for note in report.notes:
        print(f"note: {note}")
    print()
    for d in report.diagnosis:
        print(f"diagnosis ({d['what']}): {d['message']} (this pattern leaves "
              f"{100 * d['residual']:.1f}% of the difference unexplained)")
    totals = report.totals()
    if report.passed:
        fd = (f"{totals['kink_explained']} of {totals['coordinates']} coordinates differ from "
              f"finite differences, all because the step straddles a kink of the hinge"
              if totals["kink_explained"] else
              f"all {totals['coordinates']} coordinates agree with finite differences")
        print(f"PASS: loss and dW agree with every reference at every point; {fd}")
    else:
        failed = sum(not c.passed for c in report.checks)
        print(f"FAIL: {failed} of {len(report.checks)} point/reg combinations fail; "
              f"{totals['unexplained']} of {totals['coordinates']} coordinates disagree with finite "
              f"differences beyond rounding and kinks")


def run(args) -> int:
    from verification.verify import UserCodeError, VerifyConfig, load_function, verify

    X, y, num_classes, description = _load_data(args)
    config = VerifyConfig(delta=args.delta, h=args.h, reg=args.reg, sparse=args.sparse,
                          backend=args.backend, dtype=args.dtype, seed=args.seed, worst=args.worst)
    try:
        fn = load_function(args.function)
        report = verify(fn, X, y, num_classes, config, progress=not args.json)
    except UserCodeError as exc:
        print(f"torch-svm verify: error: {exc}", file=sys.stderr)
        if exc.user_traceback:
            print(exc.user_traceback, end="", file=sys.stderr)
        return 2
    if args.json:
        out = report.to_dict()
        out["data"] = description
        print_json(out)
    else:
        _print_table(report, args, description)
    return 0 if report.passed else 1
