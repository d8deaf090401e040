"""Every numeric flag of every command, fed overflowing, negative, NaN and non-numeric values:
one line naming the flag, exit 2, no traceback and no allocator message. The flags are read
from the parser itself, so a flag added later is fuzzed too."""
import argparse

import pytest
from conftest import run_cli

from torch_svm.cli import build_parser

#: Values no numeric flag of torch-svm accepts.
BAD = ["nan", "inf", "-inf", "1e400", "1e300", "-1e300", "abc", "", "0x10", "2**64",
       "-" + "9" * 40, "9" * 40]
#: Positional arguments and required flags each command needs to get to its flags.
REQUIRED = {"verify": ["mod:f"], "evaluate": ["model.pt"], "kinks": ["--out", "unused"],
            "grade": ["no-such-class"]}
#: Flags with a type that are not numbers ("nan" is a fine function name).
NOT_NUMERIC = {("grade", "--functions")}


def _numeric_flags():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.type is not None and \
                    (command, action.option_strings[-1]) not in NOT_NUMERIC:
                yield command, action.option_strings[-1]


FLAGS = sorted(set(_numeric_flags()))


def test_the_fuzz_covers_every_command():
    assert {c for c, _ in FLAGS} >= {"check", "train", "tune", "evaluate", "verify"}
    assert len(FLAGS) > 30


@pytest.mark.parametrize("command, flag", FLAGS)
def test_numeric_flag_refuses_bad_values_in_one_line(capsys, command, flag):
    for value in BAD:
        code, out, err = run_cli(capsys, command, *REQUIRED.get(command, []), f"{flag}={value}")
        assert code == 2, (flag, value, out, err)
        assert len(err) == 1 and flag in err[0], (flag, value, err)
        assert "Traceback" not in err[0] and "alloc" not in err[0].lower(), (flag, value, err)


@pytest.mark.parametrize("argv, word", [
    (["check", "--n", "1000000", "--d", "1000000"], "--n x --d x --c"),
    (["train", "--num-train", "100000000"], "--num-train"),
    (["check", "--seed", str(2**64)], "--seed"),
    (["tune", "--lr", "1e-3:inf:3"], "--lr"),
])
def test_sizes_beyond_the_machine_are_refused_before_allocating(capsys, argv, word):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err) == 1 and word in err[0], err
    assert "alloc" not in err[0].lower()
