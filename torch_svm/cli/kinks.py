"""``torch-svm kinks``: the kink study of the gradient check (``verification/study/run.py``),
written to a report folder."""
from __future__ import annotations

from typing import Any, Dict

from torch_svm.cli._common import (add_device_arg, add_json_arg, add_seed_arg, check_out,
                                   new_parser, print_json)
from torch_svm.files import atomic_directory

#: What the study writes into --out (a folder holding anything else is not replaced).
REPORT_FILES = ("report.md", "results.json", "*.png")


#: What each preset runs, for --help. Written out, so that building the parser imports no
#: verification module; tests/test_layout.py checks them against the study's StudyConfig,
#: QUICK and DRY_RUN.
PRESET_SIZES = {
    "full": "40 draws of the dev set and W at the check point (3 with naive differences), 10 at "
            "init and after 200 SGD steps, 5 training seed(s) x 100 SGD steps per precision for "
            "the ties",
    "quick": "10 draws of the dev set and W at the check point (2 with naive differences), 3 at "
             "init and after 100 SGD steps, 2 training seed(s) x 50 SGD steps per precision for "
             "the ties",
    "dry_run": "2 draws of the dev set and W at the check point (1 with naive differences), 2 at "
               "init and after 5 SGD steps, 1 training seed(s) x 5 SGD steps per precision for "
               "the ties",
}


def preset_sizes(changes: Dict[str, Any]) -> str:
    """What a preset's StudyConfig fields run, in :data:`PRESET_SIZES`' words."""
    return (f"{changes['draws']} draws of the dev set and W at the check point "
            f"({changes['naive_draws']} with naive differences), {changes['where_draws']} at "
            f"init and after {changes['burn_in_iters']} SGD steps, {changes['tie_seeds']} "
            f"training seed(s) x {changes['tie_iters']} SGD steps per precision for the ties")


def add_parser(subparsers) -> None:
    p = new_parser(
        subparsers, "kinks", help="study why the SVM gradient check mismatches (kinks, h, delta, dtype)",
        description="Measure the gradient check of the SVM loss at every coordinate, each number "
                    "over independent draws (median and 10-90% range): mismatch rate against "
                    "delta and h (exact and naive central differences), its distribution "
                    "predicted from the margin density at 0 against the measured one, the check "
                    "at init vs after SGD with N examples, exact ties during SGD by precision "
                    "(float64 to bfloat16, and TF32 on CUDA), and the one-dimensional example. "
                    "Writes report.md, results.json and PNG figures to --out. "
                    f"The full run: {PRESET_SIZES['full']}.")
    p.add_argument("--out", required=True, help="report folder (created; files replaced atomically)")
    p.add_argument("--data-dir", default=None,
                   help="CIFAR-10: the cifar-10-batches-py folder, its parent or the tar.gz "
                        "(default: none, the embedded digits are used)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"fewer draws and steps: {PRESET_SIZES['quick']}")
    size.add_argument("--dry-run", action="store_true",
                      help=f"one tiny pass through every part, for smoke tests: "
                           f"{PRESET_SIZES['dry_run']}")
    add_seed_arg(p)
    add_device_arg(p, "auto")
    add_json_arg(p)
    p.set_defaults(func=run)


def _print_summary(results, out: str) -> None:
    s, d = results.summary(), results.data
    cp = s["check_point"]
    n = results.cell(cp["delta"], cp["h"]).mismatch_rate.draws
    print(f"torch-svm kinks: {d['name']}, {n} draws of the {d['n_dev']}-example dev set and W, "
          f"{results.seconds['total']:.0f} s; report in {out}")
    titles = {"exact_kinks": "mismatch rate at kink crossings, exact central differences (no "
                             "rounding error)",
              "naive": "mismatch rate, naive central differences (the loss twice, as "
                       "grad_check_sparse: kinks and rounding)"}
    for method, title in titles.items():
        rows = s["mismatch"].get(method)
        if not rows:
            continue
        hs = list(next(iter(rows.values())))
        draws = next(iter(next(iter(rows.values())).values()))["draws"]
        print(f"{title}, median over {draws} draws (rows: delta, columns: h)")
        print(f"{'delta':>7} " + " ".join(f"{h:>9}" for h in hs))
        for delta, cells in rows.items():
            print(f"{delta:>7} " + " ".join(f"{cells[h]['median']:>9.2e}" for h in hs))
        if method == "exact_kinks":
            print(_delta_line(rows))
            print(_rounding_line(s["mismatch"].get("exact_rounding", {})))
    m, q = cp["measured"], cp["predicted"]
    print(f"kink mismatches at delta {cp['delta']:g}, h {cp['h']:g}: measured median {100 * m['median']:.2g}% "
          f"[10-90%: {100 * m['q10']:.2g}, {100 * m['q90']:.2g}], predicted median "
          f"{100 * q['median']:.2g}% [{100 * q['q10']:.2g}, {100 * q['q90']:.2g}]; "
          f"{100 * cp['inside_share']:.0f}% of draws inside the predicted range")
    one = s["one_d"]
    print(f"1-D example at the kink: central difference {one['central']}, forward "
          f"{one['forward']}, analytic {one['analytic']['0.0']} (kink value 0)")


def _delta_line(rows) -> str:
    """What delta does to the kink mismatches, at the h where the smallest delta has most."""
    deltas = list(rows)
    h = max(rows[deltas[0]], key=lambda k: rows[deltas[0]][k]["median"])
    if not rows[deltas[0]][h]["median"]:
        return "  no kink mismatch at any delta and h: no margin lies within a step of its kink"
    shown = ", ".join(f"{100 * rows[d][h]['median']:.2g}% at delta {d}" for d in deltas)
    return f"  larger delta, fewer kink mismatches (the margins move away from 0): at h {h}, {shown}"


def _rounding_line(rows) -> str:
    """The exact mismatches that are rounding, not kinks, in one line."""
    medians = sorted({cell["median"] for cells in rows.values() for cell in cells.values()})
    if not medians or medians[-1] == 0:
        return "  (no exact mismatch from rounding)"
    span = (f"{100 * medians[0]:.2g}%" if len(medians) == 1 else
            f"{100 * medians[0]:.2g}% to {100 * medians[-1]:.2g}%")
    return (f"  besides these, {span} of the coordinates mismatch by rounding alone at every "
            f"delta and h (median): uncrossed coordinates whose gradient is 0 up to cancellation, "
            f"within floating-point rounding; not kinks")


def run(args) -> int:
    from verification.study.run import StudyConfig, run_study
    from verification.study.report import write_report

    data = dict(dataset="cifar10", data_dir=args.data_dir) if args.data_dir else {}
    make = StudyConfig.dry_run if args.dry_run else StudyConfig.quick if args.quick else StudyConfig
    config = make(seed=args.seed, device=args.device, **data)
    out = check_out(args.out, produces=REPORT_FILES)
    results = run_study(config, progress_bar=not args.json)
    with atomic_directory(out) as folder:          # readers see the old report or this one, whole
        written = write_report(results, folder)
    paths = [out / p.name for p in written]
    if args.json:
        print_json({**results.summary(), "files": [str(p) for p in paths]})
    else:
        _print_summary(results, args.out)
    return 0
