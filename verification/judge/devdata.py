r"""The data :func:`verification.judge.verify.verify` judges on, and its on-disk cache.

:func:`load_verify_data` gives a :class:`VerifyData` (``X: (N, D)`` float64, ``y: (N,)`` int64)
for ``"digits"`` (embedded), ``"cifar10"`` or ``"random"``:

* digits and cifar10: the dev split of :func:`torch_svm.data.load_dataset` (``num_dev`` images
  drawn, seeded, from the train split; the train split's mean image subtracted; a bias column),
  in float32 as training sees them, handed to the judged code in float64;
* random: integer-valued ``X`` in ``[-8, 8]`` plus a bias column, ``C = 10``.

**Cache.** Reading CIFAR-10 (50,000 images, to subtract the train mean) and walking to the
trained check point take most of a verdict's time, so both are kept in small ``.npz`` files
under :func:`cache_dir` (``$TORCH_SVM_CACHE_DIR``, else ``$XDG_CACHE_HOME/torch-svm``, else
``~/.cache/torch-svm``). A file's name is a hash of everything it depends on (the data files'
sizes and modification times, the counts, the seed, and for a point delta and dtype), so a
changed file or setting never reads a stale entry. Files are read with
``np.load(allow_pickle=False)`` and checked; a bad one is recomputed. The folder is safe to
delete. ``TORCH_SVM_CACHE_DIR=""`` (or ``cache=False``) turns the cache off.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch

from torch_svm.data import DataConfig, load_dataset
from torch_svm.data.cifar10 import locate_cifar10
from torch_svm.data.config import SPLIT_DEFAULTS
from torch_svm.errors import ArgumentError, check_choice, check_int
from torch_svm.files import atomic_write_bytes

__all__ = ["load_verify_data"]

#: Names :func:`load_verify_data` accepts.
VERIFY_DATASETS = ("digits", "cifar10", "random")
_RANDOM_N, _RANDOM_D, _RANDOM_C = 100, 32, 10
_VERSION = 2                       # bump when what a cache file holds changes


@dataclass(eq=False)  # tensors have no single truth value
class VerifyData:
    """Examples to judge on: ``X: (N, D)`` float64 (bias column included), ``y: (N,)`` int64."""

    X: torch.Tensor
    y: torch.Tensor
    num_classes: int
    description: str              # e.g. "digits dev split"
    cache_key: Optional[str] = None   # identifies the data for the point cache (None: no cache)


def cache_dir() -> Optional[Path]:
    """Where cache files go, or None when ``TORCH_SVM_CACHE_DIR`` is set to ""."""
    env = os.environ.get("TORCH_SVM_CACHE_DIR")
    if env is not None:
        return Path(env).expanduser() if env else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torch-svm"


def _key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(dict(parts, version=_VERSION), sort_keys=True).encode()).hexdigest()[:24]


def cached_arrays(kind: str, key: str, compute: Callable[[], Dict[str, np.ndarray]],
                  check: Callable[[Dict[str, np.ndarray]], bool], *, cache: bool = True
                  ) -> Dict[str, np.ndarray]:
    """``compute()``'s arrays, read from ``<cache_dir>/<kind>-<key>.npz`` when a good copy is
    there (``check`` accepts it), else computed and written (atomically; a write that fails
    is ignored: the cache only saves time)."""
    folder = cache_dir() if cache else None
    path = None if folder is None else folder / f"{kind}-{key}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            if check(arrays):
                return arrays
        except (OSError, ValueError, KeyError, EOFError):
            pass
    arrays = compute()
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError:
            pass
    return arrays


def cache_snapshot() -> Dict[str, str]:
    """{file name: sha256 of its bytes} of every file in the cache folder ({} without one)."""
    folder = cache_dir()
    if folder is None or not folder.is_dir():
        return {}
    snapshot = {}
    for path in sorted(folder.iterdir()):
        try:
            if path.is_file() and not path.is_symlink():
                snapshot[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                snapshot[path.name] = "not a regular file"
        except OSError:
            snapshot[path.name] = "unreadable"
    return snapshot


def cache_tampered(before: Dict[str, str]) -> List[str]:
    """The cache files that changed, appeared or went away since ``before`` (a
    :func:`cache_snapshot` taken while no judged code ran). They are deleted, so that no later
    verdict reads what the judged code wrote; the names are returned."""
    after = cache_snapshot()
    changed = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    folder = cache_dir()
    for name in changed:
        if folder is not None and name in after:
            try:
                target = folder / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink()
            except OSError:
                pass
    return changed


def _files_stamp(source: Path) -> list:
    """Size and mtime of every file a CIFAR-10 source holds (the archive, or the folder's files)."""
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def load_verify_data(name: str = "digits", data_dir: Union[str, Path, None] = None, *,
                     n: Optional[int] = None, seed: int = 0, cache: bool = True) -> VerifyData:
    """The data to judge on (see the module docstring).

    Args:
        name: "digits", "cifar10" (needs ``data_dir``) or "random".
        data_dir: the CIFAR-10 folder or archive (as :func:`torch_svm.data.load_dataset`).
        n: examples (default: digits 100, cifar10 500, random 100).
        seed: seeds the dev draw (or the random data).
        cache: use the on-disk cache (CIFAR-10's dev split here; the check points in verify).

    Raises:
        ValueError: bad name, ``n`` larger than the training split, ``data_dir`` with digits.
        FileNotFoundError / DataFormatError: CIFAR-10 files missing or corrupt.
    """
    check_choice("data", name, VERIFY_DATASETS)
    seed = check_int("seed", seed, min=0, max=2**63 - 1)
    if n is not None:
        n = check_int("n", n, min=1, max=10**6)
    if name != "cifar10" and data_dir is not None:
        raise ArgumentError(f"data_dir only applies to data 'cifar10', got data {name!r} with data_dir {str(data_dir)!r}")
    if name == "random":
        n = n or _RANDOM_N
        g = torch.Generator().manual_seed(seed)
        X = torch.randint(-8, 9, (n, _RANDOM_D), generator=g).to(torch.float64)
        X = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], 1)           # bias column
        return VerifyData(X, torch.randint(_RANDOM_C, (n,), generator=g), _RANDOM_C,
                          "random integer-valued data",
                          cache_key=_key(data="random", n=n, seed=seed) if cache else None)
    num_train, _, _, num_dev = SPLIT_DEFAULTS[name]
    num_dev = n or num_dev
    if num_dev > num_train:
        raise ArgumentError(f"n must be at most the size of the {name} training split ({num_train}), got {num_dev}")
    config = DataConfig(num_dev=num_dev, seed=seed, dtype="float32")

    def compute() -> Dict[str, np.ndarray]:
        data = load_dataset(name, data_dir, config)
        X, y = data.tensors("dev")
        return {"X": X.numpy(), "y": y.numpy(), "num_classes": np.array(data.num_classes)}

    if name == "digits":
        split, key = compute(), _key(data="digits", n=num_dev, seed=seed)
    else:
        if data_dir is None:
            where = "the cifar-10-batches-py folder, its parent, or cifar-10-python.tar.gz"
            raise ArgumentError(f"data 'cifar10' needs data_dir: {where}")
        source = locate_cifar10(data_dir)
        key = _key(data="cifar10", files=_files_stamp(source), n=num_dev, seed=seed, num_train=num_train)

        def check(a: Dict[str, np.ndarray]) -> bool:
            return (set(a) == {"X", "y", "num_classes"} and a["X"].dtype == np.float32
                    and a["X"].shape == (num_dev, 3073) and bool(np.isfinite(a["X"]).all())
                    and a["y"].shape == (num_dev,) and a["y"].dtype == np.int64
                    and a["num_classes"].shape == () and a["num_classes"].dtype.kind == "i"
                    and 2 <= int(a["num_classes"]) <= 10**4
                    and bool(((a["y"] >= 0) & (a["y"] < a["num_classes"])).all()))

        split = cached_arrays("cifar10-dev", key, compute, check, cache=cache)
    return VerifyData(torch.from_numpy(split["X"]).to(torch.float64), torch.from_numpy(split["y"]),
                      int(split["num_classes"]), f"{name} dev split", cache_key=key if cache else None)
