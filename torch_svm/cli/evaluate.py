"""``torch-svm evaluate``: the accuracy of a saved checkpoint on one split."""
from __future__ import annotations

import time

from torch_svm.cli._common import (accuracy_text, add_data_args, add_device_arg,
                                   add_dist_timeout_arg, add_json_arg, check_data_flags,
                                   new_parser, print_json)
from torch_svm.distributed import process_group
from torch_svm.data import SPLITS
from torch_svm.evaluate import evaluate_checkpoint


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "evaluate", help="accuracy of a saved checkpoint on a split",
                   description="Load a checkpoint written by train/tune --out (weights_only: a "
                               "file cannot run code) and report its accuracy on a split. The "
                               "data are centred (and, for --data PATH, scaled) with the "
                               "checkpoint's own statistics, and split sizes default to the ones "
                               "it was trained with (a data file's splits are cut again from its "
                               "saved config and streamed).")
    p.add_argument("checkpoint", help="model.pt written by torch-svm train/tune --out")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate on")
    add_data_args(p, default_data=None)
    add_device_arg(p, "cpu")
    add_dist_timeout_arg(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    check_data_flags(args, args.data)
    with process_group(args.device, timeout=args.dist_timeout) as world:   # torchrun: a data file's split shared out
        result = evaluate_checkpoint(
            args.checkpoint, split=args.split, dataset=args.data, data_dir=args.data_dir,
            sizes={"num_train": args.num_train, "num_val": args.num_val, "num_test": args.num_test},
            device=args.device, download=args.download, progress=not args.json and world.main)
    if not world.main:
        return 0
    out = {"checkpoint": args.checkpoint, "data": result.dataset, "split": result.split,
           "n": result.n, "accuracy": result.accuracy, f"{result.split}_accuracy": result.accuracy,
           "seconds": time.perf_counter() - start}
    if args.json:
        print_json(out)
    else:
        print(f"torch-svm evaluate: {args.checkpoint} on {result.dataset} {result.split} "
              f"({result.n} examples): accuracy {accuracy_text(result.accuracy)}")
    return 0
