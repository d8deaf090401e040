"""What the subcommands share: flag types with ranges, the common flags, data loading from
flags, the output folder, and JSON output. Each ``cli/<command>.py`` only parses, calls the
library and prints."""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional


from torch_svm.data import DataConfig, Dataset, load_dataset
from torch_svm.data.config import DATA_DTYPES, SPLIT_DEFAULTS
from torch_svm.device import DTYPES, auto_threads
from torch_svm.distributed import DIST_TIMEOUT
from torch_svm.errors import UsageError, clip
from torch_svm.files import jsonable, probe_atomic_directory
from torch_svm.model import GRADS
from torch_svm.defaults import DEFAULT_HYPERS, USER_DECAY, USER_LR_GAIN
from torch_svm.train import MAX_ITERS, SAMPLINGS, SCHEDULES, TrainConfig

EXIT_STATUS = ("exit status: 0 on success; 2 on bad input, unreadable data or checkpoint, or a "
               "diverged run (inf/NaN loss), with one line on stderr")

#: Largest seed any command accepts (torch's generators take 64-bit seeds).
MAX_SEED = 2**63 - 1


# --------------------------------------------------------------------------- flag types


def int_flag(min: int, max: int) -> Callable[[str], int]:
    """argparse type: an integer in ``[min, max]``; argparse names the flag in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not min <= value <= max:
            top = str(max) if max <= 10**9 else f"{max:.3g}"
            raise argparse.ArgumentTypeError(
                f"expected an integer from {min} to {top}, got {clip(repr(text), 60)}")
        return value

    parse.__name__ = "integer"
    return parse


def float_flag(min: Optional[float] = None, max: Optional[float] = None, *,
               min_open: bool = False, max_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in the range (``*_open`` excludes that end)."""
    lo = "" if min is None else f"{'>' if min_open else '>='} {min:g}"
    hi = "" if max is None else f"{'<' if max_open else '<='} {max:g}"
    bounds = " and ".join(b for b in (lo, hi) if b)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (math.isfinite(value)
              and (min is None or (value > min if min_open else value >= min))
              and (max is None or (value < max if max_open else value <= max)))
        if not ok:
            raise argparse.ArgumentTypeError(
                f"expected a finite number{' ' + bounds if bounds else ''}, got {clip(repr(text), 60)}")
        return value

    parse.__name__ = "number"
    return parse


