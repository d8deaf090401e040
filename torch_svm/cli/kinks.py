"""``torch-svm kinks``: the kink study of the gradient check, written to a report folder."""
from __future__ import annotations

from torch_svm.cli._common import add_device_arg, add_json_arg, add_seed_arg, check_out, print_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "kinks", help="study why the SVM gradient check mismatches (kinks, h, delta, dtype)",
        description="Measure the gradient check of the SVM loss at every coordinate: mismatch "
                    "rate against delta and h (exact and naive central differences), predicted "
                    "vs measured kink crossings, the check at init vs after SGD burn-in and "
                    "with N examples, exact ties during SGD by dtype, and the one-dimensional "
                    "example. Writes report.md, results.json and PNG figures to --out.")
    p.add_argument("--out", required=True, help="report folder (created; files replaced atomically)")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10: the cifar-10-batches-py folder, its parent or the tar.gz "
                        "(default: none, the embedded digits are used)")
    p.add_argument("--quick", action="store_true",
                   help="the about-one-minute version on digits, what the tests run (default: off)")
    add_seed_arg(p)
    add_device_arg(p, "auto")
    add_json_arg(p)
    p.set_defaults(func=run)


def _print_table(summary) -> None:
    for method, rows in summary["mismatch"].items():
        hs = list(next(iter(rows.values())))
        print(f"mismatch rate, {method} central differences (rows: delta, columns: h)")
        print(f"{'delta':>7} " + " ".join(f"{h:>9}" for h in hs))
        for delta, cells in rows.items():
            print(f"{delta:>7} " + " ".join(f"{cells[h]['mismatch_rate']:>9.2e}" for h in hs))


def run(args) -> int:
    from verification.study import StudyConfig, run_study, write_report

    data = dict(dataset="cifar10", data_dir=args.data_dir) if args.data_dir else dict(dataset="digits")
    make = StudyConfig.quick if args.quick else StudyConfig
    config = make(seed=args.seed, device=args.device, **data)
    check_out(args.out)
    results = run_study(config, progress_bar=True)
    paths = write_report(results, args.out)
    if args.json:
        print_json({**results["summary"], "files": [str(p) for p in paths]})
        return 0
    s = results["summary"]
    print(f"torch-svm kinks: {s['data']}, {results['data']['n_dev']} dev examples, "
          f"{s['seconds']:.0f} s; report in {args.out}")
    _print_table(s)
    one = s["one_d"]
    print(f"1-D example at the kink: central difference {one['central']}, forward "
          f"{one['forward']}, analytic {one['analytic']['0.0']} (kink value 0)")
    for p in paths:
        print(f"wrote {p}")
    return 0
