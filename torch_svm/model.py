r"""The linear SVM classifier and its checkpoint format.

:class:`LinearSVM` holds one weight matrix ``W: (D, C)`` and scores ``S = X W``. There is no
separate bias: the bias trick makes the last input column all ones (``torch_svm.data`` appends
it), so the last row ``W[-1]`` is the per-class bias and ``W[:-1, c]`` is the template of
class ``c`` (an image once reshaped to ``image_shape``).

Its :meth:`LinearSVM.loss` is the CS231n multiclass SVM loss

.. math::

    L(W) = \frac{1}{N} \sum_i \sum_{j \ne y_i} \max(0,\; S_{ij} - S_{iy_i} + \Delta)^p
           + \lambda \sum W^2

differentiated in one of three ways (``grad``), all with the same value:

* ``"hand"`` (default): :func:`torch_svm.losses.svm_loss`, whose backward is the
  hand-written gradient;
* ``"autograd"``: :func:`torch_svm.losses.svm_loss_autograd`, plain torch ops that autograd differentiates;
* ``"mml"``: :func:`torch_svm.losses.svm_loss_multimargin`, through PyTorch's own
  ``multi_margin_loss`` kernel.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are a plain dict of tensors and
plain Python values, read back with ``torch.load(..., weights_only=True)``: a file cannot run
code when loaded, and a file that is not such a dict is refused with :class:`CheckpointError`.
:func:`checkpoint_metadata` is what a run records about its data (so the inputs can be rebuilt)
and :func:`evaluate_checkpoint` rebuilds them and measures accuracy on a split.
"""
from __future__ import annotations

import dataclasses
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from torch_svm.arrays import ArrayConfig, ArrayDataset, load_arrays
from torch_svm.batches import accuracy
from torch_svm.data import DATASETS, DataConfig, Dataset, load_dataset
from torch_svm.errors import CheckpointError, TorchSVMError
from torch_svm.losses import svm_loss, svm_loss_autograd, svm_loss_multimargin
from torch_svm.utils import atomic_write_bytes, clip, open_regular, resolve_device

__all__ = ["LinearSVM", "GRADS", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "checkpoint_metadata", "checkpoint_inputs", "evaluate_checkpoint", "Evaluation",
           "SPLITS"]

#: Values accepted for ``grad`` in :meth:`LinearSVM.loss`: how ``backward()`` differentiates.
GRADS = {"hand": svm_loss, "autograd": svm_loss_autograd, "mml": svm_loss_multimargin}
#: Splits :func:`evaluate_checkpoint` can measure.
SPLITS = ("train", "val", "test")

_FORMAT = "torch-svm/linear-svm/1"  # bumped when the checkpoint layout changes