seed_flag = int_flag(0, MAX_SEED)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every help string, except None (the help text then says what None means)."""

    def _get_help_string(self, action):
        if action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def new_parser(subparsers, name: str, help: str, description: str,
               epilog: str = EXIT_STATUS) -> argparse.ArgumentParser:
    """A subcommand parser with every default and the exit status in --help."""
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=_Formatter)


# --------------------------------------------------------------------------- common flags


def add_device_arg(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", default=default,
                        help="cpu, cuda, cuda:N or auto (cuda when available)")


def add_dist_timeout_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dist-timeout", type=float_flag(0, 1e7, min_open=True),
                        default=DIST_TIMEOUT, metavar="SECONDS",
                        help="under torchrun: how long a process waits for the others (to join, "
                             "and at each step) before it stops, naming the rank that fell behind")


def add_dtype_arg(parser: argparse.ArgumentParser, default: str, choices=tuple(DTYPES),
                  help: str = "floating dtype of the computation") -> None:
    """``--dtype``, the one spelling every command uses: a name of
    :data:`torch_svm.device.DTYPES` (``choices``, a subset of them)."""
    parser.add_argument("--dtype", default=default, choices=choices, help=help)


def add_seed_arg(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=seed_flag, default=default,
                        help="seed of this run's own random generators (no global state is "
                             "touched)")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the table")


def add_out_arg(parser: argparse.ArgumentParser, what: str, *, required: bool = False) -> None:
    parser.add_argument("--out", required=required, default=None,
                        help=f"folder for {what}" + ("" if required else " (default: write nothing)"))


def add_data_args(p: argparse.ArgumentParser, default_data: Optional[str] = "digits") -> None:
    p.add_argument("--data", default=default_data, metavar="{digits,cifar10,PATH}",
                   help="data set: digits is embedded (8x8, 10 classes); cifar10 needs "
                        "--data-dir; PATH is your own: an .npz (np.savez, uncompressed) or a "
                        "folder of .npy files holding X (N, D) (or images (N, H, W[, C])) "
                        "and y (N,) labels 0..C-1, optionally X_val/y_val, X_test/y_test (else "
                        "10 %% of X each, drawn with seed 0) and class_names; Keras' x_train/"
                        "y_train/x_test/y_test names too; memory-mapped, never loaded whole"
                   + ("" if default_data else " (default: the checkpoint's)"))
    if default_data:        # evaluate preprocesses as the checkpoint says
        p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                       help="scale each feature by its train standard deviation after "
                            "subtracting the train mean (default: on for PATH; off for digits "
                            "and cifar10, the assignment's unscaled pixels; --no-standardize "
                            "keeps your units, only centred)")
    p.add_argument("--data-dir", default=None,
                   help="cifar10 only: the cifar-10-batches-py folder, its parent or the "
                        "cifar-10-python.tar.gz archive")
    p.add_argument("--download", action="store_true",
                   help="cifar10 only: when --data-dir holds no copy, fetch the official "
                        "archive (about 163 MB) into it and check its md5 first")
    sizes = "; ".join(f"{name} {'/'.join(str(v) for v in counts[:3])}"
                      for name, counts in SPLIT_DEFAULTS.items())
    for i, (split, what) in enumerate((("train", "the first images of the training pool"),
                                       ("val", "the images after the train split"),
                                       ("test", "the first images of the test pool"))):
        default = (f"(default: the data set's train/val/test: {sizes}; PATH: the file's "
                   f"X_val/X_test, else 10 %% of X each and train the rest)" if default_data
                   else "(default: the checkpoint's)")
        p.add_argument(f"--num-{split}", type=int_flag(1, 10**8), default=None,
                       help=f"{split} split size: {what} {default}")


def add_train_args(p: argparse.ArgumentParser, *, hypers: bool = True) -> None:
    """Training flags; ``hypers=False`` leaves --lr, --reg and --iters to the caller (tune)."""
    d = TrainConfig()
    if hypers:
        per_data = "; ".join(f"{k} {v[0]:g}" for k, v in DEFAULT_HYPERS.items())
        p.add_argument("--lr", type=float_flag(0, 1e10, min_open=True), default=None,
                       help=f"learning rate (default: per data set: {per_data}; PATH: "
                            f"{USER_LR_GAIN:g} / the mean squared norm of a train input row)")
        per_data = "; ".join(f"{k} {v[1]:g}" for k, v in DEFAULT_HYPERS.items())
        p.add_argument("--reg", type=float_flag(0, 1e30), default=None,
                       help=f"L2 regularization strength, the loss's reg*sum(W^2) (default: per "
                            f"data set: {per_data}; PATH: {USER_DECAY:g} / (2 lr), a weight "
                            f"decay of {USER_DECAY:g} per step)")
        p.add_argument("--iters", type=int_flag(1, MAX_ITERS), default=d.iters, help="SGD iterations")
    p.add_argument("--batch-size", type=int_flag(1, 10**7), default=d.batch_size,
                   help="minibatch size")
    p.add_argument("--momentum", type=float_flag(0, 1, max_open=True), default=d.momentum,
                   help="SGD momentum")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="learning-rate schedule: step multiplies by --lr-gamma every --lr-step "
                        "iterations; cosine anneals to 0 over the run")
    p.add_argument("--lr-step", type=int_flag(1, MAX_ITERS), default=d.lr_step,
                   help="--schedule step period")
    p.add_argument("--lr-gamma", type=float_flag(0, 1, min_open=True), default=d.lr_gamma,
                   help="--schedule step factor")
    p.add_argument("--sampling", choices=SAMPLINGS, default=d.sampling,
                   help="minibatches drawn with replacement (the assignment) or epoch-wise "
                        "without replacement")
    p.add_argument("--delta", type=float_flag(0, 1e30, min_open=True), default=d.delta,
                   help="hinge margin")
    p.add_argument("--p", type=int, choices=(1, 2), default=d.p, help="1: hinge, 2: squared hinge")
    p.add_argument("--grad", choices=tuple(GRADS), default=d.grad,
                   help="backward: hand-written gradient, torch.autograd, or PyTorch's "
                        "multi_margin_loss")
    p.add_argument("--log-every", type=int_flag(1, MAX_ITERS), default=d.log_every,
                   help="iterations between loss read-backs and divergence checks (each a sync)")
    add_dtype_arg(p, DataConfig().dtype, DATA_DTYPES, "dtype of the data and W")
    add_seed_arg(p, d.seed)
    add_device_arg(p, d.device)
    add_dist_timeout_arg(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the loss and gradient (C++ kernels on a CPU, CUDA graphs "
                        "on a GPU); the first step compiles, which takes seconds")
    add_out_arg(p, "model.pt, metrics.json, loss.png and weights.png")
    p.add_argument("--dry-run", action="store_true",
                   help=f"one tiny pass through every part: {DRY_RUN_ITERS} iterations per run "
                        f"(and at most {DRY_RUN_SETTINGS} settings for tune), so the flags, the "
                        "data, the device and --out are checked in seconds; the model is not "
                        "trained")
    add_json_arg(p)


# --------------------------------------------------------------------------- from flags


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """--threads, which :func:`torch_svm.cli.main` adds to every command."""
    p.add_argument("--threads", type=int_flag(0, 1024), default=0,
                   help="CPU threads for torch; 0 chooses from the work size: one for small "
                        "GEMMs such as verify's or the kink study's (on a busy machine, small "
                        "GEMMs split over two threads run several times slower than on one), "
                        "every core for a pass over all of CIFAR-10; a training step of 4 M "
                        "multiply-adds or more (CIFAR-10's) runs on the idle cores, gives one "
                        "back while another process keeps it busy")


def command_threads(args) -> int:
    """The CPU threads a command runs on: ``--threads``, or for 0
    :func:`torch_svm.device.auto_threads` of its largest repeated GEMM, rows x features x
    classes, estimated from its flags: rows ``--batch-size`` (a training step) or ``--n``
    (check, verify), else 500 (verify's and the kink study's dev split); features ``--d``, or
    3073 for CIFAR-10 (``--data cifar10`` or ``--data-dir``), else 65 (digits); classes ``--c``
    or 10. Training sizes its loop's threads itself from the exact shapes
    (``TrainConfig.threads``)."""
    if args.threads:
        return args.threads
    rows = getattr(args, "batch_size", None) or getattr(args, "n", None) or 500
    cifar = getattr(args, "data", None) == "cifar10" or getattr(args, "data_dir", None) is not None
    features = getattr(args, "d", None) or (3073 if cifar else 65)
    return auto_threads(rows * features * (getattr(args, "c", None) or 10))


def load_data(args, name: Optional[str] = None) -> Dataset:
    """The data the flags name (``--data``, ``--data-dir``, ``--download``, ``--num-*``,
    ``--dtype``, ``--standardize``; the data's own draws keep seed 0), loaded by :func:`torch_svm.data.load_dataset`."""
    fields: Dict[str, Any] = {}
    for field in ("num_train", "num_val", "num_test", "dtype", "standardize"):
        if getattr(args, field, None) is not None:
            fields[field] = getattr(args, field)
    name = name or args.data
    check_data_flags(args, name)
    return load_dataset(name, args.data_dir, DataConfig(**fields), download=args.download,
                        progress=not getattr(args, "json", False)
                        and os.environ.get("RANK", "0") == "0")


def check_data_flags(args, name: Optional[str]) -> None:
    """UsageError for ``--data-dir`` / ``--download`` with data other than cifar10."""
    if name not in (None, "cifar10") and (args.data_dir is not None or args.download):
        raise UsageError(f"--data-dir and --download only apply to --data cifar10, got "
                         f"--data-dir {clip(repr(args.data_dir), 100)}"
                         + (" --download" if args.download else "") + f" with --data {name}")


#: What ``--dry-run`` keeps: iterations per run (each one logged) and settings per tune.
DRY_RUN_ITERS = 2
DRY_RUN_SETTINGS = 2


def train_config(args, **overrides: Any) -> TrainConfig:
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if hasattr(args, f.name)}
    fields.update(overrides)
    if getattr(args, "dry_run", False):
        fields.update(iters=min(fields["iters"], DRY_RUN_ITERS), log_every=1)
    return TrainConfig(**fields)


