"""The ``torch-svm`` command line: one module per subcommand, composed here.

Each subcommand module defines ``add_parser(subparsers)``, which registers its parser and sets
``func`` to a function ``run(args) -> int`` (the exit code). Errors raised for bad input or bad
files (the project's :class:`~torch_svm.errors.TorchSVMError`, and running out of memory)
become one line on stderr and exit code 2; set TORCH_SVM_DEBUG=1 to see
the traceback instead. Anything else is a bug: its traceback is shown and the exit code is 1.

Every command takes ``--threads`` and runs on :func:`~torch_svm.cli._common.command_threads`
CPU threads (one for the small GEMMs most commands run); the count from before is restored
when it returns, so an in-process call leaves torch as it found it.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import os
import re
import sys
from typing import List, Optional

import torch

from torch_svm.cli._common import add_threads_arg, command_threads, debug
from torch_svm.errors import TorchSVMError
from torch_svm.device import using_threads

# Subcommand modules, in the order --help lists them.
_COMMANDS = ("check", "train", "tune", "evaluate", "verify", "grade", "kinks")


class _Parser(argparse.ArgumentParser):
    """Bad flags and flag values: one line on stderr naming the command, exit 2, no usage dump."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


@functools.lru_cache(maxsize=1)  # argparse parsers are reusable; building one costs ~20 ms
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torch-svm",
        description="The CS231n multiclass SVM in PyTorch: hand-written gradient, "
                    "kink-aware verification, training on CPU or GPU.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for name in _COMMANDS:
        importlib.import_module(f"torch_svm.cli.{name}").add_parser(sub)
        add_threads_arg(sub.choices[name])
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                  # a mistyped flag: the subcommand's own error, with a suggestion
        _unknown(parser._subparsers._group_actions[0].choices[args.command], extra)
    try:
        with using_threads(command_threads(args)):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"torch-svm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (`torch-svm ... --json | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    # Only the project's errors (bad input, named) and running out of memory are one line:
    # a builtin ValueError / TypeError / OSError from the library is a bug, and its traceback
    # is what a bug report needs.
    except (TorchSVMError, MemoryError, torch.OutOfMemoryError) as exc:
        if debug():
            raise
        message = " ".join(_flag_words(parser, args.command, str(exc)).split()) or type(exc).__name__
        if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
            message = f"ran out of memory ({message[:200]}); try smaller sizes"
        print(f"torch-svm {args.command}: error: {message[:1000]}", file=sys.stderr)
        return 2


def _flag_words(parser: argparse.ArgumentParser, command: str, message: str) -> str:
    """A library message in the command's words: each argument name of the Python API that is
    a flag of this command (``num_train``, ``data_dir``) written as the flag (``--num-train``),
    a switch's ``download=True`` as ``--download``, and ``data 'x'`` as ``--data 'x'``."""
    sub = parser._subparsers._group_actions[0].choices[command]
    long = [a for a in sub._actions if a.option_strings and a.option_strings[-1].startswith("--")]
    for a in long:
        if isinstance(a, argparse._StoreTrueAction):
            message = message.replace(f"{a.dest}=True", a.option_strings[-1])
    flags = {a.dest: a.option_strings[-1] for a in long if "_" in a.dest}
    if flags:
        # a whole word only: not inside a path or a file name ("/data/num_train.npy")
        message = re.sub(r"(?<![\w\-/.])(" + "|".join(map(re.escape, flags)) + r")(?![\w=/]|\.\w)",
                         lambda m: flags[m.group(1)], message)
    if any(a.dest == "data" and a.option_strings for a in sub._actions):
        message = re.sub(r"^data '", "--data '", message)
    return message


def _unknown(sub: argparse.ArgumentParser, extra: List[str]) -> None:
    flags = [f for a in sub._actions for f in a.option_strings]
    first = next((e.split("=")[0] for e in extra if e.startswith("-")), None)
    close = difflib.get_close_matches(first, flags, n=1, cutoff=0.6) if first else []
    hint = f"; did you mean {close[0]}?" if close else ""
    sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
