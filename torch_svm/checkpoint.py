r"""The checkpoint format of a :class:`~torch_svm.model.LinearSVM`.

A checkpoint is a plain dict, ``{"format", "state_dict", "metadata"}``, of tensors and plain
Python values, read back with ``torch.load(..., weights_only=True)``: a file cannot run code
when loaded, and a file that is not such a dict is refused with
:class:`~torch_svm.errors.CheckpointError`. ``metadata`` (:func:`checkpoint_metadata`) records
the data a model was trained on: where to load it again, its config (splits, dtype, seed) and
its preprocessing record (mean, scale, bias), so :mod:`torch_svm.evaluate` makes the same
inputs again.
"""
from __future__ import annotations

import dataclasses
import io
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from torch_svm.data import Dataset
from torch_svm.errors import (CheckpointError, FileAccessError, MissingFileError, TorchSVMError,
                              clip)
from torch_svm.files import atomic_write_bytes, open_regular
from torch_svm.model import LinearSVM

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_metadata"]

_FORMAT = "torch-svm/linear-svm/1"  # bumped when the checkpoint layout changes


def checkpoint_metadata(data: Dataset, train_config: Optional[Dict[str, Any]] = None
                        ) -> Dict[str, Any]:
    """What a run records about its data so that evaluation can make the same inputs again,
    all weights_only-loadable: ``dataset`` (what :func:`torch_svm.data.load_dataset` loads: a
    name, or a file's absolute path), ``data_config`` (the filled :class:`DataConfig`),
    ``class_names``, ``image_shape`` and the preprocessing record (``mean_image``,
    ``feature_scale``, ``bias``)."""
    D = data.num_features - data.bias
    return {
        "dataset": data.source if data.source is not None else data.name,
        "data_config": dataclasses.asdict(data.config),
        "train_config": dict(train_config or {}),
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        **data.preprocessing.to_metadata(D),
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


def load_checkpoint(path: Union[str, Path], *, device: Union[str, torch.device, None] = "cpu"
                    ) -> Tuple[LinearSVM, Dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Returns ``(model, metadata)`` with the model on ``device``, in the saved dtype.
    Raises MissingFileError when ``path`` is missing, DataFormatError when it is not a regular
    file (a FIFO is never waited on), and
    CheckpointError (a ValueError) when the file is corrupt, carries anything but tensors and
    plain values (nothing in it is run), is not a LinearSVM checkpoint, or its W is not finite.
    """
    path = Path(path)
    shown = clip(str(path), 200)
    if not path.exists():
        raise MissingFileError(f"checkpoint {shown!r} does not exist")
    try:
        with open_regular(path, expected="a checkpoint (model.pt)") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")      # torch warns about odd pickle protocols: we refuse or accept
            obj = torch.load(fh, map_location="cpu", weights_only=True)
    except TorchSVMError:
        raise
    except OSError as exc:
        raise FileAccessError(f"checkpoint {shown!r} cannot be read: "
                              f"{exc.strerror or type(exc).__name__}") from None
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