class LinearSVM(nn.Module):
    """A linear multiclass SVM: ``scores = X @ W`` with ``W: (D, C)`` a Parameter.

    Args:
        num_features: D, the columns of X, bias column included.
        num_classes: C >= 2.
        init_scale: W starts as ``init_scale * randn(D, C)`` (0.001 in the assignment), drawn
            from torch's global CPU generator in float64 and then cast and moved, so a seed
            gives the same start on every device and dtype.
        dtype, device: of W; X must match them.
    """

    def __init__(self, num_features: int, num_classes: int, *, init_scale: float = 0.001,
                 dtype: torch.dtype = torch.float32,
                 device: Union[str, torch.device, None] = None) -> None:
        super().__init__()
        for name, value, lowest in (("num_features", num_features, 1),
                                    ("num_classes", num_classes, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
        W = init_scale * torch.randn(num_features, num_classes, dtype=torch.float64)
        self.W = nn.Parameter(W.to(device=device, dtype=dtype))  # (D, C)

    @property
    def num_features(self) -> int:
        return self.W.shape[0]

    @property
    def num_classes(self) -> int:
        return self.W.shape[1]

    def forward(self, X: Tensor) -> Tensor:
        """Scores ``(N, C)`` for ``X: (N, D)``."""
        return X @ self.W

    @torch.no_grad()
    def predict(self, X: Tensor) -> Tensor:
        """Predicted labels ``(N,)`` int64: the highest-scoring class per row."""
        return self(X).argmax(dim=1)

    @torch.no_grad()
    def accuracy(self, X: Tensor, y: Tensor) -> float:
        """Fraction of rows of X whose predicted label equals y (reads one number back)."""
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {tuple(y.shape)}")
        return float((self.predict(X) == y).to(torch.float64).mean())

    def loss(self, X: Tensor, y: Tensor, reg: float = 0.0, *, grad: str = "hand",
             delta: float = 1.0, p: int = 1, kink: float = 0.0) -> Tensor:
        """The SVM loss (a 0-d tensor) on a batch ``X: (N, D)``, ``y: (N,)``.

        ``grad`` picks how ``backward()`` differentiates it (see the module docstring); ``kink``
        (the derivative taken at a margin of exactly 0) is only free with ``grad="hand"``: the
        other two take 0 there, so any other value is a ValueError for them.
        """
        if grad == "hand":
            return svm_loss(self.W, X, y, reg, delta=delta, p=p, kink=kink)
        if grad not in GRADS:
            raise ValueError(f"grad must be one of {tuple(GRADS)}, got {grad!r:.200}")
        if kink != 0:
            raise ValueError(f"kink must be 0 with grad={grad!r} (only grad='hand' takes another "
                             f"value at the hinge's kink), got {kink!r}")
        return GRADS[grad](self.W, X, y, reg, delta=delta, p=p)


# --------------------------------------------------------------------------- checkpoints


def checkpoint_metadata(data: Union[Dataset, ArrayDataset],
                        train_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a run records about its data so that :func:`evaluate_checkpoint` can rebuild the
    inputs: plain values and tensors (the train mean image and, for an ArrayDataset, its
    ``feature_scale``, None unless standardized), all weights_only-loadable. A data file is
    recorded by its absolute path, and its :class:`~torch_svm.arrays.ArrayConfig` whole."""
    arrays = isinstance(data, ArrayDataset)
    scale = data.scale if arrays and data.scale is not None else None
    return {
        "dataset": str(Path(data.name).resolve()) if arrays else data.name,
        "data_config": dataclasses.asdict(data.config),
        "train_config": dict(train_config or {}),
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        "mean_image": data.mean_image.detach().cpu().clone(),
        "bias": bool(data.bias),
        "feature_scale": None if scale is None else scale.detach().cpu().clone(),
    }


def save_checkpoint(path: Union[str, Path], model: LinearSVM,
                    metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``{"format", "state_dict", "metadata"}`` to ``path`` atomically with ``torch.save``.

    ``metadata`` must hold only what ``weights_only`` loading accepts: dicts, lists, tuples,
    str, int, float, bool, None and tensors (see :func:`checkpoint_metadata`).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": _FORMAT, "state_dict": state, "metadata": dict(metadata or {})}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _refusal(exc: BaseException) -> str:
    """Why weights_only loading refused a file, in a few words (never torch's advice to
    load it with weights_only=False: that would run whatever the file holds)."""
    text = " ".join(str(exc).split())
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it asks for the Python object {clip(found.group(1), 100)} (a pickle, not a checkpoint)"
    first = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0] if text else ""
    if "weights_only" in first or not first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {clip(first, 150)}"


def load_checkpoint(path: Union[str, Path], *, device: Union[str, torch.device] = "cpu"
                    ) -> Tuple[LinearSVM, Dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Returns ``(model, metadata)`` with the model on ``device``, in the saved dtype.
    Raises FileNotFoundError when ``path`` is missing, DataFormatError when it is not a regular
    file (a FIFO is never waited on), and
    CheckpointError (a ValueError) when the file is corrupt, carries anything but tensors and
    plain values (nothing in it is run), is not a LinearSVM checkpoint, or its W is not finite.
    """
    path = Path(path)
    shown = clip(str(path), 200)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {shown!r} does not exist")
    try:
        with open_regular(path, expected="a checkpoint (model.pt)") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")      # torch warns about odd pickle protocols: we refuse or accept
            obj = torch.load(fh, map_location="cpu", weights_only=True)
    except (TorchSVMError, OSError):
        raise
    except Exception as exc:  # untrusted input: any failure means a bad file
        raise CheckpointError(f"checkpoint {shown!r} was refused by weights_only loading "
                              f"(corrupt, or not a torch-svm checkpoint; nothing in it was run): "
                              f"{_refusal(exc)}") from None
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {shown!r} is not a torch-svm LinearSVM checkpoint "
                              f"(expected format {_FORMAT!r}, got {clip(repr(got), 100)})")
    state, metadata = obj.get("state_dict"), obj.get("metadata")
    W = state.get("W") if isinstance(state, dict) else None
    if not (isinstance(W, Tensor) and W.dim() == 2 and W.is_floating_point() and W.shape[1] >= 2
            and W.shape[0] >= 1 and isinstance(metadata, dict)):
        shape = tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__
        raise CheckpointError(f"checkpoint {shown!r} must hold a floating W of shape (D, C) "
                              f"with C >= 2 and a metadata dict, got W {clip(str(shape), 100)}")
    if not bool(torch.isfinite(W).all()):
        raise CheckpointError(f"checkpoint {shown!r}: tensor W holds NaN or inf "
                              f"({int((~torch.isfinite(W)).sum())} of {W.numel()} entries)")
    model = LinearSVM(W.shape[0], W.shape[1], dtype=W.dtype, device=device)
    with torch.no_grad():
        model.W.copy_(W)
    return model, metadata


def checkpoint_inputs(model: LinearSVM, metadata: Dict[str, Any], data: Dataset,
                      split: str = "test") -> Tuple[Tensor, Tensor]:
    """``(X, y)`` of ``data``'s split as the checkpoint's model expects them: re-centred on
    the checkpoint's own mean image, in the model's dtype and on its device.

    Raises CheckpointError when the metadata do not describe inputs of this data set (image
    shape, bias, class names, a finite mean image of the right size) or W does not fit them.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r:.100}")
    shape = metadata.get("image_shape")
    names = metadata.get("class_names")
    mean = metadata.get("mean_image")
    bias = metadata.get("bias")
    shape = tuple(shape) if isinstance(shape, (list, tuple)) else shape
    names = tuple(names) if isinstance(names, (list, tuple)) else names
    if shape != tuple(data.image_shape) or bias != data.bias or names != tuple(data.class_names):
        raise CheckpointError(
            f"checkpoint was trained on images {clip(str(shape), 60)}, bias={clip(str(bias), 20)}, "
            f"classes {clip(str(names), 200)}, but data {data.name} has {tuple(data.image_shape)}, "
            f"bias={data.bias}, classes {clip(str(list(data.class_names)), 200)}")
    X = getattr(data, f"X_{split}")                            # (N, D + bias)
    if (model.num_features, model.num_classes) != (X.shape[1], len(names)):
        raise CheckpointError(f"checkpoint W has shape {tuple(model.W.shape)}, but the data need "
                              f"({X.shape[1]}, {len(names)})")
    if not (isinstance(mean, Tensor) and mean.shape == data.mean_image.shape):
        got = tuple(mean.shape) if isinstance(mean, Tensor) else type(mean).__name__
        raise CheckpointError(f"checkpoint mean_image must be a tensor of shape "
                              f"{tuple(data.mean_image.shape)}, got {clip(str(got), 60)}")
    if not bool(torch.isfinite(mean).all()):
        raise CheckpointError("checkpoint tensor mean_image holds NaN or inf")
    X = X.to(model.W.dtype, copy=True)                         # no float64 copy of the split
    shift = data.mean_image.to(torch.float64) - mean.to(torch.float64)  # our mean -> theirs
    X[:, :mean.shape[0]] += shift.to(X.dtype)
    y = getattr(data, f"y_{split}")
    return X.to(model.W.device), y.to(model.W.device)


@dataclass
class Evaluation:
    """The accuracy of a checkpoint on one split."""

    dataset: str                    # data set name
    split: str                      # train | val | test
    n: int                          # examples in the split
    accuracy: float                 # fraction in [0, 1]


def evaluate_checkpoint(path: Union[str, Path], *, split: str = "test",
                        dataset: Optional[str] = None, data_dir: Union[str, Path, None] = None,
                        sizes: Optional[Dict[str, int]] = None, device: str = "cpu",
                        download: bool = False, progress: bool = False) -> Evaluation:
    """Load a checkpoint and measure its accuracy on a split of its data set.

    Args:
        path: ``model.pt`` from :func:`save_checkpoint` (with :func:`checkpoint_metadata`).
        split: "train", "val" or "test".
        dataset: "digits", "cifar10" or the path of a data file (:mod:`torch_svm.arrays`);
            default: the checkpoint's. data_dir, download: as
            :func:`torch_svm.data.load_dataset`.
        sizes: ``num_train`` / ``num_val`` / ``num_test`` overriding the checkpoint's own
            split sizes (which are the default when ``dataset`` is the checkpoint's).
        device: where to compute.
        progress: progress bars over a data file's rows (its scan, then the split).

    A data file is read with the checkpoint's ArrayConfig (its splits, when it is the same
    file) and preprocessed with the checkpoint's own mean and scale; its split is streamed.
    """
    model, metadata = load_checkpoint(path, device=resolve_device(device))
    name = dataset or metadata.get("dataset")
    if not isinstance(name, str):
        raise CheckpointError(f"checkpoint {clip(str(path), 200)!r} does not name its data set; "
                              f"pass dataset (--data)")
    saved = metadata.get("data_config") if isinstance(metadata.get("data_config"), dict) else {}
    if name not in DATASETS:
        data = _checkpoint_arrays(model, metadata, name, saved, sizes or {}, path, progress)
        return Evaluation(dataset=name, split=split, n=data.num_examples(split),
                          accuracy=accuracy(model, data, split, progress=progress))
    fields = {k: saved[k] for k in ("num_train", "num_val", "num_test", "dtype") if k in saved}
    if name != metadata.get("dataset"):
        fields = {}                 # the saved split sizes belong to another data set
    fields.update({k: v for k, v in (sizes or {}).items() if v is not None})
    try:
        config = DataConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {clip(str(path), 200)!r} has a bad data_config: "
                              f"{clip(str(exc), 200)}") from None
    data = load_dataset(name, data_dir, config, download=download)
    X, y = checkpoint_inputs(model, metadata, data, split)
    return Evaluation(dataset=name, split=split, n=len(y), accuracy=model.accuracy(X, y))


def _checkpoint_arrays(model: LinearSVM, metadata: Dict[str, Any], name: str,
                       saved: Dict[str, Any], sizes: Dict[str, Optional[int]],
                       path: Union[str, Path], progress: bool = False) -> ArrayDataset:
    """The data file ``name`` as the checkpoint's model expects it: its saved ArrayConfig (the
    split sizes and seed only when ``name`` is the checkpoint's own file), ``sizes``
    overriding, and the checkpoint's mean and scale in place of the file's."""
    shown = clip(str(path), 200)
    same = isinstance(metadata.get("dataset"), str) and \
        Path(name).resolve() == Path(metadata["dataset"]).resolve()
    known = {f.name for f in dataclasses.fields(ArrayConfig)}
    drop = set() if same else {"num_train", "num_val", "num_test", "num_dev", "seed"}
    fields = {k: v for k, v in saved.items() if k in known - drop}
    fields.update({k: v for k, v in sizes.items() if v is not None})
    try:
        config = ArrayConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {shown!r} has a bad data_config: "
                              f"{clip(str(exc), 200)}") from None
    data = load_arrays(name, config, progress=progress)
    names = metadata.get("class_names")
    if (tuple(names) if isinstance(names, (list, tuple)) else names) != data.class_names \
            or metadata.get("bias") != data.bias or model.num_features != data.num_features:
        raise CheckpointError(
            f"checkpoint {shown!r} has W {tuple(model.W.shape)}, bias={metadata.get('bias')}, "
            f"classes {clip(str(names), 200)}, but data {clip(name, 200)} gives "
            f"{data.num_features} features, bias={data.bias}, classes "
            f"{clip(str(list(data.class_names)), 200)}")
    D = data.num_features - data.bias
    preprocessing = {}
    for key, field in (("mean_image", "mean"), ("feature_scale", "scale")):
        value = metadata.get(key)
        if value is None and key == "feature_scale":
            preprocessing[field] = None
            continue
        if not (isinstance(value, Tensor) and value.shape == (D,) and bool(torch.isfinite(value).all())
                and (key == "mean_image" or bool((value > 0).all()))):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(f"checkpoint {shown!r}: {key} must be a finite tensor of shape "
                                  f"({D},){'' if key == 'mean_image' else ' > 0'}, got "
                                  f"{clip(str(got), 60)}")
        preprocessing[field] = value.to(torch.float64)
    if not config.center:
        preprocessing["mean"] = None
    return dataclasses.replace(data, **preprocessing)
