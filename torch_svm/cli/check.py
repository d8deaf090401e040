"""``torch-svm check``: every implementation of the loss against every other, on one problem."""
from __future__ import annotations

import math

import torch

from torch_svm.cli._common import (add_device_arg, add_dtype_arg, add_json_arg, add_seed_arg,
                                   float_flag, int_flag, new_parser, print_json)
from torch_svm.errors import UsageError
from torch_svm.losses import svm_loss_and_grad
from torch_svm.device import resolve_device, resolve_dtype
from torch_svm.errors import check_memory


def add_parser(subparsers) -> None:
    p = new_parser(
        subparsers, "check", help="cross-check the hand-written gradient against every reference",
        description="Run the hand-written gradient, its autograd.Function, torch.autograd, "
                    "torch.nn.MultiMarginLoss, the numpy naive and vectorized versions and "
                    "central finite differences on one random problem, and print the relative "
                    "error of every pair.",
        epilog="exit status: 0 when all agree, 1 when a pair disagrees, 2 on bad input (one "
               "line on stderr)")
    p.add_argument("--n", type=int_flag(1, 10**6), default=50, help="number of examples N")
    p.add_argument("--d", type=int_flag(1, 10**6), default=20, help="input dimension D")
    p.add_argument("--c", type=int_flag(2, 10**5), default=10, help="number of classes C")
    p.add_argument("--delta", type=float_flag(0, 1e30, min_open=True), default=1.0,
                   help="the margin delta")
    p.add_argument("--reg", type=float_flag(0, 1e30), default=0.1, help="L2 regularization strength")
    p.add_argument("--p", type=int, default=1, choices=(1, 2), help="1: hinge, 2: squared hinge")
    p.add_argument("--h", type=float_flag(0, 1, min_open=True), default=1e-5,
                   help="finite-difference step")
    p.add_argument("--scale", type=float_flag(0, 1e30), default=0.5,
                   help="W = scale * randn: 0.5 leaves a good share of margins inactive")
    add_dtype_arg(p, "float64")
    add_device_arg(p, "cpu")
    add_seed_arg(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def _problem(n, d, c, scale, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(d, c, dtype=torch.float64, generator=g) * scale).to(device, dtype)
    X = torch.randn(n, d, dtype=torch.float64, generator=g).to(device, dtype)
    y = torch.randint(c, (n,), generator=g).to(device)
    return W, X, y


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def run(args) -> int:
    from verification.checks.crosscheck import cross_check

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype)
    # the naive loops' (N, C) work arrays and the finite differences' float64 copies dominate
    check_memory("--n x --d x --c", 8 * (4 * args.n * args.d + 8 * args.d * args.c + 8 * args.n * args.c))
    W, X, y = _problem(args.n, args.d, args.c, args.scale, dtype, device, args.seed)
    loss = float(svm_loss_and_grad(W, X, y, args.reg, delta=args.delta, p=args.p)[0])
    if not math.isfinite(loss):
        raise UsageError(f"the loss is {loss} at this point (--reg {args.reg:g}, --scale "
                         f"{args.scale:g}, --delta {args.delta:g}): it overflows {args.dtype}, so "
                         f"there is nothing to check; use smaller values")
    report = cross_check(W, X, y, args.reg, delta=args.delta, p=args.p, h=args.h)
    if args.json:
        print_json(report.to_dict())
        return 0 if report.passed else 1

    print(f"torch-svm check: N={report.n} D={report.d} C={report.c} p={report.p} "
          f"delta={report.delta:g} reg={report.reg:g} dtype={report.dtype} "
          f"device={report.device} h={report.h:g}")
    print("relative error |a - b| / max(|a|, |b|); gradient: the largest over coordinates; "
          "scaled: max|a - b| / max|a|, |b| over all")
    print(f"{'pair':<28} {'loss':>9} {'gradient':>9} {'scaled':>9} {'tolerance':>9}  result")
    for pair in report.pairs:
        name = f"{pair.a} vs {pair.b}"
        tol = "kinks" if pair.tolerance is None else f"{pair.tolerance:.0e}"
        result = "ok" if pair.passed else "FAIL"
        note = f"  ({pair.note})" if pair.note else ""
        print(f"{name:<28} {_fmt(pair.loss_rel_error):>9} {_fmt(pair.grad_rel_error):>9} "
              f"{_fmt(pair.grad_scaled_error):>9} {tol:>9}  {result}{note}")
    for name, reason in report.skipped.items():
        print(f"skipped {name}: {reason}")
    if report.finite_diff:
        fd = report.finite_diff
        print(f"finite differences (h={report.h:g}): {int(fd['straddling'])} of "
              f"{int(fd['coordinates'])} coordinates straddle a kink of the hinge; a central "
              f"difference across a kink is wrong there, not the analytic gradient.")
    print("PASS: every pair agrees" if report.passed else "FAIL: see the rows marked FAIL")
    return 0 if report.passed else 1