#: What train and tune write into --out (a folder holding anything else is not replaced).
RUN_FILES = ("model.pt", "metrics.json", "loss.png", "weights.png", "tune.png")


def check_out(out: Optional[str], produces: Iterable[str] = RUN_FILES) -> Optional[Path]:
    """Check ``--out`` before any work: a folder that exists or can be created, can be written,
    and holds nothing but what a run writes (``produces``: file names or glob patterns, and
    folder names ending in "/"), because a
    run replaces the folder whole (:func:`torch_svm.files.atomic_directory`). Raises UsageError
    naming ``--out``."""
    if out is None:
        return None
    if not out.strip():
        raise UsageError("--out must name a folder, got ''")
    path = Path(out).expanduser()
    try:
        _check_out_folder(out, path, tuple(produces))
    except OSError as exc:                     # too long a name, no permission, a full disk
        raise UsageError(f"--out {clip(out, 200)!r} cannot be written: "
                         f"{exc.strerror or type(exc).__name__}") from None
    return path


def _check_out_folder(out: str, path: Path, patterns: tuple) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UsageError(f"--out {clip(out, 200)!r} exists and is not a folder")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if not _produced(p, patterns))
        if foreign:
            raise UsageError(f"--out {clip(out, 200)!r} holds files torch-svm did not write "
                             f"({clip(', '.join(foreign[:3]), 100)}{', ...' if len(foreign) > 3 else ''}); "
                             f"a run replaces the folder whole, so choose a new or empty folder")
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass
    probe_atomic_directory(path)               # the siblings the run will make, made now


def _produced(p: Path, patterns: tuple) -> bool:
    if p.is_dir() and not p.is_symlink():
        return p.name + "/" in patterns
    return any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)


def accuracy_text(value: Optional[float]) -> str:
    """An accuracy as printed: four decimals, or that the split is empty."""
    return "none (empty split)" if value is None else f"{value:.4f}"


def print_json(obj: Any) -> None:
    json.dump(jsonable(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


def debug() -> bool:
    """TORCH_SVM_DEBUG=1: show tracebacks instead of one-line errors."""
    return os.environ.get("TORCH_SVM_DEBUG") == "1"
