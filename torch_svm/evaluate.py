r"""Accuracy of a model over a split, and of a saved checkpoint on its data.

:func:`accuracy` counts correct predictions over a split of any
:class:`~torch_svm.data.Dataset`, in the chunks the data set gives (one piece for a split in
memory, streamed for a mapped file); in a process group each process counts its share of the
rows and the counts are summed (:mod:`torch_svm.distributed`).

:func:`evaluate_checkpoint` loads a checkpoint (:mod:`torch_svm.checkpoint`), loads its data
again with the checkpoint's config and *its* preprocessing record (so the inputs are made
exactly as in training, whatever the data set's own moments are now), checks that W fits them
(features, classes, class names, bias) and measures the accuracy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from torch_svm.checkpoint import load_checkpoint
from torch_svm.data import SPLITS, DataConfig, Dataset, Preprocessing, load_dataset
from torch_svm.device import resolve_device
from torch_svm.distributed import all_reduce_sum, check_same_data, current_world
from torch_svm.errors import ArgumentError, CheckpointError, check_choice, clip
from torch_svm.model import LinearSVM
from torch_svm.progress import progress as progress_bar

__all__ = ["accuracy", "evaluate_checkpoint", "Evaluation"]


@torch.no_grad()
def accuracy(model: LinearSVM, data: Dataset, split: str, *, progress: bool = False
             ) -> Optional[float]:
    """The fraction of ``split``'s rows that ``model`` predicts right, computed on W's device;
    None for an empty split. In a process group every process returns the whole split's
    accuracy. ``progress``: a progress bar over the rows (shown for streamed data)."""
    world, device = current_world(), model.W.device
    counts = torch.zeros(2, dtype=torch.int64, device=device)   # correct, seen
    lo, hi = world.share(data.num_examples(split))
    with progress_bar(total=hi - lo, desc=f"{split} accuracy", unit="row", enabled=progress) as bar:
        for X, y in data.chunks(split, start=lo, stop=hi, device=device):
            counts[0] += (model.predict(X) == y).sum()
            bar.update(len(y))
    counts[1] = hi - lo
    correct, seen = all_reduce_sum(counts).tolist()
    return correct / seen if seen else None


@dataclass
class Evaluation:
    """The accuracy of a checkpoint on one split."""

    dataset: str                    # the data's name (a file: its path)
    split: str                      # train | val | test | dev
    n: int                          # examples in the split
    accuracy: Optional[float]       # fraction in [0, 1]; None for an empty split


def evaluate_checkpoint(path: Union[str, Path], *, split: str = "test",
                        dataset: Optional[str] = None, data_dir: Union[str, Path, None] = None,
                        sizes: Optional[Dict[str, Optional[int]]] = None, device: str = "cpu",
                        download: bool = False, progress: bool = False) -> Evaluation:
    """Load a checkpoint and measure its accuracy on a split of its data set.

    Args:
        path: ``model.pt`` written by ``torch-svm train --out`` (or
            :func:`torch_svm.checkpoint.save_checkpoint` with its metadata).
        split: one of :data:`~torch_svm.data.SPLITS`.
        dataset: "digits", "cifar10" or a data file's path; default: the checkpoint's.
        data_dir, download: for cifar10, as :func:`torch_svm.data.load_dataset`.
        sizes: ``num_train`` / ``num_val`` / ``num_test`` overriding the checkpoint's split
            sizes (which, with its seed, are kept only for the checkpoint's own data).
        device: where to compute. progress: progress bars over a file's rows.

    The data are made with the checkpoint's preprocessing record (mean, scale, bias) in W's
    dtype (float32 for a half-precision W). Raises CheckpointError when the checkpoint does not
    describe inputs W fits: another number of features or classes, other class names or bias.
    """
    check_choice("split", split, SPLITS)
    model, metadata = load_checkpoint(path, device=resolve_device(device))
    shown = clip(str(path), 200)
    name = dataset or metadata.get("dataset")
    if not isinstance(name, str):
        raise CheckpointError(f"checkpoint {shown!r} does not name its data set; pass dataset "
                              f"(--data)")
    config = _saved_config(metadata, name, sizes or {}, model, shown)
    D = model.num_features - (1 if metadata.get("bias") is True else 0)
    record = Preprocessing.from_metadata(metadata, D, center=config.center, where=repr(shown))
    try:
        data = load_dataset(name, data_dir, config, download=download, progress=progress,
                            preprocessing=record)
    except ArgumentError as exc:
        if "preprocessing.bias" not in str(exc):
            raise
        raise CheckpointError(f"checkpoint {shown!r}: {exc}") from None
    names = metadata.get("class_names")
    names = tuple(names) if isinstance(names, (list, tuple)) else names
    if (names != data.class_names or (model.num_features, model.num_classes)
            != (data.num_features, data.num_classes)):
        raise CheckpointError(
            f"checkpoint {shown!r} has W {tuple(model.W.shape)} for classes "
            f"{clip(str(names), 200)}, but data {clip(data.name, 200)} gives inputs of "
            f"{data.num_features} columns (bias={data.bias}) and classes "
            f"{clip(str(list(data.class_names)), 200)}: W must be ({data.num_features}, "
            f"{data.num_classes}) with the same class names")
    if model.W.dtype != data.dtype:
        model = model.to(data.dtype)
    check_same_data(data.fingerprint(), data.FINGERPRINT)       # a process group: one data set
    return Evaluation(dataset=data.name, split=split, n=data.num_examples(split),
                      accuracy=accuracy(model, data, split, progress=progress))


def _saved_config(metadata: dict, name: str, sizes: Dict[str, Optional[int]],
                  model: LinearSVM, shown: str) -> DataConfig:
    """The checkpoint's DataConfig, for the data ``name``: its split sizes and seed only when
    ``name`` is the data it was trained on (never its chunk size or finite check, which are
    the reading run's, not the data's: a file must not set how much memory is used); ``sizes`` overriding; the dtype W's (float32 for
    float16 / bfloat16)."""
    saved = metadata.get("data_config") if isinstance(metadata.get("data_config"), dict) else {}
    same = isinstance(metadata.get("dataset"), str) and _same_data(name, metadata["dataset"])
    known = {f.name for f in dataclasses.fields(DataConfig)}
    drop = {"chunk_bytes", "check_finite", "in_memory"}   # how a run reads, not what the data is
    if not same:
        drop |= {"num_train", "num_val", "num_test", "num_dev", "seed", "num_classes",
                 "class_names"}
    fields = {k: v for k, v in saved.items() if k in known - drop}
    fields.update({k: v for k, v in sizes.items() if v is not None})
    fields["dtype"] = "float64" if model.W.dtype == torch.float64 else "float32"
    try:
        return DataConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {shown!r} has a bad data_config: "
                              f"{clip(str(exc), 200)}") from None


def _same_data(name: str, saved: str) -> bool:
    """Whether ``name`` (given now) names the data ``saved`` in the checkpoint."""
    if name == saved:
        return True
    try:
        return Path(name).resolve() == Path(saved).resolve()
    except (OSError, RuntimeError):
        return False
