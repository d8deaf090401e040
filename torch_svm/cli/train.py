"""``torch-svm train``: train one linear SVM with minibatch SGD, report and save it.

Also home of what ``tune`` and ``evaluate`` share with it: the data flags, the training flags,
one-line argparse errors, and writing a run's files.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from torch_svm.cli._common import (add_device_arg, add_json_arg, add_seed_arg, finite_float,
                                   positive_int, print_json)
from torch_svm.data import DATASETS, DataConfig, Dataset, load_dataset
from torch_svm.model import GRADS, save_checkpoint
from torch_svm.train import (DEFAULT_HYPERS, SAMPLINGS, SCHEDULES, TrainConfig, TrainResult,
                             train)

EXIT_STATUS = ("exit status: 0 on success; 2 on bad input, unreadable data or checkpoint, or a "
               "diverged run (inf/NaN loss), with one line on stderr")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every help string, except None (the help text then says what None means)."""

    def _get_help_string(self, action):
        if action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def new_parser(subparsers, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand parser with defaults and the exit status in --help."""
    return subparsers.add_parser(name, help=help, description=description, epilog=EXIT_STATUS,
                                 formatter_class=_Formatter)


def add_data_args(p: argparse.ArgumentParser, default_data: Optional[str] = "digits") -> None:
    p.add_argument("--data", choices=DATASETS, default=default_data,
                   help="data set: digits is embedded (8x8, 10 classes); cifar10 needs --data-dir"
                   + ("" if default_data else " (default: the checkpoint's)"))
    p.add_argument("--data-dir", default=None,
                   help="cifar10 only: the cifar-10-batches-py folder, its parent or the "
                        "cifar-10-python.tar.gz archive")
    p.add_argument("--download", action="store_true",
                   help="cifar10 only: when --data-dir holds no copy, fetch the official "
                        "archive (about 163 MB) into it and check its md5 first")
    for split, what in (("train", "the first images of the training pool"),
                        ("val", "the images after the train split"),
                        ("test", "the first images of the test pool; cifar10 has 10000")):
        p.add_argument(f"--num-{split}", type=positive_int, default=None,
                       help=f"{split} split size: {what} " + (
                           "(default: the data set's, cifar10 49000/1000/1000, digits "
                           "1297/200/300)" if default_data else "(default: the checkpoint's)"))


def add_train_args(p: argparse.ArgumentParser, *, hypers: bool = True) -> None:
    """Training flags; ``hypers=False`` leaves --lr, --reg and --iters to the caller (tune)."""
    d = TrainConfig()
    per_data = ", ".join(f"{k} {v[0]:g}" for k, v in DEFAULT_HYPERS.items())
    if hypers:
        p.add_argument("--lr", type=finite_float, default=None,
                       help=f"learning rate (default: per data set: {per_data})")
        p.add_argument("--reg", type=finite_float, default=None,
                       help="L2 regularization strength, the loss's reg*sum(W^2) (default: per data "
                            "set: " + ", ".join(f"{k} {v[1]:g}" for k, v in DEFAULT_HYPERS.items())
                            + ")")
        p.add_argument("--iters", type=positive_int, default=d.iters, help="SGD iterations")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="minibatch size")
    p.add_argument("--momentum", type=finite_float, default=d.momentum, help="SGD momentum")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="learning-rate schedule: step multiplies by --lr-gamma every --lr-step "
                        "iterations; cosine anneals to 0 over the run")
    p.add_argument("--lr-step", type=positive_int, default=d.lr_step, help="--schedule step period")
    p.add_argument("--lr-gamma", type=finite_float, default=d.lr_gamma, help="--schedule step factor")
    p.add_argument("--sampling", choices=SAMPLINGS, default=d.sampling,
                   help="minibatches drawn with replacement (the assignment) or epoch-wise "
                        "without replacement")
    p.add_argument("--delta", type=finite_float, default=d.delta, help="hinge margin")
    p.add_argument("--p", type=int, choices=(1, 2), default=d.p, help="1: hinge, 2: squared hinge")
    p.add_argument("--grad", choices=GRADS, default=d.grad,
                   help="backward: hand-written gradient, torch.autograd, or PyTorch's "
                        "multi_margin_loss")
    p.add_argument("--log-every", type=positive_int, default=d.log_every,
                   help="iterations between loss read-backs and divergence checks (each a sync)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the data and W")
    add_seed_arg(p, d.seed)
    add_device_arg(p, d.device)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch; 0 keeps torch's default (all cores). The GEMMs are "
                        "small, so on a busy machine 1 can be several times faster")
    p.add_argument("--out", default=None,
                   help="folder for model.pt, metrics.json, loss.png and weights.png "
                        "(default: write nothing)")
    add_json_arg(p)


def set_threads(args) -> None:
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)


def load_data(args, name: Optional[str] = None, defaults: Optional[Dict[str, Any]] = None) -> Dataset:
    """The data set the flags name; ``defaults`` fill DataConfig fields the flags leave None."""
    fields = dict(defaults or {})
    for field in ("num_train", "num_val", "num_test"):
        if getattr(args, field) is not None:
            fields[field] = getattr(args, field)
    if getattr(args, "dtype", None):
        fields["dtype"] = args.dtype
    name = name or args.data
    data_dir = args.data_dir
    if name == "digits" and (data_dir is not None or args.download):
        raise ValueError(f"--data-dir and --download only apply to --data cifar10, got "
                         f"--data-dir {data_dir!r}" + (" --download" if args.download else ""))
    return load_dataset(name, data_dir, DataConfig(**fields), download=args.download)


def train_config(args, **overrides: Any) -> TrainConfig:
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if hasattr(args, f.name)}
    fields.update(overrides)
    return TrainConfig(**fields)


def checkpoint_metadata(data: Dataset, result: TrainResult) -> Dict[str, Any]:
    """What evaluate needs to rebuild the inputs: plain types and one tensor (weights_only)."""
    return {
        "dataset": data.name,
        "data_config": dataclasses.asdict(data.config),
        "train_config": dataclasses.asdict(result.config),
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        "mean_image": data.mean_image.detach().cpu().clone(),
        "bias": bool(data.bias),
    }


def write_outputs(out: str, data: Dataset, result: TrainResult, metrics: Dict[str, Any]) -> None:
    """model.pt, metrics.json, loss.png and weights.png in ``out``, each written atomically."""
    from torch_svm.plots import plot_loss, plot_weights
    from torch_svm.utils import atomic_write_json

    folder = Path(out)
    save_checkpoint(folder / "model.pt", result.model, checkpoint_metadata(data, result))
    atomic_write_json(folder / "metrics.json", {**metrics, "loss_history": result.loss_history})
    c = result.config
    plot_loss(result.loss_history, folder / "loss.png",
              title=f"{data.name}: lr={c.lr:g}, reg={c.reg:g}, batch {c.batch_size}")
    plot_weights(result.model.W, data.image_shape, data.class_names, folder / "weights.png",
                 bias=data.bias)


def run_summary(data: Dataset, result: TrainResult) -> Dict[str, Any]:
    c = result.config
    return {"data": data.name, "lr": c.lr, "reg": c.reg, "iters": c.iters,
            "train_accuracy": result.train_accuracy, "val_accuracy": result.val_accuracy}


# --------------------------------------------------------------------------- train


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "train", help="train a linear SVM with minibatch SGD",
                   description="Train the CS231n linear SVM (hand-written gradient, torch.optim.SGD) "
                               "on digits (embedded) or CIFAR-10; report train/val/test accuracy "
                               "and optionally save the checkpoint and figures.")
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    set_threads(args)
    start = time.perf_counter()
    data = load_data(args)
    result = train(data, train_config(args), progress=not args.json)
    test_accuracy = result.model.accuracy(data.X_test.to(result.model.W.device),
                                          data.y_test.to(result.model.W.device))
    metrics = {**run_summary(data, result), "test_accuracy": test_accuracy,
               "final_loss": result.loss_history[-1], "seconds": result.seconds,
               "total_seconds": time.perf_counter() - start,
               "device": str(result.model.W.device), "out": args.out,
               "config": dataclasses.asdict(result.config)}
    if args.out:
        write_outputs(args.out, data, result, metrics)
    if args.json:
        print_json(metrics)
        return 0
    c = result.config
    print(f"torch-svm train: {data.name}, {len(data.y_train)} train / {len(data.y_val)} val / "
          f"{len(data.y_test)} test, lr={c.lr:g} reg={c.reg:g} iters={c.iters} "
          f"batch={c.batch_size} grad={c.grad} device={metrics['device']}")
    print(f"final loss {metrics['final_loss']:.4f}; train accuracy {result.train_accuracy:.4f}, "
          f"val accuracy {result.val_accuracy:.4f}, test accuracy {test_accuracy:.4f}; "
          f"{result.seconds:.2f} s training")
    if args.out:
        print(f"wrote model.pt, metrics.json, loss.png, weights.png to {args.out}")
    return 0
