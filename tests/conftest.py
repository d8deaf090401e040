"""Shared fixtures and builders: random problems, problems with exact kinks, the CLI runner, a
private cache folder for verify."""
from typing import List, Tuple

import pytest
import torch

from torch_svm.cli import main


@pytest.fixture(scope="session", autouse=True)
def _one_thread_by_default():
    """The suite's problems are tiny: on a busy 2-core runner, torch's two OpenMP threads spin
    waiting for a core and make them many times slower (a test that needs more sets it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny GEMMs: one thread avoids OpenMP spin costs on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_problem(n: int = 40, d: int = 12, c: int = 6, *, seed: int = 0, w_scale: float = 0.3,
                   x_scale: float = 1.0, dtype: torch.dtype = torch.float64
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W = w_scale * randn(d, c)``, ``X = x_scale * randn(n, d)``, ``y`` uniform in [0, c)."""
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(d, c, generator=g, dtype=torch.float64) * w_scale).to(dtype)
    X = (torch.randn(n, d, generator=g, dtype=torch.float64) * x_scale).to(dtype)
    y = torch.randint(c, (n,), generator=g)
    return W, X, y


def exact_kink_problem(n: int = 24, d: int = 5, c: int = 4, *, seed: int = 3
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W, X, y)`` with X integers in [-3, 3] and W multiples of 1/8 in [-1/4, 1/4]: every
    margin is an exact dyadic number, and several are exactly 0 at delta = 1 (3 with the
    defaults, 5 with n = 40); float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-3, 4, (n, d), generator=g).double()
    W = torch.randint(-2, 3, (d, c), generator=g).double() / 8
    return W, X, torch.randint(0, c, (n,), generator=g)


def integer_problem(seed: int = 0, n: int = 60, d: int = 12, c: int = 5
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(X, y, W)`` with integer X in [-2, 2] and W in [-1, 1]: margins are exact integers,
    many exactly 0 with delta = 1 (exact kinks)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-2, 3, (n, d), generator=g).double()
    W = torch.randint(-1, 2, (d, c), generator=g).double()
    return X, torch.randint(c, (n,), generator=g), W


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """verify's cache (dev sets, check points) in a fresh folder instead of ~/.cache."""
    monkeypatch.setenv("TORCH_SVM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run_cli(capsys, *argv: str) -> Tuple[int, str, List[str]]:
    """Run ``torch-svm argv`` in-process: (exit code, stdout, stderr lines), whether the error
    is argparse's (SystemExit) or the command's (its return value)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()
