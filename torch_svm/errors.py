"""The project's error types: one base class, so callers (and the CLI) can tell bad input and
bad files from bugs.

Each subclass also derives from the builtin a caller would expect (``ValueError`` for bad
values and files), so ``except ValueError`` keeps working.
"""
from __future__ import annotations

__all__ = ["TorchSVMError", "UsageError", "DataFormatError", "CheckpointError"]


class TorchSVMError(Exception):
    """Base class of every error torch-svm raises on purpose (bad input, bad files, a diverged run).

    The CLI reports these as one line and exit status 2; anything else is a bug and shows a
    traceback.
    """


class UsageError(TorchSVMError, ValueError):
    """Bad command-line input that library validation cannot see; exit code 2, one line."""


class DataFormatError(TorchSVMError, ValueError):
    """A data file exists but is not what it should be (truncated, wrong keys, shapes, labels)."""


class CheckpointError(TorchSVMError, ValueError):
    """A checkpoint file is unreadable, unsafe, or not a torch-svm LinearSVM checkpoint."""
