"""``torch-svm train``: train one linear SVM with minibatch SGD, report and save it.

Under ``torchrun --nproc-per-node K -m torch_svm train ...`` the K processes train one model
together (:mod:`torch_svm.distributed`); rank 0 alone shows progress, prints and writes
``--out``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List

from torch_svm.cli._common import (accuracy_text, add_data_args, add_train_args, check_out,
                                   load_data, new_parser, print_json, train_config)
from torch_svm.data import Dataset
from torch_svm.distributed import process_group
from torch_svm.evaluate import accuracy
from torch_svm.files import atomic_directory
from torch_svm.train import TrainResult, save_run, train


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "train", help="train a linear SVM with minibatch SGD",
                   description="Train the CS231n linear SVM (hand-written gradient, torch.optim.SGD) "
                               "on digits (embedded), CIFAR-10 or your own features (--data PATH, "
                               "memory-mapped); report train/val/test accuracy and optionally "
                               "save the checkpoint and figures. Under torchrun --nproc-per-node "
                               "K, K processes train one model (data-parallel SGD).")
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def summary(data: Dataset, result: TrainResult) -> Dict[str, Any]:
    """The metrics train and tune both report for a run."""
    c = result.config
    return {"data": data.name, "lr": c.lr, "reg": c.reg, "iters": c.iters,
            "train_accuracy": result.train_accuracy, "val_accuracy": result.val_accuracy,
            "final_loss": result.loss_history[-1], "device": str(result.model.W.device),
            "threads": result.threads, "world_size": result.world_size,
            "config": dataclasses.asdict(c)}


def sizes(data: Dataset) -> str:
    """``"N train / N val / N test"``."""
    return " / ".join(f"{data.num_examples(s)} {s}" for s in ("train", "val", "test"))


def written(paths: List) -> str:
    """``"wrote model.pt, ... to"``: the names save_run wrote."""
    return "wrote " + ", ".join(p.name for p in paths)


def run(args) -> int:
    start = time.perf_counter()
    config = train_config(args)
    out = check_out(args.out)
    data = load_data(args)
    with process_group(config.device, timeout=args.dist_timeout) as world:   # torchrun: K processes, one model
        result = train(data, config, progress=not args.json and world.main)
        test_accuracy = accuracy(result.model, data, "test", progress=not args.json and world.main)
    if not world.main:
        return 0
    metrics = {**summary(data, result), "test_accuracy": test_accuracy, "seconds": result.seconds,
               "total_seconds": time.perf_counter() - start, "out": args.out, "dry_run": args.dry_run}
    paths = []
    if out is not None:
        with atomic_directory(out) as folder:      # readers see the old run or this one, whole
            paths = save_run(folder, data, result, metrics)
    if args.json:
        print_json(metrics)
        return 0
    c = result.config
    print(f"torch-svm train: {data.name}, {sizes(data)}, lr={c.lr:g} reg={c.reg:g} "
          f"iters={c.iters} batch={c.batch_size} grad={c.grad} device={metrics['device']} "
          f"threads={result.threads}" + (" compiled" if c.compile else "")
          + (f" processes={result.world_size}" if result.world_size > 1 else "")
          + (" (dry run: the flags, data and --out checked; not trained)" if args.dry_run else ""))
    print(f"final loss {metrics['final_loss']:.4f}; train accuracy "
          f"{accuracy_text(result.train_accuracy)}, val accuracy "
          f"{accuracy_text(result.val_accuracy)}, test accuracy {accuracy_text(test_accuracy)}; "
          f"{result.seconds:.2f} s training")
    if out is not None:
        print(f"{written(paths)} to {args.out}")
    return 0
