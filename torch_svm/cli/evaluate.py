"""``torch-svm evaluate``: the accuracy of a saved checkpoint on one split."""
from __future__ import annotations

import time

import torch

from torch_svm.cli._common import add_device_arg, add_json_arg, print_json
from torch_svm.cli.train import add_data_args, load_data, new_parser
from torch_svm.data import Dataset
from torch_svm.model import CheckpointError, load_checkpoint
from torch_svm.utils import resolve_device

SPLITS = ("train", "val", "test")


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "evaluate", help="accuracy of a saved checkpoint on a split",
                   description="Load a checkpoint written by train/tune --out (weights_only: a "
                               "file cannot run code) and report its accuracy on a split. The "
                               "data are centred with the checkpoint's own mean image, and split "
                               "sizes default to the ones it was trained with.")
    p.add_argument("checkpoint", help="model.pt written by torch-svm train/tune --out")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate on")
    add_data_args(p, default_data=None)
    add_device_arg(p, "cpu")
    add_json_arg(p)
    p.set_defaults(func=run, dtype=None)


def _features(data: Dataset, split: str, metadata: dict, model) -> torch.Tensor:
    """The split's rows re-centred on the checkpoint's mean image, in the model's dtype."""
    shape = tuple(metadata.get("image_shape") or ())
    names = tuple(metadata.get("class_names") or ())
    mean = metadata.get("mean_image")
    bias = metadata.get("bias")
    X = getattr(data, f"X_{split}")                            # (N, D + bias)
    if shape != tuple(data.image_shape) or bias != data.bias or names != tuple(data.class_names):
        raise CheckpointError(f"checkpoint was trained on images {shape}, bias={bias}, "
                              f"classes {list(names)}, but --data {data.name} has "
                              f"{tuple(data.image_shape)}, bias={data.bias}, "
                              f"classes {list(data.class_names)}")
    if (model.num_features, model.num_classes) != (X.shape[1], len(names)):
        raise CheckpointError(f"checkpoint W has shape {tuple(model.W.shape)}, but the data need "
                              f"({X.shape[1]}, {len(names)})")
    if not (isinstance(mean, torch.Tensor) and mean.shape == data.mean_image.shape):
        raise CheckpointError(f"checkpoint mean_image must be a tensor of shape "
                              f"{tuple(data.mean_image.shape)}, got {type(mean).__name__}")
    X = X.to(model.W.dtype, copy=True)                         # no float64 copy of the split
    shift = data.mean_image.to(torch.float64) - mean.to(torch.float64)  # our mean -> theirs
    X[:, :mean.shape[0]] += shift.to(X.dtype)
    return X


def run(args) -> int:
    start = time.perf_counter()
    model, metadata = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    name = args.data or metadata.get("dataset")
    if name is None:
        raise CheckpointError(f"checkpoint {args.checkpoint!r} does not name its data set; pass --data")
    saved = metadata.get("data_config") if isinstance(metadata.get("data_config"), dict) else {}
    defaults = {k: saved[k] for k in ("num_train", "num_val", "num_test", "dtype")
                if k in saved}
    if name != metadata.get("dataset"):
        defaults = {}  # the saved split sizes belong to another data set
    data = load_data(args, name, defaults)
    X = _features(data, args.split, metadata, model).to(model.W.device)
    y = getattr(data, f"y_{args.split}").to(model.W.device)
    accuracy = model.accuracy(X, y)
    out = {"checkpoint": args.checkpoint, "data": name, "split": args.split, "n": len(y),
           "accuracy": accuracy, f"{args.split}_accuracy": accuracy,
           "seconds": time.perf_counter() - start}
    if args.json:
        print_json(out)
    else:
        print(f"torch-svm evaluate: {args.checkpoint} on {name} {args.split} ({len(y)} examples): "
              f"accuracy {accuracy:.4f}")
    return 0
