"""``torch-svm train``: train one linear SVM with minibatch SGD, report and save it."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict

from torch_svm.cli._common import (add_data_args, add_train_args, check_out, load_data,
                                   new_parser, print_json, train_config)
from torch_svm.data import Dataset
from torch_svm.train import TrainResult, save_run, train
from torch_svm.utils import atomic_directory


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "train", help="train a linear SVM with minibatch SGD",
                   description="Train the CS231n linear SVM (hand-written gradient, torch.optim.SGD) "
                               "on digits (embedded) or CIFAR-10; report train/val/test accuracy "
                               "and optionally save the checkpoint and figures.")
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def summary(data: Dataset, result: TrainResult) -> Dict[str, Any]:
    """The metrics train and tune both report for a run."""
    c = result.config
    return {"data": data.name, "lr": c.lr, "reg": c.reg, "iters": c.iters,
            "train_accuracy": result.train_accuracy, "val_accuracy": result.val_accuracy,
            "final_loss": result.loss_history[-1], "device": str(result.model.W.device),
            "threads": result.threads, "config": dataclasses.asdict(c)}


def run(args) -> int:
    start = time.perf_counter()
    config = train_config(args)
    out = check_out(args.out)
    data = load_data(args)
    result = train(data, config, progress=not args.json)
    test_accuracy = result.model.accuracy(data.X_test.to(result.model.W.device),
                                          data.y_test.to(result.model.W.device))
    metrics = {**summary(data, result), "test_accuracy": test_accuracy, "seconds": result.seconds,
               "total_seconds": time.perf_counter() - start, "out": args.out}
    if out is not None:
        with atomic_directory(out) as folder:      # readers see the old run or this one, whole
            save_run(folder, data, result, metrics)
    if args.json:
        print_json(metrics)
        return 0
    c = result.config
    print(f"torch-svm train: {data.name}, {len(data.y_train)} train / {len(data.y_val)} val / "
          f"{len(data.y_test)} test, lr={c.lr:g} reg={c.reg:g} iters={c.iters} "
          f"batch={c.batch_size} grad={c.grad} device={metrics['device']} threads={result.threads}"
          + (" compiled" if c.compile else ""))
    print(f"final loss {metrics['final_loss']:.4f}; train accuracy {result.train_accuracy:.4f}, "
          f"val accuracy {result.val_accuracy:.4f}, test accuracy {test_accuracy:.4f}; "
          f"{result.seconds:.2f} s training")
    if out is not None:
        print(f"wrote model.pt, metrics.json, loss.png, weights.png to {args.out}")
    return 0
