"""``torch-svm verify PATH.py:FUNC``: judge a student's ``f(W, X, y, reg) -> (loss, dW)``.

Parses, calls :func:`verification.judge.verify.verify` and prints its report; the output of the
judged code (run in a worker process) goes to stderr, apart from the report."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from torch_svm.cli._common import add_json_arg, add_seed_arg, float_flag, int_flag, print_json

_DATA = ("digits", "cifar10", "random")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="judge your svm_loss(W, X, y, reg) -> (loss, dW) (the CS231n signature)",
        description="Load FUNCTION (PATH.py:FUNC or package.module:FUNC) with the assignment's "
                    "signature f(W, X, y, reg) -> (loss, dW), numpy or torch, in a worker process, "
                    "and check it at W = 1e-4 * randn (where most margins are active, so mask bugs "
                    "barely show; the output prints the share) and at a partly trained W (at "
                    "most half active), with reg 0 and a large reg: its "
                    "loss against torch.autograd, torch.nn.MultiMarginLoss and numpy loops, its dW "
                    "against the reference gradient (any value at an exact kink accepted) and "
                    "against central finite differences at every coordinate, each mismatch "
                    "explained by a kink of the hinge or not. Names common bugs from the pattern "
                    "of the difference. Exit 0 pass, 1 fail, 2 when the function cannot be loaded "
                    "or called, returns the wrong thing or times out (with your traceback), or "
                    "the inputs make the reference loss overflow. What your code prints goes to "
                    "stderr.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("function", metavar="FUNCTION", help="PATH.py:FUNC or package.module:FUNC")
    add_judging_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def add_judging_args(p, *, memory: Optional[float] = None) -> None:
    """The flags that choose how a function is judged: shared by verify and grade, so that
    grade judges exactly as verify does."""
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
    p.add_argument("--reg-convention", default="2020", choices=("2020", "half"),
                   help="the loss your course defines: 2020 is reg * sum(W * W) (gradient "
                        "2 * reg * W), half the older 0.5 * reg * sum(W * W) (gradient reg * W)")
    p.add_argument("--h", type=float_flag(0, 1, min_open=True), default=1e-5,
                   help="finite-difference step (the assignment's grad_check_sparse uses 1e-5)")
    p.add_argument("--sparse", type=int_flag(1, 10**9), default=None, metavar="K",
                   help="compare only K random coordinates with finite differences "
                        "(default: every coordinate)")
    p.add_argument("--backend", default="auto", choices=("auto", "numpy", "torch"),
                   help="pass numpy arrays or torch tensors; auto tries numpy first")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                   help="dtype of W and X passed to your function")
    p.add_argument("--worst", type=int_flag(0, 10**4), default=5, help="wrong coordinates to list")
    p.add_argument("--timeout", type=float_flag(0, 1e6, min_open=True), default=60.0,
                   help="seconds your code may take to import, and each call; then it is stopped")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the cache of dev sets and check points "
                        "(~/.cache/torch-svm or $XDG_CACHE_HOME/torch-svm; safe to delete)")
    p.add_argument("--memory", type=float_flag(0.0625, 1e6), default=memory, metavar="GB",
                   help="GiB of address space the judged code may use (an allocation past it "
                        "raises MemoryError there); default: no limit" if memory is None else
                        "GiB of address space each judged function may use (an allocation past "
                        "it raises MemoryError there, an error row)")
    add_seed_arg(p)


def judging(args):
    """(VerifyConfig, VerifyData) from :func:`add_judging_args`' flags."""
    from verification.judge.devdata import load_verify_data
    from verification.judge.verify import VerifyConfig

    config = VerifyConfig(delta=args.delta, h=args.h, reg=args.reg, reg_convention=args.reg_convention,
                          sparse=args.sparse, backend=args.backend, dtype=args.dtype, seed=args.seed,
                          worst=args.worst, timeout=args.timeout, memory=args.memory)
    data = load_verify_data(args.data, args.data_dir, n=args.n, seed=args.seed, cache=not args.no_cache)
    return config, data


def run(args) -> int:
    from verification.judge.verdict import format_output
    from verification.judge.verify import verify

    if "" not in sys.path and os.getcwd() not in sys.path:
        # as `python -m torch_svm` does: `verify cs231n.classifiers.linear_svm:f` run from the
        # assignment folder imports from it (the console script's sys.path[0] is its bin/)
        sys.path.insert(0, os.getcwd())
    config, data = judging(args)
    report = verify(args.function, data=data, config=config, progress=not args.json)
    printed = format_output(report.output)
    if printed:
        print(printed, file=sys.stderr)
    if report.error is not None:
        print(f"torch-svm verify: error: {report.error.message}", file=sys.stderr)
        if report.error.traceback:
            print(report.error.traceback, end="", file=sys.stderr)
        if report.error.hint:
            print(f"hint: {report.error.hint}", file=sys.stderr)
    if args.json:
        print_json(report.to_dict())
    elif report.error is None:
        print(report)
    return {"pass": 0, "fail": 1, "error": 2}[report.verdict]
