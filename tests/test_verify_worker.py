"""verify runs the judged code in a worker process: nothing that code does decides the verdict
(issue 14). Each test starts a worker (about half a second), so they are few: one per hostile
behaviour, through the CLI as a teacher grading would run it."""
import json
import threading
import time

import numpy as np
import pytest

import mutants
from conftest import run_cli
from verification.judge.devdata import load_verify_data
from verification.judge.verify import verify

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")

HOSTILE = '''
import os, sys
import numpy as np

def _right(W, X, y, reg):
    n = X.shape[0]
    scores = X.dot(W)
    margins = np.maximum(0, scores - scores[np.arange(n), y][:, None] + 1)
    margins[np.arange(n), y] = 0
    coef = (margins > 0).astype(X.dtype)
    coef[np.arange(n), y] = -coef.sum(axis=1)
    return margins.sum() / n + reg * np.sum(W * W), X.T.dot(coef) / n + 2 * reg * W

def exits_zero(W, X, y, reg):
    os._exit(0)

def system_exit(W, X, y, reg):
    sys.exit(0)

class Escape(BaseException):
    pass

def base_exception(W, X, y, reg):
    raise Escape("not an Exception")

def huge_int_loss(W, X, y, reg):
    return 10 ** 400, _right(W, X, y, reg)[1]

def sleeps(W, X, y, reg):
    import time
    time.sleep(3600)

def chatty(W, X, y, reg):
    print("x" * 100_000)
    print("to stderr", file=sys.stderr)
    return _right(W, X, y, reg)
'''

PATCHER = '''
import numpy as np
import verification.judge.verify as v
import verification.judge.evaluation as e
import verification.judge.verdict as d
import torch_svm.losses as losses

d.VerifyReport.passed = property(lambda self: True)      # every verdict a pass
d.VerifyReport.verdict = property(lambda self: "pass")
real = losses.svm_loss_and_grad
losses.svm_loss_and_grad = lambda W, X, y, reg=0.0, **k: (real(W, X, y, reg, **k)[0], 3 * real(W, X, y, reg, **k)[1])
e.evaluate = lambda *a, **k: None

def f(W, X, y, reg):
    n = X.shape[0]
    scores = X.dot(W)
    margins = np.maximum(0, scores - scores[np.arange(n), y][:, None] + 1)
    margins[np.arange(n), y] = 0
    coef = (margins > 0).astype(X.dtype)
    coef[np.arange(n), y] = -coef.sum(axis=1)
    return margins.sum() / n + reg * np.sum(W * W), 3 * (X.T.dot(coef) / n + 2 * reg * W)
'''


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    path = tmp_path_factory.mktemp("students") / "hostile.py"
    path.write_text(HOSTILE)
    return path


def cli(capsys, *argv):
    return run_cli(capsys, "verify", *argv, "--data", "random", "--n", "30")


@pytest.mark.parametrize("name, code, words", [
    ("exits_zero", 2, "worker process ended during exits_zero(W, X, y, reg): it exited with status 0"),
    ("system_exit", 2, "system_exit raised SystemExit: 0"),
    ("base_exception", 2, "base_exception raised Escape: not an Exception"),
    ("huge_int_loss", 1, None),
])
def test_what_the_code_does_to_itself_cannot_decide_the_verdict(hostile, capsys, name, code, words):
    exit_code, out, err = cli(capsys, f"{hostile}:{name}")
    assert exit_code == code
    if words:
        assert out == "" and words in err[0]
    else:                                                # judged: the loss is not finite
        assert "FAIL: the loss is wrong" in out and "the loss is NaN or inf" in out


def test_exit_at_import(tmp_path, capsys):
    path = tmp_path / "student.py"
    path.write_text("import os\nos._exit(0)\n")
    code, out, err = cli(capsys, f"{path}:f")
    assert code == 2 and "ended during importing the code" in err[0]


def test_patching_the_verifier_patches_only_the_worker(tmp_path, capsys):
    path = tmp_path / "patcher.py"
    path.write_text(PATCHER)
    code, out, _ = cli(capsys, f"{path}:f")
    assert code == 1 and "FAIL: the gradient dW is wrong" in out


def test_a_call_that_never_returns_is_stopped(hostile, capsys):
    start = time.monotonic()
    code, out, err = cli(capsys, f"{hostile}:sleeps", "--timeout", "1")
    assert code == 2 and "did not finish within 1 s (timeout)" in err[0]
    assert time.monotonic() - start < 30


def test_printing_never_reaches_the_json(hostile, capsys):
    code, out, err = cli(capsys, f"{hostile}:chatty", "--json")
    report = json.loads(out)
    assert code == 0 and report["verdict"] == "pass"
    assert report["output"]["stdout_bytes"] >= 4 * 100_000 and len(report["output"]["stdout"]) == 20_000
    assert any(line.startswith("--- your code printed") and "stdout" in line for line in err)
    assert "to stderr" in err


def test_a_notebook_function_runs_in_a_worker():
    data = load_verify_data("random", n=30)
    scale = 2.0                                            # a notebook global it needs

    def svm_loss_vectorized(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        return loss, dW * scale / 2

    report = verify(svm_loss_vectorized, data=data)
    assert report.passed and report.isolated and report.function == "svm_loss_vectorized"
    lock = threading.Lock()                                # cannot be pickled: judged here

    def with_lock(W, X, y, reg):
        with lock:
            return mutants.correct_vectorized(W, X, y, reg)

    report = verify(with_lock, data=data)
    assert report.passed and not report.isolated and "judged in this process" in report.notes[0]


def test_the_worker_is_reused_for_every_call(monkeypatch):
    from verification.judge import worker as worker_module

    started = []
    real = worker_module.Worker.__init__

    def counting(self, **kwargs):
        started.append(1)
        real(self, **kwargs)

    monkeypatch.setattr(worker_module.Worker, "__init__", counting)
    X, y = np.random.default_rng(0).standard_normal((20, 6)), np.arange(20) % 3
    assert verify(mutants.correct_naive, X=X, y=y).passed and len(started) == 1
