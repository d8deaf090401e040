"""Values from hostile files (issue 14), echoed in error messages."""
from __future__ import annotations

import pytest

from torch_svm.utils import clipped_repr


@pytest.mark.parametrize("make, start", [
    (lambda: b"x" * 30_000_000, "b'xxxx"), (lambda: "y" * 30_000_000, "'yyyy"),
    (lambda: 10 ** 100_000, "<int of 332193 bits>"), (lambda: list(range(10 ** 6)), "[0, 1, 2, 3, 4, 5, ...]"),
    (lambda: [[[[["deep"]]]]], "[[[[...]]]]"), (lambda: {"k" * 1000: b"v" * 1000}, "{'kkkk"),
    (lambda: bytearray(10 ** 6), "bytearray(b'\\x00"),
], ids=["bytes", "str", "int", "list", "nested", "dict", "bytearray"])
def test_clipped_repr_never_builds_the_full_repr(make, start):
    text = clipped_repr(make())
    assert text.startswith(start) and len(text) <= 200, text
