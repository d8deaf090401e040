"""Helpers shared by the subcommands: common flags and JSON output."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from torch_svm.errors import UsageError  # noqa: F401  (re-exported for the subcommands)
from torch_svm.utils import DTYPES, jsonable


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_device_arg(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--device", default=default,
                        help=f"cpu, cuda, cuda:N or auto (cuda when available) (default: {default})")


def add_dtype_arg(parser: argparse.ArgumentParser, default: str = "float64") -> None:
    parser.add_argument("--dtype", default=default, choices=sorted(DTYPES),
                        help=f"floating dtype of the computation (default: {default})")


def add_seed_arg(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=int, default=default,
                        help=f"seeds Python, numpy and torch (default: {default})")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the table")


def print_json(obj: Any) -> None:
    json.dump(jsonable(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")
